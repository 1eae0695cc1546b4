"""The wake layer: many "please run the heartbeat" requests become few handler runs.

Requests come from the interval timer, cron timers, finished background commands, the user and
anything else. Within the coalescing window they merge into one pending wake that carries the
most important reason; while the handler runs, new requests are buffered and run once right
after it; a handler that says it is busy, or raises, is retried later. Everything is timers on
the injected `Clock`: nothing polls, and `aclose()` leaves no timer or task behind.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from .clock import Clock, RealClock, TimerHandle

__all__ = ["BUSY", "HeartbeatRequest", "HeartbeatWake", "normalize_reason", "reason_kind", "reason_priority"]

logger = logging.getLogger(__name__)

BUSY = "busy"
"""A handler returns this (or an object with `busy = True`) to be retried after `retry_ms`."""

_PRIORITY = {"exec": 4, "manual": 4, "cron": 3, "interval": 1, "retry": 0}
_OTHER = 2  # "requested", "hook", anything unknown


def normalize_reason(reason: str | None) -> str:
    """A wake reason trimmed; blank (or None) becomes `requested`, as upstream."""
    text = (reason or "").strip()
    return text or "requested"


def reason_kind(reason: str) -> str:
    """The kind a reason ranks as: `cron:<job-id>` is a `cron` wake that keeps its job id."""
    head, sep, _ = reason.partition(":")
    return head if sep and head in _PRIORITY else reason


def reason_priority(reason: str) -> int:
    """exec, manual (4) > cron (3) > requested and anything else (2) > interval (1) > retry (0)."""
    return _PRIORITY.get(reason_kind(reason), _OTHER)


@dataclass(frozen=True)
class HeartbeatRequest:
    """One wake of the heartbeat, as the handler sees it.

    `reason` is the highest-priority reason among the merged requests; `reasons` lists every
    distinct reason merged in (a retry keeps the reasons of the wake it retries), `coalesced` how
    many requests it stands for. The runner fills in
    `session` and `notes` before handing it to a turn or callback.
    """

    reason: str
    requested_at: datetime
    reasons: tuple[str, ...] = ()
    coalesced: int = 1
    attempt: int = 0
    """0 for a first try; n for the n-th retry after busy/failure."""
    retry_of: str | None = None
    """For a `retry` wake: the reason of the wake that failed."""
    session: str | None = None
    notes: tuple[str, ...] = field(default=())
    """Untrusted system notes (e.g. exec completions) pending for this run."""

    @property
    def effective_reason(self) -> str:
        """The reason that counts for bypass rules: the failed wake's reason for a retry."""
        return self.retry_of if self.reason == "retry" and self.retry_of else self.reason

    def merged(self, other: HeartbeatRequest) -> HeartbeatRequest:
        """This pending request with `other` folded in (higher priority wins; equal: the newer)."""
        winner = other if reason_priority(other.reason) >= reason_priority(self.reason) else self
        reasons = tuple(dict.fromkeys((*self.reasons, *other.reasons)))
        return replace(winner, reasons=reasons, coalesced=self.coalesced + other.coalesced)


Handler = Callable[[HeartbeatRequest], Awaitable[Any]]


class HeartbeatWake:
    """Coalesce, prioritise, buffer and retry heartbeat wakes for one async `handler`.

    `request()` may be called from any coroutine, plain callback or (once the layer has seen its
    loop) another thread. The handler never runs twice at once.
    """

    def __init__(
        self,
        handler: Handler,
        coalesce_ms: float = 250.0,
        retry_ms: float = 1000.0,
        *,
        clock: Clock | None = None,
        max_retry_ms: float = 60_000.0,
    ) -> None:
        if coalesce_ms < 0 or retry_ms <= 0:
            raise ValueError("HeartbeatWake: coalesce_ms must be >= 0 and retry_ms > 0")
        self._handler = handler
        self.coalesce_ms = coalesce_ms
        self.retry_ms = retry_ms
        self.max_retry_ms = max(max_retry_ms, retry_ms)
        self._clock: Clock = clock or RealClock()
        self._pending: HeartbeatRequest | None = None
        self._due: float | None = None  # monotonic time the pending wake should fire
        self._timer: TimerHandle | None = None
        self._timer_due: float | None = None
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._closed = False
        self._not_before: float | None = None  # after a failed run: no run before the retry delay
        self.runs = 0
        """Handler calls so far (benchmarks and tests read it)."""

    @property
    def pending(self) -> HeartbeatRequest | None:
        """The wake waiting to run (merged), if any."""
        return self._pending

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def closed(self) -> bool:
        return self._closed

    def request(self, reason: str = "requested", *, coalesce_ms: float | None = None) -> None:
        """Ask for a run. Within `coalesce_ms` (default: the layer's window) requests merge.

        After a failed or busy run, no run starts before its retry delay is over, whatever asks.
        """
        reason = normalize_reason(reason)
        if self._closed:
            logger.debug("heartbeat wake closed; dropping request %r", reason)
            return
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self._request, reason, coalesce_ms, None)
            return
        self._request(reason, coalesce_ms, None)

    def _request(self, reason: str, coalesce_ms: float | None, template: HeartbeatRequest | None) -> None:
        if self._closed:
            return
        self._remember_loop()
        incoming = template or HeartbeatRequest(
            reason=reason, requested_at=self._clock.now(), reasons=(reason,)
        )
        self._pending = incoming if self._pending is None else self._pending.merged(incoming)
        window = self.coalesce_ms if coalesce_ms is None else max(0.0, coalesce_ms)
        self._schedule(self._clock.monotonic() + window / 1000.0)

    def bind(self) -> None:
        """Remember the running loop now, so later calls from other threads are handed over to it."""
        self._remember_loop()

    def _remember_loop(self) -> None:
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._loop_thread = threading.get_ident()

    def _schedule(self, due: float) -> None:
        """The pending wake fires at the earliest `due` asked for; while a run is in flight it waits.

        The window starts with the first request of a batch and later requests never push it back,
        so a steady stream still runs once per window; a batch buffered during a run fires when the
        run ends or when its own window closes, whichever is later.
        """
        self._due = due if self._due is None else min(self._due, due)
        if self._not_before is not None:
            self._due = max(self._due, self._not_before)
        if self.running:
            return
        if self._timer is not None and self._timer_due is not None and self._timer_due <= self._due:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = self._due
        self._timer = self._clock.call_later(max(0.0, self._due - self._clock.monotonic()), self._fire)

    def _fire(self) -> None:
        self._timer, self._timer_due = None, None
        if self._closed or self._pending is None or self.running:
            return
        if self._not_before is not None and self._clock.monotonic() < self._not_before:
            self._schedule(self._not_before)
            return
        request, self._pending, self._due = self._pending, None, None
        self.runs += 1
        self._task = self._clock.spawn(self._run(request))

    async def _run(self, request: HeartbeatRequest) -> None:
        retry = False
        try:
            result = await self._handler(request)
            retry = result == BUSY or getattr(result, "busy", False) is True
            if retry:
                logger.debug("heartbeat handler busy (reason %s); retrying", request.reason)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("heartbeat handler failed (reason %s); retrying", request.reason)
            retry = True
        finally:
            self._task = None
        if self._closed:
            return
        if retry:
            attempt = request.attempt + 1
            delay_ms = min(self.retry_ms * (2 ** (attempt - 1)), self.max_retry_ms)
            again = HeartbeatRequest(
                reason="retry",
                requested_at=request.requested_at,  # when the wake was first asked for
                reasons=tuple(dict.fromkeys(("retry", *request.reasons))),
                attempt=attempt,
                retry_of=request.effective_reason,
            )
            self._pending = again if self._pending is None else self._pending.merged(again)
            # A hard floor: a request arriving sooner waits for it too (it would hit the same
            # failure), so the retry delay holds against a burst of wakes.
            self._not_before = self._clock.monotonic() + delay_ms / 1000.0
            self._due = None
            self._schedule(self._not_before)
            return
        self._not_before = None
        if self._pending is not None and self._due is not None:
            self._schedule(self._due)

    async def wait_idle(self) -> None:
        """Wait until no handler run is in flight (pending wakes may still be armed)."""
        while self._task is not None and not self._task.done():
            await asyncio.wait({self._task})

    async def aclose(self) -> None:
        """Cancel the pending wake and any run in flight; later requests are ignored."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_due, self._due, self._pending = None, None, None, None
        task, self._task = self._task, None
        if task is not None and task is asyncio.current_task():
            return  # closed from inside the handler: it finishes on its own
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
            except Exception:
                logger.debug("heartbeat handler ended with an error while closing", exc_info=True)
