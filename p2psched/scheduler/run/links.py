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
# DOWN -> DOWN: a link closed for silence or a ban also ends on the shell's side, which then
# says so (`disconnected`) once more. UP -> UP: a new channel replaced one that seemed alive
# (the old one ended without a word reaching us).
_MOVES: dict[Link, frozenset[Link]] = {
    L.NONE: frozenset({L.CONNECTING, L.DOWN}),
    L.CONNECTING: frozenset({L.UP, L.DOWN}),
    L.UP: frozenset({L.UP, L.DOWN}),
    L.DOWN: frozenset({L.NONE, L.CONNECTING, L.DOWN}),
}
