"""The run machinery: what drives a run, loaded once and never on the event loop.

Driving a run takes the agent loop, compaction, the providers' interface and registry, the
provider pool, the Tool Hub client, the custom tools' HTTP tool and the run lifecycle that
ties them together: a few tens of ms of imports (their classes and models) that `agentd
serve` does not need to answer, so it does not import them before it listens. The daemon's
warm-up thread loads them right after (`load_run_machinery`, see `runtime.daemon.warm_up`);
a request or run that comes earlier awaits `run_machinery()`, which loads them in a worker
thread. Either way the `RunMachinery` it returns is how the run manager reaches them, so no
other module of the manager's imports them at the top.

A module that fails to import fails every later call the same way, as `MachineryUnavailable`
(a 503 over HTTP) naming the module and the error, rather than a hang or a 500 (see
`runtime.deferred`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, NamedTuple, Protocol

from runtime.deferred import DeferredLoad
from runtime.runs.errors import RunError

if TYPE_CHECKING:
    from runtime.agents import AgentRecord, AgentSpec
    from runtime.loop import LoopMetrics, RunControls
    from runtime.runs.lifecycle import RunLifecycle
    from runtime.runs.provider_factory import ProviderPool
    from runtime.runs.thread_compaction import ThreadCompaction
    from runtime.runs.threads import RunThreads
    from runtime.store import Store

# What `load_run_machinery` imports, in order; none of it is imported before the daemon
# listens (tests/cli/test_serve_startup.py), nor on the event loop (tests/api/test_daemon.py).
MODULES = (
    "runtime.events.log",  # and the event model: a run's log (runtime.runs.manager)
    "runtime.messages",  # the conversation (the manager, the store's reads)
    "runtime.thread_log",  # and the thread events: the threads' logs (RunThreads.hub)
    "runtime.thread_recorder",
    "runtime.compaction",
    "runtime.providers.base",
    "runtime.providers.registry",
    "runtime.retry",  # (imported by the registry) and by webhook deliveries, after a run starts
    "runtime.runs.provider_factory",
    "runtime.tool_hub",
    "tools.http_tool",  # an agent's custom tools
    "runtime.loop",
    "runtime.runs.run",  # the Run the manager drives, its RunConfig (the manager, /v1 runs)
    "runtime.runs.forking",
    "runtime.runs.lifecycle",
    "runtime.runs.thread_compaction",
)


class MachineryUnavailable(RunError):
    """The run machinery could not be loaded (or not in time): runs cannot be driven."""

    def __init__(self, message: str) -> None:
        super().__init__("unavailable", message, 503)


class ThreadCompactor(Protocol):
    """`runtime.runs.thread_compaction.compact_thread`."""

    async def __call__(
        self,
        store: Store,
        threads: RunThreads,
        agent: AgentRecord,
        thread_id: str,
        *,
        env: Mapping[str, str],
        providers: ProviderPool,
        metrics: LoopMetrics | None = None,
    ) -> ThreadCompaction: ...


class RunMachinery(NamedTuple):
    """The classes and functions a run is driven with, from the modules in MODULES. (A named
    tuple: defining a dataclass costs start-up six times as much.)"""

    lifecycle: type[RunLifecycle]
    controls: type[RunControls]
    provider_pool: type[ProviderPool]
    compact_thread: ThreadCompactor
    model_label: Callable[[AgentSpec], str]


def _build(_modules: list[ModuleType]) -> RunMachinery:
    from runtime.loop import RunControls
    from runtime.runs.lifecycle import RunLifecycle
    from runtime.runs.provider_factory import ProviderPool, model_label
    from runtime.runs.thread_compaction import compact_thread

    return RunMachinery(
        lifecycle=RunLifecycle,
        controls=RunControls,
        provider_pool=ProviderPool,
        compact_thread=compact_thread,
        model_label=model_label,
    )


_machinery = DeferredLoad(
    "the run machinery", "drive runs", lambda: MODULES, _build, MachineryUnavailable
)


def also_load(name: str) -> None:
    """Have the run machinery load module `name` too: what a feature the daemon's settings
    turn on needs on the event loop later (custom tools: jsonschema), loaded off it, before
    any run or /v1 request, rather than at start-up. Call before the first load."""
    _machinery.also_load(name)


def load_run_machinery() -> RunMachinery:
    """Blocking: import the run machinery (the first call; later ones return at once).
    Raises MachineryUnavailable if a module fails to import, on this call and every later
    one."""
    return _machinery.load()


def load_failure() -> MachineryUnavailable | None:
    """Why the run machinery could not be loaded, once a load has failed."""
    return _machinery.failure


async def run_machinery() -> RunMachinery:
    """`load_run_machinery` for async callers: the first load runs in a worker thread (the
    event loop goes on serving meanwhile), bounded; later calls return at once."""
    return await _machinery.get()
