"""The `agentd` command line.

Each subcommand is a `add_<name>_parser(subparsers)` that registers its flags and sets
`func` to a `cmd_<name>(args) -> int`; `COMMANDS` lists them. Add a command by writing those
two functions and adding the first to `COMMANDS`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import itertools
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

import runtime
from runtime.config import ConfigError, Settings, env_names

if TYPE_CHECKING:
    from runtime.client import APIError, AsyncClient
    from runtime.daemon import Companion

# Settings that `agentd serve` takes as flags (all of them), in --help order.
SERVE_FIELDS = (
    "host",
    "port",
    "workspace",
    "state_dir",
    "token",
    "sandbox_id",
    "dev_url_template",
    "log_level",
    "max_body_bytes",
    "max_concurrent_runs",
    "max_queue",
    "shutdown_grace",
    "sse_ping_interval",
    "sse_retry_ms",
    "cors_origins",
    "webhook_secret",
    "webhook_max_attempts",
    "webhook_backoff",
    "webhook_timeout",
    "record",
    "custom_tool_url_prefixes",
    "custom_tool_timeout",
    "workspace_skip_dirs",
    "default_model",
    "public_url",
    "tool_hub_url",
)


# `agentd connect`: the link's own settings, then serve's but the host (always loopback).
CONNECT_FIELDS = (
    "control_plane",
    "device_id",
    *(name for name in SERVE_FIELDS if name != "host"),
)


def add_settings_flags(parser: argparse.ArgumentParser, fields: Sequence[str]) -> None:
    """One `--flag` per setting, defaulting to None so the environment and the defaults
    apply (`Settings.load` does the layering and the validation)."""
    for name in fields:
        info = Settings.model_fields[name]
        default = info.get_default(call_default_factory=False)
        shown = "the current directory" if name == "workspace" else default
        if name == "state_dir":
            shown = "~/.local/state/agentd"
        text = info.description or name.replace("_", " ")
        env = " or ".join(env_names(name))
        parts = [text, f"env: {env}"]
        if shown not in (None, "") and name not in ("token", "webhook_secret"):
            parts.append(f"default: {shown}")  # an empty default is said by the text itself
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            metavar=name.split("_")[-1].upper(),
            help="; ".join(parts),
        )


def settings_from_args(args: argparse.Namespace, fields: Sequence[str]) -> Settings:
    overrides: dict[str, Any] = {name: getattr(args, name, None) for name in fields}
    return Settings.load(overrides)


# -- serve -----------------------------------------------------------------------------------


def add_serve_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the HTTP API daemon",
        description="Serve the agentd HTTP API (docs/design.md, HTTP API) until SIGTERM/SIGINT. "
        "Without a token it listens only on loopback.",
    )
    add_settings_flags(parser, SERVE_FIELDS)
    parser.set_defaults(func=cmd_serve)


def import_aiohttp_for_the_daemon() -> None:
    """`agentd serve` and `agentd connect` import aiohttp first thing (checking the settings
    may import it), without reading the trust store: see tools/tls.py."""
    from tools.tls import trust_store_unread

    with trust_store_unread():
        import aiohttp  # noqa: F401


def cmd_serve(args: argparse.Namespace) -> int:
    import_aiohttp_for_the_daemon()
    try:
        settings = settings_from_args(args, SERVE_FIELDS)
        settings.check()
        check_directories(settings)
    except ConfigError as exc:
        print(f"agentd serve: {exc}", file=sys.stderr)
        return 2
    return run_daemon("serve", settings)


def run_daemon(command: str, settings: Settings, companion: Companion | None = None) -> int:
    """`agentd serve` / `agentd connect`: serve until stopped; a locked state dir or a port
    that cannot be listened on is said on stderr (exit status 2 and 1)."""
    gc.disable()  # for the start-up only: see resume_gc_after_start
    from runtime.daemon import configure_logging, daemon_secrets, serve
    from runtime.store import StoreLocked
    from tools.libc import become_subreaper

    configure_logging(settings.log_level, daemon_secrets(settings, os.environ))
    # Orphaned commands (`nohup … &`, double forks) are reparented to the daemon rather than
    # to init while it lives: they stay in its process tree and are reaped by it.
    become_subreaper()
    try:
        return asyncio.run(serve(settings, on_ready=resume_gc_after_start, companion=companion))
    except StoreLocked as exc:
        print(f"agentd {command}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the port is taken
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = "; another process listens there: choose another --port (--port 0: any free one)"
        print(
            f"agentd {command}: cannot listen on {settings.host}:{settings.port}: "
            f"{exc.strerror or exc}{hint}",
            file=sys.stderr,
        )
        return 1
    finally:
        gc.enable()


# -- connect ---------------------------------------------------------------------------------


def add_connect_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "connect",
        help="run the daemon and dial out to the control plane (local-mac mode)",
        description="Run the whole daemon (its local API on 127.0.0.1) and keep a link to the "
        "control plane, which sends its requests over it: a WebSocket to "
        '{control plane}/v1/devices/{device id}/link (docs/design.md, "The link"). '
        "Persisted thread events are pushed to the control plane. Exit status: 0 stopped by "
        "SIGTERM/SIGINT, 1 the control plane refused the token, 2 usage error.",
    )
    add_settings_flags(parser, CONNECT_FIELDS)
    parser.set_defaults(func=cmd_connect)


def cmd_connect(args: argparse.Namespace) -> int:
    import_aiohttp_for_the_daemon()
    try:
        settings = settings_from_args(args, CONNECT_FIELDS)
        settings.host = "127.0.0.1"
        missing = [
            "--" + name.replace("_", "-") + " / " + env_names(name)[0]
            for name in ("control_plane", "device_id", "token")
            if getattr(settings, name) is None
        ]
        if missing:
            raise ConfigError(f"missing {', '.join(missing)}")
        settings.check()
        check_directories(settings)
    except ConfigError as exc:
        print(f"agentd connect: {exc}", file=sys.stderr)
        return 2
    from runtime.link.connect import LinkTarget, link_companion

    assert settings.control_plane and settings.device_id and settings.token
    target = LinkTarget(settings.control_plane, settings.device_id, settings.token)
    return run_daemon("connect", settings, link_companion(settings, target))


def resume_gc_after_start(url: str) -> None:
    """`agentd serve` starts with the garbage collector paused: start-up creates ~85k objects
    that live as long as the daemon (modules, classes, pydantic validators) and next to no
    garbage, and collecting while they pile up scans them again and again (a tenth of the
    start-up time). Once the daemon listens, what exists is frozen (later collections skip
    it) and collection resumes."""
    gc.freeze()
    gc.enable()


# -- shared by run and demo -------------------------------------------------------------------

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# The reader of the output went away (`agentd runs | head -1`): 128 + SIGPIPE, the status a
# shell reports for a command that a closed pipe ended.
EXIT_CLOSED_OUTPUT = 141
CANCEL_ANSWER_WAIT_S = 10.0


def _is_tty(stream: Any) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def _use_color(stream: Any) -> bool:
    return _is_tty(stream) and not os.environ.get("NO_COLOR")


@contextlib.asynccontextmanager
async def embedded_daemon(settings: Settings) -> AsyncIterator[str]:
    """Serve the API in this process (on a loopback port) and yield its URL: `agentd run` and
    `agentd demo` use the same HTTP + SSE path as the control plane does."""
    from runtime.daemon import serve

    loop = asyncio.get_running_loop()
    ready: asyncio.Future[str] = loop.create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve(settings, on_ready=ready.set_result, stop=stop, handle_signals=False)
    )
    first: set[asyncio.Future[Any]] = {task, ready}
    done, _ = await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
    if task in done:  # it failed before it listened: surface why
        await task
        raise RuntimeError("the embedded daemon stopped before it was ready")
    try:
        yield ready.result()
    finally:
        stop.set()
        await task


# Consecutive failed attempts to follow a run's stream before giving up. Requests are not
# retried: a person is told at once that the queue is full or the daemon is not there.
RECONNECT_ATTEMPTS = 5


class RunWatcher:
    """Streams a run's events to the terminal. The first Ctrl-C cancels the run (and the
    stream then ends with its `complete` event); a second one stops watching at once."""

    def __init__(self, client: AsyncClient, *, as_json: bool, out: Any = None) -> None:
        from runtime.render import EventRenderer, Spinner

        self.client = client
        self.as_json = as_json
        self.out = out or sys.stdout
        self.renderer = EventRenderer(self.out, color=_use_color(self.out))
        # A person at a terminal sees what the run is waiting for; pipes and --json do not.
        self.spinner = (
            Spinner(self.out, self.renderer) if _is_tty(self.out) and not as_json else None
        )
        self.run_id: str | None = None
        self.interrupts = 0
        self._cancelling: asyncio.Task[None] | None = None

    def on_interrupt(self, watcher_task: asyncio.Task[Any]) -> None:
        if self.spinner is not None:
            self.spinner.clear()
        self.interrupts += 1
        if self.interrupts == 1 and self.run_id is not None:
            print("\n^C cancelling the run (press Ctrl-C again to quit)", file=sys.stderr)
            self._cancelling = asyncio.create_task(self._cancel(self.run_id))
        else:
            watcher_task.cancel()

    async def _cancel(self, run_id: str) -> None:
        from runtime.client import AgentdError, ConflictError

        try:
            await self.client.runs.cancel(run_id)
        except ConflictError:
            pass  # the run had ended already, which is what we wanted
        except AgentdError as exc:
            print(f"agentd: could not cancel the run: {exc}", file=sys.stderr)

    async def settle(self, *, abandon: bool) -> None:
        """Let a cancel request in flight finish (or stop it, with `abandon`) before the
        caller closes the connection it uses. The daemon answers a cancel once the run has
        ended (within its 5 s wait), so this is bounded by CANCEL_ANSWER_WAIT_S."""
        task, self._cancelling = self._cancelling, None
        if task is None:
            return
        if not abandon:
            await asyncio.wait({task}, timeout=CANCEL_ANSWER_WAIT_S)
        task.cancel()
        await asyncio.wait({task})

    async def watch(self, start: dict[str, Any]) -> dict[str, Any] | None:
        """Start the run (`start` holds the arguments of `runs.start`) and render it;
        returns the `complete` event (None if none came).

        A stream that breaks before `complete` (a daemon restart, a proxy timing out, a
        network blip) is picked up again from the last event seen: the daemon replays what
        was missed, so nothing is shown twice or lost."""
        started = await self.client.runs.start(**start)
        self.run_id = started["runId"]
        spinning = asyncio.create_task(self.spinner.run()) if self.spinner else None
        try:
            return await self._follow(self.run_id)
        finally:
            if spinning is not None:
                spinning.cancel()
                await asyncio.wait({spinning})

    async def _follow(self, run_id: str) -> dict[str, Any] | None:
        def say_why(error: Exception) -> None:
            if self.spinner is not None:
                self.spinner.clear()
            print(f"agentd: {error}; following the run again", file=sys.stderr)

        events = self.client.runs.stream(
            run_id, on_reconnect=say_why, max_reconnects=RECONNECT_ATTEMPTS
        )
        async with contextlib.aclosing(events):
            async for event in events:
                wire = event.to_dict()
                if self.spinner is not None:
                    self.spinner.before(wire)
                self._show(wire)
                if event.type == "complete":
                    return wire
        return None

    def _show(self, event: dict[str, Any]) -> None:
        if self.as_json:
            self.out.write(json.dumps(event, ensure_ascii=False) + "\n")
            self.out.flush()
        else:
            self.renderer.render(event)

    def exit_code(self, final: dict[str, Any] | None) -> int:
        if final is None:
            return EXIT_FAILED
        if final.get("status") == "completed":
            return EXIT_OK
        if final.get("status") == "cancelled" and self.interrupts:
            return EXIT_INTERRUPTED
        return EXIT_FAILED


async def _watch_with_interrupts(
    watcher: RunWatcher, start: dict[str, Any]
) -> tuple[dict[str, Any] | None, bool]:
    """(complete event, whether a second Ctrl-C stopped us before it came)."""
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(watcher.watch(start))
    installed = _install_sigint(loop, lambda: watcher.on_interrupt(task))
    finished = False
    try:
        final = await task
        finished = True
        return final, False
    except asyncio.CancelledError:
        if watcher.interrupts >= 2 or (watcher.interrupts and watcher.run_id is None):
            return None, True
        raise
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)
        await watcher.settle(abandon=not finished)


class Termination:
    """What SIGTERM and SIGHUP (`kill`, a CI timeout, a closed terminal) do to a command that
    `run_until_done` runs: cancel it, like a second Ctrl-C; or, once its work is done and it
    only waits for Ctrl-C (`agentd demo`'s app, `agentd run --keep`), end that wait as
    Ctrl-C does (`ends_wait`)."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._end_wait: Callable[[], None] | None = None

    @contextlib.contextmanager
    def ends_wait(self, end: Callable[[], None]) -> Iterator[None]:
        """Within the block, SIGTERM and SIGHUP call `end` instead of cancelling."""
        self._end_wait = end
        try:
            yield
        finally:
            self._end_wait = None

    def on_signal(self, signum: int, task: asyncio.Task[Any]) -> None:
        if self._end_wait is not None:
            self._end_wait()
            return
        self.received.append(signum)
        task.cancel()


def run_until_done(main: Coroutine[Any, Any, int], termination: Termination | None = None) -> int:
    """`asyncio.run(main)` for run, demo and tool, where SIGTERM and SIGHUP (`kill`, a CI
    timeout, a closed terminal) end the command like a second Ctrl-C: `main` is cancelled,
    so the embedded daemon or toolbox stops its runs and kills their processes on the way
    out instead of leaving them behind. Exits 130 (interrupted) then. `termination`: the one
    `main` was given, when it has a wait those signals end instead (see Termination)."""
    termination = termination or Termination()

    async def guarded() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        installed = []
        for signum in (signal.SIGTERM, signal.SIGHUP):
            try:
                loop.add_signal_handler(signum, termination.on_signal, signum, task)
                installed.append(signum)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass
        try:
            return await main
        except asyncio.CancelledError:
            if termination.received:
                return EXIT_INTERRUPTED
            raise
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)

    return asyncio.run(guarded())


def _install_sigint(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> bool:
    try:
        loop.add_signal_handler(signal.SIGINT, callback)
    except (NotImplementedError, RuntimeError):  # not the main thread
        return False
    return True


def _local_settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Settings of an embedded daemon: loopback, any free port, quiet logs, and no shutdown
    grace: it only stops once its run has ended or when a second Ctrl-C asks to quit now."""
    settings = Settings.load(
        {
            "host": "127.0.0.1",
            "port": 0,
            "workspace": getattr(args, "workspace", None),
            "state_dir": getattr(args, "state_dir", None),
            "log_level": "warning",
            "shutdown_grace": 0,
            **overrides,
        }
    )
    check_directories(settings)
    check_workspace_writable(settings.workspace)
    return settings


def check_workspace_writable(workspace: Path) -> None:
    """ConfigError unless the daemon can keep its thread files in `workspace` (made on a
    run's first event, runtime/rollout.py), so a read-only workspace is reported up front
    instead of as the run's internal error. `agentd run` and `agentd demo` check it."""
    from runtime.rollout import ROLLOUT_DIR

    elsewhere = "; choose another with --workspace"
    # The deepest of <workspace>/.agentd/threads, .agentd and the workspace that exists must
    # be a writable directory: what is missing below it is made there.
    for path in (workspace / ROLLOUT_DIR, *(workspace / ROLLOUT_DIR).parents):
        if not os.path.lexists(path):
            continue
        if not path.is_dir():
            raise ConfigError(
                f"cannot use the workspace {workspace}: {path} is not a directory{elsewhere}"
            )
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(
                f"cannot use the workspace {workspace}: {path} is not writable (agentd keeps "
                f"its thread files in {workspace / ROLLOUT_DIR}){elsewhere}"
            )
        return


def check_directories(settings: Settings) -> None:
    """ConfigError unless the workspace is a directory and the state dir is usable (created
    here if need be), so a wrong path is reported as such instead of as a traceback."""
    if not settings.workspace.is_dir():
        raise ConfigError(f"workspace {settings.workspace} is not a directory")
    elsewhere = "; choose another with --state-dir or AGENTD_STATE_DIR"
    try:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot use the state dir {settings.state_dir}: {exc.strerror or exc}{elsewhere}"
        ) from exc
    if not os.access(settings.state_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot use the state dir {settings.state_dir}: not writable{elsewhere}")


def _fail(command: str, message: str, code: int = EXIT_USAGE) -> int:
    print(f"agentd {command}: {message}", file=sys.stderr)
    return code


# -- run -------------------------------------------------------------------------------------

RUN_AGENT_SLUG = "cli"


def add_run_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run an agent on a prompt and watch it work",
        description="Run one agent on a prompt and render its event stream: thinking (dimmed), "
        "text as it streams, tool calls with their input, live command output, file edits as "
        "diffs, the dev URL, and a summary. Without --url the daemon runs in this process on "
        "--workspace and --state-dir. Ctrl-C cancels the run; a second Ctrl-C (or SIGTERM) "
        "quits, and an in-process daemon then stops the run's processes. Exit status: "
        "0 completed, 1 failed, 2 usage error, 130 interrupted, 141 its output's reader went "
        "away (a closed pipe, e.g. `| head`; an in-process daemon then stops the run's "
        "processes too).",
    )
    parser.add_argument(
        "prompt", help="what to ask the agent; - reads it from stdin, @FILE from a file"
    )
    who = parser.add_argument_group("which agent (one of)")
    who.add_argument("--agent", metavar="SLUG", help="an agent defined on the daemon")
    who.add_argument(
        "--model",
        help="run an ad-hoc agent (saved as 'cli') on this model, e.g. claude-sonnet-5-5, "
        "gpt-5.5, gemini-2.5-pro, replay:FILE.jsonl",
    )
    parser.add_argument("--system", default="", help="system prompt of the ad-hoc agent")
    parser.add_argument(
        "--tools", help="comma-separated core tools of the ad-hoc agent (default: all)"
    )
    parser.add_argument("--thread", metavar="ID", help="continue this thread")
    parser.add_argument("--max-turns", type=int, metavar="N", help="limit on model turns")
    parser.add_argument("--max-tokens", type=int, metavar="N", help="output tokens per turn")
    parser.add_argument(
        "--url",
        default=os.environ.get("AGENTD_URL"),
        help="a running daemon to use (env: AGENTD_URL; default: run one in this process)",
    )
    parser.add_argument(
        "--token",
        default=None,
        help="the daemon's API token (env: AGENTD_TOKEN)",
    )
    parser.add_argument(
        "--workspace", help="workspace of the in-process daemon (default: current directory)"
    )
    parser.add_argument(
        "--state-dir",
        help="state of the in-process daemon (env: AGENTD_STATE_DIR; "
        "default: ~/.local/state/agentd)",
    )
    parser.add_argument("--json", action="store_true", help="print raw events as JSON lines")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="with the in-process daemon: keep serving after the run (its dev URL stays up) "
        "until Ctrl-C or SIGTERM",
    )
    parser.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    if bool(args.agent) == bool(args.model):
        return _fail("run", "give exactly one of --agent SLUG or --model MODEL")
    try:
        args.prompt = read_text_argument(args.prompt, "the prompt")
    except ValueError as exc:
        return _fail("run", str(exc))
    if args.url:
        if args.keep:
            return _fail("run", "--keep is for the in-process daemon (without --url)")
        if (problem := daemon_url_problem(args.url)) is not None:
            return _fail("run", problem)
        token = args.token or os.environ.get("AGENTD_TOKEN")
        return run_until_done(_run_remote(args, args.url, token))
    try:
        settings = _local_settings(args)
    except ConfigError as exc:
        return _fail("run", str(exc))
    termination = Termination()
    return run_until_done(_run_embedded(args, settings, termination), termination)


def read_text_argument(value: str, what: str) -> str:
    """`-`: read standard input; `@FILE`: read the file; anything else is the text itself."""
    if value == "-":
        if sys.stdin is None or sys.stdin.closed:  # None: the process started without fd 0
            raise ValueError(f"cannot read {what}: standard input is closed")
        try:
            return sys.stdin.read()
        except OSError as exc:
            raise ValueError(
                f"cannot read {what} from standard input: {exc.strerror or exc}"
            ) from exc
        except UnicodeDecodeError as exc:
            raise ValueError(f"{what} on standard input is not UTF-8 text: {exc}") from exc
    if value.startswith("@") and len(value) > 1:
        path = Path(value[1:]).expanduser()
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read {what} from {path}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise ValueError(f"{what} in {path} is not UTF-8 text: {exc}") from exc
    return value


async def _run_remote(args: argparse.Namespace, url: str, token: str | None) -> int:
    code, _final = await _run(args, url, token)
    return code


async def _run_embedded(
    args: argparse.Namespace, settings: Settings, termination: Termination
) -> int:
    from runtime.store import StoreLocked

    try:
        async with embedded_daemon(settings) as url:
            code, final = await _run(args, url, settings.token)
            return await _after_the_run(args, code, final, termination)
    except StoreLocked as exc:  # an `agentd serve` owns it: --url runs there instead
        return _fail("run", f"{exc}, or pass --url to run on that daemon")


async def _after_the_run(
    args: argparse.Namespace, code: int, final: dict[str, Any] | None, termination: Termination
) -> int:
    """An in-process run's daemon stops with the command, and a dev server with it: say so,
    or with --keep serve until Ctrl-C."""
    dev_url = (final or {}).get("devUrl")
    if not dev_url or code != EXIT_OK:
        return code
    if not args.keep:
        print(
            f"agentd run: the dev server at {dev_url} stops now, with this command; "
            "rerun with --keep to keep it up until Ctrl-C",
            file=sys.stderr,
        )
        return code
    await _wait_for_interrupt(
        lambda: print(
            f"agentd run: keeping {dev_url} up; press Ctrl-C to stop it and exit.",
            file=sys.stderr,
            flush=True,
        ),
        termination,
    )
    return code


async def _run(
    args: argparse.Namespace, url: str, token: str | None
) -> tuple[int, dict[str, Any] | None]:
    """Run the agent on the daemon at `url`: (exit code, the run's `complete` event)."""
    from runtime.client import APIError, AsyncClient, AuthenticationError, NetworkError

    start: dict[str, Any] = {"agent": args.agent or RUN_AGENT_SLUG, "prompt": args.prompt}
    if args.thread:
        start["thread_id"] = args.thread
    config = {"maxTurns": args.max_turns, "maxTokens": args.max_tokens}
    if any(v is not None for v in config.values()):
        start["config"] = {k: v for k, v in config.items() if v is not None}
    async with AsyncClient(url, token, max_retries=0) as client:
        try:
            if args.model:
                spec: dict[str, Any] = {
                    "slug": RUN_AGENT_SLUG,
                    "model": args.model,
                    "systemPrompt": args.system,
                }
                if args.tools:
                    spec["tools"] = [t.strip() for t in args.tools.split(",") if t.strip()]
                await client.agents.upsert(spec)
            watcher = RunWatcher(client, as_json=args.json)
            final, interrupted = await _watch_with_interrupts(watcher, start)
        except AuthenticationError as exc:
            hint = (
                "the daemon wants its API token: pass --token or set AGENTD_TOKEN"
                if not token
                else "the daemon refused the token given by --token or AGENTD_TOKEN"
            )
            return _fail("run", f"{exc.message} ({hint})"), None
        except APIError as exc:
            if is_foreign_answer(exc):
                return _fail("run", foreign_answer(url, exc), EXIT_FAILED), None
            # The request was wrong (bad agent, thread, token…) → usage; the daemon could
            # not take it now (busy thread 409, full queue 429, 5xx) → the run failed.
            code = (
                EXIT_USAGE
                if 400 <= exc.status < 500 and exc.status not in (409, 429)
                else EXIT_FAILED
            )
            return _fail("run", exc.message, code), None
        except NetworkError as exc:
            return _fail("run", exc.message, EXIT_FAILED), None
    if interrupted:
        return EXIT_INTERRUPTED, final
    return watcher.exit_code(final), final


# -- demo ------------------------------------------------------------------------------------


def add_demo_parser(subparsers: Any) -> None:
    from runtime.demo import LIVE_MODELS

    parser = subparsers.add_parser(
        "demo",
        help="watch an agent build, test and serve a small web app (offline)",
        description="The offline demo: an agent writes a small notes web app (a page and a JSON "
        "API), runs its tests, starts it and returns its dev URL. The model's turns come from a "
        "cassette shipped with agentd; the files, processes and server are real. The app keeps "
        "running until Ctrl-C or SIGTERM (or, with --exit, the demo stops once the URL "
        "answered). With --live and ANTHROPIC_API_KEY or OPENAI_API_KEY set, a real model does "
        "the task. Exit status: 0 the app was served, 1 the run failed or the app did not "
        "answer, 2 usage error, 130 interrupted before the app was up, 141 its output's "
        "reader went away (a closed pipe, e.g. `| head`).",
    )
    parser.add_argument(
        "--workspace", help="where the app is written (default: a new temporary directory)"
    )
    parser.add_argument(
        "--exit", action="store_true", help="stop after checking that the dev URL answers"
    )
    parser.add_argument(
        "--live", action="store_true", help="use a real model (needs an API key in the env)"
    )
    defaults = " or ".join(f"{model} with {key}" for key, model in LIVE_MODELS.items())
    parser.add_argument("--model", help=f"model for --live (default: {defaults})")
    parser.add_argument(
        "--record", metavar="FILE", help="with --live, save the model's turns as a cassette"
    )
    parser.add_argument("--json", action="store_true", help="print raw events as JSON lines")
    parser.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from runtime.demo import LIVE_MODELS, live_model

    model = None
    if args.live:
        model = args.model or live_model(dict(os.environ))
        if model is None:
            keys = " or ".join(LIVE_MODELS)
            return _fail("demo", f"--live needs {keys} in the environment")
    elif args.model or args.record:
        return _fail("demo", "--model and --record go with --live")
    workspace = Path(args.workspace or tempfile.mkdtemp(prefix="agentd-demo-")).resolve()
    try:
        workspace.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _fail("demo", f"cannot create the workspace {workspace}: {exc.strerror or exc}")
    state_dir = Path(tempfile.mkdtemp(prefix="agentd-demo-state-"))
    overrides: dict[str, Any] = {"workspace": str(workspace), "state_dir": str(state_dir)}
    if args.record:
        overrides["record"] = str(Path(args.record).resolve())
    try:
        settings = _local_settings(args, **overrides)
    except ConfigError as exc:
        return _fail("demo", str(exc))
    termination = Termination()
    try:
        return run_until_done(_demo(args, settings, model, termination), termination)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


async def _demo(
    args: argparse.Namespace, settings: Settings, model: str | None, termination: Termination
) -> int:
    from runtime.client import AsyncClient
    from runtime.demo import DEMO_AGENT_SLUG, DEMO_PROMPT, demo_agent

    say = _Narrator(enabled=not args.json)
    say(f"agentd demo · workspace {settings.workspace}")
    say(f"model: {model or 'recorded cassette (offline)'}\n")
    async with (
        embedded_daemon(settings) as url,
        AsyncClient(url, settings.token, max_retries=0) as client,
    ):
        await client.agents.upsert(demo_agent(model))
        watcher = RunWatcher(client, as_json=args.json)
        final, interrupted = await _watch_with_interrupts(
            watcher, {"agent": DEMO_AGENT_SLUG, "prompt": DEMO_PROMPT}
        )
        if interrupted:
            return EXIT_INTERRUPTED
        code = watcher.exit_code(final)
        if code != EXIT_OK or final is None:
            return code
        dev_url = final.get("devUrl")
        # Failures go to stderr, also with --json (where the narration is off).
        if not dev_url:
            return _fail("demo", "the agent finished without starting a dev server", EXIT_FAILED)
        status = await _probe(str(dev_url))
        if status is None:
            return _fail("demo", f"the dev server at {dev_url} did not answer", EXIT_FAILED)
        say(f"\n✔ {dev_url} answered HTTP {status}. The app's files are in {settings.workspace}.")
        if args.exit:
            return EXIT_OK
        await _wait_for_interrupt(
            lambda: say("The app keeps running: open the URL. Press Ctrl-C to stop it and exit."),
            termination,
        )
        return EXIT_OK


class _Narrator:
    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str) -> None:
        if self.enabled:
            print(text, flush=True)


async def _probe(url: str, attempts: int = 20, interval: float = 0.25) -> int | None:
    """The HTTP status the URL answers with, retrying briefly while it starts (None: never)."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for _ in range(attempts):
            try:
                async with session.get(url) as response:
                    return response.status
            except (TimeoutError, aiohttp.ClientError):
                await asyncio.sleep(interval)
    return None


async def _wait_for_interrupt(announce: Callable[[], None], termination: Termination) -> None:
    """Wait for Ctrl-C, or SIGTERM or SIGHUP, which end the wait alike (the command's work is
    done: stopping now is no interruption); `announce` says so once the handlers are in place
    (a Ctrl-C right after the announcement must not be a KeyboardInterrupt)."""
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    with termination.ends_wait(interrupted.set):
        if not _install_sigint(loop, interrupted.set):
            announce()
            await interrupted.wait()
            return
        announce()
        try:
            await interrupted.wait()
        finally:
            loop.remove_signal_handler(signal.SIGINT)


# -- tool ------------------------------------------------------------------------------------


def add_tool_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "tool",
        help="call one tool directly and print its result",
        description="Call one core tool with JSON arguments, as the model would. A command's "
        "output (exec_command) streams to stdout and its exit status to stderr; other tools "
        "print the text the model would read, and file edits show as diffs on stderr. "
        "Processes the tool starts are stopped when the command exits (also on Ctrl-C). "
        "Exit status: 0 ok, 1 the tool returned an error, the command exited non-zero or was "
        "still running, 2 usage error, 130 interrupted, 141 its output's reader went away (a "
        "closed pipe, e.g. `| head`; the processes are stopped then too).",
    )
    parser.add_argument("name", help="tool name, e.g. exec_command, apply_patch, read_file")
    parser.add_argument(
        "arguments",
        nargs="?",
        default="{}",
        help="JSON object of arguments; - reads them from stdin, @FILE from a file (for "
        "apply_patch, a patch there is taken as its input)",
    )
    parser.add_argument("--workspace", default=".", help="workspace root (default: .)")
    parser.add_argument("--json", action="store_true", help="print {output, isError, data} as JSON")
    parser.set_defaults(func=cmd_tool)


def cmd_tool(args: argparse.Namespace) -> int:
    from tools.base import core_tool_names

    if args.name not in core_tool_names():
        return _fail("tool", f"unknown tool {args.name!r}; tools: {', '.join(core_tool_names())}")
    try:
        arguments = tool_arguments(args.name, args.arguments)
    except ValueError as exc:
        return _fail("tool", str(exc))
    workspace = Path(args.workspace)
    if not workspace.is_dir():
        return _fail("tool", f"workspace {workspace} is not a directory")
    return run_until_done(_tool(args.name, arguments, workspace, as_json=args.json))


def tool_arguments(tool: str, given: str) -> dict[str, Any]:
    """The tool's arguments from the command line: JSON, or JSON / a patch from - or @FILE."""
    from_elsewhere = given == "-" or given.startswith("@")
    text = read_text_argument(given, "the arguments")
    try:
        arguments = json.loads(text)
    except json.JSONDecodeError as exc:
        if from_elsewhere and tool == "apply_patch":
            return {"input": text}
        raise ValueError(f"arguments are not valid JSON: {exc}") from None
    if not isinstance(arguments, dict):
        raise ValueError('arguments must be a JSON object, e.g. \'{"cmd": "ls"}\'')
    return arguments


COMMAND_TOOLS = ("exec_command", "write_stdin", "bash")


async def _tool(name: str, arguments: dict[str, Any], workspace: Path, *, as_json: bool) -> int:
    from runtime.render import EventRenderer
    from tools.base import Toolbox, ToolSettings

    renderer = EventRenderer(sys.stderr, color=_use_color(sys.stderr))
    streamed: list[str] = []
    held_cr = [""]  # a chunk's last "\r", until the next says whether it began a "\r\n"
    task = asyncio.current_task()
    assert task is not None
    output_failed: list[OutputFailed] = []

    def show_event(event: dict[str, Any]) -> None:
        if output_failed:
            return
        if as_json:
            sys.stderr.write(json.dumps(event, ensure_ascii=False) + "\n")
        elif event.get("type") == "tool_output":
            # A command's own output is this command's output (the terminal's CRLFs as LFs).
            chunk = held_cr[0] + str(event.get("chunk", ""))
            held_cr[0] = "\r" if chunk.endswith("\r") else ""
            chunk = chunk.removesuffix("\r").replace("\r\n", "\n")
            if not chunk:
                return
            streamed.append(chunk)
            try:
                sys.stdout.write(chunk)
                sys.stdout.flush()
            except OutputFailed as failure:
                # Raised here, it would fail the call inside the tool (a tool bug, logged
                # as such) and the command would go on. Cancelled, the toolbox kills it.
                output_failed.append(failure)
                task.cancel()
                return
        else:
            renderer.render(event)
        sys.stderr.flush()

    try:
        # Its stdout is the command's: every byte of it, not a run's capped live view.
        settings = ToolSettings(live_output_bytes_per_call=None)
        async with Toolbox(workspace, settings=settings, on_event=show_event) as box:
            result = await box.call(name, arguments, call_id="cli")
    except asyncio.CancelledError:
        if not output_failed:
            raise
        task.uncancel()
        raise output_failed[0] from None
    if output_failed:
        raise output_failed[0]
    data = result.data or {}
    if as_json:
        print(
            json.dumps(
                {"output": result.output, "isError": result.is_error, "data": data},
                ensure_ascii=False,
                default=str,
            )
        )
    elif name in COMMAND_TOOLS and not result.is_error:
        # The output has streamed to stdout already: only how the command ended, on stderr.
        if held_cr[0]:
            sys.stdout.write(held_cr[0])
        if streamed and not (streamed[-1] + held_cr[0]).endswith("\n"):
            print()
        header = result.output.split("\nOutput:", 1)[0]
        print(header, file=sys.stderr)
    else:
        print(result.output)
    if result.is_error:
        return EXIT_FAILED
    if name in COMMAND_TOOLS and data.get("session_id") is not None:
        print(
            f"agentd tool: the command was still running (session {data['session_id']}) when "
            "its wait ended, and it has been stopped now that agentd tool exits; give a longer "
            '"yield_time_ms" (up to 30000) to let it finish',
            file=sys.stderr,
        )
        return EXIT_FAILED
    if name in COMMAND_TOOLS and data.get("exit_code") not in (None, 0):
        return EXIT_FAILED
    return EXIT_OK


# -- runs and threads --------------------------------------------------------------------------


def add_daemon_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", help="the daemon (env: AGENTD_URL; default: http://127.0.0.1:7777)"
    )
    parser.add_argument("--token", help="the daemon's API token (env: AGENTD_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print the records as JSON lines")


def add_runs_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "runs",
        help="list the runs a daemon holds, newest first",
        description="List a running daemon's run history, newest first, as a table (or "
        "JSON lines with --json). Exit status: 0 ok, 1 the daemon could not be reached (or "
        "is not an agentd daemon), 2 usage error (including a refused token), 141 its "
        "output's reader went away (a closed pipe, e.g. `| head`).",
    )
    parser.add_argument("--agent", metavar="SLUG", help="only this agent's runs")
    parser.add_argument(
        "--status",
        choices=[
            "queued",
            "running",
            "pausing",
            "paused",
            "completed",
            "failed",
            "cancelled",
            "interrupted",
        ],
        help="only runs in this status",
    )
    parser.add_argument("--limit", type=int, default=20, metavar="N", help="at most N (default 20)")
    add_daemon_flags(parser)
    parser.set_defaults(func=cmd_runs)


def add_threads_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "threads",
        help="list the threads a daemon holds",
        description="List a running daemon's threads (the conversations runs continue), as a "
        "table (or JSON lines with --json). Exit status: 0 ok, 1 the daemon could not be "
        "reached (or is not an agentd daemon), 2 usage error (including a refused token), "
        "141 its output's reader went away (a closed pipe, e.g. `| head`).",
    )
    parser.add_argument("--agent", metavar="SLUG", help="only this agent's threads")
    add_daemon_flags(parser)
    parser.set_defaults(func=cmd_threads)


def cmd_runs(args: argparse.Namespace) -> int:
    if args.limit < 1:
        return _fail("runs", "--limit must be at least 1")

    def rows(client: Any) -> list[dict[str, Any]]:
        listed = client.runs.list_all(agent=args.agent, status=args.status, page_size=args.limit)
        return list(itertools.islice(listed, args.limit))

    def table(runs: list[dict[str, Any]]) -> list[list[str]]:
        lines = [["RUN", "STATUS", "AGENT", "AGE", "TOKENS", "PROMPT"]]
        for run in runs:
            usage = run.get("usage") or {}
            tokens = int(usage.get("inputTokens", 0)) + int(usage.get("outputTokens", 0))
            prompt = " ".join(str(run.get("prompt") or "").split())
            lines.append(
                [
                    run["runId"],
                    run["status"],
                    run["agent"],
                    _age(run.get("createdAt")),
                    str(tokens),
                    prompt if len(prompt) <= 50 else prompt[:49] + "…",
                ]
            )
        return lines

    return _list_command("runs", args, rows, table)


def cmd_threads(args: argparse.Namespace) -> int:
    def rows(client: Any) -> list[dict[str, Any]]:
        return list(client.threads.list(agent=args.agent))

    def table(threads: list[dict[str, Any]]) -> list[list[str]]:
        lines = [["THREAD", "AGENT", "MESSAGES", "UPDATED"]]
        for thread in threads:
            lines.append(
                [
                    thread["id"],
                    thread["agent"],
                    str(thread.get("messageCount", 0)),
                    _age(thread.get("updatedAt")) + " ago",
                ]
            )
        return lines

    return _list_command("threads", args, rows, table)


def _list_command(
    command: str,
    args: argparse.Namespace,
    rows: Callable[[Any], list[dict[str, Any]]],
    table: Callable[[list[dict[str, Any]]], list[list[str]]],
) -> int:
    from runtime.client import APIError, AuthenticationError, Client, NetworkError

    url = args.url or os.environ.get("AGENTD_URL")
    if url and (problem := daemon_url_problem(url)) is not None:
        return _fail(command, problem)
    try:
        with Client(args.url, args.token, max_retries=0) as client:
            url = client.base_url
            records = rows(client)
    except AuthenticationError as exc:
        return _fail(command, f"{exc.message} (pass --token or set AGENTD_TOKEN)")
    except APIError as exc:
        if is_foreign_answer(exc):
            return _fail(command, foreign_answer(str(url), exc), EXIT_FAILED)
        return _fail(command, exc.message, EXIT_USAGE if exc.status < 500 else EXIT_FAILED)
    except NetworkError as exc:
        return _fail(command, exc.message, EXIT_FAILED)
    except ValueError as exc:  # a bad AGENTD_TIMEOUT / AGENTD_MAX_RETRIES
        return _fail(command, str(exc))
    if args.json:
        for record in records:
            print(json.dumps(record, ensure_ascii=False))
        return EXIT_OK
    if not records:
        print(f"no {command}", file=sys.stderr)
        return EXIT_OK
    lines = table(records)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
    return EXIT_OK


def daemon_url_problem(url: str) -> str | None:
    """Why `url` (--url, AGENTD_URL) cannot be a daemon's URL, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"{url!r} is not a valid URL: give the daemon's http:// or https:// URL"
    return None


def is_foreign_answer(error: APIError) -> bool:
    """Whether the server answered without agentd's JSON (the client's `bad_response`):
    another program listens at that URL."""
    return error.code == "bad_response"


def foreign_answer(url: str, error: APIError) -> str:
    return f"{url} answered HTTP {error.status} without agentd's JSON; is this an agentd daemon?"


def _age(timestamp: str | None) -> str:
    """How long ago `timestamp` (ISO 8601) was: 42s, 5m, 3h, 2d."""
    if not timestamp:
        return "?"
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "?"
    seconds = max(0.0, (datetime.now(UTC) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


# -- standard output -------------------------------------------------------------------------


class OutputFailed(Exception):
    """The command's standard output could not be written: its reader went away (a closed
    pipe: `agentd runs | head -1`), or the file behind it failed (`> /dev/full`), or there
    is none (the command was started with fd 1 closed)."""

    def __init__(self, error: OSError | None) -> None:
        super().__init__(
            "standard output is closed" if error is None else error.strerror or str(error)
        )
        self.error = error

    @property
    def reader_gone(self) -> bool:
        return isinstance(self.error, BrokenPipeError)


class CheckedOutput:
    """Standard output while a command runs (`main`): a write or flush that fails raises
    OutputFailed, which `main` turns into the command's exit status, where an OSError could
    have come from anything the command does."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        if self.stream is None:
            if not text:
                return 0
            raise OutputFailed(None)
        try:
            return self.stream.write(text)
        except OSError as exc:
            raise OutputFailed(exc) from exc

    def flush(self) -> None:
        if self.stream is None:
            return
        try:
            self.stream.flush()
        except OSError as exc:
            raise OutputFailed(exc) from exc

    def isatty(self) -> bool:
        return self.stream is not None and self.stream.isatty()


def _output_failed(command: str, failure: OutputFailed) -> int:
    """The exit status for standard output that failed; what is still buffered for it is
    dropped (it would fail again when the interpreter flushes it on the way out)."""
    stream = sys.stdout
    if stream is not None:
        # As the Python docs advise for SIGPIPE (library/signal.html, "Note on SIGPIPE").
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, stream.fileno())
            finally:
                os.close(devnull)
    if failure.reader_gone:
        return EXIT_CLOSED_OUTPUT  # quietly, as a command a closed pipe ends does
    return _fail(command, f"cannot write the output: {failure}", EXIT_FAILED)


# -- entry point -----------------------------------------------------------------------------


# Each command's name and the function adding its parser, in the order `--help` lists them.
COMMANDS: dict[str, Callable[[Any], None]] = {
    "serve": add_serve_parser,
    "connect": add_connect_parser,
    "run": add_run_parser,
    "demo": add_demo_parser,
    "tool": add_tool_parser,
    "runs": add_runs_parser,
    "threads": add_threads_parser,
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser: every command's, or only `command`'s (building all of them
    is ~3 ms of argparse, which every start of the daemon paid before it could listen)."""
    parser = argparse.ArgumentParser(
        prog="agentd", description="agentd: the in-sandbox agent runtime daemon"
    )
    # The package's own version (the distribution's: tests/test_dependencies.py), not read
    # from the installed metadata, whose parsing cost every command a few ms.
    parser.add_argument("--version", action="version", version=f"agentd {runtime.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, add_parser in COMMANDS.items():
        if command is None or name == command:
            add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # A known command is parsed by its own parser alone; anything else (no command, --help,
    # --version, a typo) by the whole one, whose messages list every command.
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else 2
    if args.func not in (cmd_serve, cmd_connect):
        # Paused by the `agentd` command while the command line loaded (runtime/__main__.py);
        # the daemon commands keep it paused until they listen (resume_gc_after_start).
        gc.enable()
    try:
        with contextlib.redirect_stdout(CheckedOutput(sys.stdout)):
            status = int(args.func(args))
            sys.stdout.flush()  # here, so a last write that fails is told as well
        return status
    except KeyboardInterrupt:
        # Ctrl-C outside a run's watch (while connecting, defining the agent, or checking the
        # demo's URL): asyncio.run has already cancelled and cleaned up; no traceback.
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except OutputFailed as failure:
        # Raised where the output was written, it ended the command (an in-process daemon or
        # toolbox stopped its runs and killed their processes on the way out, as on SIGTERM).
        return _output_failed(args.command, failure)


def entry() -> None:
    """The `agentd` command: `main()`, then exit without the interpreter's teardown.

    Once a command has returned, everything that matters is done (the daemon has closed its
    store, killed its processes and logged "agentd stopped"; run and tool have printed
    their result). Tearing down the interpreter (every module, the daemon's heap) then still
    took 0.5-0.8 s on a loaded machine, after --shutdown-grace. Streams and log handlers are
    flushed first; SystemExit (argparse's --help and usage errors) exits as usual."""
    status = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    entry()
