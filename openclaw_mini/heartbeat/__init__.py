"""The heartbeat: the agent checks in on its own, only when it should.

`HeartbeatWake` turns bursts of wake requests into single runs, `HeartbeatRunner` decides per tick
whether to run (active hours, HEARTBEAT.md tasks, dedupe) and schedules the next one, `tasks`
parses HEARTBEAT.md. Import-light on purpose: no anthropic, croniter only when a cron task exists.
"""

from __future__ import annotations

from .clock import Clock, FakeClock, RealClock, TimerHandle
from .config import ActiveHours, HeartbeatConfig, format_duration, parse_duration
from .reply import HEARTBEAT_OK, ReplyDecision, decide_reply, strip_heartbeat_ok
from .runner import (
    DEFAULT_PROMPT,
    HeartbeatBusy,
    HeartbeatOutcome,
    HeartbeatRunner,
    HeartbeatStatus,
    HeartbeatTurn,
    TaskStatus,
    format_exec_note,
)
from .state import HeartbeatState
from .tasks import HeartbeatFile, HeartbeatTask, ParseProblem, load_heartbeat_file, parse_heartbeat
from .wake import BUSY, HeartbeatRequest, HeartbeatWake, normalize_reason, reason_kind, reason_priority

__all__ = [
    "BUSY",
    "DEFAULT_PROMPT",
    "HEARTBEAT_OK",
    "ActiveHours",
    "Clock",
    "FakeClock",
    "HeartbeatBusy",
    "HeartbeatConfig",
    "HeartbeatFile",
    "HeartbeatOutcome",
    "HeartbeatRequest",
    "HeartbeatRunner",
    "HeartbeatState",
    "HeartbeatStatus",
    "HeartbeatTask",
    "HeartbeatTurn",
    "HeartbeatWake",
    "ParseProblem",
    "RealClock",
    "ReplyDecision",
    "TaskStatus",
    "TimerHandle",
    "decide_reply",
    "format_duration",
    "format_exec_note",
    "load_heartbeat_file",
    "normalize_reason",
    "parse_duration",
    "parse_heartbeat",
    "reason_kind",
    "reason_priority",
    "strip_heartbeat_ok",
]
