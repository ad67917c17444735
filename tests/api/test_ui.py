"""The dashboard at /ui in a real headless browser (Debian's Chromium, driven by Playwright)
against a devnet running a job: the workers, the job's progress advancing to completed, a
failure with its reason (as text, not HTML), the stale mark when the API stops answering, a
cancelled job said to be cancelled, and the how-to without a token. Screenshots go to
tests/artifacts/ for a person to look at."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from p2psched import devnet
from tests.harness.browser import WAIT_MS
from tests.harness.devnet import running_devnet

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

ARTIFACTS = Path(__file__).parents[1] / "artifacts"
NAPS = 16  # tasks of 2 s on 5 slots: about 8 s, so the page sees several counts on its way
# Peer-supplied text that would run script if the page used it as HTML.
HOSTILE = '<img src=x onerror="document.body.dataset.injected=1">'


@pytest.fixture(scope="module")
def ui_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devnet.Devnet]:
    """A devnet of 3 workers that also enable the command driver, allowing no program: a
    command task fails on the worker with a reason, which the page must show."""
    folder = tmp_path_factory.mktemp("ui") / "net"
    with running_devnet(folder, 3, drivers=["echo", "sleep", "command"]) as started:
        yield started


def api_of(net: devnet.Devnet) -> tuple[str, str]:
    gate = net.folder / "gate"
    return json.loads((gate / "api.json").read_text())["url"], (
        gate / "api.token"
    ).read_text().strip()


def submit(url: str, token: str, spec: dict[str, Any]) -> str:
    r = httpx.post(
        f"{url}/v1/jobs", json={"spec": spec}, headers={"authorization": f"Bearer {token}"}
    )
    assert r.status_code == 201, r.text
    job: str = r.json()["job"]
    return job


def open_page(browser: Browser, address: str) -> tuple[Page, list[str]]:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme="dark")
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    errors: list[str] = []  # the page's own: uncaught, or logged as errors
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "console",
        lambda m: (
            m.type == "error"
            and not m.text.startswith("Failed to load resource")  # the 404s and 401s it expects
            and errors.append(m.text)
        ),
    )
    page.goto(address)
    return page, errors


def completed_beyond(page: Page, job: str, at_least: int) -> int:
    """Waits until the job's row shows more than `at_least` completed tasks; returns the count."""
    handle = page.wait_for_function(
        """([job, floor]) => {
            const cell = document.querySelector(`tr[data-job="${job}"] td.completed`);
            const n = cell ? Number(cell.textContent.replace(/,/g, "")) : NaN;
            return n > floor ? n : false;
        }""",
        arg=[job, at_least],
        timeout=WAIT_MS,
    )
    return int(handle.json_value())


def test_the_dashboard_shows_workers_progress_and_failures(
    browser: Browser, ui_net: devnet.Devnet
) -> None:
    from playwright.sync_api import expect

    url, token = api_of(ui_net)
    bad = submit(
        url,
        token,
        {
            "name": "bad",
            "driver": "command",
            "retries": 0,
            "tasks": [{"input": {"program": HOSTILE}}],
        },
    )
    naps = submit(
        url,
        token,
        {
            "name": "naps",
            "driver": "sleep",
            "timeout": "30s",
            "retries": 0,
            "template": {"input": {"seconds": 2}},
            "matrix": {"i": list(range(NAPS))},
        },
    )
    page, errors = open_page(browser, f"{url}/ui#token={token}")
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        expect(page.locator("#board")).to_be_visible()
        assert "token" not in page.url  # taken off the address bar once read

        workers = page.locator("#workers-rows")
        for i in range(3):
            node_id = json.loads((ui_net.folder / f"worker-{i}" / "api.json").read_text())
            expect(workers).to_contain_text(node_id["node_id"][:12])
        expect(page.locator("#node")).to_contain_text("gate")

        row = page.locator(f'tr[data-job="{naps}"]')
        expect(row).to_be_visible()
        first = completed_beyond(page, naps, 0)
        assert first < NAPS, "the job finished before the page saw it under way"
        expect(row.locator("td.state")).to_have_text("running")
        page.screenshot(path=ARTIFACTS / "ui.png", full_page=True)
        second = completed_beyond(page, naps, first)
        # the node's record of a worker it used: its verified / disputed results, its capacity
        expect(page.locator("#workers thead")).to_contain_text("verified / disputed")
        expect(workers).to_contain_text("0 / 0")
        assert first < second  # the progress advances on its own, live

        expect(row.locator("td.state")).to_have_text("completed", timeout=60_000)
        expect(row.locator("td.completed")).to_have_text(str(NAPS))
        expect(row.locator(".bar-text")).to_have_text(f"{NAPS} / {NAPS}")

        # The failure and its reason, with the peer's text shown as text, never run as HTML.
        expect(page.locator(f'tr[data-job="{bad}"] td.state')).to_have_text("failed")
        failure = page.locator(f'#failures-rows tr[data-task="{bad}/0"]')
        expect(failure).to_contain_text(f"program '{HOSTILE}' is not allowed on this worker")
        assert page.locator("main img").count() == 0
        assert page.evaluate("document.body.dataset.injected") is None
        page.screenshot(path=ARTIFACTS / "ui-failure.png", full_page=True)

        # The API stops answering: the page says its data is stale, then live again.
        page.route("**/v1/**", lambda route: route.abort())
        freshness = page.locator("#freshness")
        expect(freshness).to_contain_text("STALE", timeout=10_000)
        expect(page.locator("body")).to_have_class("stale")
        expect(row).to_be_visible()  # the last data stays, faded
        page.screenshot(path=ARTIFACTS / "ui-stale.png")
        page.unroute("**/v1/**")
        expect(freshness).to_contain_text("live", timeout=10_000)
        assert errors == []
    finally:
        page.context.close()


def test_a_cancelled_job_says_cancelled(browser: Browser, ui_net: devnet.Devnet) -> None:
    """A job cancelled after one of its tasks completed is cancelled, as the CLI says it:
    neither completed nor failed."""
    from playwright.sync_api import expect

    url, token = api_of(ui_net)
    auth = {"authorization": f"Bearer {token}"}
    naps = [{"input": {"seconds": 0.05}}] + [{"input": {"seconds": 300}}] * 3
    job = submit(url, token, {"name": "halt", "driver": "sleep", "timeout": "10m", "tasks": naps})

    def status() -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(f"{url}/v1/jobs/{job}", headers=auth).json()
        return answer

    deadline = time.monotonic() + 60
    while status()["completed"] < 1:
        assert time.monotonic() < deadline, status()
        time.sleep(0.1)
    r = httpx.post(f"{url}/v1/jobs/{job}/cancel", json={}, headers=auth)
    assert r.status_code == 200 and len(r.json()["cancelled"]) == 3, r.text
    page, errors = open_page(browser, f"{url}/ui#token={token}")
    try:
        row = page.locator(f'tr[data-job="{job}"]')
        expect(row.locator("td.state")).to_have_text("cancelled")
        expect(row.locator("td.completed")).to_have_text("1")
        assert status()["state"] == "cancelled"
        assert errors == []
    finally:
        page.context.close()


def test_without_a_token_the_page_says_how_to_get_one(
    browser: Browser, ui_net: devnet.Devnet
) -> None:
    from playwright.sync_api import expect

    url, token = api_of(ui_net)
    assert httpx.get(f"{url}/ui").status_code == 200  # the page holds no data: no token needed
    assert httpx.get(f"{url}/ui/ui.js").status_code == 200
    assert httpx.get(f"{url}/v1/jobs").status_code == 401  # the API still wants it
    assert httpx.get(f"{url}/ui/api.token").status_code == 404  # only the page's own files

    page, errors = open_page(browser, f"{url}/ui")
    api_calls: list[str] = []
    page.on("request", lambda r: "/v1/" in r.url and api_calls.append(r.url))
    try:
        login = page.locator("#login")
        expect(login).to_be_visible()
        expect(login).to_contain_text("p2psched ui --data-dir DIR")
        expect(login).to_contain_text("#token=")
        expect(page.locator("#board")).to_be_hidden()
        page.screenshot(path=ARTIFACTS / "ui-no-token.png")
        assert api_calls == []  # nothing asked without a token

        page.evaluate("location.hash = 'token=not-the-token'")
        expect(page.locator("#login-title")).to_have_text("The node refused this page's token")
        expect(page.locator("#login-why")).to_contain_text("api.token")
        assert api_calls  # it did try, and says the node refused

        page.evaluate(f"location.hash = 'token={token}'")
        expect(page.locator("#board")).to_be_visible()
        expect(page.locator("#freshness")).to_contain_text("live")
        assert errors == []
    finally:
        page.context.close()


def test_a_newer_nodes_failures_and_peers_are_shown(
    browser: Browser, ui_net: devnet.Devnet
) -> None:
    """`/v1/failures` and `/v1/peers` (newer nodes; this one answers 404, and the page falls
    back) are answered here by the browser's router, with the fields such a node sends."""
    from playwright.sync_api import Route, expect

    url, token = api_of(ui_net)
    peer = "ab" * 32
    failures = [
        {"job": "render-1", "task": "render-1/7", "worker": peer, "reason": HOSTILE, "at": 0.0}
    ]
    answers = {
        "/v1/failures": {"status": "success", "failures": failures},
        "/v1/peers": {
            "status": "success",
            "peers": [{"node_id": peer, "address": "203.0.113.9:4000", "last_seen_s": 3.0}],
        },
    }

    def answer(route: Route) -> None:
        path = route.request.url.removeprefix(url).split("?")[0]
        route.fulfill(json=answers[path])

    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(WAIT_MS)
    context.route("**/v1/failures*", answer)
    context.route("**/v1/peers", answer)
    page = context.new_page()
    try:
        failures[0]["at"] = page.evaluate("Date.now() / 1000") - 90
        page.goto(f"{url}/ui#token={token}")
        row = page.locator('#failures-rows tr[data-task="render-1/7"]')
        expect(row).to_contain_text(HOSTILE)
        expect(row.locator("td.when")).to_have_text(re.compile(r"^1 m 3\d s ago$"))
        expect(row).to_contain_text(peer[:12])
        expect(page.locator("#failures-note")).to_have_text("")
        peers = page.locator("#peers")
        expect(peers).to_be_visible()
        expect(peers).to_contain_text("203.0.113.9:4000")
        assert page.locator("main img").count() == 0
    finally:
        context.close()
