"""The counters runs report to, rendered by `/metrics`."""

from __future__ import annotations

from collections import Counter

from runtime.usage import Usage


class RunMetrics:
    """Plain counters for `/metrics`, all starting at zero (a plain class: see
    `runtime.api.metrics.Histogram`)."""

    def __init__(self) -> None:
        self.runs_started = 0
        self.runs_finished: Counter[str] = Counter()
        self.events_emitted = 0
        self.model_turns = 0
        self.model_seconds = 0.0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached_input_tokens = 0
        self.reasoning_tokens = 0
        self.tool_calls: Counter[str] = Counter()
        self.tool_errors: Counter[str] = Counter()
        # Float seconds in a Counter (it adds any numbers), the shape /metrics renders.
        self.tool_seconds: Counter[str] = Counter()
        self.running = 0
        self.queued = 0

    def tool_call_finished(self, tool: str, seconds: float, is_error: bool) -> None:
        self.tool_calls[tool] += 1
        self.tool_seconds[tool] += seconds  # type: ignore[assignment]
        if is_error:
            self.tool_errors[tool] += 1

    def model_turn_finished(self, usage: Usage, seconds: float) -> None:
        self.model_turns += 1
        self.model_seconds += seconds
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cached_input_tokens += usage.cached_input_tokens
        self.reasoning_tokens += usage.reasoning_tokens
