"""`/openapi.json`: generated from the handlers' models, covering every route; and a
property-based run of schemathesis against it finding no 5xx and no undocumented answers."""

from __future__ import annotations

import re
from typing import Any

import anyio
import httpx
import pytest

from runtime.agents import AgentSpec
from runtime.api.schemas import RunRequest
from runtime.api.state import STATE_KEY
from runtime.api.v1 import V1_ROUTE_NAME, load_v1
from tests.api.conftest import Daemon, DaemonFactory

TOKEN = "fuzz-token"


async def test_every_registered_route_is_documented(daemon: Daemon) -> None:
    status, spec = await daemon.get("/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.1")
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    registered = set()
    # the app's own routes, and the /v1 operations' (which `v1.dispatch`, the app's route for
    # every /v1/ path, resolves requests to)
    for route in [*daemon.app.router.routes(), *load_v1().router.routes()]:
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if route.method in ("HEAD", "OPTIONS") or route.name == V1_ROUTE_NAME:
            continue
        registered.add((path, route.method))
    assert registered, "no routes registered?"
    assert registered == documented
    # Every row of docs/design.md, HTTP API.
    for path, method in [
        ("/v1/agents", "POST"),
        ("/v1/agents", "GET"),
        ("/v1/agents/{slugOrId}", "GET"),
        ("/v1/agents/{slugOrId}", "DELETE"),
        ("/v1/agents/{slugOrId}", "PATCH"),
        ("/v1/agents/{slugOrId}/versions", "GET"),
        ("/v1/agents/{slugOrId}/rollback", "POST"),
        ("/v1/run", "POST"),
        ("/v1/agents/{slug}/run", "POST"),
        ("/v1/run/{apiSlug}", "POST"),
        ("/v1/runs", "GET"),
        ("/v1/runs/{run_id}", "GET"),
        ("/v1/runs/{run_id}/events", "GET"),
        ("/v1/runs/{run_id}/pause", "POST"),
        ("/v1/runs/{run_id}/resume", "POST"),
        ("/v1/runs/{run_id}/cancel", "POST"),
        ("/v1/runs/{run_id}/input", "POST"),
        ("/v1/runs/{run_id}/files", "GET"),
        ("/v1/runs/{run_id}/files/content", "GET"),
        ("/v1/runs/{run_id}/fork", "POST"),
        ("/v1/run/threads", "GET"),
        ("/v1/run/threads/{thread_id}", "GET"),
        ("/v1/run/threads/{thread_id}", "DELETE"),
        ("/v1/tools/{name}", "POST"),
        ("/openapi.json", "GET"),
        ("/metrics", "GET"),
        ("/healthz", "GET"),
        ("/readyz", "GET"),
    ]:
        assert (path, method) in documented, (path, method)


async def test_bodies_are_documented_with_the_models_handlers_validate_with(
    daemon: Daemon,
) -> None:
    _, spec = await daemon.get("/openapi.json")
    schemas = spec["components"]["schemas"]

    def body_schema(path: str) -> dict[str, Any]:
        ref = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        name = ref["schema"]["$ref"].rsplit("/", 1)[1]
        return schemas[name]

    run = body_schema("/v1/run")
    assert set(run["properties"]) == {f.alias or n for n, f in RunRequest.model_fields.items()}
    assert run["additionalProperties"] is False and run["required"] == ["agent"]
    agent = body_schema("/v1/agents")
    assert set(agent["properties"]) == {f.alias or n for n, f in AgentSpec.model_fields.items()}
    # Every event payload is documented.
    for name in ("CompletePayload", "ToolCallPayload", "RunStartedPayload"):
        assert name in schemas
    # Errors are the envelope.
    error = spec["paths"]["/v1/runs/{run_id}"]["get"]["responses"]["404"]
    assert error["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorEnvelope")
    assert spec["paths"]["/healthz"]["get"]["security"] == []


@pytest.fixture
async def fuzz_target(make_daemon: DaemonFactory) -> Daemon:
    daemon = await make_daemon(token=TOKEN, headers={"Authorization": f"Bearer {TOKEN}"})
    await daemon.upsert("helper")
    return daemon


def _fuzz(spec: dict[str, Any], base_url: str, ids: dict[str, str], max_examples: int) -> list:
    """Runs in a worker thread (schemathesis calls are synchronous) while the daemon keeps
    serving on the test's event loop."""
    import hypothesis
    import hypothesis.errors
    import schemathesis
    from hypothesis import HealthCheck, Phase
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    from tools.base import core_tool_names

    schema = schemathesis.openapi.from_dict(spec)
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    failures: list = []
    for result in schema.get_all_operations():
        operation = result.ok()
        path = operation.path
        # Earlier operations may have deleted it (DELETE /v1/agents/{slugOrId}): recreate.
        httpx.post(
            base_url + "/v1/agents",
            json={"slug": "helper", "model": "claude-sonnet-4-6", "tools": []},
            headers=headers,
            timeout=15,
        ).raise_for_status()
        fixed = {k: v for k, v in ids.items() if "{" + k + "}" in path}
        variants: list[tuple[GenerationMode, dict[str, str] | None]] = [
            (GenerationMode.POSITIVE, None),
            (GenerationMode.NEGATIVE, None),
        ]
        if fixed:
            variants.append((GenerationMode.POSITIVE, fixed))
        if path == "/v1/tools/{name}":
            # Fuzzing must never run arbitrary shell commands: workspace tools only.
            safe = [n for n in core_tool_names() if n not in ("exec_command", "write_stdin")]
            variants = [(GenerationMode.POSITIVE, {"name": n}) for n in safe]
            variants.append((GenerationMode.NEGATIVE, {"name": "read_file"}))
        for mode, path_parameters in variants:
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

            @hypothesis.settings(
                max_examples=max_examples,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @hypothesis.given(case=strategy)
            def check(case: Any) -> None:
                response = case.call(base_url=base_url, headers=headers, timeout=15)
                case.validate_response(response, checks=checks, headers=headers)

            try:
                check()
            except hypothesis.errors.Unsatisfiable:
                continue  # nothing to make invalid (no parameters, no body)
            except Exception as exc:  # collect every operation's failure, then report
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    return failures


async def test_schemathesis_finds_no_server_errors_or_undocumented_answers(
    fuzz_target: Daemon,
) -> None:
    daemon = fuzz_target
    run = await daemon.run()
    ids = {"slug": "helper", "apiSlug": "helper", "run_id": run["runId"]}
    ids["thread_id"] = run["threadId"]
    _, spec = await daemon.get("/openapi.json")
    with anyio.fail_after(120):
        failures = await anyio.to_thread.run_sync(_fuzz, spec, daemon.url, ids, 6)
    assert not failures, "\n\n".join(re.sub(r"\n{3,}", "\n\n", f) for f in failures)
    # It did exercise the API: many requests, successes and refusals on most routes.
    served = daemon.app[STATE_KEY].metrics.http_requests
    assert sum(served.values()) > 200
    ok_routes = {route for (_, route, status), _ in served.items() if status < 300}
    refused_routes = {route for (_, route, status), _ in served.items() if 400 <= status < 500}
    print(sum(served.values()), sorted(ok_routes), sorted(refused_routes))
    assert len(ok_routes) >= 15 and len(refused_routes) >= 15
