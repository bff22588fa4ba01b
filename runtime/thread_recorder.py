"""One run's part of its thread's events, derived from what the run already produces.

The run lifecycle tells a `ThreadRecorder` when the run starts, every batch of messages it
appends to the thread (already redacted, exactly what the thread stores and a continuation
sends to the model), and how it ends; and it shows the recorder each run event as it is
emitted. From those the recorder makes the thread's events:

- the run starts → `run_started`;
- a user message is appended → `user_message`;
- `text` / `thinking` deltas → live `assistant_message_delta` / `assistant_thinking_delta`;
- an assistant message is appended → `assistant_message`, then one `tool_call` per call;
- the `tool_call` / `tool_output` / `tool_result` run events → live `tool_call_started` /
  `tool_output_delta` / `tool_call_completed`;
- a tool message is appended → one `tool_result` per result (with the measured `durationMs`);
- the run ends → `run_completed {status, usage, iterations, result, error}`.

Persisted message events are written at the conversation's commit points (the loop commits an
assistant message with its tool results), so the rollout never holds half a step and a thread
continued from it is valid for every provider; the live events show the step as it happens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runtime.ids import new_id
from runtime.messages import Message
from runtime.thread_events import PersistedThreadEvent, RunCompletedStatus, message_events
from runtime.thread_log import ThreadEventLog
from runtime.usage import Usage

_LIVE_FROM_RUN_EVENT = {
    "text": "assistant_message_delta",
    "thinking": "assistant_thinking_delta",
    "tool_call": "tool_call_started",
    "tool_output": "tool_output_delta",
    "tool_result": "tool_call_completed",
}


class ThreadRecorder:
    """Writes one run's thread events to its thread's log. `rollout_id` names this attempt
    (new for every run)."""

    def __init__(self, log: ThreadEventLog, run_id: str, rollout_id: str | None = None) -> None:
        self.log = log
        self.run_id = run_id
        self.rollout_id = rollout_id or new_id("rol")
        self.started = False
        self.completed = False
        self._durations: dict[str, float] = {}

    async def _append(
        self, events: list[tuple[str, Mapping[str, Any]]]
    ) -> list[PersistedThreadEvent]:
        return await self.log.append(self.run_id, self.rollout_id, events)

    async def run_started(self, *, agent: str, version: int, model: str | None) -> None:
        await self._append([("run_started", {"agent": agent, "version": version, "model": model})])
        self.started = True

    async def messages_appended(self, messages: list[Message]) -> None:
        """The run appended `messages` (redacted) to the thread's conversation."""
        await self._append(list(message_events(messages, self._durations)))
        for message in messages:
            for result in message.tool_results:
                self._durations.pop(result.call_id, None)

    def run_event(self, type: str, payload: Mapping[str, Any]) -> None:
        """A run event was emitted (already redacted): publish its live counterpart."""
        live = _LIVE_FROM_RUN_EVENT.get(type)
        if live is None:
            return
        if type in ("text", "thinking"):
            self.log.publish(self.run_id, live, {"text": payload.get("content", "")})
        elif type == "tool_call":
            self.log.publish(
                self.run_id,
                live,
                {
                    "callId": payload["callId"],
                    "tool": payload["tool"],
                    "input": payload.get("input"),
                },
            )
        elif type == "tool_output":
            self.log.publish(
                self.run_id, live, {"callId": payload["callId"], "chunk": payload["chunk"]}
            )
        else:
            duration = float(payload.get("durationMs", 0))
            self._durations[str(payload["callId"])] = duration
            self.log.publish(
                self.run_id,
                live,
                {
                    "callId": payload["callId"],
                    "tool": payload["tool"],
                    "isError": bool(payload.get("isError", False)),
                    "durationMs": duration,
                },
            )

    async def run_completed(
        self,
        *,
        status: RunCompletedStatus,
        usage: Usage,
        iterations: int,
        result: str | None,
        error: Mapping[str, Any] | None,
    ) -> None:
        """The run's last thread event; then the rollout is made durable (fsync)."""
        payload = {
            "status": status,
            "usage": usage.model_dump(by_alias=True),
            "iterations": iterations,
            "result": result,
            "error": None
            if error is None
            else {"code": error["code"], "message": error["message"]},
        }
        await self._append([("run_completed", payload)])
        self.completed = True
        await self.log.sync()


__all__ = ["ThreadRecorder"]
