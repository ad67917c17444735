"""The ledger's views: what each job and each peer cost or earned, and its verification.

Owns: `StoreLedger` (which `Store` is made of): the money summary (what was spent, what awaits
verification, what was disputed), and `verify_ledger`, which re-checks every entry of the
`ledger` table from its signed document.
Promises: `verify_ledger` trusts no column it can re-derive: every entry is re-checked from its
signed document and the public key that signed it, and every problem is named by its entry.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from p2psched.identity import node_id_of
from p2psched.store.schema import SPENT, document
from p2psched.wire.codec import DecodeError
from p2psched.wire.deal import Commitment, Receipt
from p2psched.wire.schema import SchemaError

_UNPAID = "('disputed', 'unsettled')"
DISPUTED_LISTED = 100  # the disputed receipts a summary lists (all are counted)

# (role, job, task, worker, scheduler): whose deal over which task.
_TaskDeal = tuple[str, str, str, bytes, bytes]


class StoreLedger:
    """The ledger side of `Store`, over its connection and the node's own key."""

    _db: sqlite3.Connection
    own_public_key: bytes | None

    def ledger_summary(self) -> dict[str, Any]:
        """Money by job (what this node committed and spent on its own jobs) and by peer.

        {"jobs": [{"job", "committed", "spent", "tasks_paid", "pending", "disputed"}],
        "peers": [{"peer" (hex node id), "spent" (we paid them), "earned" (they paid us),
        "disputed"}], "spent": total, "earned": total, "disputed": [{"job", "task", "peer",
        "amount", "verdict", "at"}] (the newest `DISPUTED_LISTED`, newest first)}.
        `committed` adds up every commitment made, including money released when a task was
        retried elsewhere: it is what was held, not what is still held. A receipt counts as
        spent when it is ok and plain or agreed: one pending verification, disputed or left
        unsettled (no quorum) is counted by `pending` or `disputed` ("disputed" and
        "unsettled" both), never as spent.
        """
        jobs = [
            {
                "job": r[0],
                "committed": r[1],
                "spent": r[2],
                "tasks_paid": r[3],
                "pending": r[4],
                "disputed": r[5],
            }
            for r in self._db.execute(
                "SELECT job, "
                "TOTAL(CASE WHEN kind = 'commitment' THEN amount END), "
                f"TOTAL(CASE WHEN kind = 'receipt' AND {SPENT} THEN amount END), "
                f"COUNT(CASE WHEN kind = 'receipt' AND {SPENT} THEN 1 END), "
                "COUNT(CASE WHEN verdict = 'pending' THEN 1 END), "
                f"COUNT(CASE WHEN verdict IN {_UNPAID} THEN 1 END) "
                "FROM ledger WHERE role = 'paid' GROUP BY job ORDER BY job"
            )
        ]
        peers = [
            {"peer": r[0].hex(), "spent": r[1], "earned": r[2], "disputed": r[3]}
            for r in self._db.execute(
                "SELECT peer, "
                f"TOTAL(CASE WHEN role = 'paid' AND {SPENT} THEN amount END), "
                "TOTAL(CASE WHEN role = 'earned' AND ok THEN amount END), "
                f"COUNT(CASE WHEN verdict IN {_UNPAID} THEN 1 END) "
                "FROM ledger WHERE kind = 'receipt' GROUP BY peer ORDER BY peer"
            )
        ]
        disputed = [
            {
                "job": r[0],
                "task": r[1],
                "peer": r[2].hex(),
                "amount": r[3],
                "verdict": r[4],
                "at": r[5],
            }
            for r in self._db.execute(
                "SELECT job, task, peer, amount, verdict, at FROM ledger "
                f"WHERE role = 'paid' AND kind = 'receipt' AND verdict IN {_UNPAID} "
                "ORDER BY seq DESC LIMIT ?",
                (DISPUTED_LISTED,),
            )
        ]
        return {
            "jobs": jobs,
            "peers": peers,
            "spent": math.fsum(p["spent"] for p in peers),
            "earned": math.fsum(p["earned"] for p in peers),
            "disputed": disputed,
        }

    def receipts_paid(self, job: str) -> dict[str, list[tuple[str | None, bool]]]:
        """The receipts this node holds for its job `job`, by task: each one's verdict (None:
        a plain receipt) and whether it counts as spent."""
        found: dict[str, list[tuple[str | None, bool]]] = {}
        for task, verdict, spent in self._db.execute(
            f"SELECT task, verdict, {SPENT} FROM ledger "
            "WHERE job = ? AND role = 'paid' AND kind = 'receipt' ORDER BY seq",
            (job,),
        ):
            found.setdefault(task, []).append((verdict, bool(spent)))
        return found

    def verify_ledger(self) -> list[str]:
        """Every problem found by re-checking each ledger entry from its document alone: the
        signature, the signer's key against the id the document names, the columns against the
        signed fields, and each receipt's charge against the commitment for its task. Empty when
        all is well."""
        own_key = self.own_public_key
        audit = _Audit(own_key, None if own_key is None else node_id_of(own_key))
        for row in self._db.execute(
            "SELECT seq, role, kind, job, task, peer, amount, ok, document, signer_public_key "
            "FROM ledger ORDER BY seq"
        ):
            audit.check(_LedgerRow(*row))
        audit.check_charges()
        return audit.problems


@dataclass(frozen=True, slots=True)
class _LedgerRow:
    seq: int
    role: str  # "paid" or "earned"
    kind: str  # "commitment" or "receipt"
    job: str
    task: str | None
    peer: bytes
    amount: float
    ok: int | None
    document: bytes
    signer_public_key: bytes | None

    @property
    def name(self) -> str:
        return f"ledger entry {self.seq} ({self.role} {self.kind}, job {self.job!r})"


@dataclass(slots=True)
class _Audit:
    """One pass over the ledger: each entry on its own, then each receipt against the
    commitments for its task."""

    own_public_key: bytes | None
    own_id: bytes | None
    problems: list[str] = field(default_factory=list)
    committed: dict[_TaskDeal, list[float]] = field(default_factory=dict)  # the prices
    receipts: list[tuple[str, str, Receipt]] = field(default_factory=list)  # name, role, it

    def check(self, row: _LedgerRow) -> None:
        try:
            doc: Commitment | Receipt = (
                document(Commitment, row.document)
                if row.kind == "commitment"
                else document(Receipt, row.document)
            )
        except (DecodeError, SchemaError, TypeError) as e:
            self.problems.append(f"{row.name}: the document does not parse ({e})")
            return
        self._check_signature(row, doc)
        if isinstance(doc, Commitment):
            expected = doc.price * len(doc.tasks)
            signed_task: str | None = None
            signed_ok: bool | None = None
            for t in doc.tasks:
                deal = (row.role, doc.job, t, doc.worker, doc.scheduler)
                self.committed.setdefault(deal, []).append(doc.price)
        else:
            expected = doc.price if doc.ok else 0.0
            signed_task, signed_ok = doc.task, doc.ok
            self.receipts.append((row.name, row.role, doc))
        # Whom the document is with, seen from this node.
        ours, theirs = (
            (doc.scheduler, doc.worker) if row.role == "paid" else (doc.worker, doc.scheduler)
        )
        if self.own_id is not None and ours != self.own_id:
            self.problems.append(f"{row.name}: the document is not this node's deal")
        mismatched = [
            column
            for column, stored, signed in (
                ("job", row.job, doc.job),
                ("peer", row.peer, theirs),
                ("amount", row.amount, expected),
                ("task", row.task, signed_task),
                ("ok", None if row.ok is None else bool(row.ok), signed_ok),
            )
            if stored != signed
        ]
        if mismatched:
            self.problems.append(
                f"{row.name}: stored columns differ from the signed document: "
                + ", ".join(mismatched)
            )

    def _check_signature(self, row: _LedgerRow, doc: Commitment | Receipt) -> None:
        signer_key = row.signer_public_key
        # The node signs its own commitments (paying) and receipts (earning).
        if (row.role, row.kind) in (("paid", "commitment"), ("earned", "receipt")):
            if signer_key is not None:
                self.problems.append(f"{row.name}: signed by this node, yet names a signer key")
            signer_key = self.own_public_key
        if signer_key is None:
            self.problems.append(f"{row.name}: no public key to check the signature with")
        elif not doc.verify(signer_key):
            if node_id_of(signer_key) != doc.signer():
                self.problems.append(
                    f"{row.name}: the signer's key is not the key of the id it names"
                )
            else:
                self.problems.append(f"{row.name}: the signature does not verify")

    def check_charges(self) -> None:
        """Each receipt against the commitments for its task: one exists, and an ok receipt
        charges no more than the most that was committed."""
        for name, role, r in self.receipts:
            prices = self.committed.get((role, r.job, r.task, r.worker, r.scheduler))
            if prices is None:
                self.problems.append(f"{name}: no commitment names task {r.task!r}")
            elif r.ok and r.price > max(prices):
                self.problems.append(
                    f"{name}: charges {r.price} for task {r.task!r}, over the {max(prices)} "
                    "committed"
                )
