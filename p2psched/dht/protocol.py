"""The DHT node's protocol core, sans-I/O: datagrams and `now` in; datagrams, events and the next
deadline out. It never imports trio and never reads a clock.

Owns: the routing table, the record store, this node's `Publisher` (whose republishing it reports
when due; the records themselves are `publish.py`'s), requests in flight and their deadlines, and
what it counts: drops (`stats`), RPCs by type and outcome, and the round trip of every answered
request (plain numbers, read by the node's metrics).
Promises: every datagram is authenticated before it has any effect; a peer's bad input is dropped
and counted (a request that is well authenticated but malformed gets an `Error` naming the fault)
and never raises out of `datagram_received`; only authenticated, non-client senders enter the
routing table; only records whose publisher's id shows the work (`DhtConfig.id_bits`) are stored
or handed to callers; stored ones are signature-checked, fetched ones by the caller (`verified`).

Floods (knobs in `DhtConfig`): an address that has not proven it receives what is sent there (by
answering a request of ours, or by handing back a cookie) gets at most as many bytes as it sent:
the answer if it fits (a first request is padded so that it does, `replies.py`), else a `Retry`
with a cookie (a keyed hash of its node id, address and the time epoch: nothing is kept per
stranger), and it is never pinged. A newcomer the table wants is offered the cookie with its answer
and hands it back with its next request there; it enters then. Only a lookup that announces a node
(its join, a bucket's refresh) hands cookies back at once, with a ping each: a store's or a get's
would cost a datagram each way for a table entry nothing waits for. The costly work of a first
contact (an X25519 agreement or an Ed25519 check) is rate-limited per source prefix (/24, /48) and
in total (`stranger_rate`, `stranger_burst`, `stranger_total_rate`, `stranger_total_burst`); peers
whose pair key is cached skip the limit, so a flood of strangers does not slow the peers a node
already knows.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
import secrets
from collections import Counter, OrderedDict
from dataclasses import dataclass, field, replace

from p2psched.dht import messages as m
from p2psched.dht.flood import PrefixRate
from p2psched.dht.proof import AddressProofs
from p2psched.dht.publish import Publisher
from p2psched.dht.records import MAX_VALUE_BYTES, Record, RecordStore, StoreLimits, Validator
from p2psched.dht.replies import first_contact_body, fitted_body, unproven_reply
from p2psched.dht.routing import Contact, RoutingTable, TrustedNetworks, as_int, source_prefix
from p2psched.histogram import ROUND_TRIP_BUCKETS, Histogram
from p2psched.identity import Identity, id_has_work, network_id_bits
from p2psched.wire.codec import DecodeError, decode, encode
from p2psched.wire.envelope import (
    FLAG_CLIENT,
    Authenticator,
    Opened,
    Rejected,
)
from p2psched.wire.schema import SchemaError

Addr = tuple[str, int]
# Room kept around a page of records for the datagram header (43 bytes), its MAC (16) and the
# body's own header (type, request id, cursor); `fitted_body` then makes sure of the exact size.
ANSWER_OVERHEAD = 128
MAX_HAND_OVER = 64  # records sent to one newcomer
_MAX_RECORD_WIRE = MAX_VALUE_BYTES + 200  # a record's own fields around its value
RPC_NAMES: dict[int, str] = {
    m.Ping.TYPE: "ping",
    m.FindNode.TYPE: "find_node",
    m.FindValue.TYPE: "find_value",
    m.Store.TYPE: "store",
}


@dataclass(frozen=True, slots=True)
class DhtConfig:
    k: int = 20
    alpha: int = 3
    rpc_timeout: float = 1.0
    max_datagram: int = 8192
    client: bool = False  # not reachable from outside: query and store, never be routed through
    refresh_interval: float = 3600.0
    maintenance_interval: float = 10.0
    quorum: int = 2  # value lookups end once this many holders have answered in full
    bucket_ip_limit: int | None = 2
    table_ip_limit: int | None = 10
    trusted: TrustedNetworks = TrustedNetworks()  # spared the two limits above: LANs and these
    max_peers: int = 16384
    freshness: float = 30.0
    verified_cache: int = 4096
    max_lookup_queries: int = 200  # a lookup that would ask more is cut short
    max_pages_per_holder: int = 16
    lookup_timeout: float = 30.0
    store: StoreLimits = field(default_factory=StoreLimits)
    # The work a peer's id must show (identity.id_has_work) to enter the table or store here.
    id_bits: int = field(default_factory=network_id_bits)
    # First contacts (an X25519 agreement or an Ed25519 check each, ~100 us) served per second
    # from one /24 or /48, after a burst; and from everywhere: at most ~10% of a core. A devnet
    # of a few hundred nodes on one host stays below them.
    stranger_rate: float = 64.0
    stranger_burst: float = 512.0
    stranger_total_rate: float = 1000.0
    stranger_total_burst: float = 4096.0

    def __post_init__(self) -> None:
        # A page must have room for the largest record, or paging could not make progress.
        if self.max_datagram < ANSWER_OVERHEAD + _MAX_RECORD_WIRE:
            raise ValueError(f"max_datagram must be at least {ANSWER_OVERHEAD + _MAX_RECORD_WIRE}")


# -- events for the shell --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answered:
    rid: int
    sender: Contact
    message: m.Response


@dataclass(frozen=True, slots=True)
class TimedOut:
    rid: int


@dataclass(frozen=True, slots=True)
class RefreshDue:
    """Run a lookup for `target` to refresh an idle bucket."""

    target: bytes


@dataclass(frozen=True, slots=True)
class RepublishDue:
    """Replicate `record` (re-signed with a new expiry) to the k closest nodes of its key."""

    record: Record


Event = Answered | TimedOut | RefreshDue | RepublishDue


@dataclass(slots=True)
class _Pending:
    expected: bytes | None  # the node id we meant to reach; None when dialling an address
    addr: Addr
    deadline: float
    kind: str  # the request's RPC name, for the counters
    sent: float  # when it went out: its answer's round trip is measured from here
    message: m.Request  # sent again, with a cookie, when the answer is a `Retry`
    # Requests the core sends for its routing table and store, answered to them, not to a
    # caller: "evict" pings the oldest of a full bucket, "hand_over" stores at a newcomer.
    internal: str | None = None
    # The caller lost interest; a late answer still proves the address and feeds the table.
    cancelled: bool = False
    retried: bool = False  # sent again once with a cookie: a second `Retry` is its answer
    announce: bool = False  # a cookie offered in answer is handed back at once (`request`)


class DhtProtocol:
    """The RPC core of one DHT node. It authenticates every datagram, answers PING, FIND_NODE,
    FIND_VALUE and STORE from its routing table and record store, sends this node's requests
    and matches their answers (or times them out), proves a peer's address before it answers
    it in full or lets it into the table, and counts all of it. It owns the routing table, the
    record store, the requests in flight and this node's `Publisher`; lookups, replication and
    the clock are the shell's, which feeds it datagrams and `now` and acts on its events."""

    def __init__(
        self,
        identity: Identity,
        config: DhtConfig | None = None,
        *,
        now: float,
        seed: int | None = None,
        validate: Validator | None = None,
    ) -> None:
        self.identity = identity
        self.node_id = identity.node_id
        self.config = cfg = config or DhtConfig()
        self.auth = Authenticator(
            identity,
            max_datagram=cfg.max_datagram,
            max_peers=cfg.max_peers,
            freshness=cfg.freshness,
        )
        self.routing = RoutingTable(
            identity.node_id,
            k=cfg.k,
            bucket_ip_limit=cfg.bucket_ip_limit,
            table_ip_limit=cfg.table_ip_limit,
            trusted=cfg.trusted,
            now=now,
        )
        self.store = RecordStore(cfg.store, validate)
        self.stats: Counter[str] = Counter()
        # Requests this node sent, by (RPC name, outcome: answered | error | timed_out |
        # abandoned), counted once each as they leave the table of requests in flight; and
        # requests it answered, by (RPC name, outcome: answered | stored | refused | retry, a
        # cookie in place of an answer too large for an unproven address | dropped, when even
        # that would be).
        self.rpcs_sent: Counter[tuple[str, str]] = Counter()
        self.rpcs_received: Counter[tuple[str, str]] = Counter()
        self.round_trips = {name: Histogram(ROUND_TRIP_BUCKETS) for name in RPC_NAMES.values()}
        self._rng = random.Random(seed)
        self._pending: dict[int, _Pending] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._outgoing: list[tuple[bytes, Addr]] = []
        self.publisher = Publisher(identity, max_ttl=cfg.store.max_ttl)
        self._verified: OrderedDict[Record, bool] = OrderedDict()
        self._proofs = AddressProofs(cfg.max_peers)
        self._strangers = PrefixRate(
            cfg.stranger_rate,
            cfg.stranger_burst,
            cfg.stranger_total_rate,
            cfg.stranger_total_burst,
        )
        self._next_maintenance = now + cfg.maintenance_interval
        self._flags = FLAG_CLIENT if cfg.client else 0

    def set_client(self, client: bool) -> None:
        """Become a DHT client (or a server again), as this node learns whether it can be
        reached from outside: from the next message on, peers see it so."""
        self.config = replace(self.config, client=client)
        self._flags = FLAG_CLIENT if client else 0

    # -- the shell's side ------------------------------------------------------------------

    def take_outgoing(self) -> list[tuple[bytes, Addr]]:
        out, self._outgoing = self._outgoing, []
        return out

    def next_deadline(self) -> float:
        while self._deadlines and self._deadlines[0][1] not in self._pending:
            heapq.heappop(self._deadlines)
        first = self._deadlines[0][0] if self._deadlines else float("inf")
        return min(first, self.publisher.next_due(), self._next_maintenance)

    def request(
        self, to: Contact | Addr, message: m.Request, now: float, *, announce: bool = False
    ) -> int:
        """Queue `message` for `to`; its answer comes back as `Answered`, or `TimedOut`. With
        `announce` (a join, a refresh), a cookie the answer offers is handed back at once."""
        rid = self._request(to, message, now)
        self._pending[rid].announce = announce
        return rid

    def announcing(self) -> bool:
        """Whether a cookie is being handed back (a ping that is neither answered nor timed
        out yet): a join waits for them."""
        return any(p.internal == "prove" for p in self._pending.values())

    def cancel(self, rid: int) -> None:
        """The caller lost interest (a finished lookup): no event will come for `rid`. A late
        answer still counts for the routing table; silence does not count against the peer."""
        pending = self._pending.get(rid)
        if pending is not None:
            pending.cancelled = True

    def datagram_received(self, data: bytes, addr: Addr, now: float) -> list[Event]:
        self.stats["datagrams_in"] += 1
        if self.auth.is_stranger(data) and not self._strangers.allow(source_prefix(addr[0]), now):
            self.stats["dropped_stranger_rate"] += 1
            return []
        try:
            opened = self.auth.open(data, now)
        except Rejected as e:
            self.stats[f"dropped_{e.reason}"] += 1
            return []
        try:
            body = decode(opened.body, self.config.max_datagram)
        except DecodeError:
            self.stats["dropped_malformed_body"] += 1
            return []
        sender = Contact(opened.sender_id, addr[0], addr[1], opened.sender_public_key)
        try:
            body, cookie = m.split_cookie(body)
            rid, msg = m.parse(body)
        except SchemaError as e:
            self.stats["dropped_schema"] += 1
            bad_rid = m.peek_request_id(body)
            if bad_rid is not None:
                self.rpcs_received[("unknown", "malformed")] += 1
                error = m.Error(f"bad request: {e}"[: m.MAX_REASON])
                self._reply(
                    sender, bad_rid, error, self._proofs.is_proven(sender, now), len(data), now
                )
            return []
        if msg.TYPE in m.REQUEST_TYPES:
            self._on_request(sender, rid, msg, cookie, opened, len(data), now)  # type: ignore[arg-type]
            return []
        return self._on_response(sender, rid, msg, opened.flags, cookie, now)  # type: ignore[arg-type]

    def _on_request(
        self,
        sender: Contact,
        rid: int,
        msg: m.Request,
        cookie: bytes | None,
        opened: Opened,
        size: int,
        now: float,
    ) -> None:
        """Answer `msg`, a `size`-byte datagram: in full to a proven address, else with at most
        `size` bytes (the answer, or a `Retry`)."""
        self.stats["requests_in"] += 1
        proven = self._proofs.is_proven(sender, now)
        if not proven and cookie is not None:
            proven = self._proofs.cookie_good(cookie, sender, now)
            self.stats["cookies_good" if proven else "cookies_refused"] += 1
            if proven:
                self._proofs.mark_proven(sender, now)
        wanted = False
        if opened.bound and not opened.flags & FLAG_CLIENT:
            wanted = self._consider(sender, proven, now)
        if isinstance(msg, m.Store) and not proven:
            # A Store counts against its source's prefix and is judged by its source's kind of
            # range: it is kept only from an address that proved itself (a MAC needs no round
            # trip, so a source address proves nothing until then).
            answer: m.Response = m.Retry(self._proofs.cookie_for(sender, now))
        else:
            answer = self._answer(sender, msg, now)
        sent = self._reply(sender, rid, answer, proven, size, now, offer_cookie=wanted)
        outcome = "answered"
        if isinstance(sent, m.Retry):
            outcome = "retry"
        elif isinstance(sent, m.Stored):
            outcome = "stored" if sent.ok else "refused"
        elif sent is None:
            outcome = "dropped"
        self.rpcs_received[(RPC_NAMES[msg.TYPE], outcome)] += 1

    def _reply(
        self,
        to: Contact,
        rid: int,
        answer: m.Response,
        proven: bool,
        size: int,
        now: float,
        *,
        offer_cookie: bool = False,
    ) -> m.Response | None:
        """Send `answer` to `to`: fitted to a datagram if `proven`; else only if it fits in
        `size` bytes (what came from there), and with `offer_cookie` (a newcomer the table
        wants) carrying a cookie for `to` to hand back at once, from its address, to enter; or a
        `Retry` with the cookie in its place, or nothing if even that does not fit. Returns what
        was sent. (Senders pad a first request so that its answer fits.)"""
        if proven:
            self._send(to, fitted_body(answer, rid, self.config.max_datagram), now)
            return answer
        cookie = self._proofs.cookie_for(to, now)
        reply = unproven_reply(answer, rid, cookie, size, offer_cookie=offer_cookie)
        if reply is None:
            self.stats["unanswered_unproven"] += 1
            return None
        self._send(to, reply[0], now)
        return reply[1]

    def _consider(self, sender: Contact, proven: bool, now: float) -> bool:
        """A request from `sender`, made for us (so not relayed): refresh its entry, or admit it
        if its address is proven. Whether it is a newcomer the table wants whose address is not
        proven yet (its source may be spoofed): it is offered a cookie, never pinged, and
        enters when it hands the cookie back."""
        if not self._has_work(sender):
            return False
        if sender.node_id in self.routing:
            self.routing.observe(sender, now)  # only refreshes, and only at its own address
        elif proven:
            self._admit(sender, now)
        else:
            return self.routing.wants(sender, now)
        return False

    def _has_work(self, contact: Contact) -> bool:
        """Whether `contact`'s id solves the puzzle: a free identity never enters the table."""
        if id_has_work(contact.node_id, self.config.id_bits):
            return True
        self.stats["ids_without_work"] += 1
        return False

    def _admit(self, contact: Contact, now: float) -> None:
        if not self._has_work(contact):
            return
        new = contact.node_id not in self.routing
        to_check = self.routing.observe(contact, now)
        if to_check is not None:
            self._request(to_check, m.Ping(), now, internal="evict")
        if new and contact.node_id in self.routing:
            self._hand_over(contact, now)

    def _hand_over(self, newcomer: Contact, now: float) -> None:
        """Kademlia's hand-over: a node that just joined may now be among the closest to keys
        this node holds, where gets will look first; it gets their records at once rather than
        at their publishers' next republish. Bounded per newcomer."""
        mine, theirs = as_int(self.node_id), as_int(newcomer.node_id)
        sent = 0
        for key in self.store.keys():
            target = as_int(key)
            if theirs ^ target >= mine ^ target:
                continue  # no closer than this node: gets reach this node first anyway
            for record in self.store.get(key, now):
                if sent >= MAX_HAND_OVER:
                    return
                self._request(newcomer, m.Store(record), now, internal="hand_over")
                sent += 1

    def on_timer(self, now: float) -> list[Event]:
        events: list[Event] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, rid = heapq.heappop(self._deadlines)
            pending = self._pending.pop(rid, None)
            if pending is None:
                continue
            if pending.cancelled:
                self.rpcs_sent[(pending.kind, "abandoned")] += 1
                continue
            self.stats["rpc_timeouts"] += 1
            self.rpcs_sent[(pending.kind, "timed_out")] += 1
            if pending.expected is not None:
                if pending.internal == "evict":
                    self.routing.ping_answered(pending.expected, False, now)
                else:
                    self.routing.failed(pending.expected, pending.addr, now)
            if pending.internal is None:
                events.append(TimedOut(rid))
        if now >= self._next_maintenance:
            self._next_maintenance = now + self.config.maintenance_interval
            self.stats["records_expired"] += self.store.expire(now)
            for index in self.routing.buckets_to_refresh(now, self.config.refresh_interval):
                target = self.routing.random_id_in_bucket(index, self._rng)
                self.routing.touch(target, now)
                events.append(RefreshDue(target))
        # On time, not at the next maintenance: a short TTL (a worker's ad) must not lapse first.
        events += [RepublishDue(record) for record in self.publisher.due(now)]
        return events

    # -- records and lookups ---------------------------------------------------------------

    def lookup_done(self, target: bytes, now: float) -> None:
        self.routing.touch(target, now)

    def verified(self, record: Record) -> bool:
        """Signature check with a bounded cache: a record fetched from several holders costs one.
        The cache is keyed by the whole record, never by its signature alone: a forgery that
        reuses a genuine signature over other fields must miss it."""
        hit = self._verified.get(record)
        if hit is None:
            hit = record.verify()
            self._verified[record] = hit
            if len(self._verified) > self.config.verified_cache:
                self._verified.popitem(last=False)
        else:
            self._verified.move_to_end(record)
        return hit

    # -- internals -------------------------------------------------------------------------

    def _request(
        self, to: Contact | Addr, message: m.Request, now: float, *, internal: str | None = None
    ) -> int:
        # Unpredictable, so that only whoever receives our datagram can answer it: an answer is
        # what proves an address.
        rid = secrets.randbits(63)
        while rid in self._pending:
            rid = secrets.randbits(63)
        if isinstance(to, Contact):
            expected: bytes | None = to.node_id
            addr, recipient = to.addr, to.public_key
        else:
            expected, addr, recipient = None, to, None
        deadline = now + self.config.rpc_timeout
        if not self._send_request(message, rid, recipient, addr, now):
            deadline = now  # a contact from a peer named a key no pair key can be made with
        self._pending[rid] = _Pending(
            expected, addr, deadline, RPC_NAMES[message.TYPE], now, message, internal
        )
        heapq.heappush(self._deadlines, (deadline, rid))
        return rid

    def _send_request(
        self, message: m.Request, rid: int, recipient: bytes | None, addr: Addr, now: float
    ) -> bool:
        """Seal and queue a request, handing back the cookie `addr` gave, if any; False if no
        pair key can be made with `recipient`."""
        wire = m.to_wire(message, rid)
        cookie = self._proofs.held(addr)
        if cookie is not None:
            wire = m.with_cookie(wire, cookie)
        elif isinstance(message, m.FindNode | m.FindValue):
            wire = m.padded(wire, first_contact_body(self.config.k, self.config.max_datagram))
        try:
            self._outgoing.append((self.auth.seal(encode(wire), recipient, now, self._flags), addr))
        except Rejected:
            self.stats["unusable_contacts"] += 1
            return False
        self.stats["requests_out"] += 1
        return True

    def _send(self, to: Contact, body: bytes, now: float) -> None:
        try:
            self._outgoing.append((self.auth.seal(body, to.public_key, now, self._flags), to.addr))
        except Rejected:  # a key no pair key can be made with: nothing can be said to it
            self.stats["unusable_senders"] += 1

    def _answer(self, sender: Contact, msg: m.Request, now: float) -> m.Response:
        """The answer to `msg`, sized for a datagram (`fitted_body` makes sure)."""
        k = self.config.k
        room = self.config.max_datagram - ANSWER_OVERHEAD
        match msg:
            case m.Ping():
                return m.Pong(sender.addr)
            case m.FindNode(target):
                contacts = self.routing.closest(target, k, exclude=sender.node_id)
                return m.Nodes(contacts)
            case m.FindValue(key, cursor):
                records, next_cursor = self.store.page(key, cursor, room, now)
                # As in Kademlia, a holder answers with the value, and only a non-holder with
                # closer contacts.
                contacts = [] if records else self.routing.closest(key, k, exclude=sender.node_id)
                return m.Values(records, next_cursor, contacts)
            case m.Store(record):
                reason: str | None = "the sender's node id shows no work (id puzzle)"
                if not id_has_work(record.publisher_id, self.config.id_bits):
                    # Else one id that did the work stores for any number of free ones.
                    reason = "the publisher's node id shows no work (id puzzle)"
                elif id_has_work(sender.node_id, self.config.id_bits):
                    reason = self.store.put(record, now, sender.host)
                self.stats["stores_accepted" if reason is None else "stores_refused"] += 1
                return m.Stored(reason is None, reason or "")
        raise AssertionError(msg)

    def _on_response(
        self,
        sender: Contact,
        rid: int,
        msg: m.Response,
        flags: int,
        cookie: bytes | None,
        now: float,
    ) -> list[Event]:
        pending = self._pending.get(rid)
        if pending is None:
            self.stats["answers_unexpected"] += 1
            return []
        if pending.expected is not None and pending.expected != sender.node_id:
            self.stats["dropped_wrong_responder"] += 1
            return []
        if sender.addr != pending.addr and pending.internal is not None:
            # A routing check is answered from the address it went to, or not at all.
            self.stats["dropped_wrong_address"] += 1
            return []
        if isinstance(msg, m.Retry) and not pending.retried and sender.addr == pending.addr:
            # The address we sent to asks us to prove ours: again, with its cookie, once. (Like
            # any answer, it proves something only from the address asked; a second Retry is
            # the answer, so two nodes cannot keep each other retrying.)
            pending.retried = True
            self._proofs.hold(pending.addr, msg.cookie)
            self.stats["retries"] += 1
            self._send_request(pending.message, rid, sender.public_key, pending.addr, now)
            return []
        del self._pending[rid]
        self.rpcs_sent[(pending.kind, "error" if isinstance(msg, m.Error) else "answered")] += 1
        self.round_trips[pending.kind].observe(max(0.0, now - pending.sent))
        # A reply from elsewhere (NAT rebinding, a multi-homed peer) still answers the caller,
        # but proves no address and admits no one.
        if sender.addr == pending.addr:
            # It answered a request id only the receiver of our datagram could know, from the
            # address we sent to: that address is proven, and the node may enter the table.
            self._proofs.mark_proven(sender, now)
            if cookie is not None:
                # Its table wants us once our address is proven: the cookie rides on every
                # request of ours there, and a lookup that announces us hands it back at once,
                # off the caller's path (a ping). Once per request of ours: a cookie offered
                # again in answer to that ping (refused: the node changed its key, or lies)
                # waits for our next request.
                self._proofs.hold(pending.addr, cookie)
                if pending.announce:
                    self._request(sender, m.Ping(), now, internal="prove")
            if pending.internal == "evict":
                self.routing.ping_answered(sender.node_id, True, now)
            elif not flags & FLAG_CLIENT:
                self._admit(sender, now)
        self.stats["responses_in"] += 1
        if pending.internal is not None or pending.cancelled:
            self.stats["answers_late"] += pending.cancelled
            return []
        if isinstance(msg, m.Values):
            bits = self.config.id_bits
            # Signatures are the caller's to check, of the records it uses (`verified`): a get
            # checks the newest version per publisher, discovery only ads that match its need.
            good = [r for r in msg.records if id_has_work(r.publisher_id, bits)]
            if len(good) != len(msg.records):
                self.stats["dropped_bad_records"] += len(msg.records) - len(good)
                msg = m.Values(good, msg.next_cursor, msg.contacts)
        if isinstance(msg, m.Nodes | m.Values):
            usable = [
                c
                for c in msg.contacts
                if c.node_id != self.node_id and id_has_work(c.node_id, self.config.id_bits)
            ]
            if len(usable) != len(msg.contacts):
                msg = dataclasses.replace(msg, contacts=usable)
        return [Answered(rid, sender, msg)]
