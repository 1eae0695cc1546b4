"""`Worker`: claims messages, runs each as an `Agent` turn in a slot, persists what it changed, acks.

Life cycle: active (claiming) -> draining (`drain()`, e.g. on SIGTERM: no new claims, in-flight turns
finish, or are handed back after `drain_timeout`) -> stopping -> stopped (registry entry removed).
While a turn runs its lease is renewed every third of the lease; a refused renewal (the lease was
taken over) cancels the turn and its result is discarded. The backend being unreachable is retried
with backoff and logged, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import FleetError, FleetUnavailable, StaleLease, StoreConflict
from .events import TurnPublisher, turn_event
from .handle import Fleet
from .models import AGENT_NAME_PATTERN, Claim, TurnEvent, WorkerInfo, WorkerState
from .queue import Queue
from .store import AgentWorkspace, guarded_file_tools

if TYPE_CHECKING:
    from ..heartbeat.clock import Clock
    from .metrics import FleetMetrics

__all__ = ["Worker"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class _Permanent(FleetError):
    """A failure that no retry can fix (e.g. the agent's folder is missing): dead-letter at once."""


def _preload() -> None:
    import anthropic  # noqa: F401

    from ..agent import Agent  # noqa: F401
    from ..memory import MemoryStore  # noqa: F401
    from ..skills import SkillLoader  # noqa: F401
    from ..tools import files, memory, sessions, shell  # noqa: F401


def _failure_kind(exc: BaseException) -> str:
    """A metrics label: what kind of failure ended a turn."""
    if isinstance(exc, StoreConflict):
        return "store_conflict"
    if isinstance(exc, _Permanent):
        return "agent_missing"
    if isinstance(exc, FleetError):
        return "turn_error"
    return "exception"


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, (_Permanent, ValueError)):
        return False
    return bool(getattr(exc, "retryable", True))


class Worker:
    """Serve a fleet's messages with `concurrency` parallel turns until drained or cancelled.

    ```python
    await Worker(fleet, agents_dir="agents/", concurrency=8).run()
    ```
    `agents_dir` holds one workspace folder per agent (AGENTS.md, skills/ ...). `agent_options` are
    passed to every `Agent(...)` (e.g. `model`, `base_url`, `api_key`; defaults come from the env).
    With `heartbeats` (default) the worker also fires its agents' due heartbeat slots (see
    `fleet.heartbeats`; `clock` accelerates time in tests, `heartbeat_poll` is how often it looks);
    `metrics` (a `FleetMetrics`) records turns, tokens, failures and heartbeats.
    """

    def __init__(
        self,
        fleet: Fleet | Queue,
        agents_dir: str | Path,
        *,
        concurrency: int = 8,
        worker_id: str | None = None,
        lease: float = 30.0,
        drain_timeout: float | None = None,
        cache_dir: str | Path | None = None,
        agent_options: dict[str, Any] | None = None,
        heartbeats: bool = True,
        clock: Clock | None = None,
        heartbeat_poll: float = 1.0,
        metrics: FleetMetrics | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if lease < 0.2:
            raise ValueError(f"lease must be at least 0.2 s, got {lease}")
        self.queue = fleet.queue if isinstance(fleet, Fleet) else fleet
        self.agents_dir = Path(agents_dir)
        self.concurrency = concurrency
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.lease = lease
        self.drain_timeout = lease if drain_timeout is None else drain_timeout
        self.agent_options = dict(agent_options or {})
        self.state: WorkerState = "active"
        self.completed = 0
        self.failed = 0
        self.discarded = 0
        self._cache_arg = Path(cache_dir) if cache_dir is not None else None
        self._cache: Path | None = None
        self._draining = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._beat_now = asyncio.Event()
        self._tasks: dict[asyncio.Task[None], Claim] = {}
        self._free_slots = list(range(concurrency - 1, -1, -1))
        self._workspaces: dict[tuple[int, str], AgentWorkspace] = {}
        self._agents: dict[tuple[int, str], Any] = {}
        """One `Agent` per slot and agent, kept while its copy is clean (its HTTP client stays warm;
        it notices a transcript another worker extended by the file's size)."""
        self._lost: set[str] = set()
        self._started = time.time()
        self._outage_logged = False
        self.clock = clock
        self.metrics = metrics
        self._model: Any = None
        self.scheduler: Any = None
        if heartbeats:
            from .heartbeats import HeartbeatScheduler

            self.scheduler = HeartbeatScheduler(
                self.queue, self.agents_dir, clock=clock, poll=heartbeat_poll, metrics=metrics
            )

    # -- public --------------------------------------------------------------------------------
    def drain(self) -> None:
        """Stop claiming; `run()` returns once in-flight turns finished or were handed back."""
        if self.state == "active":
            self.state = "draining"
        self._draining.set()
        self._beat_now.set()  # show "draining" in the registry at once

    @property
    def load(self) -> int:
        return len(self._tasks)

    def agents(self) -> list[str]:
        if not self.agents_dir.is_dir():
            raise FleetError(f"agents dir {self.agents_dir} is not a folder (one workspace folder per agent)")
        return sorted(
            entry.name
            for entry in self.agents_dir.iterdir()
            if entry.is_dir() and AGENT_NAME_PATTERN.fullmatch(entry.name)
        )

    async def run(self) -> None:
        """Claim and serve until `drain()` (then finish in-flight turns) or cancellation."""
        agents = self.agents()
        if not agents:
            raise FleetError(f"agents dir {self.agents_dir} has no agent folders")
        self._cache = self._cache_arg or Path(
            await asyncio.to_thread(tempfile.mkdtemp, prefix="openclaw-mini-worker-")
        )
        # Import the agent stack now: a first import inside a turn blocks the loop for a second or
        # more, long enough to miss a short lease's renewal.
        await asyncio.to_thread(_preload)
        beat: asyncio.Task[None] | None = None
        schedule: asyncio.Task[None] | None = None
        try:
            await self._persist(lambda: self.queue.heartbeat(self._info(agents)), "register")
            log.info("worker %s serving %s from %s", self.id, ", ".join(agents), self.queue.url)
            beat = asyncio.create_task(self._heartbeats(agents))
            if self.scheduler is not None:
                schedule = asyncio.create_task(self.scheduler.run(self._draining))
            await self._claim_loop()
            await self._finish_in_flight()
        finally:
            if schedule is not None:
                schedule.cancel()
                await asyncio.gather(schedule, return_exceptions=True)
            await self._stop_tasks()
            self.state = "stopping"
            self._beat_now.set()
            for slot, name in list(self._agents):
                await self._forget(slot, name)
            if self._model is not None:
                from ..llm import AnthropicModel

                with contextlib.suppress(Exception):
                    await AnthropicModel.aclose(self._model)  # the shared client, past its no-op
                self._model = None
            if beat is not None:
                await asyncio.wait({beat}, timeout=15)
                beat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beat
            with contextlib.suppress(FleetError):
                await asyncio.wait_for(self.queue.remove_worker(self.id), 10)
            self.state = "stopped"
            if self._cache_arg is None and self._cache is not None:
                await asyncio.to_thread(shutil.rmtree, self._cache, True)

    # -- loops ---------------------------------------------------------------------------------
    def _info(self, agents: list[str]) -> WorkerInfo:
        return WorkerInfo(
            id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            state=self.state,
            concurrency=self.concurrency,
            load=self.load,
            agents=agents,
            lease_seconds=self.lease,
            started_at=self._started,
        )

    async def _heartbeats(self, agents: list[str]) -> None:
        interval = max(0.2, self.lease / 3)
        while self.state not in ("stopping", "stopped"):
            await self._wait(self._beat_now, interval)
            self._beat_now.clear()
            if self.state in ("stopping", "stopped"):
                return
            with contextlib.suppress(FleetUnavailable):
                await self.queue.heartbeat(self._info(agents))

    async def _persist(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """Retry `call` while the backend is unreachable, with backoff, saying so once per outage."""
        delay = 0.2
        while True:
            try:
                result = await call()
            except FleetUnavailable as exc:
                if not self._outage_logged:
                    log.warning("worker %s: %s; retrying with backoff (%s)", self.id, exc, what)
                    self._outage_logged = True
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 5.0)
                continue
            if self._outage_logged:
                log.warning("worker %s: the fleet at %s is reachable again", self.id, self.queue.url)
                self._outage_logged = False
            return result

    async def _claim_loop(self) -> None:
        idle = 0.02
        while not self._draining.is_set():
            free = self.concurrency - len(self._tasks)
            if free <= 0:
                self._slot_freed.clear()
                await self._wait(self._slot_freed, 1.0)
                continue
            try:
                claims = await self.queue.claim(self.id, lease_seconds=self.lease, limit=free)
            except FleetUnavailable as exc:
                if not self._outage_logged:
                    log.warning("worker %s: %s; retrying with backoff", self.id, exc)
                    self._outage_logged = True
                await self._wait(self._draining, min(5.0, max(idle, 0.5)) * random.uniform(0.5, 1.0))
                idle = min(idle * 2, 5.0)
                continue
            if self._outage_logged:
                log.warning("worker %s: the fleet at %s is reachable again", self.id, self.queue.url)
                self._outage_logged = False
            for claim in claims:
                slot = self._free_slots.pop()
                task = asyncio.create_task(self._serve(claim, slot))
                self._tasks[task] = claim
            if claims:
                idle = 0.02
            else:
                await self._wait(self._draining, idle)
                idle = min(idle * 1.5, 0.05)

    @staticmethod
    async def _wait(event: asyncio.Event, seconds: float) -> None:
        """Until the event is set or `seconds` pass. `asyncio.wait` never swallows a cancel, unlike
        `wait_for`/`timeout` on Python 3.11 when the cancel and the deadline coincide."""
        if event.is_set():
            return
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({waiter}, timeout=seconds)
        finally:
            waiter.cancel()

    async def _finish_in_flight(self) -> None:
        if self._tasks:
            log.info("worker %s draining: %d turn(s) in flight", self.id, len(self._tasks))
            await asyncio.wait(list(self._tasks), timeout=self.drain_timeout)

    async def _stop_tasks(self) -> None:
        """Cancel what is still running: each hands its message back (no attempt counted)."""
        pending = list(self._tasks)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=30)

    # -- one turn ------------------------------------------------------------------------------
    async def _serve(self, claim: Claim, slot: int) -> None:
        me = asyncio.current_task()
        assert me is not None
        keeper = asyncio.create_task(self._keep_lease(claim, me))
        workspace: AgentWorkspace | None = None
        clean = False
        began = time.monotonic()
        publisher = TurnPublisher(self.queue, claim.message.id)
        final: list[TurnEvent] = []
        try:
            workspace = self._workspace(slot, claim.message.agent)
            text, changes = await self._turn(claim, workspace, slot, publisher)
            keeper.cancel()
            await self._persist(lambda: self.queue.complete(claim, text, changes), "complete")
            final.append(TurnEvent(type="done", status="done", text=text, attempt=claim.attempt))
            await workspace.committed(changes)
            clean = True
            self.completed += 1
            self._measure("done", began)
        except asyncio.CancelledError:
            if claim.lease_id in self._lost:
                me.uncancel()
                self.discarded += 1
                self._measure("discarded", began, "stale_lease")
                log.warning(
                    "worker %s: lease on %s lost mid-turn; result discarded", self.id, claim.message.id
                )
            else:
                with contextlib.suppress(FleetError):
                    await asyncio.wait_for(self.queue.release(claim), 10)
                raise
        except StaleLease:
            self.discarded += 1
            self._measure("discarded", began, "stale_lease")
            log.warning("worker %s: lease on %s was taken over; result discarded", self.id, claim.message.id)
        except Exception as exc:
            self.failed += 1
            reason = (
                str(exc) if isinstance(exc, (StoreConflict, FleetError)) else f"{type(exc).__name__}: {exc}"
            )
            retryable = _retryable(exc)
            self._measure("failed", began, _failure_kind(exc))
            log.warning("worker %s: message %s failed: %s", self.id, claim.message.id, reason)
            with contextlib.suppress(StaleLease):
                outcome = await self._persist(
                    lambda: self.queue.fail(claim, reason, retryable=retryable), "record a failure"
                )
                dead = outcome.status == "dead_letter"
                final.append(TurnEvent(type="error", text=reason, attempt=claim.attempt, retrying=not dead))
                if dead:
                    final.append(TurnEvent(type="done", status="dead_letter", text=reason))
        finally:
            keeper.cancel()
            self._lost.discard(claim.lease_id)
            try:
                try:
                    if workspace is not None and not clean:
                        await self._forget(slot, claim.message.agent)
                        await workspace.reset()
                finally:
                    for event in final:
                        publisher.add(event)
                    await publisher.close()
            finally:
                self._free_slots.append(slot)
                self._tasks.pop(me, None)
                self._slot_freed.set()

    def _shared_model(self) -> Any:
        """One model client for every agent this worker builds: a client costs ~40 ms (its TLS
        context) and a connection pool, and a busy worker builds an agent per slot and agent."""
        if self._model is None:
            from ..config import AgentConfig, build_config
            from ..llm import AnthropicModel

            class Shared(AnthropicModel):
                async def aclose(self) -> None:
                    """Agents come and go; the worker closes the client when it stops."""

            fields = {k: v for k, v in self.agent_options.items() if k in AgentConfig.model_fields}
            settings = build_config(**fields)
            model = Shared.from_config(settings)
            model.model_name = settings.model  # type: ignore[attr-defined]  # what `Agent` reads
            self._model = model
        return self._model

    def _measure(self, outcome: str, began: float, failure: str | None = None) -> None:
        if self.metrics is not None:
            self.metrics.turn_finished(outcome, time.monotonic() - began)
            if failure is not None:
                self.metrics.failure(failure)

    def _workspace(self, slot: int, agent: str) -> AgentWorkspace:
        key = (slot, agent)
        if key not in self._workspaces:
            definition = self.agents_dir / agent
            if not definition.is_dir():
                raise _Permanent(f"agent {agent!r} has no folder under {self.agents_dir} on worker {self.id}")
            assert self._cache is not None
            root = self._cache / f"slot-{slot}" / agent
            self._workspaces[key] = AgentWorkspace(self.queue, agent, definition, root)
        return self._workspaces[key]

    async def _forget(self, slot: int, name: str) -> None:
        agent = self._agents.pop((slot, name), None)
        if agent is not None:
            with contextlib.suppress(Exception):
                await agent.aclose()

    async def _turn(
        self, claim: Claim, workspace: AgentWorkspace, slot: int, publisher: TurnPublisher
    ) -> tuple[str, list[Any]]:
        from ..agent import Agent

        await workspace.hydrate(claim.message.conversation)
        key = (slot, claim.message.agent)
        agent = self._agents.get(key)
        if agent is None:
            options = dict(self.agent_options)
            options["tools"] = [*options.get("tools", ()), *guarded_file_tools(workspace)]
            if options.get("model") is None or isinstance(options["model"], str):
                options["model"] = self._shared_model()
            agent = Agent(workspace_dir=workspace.root, agent_id=claim.message.agent, **options)
            self._agents[key] = agent
        from .heartbeats import parse_heartbeat_message, run_heartbeat

        heartbeat = parse_heartbeat_message(claim.message)
        if heartbeat is not None:
            summary = await run_heartbeat(
                self.queue,
                agent,
                workspace.root,
                claim.message,
                heartbeat,
                clock=self.clock,
                metrics=self.metrics,
            )
            return summary, await workspace.changes()
        result, error = None, None
        async for event in agent.stream(claim.message.conversation, claim.message.text):  # as Agent.run
            if event.type == "error":
                error = event.data.get("exception")
            elif event.type == "done":
                result = event.result
            elif (wire := turn_event(event)) is not None:
                publisher.add(wire)  # the gateway streams these to SSE clients as they come
        if error is not None:
            raise error
        assert result is not None
        if self.metrics is not None:
            self.metrics.count_tokens(result.usage)
        if result.stop_reason == "error":
            raise FleetError(result.error or "the turn failed")
        return result.text, await workspace.changes()

    async def _keep_lease(self, claim: Claim, turn: asyncio.Task[None]) -> None:
        interval = self.lease / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.queue.renew(claim, lease_seconds=self.lease)
            except StaleLease:
                self._lost.add(claim.lease_id)
                turn.cancel()
                return
            except FleetUnavailable:
                continue  # keep trying; the claim loop logs the outage
