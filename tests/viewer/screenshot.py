"""Regenerate the README's screenshot of the run viewer: `python -m tests.viewer.screenshot
docs/viewer.png`. Serves a daemon in this process, runs the offline demo (its cassette),
opens the run in chromium and captures the page around the tests' output and the dev URL."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from playwright.async_api import async_playwright

from runtime.cli import embedded_daemon
from runtime.client import AsyncClient
from runtime.config import Settings
from runtime.demo import DEMO_AGENT_SLUG, DEMO_PROMPT, demo_agent
from tests.viewer.conftest import CHROMIUM_ARGS, chromium


async def capture(target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="agentd-shot-") as scratch:
        root = Path(scratch)
        (root / "workspace").mkdir()
        settings = Settings(
            host="127.0.0.1", port=0, workspace=root / "workspace", state_dir=root / "state"
        )
        async with embedded_daemon(settings) as url, AsyncClient(url) as agentd:
            await agentd.agents.upsert({**demo_agent(), "env": {"HOME": scratch}})
            run = await agentd.runs.start(DEMO_AGENT_SLUG, DEMO_PROMPT)
            await agentd.runs.wait(run["runId"], timeout=120)
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=chromium(), args=CHROMIUM_ARGS
                )
                page = await browser.new_page(viewport={"width": 1400, "height": 1050})
                await page.goto(f"{url}/#run={run['runId']}")
                await page.locator(".summary").wait_for()
                await page.click("#files li[data-path='/app.py']")
                # Start the view at the first diff's end, so the shot shows a diff, the
                # tests' output in the terminal pane, the dev URL and the summary.
                await page.evaluate(
                    "document.querySelectorAll('.diff').forEach(d => d.style.maxHeight = '120px')"
                )
                await page.evaluate(
                    "const pane = document.getElementById('run');"
                    "pane.scrollTop = document.querySelector('.terminal').offsetTop - 140;"
                )
                await page.screenshot(path=str(target))
                await browser.close()


if __name__ == "__main__":
    asyncio.run(capture(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/viewer.png")))
