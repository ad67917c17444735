"""The DHT node on trio: a UDP socket, a receive task and a timer task around `DhtProtocol`.

Owns: the socket, the clock, and the callers waiting for answers.
Promises: `open_dht_node` yields a running node and closes everything when its block ends;
`serve` is the same as a service for `nursery.start`, reporting the running node. A call never
waits longer than the RPC timeout, and a peer can make no call raise: bad input is dropped by
the core and counted in `node.stats`.
"""

from __future__ import annotations

import socket as _socket
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from operator import attrgetter
from typing import Any

import trio

from p2psched.dht import messages as m
from p2psched.dht.lookup import Answer, Lookup, Query, ValueLookup
from p2psched.dht.protocol import (
    Addr,
    Answered,
    DhtConfig,
    DhtProtocol,
    Event,
    RefreshDue,
    RepublishDue,
    TimedOut,
)
from p2psched.dht.records import Record, Validator
from p2psched.dht.routing import Contact, distance
from p2psched.dht.traverse import L
from p2psched.identity import Identity
from p2psched.wire.address import range_kind

RECEIVE_BUFFER = 1 << 20


class _Wake:
    """An event a task can wait on again and again: one per call, or one for all the queries of
    a lookup."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = trio.Event()

    def set(self) -> None:
        self.event.set()

    async def wait(self) -> None:
        await self.event.wait()
        self.event = trio.Event()


@dataclass(slots=True)
class _Waiter:
    wake: _Wake
    query: Query | None = None  # the lookup query this request asks, if any
    done: bool = False  # answered, or timed out
    answer: m.Response | None = None
    sender: Contact | None = None


class DhtNode:
    def __init__(
        self, protocol: DhtProtocol, sock: _socket.socket, offset: float, nursery: trio.Nursery
    ) -> None:
        self.protocol = protocol
        self._sock = sock
        self._offset = offset
        self._nursery = nursery
        self._waiting: dict[int, _Waiter] = {}
        self._wakeup = trio.Event()
        self._timer_at = float("inf")  # the deadline the timer task sleeps until
        self._announced = trio.Event()  # set when no cookie is being handed back (`bootstrap`)
        host, port = sock.getsockname()[:2]
        self.address: Addr = (host, port)

    @property
    def node_id(self) -> bytes:
        return self.protocol.node_id

    @property
    def contact(self) -> Contact:
        return Contact(self.node_id, *self.address, self.protocol.identity.public_key)

    def kinds_seen(self) -> set[str]:
        """The kinds of range (`wire.address.range_kind`) this node's routing table sees peers
        in: "loopback" on a devnet, "private" on a lab's LAN, "public" on the internet."""
        return {range_kind(c.host) for c in self.protocol.routing.contacts()}

    @property
    def stats(self) -> dict[str, int]:
        return dict(self.protocol.stats)

    def now(self) -> float:
        """Seconds since the epoch, advancing with trio's clock (so a fake clock drives it too)."""
        return self._offset + trio.current_time()

    # -- calls -----------------------------------------------------------------------------

    async def call(
        self, to: Contact | Addr, request: m.Request, *, announce: bool = False
    ) -> tuple[Contact, m.Response] | None:
        """Send `request`; the answer and who gave it, or None if none came within the timeout.
        `announce`: this node wants into the answerer's table now (`DhtProtocol.request`)."""
        rid = self.protocol.request(to, request, self.now(), announce=announce)
        waiter = self._waiting[rid] = _Waiter(_Wake())
        try:
            self._sent()
            await waiter.wake.wait()
        finally:
            del self._waiting[rid]
            if waiter.answer is None:
                self.protocol.cancel(rid)
        if waiter.answer is None or waiter.sender is None:
            return None
        return waiter.sender, waiter.answer

    async def ping(self, to: Contact | Addr) -> Contact | None:
        """The contact that answers at `to`, or None."""
        got = await self.call(to, m.Ping())
        return got[0] if got is not None and isinstance(got[1], m.Pong) else None

    async def bootstrap(self, addrs: Iterable[Addr]) -> int:
        """Join through the nodes at `addrs`: ping them, then look up our own id. Returns the
        number of contacts in the routing table afterwards."""
        async with trio.open_nursery() as nursery:
            for addr in addrs:
                nursery.start_soon(self.ping, addr)
        await self.find_node(self.node_id, announce=True)
        # The nodes it asked take it into their tables once it hands back the cookies they
        # offered (a ping each): joined means those pings were answered, or timed out.
        if self.protocol.announcing():
            if self._announced.is_set():
                self._announced = trio.Event()
            await self._announced.wait()
        return len(self.protocol.routing)

    async def find_node(self, target: bytes, *, announce: bool = False) -> Lookup:
        """The iterative lookup for the k nodes closest to `target` (`.closest()`, `.hops`).
        `announce` (a join, a refresh): the nodes it asks take this one into their tables now."""

        lookup = Lookup(target, **self._lookup_args(target))
        return await self._traverse(lookup, lambda _: m.FindNode(target), announce=announce)

    async def put(
        self, key: bytes, value: bytes, ttl: float = 3600.0, seq: int | None = None
    ) -> int:
        """Publish `value` under `key` as this node's record on the k closest nodes; it is
        republished every half `ttl` until `unpublish`. Returns how many nodes accepted it."""
        record = self.protocol.publisher.publish(key, value, ttl, self.now(), seq)
        return await self.replicate(record)

    def unpublish(self, key: bytes) -> None:
        self.protocol.publisher.unpublish(key)

    async def get(self, key: bytes, quorum: int | None = None) -> list[Record]:
        """Every live record under `key`, newest version per publisher, signatures checked.

        The lookup ends once `quorum` holders (default: the config's, 2) have given all their
        pages; pass a larger one to merge what several holders have."""
        lookup = await self._get(key, quorum)

        def verified(record: Record) -> bool:
            if self.protocol.verified(record):
                return True
            self.protocol.stats["dropped_bad_records"] += 1
            return False

        now = self.now()
        live = (r for r in lookup.newest(verified).values() if not r.expired(now))
        return sorted(live, key=lambda r: r.publisher_id)

    async def get_unverified(self, key: bytes, quorum: int | None = None) -> list[list[Record]]:
        """Every live record under `key` with its signature NOT checked (the publisher's id
        puzzle is): per publisher, in order of publisher id, every distinct version the holders
        gave, newest first. For a caller that checks only the records it will use (discovery
        checks the ads that match its need); any of them may be forged."""
        lookup = await self._get(key, quorum)
        now = self.now()
        out = []
        for _, held in sorted(lookup.versions.items()):
            live = sorted(
                (r for r in held if not r.expired(now)), key=attrgetter("version"), reverse=True
            )
            if live:
                out.append(live)
        return out

    async def _get(self, key: bytes, quorum: int | None) -> ValueLookup:
        lookup = ValueLookup(
            key,
            **self._lookup_args(key),
            quorum=quorum if quorum is not None else self.protocol.config.quorum,
            max_pages=self.protocol.config.max_pages_per_holder,
        )
        # This node's own store holds only records whose signature it checked.
        lookup.held_here(self.contact, self.protocol.store.get(key, self.now()))
        return await self._traverse(lookup, lambda query: m.FindValue(key, query.cursor))

    # -- internals -------------------------------------------------------------------------

    def _lookup_args(self, target: bytes) -> dict[str, Any]:
        cfg = self.protocol.config
        return {
            "seeds": self.protocol.routing.closest(target, cfg.k),
            "k": cfg.k,
            "alpha": cfg.alpha,
            "own_id": self.node_id,
            "max_queries": cfg.max_lookup_queries,
        }

    async def _traverse(
        self, lookup: L, request_for: Callable[[Query], m.Request], *, announce: bool = False
    ) -> L:
        """Drive `lookup`: its queries go out as requests, at most `alpha` at a time, and it
        takes their answers as they come; once it is finished the requests still out are
        cancelled, so one slow or dead peer never holds it up. (`traverse.run_lookup` does the
        same with a task per query for any async call; here one task waits for all, which is a
        good part of a query's cost on this node.)"""
        wake = _Wake()
        out: dict[int, _Waiter] = {}

        def ask(queries: list[Query]) -> None:
            now = self.now()
            for query in queries:
                rid = self.protocol.request(
                    query.contact, request_for(query), now, announce=announce
                )
                out[rid] = self._waiting[rid] = _Waiter(wake, query)
            if queries:
                self._sent()

        try:
            # Peers could feed a lookup made-up ids that never answer: its queries are capped,
            # and so is its time; what it found by then is its answer.
            with trio.move_on_after(self.protocol.config.lookup_timeout):
                ask(lookup.next_queries())
                while lookup.inflight and not lookup.finished:
                    await wake.wait()
                    for rid in [rid for rid, waiter in out.items() if waiter.done]:
                        waiter = out.pop(rid)
                        del self._waiting[rid]
                        assert waiter.query is not None
                        lookup.on_answer(waiter.query, _answer_of(waiter.answer))
                    ask(lookup.next_queries())
        finally:
            for rid in out:
                del self._waiting[rid]
                self.protocol.cancel(rid)
        self.protocol.lookup_done(lookup.target, self.now())
        return lookup

    async def replicate(self, record: Record) -> int:
        """Store `record` (this node's, or one its publisher signed elsewhere) on the k nodes
        closest to its key; returns how many nodes took it. Not republished from here.

        The lookup comes first and the stores follow, only to the nodes it found: storing along
        the way saves round trips but leaves partial copies on nodes a closer one later pushed
        out, and a get that meets one of those first would miss records."""
        cfg = self.protocol.config
        key = record.key
        stored: set[bytes] = set()
        closest = (await self.find_node(key)).closest()

        async def store_at(contact: Contact) -> None:
            got = await self.call(contact, m.Store(record))
            if got is not None and isinstance(got[1], m.Stored) and got[1].ok:
                stored.add(contact.node_id)

        async with trio.open_nursery() as nursery:
            for contact in closest:
                nursery.start_soon(store_at, contact)
        if not cfg.client and (
            len(closest) < cfg.k or distance(self.node_id, key) < distance(closest[-1].node_id, key)
        ):
            # This node is among the k closest itself. Anywhere else a copy here would only
            # answer gets with a part of what the key holds.
            if self.protocol.store.put(record, self.now()) is None:
                stored.add(self.node_id)
        return len(stored)

    def _sent(self) -> None:
        """Requests were queued: send them, and wake the timer if it sleeps past their deadline."""
        if self.protocol.next_deadline() < self._timer_at:
            self._wakeup.set()
        self._flush()

    def _flush(self) -> None:
        # UDP sends on a non-blocking socket: a full send buffer drops the datagram, as the network
        # may anyway, and the request's timeout covers it. No await, so no task switch per datagram.
        for data, addr in self.protocol.take_outgoing():
            try:
                self._sock.sendto(data, addr)
            except OSError:
                self.protocol.stats["send_errors"] += 1

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            match event:
                case Answered(rid, sender, message):
                    waiter = self._waiting.get(rid)
                    if waiter is not None:
                        waiter.answer, waiter.sender, waiter.done = message, sender, True
                        waiter.wake.set()
                case TimedOut(rid):
                    waiter = self._waiting.get(rid)
                    if waiter is not None:
                        waiter.done = True
                        waiter.wake.set()
                case RefreshDue(target):
                    self._nursery.start_soon(partial(self.find_node, target, announce=True))
                case RepublishDue(record):
                    self._nursery.start_soon(self.replicate, record)

    async def _receive_loop(self) -> None:
        size = self.protocol.config.max_datagram + 1  # one more byte: an oversized datagram shows
        while True:
            await trio.lowlevel.wait_readable(self._sock)
            # Drain what is queued, but yield after a bounded batch so no node starves the others.
            for _ in range(64):
                try:
                    data, addr = self._sock.recvfrom(size)
                except BlockingIOError:
                    break
                except OSError:
                    self.protocol.stats["receive_errors"] += 1
                    continue
                self._dispatch(self.protocol.datagram_received(data, addr[:2], self.now()))
                self._flush()
            self._check_announced()
            if self.protocol.next_deadline() < self._timer_at:
                self._wakeup.set()  # the core sent a check of its own, with an earlier deadline
            await trio.lowlevel.checkpoint()

    async def _timer_loop(self) -> None:
        while True:
            self._timer_at = self.protocol.next_deadline()
            with trio.move_on_at(self._timer_at - self._offset):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            self._timer_at = float("inf")
            self._dispatch(self.protocol.on_timer(self.now()))
            self._flush()
            self._check_announced()

    def _check_announced(self) -> None:
        if not self._announced.is_set() and not self.protocol.announcing():
            self._announced.set()


def _answer_of(message: m.Response | None) -> Answer | None:
    """What a lookup learns from an answer: contacts, and any page of records."""
    match message:
        case m.Nodes(contacts):
            return Answer(contacts)
        case m.Values(records, next_cursor, contacts):
            return Answer(contacts, records, next_cursor)
    return None  # no answer, or an Error


@asynccontextmanager
async def open_dht_node(
    identity: Identity,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    config: DhtConfig | None = None,
    validate: Validator | None = None,
) -> AsyncIterator[DhtNode]:
    """A running DHT node bound to `host:port` (port 0: any free port); closed on exit.
    `validate`: the rules its record store applies to values the caller knows (worker ads)."""
    family = _socket.AF_INET6 if ":" in host else _socket.AF_INET
    sock = _socket.socket(family, _socket.SOCK_DGRAM)
    sock.setblocking(False)
    # Answers to parallel lookups arrive in bursts; the default buffer (about 200 KB) drops
    # some, which then cost an RPC timeout. The kernel caps this at net.core.rmem_max.
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, RECEIVE_BUFFER)
    try:
        sock.bind((host, port))
        offset = time.time() - trio.current_time()
        protocol = DhtProtocol(
            identity, config, now=offset + trio.current_time(), validate=validate
        )
        async with trio.open_nursery() as nursery:
            node = DhtNode(protocol, sock, offset, nursery)
            nursery.start_soon(node._receive_loop)
            nursery.start_soon(node._timer_loop)
            try:
                yield node
            finally:
                nursery.cancel_scope.cancel()
    finally:
        trio.lowlevel.notify_closing(sock)
        sock.close()


async def serve(
    identity: Identity,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    bootstrap: Iterable[Addr] = (),
    config: DhtConfig | None = None,
    task_status: trio.TaskStatus[DhtNode] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a DHT node until cancelled; `nursery.start(serve, ...)` returns it once it has joined."""
    async with open_dht_node(identity, host=host, port=port, config=config) as node:
        addrs = list(bootstrap)
        if addrs:
            await node.bootstrap(addrs)
        task_status.started(node)
        await trio.sleep_forever()
