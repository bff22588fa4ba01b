"""runtime/providers/tls.py: every model SDK client is made with the process's one TLS
context, which trusts what the SDKs' own would (each case in a fresh interpreter, since the
context is the process's: tests/providers/tls_requests.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp

from tests.api.daemon_process import agentd
from tests.fakes.model_server import FakeModelServer
from tests.fresh_interpreter import json_printed

# One model of each API and SDK: Anthropic Messages, OpenAI Responses, Chat Completions (OpenAI
# and Gemini's compatible endpoint).
MODELS = ["claude-sonnet-4-6", "gpt-5", "openai-chat:gpt-4.1", "gemini-2.5-pro"]


def requests_over_https(certificates: Path, trusted: bool) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    if trusted:
        env["SSL_CERT_FILE"] = str(certificates / "ca.pem")
    module = "tests.providers.tls_requests"
    result: dict[str, Any] = json_printed("-m", module, str(certificates), *MODELS, env=env)
    return result


def test_every_sdk_client_shares_one_tls_context_that_trusts_ssl_cert_file(
    certificates: Path,
) -> None:
    """Four providers of both SDKs stream over HTTPS from a server whose CA only
    SSL_CERT_FILE names, and the process loads trusted certificates once, not once per
    client (each SDK client built its own context: four loads, ~20-35 ms each)."""
    result = requests_over_https(certificates, trusted=True)
    assert result["replies"] == dict.fromkeys(MODELS, "done")
    assert result["certificates_loaded"] == 1


def test_a_server_the_context_does_not_trust_fails_every_request_on_its_certificate(
    certificates: Path,
) -> None:
    """The control: without SSL_CERT_FILE the same server's certificate is not trusted, so
    the shared context verifies certificates (the requests above were checked, not let
    through)."""
    result = requests_over_https(certificates, trusted=False)
    for model, reply in result["replies"].items():
        assert reply.startswith("error: "), (model, reply)
        assert "certificate is not trusted" in reply and "SSL_CERT_FILE" in reply, (model, reply)


async def test_a_trust_store_that_cannot_be_read_fails_the_run_with_a_clear_error(
    tmp_path: Path, workspace: Path
) -> None:
    """`SSL_CERT_FILE` naming a directory: a run fails as for any model it cannot use, with a
    message naming the variable (it failed "unexpectedly", with a traceback in the log)."""
    async with FakeModelServer() as model:
        env = {**model.env(), "SSL_CERT_FILE": str(tmp_path)}
        async with agentd(tmp_path, workspace, env) as proc, aiohttp.ClientSession() as http:
            agent = {"slug": "a", "model": "claude-sonnet-4-6", "tools": []}
            async with http.post(proc.url + "/v1/agents", json=agent) as resp:
                assert resp.status == 201, await resp.text()
            body = {"agent": "a", "prompt": "go", "stream": False}
            async with http.post(proc.url + "/v1/run", json=body) as resp:
                run = (await resp.json())["data"]
    assert run["status"] == "failed", run
    assert run["error"]["code"] == "model_error", run["error"]  # as every provider it cannot make
    message = run["error"]["message"]
    assert "trusted certificates for model requests cannot be read" in message
    assert f"SSL_CERT_FILE={str(tmp_path)!r}" in message
    assert not any("Traceback" in line for line in proc.log)
