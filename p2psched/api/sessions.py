"""The server's side of the control API's signed TCP sessions (sans-I/O: every call takes `now`).

Owns: the sessions opened (a bounded store, each dropped after `idle_s` unused, the least
recently used first when full), and the check of a signed request's `authorization` header.
Promises: a request is admitted only with a session this store opened and still holds, a
counter above every one the session admitted (so each request counts once: no replay), and a
MAC under the session's key over its counter, method, target and body, compared in constant
time; a refused request changes nothing, not even the session's counter.
"""

from __future__ import annotations

import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from hmac import compare_digest

from p2psched.api.endpoint import (
    MAC_SCHEME,
    NONCE_BYTES,
    request_mac,
    server_proof,
    session_key,
)

_HEADER = re.compile(
    rf"{MAC_SCHEME} session=(?P<session>[0-9a-f]{{{2 * NONCE_BYTES}}}), "
    r"counter=(?P<counter>[0-9]{1,19}), mac=(?P<mac>[0-9a-f]{64})"
)


@dataclass(frozen=True)
class SessionLimits:
    """How many sessions the server holds at once, and how long one lives unused (seconds).
    A client opens one per connection and drops a connection idle for 2 s, so a minute is
    plenty; a store filled by a stranger costs a real client one more round trip, not access."""

    most: int = 1024
    idle_s: float = 60.0


@dataclass(frozen=True)
class Opened:
    """A session's id (the server's nonce, hex) and the proof that the server holds the token."""

    session: str
    proof: str


@dataclass(frozen=True)
class Claim:
    """A signed request's header, checked for shape and for a live session and a fresh counter:
    what is left is its MAC, over the body, which is read only now."""

    session: str
    counter: int
    mac: str


@dataclass
class _Session:
    key: bytes
    counter: int  # the highest counter admitted
    expires: float


class SignedSessions:
    """The sessions of one API server, whose token is `token`."""

    def __init__(self, token: str, limits: SessionLimits | None = None) -> None:
        self._token = token
        self.limits = limits or SessionLimits()
        self._open: OrderedDict[str, _Session] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        return len(self._open)

    def open(self, client_nonce: bytes, now: float) -> Opened:
        """A new session for a client that sent `client_nonce`."""
        self._expire(now)
        while len(self._open) >= self.limits.most:
            self._open.popitem(last=False)
        server_nonce = secrets.token_bytes(NONCE_BYTES)
        key = session_key(self._token, client_nonce, server_nonce)
        session = server_nonce.hex()
        self._open[session] = _Session(key, 0, now + self.limits.idle_s)
        return Opened(session, server_proof(key))

    def claim(self, authorization: str, now: float) -> Claim | str:
        """The claim of a request's `authorization` header, or why it is refused."""
        found = _HEADER.fullmatch(authorization)
        if found is None:
            return f"not a signed request ({MAC_SCHEME} session=..., counter=..., mac=...)"
        self._expire(now)
        held = self._open.get(found["session"])
        if held is None:
            return "unknown or expired session: open a new one"
        counter = int(found["counter"])
        if counter <= held.counter:
            return f"request counter {counter} was already used in this session (a replay)"
        return Claim(found["session"], counter, found["mac"])

    def admit(
        self, claim: Claim, method: str, target: bytes, body: bytes, now: float
    ) -> str | None:
        """None if `claim`'s MAC signs this request, which then counts as used; else why not."""
        held = self._open.get(claim.session)
        if held is None or claim.counter <= held.counter:  # (another request came in between)
            return "unknown session, or a replay"
        expected = request_mac(held.key, claim.counter, method, target, body)
        if not compare_digest(expected, claim.mac):
            return "the request's MAC does not match its method, path or body"
        held.counter = claim.counter
        held.expires = now + self.limits.idle_s
        self._open.move_to_end(claim.session)
        return None

    def _expire(self, now: float) -> None:
        """Drop sessions unused for `idle_s`: the least recently used come first."""
        while self._open:
            session, held = next(iter(self._open.items()))
            if held.expires > now:
                return
            del self._open[session]
