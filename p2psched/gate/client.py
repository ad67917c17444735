"""The side of the relay that other nodes run: a worker asking a gate whether it can be reached
from outside, a worker behind NAT keeping a reservation on a gate and taking up the circuits
schedulers open to it, and a scheduler dialing a worker at any advertised address.

Owns: the control channel to the gate a worker holds its reservation on, its refreshes, moving
to the next gate when that one is lost, and one task per circuit taken up.
Promises: `RelayClient.serve` reports started only once a gate holds a reservation (else raises
`RelayError` with every gate's reason); after that it never gives up: it moves to another gate
when its gate refuses, goes silent or closes, and says the new address through `on_address`.
Circuits already up keep running when the control channel is lost.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from p2psched.identity import Identity
from p2psched.wire.address import host_port, parse_relay_address, relay_address, split_host_port
from p2psched.wire.channel import (
    HANDSHAKE_TIMEOUT,
    ChannelClosed,
    SecureChannel,
    open_channel,
    secure_stream,
)
from p2psched.wire.hop import MAX_CONTROL_FRAME, connect_request, parse_control
from p2psched.wire.hop_stream import read_frame, write_frame
from p2psched.wire.noise import MAX_FRAME, ChannelError
from p2psched.wire.schema import SchemaError

log = logging.getLogger(__name__)
Addr = tuple[str, int]
Handler = Callable[[SecureChannel], Awaitable[None]]
ANSWER_SECONDS = 15.0  # for a gate to answer a reservation or a dial-back
CIRCUIT_SECONDS = 25.0  # for a gate to give us a circuit (it waits up to 10 s on the worker)
RETRY_SECONDS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # between rounds over every gate
STEADY_SECONDS = 60.0  # a reservation held this long was no flap: the next move is at once
DIALBACK_ROUNDS = 3  # asking gates that were busy with dial-backs again


def jittered(delay: float) -> float:
    """`delay` spread over half to one and a half times itself: workers that lost the same gate
    at the same instant (it restarted) then come back spread out, not all in one burst."""
    return delay * random.uniform(0.5, 1.5)


class RelayError(Exception):
    """No gate would relay for this worker; the message has each gate's reason."""


@dataclass(frozen=True, slots=True)
class Reachability:
    reachable: bool
    seen: str  # the address the gate dialed: what the outside sees of this node
    reason: str
    gate: str


async def _open_stream(
    gate: Addr, timeout: float, local_address: str | None = None
) -> tuple[trio.SocketStream, dict[str, Any]]:
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(*gate, local_address=local_address)
    except (OSError, trio.TooSlowError) as e:
        reason = f"cannot connect to the gate at {host_port(*gate)} ({e or 'timed out'})"
        raise ChannelClosed(reason) from None
    hello = await _expect(stream, "hello", timeout, f"the gate at {host_port(*gate)}")
    return stream, hello


async def _request(
    stream: trio.SocketStream, frame: dict[str, Any], timeout: float, what: str
) -> None:
    """Send the gate `frame` and wait for its `ok` (see `_expect`)."""
    try:
        await write_frame(stream, frame)
    except BaseException:
        await stream.aclose()
        raise
    await _expect(stream, "ok", timeout, f"the gate, asked for {what},")


async def _expect(stream: trio.SocketStream, kind: str, timeout: float, who: str) -> dict[str, Any]:
    """The gate's next frame, of `kind`. Anything else closes the stream and raises a
    `ChannelError` saying why (a `HopError` with the gate's reason, if it refused)."""
    try:
        with trio.fail_after(timeout):
            return await read_frame(stream, kind)
    except BaseException as e:
        await stream.aclose()
        if isinstance(e, trio.TooSlowError):
            raise ChannelError(f"{who} sent no {kind!r} within {timeout:g} s") from None
        raise


@asynccontextmanager
async def open_control(
    gate: Addr, identity: Identity, timeout: float = HANDSHAKE_TIMEOUT
) -> AsyncIterator[SecureChannel]:
    """A secure control channel to the gate at `gate` (its identity is the one its hello gave)."""
    stream, hello = await _open_stream(gate, timeout)
    await _request(stream, {"t": "control"}, timeout, "a control channel")
    async with secure_stream(
        stream,
        identity,
        initiator=True,
        expected_peer=hello["gate"],
        timeout=timeout,
        max_frame=MAX_CONTROL_FRAME,
    ) as channel:
        yield channel


async def _ask(channel: SecureChannel, message: dict[str, Any], *answers: str) -> dict[str, Any]:
    await channel.send(message)
    with trio.move_on_after(ANSWER_SECONDS):
        while True:
            got = parse_control(await channel.receive(), *answers, "incoming")
            if got["t"] != "incoming":  # (a circuit for a reservation we no longer hold)
                return got
    raise ChannelError(f"the gate did not answer {message['t']!r} within {ANSWER_SECONDS:g} s")


async def check_reachability(
    gates: Sequence[Addr], identity: Identity, port: int
) -> Reachability | None:
    """Ask the gates, in order, to dial this node back on `port`: the first answer. Gates
    busy with others' dial-backs are asked again a little later. When gates answered but none
    would check, unreachable (with no `seen`): a relay works either way, a direct address only
    if it is right. None when no gate answered at all."""
    refusals: list[str] = []
    for attempt in range(DIALBACK_ROUNDS):
        busy = False
        for gate in gates:
            try:
                async with open_control(gate, identity) as channel:
                    ask = {"t": "dialback", "port": port}
                    got = await _ask(channel, ask, "reachability", "refused")
            except (ChannelError, SchemaError) as e:
                log.info("reachability check through %s failed: %s", host_port(*gate), e)
                continue
            if got["t"] == "refused":
                log.info("gate %s would not dial back: %s", host_port(*gate), got["reason"])
                busy = busy or got["reason"].startswith("busy")
                refusals.append(f"{host_port(*gate)}: {got['reason']}")
                continue
            return Reachability(got["reachable"], got["seen"], got["reason"], host_port(*gate))
        if not busy:
            break
        await trio.sleep(2.0 * (attempt + 1))
    if refusals:
        reason = f"no gate would check it ({refusals[-1]})"
        return Reachability(False, "", reason, refusals[-1].split(": ", 1)[0])
    return None


@asynccontextmanager
async def open_worker_channel(
    address: str,
    identity: Identity,
    *,
    expected_peer: bytes,
    timeout: float = HANDSHAKE_TIMEOUT,
    local_address: str | None = None,
    max_frame: int = MAX_FRAME,
) -> AsyncIterator[SecureChannel]:
    """A secure channel to the worker `expected_peer` at one of its advertised addresses:
    "HOST:PORT" directly, or through a gate's circuit ("HOST:PORT/relay/<id>"), dialed from
    `local_address` if given (a host with several), taking messages of up to `max_frame` bytes
    from it (until `set_max_frame`). ValueError for an address that is neither; `ChannelError`
    when it cannot be opened."""
    relayed = parse_relay_address(address)
    if relayed is None:
        host, port = split_host_port(address)
        async with open_channel(
            host,
            port,
            identity,
            expected_peer=expected_peer,
            local_address=local_address,
            max_frame=max_frame,
        ) as channel:
            yield channel
        return
    gate, worker = relayed
    if worker != expected_peer:
        raise ValueError(f"relay address {address!r} names another worker")
    stream, hello = await _open_stream(split_host_port(gate), timeout, local_address)
    await _request(stream, connect_request(identity, hello, worker), CIRCUIT_SECONDS, "a circuit")
    async with secure_stream(
        stream,
        identity,
        initiator=True,
        expected_peer=worker,
        timeout=timeout,
        max_frame=max_frame,
    ) as channel:
        yield channel


class RelayClient:
    """A worker's reservation on one of its gates, and the circuits it takes up."""

    def __init__(
        self,
        identity: Identity,
        gates: Sequence[Addr],
        handle: Handler,
        on_address: Callable[[str], Awaitable[None]] | None = None,
        *,
        max_frame: int = MAX_FRAME,
    ) -> None:
        if not gates:
            raise ValueError("a relayed worker needs at least one gate")
        self.identity = identity
        self.gates = list(gates)
        self.handle = handle
        self.max_frame = max_frame  # what a circuit's channel takes until `handle` says more
        self.on_address = on_address
        self.address: str | None = None  # the relay address now advertised
        self.reasons: dict[str, str] = {}  # why each gate last failed us
        self.moves = 0  # times the reservation moved to another gate
        self._nursery: trio.Nursery | None = None

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            failure = await self._keep(task_status)
            nursery.cancel_scope.cancel()
        raise RelayError(failure)  # out here, as itself (not inside a nursery's group)

    async def _keep(self, task_status: trio.TaskStatus[str]) -> str:
        """Hold a reservation on one gate after another, forever, once one gate took it;
        until then, the reasons why none would."""
        started = False
        retries = iter(RETRY_SECONDS)
        after = -1  # the index of the gate last lost: the next round starts past it
        while True:
            for i in [*range(after + 1, len(self.gates)), *range(after + 1)]:
                gate = self.gates[i]
                name = host_port(*gate)
                since = None
                try:
                    async with open_control(gate, self.identity) as channel:
                        got = await _ask(channel, {"t": "reserve"}, "reserved", "refused")
                        if got["t"] == "refused":
                            self.reasons[name] = got["reason"]
                            continue
                        since = trio.current_time()
                        moved_from = self.address
                        if moved_from is not None:
                            self.moves += 1
                        self.address = relay_address(name, self.identity.node_id)
                        log.info(
                            "relay reservation %s %s: %s",
                            "moved to" if moved_from is not None else "on",
                            name,
                            self.address,
                            extra={"gate": name, "moves": self.moves},
                        )
                        if self.on_address is not None:  # not waited for: circuits come now
                            assert self._nursery is not None
                            self._nursery.start_soon(self.on_address, self.address)
                        if not started:
                            started = True
                            task_status.started(self.address)
                        reason = await self._hold(gate, channel, got["ttl"])
                except (ChannelError, SchemaError) as e:
                    reason = str(e)
                self.reasons[name] = reason
                if since is not None:
                    log.warning(
                        "lost the relay reservation on %s: %s",
                        name,
                        reason,
                        extra={"gate": name},
                    )
                    after = i
                    if trio.current_time() - since >= STEADY_SECONDS:
                        retries = iter(RETRY_SECONDS)  # it held a while: move on at once
                    else:  # a gate that takes us and drops us: not in a tight loop
                        await trio.sleep(jittered(next(retries, RETRY_SECONDS[-1])))
                    break
            else:
                if not started:
                    why = "; ".join(f"{g}: {r}" for g, r in self.reasons.items())
                    return f"no gate would relay for this worker ({why})"
                await trio.sleep(jittered(next(retries, RETRY_SECONDS[-1])))

    async def _hold(self, gate: Addr, channel: SecureChannel, ttl: float) -> str:
        """Keep the reservation (refreshed every third of its TTL) and take up circuits, until
        the gate refuses, goes silent, closes or breaks the protocol; returns why."""
        answered = trio.Event()
        answered.set()
        lost = ""
        async with trio.open_nursery() as nursery:

            async def refresh() -> None:
                nonlocal answered, lost
                while True:
                    await trio.sleep(ttl / 3)
                    answered = trio.Event()
                    try:
                        await channel.send({"t": "reserve"})
                    except ChannelError as e:
                        lost = str(e)
                        break
                    with trio.move_on_after(ANSWER_SECONDS):
                        await answered.wait()
                        continue
                    lost = f"the gate did not answer a refresh within {ANSWER_SECONDS:g} s"
                    break
                nursery.cancel_scope.cancel()

            nursery.start_soon(refresh)
            try:
                while True:
                    got = parse_control(await channel.receive(), "reserved", "refused", "incoming")
                    if got["t"] == "reserved":
                        answered.set()
                    elif got["t"] == "refused":
                        return f"the gate ended the reservation: {got['reason']}"
                    else:
                        assert self._nursery is not None  # circuits outlive this channel
                        self._nursery.start_soon(self._take, gate, got["token"])
            except ChannelError as e:
                return lost or str(e)
            except SchemaError as e:
                return f"the gate sent a message this worker does not understand ({e})"
            finally:
                nursery.cancel_scope.cancel()
        return lost

    async def _take(self, gate: Addr, token: bytes) -> None:
        try:
            stream, _ = await _open_stream(gate, HANDSHAKE_TIMEOUT)
            await _request(stream, {"t": "accept", "token": token}, HANDSHAKE_TIMEOUT, "a circuit")
            async with secure_stream(
                stream, self.identity, initiator=False, max_frame=self.max_frame
            ) as channel:
                await self.handle(channel)
        except (ChannelError, trio.TooSlowError) as e:
            log.debug(
                "circuit through %s ended: %s",
                host_port(*gate),
                e,
                extra={"gate": host_port(*gate)},
            )
        except Exception:  # a bug in handling one peer must not take down the worker
            log.exception(
                "dropped a relayed connection after an error in its handler",
                extra={"gate": host_port(*gate)},
            )
