"""A test set for the predictor: LLM tasks as a node sees them, and the two ways it may predict
them scored on it. Each (worker, model) runs a task in a + b·input_tokens + c·output_tokens
seconds plus noise (a: its latency, b: prefill, c: decode, drawn per worker and model: several
workers of unlike speed); prompts and asked-for outputs vary independently, as a chat service's
do, and the encoded input grows with the prompt, as a JSON prompt's does.

`score` feeds the tasks in order to one predictor, each predicted before its run is learned
(online, as the node meets them): by model and input size (the metadata ignored), and by the
token fit (the metadata used).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from p2psched.scheduler.estimate import Tokens
from p2psched.scheduler.predictor import Predictor

MODELS = ("llama-3-8b", "mistral-7b")


@dataclass(frozen=True, slots=True)
class TokenRun:
    worker: bytes
    model: str
    input_bytes: int
    tokens: Tokens
    run_s: float
    mean_s: float  # its line's, without the noise: what an oracle would predict


@dataclass(frozen=True, slots=True)
class Scores:
    """Root mean square error (seconds) of each way on the same tasks, and of an oracle that
    knows each line (the noise: the least any way can miss by); and the share of the fit's
    misses within twice the error it gave (its spread's honesty)."""

    tasks: int
    by_size: float
    by_tokens: float
    oracle: float
    within_2_err: float

    @property
    def ratio(self) -> float:
        """How many times smaller the token fit's error is."""
        return self.by_size / self.by_tokens


def token_runs(seed: int = 1, n: int = 4000, workers: int = 4) -> list[TokenRun]:
    rng = random.Random(seed)
    lines = {}
    for w in range(workers):
        speed = rng.uniform(0.5, 2.0)  # one GPU is faster than another, for every model
        for model in MODELS:
            lines[(bytes([w + 1]) * 32, model)] = (
                rng.uniform(0.05, 0.5),  # seconds, before the first token
                speed * rng.uniform(0.05, 0.3) / 1000,  # per prompt token
                speed * rng.uniform(8.0, 40.0) / 1000,  # per generated token: 12..250 tok/s
            )
    keys = sorted(lines)
    runs = []
    for _ in range(n):
        worker, model = keys[rng.randrange(len(keys))]
        a, b, c = lines[(worker, model)]
        prompt = min(8000, max(5, int(rng.lognormvariate(math.log(300), 1.0))))
        asked = int(math.exp(rng.uniform(math.log(16), math.log(1024))))
        mean = a + b * prompt + c * asked
        run = max(0.0, rng.gauss(mean, 0.05 * mean + 0.02))
        size = 60 + int(prompt * rng.uniform(3.5, 4.5))  # JSON around ~4 characters a token
        runs.append(TokenRun(worker, model, size, Tokens(prompt, asked), run, mean))
    return runs


def score(runs: list[TokenRun], warmup: int = 500, predictor: Predictor | None = None) -> Scores:
    """Both ways on `runs` after the first `warmup` (until then they learn only)."""
    p = Predictor() if predictor is None else predictor
    sq_size = sq_tokens = sq_oracle = 0.0
    within = scored = 0
    for i, r in enumerate(runs):
        if i >= warmup:
            by_size = p.estimate(r.worker, r.model, r.input_bytes)
            by_tokens = p.estimate(r.worker, r.model, r.input_bytes, tokens=r.tokens)
            assert by_tokens.source == "fitted"
            sq_size += (r.run_s - by_size.run_mean) ** 2
            miss = r.run_s - by_tokens.run_mean
            sq_tokens += miss**2
            sq_oracle += (r.run_s - r.mean_s) ** 2
            within += abs(miss) <= 2 * by_tokens.run_err
            scored += 1
        p.observe(
            r.worker, r.model, r.input_bytes, wait_s=0.0, run_s=r.run_s, now=i, tokens=r.tokens
        )
    rms = [math.sqrt(sq / scored) for sq in (sq_size, sq_tokens, sq_oracle)]
    return Scores(scored, *rms, within / scored)
