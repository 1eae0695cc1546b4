"""Wire and on-disk models of the fleet: messages, claims, results, agent files, workers, status.

Every record a backend stores is one of these, serialised as JSON (`v` marks the format version), so
Redis and SQLite hold the same shapes and an old record stays readable.
"""

from __future__ import annotations

import random
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidMessage

__all__ = [
    "AGENT_NAME_PATTERN",
    "CONVERSATION_PATTERN",
    "MAX_TEXT_BYTES",
    "Backlog",
    "Claim",
    "FileChange",
    "FileMeta",
    "FleetStatus",
    "HeartbeatDelivery",
    "HeartbeatEntry",
    "Message",
    "MessageResult",
    "MessageStatus",
    "RetryPolicy",
    "StreamBacklog",
    "TurnEvent",
    "TurnEventType",
    "WorkerInfo",
    "WorkerState",
    "priority_band",
    "validate_message",
]

MAX_TEXT_BYTES = 256 * 1024
"""A message's text is at most this many UTF-8 bytes: a chat turn, not a file transfer."""

AGENT_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""An agent is a folder name under the workers' agents dir."""

CONVERSATION_PATTERN = re.compile(r"[A-Za-z0-9._@+-]{1,128}")
"""A conversation is the agent's session id, so it obeys the session-id rules."""

MessageStatus = Literal["queued", "in_flight", "delayed", "done", "dead_letter"]
WorkerState = Literal["active", "draining", "stopping", "stopped"]


def priority_band(priority: int) -> int:
    """0 urgent (>= 70), 1 normal, 2 low (<= 30): workers serve bands in that order, FIFO within one."""
    if priority >= 70:
        return 0
    if priority <= 30:
        return 2
    return 1


def validate_message(agent: str, conversation: str, text: str, priority: int, key: str | None) -> None:
    """Refuse bad input before anything is written; the message names the field and the rule."""
    if not isinstance(agent, str) or not AGENT_NAME_PATTERN.fullmatch(agent):
        raise InvalidMessage(
            f"agent {agent!r} is not a valid agent name (letters, digits, . _ -, at most 64, "
            "a folder under the workers' agents dir)"
        )
    if not isinstance(conversation, str) or not CONVERSATION_PATTERN.fullmatch(conversation):
        raise InvalidMessage(
            f"conversation {conversation!r} is not valid: 1-128 of letters, digits and . _ - @ +"
        )
    if not isinstance(text, str) or not text.strip():
        raise InvalidMessage("text is empty: there is nothing to send to the agent")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_TEXT_BYTES:
        raise InvalidMessage(f"text is {size:,} bytes, over the {MAX_TEXT_BYTES:,}-byte limit of a message")
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 100:
        raise InvalidMessage(f"priority {priority!r} must be an integer from 0 to 100")
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= 200):
        raise InvalidMessage("idempotency_key must be a string of 1-200 characters")


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RetryPolicy(_Model):
    """Attempts and backoff. Every claim is an attempt, so a message that kills its worker dead-letters."""

    max_attempts: int = Field(default=5, ge=1, le=100)
    base_delay: float = Field(default=1.0, ge=0.0)
    factor: float = Field(default=2.0, ge=1.0)
    max_delay: float = Field(default=120.0, ge=0.0)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds before retry number `attempt + 1`: base * factor^(attempt-1), capped, equal jitter."""
        ceiling = min(self.max_delay, self.base_delay * self.factor ** max(0, attempt - 1))
        return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


class Message(_Model):
    """One user message addressed to a conversation of an agent."""

    v: int = 1
    id: str
    agent: str
    conversation: str
    text: str
    priority: int = 50
    idempotency_key: str | None = None
    enqueued_at: float


class Claim(_Model):
    """A message handed to one worker slot under a lease; `lease_id` fences every later call."""

    message: Message
    lease_id: str
    attempt: int
    expires_at: float
    """Backend clock (epoch seconds) when the lease ends unless renewed."""


class MessageResult(_Model):
    """What `Fleet.result` and `Fleet.message` report about one message."""

    v: int = 1
    id: str
    agent: str
    conversation: str
    status: MessageStatus
    text: str | None = None
    error: str | None = None
    attempts: int = 0
    worker_id: str | None = None
    enqueued_at: float = 0.0
    finished_at: float | None = None
    not_before: float | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("done", "dead_letter")


class FileMeta(_Model):
    """A stored agent file's version (from an agent-wide counter, so never reused), digest, size."""

    version: int
    digest: str
    """SHA-1 hex of the content (Redis scripts can compute it), to skip re-fetching equal content."""
    size: int


class FileChange(_Model):
    """One file a turn changed. `append` adds `data` to whatever the store holds (memory notes merge);
    `put` and `delete` apply only when the stored version is still `base_version` (0: absent)."""

    path: str
    kind: Literal["put", "append", "delete"]
    data: bytes = b""
    base_version: int = 0


class WorkerInfo(_Model):
    """A worker's entry in the registry, rewritten on every heartbeat."""

    v: int = 1
    id: str
    host: str
    pid: int
    state: WorkerState = "active"
    concurrency: int
    load: int = 0
    agents: list[str] = Field(default_factory=list)
    lease_seconds: float
    started_at: float
    heartbeat_at: float = 0.0
    lost: bool = False
    """Set by `status()`: no heartbeat for 3 lease periods."""


class FleetStatus(_Model):
    queued: int
    in_flight: int
    delayed: int
    dead_letters: int
    workers: list[WorkerInfo]


class HeartbeatEntry(_Model):
    """One agent's heartbeat in the fleet's schedule: the next due slot and what the last one did."""

    agent: str
    due: float
    """Epoch seconds of the next slot (on the fleet clock the workers share)."""
    reason: str = "interval"
    """`interval` or `cron`: why the slot exists (a cron slot bypasses the empty-HEARTBEAT.md skip)."""
    last_slot: float | None = None
    last_outcome: str | None = None
    """`ran: delivered`, `skipped: HEARTBEAT.md is empty` ... as the worker that ran the slot saw it."""


class HeartbeatDelivery(_Model):
    """A heartbeat reply that was not an ack, as written to the fleet's delivery log (the `log` sink)."""

    v: int = 1
    agent: str
    slot: float
    message_id: str
    text: str
    at: float


class StreamBacklog(_Model):
    """One Redis stream (or the SQLite equivalent) an external scaler can watch."""

    stream: str
    lag: int
    """Entries not yet delivered to any worker: conversations waiting for a slot."""
    pending: int
    """Entries delivered and not yet acknowledged: conversations a worker is serving."""


class Backlog(_Model):
    """What a scaler needs: conversations (not messages) waiting and being served, per stream.

    A conversation runs one message at a time, so 20 messages on one conversation count once."""

    waiting: int
    """Conversations whose next message could start now."""
    in_flight: int
    """Conversations a worker is serving."""
    delayed: int
    """Messages waiting out a retry delay."""
    streams: list[StreamBacklog] = Field(default_factory=list)


TurnEventType = Literal["text_delta", "tool_start", "tool_end", "error", "done"]


class TurnEvent(_Model):
    """One event of a running turn, as the worker publishes it and the gateway streams it (SSE).

    `done` ends a message's stream: `status` is `done` (with the reply in `text`) or `dead_letter`;
    `error` is a failed attempt (`retrying` says whether another follows)."""

    id: str = ""
    """Stream position, set when read back: pass it as `Last-Event-ID` to resume."""
    type: TurnEventType
    text: str | None = None
    tool: str | None = None
    """The tool's name (tool_start/tool_end); inputs and outputs stay in the transcript."""
    tool_use_id: str | None = None
    is_error: bool | None = None
    attempt: int | None = None
    status: MessageStatus | None = None
    retrying: bool | None = None
    at: float | None = None
    """Worker clock (epoch seconds) when the event was produced."""
