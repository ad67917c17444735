"""The three signed documents of a deal between a scheduler and a worker: the worker's `Quote`,
the scheduler's `Commitment`, the worker's `Receipt`; the limits the deal's messages share; and
how a result is hashed. The messages that carry them are in `wire.messages`.

Owns: the documents' fields and their bounds, the signing rules (each document signs a domain
tag plus the MessagePack of its fields, so a signature made for one kind of document never
verifies as another), and the form of a task id.
Promises: `from_wire` and `from_packed` return a document only if it is well-formed, else raise
`SchemaError` naming the field; `verify()` is true only for a document signed by the key whose
node id it names. A commitment or a receipt is signed alone, or in a batch (`signed_batch`):
its signer signs once the root of a Merkle tree (`wire.merkle`, under the document's own tags)
over the batch's documents, and each carries its own path to that root (`BatchProof`), so each
is provable on its own; the document, its path, its index and its leaf's salt all lead to the
root signed, or it does not verify. A commitment's leaf is salted (its path goes to rival
workers): a proof shows nothing of the other documents of its batch.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, ClassVar, TypeVar

import msgspec

from p2psched.identity import Identity, node_id_of, verify
from p2psched.wire.codec import MAX_MESSAGE_BYTES, DecodeError, encode
from p2psched.wire.merkle import Domain
from p2psched.wire.schema import SchemaError

MAX_BATCH = 4096  # tasks in one quote, commitment or dispatch; documents signed in one batch
MAX_BATCH_LEVELS = 12  # of a batch's Merkle tree: 2^12 = MAX_BATCH leaves
SALT_BYTES = 16  # of the random salt a commitment's leaf is hashed with (`BatchProof.salt`)
MAX_RESULT_BYTES = 12 << 20  # a task's output, within the channel's 16 MiB frame
# A task's input, encoded: it travels inside one message together with its envelope.
MAX_INPUT_BYTES = MAX_MESSAGE_BYTES // 2
MAX_RESERVED = 64  # late-binding places one scheduler may hold on one worker
MAX_RESULT_DEPTH = 64  # nesting of a task's output: JSON tools and the JSON files choke deeper

# The bounds of the deal's fields, as types: msgspec checks them while it decodes.
NodeId = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Hash = NodeId
Signature = Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]
JobId = Annotated[str, msgspec.Meta(max_length=80)]
MAX_TASK_ID = 160  # characters of a task id
TaskId = Annotated[str, msgspec.Meta(max_length=MAX_TASK_ID)]
TaskIds = Annotated[list[TaskId], msgspec.Meta(max_length=MAX_BATCH)]
Price = Annotated[float, msgspec.Meta(ge=0.0, le=1e15)]
Time = Annotated[float, msgspec.Meta(ge=0.0, le=1e11)]
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_BATCH)]
MAX_TASK_GPUS = 64  # as a job's resources.gpus may be
GpuCount = Annotated[int, msgspec.Meta(ge=0, le=MAX_TASK_GPUS)]

# How large a deal's messages may be, by phase: until the other side has sent one deal message
# (a quote request, a heartbeat), each side takes `MAX_OPENING_MESSAGE`; then a worker takes a
# commitment with its tasks, a scheduler a result. A stranger cannot make a node hold 16 MiB.
MAX_OPENING_MESSAGE = 4 << 10
COMMIT_BYTES = 8 << 20  # task inputs sent with one commitment, at most
COMMIT_ENVELOPE = 2 << 20  # what MAX_BATCH tasks add around their inputs (ids, drivers, models)
MAX_COMMIT_MESSAGE = COMMIT_BYTES + COMMIT_ENVELOPE  # the largest an honest scheduler sends
RESULT_ENVELOPE = 4 << 10  # what a result adds around its output (its receipt, its error)


def max_result_message(max_result_bytes: int) -> int:
    """The largest message a scheduler that takes outputs of `max_result_bytes` receives."""
    return max_result_bytes + RESULT_ENVELOPE


_D = TypeVar("_D", bound="_Signed")


def task_id_for(job: str, index: int) -> str:
    """Task ids name their job, so answers on a channel shared by jobs find their way."""
    return f"{job}/{index}"


def job_of(task_id: str) -> str:
    """The job a task id names (see `task_id_for`)."""
    return task_id.rpartition("/")[0]


class BatchProof(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where a document sits in the batch its signer signed at once: its leaf's index, and the
    sibling hashes from its leaf up to the root (the index's bit at each level says on which
    side the leaf's branch is)."""

    index: Annotated[int, msgspec.Meta(ge=0, lt=MAX_BATCH)]
    path: Annotated[list[Hash], msgspec.Meta(max_length=MAX_BATCH_LEVELS)]
    # Random bytes hashed into its leaf with the document (none: the document alone). Each
    # document's path carries its neighbours' leaves: a commitment's goes to a rival worker,
    # which could otherwise confirm guesses of that rival's deal (tasks, price) one hash each.
    salt: Annotated[bytes, msgspec.Meta(max_length=2 * SALT_BYTES)] = b""


def _leaf_item(body: bytes, salt: bytes) -> bytes:
    # The salt's length first: a salted item cannot pass for an unsalted one (a document's body
    # starts with its tag, b"p2psched/", whose first byte no salt's length is) nor for another
    # split of salt and body.
    return bytes([len(salt)]) + salt + body if salt else body


class _Signed(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Fields in declaration order; the last one is the signature over all the others. A
    document is made unsigned (`sig` empty) and then `signed`; on the wire it must carry its
    signature (`wire.messages` refuses one without).

    A kind that may be signed in a batch (`signed_batch`) has its tree's tags (`BATCH`) and
    declares `batch` after `sig`: no field of the signed document, absent (and absent from
    its wire form, which stays as it was) when it is signed alone."""

    TAG: ClassVar[bytes]
    SIGNER: ClassVar[str]  # who signs it, as its problems name them
    BATCH: ClassVar[Domain | None] = None
    SALTED: ClassVar[bool] = False  # its batches go to several parties: each leaf is salted

    def values(self) -> list[Any]:
        """The fields in order, signature last (`batch` is not one of them)."""
        names = self.__struct_fields__ if self.BATCH is None else self.__struct_fields__[:-1]
        return [getattr(self, name) for name in names]

    def body(self) -> bytes:
        return self.TAG + encode(self.values()[:-1])

    def signer(self) -> bytes:
        raise NotImplementedError

    def verify(self, public_key: bytes, roots: VerifiedRoots | None = None) -> bool:
        return self.problem(public_key, roots) is None

    def problem(self, public_key: bytes, roots: VerifiedRoots | None = None) -> str | None:
        """Why this is not a document signed by the key `public_key` of the node it names as
        its signer (None: it is). `roots`: batch roots checked already (one signature check
        per batch)."""
        if node_id_of(public_key) != self.signer():
            return f"is not signed by the {self.SIGNER} (it names another)"
        sig: bytes = self.values()[-1]
        batch: BatchProof | msgspec.UnsetType = getattr(self, "batch", msgspec.UNSET)
        if batch is msgspec.UNSET or self.BATCH is None:
            signed = verify(public_key, sig, self.body())
            return None if signed else f"is not signed by the {self.SIGNER}"
        leaf = self.BATCH.leaf(_leaf_item(self.body(), batch.salt))
        root = self.BATCH.root_from(leaf, batch.index, batch.path)
        if root is None:
            return (
                f"has a batch proof whose index ({batch.index}) is past its tree "
                f"({len(batch.path)} levels)"
            )
        if not (roots or VerifiedRoots(1)).verify(self.BATCH, public_key, root, sig):
            return (
                f"is not in a batch signed by the {self.SIGNER} (its fields, path or index "
                "lead to a root it did not sign)"
            )
        return None

    def signed(self: _D, identity: Identity) -> _D:
        return msgspec.structs.replace(self, sig=identity.sign(self.body()))

    def to_wire(self) -> dict[str, Any]:
        wire = {name: getattr(self, name) for name in self.__struct_fields__}
        batch = wire.pop("batch", msgspec.UNSET)
        if batch is not msgspec.UNSET:
            wire["batch"] = {"index": batch.index, "path": list(batch.path)}
            if batch.salt:
                wire["batch"]["salt"] = batch.salt
        return wire

    @classmethod
    def from_packed(cls: type[_D], packed: bytes, path: str) -> _D:
        """A document from its MessagePack (as `to_wire` gives it, encoded)."""
        try:
            with unreadable_as_decode_error():
                doc = msgspec.msgpack.decode(packed, type=cls)
        except msgspec.ValidationError as e:
            raise schema_error(e, path) from None
        if len(doc.values()[-1]) == 0:
            raise SchemaError(f"{path}.sig", "the document is not signed")
        return doc

    @classmethod
    def from_wire(cls: type[_D], obj: Any, path: str) -> _D:
        """A document from its decoded form (a map, as `to_wire` gives it)."""
        try:
            packed = encode(obj)
        except (OverflowError, TypeError, ValueError):
            raise SchemaError(path, "expected a map of MessagePack values") from None
        return cls.from_packed(packed, path)

    def to_json(self) -> dict[str, Any]:
        """For files people keep: bytes as hex."""
        doc: dict[str, Any] = {}
        for k, v in self.to_wire().items():
            doc[k] = v.hex() if isinstance(v, bytes) else v
        if "batch" in doc:
            doc["batch"] = {**doc["batch"], "path": [h.hex() for h in doc["batch"]["path"]]}
            if "salt" in doc["batch"]:
                doc["batch"]["salt"] = doc["batch"]["salt"].hex()
        return doc

    @classmethod
    def from_json(cls: type[_D], doc: Any, path: str = "document") -> _D:
        if not isinstance(doc, dict):
            raise SchemaError(path, "expected a JSON object")
        raw = dict(doc)
        batch = raw.get("batch")
        if isinstance(batch, dict) and isinstance(batch.get("path"), list):
            try:
                hashes = [bytes.fromhex(h) if isinstance(h, str) else h for h in batch["path"]]
            except ValueError:
                raise SchemaError(f"{path}.batch.path", "expected hex") from None
            raw["batch"] = {**batch, "path": hashes}
            if isinstance(batch.get("salt"), str):
                try:
                    raw["batch"]["salt"] = bytes.fromhex(batch["salt"])
                except ValueError:
                    raise SchemaError(f"{path}.batch.salt", "expected hex") from None
        for name in cls.__struct_fields__:
            if name in _BINARY and isinstance(raw.get(name), str):
                try:
                    raw[name] = bytes.fromhex(raw[name])
                except ValueError:
                    raise SchemaError(f"{path}.{name}", "expected hex") from None
        return cls.from_wire(raw, path)


_BINARY = frozenset({"worker", "scheduler", "result_hash", "sig"})


class _PricedByGpus(_Signed, frozen=True, forbid_unknown_fields=True):
    """A document that gained a `gpus` field (signed as `TAG`): one for no GPUs of its own is
    signed as it was before it had the field (`TAG_BEFORE_GPUS`, without it), so that what
    ledgers stored then still verifies and says the same; the tags keep the two forms apart."""

    TAG_BEFORE_GPUS: ClassVar[bytes]

    def body(self) -> bytes:
        # (`gpus` is declared by each subclass, where its place among the fields is)
        if getattr(self, "gpus") != 0:  # noqa: B009
            return super().body()
        values = self.values()[:-1]
        del values[self.__struct_fields__.index("gpus")]
        return self.TAG_BEFORE_GPUS + encode(values)


class Quote(_PricedByGpus, frozen=True, forbid_unknown_fields=True):
    """A worker's offer for up to `capacity` tasks of one request, at `price` each: tasks
    that need `gpus` GPUs to themselves (0: a slot's share), which the price is for."""

    worker: NodeId
    scheduler: NodeId
    job: JobId
    price: Price
    wait_mean: Time  # seconds until a task of the batch would start
    wait_err: Time
    run_mean: Time  # seconds a task like this has taken here (0: no history)
    capacity: Count
    valid_until: Time
    gpus: GpuCount = 0
    sig: Signature = b""

    TAG = b"p2psched/quote/2"
    TAG_BEFORE_GPUS = b"p2psched/quote/1"
    SIGNER = "worker"

    def signer(self) -> bytes:
        return self.worker


class Commitment(_PricedByGpus, frozen=True, forbid_unknown_fields=True):
    """A scheduler's promise to pay `price` per task for these tasks on this worker, each
    needing `gpus` GPUs to itself (0: a slot's share): the worker prices a task by the GPUs
    it takes, and runs none that asks for other GPUs than its commitment says.

    Signed alone, or in a batch with the other commitments of its commit round (one a
    worker): then `batch` leads from this one's body to the root signed, so each still
    verifies on its own (the worker, the ledger, `--verify`)."""

    scheduler: NodeId
    worker: NodeId
    job: JobId
    tasks: TaskIds
    price: Price
    issued_at: Time
    gpus: GpuCount = 0
    sig: Signature = b""
    batch: BatchProof | msgspec.UnsetType = msgspec.UNSET

    TAG = b"p2psched/commitment/2"
    TAG_BEFORE_GPUS = b"p2psched/commitment/1"
    SIGNER = "scheduler"
    BATCH = Domain(b"p2psched/commitment")  # (its tags: no prefix of the documents', nor theirs)
    SALTED = True  # (a round's commitments go to rival workers)

    def signer(self) -> bytes:
        return self.scheduler


class Receipt(_Signed, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A worker's statement that it ran `task` for `scheduler`: what came out (its hash), how
    long it took and what it costs. `ok` false: the task failed and costs nothing. Signed
    alone (its form before batches, byte for byte), or in a batch of the worker's receipts
    for one scheduler: then `batch` leads from this receipt to the root signed."""

    worker: NodeId
    scheduler: NodeId
    job: JobId
    task: TaskId
    ok: bool
    result_hash: Hash
    duration: Time
    price: Price
    finished_at: Time
    sig: Signature = b""
    batch: BatchProof | msgspec.UnsetType = msgspec.UNSET

    TAG = b"p2psched/receipt/1"
    SIGNER = "worker"
    BATCH = Domain(b"p2psched/receipt")

    def signer(self) -> bytes:
        return self.worker


def signed_batch(identity: Identity, documents: Sequence[_D]) -> list[_D]:
    """`documents` (unsigned, of one kind that may be signed in a batch) signed by `identity`:
    one alone as it is, several with one signature a `MAX_BATCH` of them, over the root of
    their tree, each with its own proof (`batch`)."""
    out: list[_D] = []
    for at in range(0, len(documents), MAX_BATCH):
        chunk = documents[at : at + MAX_BATCH]
        if len(chunk) == 1:
            out.append(chunk[0].signed(identity))
            continue
        domain = chunk[0].BATCH
        assert domain is not None and all(type(d) is type(chunk[0]) for d in chunk)
        if chunk[0].SALTED:  # (one call for the randomness of all)
            pool = secrets.token_bytes(SALT_BYTES * len(chunk))
            salts = [pool[k : k + SALT_BYTES] for k in range(0, len(pool), SALT_BYTES)]
        else:
            salts = [b""] * len(chunk)
        tree = domain.tree(
            [domain.leaf(_leaf_item(d.body(), s)) for d, s in zip(chunk, salts, strict=True)]
        )
        sig = identity.sign(domain.signed_root(tree.root))
        out.extend(
            msgspec.structs.replace(d, sig=sig, batch=BatchProof(i, tree.proof(i), salts[i]))
            for i, d in enumerate(chunk)
        )
    return out


class VerifiedRoots:
    """Batch roots whose signatures this node checked, by their tree's tags, signer key, root
    and signature: the newest `size` of them. A batch's documents come one by one; the first
    one's check of its root's signature stands for the others'."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._seen: OrderedDict[tuple[bytes, bytes, bytes, bytes], None] = OrderedDict()
        self.signatures = 0  # root signatures checked (not found here)

    def verify(self, domain: Domain, public_key: bytes, root: bytes, sig: bytes) -> bool:
        key = (domain.root_tag, public_key, root, sig)
        if key in self._seen:
            self._seen.move_to_end(key)
            return True
        self.signatures += 1
        if not verify(public_key, sig, domain.signed_root(root)):
            return False
        self._seen[key] = None
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True


@contextmanager
def unreadable_as_decode_error() -> Iterator[None]:
    """Bytes msgspec cannot read at all (malformed, or nested deeper than it recurses to skip
    a value) as our `DecodeError`; a value that does not fit its type passes through."""
    try:
        yield
    except msgspec.ValidationError:
        raise
    except msgspec.DecodeError as e:
        raise DecodeError(f"malformed MessagePack ({e})") from None
    except RecursionError:  # a frame nested thousands deep: malformed, not a crash
        raise DecodeError("malformed MessagePack (nested too deep)") from None


def schema_error(e: msgspec.ValidationError, path: str) -> SchemaError:
    """msgspec's account of a value that does not fit its type, as a `SchemaError` whose
    path starts at `path` (msgspec says `$.run[0].id`; we say `commit.run[0].id`). What the
    sender chose (an unknown field's name, a key deep in a path) is cut short and quoted: the
    error goes into tasks' errors, the store and the logs."""
    text = str(e)
    reason, at, where = text.rpartition(" - at `$")
    if not at:
        reason, where = text, ""
    reason = _UNKNOWN.sub(lambda m: f"unknown field {_quoted(m.group(1))}", reason)
    return SchemaError(_quoted(path + where.rstrip("`"), quotes=False), _quoted(reason, False))


_UNKNOWN = re.compile(r"unknown field `(.*)`", re.S)
MAX_ECHO = 40  # characters of what a peer sent that an error may repeat


def _quoted(text: str, quotes: bool = True, limit: int = MAX_ECHO) -> str:
    """`text` on one line and at most about `limit` characters (more for our own wording)."""
    limit = limit if quotes else 4 * limit
    shown = text if len(text) <= limit else text[:limit] + "…"
    one_line = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in shown)
    return f"`{one_line}`" if quotes else one_line


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


def packed_hash(packed: bytes | memoryview) -> bytes:
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
