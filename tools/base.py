"""The tool framework: the Tool protocol, the per-call ToolContext, the registry and Toolbox.

Every tool the model can call is a `Tool` subclass, listed in its module's `TOOLS` and
registered by `tools.load_core_tools` (`register_tool` adds any other). A `Toolbox`
instantiates the enabled tools for one workspace, validates arguments with the tool's
pydantic `Args` model, runs it, and turns every failure into a `ToolResult` with
`is_error=True` so the agent loop never sees an exception from a bad tool call.
"""

from __future__ import annotations

import errno
import inspect
import logging
import os
import time
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Protocol, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from tools.cgroups import CgroupTree
from tools.proctable import ProcessTable, default_table
from tools.utf8 import lone_surrogate, printable, printable_value
from tools.workspace import InvalidPath, PathOutsideWorkspace, Workspace

log = logging.getLogger("agentd.tools")

EventCallback = Callable[[dict[str, Any]], Any]
"""Receives `{"type": <event type>, **payload}`; may be sync or async."""


@dataclass
class ToolResult:
    """What a tool call produced: `output` is the text the model reads, `data` the structure."""

    output: str
    is_error: bool = False
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def error(cls, message: str, **data: Any) -> ToolResult:
        return cls(output=message, is_error=True, data={"error": message, **data})


class ToolError(Exception):
    """Raised inside a tool to return `message` to the model as an error result, with the
    result's `code` when one is given."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


# A write that failed for want of space: no space left, a disk quota met, a file-size limit.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
DISK_FULL_ADVICE = (
    "the disk is full. write_file, edit_file and apply_patch write all or nothing, so a "
    "failed one changed no file. Free space (remove build outputs, caches or large files you "
    "made) or write less, then retry."
)


def disk_full_error(what: str, exc: OSError) -> ToolError:
    """The tool error for a write of `what` that failed for want of space (`exc`'s errno is
    in NO_SPACE_ERRNOS): code `disk_full`, with what the model can do about it."""
    return ToolError(f"{what}: {exc.strerror or exc}: {DISK_FULL_ADVICE}", code="disk_full")


class ToolArgs(BaseModel):
    """Base for tool argument models: unknown fields are an error the model must see."""

    model_config = ConfigDict(extra="forbid")


def no_nul(value: str) -> str:
    """A pydantic validator for arguments the OS takes as C strings (paths, commands,
    environment names and values), where a NUL byte would cut the value short or fail."""
    if "\0" in value:
        raise ValueError("contains a NUL byte (\\u0000), which the operating system cannot take")
    return value


NoNulStr = Annotated[str, AfterValidator(no_nul)]
"""A `str` argument without NUL bytes (see `no_nul`)."""


# Directories the run's file-change scan never enters (tools/workspace_changes.py): agentd's
# own files (.agentd: thread rollouts), VCS data, dependencies, build and tool caches.
# Virtualenvs are found by their pyvenv.cfg.
DEFAULT_SKIP_DIRS = frozenset(
    {
        ".agentd",
        ".git",
        ".hg",
        ".svn",
        "node_modules",
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".tox",
        ".nox",
        ".cache",
        ".parcel-cache",
        ".turbo",
        ".gradle",
        ".next",
        ".nuxt",
        ".svelte-kit",
    }
)


@dataclass
class ToolSettings:
    """Deployment settings tools need but the model never chooses."""

    dev_url_template: str = "http://localhost:{port}"
    sandbox_id: str = "local"
    host: str = "localhost"
    # Ports the daemon itself listens on: never offered as the agent's dev server.
    reserved_ports: frozenset[int] = frozenset()
    max_sessions: int = 64
    # Who owns the processes tools start: the prefix of the tag they carry (tools/processes.py).
    # A daemon sets it from its state dir, so the next daemon on that state finds leftovers.
    process_owner: str = "agentd"
    # grep uses ripgrep when it is installed; False: always its Python engine (same output).
    use_ripgrep: bool = True
    # Where process trees, tags and listening ports are read (tools/proctable.py): /proc on
    # Linux, psutil elsewhere; tests pass PsutilTable() to run the portable path on Linux.
    process_table: ProcessTable = field(default_factory=default_table)
    # Directory names the file-change scan skips; None: no scan (tool-reported edits only).
    workspace_skip_dirs: frozenset[str] | None = DEFAULT_SKIP_DIRS
    # A cgroup v2 per toolbox (tools/cgroups.py) when the daemon may make them; None: the
    # tools rely on process groups, tags and the child subreaper alone.
    cgroups: CgroupTree | None = None
    # Whether the editing tools (apply_patch, write_file, edit_file) write into the files
    # their earlier commits replaced, kept emptied under .agentd/spare, instead of creating
    # and deleting files (tools/spares.py). None: where that is faster, an ext4 without a
    # journal (`tools.spares.creating_files_is_slow`).
    spare_files: bool | None = None
    # Live `tool_output` of one exec_command/write_stdin call, at most (a run's terminal view
    # needs the gist of a flood, and its event log stores every event); None: all of it (the
    # CLI's `agentd tool`, whose stdout is the command's).
    live_output_bytes_per_call: int | None = 2 * 1024 * 1024


# The daemon's own credentials: the agent's commands must not be able to read them (a prompt
# injection away from `env | curl …`). An agent that needs one lists it in its own `env`.
DAEMON_SECRET_SUFFIXES = ("_API_KEY", "_AUTH_TOKEN")
DAEMON_SECRET_NAMES = frozenset(
    {"AGENTD_TOKEN", "RUNTOOLS_TOKEN", "AGENTD_WEBHOOK_SECRET", "RUNTOOLS_WEBHOOK_SECRET"}
)


def daemon_environ() -> dict[str, str]:
    """os.environ without the daemon's credentials (model API keys, API token, HMAC key)."""
    return {
        name: value
        for name, value in os.environ.items()
        if name not in DAEMON_SECRET_NAMES and not name.endswith(DAEMON_SECRET_SUFFIXES)
    }


class Closable(Protocol):
    async def aclose(self) -> None: ...


ServiceT = TypeVar("ServiceT", bound=Closable)


class ToolContext:
    """What a tool may use during one call: the workspace, env, settings, events, services."""

    def __init__(
        self,
        box: Toolbox,
        *,
        call_id: str | None,
        on_event: EventCallback | None,
    ) -> None:
        self._box = box
        self.call_id = call_id
        self._on_event = on_event

    @property
    def workspace(self) -> Workspace:
        return self._box.workspace

    @property
    def env(self) -> dict[str, str]:
        return self._box.env

    @property
    def settings(self) -> ToolSettings:
        return self._box.settings

    @property
    def run_id(self) -> str | None:
        """The run this call belongs to, when the toolbox serves one."""
        return self._box.run_id

    def resolve(self, path: str | None, *, must_exist: bool = False) -> Path:
        return self._box.workspace.resolve(path, must_exist=must_exist)

    def service(self, factory: Callable[[Toolbox], ServiceT]) -> ServiceT:
        """A per-toolbox singleton (e.g. the PTY session manager), closed when the box closes."""
        return self._box.service(factory)

    def peek_service(self, factory: Callable[[Toolbox], ServiceT]) -> ServiceT | None:
        """The service if some tool already created it in this toolbox, else None."""
        return self._box.peek_service(factory)

    async def emit(self, event_type: str, **payload: Any) -> None:
        """Send an event (`tool_output`, `file_edit`, `dev_url`, …) to the box's listener."""
        if self._on_event is None:
            return
        event = {"type": event_type, **payload}
        if self.call_id is not None and event_type == "tool_output":
            event.setdefault("callId", self.call_id)
        outcome = self._on_event(event)
        if inspect.isawaitable(outcome):
            await outcome


class Tool:
    """A tool the model can call. Subclasses set the class attributes and implement `run`."""

    name: ClassVar[str]
    description: ClassVar[str]
    Args: ClassVar[type[ToolArgs]]
    # Read-only tools may run concurrently with each other within one model turn.
    read_only: ClassVar[bool] = False
    # Offered when an agent does not list its tools (aliases opt out).
    default_enabled: ClassVar[bool] = True

    async def run(self, args: Any, ctx: ToolContext) -> ToolResult:
        raise NotImplementedError

    @classmethod
    def spec(cls) -> dict[str, Any]:
        return {
            "name": cls.name,
            "description": cls.description,
            "input_schema": _clean_schema(cls.Args.model_json_schema()),
        }


TOOL_REGISTRY: dict[str, type[Tool]] = {}

ToolT = TypeVar("ToolT", bound=type[Tool])


def register_tool(cls: ToolT) -> ToolT:
    """Add a tool class to the registry under its `name` (the core tools are registered by
    `tools.load_core_tools`, from each core module's `TOOLS`, in the order models see them)."""
    if cls.name in TOOL_REGISTRY and TOOL_REGISTRY[cls.name] is not cls:
        raise RuntimeError(f"two tools are named {cls.name!r}")
    TOOL_REGISTRY[cls.name] = cls
    return cls


def core_tool_names() -> list[str]:
    _load_core_tools()
    return list(TOOL_REGISTRY)


def default_tool_names() -> list[str]:
    """The tools an agent gets when it does not list any: every core tool but the aliases."""
    _load_core_tools()
    return [name for name, cls in TOOL_REGISTRY.items() if cls.default_enabled]


def _load_core_tools() -> None:
    # The core tool modules load on first need, not with this module (see tools/__init__.py).
    from tools import load_core_tools

    load_core_tools()


class UnknownToolError(ValueError):
    """An enabled-tools list names tools that do not exist."""

    def __init__(self, unknown: Iterable[str]) -> None:
        self.unknown = sorted(unknown)
        super().__init__(
            f"unknown tool(s): {', '.join(self.unknown)}; "
            f"available: {', '.join(sorted(TOOL_REGISTRY))}"
        )


class Toolbox:
    """The tools of one workspace, and owner of every process and resource they start.

    Use as `async with Toolbox(workspace) as box:`; leaving the block kills every process
    the tools started (whole process groups) and releases every service.
    """

    def __init__(
        self,
        workspace: Path | str,
        *,
        env: dict[str, str] | None = None,
        on_event: EventCallback | None = None,
        enabled: list[str] | None = None,
        settings: ToolSettings | None = None,
        extra_tools: Iterable[Tool] = (),
        run_id: str | None = None,
    ) -> None:
        _load_core_tools()
        self.workspace = Workspace(workspace)
        self.run_id = run_id
        self.env = dict(env or {})
        self.on_event = on_event
        self.settings = settings or ToolSettings()
        names = default_tool_names() if enabled is None else list(dict.fromkeys(enabled))
        extra = {tool.name: tool for tool in extra_tools}
        unknown = [n for n in names if n not in TOOL_REGISTRY and n not in extra]
        if unknown:
            raise UnknownToolError(unknown)
        self._tools: dict[str, Tool] = {
            name: extra[name] if name in extra else TOOL_REGISTRY[name]() for name in names
        }
        for name, tool in extra.items():
            self._tools.setdefault(name, tool)
        self._services: dict[Callable[..., Any], Any] = {}
        self._exit_stack = AsyncExitStack()
        self._closed = False

    async def __aenter__(self) -> Toolbox:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._exit_stack.aclose()

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def tool(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def is_read_only(self, name: str) -> bool:
        tool = self._tools.get(name)
        return bool(tool and tool.read_only)

    def specs(self) -> list[dict[str, Any]]:
        return [tool.spec() for tool in self._tools.values()]

    def service(self, factory: Callable[[Toolbox], ServiceT]) -> ServiceT:
        if self._closed:
            raise ToolError("the toolbox is closed")
        existing = self._services.get(factory)
        if existing is None:
            existing = factory(self)
            self._services[factory] = existing
            self._exit_stack.push_async_callback(existing.aclose)
        return existing

    def peek_service(self, factory: Callable[[Toolbox], ServiceT]) -> ServiceT | None:
        """The service if a tool already created it, without creating it."""
        return self._services.get(factory)

    async def call(
        self,
        name: str,
        args: dict[str, Any] | None,
        *,
        call_id: str | None = None,
        on_event: EventCallback | None = None,
    ) -> ToolResult:
        """Run one tool call. Never raises for a bad call: errors come back as results."""
        tool = self._tools.get(name)
        if tool is None:
            return ToolResult.error(
                f"Unknown tool {name!r}. Available tools: {', '.join(self._tools)}.",
                code="unknown_tool",
            )
        if args is None:
            args = {}
        if not isinstance(args, dict):
            return ToolResult.error(
                f"Arguments for {name} must be a JSON object, got {type(args).__name__}. "
                + _usage(tool),
                code="invalid_arguments",
            )
        bad_text = lone_surrogate(args)
        if bad_text is not None:
            return ToolResult.error(
                f"Invalid arguments for {name}: {bad_text} contains a lone UTF-16 surrogate "
                "(e.g. \\ud800), which is not valid Unicode text; send the text as UTF-8 "
                "(a character outside the BMP as one character or a surrogate pair).",
                code="invalid_arguments",
            )
        try:
            parsed = tool.Args.model_validate(args)
        except ValidationError as exc:
            return ToolResult.error(
                f"Invalid arguments for {name}: {_describe_validation(exc)}. {_usage(tool)}",
                code="invalid_arguments",
            )
        ctx = ToolContext(self, call_id=call_id, on_event=on_event or self.on_event)
        started = time.perf_counter()
        try:
            result = await tool.run(parsed, ctx)
        except ToolError as exc:
            result = ToolResult.error(str(exc), **({"code": exc.code} if exc.code else {}))
        except PathOutsideWorkspace as exc:
            result = ToolResult.error(str(exc), code="outside_workspace")
        except InvalidPath as exc:
            result = ToolResult.error(str(exc), code="invalid_path")
        except FileNotFoundError as exc:
            result = ToolResult.error(str(exc), code="not_found")
        except OSError as exc:
            if exc.errno in NO_SPACE_ERRNOS:
                error = disk_full_error(f"{name} failed", exc)
                result = ToolResult.error(str(error), code="disk_full")
            else:
                log.exception("tool %s failed unexpectedly (call %s)", name, call_id)
                result = ToolResult.error(
                    f"{name} failed unexpectedly: {type(exc).__name__}: {exc}", code="internal"
                )
        except Exception as exc:
            log.exception("tool %s failed unexpectedly (call %s)", name, call_id)
            result = ToolResult.error(
                f"{name} failed unexpectedly: {type(exc).__name__}: {exc}", code="internal"
            )
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        result.data.setdefault("duration_ms", duration_ms)
        # A file name that is not UTF-8 (in a listing, a match, an error) would otherwise make
        # the result impossible to store, stream or send to the model.
        result.output = printable(result.output)
        result.data = printable_value(result.data)
        if result.is_error:
            # For an operator reading --log-level debug: why a call failed, as the model saw it
            # (the daemon's log filter hides any secret the text holds).
            log.debug(
                "tool %s call %s failed (%s, %.0f ms): %s",
                name,
                call_id,
                result.data.get("code", "error"),
                duration_ms,
                result.output,
            )
        return result


def _usage(tool: Tool) -> str:
    schema = tool.spec()["input_schema"]
    required = set(schema.get("required", []))
    parts = []
    for prop, prop_schema in schema.get("properties", {}).items():
        kind = prop_schema.get("type") or _any_of_types(prop_schema)
        parts.append(f"{prop} ({kind}{', required' if prop in required else ''})")
    return f"{tool.name} takes: {'; '.join(parts) or 'no arguments'}."


def _any_of_types(schema: dict[str, Any]) -> str:
    kinds = [s.get("type", "any") for s in schema.get("anyOf", []) if s.get("type") != "null"]
    return "|".join(kinds) or "any"


def _describe_validation(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        if err["type"] == "extra_forbidden":
            problems.append(f"unexpected field {where!r}")
        elif err["type"] == "missing":
            problems.append(f"missing required field {where!r}")
        else:
            problems.append(f"{where}: {err['msg']} (got {err.get('input')!r:.80})")
    return "; ".join(problems)


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop pydantic's `title` noise: models pay tokens for every schema byte."""
    if isinstance(schema, dict):
        return {
            k: _clean_schema(v)
            for k, v in schema.items()
            if not (k == "title" and isinstance(v, str))
        }
    if isinstance(schema, list):
        return [_clean_schema(v) for v in schema]
    return schema


def truncate_middle(text: str, max_bytes: int) -> tuple[str, int]:
    """Keep the head and tail of `text` within ~max_bytes; returns (text, bytes cut)."""
    encoded = text.encode("utf-8", errors="replace")
    if len(encoded) <= max_bytes:
        return text, 0
    half = max(max_bytes // 2, 0)
    head = encoded[:half].decode("utf-8", errors="ignore")
    tail = encoded[len(encoded) - half :].decode("utf-8", errors="ignore") if half else ""
    cut = len(encoded) - len(head.encode()) - len(tail.encode())
    marker = f"\n…[{cut} bytes (~{cut // 4} tokens) truncated]…\n"
    return head + marker + tail, cut
