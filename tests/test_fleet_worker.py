"""Workers running real `Agent` turns (in process) against the fake model server, on both backends:
results, history across workers, hydration and persistence, memory merges, write conflicts, drain."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from openclaw_mini.errors import InvalidMessage, ResultTimeout
from openclaw_mini.fleet import Fleet, RetryPolicy, Worker
from openclaw_mini.fleet.store import AgentWorkspace
from openclaw_mini.testing import FakeAnthropicServer, text_reply, tool_reply
from tests.fleet_support import REDIS_BIN, RedisServer, echo_handler, make_agents, needs_redis, wait_for

FAST = RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.2)


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


class Pool:
    """Workers running in this event loop, stopped (drained) at the end."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []
        self.workers: list[Worker] = []

    def start(self, worker: Worker) -> Worker:
        self.workers.append(worker)
        self.tasks.append(asyncio.create_task(worker.run()))
        return worker

    async def stop(self) -> None:
        for worker in self.workers:
            worker.drain()
        tasks, self.tasks, self.workers = self.tasks, [], []
        await asyncio.wait_for(asyncio.gather(*tasks), 60)


@contextlib.asynccontextmanager
async def connected(url: str, pool: Pool) -> AsyncIterator[Fleet]:
    """A fleet client whose workers are stopped before it closes."""
    fleet = await Fleet.connect(url, retry=FAST)
    try:
        yield fleet
    finally:
        await pool.stop()
        await fleet.close()


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    running = Pool()
    yield running
    await running.stop()


def _worker(
    fleet: Fleet, agents: Path, model: FakeAnthropicServer, tmp: Path, name: str, **kw: Any
) -> Worker:
    return Worker(
        fleet,
        agents,
        worker_id=name,
        lease=kw.pop("lease", 2.0),
        cache_dir=tmp / f"cache-{name}",
        agent_options={"base_url": model.url, "api_key": "test"},
        **kw,
    )


async def test_turns_run_and_history_follows_the_conversation_across_workers(
    fleet_url: str, tmp_path: Path, model: FakeAnthropicServer, pool: Pool
) -> None:
    model.handler = echo_handler()
    agents = make_agents(tmp_path / "agents", "support")
    async with connected(fleet_url, pool) as fleet:
        first = pool.start(_worker(fleet, agents, model, tmp_path, "w1", concurrency=2))
        one = await fleet.enqueue(agent="support", conversation="user-42", text="Where is my order?")
        result = await fleet.result(one.id, timeout=60)
        assert (result.status, result.text, result.attempts, result.worker_id) == (
            "done",
            "echo: Where is my order?",
            1,
            "w1",
        )
        # hand the pool over to a second worker with its own empty cache: the history comes from the store
        first.drain()
        await wait_for(lambda: _stopped(first), what="w1 to stop")
        pool.start(_worker(fleet, agents, model, tmp_path, "w2"))
        two = await fleet.enqueue(agent="support", conversation="user-42", text="And the invoice?")
        result = await fleet.result(two.id, timeout=60)
        assert (result.text, result.worker_id) == ("echo: And the invoice?", "w2")
        history = model.requests[-1].messages
        assert [m["role"] for m in history] == ["user", "assistant", "user"]
        assert "Where is my order?" in json.dumps(history[0]) and history[1]["content"][0]["text"] == (
            "echo: Where is my order?"
        )
        _, files = await fleet.queue.manifest("support")
        assert ".openclaw-mini/sessions/support/user-42.jsonl" in files


async def _stopped(worker: Worker) -> bool:
    return worker.state == "stopped"


async def test_files_the_agent_writes_are_stored_before_the_ack(
    fleet_url: str, tmp_path: Path, model: FakeAnthropicServer, pool: Pool
) -> None:
    model.queue(
        tool_reply(("write", {"path": "notes/todo.txt", "content": "call the courier"})), text_reply("Noted.")
    )
    agents = make_agents(tmp_path / "agents", "support")
    async with connected(fleet_url, pool) as fleet:
        pool.start(_worker(fleet, agents, model, tmp_path, "w1"))
        message = await fleet.enqueue(agent="support", conversation="c1", text="remember the courier")
        result = await fleet.result(message.id, timeout=60)
        assert result.text == "Noted."
        stored = await fleet.queue.fetch_files("support", ["notes/todo.txt"])
        assert stored["notes/todo.txt"][1] == b"call the courier"
        # the shipped definition is never modified
        assert not (agents / "support" / "notes").exists()
        assert not (agents / "support" / ".openclaw-mini").exists()


async def test_memory_appends_from_two_conversations_merge(
    fleet_url: str, tmp_path: Path, pool: Pool
) -> None:
    """Two slots of one agent each append a note to the same memory file; both notes survive."""
    agents = make_agents(tmp_path / "agents", "support")
    async with connected(fleet_url, pool) as fleet:
        a = AgentWorkspace(fleet.queue, "support", agents / "support", tmp_path / "slot-a")
        b = AgentWorkspace(fleet.queue, "support", agents / "support", tmp_path / "slot-b")
        for conv in ("c1", "c2"):
            await fleet.enqueue(agent="support", conversation=conv, text="note this")
        ca, cb = await fleet.queue.claim("w", lease_seconds=30, limit=2)
        await a.hydrate()
        await b.hydrate()
        for ws, note in ((a, "- from c1\n"), (b, "- from c2\n")):
            path = ws.root / "memory" / "2026-01-01.md"
            path.parent.mkdir(exist_ok=True)
            path.write_text("# Notes\n" + note)
        changes_a, changes_b = await a.changes(), await b.changes()
        assert [c.kind for c in changes_a] == ["append"]
        await fleet.queue.complete(ca, "ok", changes_a)
        await fleet.queue.complete(cb, "ok", changes_b)
        await b.committed(changes_b)
        fetched = await b.hydrate()
        assert fetched == 1  # only the merged file moved
        merged = (b.root / "memory" / "2026-01-01.md").read_text()
        assert merged == "# Notes\n- from c1\n# Notes\n- from c2\n"
        # nothing changed since: hydrating again fetches nothing
        assert await b.hydrate() == 0


async def test_a_conflicting_write_fails_the_tool_call_clearly(
    fleet_url: str, tmp_path: Path, model: FakeAnthropicServer, pool: Pool
) -> None:
    """c1 reads plan.md, c2 rewrites it and finishes, then c1 writes: c1's write is refused with a
    clear tool error (the stored file keeps c2's version), and the turn goes on."""
    agents = make_agents(tmp_path / "agents", "support")
    c2_done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def handler(request: Any) -> Any:
        text = json.dumps(request.messages)
        if "rewrite the plan" in text and "tool_result" not in text:
            return tool_reply(("write", {"path": "plan.md", "content": "plan by c2"}))
        if "rewrite the plan" in text:
            return text_reply("c2 done")
        if "tool_result" in text:
            return text_reply("c1 saw: " + json.dumps(request.messages[-1]["content"][0]["content"])[:400])
        # c1's first call: wait until c2 finished, then write over the version c1 read
        asyncio.run_coroutine_threadsafe(c2_done.wait(), loop).result(timeout=60)
        return tool_reply(("write", {"path": "plan.md", "content": "plan by c1"}))

    model.handler = handler
    async with connected(fleet_url, pool) as fleet:
        pool.start(_worker(fleet, agents, model, tmp_path, "w1", concurrency=2))
        m1 = await fleet.enqueue(agent="support", conversation="c1", text="write the plan")
        await wait_for(lambda: _in_flight(fleet, m1.id), what="c1 to start")
        m2 = await fleet.enqueue(agent="support", conversation="c2", text="rewrite the plan")
        assert (await fleet.result(m2.id, timeout=60)).text == "c2 done"
        c2_done.set()
        r1 = await fleet.result(m1.id, timeout=60)
        assert r1.status == "done"
        assert "plan.md was changed by another conversation" in (r1.text or "")
        stored = await fleet.queue.fetch_files("support", ["plan.md"])
        assert stored["plan.md"][1] == b"plan by c2"


async def _in_flight(fleet: Fleet, message_id: str) -> bool:
    return (await fleet.message(message_id)).status == "in_flight"


async def test_a_failing_model_retries_then_dead_letters_and_the_conversation_moves_on(
    fleet_url: str, tmp_path: Path, model: FakeAnthropicServer, pool: Pool
) -> None:
    from openclaw_mini.testing import error_reply

    model.handler = echo_handler(
        hook=lambda text, r: error_reply(400, "bad request") if "bad" in text else None
    )
    agents = make_agents(tmp_path / "agents", "support")
    async with connected(fleet_url, pool) as fleet:
        pool.start(_worker(fleet, agents, model, tmp_path, "w1"))
        bad = await fleet.enqueue(agent="support", conversation="c", text="bad one")
        good = await fleet.enqueue(agent="support", conversation="c", text="good one")
        dead = await fleet.result(bad.id, timeout=60)
        assert dead.status == "dead_letter" and "bad request" in (dead.error or "")
        assert (await fleet.result(good.id, timeout=60)).text == "echo: good one"
        # an agent no worker has: refused at enqueue, nothing written
        with pytest.raises(InvalidMessage, match="unknown agent 'sales'"):
            await fleet.enqueue(agent="sales", conversation="c", text="hi")
        # with no worker left, waiting for a result times out clearly and the message stays queued
        pool.workers[0].drain()
        await wait_for(lambda: _stopped(pool.workers[0]), what="w1 to stop")
        stuck = await fleet.enqueue(agent="support", conversation="other", text="x", priority=10)
        with pytest.raises(ResultTimeout, match="still queued"):
            await fleet.result(stuck.id, timeout=0.3)


async def test_drain_hands_back_a_turn_that_outlives_the_drain_timeout(
    fleet_url: str, tmp_path: Path, model: FakeAnthropicServer, pool: Pool
) -> None:
    release = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow(text: str, request: Any) -> Any:
        if "slow" in text:
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=60)
        return None

    model.handler = echo_handler(hook=slow)
    agents = make_agents(tmp_path / "agents", "support")
    async with connected(fleet_url, pool) as fleet:
        worker = pool.start(_worker(fleet, agents, model, tmp_path, "w1", drain_timeout=0.3))
        message = await fleet.enqueue(agent="support", conversation="c", text="slow one")
        await wait_for(lambda: _in_flight(fleet, message.id), what="the turn to start")
        status = await fleet.status()
        assert status.in_flight == 1 and status.workers[0].id == "w1"
        worker.drain()
        await wait_for(lambda: _stopped(worker), what="w1 to stop")
        handed_back = await fleet.message(message.id)
        assert handed_back.status == "queued" and handed_back.attempts == 0
        assert (await fleet.status()).workers == []
        release.set()
        pool.start(_worker(fleet, agents, model, tmp_path, "w2"))
        result = await fleet.result(message.id, timeout=60)
        assert (result.text, result.worker_id, result.attempts) == ("echo: slow one", "w2", 1)


def test_cli_defaults_to_the_embedded_queue_in_the_current_folder(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OPENCLAW_MINI_FLEET_URL"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "openclaw_mini.cli.main", "fleet", *args]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    sent = cli("send", "--agent", "support", "--conversation", "u1", "hello")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.strip().startswith("m-")
    assert (tmp_path / ".openclaw-mini" / "fleet.db").is_file()
    status = json.loads(cli("status", "--json").stdout)
    assert (status["queued"], status["workers"]) == (1, [])
    assert "no dead letters" in cli("dead-letter", "list").stdout
    bad = cli("send", "--agent", "support", "--conversation", "a/b", "hello")
    assert bad.returncode == 2 and "conversation 'a/b' is not valid" in bad.stderr
    wrong = cli("status", "--url", "mysql://x")
    assert wrong.returncode == 2 and "not supported" in wrong.stderr
    missing = cli("worker", "--agents", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "is not a folder" in missing.stderr


async def test_a_slot_fetches_only_what_changed_and_only_its_conversations_transcript(
    fleet_url: str, tmp_path: Path, pool: Pool
) -> None:
    from openclaw_mini.fleet import FileChange

    agents = make_agents(tmp_path / "agents", "support")
    sessions = ".openclaw-mini/sessions/support"
    async with connected(fleet_url, pool) as fleet:
        for conv in ("c1", "c2"):
            await fleet.enqueue(agent="support", conversation=conv, text="hi")
        claims = await fleet.queue.claim("w", lease_seconds=30, limit=2)
        for claim in claims:
            conv = claim.message.conversation
            changes = [
                FileChange(path=f"{sessions}/{conv}.jsonl", kind="put", data=f"{conv}\n".encode()),
                FileChange(path=f"shared-{conv}.txt", kind="put", data=b"x"),
            ]
            await fleet.queue.complete(claim, "ok", changes)
        slot = AgentWorkspace(fleet.queue, "support", agents / "support", tmp_path / "slot")
        assert await slot.hydrate("c1") == 3  # both shared files and c1's transcript, not c2's
        assert not (slot.root / sessions / "c2.jsonl").exists()
        assert (slot.root / sessions / "c1.jsonl").read_text() == "c1\n"
        assert await slot.hydrate("c1") == 0  # nothing moved: no fetch at all
        assert await slot.hydrate("c2") == 1  # c2's transcript, remembered as outdated
        assert (slot.root / "AGENTS.md").is_file()  # the definition is there too


async def test_embedded_queue_with_worker_processes_survives_a_kill_9(
    tmp_path: Path, model: FakeAnthropicServer
) -> None:
    """The SQLite queue shared by two real worker processes on one machine: one is killed mid-turn,
    every message still completes once, in order per conversation."""
    import signal
    import subprocess

    from tests.fleet_support import spawn_worker

    model.handler = echo_handler(delay=0.3)
    url = f"sqlite:///{tmp_path}/fleet.db"
    agents = make_agents(tmp_path / "agents", "support")
    args = ["--backoff", "0.05s"]

    def start(name: str) -> subprocess.Popen[bytes]:
        log = tmp_path / name
        return spawn_worker(url, agents, model_url=model.url, worker_id=name, lease=1.5, extra=args, log=log)

    procs = [start("p1")]
    try:
        async with await Fleet.connect(url, retry=FAST) as fleet:
            ids = [
                (await fleet.enqueue(agent="support", conversation=f"c{n % 4}", text=f"m{n}")).id
                for n in range(12)
            ]

            async def p1_busy() -> bool:
                return any([(await fleet.message(i)).worker_id == "p1" for i in ids])

            await wait_for(p1_busy, what="p1 to take a turn")
            procs.append(start("p2"))
            procs[0].send_signal(signal.SIGKILL)
            results = [await fleet.result(i, timeout=90) for i in ids]
            assert [r.text for r in results] == [f"echo: m{n}" for n in range(12)]
            for conv in range(4):
                path = f".openclaw-mini/sessions/support/c{conv}.jsonl"
                data = (await fleet.queue.fetch_files("support", [path]))[path][1].decode()
                replies = [line for line in data.splitlines() if '"role":"assistant"' in line]
                assert [f"echo: m{n}" in r for n, r in zip(range(conv, 12, 4), replies, strict=True)] == [
                    True
                ] * 3
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
