"""A job's money: what it may spend, what it has paid, and what it holds for tasks placed
but not yet paid for. `held` is money only.

Promises: `spent + held` never exceeds `total` through `hold` (callers ask `affordable`
first); sums that drift in floating point by less than `MONEY_EPSILON` count as equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MONEY_EPSILON = 1e-9  # sums of prices drift in floating point; amounts closer are equal


@dataclass(slots=True)
class Budget:
    total: float = math.inf
    spent: float = 0.0
    held: float = 0.0  # for tasks placed on workers, until paid or given back
    # Of `held`, for results awaiting their copies' verdict (`Verification`): it comes back
    # only once those copies ran, so no copy waits for it.
    awaiting: float = 0.0

    def affordable(self, price: float) -> bool:
        """Whether one more task at `price` stays within the budget, with what is held."""
        return self.spent + self.held + price <= self.total + MONEY_EPSILON

    def may_come(self, price: float) -> bool:
        """Whether a task at `price` may still be paid for some day: money held comes back
        if those tasks fail, so while any is held, wait for it (not for what results awaiting
        a verdict hold: that is as good as spent until the copies that wait for it ran)."""
        if self.held - self.awaiting > MONEY_EPSILON:
            return True
        return self.spent + self.awaiting + price <= self.total + MONEY_EPSILON

    def hold(self, price: float, *, awaiting: bool = False) -> None:
        self.held += price
        self.awaiting += price if awaiting else 0.0

    def release(self, price: float, *, awaiting: bool = False) -> None:
        self.held -= price
        if abs(self.held) < MONEY_EPSILON:
            self.held = 0.0
        if awaiting:
            self.awaiting -= price
            if abs(self.awaiting) < MONEY_EPSILON:
                self.awaiting = 0.0

    def pay(self, price: float) -> None:
        self.spent += price
