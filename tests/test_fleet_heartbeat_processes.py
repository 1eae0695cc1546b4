"""Heartbeats across real worker processes on a real redis-server with a sped-up clock: 200 agents
with a 1-minute heartbeat, 3 workers, one killed (-9) mid-way; every agent's slot fires exactly once.
And `/metrics` scraped from a real worker process."""

from __future__ import annotations

import asyncio
import itertools
import re
import signal
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from openclaw_mini.fleet import Fleet, RetryPolicy
from openclaw_mini.fleet.heartbeats import heartbeat_key
from openclaw_mini.testing import FakeAnthropicServer, text_reply
from tests.fleet_support import RedisServer, free_port, make_agents, needs_redis, spawn_worker, wait_for

pytestmark = needs_redis
AGENTS = 200
SLOTS = 5
SPEED = 15.0
"""One virtual minute is 4 real seconds: five slots of 200 agents in about half a minute."""
EVERY_MINUTE = '[heartbeat]\nevery = "1m"\n[heartbeat.active_hours]\nstart = "00:00"\nend = "24:00"\n'


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


def build_agents(root: Path) -> tuple[Path, list[str], set[str]]:
    names = [f"a{i:03d}" for i in range(AGENTS)]
    agents = make_agents(root, *names)
    skipped = {name for i, name in enumerate(names) if i % 10 == 0}
    for name in names:
        text = (
            "# Heartbeat\n" if name in skipped else "Check the queue of agent work; report anything stuck.\n"
        )
        (agents / name / "HEARTBEAT.md").write_text(text)
        (agents / name / "openclaw-mini.toml").write_text(EVERY_MINUTE)
    return agents, names, skipped


def agent_of(request: Any) -> str | None:
    found = re.search(r"You are the (a\d{3}) agent", request.system)
    return found.group(1) if found else None


async def test_two_hundred_agents_fire_once_per_slot_across_three_workers_one_killed(
    tmp_path: Path, redis_server: RedisServer, model: FakeAnthropicServer
) -> None:
    agents, names, skipped = build_agents(tmp_path / "agents")
    model.handler = lambda request: text_reply("HEARTBEAT_OK", chunk_delay=0.02)  # a turn takes a while
    start = time.time()
    clock_args = ["--clock-speed", str(SPEED), "--clock-start", repr(start)]
    extra = ["--backoff", "0.05s", "--drain-timeout", "20s", *clock_args]
    procs = {
        wid: spawn_worker(
            redis_server.url, agents, model_url=model.url, worker_id=wid, concurrency=8, lease=1.5,
            extra=extra, log=tmp_path / f"{wid}.log",
        )
        for wid in ("w1", "w2", "w3")
    }  # fmt: skip
    fleet = await Fleet.connect(redis_server.url, retry=RetryPolicy(max_attempts=5, base_delay=0.05))
    try:

        async def registered() -> dict[str, float] | None:
            schedule = {e.agent: e.due for e in await fleet.heartbeats()}
            return schedule if len(schedule) == AGENTS else None

        first = await wait_for(registered, timeout=60, what="all agents in the schedule")
        slots = {name: [first[name] + 60 * k for k in range(SLOTS)] for name in names}

        async def fired(k: int) -> bool:
            schedule = {e.agent: e.due for e in await fleet.heartbeats()}
            return all(schedule[name] > slots[name][k] for name in names)

        await wait_for(lambda: fired(1), timeout=60, what="the second slot to fire everywhere")

        client = fleet.queue.client  # type: ignore[attr-defined]

        async def w2_holds_leases() -> bool:
            held = 0
            async for key in client.scan_iter(match="ocm:l:*", count=1000):
                held += await client.hget(key, "worker") == b"w2"
            return held >= 2

        await wait_for(w2_holds_leases, timeout=60, what="w2 to hold leases")
        procs["w2"].send_signal(signal.SIGKILL)  # mid-way, with turns in flight
        procs["w2"].wait(timeout=30)

        async def done_slots() -> bool:
            for name in [*names[::7], names[-1]]:
                message_id = await client.get(f"ocm:idem:{heartbeat_key(name, slots[name][-1])}")
                if message_id is None or (await fleet.message(message_id.decode())).status != "done":
                    return False
            return True

        await wait_for(done_slots, timeout=90, what="the fifth slot to run")
        for wid in ("w1", "w3"):
            procs[wid].send_signal(signal.SIGTERM)
        for wid in ("w1", "w3"):
            assert procs[wid].wait(timeout=60) == 0, (tmp_path / f"{wid}.log").read_text()

        # Count: every heartbeat message in the fleet, by agent and slot.
        per_agent: dict[str, dict[float, Any]] = {name: {} for name in names}
        async for key in client.scan_iter(match="ocm:idem:heartbeat:*", count=1000):
            _, agent, slot_ms = key.decode().rsplit(":", 2)
            message_id = (await client.get(key)).decode()
            result = await fleet.message(message_id)
            slot = int(slot_ms) / 1000
            assert slot not in per_agent[agent], f"{agent} has two messages for slot {slot}"
            per_agent[agent][slot] = result
        calls: dict[str, int] = {}
        for request in model.requests:
            if request.path.endswith("/v1/messages") and (name := agent_of(request)):
                calls[name] = calls.get(name, 0) + 1
        for name in names:
            fired_slots = sorted(per_agent[name])
            # exactly the grid: the five slots, then perhaps the next ones, nothing in between or doubled
            assert fired_slots[:SLOTS] == slots[name], (name, fired_slots[:SLOTS], slots[name])
            assert all(b - a == 60 for a, b in itertools.pairwise(fired_slots)), name
            results = [per_agent[name][slot] for slot in slots[name]]
            assert all(r.status == "done" for r in results), (name, [r.status for r in results])
            ran = [
                r
                for r in per_agent[name].values()
                if r.status == "done" and "heartbeat ran" in (r.text or "")
            ]
            if name in skipped:
                assert all(r.text.startswith("heartbeat skipped: HEARTBEAT.md is empty") for r in results)
                assert calls.get(name, 0) == 0, f"skipped agent {name} made a model call"
            else:
                assert all(r.text.startswith("heartbeat ran: HEARTBEAT_OK") for r in results), name
                # one model call per run; more only where a killed worker's attempt was retried
                retried = sum(max(0, r.attempts - 1) for r in per_agent[name].values())
                assert len(ran) <= calls.get(name, 0) <= len(ran) + retried, (name, len(ran), calls.get(name))
        assert any(r.attempts > 1 for agent in per_agent.values() for r in agent.values()), (
            "the kill took over no heartbeat turn: it did not happen mid-way"
        )
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
        await fleet.close()


async def test_metrics_are_scraped_from_a_real_worker(
    tmp_path: Path, redis_server: RedisServer, model: FakeAnthropicServer
) -> None:
    agents = make_agents(tmp_path / "agents", "support", "quiet")
    (agents / "quiet" / "HEARTBEAT.md").write_text("")
    (agents / "quiet" / "openclaw-mini.toml").write_text(EVERY_MINUTE)
    model.handler = lambda request: text_reply("Hello!", usage={"input_tokens": 120, "output_tokens": 7})
    port = free_port()
    proc = spawn_worker(
        redis_server.url, agents, model_url=model.url, worker_id="m1", lease=1.5,
        extra=["--metrics-port", str(port), "--clock-speed", "60", "--clock-start", repr(time.time())],
        log=tmp_path / "m1.log",
    )  # fmt: skip
    fleet = await Fleet.connect(redis_server.url)
    try:
        for i in range(3):
            message = await fleet.enqueue(agent="support", conversation=f"c{i}", text="hi")
            assert (await fleet.result(message.id, timeout=60)).status == "done"
        await fleet.enqueue(agent="support", conversation="later", text="queued", priority=0)

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                return str(response.read().decode())

        def value(text: str, name: str) -> float:
            found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
            assert found, f"{name} not in /metrics:\n{text}"
            return float(found.group(1))

        async def heartbeat_skipped() -> str | None:
            text = await asyncio.to_thread(scrape)
            return text if 'openclaw_fleet_heartbeat_skips_total{reason="empty_file"}' in text else None

        text = await wait_for(heartbeat_skipped, timeout=60, what="a skipped heartbeat in /metrics")
        assert value(text, 'openclaw_fleet_turns_total{outcome="done"}') >= 4  # 3 turns + the heartbeat
        assert value(text, "openclaw_fleet_turn_seconds_count") >= 4
        assert value(text, 'openclaw_fleet_model_tokens_total{kind="input"}') >= 360
        assert value(text, 'openclaw_fleet_model_tokens_total{kind="output"}') >= 21
        assert value(text, "openclaw_fleet_heartbeat_fires_total") >= 1
        assert value(text, 'openclaw_fleet_heartbeat_runs_total{status="skipped"}') >= 1
        assert value(text, 'openclaw_fleet_workers{state="active"}') == 1
        assert value(text, "openclaw_fleet_heartbeats_scheduled") == 1
        for gauge in ("queued_messages", "in_flight_messages", "delayed_messages", "dead_letters"):
            value(text, f"openclaw_fleet_{gauge}")
        # only /metrics, on loopback
        with pytest.raises(urllib.error.HTTPError) as missing:
            await asyncio.to_thread(urllib.request.urlopen, f"http://127.0.0.1:{port}/other", timeout=10)
        assert missing.value.code == 404
        missing.value.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        log = (tmp_path / "m1.log").read_text()
        assert f"metrics on http://127.0.0.1:{port}/metrics" in log
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        await fleet.close()
