"""Playwright with Debian's Chromium: where it is, how to start it, how to log in."""

from __future__ import annotations

import os
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
# No sandbox: tests run as root in CI; no GPU in a container.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]

needs_chromium = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"{CHROMIUM} is missing (apt-get install chromium; `make test` does)",
)


def login(browser: Any, url: str, token: str) -> Any:
    """A page in a fresh browser context, logged in to the console at `url` with `token`."""
    page = browser.new_context().new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{url}/login")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/")
    return page
