"""Fleet operations benchmarks: how fast a scheduler pass fires due heartbeat slots (SQLite, Redis),
heartbeat turns per second on one worker (with a model call, and skipped with none), and the cost
of one `/metrics` scrape. Redis rows start a private `redis-server` from PATH."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from openclaw_mini.fleet import Fleet, FleetMetrics, HeartbeatScheduler, Worker  # noqa: E402
from openclaw_mini.fleet.metrics import render  # noqa: E402
from openclaw_mini.heartbeat import FakeClock  # noqa: E402
from openclaw_mini.testing import FakeAnthropicServer, text_reply  # noqa: E402
from tests.fleet_support import REDIS_BIN, RedisServer, make_agents  # noqa: E402

Row = tuple[str, str, str]
EVERY = '[heartbeat]\nevery = "1m"\n[heartbeat.active_hours]\nstart = "00:00"\nend = "24:00"\n'


def _agents(root: Path, n: int, *, empty: bool = False) -> Path:
    names = [f"a{i:04d}" for i in range(n)]
    agents = make_agents(root, *names)
    for name in names:
        (agents / name / "HEARTBEAT.md").write_text("# Heartbeat\n" if empty else "Check the queue.\n")
        (agents / name / "openclaw-mini.toml").write_text(EVERY)
    return agents


async def _fire_rate(url: str, agents: Path, n: int) -> float:
    """ms per slot for one scheduler pass over `n` due slots (enqueue + compare-and-set each)."""
    clock = FakeClock(datetime(2026, 1, 5, 9, 0, tzinfo=UTC))
    fleet = await Fleet.connect(url)
    try:
        scheduler = HeartbeatScheduler(fleet.queue, agents, clock=clock)
        await scheduler.register()
        clock.jump(61)
        started = time.perf_counter()
        fired = await scheduler.fire_due()
        took = time.perf_counter() - started
        assert fired == n, fired
        return took / n * 1000
    finally:
        await fleet.close()


async def _turns_per_second(url: str, agents: Path, n: int, model: FakeAnthropicServer, tmp: Path) -> float:
    clock = FakeClock(datetime(2026, 1, 5, 9, 0, tzinfo=UTC))
    fleet = await Fleet.connect(url)
    try:
        scheduler = HeartbeatScheduler(fleet.queue, agents, clock=clock)
        await scheduler.register()
        worker = Worker(
            fleet, agents, concurrency=8, heartbeats=False, clock=clock, cache_dir=tmp / "cache",
            agent_options={"base_url": model.url, "api_key": "test"},
        )  # fmt: skip
        task = asyncio.create_task(worker.run())
        try:
            clock.jump(61)
            started = time.perf_counter()
            await scheduler.fire_due()
            while worker.completed < n:  # noqa: ASYNC110  # a benchmark's poll
                await asyncio.sleep(0.02)
            return n / (time.perf_counter() - started)
        finally:
            worker.drain()
            await task
    finally:
        await fleet.close()


async def _scrape_ms(url: str, n: int = 50) -> float:
    fleet = await Fleet.connect(url)
    try:
        metrics = FleetMetrics()
        await render(fleet, metrics)
        started = time.perf_counter()
        for _ in range(n):
            await render(fleet, metrics)
        return (time.perf_counter() - started) / n * 1000
    finally:
        await fleet.close()


async def _all() -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        many = _agents(tmp / "many", 1000)
        ms = await _fire_rate(f"sqlite:///{tmp}/fire.db", many, 1000)
        rows.append(
            (
                "heartbeat slots fired per pass, SQLite",
                f"{ms:.2f} ms/slot (1,000 agents)",
                "well within the 1 min interval",
            )
        )
        redis: RedisServer | None = None
        if REDIS_BIN is not None:
            redis = RedisServer(tmp / "redis")
            redis.directory.mkdir()
            redis.start()
        try:
            if redis is not None:
                ms = await _fire_rate(redis.url, many, 1000)
                rows.append(
                    (
                        "heartbeat slots fired per pass, Redis",
                        f"{ms:.2f} ms/slot (1,000 agents)",
                        "well within the 1 min interval",
                    )
                )
            url = redis.url if redis is not None else f"sqlite:///{tmp}/turns.db"
            label = "Redis" if redis is not None else "SQLite"
            async with FakeAnthropicServer() as model:
                model.handler = lambda request: text_reply("HEARTBEAT_OK")
                if redis is not None:
                    redis.flush()
                ran = await _turns_per_second(url, _agents(tmp / "ran", 200), 200, model, tmp / "r")
                rows.append(
                    (f"heartbeat turns, 1 worker x 8 slots, {label}", f"{ran:.0f}/s (model call each)", "-")
                )
                if redis is not None:
                    redis.flush()
                else:
                    url = f"sqlite:///{tmp}/skips.db"
                skipped = await _turns_per_second(
                    url, _agents(tmp / "skip", 200, empty=True), 200, model, tmp / "s"
                )
                rows.append(
                    (
                        f"skipped heartbeats, 1 worker x 8 slots, {label}",
                        f"{skipped:.0f}/s (no model call)",
                        "-",
                    )
                )
            scrape = await _scrape_ms(url)
            rows.append((f"/metrics render, {label}", f"{scrape:.2f} ms", "< 50 ms"))
        finally:
            if redis is not None:
                redis.kill()
    return rows


def run() -> list[Row]:
    os.environ.setdefault("ANTHROPIC_API_KEY", "test")
    return asyncio.run(_all())


if __name__ == "__main__":
    for row in run():
        print(" | ".join(row))
