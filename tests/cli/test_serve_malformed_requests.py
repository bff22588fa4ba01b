"""A request aiohttp cannot parse is answered 400 before any handler sees it; `agentd serve`
logs it as one INFO line, never an ERROR with a traceback (it is the client's fault)."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.cli.support import serving_agentd

MALFORMED = {
    "content-length": b"GET /v1/agents HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "chunk-size": b"POST /v1/agents HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"ZZ\r\n",
}


def send_raw(url: str, payload: bytes) -> bytes:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as conn:
        conn.sendall(payload)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    return received


@pytest.mark.parametrize("level", ["info", "warning"])
def test_a_malformed_request_is_a_400_and_at_most_one_info_line(tmp_path: Path, level: str) -> None:
    with serving_agentd(tmp_path, AGENTD_LOG_LEVEL=level) as (url, _):
        answers = {name: send_raw(url, payload) for name, payload in MALFORMED.items()}
    for answer in answers.values():
        assert answer.startswith(b"HTTP/1.0 400 ") or answer.startswith(b"HTTP/1.1 400 ")
    log = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in log and " ERROR " not in log, log
    lines = [line for line in log.splitlines() if "malformed HTTP request" in line]
    if level == "info":
        assert len(lines) == len(MALFORMED), log
        assert all(" INFO aiohttp.server " in line for line in lines)
        assert any(
            "400 to a malformed HTTP request: Invalid character in Content-Length" in line
            for line in lines
        ), lines
    else:
        assert lines == []
