"""Fleet benchmarks: queue overhead per message (SQLite, Redis), fleet overhead per turn vs a bare
`Agent.run`, 4 worker processes x 8 slots on 320 messages with a 1 s model, and failover after kill -9.

Redis rows start a private `redis-server` (append-only, fsync every write) from PATH.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from openclaw_mini import Agent  # noqa: E402
from openclaw_mini.fleet import Fleet, Worker  # noqa: E402
from openclaw_mini.fleet.queue import open_queue  # noqa: E402
from openclaw_mini.testing import FakeAnthropicServer  # noqa: E402
from tests.fleet_support import REDIS_BIN, RedisServer, echo_handler, make_agents, spawn_worker  # noqa: E402

Row = tuple[str, str, str]


async def _queue_overhead(url: str, n: int = 600) -> float:
    """ms per message for enqueue -> claim -> complete, claims in batches of 16, no model."""
    queue = await open_queue(url)
    try:
        started = time.perf_counter()
        for i in range(n):
            await queue.enqueue("bench", f"c{i % 60}", f"message {i}")
        done = 0
        while done < n:
            claims = await queue.claim("bench-worker", lease_seconds=30, limit=16)
            for claim in claims:
                await queue.complete(claim, "ok")
            done += len(claims)
        return (time.perf_counter() - started) / n * 1000
    finally:
        await queue.close()


async def _bare_turns(model: FakeAnthropicServer, workspace: Path, n: int) -> list[float]:
    times = []
    async with Agent(workspace_dir=workspace, agent_id="bench", base_url=model.url, api_key="test") as agent:
        await agent.run("warmup", "warm up")
        for i in range(n):
            started = time.perf_counter()
            await agent.run("conv", f"turn {i}")
            times.append(time.perf_counter() - started)
    return times


async def _fleet_turns(
    url: str, model: FakeAnthropicServer, agents: Path, cache: Path, n: int
) -> list[float]:
    times = []
    async with await Fleet.connect(url) as fleet:
        worker = Worker(
            fleet,
            agents,
            concurrency=1,
            lease=30,
            cache_dir=cache,
            agent_options={"base_url": model.url, "api_key": "test"},
        )
        task = asyncio.create_task(worker.run())
        warm = await fleet.enqueue(agent="bench", conversation="warmup", text="warm up")
        await fleet.result(warm.id, timeout=60)
        for i in range(n):
            started = time.perf_counter()
            message = await fleet.enqueue(agent="bench", conversation="conv", text=f"turn {i}")
            await fleet.result(message.id, timeout=60)
            times.append(time.perf_counter() - started)
        worker.drain()
        await task
    return times


async def _overheads(redis_url: str | None, tmp: Path) -> list[Row]:
    rows: list[Row] = []
    sqlite_url = f"sqlite:///{tmp}/queue.db"
    rows.append(("queue overhead per message, SQLite", f"{await _queue_overhead(sqlite_url):.2f} ms", "-"))
    if redis_url:
        rows.append(("queue overhead per message, Redis", f"{await _queue_overhead(redis_url):.2f} ms", "-"))
    async with FakeAnthropicServer() as model:
        model.handler = echo_handler()
        agents = make_agents(tmp / "agents", "bench")
        bare = statistics.median(await _bare_turns(model, agents / "bench", 30)) * 1000
        for name, url in (("SQLite", f"sqlite:///{tmp}/turns.db"), ("Redis", redis_url)):
            if url is None:
                continue
            fleet = (
                statistics.median(await _fleet_turns(url, model, agents, tmp / f"cache-{name}", 30)) * 1000
            )
            rows.append(
                (
                    f"fleet overhead per turn vs bare Agent.run, {name}",
                    f"+{fleet - bare:.0f} ms ({fleet:.0f} vs {bare:.0f} ms, median of 30)",
                    "-",
                )
            )
    return rows


async def _wait_all(fleet: Fleet, ids: list[str], limit: float) -> list[Any]:
    return [await fleet.result(i, timeout=limit) for i in ids]


async def _until(check: Callable[[], Awaitable[bool]], limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("the fleet benchmark's setup did not happen in time")
        await asyncio.sleep(0.02)


async def _workers_up(fleet: Fleet, *ids: str) -> bool:
    return set(ids) <= {w.id for w in (await fleet.status()).workers}


async def _all_in_flight(fleet: Fleet, ids: list[str]) -> bool:
    return all([(await fleet.message(i)).status == "in_flight" for i in ids])


async def _throughput(redis: RedisServer, tmp: Path) -> list[Row]:
    """4 worker processes x 8 slots, 320 messages over 80 conversations, 1 s per model call."""
    async with FakeAnthropicServer() as model:
        model.handler = echo_handler(delay=1.0)
        agents = make_agents(tmp / "agents-tp", "support")
        procs = [
            spawn_worker(redis.url, agents, model_url=model.url, worker_id=f"tp{i}", concurrency=8, lease=10)
            for i in range(4)
        ]
        try:
            async with await Fleet.connect(redis.url) as fleet:
                await _until(lambda: _workers_up(fleet, "tp0", "tp1", "tp2", "tp3"))
                started = time.perf_counter()
                ids = [
                    (await fleet.enqueue(agent="support", conversation=f"c{i % 80}", text=f"m{i}")).id
                    for i in range(320)
                ]
                results = await _wait_all(fleet, ids, 300)
                wall = time.perf_counter() - started
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(timeout=60)
    done = sum(r.status == "done" for r in results)
    return [
        (
            "4 workers x 8 slots, 320 msgs / 80 convs, 1 s model (Redis)",
            f"{wall:.1f} s wall ({done}/320 done; ideal 10 s)",
            "<= 12 s",
        )
    ]


async def _failover(redis: RedisServer, tmp: Path, lease: float = 5.0) -> list[Row]:
    """kill -9 a worker holding 8 in-flight turns: time until all 8 complete on another worker."""
    seen: set[str] = set()
    release = threading.Event()

    def first_attempt_hangs(text: str, request: Any) -> Any:
        # the doomed worker's turns hang until it is killed, so it surely holds all 8 at that moment
        if text not in seen:
            seen.add(text)
            release.wait(120)
        return None

    async with FakeAnthropicServer() as model:
        model.handler = echo_handler(delay=1.0, hook=first_attempt_hangs)
        agents = make_agents(tmp / "agents-fo", "support")
        doomed = spawn_worker(
            redis.url, agents, model_url=model.url, worker_id="fo-doomed", concurrency=8, lease=lease
        )
        procs = [doomed]
        try:
            async with await Fleet.connect(redis.url) as fleet:
                await _until(lambda: _workers_up(fleet, "fo-doomed"))
                ids = [
                    (await fleet.enqueue(agent="support", conversation=f"fo{i}", text=f"failover {i}")).id
                    for i in range(8)
                ]
                await _until(lambda: _all_in_flight(fleet, ids))
                survivor = spawn_worker(
                    redis.url,
                    agents,
                    model_url=model.url,
                    worker_id="fo-survivor",
                    concurrency=8,
                    lease=lease,
                )
                procs.append(survivor)
                await _until(lambda: _workers_up(fleet, "fo-survivor"))
                doomed.send_signal(signal.SIGKILL)
                killed = time.perf_counter()
                results = await _wait_all(fleet, ids, 120)
                took = time.perf_counter() - killed
                replies = 0
                for i in range(8):
                    path = f".openclaw-mini/sessions/support/fo{i}.jsonl"
                    data = (await fleet.queue.fetch_files("support", [path]))[path][1].decode()
                    replies += data.count(f'"text":"echo: failover {i}"')
        finally:
            release.set()
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(timeout=60)
    lost = sum(r.status != "done" for r in results)
    return [
        (
            f"failover after kill -9 of a worker holding 8 turns (lease {lease:.0f} s, 1 s model)",
            f"{took:.1f} s; lost {lost}, replies in transcripts {replies}/8",
            f"<= lease + 2 s = {lease + 2:.0f} s, 0 lost, 8/8",
        )
    ]


async def _all() -> list[Row]:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if REDIS_BIN is None:
            rows = await _overheads(None, tmp)
            return [*rows, ("Redis rows", "skipped: no redis-server on PATH", "-")]
        redis = RedisServer(tmp / "redis")
        redis.directory.mkdir()
        redis.start()
        try:
            rows = await _overheads(redis.url, tmp)
            redis.flush()
            rows += await _throughput(redis, tmp)
            redis.flush()
            rows += await _failover(redis, tmp)
        finally:
            redis.kill()
        return rows


def run() -> list[Row]:
    os.environ.setdefault("ANTHROPIC_API_KEY", "test")
    return asyncio.run(_all())


if __name__ == "__main__":
    for row in run():
        print(" | ".join(row))
