"""Secret redaction: whole texts and objects (`Redactor`), and text that arrives in chunks
(`StreamRedactor`), where a secret may be split across two chunks."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from typing import Any

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 4


class Redactor:
    """Replaces secret values with `[REDACTED]`.

    Values shorter than `min_length` are ignored (redacting "1" everywhere would destroy
    text without protecting anything). A secret's JSON-escaped forms are redacted too, so it
    is caught inside tool output that is itself JSON (with or without `\\uXXXX` escapes)."""

    def __init__(
        self,
        secrets: Iterable[str],
        *,
        min_length: int = MIN_SECRET_LENGTH,
        replacement: str = REDACTED,
    ) -> None:
        values: set[str] = set()
        for secret in secrets:
            if not isinstance(secret, str) or len(secret) < min_length:
                continue
            values.add(secret)
            for ascii_only in (False, True):
                values.add(json.dumps(secret, ensure_ascii=ascii_only)[1:-1])
        # Longest first: at any position the regex takes the longest secret that matches.
        self.secrets: tuple[str, ...] = tuple(sorted(values, key=lambda s: (-len(s), s)))
        self.replacement = replacement
        self._pattern = re.compile("|".join(map(re.escape, self.secrets))) if values else None
        self._prefixes = frozenset(s[:i] for s in self.secrets for i in range(1, len(s)))
        self._longest = max((len(s) for s in self.secrets), default=0)

    def __bool__(self) -> bool:
        return self._pattern is not None

    def redact(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(self.replacement, text)

    def redact_obj(self, obj: Any) -> Any:
        """A copy of `obj` (dicts, lists, tuples, nested) with every string redacted."""
        if self._pattern is None:
            return obj
        if isinstance(obj, str):
            return self.redact(obj)
        if isinstance(obj, dict):
            return {
                (self.redact(k) if isinstance(k, str) else k): self.redact_obj(v)
                for k, v in obj.items()
            }
        if isinstance(obj, list):
            return [self.redact_obj(v) for v in obj]
        if isinstance(obj, tuple):
            return tuple(self.redact_obj(v) for v in obj)
        return obj

    def stream(self) -> StreamRedactor:
        return StreamRedactor(self)

    def hold_from(self, buf: str) -> int:
        """Where the part of `buf` that might still become a secret begins (`len(buf)` when
        none of it might): what a stream must hold back until more text arrives."""
        cut = len(buf)
        for start in range(max(0, len(buf) - self._longest + 1), len(buf)):
            if buf[start:] in self._prefixes:
                cut = start
                break
        if self._pattern is not None:
            for match in self._pattern.finditer(buf):
                if match.start() >= cut:
                    break
                if match.end() > cut:
                    # A complete secret that a longer one might extend: keep it whole.
                    cut = match.start()
                    break
        return cut


class StreamRedactor:
    """Redacts a text that arrives in chunks, catching secrets split across chunks.

    `feed` returns the redacted text that can safely go out now; it holds back only the tail
    that could be the start of a secret. `flush` returns the rest. The concatenated outputs
    equal `redactor.redact(whole text)`."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._buf = ""

    @property
    def pending(self) -> str:
        """Raw text held back (not yet redacted or returned)."""
        return self._buf

    def feed(self, chunk: str) -> str:
        if not self._redactor:
            return chunk
        buf = self._buf + chunk
        cut = self._redactor.hold_from(buf)
        self._buf = buf[cut:]
        return self._redactor.redact(buf[:cut])

    def flush(self) -> str:
        buf, self._buf = self._buf, ""
        return self._redactor.redact(buf)


class SecretRegistry:
    """Every secret value this process has used, for redacting its log.

    Logging is process-wide (one handler on the root logger, records from any thread), so
    what it must hide is too: the daemon registers its own secrets at start-up and the run
    side adds each run's credentials (an agent's `secrets`, API keys, a custom model's key)
    before the run uses them. The log filter only reads it (`redactor()`); nothing is ever
    removed, since a value once in use can still turn up in a late log line (a dying process's
    error, a retried request). Safe to call from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._redactor = Redactor(())

    def add(self, secrets: Iterable[str]) -> None:
        fresh = {s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_LENGTH}
        with self._lock:
            if fresh <= self._values:
                return
            self._values |= fresh
            self._redactor = Redactor(self._values)

    def redactor(self) -> Redactor:
        """A redactor of every value registered so far (replaced, never mutated, on `add`)."""
        return self._redactor


# The process's registry: what `runtime.daemon`'s log filter hides.
LOG_SECRETS = SecretRegistry()
