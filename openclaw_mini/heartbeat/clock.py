"""Time for the heartbeat: wall clock, monotonic clock, timers and task spawning in one object.

The wake layer and the runner never call `time`, `datetime.now` or `loop.call_later` directly:
they ask a `Clock`. Production uses `RealClock` (asyncio timers, no polling); tests use
`FakeClock`, whose `advance()` fires due timers in order and waits for the work they started, so
a day of heartbeats is simulated in milliseconds without sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "RealClock", "TimerHandle"]


@runtime_checkable
class TimerHandle(Protocol):
    """What `Clock.call_later` returns: something that can be cancelled."""

    def cancel(self) -> None: ...


@runtime_checkable
class Clock(Protocol):
    """Time source and scheduler used by `HeartbeatWake` and `HeartbeatRunner`."""

    def now(self) -> datetime:
        """Aware wall-clock time (UTC)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; used for coalescing windows."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run `callback` (sync) after `delay` monotonic seconds."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Start `coro` as a task (the fake clock tracks these to know when work has settled)."""
        ...


class RealClock:
    """System time with asyncio timers (`loop.call_later`): nothing polls."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return asyncio.get_running_loop().create_task(coro)


class _FakeTimer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock for tests: time moves only when `advance()` (or `jump()`) is called.

    `advance(seconds)` fires every timer that falls due, in order, setting the clock to each
    timer's time before firing it, and (with `wait=True`) waits for the tasks those timers
    spawned before moving on, so the code under test sees time pass exactly as it would live.
    `jump(seconds)` moves only the wall clock, as a laptop suspend or an NTP step does.
    """

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("FakeClock start time must be timezone-aware")
        self._wall = start
        self._mono = 1000.0
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()
        self._tasks: set[asyncio.Task[Any]] = set()

    def now(self) -> datetime:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        timer = _FakeTimer(self._mono + max(0.0, delay), callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def pending_timers(self) -> int:
        """Timers armed and not cancelled (tests use it to prove nothing is left behind)."""
        return sum(1 for _, _, timer in self._timers if not timer.cancelled)

    def next_timer_in(self) -> float | None:
        """Seconds until the earliest live timer, or None."""
        live = [when for when, _, timer in self._timers if not timer.cancelled]
        return min(live) - self._mono if live else None

    def jump(self, seconds: float) -> None:
        """Move the wall clock only (suspend/resume, NTP step); monotonic time and timers stay."""
        self._wall += timedelta(seconds=seconds)

    def set_now(self, when: datetime) -> None:
        """Set the wall clock to `when` (aware) without firing timers."""
        if when.tzinfo is None:
            raise ValueError("FakeClock.set_now needs a timezone-aware datetime")
        self._wall = when

    async def advance(self, seconds: float = 0.0, *, wait: bool = True) -> None:
        """Move both clocks forward by `seconds`, firing due timers in order.

        With `wait=False` spawned tasks only get a few loop iterations instead of being awaited:
        use it when a task under test is deliberately blocked on something the test releases.
        """
        target = self._mono + max(0.0, seconds)
        await self.settle(wait=wait)
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._move_to(when)
            timer.callback()
            await self.settle(wait=wait)
        self._move_to(target)
        await self.settle(wait=wait)

    async def settle(self, *, wait: bool = True) -> None:
        """Let spawned work run: a few loop turns, then (with `wait`) until spawned tasks finish."""
        for _ in range(5):
            await asyncio.sleep(0)
        while wait and self._tasks:
            await asyncio.wait(set(self._tasks))
            for _ in range(5):
                await asyncio.sleep(0)

    def _move_to(self, mono: float) -> None:
        if mono > self._mono:
            self._wall += timedelta(seconds=mono - self._mono)
            self._mono = mono
