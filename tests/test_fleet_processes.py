"""Failure tests with real worker OS processes (`openclaw-mini fleet worker`) and a real redis-server:
kill -9 mid-turn, the poison message, a Redis restart mid-run, SIGTERM drain, duplicate keys, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from openclaw_mini.fleet import Fleet, RetryPolicy
from openclaw_mini.testing import FakeAnthropicServer, error_reply
from tests.fleet_support import RedisServer, echo_handler, make_agents, needs_redis, spawn_worker, wait_for

pytestmark = needs_redis
LEASE = 1.5
FAST = RetryPolicy(max_attempts=5, base_delay=0.05, max_delay=0.5)
WORKER_ARGS = ["--backoff", "0.05s", "--drain-timeout", "10s"]


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


class Workers:
    def __init__(self, tmp: Path, url: str, model: FakeAnthropicServer) -> None:
        self.tmp, self.url, self.model = tmp, url, model
        self.agents = make_agents(tmp / "agents", "support")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self, worker_id: str, *, concurrency: int = 4, extra: list[str] | None = None
    ) -> subprocess.Popen[bytes]:
        proc = spawn_worker(
            self.url,
            self.agents,
            model_url=self.model.url,
            worker_id=worker_id,
            concurrency=concurrency,
            lease=LEASE,
            extra=[*WORKER_ARGS, *(extra or [])],
            log=self.tmp / f"{worker_id}.log",
        )
        self.procs[worker_id] = proc
        return proc

    def log(self, worker_id: str) -> str:
        path = self.tmp / f"{worker_id}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


@pytest.fixture
def workers(tmp_path: Path, redis_server: RedisServer, model: FakeAnthropicServer) -> Iterator[Workers]:
    pool = Workers(tmp_path, redis_server.url, model)
    yield pool
    pool.stop_all()


async def _registered(fleet: Fleet, *ids: str) -> bool:
    live = {w.id for w in (await fleet.status()).workers if not w.lost}
    return set(ids) <= live


async def _transcript(fleet: Fleet, conversation: str) -> list[dict[str, Any]]:
    path = f".openclaw-mini/sessions/support/{conversation}.jsonl"
    stored = await fleet.queue.fetch_files("support", [path])
    if path not in stored:
        return []
    return [json.loads(line) for line in stored[path][1].decode().splitlines() if line.strip()]


def _replies(lines: list[dict[str, Any]]) -> list[str]:
    found = []
    for line in lines:
        message = line.get("message") or line
        if message.get("role") == "assistant":
            for block in message.get("content", []):
                if isinstance(block, dict) and block.get("type") == "text":
                    found.append(block["text"])
    return found


async def test_kill_9_mid_turn_moves_the_turns_to_another_worker(
    workers: Workers, redis_server: RedisServer, model: FakeAnthropicServer
) -> None:
    model.handler = echo_handler(delay=1.0)
    async with await Fleet.connect(redis_server.url, retry=FAST) as fleet:
        doomed = workers.start("doomed", concurrency=4)
        await wait_for(lambda: _registered(fleet, "doomed"), what="the doomed worker")
        ids = [
            (await fleet.enqueue(agent="support", conversation=f"c{i}", text=f"hello {i}")).id
            for i in range(4)
        ]

        async def doomed_busy() -> bool:
            states = [await fleet.message(i) for i in ids]
            return sum(s.status == "in_flight" and s.worker_id == "doomed" for s in states) >= 2

        await wait_for(doomed_busy, what="the doomed worker to hold turns")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=30)
        workers.start("survivor", concurrency=4)
        results = [await fleet.result(i, timeout=90) for i in ids]
        assert [r.status for r in results] == ["done"] * 4, [r.error for r in results]
        assert [r.text for r in results] == [f"echo: hello {i}" for i in range(4)]
        moved = [r for r in results if r.worker_id == "survivor"]
        assert moved and all(r.attempts >= 2 for r in moved)
        # the reply each user sees was recorded once, in order, in each transcript
        for i in range(4):
            assert _replies(await _transcript(fleet, f"c{i}")) == [f"echo: hello {i}"]
        status = await fleet.status()
        assert status.in_flight == status.queued == status.dead_letters == 0


async def test_a_poison_message_that_kills_every_worker_ends_in_the_dead_letter(
    workers: Workers, redis_server: RedisServer, model: FakeAnthropicServer
) -> None:
    current: dict[str, subprocess.Popen[bytes]] = {}

    def kill_on_poison(text: str, request: Any) -> Any:
        if "poison" in text:
            current["proc"].kill()  # the worker serving it dies mid-turn, every time
            return error_reply(529)
        return None

    model.handler = echo_handler(hook=kill_on_poison)
    async with await Fleet.connect(redis_server.url, retry=FAST) as fleet:
        poison = await fleet.enqueue(agent="support", conversation="c", text="poison pill")
        after = await fleet.enqueue(agent="support", conversation="c", text="the next one")
        generation = 0
        while (await fleet.message(poison.id)).status != "dead_letter":
            assert generation < 6, "the poison message was never dead-lettered"
            proc = workers.start(f"w{generation}", extra=["--max-attempts", "3"])
            current["proc"] = proc
            await wait_for(lambda p=proc: _exited_or_dead(p, fleet, poison.id), timeout=90, what="a crash")
            if proc.poll() is None:
                break
            generation += 1
        dead = await fleet.message(poison.id)
        assert dead.status == "dead_letter" and dead.attempts == 3
        assert "lease expired" in (dead.error or "") and "gave up after 3 attempts" in (dead.error or "")
        assert generation == 3
        result = await fleet.result(after.id, timeout=60)
        assert result.text == "echo: the next one"
        assert [d.id for d in await fleet.dead_letters()] == [poison.id]


async def _exited_or_dead(proc: subprocess.Popen[bytes], fleet: Fleet, message_id: str) -> bool:
    return proc.poll() is not None or (await fleet.message(message_id)).status == "dead_letter"


async def test_a_redis_restart_mid_run_loses_nothing(
    workers: Workers, redis_server: RedisServer, model: FakeAnthropicServer
) -> None:
    model.handler = echo_handler(delay=0.2)
    async with await Fleet.connect(redis_server.url, retry=FAST) as fleet:
        workers.start("a")
        workers.start("b")
        await wait_for(lambda: _registered(fleet, "a", "b"), what="two workers")
        expected: dict[str, list[str]] = {}
        ids = []
        for n in range(24):
            conversation = f"c{n % 6}"
            text = f"{conversation} message {n}"
            ids.append((await fleet.enqueue(agent="support", conversation=conversation, text=text)).id)
            expected.setdefault(conversation, []).append(f"echo: {text}")

        async def some_done() -> bool:
            return sum([(await fleet.message(i)).status == "done" for i in ids]) >= 4

        await wait_for(some_done, what="a few turns")
        redis_server.kill()
        await asyncio.sleep(1.0)  # an outage of about a second (the workers retry with backoff)
        redis_server.start()
        results = [await _result_across_outage(fleet, i) for i in ids]
        assert all(r.status == "done" for r in results), [(r.status, r.error) for r in results]
        for conversation, replies in expected.items():
            assert (
                _replies(await _transcript(fleet, conversation)) == replies
            )  # in order, none lost or doubled
        assert "retrying with backoff" in workers.log("a") + workers.log("b")


async def _result_across_outage(fleet: Fleet, message_id: str) -> Any:
    from openclaw_mini.errors import FleetUnavailable

    for _ in range(100):
        try:
            return await fleet.result(message_id, timeout=90)
        except FleetUnavailable:
            await asyncio.sleep(0.2)
    raise AssertionError("Redis never came back")


async def test_sigterm_drains_finishes_the_turn_and_exits_0(
    workers: Workers, redis_server: RedisServer, model: FakeAnthropicServer
) -> None:
    model.handler = echo_handler(delay=1.0)
    async with await Fleet.connect(redis_server.url, retry=FAST) as fleet:
        proc = workers.start("w1")
        await wait_for(lambda: _registered(fleet, "w1"), what="the worker")
        message = await fleet.enqueue(agent="support", conversation="c", text="finish me")
        await wait_for(lambda: _status_is(fleet, message.id, "in_flight"), what="the turn")
        proc.send_signal(signal.SIGTERM)

        async def draining() -> bool:
            return [w.state for w in (await fleet.status()).workers] == ["draining"]

        await wait_for(draining, what="the worker to say it is draining")
        later = await fleet.enqueue(agent="support", conversation="d", text="not for a draining worker")
        assert await asyncio.to_thread(proc.wait, 60) == 0, workers.log("w1")
        assert (await fleet.message(message.id)).text == "echo: finish me"
        assert (await fleet.message(later.id)).status == "queued"
        assert (await fleet.status()).workers == []
        assert "1 done" in workers.log("w1")


async def _status_is(fleet: Fleet, message_id: str, status: str) -> bool:
    return (await fleet.message(message_id)).status == status


def _cli(*args: str, url: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.update(env or {})
    full["OPENCLAW_MINI_FLEET_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "openclaw_mini.cli.main", "fleet", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=120,
    )


async def test_cli_send_with_a_duplicate_key_status_and_dead_letters(
    workers: Workers, redis_server: RedisServer, model: FakeAnthropicServer
) -> None:
    model.handler = echo_handler(
        hook=lambda text, r: error_reply(400, "refused") if "refuse" in text else None
    )
    url = redis_server.url
    workers.start("w1")
    async with await Fleet.connect(url, retry=FAST) as fleet:
        await wait_for(lambda: _registered(fleet, "w1"), what="the worker")
    first = await asyncio.to_thread(
        _cli, "send", "--agent", "support", "--conversation", "u1", "--idempotency-key", "tg-981",
        "--wait", "--json", "hello there", url=url,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    again = await asyncio.to_thread(
        _cli, "send", "--agent", "support", "--conversation", "u1", "--idempotency-key", "tg-981",
        "--wait", "--json", "hello there", url=url,
    )  # fmt: skip
    one, two = json.loads(first.stdout), json.loads(again.stdout)
    assert one["id"] == two["id"] and one["text"] == "echo: hello there" == two["text"]
    assert sum("hello there" in json.dumps(r.messages) for r in model.requests) == 1  # one turn
    refused = await asyncio.to_thread(
        _cli, "send", "--agent", "support", "--conversation", "u2", "--wait", "please refuse", url=url
    )
    assert refused.returncode == 1 and "dead letter" in refused.stderr and "refused" in refused.stderr
    listed = await asyncio.to_thread(_cli, "dead-letter", "list", "--json", url=url)
    [letter] = json.loads(listed.stdout)
    assert letter["conversation"] == "u2"
    status = await asyncio.to_thread(_cli, "status", url=url)
    assert "dead letters 1" in status.stdout and "w1" in status.stdout and "active" in status.stdout
    model.handler = echo_handler()
    retried = await asyncio.to_thread(_cli, "dead-letter", "retry", letter["id"], url=url)
    assert retried.returncode == 0
    async with await Fleet.connect(url, retry=FAST) as fleet:
        assert (await fleet.result(letter["id"], timeout=60)).text == "echo: please refuse"
    missing = await asyncio.to_thread(_cli, "dead-letter", "drop", letter["id"], url=url)
    assert missing.returncode == 2 and "no dead letter" in missing.stderr
    bad = await asyncio.to_thread(_cli, "send", "--agent", "support", "--conversation", "u3", "  ", url=url)
    assert bad.returncode == 2 and "empty" in bad.stderr
    down = await asyncio.to_thread(
        _cli, "status", url=f"redis://127.0.0.1:{redis_server.port + 1 if redis_server.port < 65535 else 1}/0"
    )
    assert down.returncode == 2 and "cannot reach Redis" in down.stderr


async def test_a_worker_started_before_redis_waits_for_it_and_says_so(
    workers: Workers, redis_server: RedisServer, model: FakeAnthropicServer
) -> None:
    model.handler = echo_handler()
    redis_server.kill()
    proc = workers.start("early")

    async def says_so() -> bool:
        return "retrying in" in workers.log("early")

    await wait_for(says_so, what="the worker to report the unreachable Redis")
    assert proc.poll() is None
    redis_server.start()
    async with await Fleet.connect(redis_server.url, retry=FAST) as fleet:
        await wait_for(lambda: _registered(fleet, "early"), what="the worker to register")
        message = await fleet.enqueue(agent="support", conversation="c", text="hello")
        assert (await fleet.result(message.id, timeout=60)).text == "echo: hello"
