"""The three signed documents of a deal between a scheduler and a worker: the worker's `Quote`,
the scheduler's `Commitment`, the worker's `Receipt`; the limits the deal's messages share; and
how a result is hashed. The messages that carry them are in `wire.messages`.

Owns: the documents' fields and their bounds, the signing rules (each document signs a domain
tag plus the MessagePack of its fields, so a signature made for one kind of document never
verifies as another), and the form of a task id.
Promises: `from_wire` and `from_packed` return a document only if it is well-formed, else raise
`SchemaError` naming the field; `verify()` is true only for a document signed by the key whose
node id it names. A receipt is signed alone, or as a leaf of a batch (`BatchProof`): its worker
signs the root of a SHA-256 Merkle tree over the batch's receipts once, and each receipt carries
its own path to that root, so each is provable on its own; the leaf, its path and its index
all lead to the root signed, or it does not verify.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, ClassVar, TypeVar

import msgspec

from p2psched.identity import Identity, node_id_of, verify
from p2psched.wire.codec import MAX_MESSAGE_BYTES, DecodeError, encode
from p2psched.wire.merkle import MerkleTree, leaf_hash, root_from
from p2psched.wire.schema import SchemaError

MAX_BATCH = 4096  # tasks in one quote, commitment or dispatch; commitments (and a round, receipts)
MAX_ROUND_DEPTH = 12  # levels of a round's Merkle tree: 2^12 = MAX_BATCH leaves
MAX_BATCH_LEVELS = MAX_ROUND_DEPTH  # a receipt batch's tree
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


class _Signed(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Fields in declaration order; the last one is the signature over all the others. A
    document is made unsigned (`sig` empty) and then `signed`; on the wire it must carry its
    signature (`wire.messages` refuses one without)."""

    TAG: ClassVar[bytes]

    def values(self) -> list[Any]:
        """The fields in order, signature last."""
        return [getattr(self, name) for name in self.__struct_fields__]

    def body(self) -> bytes:
        return self.TAG + encode(self.values()[:-1])

    def signer(self) -> bytes:
        raise NotImplementedError

    def verify(self, public_key: bytes) -> bool:
        sig: bytes = self.values()[-1]
        return node_id_of(public_key) == self.signer() and verify(public_key, sig, self.body())

    def signed(self: _D, identity: Identity) -> _D:
        return msgspec.structs.replace(self, sig=identity.sign(self.body()))

    def to_wire(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__struct_fields__}

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
        return {k: v.hex() if isinstance(v, bytes) else v for k, v in self.to_wire().items()}

    @classmethod
    def from_json(cls: type[_D], doc: Any, path: str = "document") -> _D:
        if not isinstance(doc, dict):
            raise SchemaError(path, "expected a JSON object")
        raw = dict(doc)
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

    def signer(self) -> bytes:
        return self.worker


class RoundProof(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where a commitment sits among those of its commit round, signed together: leaf
    `index` of `size` in their Merkle tree, and the sibling hashes from it up to the root."""

    index: Count
    size: Annotated[int, msgspec.Meta(ge=2, le=MAX_BATCH)]
    path: Annotated[list[Hash], msgspec.Meta(max_length=MAX_ROUND_DEPTH)]


class Commitment(_PricedByGpus, frozen=True, forbid_unknown_fields=True):
    """A scheduler's promise to pay `price` per task for these tasks on this worker, each
    needing `gpus` GPUs to itself (0: a slot's share): the worker prices a task by the GPUs
    it takes, and runs none that asks for other GPUs than its commitment says.

    Signed alone (no `round`, and none in its wire form, which stays as it was), or with the
    other commitments of its commit round (one a worker, see `signed_together`): then `sig`
    signs ROUND_TAG and the Merkle root of their bodies, and `round` leads from this one's
    body to that root, so each still verifies on its own (the worker, the ledger,
    `--verify`). `round` is not part of the body."""

    scheduler: NodeId
    worker: NodeId
    job: JobId
    tasks: TaskIds
    price: Price
    issued_at: Time
    gpus: GpuCount = 0
    sig: Signature = b""
    round: RoundProof | msgspec.UnsetType = msgspec.UNSET

    TAG = b"p2psched/commitment/2"
    TAG_BEFORE_GPUS = b"p2psched/commitment/1"
    ROUND_TAG = b"p2psched/commitment-round/1"  # (not a prefix of the tags: no body is a root's)

    def signer(self) -> bytes:
        return self.scheduler

    def values(self) -> list[Any]:
        """The fields in order, signature last (`round` is no field of the signed document)."""
        return [getattr(self, name) for name in self.__struct_fields__[:-1]]

    def verify(self, public_key: bytes) -> bool:
        r = self.round
        if r is msgspec.UNSET:
            return super().verify(public_key)
        root = root_from(leaf_hash(self.body()), r.size, r.index, r.path)
        return (
            root is not None
            and node_id_of(public_key) == self.signer()
            and verify(public_key, self.sig, self.ROUND_TAG + root)
        )

    def to_wire(self) -> dict[str, Any]:
        wire = super().to_wire()
        if self.round is msgspec.UNSET:
            del wire["round"]
        else:
            wire["round"] = msgspec.structs.asdict(self.round)
        return wire


def signed_together(commitments: list[Commitment], identity: Identity) -> list[Commitment]:
    """`commitments` (unsigned, to different workers) signed by `identity`: one alone as it
    is, several with one signature over the Merkle root of their bodies (`Commitment.round`),
    up to MAX_BATCH a signature."""
    if len(commitments) == 1:
        return [commitments[0].signed(identity)]
    out: list[Commitment] = []
    for at in range(0, len(commitments), MAX_BATCH):
        chunk = commitments[at : at + MAX_BATCH]
        if len(chunk) == 1:
            out.append(chunk[0].signed(identity))
            continue
        tree = MerkleTree([leaf_hash(c.body()) for c in chunk])
        sig = identity.sign(Commitment.ROUND_TAG + tree.root)
        out.extend(
            msgspec.structs.replace(c, sig=sig, round=RoundProof(i, len(chunk), tree.proof(i)))
            for i, c in enumerate(chunk)
        )
    return out


class BatchProof(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where a receipt sits in the batch its worker signed at once: its leaf's index, and the
    sibling hashes from its leaf up to the root (the index's bit at each level says on which
    side the leaf's branch is)."""

    index: Annotated[int, msgspec.Meta(ge=0, lt=MAX_BATCH)]
    path: Annotated[list[Hash], msgspec.Meta(max_length=MAX_BATCH_LEVELS)]

    def root(self, leaf: bytes) -> bytes | None:
        """The root this proof leads to from `leaf`; None if its index is past its tree."""
        if self.index >> len(self.path):
            return None
        node, at = leaf, self.index
        for sibling in self.path:
            node = _node(sibling, node) if at & 1 else _node(node, sibling)
            at >>= 1
        return node


class Receipt(_Signed, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A worker's statement that it ran `task` for `scheduler`: what came out (its hash), how
    long it took and what it costs. `ok` false: the task failed and costs nothing. Signed
    alone (`batch` None: its form before batches, byte for byte), or in a batch: then `sig`
    signs the batch's root, and `batch` leads there from this receipt's leaf."""

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
    batch: BatchProof | None = None  # (not signed: the root's signature covers it)

    TAG = b"p2psched/receipt/1"

    def signer(self) -> bytes:
        return self.worker

    def values(self) -> list[Any]:
        return [getattr(self, name) for name in self.__struct_fields__[:-1]]

    def leaf(self) -> bytes:
        """This receipt's leaf in a batch: a hash of what it signs alone, tagged as a leaf."""
        return hashlib.sha256(_LEAF + self.body()).digest()

    def verify(self, public_key: bytes, roots: VerifiedRoots | None = None) -> bool:
        return self.problem(public_key, roots) is None

    def problem(self, public_key: bytes, roots: VerifiedRoots | None = None) -> str | None:
        """Why this is not a receipt signed by the worker whose key is `public_key` (None: it
        is). `roots`: batch roots checked already (one signature check per batch)."""
        if node_id_of(public_key) != self.worker:
            return "is not signed by the worker (it names another)"
        if self.batch is None:
            signed = verify(public_key, self.sig, self.body())
            return None if signed else "is not signed by the worker"
        root = self.batch.root(self.leaf())
        if root is None:
            return (
                f"has a batch proof whose index ({self.batch.index}) is past its tree "
                f"({len(self.batch.path)} levels)"
            )
        if not (roots or VerifiedRoots(1)).verify(public_key, root, self.sig):
            return (
                "is not in a batch signed by the worker (its fields, path or index lead to a "
                "root it did not sign)"
            )
        return None

    def to_wire(self) -> dict[str, Any]:
        wire = super().to_wire()
        del wire["batch"]
        if self.batch is not None:
            wire["batch"] = {"index": self.batch.index, "path": list(self.batch.path)}
        return wire

    def to_json(self) -> dict[str, Any]:
        doc = super().to_json()
        if self.batch is not None:
            doc["batch"] = {"index": self.batch.index, "path": [h.hex() for h in self.batch.path]}
        return doc

    @classmethod
    def from_json(cls, doc: Any, path: str = "document") -> Receipt:
        batch = doc.get("batch") if isinstance(doc, dict) else None
        if isinstance(batch, dict) and isinstance(batch.get("path"), list):
            try:
                hashes = [bytes.fromhex(h) if isinstance(h, str) else h for h in batch["path"]]
            except ValueError:
                raise SchemaError(f"{path}.batch.path", "expected hex") from None
            doc = {**doc, "batch": {**batch, "path": hashes}}
        return super().from_json(doc, path)


# A batch's tree: leaves, inner nodes and the root signed each under their own tag, apart from
# each other and from every document a node signs. An empty place in a batch whose size is not
# a power of two is `_PAD[0]`, a subtree of only such places `_PAD[level]`: the tree is always
# full, so a leaf's index says its side at every level, and a leaf proven at one index never
# proves at another.
_LEAF = b"p2psched/receipt-leaf/1"
_NODE = b"p2psched/receipt-node/1"
_ROOT = b"p2psched/receipt-root/1"


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


_PAD = [hashlib.sha256(b"p2psched/receipt-pad/1").digest()]
for _ in range(MAX_BATCH_LEVELS):
    _PAD.append(_node(_PAD[-1], _PAD[-1]))


def signed_batch(identity: Identity, receipts: Sequence[Receipt]) -> list[Receipt]:
    """`receipts` (unsigned, at most `MAX_BATCH`) signed with one signature: the root of their
    tree's, each with its own proof. One alone is signed alone, as before batches."""
    if len(receipts) == 1:
        return [receipts[0].signed(identity)]
    assert 1 < len(receipts) <= MAX_BATCH
    levels = [[r.leaf() for r in receipts]]
    while len(level := levels[-1]) > 1:
        if len(level) % 2:
            level.append(_PAD[len(levels) - 1])
        levels.append([_node(level[i], level[i + 1]) for i in range(0, len(level), 2)])
    sig = identity.sign(_ROOT + levels[-1][0])
    return [
        msgspec.structs.replace(
            r, sig=sig, batch=BatchProof(i, [lv[(i >> k) ^ 1] for k, lv in enumerate(levels[:-1])])
        )
        for i, r in enumerate(receipts)
    ]


class VerifiedRoots:
    """Batch roots whose signatures this node checked, by signer key, root and signature: the
    newest `size` of them. A batch's receipts come one by one; the first one's check of its
    root's signature stands for the others'."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._seen: OrderedDict[tuple[bytes, bytes, bytes], None] = OrderedDict()
        self.signatures = 0  # root signatures checked (not found here)

    def verify(self, public_key: bytes, root: bytes, sig: bytes) -> bool:
        key = (public_key, root, sig)
        if key in self._seen:
            self._seen.move_to_end(key)
            return True
        self.signatures += 1
        if not verify(public_key, sig, _ROOT + root):
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
