"""The counters runs report to, rendered by `/metrics`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from runtime.usage import Usage


@dataclass
class RunMetrics:
    """Plain counters for `/metrics`."""

    runs_started: int = 0
    runs_finished: Counter[str] = field(default_factory=Counter)
    events_emitted: int = 0
    model_turns: int = 0
    model_seconds: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    tool_calls: Counter[str] = field(default_factory=Counter)
    tool_errors: Counter[str] = field(default_factory=Counter)
    # Float seconds in a Counter (it adds any numbers), the shape /metrics renders.
    tool_seconds: Counter[str] = field(default_factory=Counter)
    running: int = 0
    queued: int = 0

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
