"""The `Queue` contract, run on both backends: SQLite (embedded) and a real redis-server."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from openclaw_mini.errors import (
    FleetUnavailable,
    InvalidMessage,
    MessageNotFound,
    StaleLease,
    StoreConflict,
    UnknownAgent,
)
from openclaw_mini.fleet.models import MAX_TEXT_BYTES, FileChange, RetryPolicy, WorkerInfo
from openclaw_mini.fleet.queue import Queue, open_queue
from tests.fleet_support import REDIS_BIN, RedisServer, needs_redis, wait_for

FAST = RetryPolicy(max_attempts=3, base_delay=0.01, factor=2.0, max_delay=0.05)


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
async def make_queue(
    request: pytest.FixtureRequest, tmp_path: Path, redis_server: RedisServer | None
) -> AsyncIterator[object]:
    opened: list[Queue] = []
    if request.param == "redis":
        assert redis_server is not None
        redis_server.flush()
        url = redis_server.url
    else:
        url = f"sqlite:///{tmp_path}/fleet.db"

    async def make(retry: RetryPolicy = FAST) -> Queue:
        queue = await open_queue(url, retry=retry)
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        await queue.close()


async def test_enqueue_claim_complete_reports_the_result(make_queue) -> None:
    queue = await make_queue()
    message, created = await queue.enqueue("support", "user-42", "Where is my order?")
    assert created and message.enqueued_at > 0
    assert (await queue.message(message.id)).status == "queued"
    [claim] = await queue.claim("w1", lease_seconds=30)
    assert claim.message == message and claim.attempt == 1 and claim.expires_at > message.enqueued_at
    assert (await queue.message(message.id)).status == "in_flight"
    await queue.complete(claim, "On its way.")
    result = await queue.message(message.id)
    assert (result.status, result.text, result.attempts, result.worker_id) == ("done", "On its way.", 1, "w1")
    assert await queue.claim("w1", lease_seconds=30) == []


async def test_one_conversation_runs_one_message_at_a_time_in_order(make_queue) -> None:
    queue = await make_queue()
    a1, _ = await queue.enqueue("support", "a", "a1")
    a2, _ = await queue.enqueue("support", "a", "a2")
    b1, _ = await queue.enqueue("support", "b", "b1")
    claims = await queue.claim("w1", lease_seconds=30, limit=10)
    assert sorted(c.message.id for c in claims) == sorted([a1.id, b1.id])
    assert await queue.claim("w2", lease_seconds=30, limit=10) == []  # a2 waits behind a1
    await queue.complete(next(c for c in claims if c.message.id == a1.id), "done a1")
    [next_claim] = await queue.claim("w2", lease_seconds=30, limit=10)
    assert next_claim.message.id == a2.id


async def test_urgent_band_before_normal_before_low(make_queue) -> None:
    queue = await make_queue()
    low, _ = await queue.enqueue("support", "c1", "low", priority=10)
    normal, _ = await queue.enqueue("support", "c2", "normal", priority=50)
    urgent, _ = await queue.enqueue("support", "c3", "urgent", priority=90)
    order = []
    for _ in range(3):
        [claim] = await queue.claim("w1", lease_seconds=30)
        order.append(claim.message.id)
    assert order == [urgent.id, normal.id, low.id]


async def test_a_stale_lease_is_refused_after_takeover(make_queue) -> None:
    queue = await make_queue()
    message, _ = await queue.enqueue("support", "c", "hello")
    [first] = await queue.claim("w1", lease_seconds=0.3)
    # w1 stops renewing (as if killed); w2 (same lease setting, as a fleet's workers share one) takes
    # the conversation over once the lease ran out.
    second = await wait_for(
        lambda: queue.claim("w2", lease_seconds=0.3), timeout=30, what="the expired lease to be taken over"
    )
    assert second[0].message.id == message.id and second[0].attempt == 2
    with pytest.raises(StaleLease):
        await queue.complete(first, "late reply")
    with pytest.raises(StaleLease):
        await queue.renew(first, lease_seconds=30)
    with pytest.raises(StaleLease):
        await queue.fail(first, "late failure")
    await queue.complete(second[0], "the reply")
    result = await queue.message(message.id)
    assert (result.text, result.attempts, result.worker_id) == ("the reply", 2, "w2")


async def test_renew_keeps_the_lease(make_queue) -> None:
    queue = await make_queue()
    await queue.enqueue("support", "c", "hello")
    [claim] = await queue.claim("w1", lease_seconds=0.5)
    for _ in range(4):
        expires = await queue.renew(claim, lease_seconds=0.5)
        assert expires >= claim.expires_at
        assert await queue.claim("w2", lease_seconds=30) == []
        await asyncio.sleep(0.2)
    await queue.complete(claim, "ok")


async def test_a_crash_counts_as_an_attempt_so_a_poison_message_dead_letters(make_queue) -> None:
    queue = await make_queue(RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02))
    poison, _ = await queue.enqueue("support", "c", "kills its worker")
    after, _ = await queue.enqueue("support", "c", "next message")
    for attempt in (1, 2):
        [claim] = await wait_for(lambda: queue.claim("w", lease_seconds=0.2), what=f"attempt {attempt}")
        assert (claim.message.id, claim.attempt) == (poison.id, attempt)
        # never completed: the worker "dies"
    [claim] = await wait_for(lambda: queue.claim("w", lease_seconds=0.2), what="the next message")
    assert claim.message.id == after.id
    dead = await queue.message(poison.id)
    assert dead.status == "dead_letter" and dead.attempts == 2
    assert "lease expired" in (dead.error or "") and "gave up after 2 attempts" in (dead.error or "")
    assert [d.id for d in await queue.dead_letters()] == [poison.id]


async def test_failures_back_off_exponentially_then_dead_letter(make_queue) -> None:
    queue = await make_queue(RetryPolicy(max_attempts=3, base_delay=0.4, factor=2.0, max_delay=10))
    message, _ = await queue.enqueue("support", "c", "flaky")
    [claim] = await queue.claim("w", lease_seconds=30)
    failed = await queue.fail(claim, "model overloaded")
    assert failed.status == "delayed" and failed.error == "model overloaded"
    assert failed.not_before is not None
    # equal jitter: between half and all of base * 2^(attempt-1)
    assert 0.2 - 0.05 <= failed.not_before - (await queue.message(message.id)).enqueued_at <= 0.4 + 5
    assert (await queue.status()).delayed == 1
    assert await queue.claim("w", lease_seconds=30) == []  # not yet due
    [claim] = await wait_for(lambda: queue.claim("w", lease_seconds=30), what="the retry")
    assert claim.attempt == 2
    assert (await queue.fail(claim, "again")).status == "delayed"
    [claim] = await wait_for(lambda: queue.claim("w", lease_seconds=30), what="the second retry")
    assert claim.attempt == 3
    dead = await queue.fail(claim, "still overloaded")
    assert dead.status == "dead_letter" and dead.error == "still overloaded (gave up after 3 attempts)"


def test_backoff_policy_bounds() -> None:
    policy = RetryPolicy()
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (7, 64.0), (8, 120.0), (30, 120.0)]:
        for _ in range(50):
            assert ceiling / 2 <= policy.delay(attempt, rng) <= ceiling
    assert policy.max_attempts == 5


async def test_dead_letter_ops_and_the_conversation_moves_on(make_queue) -> None:
    queue = await make_queue()
    bad, _ = await queue.enqueue("support", "c", "bad")
    good, _ = await queue.enqueue("support", "c", "good")
    [claim] = await queue.claim("w", lease_seconds=30)
    dead = await queue.fail(claim, "agent folder missing", retryable=False)
    assert dead.status == "dead_letter" and dead.error == "agent folder missing"
    assert (await queue.status()).dead_letters == 1
    [claim] = await queue.claim("w", lease_seconds=30)
    assert claim.message.id == good.id
    retried = await queue.retry_dead(bad.id)
    assert retried.status == "queued" and retried.attempts == 0
    await queue.complete(claim, "ok")
    [claim] = await queue.claim("w", lease_seconds=30)  # back at the tail of its conversation
    assert claim.message.id == bad.id and claim.attempt == 1
    await queue.fail(claim, "still bad", retryable=False)
    await queue.drop_dead(bad.id)
    assert await queue.dead_letters() == []
    with pytest.raises(MessageNotFound):
        await queue.drop_dead(bad.id)
    with pytest.raises(MessageNotFound):
        await queue.retry_dead("m-nope")


async def test_release_hands_back_without_counting_an_attempt(make_queue) -> None:
    queue = await make_queue()
    message, _ = await queue.enqueue("support", "c", "hello")
    [claim] = await queue.claim("w1", lease_seconds=30)
    await queue.release(claim)
    with pytest.raises(StaleLease):
        await queue.complete(claim, "late")
    [claim] = await queue.claim("w2", lease_seconds=30)
    assert claim.message.id == message.id and claim.attempt == 1


async def test_the_same_idempotency_key_yields_one_message(make_queue) -> None:
    queue = await make_queue()
    first, created = await queue.enqueue("support", "c", "hi", idempotency_key="tg-update-981")
    again, created_again = await queue.enqueue("support", "c", "hi", idempotency_key="tg-update-981")
    assert created and not created_again and again == first
    claims = await queue.claim("w", lease_seconds=30, limit=10)
    assert [c.message.id for c in claims] == [first.id]
    await queue.complete(claims[0], "ok")
    third, created_third = await queue.enqueue("support", "c", "hi", idempotency_key="tg-update-981")
    assert third.id == first.id and not created_third
    assert await queue.claim("w", lease_seconds=30, limit=10) == []


async def test_bad_input_is_refused_before_anything_is_written(make_queue) -> None:
    queue = await make_queue()
    cases = [
        ({"agent": "support", "conversation": "c", "text": "   "}, "empty"),
        ({"agent": "support", "conversation": "c", "text": "x" * (MAX_TEXT_BYTES + 1)}, "over the"),
        ({"agent": "../etc", "conversation": "c", "text": "hi"}, "agent"),
        ({"agent": "support", "conversation": "a/b", "text": "hi"}, "conversation"),
        ({"agent": "support", "conversation": "c", "text": "hi", "priority": 101}, "priority"),
    ]
    for kwargs, words in cases:
        with pytest.raises(InvalidMessage, match=words):
            await queue.enqueue(**kwargs)
    assert (await queue.status()).queued == 0
    # once workers registered their agents, an unknown one is refused
    await queue.heartbeat(_worker("w1", agents=["support"]))
    with pytest.raises(UnknownAgent, match=r"'sales'.*support"):
        await queue.enqueue("sales", "c", "hi")
    assert (await queue.status()).queued == 0
    assert await queue.known_agents() == {"support"}


def _worker(worker_id: str, agents: list[str] | None = None, lease: float = 30.0) -> WorkerInfo:
    return WorkerInfo(
        id=worker_id,
        host="test",
        pid=1,
        concurrency=8,
        load=3,
        agents=agents or ["support"],
        lease_seconds=lease,
        started_at=0,
    )


async def test_status_counts_and_worker_registry(make_queue) -> None:
    queue = await make_queue(RetryPolicy(max_attempts=3, base_delay=30, max_delay=30))
    for conv in ("a", "b", "c", "d"):
        await queue.enqueue("support", conv, "hi")
    await queue.enqueue("support", "a", "second")
    c1, c2 = await queue.claim("w1", lease_seconds=30, limit=2)
    await queue.fail(c2, "later")
    stamped = await queue.heartbeat(_worker("w1"))
    await queue.heartbeat(_worker("w2", lease=0.3).model_copy(update={"state": "draining"}))
    status = await queue.status()
    assert (status.queued, status.in_flight, status.delayed, status.dead_letters) == (3, 1, 1, 0)
    assert [w.id for w in status.workers] == ["w1", "w2"]
    assert status.workers[0].load == 3 and status.workers[0].heartbeat_at == pytest.approx(
        stamped.heartbeat_at
    )
    assert status.workers[1].state == "draining"

    # w2 stops beating: after 3 periods (at least 1 s each) it is shown as lost, w1 keeps beating
    async def w2_lost() -> bool:
        await queue.heartbeat(_worker("w1"))
        return next(w for w in (await queue.status()).workers if w.id == "w2").lost

    await wait_for(w2_lost, timeout=30, what="w2 to be shown as lost")
    assert not next(w for w in (await queue.status()).workers if w.id == "w1").lost
    await queue.remove_worker("w2")
    assert [w.id for w in (await queue.status()).workers] == ["w1"]
    await queue.complete(c1, "ok")


async def test_complete_stores_the_turns_files_atomically(make_queue) -> None:
    queue = await make_queue()
    for conv in ("a", "b"):
        await queue.enqueue("support", conv, "hi")
    ca, cb = await queue.claim("w", lease_seconds=30, limit=2)
    await queue.complete(
        ca,
        "ok",
        [
            FileChange(path="notes.txt", kind="put", data=b"v1", base_version=0),
            FileChange(path="memory/2026-01-01.md", kind="append", data=b"- from a\n"),
        ],
    )
    version, files = await queue.manifest("support")
    assert set(files) == {"notes.txt", "memory/2026-01-01.md"} and version == await queue.agent_version(
        "support"
    )
    # b read the old notes.txt (absent: base 0): its put conflicts; nothing of its changes is applied
    with pytest.raises(StoreConflict, match=r"notes\.txt") as info:
        await queue.complete(
            cb,
            "late",
            [
                FileChange(path="memory/2026-01-01.md", kind="append", data=b"- from b\n"),
                FileChange(path="notes.txt", kind="put", data=b"v2", base_version=0),
            ],
        )
    assert info.value.paths == ["notes.txt"]
    assert (await queue.message(cb.message.id)).status == "in_flight"  # still leased: it can fail/retry
    assert await queue.agent_version("support") == version
    # appends merge whatever the base; a put on the current version applies
    await queue.complete(
        cb,
        "ok",
        [
            FileChange(path="memory/2026-01-01.md", kind="append", data=b"- from b\n"),
            FileChange(path="notes.txt", kind="put", data=b"v2", base_version=files["notes.txt"].version),
        ],
    )
    fetched = await queue.fetch_files("support", ["memory/2026-01-01.md", "notes.txt", "missing.txt"])
    assert fetched["memory/2026-01-01.md"][1] == b"- from a\n- from b\n"
    assert fetched["notes.txt"][1] == b"v2" and "missing.txt" not in fetched
    meta = await queue.file_meta("support", "notes.txt")
    assert meta is not None and meta.size == 2 and meta.version > files["notes.txt"].version
    # delete with the right base
    await queue.enqueue("support", "a", "bye")
    [claim] = await queue.claim("w", lease_seconds=30)
    await queue.complete(
        claim, "ok", [FileChange(path="notes.txt", kind="delete", base_version=meta.version)]
    )
    assert await queue.file_meta("support", "notes.txt") is None


async def test_ordering_property_many_conversations_several_consumers(make_queue) -> None:
    """Random interleavings: every conversation's messages are processed in enqueue order, never two
    at once, by consumers that claim in batches and finish in random order."""
    for seed in range(3):
        rng = random.Random(seed)
        queue = await make_queue()
        expected: dict[str, list[str]] = {}
        for _ in range(120):
            conv = f"c{rng.randrange(15)}"
            message, _ = await queue.enqueue(
                "support", f"{conv}-{seed}", f"{conv}:{len(expected.get(conv, []))}"
            )
            expected.setdefault(f"{conv}-{seed}", []).append(message.id)
        seen: dict[str, list[str]] = {}
        running: set[str] = set()

        async def consumer(
            name: str,
            rng: random.Random,
            queue: Queue = queue,
            seen: dict[str, list[str]] = seen,
            running: set[str] = running,
        ) -> None:
            idle = 0
            while idle < 5:
                claims = await queue.claim(name, lease_seconds=30, limit=rng.randint(1, 4))
                if not claims:
                    idle += 1
                    await asyncio.sleep(0.01)
                    continue
                idle = 0
                for claim in claims:
                    conv = claim.message.conversation
                    assert conv not in running, f"two messages of {conv} at once"
                    running.add(conv)
                    seen.setdefault(conv, []).append(claim.message.id)
                rng.shuffle(claims)
                for claim in claims:
                    await asyncio.sleep(rng.random() * 0.002)
                    running.discard(claim.message.conversation)
                    if rng.random() < 0.1:
                        await queue.release(claim)  # handed back: it runs again, still in order
                        seen[claim.message.conversation].pop()
                    else:
                        await queue.complete(claim, "ok")

        await asyncio.gather(*(consumer(f"w{i}", random.Random(seed * 10 + i)) for i in range(4)))
        assert seen == expected
        assert (await queue.status()).queued == 0


async def test_an_unreachable_backend_is_a_clear_error(tmp_path: Path) -> None:
    from tests.fleet_support import free_port

    port = free_port()
    with pytest.raises(FleetUnavailable, match=f"127.0.0.1:{port}") as info:
        await open_queue(f"redis://user:s3cret@127.0.0.1:{port}/0")
    assert "s3cret" not in str(info.value) and "user:***@" in str(info.value)
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(FleetUnavailable, match=r"dir\.db"):
        await open_queue(f"sqlite:///{tmp_path}/dir.db")
    with pytest.raises(Exception, match="not supported"):
        await open_queue("postgres://x")


async def test_a_first_crash_is_retried_at_once_a_second_waits_out_the_backoff(make_queue) -> None:
    queue = await make_queue(RetryPolicy(max_attempts=5, base_delay=30, max_delay=60))
    message, _ = await queue.enqueue("support", "c", "hello")
    await queue.claim("w1", lease_seconds=0.2)  # w1 dies
    [claim] = await wait_for(lambda: queue.claim("w2", lease_seconds=0.2), timeout=20, what="the takeover")
    assert claim.attempt == 2  # no 15-30 s backoff after a first crash: a lost worker is the likely cause

    async def delayed() -> bool:
        await queue.claim("w3", lease_seconds=0.2)
        return (await queue.message(message.id)).status == "delayed"

    await wait_for(delayed, timeout=20, what="the second crash to back off")  # w2 died too
    state = await queue.message(message.id)
    assert state.not_before is not None and state.not_before - state.enqueued_at >= 14
    assert "lease expired: worker w2" in (state.error or "")
