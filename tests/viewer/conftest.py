"""A real browser for the run viewer: Playwright (PyPI) driving Debian's chromium, against
the same real daemon as the API tests. Playwright's own browser download is not used (it is
not reachable here); `./run test` installs chromium where it is missing."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.api.conftest import daemon, make_daemon, model_server
from tests.needs import need_program

__all__ = ["browser", "daemon", "make_daemon", "model_server", "page"]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium() -> str:
    """Debian's chromium (`AGENTD_TEST_CHROMIUM` names another); skipped where it is missing,
    failed under CI=true (`./run test` installs it)."""
    return os.environ.get("AGENTD_TEST_CHROMIUM") or need_program("chromium")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    tab = await context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield tab
    finally:
        await context.close()
    assert errors == [], f"the page raised: {errors}"
