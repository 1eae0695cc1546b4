"""The `Queue` contract both backends implement, and `open_queue(url)` that picks one.

Semantics every backend keeps (one contract test suite pins them):
- per-conversation FIFO: only a conversation's oldest open message can be claimed, and only while no
  other message of it is leased or waiting out a retry delay; conversations run in parallel;
- bands: urgent (priority >= 70), normal, low (<= 30) are served in that order, FIFO within a band;
- every claim is an attempt (a crash too: an expired lease counts as a failed attempt); failures wait
  out the backoff, except a first crash, retried at once (a lost machine is the likely cause);
- a lease id fences renew/complete/fail/release: with a stale one they raise `StaleLease`;
- `complete` stores the reply and the agent files the turn changed atomically, then acks;
- idempotent `enqueue` on `idempotency_key`: the second call returns the first message.
The queue also holds the agents' mutable files (see `store.py`), so one URL is one fleet.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import FleetError
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
    TurnEvent,
    WorkerInfo,
    validate_message,
)

__all__ = [
    "DEFAULT_FLEET_URL",
    "EVENT_TTL_SECONDS",
    "FLEET_URL_ENV",
    "Queue",
    "open_queue",
    "redact_url",
    "resolve_url",
]

FLEET_URL_ENV = "OPENCLAW_MINI_FLEET_URL"
DEFAULT_FLEET_URL = "sqlite:///.openclaw-mini/fleet.db"
"""With no URL anywhere: the embedded queue in the current folder, so nobody needs Redis to start."""
EVENT_TTL_SECONDS = 3600
"""A message's turn events are kept this long after the last one: for streaming, not for history."""


def redact_url(url: str) -> str:
    """The URL with its password replaced by `***`, for messages and logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def resolve_url(url: str | None = None) -> str:
    """The explicit URL, else $OPENCLAW_MINI_FLEET_URL, else the embedded SQLite file."""
    return url or os.environ.get(FLEET_URL_ENV) or DEFAULT_FLEET_URL


class Queue(abc.ABC):
    """A fleet backend: the message queue with leases, the dead letter, the worker registry and the
    agents' file store."""

    url: str
    retry: RetryPolicy

    # -- messages ------------------------------------------------------------------------------
    async def enqueue(
        self,
        agent: str,
        conversation: str,
        text: str,
        *,
        priority: int = 50,
        idempotency_key: str | None = None,
    ) -> tuple[Message, bool]:
        """Append a (validated) message to its conversation; `(message, created)`."""
        validate_message(agent, conversation, text, priority, idempotency_key)
        return await self._enqueue(agent, conversation, text, priority, idempotency_key)

    @abc.abstractmethod
    async def _enqueue(
        self, agent: str, conversation: str, text: str, priority: int, idempotency_key: str | None
    ) -> tuple[Message, bool]:
        """`enqueue` once the message passed `validate_message`."""

    @abc.abstractmethod
    async def claim(self, worker_id: str, *, lease_seconds: float, limit: int = 1) -> list[Claim]:
        """Lease up to `limit` heads of ready conversations. Also moves due retries back to ready and
        takes over leases that expired (counting them as failed attempts)."""

    @abc.abstractmethod
    async def renew(self, claim: Claim, *, lease_seconds: float) -> float:
        """Extend the lease; returns the new expiry. `StaleLease` when it was lost."""

    @abc.abstractmethod
    async def complete(self, claim: Claim, text: str, changes: Sequence[FileChange] = ()) -> None:
        """Record the reply and apply `changes` at once, then ack. `StaleLease`, or `StoreConflict`
        (nothing applied) when a `put`/`delete` finds a newer stored version."""

    @abc.abstractmethod
    async def fail(self, claim: Claim, error: str, *, retryable: bool = True) -> MessageResult:
        """Schedule a retry after the backoff, or dead-letter when attempts are used up or not retryable."""

    @abc.abstractmethod
    async def release(self, claim: Claim) -> None:
        """Hand the message back unprocessed (a draining worker): the attempt is not counted."""

    @abc.abstractmethod
    async def message(self, message_id: str) -> MessageResult:
        """The message's state and result; `MessageNotFound` for an unknown id."""

    # -- operations ----------------------------------------------------------------------------
    @abc.abstractmethod
    async def status(self) -> FleetStatus: ...

    @abc.abstractmethod
    async def dead_letters(self, limit: int = 100) -> list[MessageResult]: ...

    @abc.abstractmethod
    async def retry_dead(self, message_id: str) -> MessageResult:
        """Put a dead letter back at the tail of its conversation with its attempts reset."""

    @abc.abstractmethod
    async def drop_dead(self, message_id: str) -> None: ...

    # -- workers -------------------------------------------------------------------------------
    @abc.abstractmethod
    async def heartbeat(self, info: WorkerInfo) -> WorkerInfo:
        """Write the worker's entry stamped with the backend's clock; registers its agents too."""

    @abc.abstractmethod
    async def remove_worker(self, worker_id: str) -> None: ...

    @abc.abstractmethod
    async def known_agents(self) -> set[str]:
        """Agents some worker has served: `enqueue` to any other is refused when this is not empty."""

    # -- agent files ---------------------------------------------------------------------------
    @abc.abstractmethod
    async def agent_version(self, agent: str) -> int:
        """Bumped by every change to the agent's files: unchanged means the local cache is current."""

    @abc.abstractmethod
    async def manifest(self, agent: str) -> tuple[int, dict[str, FileMeta]]:
        """The agent's version and every stored file's metadata, read together."""

    @abc.abstractmethod
    async def fetch_files(self, agent: str, paths: Sequence[str]) -> dict[str, tuple[FileMeta, bytes]]:
        """Current content of the given paths (missing ones are left out)."""

    @abc.abstractmethod
    async def file_meta(self, agent: str, path: str) -> FileMeta | None: ...

    # -- heartbeat schedule (see heartbeats.py) ------------------------------------------------
    @abc.abstractmethod
    async def schedule_heartbeat(
        self, agent: str, due: float, reason: str, *, expected: float | None
    ) -> bool:
        """Set the agent's next slot to `due`, atomically: only when its current slot is `expected`
        (None: only when it has none). False when another worker moved it first."""

    @abc.abstractmethod
    async def due_heartbeats(self, now: float, limit: int = 500, offset: int = 0) -> list[HeartbeatEntry]:
        """Entries whose slot is at or before `now`, earliest first, skipping the first `offset`."""

    @abc.abstractmethod
    async def heartbeat_schedule(self) -> list[HeartbeatEntry]:
        """Every scheduled agent, with its last outcome, by agent name."""

    @abc.abstractmethod
    async def unschedule_heartbeat(self, agent: str) -> None: ...

    @abc.abstractmethod
    async def record_heartbeat(self, agent: str, slot: float, outcome: str) -> None:
        """Remember what the slot did (for `fleet status`)."""

    @abc.abstractmethod
    async def log_heartbeat_delivery(self, delivery: HeartbeatDelivery) -> None:
        """Append to the fleet's delivery log (the `log` sink), keeping the newest ~10,000."""

    @abc.abstractmethod
    async def heartbeat_deliveries(self, limit: int = 100) -> list[HeartbeatDelivery]:
        """The newest deliveries, oldest first."""

    # -- turn events and backlog (the gateway and the scaler) ------------------------------------
    @abc.abstractmethod
    async def publish_events(self, message_id: str, events: Sequence[TurnEvent]) -> None:
        """Append a running turn's events to the message's event stream (kept `EVENT_TTL_SECONDS`)."""

    @abc.abstractmethod
    async def read_events(
        self, message_id: str, after: str = "", *, wait: float = 0.0, limit: int = 500
    ) -> list[TurnEvent]:
        """Events after position `after` ("" = from the start); waits up to `wait` s for a first one."""

    @abc.abstractmethod
    async def backlog(self) -> Backlog:
        """Conversations waiting and in flight, and per-stream lag/pending, for autoscalers."""

    @abc.abstractmethod
    async def close(self) -> None: ...


async def open_queue(url: str | None = None, *, retry: RetryPolicy | None = None) -> Queue:
    """`redis://host:port/db` (or `rediss://`), `sqlite:///relative.db` or `sqlite:////abs/path.db`."""
    resolved = resolve_url(url)
    policy = retry or RetryPolicy()
    if resolved.startswith(("redis://", "rediss://", "unix://")):
        from .redis_queue import RedisQueue

        return await RedisQueue.connect(resolved, retry=policy)
    if resolved.startswith("sqlite://"):
        from .sqlite_queue import SqliteQueue

        # As SQLAlchemy: sqlite:///relative/fleet.db, sqlite:////absolute/fleet.db
        path = resolved.removeprefix("sqlite://").removeprefix("/")
        if not path:
            raise FleetError(f"fleet URL {resolved!r} names no file: use sqlite:///path/fleet.db")
        return await SqliteQueue.open(Path(path), url=resolved, retry=policy)
    raise FleetError(
        f"fleet URL {redact_url(resolved)!r} is not supported: use redis://host:port/db or sqlite:///path/fleet.db"
    )
