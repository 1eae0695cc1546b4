"""Heartbeats across the fleet (in process, both backends): the schedule in the store, one message per
slot whoever fires it, the runner's skip / ack / 24 h duplicate rules on stored state, the sinks."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from openclaw_mini.errors import ConfigError, InvalidMessage
from openclaw_mini.fleet import Fleet, HeartbeatScheduler, RetryPolicy, Worker
from openclaw_mini.fleet.heartbeats import heartbeat_key, heartbeat_report, load_agent_heartbeat, next_slot
from openclaw_mini.heartbeat import FakeClock, HeartbeatConfig
from openclaw_mini.heartbeat.tasks import parse_heartbeat
from openclaw_mini.testing import FakeAnthropicServer, text_reply
from tests.fleet_support import REDIS_BIN, RedisServer, make_agents, needs_redis, wait_for

FAST = RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.2)
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
AROUND_THE_CLOCK = '[heartbeat]\nevery = "1m"\n[heartbeat.active_hours]\nstart = "00:00"\nend = "24:00"\n'


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer | None]:
    if REDIS_BIN is None:
        yield None
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=needs_redis)])
def fleet_url(request: pytest.FixtureRequest, tmp_path: Path, redis_server: RedisServer | None) -> str:
    if request.param == "redis":
        assert redis_server is not None
        redis_server.flush()
        return redis_server.url
    return f"sqlite:///{tmp_path}/fleet.db"


@pytest.fixture
async def model() -> AsyncIterator[FakeAnthropicServer]:
    async with FakeAnthropicServer() as server:
        yield server


def agents_with_heartbeats(root: Path, extra_toml: str = "") -> Path:
    """`ops` has work in HEARTBEAT.md, `quiet` an empty one, `plain` none at all."""
    agents = make_agents(root, "ops", "quiet", "plain")
    (agents / "ops" / "HEARTBEAT.md").write_text("Check the deploy queue and report anything stuck.\n")
    (agents / "quiet" / "HEARTBEAT.md").write_text("# Heartbeat\n\n")
    for name in ("ops", "quiet"):
        (agents / name / "openclaw-mini.toml").write_text(AROUND_THE_CLOCK + extra_toml)
    return agents


def requests_of(model: FakeAnthropicServer, agent: str) -> list[Any]:
    return [
        r
        for r in model.requests
        if r.path.endswith("/v1/messages") and f"You are the {agent} agent" in r.system
    ]


class Running:
    """One worker (no scheduler of its own: the test fires slots) in this loop."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.task = asyncio.create_task(worker.run())

    async def stop(self) -> None:
        self.worker.drain()
        await asyncio.wait_for(self.task, 60)


def make_worker(
    fleet: Fleet, agents: Path, model: FakeAnthropicServer, tmp: Path, name: str, clock: Any
) -> Worker:
    return Worker(
        fleet,
        agents,
        worker_id=name,
        lease=2.0,
        cache_dir=tmp / f"cache-{name}",
        agent_options={"base_url": model.url, "api_key": "test"},
        heartbeats=False,
        clock=clock,
    )


async def wait_done(fleet: Fleet, agent: str, slot: float) -> Any:
    async def finished() -> Any:
        entries = {e.agent: e for e in await fleet.heartbeats()}
        return entries[agent].last_slot == slot and entries[agent]

    return await wait_for(finished, what=f"{agent}'s slot {slot} to run")


async def test_each_slot_fires_once_and_the_rules_hold_across_workers(
    fleet_url: str, tmp_path: Path, model: FakeAnthropicServer
) -> None:
    agents = agents_with_heartbeats(tmp_path / "agents")
    model.handler = lambda request: text_reply("The deploy queue is stuck on job 42.")
    clock = FakeClock(START)
    fleet = await Fleet.connect(fleet_url, retry=FAST)
    try:
        one = HeartbeatScheduler(fleet.queue, agents, clock=clock)
        two = HeartbeatScheduler(fleet.queue, agents, clock=clock)
        assert await one.register() == 2 and await two.register() == 0  # plain has no HEARTBEAT.md
        schedule = {e.agent: e for e in await fleet.heartbeats()}
        assert sorted(schedule) == ["ops", "quiet"]
        first = START.timestamp() + 60
        assert schedule["ops"].due == first and schedule["ops"].reason == "interval"
        assert await one.fire_due() == 0  # nothing due yet

        clock.jump(61)
        # two workers race for the slot: one message per agent, and the slot moves on once
        fired = await asyncio.gather(one.fire_due(), two.fire_due())
        assert sum(fired) == 2
        assert await one.fire_due() == 0 and await two.fire_due() == 0
        assert {e.agent: e.due for e in await fleet.heartbeats()} == {"ops": first + 60, "quiet": first + 60}

        w1 = Running(make_worker(fleet, agents, model, tmp_path, "w1", clock))
        ops = await wait_done(fleet, "ops", first)
        quiet = await wait_done(fleet, "quiet", first)
        assert ops.last_outcome == "ran: delivered"
        assert quiet.last_outcome == "skipped: HEARTBEAT.md is empty"
        assert len(requests_of(model, "ops")) == 1 and requests_of(model, "quiet") == []
        [delivery] = await fleet.heartbeat_deliveries()
        assert (delivery.agent, delivery.slot, delivery.text) == (
            "ops",
            first,
            "The deploy queue is stuck on job 42.",
        )
        message = await fleet.message(delivery.message_id)
        assert message.conversation == "main" and message.status == "done"
        await w1.stop()

        # the next slot runs on another worker with an empty cache: the same reply within 24 h is
        # suppressed because the heartbeat state came from the store
        clock.jump(60)
        assert await two.fire_due() == 2
        w2 = Running(make_worker(fleet, agents, model, tmp_path, "w2", clock))
        ops = await wait_done(fleet, "ops", first + 60)
        assert ops.last_outcome is not None and ops.last_outcome.startswith("ran: duplicate of the delivery")
        assert len(await fleet.heartbeat_deliveries()) == 1
        assert len(requests_of(model, "ops")) == 2 and requests_of(model, "quiet") == []
        await w2.stop()

        report = {row.agent: row for row in await heartbeat_report(fleet.queue, agents, clock=clock)}
        assert report["quiet"].would_run is False and report["quiet"].would_reason == "HEARTBEAT.md is empty"
        assert report["ops"].would_run is True
    finally:
        await fleet.close()


async def test_a_slot_enqueued_by_a_worker_that_died_before_moving_it_is_not_doubled(
    fleet_url: str, tmp_path: Path
) -> None:
    agents = agents_with_heartbeats(tmp_path / "agents")
    clock = FakeClock(START)
    fleet = await Fleet.connect(fleet_url, retry=FAST)
    try:
        scheduler = HeartbeatScheduler(fleet.queue, agents, clock=clock)
        await scheduler.register()
        slot = START.timestamp() + 60
        # the dead worker got as far as the enqueue
        await fleet.queue.enqueue(
            "ops", "main", json.dumps({"heartbeat": 1, "slot": slot, "reason": "interval"}),
            priority=30, idempotency_key=heartbeat_key("ops", slot),
        )  # fmt: skip
        clock.jump(60)
        assert await scheduler.fire_due() == 1  # only quiet's slot is new
        assert (await fleet.status()).queued == 2
        assert {e.agent: e.due for e in await fleet.heartbeats()}["ops"] == slot + 60
    finally:
        await fleet.close()


async def test_an_ack_is_not_delivered_and_a_webhook_sink_gets_real_replies(
    tmp_path: Path, model: FakeAnthropicServer
) -> None:
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(503 if len(received) == 1 else 204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sink = f'sink = "http://127.0.0.1:{server.server_address[1]}/hook?token=s3cret"\n'
        agents = agents_with_heartbeats(tmp_path / "agents", "")
        toml = agents / "ops" / "openclaw-mini.toml"
        toml.write_text(toml.read_text().replace('every = "1m"\n', 'every = "1m"\n' + sink))
        replies = iter(["HEARTBEAT_OK", *["Job 42 failed twice; someone should look."] * 2])
        model.handler = lambda request: text_reply(next(replies))
        clock = FakeClock(START)
        fleet = await Fleet.connect(f"sqlite:///{tmp_path}/fleet.db", retry=FAST)
        try:
            scheduler = HeartbeatScheduler(fleet.queue, agents, clock=clock)
            await scheduler.register()
            worker = Running(make_worker(fleet, agents, model, tmp_path, "w1", clock))
            first = START.timestamp() + 60
            clock.jump(60)
            await scheduler.fire_due()
            assert (await wait_done(fleet, "ops", first)).last_outcome == "ran: HEARTBEAT_OK"
            clock.jump(60)
            await scheduler.fire_due()
            # the webhook fails: said without the URL's token, and not remembered as delivered
            failed = (await wait_done(fleet, "ops", first + 60)).last_outcome
            assert failed == "ran: delivery failed: FleetError: the heartbeat webhook answered HTTP 503"
            clock.jump(60)
            await scheduler.fire_due()
            assert (await wait_done(fleet, "ops", first + 120)).last_outcome == "ran: delivered"
            await worker.stop()
            assert [(r["agent"], r["slot"], r["text"]) for r in received] == [
                ("ops", first + 60, "Job 42 failed twice; someone should look."),
                ("ops", first + 120, "Job 42 failed twice; someone should look."),
            ]
            assert await fleet.heartbeat_deliveries() == []  # the webhook replaced the log sink
        finally:
            await fleet.close()
    finally:
        server.shutdown()
        server.server_close()


def test_next_slot_keeps_the_grid_honours_active_hours_in_their_zone_and_cron() -> None:
    config = HeartbeatConfig(
        every="30m", active_hours={"start": "09:00", "end": "17:00", "timezone": "Europe/Berlin"}
    )
    at = datetime(2026, 1, 5, 8, 0, tzinfo=UTC).timestamp()  # 09:00 in Berlin
    assert next_slot(config, None, at) == (at + 1800, "interval")
    assert next_slot(config, None, at + 1805, after=at + 1800) == (at + 3600, "interval")  # on the grid
    late = at + 1800 + 4000  # no worker lived for an hour: the missed slots collapse, the grid stays
    assert next_slot(config, None, late, after=at + 1800) == (at + 1800 * 4, "interval")
    evening = datetime(2026, 1, 5, 15, 50, tzinfo=UTC).timestamp()  # 16:50 Berlin: next is outside
    due, _ = next_slot(config, None, evening, after=evening)
    assert datetime.fromtimestamp(due, UTC) == datetime(2026, 1, 6, 8, 0, tzinfo=UTC)  # 09:00 Berlin
    cron = parse_heartbeat("tasks:\n  - name: standup\n    cron: '5 9 * * *'\n    prompt: post the standup\n")
    assert next_slot(config, cron, at) == (at + 300, "cron")  # 09:05 Berlin comes before 09:30


def test_bad_heartbeat_settings_name_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "ops"
    folder.mkdir()
    (folder / "HEARTBEAT.md").write_text("Check things.\n")
    (folder / "openclaw-mini.toml").write_text('[heartbeat]\nsink = "ftp://nope"\n')
    with pytest.raises(ConfigError, match=r"openclaw-mini.toml: \[heartbeat\] sink: .*webhook URL"):
        load_agent_heartbeat(folder)
    (folder / "openclaw-mini.toml").write_text("[heartbeat\n")
    with pytest.raises(ConfigError, match=r"openclaw-mini\.toml: cannot read it"):
        load_agent_heartbeat(folder)
    (folder / "openclaw-mini.toml").write_text("heartbeat = false\n")
    assert load_agent_heartbeat(folder) is None
    (folder / "openclaw-mini.toml").unlink()
    assert load_agent_heartbeat(folder) == HeartbeatConfig()


async def test_users_cannot_forge_a_heartbeat_slot(tmp_path: Path) -> None:
    fleet = await Fleet.connect(f"sqlite:///{tmp_path}/fleet.db")
    try:
        with pytest.raises(InvalidMessage, match="reserved"):
            await fleet.enqueue(
                agent="ops", conversation="main", text="hi", idempotency_key="heartbeat:ops:1"
            )
        assert (await fleet.status()).queued == 0
    finally:
        await fleet.close()


async def test_fleet_status_shows_the_next_heartbeat_and_why_one_would_skip(tmp_path: Path) -> None:
    agents = agents_with_heartbeats(tmp_path / "agents")
    url = f"sqlite:///{tmp_path}/fleet.db"
    fleet = await Fleet.connect(url)
    try:
        scheduler = HeartbeatScheduler(fleet.queue, agents)  # the real clock: status reads it too
        await scheduler.register()
        due = {e.agent: e.due for e in await fleet.heartbeats()}
        await fleet.queue.record_heartbeat("quiet", due["quiet"] - 60, "skipped: HEARTBEAT.md is empty")
    finally:
        await fleet.close()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "openclaw_mini.cli.main", "fleet", "status", "--url", url, *args],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    shown = await asyncio.to_thread(cli, "--agents", str(agents))
    assert shown.returncode == 0, shown.stderr
    lines = {line.split()[0]: line for line in shown.stdout.splitlines()[1:] if line.split()}
    assert "heartbeats:" in shown.stdout and "plain" not in lines
    assert "next " in lines["ops"] and "(in " in lines["ops"] and "interval" in lines["ops"]
    assert "next: would run with 0 due task(s)" in lines["ops"]
    assert "last: skipped: HEARTBEAT.md is empty" in lines["quiet"]
    assert "next would skip: HEARTBEAT.md is empty" in lines["quiet"]
    as_json = await asyncio.to_thread(cli, "--json")
    rows = {row["agent"]: row for row in json.loads(as_json.stdout)["heartbeats"]}
    assert (
        rows["ops"]["due"] == due["ops"] and rows["quiet"]["last_outcome"] == "skipped: HEARTBEAT.md is empty"
    )


async def test_one_pass_fires_every_due_slot_in_batches_and_leaves_other_pools_agents(
    fleet_url: str, tmp_path: Path
) -> None:
    agents = make_agents(tmp_path / "agents", *(f"a{i:02d}" for i in range(20)))
    for folder in agents.iterdir():
        (folder / "HEARTBEAT.md").write_text("Check.\n")
        (folder / "openclaw-mini.toml").write_text(AROUND_THE_CLOCK)
    clock = FakeClock(START)
    fleet = await Fleet.connect(fleet_url, retry=FAST)
    try:
        # agents served by another pool of workers, due before all of ours, more than a batch
        for i in range(9):
            await fleet.queue.schedule_heartbeat(
                f"elsewhere{i}", START.timestamp() + i, "interval", expected=None
            )
        scheduler = HeartbeatScheduler(fleet.queue, agents, clock=clock, batch=7)
        assert await scheduler.register() == 20
        clock.jump(61)
        assert await scheduler.fire_due() == 20
        due = {e.agent: e.due for e in await fleet.heartbeats()}
        assert [due.pop(f"elsewhere{i}") for i in range(9)] == [START.timestamp() + i for i in range(9)]
        assert set(due.values()) == {START.timestamp() + 120}
    finally:
        await fleet.close()


async def test_a_cron_task_gets_its_own_slot_and_wakes_with_reason_cron(
    tmp_path: Path, model: FakeAnthropicServer
) -> None:
    agents = make_agents(tmp_path / "agents", "ops")
    (agents / "ops" / "HEARTBEAT.md").write_text(
        'tasks:\n  - name: standup\n    cron: "5 9 * * *"\n    prompt: Post the standup reminder.\n'
    )
    (agents / "ops" / "openclaw-mini.toml").write_text(
        '[heartbeat]\nevery = "1h"\ntimezone = "UTC"\nactive_hours = { start = "00:00", end = "24:00" }\n'
    )
    model.handler = lambda request: text_reply("HEARTBEAT_OK")
    clock = FakeClock(START)  # 09:00 UTC
    fleet = await Fleet.connect(f"sqlite:///{tmp_path}/fleet.db", retry=FAST)
    try:
        scheduler = HeartbeatScheduler(fleet.queue, agents, clock=clock)
        await scheduler.register()
        [entry] = await fleet.heartbeats()
        assert (entry.due, entry.reason) == (START.timestamp() + 300, "cron")  # 09:05 before 10:00
        worker = Running(make_worker(fleet, agents, model, tmp_path, "w1", clock))
        clock.jump(300)
        assert await scheduler.fire_due() == 1
        ran = await wait_done(fleet, "ops", START.timestamp() + 300)
        await worker.stop()
        assert ran.last_outcome == "ran: HEARTBEAT_OK"
        [request] = requests_of(model, "ops")
        assert "Wake reason: cron" in json.dumps(request.messages)
        [entry] = await fleet.heartbeats()
        assert (entry.due, entry.reason) == (START.timestamp() + 300 + 3600, "interval")
    finally:
        await fleet.close()
