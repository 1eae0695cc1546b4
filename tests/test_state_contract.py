"""One contract suite for every `WorldState`: the embedded store, and the same store served over
HTTP/WebSocket and used through `RemoteWorldState`. Both must behave the same."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from openclaw_mini.state import (
    MAX_DELETE_IDS,
    BatchTooLargeError,
    EmbeddedWorldState,
    EventTooLargeError,
    InvalidEventError,
    RemoteWorldState,
    StateUpdate,
    Subscription,
    WorldState,
    make_event,
)
from openclaw_mini.state.server import serve_in_background

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["embedded", "served"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[WorldState]:
    store = EmbeddedWorldState(tmp_path / "state.db")
    try:
        if request.param == "embedded":
            yield store
        else:
            async with serve_in_background(store) as url:
                client = RemoteWorldState(url)
                try:
                    yield client
                finally:
                    await client.aclose()
    finally:
        await store.aclose()


async def next_update(subscription: Subscription, within: float = 5.0) -> StateUpdate:
    return await asyncio.wait_for(anext(subscription), within)


async def assert_quiet(subscription: Subscription, wait: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        update = await asyncio.wait_for(anext(subscription), wait)
        pytest.fail(f"unexpected update {update}")


async def test_properties_merge_shallowly_per_top_level_key(world: WorldState) -> None:
    await world.publish(make_event("lab/s1", {"temp": 20, "unit": "C", "meta": {"a": 1, "b": 2}}))
    first = await world.get("lab/s1")
    assert first is not None
    await world.publish(make_event("lab/s1", {"temp": 21.5, "meta": {"c": 3}, "unit": None}))
    entity = await world.get("lab/s1")
    assert entity is not None
    # untouched keys stay, nested objects are replaced whole, null is stored as null
    assert entity.properties == {"temp": 21.5, "unit": None, "meta": {"c": 3}}
    assert entity.last_updated >= first.last_updated
    assert entity.to_wire().keys() == {"id", "properties", "lastUpdated"}
    assert entity.to_wire()["lastUpdated"].endswith("Z")


async def test_publish_accepts_flux_json_and_fills_id_and_time(world: WorldState) -> None:
    result = await world.publish(
        {
            "stream": "sensors.temp",
            "source": "sensor-01",
            "payload": {"entity_id": "lab/t", "properties": {"v": 1}},
        }
    )
    assert result.ok and result.stream == "sensors.temp"
    assert result.event_id is not None and result.event_id[14] == "7"  # a UUIDv7
    [event] = await world.history("lab/t")
    assert event.event_id == result.event_id
    assert event.timestamp is not None and event.timestamp > 0
    assert event.source == "sensor-01"


async def test_tombstone_then_a_later_write_recreates_from_scratch(world: WorldState) -> None:
    await world.publish(make_event("lab/s2", {"a": 1, "b": 2}))
    deleted = await world.delete("lab/s2")
    assert deleted.entity_id == "lab/s2" and deleted.event_id
    assert await world.get("lab/s2") is None
    assert [entity.id for entity in await world.list()] == []
    await world.publish(make_event("lab/s2", {"c": 3}))
    entity = await world.get("lab/s2")
    assert entity is not None and entity.properties == {"c": 3}
    events = await world.history("lab/s2")
    assert [event.is_tombstone for event in events] == [False, True, False]  # newest first
    assert events[1].stream == "flux.deletions"


async def test_a_batch_with_one_malformed_event_fails_only_that_event(world: WorldState) -> None:
    results = await world.publish_batch(
        [
            make_event("lab/b1", {"v": 1}),
            {
                "stream": "Not Valid",
                "source": "x",
                "payload": {"entity_id": "lab/b2", "properties": {"v": 2}},
            },
            {"stream": "ok", "source": "x", "payload": {"properties": {"v": 3}}},
            make_event("lab/b3", {"v": 3}),
        ]
    )
    # As in Flux, a payload without entity_id is a valid event that changes no state.
    assert [result.ok for result in results] == [True, False, True, True]
    assert results[1].error is not None and "event 1" in results[1].error and "stream" in results[1].error
    assert results[1].stream == "Not Valid"
    assert [entity.id for entity in await world.list()] == ["lab/b1", "lab/b3"]


async def test_single_malformed_event_raises_and_stores_nothing(world: WorldState) -> None:
    with pytest.raises(InvalidEventError, match="timestamp"):
        await world.publish(
            {
                "stream": "s",
                "source": "x",
                "timestamp": -5,
                "payload": {"entity_id": "lab/x", "properties": {}},
            }
        )
    with pytest.raises(InvalidEventError, match="source"):
        await world.publish(
            {"stream": "s", "source": " ", "payload": {"entity_id": "lab/x", "properties": {}}}
        )
    assert await world.list() == []


async def test_one_megabyte_limit_per_event(world: WorldState) -> None:
    big = "x" * (1024 * 1024)
    with pytest.raises(EventTooLargeError, match="1 MB"):
        await world.publish(make_event("lab/big", {"blob": big}))
    fits = "x" * (1024 * 1024 - 400)
    assert (await world.publish(make_event("lab/fits", {"blob": fits}))).ok
    results = await world.publish_batch(
        [make_event("lab/big", {"blob": big}), make_event("lab/small", {"v": 1})]
    )
    assert not results[0].ok and results[0].error is not None and "1 MB" in results[0].error
    assert results[1].ok
    assert await world.get("lab/big") is None


async def test_ten_megabyte_limit_per_batch(world: WorldState) -> None:
    chunk = "y" * (1000 * 1000)
    events = [make_event(f"lab/c{index}", {"blob": chunk}) for index in range(11)]
    with pytest.raises(BatchTooLargeError, match="10 MB"):
        await world.publish_batch(events)
    assert await world.list() == []


async def test_list_filters_by_prefix_and_namespace(world: WorldState) -> None:
    await world.publish_batch(
        [make_event(entity_id, {"v": 1}) for entity_id in ("lab/b", "lab/a", "labx/c", "plain", "other/lab")]
    )
    assert [entity.id for entity in await world.list()] == ["lab/a", "lab/b", "labx/c", "other/lab", "plain"]
    assert [entity.id for entity in await world.list(namespace="lab")] == ["lab/a", "lab/b"]
    assert [entity.id for entity in await world.list(prefix="lab")] == ["lab/a", "lab/b", "labx/c"]
    assert [entity.id for entity in await world.list(prefix="lab/")] == ["lab/a", "lab/b"]
    assert await world.list(namespace="nothing") == []


async def test_odd_ids_round_trip_through_urls(world: WorldState) -> None:
    odd = "ns/温度 sensor?#%2F&x=1"
    await world.publish(make_event(odd, {"v": "ü"}))
    entity = await world.get(odd)
    assert entity is not None and entity.id == odd and entity.properties == {"v": "ü"}
    assert await world.get("ns/温度 sensor") is None
    await world.delete(odd)
    assert await world.get(odd) is None


async def test_delete_many_by_each_filter_and_its_limits(world: WorldState) -> None:
    ids = ["a/1", "a/2", "b/1", "b/2", "c/1", "c/2"]
    await world.publish_batch([make_event(entity_id, {"v": 1}) for entity_id in ids])
    assert (await world.delete_many(namespace="a")).deleted == 2
    assert (await world.delete_many(prefix="b/")).deleted == 2
    outcome = await world.delete_many(entity_ids=["c/1"])
    assert (outcome.deleted, outcome.failed, outcome.errors) == (1, 0, [])
    assert [entity.id for entity in await world.list()] == ["c/2"]
    with pytest.raises(BatchTooLargeError, match="10,000"):
        await world.delete_many(entity_ids=[f"z/{index}" for index in range(MAX_DELETE_IDS + 1)])
    with pytest.raises(InvalidEventError, match="exactly one"):
        await world.delete_many(prefix="c/", namespace="c")
    with pytest.raises(InvalidEventError, match="exactly one"):
        await world.delete_many()
    assert [entity.id for entity in await world.list()] == ["c/2"]


async def test_history_is_newest_first_with_limit_and_since(world: WorldState) -> None:
    for value in range(3):
        await world.publish(make_event("lab/h", {"v": value}))
    events = await world.history("lab/h", limit=2)
    assert [event.payload.properties["v"] for event in events] == [2, 1]
    assert await world.history("lab/h", since=datetime.now(UTC) + timedelta(hours=1)) == []
    assert len(await world.history("lab/h", since=datetime.now(UTC) - timedelta(hours=1))) == 3
    assert await world.history("lab/nothing") == []


async def test_republishing_the_same_event_id_is_applied_once(world: WorldState) -> None:
    event = make_event("lab/once", {"n": 1})
    first = await world.publish(event)
    again = await world.publish(event)
    assert first.event_id == again.event_id
    assert len(await world.history("lab/once")) == 1


async def test_repeated_event_ids_in_a_batch_are_applied_once(world: WorldState) -> None:
    old = make_event("lab/dup", {"a": 1})
    await world.publish(old)
    again = make_event("lab/dup", {"b": 2})
    results = await world.publish_batch([old, again, again, make_event("lab/dup", {"c": 3})])
    assert all(result.ok for result in results)
    assert results[1].event_id == results[2].event_id == again.event_id
    assert len(await world.history("lab/dup")) == 3
    entity = await world.get("lab/dup")
    assert entity is not None and entity.properties == {"a": 1, "b": 2, "c": 3}


async def test_subscribe_to_one_id_versus_everything(world: WorldState) -> None:
    async with world.subscribe("lab/a") as one, world.subscribe("*") as everything:
        await world.publish(make_event("lab/b", {"x": 1}))
        await world.publish(make_event("lab/a", {"x": 2, "y": 3}))
        await world.delete("lab/a")

        update = await next_update(one)
        assert (update.type, update.entity_id, update.properties) == (
            "state_update",
            "lab/a",
            {"x": 2, "y": 3},
        )
        assert update.event_id is not None and not update.snapshot
        gone = await next_update(one)
        assert (gone.type, gone.entity_id) == ("entity_deleted", "lab/a")
        await assert_quiet(one)

        seen = [await next_update(everything) for _ in range(3)]
        assert [(item.type, item.entity_id) for item in seen] == [
            ("state_update", "lab/b"),
            ("state_update", "lab/a"),
            ("entity_deleted", "lab/a"),
        ]
        assert seen[0].properties == {"x": 1}


async def test_subscribe_by_prefix_pattern_and_several_ids(world: WorldState) -> None:
    async with world.subscribe(["lab/*", "other/x"]) as subscription:
        await world.publish(make_event("else/y", {"v": 0}))
        await world.publish(make_event("lab/p", {"v": 1}))
        await world.publish(make_event("other/x", {"v": 2}))
        got = [(await next_update(subscription)).entity_id for _ in range(2)]
        assert got == ["lab/p", "other/x"]
        await assert_quiet(subscription)


async def test_snapshot_subscription_starts_with_current_state(world: WorldState) -> None:
    await world.publish_batch(
        [make_event("lab/s1", {"v": 1}), make_event("lab/s2", {"v": 2}), make_event("zz/s3", {"v": 3})]
    )
    async with world.subscribe("lab/*", snapshot=True) as subscription:
        first = [await next_update(subscription) for _ in range(2)]
        assert [(item.entity_id, item.properties, item.snapshot) for item in first] == [
            ("lab/s1", {"v": 1}, True),
            ("lab/s2", {"v": 2}, True),
        ]
        await world.publish(make_event("lab/s1", {"v": 10}))
        live = await next_update(subscription)
        assert (live.entity_id, live.properties, live.snapshot) == ("lab/s1", {"v": 10}, False)


async def test_closing_a_subscription_ends_iteration(world: WorldState) -> None:
    subscription = world.subscribe("*")
    await subscription.start()
    await subscription.aclose()
    with pytest.raises(StopAsyncIteration):
        await next_update(subscription)
