// agentd's run viewer: plain JavaScript, no build step, nothing loaded from elsewhere.
// Talks to the same HTTP API as every client (GET /v1/agents, /v1/runs, POST /v1/run, the
// controls) and follows a run over EventSource (`?access_token=` since EventSource cannot
// send headers; the browser reconnects by itself with Last-Event-ID). Every piece of data
// from the daemon is put into the page as text (text nodes, through `visible`), never as HTML.
"use strict";

const TOKEN_KEY = "agentd.token";
// Every type design.md's Events section documents. EventSource delivers a named event only
// to a listener of that name, so a type added later is not heard: the page notices the gap
// in the ids and fetches what it missed (`fillGap`), and shows such an event generically.
const EVENT_TYPES = [
  "run_started", "status", "thinking", "text", "tool_call", "tool_output", "tool_result",
  "file_edit", "dev_url", "port_closed", "input", "usage", "error",
  "compaction_started", "compaction_completed", "compaction_failed", "complete",
];
const ENVELOPE = new Set(["id", "runId", "threadId", "type", "ts"]);
const TERMINAL = new Set(["completed", "failed", "cancelled", "interrupted"]);
const RUNS_REFRESH_MS = 5000;

const $ = (id) => document.getElementById(id);

// Characters that change the order text reads in without showing themselves: bidirectional
// embeddings, overrides, isolates and marks (`\u202etxt.exe` reads "exe.txt"). Every string
// from the daemon goes into the page through `visible` (via `el` or `setText`), which shows
// each of them as a mark such as `<U+202E>` instead.
const BIDI_CONTROL = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;
const BIDI_CONTROLS = new RegExp(BIDI_CONTROL.source, "g");

function codePoint(ch) {
  return "U+" + ch.codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
}

/** `text` as a node: a text node, or a fragment with each bidi control shown as a mark. */
function visible(text) {
  if (!BIDI_CONTROL.test(text)) return document.createTextNode(text);
  const fragment = document.createDocumentFragment();
  let last = 0;
  for (const match of text.matchAll(BIDI_CONTROLS)) {
    if (match.index > last) fragment.append(document.createTextNode(text.slice(last, match.index)));
    const mark = document.createElement("span");
    mark.className = "control-char";
    mark.title = "an invisible character that reorders text";
    mark.textContent = `<${codePoint(match[0])}>`;
    fragment.append(mark);
    last = match.index + match[0].length;
  }
  if (last < text.length) fragment.append(document.createTextNode(text.slice(last)));
  return fragment;
}

/** `text` for an attribute (a tooltip), with the bidi controls written out. */
function visibleString(text) {
  return String(text).replace(BIDI_CONTROLS, (ch) => `<${codePoint(ch)}>`);
}

/** Replace `node`'s content with `text`, as text. */
function setText(node, text) {
  node.replaceChildren(visible(String(text ?? "")));
}

/** An element with a class and children (strings become text, through `visible`). */
function el(tag, className, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? visible(child) : child);
  }
  return node;
}

/** A table row made operable like a button: focusable, Enter and Space act as a click. */
function operable(node, action) {
  node.tabIndex = 0;
  node.addEventListener("click", action);
  node.addEventListener("keydown", (event) => {
    if (event.target !== node || event.altKey || event.ctrlKey || event.metaKey) return;
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      action();
    }
  });
}

/** A list item holding a button that does `action` (keyboard-operable as any button). */
function listButton(action, ...children) {
  const button = el("button", "item", ...children);
  button.type = "button";
  button.addEventListener("click", action);
  return el("li", null, button);
}

/** Rebuild a list with `rebuild`, then give the focus back to the item that had it. */
function keepingFocus(container, key, rebuild) {
  const active = document.activeElement;
  const holder = active && container.contains(active) ? active.closest(`[${key}]`) : null;
  const wanted = holder ? holder.getAttribute(key) : null;
  rebuild();
  if (wanted === null) return;
  const items = [...container.querySelectorAll(`[${key}]`)];
  const item = items.find((node) => node.getAttribute(key) === wanted) || items[0];  // else the first
  if (!item) return;
  const target = item.matches("tr") ? item : item.querySelector("button") || item;
  target.focus({ preventScroll: true });
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

// -- the API -------------------------------------------------------------------------------

class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const session = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  set(token) {
    this.token = token;
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
  headers(extra) {
    const headers = Object.assign({}, extra || {});
    if (this.token) headers.Authorization = "Bearer " + this.token;
    return headers;
  },
};

async function failureOf(response) {
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  const error = (body && body.error) || {};
  return new ApiFailure(response.status, error.code || "error",
    error.message || `${response.status} ${response.statusText}`);
}

async function api(method, path, body) {
  const init = { method, headers: session.headers() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (exc) {
    throw new ApiFailure(0, "network", `cannot reach the daemon: ${exc.message}`);
  }
  if (!response.ok) {
    const failure = await failureOf(response);
    if (response.status === 401) showSignIn(failure.message);
    throw failure;
  }
  return response.json();
}

// -- formatting ----------------------------------------------------------------------------

function age(iso) {
  if (!iso) return "";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.round(seconds)}s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)}h`;
  return `${Math.round(seconds / 86400)}d`;
}

function count(n) {
  n = n || 0;
  return n >= 10000 ? `${(n / 1000).toFixed(0)}k` : n >= 1000 ? `${(n / 1000).toFixed(1)}k` : `${n}`;
}

function duration(ms) {
  if (!(ms >= 0)) return "";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function badge(status) {
  return el("span", `badge status-${status}`, status);
}

// -- the terminal pane ---------------------------------------------------------------------

const SGR_RESET = { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, rgb: null };
// One token each: a CSI sequence (`m` colours, `K` erase in line, `G` column; the others are
// dropped), an OSC string (a window title, an OSC 8 hyperlink's target: hidden, so a link's
// text stays plain text), a DCS/SOS/PM/APC string, a two-character escape, CR LF, and the
// control characters (CR, LF, backspace; the others are dropped; a tab is text).
const TERMINAL_TOKEN = new RegExp([
  String.raw`\x1b\[([0-?]*)[ -/]*([@-~])`,
  String.raw`\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)`,
  String.raw`\x1b[PX^_][^\x1b]*\x1b\\`,
  String.raw`\x1b[ -/]*[0-~]`,
  String.raw`\r\n`,
  String.raw`[\x00-\x08\x0a-\x1a\x1c-\x1f\x7f]`,
].join("|"), "g");
// An escape sequence the chunking cut in two, at the end of a chunk: kept for the next one.
const PARTIAL_ESCAPE = /\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?|[PX^_][^\x1b]*\x1b?|[ -/]*)$/;
const MAX_PENDING = 4096;

/** Renders a terminal's output as a terminal shows it: SGR colours kept across chunks, a
 * carriage return going back to the line's start so what follows overwrites it (progress
 * bars), ESC[K erasing, the rest of the escapes hidden. Finished lines are fixed text; the
 * last, unfinished one is a model of cells re-rendered into `live` (always the last node). */
class AnsiWriter {
  constructor(target) {
    this.target = target;
    this.pending = "";
    this.state = Object.assign({}, SGR_RESET);
    this.line = { chars: [], keys: [], col: 0 };
    this.live = el("span", "terminal-line");
  }

  /** Append `chunk`, wrapped in `into` (an element that gets the chunk's finished lines). */
  write(chunk, into) {
    let text = this.pending + chunk;
    this.pending = "";
    const partial = PARTIAL_ESCAPE.exec(text);
    if (partial && partial[0].length <= MAX_PENDING) {
      this.pending = partial[0];
      text = text.slice(0, partial.index);
    }
    const line = this.line;
    TERMINAL_TOKEN.lastIndex = 0;
    let last = 0;
    let match;
    while ((match = TERMINAL_TOKEN.exec(text)) !== null) {
      const plain = text.slice(last, match.index);
      const token = match[0];
      last = TERMINAL_TOKEN.lastIndex;
      const newline = token === "\n" || token === "\r\n";
      if (newline && line.chars.length === 0 && line.col === 0) {  // the common case
        into.append(this.styled(plain + "\n", this.key()));
        continue;
      }
      this.put(plain);
      if (newline) this.newline(into);
      else if (token === "\r") line.col = 0;
      else if (token === "\b") line.col = Math.max(0, line.col - 1);
      else if (match[2] === "m") this.sgr(match[1]);
      else if (match[2] === "K") this.erase(match[1]);
      else if (match[2] === "G") line.col = Math.max(0, (parseInt(match[1], 10) || 1) - 1);
    }
    this.put(text.slice(last));
    this.live.replaceChildren();
    this.cells(line.chars, line.keys, this.live);
    this.target.append(into, this.live);
  }

  /** Write `text` at the cursor, over what is there. */
  put(text) {
    if (!text) return;
    const line = this.line;
    const key = this.key();
    for (const ch of text) {
      while (line.col > line.chars.length) { line.chars.push(" "); line.keys.push(""); }
      line.chars[line.col] = ch;
      line.keys[line.col] = key;
      line.col += 1;
    }
  }

  newline(into) {
    this.cells(this.line.chars, this.line.keys, into);
    into.append("\n");
    this.line.chars = [];
    this.line.keys = [];
    this.line.col = 0;
  }

  erase(param) {
    const line = this.line;
    const mode = parseInt(param || "0", 10);
    if (mode === 0) {
      line.chars.length = line.keys.length = Math.min(line.chars.length, line.col);
    } else if (mode === 1 || mode === 2) {
      const end = mode === 2 ? line.chars.length : Math.min(line.col + 1, line.chars.length);
      for (let i = 0; i < end; i++) { line.chars[i] = " "; line.keys[i] = ""; }
      if (mode === 2) line.chars.length = line.keys.length = Math.min(line.chars.length, line.col);
    }
  }

  /** Cells as nodes: a span for each run of one style. */
  cells(chars, keys, into) {
    let start = 0;
    for (let i = 1; i <= chars.length; i++) {
      if (i < chars.length && keys[i] === keys[start]) continue;
      into.append(this.styled(chars.slice(start, i).join(""), keys[start]));
      start = i;
    }
  }

  /** The current style as a key: its classes, and `|rgb(…)` for a 256-colour or RGB one. */
  key() {
    const s = this.state;
    const classes = [];
    if (s.fg !== null) classes.push(`ansi-fg-${s.fg}`);
    if (s.bg !== null) classes.push(`ansi-bg-${s.bg}`);
    if (s.bold) classes.push("ansi-bold");
    if (s.dim) classes.push("ansi-dim");
    if (s.italic) classes.push("ansi-italic");
    if (s.underline) classes.push("ansi-underline");
    return classes.join(" ") + (s.rgb ? "|" + s.rgb : "");
  }

  styled(text, key) {
    if (!key) return visible(text);
    const [classes, rgb] = key.split("|");
    const node = el("span", classes || null, text);
    if (rgb) node.style.color = rgb;  // CSSOM: allowed by the page's CSP
    return node;
  }

  sgr(params) {
    const codes = params === "" ? [0] : params.split(/[;:]/).map((p) => parseInt(p || "0", 10));
    const s = this.state;
    for (let i = 0; i < codes.length; i++) {
      const code = codes[i];
      if (code === 0) Object.assign(s, SGR_RESET);
      else if (code === 1) s.bold = true;
      else if (code === 2) s.dim = true;
      else if (code === 3) s.italic = true;
      else if (code === 4) s.underline = true;
      else if (code === 22) s.bold = s.dim = false;
      else if (code === 23) s.italic = false;
      else if (code === 24) s.underline = false;
      else if (code >= 30 && code <= 37) { s.fg = code - 30; s.rgb = null; }
      else if (code >= 90 && code <= 97) { s.fg = code - 90 + 8; s.rgb = null; }
      else if (code === 39) { s.fg = null; s.rgb = null; }
      else if (code >= 40 && code <= 47) s.bg = code - 40;
      else if (code >= 100 && code <= 107) s.bg = code - 100;
      else if (code === 49) s.bg = null;
      else if (code === 38 && codes[i + 1] === 5) {
        const n = codes[i + 2];
        if (n < 16) { s.fg = n; s.rgb = null; } else { s.fg = null; s.rgb = xterm256(n); }
        i += 2;
      } else if (code === 38 && codes[i + 1] === 2) {
        s.fg = null;
        s.rgb = `rgb(${codes[i + 2] || 0}, ${codes[i + 3] || 0}, ${codes[i + 4] || 0})`;
        i += 4;
      } else if (code === 48 && codes[i + 1] === 5) i += 2;
      else if (code === 48 && codes[i + 1] === 2) i += 4;
    }
  }
}

function xterm256(n) {
  if (n >= 232) {
    const level = 8 + (n - 232) * 10;
    return `rgb(${level}, ${level}, ${level})`;
  }
  const c = n - 16;
  const steps = [0, 95, 135, 175, 215, 255];
  return `rgb(${steps[Math.floor(c / 36)]}, ${steps[Math.floor(c / 6) % 6]}, ${steps[c % 6]})`;
}

// -- a run's events ------------------------------------------------------------------------

function renderDiff(diff) {
  const box = el("div", "diff");
  for (const line of diff.replace(/\n$/, "").split("\n")) {
    let kind = "";
    if (line.startsWith("+++") || line.startsWith("---")) kind = "meta";
    else if (line.startsWith("@@")) kind = "hunk";
    else if (line.startsWith("+")) kind = "add";
    else if (line.startsWith("-")) kind = "del";
    else if (line.startsWith("\\")) kind = "meta";
    box.append(el("div", kind, line || " "));
  }
  return box;
}

function toolInputText(tool, input) {
  if (input && typeof input === "object") {
    if (typeof input.cmd === "string") return "$ " + input.cmd;
    if (typeof input.command === "string") return "$ " + input.command;
    if (tool === "apply_patch" && typeof input.input === "string") return null;
  }
  return JSON.stringify(input, null, 2);
}

/** Renders one run's events into `root`, as they come. */
class RunView {
  constructor(root, onStatus) {
    this.root = root;
    this.onStatus = onStatus;
    this.open = null;  // the block streamed text or thinking goes into: {kind, body}
    this.calls = new Map();  // callId -> {card, terminal, writer}
    this.devUrls = new Map();  // url -> its node: linked once (seen opening, then asked for)
    this.startedTs = null;
    this.tokens = { input: 0, output: 0 };
  }

  add(node, event) {
    node.dataset.eventId = String(event.id);
    return node;
  }

  block(node) {
    this.closeStream();
    this.root.append(node);
    return node;
  }

  closeStream() {
    if (this.open && this.open.kind === "thinking") this.open.details.open = false;
    this.open = null;
  }

  stream(kind, event) {
    if (!this.open || this.open.kind !== kind) {
      this.closeStream();
      if (kind === "thinking") {
        const body = el("div", "thinking-body");
        const details = el("details", "event event-thinking", el("summary", null, "thinking"), body);
        details.open = true;
        this.root.append(details);
        this.open = { kind, body, details };
      } else {
        const body = el("div", "event event-text");
        this.root.append(body);
        this.open = { kind, body };
      }
    }
    this.open.body.append(this.add(el("span", null, event.content || ""), event));
  }

  render(event) {
    switch (event.type) {
      case "run_started": {
        this.startedTs = event.ts;
        const node = el("div", "event event-status",
          `▶ ${event.agent} v${event.version}${event.model ? " · " + event.model : ""}`);
        for (const warning of Array.isArray(event.warnings) ? event.warnings : []) {
          node.append(el("div", "event-warning", `⚠ ${typeof warning === "string" ? warning : JSON.stringify(warning)}`));
        }
        this.block(this.add(node, event));
        break;
      }
      case "status":
        this.onStatus(event.status === "resumed" ? "running" : event.status);
        this.block(this.add(el("div", "event event-status", `status: ${event.status}`), event));
        break;
      case "thinking":
        this.stream("thinking", event);
        break;
      case "text":
        this.stream("text", event);
        break;
      case "tool_call": {
        const shown = toolInputText(event.tool, event.input);
        const card = el("div", "event tool",
          el("div", "tool-head", el("span", "tool-name", event.tool), el("span", "muted", event.callId)));
        if (shown !== null) card.append(el("pre", "tool-input", shown));
        this.calls.set(event.callId, { card, terminal: null, writer: null, tool: event.tool });
        this.block(this.add(card, event));
        break;
      }
      case "tool_output": {
        const call = this.callFor(event);
        if (!call.terminal) {
          call.terminal = el("pre", "terminal");
          call.writer = new AnsiWriter(call.terminal);
          call.card.append(call.terminal);
        }
        call.writer.write(event.chunk || "", this.add(el("span", null), event));
        call.terminal.scrollTop = call.terminal.scrollHeight;
        break;
      }
      case "tool_result": {
        const call = this.callFor(event);
        const mark = event.isError ? "✗" : "✓";
        const waiting = event.waitingForInput ? " · waiting for input" : "";
        const result = el("div", `tool-result ${event.isError ? "bad" : "ok"}`,
          `${mark} ${event.tool} · ${duration(event.durationMs)}${waiting}`);
        const output = event.output || "";
        if (output) {
          const details = el("details", null, el("summary", null, "result"), el("pre", null, output));
          details.open = Boolean(event.isError) || (!call.terminal && output.length < 2000);
          result.append(details);
        }
        call.card.append(this.add(result, event));
        break;
      }
      case "file_edit": {
        const what = event.movedFrom ? `${event.movedFrom} → ${event.path}` : event.path;
        const node = el("div", "event file-edit", el("div", "mono", `✎ ${event.action} ${what}`));
        if (event.diff) node.append(renderDiff(event.diff));
        else if (event.note) node.append(el("div", "muted", event.note));
        this.block(this.add(node, event));
        break;
      }
      case "dev_url": {
        if (this.devUrls.has(event.url)) {
          this.block(this.add(el("div", "event event-status muted", `dev URL ${event.url} answered`), event));
          break;
        }
        const link = el("a", null, event.url);
        link.href = event.url;
        link.target = "_blank";
        link.rel = "noopener noreferrer";
        const node = el("div", "event dev-url", "↗ dev URL: ", link);
        this.devUrls.set(event.url, node);
        this.block(this.add(node, event));
        break;
      }
      case "port_closed": {
        const opened = this.devUrls.get(event.url);
        if (opened) {  // no longer a live link
          opened.className = "event dev-url-closed muted";
          opened.append(" (closed)");
          this.devUrls.delete(event.url);
        }
        this.block(this.add(el("div", "event event-status",
          `port ${event.port} closed${event.command ? ` (${event.command})` : ""}`), event));
        break;
      }
      case "input":
        this.block(this.add(el("div", "event event-input", `you: ${event.text}`), event));
        break;
      case "usage":
        this.tokens.input += event.inputTokens || 0;
        this.tokens.output += event.outputTokens || 0;
        this.block(this.add(el("div", "event event-status",
          `tokens: ${count(event.inputTokens)} in / ${count(event.outputTokens)} out`), event));
        break;
      case "error":
        this.block(this.add(el("div", "event event-error", `${event.code}: ${event.message}`), event));
        break;
      case "compaction_started":
        this.block(this.add(el("div", "event event-compaction",
          `⟳ compacting the context (${event.reason}): ${count(event.tokensBefore)} tokens, ` +
          `over the threshold of ${count(event.threshold)} in a ${count(event.contextWindow)}-token window`), event));
        break;
      case "compaction_completed": {
        const parts = [`${count(event.tokensBefore)} → ${count(event.tokensAfter)} tokens`];
        if (event.messagesReplaced) parts.push(`${plural(event.messagesReplaced, "message")} replaced`);
        if (event.summarized) parts.push("older turns summarised");
        if (event.stubbedOutputs) parts.push(`${plural(event.stubbedOutputs, "long tool output")} shortened`);
        this.block(this.add(el("div", "event event-compaction",
          `⟳ context compacted (${event.reason}): ${parts.join(" · ")}`), event));
        break;
      }
      case "compaction_failed":
        this.block(this.add(el("div", "event event-error",
          `⟳ compaction failed (${event.reason}), ${event.code}: ${event.message}`), event));
        break;
      case "complete":
        this.onStatus(event.status);
        this.block(this.add(this.summary(event), event));
        break;
      default:
        this.block(this.add(this.other(event), event));
    }
  }

  /** An event of a type this page does not know (a newer daemon's): its type and payload. */
  other(event) {
    const payload = {};
    for (const [name, value] of Object.entries(event)) if (!ENVELOPE.has(name)) payload[name] = value;
    let shown = JSON.stringify(payload);
    if (shown.length > 2000) shown = shown.slice(0, 2000) + "…";
    return el("div", "event event-other", el("span", "event-type", String(event.type)), " ", el("code", null, shown));
  }

  callFor(event) {
    let call = this.calls.get(event.callId);
    if (!call) {  // its tool_call came before the events we were given
      const card = el("div", "event tool", el("div", "tool-head", el("span", "tool-name", event.tool || "tool")));
      this.block(card);
      call = { card, terminal: null, writer: null, tool: event.tool };
      this.calls.set(event.callId, call);
    }
    return call;
  }

  summary(event) {
    const usage = event.usage || {};
    const took = this.startedTs ? Date.parse(event.ts) - Date.parse(this.startedTs) : NaN;
    const list = el("dl");
    const row = (name, value) => { list.append(el("dt", null, name), el("dd", null, value)); };
    const status = el("dd", null, badge(event.status));
    list.append(el("dt", null, "status"), status);
    row("iterations", String(event.iterations || 0));
    row("tokens", `${count(usage.inputTokens)} in / ${count(usage.outputTokens)} out`);
    if (!Number.isNaN(took)) row("duration", duration(took));
    if (event.devUrl) {
      const link = el("a", null, event.devUrl);
      link.href = event.devUrl;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      list.append(el("dt", null, "dev URL"), el("dd", null, link));
    }
    if (event.files && event.files.length) row("files", event.files.join(", "));
    const node = el("div", "event summary", el("h3", null, "Summary"), list);
    if (event.output) node.append(el("div", "event-text", event.output));
    return node;
  }
}

// -- the page ------------------------------------------------------------------------------

const page = {
  runId: null,
  status: null,
  source: null,
  view: null,
  filesPath: "/",
  refreshTimer: null,
  sending: false,
};

const STACKED = window.matchMedia("(max-width: 800px)");  // style.css stacks the panes there

function showSignIn(message) {
  closeStream();
  $("app").hidden = true;
  $("sign-in").hidden = false;
  $("sign-out").hidden = true;
  const error = $("sign-in-error");
  error.hidden = !session.token;
  setText(error, session.token ? message || "the token was refused" : "");
  $("token").focus();
}

function runInHash() {
  return new URLSearchParams(location.hash.slice(1)).get("run");
}

async function showApp() {
  $("sign-in").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = !session.token;
  await loadAgents();
  await loadRuns();
  if (page.refreshTimer === null) page.refreshTimer = setInterval(() => loadRuns().catch(() => {}), RUNS_REFRESH_MS);
  followHash();
}

/** Open the run the address names (`#run=…`): on load, when it is edited, on Back/Forward. */
function followHash() {
  if ($("app").hidden) return;  // signing in first: showApp comes back here
  const wanted = runInHash();
  if (wanted && (wanted !== page.runId || !page.source)) openRun(wanted, { reveal: true });
  else if (!wanted && page.runId) closeRun();
}

async function loadAgents() {
  const { data } = await api("GET", "/v1/agents");
  const list = $("agents");
  const start = $("start-agent");
  const filter = $("filter-agent");
  const chosen = [start.value, filter.value];
  start.replaceChildren();
  filter.replaceChildren(el("option", null, "all agents"));
  filter.options[0].value = "";
  keepingFocus(list, "data-slug", () => {
    list.replaceChildren();
    for (const agent of data) {
      const model = typeof agent.model === "string" ? agent.model : agent.model.model || "custom";
      const item = listButton(() => { filter.value = agent.slug; start.value = agent.slug; loadRuns(); },
        el("strong", null, agent.slug), el("span", "muted", ` v${agent.version} · ${model}`));
      item.dataset.slug = agent.slug;
      list.append(item);
    }
  });
  for (const agent of data) {
    for (const select of [start, filter]) {
      const option = el("option", null, agent.slug);
      option.value = agent.slug;
      select.append(option);
    }
  }
  if (chosen[0]) start.value = chosen[0];
  filter.value = chosen[1] || "";
}

async function loadRuns() {
  const params = new URLSearchParams({ limit: "50" });
  if ($("filter-agent").value) params.set("agent", $("filter-agent").value);
  if ($("filter-status").value) params.set("status", $("filter-status").value);
  const { data } = await api("GET", "/v1/runs?" + params);
  const body = $("runs").tBodies[0];
  keepingFocus(body, "data-run-id", () => {  // refreshed every few seconds: keep a keyboard user's place
    body.replaceChildren();
    for (const run of data) {
      const usage = run.usage || {};
      const row = el("tr", null,
        el("td", null, badge(run.status)), el("td", null, run.agent),
        el("td", null, age(run.createdAt)),
        el("td", null, count((usage.inputTokens || 0) + (usage.outputTokens || 0))));
      row.dataset.runId = run.runId;
      row.title = visibleString(run.prompt || run.runId);
      operable(row, () => openRun(run.runId, { push: true }));
      body.append(row);
    }
    markSelected();
  });
}

function markSelected() {
  for (const row of $("runs").tBodies[0].rows) {
    const selected = row.dataset.runId === page.runId;
    row.classList.toggle("selected", selected);
    if (selected) row.setAttribute("aria-current", "true");
    else row.removeAttribute("aria-current");
  }
}

function setStatus(status) {
  page.status = status;
  const node = $("run-status");
  node.className = `badge status-${status}`;
  setText(node, status);
  const ended = TERMINAL.has(status);
  $("pause").disabled = ended || status === "paused" || status === "pausing";
  $("resume").disabled = status !== "paused" && status !== "pausing";
  $("cancel").disabled = ended;
  $("input-text").disabled = ended;
  $("input-form").querySelector("button").disabled = ended;
}

/** Before a run is loaded (or when it cannot be): no status, no stream, no files, and no
 * control a click could send to the wrong run. */
function clearRunHeader() {
  page.status = null;
  const node = $("run-status");
  node.className = "badge";
  setText(node, "");
  for (const id of ["pause", "resume", "cancel", "input-text"]) $(id).disabled = true;
  $("input-form").querySelector("button").disabled = true;
  setConnection("");
  setText($("files-path"), "");
  $("files").replaceChildren();
}

function setConnection(text) {
  $("run-connection").textContent = text;
}

function closeStream() {
  if (page.source) page.source.close();
  page.source = null;
}

function closeRun() {
  closeStream();
  page.runId = null;
  page.view = null;
  $("run-view").hidden = true;
  $("run-empty").hidden = false;
  markSelected();
}

/** Show a run and follow its events. `push`: a new history entry (the reader picked it), so
 * Back returns to the run before; `reveal`: scroll to it where the panes are stacked. */
async function openRun(runId, { push = false, reveal = push } = {}) {
  closeStream();
  page.runId = runId;
  page.filesPath = "/";
  const hash = "#run=" + encodeURIComponent(runId);
  if (location.hash !== hash) {
    if (push) history.pushState(null, "", hash);
    else history.replaceState(null, "", hash);
  }
  markSelected();
  $("run-empty").hidden = true;
  $("run-view").hidden = false;
  $("control-error").hidden = true;
  setText($("run-title"), runId);
  clearRunHeader();
  $("file-content").hidden = true;
  const events = $("events");
  events.replaceChildren();
  page.view = new RunView(events, setStatus);
  if (reveal && STACKED.matches) $("run").scrollIntoView({ block: "start" });
  try {
    const { data } = await api("GET", `/v1/runs/${encodeURIComponent(runId)}`);
    if (page.runId !== runId) return;
    setText($("run-title"), `${data.agent} · ${runId}`);
    setStatus(data.status);
  } catch (failure) {
    showControlError(failure);
    return;
  }
  follow(runId);
  loadFiles("/");
}

/** The element that scrolls the run: its pane, or the page where the panes are stacked. */
function runScroller() {
  const pane = $("run");
  return getComputedStyle(pane).overflowY === "visible" ? document.scrollingElement : pane;
}

function follow(runId) {
  let url = `/v1/runs/${encodeURIComponent(runId)}/events`;
  if (session.token) url += "?access_token=" + encodeURIComponent(session.token);
  const source = new EventSource(url);
  const view = page.view;
  const current = () => page.source === source;
  const queue = [];  // events in the order they came, shown one at a time
  let lastId = 0;
  let draining = false;
  page.source = source;
  setConnection("connecting…");

  const show = (event) => {
    lastId = event.id;
    const pane = runScroller();  // follow the run's end unless the reader scrolled up
    const atBottom = pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 40;
    view.render(event);
    if (atBottom) pane.scrollTop = pane.scrollHeight;
    if (event.type === "complete") {
      source.close();
      setConnection("ended");
      loadRuns().catch(() => {});
      loadFiles(page.filesPath);
    }
  };
  const drain = async () => {
    if (draining) return;
    draining = true;
    try {
      while (queue.length && current()) {
        const event = queue.shift();
        if (event.id <= lastId) continue;  // never twice
        // Ids have no holes: one means events of types without a listener came between.
        if (event.id > lastId + 1) await fillGap(runId, lastId, event.id, current, show);
        if (current() && event.id > lastId) show(event);
      }
    } finally {
      draining = false;
    }
  };
  const onFrame = (message) => {
    // The run's `error` events share their name with EventSource's own connection errors,
    // which carry no data: those are handled by onerror.
    if (!current() || typeof message.data !== "string") return;
    let event;
    try { event = JSON.parse(message.data); } catch (_) { return; }
    if (!event || typeof event.id !== "number") return;
    queue.push(event);
    drain();
  };
  for (const type of EVENT_TYPES) source.addEventListener(type, onFrame);
  source.addEventListener("message", onFrame);  // a frame without an event name
  source.onopen = () => {
    if (!current()) return;
    setConnection("live");
    clearNetworkError();  // the daemon answers again
  };
  source.onerror = () => {
    if (!current()) return;
    if (source.readyState === EventSource.CLOSED) {
      setConnection("disconnected");
      showControlError(new ApiFailure(0, "stream", "the event stream was refused; reload the run to try again"));
    } else {
      setConnection("reconnecting…");  // the browser retries, resuming after the last event
    }
  };
}

/** Fetch and show the run's events after `after` and before `before`, which the EventSource
 * did not deliver (no listener for their type): read from the same stream with fetch. */
async function fillGap(runId, after, before, current, show) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), 15000);
  let shown = after;
  try {
    const response = await fetch(`/v1/runs/${encodeURIComponent(runId)}/events?after=${after}`,
      { headers: session.headers({ Accept: "text/event-stream" }), signal: abort.signal });
    if (!response.ok || !response.body) return;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done || !current()) return;
      buffer = (buffer + value).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = frame.split("\n").filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
        if (!data) continue;
        let event;
        try { event = JSON.parse(data); } catch (_) { continue; }
        if (!event || typeof event.id !== "number" || event.id <= shown) continue;
        if (event.id >= before) return;
        show(event);
        shown = event.id;
      }
    }
  } catch (_) {
    // unreachable, or too slow: the page goes on without them
  } finally {
    clearTimeout(timer);
    abort.abort();
    if (current() && shown < before - 1) {
      const missing = before - 1 - shown;
      page.view.block(el("div", "event event-status", `(${plural(missing, "event")} could not be shown)`));
    }
  }
}

function showControlError(failure) {
  const node = $("control-error");
  setText(node, failure.message);
  node.dataset.code = failure.code || "";
  node.hidden = false;
}

function clearNetworkError() {
  const node = $("control-error");
  if (!node.hidden && node.dataset.code === "network") node.hidden = true;
}

/** A control request; whether it succeeded (a failure is shown). */
async function control(action, body) {
  $("control-error").hidden = true;
  try {
    const { data } = await api("POST", `/v1/runs/${encodeURIComponent(page.runId)}/${action}`, body || {});
    if (data && data.status && !TERMINAL.has(page.status)) setStatus(data.status);
    return true;
  } catch (failure) {
    showControlError(failure);
    return false;
  }
}

async function sendInput() {
  const box = $("input-text");
  const text = box.value.trim();
  if (!text || page.sending) return;
  page.sending = true;
  try {
    // Cleared once the daemon took it: on a failure the text stays, to send again.
    if (await control("input", { text }) && box.value.trim() === text) box.value = "";
  } finally {
    page.sending = false;
  }
}

async function loadFiles(path) {
  if (!page.runId) return;
  const runId = page.runId;
  let data;
  try {
    ({ data } = await api("GET", `/v1/runs/${encodeURIComponent(runId)}/files?path=${encodeURIComponent(path)}`));
  } catch (failure) {
    setText($("files-path"), failure.message);
    return;
  }
  if (page.runId !== runId) return;
  page.filesPath = data.path;
  setText($("files-path"), data.path);
  const list = $("files");
  keepingFocus(list, "data-path", () => {
    list.replaceChildren();
    if (data.path !== "/") {
      const up = data.path.replace(/\/[^/]*\/?$/, "") || "/";
      const item = listButton(() => loadFiles(up), "../");
      item.className = "mono";
      item.dataset.path = "..";
      list.append(item);
    }
    const entries = [...data.entries].sort((a, b) => (a.type === "dir" ? 0 : 1) - (b.type === "dir" ? 0 : 1) || a.name.localeCompare(b.name));
    for (const entry of entries) {
      const item = listButton(() => (entry.type === "dir" ? loadFiles(entry.path) : readFile(entry.path)),
        entry.type === "dir" ? `${entry.name}/` : entry.name);
      item.className = "mono";
      item.dataset.path = entry.path;
      list.append(item);
    }
  });
}

async function readFile(path) {
  const view = $("file-content");
  try {
    const { data } = await api("GET", `/v1/runs/${encodeURIComponent(page.runId)}/files/content?path=${encodeURIComponent(path)}`);
    let text = data.encoding === "utf-8" ? data.content : `(binary file, ${data.size} bytes)`;
    if (data.truncated) text += `\n… (${data.size} bytes in all)`;
    setText(view, text);
    view.dataset.path = data.path;
  } catch (failure) {
    setText(view, failure.message);
  }
  view.hidden = false;
}

async function startRun(form) {
  const error = $("start-error");
  error.hidden = true;
  const body = { agent: $("start-agent").value, prompt: $("start-prompt").value, stream: true };
  const thread = $("start-thread").value.trim();
  if (thread) body.threadId = thread;
  // The daemon answers a streamed start with the run's id in its headers as soon as the run
  // is queued; the page then follows it with EventSource and drops this response (the run
  // goes on without it).
  const abort = new AbortController();
  let response;
  try {
    response = await fetch("/v1/run", {
      method: "POST",
      headers: session.headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(body),
      signal: abort.signal,
    });
  } catch (exc) {
    setText(error, `cannot reach the daemon: ${exc.message}`);
    error.hidden = false;
    return;
  }
  if (!response.ok) {
    const failure = await failureOf(response);
    if (response.status === 401) showSignIn(failure.message);
    setText(error, failure.message);
    error.hidden = false;
    return;
  }
  const runId = response.headers.get("X-Run-ID");
  abort.abort();
  form.reset();
  if (runId) {
    await loadRuns().catch(() => {});
    openRun(runId, { push: true });
  }
}

async function boot() {
  fetch("/healthz").then((r) => r.json()).then(({ data }) => {
    setText($("daemon-info"), `${data.version} · sandbox ${data.sandboxId}`);
  }).catch(() => {});
  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    session.set($("token").value.trim());
    try { await showApp(); } catch (_) { /* showSignIn said why */ }
  });
  $("sign-out").addEventListener("click", () => {
    session.set("");
    $("token").value = "";
    showSignIn();
  });
  $("start-form").addEventListener("submit", (event) => { event.preventDefault(); startRun(event.target); });
  $("filter-agent").addEventListener("change", () => loadRuns());
  $("filter-status").addEventListener("change", () => loadRuns());
  $("refresh").addEventListener("click", () => { loadAgents(); loadRuns(); });
  $("pause").addEventListener("click", () => control("pause"));
  $("resume").addEventListener("click", () => control("resume"));
  $("cancel").addEventListener("click", () => control("cancel"));
  $("input-form").addEventListener("submit", (event) => { event.preventDefault(); sendInput(); });
  window.addEventListener("hashchange", followHash);
  try {
    await showApp();
  } catch (failure) {
    if (failure.status !== 401) {
      $("app").hidden = false;
      showControlError(failure);
    }
  }
}

boot();
