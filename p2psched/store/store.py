"""A node's durable state in one SQLite file: its jobs, tasks and their transitions, results, the
peers it paid and where to reach them, and the ledger of signed commitments and receipts;
beside it, the folder of outputs too large to keep in the file (`OUTPUTS`).

Owns: `Store`, the one handle on that file, which the node opens and hands to both its roles:
opening (and migrating, see `schema`), the node's identity in it, and writing `journal` entries;
its reads (`queries`) and the ledger's views (`ledger`) are mixed in.
Promises: a batch of entries is written in one transaction, all or nothing, and once `write`
returns it survives the process being killed (WAL, synchronous=NORMAL: not a power cut); a
result over `spool_over` bytes is in its file, whole, before its row names it.

The node's own public key (the signer of the commitments it pays under and the receipts it
issues) is kept once, in `meta`, set by `Store.open(path, own_public_key=...)`; those ledger
rows have a NULL `signer_public_key`. A store is used by one caller at a time (the node's
shell, from one thread at a time): it may be handed to a worker thread, but not shared by two.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from p2psched.identity import node_id_of
from p2psched.store.journal import Entry
from p2psched.store.ledger import StoreLedger
from p2psched.store.queries import StoreReads
from p2psched.store.schema import StoreError, prepare, transaction
from p2psched.store.writes import batch_of

log = logging.getLogger(__name__)
OUTPUTS = "outputs"  # beside the store's file: the results too large to keep in it, by SHA-256
SPOOL_RESULT_BYTES = 1 << 20  # a result larger is kept there, not in its row (nor in memory)


class Store(StoreReads, StoreLedger):
    """A node's SQLite store. Open with `Store.open`; close with `close()` or a `with` block."""

    def __init__(
        self, path: Path, connection: sqlite3.Connection, spool_over: int = SPOOL_RESULT_BYTES
    ) -> None:
        self.path = path
        self.outputs = path.parent / OUTPUTS
        self.spool_over = spool_over
        self._db = connection
        row = connection.execute("SELECT value FROM meta WHERE key = 'own_public_key'").fetchone()
        self.own_public_key = row[0] if row else None

    @classmethod
    def open(
        cls,
        path: Path,
        own_public_key: bytes | None = None,
        *,
        spool_over: int = SPOOL_RESULT_BYTES,
    ) -> Store:
        """Open the store at `path`, creating it (mode 0600) if it does not exist.

        `own_public_key` is the node's identity key: recorded on first use, and checked on
        every later open, so a store is never credited to a different identity by mistake.
        A result over `spool_over` bytes is kept in a file of its `outputs` folder.
        """
        path = Path(path)
        try:
            # O_EXCL + 0600: results and the ledger are nobody else's business, not even
            # between SQLite creating the file and a chmod.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        except OSError as e:
            raise StoreError(
                f"{path} cannot be created ({e.strerror}); check that its directory exists "
                "and is writable."
            ) from None
        # Transactions are explicit (see `schema.transaction`), hence isolation_level=None.
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
        try:
            prepare(db, path)
            store = cls(path, db, spool_over)
            if own_public_key is not None:
                store._set_identity(own_public_key)
        except BaseException:
            db.close()
            raise
        return store

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _set_identity(self, public_key: bytes) -> None:
        if self.own_public_key == public_key:
            return
        if self.own_public_key is not None:
            raise StoreError(
                f"{self.path} belongs to the node whose id is "
                f"{node_id_of(self.own_public_key).hex()}, not to this identity "
                f"({node_id_of(public_key).hex()}); use the data directory this store came "
                "with, or move the store away to start a new one."
            )
        with transaction(self._db):
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('own_public_key', ?)", (public_key,)
            )
        self.own_public_key = public_key

    def write(self, entries: Iterable[Entry]) -> None:
        """Make `entries` durable, in one transaction.

        Entries of one type keep their order; the types are written jobs first and finished
        jobs last, so a batch may open a job and move its tasks. An entry naming a job this
        store never opened (a bug in the caller: `JobOpened` comes first) refuses the whole
        batch with ValueError, leaving the store as it was; so does a task's result charged
        twice. A job opened again (a resumed scheduler announcing it) keeps what was stored.
        """
        batch = batch_of(entries, self.spool_over)
        if not batch:
            return
        self._spool(batch.spooled)
        try:
            with transaction(self._db) as db:
                batch.apply(db)
        except sqlite3.IntegrityError as e:
            raise ValueError(batch.refusal(self._db, self.path, e)) from e

    def _spool(self, outputs: dict[str, bytes]) -> None:
        """Write each output to its file (a file is there whole or not at all: written aside,
        then renamed); one already there holds the same bytes, its name being their hash."""
        if not outputs:
            return
        self.outputs.mkdir(mode=0o700, exist_ok=True)
        for name, output in outputs.items():
            path = self.outputs / name
            if path.exists():
                continue
            aside = path.with_suffix(f".{os.getpid()}.part")
            fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(output)
            os.replace(aside, path)

    def record(self, entries: list[Entry]) -> None:
        """Make a core's journal durable, then empty it: what each role's shell calls before
        what the entries caused goes out. A write that fails is logged, not raised: the node
        goes on (its jobs still run), but says loudly it cannot keep them."""
        if entries:
            try:
                self.write(entries)
            except (sqlite3.Error, OSError, ValueError, TypeError):
                log.exception("could not record %d entries in %s", len(entries), self.path)
        entries.clear()
