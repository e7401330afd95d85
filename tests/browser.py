"""A real headless Chromium for browser tests: Debian's /usr/bin/chromium driven by Playwright's
Python API (Playwright's own browser download is never used)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# The machine's network is closed: without the background-networking flags Chromium keeps
# trying to reach Google's hosts at start and in the background.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_browser() -> None:
    """Skip when Chromium or Playwright is missing, except in CI (``CI=true``): fail there,
    so that CI cannot pass by skipping the browser tests."""
    missing = []
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"{CHROMIUM} (Debian package chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package (pip install -e '.[dev]')")
    if not missing:
        return
    message = "browser test needs " + " and ".join(missing)
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI=true, so this is a failure, not a skip", pytrace=False)
    pytest.skip(message)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (a Playwright ``Browser``). The sync API runs its own event loop:
    use it from plain sync tests only, and do the Django ORM work outside this block."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def session_cookie(name: str, value: str, host: str) -> dict[str, Any]:
    """A cookie for ``context.add_cookies`` on the server at ``host`` ("127.0.0.1:PORT")."""
    return {
        "name": name,
        "value": value,
        "domain": host.split(":")[0],
        "path": "/",
        "httpOnly": True,
        "sameSite": "Lax",
    }
