"""The legacy run request (`POST /v1/agents/{slug}/run`, `POST /v1/run/{apiSlug}`) in terms of
an ordinary run: `context.history` is the conversation so far, `context.files` the workspace
files the agent starts from (their contents, bounded), `mounts` recorded with a warning.

`context` as documented: `{"history": previousRun.messages, "files": ["/src/App.tsx"], …}`;
its other keys (and a `context` that is a string or a list) reach the model as a
`<context>` block after the message, as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from pydantic import ValidationError

from runtime.api.errors import bad_request
from runtime.api.schemas import InputHistory, LegacyRunRequest
from runtime.messages import Message
from tools.workspace import InvalidPath, PathOutsideWorkspace, Workspace

MAX_FILE_BYTES = 64 * 1024
MAX_FILES_BYTES = 256 * 1024
MAX_FILES = 50
MOUNTS_WARNING = (
    "mounts are recorded in the run's metadata but not mounted: this daemon cannot mount "
    "storage; the control plane mounts it into the sandbox before relaying the run"
)


@dataclass
class LegacyInputs:
    """What the legacy body means as a run: the prompt, the history to continue (None: a new
    thread), and warnings for the caller."""

    prompt: str
    history: list[Message] | None = None
    warnings: list[str] = field(default_factory=list)


async def legacy_inputs(body: LegacyRunRequest, workspace: Path) -> LegacyInputs:
    context = body.context
    history: list[Message] | None = None
    files: list[str] = []
    rest: Any = context
    if isinstance(context, dict):
        rest = {k: v for k, v in context.items() if k not in ("history", "files")}
        history = _history(context.get("history"))
        files = _file_names(context.get("files"))
    prompt = body.message
    if files:
        prompt += "\n\n" + await anyio.to_thread.run_sync(_file_contents, workspace, files)
    if rest not in (None, "", {}, []):
        text = rest if isinstance(rest, str) else json.dumps(rest, indent=2)
        prompt += f"\n\n<context>\n{text}\n</context>"
    warnings = [MOUNTS_WARNING] if body.mounts else []
    return LegacyInputs(prompt, history, warnings)


def _history(raw: Any) -> list[Message] | None:
    if raw is None:
        return None
    try:
        messages = InputHistory.model_validate({"history": raw}).history
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"][1:])  # after "history"
        raise bad_request(
            f"context.history must be the previous run's messages ([{{role, content}}]): "
            f"at {where or 'history'}: {str(first['msg']).removeprefix('Value error, ')}",
            code="validation_error",
        ) from exc
    return [m.to_message() for m in messages] or None


def _file_names(raw: Any) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(p, str) and p.strip() for p in raw):
        raise bad_request(
            'context.files must be a list of workspace paths, e.g. ["/src/App.tsx"]',
            code="validation_error",
        )
    if len(raw) > MAX_FILES:
        raise bad_request(
            f"context.files names {len(raw)} files; at most {MAX_FILES}", code="validation_error"
        )
    return list(dict.fromkeys(raw))


def _file_contents(root: Path, names: list[str]) -> str:
    """The files as `<file path="/src/App.tsx">…</file>` blocks: each cut at MAX_FILE_BYTES,
    all of them at MAX_FILES_BYTES, with a note saying what was cut."""
    workspace = Workspace(root)
    blocks: list[str] = []
    budget = MAX_FILES_BYTES
    for name in names:
        shown = "/" + name.strip().lstrip("/")
        try:
            real = workspace.resolve(shown.lstrip("/") or ".", must_exist=True)
        except PathOutsideWorkspace:
            raise bad_request(
                f"context.files: {shown} is outside the workspace", code="invalid_path"
            ) from None
        except InvalidPath as exc:
            raise bad_request(f"context.files: {exc}", code="invalid_path") from None
        except (FileNotFoundError, OSError):
            raise bad_request(
                f"context.files: {shown} does not exist in the workspace", code="invalid_path"
            ) from None
        if not real.is_file():
            raise bad_request(f"context.files: {shown} is not a file", code="invalid_path")
        size = real.stat().st_size
        limit = min(MAX_FILE_BYTES, budget)
        with real.open("rb") as handle:
            data = handle.read(limit)
        budget -= len(data)
        text = data.decode("utf-8", errors="replace")
        if size > len(data):
            text += (
                f"\n[cut: the file has {size} bytes, {len(data)} are shown; read the rest "
                "with read_file]"
            )
        blocks.append(f'<file path="{shown}">\n{text}\n</file>')
        if budget <= 0:
            left = names[len(blocks) :]
            if left:
                blocks.append(
                    f"[cut: {len(left)} more file(s) not shown ({', '.join(left)}); read them "
                    "with read_file]"
                )
            break
    return "Files from the workspace:\n" + "\n".join(blocks)
