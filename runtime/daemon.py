"""`agentd serve`: run the HTTP API until SIGTERM/SIGINT, then shut down cleanly.

Start-up: open the store under the state dir, start the RunManager (runs a previous daemon
left unfinished become `interrupted`), listen. Shutdown on SIGTERM or SIGINT: refuse new
runs (503) while still answering reads and controls, give running runs the grace period to
finish (then interrupt them: their processes are killed and they end `interrupted`), deliver
pending webhooks, close connections, flush and close the store, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from aiohttp import web
from aiohttp.http import HttpProcessingError
from pydantic import BaseModel

from runtime.api.app import create_app, drain
from runtime.api.middleware import RequestIdFilter
from runtime.api.state import STATE_KEY
from runtime.api.v1 import ApiUnavailable, load_v1
from runtime.collector import collector_paused
from runtime.config import Settings
from runtime.events import LOG_SECRETS, SecretRegistry
from runtime.runs.machinery import MachineryUnavailable, load_run_machinery
from tools import load_core_tools
from tools.base import daemon_environ

if TYPE_CHECKING:
    from runtime.providers.rehearsal import Rehearsal
    from runtime.runs import RunManager

log = logging.getLogger("agentd")

T = TypeVar("T")

# Runs beside the API once it listens: given the application and its URL, returns the exit
# status the daemon should end with when it ends by itself.
Companion = Callable[[web.Application, str], Awaitable[int]]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs rid=%{X-Request-ID}o'


# Client libraries whose DEBUG output holds whole requests: model requests (every tool
# argument the model wrote, which may echo a secret) and their headers. They never log below
# INFO, whatever --log-level says.
CHATTY_LOGGERS = (
    "anthropic",
    "openai",
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore2",
    "hpack",
    "aiohttp.client",
)
# Credentials in URLs (`?access_token=` on event streams, `?key=` on some model APIs) and in
# headers echoed into messages.
_URL_CREDENTIAL = re.compile(
    r"(?i)([?&](?:access_token|token|api_key|apikey|key|sig|signature)=)[^&\s\"']+"
)
_AUTH_HEADER = re.compile(
    r"(?i)((?:authorization|x-api-key)[\"']?\s*[:=]\s*[\"']?(?:bearer\s+)?)[^\s\"',}]+"
)


class SecretFilter(logging.Filter):
    """Rewrites every record it sees so that no known secret, URL credential or
    Authorization/X-API-Key value reaches the log: the message is rendered, redacted and
    frozen (`args` cleared), and so is the traceback text.

    The known secrets are those in `registry` when the record is logged: the daemon's own
    (registered by `configure_logging`) and every run's credentials (registered by the run
    manager before the run uses them)."""

    def __init__(self, registry: SecretRegistry = LOG_SECRETS) -> None:
        super().__init__()
        self.registry = registry

    def redact(self, text: str) -> str:
        text = _URL_CREDENTIAL.sub(r"\1[REDACTED]", text)
        text = _AUTH_HEADER.sub(r"\1[REDACTED]", text)
        return self.registry.redactor().redact(text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
            record.exc_info = None  # the formatter would render it again, unredacted
        return True


class MalformedRequestFilter(logging.Filter):
    """aiohttp answers a request it cannot parse (a bad request line, a Content-Length or
    chunk size that is not a number) with a plain 400 before any handler sees it, and logs
    the parser's exception at ERROR with a traceback. That is the client's fault, not the
    daemon's: on `aiohttp.server`, such a record becomes one INFO line (dropped below the
    root's level), so a scanner or a broken client cannot fill the log with tracebacks or
    set off an alert on errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError) or not 400 <= error.code < 500:
            return True
        if logging.INFO < logging.getLogger().getEffectiveLevel():
            return False
        lines = (error.message or "").strip().splitlines()
        record.args = (error.code, lines[0].rstrip(":") if lines else "", record.getMessage())
        record.msg = "%d to a malformed HTTP request: %s (%s)"
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info, record.exc_text = None, None
        return True


def daemon_secrets(settings: Settings, environ: Mapping[str, str]) -> list[str]:
    """What must never be logged: the API token, the webhook key, and the credentials in the
    daemon's environment (the ones commands are not given either)."""
    kept = daemon_environ()
    values = [v for k, v in environ.items() if v and k not in kept]
    return [v for v in (settings.token, settings.webhook_secret, *values) if v]


def configure_logging(level: str, secrets: Iterable[str] = ()) -> None:
    """Log to stderr at `level`, every record redacted (`SecretFilter`); `secrets` are the
    daemon's own, added to the process's registry."""
    LOG_SECRETS.add(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RequestIdFilter())
    handler.addFilter(SecretFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestFilter) for f in server_log.filters):
        server_log.addFilter(MalformedRequestFilter())
    # Access lines at INFO are noise under load; they show with --log-level debug.
    logging.getLogger("aiohttp.access").setLevel(
        logging.DEBUG if level == "debug" else logging.WARNING
    )


async def serve(
    settings: Settings,
    *,
    on_ready: Callable[[str], object] | None = None,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
    companion: Companion | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT (or `stop` is set). Returns the exit status (0).

    With `handle_signals=False` only `stop` ends it: for callers that embed the daemon and
    give Ctrl-C their own meaning (`agentd run`, `agentd demo`). A `companion` runs beside the
    API once it listens (`agentd connect`'s link), is cancelled at shutdown, and when it ends
    by itself the daemon shuts down with the exit status it returned."""
    settings.check()
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log_format=ACCESS_LOG_FORMAT,
        shutdown_timeout=3.0,
    )
    await runner.setup()  # opens the store and starts the run manager
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    host, port = runner.addresses[0][:2]
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    log.info(
        "agentd listening on %s (workspace %s, state %s, auth %s)",
        url,
        settings.workspace,
        settings.state_dir,
        "token" if settings.token else "none: loopback only",
    )
    if on_ready is not None:
        on_ready(url)

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGTERM, signal.SIGINT) if handle_signals else ():
        try:
            loop.add_signal_handler(signum, _on_signal, signum, stop)
            installed.append(signum)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            pass
    status = 0

    async def accompany(companion: Companion) -> None:
        nonlocal status
        status = await companion(app, url)
        stop.set()

    try:
        async with anyio.create_task_group() as companions:
            companions.start_soon(_warm_up, settings.default_model, app[STATE_KEY].manager)
            if companion is not None:
                companions.start_soon(accompany, companion)
            await stop.wait()
            companions.cancel_scope.cancel()  # a preload still running is abandoned
        log.info("shutting down: new runs refused, %.1fs grace", settings.shutdown_grace)
        await drain(app, settings.shutdown_grace)
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        await runner.cleanup()  # closes connections, then the store
    log.info("agentd stopped")
    return status


def warm_up(first_model: str | None = None) -> list[str]:
    """Blocking: what a first run with `first_model` imports: the modules of its workspace
    watch (`runtime.workspace_watch.import_watchers`), asyncio's default executor (a first
    connection's address lookup), its model SDK and adapter (`registry.modules_for`; the
    others come later, see `_warm_up`) and the core tools; the tools' specs
    (`runtime.runs.tool_specs`), the TLS context every SDK client is made with
    (`runtime.providers.tls`) and that of agentd's own HTTPS requests (`tools.tls`).
    Returns the modules that failed to import."""
    import concurrent.futures.thread  # noqa: F401

    from runtime.providers.base import ModelError
    from runtime.providers.registry import modules_for, preload_adapters
    from runtime.providers.tls import shared_tls_context
    from runtime.runs.tool_specs import build_core_specs
    from runtime.workspace_watch import import_watchers
    from tools.tls import https_context

    failed = []
    try:
        import_watchers()
    except ImportError as exc:
        failed.append(exc.name or str(exc))
    failed += preload_adapters(modules_for(first_model))
    try:
        shared_tls_context()
    except (ImportError, ModelError) as exc:  # SSL_CERT_FILE names a directory: runs say so
        log.warning("the TLS context for model requests could not be built: %s", exc)
    https_context()
    load_core_tools()
    try:
        build_core_specs()
    except Exception:  # a tool whose schema fails fails its runs, not the daemon's warm-up
        log.exception("the tools' specs could not be generated ahead of the first run")
    return failed


async def _warm_up(default_model: str, manager: RunManager | None) -> None:
    """Right after the daemon listens, a worker thread loads the /v1 API, the run machinery
    and the core tools (which start-up leaves out: `runtime.api.v1`,
    `runtime.runs.machinery`, `tools.load_core_tools`), builds the validators of agentd's own
    models (deferred at import: `build_deferred_models`), then loads the model SDKs and what a
    first run imports (`warm_up`), rather than the event loop at the first request or run
    (where importing the SDKs stalled every stream for seconds): the SDK of `default_model`,
    which a first run most likely waits for. Each step runs with the garbage collector paused,
    and what it made is frozen (`made_to_last`), as start-up's objects are when the daemon
    listens. The other SDKs (~0.35-0.9 s of CPU each) come once no run is active (`manager`):
    imported while a run starts, they took the interpreter lock from it (with an OpenAI
    default, a fresh daemon's first prompt reached the model ~0.12 s later). A run that needs
    one of them before imports it itself, in its provider's worker thread
    (`runtime.runs.provider_factory.open_provider`), as it would share the lock with the
    preload anyway.

    The first three are what every /v1 request waits for (the readiness middleware), so they
    come first: a request sent the moment /readyz answers waits for them alone, not also for
    the model builds, which shared the one interpreter with them (~30-45 ms of the first
    request's ~110-140)."""
    started = time.perf_counter()
    with contextlib.suppress(ApiUnavailable):  # logged; every /v1 request answers 503 with it
        await anyio.to_thread.run_sync(made_to_last, load_v1, abandon_on_cancel=True)
        log.info("/v1 API loaded in %.3fs", time.perf_counter() - started)
    started = time.perf_counter()
    try:
        await anyio.to_thread.run_sync(made_to_last, load_run_machinery, abandon_on_cancel=True)
    except MachineryUnavailable:
        return  # logged; every request that needs it answers 503 with the reason
    log.info("run machinery loaded in %.3fs", time.perf_counter() - started)
    started = time.perf_counter()
    await anyio.to_thread.run_sync(made_to_last, load_core_tools, abandon_on_cancel=True)
    log.info("core tools loaded in %.3fs", time.perf_counter() - started)
    started = time.perf_counter()
    built = await anyio.to_thread.run_sync(
        made_to_last, build_deferred_models, abandon_on_cancel=True
    )
    log.info("%d models built in %.3fs", len(built), time.perf_counter() - started)
    started = time.perf_counter()
    # (No count of the objects frozen in these log lines: gc.get_freeze_count() walks every
    # frozen object, ~26 ms for the ~200k the SDKs make, with the interpreter lock held.)
    failed = await anyio.to_thread.run_sync(
        made_to_last, warm_up, default_model, abandon_on_cancel=True
    )
    log.info(
        "model adapters and tools preloaded in %.2fs%s",
        time.perf_counter() - started,
        f" (not installed: {', '.join(failed)})" if failed else "",
    )
    await preload_other_sdks(manager, rehearse_first=default_model)


def made_to_last(load: Callable[..., T], *args: Any) -> T:
    """Blocking: `load(*args)`, whose objects (modules, classes, validators) live as long as
    the daemon, with the collector paused and what exists after it frozen (`collector_paused`):
    each full collection would otherwise rescan what it has made so far (~130 ms of the ~0.8 s
    `import anthropic` takes), and every later one all of it, 50-180 ms during which the event
    loop stood still (benchmarks/gc_bench.py)."""
    with collector_paused(freeze=True):
        return load(*args)


# How long the other SDKs wait for the active runs to end at most: a daemon that is never
# idle gets them all the same, and frozen (an SDK a run imported itself would not be, and
# each full collection would scan its objects again: see `_warm_up`).
OTHER_SDKS_WAIT_AT_MOST = 60.0


async def preload_other_sdks(
    manager: RunManager | None,
    wait_at_most: float = OTHER_SDKS_WAIT_AT_MOST,
    *,
    rehearse_first: str | None = None,
) -> int:
    """The model SDKs and adapters `warm_up` left out, once no run of `manager` is active
    (see `_warm_up`) or after `wait_at_most` seconds, imported in a worker thread, then
    frozen for the garbage collector; then a first request of every API rehearsed
    (`rehearse_first_requests`), that of `rehearse_first`'s API first (the default model's:
    a first run most likely speaks it). Returns how many runs it waited for."""
    from runtime.providers.registry import preload_adapters  # loaded with the machinery

    waited, still_active = 0, False
    if manager is not None:
        with anyio.move_on_after(wait_at_most) as bound:
            waited = await manager.wait_until_idle()
        still_active = bound.cancelled_caught
    started = time.perf_counter()
    # made_to_last freezes the SDKs' objects (and those of a run that started meanwhile)
    failed = await anyio.to_thread.run_sync(made_to_last, preload_adapters, abandon_on_cancel=True)
    log.info(
        "the other model SDKs preloaded in %.2fs, after %s%s",
        time.perf_counter() - started,
        f"{wait_at_most:.0f}s of active runs" if still_active else f"{waited} active run(s) ended",
        f" (not installed: {', '.join(failed)})" if failed else "",
    )
    await rehearse_first_requests(rehearse_first)
    return waited


async def rehearse_first_requests(first: str | None = None) -> None:
    """A first streamed request of every API not rehearsed yet (`first`'s API first), made in
    a worker thread against a canned server (`runtime.providers.rehearsal`), so that a run's
    first request does not do its one-time work (the SDK's lazy imports, its validators: up
    to ~0.1 s of CPU) on the event loop. The daemon does it once no run is active: beside a
    run that has started, it would take the interpreter lock from it, and the run's request
    does that work itself anyway. A rehearsal that fails is logged, and the run's first
    request does that work as before."""
    started = time.perf_counter()
    try:
        rehearsal = await anyio.to_thread.run_sync(_rehearse, first, abandon_on_cancel=True)
    except Exception:  # a bug of its own must not end the daemon: runs do without it
        log.warning("the first model requests could not be rehearsed", exc_info=True)
        return
    if rehearsal.apis:
        log.info(
            "first requests rehearsed in %.2fs: %s",
            time.perf_counter() - started,
            ", ".join(rehearsal.apis),
        )
    for failure in rehearsal.failed:
        log.warning("a first model request could not be rehearsed: %s", failure)


def _rehearse(first: str | None) -> Rehearsal:
    """Blocking: `rehearsal.rehearse` of every API, `first`'s first; imported here, in the
    worker thread."""
    from runtime.providers.rehearsal import MODEL_OF_API, rehearse

    return rehearse([*([first] if first else []), *MODEL_OF_API.values()])


def build_deferred_models(packages: Iterable[str] = ("runtime", "tools")) -> list[str]:
    """Build now the validators and serializers of the pydantic models defined in `packages`
    whose building was deferred (`defer_build=True`, which keeps it out of start-up: pydantic
    would otherwise build them at first use); models built where they are defined are left
    alone. Blocking: the daemon calls it in a worker thread once it listens. Returns the
    qualified names of the models built."""
    roots = frozenset(packages)
    built: list[str] = []
    seen: set[type[BaseModel]] = set()
    pending = list(BaseModel.__subclasses__())
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.add(model)
        pending.extend(model.__subclasses__())
        if model.__pydantic_complete__ or model.__module__.split(".")[0] not in roots:
            continue
        if not model.model_config.get("defer_build"):
            # Built where it is defined, maybe by another thread right now (a tool module a
            # request is importing): model_rebuild here would race that build (pydantic's
            # rebuild lock does not cover class creation), and could leave it a validator made
            # before its fields were set.
            continue
        name = f"{model.__module__}.{model.__qualname__}"
        try:
            model.model_rebuild()
        except Exception:
            # Its first use builds it (and raises) again; start-up goes on.
            log.exception("building the model %s failed", name)
            continue
        built.append(name)
    return built


def _on_signal(signum: int, stop: asyncio.Event) -> None:
    log.info("received %s", signal.Signals(signum).name)
    stop.set()
