"""The gate's relay bookkeeping, sans I/O: who holds a reservation, which circuits are open,
and the limits the operator set. The trio shell (`gate.service`) owns the sockets and asks this
core before it does anything; every method takes `now`.

Owns: reservations (per worker, with an expiry that a refresh pushes back), circuits from
request to close, the bandwidth shared fairly by address and by peer (`FairShare`), and the
relay's counters.
Promises: a request over a limit gets a `Refusal` that names the limit and what to do, and
changes nothing else; every reservation, pending circuit and circuit has a deadline, and
`expire` ends those past it (`next_deadline` says when to call it).
"""

from __future__ import annotations

import math
import os
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from p2psched.wire.address import subnet
from p2psched.wire.hop import NONCE_BYTES

# A limit is a positive number as written: `true` is not 1, and a count is whole.
_Count = Annotated[int, Field(gt=0)]
_Amount = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class RelayLimits(BaseModel):
    """What a gate lets its relay use. libp2p's circuit relay v2 defaults are the reference
    (2 min and 128 KiB per circuit, 16 circuits per peer, 4 reservations per peer, 8 per IP),
    but a circuit here carries a scheduler's whole session with a worker, tasks of megabytes
    included, so a circuit may live an hour and carry a GiB. Also the [relay] table of a gate's
    config (`gate.config`): strict, and an unknown limit is refused rather than ignored."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    reservations: _Count = 1024  # held at once, by all peers
    reservations_per_peer: _Count = 2  # two: a worker reconnecting while its old one lingers
    reservations_per_ip: _Count = 8  # a home's address: a few machines behind one router
    reservation_ttl: _Amount = 120.0  # seconds; a reservation not refreshed in time ends
    circuits: _Count = 4096  # open at once, through this gate
    circuits_per_peer: _Count = 16  # opened by one peer (a scheduler), to any workers
    circuits_per_ip: _Count = 64  # opened from one address (ids cost nothing to make)
    circuit_bytes: _Count = 1 << 30  # both ways together; then the circuit is closed
    circuit_seconds: _Amount = 3600.0  # then the circuit is closed (the scheduler redials)
    bandwidth: _Amount = 125e6  # bytes per second through the relay, all circuits (1 Gbit/s)
    answer_seconds: _Amount = 10.0  # a worker has this long to take up a circuit asked of it


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str


@dataclass(slots=True)
class Reservation:
    peer: bytes
    ip: str
    conn: int  # the control connection that holds it
    since: float
    expires: float


@dataclass(slots=True)
class Circuit:
    cid: int
    src: bytes
    src_ip: str
    dst: bytes
    conn: int  # the worker's control connection asked to take it up
    token: bytes
    opened: float
    deadline: float  # to be taken up by; once up, to be closed by
    up: bool = False
    carried: int = 0


@dataclass(frozen=True, slots=True)
class Ended:
    """Something `expire` ended: a reservation (by its connection) or a circuit (by id)."""

    kind: str  # "reservation" | "circuit"
    key: int
    reason: str


@dataclass(slots=True)
class Bandwidth:
    """A token bucket in debt form: taking more than is there is allowed, and the caller waits
    until the debt is paid back, so one large write is not refused, only slowed."""

    rate: float
    burst: float
    level: float = 0.0
    at: float = 0.0

    def take(self, n: int, now: float) -> float:
        """Take `n` bytes; seconds to wait before sending them."""
        self.level = min(self.burst, self.level + (now - self.at) * self.rate)
        self.at = now
        self.level -= n
        return max(0.0, -self.level / self.rate)


@dataclass(slots=True)
class FairShare:
    """The relay's bandwidth, shared fairly in two steps: among the addresses (IPv4, or IPv6
    /56) whose circuits carry bytes, then among the peers (node ids) of each address. A peer
    active in the last `ACTIVE_S` seconds has its own bucket at `cap` over the active
    addresses, over its address's active peers. So one greedy peer, however many circuits it
    opens, slows only itself, even behind the same address as a modest one; ids are cheap,
    and however many one address uses, together they get one address's share; and the
    buckets together never pass the cap for long."""

    cap: float
    burst: float
    _buckets: dict[tuple[str, bytes], Bandwidth] = field(default_factory=dict)
    # (address, peer) -> when it last sent, the least recent first
    _heard: OrderedDict[tuple[str, bytes], float] = field(default_factory=OrderedDict)
    _peers: Counter[str] = field(default_factory=Counter)  # active peers, per address

    ACTIVE_S: ClassVar[float] = 1.0

    def take(self, address: str, peer: bytes, n: int, now: float) -> float:
        """`peer`, from `address`, sends `n` bytes: seconds it waits first."""
        key = (address, peer)
        if self._heard.pop(key, None) is None:
            self._peers[address] += 1
        self._heard[key] = now
        while True:  # those gone quiet leave their share to the others (`key` is not gone)
            gone, heard = next(iter(self._heard.items()))
            if heard >= now - self.ACTIVE_S:
                break
            del self._heard[gone]
            self._buckets.pop(gone, None)
            self._peers[gone[0]] -= 1
            if not self._peers[gone[0]]:
                del self._peers[gone[0]]
        part = 1 / (len(self._peers) * self._peers[address])
        rate = self.cap * part
        burst = min(self.burst * part, rate)  # the gate's burst, shared too
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bandwidth(rate, burst, level=burst, at=now)
        bucket.rate, bucket.burst = rate, burst
        return bucket.take(n, now)


@dataclass(slots=True)
class Relay:
    """The gate's relay as its shell asks it: may this worker reserve, may this scheduler open
    a circuit to it, how many bytes may pass now, what has expired. Answers are decisions or
    `Refusal`s; the state is reservations, circuits and the bandwidth's fair share."""

    limits: RelayLimits = field(default_factory=RelayLimits)
    counters: Counter[str] = field(default_factory=Counter)
    _reservations: dict[int, Reservation] = field(default_factory=dict)  # conn -> reservation
    _circuits: dict[int, Circuit] = field(default_factory=dict)
    _by_token: dict[bytes, int] = field(default_factory=dict)
    _next_cid: int = 1
    _share: FairShare | None = None

    def __post_init__(self) -> None:
        rate = self.limits.bandwidth
        self._share = FairShare(rate, burst=max(rate / 10, 1 << 20))

    # -- reservations -----------------------------------------------------------------------

    def reserve(self, conn: int, peer: bytes, ip: str, now: float) -> Reservation | Refusal:
        """Reserve (or refresh) a relay slot for `peer`, held by its control connection."""
        lim = self.limits
        held = self._reservations.get(conn)
        if held is not None:
            held.expires = now + lim.reservation_ttl
            self.counters["reservations_refreshed"] += 1
            return held
        mine = sum(1 for r in self._reservations.values() if r.peer == peer)
        same_ip = sum(1 for r in self._reservations.values() if subnet(r.ip) == subnet(ip))
        refusal = None
        if len(self._reservations) >= lim.reservations:
            refusal = (
                f"the gate holds its limit of {lim.reservations} reservations; try another gate"
            )
        elif mine >= lim.reservations_per_peer:
            refusal = (
                f"this peer already holds {mine} reservations here (the limit); close one, or "
                f"wait {lim.reservation_ttl:g} s for an unused one to expire"
            )
        elif same_ip >= lim.reservations_per_ip:
            refusal = (
                f"{same_ip} reservations are held from your address {ip} (the limit per "
                "address); try another gate"
            )
        if refusal is not None:
            self.counters["reservations_refused"] += 1
            return Refusal(refusal)
        r = self._reservations[conn] = Reservation(peer, ip, conn, now, now + lim.reservation_ttl)
        self.counters["reservations_made"] += 1
        return r

    def release(self, conn: int) -> list[int]:
        """The control connection `conn` closed: its reservation ends, and so do the circuits
        not yet taken up through it (those up keep running: they have their own sockets).
        Returns those circuits."""
        if self._reservations.pop(conn, None) is None:
            return []
        ended = [c.cid for c in self._circuits.values() if c.conn == conn and not c.up]
        for cid in ended:
            self.close(cid)
        return ended

    def holds(self, conn: int) -> bool:
        """Whether the control connection `conn` holds a reservation."""
        return conn in self._reservations

    def holder(self, peer: bytes) -> Reservation | None:
        """The peer's newest reservation (where its circuits are announced)."""
        held = [r for r in self._reservations.values() if r.peer == peer]
        return max(held, key=lambda r: r.since) if held else None

    # -- circuits ---------------------------------------------------------------------------

    def request(self, src: bytes, src_ip: str, dst: bytes, now: float) -> Circuit | Refusal:
        """A circuit from `src` to the worker `dst`: pending until the worker takes it up with
        the circuit's token (see `accept`)."""
        lim = self.limits
        target = self.holder(dst)
        opened = sum(1 for c in self._circuits.values() if c.src == src)
        from_ip = sum(1 for c in self._circuits.values() if subnet(c.src_ip) == subnet(src_ip))
        refusal = None
        if target is None:
            refusal = f"worker {dst.hex()[:16]}… holds no reservation on this gate"
        elif len(self._circuits) >= lim.circuits:
            refusal = f"the gate has its limit of {lim.circuits} circuits open; retry later"
        elif opened >= lim.circuits_per_peer:
            refusal = (
                f"this peer has {opened} circuits open through this gate (the limit); "
                "close one before opening another"
            )
        elif from_ip >= lim.circuits_per_ip:
            refusal = (
                f"{from_ip} circuits are open from your address {src_ip} (the limit per "
                "address); close one before opening another"
            )
        if refusal is not None or target is None:
            self.counters["circuits_refused"] += 1
            return Refusal(refusal or "")
        cid = self._next_cid
        self._next_cid += 1
        token = os.urandom(NONCE_BYTES)
        c = Circuit(cid, src, src_ip, dst, target.conn, token, now, now + lim.answer_seconds)
        self._circuits[cid] = c
        self._by_token[token] = cid
        self.counters["circuits_requested"] += 1
        return c

    def accept(self, token: bytes, now: float) -> Circuit | Refusal:
        """The worker took up the circuit of `token`: it is up from now."""
        cid = self._by_token.pop(token, None)
        c = self._circuits.get(cid) if cid is not None else None
        if c is None or c.up:
            return Refusal("no circuit is waiting for this token (it expired, or was taken up)")
        c.up, c.deadline = True, now + self.limits.circuit_seconds
        self.counters["circuits_opened"] += 1
        return c

    def carry(self, cid: int, n: int, now: float) -> float | Refusal:
        """`n` bytes are to cross circuit `cid`: seconds to wait first (the shared bandwidth),
        or a `Refusal` when they would take it over its byte limit."""
        c = self._circuits.get(cid)
        if c is None:
            return Refusal("the circuit is closed")
        if c.carried + n > self.limits.circuit_bytes:
            return Refusal(f"the circuit carried its limit of {self.limits.circuit_bytes} bytes")
        c.carried += n
        self.counters["bytes_relayed"] += n
        assert self._share is not None
        return self._share.take(subnet(c.src_ip), c.src, n, now)

    def close(self, cid: int) -> Circuit | None:
        c = self._circuits.pop(cid, None)
        if c is not None:
            self._by_token.pop(c.token, None)
            if c.up:
                self.counters["circuits_closed"] += 1
            else:
                self.counters["circuits_unanswered"] += 1
        return c

    # -- time -------------------------------------------------------------------------------

    def expire(self, now: float) -> list[Ended]:
        ended: list[Ended] = []
        for conn, r in list(self._reservations.items()):
            if r.expires <= now:
                self.counters["reservations_expired"] += 1
                for cid in self.release(conn):
                    ended.append(Ended("circuit", cid, "its worker's reservation expired"))
                ended.append(Ended("reservation", conn, "not refreshed in time"))
        for c in list(self._circuits.values()):
            if c.deadline <= now:
                self.close(c.cid)
                reason = (
                    f"open for its limit of {self.limits.circuit_seconds:g} s"
                    if c.up
                    else f"the worker did not take it up within {self.limits.answer_seconds:g} s"
                )
                ended.append(Ended("circuit", c.cid, reason))
        return ended

    def next_deadline(self) -> float:
        return min(
            [r.expires for r in self._reservations.values()]
            + [c.deadline for c in self._circuits.values()],
            default=math.inf,
        )

    # -- reading ----------------------------------------------------------------------------

    def circuit(self, cid: int) -> Circuit | None:
        return self._circuits.get(cid)

    @property
    def reservations_held(self) -> int:
        return len(self._reservations)

    @property
    def circuits_open(self) -> tuple[int, int]:
        """Circuits up, and circuits waiting for their worker to take them up."""
        up = sum(1 for c in self._circuits.values() if c.up)
        return up, len(self._circuits) - up

    def status(self, now: float) -> dict[str, Any]:
        return {
            "reservations": [
                {
                    "peer": r.peer.hex(),
                    "ip": r.ip,
                    "since": round(now - r.since, 1),
                    "expires_in": round(r.expires - now, 1),
                }
                for r in self._reservations.values()
            ],
            "circuits": [
                {
                    "id": c.cid,
                    "from": c.src.hex(),
                    "to": c.dst.hex(),
                    "up": c.up,
                    "open_for": round(now - c.opened, 1),
                    "bytes": c.carried,
                }
                for c in self._circuits.values()
            ],
            "counters": dict(self.counters),
            "limits": self.limits.model_dump(),
        }
