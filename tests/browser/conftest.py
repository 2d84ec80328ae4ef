"""Real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright.

* `chromium` (module): the browser, launched with the flags WebRTC on loopback needs; the test is
  skipped with the reason when /usr/bin/chromium is absent (`make browser` installs it).
* `local_only(context)`: every request of that browser context must go to 127.0.0.1; anything
  else is aborted and recorded, and `assert_local()` fails the test on it.

Never run `playwright install`: the tests use the system browser.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="module")
async def chromium():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is absent: run `make browser` (apt-get install chromium) to run the browser tests")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install playwright; never `playwright install`)")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


class LocalOnly:
    """Abort and record every request of a browser context that leaves 127.0.0.1."""

    def __init__(self) -> None:
        self.foreign: list[str] = []
        self.seen = 0

    async def attach(self, context: Any) -> None:
        async def route(r: Any) -> None:
            self.seen += 1
            url = r.request.url
            parts = urlsplit(url)
            if parts.scheme in ("data", "blob") or parts.hostname == "127.0.0.1":
                await r.continue_()
            else:
                self.foreign.append(url)
                await r.abort()

        await context.route("**/*", route)
        context.on("request", lambda req: self._check(req.url))
        context.on("page", lambda page: page.on("websocket", lambda ws: self._check(ws.url)))

    def _check(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("data", "blob") and parts.hostname != "127.0.0.1" and url not in self.foreign:
            self.foreign.append(url)

    def assert_local(self) -> None:
        assert not self.foreign, f"the pages asked hosts other than 127.0.0.1: {self.foreign}"
        assert self.seen > 0, "the route handler saw no request at all"


@pytest.fixture
def local_only():
    return LocalOnly()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
