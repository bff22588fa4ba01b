"""Run events: the event model (`model`), secret redaction (`redaction`) and the per-run
`EventLog` with its subscribers (`log`).

The log depends on its store only through the small `EventStore` protocol (append one event,
read a run's events after an id), so data flows one way: the store imports the event model,
never the log, and nothing here imports the store.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from runtime.events.redaction import (
    LOG_SECRETS,
    MIN_SECRET_LENGTH,
    REDACTED,
    Redactor,
    SecretRegistry,
    StreamRedactor,
)

if TYPE_CHECKING:
    from runtime.events.log import (
        COALESCE_WINDOW,
        EventLog,
        EventLogClosed,
        EventStore,
        SubscriberDropped,
        Subscription,
    )
    from runtime.events.model import (
        ENVELOPE_KEYS,
        EVENT_TYPES,
        PAYLOAD_MODELS,
        TERMINAL_EVENT,
        Event,
        EventPayloadError,
        validate_payload,
    )

# The event model (two dozen pydantic classes) and the log load on first use: a starting
# daemon needs neither until a run starts or a dead daemon's run is recovered, and the
# redaction it needs at once (LOG_SECRETS) is imported above.
_LAZY = {
    name: "runtime.events.log"
    for name in (
        "COALESCE_WINDOW",
        "EventLog",
        "EventLogClosed",
        "EventStore",
        "SubscriberDropped",
        "Subscription",
    )
} | {
    name: "runtime.events.model"
    for name in (
        "ENVELOPE_KEYS",
        "EVENT_TYPES",
        "PAYLOAD_MODELS",
        "TERMINAL_EVENT",
        "Event",
        "EventPayloadError",
        "validate_payload",
    )
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "COALESCE_WINDOW",
    "ENVELOPE_KEYS",
    "EVENT_TYPES",
    "LOG_SECRETS",
    "MIN_SECRET_LENGTH",
    "PAYLOAD_MODELS",
    "REDACTED",
    "TERMINAL_EVENT",
    "Event",
    "EventLog",
    "EventLogClosed",
    "EventPayloadError",
    "EventStore",
    "Redactor",
    "SecretRegistry",
    "StreamRedactor",
    "SubscriberDropped",
    "Subscription",
    "validate_payload",
]
