"""The scheduler's trio shell for one job: finds workers in the DHT, opens a secure channel to
each worker the `JobRun` wants, carries messages both ways and keeps the job's timers.

Owns: the channels of this job (one per worker, each with its reader and its writer), the timer
loop, and the hand-off of settled tasks to `on_settled`.
Promises: `run_job` returns once every task is final (or the caller cancels it); a worker that
breaks a rule is disconnected; an error on one channel touches no other.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from p2psched.resources.need import Need
from p2psched.scheduler.discovery import Discovery, WorkerAd
from p2psched.scheduler.dispatch import Close, Connect, Discover, JobRun, Send, Settled
from p2psched.wire.channel import ChannelClosed, open_channel
from p2psched.wire.deal import parse
from p2psched.wire.noise import ChannelError
from p2psched.wire.schema import SchemaError

Settle = Callable[[JobRun, str], Awaitable[None] | None]
FindWorkers = Callable[[Need], Awaitable[list[WorkerAd]]]


def dht_finder(discovery: Discovery) -> FindWorkers:
    async def find(need: Need) -> list[WorkerAd]:
        return await discovery.find(need, fresh=True)

    return find


class JobDriver:
    """Runs one `JobRun` to its end over real channels."""

    def __init__(
        self,
        run: JobRun,
        find: FindWorkers,
        *,
        on_settled: Settle | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.run = run
        self.find = find
        self.on_settled = on_settled
        self.clock = clock
        self._outgoing: dict[bytes, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._scopes: dict[bytes, trio.CancelScope] = {}
        self._kick = trio.Event()
        self._discovering = False
        self._nursery: trio.Nursery | None = None

    async def __call__(self) -> JobRun:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._discover)
            while not self.run.done:
                wait = self.run.next_deadline() - self.clock()
                with trio.move_on_after(max(0.0, wait) if math.isfinite(wait) else 3600):
                    await self._kick.wait()
                self._kick = trio.Event()
                self.run.tick(self.clock())
                await self._flush(kick=False)
            nursery.cancel_scope.cancel()
        return self.run

    def cancel(self, task_ids: list[str] | None) -> list[str]:
        aborted = self.run.cancel(task_ids, self.clock())
        self._kick.set()
        return aborted

    async def _flush(self, *, kick: bool = True) -> None:
        assert self._nursery is not None
        for action in self.run.actions():
            if isinstance(action, Send):
                out = self._outgoing.get(action.worker)
                if out is not None:
                    out.send_nowait(action.message)
            elif isinstance(action, Connect):
                self._nursery.start_soon(self._connect, action.worker, action.addresses)
            elif isinstance(action, Close):
                scope = self._scopes.get(action.worker)
                if scope is not None:
                    scope.cancel()
            elif isinstance(action, Settled):
                if self.on_settled is not None:
                    done = self.on_settled(self.run, action.task_id)
                    if done is not None:
                        await done
            elif isinstance(action, Discover):
                self._nursery.start_soon(self._discover)
        if kick:
            self._kick.set()

    async def _discover(self) -> None:
        if self._discovering:
            return
        self._discovering = True
        try:
            needs = {str(t.spec.need): t.spec.need for t in self.run.tasks.values()}
            for need in needs.values():
                ads = await self.find(need)
                self.run.add_workers(ads, self.clock())
                await self._flush()
        finally:
            self._discovering = False

    async def _connect(self, worker: bytes, addresses: tuple[str, ...]) -> None:
        reason = "it advertises no address"
        with trio.CancelScope() as scope:
            self._scopes[worker] = scope
            for address in addresses:
                host, _, port = address.rpartition(":")
                try:
                    async with open_channel(
                        host.strip("[]"), int(port), self.run.identity, expected_peer=worker
                    ) as channel:
                        await self._session(worker, channel)
                        reason = "the channel closed"
                        break
                except (ChannelError, ValueError) as e:
                    reason = str(e)
        if scope.cancelled_caught:
            reason = "disconnected: it broke the protocol"
        self._scopes.pop(worker, None)
        self._outgoing.pop(worker, None)
        if not self.run.done:
            self.run.disconnected(worker, reason, self.clock())
            await self._flush()

    async def _session(self, worker: bytes, channel: Any) -> None:
        send, receive = trio.open_memory_channel[dict[str, Any]](math.inf)
        self._outgoing[worker] = send

        async def writer() -> None:
            async for message in receive:
                batch = [message]
                while True:  # whatever else is ready goes in the same write
                    try:
                        batch.append(receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                await channel.send_many(batch)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            self.run.connected(worker, channel.peer.public_key, self.clock())
            await self._flush()
            try:
                while True:
                    raw = await channel.receive()
                    try:
                        message = parse(raw)
                    except SchemaError as e:
                        self.run.disconnected(
                            worker, f"sent a malformed message ({e})", self.clock()
                        )
                        break
                    self.run.receive(worker, message, self.clock())
                    await self._flush()
            except ChannelClosed:
                pass
            nursery.cancel_scope.cancel()
