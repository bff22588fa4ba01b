"""runtime/providers/rehearsal.py: a first model request rehearsed off the event loop, so
that a run's first request imports nothing there (each case in a fresh interpreter:
tests/providers/first_request.py)."""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest

from runtime.daemon import rehearse_first_requests
from runtime.providers import rehearsal
from runtime.providers.rehearsal import MODEL_OF_API, api_of, loopback_proxy, rehearse
from tests.fresh_interpreter import json_printed


def first_request(model: str, mode: str) -> dict[str, Any]:
    result: dict[str, Any] = json_printed("-m", "tests.providers.first_request", model, mode)
    return result


@pytest.mark.parametrize(
    ("model", "api"),
    [
        ("claude-sonnet-4-6", "anthropic"),
        ("gpt-5", "responses"),
        ("gemini-2.5-pro", "chat"),
        ("openai-chat:gpt-4.1", "chat"),
    ],
)
def test_after_a_rehearsal_a_first_request_imports_nothing_on_the_event_loop(
    model: str, api: str
) -> None:
    result = first_request(model, "rehearsed")
    # rehearsed once: the second call finds the API rehearsed already
    assert result["rehearsals"] == [{"apis": [api], "failed": []}, {"apis": [], "failed": []}]
    assert result["imported_on_loop"] == []
    assert result["reply"] == "done"


def test_without_a_rehearsal_a_first_request_imports_the_http_stack_s_rest_on_the_loop() -> None:
    """What the rehearsal spares the first run (the control for the test above): the first
    connection imports the rest of the HTTP stack on the event loop (asyncio's default
    executor, for the address lookup), and `anthropic` its OpenTelemetry propagators."""
    result = first_request("claude-sonnet-4-6", "cold")
    assert "concurrent.futures.thread" in result["imported_on_loop"]
    assert "opentelemetry.propagate" in result["imported_on_loop"]
    assert result["reply"] == "done"


@pytest.mark.parametrize(
    ("model", "resource"),
    [
        ("gpt-5", "openai.resources.responses"),
        ("openai-chat:gpt-4.1", "openai.resources.chat"),
        ("claude-sonnet-4-6", "anthropic.resources.messages"),
    ],
)
def test_a_provider_imports_its_sdk_resource_where_it_is_made_not_at_its_first_request(
    model: str, resource: str
) -> None:
    """Unrehearsed, as in a fresh daemon's first run: the SDK resource the provider calls
    (which the SDK imports on first use, ~0.25 s for Responses) was imported when the provider
    was made, in its worker thread, not on the event loop at the first request."""
    result = first_request(model, "cold")
    assert not [name for name in result["imported_on_loop"] if name.startswith(resource)]
    assert result["reply"] == "done"


def test_a_rehearsal_that_fails_is_reported_and_tried_again_next_time() -> None:
    """A canned stream that breaks off: the failure comes back as "model: reason" (the
    daemon logs it) rather than raised, the API is not taken as rehearsed, and the next
    rehearsal of it goes through."""
    result = first_request("claude-sonnet-4-6", "broken")
    broken, again, after = result["rehearsals"]
    assert broken["apis"] == []
    [failure] = broken["failed"]
    assert failure.startswith("claude-sonnet-4-6: ") and "broke off" in failure
    assert again == {"apis": ["anthropic"], "failed": []}
    assert after == {"apis": [], "failed": []}
    assert result["imported_on_loop"] == []


@pytest.mark.parametrize(
    ("model", "api"),
    [
        ("claude-opus-4-1", "anthropic"),
        ("anthropic:my-proxy-model", "anthropic"),
        ("gpt-4o", "responses"),
        ("o3-mini", "responses"),
        ("openai-chat:gpt-4.1", "chat"),
        ("gemini-2.5-flash", "chat"),
        ({"provider": "custom", "endpoint": "http://127.0.0.1:9/v1", "format": "openai"}, "chat"),
        (
            {"provider": "custom", "endpoint": "http://127.0.0.1:9", "format": "anthropic"},
            "anthropic",
        ),
        ("replay:/tmp/cassette.jsonl", None),
        ("no-such-model", None),
        (None, None),
    ],
)
def test_the_api_a_model_speaks(model: Any, api: str | None) -> None:
    assert api_of(model) == api


def test_every_api_has_a_model_to_rehearse_it_with() -> None:
    assert {api: api_of(model) for api, model in MODEL_OF_API.items()} == {
        "anthropic": "anthropic",
        "responses": "responses",
        "chat": "chat",
    }


def test_models_without_an_api_are_not_rehearsed() -> None:
    """A replayed cassette or a model that routes nowhere: nothing to rehearse, no server."""
    assert rehearse(["replay:/tmp/cassette.jsonl", "no-such-model"]) == ([], [])


@pytest.mark.parametrize(
    ("environ", "proxy"),
    [
        ({}, None),
        ({"HTTP_PROXY": "http://proxy.invalid:3128"}, "http://proxy.invalid:3128"),
        ({"ALL_PROXY": "http://proxy.invalid:3128"}, "http://proxy.invalid:3128"),
        ({"HTTP_PROXY": "http://proxy.invalid:3128", "NO_PROXY": "localhost,127.0.0.1"}, None),
        ({"HTTP_PROXY": "http://proxy.invalid:3128", "NO_PROXY": "*"}, None),
        ({"HTTP_PROXY": "http://proxy.invalid:3128", "NO_PROXY": "example.com"}, "http"),
        ({"HTTPS_PROXY": "http://proxy.invalid:3128"}, None),  # the canned server is http://
    ],
)
def test_a_proxy_in_the_way_of_127_0_0_1_is_found(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], proxy: str | None
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    found = loopback_proxy()
    assert found == proxy or (proxy == "http" and found is not None and "proxy.invalid" in found)


def test_no_rehearsal_goes_through_a_proxy() -> None:
    """The SDKs' HTTP client sends requests for 127.0.0.1 to HTTP_PROXY unless NO_PROXY
    exempts it: then nothing is rehearsed, and the reason says so (the daemon logs it). In a
    fresh interpreter: this one may have rehearsed these APIs already."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name.lower() not in ("no_proxy", "all_proxy", "http_proxy")
    }
    env["HTTP_PROXY"] = "http://proxy.invalid:3128"
    script = (
        "import json\n"
        "from runtime.providers.rehearsal import rehearse\n"
        "print(json.dumps(rehearse(['gpt-5', 'claude-sonnet-4-6'])))\n"
    )
    apis, failed = json_printed("-c", script, env=env, timeout=60)
    assert apis == []
    assert failed == [
        f"{model}: not rehearsed: requests to 127.0.0.1 would go through the proxy "
        "http://proxy.invalid:3128"
        for model in ("gpt-5", "claude-sonnet-4-6")
    ]


async def test_a_rehearsal_that_raises_does_not_end_the_warm_up(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug of the rehearsal's own is logged; the daemon's warm-up goes on without it."""

    def broken(models: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(rehearsal, "rehearse", broken)
    with caplog.at_level(logging.WARNING, logger="agentd"):
        await rehearse_first_requests("claude-sonnet-4-6")
    assert "could not be rehearsed" in caplog.text and "a bug" in caplog.text
