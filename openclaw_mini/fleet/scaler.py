"""`openclaw-mini fleet up`: supervise local worker processes, as many as the backlog needs.

The rule (agent-factory's, conversation-aware): demand = conversations waiting + conversations being
served (a conversation runs one message at a time, so 20 messages on one conversation count once);
desired = clamp(ceil(demand / per_worker), min, max). More workers start at once; when fewer are
needed for `scale_down_after` seconds, idle workers (load 0 in the registry) get SIGTERM, which drains
them (no claim is taken, nothing in flight is lost). A worker that exits without being asked to is
replaced (with backoff when it keeps dying young, e.g. a bad agents dir).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, Field, model_validator

from ..errors import FleetError, FleetUnavailable
from .handle import Fleet
from .models import Backlog

__all__ = ["ScalePolicy", "Scaler", "desired_workers"]

log = logging.getLogger(__name__)


class ScalePolicy(BaseModel):
    min_workers: int = Field(default=1, ge=0)
    max_workers: int = Field(default=4, ge=1)
    per_worker: int = Field(default=8, ge=1)
    """Conversations one worker should take (its concurrency is a fair value)."""
    scale_down_after: float = Field(default=30.0, ge=0.0)
    """Seconds demand must stay lower before idle workers are drained (no flapping on a lull)."""
    interval: float = Field(default=1.0, gt=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> ScalePolicy:
        if self.min_workers > self.max_workers:
            raise ValueError(f"--min {self.min_workers} is above --max {self.max_workers}")
        return self


def desired_workers(backlog: Backlog, policy: ScalePolicy) -> int:
    """clamp(ceil((conversations waiting + in flight) / per_worker), min, max)."""
    demand = backlog.waiting + backlog.in_flight
    return max(policy.min_workers, min(policy.max_workers, math.ceil(demand / policy.per_worker)))


@dataclass
class _Child:
    id: str
    process: asyncio.subprocess.Process
    started: float = field(default_factory=time.monotonic)
    draining: bool = False


class Scaler:
    """Runs `command + ["--id", id]` worker processes against `fleet`, scaled by `policy`.

    `command` is the worker's argv without `--id` (the CLI builds `openclaw-mini fleet worker ...`).
    """

    def __init__(
        self, fleet: Fleet, command: Sequence[str], policy: ScalePolicy, *, name: str = "worker"
    ) -> None:
        self.fleet = fleet
        self.command = list(command)
        self.policy = policy
        self.name = name
        self.children: dict[str, _Child] = {}
        self.started = 0
        self.replaced = 0
        self.drained = 0
        self.desired = policy.min_workers
        self._serial = 0
        self._stop = asyncio.Event()
        self._low_since: float | None = None
        self._restart_delay = 0.0
        self._not_before = 0.0

    def stop(self) -> None:
        """Drain every worker and return from `run()` once they exited."""
        self._stop.set()

    @property
    def active(self) -> list[_Child]:
        return [c for c in self.children.values() if not c.draining]

    async def run(self, drain_timeout: float = 60.0) -> None:
        try:
            while not self._stop.is_set():
                await self._step()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.policy.interval)
        finally:
            await self._shutdown(drain_timeout)

    async def _step(self) -> None:
        self._reap()
        try:
            backlog = await self.fleet.queue.backlog()
        except FleetUnavailable as exc:
            log.warning("scaler: %s; keeping %d worker(s)", exc, len(self.active))
            backlog = None
        if backlog is not None:
            self.desired = desired_workers(backlog, self.policy)
        active = self.active
        now = time.monotonic()
        if self.desired > len(active) or len(active) < self.policy.min_workers:
            self._low_since = None
            if now >= self._not_before:
                for _ in range(self.desired - len(active)):
                    await self._start()
        elif self.desired < len(active):
            self._low_since = self._low_since or now
            if now - self._low_since >= self.policy.scale_down_after:
                await self._drain_idle(len(active) - self.desired)
        else:
            self._low_since = None

    def _reap(self) -> None:
        for child in list(self.children.values()):
            code = child.process.returncode
            if code is None:
                continue
            del self.children[child.id]
            if child.draining:
                log.info("scaler: %s drained and exited (%d)", child.id, code)
                continue
            self.replaced += 1
            lived = time.monotonic() - child.started
            self._restart_delay = min(30.0, max(0.5, self._restart_delay * 2)) if lived < 10 else 0.0
            self._not_before = time.monotonic() + self._restart_delay
            log.warning(
                "scaler: %s exited unasked (code %d after %.1f s); replacing it%s",
                child.id,
                code,
                lived,
                f" in {self._restart_delay:.1f} s" if self._restart_delay else "",
            )

    async def _start(self) -> None:
        self._serial += 1
        worker_id = f"{self.name}-{self._serial}"
        try:
            process = await asyncio.create_subprocess_exec(*self.command, "--id", worker_id)
        except OSError as exc:
            raise FleetError(f"cannot start a worker ({self.command[0]}): {exc}") from exc
        self.children[worker_id] = _Child(worker_id, process)
        self.started += 1
        log.info("scaler: started %s (pid %d); %d wanted", worker_id, process.pid, self.desired)

    async def _drain_idle(self, count: int) -> None:
        try:
            status = await self.fleet.status()
        except FleetUnavailable:
            return
        loads = {w.id: w.load for w in status.workers if w.state == "active" and not w.lost}
        # Newest first; a worker not registered yet is starting, not idle.
        idle = [c for c in reversed(self.active) if loads.get(c.id) == 0]
        for child in idle[:count]:
            child.draining = True
            self.drained += 1
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
            log.info("scaler: draining idle %s; %d wanted", child.id, self.desired)
        if idle:
            self._low_since = time.monotonic()

    async def _shutdown(self, drain_timeout: float) -> None:
        for child in self.children.values():
            child.draining = True
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
        waits = [asyncio.ensure_future(c.process.wait()) for c in self.children.values()]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=drain_timeout + 30)
            if pending:
                for child in self.children.values():
                    if child.process.returncode is None:
                        log.warning("scaler: %s did not drain in time; killing it", child.id)
                        with contextlib.suppress(ProcessLookupError):
                            child.process.kill()
                await asyncio.wait(waits, timeout=30)
        self.children.clear()
