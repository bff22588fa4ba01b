"""Durable state: agents (and every version), threads, runs, messages and events in SQLite.

The database is `<state_dir>/agentd.db` in WAL mode. SQLite calls never run on the event
loop thread: writes go through one connection used by one worker thread at a time (a
capacity limiter of 1 keeps them in order; events are group-committed, see `append_event`),
reads through a second connection, which WAL lets run while a write is in progress. Every
public method is a coroutine that returns pydantic records.

One daemon at a time: `Store.open` takes an exclusive lock (`flock`) on
`<state_dir>/agentd.lock`, which holds the owner's pid, and raises `StoreLocked` naming that
pid when another process holds it. The kernel drops the lock when its holder dies, so a
crashed daemon never leaves a stale lock behind.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import functools
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, NamedTuple, TypeVar

import anyio
from pydantic import BaseModel, ConfigDict, Field

from runtime.collector import collector_paused
from runtime.ids import new_id, utc_now
from runtime.usage import Usage
from tools.utf8 import printable_json

if TYPE_CHECKING:
    # runtime.agents loads with the /v1 API, after start-up (runtime.api.v1); the store
    # reads agents only in its worker threads (`_agent_record`)
    from runtime.agents import AgentRecord, AgentSpec
    from runtime.events.model import Event
    from runtime.messages import Message
    from runtime.thread_events import PersistedThreadEvent

# A write that failed for want of space (as tools.base counts them; the store sits below
# the tools and does not import them).
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
DB_NAME = "agentd.db"
LOCK_NAME = "agentd.lock"
RESERVE_NAME = "agentd.reserve"
RESERVE_BYTES = 512 * 1024
LOW_SPACE_BYTES = 64 * 1024 * 1024
SCHEMA_VERSION = 4
MAX_PAGE = 1000

RunStatus = Literal[
    "queued", "running", "pausing", "paused", "completed", "failed", "cancelled", "interrupted"
]
UNFINISHED_STATUSES: tuple[str, ...] = ("queued", "running", "pausing", "paused")
FINISHED_STATUSES: tuple[str, ...] = ("completed", "failed", "cancelled", "interrupted")

T = TypeVar("T")

_INSERT_EVENT = (
    "INSERT INTO events (run_id, id, type, ts, thread_id, payload) VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_THREAD_EVENT = (
    "INSERT INTO thread_events (thread_id, sequence, rollout_id, run_id, type, payload, "
    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class StoreLocked(RuntimeError):
    """Another process (`pid`, when known) has the state directory open."""

    def __init__(self, state_dir: Path, pid: int | None) -> None:
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            f"the state directory {state_dir} is in use by {holder} (another agentd?); "
            "stop it or choose another --state-dir"
        )
        self.pid = pid


def _lock_state_dir(state_dir: Path) -> int:
    """Take the state dir's exclusive lock and write our pid in it; returns the open fd."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raw = os.pread(fd, 32, 0)
        os.close(fd)
        pid = int(raw) if raw.strip().isdigit() else None
        raise StoreLocked(state_dir, pid) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class StoreClosed(RuntimeError):
    """The store was used after `close()`."""


class StoreFull(RuntimeError):
    """A write failed because the state directory's disk is full (SQLITE_FULL, ENOSPC)."""

    code = "storage_full"


def _is_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


class _Reserve:
    """Room kept in the state dir for recording failures when the disk is full.

    Once the disk's free space is below `LOW_SPACE_BYTES` (looked at, at most once a second,
    before a write), a file of `RESERVE_BYTES` is allocated there. A write that finds the
    disk full releases it, so the daemon can still record that runs failed (their status,
    error and complete events). It is allocated again once the disk has twice its size free.
    Used only from the store's writer thread."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / RESERVE_NAME
        self.held = self.path.is_file()  # a previous daemon's
        self.released = False  # by a write that found the disk full, and not made again yet
        self._next_look = 0.0

    def keep(self, *, look_now: bool = False) -> None:
        if self.held or (time.monotonic() < self._next_look and not look_now):
            return
        self._next_look = time.monotonic() + 1.0
        try:
            free = shutil.disk_usage(self.path.parent).free
            if free >= LOW_SPACE_BYTES:
                self.released = False  # room enough without one
                return
            if free < 2 * RESERVE_BYTES:
                return
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            finally:
                os.close(fd)
            self.held, self.released = True, False
        except OSError:
            with contextlib.suppress(OSError):
                self.path.unlink()

    def release(self) -> bool:
        """Delete the file; whether there was one."""
        held, self.held = self.held, False
        self.released = True
        self._next_look = 0.0
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        return held


class ThreadRecord(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True, defer_build=True)

    id: str
    agent: str
    created_at: str = Field(alias="createdAt")
    updated_at: str = Field(alias="updatedAt")
    metadata: dict[str, Any] = Field(default_factory=dict)
    message_count: int = Field(0, alias="messageCount")


class RunRecord(BaseModel):
    """What the store knows about a run (its conversation and events are kept apart)."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True, defer_build=True)

    run_id: str = Field(alias="runId")
    agent: str
    agent_version: int | None = Field(None, alias="agentVersion")
    thread_id: str | None = Field(None, alias="threadId")
    status: RunStatus = "queued"
    prompt: str | None = None
    result: str | None = None
    error: dict[str, Any] | None = None
    usage: Usage = Field(default_factory=Usage)
    iterations: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    created_at: str = Field(default_factory=utc_now, alias="createdAt")
    started_at: str | None = Field(None, alias="startedAt")
    finished_at: str | None = Field(None, alias="finishedAt")
    parent_run_id: str | None = Field(None, alias="parentRunId")
    fork_step: int | None = Field(None, alias="forkStep")
    execution_mode: str = Field("in_sandbox", alias="executionMode")
    model: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    def to_api(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class WebhookDelivery(BaseModel):
    """A webhook kept until it is delivered or given up (runtime.api.webhooks): from the
    run's start, waiting for the run (`event` None), then with its body and the attempts
    made, so a daemon that stops meanwhile delivers it when it starts again."""

    model_config = ConfigDict(defer_build=True)

    id: str  # X-Agentd-Delivery, the same across attempts and restarts
    run_id: str
    url: str
    events: list[str]  # the events the agent selected
    event: str | None = None
    body: str | None = None  # the JSON payload, once the run has ended
    attempts: int = 0
    created_at: str = Field(default_factory=utc_now)


_RUN_FIELDS = {
    **{name: name for name in RunRecord.model_fields},
    **{f.alias: name for name, f in RunRecord.model_fields.items() if f.alias},
}

_SCHEMA = """
CREATE TABLE agents (
    slug TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deleted_at TEXT
);
CREATE TABLE agent_versions (
    slug TEXT NOT NULL,
    version INTEGER NOT NULL,
    spec TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (slug, version)
) WITHOUT ROWID;
CREATE TABLE threads (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    metadata TEXT NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX threads_by_agent ON threads (agent, updated_at);
CREATE TABLE runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL UNIQUE,
    agent TEXT NOT NULL,
    status TEXT NOT NULL,
    thread_id TEXT,
    data TEXT NOT NULL
);
CREATE INDEX runs_by_agent ON runs (agent, seq);
CREATE INDEX runs_by_status ON runs (status, seq);
CREATE INDEX runs_by_thread ON runs (thread_id, seq);
CREATE TABLE messages (
    scope TEXT NOT NULL,
    owner TEXT NOT NULL,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (scope, owner, seq)
) WITHOUT ROWID;
CREATE TABLE events (
    run_id TEXT NOT NULL,
    id INTEGER NOT NULL,
    type TEXT NOT NULL,
    ts TEXT NOT NULL,
    thread_id TEXT,
    payload TEXT NOT NULL,
    PRIMARY KEY (run_id, id)
) WITHOUT ROWID;
"""

# Version 2: the threads' persisted events (runtime.thread_events), numbered per thread.
_SCHEMA_THREAD_EVENTS = """
CREATE TABLE thread_events (
    thread_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    rollout_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    type TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (thread_id, sequence)
) WITHOUT ROWID;
CREATE INDEX thread_events_by_run ON thread_events (run_id, sequence);
"""

# Version 3: a run's conversation is the first `length` messages of one message log, its
# thread's (so a thread's messages are stored once, however many runs continue it) or its own
# (scope 'run', owner = run id). Runs stored before keep their own copies.
_SCHEMA_RUN_CONVERSATIONS = """
CREATE TABLE run_conversations (
    run_id TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    owner TEXT NOT NULL,
    length INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX run_conversations_by_log ON run_conversations (scope, owner);
INSERT INTO run_conversations (run_id, scope, owner, length)
    SELECT owner, 'run', owner, COUNT(*) FROM messages WHERE scope = 'run' GROUP BY owner;
"""

# Version 4: webhook deliveries not yet delivered or given up (runtime.api.webhooks).
_SCHEMA_WEBHOOK_DELIVERIES = """
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    data TEXT NOT NULL
) WITHOUT ROWID;
"""

# The statements that bring a database from version n-1 to n, by n.
_MIGRATIONS = {
    1: _SCHEMA,
    2: _SCHEMA_THREAD_EVENTS,
    3: _SCHEMA_RUN_CONVERSATIONS,
    4: _SCHEMA_WEBHOOK_DELIVERIES,
}


def _open_files(path: Path) -> tuple[int, sqlite3.Connection, sqlite3.Connection]:
    """Lock the state dir, then open (creating or migrating it) the writer's connection to the
    database at `path`, then the reader's: (lock fd, writer, reader). Blocking."""
    lock_fd = _lock_state_dir(path.parent)
    try:
        writer = _connect(path, create=True)
        try:
            reader = _connect(path, create=False)
        except BaseException:
            writer.close()
            raise
    except BaseException:
        os.close(lock_fd)
        raise
    return lock_fd, writer, reader


def _connect(path: Path, *, create: bool) -> sqlite3.Connection:
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 30000")
    # NORMAL is durable against a killed process in WAL mode (only power loss can lose the
    # last transactions), and avoids an fsync per event. Set before the migrations: a schema
    # a power loss took back is made again at the next start (each migration starts from the
    # version the database says it has).
    conn.execute("PRAGMA synchronous = NORMAL")
    if create:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            conn.close()
            raise RuntimeError(f"SQLite refused WAL mode for {path} (got {mode!r})")
        _migrate(conn)
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    with _transaction(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"the state database has schema version {version}; this agentd knows up to "
                f"{SCHEMA_VERSION}: upgrade agentd or use another state dir"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[target].split(";"):
                if statement.strip():
                    conn.execute(statement)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


class _transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK if the block raises."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        elif self.conn.in_transaction:
            # SQLite may already have rolled back (e.g. on SQLITE_FULL); a second ROLLBACK
            # would raise and hide the real error.
            self.conn.execute("ROLLBACK")


def _dumps(value: Any) -> str:
    # printable: SQLite refuses text with a lone surrogate (a file name that is not UTF-8)
    return printable_json(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def _encode_cursor(kind: str, *keys: str | int) -> str:
    """An opaque cursor: the list it belongs to and the sort key of the page's last item."""
    raw = json.dumps([kind, *keys], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


_SQLITE_INTEGERS = range(-(2**63), 2**63)
"""The integers SQLite stores (64-bit signed); a larger one cannot even be a query parameter."""


def _decode_cursor(cursor: str, kind: str, types: tuple[type, ...]) -> list[Any]:
    """The sort key in `cursor`; ValueError unless it is a cursor of list `kind`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"invalid cursor {cursor!r}") from exc
    if (
        not isinstance(value, list)
        or len(value) != len(types) + 1
        or value[0] != kind
        or not all(_is_key(key, want) for key, want in zip(value[1:], types, strict=True))
    ):
        raise ValueError(f"invalid cursor {cursor!r} (not one of this list's cursors)")
    return value[1:]


def _is_key(key: Any, want: type) -> bool:
    """Whether `key` is a sort key of type `want` that SQLite can take as a parameter: exactly
    that type (`true` is an int to Python, not to a cursor), and an integer in SQLite's range
    (past it, binding the parameter raises OverflowError)."""
    if type(key) is not want:
        return False
    return not isinstance(key, int) or key in _SQLITE_INTEGERS


def _check_limit(limit: int) -> int:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    return min(limit, MAX_PAGE)


class _EventBatch:
    """Events that go to the database in one transaction (see `Store.append_event`)."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.written = anyio.Event()
        self.duplicates: set[int] = set()  # rows refused: their (run, id) was taken
        self.error: Exception | None = None  # the whole write failed


def _insert_events(rows: list[tuple[Any, ...]], conn: sqlite3.Connection) -> set[int]:
    """Insert `rows`; the indexes of rows whose event id was already taken (the others
    are stored: a refused INSERT undoes only itself, not the transaction)."""
    duplicates: set[int] = set()
    if len(rows) == 1:  # autocommit: one statement is its own transaction
        try:
            conn.execute(_INSERT_EVENT, rows[0])
        except sqlite3.IntegrityError:
            duplicates.add(0)
        return duplicates
    with _transaction(conn):
        for index, row in enumerate(rows):
            try:
                conn.execute(_INSERT_EVENT, row)
            except sqlite3.IntegrityError:
                duplicates.add(index)
    return duplicates


class LastThreadEvent(NamedTuple):
    """A thread's last persisted event: which one (`sequence`) and which run's rollout wrote
    it (`rollout_id`, new for every run: a thread deleted and made again under the same id has
    other rollout ids at the same sequences)."""

    sequence: int
    rollout_id: str


class ThreadEventWatch:
    """The threads that got persisted events since the last `changed()`: what a follower of
    every thread (the link's outbox) waits on instead of asking each thread in turn. Made by
    `Store.watch_thread_events`; a context manager that stops watching when it exits."""

    def __init__(self, on_close: Callable[[ThreadEventWatch], None]) -> None:
        self._on_close = on_close
        self._threads: set[str] = set()
        self._wakeup = anyio.Event()

    def note(self, thread_ids: Iterable[str]) -> None:
        """Called by the store after a write of these threads' events (it may have failed: a
        watcher reads a noted thread and finds what is there)."""
        self._threads.update(thread_ids)
        self._wakeup.set()

    async def changed(self) -> set[str]:
        """The ids of the threads that got events since the last call, waiting until one
        does. An event stored after a reader of its thread began is noted all the same: the
        note comes after the event is committed."""
        while not self._threads:
            await self._wakeup.wait()
            self._wakeup = anyio.Event()
        changed, self._threads = self._threads, set()
        return changed

    def close(self) -> None:
        self._on_close(self)

    def __enter__(self) -> ThreadEventWatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _SharedRead(Generic[T]):
    """One read in flight that other callers asking the same wait for: its result once it
    succeeded, None if it failed or was cancelled."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: list[T] | None = None


class _SharedPages(Generic[T]):
    """Page reads in flight, by what they read (`Store.events_after`,
    `Store.thread_events_after`): a caller asking for a page that is being read waits for
    that read's answer instead of reading and decoding the rows again. Each caller gets its
    own list (of the same, immutable, rows)."""

    def __init__(self) -> None:
        self._in_flight: dict[tuple[str, int, int], _SharedRead[T]] = {}
        self.reads = 0  # page reads made (not shared), for benchmarks and tests

    async def read(
        self, key: tuple[str, int, int], read: Callable[[], Awaitable[list[T]]]
    ) -> list[T]:
        shared = self._in_flight.get(key)
        if shared is not None:
            await shared.done.wait()
            if shared.result is not None:
                return list(shared.result)
            # the read it waited for failed or was cancelled: read alone
            self.reads += 1
            return await read()
        shared = self._in_flight[key] = _SharedRead()
        try:
            self.reads += 1
            shared.result = await read()
            return list(shared.result)
        finally:
            del self._in_flight[key]
            shared.done.set()


class Store:
    """The daemon's SQLite state. Open with `await Store.open(state_dir)`."""

    def __init__(
        self,
        path: Path,
        writer: sqlite3.Connection,
        reader: sqlite3.Connection,
        lock_fd: int | None = None,
    ):
        self.path = path
        self.state_dir = path.parent
        self._lock_fd = lock_fd
        self._writer = writer
        self._reader = reader
        self._write_limiter = anyio.CapacityLimiter(1)
        self._read_limiter = anyio.CapacityLimiter(1)
        self._event_batch: _EventBatch | None = None  # events waiting for the next write
        self._event_writes = anyio.Lock()  # one batch written at a time, in order
        self._closed = False
        self._reserve = _Reserve(self.state_dir)
        # Page reads in flight, by (run or thread id, after, limit): see events_after and
        # thread_events_after.
        self._event_pages: _SharedPages[Event] = _SharedPages()
        self._thread_event_pages: _SharedPages[PersistedThreadEvent] = _SharedPages()
        self._thread_event_watches: set[ThreadEventWatch] = set()

    @classmethod
    async def open(cls, state_dir: Path | str) -> Store:
        path = Path(state_dir) / DB_NAME
        # One trip to a worker thread: each trip waits for the thread to be scheduled, which
        # on a loaded machine cost start-up more than the work (~4 ms for a new database).
        lock_fd, writer, reader = await anyio.to_thread.run_sync(_open_files, path)
        return cls(path, writer, reader, lock_fd)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Wait for calls in flight, then close each connection.
        async with self._write_limiter, self._read_limiter:
            await anyio.to_thread.run_sync(self._close_connections)

    def _close_connections(self) -> None:
        try:
            self._reader.close()
            try:
                self._writer.execute("PRAGMA optimize")
            finally:
                self._writer.close()
        finally:
            if self._lock_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._lock_fd)
                self._lock_fd = None

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the writer connection in the writer thread. A write that finds the
        disk full releases the reserve (so the failure can still be recorded) and raises
        `StoreFull`; while the reserve is released, each write first tries to make it again."""
        if self._closed:
            raise StoreClosed("the store is closed")

        def write(conn: sqlite3.Connection) -> T:
            self._reserve.keep()
            try:
                return fn(conn)
            except (sqlite3.OperationalError, OSError) as exc:
                if not _is_full(exc):
                    raise
                released = self._reserve.release()
                raise StoreFull(
                    f"the daemon's state directory is out of disk space ({exc}); "
                    + (
                        "its reserve was released to record this failure"
                        if released
                        else "there is no reserve left"
                    )
                    + ". Free space there."
                ) from exc

        return await anyio.to_thread.run_sync(write, self._writer, limiter=self._write_limiter)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreClosed("the store is closed")
        return await anyio.to_thread.run_sync(fn, self._reader, limiter=self._read_limiter)

    # -- agents ------------------------------------------------------------------------

    async def upsert_agent(
        self, spec: AgentSpec
    ) -> tuple[AgentRecord, Literal["created", "updated", "unchanged"]]:
        """Create the agent, or add a version if `spec` differs from the current one."""
        canonical = spec.canonical()

        def upsert(conn: sqlite3.Connection) -> tuple[AgentRecord, Any]:
            with _transaction(conn):
                row = conn.execute("SELECT * FROM agents WHERE slug = ?", (spec.slug,)).fetchone()
                now = utc_now()
                if row is not None and row["deleted_at"] is None:
                    current = _version_row(conn, spec.slug, row["version"])
                    if json.loads(current["spec"]) == canonical:
                        return _agent_record(row, current), "unchanged"
                version = _next_version(conn, spec.slug)
                conn.execute(
                    "INSERT INTO agent_versions (slug, version, spec, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (spec.slug, version, _dumps(canonical), now),
                )
                if row is None:
                    conn.execute(
                        "INSERT INTO agents (slug, id, version, created_at, updated_at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (spec.slug, new_id("agt"), version, now, now),
                    )
                    action = "created"
                elif row["deleted_at"] is not None:
                    conn.execute(
                        "UPDATE agents SET version = ?, created_at = ?, updated_at = ?, "
                        "deleted_at = NULL WHERE slug = ?",
                        (version, now, now, spec.slug),
                    )
                    action = "created"
                else:
                    conn.execute(
                        "UPDATE agents SET version = ?, updated_at = ? WHERE slug = ?",
                        (version, now, spec.slug),
                    )
                    action = "updated"
                record = _load_agent(conn, spec.slug, version)
                assert record is not None
                return record, action

        return await self._write(upsert)

    async def get_agent(self, slug_or_id: str, version: int | None = None) -> AgentRecord | None:
        """The current version (or the given one) of a live agent, by slug or id (`agt_…`)."""
        return await self._read(lambda conn: _load_agent(conn, slug_or_id, version))

    async def list_agents(
        self, limit: int = MAX_PAGE, cursor: str | None = None
    ) -> tuple[list[AgentRecord], str | None]:
        """Live agents (current versions) by slug, `limit` at a time, and the next page's
        cursor (None on the last page). ValueError for a bad limit or cursor."""
        limit = _check_limit(limit)
        after = _decode_cursor(cursor, "agents", (str,))[0] if cursor else ""

        def page(conn: sqlite3.Connection) -> tuple[list[AgentRecord], str | None]:
            rows = conn.execute(
                "SELECT a.*, v.spec, v.created_at AS version_created_at FROM agents a "
                "JOIN agent_versions v ON v.slug = a.slug AND v.version = a.version "
                "WHERE a.deleted_at IS NULL AND a.slug > ? ORDER BY a.slug LIMIT ?",
                (after, limit + 1),
            ).fetchall()
            more = len(rows) > limit
            records = [_agent_record(row, row) for row in rows[:limit]]
            return records, (_encode_cursor("agents", records[-1].slug) if more else None)

        return await self._read(page)

    async def delete_agent(self, slug: str) -> bool:
        """Delete the agent (its versions stay, so old runs can still be explained, and a new
        agent with the slug continues the version numbers). False if there was none."""

        def delete(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                cursor = conn.execute(
                    "UPDATE agents SET deleted_at = ? WHERE slug = ? AND deleted_at IS NULL",
                    (utc_now(), slug),
                )
                return cursor.rowcount > 0

        return await self._write(delete)

    async def list_agent_versions(
        self, slug: str, limit: int = MAX_PAGE, cursor: str | None = None
    ) -> tuple[list[AgentRecord], str | None]:
        """A live agent's versions, oldest first, `limit` at a time (none if no such agent),
        and the next page's cursor. ValueError for a bad limit or cursor."""
        limit = _check_limit(limit)
        after = _decode_cursor(cursor, "versions", (int,))[0] if cursor else 0

        def versions(conn: sqlite3.Connection) -> tuple[list[AgentRecord], str | None]:
            row = conn.execute(
                "SELECT * FROM agents WHERE slug = ? AND deleted_at IS NULL", (slug,)
            ).fetchone()
            if row is None:
                return [], None
            rows = conn.execute(
                "SELECT * FROM agent_versions WHERE slug = ? AND version > ? "
                "ORDER BY version LIMIT ?",
                (slug, after, limit + 1),
            ).fetchall()
            more = len(rows) > limit
            records = [_agent_record(row, v) for v in rows[:limit]]
            return records, (_encode_cursor("versions", records[-1].version) if more else None)

        return await self._read(versions)

    async def rollback_agent(self, slug: str, version: int) -> AgentRecord:
        """Make a new version whose spec equals `version`'s. KeyError if either is missing."""

        def rollback(conn: sqlite3.Connection) -> AgentRecord:
            with _transaction(conn):
                row = conn.execute(
                    "SELECT * FROM agents WHERE slug = ? AND deleted_at IS NULL", (slug,)
                ).fetchone()
                if row is None:
                    raise KeyError(f"agent {slug!r} does not exist")
                old = conn.execute(
                    "SELECT spec FROM agent_versions WHERE slug = ? AND version = ?",
                    (slug, version),
                ).fetchone()
                if old is None:
                    raise KeyError(f"agent {slug!r} has no version {version}")
                new_version = _next_version(conn, slug)
                now = utc_now()
                conn.execute(
                    "INSERT INTO agent_versions (slug, version, spec, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (slug, new_version, old["spec"], now),
                )
                conn.execute(
                    "UPDATE agents SET version = ?, updated_at = ? WHERE slug = ?",
                    (new_version, now, slug),
                )
                record = _load_agent(conn, slug, new_version)
                assert record is not None
                return record

        return await self._write(rollback)

    # -- threads -----------------------------------------------------------------------

    async def create_thread(
        self, agent: str, thread_id: str | None = None, metadata: dict[str, Any] | None = None
    ) -> ThreadRecord:
        """A new, empty thread. ValueError if `thread_id` is taken."""
        record = ThreadRecord(
            id=thread_id or new_id("thr"),
            agent=agent,
            created_at=utc_now(),
            updated_at=utc_now(),
            metadata=dict(metadata or {}),
        )

        def create(conn: sqlite3.Connection) -> ThreadRecord:
            try:
                with _transaction(conn):
                    conn.execute(
                        "INSERT INTO threads (id, agent, created_at, updated_at, metadata) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (
                            record.id,
                            record.agent,
                            record.created_at,
                            record.updated_at,
                            _dumps(record.metadata),
                        ),
                    )
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"thread {record.id!r} already exists") from exc
            return record

        return await self._write(create)

    async def get_thread(self, thread_id: str) -> ThreadRecord | None:
        def get(conn: sqlite3.Connection) -> ThreadRecord | None:
            row = conn.execute("SELECT * FROM threads WHERE id = ?", (thread_id,)).fetchone()
            return None if row is None else _thread_record(row)

        return await self._read(get)

    async def list_threads(
        self, agent: str | None = None, limit: int = MAX_PAGE, cursor: str | None = None
    ) -> tuple[list[ThreadRecord], str | None]:
        """Threads, most recently updated first, `limit` at a time, and the next page's
        cursor. ValueError for a bad limit or cursor."""
        limit = _check_limit(limit)
        clauses: list[str] = []
        params: list[str | int] = []
        if agent is not None:
            clauses.append("agent = ?")
            params.append(agent)
        if cursor:
            updated, last_id = _decode_cursor(cursor, "threads", (str, str))
            clauses.append("(updated_at < ? OR (updated_at = ? AND id < ?))")
            params += [updated, updated, last_id]
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        query = f"SELECT * FROM threads {where} ORDER BY updated_at DESC, id DESC LIMIT ?"

        def page(conn: sqlite3.Connection) -> tuple[list[ThreadRecord], str | None]:
            rows = conn.execute(query, (*params, limit + 1)).fetchall()
            more = len(rows) > limit
            records = [_thread_record(row) for row in rows[:limit]]
            last = records[-1] if records else None
            next_cursor = (
                _encode_cursor("threads", last.updated_at, last.id) if more and last else None
            )
            return records, next_cursor

        return await self._read(page)

    async def all_threads(self) -> list[ThreadRecord]:
        """Every thread, most recently updated first (every page of `list_threads`)."""
        threads, cursor = await self.list_threads()
        while cursor is not None:
            more, cursor = await self.list_threads(cursor=cursor)
            threads.extend(more)
        return threads

    async def delete_thread(self, thread_id: str) -> bool:
        """Delete a thread and its messages (runs that used it are kept, with their
        conversations). False if none."""
        # The runs' conversations are prefixes of the thread's messages: those stay, moved to
        # a log no thread names, so a new thread with the same id starts empty.
        detached = new_id("log")

        def delete(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                gone = conn.execute("DELETE FROM threads WHERE id = ?", (thread_id,)).rowcount
                kept = conn.execute(
                    "SELECT MAX(length) AS kept FROM run_conversations "
                    "WHERE scope = 'thread' AND owner = ?",
                    (thread_id,),
                ).fetchone()["kept"]
                conn.execute(
                    "DELETE FROM messages WHERE scope = 'thread' AND owner = ? AND seq >= ?",
                    (thread_id, kept or 0),
                )
                if kept:
                    for table in ("messages", "run_conversations"):
                        conn.execute(
                            f"UPDATE {table} SET scope = 'detached', owner = ? "
                            "WHERE scope = 'thread' AND owner = ?",
                            (detached, thread_id),
                        )
                conn.execute("DELETE FROM thread_events WHERE thread_id = ?", (thread_id,))
                return gone > 0

        return await self._write(delete)

    async def thread_messages(self, thread_id: str) -> list[Message]:
        return await self._read(lambda conn: _load_messages(conn, "thread", thread_id))

    async def append_thread_messages(self, thread_id: str, messages: list[Message]) -> None:
        """Append to a thread's conversation. KeyError if the thread does not exist."""
        encoded = [(m.role, m.model_dump_json()) for m in messages]

        def append(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                _append_to_thread(conn, thread_id, encoded)

        await self._write(append)

    async def import_thread(
        self,
        record: ThreadRecord,
        messages: list[Message],
        events: list[PersistedThreadEvent],
    ) -> ThreadRecord:
        """Create a thread with its conversation and persisted events in one transaction
        (a thread brought over from a rollout file). ValueError if the id is taken."""
        encoded = [(m.role, m.model_dump_json()) for m in messages]
        rows = [_thread_event_row(e) for e in events]
        imported = record.model_copy(update={"message_count": len(messages)})

        def create(conn: sqlite3.Connection) -> ThreadRecord:
            try:
                with _transaction(conn):
                    conn.execute(
                        "INSERT INTO threads (id, agent, created_at, updated_at, metadata, "
                        "message_count) VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            imported.id,
                            imported.agent,
                            imported.created_at,
                            imported.updated_at,
                            _dumps(imported.metadata),
                            imported.message_count,
                        ),
                    )
                    conn.executemany(
                        "INSERT INTO messages (scope, owner, seq, role, data) "
                        "VALUES ('thread', ?, ?, ?, ?)",
                        [(record.id, i, role, data) for i, (role, data) in enumerate(encoded)],
                    )
                    conn.executemany(_INSERT_THREAD_EVENT, rows)
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"thread {record.id!r} already exists") from exc
            return imported

        try:
            return await self._write(create)
        finally:
            if rows:  # as append_thread_events notes them, whatever the outcome
                self._note_thread_events([record.id])

    # -- thread events -------------------------------------------------------------------

    async def append_thread_events(self, events: Iterable[PersistedThreadEvent]) -> None:
        """Store persisted thread events in one transaction (all or none). ValueError if a
        thread already has an event with one of their sequences."""
        rows = [_thread_event_row(e) for e in events]
        if not rows:
            return

        def append(conn: sqlite3.Connection) -> None:
            try:
                if len(rows) == 1:  # one statement in autocommit mode is its own transaction
                    conn.execute(_INSERT_THREAD_EVENT, rows[0])
                    return
                with _transaction(conn):
                    conn.executemany(_INSERT_THREAD_EVENT, rows)
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"duplicate thread event sequence: {exc}") from exc

        try:
            await self._write(append)
        finally:
            # Also when the write failed or its caller was cancelled (the write may have been
            # committed all the same): a note too many costs a watcher one read.
            self._note_thread_events({row[0] for row in rows})

    def watch_thread_events(self) -> ThreadEventWatch:
        """A watch of which threads get persisted events from now on (`with` it, or close
        it): the threads of every append, and every thread imported with events, are noted
        once the write is over."""
        watch = ThreadEventWatch(self._thread_event_watches.discard)
        self._thread_event_watches.add(watch)
        return watch

    def _note_thread_events(self, thread_ids: Iterable[str]) -> None:
        for watch in list(self._thread_event_watches):
            watch.note(thread_ids)

    async def thread_events_after(
        self, thread_id: str, after: int = 0, limit: int | None = None, *, shared: bool = False
    ) -> list[PersistedThreadEvent]:
        """A thread's persisted events with sequence > `after`, in order (at most `limit`).

        `shared` (with a `limit`): the caller reads events it knows are stored already (a
        subscription's backlog, `ThreadSubscription`), so a read in flight for the same page
        answers it as well: clients that follow one thread from the same point at once (a
        reconnect of every stream of a long thread) read and decode each page once between
        them. Other callers may follow appends as they happen (the link's outbox, a rollout
        being filled in), and a read that started before an append would hide it from them:
        they read alone."""
        if shared and limit is not None:
            return await self._thread_event_pages.read(
                (thread_id, after, limit), lambda: self._read_thread_events(thread_id, after, limit)
            )
        return await self._read_thread_events(thread_id, after, limit)

    async def _read_thread_events(
        self, thread_id: str, after: int, limit: int | None
    ) -> list[PersistedThreadEvent]:
        def read(conn: sqlite3.Connection) -> list[PersistedThreadEvent]:
            query = (
                "SELECT * FROM thread_events WHERE thread_id = ? AND sequence > ? ORDER BY sequence"
            )
            params: tuple[Any, ...] = (thread_id, after)
            if limit is not None:
                query += " LIMIT ?"
                params = (*params, max(0, limit))
            return _thread_events(conn.execute(query, params))

        return await self._read(read)

    async def last_thread_sequence(self, thread_id: str) -> int:
        def last(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT MAX(sequence) AS last FROM thread_events WHERE thread_id = ?",
                (thread_id,),
            ).fetchone()
            return int(row["last"] or 0)

        return await self._read(last)

    async def last_thread_events(self) -> dict[str, LastThreadEvent]:
        """Every thread that has persisted events: its last one's sequence and rollout id.
        One read, an index lookup per thread (the link's outbox starts from it)."""

        def last(conn: sqlite3.Connection) -> dict[str, LastThreadEvent]:
            rows = conn.execute(
                "SELECT e.thread_id AS id, e.sequence AS sequence, e.rollout_id AS rollout_id "
                "FROM threads AS t JOIN thread_events AS e ON e.thread_id = t.id AND "
                "e.sequence = (SELECT MAX(m.sequence) FROM thread_events AS m "
                "WHERE m.thread_id = t.id)"
            )
            return {
                row["id"]: LastThreadEvent(int(row["sequence"]), row["rollout_id"]) for row in rows
            }

        return await self._read(last)

    async def run_thread_events(self, run_id: str) -> list[PersistedThreadEvent]:
        """The persisted thread events a run contributed, in sequence order."""

        def read(conn: sqlite3.Connection) -> list[PersistedThreadEvent]:
            rows = conn.execute(
                "SELECT * FROM thread_events WHERE run_id = ? ORDER BY sequence", (run_id,)
            )
            return _thread_events(rows)

        return await self._read(read)

    # -- runs --------------------------------------------------------------------------

    async def insert_run(self, record: RunRecord) -> None:
        """Store a new run. ValueError if its id is taken; `StoreFull` while the disk is too
        full to keep the reserve (what is left is for recording the end of runs under way)."""

        def insert(conn: sqlite3.Connection) -> None:
            if self._reserve.released:
                self._reserve.keep(look_now=True)
            if self._reserve.released:
                raise StoreFull(
                    "the daemon's state directory is out of disk space; new runs are refused "
                    "until there is room again. Free space there."
                )
            try:
                with _transaction(conn):
                    conn.execute(
                        "INSERT INTO runs (run_id, agent, status, thread_id, data) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (
                            record.run_id,
                            record.agent,
                            record.status,
                            record.thread_id,
                            record.model_dump_json(),
                        ),
                    )
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"run {record.run_id!r} already exists") from exc

        await self._write(insert)

    async def update_run(self, run_id: str, **fields: Any) -> RunRecord:
        """Change some fields (Python or wire names) and return the updated record.
        KeyError if the run does not exist, TypeError for an unknown field."""
        changes: dict[str, Any] = {}
        for key, value in fields.items():
            name = _RUN_FIELDS.get(key)
            if name is None:
                raise TypeError(f"RunRecord has no field {key!r}")
            if name == "run_id":
                raise TypeError("a run's id cannot change")
            changes[name] = value

        def update(conn: sqlite3.Connection) -> RunRecord:
            with _transaction(conn):
                row = conn.execute("SELECT data FROM runs WHERE run_id = ?", (run_id,)).fetchone()
                if row is None:
                    raise KeyError(f"run {run_id!r} does not exist")
                current = RunRecord.model_validate_json(row["data"])
                merged = {**current.model_dump(by_alias=False), **changes}
                record = RunRecord.model_validate(merged, by_name=True)
                conn.execute(
                    "UPDATE runs SET agent = ?, status = ?, thread_id = ?, data = ? "
                    "WHERE run_id = ?",
                    (
                        record.agent,
                        record.status,
                        record.thread_id,
                        record.model_dump_json(),
                        run_id,
                    ),
                )
                return record

        return await self._write(update)

    # -- webhook deliveries -----------------------------------------------------------

    async def save_webhook_delivery(self, delivery: WebhookDelivery) -> None:
        """Keep `delivery` as it is now (a new one, or one with its body or attempts)."""
        data = delivery.model_dump_json()

        def save(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO webhook_deliveries (id, created_at, data) VALUES (?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET data = excluded.data",
                (delivery.id, delivery.created_at, data),
            )

        await self._write(save)

    async def drop_webhook_delivery(self, delivery_id: str) -> None:
        def drop(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM webhook_deliveries WHERE id = ?", (delivery_id,))

        await self._write(drop)

    async def webhook_deliveries(self) -> list[WebhookDelivery]:
        """Every delivery kept, oldest first."""

        def load(conn: sqlite3.Connection) -> list[WebhookDelivery]:
            rows = conn.execute(
                "SELECT data FROM webhook_deliveries ORDER BY created_at, id"
            ).fetchall()
            return [WebhookDelivery.model_validate_json(row["data"]) for row in rows]

        return await self._read(load)

    async def get_run(self, run_id: str) -> RunRecord | None:
        def get(conn: sqlite3.Connection) -> RunRecord | None:
            row = conn.execute("SELECT data FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            return None if row is None else RunRecord.model_validate_json(row["data"])

        return await self._read(get)

    async def list_runs(
        self,
        agent: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        *,
        thread_id: str | None = None,
    ) -> tuple[list[RunRecord], str | None]:
        """Runs newest first, `limit` at a time. Returns the page and the cursor of the next
        page (None on the last). ValueError for a bad limit or cursor."""
        limit = _check_limit(limit)
        before = _decode_cursor(cursor, "runs", (int,))[0] if cursor else None
        clauses: list[str] = []
        params: list[str | int] = []
        for column, value in (("agent", agent), ("status", status), ("thread_id", thread_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if before is not None:
            clauses.append("seq < ?")
            params.append(before)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        query = f"SELECT seq, data FROM runs {where} ORDER BY seq DESC LIMIT ?"

        def page(conn: sqlite3.Connection) -> tuple[list[RunRecord], str | None]:
            rows = conn.execute(query, (*params, limit + 1)).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            records = [RunRecord.model_validate_json(row["data"]) for row in rows]
            return records, (_encode_cursor("runs", rows[-1]["seq"]) if more else None)

        return await self._read(page)

    async def unfinished_runs(self) -> list[RunRecord]:
        """Runs left queued, running or paused (by a daemon that died), oldest first."""
        marks = ", ".join("?" for _ in UNFINISHED_STATUSES)

        def unfinished(conn: sqlite3.Connection) -> list[RunRecord]:
            rows = conn.execute(
                f"SELECT data FROM runs WHERE status IN ({marks}) ORDER BY seq",
                UNFINISHED_STATUSES,
            ).fetchall()
            return [RunRecord.model_validate_json(row["data"]) for row in rows]

        return await self._read(unfinished)

    async def runs_missing_complete(self) -> list[RunRecord]:
        """Finished runs whose last event is not `complete`: a daemon died while it was
        finishing them (after the record's status, before the event), oldest first. One
        primary-key probe per finished run."""
        marks = ", ".join("?" for _ in FINISHED_STATUSES)

        def missing(conn: sqlite3.Connection) -> list[RunRecord]:
            rows = conn.execute(
                f"SELECT data FROM runs r WHERE status IN ({marks}) AND COALESCE(("
                "SELECT type FROM events e WHERE e.run_id = r.run_id ORDER BY id DESC LIMIT 1"
                "), '') != 'complete' ORDER BY seq",
                FINISHED_STATUSES,
            ).fetchall()
            return [RunRecord.model_validate_json(row["data"]) for row in rows]

        return await self._read(missing)

    async def append_run_messages(
        self, run_id: str, messages: list[Message], *, thread_id: str | None, length: int
    ) -> bool:
        """Append `messages` to a run's stored conversation, which is `length` messages long
        with them, in one transaction; only the new messages are written.

        With `thread_id` they are appended to that thread, and the run's conversation is the
        thread's first `length` messages (stored once for the thread and all its runs);
        without, to the run's own log. False when the run's log does not hold the `length -
        len(messages)` messages before them (the thread got messages from elsewhere
        meanwhile, or nothing was stored yet of a conversation that did not start empty): the
        thread still gets the messages, the run's conversation is left as it was, and the
        caller stores it whole with `set_run_messages`. KeyError if the thread does not exist.
        """
        encoded = [(m.role, m.model_dump_json()) for m in messages]

        def append(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                if thread_id is not None:
                    end = _append_to_thread(conn, thread_id, encoded)
                current = conn.execute(
                    "SELECT scope, owner, length FROM run_conversations WHERE run_id = ?",
                    (run_id,),
                ).fetchone()
                if thread_id is not None and (
                    current is None or (current["scope"], current["owner"]) == ("thread", thread_id)
                ):
                    log: tuple[str, str] = ("thread", thread_id)
                    if end != length:
                        return False
                else:
                    # The run's own log (a run without a thread, or one stored whole before).
                    log = ("run", run_id)
                    if current is not None and (current["scope"], current["owner"]) != log:
                        return False
                    start = 0 if current is None else current["length"]
                    if start + len(encoded) != length:
                        return False
                    conn.executemany(
                        "INSERT INTO messages (scope, owner, seq, role, data) "
                        "VALUES ('run', ?, ?, ?, ?)",
                        [(run_id, start + i, role, data) for i, (role, data) in enumerate(encoded)],
                    )
                conn.execute(
                    "INSERT OR REPLACE INTO run_conversations (run_id, scope, owner, length) "
                    "VALUES (?, ?, ?, ?)",
                    (run_id, *log, length),
                )
                return True

        return await self._write(append)

    async def set_run_messages(self, run_id: str, messages: list[Message]) -> None:
        """Store the whole conversation of a run as its own copy (replacing what it had)."""
        encoded = [(m.role, m.model_dump_json()) for m in messages]

        def replace(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute("DELETE FROM messages WHERE scope = 'run' AND owner = ?", (run_id,))
                conn.executemany(
                    "INSERT INTO messages (scope, owner, seq, role, data) "
                    "VALUES ('run', ?, ?, ?, ?)",
                    [(run_id, i, role, data) for i, (role, data) in enumerate(encoded)],
                )
                conn.execute(
                    "INSERT OR REPLACE INTO run_conversations (run_id, scope, owner, length) "
                    "VALUES (?, 'run', ?, ?)",
                    (run_id, run_id, len(encoded)),
                )

        await self._write(replace)

    async def run_messages(self, run_id: str) -> list[Message]:
        """A run's stored conversation (empty if nothing was stored for it)."""

        def read(conn: sqlite3.Connection) -> list[Message]:
            from runtime.messages import Message  # loaded with the run machinery

            # One statement: one snapshot of the pointer and the log it points into.
            with collector_paused():
                rows = conn.execute(
                    "SELECT m.data FROM run_conversations AS c JOIN messages AS m "
                    "ON m.scope = c.scope AND m.owner = c.owner AND m.seq < c.length "
                    "WHERE c.run_id = ? ORDER BY m.seq",
                    (run_id,),
                )
                return [Message.model_validate_json(row["data"]) for row in rows]

        return await self._read(read)

    # -- events ------------------------------------------------------------------------

    async def append_event(self, event: Event) -> None:
        """Store one event. ValueError if the run already has an event with its id.

        Group commit: the events of every run that arrive while a write is in flight go
        together in the next one (one transaction, one hop to the writer thread), so many
        concurrent runs cost a write per batch rather than per event. Each caller still
        returns only once its own event is stored."""
        row = (event.run_id, event.id, event.type, event.ts, event.thread_id)
        batch = self._event_batch
        if batch is None:
            batch = self._event_batch = _EventBatch()
        index = len(batch.rows)
        batch.rows.append((*row, _dumps(event.payload)))
        async with self._event_writes:
            if not batch.written.is_set():
                if self._event_batch is batch:
                    self._event_batch = None  # later events start the next batch
                try:
                    # Shielded: the writer thread cannot be stopped midway anyway, and the
                    # batch's other callers need its outcome.
                    with anyio.CancelScope(shield=True):
                        batch.duplicates = await self._write(
                            functools.partial(_insert_events, batch.rows)
                        )
                except Exception as exc:
                    batch.error = exc
                finally:
                    batch.written.set()
        if batch.error is not None:
            raise batch.error
        if index in batch.duplicates:
            raise ValueError(f"duplicate event id {event.id} for {event.run_id}")

    async def append_events(self, events: Iterable[Event]) -> None:
        """Store several events in one transaction (all or none)."""
        rows = [(e.run_id, e.id, e.type, e.ts, e.thread_id, _dumps(e.payload)) for e in events]

        def append(conn: sqlite3.Connection) -> None:
            try:
                with _transaction(conn):
                    conn.executemany(_INSERT_EVENT, rows)
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"duplicate event id: {exc}") from exc

        await self._write(append)

    async def events_after(
        self, run_id: str, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        """A run's stored events with id > `after`, in id order (at most `limit`).

        A page read (`limit` given) that asks for what a read in flight is reading already
        waits for that one's answer instead of reading and decoding the rows again: clients
        catching up on a long run together ask for the same pages at once (the SSE streams
        read where the frames other streams wrote end). Each caller gets its own list. The
        answer is the rows as the read in flight found them, which is what page reads are
        for: pages of events stored already (an event log's store gap, a finished run's
        replay, a run's last event). A read without a limit is never shared: it reads a live
        run up to what is stored when it is made."""
        if limit is None:
            return await self._read_events(run_id, after, None)
        return await self._event_pages.read(
            (run_id, after, limit), lambda: self._read_events(run_id, after, limit)
        )

    @property
    def event_page_reads(self) -> int:
        """Page reads of runs' events made (not shared): for benchmarks and tests."""
        return self._event_pages.reads

    @property
    def thread_event_page_reads(self) -> int:
        """Page reads of threads' events made (not shared): for benchmarks and tests."""
        return self._thread_event_pages.reads

    async def _read_events(self, run_id: str, after: int, limit: int | None) -> list[Event]:
        def read(conn: sqlite3.Connection) -> list[Event]:
            # The event model loads with the run machinery, not before the daemon listens.
            from runtime.events.model import Event

            query = "SELECT * FROM events WHERE run_id = ? AND id > ? ORDER BY id"
            params: tuple[Any, ...] = (run_id, after)
            if limit is not None:
                query += " LIMIT ?"
                params = (*params, max(0, limit))
            return [
                Event(
                    id=row["id"],
                    run_id=row["run_id"],
                    thread_id=row["thread_id"],
                    type=row["type"],
                    ts=row["ts"],
                    payload=json.loads(row["payload"]),
                )
                for row in conn.execute(query, params)
            ]

        return await self._read(read)

    async def usage_events(self, run_id: str) -> list[dict[str, Any]]:
        """The payloads of a run's stored `usage` events (one per model request), in order:
        what a run that died before writing its totals had spent."""

        def usage(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT payload FROM events WHERE run_id = ? AND type = 'usage' ORDER BY id",
                (run_id,),
            ).fetchall()
            return [json.loads(row["payload"]) for row in rows]

        return await self._read(usage)

    async def last_event_id(self, run_id: str) -> int:
        def last(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT MAX(id) AS last FROM events WHERE run_id = ?", (run_id,)
            ).fetchone()
            return int(row["last"] or 0)

        return await self._read(last)


# -- row helpers (run in the worker thread) ------------------------------------------------


def _version_row(conn: sqlite3.Connection, slug: str, version: int) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM agent_versions WHERE slug = ? AND version = ?", (slug, version)
    ).fetchone()
    if row is None:
        raise RuntimeError(f"agent {slug!r} points at missing version {version}")
    return row


def _next_version(conn: sqlite3.Connection, slug: str) -> int:
    row = conn.execute(
        "SELECT MAX(version) AS last FROM agent_versions WHERE slug = ?", (slug,)
    ).fetchone()
    return int(row["last"] or 0) + 1


def _agent_record(agent_row: sqlite3.Row, version_row: sqlite3.Row) -> AgentRecord:
    from runtime.agents import STORED, AgentRecord, AgentSpec

    keys = version_row.keys()
    updated = version_row["version_created_at"] if "version_created_at" in keys else None
    return AgentRecord(
        id=agent_row["id"],
        version=version_row["version"],
        created_at=agent_row["created_at"],
        updated_at=updated or version_row["created_at"],
        spec=AgentSpec.model_validate_json(version_row["spec"], context=STORED),
    )


def _load_agent(
    conn: sqlite3.Connection, slug_or_id: str, version: int | None
) -> AgentRecord | None:
    row = conn.execute(
        "SELECT * FROM agents WHERE (slug = ? OR id = ?) AND deleted_at IS NULL "
        "ORDER BY slug = ? DESC LIMIT 1",
        (slug_or_id, slug_or_id, slug_or_id),
    ).fetchone()
    if row is None:
        return None
    wanted = row["version"] if version is None else version
    version_row = conn.execute(
        "SELECT * FROM agent_versions WHERE slug = ? AND version = ?", (row["slug"], wanted)
    ).fetchone()
    return None if version_row is None else _agent_record(row, version_row)


def _thread_event_row(event: PersistedThreadEvent) -> tuple[Any, ...]:
    return (
        event.thread_id,
        event.sequence,
        event.rollout_id,
        event.run_id,
        event.type,
        _dumps(event.payload),
        event.created_at,
    )


def _thread_events(rows: Iterable[sqlite3.Row]) -> list[PersistedThreadEvent]:
    from runtime.thread_events import PersistedThreadEvent  # loaded with the run machinery

    return [
        PersistedThreadEvent(
            sequence=row["sequence"],
            rollout_id=row["rollout_id"],
            thread_id=row["thread_id"],
            run_id=row["run_id"],
            type=row["type"],
            payload=json.loads(row["payload"]),
            created_at=row["created_at"],
        )
        for row in rows
    ]


def _thread_record(row: sqlite3.Row) -> ThreadRecord:
    return ThreadRecord(
        id=row["id"],
        agent=row["agent"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        metadata=json.loads(row["metadata"]),
        message_count=row["message_count"],
    )


def _append_to_thread(
    conn: sqlite3.Connection, thread_id: str, encoded: Sequence[tuple[str, str]]
) -> int:
    """Append encoded (role, JSON) messages to a thread; its message count after them.
    KeyError if the thread does not exist. Call inside a transaction."""
    row = conn.execute("SELECT message_count FROM threads WHERE id = ?", (thread_id,)).fetchone()
    if row is None:
        raise KeyError(f"thread {thread_id!r} does not exist")
    start: int = row["message_count"]
    if not encoded:
        return start
    conn.executemany(
        "INSERT INTO messages (scope, owner, seq, role, data) VALUES ('thread', ?, ?, ?, ?)",
        [(thread_id, start + i, role, data) for i, (role, data) in enumerate(encoded)],
    )
    conn.execute(
        "UPDATE threads SET message_count = ?, updated_at = ? WHERE id = ?",
        (start + len(encoded), utc_now(), thread_id),
    )
    return start + len(encoded)


def _load_messages(conn: sqlite3.Connection, scope: str, owner: str) -> list[Message]:
    from runtime.messages import Message  # loaded with the run machinery

    with collector_paused():
        rows = conn.execute(
            "SELECT data FROM messages WHERE scope = ? AND owner = ? ORDER BY seq", (scope, owner)
        )
        return [Message.model_validate_json(row["data"]) for row in rows]
