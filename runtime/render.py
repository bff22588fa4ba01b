"""Render a run's event stream for a person at a terminal (`agentd run`, `agentd demo`).

Events are the flat wire dicts of docs/design.md, Events. Colours are ANSI escapes and only
used when the caller says so (the CLI turns them on for a TTY); without them the output is
plain text, which is what the golden-file test pins down.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TextIO

import anyio

RESET = "\x1b[0m"
STYLES = {
    "dim": "\x1b[2m",
    "bold": "\x1b[1m",
    "red": "\x1b[31m",
    "green": "\x1b[32m",
    "yellow": "\x1b[33m",
    "blue": "\x1b[34m",
    "magenta": "\x1b[35m",
    "cyan": "\x1b[36m",
    "url": "\x1b[1;4;36m",
}
RESULT_PREVIEW_LINES = 12
DIFF_PREVIEW_LINES = 40
INPUT_PREVIEW_CHARS = 160
THINKING_MARK = "💭 "
_EXITED = re.compile(r"^Process exited with code (-?\d+)$", re.MULTILINE)
_RUNNING = re.compile(r"^Process running with session ID (\d+)$", re.MULTILINE)


class EventRenderer:
    """Writes one event at a time to `out`, keeping track of where the cursor stands so that
    streamed text and command output read naturally and every block starts on a new line."""

    def __init__(self, out: TextIO, *, color: bool = False) -> None:
        self.out = out
        self.color = color
        self._at_line_start = True
        self._streaming: str | None = None  # "text" | "thinking" | "output"
        self._calls_with_output: set[str] = set()
        self._tool_names: dict[str, str] = {}
        self.final: dict[str, Any] | None = None
        self._started_ts: str | None = None
        self._dev_urls_shown: set[str] = set()

    @property
    def at_line_start(self) -> bool:
        """Whether the cursor is at the start of a line (nothing is streaming mid-line)."""
        return self._at_line_start

    # -- plumbing -------------------------------------------------------------------------

    def _style(self, text: str, *styles: str) -> str:
        if not self.color or not styles:
            return text
        return "".join(STYLES[s] for s in styles) + text + RESET

    def _write(self, text: str) -> None:
        if not text:
            return
        self.out.write(text)
        self._at_line_start = text.endswith("\n")

    def _block(self, text: str, *styles: str) -> None:
        """A line of its own, after whatever was streaming."""
        self._end_stream()
        self._write(self._style(text, *styles) + "\n")

    def _end_stream(self) -> None:
        if not self._at_line_start:
            self._write("\n")
        self._streaming = None

    def _stream(self, kind: str, text: str, *styles: str) -> None:
        if self._streaming != kind:
            self._end_stream()
            self._streaming = kind
        # Style each line separately so a colour never bleeds across a newline.
        pieces = text.split("\n")
        rendered = "\n".join(self._style(p, *styles) if p else p for p in pieces)
        self._write(rendered)

    # -- events ---------------------------------------------------------------------------

    def render(self, event: dict[str, Any]) -> None:
        handler = getattr(self, f"_on_{event.get('type')}", None)
        if handler is not None:
            handler(event)
        self.out.flush()

    def _on_run_started(self, event: dict[str, Any]) -> None:
        self._started_ts = event.get("ts")
        agent = event.get("agent", "?")
        model = event.get("model") or "?"
        self._block(
            f"● run {event.get('runId')} · agent {agent} v{event.get('version')} · model {model}",
            "bold",
        )

    def _on_status(self, event: dict[str, Any]) -> None:
        self._block(f"… {event.get('status')}", "yellow")

    def _on_thinking(self, event: dict[str, Any]) -> None:
        text = event.get("content", "")
        if text and self._streaming != "thinking":
            # Marked, not only dimmed: without colours it must still read as thinking.
            text = THINKING_MARK + text
        self._stream("thinking", text, "dim")

    def _on_text(self, event: dict[str, Any]) -> None:
        self._stream("text", event.get("content", ""))

    def _on_tool_call(self, event: dict[str, Any]) -> None:
        call_id = event.get("callId", "")
        tool = event.get("tool", "?")
        self._tool_names[call_id] = tool
        self._block(f"▶ {tool} {_summarise_input(tool, event.get('input'))}", "bold", "blue")

    def _on_tool_output(self, event: dict[str, Any]) -> None:
        self._calls_with_output.add(event.get("callId", ""))
        self._stream("output", event.get("chunk", "").replace("\r\n", "\n"), "dim")

    def _on_tool_result(self, event: dict[str, Any]) -> None:
        call_id = event.get("callId", "")
        tool = event.get("tool") or self._tool_names.get(call_id, "?")
        ms = event.get("durationMs")
        took = f" ({ms:.0f} ms)" if isinstance(ms, int | float) else ""
        output = str(event.get("output", ""))
        if event.get("isError"):
            self._block(f"✗ {tool}{took}: {_first_lines(output, 3)}", "red")
            return
        process = _process_status(output)
        if process is None:
            self._block(f"✓ {tool}{took}", "green")
        else:
            state, failed = process
            waiting = bool(event.get("waitingForInput"))
            if waiting:
                state += " · waiting for input"
            self._block(f"✓ {tool}{took} · {state}", "yellow" if failed or waiting else "green")
        if call_id not in self._calls_with_output and output.strip():
            for line in _first_lines(output, RESULT_PREVIEW_LINES).splitlines():
                self._block(f"  {line}", "dim")

    def _on_file_edit(self, event: dict[str, Any]) -> None:
        moved = f" (from {event['movedFrom']})" if event.get("movedFrom") else ""
        self._block(f"✎ {event.get('action')} {event.get('path')}{moved}", "magenta")
        lines = str(event.get("diff", "")).splitlines()
        if not lines and event.get("note"):  # binary, large, or a group of files
            self._block(f"  {event['note']}", "dim")
        for line in lines[:DIFF_PREVIEW_LINES]:
            if line.startswith(("+++", "---")):
                self._block(f"  {line}", "bold")
            elif line.startswith("+"):
                self._block(f"  {line}", "green")
            elif line.startswith("-"):
                self._block(f"  {line}", "red")
            elif line.startswith("@@"):
                self._block(f"  {line}", "cyan")
            else:
                self._block(f"  {line}")
        if len(lines) > DIFF_PREVIEW_LINES:
            self._block(f"  … ({len(lines) - DIFF_PREVIEW_LINES} more diff lines)", "dim")

    def _on_dev_url(self, event: dict[str, Any]) -> None:
        url = str(event.get("url"))
        if url in self._dev_urls_shown:  # seen opening, then asked for: shown once
            return
        self._end_stream()
        self._dev_urls_shown.add(url)
        self._write("🌐 dev server: " + self._style(url, "url") + "\n")

    def _on_port_closed(self, event: dict[str, Any]) -> None:
        self._dev_urls_shown.discard(str(event.get("url")))
        command = f" ({event['command']})" if event.get("command") else ""
        self._block(f"🌐 port {event.get('port')} closed{command}", "dim")

    def _on_input(self, event: dict[str, Any]) -> None:
        self._block(f"› user: {event.get('text')}", "cyan")

    def _on_compaction_completed(self, event: dict[str, Any]) -> None:
        how = "summarised" if event.get("summarized") else "old tool outputs cut"
        self._block(
            f"… context compacted ({how}): {event.get('tokensBefore'):,} → "
            f"{event.get('tokensAfter'):,} tokens",
            "dim",
        )

    def _on_compaction_failed(self, event: dict[str, Any]) -> None:
        self._block(
            f"… compaction failed ({event.get('reason')}), {event.get('code')}: "
            f"{event.get('message')}",
            "red",
        )

    def _on_error(self, event: dict[str, Any]) -> None:
        self._block(f"! {event.get('code')}: {event.get('message')}", "red")

    def _on_complete(self, event: dict[str, Any]) -> None:
        self.final = event
        status = event.get("status", "completed")
        usage = event.get("usage") or {}
        parts = [
            f"status {status}",
            _count(event.get("iterations", 0), "iteration"),
            f"{usage.get('inputTokens', 0)} in / {usage.get('outputTokens', 0)} out tokens",
        ]
        seconds = _seconds_between(self._started_ts, event.get("ts"))
        if seconds is not None:
            parts.append(f"{seconds:.1f} s")
        colour = "green" if status == "completed" else "red"
        self._block("■ " + " · ".join(parts), "bold", colour)
        if event.get("devUrl") and str(event["devUrl"]) not in self._dev_urls_shown:
            self._end_stream()
            self._write("  dev URL: " + self._style(str(event["devUrl"]), "url") + "\n")


SPINNER_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class Spinner:
    """On a terminal, while a run is quiet: `⠋ waiting for the model · 4s · Ctrl-C cancels`
    (or `running exec_command`), redrawn in place by `run()` and erased before the next
    output. It only draws at the start of a line, so it never cuts into streamed text."""

    def __init__(
        self,
        out: TextIO,
        renderer: EventRenderer,
        *,
        delay: float = 0.5,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out
        self.renderer = renderer
        self.delay = delay
        self.interval = interval
        self.clock = clock
        self.label = "waiting for the model"
        self.since = clock()  # when the current wait began
        self.quiet_since = self.since  # when the last output was shown
        self.shown = False
        self.stopped = False
        self._frame = 0
        self._tools: dict[str, str] = {}

    def before(self, event: dict[str, Any]) -> None:
        """Called before `event` is rendered: erase the spinner, and note what is awaited."""
        self.clear()
        now = self.clock()
        self.quiet_since = now
        kind = event.get("type")
        label = self.label
        if kind == "tool_call":
            tool = str(event.get("tool", "tool"))
            self._tools[str(event.get("callId"))] = tool
            label = f"running {tool}"
        elif kind == "tool_result":
            self._tools.pop(str(event.get("callId")), None)
            label = f"running {next(iter(self._tools.values()))}" if self._tools else ""
            label = label or "waiting for the model"
        elif kind == "status":
            label = "paused" if event.get("status") == "paused" else "waiting for the model"
        elif kind in ("run_started", "input"):
            label = "waiting for the model"
        elif kind == "complete":
            self.stopped = True
        if label != self.label:
            self.label = label
            self.since = now

    def frame(self) -> str:
        elapsed = int(self.clock() - self.since)
        glyph = SPINNER_FRAMES[self._frame % len(SPINNER_FRAMES)]
        self._frame += 1
        return f"{glyph} {self.label} · {elapsed}s · Ctrl-C cancels"

    def tick(self) -> None:
        """Draw the next frame if the run has been quiet long enough."""
        if self.stopped or not self.renderer.at_line_start:
            return
        if self.clock() - self.quiet_since < self.delay:
            return
        text = self.frame()
        styled = f"\x1b[2m{text}\x1b[0m" if self.renderer.color else text
        self.out.write("\r" + styled + "\x1b[K")
        self.out.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self.shown = False

    async def run(self) -> None:
        """Tick until cancelled (the watcher owns this task and cancels it at the end)."""
        try:
            while True:
                await anyio.sleep(self.interval)
                self.tick()
        finally:
            self.clear()


def _count(number: Any, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        began = datetime.fromisoformat(start.replace("Z", "+00:00"))
        ended = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (ended - began).total_seconds()


def _process_status(output: str) -> tuple[str, bool] | None:
    """From a command tool's reply header (exec_command, write_stdin, bash): how the process
    stands, and whether it failed. None for other tools' output."""
    if not output.startswith("Wall time: "):
        return None
    header = output.split("\nOutput:", 1)[0]
    if exited := _EXITED.search(header):
        code = int(exited.group(1))
        return f"exit {code}", code != 0
    if running := _RUNNING.search(header):
        return f"still running (session {running.group(1)})", False
    return None


def _first_lines(text: str, count: int) -> str:
    lines = text.strip("\n").splitlines()
    shown = "\n".join(lines[:count])
    if len(lines) > count:
        shown += f"\n… ({len(lines) - count} more lines)"
    return shown


def _summarise_input(tool: str, args: Any) -> str:
    if not isinstance(args, dict):
        return json.dumps(args)
    if tool in ("exec_command", "bash") and isinstance(args.get("cmd", args.get("command")), str):
        summary = "$ " + str(args.get("cmd", args.get("command")))
    elif tool == "write_stdin":
        summary = f"session {args.get('session_id')} ← {json.dumps(args.get('chars', ''))}"
    elif tool == "apply_patch" and isinstance(args.get("input"), str):
        files = [
            line.split(":", 1)[1].strip()
            for line in args["input"].splitlines()
            if line.startswith(("*** Add File:", "*** Update File:", "*** Delete File:"))
        ]
        summary = ", ".join(files) if files else f"{len(args['input'])} bytes"
    else:
        summary = json.dumps(args, ensure_ascii=False)
    if len(summary) > INPUT_PREVIEW_CHARS:
        summary = summary[: INPUT_PREVIEW_CHARS - 1] + "…"
    return summary
