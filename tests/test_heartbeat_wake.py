"""The wake layer: coalescing, priority, buffering, retry and close, on a fake clock and for real."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from openclaw_mini.heartbeat import (
    BUSY,
    FakeClock,
    HeartbeatRequest,
    HeartbeatWake,
    reason_kind,
    reason_priority,
)


class Recorder:
    """A handler that records its calls; optionally blocks until released, fails, or says busy."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock
        self.calls: list[HeartbeatRequest] = []
        self.times: list[float] = []
        self.gate: asyncio.Event | None = None
        self.fail_first = 0
        self.busy_first = 0

    async def __call__(self, request: HeartbeatRequest) -> object:
        self.calls.append(request)
        self.times.append(self.clock.monotonic() if self.clock else time.monotonic())
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_first > 0:
            self.fail_first -= 1
            raise RuntimeError("boom")
        if self.busy_first > 0:
            self.busy_first -= 1
            return BUSY
        return None


def test_priority_order() -> None:
    ordered = ["retry", "interval", "requested", "cron", "exec"]
    assert [reason_priority(r) for r in ordered] == sorted(reason_priority(r) for r in ordered)
    assert reason_priority("manual") == reason_priority("exec")
    assert reason_priority("hook") == reason_priority("requested")


async def test_requests_inside_the_window_coalesce_into_one_run_with_the_top_reason() -> None:
    clock = FakeClock()
    handler = Recorder(clock)
    wake = HeartbeatWake(handler, coalesce_ms=250, clock=clock)
    for reason in ("interval", "requested", "cron", "retry", "interval"):
        wake.request(reason)
        await clock.advance(0.04)
    assert handler.calls == []
    await clock.advance(0.1)
    assert len(handler.calls) == 1
    request = handler.calls[0]
    assert request.reason == "cron"
    assert request.coalesced == 5
    assert set(request.reasons) == {"interval", "requested", "cron", "retry"}
    await clock.advance(5)
    assert len(handler.calls) == 1
    await wake.aclose()


async def test_fires_at_the_end_of_the_window_from_the_first_request() -> None:
    clock = FakeClock()
    handler = Recorder(clock)
    wake = HeartbeatWake(handler, coalesce_ms=250, clock=clock)
    start = clock.monotonic()
    wake.request()
    await clock.advance(0.2)
    wake.request()  # does not push the window: a steady stream cannot starve the handler
    await clock.advance(0.1)
    assert handler.times == [pytest.approx(start + 0.25)]
    await wake.aclose()


async def test_equal_priority_keeps_the_newest() -> None:
    clock = FakeClock()
    handler = Recorder(clock)
    wake = HeartbeatWake(handler, clock=clock)
    wake.request("exec")
    wake.request("manual")
    await clock.advance(0.3)
    assert handler.calls[0].reason == "manual"
    wake.request("manual")
    wake.request("exec")
    wake.request("interval")
    await clock.advance(0.3)
    assert handler.calls[1].reason == "exec"
    await wake.aclose()


async def test_a_zero_window_request_fires_at_once_and_pulls_a_pending_wake_forward() -> None:
    clock = FakeClock()
    handler = Recorder(clock)
    wake = HeartbeatWake(handler, clock=clock)
    wake.request("requested")
    wake.request("interval", coalesce_ms=0)
    await clock.advance(0)
    assert [c.reason for c in handler.calls] == ["requested"]
    assert handler.calls[0].coalesced == 2
    await wake.aclose()


async def test_requests_during_a_run_are_buffered_into_exactly_one_more_run() -> None:
    clock = FakeClock()
    handler = Recorder(clock)
    handler.gate = asyncio.Event()
    wake = HeartbeatWake(handler, clock=clock)
    wake.request("interval")
    await clock.advance(0.3, wait=False)
    assert len(handler.calls) == 1 and wake.running
    for reason in ("requested", "exec", "interval"):
        wake.request(reason)
    await clock.advance(10, wait=False)  # far past the window: still buffered, never concurrent
    assert len(handler.calls) == 1
    handler.gate.set()
    await clock.advance(0)
    assert len(handler.calls) == 2
    assert handler.calls[1].reason == "exec" and handler.calls[1].coalesced == 3
    await clock.advance(60)
    assert len(handler.calls) == 2
    await wake.aclose()


async def test_a_buffered_batch_fires_when_the_run_ends_or_its_window_closes_whichever_is_later() -> None:
    clock = FakeClock()
    handler = Recorder(clock)
    handler.gate = asyncio.Event()
    wake = HeartbeatWake(handler, coalesce_ms=250, clock=clock)
    t0 = clock.monotonic()
    wake.request()
    await clock.advance(0.25, wait=False)  # run 1 starts at 0.25 and blocks
    await clock.advance(0.05, wait=False)
    wake.request("exec")  # at 0.30, early in a long run
    await clock.advance(0.7, wait=False)
    first_gate, handler.gate = handler.gate, asyncio.Event()
    first_gate.set()  # run 1 ends at 1.0: the batch's window closed long ago, so it runs now
    await clock.advance(0, wait=False)
    assert handler.times == [pytest.approx(t0 + 0.25), pytest.approx(t0 + 1.0)]
    assert wake.running
    await clock.advance(0.1, wait=False)
    wake.request()  # at 1.1, window until 1.35
    await clock.advance(0.05, wait=False)
    handler.gate.set()  # run 2 ends at 1.15: the batch still waits for its window
    await clock.advance(0.19)
    assert len(handler.calls) == 2
    await clock.advance(0.02)
    assert handler.times[2] == pytest.approx(t0 + 1.35)
    await wake.aclose()


async def test_an_exception_is_logged_and_retried_after_retry_ms(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    handler = Recorder(clock)
    handler.fail_first = 1
    wake = HeartbeatWake(handler, coalesce_ms=250, retry_ms=1000, clock=clock)
    with caplog.at_level(logging.ERROR, logger="openclaw_mini.heartbeat.wake"):
        wake.request("exec")
        await clock.advance(0.25)
    assert len(handler.calls) == 1
    assert "heartbeat handler failed" in caplog.text and "boom" in caplog.text
    await clock.advance(0.99)
    assert len(handler.calls) == 1
    await clock.advance(0.02)
    assert len(handler.calls) == 2
    retry = handler.calls[1]
    assert retry.reason == "retry" and retry.retry_of == "exec" and retry.attempt == 1
    assert "exec" in retry.reasons  # a retried exec wake still counts as exec for bypass rules
    await clock.advance(60)
    assert len(handler.calls) == 2  # it succeeded: no more retries
    await wake.aclose()


async def test_busy_is_retried_with_backoff_and_the_layer_survives() -> None:
    clock = FakeClock()
    handler = Recorder(clock)
    handler.busy_first = 3
    wake = HeartbeatWake(handler, coalesce_ms=0, retry_ms=1000, clock=clock)
    wake.request("manual")
    await clock.advance(0)
    await clock.advance(10)
    assert len(handler.calls) == 4
    gaps = [round(b - a, 3) for a, b in zip(handler.times, handler.times[1:], strict=False)]
    assert gaps == [1.0, 2.0, 4.0]
    assert [c.attempt for c in handler.calls] == [0, 1, 2, 3]
    await wake.aclose()


async def test_after_a_failed_run_the_retry_delay_is_a_hard_minimum() -> None:
    # Upstream: a request arriving during the retry backoff waits for it (issue 13), and the
    # run then carries the higher reason.
    clock = FakeClock()
    handler = Recorder(clock)
    handler.fail_first = 1
    wake = HeartbeatWake(handler, coalesce_ms=250, retry_ms=1000, clock=clock)
    wake.request("interval")
    await clock.advance(0.25)
    assert [c.reason for c in handler.calls] == ["interval"]
    failed_at = handler.times[0]
    wake.request("cron")
    await clock.advance(0.3)
    assert [c.reason for c in handler.calls] == ["interval"]  # not sooner than the retry delay
    await clock.advance(0.8)
    assert [c.reason for c in handler.calls] == ["interval", "cron"]
    assert handler.times[1] - failed_at >= 1.0
    assert "retry" in handler.calls[1].reasons
    # A success clears the floor: the next request runs after the normal window.
    wake.request("manual")
    await clock.advance(0.25)
    assert [c.reason for c in handler.calls][-1] == "manual"
    await wake.aclose()


async def test_wake_reasons_are_trimmed_blank_is_requested_and_cron_ids_rank_as_cron() -> None:
    clock = FakeClock()
    handler = Recorder(clock)
    wake = HeartbeatWake(handler, coalesce_ms=250, clock=clock)
    wake.request("  ")
    await clock.advance(0.3)
    wake.request("  hook  ")
    await clock.advance(0.3)
    wake.request("interval")
    wake.request("cron:nightly-backup")
    wake.request("requested")
    await clock.advance(0.3)
    assert [c.reason for c in handler.calls] == ["requested", "hook", "cron:nightly-backup"]
    assert reason_priority("cron:nightly-backup") == reason_priority("cron")
    assert reason_kind("cron:nightly-backup") == "cron"
    assert reason_kind("weird:thing") == "weird:thing"
    await wake.aclose()


async def test_aclose_cancels_the_pending_wake_and_the_running_handler() -> None:
    clock = FakeClock()
    handler = Recorder(clock)
    handler.gate = asyncio.Event()
    wake = HeartbeatWake(handler, clock=clock)
    wake.request()
    await clock.advance(0.3, wait=False)
    assert wake.running
    wake.request()
    await wake.aclose()
    assert not wake.running and wake.pending is None
    assert clock.pending_timers == 0
    wake.request()  # ignored once closed
    await clock.advance(5)
    assert len(handler.calls) == 1


async def test_real_time_100_requests_in_50ms_give_one_run() -> None:
    handler = Recorder()
    wake = HeartbeatWake(handler, coalesce_ms=250)
    start = time.monotonic()
    for i in range(100):
        wake.request("interval" if i % 2 else "requested")
        await asyncio.sleep(0.0005)
    assert time.monotonic() - start < 0.25
    await asyncio.sleep(0.35)
    await wake.wait_idle()
    assert len(handler.calls) == 1
    assert handler.calls[0].coalesced == 100 and handler.calls[0].reason == "requested"
    await wake.aclose()


async def test_real_time_a_request_during_a_run_gives_exactly_one_more() -> None:
    calls: list[str] = []

    async def slow(request: HeartbeatRequest) -> None:
        calls.append(request.reason)
        await asyncio.sleep(0.1)

    wake = HeartbeatWake(slow, coalesce_ms=20)
    wake.request("interval")
    await asyncio.sleep(0.05)
    assert wake.running
    for _ in range(5):
        wake.request("exec")
    await asyncio.sleep(0.3)
    await wake.wait_idle()
    assert calls == ["interval", "exec"]
    await wake.aclose()


async def test_requests_from_another_thread_are_handed_to_the_loop() -> None:
    handler = Recorder()
    wake = HeartbeatWake(handler, coalesce_ms=10)
    wake.bind()

    def flood() -> None:
        for _ in range(10):
            wake.request("exec")

    thread = threading.Thread(target=flood)
    thread.start()
    thread.join()
    await asyncio.sleep(0.1)
    await wake.wait_idle()
    assert len(handler.calls) == 1 and handler.calls[0].coalesced == 10
    await wake.aclose()
