"""A run's conversation as it is stored and shown: redacted, with its tool calls listed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runtime.events import Redactor

if TYPE_CHECKING:
    from runtime.messages import Message, ToolCallPart, ToolResultPart


def redact_message(message: Message, redactor: Redactor) -> Message:
    """A copy of `message` with every secret `redactor` knows replaced."""
    from runtime.messages import Message  # loaded with the run machinery

    return Message.model_validate(redactor.redact_obj(message.model_dump()))


def tool_calls(messages: list[Message]) -> list[dict[str, Any]]:
    """Every tool call of the conversation with its result (wire shape), in call order."""
    results: dict[str, ToolResultPart] = {
        part.call_id: part for m in messages for part in m.tool_results
    }
    calls: list[ToolCallPart] = [part for m in messages for part in m.tool_calls]
    return [
        {
            "callId": c.id,
            "tool": c.name,
            "input": c.arguments if c.raw_arguments is None else {"rawArguments": c.raw_arguments},
            "output": results[c.id].output if c.id in results else None,
            "isError": results[c.id].is_error if c.id in results else None,
        }
        for c in calls
    ]
