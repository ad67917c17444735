"""The worker's trio shell: accepts schedulers' secure channels, feeds their messages to the
`TaskManager`, runs the tasks it starts on their drivers, and keeps its timers.

Owns: one reader per scheduler channel, one trio task per running task (each in its own
scratch directory, removed afterwards), and the timer loop.
Promises: a malformed message ends that scheduler's channel with the reason, and nothing else;
a driver's failure becomes the task's error, never the worker's.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import trio

from p2psched.identity import Identity
from p2psched.wire.channel import SecureChannel, serve_channels
from p2psched.wire.deal import parse
from p2psched.wire.noise import ChannelError
from p2psched.wire.schema import SchemaError
from p2psched.worker.drivers import Driver, DriverError, DriverTask
from p2psched.worker.manager import Abort, Send, Start, TaskManager


class WorkerService:
    def __init__(
        self,
        identity: Identity,
        manager: TaskManager,
        drivers: Mapping[str, Driver],
        *,
        scratch_root: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity
        self.manager = manager
        self.drivers = drivers
        self.scratch_root = scratch_root
        self.clock = clock
        self.completed = 0
        self._channels: dict[bytes, SecureChannel] = {}
        self._running: dict[tuple[bytes, str], trio.CancelScope] = {}
        self._kick = trio.Event()
        self._nursery: trio.Nursery | None = None

    async def serve(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._timers)
            bound = await nursery.start(
                lambda task_status: serve_channels(
                    self.identity, self._session, host=host, port=port, task_status=task_status
                )
            )
            task_status.started(bound)

    async def _session(self, channel: SecureChannel) -> None:
        peer = channel.peer.node_id
        old = self._channels.get(peer)
        if old is not None:  # the scheduler reconnected: the newer channel wins
            await old.aclose()
        self._channels[peer] = channel
        self.manager.connected(peer, channel.peer.public_key, self.clock())
        await self._flush()
        try:
            while True:
                try:
                    message = parse(await channel.receive())
                    self.manager.receive(peer, message, self.clock())
                except SchemaError as e:
                    await channel.send({"t": "error", "reason": str(e)})
                    return
                await self._flush()
        except ChannelError:
            pass
        finally:
            if self._channels.get(peer) is channel:
                del self._channels[peer]
                self.manager.disconnected(peer, self.clock())
                await self._flush()

    async def _flush(self, *, kick: bool = True) -> None:
        outgoing: dict[bytes, list[dict[str, Any]]] = {}
        for action in self.manager.actions():
            if isinstance(action, Send):
                outgoing.setdefault(action.peer, []).append(action.message)
            elif isinstance(action, Start):
                assert self._nursery is not None
                self._nursery.start_soon(self._run, action.peer, action.task)
            elif isinstance(action, Abort):
                scope = self._running.get((action.peer, action.task_id))
                if scope is not None:
                    scope.cancel()
        for peer, messages in outgoing.items():
            channel = self._channels.get(peer)
            if channel is not None:
                try:
                    await channel.send_many(messages)
                except ChannelError:
                    pass  # its reader sees the same and cleans up
        if kick:  # a deadline may have come closer: the timer loop looks again
            self._kick.set()

    async def _run(self, peer: bytes, task: dict[str, Any]) -> None:
        key = (peer, task["id"])
        output: Any = None
        error: str | None = None
        driver = self.drivers.get(task["driver"])
        with trio.CancelScope() as scope:
            self._running[key] = scope
            scratch = Path(self.scratch_root or tempfile.gettempdir())
            if driver is not None and driver.uses_scratch:
                scratch = Path(tempfile.mkdtemp(prefix="task-", dir=self.scratch_root))
            try:
                if driver is None:
                    raise DriverError(f"driver {task['driver']!r} is not enabled on this worker")
                output = await driver.run(
                    DriverTask(task["id"], task["input"], task["model"], task["timeout"], scratch),
                    lambda f: self.manager.progress(peer, task["id"], f),
                )
            except DriverError as e:
                error = str(e) or type(e).__name__
            finally:
                del self._running[key]
                if driver is not None and driver.uses_scratch:
                    shutil.rmtree(scratch, ignore_errors=True)
        if scope.cancelled_caught:
            error = "cancelled by its scheduler"
        if error is None:
            self.completed += 1
        self.manager.finished(peer, task["id"], output, error, self.clock())
        await self._flush()

    async def _timers(self) -> None:
        while True:
            wait = self.manager.next_deadline() - self.clock()
            with trio.move_on_after(max(0.0, min(wait, 3600.0)) if math.isfinite(wait) else 3600):
                await self._kick.wait()
            self._kick = trio.Event()
            self.manager.tick(self.clock())
            await self._flush(kick=False)
