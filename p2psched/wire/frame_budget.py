"""The bytes of large messages a node's channels may be receiving at once, node-wide.

Owns: `FrameBudget`, which a channel draws on before it reads the rest of a message over
`small` bytes, and gives back once its reader took that message.
Promises: the channels sharing a budget never hold more than `total` bytes of large messages
between them (per-channel limits alone let each of many strangers' channels hold one message at
its limit); a channel waits its turn in order, reading nothing meanwhile (so TCP slows its peer);
and a peer granted room must send the message at `min_rate` bytes a second or more, after
`grace` seconds, or its channel ends: room cannot be held by sending slowly.
"""

from __future__ import annotations

from collections import deque

import trio

SMALL = 64 << 10  # a message this small is read without drawing on the budget
MIN_RATE = 256 << 10  # bytes a second a peer granted room must keep up
GRACE_S = 10.0


class FrameBudget:
    def __init__(
        self,
        total: int,
        *,
        small: int = SMALL,
        min_rate: float = MIN_RATE,
        grace: float = GRACE_S,
    ) -> None:
        if total < small:
            raise ValueError(f"a frame budget of {total} bytes is below its small size {small}")
        self.total = total
        self.small = small
        self.min_rate = min_rate
        self.grace = grace
        self.held = 0
        self.waits = 0  # times a channel waited for room (a counter among the node's metrics)
        self._queue: deque[tuple[int, trio.Event]] = deque()

    async def take(self, n: int) -> int:
        """Room for a message of `n` bytes (at most `total`: one larger is refused by its
        channel's limit), in turn; the amount to `give_back`."""
        n = min(n, self.total)
        if self._queue or self.held + n > self.total:
            self.waits += 1
            turn = (n, trio.Event())
            self._queue.append(turn)
            try:
                await turn[1].wait()
            except BaseException:
                if turn[1].is_set():
                    self.give_back(n)  # granted as it was cancelled: pass it on
                else:
                    self._queue.remove(turn)
                    self._grant()  # it may have held up smaller ones behind it
                raise
            return n
        self.held += n
        return n

    def give_back(self, n: int) -> None:
        self.held -= n
        self._grant()

    def deadline(self, n: int) -> float:
        """When a message of `n` bytes granted room now must have come in whole."""
        return trio.current_time() + self.grace + n / self.min_rate

    def _grant(self) -> None:
        while self._queue and self.held + self._queue[0][0] <= self.total:
            n, granted = self._queue.popleft()
            self.held += n
            granted.set()
