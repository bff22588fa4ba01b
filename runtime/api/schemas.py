"""Request and response models of the HTTP API.

Handlers validate every body and query string with these models, and `/openapi.json` is
generated from the same classes, so the documentation cannot drift from what is enforced.
Wire names are camelCase (docs/design.md, HTTP API); Python attributes snake_case.
"""

from __future__ import annotations

import binascii
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from runtime.agents import AgentSpec
from runtime.api.wire import MAX_INT, WireModel
from runtime.ids import THREAD_ID_PATTERN, THREAD_ID_RULE, is_thread_id
from runtime.messages import (
    HostedToolPart,
    ImagePart,
    Message,
    Part,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolResultPart,
)
from runtime.runs.run import RunConfig
from runtime.store import ThreadRecord
from runtime.thread_events import PersistedThreadEvent
from runtime.usage import Usage

T = TypeVar("T")


# --- envelopes ----------------------------------------------------------------------------


class Envelope(WireModel, Generic[T]):
    data: T


class ListMeta(WireModel):
    has_more: bool = Field(alias="hasMore")
    next_cursor: str | None = Field(None, alias="nextCursor")


class ListEnvelope(WireModel, Generic[T]):
    data: list[T]
    meta: ListMeta


class ErrorDetail(WireModel):
    code: str = Field(description="stable, machine-readable")
    message: str = Field(description="what went wrong and what to change")
    request_id: str = Field(alias="requestId", description="also in X-Request-ID and the log")
    details: list[dict[str, Any]] | None = Field(None, description="per-field validation problems")


class ErrorEnvelope(WireModel):
    error: ErrorDetail


# --- agents ---------------------------------------------------------------------------------


class AgentOut(AgentSpec):
    """An agent as the API returns it: its definition plus id, version and timestamps.
    Secret values (the custom model's apiKey, env vars named in `secrets`) read
    `[REDACTED]`."""

    model_config = ConfigDict(defer_build=True)

    id: str
    version: int
    created_at: str = Field(alias="createdAt")
    updated_at: str = Field(alias="updatedAt")


class UpsertResult(WireModel):
    """What `POST /v1/agents` and `PATCH /v1/agents/{slugOrId}` answer (the documented
    shape). An upsert that changes nothing answers `updated` with the current version."""

    id: str
    slug: str
    action: Literal["created", "updated"]
    version: int
    sandbox_id: str | None = Field(
        alias="sandboxId", description="this daemon's --sandbox-id for in_sandbox agents"
    )
    target_device_id: str | None = Field(alias="targetDeviceId")
    endpoint: str = Field(
        description="the agent's run URL, …/v1/agents/{slug}/run (absolute with --public-url)"
    )


class RollbackRequest(WireModel):
    version: int = Field(ge=1, le=MAX_INT, description="the version to make current again")


class PageQuery(WireModel):
    """How every list is paged: `limit` items, after `cursor` (`meta.nextCursor`)."""

    limit: int = Field(50, ge=1, le=500, description="items per page")
    cursor: str | None = Field(None, description="`meta.nextCursor` of the previous page")


class AgentsQuery(PageQuery):
    pass


class AgentVersionsQuery(PageQuery):
    pass


class AgentGetQuery(WireModel):
    version: int | None = Field(
        None, ge=1, le=MAX_INT, description="a past version (default: current)"
    )


class Deleted(WireModel):
    id: str
    deleted: bool = True


# --- runs -----------------------------------------------------------------------------------


# A caller's message holds the parts of its role that a provider can send and the thread's
# events record (runtime/thread_events.py: a tool message is its `tool_result` events). Never a
# `compaction` record: only the daemon writes those.
InputPart = Annotated[
    TextPart | ThinkingPart | ToolCallPart | ToolResultPart | HostedToolPart | ImagePart,
    Field(discriminator="type"),
]
ROLE_PARTS: dict[str, tuple[str, ...]] = {
    "user": ("text", "image"),
    "assistant": ("text", "thinking", "tool_call", "hosted_tool"),
    "tool": ("tool_result",),
}
# The image types every provider takes (Anthropic's list; OpenAI takes the same).
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")


def _content_form(content: Any) -> str:
    return "text" if isinstance(content, str) else "parts"


class InputMessage(WireModel):
    """A message of a caller-supplied history: `content` is a string (the text of a user or
    assistant message) or a list of parts. A user message holds `text` and `image` parts, an
    assistant message `text`, `thinking`, `tool_call` and `hosted_tool` parts, a tool message
    only the `tool_result`s of the tool calls of the assistant message right before it."""

    role: Literal["user", "assistant", "tool"]
    # Tagged, so that an error names the one form the content was given in (`content.parts.0`)
    content: Annotated[
        Annotated[str, Tag("text")] | Annotated[list[InputPart], Tag("parts")],
        Discriminator(_content_form),
    ]

    @field_validator("content")
    @classmethod
    def _fits_role(cls, content: str | list[Part], info: ValidationInfo) -> str | list[Part]:
        role = info.data.get("role")
        if role is not None:  # (else the role itself was refused)
            problem = content_problem(role, content)
            if problem is not None:
                raise ValueError(problem)
        return content

    def to_message(self) -> Message:
        if isinstance(self.content, str):
            return Message.model_validate(
                {"role": self.role, "content": [{"type": "text", "text": self.content}]}
            )
        return Message(role=self.role, content=self.content)

    @property
    def tool_call_ids(self) -> list[str]:
        if isinstance(self.content, str):
            return []
        return [p.id for p in self.content if isinstance(p, ToolCallPart)]

    @property
    def result_ids(self) -> list[str]:
        if isinstance(self.content, str):
            return []
        return [p.call_id for p in self.content if isinstance(p, ToolResultPart)]


def content_problem(role: str, content: str | list[Part]) -> str | None:
    """What a message of `role` cannot hold in `content` (None: nothing)."""
    allowed = ROLE_PARTS[role]
    a_message = f"{'an' if role == 'assistant' else 'a'} {role} message"
    if isinstance(content, str):
        if "text" in allowed:
            return None
        return (
            f"{a_message} holds only {_kinds(allowed)} parts, not a string: "
            '[{"type": "tool_result", "call_id": "<the call\'s id>", "output": "..."}]'
        )
    if not content:
        return f"{a_message} holds at least one part ({_kinds(allowed)})"
    for index, part in enumerate(content):
        if part.type not in allowed:
            return (
                f"content[{index}] is a {part.type!r} part; {a_message} holds only "
                f"{_kinds(allowed)} parts"
            )
        if isinstance(part, ImagePart):
            if part.media_type not in IMAGE_TYPES:
                return (
                    f"content[{index}]: media_type {part.media_type!r} is not one of "
                    f"{', '.join(IMAGE_TYPES)}"
                )
            try:
                binascii.a2b_base64(part.data, strict_mode=True)
            except binascii.Error:
                return f"content[{index}]: data is not base64 (the image's bytes, encoded)"
    return None


def conversation_problem(
    messages: list[InputMessage], *, prompt_follows: bool, name: str = "messages"
) -> str | None:
    """What stops a model from continuing `messages` (None: nothing). Every tool call of an
    assistant message is answered by the one tool message right after it, which answers
    nothing else (each provider refuses a call without its result or a result without its
    call); without a prompt to follow, the last message is one the model can answer (a user
    or tool message), as for a fork (runtime/runs/forking.py)."""
    for index, message in enumerate(messages):
        where = f"{name}[{index}]"
        if message.role == "tool":
            before = messages[index - 1] if index else None
            calls = (
                before.tool_call_ids if before is not None and before.role == "assistant" else []
            )
            if not calls:
                return (
                    f"{where} is a tool message, but it does not follow an assistant message "
                    "with tool calls: a tool message holds the results of the calls of the "
                    "assistant message right before it (all of them, in that one message)"
                )
            answered: set[str] = set()
            for call_id in message.result_ids:
                if call_id not in calls:
                    return (
                        f"{where} answers tool call {call_id!r}, which {name}[{index - 1}] "
                        f"did not make (its calls: {', '.join(map(repr, calls))})"
                    )
                if call_id in answered:
                    return f"{where} answers tool call {call_id!r} twice"
                answered.add(call_id)
            missing = [c for c in calls if c not in answered]
            if missing:
                return (
                    f"{where} has no result for tool call(s) {', '.join(map(repr, missing))} "
                    f"of {name}[{index - 1}]: a tool message answers every call of the "
                    "assistant message before it"
                )
            continue
        calls = message.tool_call_ids
        if message.role != "assistant" or not calls:
            continue
        repeated = sorted({c for c in calls if calls.count(c) > 1})
        if repeated:
            return f"{where} makes more than one tool call with id {repeated[0]!r}"
        if index + 1 == len(messages) or messages[index + 1].role != "tool":
            return (
                f"{where} makes tool calls ({', '.join(map(repr, calls))}) whose results do "
                f"not follow: give {name}[{index + 1}] as a tool message with a tool_result "
                "for each call"
            )
    if not prompt_follows and messages and messages[-1].role == "assistant":
        return (
            f"without `prompt` the messages must end with a user or tool message "
            f"({name}[{len(messages) - 1}] is from the assistant): give `prompt`, or end "
            "with the message the model should answer"
        )
    return None


def _kinds(types: tuple[str, ...]) -> str:
    named = [f"`{t}`" for t in types]
    return " and ".join([", ".join(named[:-1]), named[-1]] if len(named) > 1 else named)


class InputHistory(WireModel):
    """`context.history` of a legacy run request (the previous run's messages), validated
    as `{"history": ...}`: a root model would import and build pydantic's RootModel at
    start-up. The request's message follows it."""

    history: list[InputMessage]

    @field_validator("history")
    @classmethod
    def _continuable(cls, history: list[InputMessage]) -> list[InputMessage]:
        problem = conversation_problem(history, prompt_follows=True, name="context.history")
        if problem is not None:
            raise ValueError(problem)
        return history


class RunRequest(WireModel):
    """`POST /v1/run`: start a run of `agent` on `prompt`, continuing `threadId`'s
    conversation or the caller's own `messages`."""

    agent: str = Field(min_length=1, description="the agent's slug or id")
    prompt: str | None = Field(None, description="the user's message")
    messages: list[InputMessage] | None = Field(
        None,
        description="a conversation to continue instead of a thread: each tool call answered "
        "by the tool message right after it; without `prompt`, ending with a user or tool "
        "message",
    )
    thread_id: str | None = Field(
        None,
        alias="threadId",
        description="persist the run into this server-managed thread (created if new); reuse "
        "the id to continue it. 1–128 letters, digits, `_` or `-`",
        json_schema_extra={"pattern": THREAD_ID_PATTERN},
    )
    stream: bool = Field(True, description="answer with the SSE event stream (default)")
    wait: bool = Field(
        True,
        description="with `stream: false`: answer when the run has finished (default); "
        "false: answer 202 `{runId, status: registered, threadId}` at once",
    )
    config: RunConfig | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("messages")
    @classmethod
    def _continuable(
        cls, messages: list[InputMessage] | None, info: ValidationInfo
    ) -> list[InputMessage] | None:
        # (a `prompt` that was itself refused is not in info.data: do not blame the messages)
        prompt_follows = info.data.get("prompt", "refused") is not None
        if messages:
            problem = conversation_problem(messages, prompt_follows=prompt_follows)
            if problem is not None:
                raise ValueError(problem)
        return messages

    @model_validator(mode="after")
    def _has_input(self) -> RunRequest:
        if self.prompt is None and not self.messages:
            raise ValueError(
                "give `prompt` (the user's message) or `messages` (a conversation to continue)"
            )
        if self.messages and self.thread_id is not None:
            raise ValueError(
                "give either `threadId` (continue the stored thread) or `messages` "
                "(your own history), not both"
            )
        if self.thread_id is not None and not is_thread_id(self.thread_id):
            raise ValueError(f"threadId must be {THREAD_ID_RULE} (got {self.thread_id!r})")
        if self.stream and not self.wait:
            raise ValueError(
                "`wait: false` starts the run without waiting and without a stream; give it "
                "with `stream: false`"
            )
        return self


class RunRegistered(WireModel):
    """`POST /v1/run` with `stream: false, wait: false`: the run is registered (queued or
    started); follow it with `GET /v1/runs/{runId}` or its events."""

    run_id: str = Field(alias="runId")
    status: Literal["registered"] = "registered"
    thread_id: str | None = Field(alias="threadId")


class UsageOut(Usage, WireModel):
    # The one usage model (runtime.usage) with the wire config: unknown fields are refused.
    model_config = WireModel.model_config


class RunErrorOut(WireModel):
    code: str
    message: str


RunStatus = Literal[
    "queued", "running", "pausing", "paused", "completed", "failed", "cancelled", "interrupted"
]


class RunResult(WireModel):
    """`POST /v1/run` with `stream: false`: the finished run."""

    run_id: str = Field(alias="runId")
    status: RunStatus
    result: str | None
    usage: UsageOut
    iterations: int
    thread_id: str | None = Field(alias="threadId")
    execution_mode: str = Field(alias="executionMode")
    sandbox_id: str = Field(alias="sandboxId")
    error: RunErrorOut | None = None


class LegacyRunRequest(WireModel):
    """The older run shape of `POST /v1/agents/{slug}/run` and `POST /v1/run/{apiSlug}`.
    `context.history` is the conversation to continue, `context.files` workspace files the
    agent starts from (see runtime/api/legacy_runs.py); `mounts` and `params` are kept in the
    run's metadata (mounting is the control plane's job before it relays the request)."""

    message: str = Field(min_length=1)
    stream: bool = Field(False, description="answer with the SSE event stream")
    mounts: list[Any] = Field(default_factory=list)
    context: str | dict[str, Any] | list[Any] | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class LegacyRunResult(WireModel):
    id: str
    status: RunStatus
    output: str | None
    dev_url: str | None = Field(alias="devUrl")
    files: list[Any]
    usage: UsageOut
    error: RunErrorOut | None = None
    warnings: list[str] = Field(
        default_factory=list, description="what of the request this daemon did not do"
    )


class RunOut(WireModel):
    """A run's record (history and detail)."""

    model_config = ConfigDict(
        extra="allow", populate_by_name=True, serialize_by_alias=True, defer_build=True
    )

    run_id: str = Field(alias="runId")
    agent: str
    agent_version: int | None = Field(None, alias="agentVersion")
    thread_id: str | None = Field(None, alias="threadId")
    status: RunStatus
    prompt: str | None = None
    result: str | None = None
    error: RunErrorOut | None = None
    usage: UsageOut
    iterations: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    created_at: str | None = Field(None, alias="createdAt")
    started_at: str | None = Field(None, alias="startedAt")
    finished_at: str | None = Field(None, alias="finishedAt")
    parent_run_id: str | None = Field(None, alias="parentRunId")
    fork_step: int | None = Field(None, alias="forkStep")
    execution_mode: str | None = Field(None, alias="executionMode")
    model: str | None = None


class ToolCallOut(WireModel):
    call_id: str = Field(alias="callId")
    tool: str
    input: dict[str, Any]
    output: str | None
    is_error: bool | None = Field(alias="isError")


class RunDetail(RunOut):
    """A run with its conversation and tool calls."""

    output: str | None = None
    messages: list[Message]
    tool_calls: list[ToolCallOut] = Field(alias="toolCalls")


class RunsQuery(PageQuery):
    agent: str | None = Field(None, description="only this agent's runs (slug or id)")
    deployment: str | None = Field(None, description="the platform SDK's name for `agent`")
    status: RunStatus | None = None

    @model_validator(mode="after")
    def _one_agent(self) -> RunsQuery:
        if self.deployment is not None:
            if self.agent is not None and self.agent != self.deployment:
                raise ValueError(
                    "`deployment` is another name for `agent`; give one of them, or the same"
                )
            self.agent = self.deployment
        return self


class EventsQuery(WireModel):
    after: int | None = Field(
        None, ge=0, le=MAX_INT, description="replay events with id > after (Last-Event-ID wins)"
    )
    access_token: str | None = Field(
        None, description="the API token, for EventSource clients that cannot send headers"
    )


class InputRequest(WireModel):
    text: str = Field(min_length=1, description="reaches the model at its next turn")


class ForkRequest(WireModel):
    step: int = Field(ge=0, le=MAX_INT, description="keep the run's first `step` messages")
    prompt: str | None = Field(None, description="a new user message after the cut")
    stream: bool = Field(False, description="answer with the new run's SSE event stream")


class ForkResult(WireModel):
    run_id: str = Field(alias="runId")
    thread_id: str = Field(alias="threadId")
    status: RunStatus
    parent_run_id: str = Field(alias="parentRunId")
    fork_step: int = Field(alias="forkStep")


class EmptyBody(WireModel):
    """Controls take no body (an empty JSON object is accepted)."""


# --- files ----------------------------------------------------------------------------------


class FilesQuery(WireModel):
    path: str = Field("/", description="a directory, relative to the workspace root")


class FileContentQuery(WireModel):
    path: str = Field(min_length=1, description="a file, relative to the workspace root")
    offset: int = Field(0, ge=0, le=MAX_INT, description="first byte to return")
    limit: int = Field(1024 * 1024, ge=1, le=8 * 1024 * 1024, description="bytes to return")


class FileEntry(WireModel):
    name: str
    path: str = Field(description="workspace-relative, starting with /")
    type: Literal["file", "dir", "symlink", "other"]
    size: int
    modified_at: str = Field(alias="modifiedAt")


class FileListing(WireModel):
    path: str
    entries: list[FileEntry] = Field(
        description="directories first, then by name; at most the first 10,000 of them"
    )
    total: int = Field(description="how many entries the directory has")
    truncated: bool = Field(
        False, description="the directory has more than the entries listed (see total)"
    )


class FileContent(WireModel):
    path: str
    size: int = Field(description="the whole file's size in bytes")
    offset: int
    encoding: Literal["utf-8", "base64"]
    content: str
    truncated: bool = Field(description="more bytes follow offset + the bytes returned")


# --- threads --------------------------------------------------------------------------------


class ThreadsQuery(PageQuery):
    agent: str | None = Field(None, description="only this agent's threads (slug or id)")


class ThreadQuery(WireModel):
    agent: str | None = Field(
        None, description="the agent the thread must belong to (another agent's is a 404)"
    )


class ThreadOut(ThreadRecord):
    """A thread as the API returns it: the stored record, documented from the same model."""

    model_config = ConfigDict(
        extra="allow", populate_by_name=True, serialize_by_alias=True, defer_build=True
    )


class ThreadDetail(ThreadOut):
    messages: list[Message]


class ThreadEventOut(PersistedThreadEvent):
    """A persisted thread event, documented from the model it is stored with: `sequence`
    counts 1, 2, 3, … per thread across all of its runs without gaps; `rolloutId` names the
    run's attempt; `payload` is the type's (docs/design.md, "Threads")."""

    model_config = ConfigDict(
        populate_by_name=True, serialize_by_alias=True, frozen=True, defer_build=True
    )


class ThreadEventsQuery(WireModel):
    after: int = Field(0, ge=0, le=MAX_INT, description="events with sequence > after (cursor)")
    limit: int = Field(100, ge=1, le=1000)
    access_token: str | None = Field(
        None, description="the API token, for browser clients that cannot send headers"
    )


class ThreadStreamQuery(WireModel):
    after: int | None = Field(
        None, ge=0, le=MAX_INT, description="the snapshot holds the events after this sequence"
    )
    access_token: str | None = Field(
        None, description="the API token, for browser WebSockets that cannot send headers"
    )


class AckFrame(WireModel):
    """Client → server: the client has the persisted events up to `sequence`."""

    type: Literal["ack"]
    sequence: int = Field(ge=0, le=MAX_INT)


class ControlFrame(WireModel):
    """Client → server: pause, resume or cancel the thread's active run (or `runId`)."""

    type: Literal["pause", "resume", "cancel"]
    run_id: str | None = Field(None, alias="runId")


class InputFrame(WireModel):
    """Client → server: user input for the thread's active run (or `runId`)."""

    type: Literal["input"]
    text: str = Field(min_length=1)
    run_id: str | None = Field(None, alias="runId")


class ClientFrame(WireModel):
    """Any frame a thread stream client may send."""

    frame: Annotated[AckFrame | ControlFrame | InputFrame, Field(discriminator="type")]


class CompactionOut(WireModel):
    """What `POST /v1/run/threads/{id}/compact` did (sizes in estimated tokens)."""

    thread_id: str = Field(alias="threadId")
    summarized: bool
    tokens_before: int = Field(alias="tokensBefore")
    tokens_after: int = Field(alias="tokensAfter")
    messages_replaced: int = Field(alias="messagesReplaced")
    usage: UsageOut = Field(description="The summary request's tokens, shaped as a run's usage")


# --- tools ----------------------------------------------------------------------------------


class ToolInvocation(WireModel):
    """The result of `POST /v1/tools/{name}`: what the model would have read (`output`),
    whether the tool reported an error, and the structured `data`."""

    tool: str
    output: str
    is_error: bool = Field(alias="isError")
    data: dict[str, Any]
    duration_ms: float = Field(alias="durationMs")
