"""The API's documentation at /docs in a real headless browser (Debian's Chromium): Swagger UI
shows the node's routes, and every request the page makes goes to the node, none to any other
host (it used to load Swagger UI from a CDN)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from tests.harness.browser import WAIT_MS
from tests.harness.processes import running

if TYPE_CHECKING:
    from playwright.sync_api import Browser


def test_docs_load_nothing_from_outside_the_node(browser: Browser, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    data = tmp_path / "gate"
    with running("gate", "--listen", "127.0.0.1:0", data=data):
        url = json.loads((data / "api.json").read_text())["url"]
        assert "cdn" not in httpx.get(f"{url}/docs").text
        context = browser.new_context()
        context.set_default_timeout(WAIT_MS)
        asked: list[str] = []
        context.on("request", lambda request: asked.append(request.url))
        page = context.new_page()
        page.goto(f"{url}/docs")
        title = page.locator(".swagger-ui .info .title")
        expect(title).to_contain_text("control API", timeout=WAIT_MS)
        expect(page.locator(".opblock-summary-path").first).to_be_visible(timeout=WAIT_MS)
        context.close()
    node = urlsplit(url).netloc
    assert asked and {urlsplit(u).netloc for u in asked if not u.startswith("data:")} == {node}
