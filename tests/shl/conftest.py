"""A real headless browser for the viewer's tests: Debian's Chromium driven by Playwright.

Nothing is downloaded: Playwright's Python package brings its driver, the browser is the
system's `chromium`. Without one the browser tests are skipped, saying why. Screenshots go to
tests/artifacts/shl-viewer/ (or $MEDLEDGER_ARTIFACTS/shl-viewer/).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.paths import ROOT

ARTIFACTS = Path(os.environ.get("MEDLEDGER_ARTIFACTS") or ROOT / "tests" / "artifacts")
ARTIFACTS /= "shl-viewer"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and Path("/usr/bin/chromium").exists():
        found = "/usr/bin/chromium"
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test module. Not for the session: while Playwright's sync API is
    open, its event loop counts as running in this thread, and asyncio.run() in any later
    test would fail."""
    path = chromium_path()
    if path is None:
        pytest.skip("no chromium installed (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context and page; its screenshot is kept whatever the outcome, and
    a script error on the page fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{request.node.name.replace('/', '_')}.png"
    try:
        pg.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")
    finally:
        context.close()
    assert not errors, f"script errors on the page: {errors}"
