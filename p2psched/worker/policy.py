"""Who may use this worker and on what terms, as data its task manager applies: the operator's
allow and deny lists of schedulers, the limits each scheduler has here (tasks held at once,
money charged per rolling hour), each driver's caps on a task (its timeout, its input's size),
and the price of each priority band. Sans-I/O: the shell reads the operator's files and hands
over what they say.

Promises: every refusal names the scheduler or the cap, and why, in the operator's terms; deny
wins over allow; a line of a schedulers file that is not understood is named and left out,
never taken for something else.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from p2psched.identity import NODE_ID_BYTES
from p2psched.wire.deal import MAX_INPUT_BYTES
from p2psched.wire.messages import Task

HOUR_S = 3600.0
DEFAULT_MAX_TIMEOUT_S = 3600.0  # a task's, unless its driver's table says otherwise
# Priorities (0..9, 9 most urgent, as a job names them) fall in three bands, each priced
# by its own multiplier: the job's default (5) is normal.
BANDS = (("low", range(0, 4)), ("normal", range(4, 7)), ("high", range(7, 10)))
_EPSILON = 1e-9  # money is summed in floats: 0.1 * 10 must still fit a limit of 1.0


def shown(peer: bytes) -> str:
    """A scheduler's node id as a refusal names it: enough to find it in a list."""
    return peer.hex()[:16] + "…"


def node_id_of_hex(text: str) -> bytes | None:
    """A node id written as hex (64 digits), or None if `text` is not one."""
    if len(text) != 2 * NODE_ID_BYTES:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class DriverCaps:
    """The most a task may ask of one driver here ([drivers.NAME] max_timeout_s and
    max_input_bytes): over either, it is refused, and never started."""

    max_timeout_s: float = DEFAULT_MAX_TIMEOUT_S
    max_input_bytes: int = MAX_INPUT_BYTES

    def refusal(self, driver: str, timeout: float | None, input_bytes: int | None) -> str | None:
        """Why a task (or tasks asked for) with this timeout and input size is refused here;
        None if it is not (an unknown value, from a scheduler that does not say, passes)."""
        if timeout is not None and timeout > self.max_timeout_s:
            return (
                f"timeout {timeout:g} s is over this worker's max_timeout_s "
                f"{self.max_timeout_s:g} for driver {driver}"
            )
        if input_bytes is not None and input_bytes > self.max_input_bytes:
            return (
                f"input of {input_bytes} bytes is over this worker's max_input_bytes "
                f"{self.max_input_bytes} for driver {driver}"
            )
        return None


@dataclass(frozen=True, slots=True)
class PriorityPrices:
    """[worker] priority_multipliers: the price asked of a task, per band of its job's
    priority, as a multiple of [worker] min_price."""

    low: float = 1.0
    normal: float = 1.0
    high: float = 1.0

    def multiplier(self, priority: int | None) -> float:
        """Of `priority`'s band; None: the lowest (a scheduler may ask at any priority)."""
        if priority is None:
            return self.lowest
        band = next((name for name, levels in BANDS if priority in levels), "normal")
        value: float = getattr(self, band)
        return value

    @property
    def lowest(self) -> float:
        """Of any band: a scheduler may ask at any priority, so this is the least it pays."""
        return min(self.low, self.normal, self.high)


@dataclass(frozen=True, slots=True)
class Listing:
    """Schedulers a file names: to serve, and never to serve."""

    allow: frozenset[bytes] = frozenset()
    deny: frozenset[bytes] = frozenset()


def read_listing(text: str) -> tuple[Listing, list[str]]:
    """A schedulers file's lines: `allow <node id>` or `deny <node id>` (64 hex digits), blank
    lines and `#` comments. Returns what it says and, for each line not understood, "line N:
    why" (that line is left out)."""
    allow: set[bytes] = set()
    deny: set[bytes] = set()
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 2 or words[0] not in ("allow", "deny"):
            problems.append(f"line {number}: not 'allow <node id>' or 'deny <node id>'")
            continue
        node_id = node_id_of_hex(words[1])
        if node_id is None:
            problems.append(f"line {number}: {words[1][:80]!r} is not a node id (64 hex digits)")
            continue
        (allow if words[0] == "allow" else deny).add(node_id)
    return Listing(frozenset(allow), frozenset(deny)), problems


@dataclass(frozen=True, slots=True)
class SchedulerPolicy:
    """[schedulers]: who may use this worker (with `only_allowed`, just those in `allow`;
    never those in `deny`), and what each one may hold here at once (`slots`) and be charged
    per rolling hour (`spend_per_hour`)."""

    only_allowed: bool = False
    allow: frozenset[bytes] = frozenset()
    deny: frozenset[bytes] = frozenset()
    slots: int | None = None
    spend_per_hour: float = math.inf

    def with_listing(self, listing: Listing) -> SchedulerPolicy:
        """This policy with a file's lists added to its own."""
        return replace(self, allow=self.allow | listing.allow, deny=self.deny | listing.deny)

    def refusal(self, peer: bytes) -> str | None:
        if peer in self.deny:
            return f"this worker does not serve scheduler {shown(peer)}: denied by its operator"
        if self.only_allowed and peer not in self.allow:
            return (
                f"this worker does not serve scheduler {shown(peer)}: not among those its "
                "operator allows"
            )
        return None

    @property
    def limited(self) -> bool:
        """Whether it limits what a scheduler holds or is charged here."""
        return self.slots is not None or self.spend_per_hour < math.inf

    def room(self, holding: int, committed: float, spent: float, price: float) -> float:
        """How many more tasks at `price` a scheduler may hold here, holding `holding` tasks
        (worth `committed`) and charged `spent` this past hour."""
        room = math.inf if self.slots is None else self.slots - holding
        if price > 0 and self.spend_per_hour < math.inf:
            left = self.spend_per_hour - spent - committed
            room = min(room, math.floor(left / price + _EPSILON))
        return max(0, room)

    def over(
        self, peer: bytes, n: int, holding: int, committed: float, spent: float, price: float
    ) -> str | None:
        """Why `n` more tasks at `price` would take a scheduler over its limits here (see
        `room`); None if they would not."""
        if n <= self.room(holding, committed, spent, price):
            return None
        who = f"scheduler {shown(peer)}"
        if self.slots is not None and holding + n > self.slots:
            more = f", and asks for {n} more" if holding < self.slots else ""
            return f"{who} holds {holding} of its {self.slots} slots on this worker{more}"
        held = f" (and {committed:g} committed)" if committed else ""
        return f"{who} spent {spent:g}{held} of its {self.spend_per_hour:g} per hour on this worker"


@dataclass(slots=True)
class _Charges:
    items: deque[tuple[float, float]] = field(default_factory=deque)  # (when, amount)
    total: float = 0.0


@dataclass(slots=True)
class Spending:
    """What each scheduler was charged here (its receipts' prices) over the last hour: a
    running sum, so a busy scheduler's many charges cost nothing to ask about."""

    _charges: dict[bytes, _Charges] = field(default_factory=dict)

    def charge(self, peer: bytes, amount: float, now: float) -> None:
        if amount > 0:
            charges = self._charges.setdefault(peer, _Charges())
            charges.items.append((now, amount))
            charges.total += amount

    def spent(self, peer: bytes, now: float) -> float:
        charges = self._charges.get(peer)
        if charges is None:
            return 0.0
        while charges.items and charges.items[0][0] <= now - HOUR_S:
            charges.total -= charges.items.popleft()[1]
        if not charges.items:
            charges.total = 0.0  # (what the subtractions leave of floats' rounding)
        return charges.total

    def forget_old(self, now: float) -> None:
        """Drop charges older than an hour (and the schedulers left with none)."""
        for peer in list(self._charges):
            self.spent(peer, now)
            if not self._charges[peer].items:
                del self._charges[peer]


# What a scheduler holds here, as its limits measure it: tasks (and slots held for its answer)
# and what those tasks are worth.
Standing = Callable[[], tuple[int, float]]


@dataclass(slots=True)
class Terms:
    """The terms a worker serves on, as its task manager applies them: each driver's caps,
    the price of each band, the operator's `policy` (which the shell replaces when the
    operator's file changes), and what each scheduler was charged this past hour."""

    caps: Mapping[str, DriverCaps] = field(default_factory=dict)  # by driver; else defaults
    prices: PriorityPrices = PriorityPrices()
    policy: SchedulerPolicy = SchedulerPolicy()
    spending: Spending = field(default_factory=Spending)

    def caps_of(self, driver: str) -> DriverCaps:
        return self.caps.get(driver, _DEFAULT_CAPS)

    def over_caps(self, tasks: Iterable[Task]) -> str | None:
        """Why one of these tasks is over its driver's caps here, if one is."""
        for t in tasks:
            reason = self.caps_of(t.driver).refusal(t.driver, t.timeout, len(t.input))
            if reason is not None:
                return f"task {t.id}: {reason}"
        return None

    def room(self, peer: bytes, standing: Standing, price: float, now: float) -> float:
        """Tasks at `price` that `peer`, holding what `standing` says, may still take here."""
        if not self.policy.limited:
            return math.inf
        return self.policy.room(*standing(), self.spending.spent(peer, now), price)

    def over(self, peer: bytes, n: int, standing: Standing, price: float, now: float) -> str | None:
        """Why `n` more tasks at `price` would take `peer` over its limits, if they would."""
        if not self.policy.limited:
            return None
        return self.policy.over(peer, n, *standing(), self.spending.spent(peer, now), price)


_DEFAULT_CAPS = DriverCaps()
