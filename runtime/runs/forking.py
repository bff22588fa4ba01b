"""Forking: a new run, on a new thread, from the first `step` messages of another run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runtime.runs.errors import InvalidRequest, NotFound
from runtime.runs.run import RunConfig
from runtime.store import RunRecord, Store

if TYPE_CHECKING:
    # runtime.agents loads with the /v1 API, after start-up (runtime.api.v1)
    from runtime.agents import AgentRecord
    from runtime.messages import Message


@dataclass
class ForkPlan:
    """What the forked run starts with (`messages` None: from the prompt alone)."""

    agent: AgentRecord
    prompt: str | None
    messages: list[Message] | None
    config: RunConfig
    metadata: dict[str, Any] | None


def cut_conversation(conversation: list[Message], step: int, prompt: str | None) -> list[Message]:
    """The first `step` messages, if a run can continue from them (with `prompt`, if any);
    raises InvalidRequest naming the step that would work instead. The rules apply to the
    last message the model will be sent, which is never a `compaction` record."""
    if not 0 <= step <= len(conversation):
        raise InvalidRequest(
            f"step must be between 0 and {len(conversation)} (the run has "
            f"{len(conversation)} messages), got {step}"
        )
    cut = conversation[:step]
    # The last message the model will be sent, counted from 1 as `step` is (0: none). A
    # `compaction` record stays in the cut (the fork's view derives from it) but is never sent.
    last = next((n for n in range(step, 0, -1) if cut[n - 1].role != "compaction"), 0)
    message = cut[last - 1] if last else None
    records = {0: "", 1: f"; message {step} is a compaction record"}.get(
        step - last, f"; messages {last + 1}–{step} are compaction records"
    )
    if message is not None and message.role == "assistant" and message.tool_calls:
        raise InvalidRequest(
            f"message {last} has tool calls whose results would be cut off{records}; "
            f"fork at step {step + 1} or {last - 1}"
        )
    if prompt is None and (message is None or message.role == "assistant"):
        what = "missing" if message is None else "from the assistant"
        raise InvalidRequest(
            "without a prompt the fork must end with a user or tool message "
            f"(message {last or step} is {what}{records})"
        )
    return cut


async def plan_fork(store: Store, source: RunRecord, step: int, prompt: str | None) -> ForkPlan:
    """The run to start for a fork of `source` at `step`: its agent (the version the source
    ran, or the current one if that is gone), config and, with messages, its metadata."""
    cut = cut_conversation(await store.run_messages(source.run_id), step, prompt)
    agent = await store.get_agent(source.agent, source.agent_version)
    if agent is None:
        agent = await store.get_agent(source.agent)
    if agent is None:
        raise NotFound(f"agent {source.agent!r} of run {source.run_id} no longer exists")
    config = RunConfig.model_validate(source.config)
    if not cut:
        return ForkPlan(agent, prompt, None, config, None)
    return ForkPlan(agent, prompt, cut, config, dict(source.metadata))
