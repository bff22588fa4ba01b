"""Runs: starting them, scheduling them, driving them to their end, and controlling them.

One job per module:

- `manager`: `RunManager`, the facade the API uses: the registry of active runs, `start`,
  queries and controls (pause, resume, cancel, input).
- `scheduler`: admission under the global and per-agent caps, and the bounded queue.
- `lifecycle`: one run from admission to its terminal `complete` event.
- `toolbox_pool`: toolboxes that outlive a run (kept per thread, the daemon's own).
- `forking`: which run a fork starts.
- `threads`: the runs' side of their threads' events (recording, loading a thread from its
  rollout file, ending the thread events of interrupted runs).
- `provider_factory`, `credentials`, `tool_specs`, `transcript`, `metrics`: what a run is
  built from and how its conversation is stored and shown.
- `run`, `errors`: the `Run` being driven, its `RunConfig`, and the refusals.
- `machinery`: the run machinery (lifecycle, loop, providers, and `run` and `forking`),
  loaded after start-up and never on the event loop, which is why this package does not
  export `Run` and `RunConfig` (import them from `runtime.runs.run`); `recovery`: ending the
  runs a previous daemon left unfinished.
"""

from __future__ import annotations

from runtime.runs.errors import Conflict, InvalidRequest, NotFound, QueueFull, RunError
from runtime.runs.manager import RunManager
from runtime.runs.metrics import RunMetrics

__all__ = [
    "Conflict",
    "InvalidRequest",
    "NotFound",
    "QueueFull",
    "RunError",
    "RunManager",
    "RunMetrics",
]
