"""The server's side of the control API's signed TCP sessions (sans-I/O: every call takes `now`).

Owns: the sessions opened (a bounded store, each dropped after `idle_s` unused; when full, the
least recently opened of those no request was admitted in goes first, which is all a stranger
can open, so strangers crowd out no session a client signs in), and the check of a signed
request's `authorization` header.
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
# The refusal the node proves it made (`endpoint.session_gone_proof`): the request reached no
# handler, so the client may sign it again in a new session.
UNKNOWN_SESSION = "unknown or expired session: open a new one"


@dataclass(frozen=True)
class SessionLimits:
    """How many sessions the server holds at once, and how long one lives unused (seconds).
    A client opens one per connection and drops a connection idle for 2 s, so a minute is
    plenty; strangers filling the store drop only sessions no request was signed in yet (a
    client's just opened one costs it one more round trip), never one in use."""

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
        # Least recently used first: those no request was admitted in yet, and the others.
        self._fresh: OrderedDict[str, _Session] = OrderedDict()
        self._used: OrderedDict[str, _Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._fresh) + len(self._used)

    def open(self, client_nonce: bytes, now: float) -> Opened:
        """A new session for a client that sent `client_nonce`."""
        self._expire(now)
        while len(self) >= self.limits.most:
            (self._fresh or self._used).popitem(last=False)
        server_nonce = secrets.token_bytes(NONCE_BYTES)
        key = session_key(self._token, client_nonce, server_nonce)
        session = server_nonce.hex()
        self._fresh[session] = _Session(key, 0, now + self.limits.idle_s)
        return Opened(session, server_proof(key))

    def claim(self, authorization: str, now: float) -> Claim | str:
        """The claim of a request's `authorization` header, or why it is refused."""
        found = _HEADER.fullmatch(authorization)
        if found is None:
            return f"not a signed request ({MAC_SCHEME} session=..., counter=..., mac=...)"
        self._expire(now)
        held = self._held(found["session"])
        if held is None:
            return UNKNOWN_SESSION
        counter = int(found["counter"])
        if counter <= held.counter:
            return _replay(counter)
        return Claim(found["session"], counter, found["mac"])

    def admit(
        self, claim: Claim, method: str, target: bytes, body: bytes, now: float
    ) -> str | None:
        """None if `claim`'s MAC signs this request, which then counts as used; else why not."""
        held = self._held(claim.session)  # (another request may have come in between)
        if held is None:
            return UNKNOWN_SESSION
        if claim.counter <= held.counter:
            return _replay(claim.counter)
        expected = request_mac(held.key, claim.counter, method, target, body)
        if not compare_digest(expected, claim.mac):
            return "the request's MAC does not match its method, path or body"
        held.counter = claim.counter
        held.expires = now + self.limits.idle_s
        self._fresh.pop(claim.session, None)
        self._used.pop(claim.session, None)
        self._used[claim.session] = held  # (the most recently used)
        return None

    def _held(self, session: str) -> _Session | None:
        return self._fresh.get(session) or self._used.get(session)

    def _expire(self, now: float) -> None:
        """Drop sessions unused for `idle_s`: in each store the least recently used come first."""
        for store in (self._fresh, self._used):
            while store:
                session, held = next(iter(store.items()))
                if held.expires > now:
                    break
                del store[session]


def _replay(counter: int) -> str:
    return f"request counter {counter} was already used in this session (a replay)"
