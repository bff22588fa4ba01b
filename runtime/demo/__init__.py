"""The offline demo: an agent builds, tests and serves a small notes web app.

The model's side of the run is a cassette recorded in `cassette.jsonl` and played by the
replay provider; everything else (files, processes, the server, the dev URL) is real. With an
API key and `agentd demo --live`, the same task goes to a real model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CASSETTE_PATH = Path(__file__).resolve().parent / "cassette.jsonl"

DEMO_AGENT_SLUG = "demo-builder"

DEMO_TOOLS = ["exec_command", "write_stdin", "apply_patch", "read_file", "list_dir", "get_dev_url"]

DEMO_SYSTEM_PROMPT = """\
You are a software engineer working in a sandbox. The workspace is your current directory.
Make changes with apply_patch, run commands with exec_command, and when you start a web
server, call get_dev_url so the user gets a link to it. Use only the Python standard library.
Keep servers running when you finish: the user will open them."""

DEMO_PROMPT = """\
Build a tiny notes web app in this workspace: a page that lists notes and lets me add one,
backed by a small JSON API (GET and POST /api/notes, GET /api/health). Write unit tests for
the API and run them, then start the app and give me its URL."""

LIVE_MODELS = {"ANTHROPIC_API_KEY": "claude-sonnet-5-5", "OPENAI_API_KEY": "gpt-5.5"}


def demo_agent(model: str | None = None) -> dict[str, Any]:
    """The demo agent definition (the body of `POST /v1/agents`)."""
    return {
        "slug": DEMO_AGENT_SLUG,
        "name": "Demo builder",
        "description": "Builds, tests and serves a small web app (agentd's offline demo).",
        "model": model or f"replay:{CASSETTE_PATH}",
        "systemPrompt": DEMO_SYSTEM_PROMPT,
        "tools": DEMO_TOOLS,
        "maxIterations": 12,
    }


def live_model(env: dict[str, str]) -> str | None:
    """The model a live demo uses, chosen by which API key is set (None without keys)."""
    for variable, model in LIVE_MODELS.items():
        if env.get(variable):
            return model
    return None
