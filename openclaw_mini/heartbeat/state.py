"""What the heartbeat remembers across restarts: `<workspace>/.openclaw-mini/heartbeat.json`.

Task due-state, recent deliveries (for the 24 h dedupe) and the last run. Written atomically
(temp file + rename) so a crash mid-write never leaves half a file; a corrupt or unknown file is
moved aside with a warning and the heartbeat starts fresh rather than crashing.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "STATE_FILE",
    "DeliveryRecord",
    "HeartbeatState",
    "TaskState",
    "load_state",
    "save_state",
    "state_path",
    "text_digest",
]

logger = logging.getLogger(__name__)

STATE_FILE = "heartbeat.json"
MAX_DELIVERIES = 500


def state_path(workspace: Path) -> Path:
    return workspace / ".openclaw-mini" / STATE_FILE


def text_digest(text: str) -> str:
    """Dedupe key of a delivered text: sha256 of the trimmed text."""
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()


class TaskState(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)

    first_seen: datetime
    last_run: datetime | None = None


class DeliveryRecord(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)

    digest: str
    at: datetime
    text: str = ""
    """The text itself is kept for the latest delivery only (status shows it); older ones are digests."""
    reason: str = ""


class HeartbeatState(BaseModel):
    """Version 1 of heartbeat.json."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    v: Literal[1] = 1
    last_run_started_at: datetime | None = None
    """Start of the last tick that ran or skipped on schedule: the anchor of the next one."""
    last_ran_at: datetime | None = None
    """Start of the last tick that actually ran (model call or callback)."""
    last_outcome: str | None = None
    last_reason: str | None = None
    tasks: dict[str, TaskState] = Field(default_factory=dict)
    deliveries: list[DeliveryRecord] = Field(default_factory=list)

    @property
    def last_delivery(self) -> DeliveryRecord | None:
        return self.deliveries[-1] if self.deliveries else None

    def is_duplicate(self, text: str, now: datetime, window: timedelta) -> DeliveryRecord | None:
        """The earlier delivery of the same trimmed text within `window`, if any."""
        if window.total_seconds() <= 0:
            return None
        digest = text_digest(text)
        for record in reversed(self.deliveries):
            if now - record.at >= window:
                break
            if record.digest == digest:
                return record
        return None

    def record_delivery(self, text: str, now: datetime, reason: str, window: timedelta) -> None:
        for record in self.deliveries:
            record.text = ""
        self.deliveries.append(
            DeliveryRecord(digest=text_digest(text), at=now, text=text.strip(), reason=reason)
        )
        keep_after = now - max(window, timedelta(hours=24))
        self.deliveries = [r for r in self.deliveries if r.at > keep_after][-MAX_DELIVERIES:]

    def task(self, key: str, now: datetime) -> TaskState:
        """The state of task `key`, created (first seen now) if new."""
        state = self.tasks.get(key)
        if state is None:
            state = self.tasks[key] = TaskState(first_seen=now)
        return state


def load_state(path: Path) -> HeartbeatState:
    """Read the state file; missing -> fresh; unreadable/corrupt -> warning, moved aside, fresh."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return HeartbeatState()
    except (OSError, UnicodeDecodeError) as exc:
        logger.warning("heartbeat state %s is unreadable (%s); starting fresh", path, exc)
        _move_aside(path)
        return HeartbeatState()
    try:
        return HeartbeatState.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        logger.warning(
            "heartbeat state %s is corrupt (%s: %s); kept as %s.corrupt, starting fresh",
            path,
            where,
            first["msg"],
            path.name,
        )
        _move_aside(path)
        return HeartbeatState()


def _move_aside(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.replace(path, path.with_name(path.name + ".corrupt"))


def save_state(path: Path, state: HeartbeatState) -> None:
    """Write atomically: a temp file in the same folder, fsync, then rename over the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = state.model_dump_json(indent=2)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
