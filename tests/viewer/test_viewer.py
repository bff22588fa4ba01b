"""The run viewer in a real browser (chromium via Playwright) against a real daemon: the demo
run replayed from its cassette, the controls, a dropped connection, signing in."""

from __future__ import annotations

import re

import anyio
from playwright.async_api import Page, expect

from runtime.client import AsyncClient
from runtime.demo import DEMO_AGENT_SLUG, DEMO_PROMPT, demo_agent
from tests.api.conftest import MODEL, Daemon, DaemonFactory
from tests.fakes.cutting_proxy import CuttingProxy
from tests.fakes.model_server import Gate, Turn, text, thinking, tool_call


async def shown_event_ids(page: Page) -> list[int]:
    """The ids of the events on the page, sorted (a tool's result goes into its call's card,
    so the page's order is not always the stream's); a repeated event would show twice."""
    ids: list[int] = await page.eval_on_selector_all(
        "#events [data-event-id]", "nodes => nodes.map(n => Number(n.dataset.eventId))"
    )
    return sorted(ids)


async def test_the_demo_run_started_from_the_page_shows_tools_diffs_output_and_dev_url(
    daemon: Daemon, page: Page
) -> None:
    async with AsyncClient(daemon.url) as agentd:
        await agentd.agents.upsert(demo_agent())
    await page.goto(daemon.url + "/")
    await expect(page.locator("#agents li")).to_have_text([re.compile(DEMO_AGENT_SLUG)])
    await page.select_option("#start-agent", DEMO_AGENT_SLUG)
    await page.fill("#start-prompt", DEMO_PROMPT)
    await page.click("#start-form button[type=submit]")

    summary = page.locator(".summary")
    await expect(summary).to_be_visible(timeout=90_000)
    await expect(page.locator("#run-status")).to_have_text("completed")
    await expect(page.locator("#run-connection")).to_have_text("ended")
    run_id = (await page.locator("#run-title").text_content() or "").split(" · ")[-1]

    async with AsyncClient(daemon.url) as agentd:
        events = [e async for e in agentd.runs.stream(run_id)]
    final = events[-1].payload
    assert final["status"] == "completed" and final["devUrl"]

    # Every event is on the page, once.
    assert await shown_event_ids(page) == [e.id for e in events]
    # Each tool call is a card with its input and its result.
    calls = [e for e in events if e.type == "tool_call"]
    await expect(page.locator(".tool .tool-name")).to_have_text([e.payload["tool"] for e in calls])
    await expect(page.locator(".tool-input").first).to_be_visible()
    await expect(page.locator(".tool-result.ok")).to_have_count(len(calls))
    # Live command output in the terminal pane: the app's unit tests.
    await expect(page.locator(".terminal").first).to_contain_text("OK")
    # File edits as coloured diffs.
    edits = [e for e in events if e.type == "file_edit"]
    await expect(page.locator(".file-edit")).to_have_count(len(edits))
    await expect(page.locator(".diff .add").first).to_contain_text("+")
    # Thinking is dimmed and collapsible; text streamed into blocks.
    await expect(page.locator("details.event-thinking").first).to_be_attached()
    # The dev URL as a link, and the summary.
    dev_link = page.locator(".dev-url a")
    await expect(dev_link).to_have_attribute("href", final["devUrl"])
    await expect(summary).to_contain_text(f"iterations{final['iterations']}")
    await expect(summary).to_contain_text("duration")
    # The workspace's files.
    await expect(page.locator("#files li[data-path='/app.py']")).to_be_visible()
    await page.click("#files li[data-path='/app.py']")
    await expect(page.locator("#file-content")).to_contain_text("def make_server")
    # The run is listed, with its status.
    row = page.locator(f"#runs tr[data-run-id='{run_id}']")
    await expect(row).to_contain_text("completed")
    await page.screenshot(path=str(daemon.workspace.parent / "viewer.png"), full_page=True)


async def test_pause_input_resume_and_cancel_from_the_page(daemon: Daemon, page: Page) -> None:
    await daemon.upsert()
    gate = Gate()
    daemon.model.script(Turn([thinking("Let me think."), text("working ", "on it")], hold=gate))
    async with AsyncClient(daemon.url) as agentd:
        run_id = (await agentd.runs.start("helper", "take your time"))["runId"]
        with anyio.fail_after(10):
            await gate.reached.wait()
        await page.goto(f"{daemon.url}/#run={run_id}")
        await expect(page.locator("#run-status")).to_have_text("running")

        # The model turn is held: the run is pausing until it stops at its safe point.
        await page.click("#pause")
        await expect(page.locator("#run-status")).to_have_text("pausing")
        assert (await agentd.runs.get(run_id))["status"] == "pausing"
        await expect(page.locator("#resume")).to_be_enabled()

        await page.fill("#input-text", "use port 3000")
        await page.click("#input-form button")
        await expect(page.locator(".event-input")).to_have_text("you: use port 3000")

        await page.click("#resume")
        await expect(page.locator("#run-status")).to_have_text("running")

        await page.click("#cancel")
        await expect(page.locator(".summary")).to_contain_text("cancelled")
        await expect(page.locator("#run-status")).to_have_text("cancelled")
        assert (await agentd.runs.get(run_id))["status"] == "cancelled"
        for button in ("#pause", "#resume", "#cancel"):
            await expect(page.locator(button)).to_be_disabled()
    gate.open()


async def test_a_run_that_cannot_be_loaded_leaves_no_status_or_control_of_the_last_one(
    daemon: Daemon, page: Page
) -> None:
    await daemon.upsert(tools=["list_dir"])
    gate = Gate()
    daemon.model.script(Turn([tool_call("list_dir", {})]), Turn([text("held")], hold=gate))
    (daemon.workspace / "notes.txt").write_text("x\n")
    async with AsyncClient(daemon.url) as agentd:
        run_id = (await agentd.runs.start("helper", "look"))["runId"]
        with anyio.fail_after(10):
            await gate.reached.wait()
        await page.goto(f"{daemon.url}/#run={run_id}")
        await expect(page.locator("#run-status")).to_have_text("running")
        await expect(page.locator("#files")).to_contain_text("notes.txt")
        await expect(page.locator("#pause")).to_be_enabled()

        for load in ("switch", "fresh"):
            if load == "switch":
                await page.evaluate("location.hash = '#run=run_typo'")
            else:
                await page.goto(f"{daemon.url}/#run=run_typo")
                await page.reload()
            await expect(page.locator("#control-error")).to_contain_text("run_typo")
            await expect(page.locator("#run-status")).to_have_text("")
            await expect(page.locator("#run-connection")).to_have_text("")
            await expect(page.locator("#files")).to_be_empty()
            for control in ("#pause", "#resume", "#cancel", "#input-text", "#input-form button"):
                await expect(page.locator(control)).to_be_disabled()
        await agentd.runs.cancel(run_id)
    gate.open()


async def test_a_dropped_connection_loses_no_event_and_ansi_colours_render(
    make_daemon: DaemonFactory, page: Page
) -> None:
    daemon = await make_daemon(sse_retry_ms=200)
    await daemon.upsert(tools=["exec_command"])
    command = "printf '\\033[31mred\\033[0m plain\\n'; sleep 0.5; printf 'after the cut\\n'"
    daemon.model.script(
        Turn([text("Running it."), tool_call("exec_command", {"cmd": command, "login": False})]),
        Turn([text("All done.")]),
    )
    proxy = CuttingProxy(int(daemon.url.rsplit(":", 1)[1]))
    async with proxy as proxied, AsyncClient(daemon.url) as agentd:
        run_id = (await agentd.runs.start("helper", "colours"))["runId"]
        await page.goto(f"{proxied}/#run={run_id}")
        await expect(page.locator(".summary")).to_contain_text("completed", timeout=30_000)
        events = [e async for e in agentd.runs.stream(run_id)]
    assert proxy.cuts == 1  # the page's event stream was cut after the tool call
    assert await shown_event_ids(page) == [e.id for e in events]
    await expect(page.locator(".terminal .ansi-fg-1")).to_have_text("red")
    await expect(page.locator(".terminal")).to_contain_text("after the cut")
    await expect(page.locator(".event-text").last).to_have_text("All done.")


async def test_signing_in_with_the_token(make_daemon: DaemonFactory, page: Page) -> None:
    daemon = await make_daemon(token="viewer-token")
    async with AsyncClient(daemon.url, "viewer-token") as agentd:
        await agentd.agents.upsert({"slug": "helper", "model": MODEL, "tools": []})
        finished = await agentd.runs.start("helper", "hi")
        await agentd.runs.wait(finished["runId"], timeout=15)

    await page.goto(daemon.url + "/")
    await expect(page.locator("#sign-in")).to_be_visible()
    await expect(page.locator("#app")).to_be_hidden()
    await page.fill("#token", "wrong")
    await page.click("#sign-in-form button")
    await expect(page.locator("#sign-in-error")).to_contain_text("invalid API token")

    await page.fill("#token", "viewer-token")
    await page.click("#sign-in-form button")
    await expect(page.locator("#agents li")).to_have_count(1)
    assert await page.evaluate("sessionStorage.getItem('agentd.token')") == "viewer-token"
    # The run's stream authenticates with ?access_token= (EventSource sends no headers).
    await page.click(f"#runs tr[data-run-id='{finished['runId']}']")
    await expect(page.locator(".summary")).to_contain_text("completed")
    # A reload keeps the tab signed in; signing out forgets the token.
    await page.reload()
    await expect(page.locator("#app")).to_be_visible()
    await page.click("#sign-out")
    await expect(page.locator("#sign-in")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('agentd.token')") is None
