"""Heartbeat benchmarks: tick drift on a 50 ms grid, and 10,000 wake requests in one second.

Run: `python bench/bench_heartbeat.py` (prints the rows), or through `bench/run.py`.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from openclaw_mini.heartbeat import (
    HeartbeatConfig,
    HeartbeatOutcome,
    HeartbeatRequest,
    HeartbeatRunner,
    HeartbeatTask,
    HeartbeatTurn,
    HeartbeatWake,
)

TICKS = 100
INTERVAL_MS = 50
REQUESTS = 10_000


async def _drift() -> tuple[list[float], float, int]:
    """Lateness (ms) of each tick behind the slot it was scheduled for, the drift of the last tick
    from the first tick's grid (ms; 0 means nothing accumulated), and how many ticks ran."""
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp)
        (workspace / "HEARTBEAT.md").write_text("- [ ] look around\n", encoding="utf-8")
        outcomes: list[HeartbeatOutcome] = []
        slots: list[datetime] = []
        done = asyncio.Event()

        async def run_turn(prompt: str, tasks: list[HeartbeatTask], req: HeartbeatRequest) -> HeartbeatTurn:
            return HeartbeatTurn("HEARTBEAT_OK")

        config = HeartbeatConfig(every=f"{INTERVAL_MS}ms", active_hours=None)
        runner: HeartbeatRunner

        def on_log(outcome: HeartbeatOutcome) -> None:
            outcomes.append(outcome)
            if runner.next_run_at is not None:
                slots.append(runner.next_run_at)
            if len(outcomes) >= TICKS:
                done.set()

        runner = HeartbeatRunner(workspace, config, run_turn=run_turn, on_log=on_log)
        runner.start()
        await runner.wait_idle()
        assert runner.next_run_at is not None
        slots.append(runner.next_run_at)
        await asyncio.wait_for(done.wait(), timeout=TICKS * INTERVAL_MS / 1000 * 3)
        await runner.aclose()
        ticks = outcomes[:TICKS]
        late = [(o.started_at - slot).total_seconds() * 1000 for o, slot in zip(ticks, slots, strict=False)]
        interval = timedelta(milliseconds=INTERVAL_MS)
        grid_end = slots[0] + interval * (len(ticks) - 1)
        accumulated = (ticks[-1].started_at - grid_end).total_seconds() * 1000
        return late, accumulated, sum(1 for o in ticks if o.ran)


async def _flood() -> tuple[int, list[str], int, int]:
    """10,000 requests spread over one second against a handler that takes 30 ms per run."""
    runs: list[HeartbeatRequest] = []

    async def handler(request: HeartbeatRequest) -> None:
        runs.append(request)
        await asyncio.sleep(0.03)

    wake = HeartbeatWake(handler, coalesce_ms=250)
    rng = random.Random(7)
    reasons = ["interval", "requested", "cron", "retry"]
    exec_at = rng.randrange(REQUESTS)
    start = time.monotonic()
    made_while_running = 0
    for i in range(REQUESTS):
        wake.request("exec" if i == exec_at else rng.choice(reasons))
        made_while_running += wake.running
        if i % 10 == 9:
            target = start + (i + 1) / REQUESTS
            await asyncio.sleep(max(0.0, target - time.monotonic()))
    await asyncio.sleep(0.6)
    await wake.wait_idle()
    await wake.aclose()
    accounted = sum(request.coalesced for request in runs)
    return len(runs), [request.reason for request in runs], accounted, made_while_running


def run() -> list[tuple[str, str, str]]:
    late, accumulated, ran = asyncio.run(_drift())
    median, worst = statistics.median(late), max(late)
    head, tail = statistics.median(late[:10]), statistics.median(late[-10:])
    runs, reasons, accounted, while_running = asyncio.run(_flood())
    exec_kept = "exec" in reasons
    return [
        (
            f"heartbeat tick drift ({TICKS} ticks @ {INTERVAL_MS} ms)",
            f"median {median:.2f} ms, max {worst:.2f} ms late; first/last 10 {head:.2f}/{tail:.2f} ms; "
            f"tick {TICKS} vs grid {accumulated:+.2f} ms ({ran} ran)",
            "median < 5 ms, no accumulation",
        ),
        (
            f"heartbeat wake: {REQUESTS:,} requests in 1 s",
            f"{runs} handler runs; top reason {'exec kept' if exec_kept else 'LOST'}; "
            f"{accounted:,}/{REQUESTS:,} requests accounted ({while_running:,} made while running)",
            "<= 5 runs, top reason kept, none lost",
        ),
    ]


if __name__ == "__main__":
    for name, result, goal in run():
        print(f"{name:<48} {result:<80} goal: {goal}")
