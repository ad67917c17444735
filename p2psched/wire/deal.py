"""What a scheduler and a worker say to each other on their secure channel, and the three signed
documents of a deal: the worker's `Quote`, the scheduler's `Commitment`, the worker's `Receipt`.

Owns: the message schemas (one per message type, strict: unknown or missing fields are refused),
the signing rules (each document signs a domain tag plus the MessagePack of its fields, so a
signature made for one kind of document never verifies as another), and the form of a task id.
Promises: `parse` returns a message only if it is well-formed, else raises `SchemaError` naming
the field; `verify()` is true only for a document signed by the key whose node id it names.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from p2psched.identity import Identity, node_id_of, verify
from p2psched.wire import schema
from p2psched.wire.codec import encode
from p2psched.wire.schema import SchemaError

ID = schema.bin_exact(32)
SIG = schema.bin_exact(64)
MAX_BATCH = 4096  # tasks in one quote request, commitment or dispatch
MAX_RESULT_BYTES = 12 << 20  # a task's output, within the channel's 16 MiB frame
MAX_RESERVED = 64  # late-binding places one scheduler may hold on one worker
MAX_RESULT_DEPTH = 64  # nesting of a task's output: JSON tools and the JSON files choke deeper
_TASK_ID = schema.text(160)
_REASON = schema.text(300)


def task_id_for(job: str, index: int) -> str:
    """Task ids name their job, so answers on a channel shared by jobs find their way."""
    return f"{job}/{index}"


def job_of(task_id: str) -> str:
    """The job a task id names (see `task_id_for`)."""
    return task_id.rpartition("/")[0]


def _price(v: Any, path: str) -> Any:
    return schema.number(0.0, 1e15)(v, path)


def _time(v: Any, path: str) -> Any:
    return schema.number(0.0, 1e11)(v, path)


@dataclass(frozen=True, slots=True)
class _Signed:
    """Fields in declaration order; the last one is the signature over all the others."""

    TAG: ClassVar[bytes]
    CHECKS: ClassVar[dict[str, schema.Check]]

    def values(self) -> list[Any]:
        """The fields in order, signature last (no deep copy, unlike `astuple`)."""
        return [getattr(self, f.name) for f in fields(self)]

    def body(self) -> bytes:
        return self.TAG + encode(self.values()[:-1])

    def signer(self) -> bytes:
        raise NotImplementedError

    def verify(self, public_key: bytes) -> bool:
        sig: bytes = self.values()[-1]
        return node_id_of(public_key) == self.signer() and verify(public_key, sig, self.body())

    def to_wire(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_wire(cls, obj: Any, path: str) -> Any:
        return cls(**schema.mapping(cls.CHECKS)(obj, path))

    def to_json(self) -> dict[str, Any]:
        """For files people keep: bytes as hex."""
        return {k: v.hex() if isinstance(v, bytes) else v for k, v in self.to_wire().items()}

    @classmethod
    def from_json(cls, doc: Any, path: str = "document") -> Any:
        if not isinstance(doc, dict):
            raise SchemaError(path, "expected a JSON object")
        raw = dict(doc)
        for name, check in cls.CHECKS.items():
            if check in (ID, SIG) and isinstance(raw.get(name), str):
                try:
                    raw[name] = bytes.fromhex(raw[name])
                except ValueError:
                    raise SchemaError(f"{path}.{name}", "expected hex") from None
        return cls.from_wire(raw, path)


@dataclass(frozen=True, slots=True)
class Quote(_Signed):
    """A worker's offer for up to `capacity` tasks of one request, at `price` each."""

    worker: bytes
    scheduler: bytes
    job: str
    price: float
    wait_mean: float  # seconds until a task of the batch would start
    wait_err: float
    run_mean: float  # seconds a task like this has taken here (0: no history)
    capacity: int
    valid_until: float
    sig: bytes = b""

    TAG = b"p2psched/quote/1"
    CHECKS = {
        "worker": ID,
        "scheduler": ID,
        "job": schema.text(80),
        "price": _price,
        "wait_mean": _time,
        "wait_err": _time,
        "run_mean": _time,
        "capacity": schema.uint(MAX_BATCH),
        "valid_until": _time,
        "sig": SIG,
    }

    def signer(self) -> bytes:
        return self.worker

    def signed(self, identity: Identity) -> Quote:
        signed: Quote = _sign(self, identity)
        return signed


@dataclass(frozen=True, slots=True)
class Commitment(_Signed):
    """A scheduler's promise to pay `price` per task for these tasks on this worker."""

    scheduler: bytes
    worker: bytes
    job: str
    tasks: list[str]
    price: float
    issued_at: float
    sig: bytes = b""

    TAG = b"p2psched/commitment/1"
    CHECKS = {
        "scheduler": ID,
        "worker": ID,
        "job": schema.text(80),
        "tasks": schema.list_of(_TASK_ID, MAX_BATCH),
        "price": _price,
        "issued_at": _time,
        "sig": SIG,
    }

    def signer(self) -> bytes:
        return self.scheduler

    def signed(self, identity: Identity) -> Commitment:
        signed: Commitment = _sign(self, identity)
        return signed


@dataclass(frozen=True, slots=True)
class Receipt(_Signed):
    """A worker's statement that it ran `task` for `scheduler`: what came out (its hash), how
    long it took and what it costs. `ok` false: the task failed and costs nothing."""

    worker: bytes
    scheduler: bytes
    job: str
    task: str
    ok: bool
    result_hash: bytes
    duration: float
    price: float
    finished_at: float
    sig: bytes = b""

    TAG = b"p2psched/receipt/1"
    CHECKS = {
        "worker": ID,
        "scheduler": ID,
        "job": schema.text(80),
        "task": _TASK_ID,
        "ok": schema.boolean,
        "result_hash": ID,
        "duration": _time,
        "price": _price,
        "finished_at": _time,
        "sig": SIG,
    }

    def signer(self) -> bytes:
        return self.worker

    def signed(self, identity: Identity) -> Receipt:
        signed: Receipt = _sign(self, identity)
        return signed


def _sign(doc: Any, identity: Identity) -> Any:
    fields_ = doc.values()[:-1]
    return type(doc)(*fields_, identity.sign(doc.body()))


def depth_over(value: Any, limit: int) -> bool:
    """Whether lists and maps nest deeper than `limit` in `value` (without recursing)."""
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict | list):
            if depth >= limit:
                return True
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))
    return False


def result_hash(output: Any) -> bytes:
    """What a receipt commits to: the SHA-256 of the result's MessagePack."""
    return packed_hash(encode(output))


def packed_hash(packed: bytes) -> bytes:
    """`result_hash` of a result already encoded (so it is encoded once)."""
    return hashlib.sha256(packed).digest()


def unsendable(output: Any) -> tuple[bytes, str | None]:
    """A result's MessagePack, and why it cannot go back as a result (too big, too deep, not
    MessagePack), or None. An honest worker reports that as the task's failure."""
    try:
        packed = encode(output)
    except (OverflowError, TypeError, ValueError) as e:
        return b"", f"the result cannot be sent ({type(e).__name__}: {e})"[:300]
    if len(packed) > MAX_RESULT_BYTES:
        return packed, f"the result is {len(packed)} bytes, over the {MAX_RESULT_BYTES}-byte limit"
    if depth_over(output, MAX_RESULT_DEPTH):
        return packed, f"the result is nested deeper than {MAX_RESULT_DEPTH} levels"
    return packed, None


# -- channel messages ----------------------------------------------------------------------
# Each is a map with "t" naming its type. Task inputs and outputs are any MessagePack value: the
# channel's frame limit bounds them, and drivers check their own inputs.


def _any(v: Any, path: str) -> Any:
    return v


def _finite_or_inf(v: Any, path: str) -> Any:
    if type(v) not in (int, float) or v != v or v < 0:
        raise SchemaError(path, "expected a number >= 0 (or infinity)")
    return float(v)


_TASK = schema.mapping(
    {
        "id": _TASK_ID,
        "driver": schema.text(32),
        "model": schema.optional(schema.text(128)),
        "input": _any,
        "timeout": schema.number(0.001, 7 * 86400),
    }
)

# A quote for up to `tasks` tasks of this kind, or (late binding) that many places queued.
_ASK = schema.mapping(
    {
        "t": _any,
        "rid": schema.uint(),
        "job": schema.text(80),
        "tasks": schema.uint(MAX_BATCH),
        "driver": schema.text(32),
        "model": schema.optional(schema.text(128)),
        "max_price": _finite_or_inf,
    }
)

MESSAGES: dict[str, schema.Check] = {
    # scheduler → worker
    "quote?": _ASK,
    # `run`: the committed tasks themselves, dispatched with their commitment (may be empty:
    # then a `run` message follows the lease)
    "commit": schema.mapping(
        {
            "t": _any,
            "rid": schema.uint(),
            "commitment": lambda v, p: Commitment.from_wire(v, p),
            "run": schema.list_of(_TASK, MAX_BATCH),
        }
    ),
    # late binding (Sparrow): places in the worker's queue, each bound to a task only when
    # the worker is ready to run one (`ready`), or given up (`unreserve`)
    "reserve": _ASK,
    "unreserve": schema.mapping({"t": _any, "rid": schema.uint()}),
    # take these back if they have not started (rebalancing); `withdrawn` names those taken
    "withdraw": schema.mapping(
        {"t": _any, "rid": schema.uint(), "tasks": schema.list_of(_TASK_ID, MAX_BATCH)}
    ),
    "run": schema.mapping({"t": _any, "tasks": schema.list_of(_TASK, MAX_BATCH)}),
    "ack": schema.mapping({"t": _any, "tasks": schema.list_of(_TASK_ID, MAX_BATCH)}),
    "cancel": schema.mapping({"t": _any, "tasks": schema.list_of(_TASK_ID, MAX_BATCH)}),
    # worker → scheduler
    "quote": schema.mapping(
        {"t": _any, "rid": schema.uint(), "quote": lambda v, p: Quote.from_wire(v, p)}
    ),
    # busy: a "not now" (ask again later), as opposed to a "not this" (driver, price, ...)
    "decline": schema.mapping(
        {"t": _any, "rid": schema.uint(), "reason": _REASON, "busy": schema.boolean}
    ),
    # the worker refuses the channel (a malformed message, say) and closes it
    "error": schema.mapping({"t": _any, "reason": _REASON}),
    # a slot is free for one of the reservations `rid` made: a commitment for a task, or an
    # unreserve, is the answer
    "ready": schema.mapping({"t": _any, "rid": schema.uint()}),
    "withdrawn": schema.mapping(
        {"t": _any, "rid": schema.uint(), "tasks": schema.list_of(_TASK_ID, MAX_BATCH)}
    ),
    "lease": schema.mapping(
        {
            "t": _any,
            "rid": schema.uint(),
            "tasks": schema.list_of(_TASK_ID, MAX_BATCH),
            "expires": _time,
        }
    ),
    "reject": schema.mapping(
        {"t": _any, "rid": schema.uint(), "reason": _REASON, "busy": schema.boolean}
    ),
    "beat": schema.mapping(
        {
            "t": _any,
            "running": schema.list_of(_TASK_ID, MAX_BATCH),
            "progress": schema.list_of(schema.number(0.0, 1.0), MAX_BATCH),
        }
    ),
    "result": schema.mapping(
        {
            "t": _any,
            "task": _TASK_ID,
            "output": _any,
            "error": schema.optional(_REASON),
            "receipt": lambda v, p: Receipt.from_wire(v, p),
        }
    ),
}


def parse(message: Any) -> dict[str, Any]:
    """A checked message (signed documents parsed into their classes), or `SchemaError`."""
    kind = message.get("t") if type(message) is dict else None
    check = MESSAGES.get(kind) if type(kind) is str else None
    if check is None or kind is None:
        raise SchemaError("t", f"unknown message type; known: {', '.join(MESSAGES)}")
    parsed: dict[str, Any] = check(message, kind)
    return parsed
