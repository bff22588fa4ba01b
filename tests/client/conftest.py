"""The client is tested against the same real daemon as the API (tests/api/conftest.py)."""

from __future__ import annotations

from tests.api.conftest import daemon, make_daemon, model_server

__all__ = ["daemon", "make_daemon", "model_server"]
