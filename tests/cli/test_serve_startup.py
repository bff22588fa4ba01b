"""What `agentd serve` does before it answers: only what the first request needs.

Import time is most of a Python daemon's start-up, so the model SDKs, the tool modules and
the OpenAPI machinery load on first use. The daemon runs as a real process under
`python -X importtime`, whose report of every module imported before the "listening" line is
exactly what start-up loaded.
"""

from __future__ import annotations

import gc
import logging
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import anyio
import pytest
from pydantic import BaseModel, ConfigDict

from runtime.api.v1 import MODULES as V1_OPERATIONS
from runtime.cli import resume_gc_after_start
from runtime.daemon import build_deferred_models
from runtime.runs.machinery import MODULES as RUN_MACHINERY
from tests.cli.support import clean_env
from tests.fresh_interpreter import json_printed

LISTENING = re.compile(r"listening on (http://\S+)")
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$")
TOKEN = "startup-token"
MODELS_BUILT = re.compile(r"(\d+) models built in")
OTHER_SDKS = re.compile(r"the other model SDKs preloaded in .*, after (\d+) active run")
REHEARSED = re.compile(r"first requests rehearsed in [\d.]+s: (.*)$")

# Loaded on first use, never by start-up.
DEFERRED = (
    "anthropic",
    "openai",
    "runtime.providers.anthropic",
    "runtime.providers.openai_chat",
    "runtime.providers.openai_responses",
    "runtime.api.openapi",
    "tools.exec",
    "tools.patch",
    "tools.files",
    "tools.dev_url",
    "pexpect",
    "unidiff",
    "psutil",  # the portable process table's, imported by PsutilTable on first use
    "tools.processes",  # spawning commands: kill_tagged and become_subreaper are elsewhere
    "runtime.events.model",  # a run's events and their log: loaded with the run machinery
    "runtime.events.log",
    "runtime.messages",  # conversations, thread events and their logs: likewise
    "runtime.thread_events",
    "runtime.thread_log",
    "runtime.thread_recorder",
    "runtime.rollout",
    *RUN_MACHINERY,  # the agent loop, compaction, providers, lifecycle: see runtime.runs.machinery
    *V1_OPERATIONS,  # the /v1 handlers: see runtime.api.v1
    "runtime.api.schemas",  # ... and the models they validate with
    "runtime.agents",  # ... agent definitions among them
)


async def test_start_up_loads_neither_the_sdks_nor_the_tools_and_first_use_does(
    tmp_path: Path, workspace: Path
) -> None:
    (workspace / "hello.txt").write_text("hi\n")
    argv = [sys.executable, "-X", "importtime", "-m", "runtime.cli", "serve", "--port", "0"]
    argv += ["--state-dir", str(tmp_path / "state"), "--workspace", str(workspace)]
    process = await anyio.open_process(
        [*argv, "--token", TOKEN],
        cwd=workspace,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    at_start: list[str] = []
    try:
        assert process.stderr is not None
        url = ""
        buffer = b""
        # Lines after the "listening" one (in the same chunk, or later) belong to what the
        # daemon did once it listened, not to its start-up.
        after_start: list[str] = []
        models_built: list[int] = []
        warm_up_steps: list[str] = []  # in the order the daemon logged them
        warmed_up = False
        other_sdks_waited: list[int] = []
        rehearsal_failures: list[str] = []

        def take(lines: list[str]) -> None:
            nonlocal url, warmed_up
            for line in lines:
                if match := IMPORTED.match(line):
                    (after_start if url else at_start).append(match.group(1))
                elif not url and (match := LISTENING.search(line)):
                    url = match.group(1)
                elif url and "/v1 API loaded in" in line:
                    warm_up_steps.append("v1")
                elif url and "run machinery loaded in" in line:
                    warm_up_steps.append("machinery")
                elif url and "core tools loaded in" in line:
                    warm_up_steps.append("core tools")
                elif url and (match := MODELS_BUILT.search(line)):
                    warm_up_steps.append("models")
                    models_built.append(int(match.group(1)))
                elif url and "model adapters and tools preloaded" in line:
                    warm_up_steps.append("sdks")
                elif url and (match := OTHER_SDKS.search(line)):
                    warm_up_steps.append("other sdks")
                    other_sdks_waited.append(int(match.group(1)))
                elif url and (match := REHEARSED.search(line)):
                    warm_up_steps.append(f"rehearsed {match.group(1)}")
                    warmed_up = True
                elif url and "could not be rehearsed" in line:
                    rehearsal_failures.append(line)

        with anyio.fail_after(30):
            async for chunk in process.stderr:
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                take([raw.decode(errors="replace") for raw in complete])
                if url:
                    break
        assert url, "the daemon did not start"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.get(url + "/readyz") as resp:
                assert resp.status == 200
            # The tools are there all the same: the first call loads them.
            async with http.post(url + "/v1/tools/list_dir", json={"path": "."}) as resp:
                assert resp.status == 200
                assert "hello.txt" in (await resp.json())["data"]["output"]
        # Once it listens, the model SDKs and what a first run imports load in a worker
        # thread, before any run needs them: the default model's SDK, then, with no run
        # active, the others.
        with anyio.fail_after(60):
            while not warmed_up:
                chunk = await process.stderr.receive()
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                take([raw.decode(errors="replace") for raw in complete])
        assert warmed_up
        loaded_after = {m.split(".")[0] for m in after_start} | set(after_start)
        assert {"anthropic", "openai", "runtime.providers.openai_chat"} <= loaded_after
        # ... after the /v1 API, the run machinery and the core tools (importlib.import_module,
        # which -X importtime does not report: the daemon's log lines say it), what every /v1
        # request waits for, so that a first request does not wait for the rest too; then
        # the validators of agentd's own models, deferred at import.
        # Then, the others loaded, a first request of every API, rehearsed against a canned
        # server (runtime/providers/rehearsal.py): the default model's (Anthropic's) first.
        assert warm_up_steps == [
            "v1",
            "machinery",
            "core tools",
            "models",
            "sdks",
            "other sdks",
            "rehearsed anthropic, responses, chat",
        ]
        assert rehearsal_failures == []
        assert other_sdks_waited == [0]
        assert models_built[0] > 0
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        with anyio.fail_after(20), anyio.CancelScope(shield=True):
            await process.wait()

    loaded = set(at_start)
    # The report is read right: the daemon's own layers are in it.
    assert {"aiohttp.web", "runtime.store", "runtime.runs", "tools.base"} <= loaded
    early = sorted(m for m in loaded if m in DEFERRED or m.split(".")[0] in DEFERRED)
    assert early == []


def test_the_collector_resumes_once_the_daemon_listens() -> None:
    """`agentd serve` pauses garbage collection for its start-up only."""
    gc.disable()
    try:
        resume_gc_after_start("http://127.0.0.1:7777")
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0  # start-up's objects: skipped by later collections
    finally:
        gc.unfreeze()
        gc.enable()


@pytest.mark.parametrize(
    ("default_model", "sdk", "other"),
    [("claude-sonnet-4-6", "anthropic", "openai"), ("gpt-5", "openai", "anthropic")],
)
def test_the_warm_up_imports_what_a_first_run_would_import(
    default_model: str, sdk: str, other: str
) -> None:
    """What `agentd serve` loads in a worker thread once it listens (runtime/daemon.py
    `warm_up`): in a fresh interpreter, none of it is loaded before, all of it after, but the
    SDK the default model does not use, which comes later (`preload_adapters`)."""
    wanted = [sdk, other, "tools.exec", "tools.patch", "tools.files"]
    wanted += ["tools.port_watch", "tools.workspace_changes"]  # a run's workspace watch
    script = (
        "import json, sys\n"
        "from runtime.daemon import warm_up\n"
        "from runtime.providers.registry import preload_adapters\n"
        f"wanted = {wanted!r}\n"
        "before = [m for m in wanted if m in sys.modules]\n"
        f"failed = warm_up({default_model!r})\n"
        "after = [m for m in wanted if m not in sys.modules]\n"
        "failed += preload_adapters()\n"
        "later = [m for m in wanted if m not in sys.modules]\n"
        "print(json.dumps({'before': before, 'failed': failed, 'missing': after, "
        "'missing_later': later}))\n"
    )
    report = json_printed("-c", script, timeout=120)
    assert report["failed"] == [] and report["missing"] == [other]
    assert report["missing_later"] == []
    assert "tools.exec" not in report["before"] and sdk not in report["before"]


def test_the_warm_up_builds_the_tls_context_every_sdk_client_is_made_with() -> None:
    """`warm_up` loads trusted certificates once (runtime/providers/tls.py), in its worker
    thread; the SDK clients of a first run's providers, of either SDK, load none (each took
    ~20-35 ms of CPU building its own context before its run's first model request)."""
    script = (
        "import json, ssl\n"
        "from runtime.daemon import warm_up\n"
        "from runtime.providers.registry import create_provider, preload_adapters\n"
        "preload_adapters()\n"
        "loads = []\n"
        "load = ssl.SSLContext.load_verify_locations\n"
        "def counted(context, *args, **kwargs):\n"
        "    loads.append(args)\n"
        "    load(context, *args, **kwargs)\n"
        "ssl.SSLContext.load_verify_locations = counted\n"
        "warm_up('claude-sonnet-4-6')\n"
        "in_warm_up = len(loads)\n"
        "env = {'ANTHROPIC_API_KEY': 'k', 'OPENAI_API_KEY': 'k', 'GEMINI_API_KEY': 'k'}\n"
        "for model in ('claude-sonnet-4-6', 'gpt-5', 'gemini-2.5-pro'):\n"
        "    create_provider(model, env=env)\n"
        "print(json.dumps([in_warm_up, len(loads) - in_warm_up]))\n"
    )
    assert json_printed("-c", script, env=clean_env(), timeout=120) == [1, 0]


def test_after_the_warm_up_a_first_run_s_tool_specs_generate_no_schema(tmp_path: Path) -> None:
    """`warm_up` generates every core tool's spec (runtime/runs/tool_specs.py) in its worker
    thread, so a first run generates none on the event loop (pydantic's schema generation,
    ~0.4 ms a tool; pydantic 2.14.0 also imports a module of its own the first time)."""
    script = (
        "import json, sys\n"
        "from runtime.daemon import warm_up\n"
        "from runtime.runs.tool_specs import toolbox_specs\n"
        "from tools.base import Tool, Toolbox\n"
        "warm_up('claude-sonnet-4-6')\n"
        "generated = []\n"
        "spec = Tool.spec.__func__\n"
        "Tool.spec = classmethod(lambda cls: generated.append(cls.name) or spec(cls))\n"
        "box = Toolbox(sys.argv[1])\n"
        "specs = toolbox_specs(box)\n"
        "print(json.dumps([len(specs), generated]))\n"
    )
    offered, generated = json_printed("-c", script, str(tmp_path), env=clean_env(), timeout=120)
    assert offered > 5 and generated == []


def test_agentds_models_are_built_after_start_up_not_at_import() -> None:
    """Importing the daemon leaves the validators of agentd's models unbuilt (pydantic's
    defer_build); `build_deferred_models`, which the daemon runs in a worker thread once it
    listens, builds them, so neither start-up nor the event loop at a first request does."""
    script = (
        "from runtime.api.schemas import AgentOut, Envelope\n"
        "from runtime.events import Event\n"
        "from runtime.messages import Message\n"
        "from runtime.providers.base import AssistantTurn, TextDelta\n"
        "from runtime.thread_events import PersistedThreadEvent\n"
        "import runtime.daemon, runtime.api.app\n"
        "models = [AgentOut, Envelope, Event, Message, AssistantTurn, TextDelta, "
        "PersistedThreadEvent]\n"
        "print([m.__name__ for m in models if m.__pydantic_complete__])\n"
        "built = runtime.daemon.build_deferred_models()\n"
        "print([m.__name__ for m in models if not m.__pydantic_complete__])\n"
        "print(len(built), 'runtime.events.model.Event' in built)\n"
        "print(runtime.daemon.build_deferred_models())\n"
        "print(Event(id=1, runId='r', type='text', ts='t', payload={}).run_id)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert out[0] == "[]"  # none built at import
    assert out[1] == "[]"  # all built by build_deferred_models
    count, has_event = out[2].split()
    assert int(count) > 50 and has_event == "True"
    assert out[3] == "[]"  # nothing left to build
    assert out[4] == "r"


class Deferred(BaseModel):
    model_config = ConfigDict(defer_build=True)
    value: int


def test_build_deferred_models_builds_only_the_named_packages_unbuilt_models() -> None:
    assert not Deferred.__pydantic_complete__
    name = f"{__name__}.Deferred"
    assert name not in build_deferred_models(("runtime",))
    assert not Deferred.__pydantic_complete__
    assert name in build_deferred_models(("tests",))
    assert Deferred.__pydantic_complete__ and Deferred(value=3).value == 3
    assert name not in build_deferred_models(("tests",))


class BuiltWhereDefined(BaseModel):
    """Not deferred, and not complete (its annotation names a class defined later): what a
    model built at its definition looks like while another thread is still defining it."""

    value: Later  # defined below, after the class


def test_build_deferred_models_leaves_models_that_are_not_deferred_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert not BuiltWhereDefined.__pydantic_complete__
    with caplog.at_level(logging.ERROR, logger="agentd"):
        built = build_deferred_models(("tests",))
    assert f"{__name__}.BuiltWhereDefined" not in built
    assert not BuiltWhereDefined.__pydantic_complete__  # not touched: no rebuild attempted
    assert "BuiltWhereDefined" not in caplog.text


class Later(BaseModel):
    number: int
