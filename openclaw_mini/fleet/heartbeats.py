"""Heartbeats across the fleet: each agent's heartbeat fires once per slot, whichever workers live.

The schedule lives in the fleet's store (`Queue.schedule_heartbeat`: a sorted set of due times on
Redis, a table on SQLite). Every worker runs a `HeartbeatScheduler`; for each due slot it

1. enqueues the heartbeat as a message on the agent's heartbeat conversation (the heartbeat
   `session`, `main` by default) with the idempotency key `heartbeat:<agent>:<slot ms>`, so it runs
   in order with that conversation's other messages under the same leases and retries, and a slot
   enqueued twice (two workers, or a worker that died right after) is still one message;
2. moves the slot to the next one with a compare-and-set on the old value: one worker wins, and a
   worker that dies between 1 and 2 leaves the slot due, so another enqueues it (the same key).

The worker that claims such a message runs one `HeartbeatRunner` tick on the hydrated workspace:
active hours, HEARTBEAT.md (empty or nothing due: skipped with no model call), the model call, the
`HEARTBEAT_OK` and 24 h duplicate filters, exactly as on one machine. The runner's state file
(`.openclaw-mini/heartbeat.json`) is an agent file, so it lives in the store and the rules hold
fleet-wide. A reply that is not an ack goes to the agent's sink (`[heartbeat] sink` in the agent's
`openclaw-mini.toml`: a webhook URL, or `log`, the fleet's delivery log). Delivery is at least once:
a worker that dies after delivering but before its ack delivers again when the slot re-runs.

An agent is scheduled when its folder has a HEARTBEAT.md and its heartbeat is not off; its settings
come from the `[heartbeat]` table of the folder's `openclaw-mini.toml` (defaults otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import shutil
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from ..errors import ConfigError, FleetError, FleetUnavailable
from ..heartbeat.clock import RealClock
from ..heartbeat.config import HeartbeatConfig
from ..heartbeat.tasks import HEARTBEAT_FILE, HeartbeatFile, cron_next, load_heartbeat_file
from .models import AGENT_NAME_PATTERN, HeartbeatDelivery, HeartbeatEntry, Message
from .queue import Queue

if TYPE_CHECKING:
    from ..heartbeat.clock import Clock
    from ..heartbeat.runner import HeartbeatOutcome
    from .metrics import FleetMetrics

__all__ = [
    "HEARTBEAT_KEY_PREFIX",
    "HEARTBEAT_PRIORITY",
    "HeartbeatReport",
    "HeartbeatScheduler",
    "HeartbeatSlot",
    "ScaledClock",
    "heartbeat_key",
    "heartbeat_report",
    "load_agent_heartbeat",
    "next_slot",
    "parse_heartbeat_message",
    "run_heartbeat",
    "skip_kind",
]

log = logging.getLogger(__name__)

HEARTBEAT_KEY_PREFIX = "heartbeat:"
"""Idempotency keys with this prefix are the scheduler's; `Fleet.enqueue` refuses them from users."""
HEARTBEAT_PRIORITY = 30
"""The low band: a user's message waiting on the same worker goes first."""
STATE_PATH = ".openclaw-mini/heartbeat.json"
FIRE_CONCURRENCY = 32
FIRE_BATCH = 500
"""Slots enqueued at once by one scheduler pass."""


class ScaledClock(RealClock):
    """Wall time that runs `speed` times faster from `start` (epoch seconds) on: workers started with
    the same pair agree on the time, so a test or a drill sees an hour of slots in a minute."""

    def __init__(self, speed: float = 1.0, start: float | None = None) -> None:
        if speed <= 0:
            raise ValueError(f"clock speed must be positive, got {speed}")
        self.speed = speed
        self.start = time.time() if start is None else start

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.start + (time.time() - self.start) * self.speed, UTC)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any:
        return super().call_later(delay / self.speed, callback)


class HeartbeatSlot(BaseModel):
    """The text of a heartbeat message: which slot of the schedule it is, and why it exists."""

    heartbeat: Literal[1] = 1
    slot: float
    reason: Literal["interval", "cron"] = "interval"


def heartbeat_key(agent: str, slot: float) -> str:
    return f"{HEARTBEAT_KEY_PREFIX}{agent}:{round(slot * 1000)}"


def parse_heartbeat_message(message: Message) -> HeartbeatSlot | None:
    """The slot when `message` is one the scheduler enqueued (its key and text both say so)."""
    key = message.idempotency_key or ""
    if not key.startswith(HEARTBEAT_KEY_PREFIX):
        return None
    try:
        slot = HeartbeatSlot.model_validate_json(message.text)
    except ValidationError:
        return None
    return slot if key == heartbeat_key(message.agent, slot.slot) else None


# -- settings ---------------------------------------------------------------------------------
def load_agent_heartbeat(folder: Path) -> HeartbeatConfig | None:
    """The agent's heartbeat settings, or None when it has none to run (no HEARTBEAT.md, or off).

    `ConfigError` names the file and key when `[heartbeat]` in `openclaw-mini.toml` is wrong.
    """
    if not (folder / HEARTBEAT_FILE).exists():
        return None
    config_file = folder / "openclaw-mini.toml"
    table: Any = None
    if config_file.is_file():
        try:
            data = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{config_file}: cannot read it: {exc}") from exc
        table = data.get("heartbeat")  # `heartbeat = false` or an empty table: off, as on one machine
    try:
        config = HeartbeatConfig.coerce(table)
    except (ValidationError, ValueError) as exc:
        raise ConfigError(f"{config_file}: [heartbeat] {_first_error(exc)}") from exc
    return config if config.enabled else None


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "table"
        return f"{where}: {first['msg']}"
    return str(exc)


def _aware(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _within_hours(config: HeartbeatConfig, when: datetime) -> datetime | None:
    hours = config.active_hours
    if hours is None:
        return when
    return hours.next_start(when, config.zone())


def next_slot(
    config: HeartbeatConfig, heartbeat: HeartbeatFile | None, now: float, after: float | None = None
) -> tuple[float, str] | None:
    """The slot after `after` (None: the first, one interval from `now`): the interval grid anchored
    on the last slot, moved to the start of active hours when it falls outside them; an earlier cron
    task time wins. Slots missed while no worker lived collapse into the one just fired (as after a
    suspend on one machine), and the grid keeps its phase."""
    interval = config.interval_seconds
    if after is None:
        step = now + interval
    else:
        missed = max(0, math.floor((now - after) / interval))
        step = after + interval * (missed + 1)
    target = _within_hours(config, _aware(step))
    best: tuple[float, str] | None = None if target is None else (target.timestamp(), "interval")
    if heartbeat is not None and heartbeat.has_cron:
        zone = config.zone()
        base = _aware(max(now, after or now))
        for task in heartbeat.tasks:
            if task.kind == "cron" and task.cron:
                fire = cron_next(task.cron, base, zone)
                if fire is not None and (best is None or fire.timestamp() < best[0]):
                    best = (fire.timestamp(), "cron")
    return best


# -- the scheduler (every worker runs one) ----------------------------------------------------
@dataclass
class _Agent:
    stamp: tuple[float, ...]
    config: HeartbeatConfig | None
    file: HeartbeatFile | None


class HeartbeatScheduler:
    """Fires due heartbeat slots of the agents under `agents_dir` into the queue (see the module doc).

    `clock` gives the wall time (inject a `ScaledClock` or `FakeClock` to accelerate); `poll` is how
    often (real seconds) the schedule is read. Safe to run on every worker at once.
    """

    def __init__(
        self,
        queue: Queue,
        agents_dir: str | Path,
        *,
        clock: Clock | None = None,
        poll: float = 1.0,
        rescan: float = 30.0,
        metrics: FleetMetrics | None = None,
        batch: int = FIRE_BATCH,
    ) -> None:
        self.queue = queue
        self.agents_dir = Path(agents_dir)
        self.clock: Clock = clock or RealClock()
        self.poll = poll
        self.rescan = rescan
        self.metrics = metrics
        self.batch = batch
        self.fired = 0
        """Slots this scheduler enqueued (a slot enqueued by another worker first is not counted)."""
        self._agents: dict[str, _Agent] = {}
        self._problems: dict[str, str] = {}

    def now(self) -> float:
        return self.clock.now().timestamp()

    def agent(self, name: str) -> _Agent:
        """The agent's settings, re-read when its HEARTBEAT.md or openclaw-mini.toml changed."""
        folder = self.agents_dir / name
        stamp = tuple(_mtime(folder / part) for part in (HEARTBEAT_FILE, "openclaw-mini.toml"))
        cached = self._agents.get(name)
        if cached is not None and cached.stamp == stamp:
            return cached
        try:
            config = load_agent_heartbeat(folder)
        except ConfigError as exc:
            if self._problems.get(name) != str(exc):
                log.warning("heartbeat of agent %s is not scheduled: %s", name, exc)
            self._problems[name] = str(exc)
            config = None
        else:
            self._problems.pop(name, None)
        file = load_heartbeat_file(folder) if config is not None else None
        self._agents[name] = entry = _Agent(stamp, config, file)
        return entry

    def names(self) -> list[str]:
        if not self.agents_dir.is_dir():
            return []
        return sorted(
            e.name for e in self.agents_dir.iterdir() if e.is_dir() and AGENT_NAME_PATTERN.fullmatch(e.name)
        )

    def _ours(self, batch: list[HeartbeatEntry]) -> list[HeartbeatEntry]:
        """The entries of agents this worker serves (their folder is here)."""
        return [entry for entry in batch if (self.agents_dir / entry.agent).is_dir()]

    async def register(self) -> int:
        """Give every agent with a heartbeat and no slot yet its first one; returns how many."""
        added = 0
        now = self.now()
        for name in await asyncio.to_thread(self.names):  # a directory listing: off the loop
            info = await asyncio.to_thread(self.agent, name)
            if info.config is None:
                continue
            first = next_slot(info.config, info.file, now)
            if first is not None and await self.queue.schedule_heartbeat(
                name, first[0], first[1], expected=None
            ):
                added += 1
        return added

    async def fire_due(self) -> int:
        """Enqueue every due slot of our agents and move each to its next one; returns how many
        messages this call created. Slots go out concurrently (bounded): on a busy worker the round
        trips would otherwise queue behind its turns and make the slots late."""
        now = self.now()
        gate = asyncio.Semaphore(FIRE_CONCURRENCY)

        async def one(entry: HeartbeatEntry) -> bool:
            async with gate:
                return await self._fire(entry, now)

        created = 0
        foreign = 0  # due entries of agents another pool serves stay at the head: page past them
        while True:
            batch = await self.queue.due_heartbeats(now, self.batch, foreign)
            ours = await asyncio.to_thread(self._ours, batch)
            foreign += len(batch) - len(ours)
            created += sum(await asyncio.gather(*(one(entry) for entry in ours)))
            if len(batch) < self.batch:
                break
        self.fired += created
        return created

    async def _fire(self, entry: HeartbeatEntry, now: float) -> bool:
        info = await asyncio.to_thread(self.agent, entry.agent)
        if info.config is None:
            await self.queue.unschedule_heartbeat(entry.agent)
            return False
        conversation = info.config.session
        if info.config.isolated_session:
            conversation = f"heartbeat-{_aware(entry.due).astimezone(info.config.zone()):%Y%m%d-%H%M%S}"
        reason = "cron" if entry.reason == "cron" else "interval"
        _, new = await self.queue.enqueue(
            entry.agent,
            conversation,
            HeartbeatSlot(slot=entry.due, reason=reason).model_dump_json(),
            priority=HEARTBEAT_PRIORITY,
            idempotency_key=heartbeat_key(entry.agent, entry.due),
        )
        following = next_slot(info.config, info.file, now, entry.due)
        if following is None:
            await self.queue.unschedule_heartbeat(entry.agent)
        else:
            await self.queue.schedule_heartbeat(entry.agent, following[0], following[1], expected=entry.due)
        if new and self.metrics is not None:
            self.metrics.heartbeat_fires.inc()
        return bool(new)

    async def run(self, stop: asyncio.Event) -> None:
        """Register and fire until `stop` is set; an unreachable backend is retried, never fatal."""
        registered_at = -1e18
        while not stop.is_set():
            try:
                if time.monotonic() - registered_at >= self.rescan:
                    await self.register()
                    registered_at = time.monotonic()
                await self.fire_due()
            except FleetUnavailable:
                pass  # the worker's claim loop reports the outage
            except FleetError as exc:
                log.warning("heartbeat scheduler: %s", exc)
            waiter = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({waiter}, timeout=self.poll)
            finally:
                waiter.cancel()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime_ns / 1e9
    except OSError:
        return -1.0


# -- one heartbeat turn (on the worker that claimed the message) ------------------------------
def skip_kind(reason: str) -> str:
    """A short label for a skip reason (metrics and status): the reason text holds times."""
    for prefix, kind in (
        ("outside active hours", "active_hours"),
        (HEARTBEAT_FILE, "empty_file"),
        ("no task due", "no_task_due"),
        ("a run finished", "covered"),
    ):
        if reason.startswith(prefix):
            return kind
    return "other"


async def run_heartbeat(
    queue: Queue,
    agent: Any,
    workspace: Path,
    message: Message,
    slot: HeartbeatSlot,
    *,
    clock: Clock | None = None,
    metrics: FleetMetrics | None = None,
) -> str:
    """One heartbeat tick of `agent` (an `Agent` on the hydrated `workspace`) for `slot`; returns the
    summary recorded as the message's result. A failed model call raises, so the message retries."""
    from ..heartbeat.runner import HeartbeatRunner, HeartbeatTurn

    config = await asyncio.to_thread(load_agent_heartbeat, workspace) or HeartbeatConfig.coerce(None)

    async def turn(prompt: str, tasks: Any, request: Any) -> HeartbeatTurn:
        result = await agent.run(request.session or config.session, prompt)
        if metrics is not None:
            metrics.count_tokens(result.usage)
        if result.stop_reason == "error":
            raise FleetError(result.error or "the heartbeat turn failed")
        return HeartbeatTurn(text=result.text, tokens=result.usage.total_tokens)

    async def deliver(text: str, request: Any) -> None:
        record = HeartbeatDelivery(
            agent=message.agent, slot=slot.slot, message_id=message.id, text=text, at=time.time()
        )
        if config.sink and config.sink.startswith(("http://", "https://")):
            import httpx2

            # The URL may carry a token: errors name the status or the failure, never the URL.
            try:
                async with httpx2.AsyncClient(timeout=15.0) as client:
                    response = await client.post(config.sink, json=record.model_dump(mode="json"))
            except httpx2.HTTPError as exc:
                raise FleetError(
                    f"the heartbeat webhook could not be reached ({type(exc).__name__})"
                ) from None
            if response.status_code >= 300:
                raise FleetError(f"the heartbeat webhook answered HTTP {response.status_code}")
        else:
            await queue.log_heartbeat_delivery(record)

    runner = HeartbeatRunner(workspace, config, run_turn=turn, deliver=deliver, clock=clock)
    try:
        outcome: HeartbeatOutcome = await runner.run_once(slot.reason)
    finally:
        await runner.aclose()
    if metrics is not None:
        metrics.heartbeat_outcome(outcome.status, skip_kind(outcome.reason))
    if outcome.status == "error":
        raise FleetError(f"heartbeat of {message.agent}: {outcome.reason}")
    with contextlib.suppress(FleetUnavailable):
        await queue.record_heartbeat(message.agent, slot.slot, f"{outcome.status}: {outcome.reason}")
    return outcome.summary()


# -- status -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeartbeatReport:
    """One row of `fleet status`: the next slot, the last outcome, and (with the agents' folders)
    whether a tick now would run or why it would skip."""

    agent: str
    due: float
    reason: str
    last_slot: float | None
    last_outcome: str | None
    would_run: bool | None = None
    would_reason: str | None = None


async def heartbeat_report(
    queue: Queue, agents_dir: Path | None = None, *, clock: Clock | None = None
) -> list[HeartbeatReport]:
    """The schedule with last outcomes; with `agents_dir`, a dry run of each agent's next tick on
    its definition plus the stored HEARTBEAT.md and heartbeat state (no model call)."""
    rows = []
    for entry in await queue.heartbeat_schedule():
        would_run: bool | None = None
        why: str | None = None
        folder = agents_dir / entry.agent if agents_dir is not None else None
        if folder is not None and await asyncio.to_thread(folder.is_dir):
            would_run, why = await _dry_run(queue, folder, entry, clock)
        rows.append(
            HeartbeatReport(
                entry.agent, entry.due, entry.reason, entry.last_slot, entry.last_outcome, would_run, why
            )
        )
    return rows


async def _dry_run(
    queue: Queue, folder: Path, entry: HeartbeatEntry, clock: Clock | None
) -> tuple[bool | None, str]:
    from ..heartbeat.runner import HeartbeatRunner

    try:
        config = await asyncio.to_thread(load_agent_heartbeat, folder)
    except ConfigError as exc:
        return False, str(exc)
    if config is None:
        return False, "no HEARTBEAT.md, or the heartbeat is off"
    stored = await queue.fetch_files(entry.agent, [HEARTBEAT_FILE, STATE_PATH])
    scratch = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="openclaw-mini-hb-"))
    try:

        def prepare() -> None:
            source = folder / HEARTBEAT_FILE
            if source.is_file():
                shutil.copyfile(source, scratch / HEARTBEAT_FILE)
            for path, (_, data) in stored.items():
                target = scratch / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)

        await asyncio.to_thread(prepare)
        runner = HeartbeatRunner(scratch, config, clock=clock, run_turn=_never)
        status = await asyncio.to_thread(
            runner.status, _aware(max(entry.due, runner.clock.now().timestamp()))
        )
        return status.would_run, status.would_reason
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, True)


async def _never(*_: Any) -> Any:
    raise AssertionError("a dry run never calls the model")


def describe_due(due: float, now: float) -> str:
    """`2026-01-05 09:00:00 UTC (in 42 s)` for status output."""
    when = _aware(due).strftime("%Y-%m-%d %H:%M:%S UTC")
    delta = due - now
    if delta >= 0:
        return f"{when} (in {_short(delta)})"
    return f"{when} ({_short(-delta)} overdue)"


def _short(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"
