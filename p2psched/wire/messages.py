"""What a scheduler and a worker say to each other on their secure channel: one typed message
per kind, tagged on the wire by its `t` field (the MessagePack maps the channel always
carried), with its bounds in its types. Task inputs and outputs travel as `msgspec.Raw`: they
are checked and decoded by whoever uses them, not on the way in.

Owns: the message types, their one strict `parse` and their one `encode`, and `Send`, the
action both cores give their shells to send one.
Promises: `parse` returns a message only if it is one of these kinds, with exactly its fields,
each within its bounds, and with its documents signed (a signature's validity is the core's
to check); otherwise it raises `SchemaError` naming the field, or `DecodeError` for bytes that
are not MessagePack at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from p2psched.wire.codec import Budget, decode
from p2psched.wire.deal import (
    MAX_BATCH,
    MAX_TASK_ID,
    Commitment,
    Count,
    GpuCount,
    Hash,
    JobId,
    Price,
    Quote,
    Receipt,
    TaskId,
    TaskIds,
    Time,
    schema_error,
    unreadable_as_decode_error,
)
from p2psched.wire.schema import SchemaError

RequestId = Annotated[int, msgspec.Meta(ge=0)]
MAX_REASON = 300  # characters of a reason a peer gives (a decline, a rejection, a refusal)
Reason = Annotated[str, msgspec.Meta(max_length=MAX_REASON)]
Driver = Annotated[str, msgspec.Meta(max_length=32)]
Model = Annotated[str, msgspec.Meta(max_length=128)] | None
MaxPrice = Annotated[float, msgspec.Meta(ge=0.0)]  # infinity allowed: no limit
Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
MAX_TASK_TIMEOUT_S = 7 * 86400.0
TimeoutS = Annotated[float, msgspec.Meta(ge=0.001, le=MAX_TASK_TIMEOUT_S)]
MAX_PRIORITY = 9  # a job's priority: 0..9, 9 most urgent
DEFAULT_PRIORITY = 5
Priority = Annotated[int, msgspec.Meta(ge=0, le=MAX_PRIORITY)]
# Any size: the worker judges it against its own cap.
InputBytes = Annotated[int, msgspec.Meta(ge=0, le=1 << 40)]
# The capacity challenge's bounds (its mathematics: `resources.challenge`).
MIN_CHALLENGE_N = 16
MAX_CHALLENGE_N = 4096  # three float32 matrices of 64 MiB each on the worker, at most
MAX_CHALLENGE_ROUNDS = 64  # products one challenge asks for (the worker keeps one at a time)
MAX_CHALLENGE_ROWS = 64  # rows one challenge opens
MAX_CHALLENGE_LEAVES = MAX_CHALLENGE_ROUNDS * MAX_CHALLENGE_N  # rows of all its products
MAX_CHALLENGE_PROOF = (MAX_CHALLENGE_LEAVES - 1).bit_length()  # hashes from a row to the root
ChallengeSize = Annotated[int, msgspec.Meta(ge=MIN_CHALLENGE_N, le=MAX_CHALLENGE_N)]
ChallengeRounds = Annotated[int, msgspec.Meta(ge=1, le=MAX_CHALLENGE_ROUNDS)]
Seed = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
RowIndex = Annotated[int, msgspec.Meta(ge=0, lt=MAX_CHALLENGE_LEAVES)]  # round j's row i: j n + i
ProductRow = Annotated[bytes, msgspec.Meta(max_length=4 * MAX_CHALLENGE_N)]
Proof = Annotated[list[Hash], msgspec.Meta(max_length=MAX_CHALLENGE_PROOF)]


class _Message(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="t"):
    pass


class Task(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A task as a worker gets it: its input is any MessagePack value, which its driver
    checks (the channel's frame limit bounds it); `gpus`, the GPUs it needs to itself
    (0: its slot's share of the worker's, `worker.devices`; left off the wire)."""

    id: TaskId
    driver: Driver
    model: Model
    input: msgspec.Raw
    timeout: TimeoutS
    gpus: GpuCount = 0


# -- scheduler -> worker -------------------------------------------------------------------


class _Ask(_Message, frozen=True, omit_defaults=True):
    """Up to `tasks` tasks of one kind (driver, model, price limit, `gpus` each needs to
    itself) for `job`, of its `priority`; the longest `timeout` and the largest input
    (`input_bytes`, encoded) among them, when the scheduler says. The worker prices a task
    by its GPUs. (A field at its default is left off the wire: a request at the default
    priority, saying nothing of timeouts and inputs, is today's.)"""

    rid: RequestId
    job: JobId
    tasks: Count
    driver: Driver
    model: Model
    max_price: MaxPrice
    priority: Priority = DEFAULT_PRIORITY
    timeout: TimeoutS | None = None
    input_bytes: InputBytes | None = None
    gpus: GpuCount = 0


class QuoteRequest(_Ask, frozen=True, tag="quote?"):
    """A quote for up to `tasks` tasks of this kind, please."""


class Commit(_Message, frozen=True, tag="commit"):
    """A signed commitment, with the committed tasks themselves (`run`; may be empty: then a
    `Run` follows the lease)."""

    rid: RequestId
    commitment: Commitment
    run: Annotated[list[Task], msgspec.Meta(max_length=MAX_BATCH)]


class Reserve(_Ask, frozen=True, tag="reserve"):
    """Late binding (Sparrow): `tasks` places in the worker's queue, each bound to a task only
    when the worker is ready to run one (`Ready`), or given up (`Unreserve`)."""


class Unreserve(_Message, frozen=True, tag="unreserve"):
    rid: RequestId


class Withdraw(_Message, frozen=True, tag="withdraw"):
    """Give these back if they have not started (rebalancing); `Withdrawn` names those given."""

    rid: RequestId
    tasks: TaskIds


class Run(_Message, frozen=True, tag="run"):
    tasks: Annotated[list[Task], msgspec.Meta(max_length=MAX_BATCH)]


class ChallengeAsk(_Message, frozen=True, tag="challenge?"):
    """Prove your capacity: compute the `rounds` products of `n` x `n` matrices of `seed`
    and answer with the Merkle root over all their rows (`ChallengeRoot`), or decline
    (`Decline`, busy or not). The `commitment` names one task (the challenge) at the worker's
    price: it is paid once the rows it opens hold."""

    rid: RequestId
    seed: Seed
    n: ChallengeSize
    commitment: Commitment
    rounds: ChallengeRounds = 1


class ChallengeOpen(_Message, frozen=True, tag="challenge-open"):
    """Open these rows of the products committed to (picked once their root came): row i of
    round j's product is row j n + i."""

    rid: RequestId
    rows: Annotated[list[RowIndex], msgspec.Meta(min_length=1, max_length=MAX_CHALLENGE_ROWS)]


class Ack(_Message, frozen=True, tag="ack"):
    """These results arrived: the worker may forget them."""

    tasks: TaskIds


class Cancel(_Message, frozen=True, tag="cancel"):
    tasks: TaskIds


# -- worker -> scheduler -------------------------------------------------------------------


class QuoteReply(_Message, frozen=True, tag="quote"):
    rid: RequestId
    quote: Quote


class Decline(_Message, frozen=True, tag="decline"):
    """No quote (or no places): `busy` is a "not now" (ask again later), as opposed to a "not
    this" (driver, price, draining)."""

    rid: RequestId
    reason: Reason
    busy: bool


class Refusal(_Message, frozen=True, tag="error"):
    """The worker refuses the channel (a malformed message, say) and closes it."""

    reason: Reason


class Ready(_Message, frozen=True, tag="ready"):
    """A slot is free for one of the places `rid` reserved: a commitment for a task, or an
    unreserve, is the answer. `price`: the least that commitment must offer for a task of
    the `gpus` its places were reserved for."""

    rid: RequestId
    price: Price
    gpus: GpuCount


class Withdrawn(_Message, frozen=True, tag="withdrawn"):
    rid: RequestId
    tasks: TaskIds


class Lease(_Message, frozen=True, tag="lease"):
    rid: RequestId
    tasks: TaskIds
    expires: Time


class Reject(_Message, frozen=True, tag="reject"):
    rid: RequestId
    reason: Reason
    busy: bool


class Beat(_Message, frozen=True, tag="beat"):
    """The heartbeat: the tasks of this scheduler's that run here, and how far each is."""

    running: TaskIds
    progress: Annotated[list[Fraction], msgspec.Meta(max_length=MAX_BATCH)]


class Partial(_Message, frozen=True, tag="partial"):
    """Part of a running task's output, as its driver produced it (a streamed answer's chunk):
    sent at once, never again, and not signed; the task's `Result` carries its whole output
    (the list of its parts, one after the other), and its receipt covers that. A scheduler
    takes a bounded number and size of them per task (`DispatchConfig.max_partials`,
    `max_partial_bytes`, `max_partial_items`), only for a task the worker holds. (`output`
    must be MessagePack: a frame whose part is not cannot be read, and breaks its link.)"""

    task: TaskId
    output: msgspec.Raw


class Result(_Message, frozen=True, tag="result"):
    """A task ended: its output (None on error) and the worker's signed receipt for it."""

    task: TaskId
    output: msgspec.Raw
    error: Reason | None
    receipt: Receipt


class ChallengeRoot(_Message, frozen=True, tag="challenge-root"):
    """The Merkle root of the product a `ChallengeAsk` asked for, and the seconds the worker
    says it took (the scheduler times it itself)."""

    rid: RequestId
    root: Hash
    seconds: Time


class ChallengeRows(_Message, frozen=True, tag="challenge-rows"):
    """The rows a `ChallengeOpen` named, in its order, each with its proof (the sibling
    hashes up to the root), and the worker's receipt for the challenge (its `result_hash`:
    the root)."""

    rid: RequestId
    rows: Annotated[list[ProductRow], msgspec.Meta(max_length=MAX_CHALLENGE_ROWS)]
    proofs: Annotated[list[Proof], msgspec.Meta(max_length=MAX_CHALLENGE_ROWS)]
    receipt: Receipt


SchedulerMessage = (
    QuoteRequest | Commit | Reserve | Unreserve | Withdraw | Run | Ack | Cancel
    | ChallengeAsk | ChallengeOpen
)  # fmt: skip
WorkerMessage = (
    QuoteReply | Decline | Refusal | Ready | Withdrawn | Lease | Reject | Beat | Partial | Result
    | ChallengeRoot | ChallengeRows
)  # fmt: skip
# A capacity challenge's own messages: its shells hand them to it, never to a job's run or
# the task manager.
CHALLENGE_MESSAGES = (ChallengeAsk, ChallengeOpen, ChallengeRoot, ChallengeRows)
Message = SchedulerMessage | WorkerMessage

_KINDS: dict[str, type[_Message]] = {
    str(cls.__struct_config__.tag): cls
    for cls in (*SchedulerMessage.__args__, *WorkerMessage.__args__)
}
_decoder = msgspec.msgpack.Decoder(Message)
_encoder = msgspec.msgpack.Encoder()


class _Kind(msgspec.Struct):
    t: Any = None


class _ResultHead(msgspec.Struct):
    t: Any = None
    task: Any = None


@dataclass(frozen=True, slots=True)
class Send:
    """Send `message` to `peer` (a worker, from a scheduler's core; a scheduler, from a
    worker's)."""

    peer: bytes
    message: Message


def kind(message: Message) -> str:
    """The message's tag on the wire (`quote?`, `commit`, ...)."""
    return str(message.__struct_config__.tag)


def parse(frame: bytes) -> Message:
    """One checked message from one frame."""
    try:
        with unreadable_as_decode_error():
            message = _decoder.decode(frame)
    except msgspec.ValidationError as e:
        raise _named(frame, e) from None
    field = _DOCUMENTS.get(type(message))
    if field is not None and not getattr(message, field).sig:
        raise SchemaError(f"{kind(message)}.{field}.sig", "not signed")
    return message


def result_task(frame: bytes) -> str | None:
    """The task a result names, read leniently from a frame `parse` refused (None if it is
    not a result, or names no task well): one bad field in a result fails that task, not the
    channel and every task on it."""
    try:
        head = msgspec.msgpack.decode(frame, type=_ResultHead)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None
    task = head.task
    if head.t != "result" or not isinstance(task, str) or not 0 < len(task) <= MAX_TASK_ID:
        return None
    return task


def said(reason: str) -> str:
    """A reason as it may go on the wire: at most `MAX_REASON` characters (a longer one would
    make the whole message malformed, and its receiver drop the link and every task on it)."""
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 3] + "..."


def encode(message: Message) -> bytes:
    return _encoder.encode(message)


def raw(value: Any) -> msgspec.Raw:
    """`value` as a Raw field (its MessagePack)."""
    return msgspec.Raw(_encoder.encode(value))


def unpack(field: msgspec.Raw, max_size: int, budget: Budget | None = None) -> Any:
    """A Raw field's value, decoded within the codec's bounds (`DecodeError` otherwise), and
    within `budget` if given, from the message's own bytes (no copy of them)."""
    return decode(memoryview(field), max_size=max_size, budget=budget)


# The messages that carry a signed document, and the field that holds it.
_DOCUMENTS: dict[type[_Message], str] = {
    QuoteReply: "quote",
    Commit: "commitment",
    Result: "receipt",
    ChallengeAsk: "commitment",
    ChallengeRows: "receipt",
}


def _named(frame: bytes, e: msgspec.ValidationError) -> SchemaError:
    """The error, with its path starting at the message's kind, as the schemas always said."""
    try:
        tag = msgspec.msgpack.decode(frame, type=_Kind).t
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        tag = None
    if not isinstance(tag, str) or tag not in _KINDS:
        return SchemaError("t", f"unknown message type; known: {', '.join(_KINDS)}")
    return schema_error(e, tag)
