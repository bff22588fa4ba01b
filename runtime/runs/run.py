"""A run the manager is driving, and the per-run overrides it was started with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import BaseModel, ConfigDict, Field

from runtime.events import Redactor
from runtime.limits import (
    MAX_CONTEXT_WINDOW,
    MAX_ITERATIONS,
    MAX_TIMEOUT_SECONDS,
    MAX_TOKENS,
    MIN_CONTEXT_WINDOW,
)
from runtime.runs.scheduler import Slot
from runtime.store import RunRecord, Store
from tools.base import Toolbox

if TYPE_CHECKING:
    from runtime.agents import AgentRecord
    from runtime.events.log import EventLog

    # The run machinery (runtime.runs.machinery), loaded after start-up.
    from runtime.loop import AgentLoop, RunControls
    from runtime.messages import Message
    from runtime.thread_recorder import ThreadRecorder


class RunConfig(BaseModel):
    """Per-run overrides of the agent's settings (the `config` of `POST /v1/run`)."""

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, serialize_by_alias=True, defer_build=True
    )

    max_tokens: int | None = Field(None, alias="maxTokens", ge=1, le=MAX_TOKENS)
    max_turns: int | None = Field(None, alias="maxTurns", ge=1, le=MAX_ITERATIONS)
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    timeout: float | None = Field(None, gt=0, le=MAX_TIMEOUT_SECONDS, allow_inf_nan=False)
    context_window: int | None = Field(
        None, alias="contextWindow", ge=MIN_CONTEXT_WINDOW, le=MAX_CONTEXT_WINDOW
    )
    compact_at: float | None = Field(None, alias="compactAt", ge=0.2, le=0.95)


@dataclass(eq=False)
class Run:
    """A run the manager is driving (queued, running or paused)."""

    run_id: str
    thread_id: str | None  # None: the caller manages the history (`messages`)
    agent: AgentRecord
    record: RunRecord
    events: EventLog
    controls: RunControls
    redactor: Redactor
    config: RunConfig
    # The conversation the loop starts from, and what of it the thread does not have yet.
    initial: list[Message]
    thread_seed: list[Message]
    slot: Slot
    done: anyio.Event = field(default_factory=anyio.Event)
    control_lock: anyio.Lock = field(default_factory=anyio.Lock)
    toolbox: Toolbox | None = None
    loop: AgentLoop | None = None
    interrupted: str | None = None  # why the manager itself stopped the run
    thread_recorder: ThreadRecorder | None = None  # from `run_started` on
    pause_announced: bool = False  # `paused` emitted for the current pause
    # Set (under `control_lock`) when the run starts to finish: controls are refused from
    # then on, so none changes its record or adds an event after its end.
    finishing: bool = False

    @property
    def status(self) -> str:
        return self.record.status

    @property
    def pool_key(self) -> str:
        """What the toolbox pool keeps this run's toolbox under: its thread, whose next run
        takes it over, or the run itself when it has no thread."""
        return self.thread_id or f"run:{self.run_id}"

    @property
    def has_slot(self) -> bool:
        return self.slot.held

    async def update(self, store: Store, **fields: Any) -> None:
        """Change the run's stored record and keep the new one."""
        self.record = await store.update_run(self.run_id, **fields)
