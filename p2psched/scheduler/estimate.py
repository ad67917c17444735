"""What the predictor answers: `Estimate`, the expected wait and run time of a task on a worker
as mean ± spread, saying where it came from; the input-size buckets estimates are kept by; and
`Tokens`, what a task's metadata (or its OpenAI request) tells of its size in a model's terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Source = Literal["fitted", "observed", "worker", "claimed", "default", "table"]
MAX_TOKENS = 100_000_000  # more than any model's context: a count past it is a mistake


@dataclass(frozen=True, slots=True)
class Tokens:
    """A task's size as its metadata tells it (the design documents' `input_tokens` and
    `output_tokens`): the prompt's tokens, and the tokens it asks to be generated."""

    input: int
    output: int

    def __post_init__(self) -> None:
        for name, n in (("input_tokens", self.input), ("output_tokens", self.output)):
            if type(n) is not int or not 0 <= n <= MAX_TOKENS:
                raise ValueError(f"{name} must be an integer in 0..{MAX_TOKENS}, got {n!r}")


def request_tokens(body: Any) -> Tokens | None:
    """The tokens of an OpenAI request (an http task's input, a gateway's request): those it
    asks for (`max_completion_tokens` or `max_tokens`; without either, None: a server's own
    limit is not known here), and its prompt's, taken as one per 4 characters of its text
    (OpenAI's rule of thumb: a node has no tokenizer of the worker's model, and a fit learns
    what a token so counted costs there)."""
    if not isinstance(body, dict):
        return None
    asked = body.get("max_completion_tokens", body.get("max_tokens"))
    if type(asked) is not int or not 0 <= asked <= MAX_TOKENS:
        return None
    prompt = body.get("prompt")
    texts = [prompt] if isinstance(prompt, str) else prompt if isinstance(prompt, list) else []
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        parts = content if isinstance(content, list) else [content]
        texts += [p.get("text") if isinstance(p, dict) else p for p in parts]
    chars = sum(len(t) for t in texts if isinstance(t, str))
    return Tokens(min(MAX_TOKENS, -(-chars // 4)), asked)


def size_bucket(size: int) -> int:
    """The power-of-two bucket of an encoded input of `size` bytes (0 for an empty input)."""
    if size < 0:
        raise ValueError(f"input size must be >= 0 bytes, got {size!r}")
    return size.bit_length()


@dataclass(frozen=True, slots=True)
class Estimate:
    """Expected wait before a task starts and run time once started, in seconds, each a mean and
    the spread of a single observation around it (standard deviation). `samples` is how many
    observations the answer rests on (0 for a claim or the default)."""

    wait_mean: float
    wait_err: float
    run_mean: float
    run_err: float
    samples: int
    source: Source

    def to_json(self) -> dict[str, Any]:
        return {
            "wait_mean": self.wait_mean,
            "wait_err": self.wait_err,
            "run_mean": self.run_mean,
            "run_err": self.run_err,
            "samples": self.samples,
        }
