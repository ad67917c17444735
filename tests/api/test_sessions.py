"""The server's signed sessions, on a clock of plain numbers: a request counts once, only in a
live session, only with a MAC over its own counter, method, target and body, compared in
constant time; a refused one moves nothing; the store stays within its bound."""

from __future__ import annotations

import hmac
import secrets

import pytest

from p2psched.api import sessions as sessions_module
from p2psched.api.endpoint import request_mac, server_proof, session_key, signed_authorization
from p2psched.api.sessions import Claim, SessionLimits, SignedSessions

TOKEN = "t" * 43


class Client:
    """A client's side of one session, as `ControlClient` signs."""

    def __init__(self, sessions: SignedSessions, now: float = 0.0, token: str = TOKEN) -> None:
        nonce = secrets.token_bytes(32)
        opened = sessions.open(nonce, now)
        self.session = opened.session
        self.key = session_key(token, nonce, bytes.fromhex(opened.session))
        assert hmac.compare_digest(opened.proof, server_proof(self.key)) == (token == TOKEN)
        self.counter = 0

    def sign(self, method: str, target: bytes, body: bytes = b"") -> str:
        self.counter += 1
        mac = request_mac(self.key, self.counter, method, target, body)
        return signed_authorization(self.session, self.counter, mac)


def ask(
    sessions: SignedSessions,
    header: str,
    method: str = "GET",
    target: bytes = b"/v1/node",
    body: bytes = b"",
    now: float = 0.0,
) -> str | None:
    """What the server's middleware does with one request: None if admitted, else why not."""
    claim = sessions.claim(header, now)
    if not isinstance(claim, Claim):
        return claim
    return sessions.admit(claim, method, target, body, now)


def test_signed_requests_are_admitted_each_once() -> None:
    sessions = SignedSessions(TOKEN)
    client = Client(sessions)
    first = client.sign("GET", b"/v1/node")
    assert ask(sessions, first) is None
    assert (
        ask(sessions, client.sign("GET", b"/v1/jobs?state=queued"), target=b"/v1/jobs?state=queued")
        is None
    )
    # The first again, as a relay that kept it would send it: refused before its body is read.
    refused = sessions.claim(first, 0.0)
    assert isinstance(refused, str) and "replay" in refused


def test_a_replay_racing_its_original_counts_once() -> None:
    # Both claims pass before either body is read; the admission decides.
    sessions = SignedSessions(TOKEN)
    header = Client(sessions).sign("POST", b"/v1/jobs", b"{}")
    claims = [sessions.claim(header, 0.0), sessions.claim(header, 0.0)]
    assert all(isinstance(c, Claim) for c in claims)
    verdicts = [
        sessions.admit(c, "POST", b"/v1/jobs", b"{}", 0.0) for c in claims if isinstance(c, Claim)
    ]
    assert verdicts[0] is None and verdicts[1] is not None


@pytest.mark.parametrize(
    ("method", "target", "body"),
    [
        ("DELETE", b"/v1/jobs", b"{}"),  # another method
        ("POST", b"/v1/worker/drain", b"{}"),  # another path
        ("POST", b"/v1/jobs?x=1", b"{}"),  # another query
        ("POST", b"/v1/jobs", b'{"spec": 1}'),  # another body
    ],
)
def test_the_mac_covers_method_target_and_body(method: str, target: bytes, body: bytes) -> None:
    sessions = SignedSessions(TOKEN)
    header = Client(sessions).sign("POST", b"/v1/jobs", b"{}")
    refused = ask(sessions, header, method, target, body)
    assert refused is not None and "MAC" in refused
    assert ask(sessions, header, "POST", b"/v1/jobs", b"{}") is None  # a refusal moved nothing


def test_a_wrong_mac_does_not_use_up_a_counter() -> None:
    sessions = SignedSessions(TOKEN)
    client = Client(sessions)
    forged = signed_authorization(client.session, 1000, "00" * 32)
    assert ask(sessions, forged) is not None
    assert ask(sessions, client.sign("GET", b"/v1/node")) is None  # counter 1 still good


def test_a_client_without_the_token_gets_a_session_it_cannot_sign_in() -> None:
    sessions = SignedSessions(TOKEN)
    stranger = Client(sessions, token="guessed")
    refused = ask(sessions, stranger.sign("GET", b"/v1/node"))
    assert refused is not None and "MAC" in refused


def test_macs_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[str, str]] = []

    def compare_digest(a: str, b: str) -> bool:
        compared.append((a, b))
        return hmac.compare_digest(a, b)

    monkeypatch.setattr(sessions_module, "compare_digest", compare_digest)
    sessions = SignedSessions(TOKEN)
    client = Client(sessions)
    header = client.sign("GET", b"/v1/node")
    assert ask(sessions, header) is None
    assert compared and compared[-1][1] == header.rsplit("mac=", 1)[1]


def test_a_session_unused_for_its_idle_time_is_gone() -> None:
    sessions = SignedSessions(TOKEN, SessionLimits(idle_s=60.0))
    client = Client(sessions, now=0.0)
    assert ask(sessions, client.sign("GET", b"/v1/node"), now=59.0) is None
    assert ask(sessions, client.sign("GET", b"/v1/node"), now=118.0) is None  # use renews it
    refused = ask(sessions, client.sign("GET", b"/v1/node"), now=178.5)
    assert refused is not None and "expired" in refused
    assert len(sessions) == 0


def test_the_store_holds_at_most_its_bound_dropping_the_least_recently_used() -> None:
    sessions = SignedSessions(TOKEN, SessionLimits(most=4))
    clients = [Client(sessions) for _ in range(4)]
    assert ask(sessions, clients[0].sign("GET", b"/v1/node")) is None  # the first, used lately
    newcomers = [Client(sessions) for _ in range(3)]
    assert len(sessions) == 4
    for kept in (clients[0], *newcomers):
        assert ask(sessions, kept.sign("GET", b"/v1/node")) is None
    for dropped in clients[1:]:
        refused = ask(sessions, dropped.sign("GET", b"/v1/node"))
        assert refused is not None and "unknown" in refused


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer " + TOKEN,
        "p2psched-mac session=zz, counter=1, mac=00",
        "p2psched-mac session=" + "ab" * 32 + ", counter=-1, mac=" + "00" * 32,
    ],
)
def test_a_header_not_of_a_signed_request_is_refused_by_name(header: str) -> None:
    sessions = SignedSessions(TOKEN)
    Client(sessions)
    refused = ask(sessions, header)
    assert refused is not None and "not a signed request" in refused


def test_strangers_filling_the_store_drop_no_session_a_request_was_signed_in() -> None:
    # A stranger can open sessions but sign in none: the ones it opens go before a client's.
    sessions = SignedSessions(TOKEN, SessionLimits(most=4))
    client = Client(sessions)
    assert ask(sessions, client.sign("GET", b"/v1/node")) is None
    for _ in range(50):
        Client(sessions, token="not the token")
    assert len(sessions) == 4
    assert ask(sessions, client.sign("GET", b"/v1/node")) is None
