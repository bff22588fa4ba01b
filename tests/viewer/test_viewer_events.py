"""What the page shows of a run's events: compactions, event types it does not know, a
terminal's carriage returns and escape sequences, characters that would disguise a name."""

from __future__ import annotations

import re

from playwright.async_api import Page, expect

from runtime.client import AsyncClient
from tests.api.conftest import Daemon
from tests.fakes.model_server import Turn, text, tool_call
from tests.viewer.prepared import PreparedRun, complete, tool_output
from tests.viewer.test_viewer import shown_event_ids

BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


async def events_in_page_order(page: Page) -> list[int]:
    ids: list[int] = await page.eval_on_selector_all(
        "#events [data-event-id]", "nodes => nodes.map(n => Number(n.dataset.eventId))"
    )
    return ids


async def test_a_compaction_shows_as_a_line_with_what_it_did(daemon: Daemon, page: Page) -> None:
    # The fake model reports each request's real size; a small window makes the run compact
    # (its long tool outputs are stubbed) before its last turn.
    daemon.model.usage_from_request = True
    await daemon.upsert(tools=["exec_command"], contextWindow=6000)
    long_output = {"cmd": "python3 -c \"print('y' * 3000)\"", "login": False}
    daemon.model.script(
        *[Turn([text(f"step {i}"), tool_call("exec_command", long_output)]) for i in range(6)],
        Turn([text("done")]),
    )
    async with AsyncClient(daemon.url) as agentd:
        run_id = (await agentd.runs.start("helper", "compact me"))["runId"]
        await agentd.runs.wait(run_id, timeout=60)
        events = [e async for e in agentd.runs.stream(run_id)]
    started = next(e.payload for e in events if e.type == "compaction_started")
    done = next(e.payload for e in events if e.type == "compaction_completed")

    await page.goto(f"{daemon.url}/#run={run_id}")
    await expect(page.locator(".summary")).to_contain_text("completed", timeout=30_000)
    assert await shown_event_ids(page) == [e.id for e in events]
    lines = page.locator(".event-compaction")
    await expect(lines).to_have_count(2)
    await expect(lines.first).to_contain_text(f"compacting the context ({started['reason']})")
    await expect(lines.first).to_contain_text("-token window")
    await expect(lines.nth(1)).to_contain_text(f"context compacted ({done['reason']})")
    await expect(lines.nth(1)).to_contain_text(re.compile(r"\d[\d.k]* → \d[\d.k]* tokens"))
    if done["messagesReplaced"]:
        await expect(lines.nth(1)).to_contain_text(f"{done['messagesReplaced']} message")
    if done["stubbedOutputs"]:
        await expect(lines.nth(1)).to_contain_text(f"{done['stubbedOutputs']} long tool output")


async def test_a_compaction_that_failed_is_shown_as_an_error_with_its_cause(
    daemon: Daemon, page: Page
) -> None:
    run = PreparedRun(
        [
            {"type": "run_started", "agent": "helper", "version": 1, "model": "m"},
            {"type": "compaction_started", "reason": "auto", "tokensBefore": 6820}
            | {"contextWindow": 8000, "threshold": 6400},
            {"type": "compaction_failed", "reason": "auto", "tokensBefore": 6820}
            | {"code": "model_error", "message": "overloaded: try later"},
            {"type": "error", "code": "model_error", "message": "overloaded: try later"},
            complete("failed"),
        ],
        status="failed",
    )
    await run.open(page, daemon.url)
    await expect(page.locator(".summary")).to_contain_text("failed")
    failed = page.locator(".event-error", has_text="compaction failed")
    await expect(failed).to_have_count(1)
    await expect(failed).to_contain_text("compaction failed (auto), model_error: overloaded")
    assert await events_in_page_order(page) == [1, 2, 3, 4, 5]


async def test_an_event_of_a_type_the_page_does_not_know_is_shown_in_its_place(
    daemon: Daemon, page: Page
) -> None:
    """A newer daemon's event type: named (no listener hears it, so the page fetches the
    gap it leaves) or unnamed (the default `message` event); shown generically, in order."""
    run = PreparedRun(
        [
            {"type": "run_started", "agent": "helper", "version": 1, "model": "m"},
            {"type": "text", "content": "before"},
            {"type": "future_thing", "answer": 42},
            {"type": "another_new_type", "note": "sent without an event name"},
            {"type": "text", "content": "after"},
            complete(),
        ],
        unnamed={"another_new_type"},
    )
    await run.open(page, daemon.url)
    await expect(page.locator(".summary")).to_contain_text("completed")
    others = page.locator(".event-other")
    await expect(others).to_have_count(2)
    await expect(others.first).to_contain_text("future_thing")
    await expect(others.first).to_contain_text('"answer":42')
    await expect(others.nth(1)).to_contain_text("another_new_type")
    await expect(others.nth(1)).to_contain_text("sent without an event name")
    assert await events_in_page_order(page) == [1, 2, 3, 4, 5, 6]
    assert f"/v1/runs/{run.run_id}/events?after=2" in run.requests


async def test_the_terminal_overwrites_at_a_carriage_return_and_hides_osc_sequences(
    daemon: Daemon, page: Page
) -> None:
    await daemon.upsert(tools=["exec_command"])
    command = (
        r"printf 'plain \033]8;;https://example.com\033\\a link\033]8;;\033\\ after\n';"
        r"printf '\033]0;my title\007title set\n';"
        r"printf 'progress 10%%\r\033[Kdone\n';"
        r"printf 'abcdef\rXY\n';"
        r"printf '\033[30mblack\033[0m\n';"
        r"printf 'step 1'; sleep 0.2; printf '\rstep 2'; sleep 0.2; printf '\r\033[Kfinished\n'"
    )
    daemon.model.script(
        Turn([tool_call("exec_command", {"cmd": command, "login": False})]), Turn([text("ok")])
    )
    async with AsyncClient(daemon.url) as agentd:
        run_id = (await agentd.runs.start("helper", "escapes"))["runId"]
        await agentd.runs.wait(run_id, timeout=30)
    await page.goto(f"{daemon.url}/#run={run_id}")
    await expect(page.locator(".summary")).to_contain_text("completed")
    terminal = page.locator(".terminal")
    await expect(terminal).to_have_text(
        "plain a link after\ntitle set\ndone\nXYcdef\nblack\nfinished\n"
    )
    await expect(terminal.locator(".ansi-fg-0")).to_have_text("black")
    await expect(terminal.locator("a")).to_have_count(0)  # a hyperlink's text, as text


async def test_escapes_and_carriage_returns_cut_across_chunks(daemon: Daemon, page: Page) -> None:
    chunks = tool_output(
        "call_1",
        "\x1b[3",
        "2mgreen\x1b[0m \x1b]8;;https://example.com\x1b",
        "\\link\x1b]8;;\x1b\\\n",
        "50%",
        "\r",
        "\x1b[K100%\n",
        "\x1b]0;ti",
        "tle\x07end\r\n",
        "abc\b\bX\n",
        "last line, no newline",
    )
    run = PreparedRun(
        [
            {"type": "tool_call", "callId": "call_1", "tool": "exec_command", "input": {}},
            *chunks,
            {
                "type": "tool_result",
                "callId": "call_1",
                "tool": "exec_command",
                "output": "",
                "isError": False,
                "durationMs": 5,
            },
            complete(),
        ]
    )
    await run.open(page, daemon.url)
    await expect(page.locator(".summary")).to_be_visible()
    terminal = page.locator(".terminal")
    await expect(terminal).to_have_text("green link\n100%\nend\naXc\nlast line, no newline")
    await expect(terminal.locator(".ansi-fg-2")).to_have_text("green")
    assert await shown_event_ids(page) == list(range(1, len(chunks) + 4))


async def test_bidi_controls_in_names_and_output_are_shown_not_obeyed(
    daemon: Daemon, page: Page
) -> None:
    """`\\u202etxt.exe` would read as `exe.txt`: file-edit headers, the workspace list, the
    tool's input and the terminal show the override as a mark instead."""
    name = "\u202etxt.exe"
    await daemon.upsert(tools=["exec_command", "write_file"])
    daemon.model.script(
        Turn([tool_call("write_file", {"path": name, "content": "hello\u2066 isolate\n"})]),
        Turn([tool_call("exec_command", {"cmd": r"printf 'bidi: \342\200\256txt.exe\n'"})]),
        Turn([text("wrote \u200fit")]),
    )
    async with AsyncClient(daemon.url) as agentd:
        run_id = (await agentd.runs.start("helper", "names"))["runId"]
        await agentd.runs.wait(run_id, timeout=30)
    await page.goto(f"{daemon.url}/#run={run_id}")
    await expect(page.locator(".summary")).to_contain_text("completed")
    shown = "<U+202E>txt.exe"
    await expect(page.locator(".file-edit .mono")).to_contain_text(shown)
    await expect(page.locator(".terminal")).to_contain_text(f"bidi: {shown}")
    await expect(page.locator(".tool-input").first).to_contain_text(shown)
    await expect(page.locator(".event-text").first).to_contain_text("wrote <U+200F>it")
    item = page.locator("#files li", has_text=shown)
    await expect(item).to_be_visible()
    await item.click()
    await expect(page.locator("#file-content")).to_have_text("hello<U+2066> isolate\n")
    await expect(page.locator(".terminal .control-char")).to_have_text("<U+202E>")
    # No text on the page still holds such a character.
    texts: list[str] = await page.evaluate(
        """() => {
          const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
          const out = [];
          while (walker.nextNode()) out.push(walker.currentNode.data);
          return out;
        }"""
    )
    assert [t for t in texts if BIDI.search(t)] == []
