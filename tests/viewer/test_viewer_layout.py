"""How the page fits: phone and tablet widths, long unbroken text, and the contrast of its
text (WCAG AA, 4.5:1), computed in the browser from the styles it applies."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from tests.api.conftest import Daemon
from tests.viewer.prepared import PreparedRun, complete, tool_output

LONG_NAME = "n" * 200 + ".txt"


def long_run() -> PreparedRun:
    path = f"/deep/{'d' * 120}/{LONG_NAME}"
    diff = f"--- /dev/null\n+++ b{path}\n@@ -0,0 +1 @@\n+{'z' * 3000}\n"
    return PreparedRun(
        [
            {"type": "run_started", "agent": "helper", "version": 1, "model": "m" * 300},
            {"type": "thinking", "content": "T" * 5000},
            {"type": "text", "content": "U" * 20000},
            {"type": "tool_call", "callId": "c1", "tool": "write_file", "input": {"path": path}},
            *tool_output("c1", "x" * 8000 + "\n", "/" + "p" * 3000 + "\n"),
            {
                "type": "tool_result",
                "callId": "c1",
                "tool": "write_file",
                "output": "W" * 4000,
                "isError": True,
                "durationMs": 3,
            },
            {"type": "file_edit", "path": path, "action": "create", "diff": diff},
            {"type": "error", "code": "model_error", "message": "E" * 3000},
            complete(output="O" * 6000, files=[path]),
        ],
        files=[{"name": LONG_NAME, "path": "/" + LONG_NAME, "type": "file", "size": 1}],
    )


GEOMETRY = """() => {
  const box = (selector) => {
    const r = document.querySelector(selector).getBoundingClientRect();
    return { left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width };
  };
  const root = document.documentElement;
  const pane = document.getElementById("run");
  const diff = document.querySelector(".diff");
  return {
    viewport: root.clientWidth,
    pageScrollWidth: root.scrollWidth,
    paneOverflow: pane.scrollWidth - pane.clientWidth,
    side: box(".side"), run: box("#run"), events: box("#events"), files: box(".files"),
    diff: box(".diff"), diffScrolls: diff.scrollWidth > diff.clientWidth,
    // the right edge of every element not inside a box that scrolls (a diff, a terminal)
    widest: Math.max(...[...document.querySelectorAll("#app *")].filter((n) => {
      for (let up = n.parentElement; up && up.id !== "app"; up = up.parentElement) {
        const pane = up.id === "run" || up.matches(".side");
        if (!pane && getComputedStyle(up).overflowX !== "visible") return false;
      }
      return true;
    }).map((n) => n.getBoundingClientRect().right)),
    cancel: box("#cancel"),
  };
}"""


@pytest.mark.parametrize("width", [375, 768, 1024, 1400])
async def test_the_page_fits_its_width_with_long_unbroken_text(
    daemon: Daemon, browser: Browser, width: int
) -> None:
    context = await browser.new_context(viewport={"width": width, "height": 800})
    context.set_default_timeout(30_000)
    errors: list[str] = []
    try:
        page = await context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await long_run().open(page, daemon.url)
        await expect(page.locator(".summary")).to_be_visible()
        await expect(page.locator("#files li")).to_have_text([LONG_NAME])
        await page.click("#files li")
        await expect(page.locator("#file-content")).to_be_visible()
        g: dict[str, Any] = await page.evaluate(GEOMETRY)
    finally:
        await context.close()
    assert errors == []
    viewport = g["viewport"]
    # Nothing makes the page or the run's pane scroll sideways.
    assert g["pageScrollWidth"] <= viewport, g
    assert g["paneOverflow"] <= 1, g
    assert g["widest"] <= viewport + 1, g
    assert g["files"]["right"] <= viewport + 1 and g["cancel"]["right"] <= viewport + 1, g
    # A diff's long line scrolls inside its own box, within the events column.
    assert g["diffScrolls"], g
    assert g["diff"]["right"] <= g["events"]["right"] + 1, g
    if width <= 800:  # stacked: the side bar above the run, the events the page's width
        assert g["run"]["top"] >= g["side"]["bottom"] - 1, g
        assert g["events"]["width"] >= viewport - 60, g
    else:
        assert g["run"]["left"] >= g["side"]["right"] - 1, g
        assert g["events"]["width"] >= 400, g
    if width <= 1100:  # the workspace under the events
        assert g["files"]["top"] >= g["events"]["bottom"] - 1, g


CONTRAST = """(selectors) => {
  const parse = (c) => {
    const v = c.match(/[\\d.]+/g).map(Number);
    return { r: v[0], g: v[1], b: v[2], a: v.length > 3 ? v[3] : 1 };
  };
  const lin = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const lum = (c) => 0.2126 * lin(c.r) + 0.7152 * lin(c.g) + 0.0722 * lin(c.b);
  const background = (node) => {
    for (let n = node; n; n = n.parentElement) {
      const c = parse(getComputedStyle(n).backgroundColor);
      if (c.a > 0) return c;
    }
    return { r: 255, g: 255, b: 255, a: 1 };
  };
  const opacity = (node) => {
    let o = 1;
    for (let n = node; n; n = n.parentElement) o *= Number(getComputedStyle(n).opacity);
    return o;
  };
  const out = [];
  for (const selector of selectors) {
    for (const node of document.querySelectorAll(selector)) {
      if (!node.textContent.trim() || node.closest("button:disabled")) continue;
      const fg = parse(getComputedStyle(node).color);
      const bg = background(node);
      const a = opacity(node) * fg.a;
      const seen = { r: fg.r * a + bg.r * (1 - a), g: fg.g * a + bg.g * (1 - a),
                     b: fg.b * a + bg.b * (1 - a) };
      const [hi, lo] = [lum(seen), lum(bg)].sort((x, y) => y - x);
      out.push({ selector, cls: String(node.className), text: node.textContent.slice(0, 24),
                 size: getComputedStyle(node).fontSize, ratio: (hi + 0.05) / (lo + 0.05) });
    }
  }
  return out;
}"""

CHECKED = [
    ".event-thinking summary",
    ".event-thinking .thinking-body",
    ".badge",
    ".terminal span",
    ".terminal",
    ".muted",
    ".event-status",
    ".event-compaction",
    ".event-other",
    ".event-text",
    ".event-error",
    ".tool-input",
    ".tool-result",
    ".diff div",
    ".control-char",
    ".runs th",
    "label",
    ".summary dt",
]
STATUSES = [
    "queued",
    "running",
    "pausing",
    "paused",
    "resumed",
    "completed",
    "failed",
    "cancelled",
    "interrupted",
]


async def test_text_has_at_least_aa_contrast(daemon: Daemon, page: Page) -> None:
    colours = "".join(f"\x1b[{code}mc{code}\x1b[0m " for code in [*range(30, 38), *range(90, 98)])
    run = PreparedRun(
        [
            {"type": "run_started", "agent": "helper", "version": 1, "model": "m"},
            {"type": "thinking", "content": "Let me think about the \u202e order."},
            {"type": "text", "content": "Plain text."},
            {"type": "tool_call", "callId": "c1", "tool": "exec_command", "input": {"cmd": "x"}},
            *tool_output("c1", colours + "\n", "\x1b[1mbold\x1b[0m \u202eexe\n"),
            {
                "type": "tool_result",
                "callId": "c1",
                "tool": "exec_command",
                "output": "fine",
                "isError": False,
                "durationMs": 3,
            },
            {
                "type": "file_edit",
                "path": "/a.py",
                "action": "modify",
                "diff": "--- a/a.py\n+++ b/a.py\n@@ -1 +1 @@\n-old\n+new\n",
            },
            {"type": "compaction_completed", "reason": "auto", "tokensBefore": 9000}
            | {"tokensAfter": 2000, "messagesReplaced": 4, "summarized": True}
            | {"stubbedOutputs": 1},
            {"type": "mystery", "x": 1},
            {"type": "error", "code": "timeout", "message": "too slow"},
            complete("failed"),
        ]
    )
    await run.open(page, daemon.url)
    await expect(page.locator(".summary")).to_be_visible()
    # A badge of every status, in the runs table (one row selected, as when a run is open).
    await page.evaluate(
        """(statuses) => {
          const row = document.createElement("tr");
          row.className = "selected";
          for (const status of statuses) {
            const cell = document.createElement("td");
            cell.append(badge(status));
            row.append(cell);
          }
          // A table of its own, styled as the runs list: the list's refresh (in flight, or
          // every few seconds) would replace a row added to it before it is measured.
          const table = document.createElement("table");
          table.className = "runs";
          table.append(document.createElement("tbody"));
          table.tBodies[0].append(row);
          document.querySelector("#runs").after(table);
        }""",
        STATUSES,
    )
    results: list[dict[str, Any]] = await page.evaluate(CONTRAST, CHECKED)
    checked = {r["selector"] for r in results} | {r["cls"] for r in results}
    for needed in (".event-thinking .thinking-body", ".badge", "ansi-fg-0", "control-char"):
        assert needed in checked, needed
    assert len([r for r in results if r["selector"] == ".badge"]) >= len(STATUSES)
    low = [r for r in results if r["ratio"] < 4.5]
    assert low == [], low
