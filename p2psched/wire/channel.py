"""The secure channel's trio shell: a `SecureSession` over any trio byte stream (a TCP connection,
or later a circuit through a gate), carrying MessagePack messages.

Owns: the handshake's timeout, the one reader task per connection, the write lock, and the
bounded inbox that gives backpressure (a full inbox stops the reader, so TCP stops the peer).
Promises: `open_channel`/`accept_channel` yield only after the peer's identity is proven; a
frame that fails authentication ends the channel with `ChannelError`, and the next `receive`
raises it; one that is not MessagePack makes its `receive` raise `ChannelError` (frames wait
as bytes, so a reader of typed messages decodes each once, to its type: `receive_frame`);
leaving the block closes the stream and stops the reader.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from p2psched.identity import Identity
from p2psched.wire.address import subnet
from p2psched.wire.codec import DecodeError, decode, encode
from p2psched.wire.frame_budget import FrameBudget
from p2psched.wire.noise import MAX_FRAME, ChannelError, IdWithoutWork, Peer, SecureSession

log = logging.getLogger(__name__)
HANDSHAKE_TIMEOUT = 10.0
INBOX = 256  # messages read ahead of the consumer
INBOX_BYTES = 32 << 20  # and their bytes, at most (one larger message still passes alone)
OUTBOX = 4096  # messages waiting for the socket: more means the peer does not read
OUTBOX_BYTES = 64 << 20
READ_SIZE = 1 << 16


class ChannelClosed(ChannelError):
    """The peer closed the connection (or it broke) and every message it sent was read."""


class SecureChannel:
    def __init__(self, stream: trio.abc.Stream, session: SecureSession, peer: Peer) -> None:
        self._stream = stream
        self._session = session
        self.peer = peer
        self._write_lock = trio.StrictFIFOLock()
        # Each message with the room it holds in the budget until its reader takes it.
        self._inbox_send, self._inbox = trio.open_memory_channel[tuple[bytes, int]](INBOX)
        self._buffered = 0  # bytes of the messages in the inbox
        self._budget: FrameBudget | None = None
        self._holding = 0  # room held for the message being received
        self._due = math.inf  # when that message must have come in whole
        self.inbox_bytes = INBOX_BYTES
        self._drained = trio.Event()
        self._error: ChannelError | None = None

    def set_max_frame(self, max_frame: int, budget: FrameBudget | None = None) -> None:
        """Take messages of up to `max_frame` bytes from now on (its peer said what it is),
        those over `budget.small` only with room in `budget`, shared by the node's channels."""
        self._session.set_max_frame(max_frame)
        self._budget = budget

    async def send(self, message: Any) -> None:
        """Send one message; raises `ChannelClosed` when the connection is gone."""
        await self.send_many([message])

    async def send_many(self, messages: list[Any]) -> None:
        """Send these messages in order, in as few writes as the socket takes."""
        await self.send_encoded([encode(m) for m in messages])

    async def send_encoded(self, frames: list[bytes]) -> None:
        """Send messages already encoded (MessagePack)."""
        async with self._write_lock:
            for frame in frames:
                self._session.seal(frame)
            try:
                await self._stream.send_all(self._session.data_to_send())
            except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                raise ChannelClosed(f"connection to the peer is gone ({e})") from None

    async def receive(self) -> Any:
        """The next message, decoded; raises `ChannelClosed` at the end, or the
        `ChannelError` that ended the channel (a frame that is not MessagePack ends it)."""
        frame = await self.receive_frame()
        try:
            return decode(frame, max_size=MAX_FRAME)
        except DecodeError as e:
            raise ChannelError(f"peer sent a message that is not valid: {e}") from None

    async def receive_frame(self) -> bytes:
        """The next message as it came (for a reader that decodes it to a type itself);
        raises as `receive` does."""
        try:
            frame, held = await self._inbox.receive()
        except trio.EndOfChannel:
            raise self._error or ChannelClosed("the peer closed the connection") from None
        if held:
            assert self._budget is not None
            self._budget.give_back(held)
        self._buffered -= len(frame)
        self._drained.set()
        return frame

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            try:
                yield await self.receive()
            except ChannelClosed:
                return

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def _read(self) -> None:
        """The one reader: bytes → session → messages → inbox."""
        async with self._inbox_send:
            try:
                await self._deliver()  # frames that came with the last handshake message
                while True:
                    data = None
                    with trio.move_on_at(self._due):  # only while room is held for a message
                        data = await self._stream.receive_some(READ_SIZE)
                    if data is None:  # (a deadline is set only with room held in a budget)
                        assert self._budget is not None
                        raise ChannelError(
                            f"a message of {self._session.incoming()} bytes came slower than "
                            f"{self._budget.min_rate:.0f} bytes a second"
                        )
                    if not data:
                        return
                    self._session.receive_data(data)
                    await self._deliver()
                    await self._make_room()
            except ChannelError as e:
                self._error = e
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            finally:
                if self._budget is not None:  # a message it will not finish
                    self._budget.give_back(self._holding)
                    self._holding = 0

    async def _make_room(self) -> None:
        """Before reading on into a large message, room for it in the node's budget."""
        n = self._session.incoming()
        if self._budget is None or self._holding or n <= self._budget.small:
            return
        self._holding = await self._budget.take(n)
        self._due = self._budget.deadline(n)

    def _release(self) -> None:
        """Give back the room of messages never taken (the channel is closing)."""
        if self._budget is None:
            return
        while True:
            try:
                _, held = self._inbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            self._budget.give_back(held)

    async def _deliver(self) -> None:
        for frame in self._session.frames():
            # Bounded in bytes as well as in messages: 256 frames of 16 MiB would be 4 GiB.
            # Frames wait as bytes: the reader decodes each to the type it expects, which
            # costs far less memory than a generic decode of a hostile frame would.
            while self._buffered and self._buffered + len(frame) > self.inbox_bytes:
                self._drained = trio.Event()
                await self._drained.wait()
            self._buffered += len(frame)
            # The message the room was held for is the first to come whole.
            held, self._holding, self._due = self._holding, 0, math.inf
            await self._inbox_send.send((frame, held))


class Outbox:
    """Messages waiting for a channel's socket, bounded in count and in bytes. `put` never
    waits: a service must not stall on one peer's socket; a full outbox means the peer is not
    reading, and `put` says so. `run` is the channel's writer."""

    def __init__(self, channel: SecureChannel) -> None:
        self.channel = channel
        self.max_messages = OUTBOX
        self.max_bytes = OUTBOX_BYTES
        self._frames: deque[bytes] = deque()
        self._bytes = 0
        self._ready = trio.Event()
        self._written = trio.Event()  # set while nothing waits to be written
        self._written.set()

    def put(self, message: Any) -> bool:
        """Queue `message`; False (and nothing queued) when the outbox is full."""
        return self.put_frame(encode(message))

    def put_frame(self, frame: bytes) -> bool:
        """Queue a message already encoded; False (and nothing queued) when full."""
        full = self._frames and (
            len(self._frames) >= self.max_messages or self._bytes + len(frame) > self.max_bytes
        )
        if full:
            return False
        self._frames.append(frame)
        self._bytes += len(frame)
        self._ready.set()
        if self._written.is_set():
            self._written = trio.Event()
        return True

    async def written(self) -> None:
        """Return once everything queued so far is written (or the connection broke)."""
        await self._written.wait()

    async def run(self) -> None:
        """Write whatever is queued, all that is ready in one go, until cancelled."""
        while True:
            await self._ready.wait()
            self._ready = trio.Event()
            frames = list(self._frames)
            self._frames.clear()
            self._bytes = 0
            if frames:
                try:
                    await self.channel.send_encoded(frames)
                except ChannelError:
                    # The connection broke: close it, so the reader ends too and whoever
                    # reads the channel learns it at its next `receive`.
                    self._written.set()
                    await self.channel.aclose()
                    return
            if not self._frames:
                self._written.set()


async def _handshake(stream: trio.abc.Stream, session: SecureSession, timeout: float) -> Peer:
    with trio.move_on_after(timeout) as scope:
        try:
            while session.peer is None:
                out = session.data_to_send()
                if out:
                    await stream.send_all(out)
                data = await stream.receive_some(READ_SIZE)
                if not data:
                    raise ChannelClosed("the peer closed the connection during the handshake")
                try:
                    session.receive_data(data)
                except IdWithoutWork:
                    if out := session.data_to_send():  # why it is refused, for the dialler
                        await stream.send_all(out)
                    raise
            out = session.data_to_send()  # the initiator's last handshake message
            if out:
                await stream.send_all(out)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            raise ChannelClosed(f"the connection broke during the handshake ({e})") from None
    if scope.cancelled_caught:
        raise ChannelError(f"no handshake from the peer within {timeout:g} s")
    assert session.peer is not None
    return session.peer


@asynccontextmanager
async def secure_stream(
    stream: trio.abc.Stream,
    identity: Identity,
    *,
    initiator: bool,
    expected_peer: bytes | None = None,
    timeout: float = HANDSHAKE_TIMEOUT,
    max_frame: int = MAX_FRAME,
) -> AsyncIterator[SecureChannel]:
    """Run the handshake over `stream` and yield the channel; the stream is closed on exit.
    `max_frame`: the largest message this end takes, until `SecureChannel.set_max_frame` (a
    channel whose messages are all small says so, and a peer cannot make it buffer 16 MiB)."""
    async with stream:
        session = SecureSession(
            identity, initiator=initiator, expected_peer=expected_peer, max_frame=max_frame
        )
        peer = await _handshake(stream, session, timeout)
        channel = SecureChannel(stream, session, peer)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(channel._read)
                try:
                    yield channel
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The reader never raises: what is in there came from the caller's block, and it
            # gets it back as it raised it (an `except ChannelError` around us must work).
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            channel._release()


@asynccontextmanager
async def open_channel(
    host: str,
    port: int,
    identity: Identity,
    *,
    expected_peer: bytes,
    timeout: float = HANDSHAKE_TIMEOUT,
    local_address: str | None = None,
    max_frame: int = MAX_FRAME,
) -> AsyncIterator[SecureChannel]:
    """Dial `host:port` (from `local_address`, if given) and yield a channel to exactly the
    node `expected_peer`, which may send messages of up to `max_frame` bytes (see
    `secure_stream`)."""
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(host, port, local_address=local_address)
    except (OSError, trio.TooSlowError) as e:
        raise ChannelClosed(f"cannot connect to {host}:{port} ({e or 'timed out'})") from None
    async with secure_stream(
        stream,
        identity,
        initiator=True,
        expected_peer=expected_peer,
        timeout=timeout,
        max_frame=max_frame,
    ) as channel:
        yield channel


MAX_HANDSHAKES = 128  # connections still in their handshake, in all
MAX_HANDSHAKES_PER_IP = 8  # ... from one address (IPv4, or IPv6 /56)
MAX_CHANNELS_PER_IP = 64  # open channels from one address


class Doorkeeper:
    """Who is let in on a listener: at most so many connections at once that have not yet
    said who they are (a handshake) or what they are for (a gate's opening), in all and per
    address; when full, the oldest is dropped, not the newcomer, so sockets left idle cannot
    lock anyone out. And at most so many open channels per address."""

    def __init__(
        self,
        *,
        waiting: int = MAX_HANDSHAKES,
        waiting_per_ip: int = MAX_HANDSHAKES_PER_IP,
        timeout: float = math.inf,
        on_shed: Callable[[], None] = lambda: None,
    ) -> None:
        self.max_waiting, self.max_waiting_per_ip = waiting, waiting_per_ip
        self.timeout = timeout  # how long one may wait, from its arrival
        self.on_shed = on_shed  # called for each connection dropped to make room
        self._waiting: OrderedDict[int, tuple[str, trio.CancelScope]] = OrderedDict()
        self.waiting_per_ip: Counter[str] = Counter()
        self._open: Counter[str] = Counter()  # channels open, per address
        self._ids = itertools.count()
        self.shed = 0

    @property
    def handshakes(self) -> int:
        """Connections waiting now (in their handshake, or to say what they are for)."""
        return len(self._waiting)

    def handshake(self, net: str) -> tuple[int, trio.CancelScope]:
        """A connection from `net` begins to wait (one older may be dropped to make room):
        its key, and the scope that ends it if it waits too long or is dropped."""
        if self.waiting_per_ip[net] >= self.max_waiting_per_ip:
            self._shed(net)
        elif len(self._waiting) >= self.max_waiting:
            self._shed(None)
        key = next(self._ids)
        scope = trio.CancelScope(deadline=trio.current_time() + self.timeout)
        self._waiting[key] = (net, scope)
        self.waiting_per_ip[net] += 1
        return key, scope

    def handshake_done(self, key: int) -> None:
        """It no longer waits (it said, it went, or it was dropped: then this does nothing)."""
        entry = self._waiting.pop(key, None)
        if entry is not None:
            release(self.waiting_per_ip, entry[0])

    def admit(self, net: str) -> bool:
        """A channel from `net` is up: whether it may stay (its address has room)."""
        if self._open[net] >= MAX_CHANNELS_PER_IP:
            self.shed += 1
            return False
        self._open[net] += 1
        return True

    def leave(self, net: str) -> None:
        release(self._open, net)

    def _shed(self, net: str | None) -> None:
        key = next((k for k, (n, _) in self._waiting.items() if net in (None, n)), None)
        if key is not None:
            shed_net, scope = self._waiting.pop(key)
            release(self.waiting_per_ip, shed_net)
            scope.cancel()
            self.shed += 1
            self.on_shed()


def release(counts: Counter[str], key: str) -> None:
    """One less held by `key`; a key that holds none leaves no entry behind."""
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]


async def serve_channels(
    identity: Identity,
    handler: Callable[[SecureChannel], Awaitable[None]],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    listeners: list[trio.SocketListener] | None = None,
    timeout: float = HANDSHAKE_TIMEOUT,
    doorkeeper: Doorkeeper | None = None,
    max_frame: int = MAX_FRAME,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept TCP connections (on `listeners`, or on new ones at `host:port`) and run
    `handler` on each one's channel, within the `doorkeeper`'s limits; each channel takes
    messages of up to `max_frame` bytes until its handler says otherwise. A connection that
    fails its handshake, or whose handler ends with a channel error, is closed and forgotten."""
    door = doorkeeper or Doorkeeper()

    async def one(stream: trio.SocketStream) -> None:
        try:
            net = subnet(stream.socket.getpeername()[0])
        except OSError:
            return  # it reset the connection before we looked
        key, scope = door.handshake(net)
        admitted = False
        try:
            # The door may cancel `scope` only while the handshake lasts (it forgets the key
            # once it is done).
            with scope:
                async with secure_stream(
                    stream, identity, initiator=False, timeout=timeout, max_frame=max_frame
                ) as ch:
                    door.handshake_done(key)
                    admitted = door.admit(net)
                    if admitted:
                        await handler(ch)
        except ChannelError:
            pass  # a stranger, a broken peer or a closed connection: nothing to keep
        except Exception:  # a bug in handling one peer must not take down the service
            log.exception("dropped a connection after an error in its handler")
        finally:
            door.handshake_done(key)
            if admitted:
                door.leave(net)

    if listeners is None:
        listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, one, listeners)
        task_status.started((bound[0], bound[1]))
        await trio.sleep(math.inf)
