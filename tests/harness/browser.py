"""A real headless browser for the tests of the node's pages: Debian's Chromium, driven by
Playwright (which downloads no browser of its own), one per test module (the `browser`
fixture)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 30_000  # every wait on the page is bounded by this


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, launched headless (the test skips where it is not installed)."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does, as root)")
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[dev]'")
    playwright = sync_playwright().start()
    try:
        try:
            launched = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=WAIT_MS
            )
        except Error as e:  # installed, so it must work: a skip would hide a broken browser
            pytest.fail(f"Chromium at {CHROMIUM} is installed but cannot be launched: {e}")
        try:
            yield launched
        finally:
            launched.close()
    finally:
        playwright.stop()
