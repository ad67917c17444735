"""A job's link to one worker, as one table: the states a link can be in, and every move
between them. Everything that changes a link's state goes through `Link.to`.

Promises: a move the table does not list raises `IllegalTransition` (a bug in the caller,
never the peer's doing); a link that is down stays down until a fresh ad or a redial.
"""

from __future__ import annotations

from enum import StrEnum

from p2psched.scheduler.lifecycle import IllegalTransition


class Link(StrEnum):
    NONE = "none"  # never dialled (or a fresh ad since it went down)
    CONNECTING = "connecting"  # a dial is under way
    UP = "up"  # the channel is open: it is asked, committed to, heard
    DOWN = "down"  # it broke, could not be opened, went silent, or the worker was banned

    def to(self, new: Link) -> Link:
        if new not in _MOVES[self]:
            raise IllegalTransition(f"a link cannot go from {self.value} to {new.value}")
        return new


L = Link
# The shell's channel events race the run's own view of a link, so a link may come up from
# any state: a new channel replaced one that seemed alive (UP -> UP), or the end of a link
# the run had already closed was reported after the run dialled again, and the new channel
# is up (DOWN or NONE -> UP). DOWN -> DOWN: a link closed for silence or a ban also ends on
# the shell's side, which then says so (`disconnected`) once more. What the table holds: a
# dial starts only from a link that is not up (or being dialled), and only a link that is
# down can be forgotten (NONE) on a fresh ad.
_MOVES: dict[Link, frozenset[Link]] = {
    L.NONE: frozenset({L.CONNECTING, L.UP, L.DOWN}),
    L.CONNECTING: frozenset({L.UP, L.DOWN}),
    L.UP: frozenset({L.UP, L.DOWN}),
    L.DOWN: frozenset({L.NONE, L.CONNECTING, L.UP, L.DOWN}),
}

# The states as plain names, for the run's hot paths: `Link.UP` is a lookup on the enum's
# class each time, several times slower than a module global.
NONE, CONNECTING, UP, DOWN = Link.NONE, Link.CONNECTING, Link.UP, Link.DOWN
