"""`GET /metrics`: the daemon's counters in the Prometheus text exposition format (0.0.4).

Run, model and tool figures come from the RunManager's `metrics` (counted by the loop and
the manager as runs happen); the API counts what only it sees: HTTP requests, SSE clients
and frames, tool calls made directly through `POST /v1/tools/{name}`, webhook deliveries.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime.runs import RunManager

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Labels = tuple[tuple[str, str], ...]


class Histogram:
    """Latencies counted into `buckets` (upper bounds, seconds), with their sum and count.

    This class and the metrics' (`ApiMetrics`, `RunMetrics`) are plain classes rather than
    dataclasses: they are made at start-up, where a dataclass's generated methods cost ~0.6 ms
    each class to compile, and their counters always start at zero."""

    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts: list[int] = []
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1


class ApiMetrics:
    """What the API layer counts itself."""

    def __init__(self) -> None:
        self.http_requests: Counter[tuple[str, str, int]] = Counter()
        self.http_latency: dict[str, Histogram] = {}
        self.sse_clients = 0
        self.sse_events_sent = 0
        self.tool_calls: Counter[str] = Counter()
        self.tool_errors: Counter[str] = Counter()
        self.tool_seconds: defaultdict[str, float] = defaultdict(float)
        self.webhook_deliveries: Counter[tuple[str, str]] = Counter()

    def request_finished(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_requests[(method, route, status)] += 1
        self.http_latency.setdefault(route, Histogram()).observe(seconds)

    def tool_call_finished(self, tool: str, seconds: float, is_error: bool) -> None:
        self.tool_calls[tool] += 1
        self.tool_seconds[tool] += seconds
        if is_error:
            self.tool_errors[tool] += 1

    def webhook_finished(self, event: str, outcome: str) -> None:
        self.webhook_deliveries[(event, outcome)] += 1


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, labels: Labels = ()) -> None:
        label_text = ""
        if labels:
            label_text = "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"
        self.lines.append(f"{name}{label_text} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render(
    api: ApiMetrics,
    manager: RunManager | None,
    *,
    version: str,
    sandbox_id: str,
    statuses: Iterable[str] = (),
) -> str:
    out = _Writer()
    out.family("agentd_info", "gauge", "The daemon's version and sandbox id.")
    out.sample("agentd_info", 1, (("version", version), ("sandbox_id", sandbox_id)))
    out.family("agentd_ready", "gauge", "1 once the store is open and runs are accepted.")
    out.sample("agentd_ready", 1 if manager is not None else 0)
    tools: list[ToolCounters] = []
    if manager is not None:
        _render_runs(out, manager, statuses)
        m = manager.metrics
        tools.append(("run", m.tool_calls, m.tool_errors, m.tool_seconds))
    tools.append(("api", api.tool_calls, api.tool_errors, api.tool_seconds))
    _render_tools(out, tools)
    _render_api(out, api)
    return out.text()


def _render_runs(out: _Writer, manager: RunManager, statuses: Iterable[str]) -> None:
    m = manager.metrics
    active = manager.active_runs()
    out.family("agentd_runs_started_total", "counter", "Runs started.")
    out.sample("agentd_runs_started_total", m.runs_started)
    out.family("agentd_runs_finished_total", "counter", "Runs finished, by final status.")
    for status in sorted(set(m.runs_finished) | {"completed", "failed", "cancelled"}):
        out.sample("agentd_runs_finished_total", m.runs_finished[status], (("status", status),))
    by_status = Counter(run.status for run in active)
    out.family("agentd_runs_active", "gauge", "Runs not finished yet, by status.")
    for status in sorted(set(by_status) | set(statuses)):
        out.sample("agentd_runs_active", by_status[status], (("status", status),))
    out.family("agentd_active_sessions", "gauge", "Live processes (PTY sessions) of tools.")
    out.sample("agentd_active_sessions", manager.active_sessions())
    out.family("agentd_events_emitted_total", "counter", "Events emitted by runs.")
    out.sample(
        "agentd_events_emitted_total", m.events_emitted + sum(r.events.last_id for r in active)
    )
    out.family("agentd_model_turns_total", "counter", "Model turns completed.")
    out.sample("agentd_model_turns_total", m.model_turns)
    out.family("agentd_model_seconds_total", "counter", "Seconds spent in model turns.")
    out.sample("agentd_model_seconds_total", float(m.model_seconds))
    out.family("agentd_model_tokens_total", "counter", "Model tokens, by kind.")
    for kind, value in (
        ("input", m.input_tokens),
        ("output", m.output_tokens),
        ("cached_input", m.cached_input_tokens),
        ("reasoning", m.reasoning_tokens),
    ):
        out.sample("agentd_model_tokens_total", value, (("kind", kind),))


ToolCounters = tuple[str, Counter[str], Counter[str], Mapping[str, float]]


def _render_tools(out: _Writer, sources: list[ToolCounters]) -> None:
    """Tool calls by tool and source (`run`: called by a model; `api`: POST /v1/tools)."""
    out.family("agentd_tool_calls_total", "counter", "Tool calls, by tool and source.")
    for source, calls, _, _ in sources:
        for tool in sorted(calls):
            out.sample("agentd_tool_calls_total", calls[tool], (("tool", tool), ("source", source)))
    out.family("agentd_tool_errors_total", "counter", "Tool calls that returned an error.")
    for source, calls, errors, _ in sources:
        for tool in sorted(calls):
            out.sample(
                "agentd_tool_errors_total", errors[tool], (("tool", tool), ("source", source))
            )
    out.family("agentd_tool_call_duration_seconds", "summary", "Time spent in tool calls, by tool.")
    for source, calls, _, seconds in sources:
        for tool in sorted(calls):
            labels = (("tool", tool), ("source", source))
            out.sample(
                "agentd_tool_call_duration_seconds_sum", float(seconds.get(tool, 0.0)), labels
            )
            out.sample("agentd_tool_call_duration_seconds_count", calls[tool], labels)


def _render_api(out: _Writer, api: ApiMetrics) -> None:
    out.family("agentd_http_requests_total", "counter", "HTTP requests, by route and status.")
    for (method, route, status), count in sorted(api.http_requests.items()):
        out.sample(
            "agentd_http_requests_total",
            count,
            (("method", method), ("route", route), ("status", str(status))),
        )
    out.family("agentd_http_request_duration_seconds", "histogram", "HTTP handling time, by route.")
    for route, hist in sorted(api.http_latency.items()):
        counts = hist.counts or [0] * len(hist.buckets)
        for bound, count in zip(hist.buckets, counts, strict=True):
            out.sample(
                "agentd_http_request_duration_seconds_bucket",
                count,
                (("route", route), ("le", _number(float(bound)))),
            )
        out.sample(
            "agentd_http_request_duration_seconds_bucket",
            hist.count,
            (("route", route), ("le", "+Inf")),
        )
        out.sample("agentd_http_request_duration_seconds_sum", hist.total, (("route", route),))
        out.sample("agentd_http_request_duration_seconds_count", hist.count, (("route", route),))
    out.family("agentd_sse_clients", "gauge", "Connected event-stream clients.")
    out.sample("agentd_sse_clients", api.sse_clients)
    out.family("agentd_sse_events_sent_total", "counter", "Events written to SSE clients.")
    out.sample("agentd_sse_events_sent_total", api.sse_events_sent)
    out.family("agentd_webhook_deliveries_total", "counter", "Webhook attempts, by outcome.")
    for (event, outcome), count in sorted(api.webhook_deliveries.items()):
        out.sample(
            "agentd_webhook_deliveries_total", count, (("event", event), ("outcome", outcome))
        )
