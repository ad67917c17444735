"""The iterative Kademlia lookup as a pure state machine.

Owns: one lookup's candidates, what was asked of whom, and when the lookup is done.
Promises: never more than `alpha` queries outstanding; done exactly when the `k` closest
candidates not known to have failed have all answered (or nobody is left to ask). A value lookup
also collects records, unchecked: per publisher every distinct version (`versions`; `newest` is
the newest whose signature checks), and ends early once `quorum` holders have given all their
pages. It performs no I/O; `p2psched.dht.traverse` drives it with any network call, real or an
in-memory graph.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from operator import attrgetter

from p2psched.dht.records import Record
from p2psched.dht.routing import Contact, as_int


class _State(Enum):
    NEW = 0
    PENDING = 1
    ANSWERED = 2
    FAILED = 3


@dataclass(frozen=True, slots=True)
class Query:
    contact: Contact
    cursor: bytes | None = None  # value lookups: the page to ask for (None: first page)


@dataclass(frozen=True, slots=True)
class Answer:
    """What a queried node answered: closer contacts, and for value lookups one page of records."""

    contacts: list[Contact]
    records: list[Record] | None = None
    next_cursor: bytes | None = None


@dataclass(slots=True)
class _Candidate:
    contact: Contact
    distance: int
    hops: int
    state: _State = _State.NEW


class Lookup:
    def __init__(
        self,
        target: bytes,
        seeds: list[Contact],
        *,
        k: int = 20,
        alpha: int = 3,
        own_id: bytes | None = None,
        max_queries: int = 200,
    ) -> None:
        self.target = target
        self.k = k
        self.alpha = alpha
        self.max_queries = max_queries
        self._t = as_int(target)
        self._own_id = own_id
        self._by_id: dict[bytes, _Candidate] = {}
        # (distance, id) of every candidate not known to have failed, nearest first.
        self._order: list[tuple[int, bytes]] = []
        self.inflight = 0
        self.queries_sent = 0
        for c in seeds:
            self._add(c, 0)

    def _add(self, contact: Contact, hops: int) -> None:
        if contact.node_id == self._own_id:
            return
        known = self._by_id.get(contact.node_id)
        if known is not None:
            known.hops = min(known.hops, hops)
            return
        d = as_int(contact.node_id) ^ self._t
        self._by_id[contact.node_id] = _Candidate(contact, d, hops)
        bisect.insort(self._order, (d, contact.node_id))

    def _frontier(self) -> list[_Candidate]:
        """The k closest candidates not known to have failed."""
        by_id = self._by_id
        return [by_id[node_id] for _, node_id in self._order[: self.k]]

    @property
    def finished(self) -> bool:
        if self.queries_sent >= self.max_queries and not self.inflight:
            return True  # out of budget: what answered so far is the result
        return all(c.state is _State.ANSWERED for c in self._frontier())

    def next_queries(self) -> list[Query]:
        """Queries to send now (each is counted as outstanding until answered or failed)."""
        out: list[Query] = []
        if self.finished:
            return out
        width = self._width()
        for cand in self._frontier():
            if self.inflight >= width or self.queries_sent + len(out) >= self.max_queries:
                break
            if cand.state is _State.NEW:
                cand.state = _State.PENDING
                self.inflight += 1
                out.append(Query(cand.contact))
        self.queries_sent += len(out)
        return out

    def _width(self) -> int:
        """How many queries may be outstanding now."""
        return self.alpha

    def on_answer(self, query: Query, answer: Answer | None) -> None:
        """Record `answer` to `query` (None: it failed or timed out)."""
        self.inflight -= 1
        cand = self._by_id[query.contact.node_id]
        if answer is None:
            cand.state = _State.FAILED
            self._order.remove((cand.distance, cand.contact.node_id))
            return
        cand.state = _State.ANSWERED
        for c in answer.contacts:
            self._add(c, cand.hops + 1)

    def closest(self) -> list[Contact]:
        """The k closest nodes that answered, nearest first."""
        out = []
        for _, node_id in self._order:
            cand = self._by_id[node_id]
            if cand.state is _State.ANSWERED:
                out.append(cand.contact)
                if len(out) == self.k:
                    break
        return out

    @property
    def hops(self) -> int:
        """Hops from the seeds to the nearest node that answered (0: a seed was the nearest)."""
        for _, node_id in self._order:
            cand = self._by_id[node_id]
            if cand.state is _State.ANSWERED:
                return cand.hops + 1
        return 0


class ValueLookup(Lookup):
    """A lookup for the records under `target`, collecting every publisher's newest version."""

    def __init__(
        self,
        target: bytes,
        seeds: list[Contact],
        *,
        k: int = 20,
        alpha: int = 3,
        own_id: bytes | None = None,
        max_queries: int = 200,
        quorum: int = 1,
        max_pages: int = 16,
    ) -> None:
        super().__init__(target, seeds, k=k, alpha=alpha, own_id=own_id, max_queries=max_queries)
        self.quorum = quorum
        self.max_pages = max_pages  # per holder
        # Every distinct version, not only the newest: when records come unchecked, a forged
        # "newer" one must not hide the genuine one another holder gave.
        self.versions: dict[bytes, dict[Record, None]] = {}
        self.holders: list[Contact] = []  # nodes that gave all their pages
        self._pages: list[Query] = []  # further pages to ask for
        self._pages_asked: dict[bytes, int] = {}
        self._paging = 0  # outstanding page queries
        self._failed = False  # a query went unanswered

    def merge(self, records: list[Record]) -> None:
        """Keep, per publisher, every distinct version among `records` and those already held
        (the same record from several holders is kept once)."""
        for r in records:
            if r.key != self.target:
                continue  # a holder answering for another key is ignored, not trusted
            self.versions.setdefault(r.publisher_id, {})[r] = None

    def newest(self, verified: Callable[[Record], bool]) -> dict[bytes, Record]:
        """Per publisher, the newest version received whose signature checks (`verified`)."""
        out = {}
        for pid, held in self.versions.items():
            for r in sorted(held, key=attrgetter("version"), reverse=True):
                if verified(r):
                    out[pid] = r
                    break
        return out

    def held_here(self, own: Contact, records: list[Record]) -> None:
        """The records the looking node holds itself: merged, and if there are any, it counts
        as one holder (as Kademlia's get answers from its own store): one query fewer."""
        self.merge(records)
        if records:
            self.holders.append(own)

    @property
    def finished(self) -> bool:
        if self._pages or self._paging:
            return False
        return len(self.holders) >= self.quorum or super().finished

    def _width(self) -> int:
        # Once a holder has answered, the ones near it likely hold the key too: no more
        # outstanding than holders still missing, not `alpha` (each query too many costs its
        # answerer and us a datagram and is cancelled when the quorum is met). Unless a query
        # failed: peers near the key that do not answer (gone, or made up by a peer that fed
        # them to us) would then cost a timeout each, one after another, and past the lookup's
        # time the get would hold only what the first holder gave.
        if self.holders and not self._failed:
            return max(1, min(self.alpha, self.quorum - len(self.holders)))
        return self.alpha

    def next_queries(self) -> list[Query]:
        out: list[Query] = []
        while self._pages and self.inflight < self.alpha:
            out.append(self._pages.pop())
            self.inflight += 1
            self._paging += 1
        self.queries_sent += len(out)
        return out + super().next_queries()

    def on_answer(self, query: Query, answer: Answer | None) -> None:
        if query.cursor is not None:
            self._paging -= 1
            self.inflight -= 1
        else:
            super().on_answer(query, answer)
        self._failed |= answer is None
        if answer is None or answer.records is None:
            return
        self.merge(answer.records)
        if answer.next_cursor is None:
            if answer.records:
                self.holders.append(query.contact)
            return
        holder = query.contact.node_id
        asked = self._pages_asked.get(holder, 0)
        if asked < self.max_pages:
            self._pages_asked[holder] = asked + 1
            self._pages.append(Query(query.contact, answer.next_cursor))
        # else: a holder with more pages than we take is not counted as one that gave all
