"""A real headless Chromium for the tests that look at a page as a person would (Playwright
driving the Debian package's browser): skipped where either is missing.

    with launched() as browser:
        page = browser.new_page(viewport={"width": 375, "height": 812})
        problems = watch_problems(page)
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

# No sandbox (tests run as root), and nothing that would reach beyond loopback.
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_or_skip() -> tuple[str, Callable[..., Any]]:
    """The browser's path and Playwright's `sync_playwright`; skip without either."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is missing: install the Debian package chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package")
    return chromium, sync_api.sync_playwright


@contextmanager
def launched() -> Iterator[Any]:
    """A headless Chromium, closed on the way out."""
    chromium, sync_playwright = chromium_or_skip()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def watch_problems(page: Any) -> list[str]:
    """The list that the page's console errors and uncaught exceptions are appended to."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    return problems
