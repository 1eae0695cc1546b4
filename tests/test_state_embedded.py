"""The embedded SQLite store: several processes, crashes, replay, and its own edge cases."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from openclaw_mini.state import (
    EmbeddedWorldState,
    RemoteWorldState,
    StateError,
    StateUnavailableError,
    make_event,
    new_event_id,
    open_world_state,
    state_db_path,
)
from openclaw_mini.state.models import PreparedEvent, StateUpdate, format_timestamp, parse_timestamp

pytestmark = pytest.mark.timeout(90)


def run_child(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


WRITER = """
import asyncio, sys
from openclaw_mini.state import EmbeddedWorldState, make_event

async def main(path, tag, count):
    async with EmbeddedWorldState(path) as store:
        for index in range(count):
            await store.publish(make_event(f"{tag}/e{index % 10}", {f"n{index}": index}))
        await store.publish_batch(
            [make_event("shared/counter", {f"{tag}-{index}": index}) for index in range(count // 2)]
        )
    print("done", flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_two_processes_publishing_to_one_store_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    count = 150
    children = [run_child(WRITER, str(path), tag, str(count)) for tag in ("p1", "p2")]
    for child in children:
        out, err = await asyncio.to_thread(child.communicate, timeout=60)
        assert child.returncode == 0, err
        assert out.strip() == "done"
    async with EmbeddedWorldState(path) as store:
        assert await store.event_count() == 2 * (count + count // 2)
        counter = await store.get("shared/counter")
        assert counter is not None and len(counter.properties) == count  # both halves merged
        for tag in ("p1", "p2"):
            entities = await store.list(namespace=tag)
            assert len(entities) == 10
            assert sum(len(entity.properties) for entity in entities) == count
        assert await store.list() == await store.replay()


CRASHER = """
import asyncio, sys
from openclaw_mini.state import EmbeddedWorldState, make_event

async def main(path):
    async with EmbeddedWorldState(path) as store:
        batch = 0
        while True:
            await store.publish_batch(
                [make_event(f"crash/e{index % 40}", {"batch": batch, f"i{index % 7}": index})
                 for index in range(200)]
            )
            print(batch, flush=True)
            batch += 1

asyncio.run(main(sys.argv[1]))
"""


async def test_state_equals_replay_after_kill_minus_nine_mid_batch(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    child = run_child(CRASHER, str(path))
    try:
        assert child.stdout is not None
        for _ in range(3):  # let a few batches commit, then kill at a random moment
            line = await asyncio.to_thread(child.stdout.readline)
            assert line.strip().isdigit(), child.stderr.read() if child.stderr else ""
        await asyncio.sleep(random.uniform(0.0, 0.05))
        child.send_signal(signal.SIGKILL)
        await asyncio.to_thread(child.wait, 10)
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()
    async with EmbeddedWorldState(path) as store:
        events = await store.event_count()
        assert events > 0 and events % 200 == 0  # whole batches or nothing
        table = await store.list()
        assert table == await store.replay()
        last_batch = events // 200 - 1
        assert {entity.properties["batch"] for entity in table} == {last_batch}
        assert await store.rebuild() == len(table)
        assert await store.list() == table


async def test_rebuild_repairs_a_damaged_entity_table(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with EmbeddedWorldState(path) as store:
        await store.publish_batch([make_event(f"r/e{index}", {"v": index}) for index in range(5)])
        await store.delete("r/e0")
        expected = await store.list()
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM entities WHERE id = 'r/e1'")
        conn.execute("UPDATE entities SET properties = '{\"v\": 99}' WHERE id = 'r/e2'")
    conn.close()
    async with EmbeddedWorldState(path) as store:
        assert await store.list() != expected
        assert await store.replay() == expected
        assert await store.rebuild() == 4
        assert await store.list() == expected


async def test_another_store_on_the_same_file_sees_updates_by_polling(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    reader = EmbeddedWorldState(path, poll_interval=0.02)
    writer = EmbeddedWorldState(path)
    try:
        await writer.publish(make_event("x/before", {"v": 0}))
        async with reader.subscribe("x/*") as updates:
            await reader.publish(make_event("x/own", {"v": 1}))  # pushed directly, not twice
            await writer.publish(make_event("x/other", {"v": 2}))
            await writer.delete("x/before")
            got = [await asyncio.wait_for(anext(updates), 5) for _ in range(3)]
            assert [(item.type, item.entity_id) for item in got] == [
                ("state_update", "x/own"),
                ("state_update", "x/other"),
                ("entity_deleted", "x/before"),
            ]
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(updates), 0.2)
    finally:
        await reader.aclose()
        await writer.aclose()


async def test_a_subscriber_sees_events_another_process_publishes(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with EmbeddedWorldState(path, poll_interval=0.02) as store:
        async with store.subscribe("kid/*") as updates:
            child = run_child(WRITER, str(path), "kid", "4")
            _out, err = await asyncio.to_thread(child.communicate, timeout=60)
            assert child.returncode == 0, err
            got = [await asyncio.wait_for(anext(updates), 5) for _ in range(4)]
            assert [(item.entity_id, item.properties) for item in got] == [
                (f"kid/e{index}", {f"n{index}": index}) for index in range(4)
            ]


async def test_a_write_blocked_by_a_held_lock_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with EmbeddedWorldState(path, busy_timeout=0.1) as store:
        await store.publish(make_event("l/a", {"v": 1}))
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(StateError, match="locked"):
                await store.publish(make_event("l/a", {"v": 2}))
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        assert (await store.publish(make_event("l/a", {"v": 3}))).ok
        entity = await store.get("l/a")
        assert entity is not None and entity.properties == {"v": 3}


async def test_a_subscriber_that_falls_behind_is_closed_with_a_clear_error(tmp_path: Path) -> None:
    async with EmbeddedWorldState(tmp_path / "state.db", max_queue=5) as store:
        subscription = store.subscribe("*")
        await subscription.start()
        await store.publish_batch([make_event(f"q/{index}", {"v": index}) for index in range(10)])
        with pytest.raises(StateError, match="fell behind"):
            await anext(subscription)
        with pytest.raises(StopAsyncIteration):
            await anext(subscription)


async def test_sqlite_never_runs_on_the_event_loop_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.current_thread()
    original = EmbeddedWorldState._db

    def checked(self: EmbeddedWorldState) -> sqlite3.Connection:
        assert threading.current_thread() is not loop_thread, "sqlite used on the event loop"
        return original(self)

    monkeypatch.setattr(EmbeddedWorldState, "_db", checked)
    async with EmbeddedWorldState(tmp_path / "state.db") as store:
        async with store.subscribe("*", snapshot=True):
            await store.publish(make_event("t/a", {"v": 1}))
            await store.publish_batch([make_event("t/b", {"v": 2})])
            await store.get("t/a")
            await store.list(prefix="t/")
            await store.history("t/a")
            await store.delete_many(namespace="t")
            await store.rebuild()


async def test_concurrent_publishers_share_commits_and_all_land(tmp_path: Path) -> None:
    async with EmbeddedWorldState(tmp_path / "state.db") as store:
        results = await asyncio.gather(
            *[store.publish(make_event(f"c/e{index % 5}", {f"k{index}": index})) for index in range(200)],
            store.publish(
                {"stream": "BAD", "source": "x", "payload": {"entity_id": "c/x", "properties": {}}}
            ),
            return_exceptions=True,
        )
        assert isinstance(results[-1], StateError)  # the bad one failed alone
        assert all(not isinstance(result, BaseException) and result.ok for result in results[:-1])
        assert await store.event_count() == 200
        assert sum(len(entity.properties) for entity in await store.list()) == 200


async def test_a_newer_schema_or_a_foreign_file_is_refused_clearly(tmp_path: Path) -> None:
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    async with EmbeddedWorldState(newer) as store:
        with pytest.raises(StateError, match="v99"):
            await store.get("a")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    async with EmbeddedWorldState(junk) as store:
        with pytest.raises(StateError, match="not a usable world state database"):
            await store.list()


async def test_a_closed_store_refuses_work(tmp_path: Path) -> None:
    store = EmbeddedWorldState(tmp_path / "state.db")
    await store.publish(make_event("a/b", {"v": 1}))
    subscription = store.subscribe("*")
    await subscription.start()
    await store.aclose()
    with pytest.raises(StateUnavailableError, match="closed"):
        await store.get("a/b")
    with pytest.raises(StopAsyncIteration):
        await anext(subscription)
    await store.aclose()  # idempotent


async def test_open_world_state_picks_embedded_or_remote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_world_state(tmp_path)
    assert isinstance(store, EmbeddedWorldState)
    assert store.path == state_db_path(tmp_path) == tmp_path / ".openclaw-mini" / "state.db"
    await store.publish(make_event("w/a", {"v": 1}))
    await store.aclose()
    assert (tmp_path / ".openclaw-mini" / "state.db").exists()

    monkeypatch.setenv("FLUX_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("FLUX_TOKEN", "secret")
    remote = open_world_state(tmp_path)
    assert isinstance(remote, RemoteWorldState)
    assert remote.url == "http://127.0.0.1:9" and remote.headers["Authorization"] == "Bearer secret"
    with pytest.raises(StateUnavailableError, match="cannot reach"):
        await remote.get("w/a")
    await remote.aclose()
    monkeypatch.setenv("FLUX_URL", "ftp://nope")
    with pytest.raises(ValueError, match="http"):
        open_world_state(tmp_path)


def test_event_ids_are_uuid7_and_time_ordered() -> None:
    ids = [new_event_id() for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(item[14] == "7" and item[19] in "89ab" for item in ids)
    millis = int(ids[0].replace("-", "")[:12], 16)
    assert abs(millis - time.time() * 1000) < 60_000


def test_stored_json_is_what_gets_applied() -> None:
    from datetime import datetime

    from openclaw_mini.state.models import prepare_event

    prepared = prepare_event(make_event("a/b", {"when": datetime(2025, 1, 2, 3, 4, 5), "nan": float("nan")}))
    assert prepared.properties == {"when": "2025-01-02T03:04:05", "nan": None}
    assert PreparedEvent.from_body(prepared.body).properties == prepared.properties


def test_timestamps_parse_flux_nanoseconds_and_format_like_flux() -> None:
    moment = parse_timestamp("2026-02-11T16:54:33.260296395+00:00")
    assert (moment.microsecond, moment.utcoffset()) == (260296, parse_timestamp(0).utcoffset())
    assert format_timestamp(1_739_290_200_123) == "2025-02-11T16:10:00.123Z"
    update = StateUpdate(
        type="state_update",
        entity_id="a/b",
        properties={"x": 1, "y": 2},
        timestamp=parse_timestamp(1_739_290_200_123),
        event_id="e1",
    )
    messages = update.to_wire_messages()
    assert [(item["property"], item["last"]) for item in messages] == [("x", False), ("y", True)]
    assert messages[0]["timestamp"] == "2025-02-11T16:10:00.123Z"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
def test_state_db_path_is_inside_the_workspace_runtime_folder(tmp_path: Path) -> None:
    assert state_db_path(tmp_path).relative_to(tmp_path).parts == (".openclaw-mini", "state.db")
