"""The gate's relay service, the trio shell around `gate.relay.Relay`: one TCP port (the same
number as the gate's DHT port) where nodes keep their control channel, ask to be dialed back,
and where schedulers open circuits to workers behind NAT (the protocol: `wire.hop`).

Owns: the listener, each connection's task, the workers' control channels, the dial-backs, the
byte pumps of each circuit, and the timer that ends what the core says has expired.
Promises: a caller over a limit, or one that breaks the protocol, gets a refusal with the reason
and is hung up on; nothing it did reaches another connection. A circuit forwards bytes as they
come, unread (they are the two ends' Noise session), until either end closes or a limit ends it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import trio

from p2psched.gate.relay import Circuit, Refusal, Relay, RelayLimits
from p2psched.identity import Identity
from p2psched.wire.address import host_port, subnet
from p2psched.wire.channel import (
    Doorkeeper,
    Outbox,
    SecureChannel,
    open_channel,
    release,
    secure_stream,
)
from p2psched.wire.hop import (
    MAX_CONTROL_FRAME,
    NONCE_BYTES,
    HopError,
    connect_signer,
    parse_control,
)
from p2psched.wire.hop_stream import read_frame, write_frame
from p2psched.wire.noise import ChannelError
from p2psched.wire.schema import SchemaError

log = logging.getLogger(__name__)
# What one address may hold of the gate, beside the relay's own limits: each is shared by
# everyone too, so one host's share is kept well below the whole.
OPENING_SECONDS = 2.0  # to say what a connection is for, after the gate's hello
MAX_OPENING = 256  # connections that have not said yet: past it, the oldest is closed
MAX_OPENING_PER_IP = 16
MAX_CONTROLS = 8192  # control channels open at once
MAX_CONTROLS_PER_IP = 32
CONTROL_IDLE_SECONDS = 30.0  # a control channel that holds no reservation is closed after
DIALBACK_SECONDS = 5.0
MAX_DIALBACKS = 32  # dial-backs in flight at once
MAX_DIALBACKS_PER_IP = 2
PUMP_READ = 1 << 18  # bytes per read: fewer, larger steps cost the gate less CPU per byte


@dataclass(slots=True)
class _Control:
    conn: int
    peer: bytes
    ip: str
    outbox: Outbox
    scope: trio.CancelScope
    dialing: bool = False


@dataclass(slots=True)
class _Waiting:
    """A circuit between its request and its end: the worker's stream, once it took it up."""

    taken: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)
    stream: trio.abc.Stream | None = None
    reason: str = ""
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class Gate:
    """The gate role's relay service on one TCP port: workers' control channels and their
    reservations, dial-backs for the reachability check, and circuits spliced between a
    scheduler and a worker behind NAT. Serve it with `nursery.start(gate.serve, ...)`."""

    def __init__(self, identity: Identity, limits: RelayLimits | None = None) -> None:
        self.identity = identity
        self.relay = Relay(limits or RelayLimits())
        self.address: tuple[str, int] | None = None
        self._controls: dict[int, _Control] = {}
        self._waiting: dict[int, _Waiting] = {}
        self._conns = itertools.count(1)
        # Connections that have not said what they are for: when there are too many, the
        # oldest goes, not the newcomer (idle sockets cannot lock it out).
        self._openings = Doorkeeper(
            waiting=MAX_OPENING,
            waiting_per_ip=MAX_OPENING_PER_IP,
            timeout=OPENING_SECONDS,
            on_shed=self._count_shed,
        )
        self._opening = self._openings.waiting_per_ip  # per address, for the status
        self._dialbacks: Counter[str] = Counter()  # per address: dial-backs in flight
        self._control_ips: Counter[str] = Counter()  # per address: control channels
        self._kick = trio.Event()

    async def serve(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()
        self.address = (bound[0], bound[1])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._one, listeners)
            nursery.start_soon(self._timers)
            task_status.started(self.address)

    def status(self) -> dict[str, Any]:
        host, port = self.address or ("", 0)
        return {"relay": f"{host}:{port}", **self.relay.status(trio.current_time())}

    # -- one connection ---------------------------------------------------------------------

    async def _one(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                await self._serve_one(stream)
            except Exception:  # one peer's trouble must not end the listener (nor the gate)
                log.exception("relay connection dropped after an unexpected error")

    async def _serve_one(self, stream: trio.SocketStream) -> None:
        try:
            ip, port = stream.socket.getpeername()[:2]
        except OSError:
            return  # it reset the connection before we looked
        net = subnet(ip)
        key, scope = self._openings.handshake(net)
        nonce = os.urandom(NONCE_BYTES)
        request = None
        try:
            hello = {"t": "hello", "gate": self.identity.node_id, "nonce": nonce}
            with scope:
                await write_frame(stream, {**hello, "seen": host_port(ip, port)})
                request = await read_frame(stream, "control", "connect", "accept")
        except HopError as e:
            await _refuse(stream, str(e))
            return
        finally:
            self._openings.handshake_done(key)
        try:
            if request is None:
                return  # it said nothing in time
            if request["t"] == "control":
                await self._control(stream, ip)
            elif request["t"] == "connect":
                await self._connect(stream, ip, request, nonce)
            else:
                await self._accept(stream, request["token"])
        except HopError as e:
            log.debug("relay connection from %s ended: %s", ip, e, extra={"ip": ip})

    def _count_shed(self) -> None:
        self.relay.counters["connections_shed"] += 1

    async def _control(self, stream: trio.SocketStream, ip: str) -> None:
        net = subnet(ip)
        if (
            self._control_ips.total() >= MAX_CONTROLS
            or self._control_ips[net] >= MAX_CONTROLS_PER_IP
        ):
            self.relay.counters["connections_shed"] += 1
            await _refuse(stream, f"too many control connections from {ip}; close some first")
            return
        conn = next(self._conns)
        peer = b""
        self._control_ips[net] += 1  # from before its handshake: those count too
        try:
            await write_frame(stream, {"t": "ok"})
            async with secure_stream(
                stream, self.identity, initiator=False, max_frame=MAX_CONTROL_FRAME
            ) as channel:
                peer = channel.peer.node_id
                control = _Control(conn, peer, ip, Outbox(channel), trio.CancelScope())
                self._controls[conn] = control
                with control.scope:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(control.outbox.run)
                        await self._control_loop(nursery, control, channel)
                        nursery.cancel_scope.cancel()
        except ChannelError:
            pass
        finally:
            release(self._control_ips, net)
            self._controls.pop(conn, None)
            if self.relay.holds(conn):
                log.info(
                    "relay reservation of %s ended: its control connection closed",
                    _short(peer),
                    extra={"worker": peer.hex() if peer else None, "ip": ip},
                )
            for cid in self.relay.release(conn):
                self._ended(cid, "the worker's control connection to the gate closed")

    async def _control_loop(
        self, nursery: trio.Nursery, control: _Control, channel: SecureChannel
    ) -> None:
        """Serve a control channel's requests until it ends, breaks a rule (it is told why),
        or stays idle without a reservation (a held slot of ours with no use)."""
        refusal = None
        try:
            while True:
                idle = not self.relay.holds(control.conn) and not control.dialing
                with trio.move_on_after(CONTROL_IDLE_SECONDS if idle else math.inf) as wait:
                    raw = await channel.receive()
                if wait.cancelled_caught:
                    if self.relay.holds(control.conn) or control.dialing:
                        continue
                    refusal = f"idle for {CONTROL_IDLE_SECONDS:g} s without a reservation"
                    break
                message = parse_control(raw, "reserve", "dialback")
                if message["t"] == "reserve":
                    self._reserve(control)
                else:
                    self._dialback(nursery, control, message["port"])
        except SchemaError as e:
            refusal = str(e)
        except ChannelError:
            return  # it closed, or broke: its reservation ends with it
        with trio.move_on_after(2), contextlib.suppress(ChannelError):  # say why, then hang up
            await channel.send({"t": "refused", "reason": refusal[:300]})

    def _reserve(self, control: _Control) -> None:
        new = not self.relay.holds(control.conn)
        got = self.relay.reserve(control.conn, control.peer, control.ip, trio.current_time())
        who = {"worker": control.peer.hex(), "ip": control.ip}
        if isinstance(got, Refusal):
            log.info(
                "refused a relay reservation to %s: %s", _short(control.peer), got.reason, extra=who
            )
            control.outbox.put({"t": "refused", "reason": got.reason})
            return
        if new:
            log.info(
                "relay reservation for %s from %s", _short(control.peer), control.ip, extra=who
            )
        control.outbox.put({"t": "reserved", "ttl": self.relay.limits.reservation_ttl})
        self._kick.set()

    def _dialback(self, nursery: trio.Nursery, control: _Control, port: int) -> None:
        """Dial the caller back at the address it came from, on `port`: only that address,
        so a gate cannot be made to probe someone else's machine."""
        net = subnet(control.ip)
        if control.dialing:
            reason = "a dial-back is already under way on this channel; wait for its answer"
        elif (
            self._dialbacks.total() >= MAX_DIALBACKS or self._dialbacks[net] >= MAX_DIALBACKS_PER_IP
        ):
            reason = "busy: the gate is dialing back as many as it will; retry in a few seconds"
        else:
            reason = ""
        if reason:
            control.outbox.put({"t": "refused", "reason": reason})
            return
        control.dialing = True
        self._dialbacks[net] += 1

        async def dial() -> None:
            reachable, reason = False, ""
            try:
                async with open_channel(
                    control.ip,
                    port,
                    self.identity,
                    expected_peer=control.peer,
                    timeout=DIALBACK_SECONDS,
                ):
                    reachable, reason = True, "the gate reached it and it proved its identity"
            except ChannelError as e:
                reason = str(e)[:300]
            finally:
                control.dialing = False
                release(self._dialbacks, net)
            self.relay.counters[
                "dialbacks_reachable" if reachable else "dialbacks_unreachable"
            ] += 1
            seen = host_port(control.ip, port)
            control.outbox.put(
                {"t": "reachability", "reachable": reachable, "seen": seen, "reason": reason}
            )

        nursery.start_soon(dial)

    async def _connect(
        self, stream: trio.SocketStream, ip: str, request: dict[str, Any], nonce: bytes
    ) -> None:
        src = connect_signer(request, self.identity.node_id, nonce)
        if src is None:
            await _refuse(stream, "the connect request's signature does not verify")
            return
        got = self.relay.request(src, ip, request["to"], trio.current_time())
        if isinstance(got, Refusal):
            await _refuse(stream, got.reason)
            return
        circuit: Circuit = got
        waiting = self._waiting[circuit.cid] = _Waiting()
        try:
            control = self._controls.get(circuit.conn)
            notice = {"t": "incoming", "token": circuit.token, "peer": src}
            if control is not None and not control.outbox.put(notice):
                control.scope.cancel()  # it does not read its control channel
            self._kick.set()
            await waiting.taken.wait()
            if waiting.stream is None:
                await _refuse(stream, waiting.reason)
                return
            with waiting.scope:
                await write_frame(waiting.stream, {"t": "ok"})
                await write_frame(stream, {"t": "ok"})
                await self._splice(stream, waiting.stream, circuit.cid, waiting.scope)
        finally:
            self.relay.close(circuit.cid)
            del self._waiting[circuit.cid]
            waiting.done.set()

    async def _accept(self, stream: trio.SocketStream, token: bytes) -> None:
        got = self.relay.accept(token, trio.current_time())
        waiting = None if isinstance(got, Refusal) else self._waiting.get(got.cid)
        if waiting is None:
            await _refuse(stream, got.reason if isinstance(got, Refusal) else "circuit is gone")
            return
        waiting.stream = stream
        waiting.taken.set()
        self._kick.set()  # its deadline is the circuit's now
        await waiting.done.wait()  # the connect side pumps; this stream stays open till then

    async def _splice(
        self, a: trio.abc.Stream, b: trio.abc.Stream, cid: int, scope: trio.CancelScope
    ) -> None:
        async def pump(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while True:
                    data = await src.receive_some(PUMP_READ)
                    if not data:
                        break
                    wait = self.relay.carry(cid, len(data), trio.current_time())
                    if isinstance(wait, Refusal):
                        log.info(
                            "relay circuit %d closed: %s", cid, wait.reason, extra={"circuit": cid}
                        )
                        break
                    if wait > 0:
                        await trio.sleep(wait)
                    await dst.send_all(data)
            scope.cancel()  # either way ends: the circuit ends

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, a, b)
            nursery.start_soon(pump, b, a)

    def _ended(self, cid: int, reason: str) -> None:
        waiting = self._waiting.get(cid)
        if waiting is None:
            return
        if waiting.stream is None:
            waiting.reason = reason
            waiting.taken.set()
        else:
            waiting.scope.cancel()

    async def _timers(self) -> None:
        while True:
            with trio.move_on_at(self.relay.next_deadline()):
                await self._kick.wait()
            self._kick = trio.Event()
            for ended in self.relay.expire(trio.current_time()):
                if ended.kind == "reservation":
                    control = self._controls.get(ended.key)
                    if control is not None:
                        log.info(
                            "relay reservation of %s ended: %s",
                            _short(control.peer),
                            ended.reason,
                            extra={"worker": control.peer.hex(), "ip": control.ip},
                        )
                        control.scope.cancel()
                else:
                    self._ended(ended.key, ended.reason)


async def _refuse(stream: trio.abc.Stream, reason: str) -> None:
    with trio.move_on_after(2), contextlib.suppress(HopError):
        await write_frame(stream, {"t": "refused", "reason": reason[:300]})


def _short(node_id: bytes) -> str:
    return node_id.hex()[:16] if node_id else "a peer not yet identified"
