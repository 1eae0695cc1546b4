"""`openclaw-mini fleet up` as a real process supervising real worker processes on a real redis-server:
it scales up under a burst and back down when idle with nothing lost, replaces a crashed worker, and
counts conversations (not messages) as demand."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from openclaw_mini.fleet import Fleet, RetryPolicy
from openclaw_mini.fleet.models import Backlog
from openclaw_mini.fleet.scaler import ScalePolicy, desired_workers
from openclaw_mini.testing import FakeAnthropicServer
from tests.fleet_support import RedisServer, echo_handler, make_agents, needs_redis, wait_for

pytestmark = needs_redis


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.directory.mkdir()
    server.start()
    yield server
    server.kill()


@pytest.fixture
async def model() -> AsyncIterator[FakeAnthropicServer]:
    async with FakeAnthropicServer() as server:
        yield server


def _fleet_up(tmp: Path, url: str, model_url: str, *args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update({"ANTHROPIC_BASE_URL": model_url, "ANTHROPIC_API_KEY": "test"})
    command = [
        sys.executable, "-m", "openclaw_mini.cli.main", "fleet", "up", "--url", url,
        "--agents", str(make_agents(tmp / "agents", "support")), *args,
    ]  # fmt: skip
    with open(tmp / "up.log", "ab") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=log)


def _live(status: object) -> list[str]:
    return [w.id for w in status.workers if w.state == "active" and not w.lost]  # type: ignore[attr-defined]


async def test_fleet_up_scales_to_max_under_a_burst_and_back_to_min_losing_nothing(
    tmp_path: Path, redis_server: RedisServer, model: FakeAnthropicServer
) -> None:
    model.handler = echo_handler(delay=0.4)
    up = _fleet_up(
        tmp_path, redis_server.url, model.url,
        "--min", "1", "--max", "4", "--concurrency", "4", "--idle", "1s", "--interval", "0.2s",
        "--lease", "3s", "--drain-timeout", "20s", "--backoff", "0.05s",
    )  # fmt: skip
    fleet = await Fleet.connect(redis_server.url, retry=RetryPolicy(base_delay=0.05))
    try:
        await wait_for(lambda: _count_live(fleet, 1), timeout=60, what="the first worker")
        sent = []
        for n in range(80):  # 80 conversations, two messages each
            for part in ("a", "b"):
                sent.append(
                    await fleet.enqueue(agent="support", conversation=f"burst-{n}", text=f"{n}{part}")
                )
        peak = await wait_for(lambda: _count_live(fleet, 4), timeout=90, what="4 workers")
        assert len(peak) == 4
        for message in sent:
            result = await fleet.result(message.id, timeout=120)
            assert result.status == "done" and result.text == f"echo: {message.text}"
        await wait_for(lambda: _count_exact(fleet, 1), timeout=90, what="back to 1 worker")
        served = [r for r in model.requests if r.messages]
        assert len(served) == 160  # each message ran once: draining handed nothing back mid-turn
        # The one left still serves.
        late = await fleet.enqueue(agent="support", conversation="late", text="still there?")
        assert (await fleet.result(late.id, timeout=60)).text == "echo: still there?"
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(timeout=90)
        log = (tmp_path / "up.log").read_text(errors="replace")
        status = await fleet.status()
        await fleet.close()
    assert code == 0, log
    assert "fleet up stopped: 4 started, 3 drained, 0 replaced" in log
    assert status.workers == [], log


async def _count_live(fleet: Fleet, n: int) -> list[str]:
    live = _live(await fleet.status())
    return live if len(live) >= n else []


async def _count_exact(fleet: Fleet, n: int) -> bool:
    status = await fleet.status()
    return len(status.workers) == n and len(_live(status)) == n


async def test_fleet_up_replaces_a_crashed_worker(
    tmp_path: Path, redis_server: RedisServer, model: FakeAnthropicServer
) -> None:
    model.handler = echo_handler()
    up = _fleet_up(
        tmp_path, redis_server.url, model.url,
        "--min", "1", "--max", "2", "--interval", "0.2s", "--lease", "2s",
    )  # fmt: skip
    fleet = await Fleet.connect(redis_server.url)
    try:
        first = (await wait_for(lambda: _count_live(fleet, 1), timeout=60, what="a worker"))[0]
        pid = next(w.pid for w in (await fleet.status()).workers if w.id == first)
        os.kill(pid, signal.SIGKILL)

        async def replaced() -> list[str]:
            return [i for i in _live(await fleet.status()) if i != first]

        await wait_for(replaced, timeout=60, what="a replacement worker")
        message = await fleet.enqueue(agent="support", conversation="after-crash", text="hello")
        assert (await fleet.result(message.id, timeout=60)).text == "echo: hello"
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(timeout=90)
        await fleet.close()
    log = (tmp_path / "up.log").read_text(errors="replace")
    assert code == 0, log
    assert f"{first} exited unasked" in log and "replacing it" in log


async def test_demand_counts_conversations_not_messages(redis_server: RedisServer, tmp_path: Path) -> None:
    fleet = await Fleet.connect(redis_server.url)
    try:
        for n in range(20):
            await fleet.enqueue(agent="support", conversation="one", text=f"message {n}")
        backlog = await fleet.queue.backlog()
        assert backlog.waiting == 1 and backlog.in_flight == 0
        policy = ScalePolicy(min_workers=1, max_workers=4, per_worker=1)
        assert desired_workers(backlog, policy) == 1
        for n in range(7):
            await fleet.enqueue(agent="support", conversation=f"other-{n}", text="hi")
        backlog = await fleet.queue.backlog()
        assert backlog.waiting == 8
        assert {s.stream for s in backlog.streams} == {"ocm:ready:0", "ocm:ready:1", "ocm:ready:2"}
        assert sum(s.lag for s in backlog.streams) == 8
        assert desired_workers(backlog, policy) == 4
        assert desired_workers(backlog, policy.model_copy(update={"per_worker": 3})) == 3
        claims = await fleet.queue.claim("w1", lease_seconds=30, limit=3)
        after = await fleet.queue.backlog()
        assert (after.waiting, after.in_flight) == (5, 3)
        assert len(claims) == 3
    finally:
        await fleet.close()
    assert desired_workers(Backlog(waiting=0, in_flight=0, delayed=0), ScalePolicy(min_workers=2)) == 2
    with pytest.raises(ValueError, match="--min 5 is above --max 4"):
        ScalePolicy(min_workers=5, max_workers=4)
