"""The embedded backend: one SQLite file (WAL) shared by the workers of one machine.

Every operation is one `BEGIN IMMEDIATE` transaction, so claim, complete and enqueue are atomic across
processes; the clock is the local one (one machine). Blocking calls run in a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..errors import FleetUnavailable, MessageNotFound, StaleLease, StoreConflict, UnknownAgent
from .models import (
    Backlog,
    Claim,
    FileChange,
    FileMeta,
    FleetStatus,
    HeartbeatDelivery,
    HeartbeatEntry,
    Message,
    MessageResult,
    RetryPolicy,
    StreamBacklog,
    TurnEvent,
    WorkerInfo,
    priority_band,
)
from .queue import EVENT_TTL_SECONDS, Queue

__all__ = ["SqliteQueue"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
  id TEXT PRIMARY KEY, seq INTEGER NOT NULL, agent TEXT NOT NULL, conversation TEXT NOT NULL,
  text TEXT NOT NULL, priority INTEGER NOT NULL, band INTEGER NOT NULL, idem TEXT UNIQUE,
  enqueued_at REAL NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  not_before REAL NOT NULL DEFAULT 0, lease_id TEXT, lease_worker TEXT, lease_expires REAL,
  result TEXT, error TEXT, worker_id TEXT, finished_at REAL
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages(state, band, seq);
CREATE INDEX IF NOT EXISTS messages_conv ON messages(agent, conversation, seq);
CREATE TABLE IF NOT EXISTS files (
  agent TEXT NOT NULL, path TEXT NOT NULL, version INTEGER NOT NULL, digest TEXT NOT NULL,
  size INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (agent, path)
);
CREATE TABLE IF NOT EXISTS agents (agent TEXT PRIMARY KEY, version INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS workers (id TEXT PRIMARY KEY, info TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL, at REAL NOT NULL, data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_message ON events(message_id, seq);
CREATE TABLE IF NOT EXISTS heartbeat_schedule (
  agent TEXT PRIMARY KEY, due_ms INTEGER NOT NULL, reason TEXT NOT NULL, last TEXT
);
CREATE INDEX IF NOT EXISTS heartbeat_schedule_due ON heartbeat_schedule(due_ms);
CREATE TABLE IF NOT EXISTS heartbeat_deliveries (seq INTEGER PRIMARY KEY AUTOINCREMENT, record TEXT NOT NULL);
"""

_OPEN = "('queued', 'leased')"


def _row(conn: sqlite3.Connection, message_id: str) -> Any:
    """The message's `sqlite3.Row`, or None."""
    return conn.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()


class SqliteQueue(Queue):
    """`Queue` on a local SQLite file; `SqliteQueue.open(path)` or `open_queue("sqlite:///fleet.db")`."""

    def __init__(self, path: Path, *, url: str, retry: RetryPolicy) -> None:
        self.path = path
        self.url = url
        self.retry = retry
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    @classmethod
    async def open(
        cls, path: Path, *, url: str | None = None, retry: RetryPolicy | None = None
    ) -> SqliteQueue:
        queue = cls(path, url=url or f"sqlite:///{path}", retry=retry or RetryPolicy())
        await asyncio.to_thread(queue._connect)
        return queue

    def _connect(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise FleetUnavailable(f"cannot open the fleet database {self.path}: {exc}") from exc
        self._conn = conn

    async def close(self) -> None:
        def shut() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await asyncio.to_thread(shut)

    async def _tx(self, work: Callable[[sqlite3.Connection, float], T]) -> T:
        """Run `work(conn, now)` in one immediate transaction, in a thread."""

        def run() -> T:
            with self._lock:
                conn = self._conn
                if conn is None:
                    raise FleetUnavailable(f"the fleet database {self.path} is closed")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as exc:
                    raise FleetUnavailable(f"fleet database {self.path}: {exc}") from exc
                try:
                    result = work(conn, time.time())
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result

        return await asyncio.to_thread(run)

    # -- messages ------------------------------------------------------------------------------
    async def _enqueue(
        self, agent: str, conversation: str, text: str, priority: int, idempotency_key: str | None
    ) -> tuple[Message, bool]:

        def work(conn: sqlite3.Connection, now: float) -> tuple[Message, bool]:
            if idempotency_key is not None:
                row = conn.execute("SELECT * FROM messages WHERE idem = ?", (idempotency_key,)).fetchone()
                if row is not None:
                    return _message(row), False
            known = {r[0] for r in conn.execute("SELECT agent FROM agents")}
            if known and agent not in known:
                raise UnknownAgent(f"unknown agent {agent!r}: the fleet's workers serve {sorted(known)}")
            message = Message(
                id=_new_id(),
                agent=agent,
                conversation=conversation,
                text=text,
                priority=priority,
                idempotency_key=idempotency_key,
                enqueued_at=now,
            )
            conn.execute(
                "INSERT INTO messages (id, seq, agent, conversation, text, priority, band, idem, enqueued_at,"
                " state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued')",
                (
                    message.id,
                    _next_seq(conn),
                    agent,
                    conversation,
                    text,
                    priority,
                    priority_band(priority),
                    idempotency_key,
                    now,
                ),
            )
            return message, True

        return await self._tx(work)

    async def claim(self, worker_id: str, *, lease_seconds: float, limit: int = 1) -> list[Claim]:
        def work(conn: sqlite3.Connection, now: float) -> list[Claim]:
            expired = conn.execute(
                "SELECT * FROM messages WHERE state = 'leased' AND lease_expires < ?", (now,)
            ).fetchall()
            for row in expired:
                error = f"lease expired: worker {row['lease_worker']} stopped renewing (crashed or lost)"
                self._fail_row(conn, row, error, True, now, crash=True)
            rows = conn.execute(
                "SELECT * FROM messages m WHERE m.state = 'queued' AND m.not_before <= ? AND NOT EXISTS ("
                f" SELECT 1 FROM messages o WHERE o.agent = m.agent AND o.conversation = m.conversation"
                f" AND o.state IN {_OPEN} AND o.seq < m.seq) ORDER BY m.band, m.seq LIMIT ?",
                (now, limit),
            ).fetchall()
            claims = []
            for row in rows:
                lease_id = uuid.uuid4().hex
                expires = now + lease_seconds
                conn.execute(
                    "UPDATE messages SET state = 'leased', attempts = attempts + 1, lease_id = ?,"
                    " lease_worker = ?, lease_expires = ? WHERE id = ?",
                    (lease_id, worker_id, expires, row["id"]),
                )
                claims.append(
                    Claim(
                        message=_message(row),
                        lease_id=lease_id,
                        attempt=row["attempts"] + 1,
                        expires_at=expires,
                    )
                )
            return claims

        return await self._tx(work)

    def _leased(self, conn: sqlite3.Connection, claim: Claim) -> sqlite3.Row:
        row = _row(conn, claim.message.id)
        if row is None or row["state"] != "leased" or row["lease_id"] != claim.lease_id:
            raise StaleLease(
                f"lease {claim.lease_id} on message {claim.message.id} is no longer held "
                "(it expired and was taken over, or the message was finished)"
            )
        return row

    async def renew(self, claim: Claim, *, lease_seconds: float) -> float:
        def work(conn: sqlite3.Connection, now: float) -> float:
            self._leased(conn, claim)
            conn.execute(
                "UPDATE messages SET lease_expires = ? WHERE id = ?", (now + lease_seconds, claim.message.id)
            )
            return now + lease_seconds

        return await self._tx(work)

    async def complete(self, claim: Claim, text: str, changes: Sequence[FileChange] = ()) -> None:
        def work(conn: sqlite3.Connection, now: float) -> None:
            row = self._leased(conn, claim)
            _apply_changes(conn, claim.message.agent, changes)
            conn.execute(
                "UPDATE messages SET state = 'done', result = ?, error = NULL, worker_id = ?,"
                " finished_at = ?,"
                " lease_id = NULL, lease_expires = NULL WHERE id = ?",
                (text, row["lease_worker"], now, claim.message.id),
            )

        await self._tx(work)

    async def fail(self, claim: Claim, error: str, *, retryable: bool = True) -> MessageResult:
        def work(conn: sqlite3.Connection, now: float) -> MessageResult:
            row = self._leased(conn, claim)
            self._fail_row(conn, row, error, retryable, now)
            return _result(_row(conn, row["id"]), now)

        return await self._tx(work)

    def _fail_row(
        self,
        conn: sqlite3.Connection,
        row: sqlite3.Row,
        error: str,
        retryable: bool,
        now: float,
        *,
        crash: bool = False,
    ) -> None:
        attempts = row["attempts"]
        if retryable and attempts < self.retry.max_attempts:
            delay = 0.0 if crash and attempts == 1 else self.retry.delay(attempts)
            conn.execute(
                "UPDATE messages SET state = 'queued', error = ?, not_before = ?, lease_id = NULL,"
                " lease_expires = NULL, worker_id = ? WHERE id = ?",
                (error, now + delay, row["lease_worker"], row["id"]),
            )
        else:
            conn.execute(
                "UPDATE messages SET state = 'dead', error = ?, finished_at = ?, lease_id = NULL,"
                " lease_expires = NULL, worker_id = ? WHERE id = ?",
                (_dead_reason(error, attempts, retryable), now, row["lease_worker"], row["id"]),
            )

    async def release(self, claim: Claim) -> None:
        def work(conn: sqlite3.Connection, now: float) -> None:
            self._leased(conn, claim)
            conn.execute(
                "UPDATE messages SET state = 'queued', attempts = MAX(attempts - 1, 0), lease_id = NULL,"
                " lease_expires = NULL WHERE id = ?",
                (claim.message.id,),
            )

        await self._tx(work)

    async def message(self, message_id: str) -> MessageResult:
        def work(conn: sqlite3.Connection, now: float) -> MessageResult:
            row = _row(conn, message_id)
            if row is None:
                raise MessageNotFound(f"no message with id {message_id!r} in {self.url}")
            return _result(row, now)

        return await self._tx(work)

    # -- operations ----------------------------------------------------------------------------
    async def status(self) -> FleetStatus:
        def work(conn: sqlite3.Connection, now: float) -> FleetStatus:
            counts: dict[str, int] = {}
            for state, delayed, n in conn.execute(
                "SELECT state, not_before > ?, COUNT(*) FROM messages"
                " WHERE state IN ('queued', 'leased', 'dead')"
                " GROUP BY state, not_before > ?",
                (now, now),
            ):
                name = "delayed" if state == "queued" and delayed else state
                counts[name] = counts.get(name, 0) + n
            workers = [WorkerInfo.model_validate_json(r[0]) for r in conn.execute("SELECT info FROM workers")]
            return FleetStatus(
                queued=counts.get("queued", 0),
                in_flight=counts.get("leased", 0),
                delayed=counts.get("delayed", 0),
                dead_letters=counts.get("dead", 0),
                workers=[_mark_lost(w, now) for w in sorted(workers, key=lambda w: w.id)],
            )

        return await self._tx(work)

    async def dead_letters(self, limit: int = 100) -> list[MessageResult]:
        def work(conn: sqlite3.Connection, now: float) -> list[MessageResult]:
            rows = conn.execute(
                "SELECT * FROM messages WHERE state = 'dead' ORDER BY finished_at LIMIT ?", (limit,)
            ).fetchall()
            return [_result(row, now) for row in rows]

        return await self._tx(work)

    def _dead(self, conn: sqlite3.Connection, message_id: str) -> sqlite3.Row:
        row = _row(conn, message_id)
        if row is None or row["state"] != "dead":
            raise MessageNotFound(f"no dead letter with id {message_id!r} in {self.url}")
        return row

    async def retry_dead(self, message_id: str) -> MessageResult:
        def work(conn: sqlite3.Connection, now: float) -> MessageResult:
            self._dead(conn, message_id)
            conn.execute(
                "UPDATE messages SET state = 'queued', attempts = 0, not_before = 0, seq = ?, error = NULL,"
                " finished_at = NULL WHERE id = ?",
                (_next_seq(conn), message_id),
            )
            return _result(_row(conn, message_id), now)

        return await self._tx(work)

    async def drop_dead(self, message_id: str) -> None:
        def work(conn: sqlite3.Connection, now: float) -> None:
            self._dead(conn, message_id)
            conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))

        await self._tx(work)

    # -- workers -------------------------------------------------------------------------------
    async def heartbeat(self, info: WorkerInfo) -> WorkerInfo:
        def work(conn: sqlite3.Connection, now: float) -> WorkerInfo:
            stamped = info.model_copy(update={"heartbeat_at": now, "lost": False})
            conn.execute(
                "INSERT INTO workers (id, info) VALUES (?, ?)"
                " ON CONFLICT(id) DO UPDATE SET info = excluded.info",
                (info.id, stamped.model_dump_json()),
            )
            conn.executemany(
                "INSERT INTO agents (agent) VALUES (?) ON CONFLICT(agent) DO NOTHING",
                [(name,) for name in info.agents],
            )
            return stamped

        return await self._tx(work)

    async def remove_worker(self, worker_id: str) -> None:
        await self._tx(lambda conn, now: conn.execute("DELETE FROM workers WHERE id = ?", (worker_id,)))

    async def known_agents(self) -> set[str]:
        return await self._tx(lambda conn, now: {r[0] for r in conn.execute("SELECT agent FROM agents")})

    # -- agent files ---------------------------------------------------------------------------
    async def agent_version(self, agent: str) -> int:
        def work(conn: sqlite3.Connection, now: float) -> int:
            row = conn.execute("SELECT version FROM agents WHERE agent = ?", (agent,)).fetchone()
            return int(row[0]) if row else 0

        return await self._tx(work)

    async def manifest(self, agent: str) -> tuple[int, dict[str, FileMeta]]:
        def work(conn: sqlite3.Connection, now: float) -> tuple[int, dict[str, FileMeta]]:
            row = conn.execute("SELECT version FROM agents WHERE agent = ?", (agent,)).fetchone()
            files = {
                r["path"]: FileMeta(version=r["version"], digest=r["digest"], size=r["size"])
                for r in conn.execute(
                    "SELECT path, version, digest, size FROM files WHERE agent = ?", (agent,)
                )
            }
            return (int(row[0]) if row else 0), files

        return await self._tx(work)

    async def fetch_files(self, agent: str, paths: Sequence[str]) -> dict[str, tuple[FileMeta, bytes]]:
        def work(conn: sqlite3.Connection, now: float) -> dict[str, tuple[FileMeta, bytes]]:
            found: dict[str, tuple[FileMeta, bytes]] = {}
            for path in paths:
                r = conn.execute("SELECT * FROM files WHERE agent = ? AND path = ?", (agent, path)).fetchone()
                if r is not None:
                    found[path] = (
                        FileMeta(version=r["version"], digest=r["digest"], size=r["size"]),
                        r["data"],
                    )
            return found

        return await self._tx(work)

    async def file_meta(self, agent: str, path: str) -> FileMeta | None:
        def work(conn: sqlite3.Connection, now: float) -> FileMeta | None:
            r = conn.execute(
                "SELECT version, digest, size FROM files WHERE agent = ? AND path = ?", (agent, path)
            ).fetchone()
            return None if r is None else FileMeta(version=r[0], digest=r[1], size=r[2])

        return await self._tx(work)

    # -- turn events and backlog -----------------------------------------------------------------
    async def publish_events(self, message_id: str, events: Sequence[TurnEvent]) -> None:
        rows = [event.model_dump_json(exclude={"id"}, exclude_none=True) for event in events]

        def work(conn: sqlite3.Connection, now: float) -> None:
            conn.executemany(
                "INSERT INTO events (message_id, at, data) VALUES (?, ?, ?)",
                [(message_id, now, data) for data in rows],
            )
            if any(event.type == "done" for event in events):  # a finished turn sweeps old streams
                conn.execute("DELETE FROM events WHERE at < ?", (now - EVENT_TTL_SECONDS,))

        await self._tx(work)

    async def read_events(
        self, message_id: str, after: str = "", *, wait: float = 0.0, limit: int = 500
    ) -> list[TurnEvent]:
        start = int(after) if after.isdigit() else 0

        def read() -> list[TurnEvent]:
            # A plain read, not `_tx`'s write transaction: a polling stream must not hold up workers.
            with self._lock:
                if self._conn is None:
                    raise FleetUnavailable(f"the fleet database {self.path} is closed")
                try:
                    rows = self._conn.execute(
                        "SELECT seq, data FROM events WHERE message_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                        (message_id, start, limit),
                    ).fetchall()
                except sqlite3.Error as exc:
                    raise FleetUnavailable(f"fleet database {self.path}: {exc}") from exc
            return [
                TurnEvent.model_validate_json(data).model_copy(update={"id": str(seq)}) for seq, data in rows
            ]

        deadline = time.monotonic() + wait
        while True:
            found = await asyncio.to_thread(read)
            if found or time.monotonic() >= deadline:
                return found
            await asyncio.sleep(min(0.02, max(0.0, deadline - time.monotonic())))

    async def backlog(self) -> Backlog:
        def work(conn: sqlite3.Connection, now: float) -> Backlog:
            waiting, serving, delayed = conn.execute(
                "SELECT COALESCE(SUM(leased = 0 AND latest <= ?), 0), COALESCE(SUM(leased > 0), 0),"
                " COALESCE(SUM(leased = 0 AND latest > ?), 0) FROM ("
                "  SELECT SUM(state = 'leased') AS leased, MAX(not_before) AS latest FROM messages"
                f"  WHERE state IN {_OPEN} GROUP BY agent, conversation)",
                (now, now),
            ).fetchone()
            return Backlog(
                waiting=int(waiting),
                in_flight=int(serving),
                delayed=int(delayed),
                streams=[StreamBacklog(stream=str(self.path), lag=int(waiting), pending=int(serving))],
            )

        return await self._tx(work)

    # -- heartbeat schedule --------------------------------------------------------------------
    async def schedule_heartbeat(
        self, agent: str, due: float, reason: str, *, expected: float | None
    ) -> bool:
        due_ms = round(due * 1000)

        def work(conn: sqlite3.Connection, now: float) -> bool:
            if expected is None:
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO heartbeat_schedule (agent, due_ms, reason) VALUES (?, ?, ?)",
                    (agent, due_ms, reason),
                )
            else:
                cursor = conn.execute(
                    "UPDATE heartbeat_schedule SET due_ms = ?, reason = ? WHERE agent = ? AND due_ms = ?",
                    (due_ms, reason, agent, round(expected * 1000)),
                )
            return cursor.rowcount == 1

        return await self._tx(work)

    async def _schedule_rows(self, where: str, args: tuple[Any, ...]) -> list[HeartbeatEntry]:
        def work(conn: sqlite3.Connection, now: float) -> list[HeartbeatEntry]:
            rows = conn.execute(f"SELECT * FROM heartbeat_schedule {where}", args).fetchall()
            return [_entry(row) for row in rows]

        return await self._tx(work)

    async def due_heartbeats(self, now: float, limit: int = 500, offset: int = 0) -> list[HeartbeatEntry]:
        return await self._schedule_rows(
            "WHERE due_ms <= ? ORDER BY due_ms, agent LIMIT ? OFFSET ?", (round(now * 1000), limit, offset)
        )

    async def heartbeat_schedule(self) -> list[HeartbeatEntry]:
        return await self._schedule_rows("ORDER BY agent", ())

    async def unschedule_heartbeat(self, agent: str) -> None:
        await self._tx(
            lambda conn, now: conn.execute("DELETE FROM heartbeat_schedule WHERE agent = ?", (agent,))
        )

    async def record_heartbeat(self, agent: str, slot: float, outcome: str) -> None:
        record = HeartbeatEntry(agent=agent, due=0, last_slot=slot, last_outcome=outcome).model_dump_json()
        await self._tx(
            lambda conn, now: conn.execute(
                "UPDATE heartbeat_schedule SET last = ? WHERE agent = ?", (record, agent)
            )
        )

    async def log_heartbeat_delivery(self, delivery: HeartbeatDelivery) -> None:
        def work(conn: sqlite3.Connection, now: float) -> None:
            conn.execute(
                "INSERT INTO heartbeat_deliveries (record) VALUES (?)", (delivery.model_dump_json(),)
            )
            conn.execute(
                "DELETE FROM heartbeat_deliveries "
                "WHERE seq <= (SELECT MAX(seq) FROM heartbeat_deliveries) - ?",
                (HB_DELIVERIES_KEEP,),
            )

        await self._tx(work)

    async def heartbeat_deliveries(self, limit: int = 100) -> list[HeartbeatDelivery]:
        def work(conn: sqlite3.Connection, now: float) -> list[HeartbeatDelivery]:
            rows = conn.execute(
                "SELECT record FROM heartbeat_deliveries ORDER BY seq DESC LIMIT ?", (limit,)
            ).fetchall()
            return [HeartbeatDelivery.model_validate_json(row[0]) for row in reversed(rows)]

        return await self._tx(work)


HB_DELIVERIES_KEEP = 10_000


def _entry(row: sqlite3.Row) -> HeartbeatEntry:
    extra = HeartbeatEntry.model_validate_json(row["last"]).model_dump() if row["last"] else {}
    extra.update(agent=row["agent"], due=row["due_ms"] / 1000, reason=row["reason"])
    return HeartbeatEntry(**extra)


def _new_id() -> str:
    return "m-" + uuid.uuid4().hex[:20]


def _next_seq(conn: sqlite3.Connection) -> int:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('seq', 1) ON CONFLICT(key) DO UPDATE SET value = value + 1"
    )
    return int(conn.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])


def _dead_reason(error: str, attempts: int, retryable: bool) -> str:
    if not retryable:
        return error
    return f"{error} (gave up after {attempts} attempt{'s' if attempts != 1 else ''})"


def _mark_lost(info: WorkerInfo, now: float) -> WorkerInfo:
    stale = now - info.heartbeat_at > 3 * max(info.lease_seconds / 3, 1.0)
    return info.model_copy(update={"lost": info.state != "stopped" and stale})


def _message(row: sqlite3.Row) -> Message:
    return Message(
        id=row["id"],
        agent=row["agent"],
        conversation=row["conversation"],
        text=row["text"],
        priority=row["priority"],
        idempotency_key=row["idem"],
        enqueued_at=row["enqueued_at"],
    )


def _result(row: sqlite3.Row, now: float) -> MessageResult:
    state = row["state"]
    status: Any
    if state == "done":
        status = "done"
    elif state == "dead":
        status = "dead_letter"
    elif state == "leased":
        status = "in_flight"
    else:
        status = "delayed" if row["not_before"] > now else "queued"
    return MessageResult(
        id=row["id"],
        agent=row["agent"],
        conversation=row["conversation"],
        status=status,
        text=row["result"],
        error=row["error"],
        attempts=row["attempts"],
        worker_id=row["lease_worker"] if state == "leased" else row["worker_id"],
        enqueued_at=row["enqueued_at"],
        finished_at=row["finished_at"],
        not_before=row["not_before"] or None,
    )


def _apply_changes(conn: sqlite3.Connection, agent: str, changes: Sequence[FileChange]) -> None:
    """Check every `put`/`delete` against its base version first, then write all (one transaction)."""
    if not changes:
        return
    conflicts = []
    for change in changes:
        if change.kind == "append":
            continue
        row = conn.execute(
            "SELECT version FROM files WHERE agent = ? AND path = ?", (agent, change.path)
        ).fetchone()
        current = int(row[0]) if row else 0
        if current != change.base_version:
            conflicts.append(change.path)
    if conflicts:
        raise StoreConflict(
            f"agent {agent!r}: {', '.join(conflicts)} changed in the store since this turn read "
            "(another conversation wrote it); nothing was overwritten",
            paths=conflicts,
        )
    conn.execute("INSERT INTO agents (agent) VALUES (?) ON CONFLICT(agent) DO NOTHING", (agent,))
    for change in changes:
        version = int(
            conn.execute(
                "UPDATE agents SET version = version + 1 WHERE agent = ? RETURNING version", (agent,)
            ).fetchone()[0]
        )
        if change.kind == "delete":
            conn.execute("DELETE FROM files WHERE agent = ? AND path = ?", (agent, change.path))
            continue
        data = change.data
        if change.kind == "append":
            row = conn.execute(
                "SELECT data FROM files WHERE agent = ? AND path = ?", (agent, change.path)
            ).fetchone()
            data = (bytes(row[0]) if row else b"") + data
        conn.execute(
            "INSERT INTO files (agent, path, version, digest, size, data) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(agent, path) DO UPDATE SET version = excluded.version, digest = excluded.digest,"
            " size = excluded.size, data = excluded.data",
            (
                agent,
                change.path,
                version,
                hashlib.sha1(data, usedforsecurity=False).hexdigest(),
                len(data),
                data,
            ),
        )
