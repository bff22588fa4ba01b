"""Using the page: from the keyboard, through the address bar and Back, and when a request
or the connection fails."""

from __future__ import annotations

import re

from playwright.async_api import Page, Route, expect

from runtime.client import AsyncClient
from tests.api.conftest import Daemon, DaemonFactory
from tests.fakes.cutting_proxy import CuttingProxy
from tests.fakes.model_server import Gate, Turn, text, tool_call
from tests.viewer.prepared import PreparedRun
from tests.viewer.test_viewer import shown_event_ids


async def finished_run(daemon: Daemon, prompt: str) -> str:
    async with AsyncClient(daemon.url) as agentd:
        run_id: str = (await agentd.runs.start("helper", prompt))["runId"]
        await agentd.runs.wait(run_id, timeout=30)
    return run_id


async def focused(page: Page) -> str:
    """What has the focus: its tag, and its run id, path or slug when it has one."""
    described: str = await page.evaluate(
        """() => {
          const a = document.activeElement;
          const holder = a.closest("[data-run-id], [data-path], [data-slug]") || a;
          const d = holder.dataset || {};
          return `${a.tagName} ${d.runId || d.path || d.slug || a.id || ""}`.trim();
        }"""
    )
    return described


async def test_runs_agents_and_files_work_from_the_keyboard(daemon: Daemon, page: Page) -> None:
    await daemon.upsert(tools=["write_file"])
    daemon.model.script(
        Turn([tool_call("write_file", {"path": "src/hello.py", "content": "print('hi')\n"})]),
        Turn([text("wrote it")]),
    )
    run_id = await finished_run(daemon, "write hello")
    await page.goto(daemon.url + "/")
    row = page.locator(f"#runs tr[data-run-id='{run_id}']")
    await expect(row).to_be_visible()

    # Tab from the status filter reaches the run's row; Enter opens it.
    await page.focus("#filter-status")
    await page.keyboard.press("Tab")
    assert await focused(page) == f"TR {run_id}"
    outline = await row.evaluate("n => getComputedStyle(n).outlineStyle")
    assert outline not in ("", "none")  # a visible focus ring
    await page.keyboard.press("Enter")
    await expect(page.locator("#run-title")).to_contain_text(run_id)
    await expect(row).to_have_attribute("aria-current", "true")
    # The list refreshes every few seconds; the focus stays on the row.
    await row.focus()
    await page.evaluate("loadRuns()")
    await expect(row).to_be_focused()

    # An agent, with Space: it filters the runs and is chosen to start.
    agent = page.locator("#agents li[data-slug='helper'] button")
    await agent.focus()
    await page.keyboard.press(" ")
    await expect(page.locator("#filter-agent")).to_have_value("helper")
    await expect(page.locator("#start-agent")).to_have_value("helper")

    # The workspace: into a folder, open a file, back up; the focus follows the list.
    folder = page.locator("#files li[data-path='/src'] button")
    await folder.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#files-path")).to_have_text("/src")
    assert await focused(page) == "BUTTON .."
    await page.locator("#files li[data-path='/src/hello.py'] button").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#file-content")).to_have_text("print('hi')\n")
    await page.locator("#files li[data-path='..'] button").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#files-path")).to_have_text("/")


async def test_the_address_and_back_switch_runs(daemon: Daemon, page: Page) -> None:
    await daemon.upsert()
    first = await finished_run(daemon, "first")
    second = await finished_run(daemon, "second")
    await page.goto(f"{daemon.url}/#run={first}")
    title = page.locator("#run-title")
    await expect(title).to_contain_text(first)
    await expect(page.locator(".summary")).to_be_visible()

    # Edited in the address bar.
    await page.evaluate("run => { location.hash = '#run=' + run; }", second)
    await expect(title).to_contain_text(second)
    await expect(page.locator(".summary")).to_contain_text("completed")
    # Picked from the list, then Back and Forward.
    await page.click(f"#runs tr[data-run-id='{first}']")
    await expect(title).to_contain_text(first)
    assert page.url.endswith(f"#run={first}")
    await page.go_back()
    await expect(title).to_contain_text(second)
    await page.go_forward()
    await expect(title).to_contain_text(first)
    # No run in the address: none shown.
    await page.evaluate("() => { location.hash = ''; }")
    await expect(page.locator("#run-empty")).to_be_visible()
    await expect(page.locator("#run-view")).to_be_hidden()


async def test_input_that_fails_to_send_stays_in_the_box(daemon: Daemon, page: Page) -> None:
    run = PreparedRun(
        [
            {"type": "run_started", "agent": "helper", "version": 1, "model": "m"},
            {"type": "text", "content": "working"},
        ],
        status="running",
    )
    message = f"cannot send input to run '{run.run_id}': it has finished or is finishing"
    run.controls["input"] = (409, {"error": {"code": "conflict", "message": message}})
    await run.open(page, daemon.url)
    await expect(page.locator(".event-text")).to_have_text("working")

    box = page.locator("#input-text")
    await box.fill("use port 3000")
    await page.click("#input-form button")
    await expect(page.locator("#control-error")).to_have_text(message)
    await expect(box).to_have_value("use port 3000")  # to send again

    del run.controls["input"]  # accepted now: the box is emptied
    await page.click("#input-form button")
    await expect(box).to_have_value("")
    await expect(page.locator("#control-error")).to_be_hidden()
    assert run.requests.count(f"/v1/runs/{run.run_id}/input") == 2


async def test_a_connection_error_goes_once_the_stream_is_back(
    make_daemon: DaemonFactory, page: Page
) -> None:
    """The stream is cut and the page cannot reconnect for a while; a control sent meanwhile
    fails with "cannot reach the daemon". Once the stream is back, that message goes."""
    daemon = await make_daemon(sse_retry_ms=200)
    await daemon.upsert(tools=["exec_command"])
    gate = Gate()  # the run's last turn waits until the page has reconnected
    daemon.model.script(
        Turn([text("Running it."), tool_call("exec_command", {"cmd": "echo hi", "login": False})]),
        Turn([text("All done.")], hold=gate),
    )
    streams: list[str] = []
    blocked = True

    async def events(route: Route) -> None:
        streams.append(route.request.url)
        if len(streams) > 1 and blocked:  # reconnections fail while blocked
            await route.abort("connectionreset")
        else:
            await route.continue_()

    proxy = CuttingProxy(int(daemon.url.rsplit(":", 1)[1]))  # cuts after the tool call
    try:
        async with proxy as proxied, AsyncClient(daemon.url) as agentd:
            run_id = (await agentd.runs.start("helper", "cut me"))["runId"]
            await page.route(re.compile(r"/v1/runs/[^/]+/events"), events)
            await page.route(re.compile(r"/v1/runs/[^/]+/input$"), lambda r: r.abort("failed"))
            await page.goto(f"{proxied}/#run={run_id}")
            await expect(page.locator("#run-connection")).to_have_text("reconnecting…")
            await page.fill("#input-text", "are you there?")
            await page.click("#input-form button")
            error = page.locator("#control-error")
            await expect(error).to_contain_text("cannot reach the daemon")
            await expect(page.locator("#input-text")).to_have_value("are you there?")

            blocked = False
            await expect(page.locator("#run-connection")).to_have_text("live", timeout=30_000)
            await expect(error).to_be_hidden()
            gate.open()
            await expect(page.locator(".summary")).to_contain_text("completed", timeout=30_000)
            await expect(page.locator("#run-connection")).to_have_text("ended")
            events_sent = [e.id async for e in agentd.runs.stream(run_id)]
    finally:
        gate.open()
    assert proxy.cuts == 1 and len(streams) >= 2
    assert await shown_event_ids(page) == events_sent
