"""The base of the HTTP API's models: camelCase on the wire, snake_case in Python."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# Integers from clients are bounded where they reach SQLite or the OS (64-bit there); 2**53-1
# is also the largest integer a JavaScript client can hold exactly.
MAX_INT = 2**53 - 1


class WireModel(BaseModel):
    # defer_build: validators are built on first use, not at import (daemon start-up time).
    model_config = ConfigDict(
        populate_by_name=True, serialize_by_alias=True, extra="forbid", defer_build=True
    )
