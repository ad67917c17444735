"""The worker's trio shell: accepts schedulers' secure channels, feeds their messages to the
`TaskManager`, runs the tasks it starts on their drivers, and keeps its timers.

Owns: one reader per scheduler channel, one trio task per running task (each in its own
scratch directory, removed afterwards), what its drivers keep open while it serves (the http
driver's clients), the timer loop, and the doorkeeper of its listener.
Promises: a malformed message ends that scheduler's channel with the reason, and nothing else;
a driver's failure becomes the task's error, never the worker's; a channel takes messages of
a few KiB until its scheduler has sent one deal message (or is one this worker holds tasks or
results for), then of up to `max_message_bytes` unless its operator refuses that scheduler,
and one over its limit is refused unread.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from p2psched.identity import Identity
from p2psched.logs import naming_task
from p2psched.resources.detect import Device
from p2psched.store.journal import Entry
from p2psched.wire.channel import Doorkeeper, Outbox, SecureChannel, serve_channels
from p2psched.wire.codec import DecodeError
from p2psched.wire.deal import MAX_COMMIT_MESSAGE, MAX_OPENING_MESSAGE, job_of
from p2psched.wire.frame_budget import FrameBudget
from p2psched.wire.messages import (
    CHALLENGE_MESSAGES,
    MAX_REASON,
    Message,
    Refusal,
    Send,
    Task,
    encode,
    parse,
    unpack,
)
from p2psched.wire.noise import ChannelError, FrameTooLarge
from p2psched.wire.schema import SchemaError
from p2psched.worker.challenge import ChallengeDesk, Compute, compute_products
from p2psched.worker.drivers import Driver, DriverError, DriverTask, open_drivers
from p2psched.worker.manager import Abort, Start, TaskManager

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Session:
    outbox: Outbox
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class WorkerService:
    def __init__(
        self,
        identity: Identity,
        manager: TaskManager,
        drivers: Mapping[str, Driver],
        *,
        scratch_root: Path | None = None,
        clock: Callable[[], float] = time.time,
        record: Callable[[list[Entry]], None] | None = None,
        max_message_bytes: int = MAX_COMMIT_MESSAGE,
        receive_budget_bytes: int = 2 * MAX_COMMIT_MESSAGE,
        challenges: ChallengeDesk | None = None,
        gpu: bool = False,
    ) -> None:
        self.identity = identity
        # The largest message a scheduler may send once it said what it is: a commitment
        # with its tasks (their inputs are decoded within it too).
        self.max_message_bytes = max_message_bytes
        # ... and what all their channels may be receiving at once, of messages that large.
        self.frame_budget = FrameBudget(max(receive_budget_bytes, max_message_bytes))
        # Who may connect: handshakes in all and per address, channels per address.
        self.doorkeeper = Doorkeeper()
        self.record = record  # makes the manager's journal durable (and empties it)
        self.manager = manager
        # Capacity challenges: taken apart from tasks, computed on a GPU when the ad claims one.
        self.challenges = challenges or ChallengeDesk(identity, price=manager.price)
        self.gpu = gpu
        self.drivers = drivers
        self.scratch_root = scratch_root
        self.clock = clock
        self.completed = 0
        self._sessions: dict[bytes, _Session] = {}
        self._running: dict[tuple[bytes, str], trio.CancelScope] = {}
        self._aborted: set[tuple[bytes, str]] = set()
        self._kick = trio.Event()
        self._waking_at = -math.inf  # when the timer loop wakes by itself
        # Messages waiting for the end of this step of the shell: they go once the journal
        # entries that caused them are on disk, all of the step's in one transaction.
        self._outgoing: list[Send] = []
        self._step_end = trio.Event()
        self._nursery: trio.Nursery | None = None

    async def serve(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        listen: bool = True,
        task_status: trio.TaskStatus[tuple[str, int] | None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the timers, and accept channels on `host:port` (the address bound is what
        starting reports), or, with `listen` False, none: then channels come only through
        `handle` (a worker behind NAT takes them up from its gate). A port that cannot be bound
        raises `OSError` as such (the caller may try another)."""
        listeners = await trio.open_tcp_listeners(port, host=host) if listen else None
        async with open_drivers(self.drivers), trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._timers)
            nursery.start_soon(self._step_ends)
            bound = None
            if listeners is not None:
                bound = await nursery.start(
                    lambda task_status: serve_channels(
                        self.identity,
                        self.handle,
                        listeners=listeners,
                        doorkeeper=self.doorkeeper,
                        max_frame=MAX_OPENING_MESSAGE,
                        task_status=task_status,
                    )
                )
            task_status.started(bound)

    async def handle(self, channel: SecureChannel) -> None:
        """Serve one scheduler's channel, however it reached us, until it ends. It came
        taking `MAX_OPENING_MESSAGE` (a stranger's): more once the scheduler said what it is."""
        peer = channel.peer.node_id
        # One it holds anything for said so on an earlier channel. (Set before anything
        # waits: the channel's reader has not yet read past the handshake.)
        if self.manager.holds_for(peer):
            channel.set_max_frame(self.max_message_bytes, self.frame_budget)
        old = self._sessions.get(peer)
        if old is not None:  # the scheduler reconnected: the newer channel wins
            old.scope.cancel()
        session = _Session(Outbox(channel))
        self._sessions[peer] = session
        refusal = None
        log.info("scheduler %s connected", peer.hex()[:16], extra={"scheduler": peer.hex()})
        try:
            with session.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(session.outbox.run)
                    self.manager.connected(peer, channel.peer.public_key, self.clock())
                    self._flush()
                    try:
                        while True:
                            frame = await channel.receive_frame()
                            self._heard(peer, channel, parse(frame))
                    except (SchemaError, FrameTooLarge) as e:
                        refusal = str(e)
                    except (ChannelError, DecodeError):
                        pass
                    nursery.cancel_scope.cancel()
                if refusal is not None:  # say why, then hang up
                    with trio.move_on_after(5), contextlib.suppress(ChannelError):
                        await channel.send_encoded([encode(Refusal(refusal[:MAX_REASON]))])
        finally:
            log.info(
                "scheduler %s disconnected%s",
                peer.hex()[:16],
                f": it broke the protocol ({refusal})" if refusal is not None else "",
                extra={"scheduler": peer.hex()},
            )
            if self._sessions.get(peer) is session:
                del self._sessions[peer]
                self.challenges.disconnected(peer)
                self.manager.disconnected(peer, self.clock())
                self._flush()

    def _heard(self, peer: bytes, channel: SecureChannel, message: Message) -> None:
        # It said what it is; but one its operator refuses is declined whatever it sends,
        # and keeps a stranger's limit.
        if self.manager.terms.policy.refusal(peer) is None:
            channel.set_max_frame(self.max_message_bytes, self.frame_budget)
        if isinstance(message, CHALLENGE_MESSAGES):
            self._challenged(peer, channel.peer.public_key, message)
        else:
            self.manager.receive(peer, message, self.clock())
        self._flush()

    def _flush(self, *, kick: bool = True) -> None:
        """Carry out the manager's actions: a task starts now (its slot does not wait on the
        disk); what is sent goes at the end of this step, once what caused it is durable
        (`_step_ends`). Never waits on a peer's socket."""
        for action in [*self.manager.actions(), *self.challenges.actions()]:
            if isinstance(action, Send):
                self._outgoing.append(action)
            elif isinstance(action, Start):
                assert self._nursery is not None
                self._nursery.start_soon(self._run, action.peer, action.task, action.devices)
            elif isinstance(action, Abort):
                scope = self._running.get((action.peer, action.task_id))
                if scope is not None:
                    scope.cancel()
                else:  # started, but its trio task has not run yet
                    self._aborted.add((action.peer, action.task_id))
            elif isinstance(action, Compute):
                assert self._nursery is not None
                self._nursery.start_soon(self._compute, action)
        if self._nursery is None:
            self._carry_out()
        elif self._outgoing or self.manager.journal or self.challenges.journal:
            self._step_end.set()
        # The timer loop looks again only if a deadline now comes before the time it sleeps
        # until: waking it for every message would cost a tick per message.
        if kick and self._next_deadline() < self._waking_at:
            self._kick.set()

    async def _step_ends(self) -> None:
        """Group commit: every channel's reader and task that ended in one batch of trio's
        runnable tasks has stepped the manager before this runs (a task woken during a batch
        runs after it), so the step's journal is one transaction."""
        while True:
            await self._step_end.wait()
            # A task started in the step takes its first step before the step's write: the
            # next queued task does not wait on the disk.
            await trio.lowlevel.checkpoint()
            self._step_end = trio.Event()
            self._carry_out()

    def _carry_out(self) -> None:
        """The step's journal made durable, then what it caused sent (a scheduler that does
        not read what it is sent is dropped, rather than stall the others and the timers)."""
        if self.record is not None:
            self.record([*self.manager.journal, *self.challenges.journal])
        self.manager.journal.clear()
        self.challenges.journal.clear()
        outgoing, self._outgoing = self._outgoing, []
        for action in outgoing:
            session = self._sessions.get(action.peer)
            if session is not None and not session.outbox.put_frame(encode(action.message)):
                session.scope.cancel()  # it does not read what it is sent

    async def _run(self, peer: bytes, task: Task, devices: tuple[Device, ...]) -> None:
        with naming_task(job_of(task.id), task.id):
            await self._run_task(peer, task, devices)

    async def _run_task(self, peer: bytes, task: Task, devices: tuple[Device, ...]) -> None:
        key = (peer, task.id)
        output: Any = None
        error: str | None = None
        driver = self.drivers.get(task.driver)
        made = False
        with trio.CancelScope() as scope:
            self._running[key] = scope
            if key in self._aborted:  # cancelled between the start and this task's first step
                self._aborted.discard(key)
                scope.cancel()
            scratch = Path(self.scratch_root or tempfile.gettempdir())
            try:
                if driver is not None and driver.uses_scratch:
                    try:
                        scratch = Path(tempfile.mkdtemp(prefix="task-", dir=self.scratch_root))
                    except OSError as e:
                        raise DriverError(f"cannot make the task's scratch folder ({e})") from None
                    made = True
                if driver is None:
                    raise DriverError(f"driver {task.driver!r} is not enabled on this worker")
                try:
                    value = unpack(task.input, self.max_message_bytes)
                except DecodeError as e:
                    raise DriverError(f"the task's input is not valid MessagePack ({e})") from None
                output = await driver.run(
                    DriverTask(
                        task.id,
                        value,
                        task.model,
                        task.timeout,
                        scratch,
                        lambda part: self._partial(peer, task.id, part),
                        devices,
                    ),
                    lambda f: self.manager.progress(peer, task.id, f),
                )
            except DriverError as e:
                error = str(e) or type(e).__name__
            finally:
                del self._running[key]
                if made:
                    shutil.rmtree(scratch, ignore_errors=True)
        if scope.cancelled_caught:
            error = "cancelled by its scheduler"
        log.debug(
            "task %s ran on the %s driver: %s",
            task.id,
            task.driver,
            "ok" if error is None else error,
            extra={"scheduler": peer.hex()},
        )
        if self.manager.finished(peer, task.id, output, error, self.clock()):
            self.completed += 1
        self._flush()

    def _partial(self, peer: bytes, task_id: str, output: Any) -> None:
        self.manager.partial(peer, task_id, output)
        self._flush(kick=False)  # (a part sets no deadline)

    async def _timers(self) -> None:
        while True:
            self._waking_at = min(self._next_deadline(), self.clock() + 3600.0)
            with trio.move_on_at(trio.current_time() + self._waking_at - self.clock()):
                await self._kick.wait()
            self._kick = trio.Event()
            self.manager.tick(self.clock())
            self.challenges.tick(self.clock())
            self._flush(kick=False)

    def _next_deadline(self) -> float:
        return min(self.manager.next_deadline(), self.challenges.next_deadline())

    def _challenged(self, peer: bytes, public_key: bytes, message: Message) -> None:
        """A capacity challenge's message: declined while this worker holds tasks (a
        challenge would slow them, and they would slow it)."""
        held = self.manager.tasks_held
        busy = f"busy: {held} tasks held here" if held else None
        refusal = self.manager.terms.policy.refusal(peer)
        self.challenges.receive(peer, public_key, message, self.clock(), refusal=refusal, busy=busy)

    async def _compute(self, ask: Compute) -> None:
        # (in a thread: seconds of numpy must not stall the channels and the timers)
        try:
            tree, seconds = await trio.to_thread.run_sync(
                functools.partial(compute_products, ask.seed, ask.n, ask.rounds, gpu=self.gpu),
                abandon_on_cancel=True,
            )
        except Exception as e:  # (out of memory, a GPU's error: the challenge's, not the worker's)
            log.warning("capacity challenge %d: product not computed: %r", ask.rid, e)
            self.challenges.not_computed(ask.peer, ask.rid, repr(e))
        else:
            self.challenges.computed(ask.peer, ask.rid, tree, seconds)
        self._flush()
