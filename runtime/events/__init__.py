"""Run events: the event model (`model`), secret redaction (`redaction`) and the per-run
`EventLog` with its subscribers (`log`).

The log depends on its store only through the small `EventStore` protocol (append one event,
read a run's events after an id), so data flows one way: the store imports the event model,
never the log, and nothing here imports the store.
"""

from __future__ import annotations

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
from runtime.events.redaction import (
    LOG_SECRETS,
    MIN_SECRET_LENGTH,
    REDACTED,
    Redactor,
    SecretRegistry,
    StreamRedactor,
)

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
