"""The embedded world state: an append-only event log and a materialised entity table in SQLite.

Every write appends its events and updates the affected entities in ONE transaction
(`BEGIN IMMEDIATE`), so the entity table is always exactly the replay of the log, even after a
`kill -9` mid-batch: either the whole transaction is in the WAL or none of it is. Several
processes may share the file: WAL lets readers run beside the writer, and writers queue on the
database lock (`busy_timeout`).

Threading: the connection lives on one dedicated worker thread and every SQLite call runs there
(`run_in_executor`), never on the event loop. One thread rather than `asyncio.to_thread` because
a sqlite3 connection belongs to the thread that made it, and one writer per process keeps
transactions from queueing on the file lock against each other.

Subscriptions: writes made through this object reach its subscribers at once; writes by other
processes (or other store objects on the same file) are picked up by polling the log's sequence
number every `poll_interval` seconds (0.1 s by default), which costs one `PRAGMA data_version`
per tick while nothing changes.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import json
import logging
import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from .._sqlite import open_wal, write_transaction
from .base import DeleteFilter, EventInput, Subscription, WorldState, normalise_patterns
from .errors import (
    BatchTooLargeError,
    InvalidEventError,
    StateError,
    StateUnavailableError,
)
from .models import (
    MAX_DELETE_IDS,
    BatchDeleteResult,
    DeleteResult,
    Entity,
    FluxEvent,
    PreparedEvent,
    PublishResult,
    StateUpdate,
    make_tombstone,
    matches_pattern,
    now_ms,
    prepare_batch,
    prepare_event,
)

__all__ = ["SCHEMA_VERSION", "EmbeddedWorldState", "state_db_path"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""Kept in SQLite's `user_version`; a newer file is refused rather than misread."""

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    entity_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_entity ON events(entity_id, seq);
CREATE TABLE IF NOT EXISTS entities (
    id TEXT PRIMARY KEY,
    properties TEXT NOT NULL,
    last_updated INTEGER NOT NULL,
    last_seq INTEGER NOT NULL
) WITHOUT ROWID;
"""


def state_db_path(workspace: str | Path) -> Path:
    """Where a workspace keeps its world state: `<workspace>/.openclaw-mini/state.db`."""
    return Path(workspace) / ".openclaw-mini" / "state.db"


@dataclass
class _Current:
    """An entity as a transaction sees it; `properties is None` means absent or deleted."""

    properties: dict[str, Any] | None
    last_updated: int
    last_seq: int
    existed: bool
    dirty: bool = False


@dataclass
class _Applied:
    """One event that made it into the log (for subscribers, after commit)."""

    event: PreparedEvent
    received_at: int


_WriteOutcome = tuple[builtins.list[PublishResult], builtins.list[_Applied]]


@dataclass
class _WriteRequest:
    """Events waiting for the writer thread, and where their answer goes."""

    events: Sequence[EventInput]
    single: bool
    future: Future[tuple[builtins.list[PublishResult], builtins.list[_Applied]]] = field(
        default_factory=Future
    )
    results: builtins.list[PublishResult | None] = field(default_factory=list)
    prepared: builtins.list[PreparedEvent] = field(default_factory=list)

    def outcome(self) -> builtins.list[PublishResult]:
        events = iter(self.prepared)
        final = []
        for result in self.results:
            if result is None:
                event = next(events)
                # built from already-validated values: skip validation on this hot path
                result = PublishResult.model_construct(
                    event_id=event.event_id, stream=event.stream, error=None
                )
            final.append(result)
        return final


def _moment(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _update_for(event: PreparedEvent, received_at: int) -> StateUpdate | None:
    """What subscribers see for a logged event (independent of prior state, so pollers agree)."""
    stamp = _moment(received_at)
    if event.is_tombstone:
        return StateUpdate(
            type="entity_deleted", entity_id=event.entity_id, timestamp=stamp, event_id=event.event_id
        )
    if not event.properties:
        return None
    return StateUpdate(
        type="state_update",
        entity_id=event.entity_id,
        properties=dict(event.properties),
        timestamp=stamp,
        event_id=event.event_id,
    )


def _apply(current: _Current, event: PreparedEvent, received_at: int, seq: int) -> None:
    """The state rule, shared by writes and replay: tombstone clears, else shallow merge."""
    if event.is_tombstone:
        current.properties = None
    elif event.properties:
        merged = dict(current.properties or {})
        merged.update(event.properties)
        current.properties = merged
    else:
        return  # an event with no properties changes nothing (as in Flux)
    current.last_updated = received_at
    current.last_seq = seq
    current.dirty = True


def _chunks(items: Sequence[str], size: int = 500) -> builtins.list[Sequence[str]]:
    """Split `IN (...)` parameters into chunks well below SQLite's variable limit."""
    return [items[index : index + size] for index in range(0, len(items), size)]


def _prefix_bounds(prefix: str) -> tuple[str, str | None]:
    """`[prefix, upper)` covers every id starting with `prefix` (UTF-8 sorts by code point)."""
    last = ord(prefix[-1])
    if last >= 0x10FFFF:
        return prefix, None
    return prefix, prefix[:-1] + chr(last + 1)


class _LocalSubscription(Subscription):
    """Updates pushed by the store; a bounded buffer so a stalled reader cannot eat memory."""

    def __init__(self, store: EmbeddedWorldState, patterns: builtins.list[str], snapshot: bool) -> None:
        self._store = store
        self.patterns = patterns
        self._want_snapshot = snapshot
        self._pending: deque[StateUpdate] = deque()
        self._buffer: deque[StateUpdate] = deque()
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._closed = False
        self._overflowed = False
        try:
            self._bind(asyncio.get_running_loop())
        except RuntimeError:
            pass

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is None:
            self._loop = loop
            self._wakeup = asyncio.Event()

    def wants(self, entity_id: str) -> bool:
        return any(matches_pattern(pattern, entity_id) for pattern in self.patterns)

    def offer(self, updates: builtins.list[StateUpdate]) -> None:
        """Queue updates from any thread; the reader's loop is woken safely."""
        if self._closed or not updates:
            return
        loop = self._loop
        if loop is None:
            self._push(updates)
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._push(updates)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._push, updates)

    def _push(self, updates: builtins.list[StateUpdate]) -> None:
        if self._closed or self._overflowed:
            return
        if len(self._buffer) + len(updates) > self._store.max_queue:
            self._overflowed = True
            self._buffer.clear()
            logger.warning(
                "world-state subscriber fell behind by %d updates; closing it", self._store.max_queue
            )
        else:
            self._buffer.extend(updates)
        if self._wakeup is not None:
            self._wakeup.set()

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._bind(asyncio.get_running_loop())
        if self._closed:
            return
        await self._store._watch(self)
        if self._want_snapshot:
            entities = await self._store.matching(self.patterns)
            self._pending.extend(StateUpdate.from_entity(entity) for entity in entities)

    async def __anext__(self) -> StateUpdate:
        await self.start()
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._overflowed:
                self._overflowed = False
                self._closed = True
                self._store._unwatch(self)
                raise StateError(
                    f"subscriber fell behind by more than {self._store.max_queue:,} updates and was closed; "
                    "subscribe again (with snapshot=True) to catch up"
                )
            if self._buffer:
                return self._buffer.popleft()
            if self._closed:
                raise StopAsyncIteration
            assert self._wakeup is not None
            self._wakeup.clear()
            await self._wakeup.wait()

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        self._pending.clear()
        self._store._unwatch(self)
        if self._wakeup is not None and self._loop is not None and not self._loop.is_closed():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is self._loop:
                self._wakeup.set()
            else:
                self._loop.call_soon_threadsafe(self._wakeup.set)


class EmbeddedWorldState(WorldState):
    """World state in a SQLite file, with nothing else running. The default store.

    ```python
    async with EmbeddedWorldState.for_workspace(".") as state:
        await state.publish(make_event("lab/sensor-1", {"temp": 21.5}))
        print(await state.get("lab/sensor-1"))
    ```
    """

    def __init__(
        self,
        path: str | Path,
        *,
        poll_interval: float = 0.1,
        busy_timeout: float = 30.0,
        max_queue: int = 10_000,
        source: str = "openclaw-mini",
    ) -> None:
        self.path = Path(path)
        self.poll_interval = poll_interval
        self.busy_timeout = busy_timeout
        self.max_queue = max_queue
        self.source = source
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="openclaw-state")
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._subscriptions: set[_LocalSubscription] = set()
        self._write_queue: deque[_WriteRequest] = deque()
        self._poller: asyncio.Task[None] | None = None
        self._poller_lock = asyncio.Lock()
        self._poller_stopping = False
        # Touched only on the worker thread: which log rows this object wrote (so the poller
        # does not deliver them twice) and how far the poller has read.
        self._tracking = False
        self._own_seqs: set[int] = set()
        self._cursor = 0
        self._data_version = -1

    @classmethod
    def for_workspace(cls, workspace: str | Path, **options: Any) -> EmbeddedWorldState:
        """The store of a workspace, at `<workspace>/.openclaw-mini/state.db`."""
        return cls(state_db_path(workspace), **options)

    # -- plumbing -------------------------------------------------------------------------

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise StateUnavailableError(f"the world state at {self.path} is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(function, *args))
        except sqlite3.Error as exc:
            raise self._sqlite_failure(exc) from exc

    def _sqlite_failure(self, exc: sqlite3.Error) -> StateError:
        """A SQLite error as a world-state error that names the file (e.g. locked too long)."""
        return StateError(f"the world state at {self.path} failed: {exc}")

    def _db(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = open_wal(self.path, busy_timeout=self.busy_timeout, prepare=self._prepare)
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{self.path} is not a usable world state database: {exc}") from None
        return self._conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Check the schema version of a new connection; create the schema in a new file."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{self.path} holds world state schema v{version}; this openclaw-mini reads up to "
                f"v{SCHEMA_VERSION} (upgrade openclaw-mini)"
            )
        if version < SCHEMA_VERSION:
            with write_transaction(conn):
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return result

    # -- writes ---------------------------------------------------------------------------

    def _append(self, conn: sqlite3.Connection, prepared: Sequence[PreparedEvent]) -> builtins.list[_Applied]:
        """Append events and apply them, inside the caller's transaction; returns the new ones.

        An `eventId` already in the log is not applied again, so a retried publish is harmless.
        Rows go in with `executemany` and explicit sequence numbers (max + 1 ...), which is safe
        because the caller holds the write lock (`BEGIN IMMEDIATE`).
        """
        if not prepared:
            return []
        received_at = now_ms()
        if len(prepared) == 1:  # the common single publish: let the UNIQUE index spot a repeat
            event = prepared[0]
            cursor = conn.execute(
                "INSERT OR IGNORE INTO events (event_id, entity_id, received_at, body) VALUES (?, ?, ?, ?)",
                (event.event_id, event.entity_id, received_at, event.body),
            )
            if cursor.rowcount != 1 or cursor.lastrowid is None:
                return []
            fresh_events = [event]
            first = cursor.lastrowid
        else:
            fresh_events, first = self._insert_many(conn, prepared, received_at)
            if not fresh_events:
                return []
        touched = self._load_many(conn, {event.entity_id for event in fresh_events})
        for offset, event in enumerate(fresh_events):
            _apply(touched[event.entity_id], event, received_at, first + offset)
        upserts = []
        deletes = []
        for entity_id, current in touched.items():
            if not current.dirty:
                continue
            if current.properties is None:
                if current.existed:
                    deletes.append((entity_id,))
            else:
                properties = json.dumps(current.properties, separators=(",", ":"), ensure_ascii=False)
                upserts.append((entity_id, properties, current.last_updated, current.last_seq))
        if deletes:
            conn.executemany("DELETE FROM entities WHERE id = ?", deletes)
        if upserts:
            conn.executemany(
                "INSERT INTO entities (id, properties, last_updated, last_seq) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, "
                "last_updated = excluded.last_updated, last_seq = excluded.last_seq",
                upserts,
            )
        if self._tracking:
            self._own_seqs.update(range(first, first + len(fresh_events)))
        return [_Applied(event, received_at) for event in fresh_events]

    @staticmethod
    def _insert_many(
        conn: sqlite3.Connection, prepared: Sequence[PreparedEvent], received_at: int
    ) -> tuple[builtins.list[PreparedEvent], int]:
        """Insert the events not yet in the log (one `executemany`); returns them and the first seq."""
        known: set[str] = set()
        for chunk in _chunks([event.event_id for event in prepared]):
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(f"SELECT event_id FROM events WHERE event_id IN ({marks})", chunk)
            known.update(row[0] for row in rows)
        fresh_events: builtins.list[PreparedEvent] = []
        for event in prepared:
            if event.event_id not in known:
                known.add(event.event_id)
                fresh_events.append(event)
        first = int(conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]) + 1
        if fresh_events:
            conn.executemany(
                "INSERT INTO events (seq, event_id, entity_id, received_at, body) VALUES (?, ?, ?, ?, ?)",
                [
                    (first + offset, event.event_id, event.entity_id, received_at, event.body)
                    for offset, event in enumerate(fresh_events)
                ],
            )
        return fresh_events, first

    @staticmethod
    def _load_many(conn: sqlite3.Connection, entity_ids: set[str]) -> dict[str, _Current]:
        found: dict[str, _Current] = {}
        for chunk in _chunks(sorted(entity_ids)):
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT id, properties, last_updated, last_seq FROM entities WHERE id IN ({marks})", chunk
            )
            for entity_id, properties, last_updated, last_seq in rows:
                found[entity_id] = _Current(json.loads(properties), last_updated, last_seq, existed=True)
        for entity_id in entity_ids:
            if entity_id not in found:
                found[entity_id] = _Current(None, 0, 0, existed=False)
        return found

    def _drain_writes(self) -> None:
        """Commit every queued write request in ONE transaction (group commit).

        Concurrent publishers (many agents, many HTTP requests) then share one commit instead of
        queueing for one each. Each request is validated alone, so a bad request fails alone;
        only a SQLite failure fails the whole group, and then nothing of it is written.
        """
        group: builtins.list[_WriteRequest] = []
        while self._write_queue:
            request = self._write_queue.popleft()
            if request.future.set_running_or_notify_cancel():
                group.append(request)
        ready: builtins.list[_WriteRequest] = []
        for request in group:
            try:
                if request.single:
                    request.prepared = [prepare_event(request.events[0])]
                    request.results = [None]
                else:
                    request.results, request.prepared = prepare_batch(request.events)
            except Exception as exc:
                request.future.set_exception(exc)
                continue
            ready.append(request)
        if not ready:
            return
        try:
            applied = self._transaction(
                lambda conn: [self._append(conn, request.prepared) for request in ready]
            )
        except BaseException as exc:
            if isinstance(exc, sqlite3.Error):
                failure: Exception = self._sqlite_failure(exc)
            elif isinstance(exc, Exception):
                failure = exc
            else:
                failure = StateError(f"write interrupted: {exc!r}")
            for request in ready:
                request.future.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
            return
        for request, fresh in zip(ready, applied, strict=True):
            request.future.set_result((request.outcome(), fresh))

    async def _write(
        self, events: Sequence[EventInput], *, single: bool
    ) -> tuple[builtins.list[PublishResult], builtins.list[_Applied]]:
        if self._closed:
            raise StateUnavailableError(f"the world state at {self.path} is closed")
        request = _WriteRequest(events=events, single=single)
        self._write_queue.append(request)
        self._executor.submit(self._drain_writes)
        return await asyncio.wrap_future(request.future)

    async def publish(self, event: EventInput) -> PublishResult:
        results, applied = await self._write([event], single=True)
        self._deliver(applied)
        return results[0]

    async def publish_batch(self, events: Sequence[EventInput]) -> builtins.list[PublishResult]:
        if not events:
            return []
        results, applied = await self._write(list(events), single=False)
        self._deliver(applied)
        return results

    async def delete(self, entity_id: str) -> DeleteResult:
        tombstone = make_tombstone(entity_id, source=self.source)
        result = await self.publish(tombstone)
        assert result.event_id is not None
        return DeleteResult(entity_id=entity_id, event_id=result.event_id)

    def _delete_where(
        self, namespace: str | None, prefix: str | None, entity_ids: Sequence[str] | None
    ) -> tuple[BatchDeleteResult, builtins.list[_Applied]]:
        errors: builtins.list[str] = []

        def work(conn: sqlite3.Connection) -> tuple[int, builtins.list[_Applied]]:
            if entity_ids is not None:
                targets = list(dict.fromkeys(entity_ids))
            elif namespace is not None:
                rows = self._select_prefix(conn, "SELECT id FROM entities", f"{namespace}/")
                targets = [row[0] for row in rows]
            else:
                assert prefix is not None
                targets = [row[0] for row in self._select_prefix(conn, "SELECT id FROM entities", prefix)]
            if len(targets) > MAX_DELETE_IDS:
                raise BatchTooLargeError(
                    f"this delete matches {len(targets):,} entities; one batch delete may remove at most "
                    f"{MAX_DELETE_IDS:,} (narrow the filter)",
                    status=400,
                )
            prepared = []
            for entity_id in targets:
                try:
                    prepared.append(prepare_event(make_tombstone(entity_id, source=self.source)))
                except InvalidEventError as exc:
                    errors.append(f"{entity_id!r}: {exc}")
            return len(prepared), self._append(conn, prepared)

        deleted, applied = self._transaction(work)
        return BatchDeleteResult(deleted=deleted, failed=len(errors), errors=errors), applied

    async def _delete_matching(self, key: DeleteFilter, value: str | builtins.list[str]) -> BatchDeleteResult:
        filters: dict[str, Any] = {"namespace": None, "prefix": None, "entity_ids": None, key: value}
        result, applied = await self._run(
            self._delete_where, filters["namespace"], filters["prefix"], filters["entity_ids"]
        )
        self._deliver(applied)
        return result

    # -- reads ----------------------------------------------------------------------------

    @staticmethod
    def _entity(row: tuple[str, str, int]) -> Entity:
        return Entity(id=row[0], properties=json.loads(row[1]), last_updated=_moment(row[2]))

    @staticmethod
    def _select_prefix(conn: sqlite3.Connection, select: str, prefix: str) -> sqlite3.Cursor:
        low, high = _prefix_bounds(prefix)
        if high is None:
            return conn.execute(
                f"{select} WHERE id >= ? AND substr(id, 1, ?) = ? ORDER BY id", (low, len(prefix), prefix)
            )
        return conn.execute(f"{select} WHERE id >= ? AND id < ? ORDER BY id", (low, high))

    def _get(self, entity_id: str) -> Entity | None:
        row = (
            self._db()
            .execute("SELECT id, properties, last_updated FROM entities WHERE id = ?", (entity_id,))
            .fetchone()
        )
        return self._entity(row) if row else None

    def _list(self, prefix: str | None, namespace: str | None) -> builtins.list[Entity]:
        conn = self._db()
        select = "SELECT id, properties, last_updated FROM entities"
        if namespace is not None:  # a namespace is exactly the ids starting with "<namespace>/"
            cursor = self._select_prefix(conn, select, f"{namespace}/")
            rows = [row for row in cursor if prefix is None or row[0].startswith(prefix)]
        elif prefix:
            rows = list(self._select_prefix(conn, select, prefix))
        else:
            rows = list(conn.execute(f"{select} ORDER BY id"))
        return [self._entity(row) for row in rows]

    def _history(self, entity_id: str, since_ms: int, limit: int) -> builtins.list[FluxEvent]:
        rows = self._db().execute(
            "SELECT body FROM events WHERE entity_id = ? AND received_at >= ? ORDER BY seq DESC LIMIT ?",
            (entity_id, since_ms, limit),
        )
        return [FluxEvent.model_validate_json(row[0]) for row in rows]

    async def get(self, entity_id: str) -> Entity | None:
        return await self._run(self._get, entity_id)

    async def list(self, *, prefix: str | None = None, namespace: str | None = None) -> builtins.list[Entity]:
        return await self._run(self._list, prefix, namespace)

    async def history(
        self, entity_id: str, *, since: datetime | int | None = None, limit: int = 100
    ) -> builtins.list[FluxEvent]:
        if limit < 1:
            raise InvalidEventError(f"history limit must be at least 1, got {limit}")
        if since is None:
            since_ms = 0
        elif isinstance(since, datetime):
            moment = since if since.tzinfo else since.replace(tzinfo=UTC)
            since_ms = int(moment.timestamp() * 1000)
        else:
            since_ms = int(since)
        return await self._run(self._history, entity_id, since_ms, limit)

    # -- replay ---------------------------------------------------------------------------

    def _replay_rows(self, conn: sqlite3.Connection) -> dict[str, _Current]:
        state: dict[str, _Current] = {}
        for seq, received_at, body in conn.execute("SELECT seq, received_at, body FROM events ORDER BY seq"):
            event = PreparedEvent.from_body(body)
            current = state.setdefault(event.entity_id, _Current(None, 0, 0, existed=False))
            _apply(current, event, received_at, seq)
        return {key: value for key, value in state.items() if value.properties is not None}

    def _replay(self) -> builtins.list[Entity]:
        conn = self._db()
        conn.execute("BEGIN")
        try:
            state = self._replay_rows(conn)
        finally:
            conn.execute("COMMIT")
        return [
            Entity(id=key, properties=value.properties or {}, last_updated=_moment(value.last_updated))
            for key, value in sorted(state.items())
        ]

    def _rebuild(self) -> int:
        def work(conn: sqlite3.Connection) -> int:
            state = self._replay_rows(conn)
            conn.execute("DELETE FROM entities")
            conn.executemany(
                "INSERT INTO entities (id, properties, last_updated, last_seq) VALUES (?, ?, ?, ?)",
                [
                    (
                        key,
                        json.dumps(value.properties, separators=(",", ":"), ensure_ascii=False),
                        value.last_updated,
                        value.last_seq,
                    )
                    for key, value in state.items()
                ],
            )
            return len(state)

        return self._transaction(work)

    async def replay(self) -> builtins.list[Entity]:
        """The state the log implies, computed from scratch (the table is not touched)."""
        return await self._run(self._replay)

    async def rebuild(self) -> int:
        """Recompute the entity table from the log in one transaction; returns the entity count."""
        return await self._run(self._rebuild)

    def _entity_count(self) -> int:
        return int(self._db().execute("SELECT count(*) FROM entities").fetchone()[0])

    async def entity_count(self) -> int:
        """How many entities exist now (the server's `metrics_update` reports it)."""
        return await self._run(self._entity_count)

    def _event_count(self) -> int:
        return int(self._db().execute("SELECT count(*) FROM events").fetchone()[0])

    async def event_count(self) -> int:
        """How many events the log holds (tombstones included)."""
        return await self._run(self._event_count)

    # -- subscriptions --------------------------------------------------------------------

    def subscribe(self, entity_ids: str | Sequence[str] = "*", *, snapshot: bool = False) -> Subscription:
        subscription = _LocalSubscription(self, normalise_patterns(entity_ids), snapshot)
        if self._closed:
            subscription.close()
        return subscription

    async def _watch(self, subscription: _LocalSubscription) -> None:
        """Register a subscriber; the log cursor is fixed before this returns, so nothing
        another process commits afterwards can be missed."""
        self._subscriptions.add(subscription)
        async with self._poller_lock:
            poller = self._poller
            if poller is not None and not poller.done() and self._poller_stopping:
                await poller  # it decided to stop before this subscriber came: let it finish
            if self._poller is None or self._poller.done():
                await self._run(self._poll_start)
                self._poller_stopping = False
                self._poller = asyncio.get_running_loop().create_task(self._poll_forever())

    def _unwatch(self, subscription: _LocalSubscription) -> None:
        self._subscriptions.discard(subscription)

    def _deliver(self, applied: Sequence[_Applied]) -> None:
        if not self._subscriptions or not applied:
            return
        updates = [update for item in applied if (update := _update_for(item.event, item.received_at))]
        self._fan_out(updates)

    def _fan_out(self, updates: Sequence[StateUpdate]) -> None:
        for subscription in list(self._subscriptions):
            wanted = [update for update in updates if subscription.wants(update.entity_id)]
            subscription.offer(wanted)

    def _poll_start(self) -> None:
        conn = self._db()
        self._cursor = int(conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])
        self._data_version = int(conn.execute("PRAGMA data_version").fetchone()[0])
        self._own_seqs.clear()
        self._tracking = True

    def _poll_stop(self) -> None:
        self._tracking = False
        self._own_seqs.clear()

    def _poll_once(self) -> builtins.list[StateUpdate]:
        """Log rows other connections committed since the last poll, as updates."""
        conn = self._db()
        version = int(conn.execute("PRAGMA data_version").fetchone()[0])
        if version == self._data_version:
            if self._own_seqs:  # only our own commits since the last look
                self._cursor = max(self._cursor, max(self._own_seqs))
                self._own_seqs.clear()
            return []
        self._data_version = version
        updates: builtins.list[StateUpdate] = []
        while True:
            rows = conn.execute(
                "SELECT seq, received_at, body FROM events WHERE seq > ? ORDER BY seq LIMIT 2000",
                (self._cursor,),
            ).fetchall()
            for seq, received_at, body in rows:
                if seq in self._own_seqs:
                    continue
                update = _update_for(PreparedEvent.from_body(body), received_at)
                if update is not None:
                    updates.append(update)
            if rows:
                self._cursor = rows[-1][0]
                self._own_seqs = {seq for seq in self._own_seqs if seq > self._cursor}
            if len(rows) < 2000:
                return updates

    async def _poll_forever(self) -> None:
        try:
            while self._subscriptions and not self._closed:
                await asyncio.sleep(self.poll_interval)
                if not self._subscriptions or self._closed:
                    break
                updates = await self._run(self._poll_once)
                if updates:
                    self._fan_out(updates)
            # Set with no await since the loop's last check, so `_watch` either saw us running
            # (and we saw its subscriber) or sees this flag and waits for a fresh poller.
            self._poller_stopping = True
            if not self._closed:
                await self._run(self._poll_stop)
        except StateUnavailableError:
            return
        except Exception:
            logger.exception("polling the world state log at %s failed", self.path)

    # -- lifecycle ------------------------------------------------------------------------

    def _close_db(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def aclose(self) -> None:
        if self._closed:
            return
        for subscription in list(self._subscriptions):
            subscription.close()
        poller, self._poller = self._poller, None
        if poller is not None and not poller.done():
            poller.cancel()
            try:
                await poller
            except asyncio.CancelledError:
                if (task := asyncio.current_task()) is not None and task.cancelling():
                    raise
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._close_db)
        finally:
            self._closed = True
            # Not joined here (that would block the loop): closing ran last on the one worker thread,
            # which ends by itself once it is done.
            self._executor.shutdown(wait=False)

    def __repr__(self) -> str:
        return f"EmbeddedWorldState({str(self.path)!r})"
