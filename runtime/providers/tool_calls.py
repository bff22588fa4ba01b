"""Tool-call arguments as models stream them: JSON text that may be empty or invalid.

A malformed call must not crash the turn: it becomes a `ToolCallPart` with `arguments={}`
and the text kept in `raw_arguments`, so the loop can answer the model with a tool error.
"""

from __future__ import annotations

import json
from typing import Any

from runtime.messages import ToolCallPart


def parse_tool_call(
    call_id: str, name: str, raw: str, meta: dict[str, Any] | None = None
) -> ToolCallPart:
    """Build the call from its streamed argument text ("" means no arguments)."""
    if not raw.strip():
        return ToolCallPart(id=call_id, name=name, arguments={}, meta=meta or {})
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return ToolCallPart(id=call_id, name=name, arguments=value, meta=meta or {})
    return ToolCallPart(id=call_id, name=name, arguments={}, raw_arguments=raw, meta=meta or {})


def arguments_json(call: ToolCallPart) -> str:
    """The argument text to send back to an API: what the model sent, when it was not valid."""
    if call.raw_arguments is not None:
        return call.raw_arguments
    return json.dumps(call.arguments, ensure_ascii=False)
