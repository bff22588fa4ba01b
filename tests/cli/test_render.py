"""The event renderer (`agentd run` / `agentd demo` for a person) against a recorded event
stream: the demo's events in tests/fixtures/demo_events.jsonl, rendered with colours off,
must match tests/fixtures/demo_render.txt exactly.

After an intended change to the rendering: `UPDATE_GOLDEN=1 python -m pytest
tests/cli/test_render.py`, then read the diff of the golden file before committing it.
"""

from __future__ import annotations

import io
import os
import re
from typing import Any

from runtime.render import EventRenderer
from tests.cli.support import REPO, json_lines

FIXTURES = REPO / "tests" / "fixtures"
EVENTS = FIXTURES / "demo_events.jsonl"
GOLDEN = FIXTURES / "demo_render.txt"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def render(events: list[dict[str, Any]], *, color: bool) -> str:
    out = io.StringIO()
    renderer = EventRenderer(out, color=color)
    for event in events:
        renderer.render(event)
    return out.getvalue()


def test_demo_stream_renders_as_the_golden_file() -> None:
    rendered = render(json_lines(EVENTS.read_text()), color=False)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(rendered, encoding="utf-8")
    assert rendered == GOLDEN.read_text(encoding="utf-8")


def test_colours_only_when_asked() -> None:
    events = json_lines(EVENTS.read_text())
    plain = render(events, color=False)
    coloured = render(events, color=True)
    assert "\x1b" not in plain
    assert ANSI.search(coloured)
    # Colour is all that differs, and no style is left open at the end of a line.
    assert ANSI.sub("", coloured) == plain
    for line in coloured.splitlines():
        codes = ANSI.findall(line)
        assert not codes or codes[-1] == "\x1b[0m", line


def test_styles_mark_what_they_should() -> None:
    events: list[dict[str, Any]] = [
        {"type": "thinking", "content": "pondering"},
        {"type": "thinking", "content": " more"},
        {"type": "text", "content": "Answer."},
        {"type": "tool_result", "callId": "c", "tool": "read_file", "output": "no such file"}
        | {"isError": True},
        {"type": "dev_url", "url": "http://localhost:8000/", "port": 8000},
    ]
    coloured = render(events, color=True)
    assert "\x1b[2m💭 pondering\x1b[0m\x1b[2m more\x1b[0m\nAnswer.\n" in coloured  # dimmed
    assert "\x1b[31m✗ read_file: no such file\x1b[0m" in coloured  # errors are red
    assert "\x1b[1;4;36mhttp://localhost:8000/\x1b[0m" in coloured  # the URL stands out
    # Without colours, thinking is still told apart from what the model says.
    assert render(events, color=False).startswith("💭 pondering more\nAnswer.\n")


def command_result(header: str, output: str = "") -> dict[str, Any]:
    text = f"Wall time: 0.1000 seconds\n{header}\nOutput:\n{output}"
    return {"type": "tool_result", "callId": "c", "tool": "exec_command", "output": text}


def test_command_results_say_how_the_process_stands() -> None:
    ok, failed, running, lookalike = (
        render([command_result("Process exited with code 0") | {"durationMs": 12.4}], color=True),
        render([command_result("Process exited with code 1")], color=False),
        render([command_result("Process running with session ID 3")], color=False),
        render(
            [command_result("Process exited with code 0", "Process exited with code 9\n")],
            color=False,
        ),
    )
    assert ok.startswith("\x1b[32m✓ exec_command (12 ms) · exit 0\x1b[0m\n")
    assert failed.startswith("✓ exec_command · exit 1\n")
    assert render([command_result("Process exited with code 1")], color=True).startswith(
        "\x1b[33m✓ exec_command · exit 1"  # a failed command is not shown green
    )
    assert running.startswith("✓ exec_command · still running (session 3)\n")
    assert lookalike.startswith("✓ exec_command · exit 0\n")  # the header, not the output


def test_a_compaction_that_failed_says_why_in_red() -> None:
    events: list[dict[str, Any]] = [
        {"type": "compaction_failed", "reason": "auto", "tokensBefore": 6820}
        | {"code": "model_error", "message": "overloaded: try later"},
    ]
    assert render(events, color=False) == (
        "… compaction failed (auto), model_error: overloaded: try later\n"
    )
    assert render(events, color=True).startswith("\x1b[31m… compaction failed (auto)")
