// agentd's run viewer: plain JavaScript, no build step, nothing loaded from elsewhere.
// Talks to the same HTTP API as every client (GET /v1/agents, /v1/runs, POST /v1/run, the
// controls) and follows a run over EventSource (`?access_token=` since EventSource cannot
// send headers; the browser reconnects by itself with Last-Event-ID). Every piece of data
// from the daemon is put into the page as text (textContent), never as HTML.
"use strict";

const TOKEN_KEY = "agentd.token";
const EVENT_TYPES = [
  "run_started", "status", "thinking", "text", "tool_call", "tool_output", "tool_result",
  "file_edit", "dev_url", "port_closed", "input", "usage", "error", "complete",
];
const TERMINAL = new Set(["completed", "failed", "cancelled", "interrupted"]);
const RUNS_REFRESH_MS = 5000;

const $ = (id) => document.getElementById(id);

/** An element with a class and children (strings become text nodes). */
function el(tag, className, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
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

// -- ANSI colours in the terminal pane -----------------------------------------------------

/** Renders a terminal's output, keeping the SGR state (colours) across chunks. */
class AnsiWriter {
  constructor(target) {
    this.target = target;
    this.pending = "";
    this.state = { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, rgb: null };
  }

  /** Append `chunk`, wrapped in `into` (an element that gets the chunk's spans). */
  write(chunk, into) {
    let text = this.pending + chunk.replace(/\r\n/g, "\n");
    this.pending = "";
    const partial = text.match(/\x1b(\[[0-9;?]*)?$/);
    if (partial) {  // an escape cut in two by the chunking: keep it for the next chunk
      this.pending = partial[0];
      text = text.slice(0, partial.index);
    }
    const escape = /\x1b\[([0-9;?]*)([A-Za-z])|\x1b[()][A-Za-z0-9]|\x1b[=>]|\r(?!\n)/g;
    let last = 0;
    let match;
    while ((match = escape.exec(text)) !== null) {
      this.span(text.slice(last, match.index), into);
      if (match[2] === "m") this.sgr(match[1]);
      last = escape.lastIndex;
    }
    this.span(text.slice(last), into);
    this.target.append(into);
  }

  span(text, into) {
    if (!text) return;
    const s = this.state;
    const classes = [];
    if (s.fg !== null) classes.push(`ansi-fg-${s.fg}`);
    if (s.bg !== null) classes.push(`ansi-bg-${s.bg}`);
    if (s.bold) classes.push("ansi-bold");
    if (s.dim) classes.push("ansi-dim");
    if (s.italic) classes.push("ansi-italic");
    if (s.underline) classes.push("ansi-underline");
    if (!classes.length && !s.rgb) {
      into.append(document.createTextNode(text));
      return;
    }
    const node = el("span", classes.join(" "), text);
    if (s.rgb) node.style.color = s.rgb;  // CSSOM: allowed by the page's CSP
    into.append(node);
  }

  sgr(params) {
    const codes = params === "" ? [0] : params.split(";").map((p) => parseInt(p || "0", 10));
    const s = this.state;
    for (let i = 0; i < codes.length; i++) {
      const code = codes[i];
      if (code === 0) Object.assign(s, { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, rgb: null });
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
      case "run_started":
        this.startedTs = event.ts;
        this.block(this.add(el("div", "event event-status",
          `▶ ${event.agent} v${event.version}${event.model ? " · " + event.model : ""}`), event));
        break;
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
      case "complete":
        this.onStatus(event.status);
        this.block(this.add(this.summary(event), event));
        break;
      default:
        this.block(this.add(el("div", "event event-status", `${event.type}`), event));
    }
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
  lastId: 0,
  view: null,
  filesPath: "/",
  refreshTimer: null,
};

function showSignIn(message) {
  closeStream();
  $("app").hidden = true;
  $("sign-in").hidden = false;
  $("sign-out").hidden = true;
  const error = $("sign-in-error");
  error.hidden = !session.token;
  error.textContent = session.token ? message || "the token was refused" : "";
  $("token").focus();
}

async function showApp() {
  $("sign-in").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = !session.token;
  await loadAgents();
  await loadRuns();
  if (page.refreshTimer === null) page.refreshTimer = setInterval(() => loadRuns().catch(() => {}), RUNS_REFRESH_MS);
  const wanted = new URLSearchParams(location.hash.slice(1)).get("run");
  if (wanted && wanted !== page.runId) openRun(wanted);
}

async function loadAgents() {
  const { data } = await api("GET", "/v1/agents");
  const list = $("agents");
  list.replaceChildren();
  const start = $("start-agent");
  const filter = $("filter-agent");
  const chosen = [start.value, filter.value];
  start.replaceChildren();
  filter.replaceChildren(el("option", null, "all agents"));
  filter.options[0].value = "";
  for (const agent of data) {
    const model = typeof agent.model === "string" ? agent.model : agent.model.model || "custom";
    const item = el("li", null, el("strong", null, agent.slug), el("span", "muted", ` v${agent.version} · ${model}`));
    item.dataset.slug = agent.slug;
    item.addEventListener("click", () => { filter.value = agent.slug; start.value = agent.slug; loadRuns(); });
    list.append(item);
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
  body.replaceChildren();
  for (const run of data) {
    const usage = run.usage || {};
    const row = el("tr", run.runId === page.runId ? "selected" : null,
      el("td", null, badge(run.status)), el("td", null, run.agent),
      el("td", null, age(run.createdAt)),
      el("td", null, count((usage.inputTokens || 0) + (usage.outputTokens || 0))));
    row.dataset.runId = run.runId;
    row.title = run.prompt || run.runId;
    row.addEventListener("click", () => openRun(run.runId));
    body.append(row);
  }
}

function setStatus(status) {
  page.status = status;
  const node = $("run-status");
  node.className = `badge status-${status}`;
  node.textContent = status;
  const ended = TERMINAL.has(status);
  $("pause").disabled = ended || status === "paused" || status === "pausing";
  $("resume").disabled = status !== "paused" && status !== "pausing";
  $("cancel").disabled = ended;
  $("input-text").disabled = ended;
  $("input-form").querySelector("button").disabled = ended;
}

function setConnection(text) {
  $("run-connection").textContent = text;
}

function closeStream() {
  if (page.source) page.source.close();
  page.source = null;
}

async function openRun(runId) {
  closeStream();
  page.runId = runId;
  page.lastId = 0;
  page.filesPath = "/";
  history.replaceState(null, "", "#run=" + encodeURIComponent(runId));
  for (const row of $("runs").tBodies[0].rows) row.classList.toggle("selected", row.dataset.runId === runId);
  $("run-empty").hidden = true;
  $("run-view").hidden = false;
  $("control-error").hidden = true;
  $("run-title").textContent = runId;
  const events = $("events");
  events.replaceChildren();
  page.view = new RunView(events, setStatus);
  try {
    const { data } = await api("GET", `/v1/runs/${encodeURIComponent(runId)}`);
    if (page.runId !== runId) return;
    $("run-title").textContent = `${data.agent} · ${runId}`;
    setStatus(data.status);
  } catch (failure) {
    showControlError(failure);
    return;
  }
  follow(runId);
  loadFiles("/");
}

function follow(runId) {
  let url = `/v1/runs/${encodeURIComponent(runId)}/events`;
  if (session.token) url += "?access_token=" + encodeURIComponent(session.token);
  const source = new EventSource(url);
  page.source = source;
  setConnection("connecting…");
  const onFrame = (message) => {
    // The run's `error` events share their name with EventSource's own connection errors,
    // which carry no data: those are handled by onerror.
    if (page.source !== source || typeof message.data !== "string") return;
    const event = JSON.parse(message.data);
    if (event.id <= page.lastId) return;  // never twice
    page.lastId = event.id;
    const pane = $("run");  // follow the run's end unless the reader scrolled up
    const atBottom = pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 40;
    page.view.render(event);
    if (atBottom) pane.scrollTop = pane.scrollHeight;
    if (event.type === "complete") {
      source.close();
      setConnection("ended");
      loadRuns().catch(() => {});
      loadFiles(page.filesPath);
    }
  };
  for (const type of EVENT_TYPES) source.addEventListener(type, onFrame);
  source.addEventListener("message", onFrame);
  source.onopen = () => { if (page.source === source) setConnection("live"); };
  source.onerror = () => {
    if (page.source !== source) return;
    if (source.readyState === EventSource.CLOSED) {
      setConnection("disconnected");
      showControlError(new ApiFailure(0, "stream", "the event stream was refused; reload the run to try again"));
    } else {
      setConnection("reconnecting…");  // the browser retries, resuming after the last event
    }
  };
}

function showControlError(failure) {
  const node = $("control-error");
  node.textContent = failure.message;
  node.hidden = false;
}

async function control(action, body) {
  $("control-error").hidden = true;
  try {
    const { data } = await api("POST", `/v1/runs/${encodeURIComponent(page.runId)}/${action}`, body || {});
    if (data && data.status && !TERMINAL.has(page.status)) setStatus(data.status);
  } catch (failure) {
    showControlError(failure);
  }
}

async function loadFiles(path) {
  if (!page.runId) return;
  const runId = page.runId;
  let data;
  try {
    ({ data } = await api("GET", `/v1/runs/${encodeURIComponent(runId)}/files?path=${encodeURIComponent(path)}`));
  } catch (failure) {
    $("files-path").textContent = failure.message;
    return;
  }
  if (page.runId !== runId) return;
  page.filesPath = data.path;
  $("files-path").textContent = data.path;
  const list = $("files");
  list.replaceChildren();
  if (data.path !== "/") {
    const up = data.path.replace(/\/[^/]*\/?$/, "") || "/";
    const item = el("li", "mono", "../");
    item.addEventListener("click", () => loadFiles(up));
    list.append(item);
  }
  const entries = [...data.entries].sort((a, b) => (a.type === "dir" ? 0 : 1) - (b.type === "dir" ? 0 : 1) || a.name.localeCompare(b.name));
  for (const entry of entries) {
    const item = el("li", "mono", entry.type === "dir" ? `${entry.name}/` : entry.name);
    item.dataset.path = entry.path;
    item.addEventListener("click", () => (entry.type === "dir" ? loadFiles(entry.path) : readFile(entry.path)));
    list.append(item);
  }
}

async function readFile(path) {
  const view = $("file-content");
  try {
    const { data } = await api("GET", `/v1/runs/${encodeURIComponent(page.runId)}/files/content?path=${encodeURIComponent(path)}`);
    let text = data.encoding === "utf-8" ? data.content : `(binary file, ${data.size} bytes)`;
    if (data.truncated) text += `\n… (${data.size} bytes in all)`;
    view.textContent = text;
    view.dataset.path = data.path;
  } catch (failure) {
    view.textContent = failure.message;
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
    error.textContent = `cannot reach the daemon: ${exc.message}`;
    error.hidden = false;
    return;
  }
  if (!response.ok) {
    const failure = await failureOf(response);
    if (response.status === 401) showSignIn(failure.message);
    error.textContent = failure.message;
    error.hidden = false;
    return;
  }
  const runId = response.headers.get("X-Run-ID");
  abort.abort();
  form.reset();
  if (runId) {
    await loadRuns().catch(() => {});
    openRun(runId);
  }
}

async function boot() {
  fetch("/healthz").then((r) => r.json()).then(({ data }) => {
    $("daemon-info").textContent = `${data.version} · sandbox ${data.sandboxId}`;
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
  $("input-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("input-text").value.trim();
    if (!text) return;
    $("input-text").value = "";
    control("input", { text });
  });
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
