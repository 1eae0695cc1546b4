"""The served world state: Flux's wire format, auth (401/403), namespaces, rate limits (429),
size limits (413), the raw WebSocket protocol, reconnects, and the bundled skill script."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from websockets.asyncio.client import connect

from openclaw_mini.state import (
    AuthConfig,
    EmbeddedWorldState,
    NamespaceRegistry,
    RateLimitedError,
    RateLimiter,
    RemoteWorldState,
    StateAuthError,
    make_event,
)
from openclaw_mini.state.server import serve_in_background

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[1]
FLUX_SCRIPT = REPO / "skills" / "flux" / "scripts" / "flux.py"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EmbeddedWorldState]:
    state = EmbeddedWorldState(tmp_path / "state.db")
    yield state
    await state.aclose()


@pytest.fixture
async def open_url(store: EmbeddedWorldState) -> AsyncIterator[str]:
    # metrics_interval=0: no periodic metrics_update between the messages these tests count.
    async with serve_in_background(store, metrics_interval=0) as url:
        yield url


@pytest.fixture
async def http(open_url: str) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=open_url) as client:
        yield client


def flux_event(entity_id: str, **properties: Any) -> dict[str, Any]:
    return {
        "stream": "sensors",
        "source": "test",
        "payload": {"entity_id": entity_id, "properties": properties},
    }


# -- Flux wire format ----------------------------------------------------------------------


async def test_flux_documented_requests_work_unchanged(http: httpx2.AsyncClient) -> None:
    answer = await http.post(
        "/api/events", json=flux_event("temp-sensor-01", temperature=22.5, unit="celsius")
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["stream"] == "sensors" and len(body["eventId"]) == 36

    batch = await http.post(
        "/api/events/batch",
        json={
            "events": [flux_event("matt/sensor-01", t=1), {"source": "x"}, flux_event("matt/sensor-02", t=2)]
        },
    )
    assert batch.status_code == 200
    shape = batch.json()
    assert (shape["successful"], shape["failed"]) == (2, 1)
    assert set(shape["results"][0]) == {"eventId", "stream"} and "error" in shape["results"][1]

    entity = (await http.get("/api/state/entities/matt%2Fsensor-01")).json()
    assert entity["id"] == "matt/sensor-01" and entity["properties"] == {"t": 1}
    assert entity["lastUpdated"].endswith("Z")
    listed = (await http.get("/api/state/entities", params={"namespace": "matt"})).json()
    assert [item["id"] for item in listed] == ["matt/sensor-01", "matt/sensor-02"]
    paged = (
        await http.get(
            "/api/state/entities", params={"limit": "1", "after": "matt/sensor-01", "properties": "t,zz"}
        )
    ).json()
    assert paged == [{**listed[1], "properties": {"t": 2}}]

    history = (await http.get("/api/events", params={"entity": "matt/sensor-01"})).json()
    assert [event["payload"]["properties"] for event in history] == [{"t": 1}]

    deleted = await http.delete("/api/state/entities/matt%2Fsensor-02")
    assert deleted.status_code == 200 and set(deleted.json()) == {"entity_id", "eventId"}
    many = await http.post("/api/state/entities/delete", json={"prefix": "matt/"})
    assert many.json() == {"deleted": 1, "failed": 0, "errors": []}
    assert (await http.get("/api/state/entities")).json()[0]["id"] == "temp-sensor-01"


async def test_errors_are_flux_shaped_with_the_right_status(http: httpx2.AsyncClient) -> None:
    missing = await http.get("/api/state/entities/nope")
    assert (missing.status_code, missing.json()) == (404, {"error": "Entity not found"})
    bad_json = await http.post(
        "/api/events", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["error"]
    bad_stream = await http.post("/api/events", json={**flux_event("a/b", v=1), "stream": "Bad-Stream"})
    assert bad_stream.status_code == 400 and "stream" in bad_stream.json()["error"]
    no_events = await http.post("/api/events/batch", json={"events": []})
    assert no_events.status_code == 400
    no_entity = await http.get("/api/events")
    assert (no_entity.status_code, no_entity.json()) == (400, {"error": "entity parameter is required"})
    bad_limit = await http.get("/api/events", params={"entity": "a", "limit": "lots"})
    assert bad_limit.status_code == 400
    two_filters = await http.post("/api/state/entities/delete", json={"prefix": "a", "namespace": "b"})
    assert two_filters.status_code == 400
    too_many = await http.post(
        "/api/state/entities/delete", json={"entity_ids": [f"x/{i}" for i in range(10_001)]}
    )
    assert too_many.status_code == 400 and "10,000" in too_many.json()["error"]
    no_namespaces = await http.post("/api/namespaces", json={"name": "lab"})
    assert no_namespaces.status_code == 404


async def test_oversized_bodies_get_413(http: httpx2.AsyncClient) -> None:
    big = json.dumps(flux_event("a/b", blob="x" * (1024 * 1024)))
    single = await http.post("/api/events", content=big, headers={"content-type": "application/json"})
    assert single.status_code == 413 and "too large" in single.json()["error"]
    event = flux_event("a/b", blob="y" * 900_000)
    huge = json.dumps({"events": [event] * 12})
    batch = await http.post("/api/events/batch", content=huge, headers={"content-type": "application/json"})
    assert batch.status_code == 413
    assert (await http.get("/api/state/entities")).json() == []


# -- auth, namespaces, rate limits --------------------------------------------------------


@pytest.fixture
async def secured(store: EmbeddedWorldState, tmp_path: Path) -> AsyncIterator[tuple[str, FakeClock]]:
    clock = FakeClock()
    auth = AuthConfig(registry=NamespaceRegistry(tmp_path / "namespaces.json"))
    async with serve_in_background(store, auth=auth, rate_limit=RateLimiter(3, clock=clock)) as url:
        yield url, clock


async def register(url: str, name: str, admin: str | None = None) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {admin}"} if admin else {}
    async with httpx2.AsyncClient(base_url=url) as client:
        return await client.post("/api/namespaces", json={"name": name}, headers=headers)


async def test_writes_need_the_owning_token(secured: tuple[str, FakeClock], tmp_path: Path) -> None:
    url, _clock = secured
    answer = await register(url, "lab")
    assert answer.status_code == 200
    token = answer.json()["token"]
    assert answer.json()["name"] == "lab" and answer.json()["namespaceId"].startswith("ns_")
    other = (await register(url, "other")).json()["token"]
    assert (await register(url, "lab")).status_code == 409
    invalid = await register(url, "x")
    assert invalid.status_code == 400 and "3-32" in invalid.json()["error"]
    stored = (tmp_path / "namespaces.json").read_text()
    assert token not in stored and other not in stored  # only hashes are kept
    reread = await asyncio.to_thread(NamespaceRegistry, tmp_path / "namespaces.json")
    assert await asyncio.to_thread(reread.owner_of, token) == "lab"

    async with (
        RemoteWorldState(url, token=None) as anonymous,
        RemoteWorldState(url, token=other) as wrong,
        RemoteWorldState(url, token=token) as owner,
        RemoteWorldState(url, token="made-up") as stranger,
    ):
        with pytest.raises(StateAuthError) as missing:
            await anonymous.publish(make_event("lab/s1", {"v": 1}))
        assert missing.value.status == 401
        with pytest.raises(StateAuthError) as forbidden:
            await wrong.publish(make_event("lab/s1", {"v": 1}))
        assert forbidden.value.status == 403 and "lab" in str(forbidden.value)
        with pytest.raises(StateAuthError) as unknown:
            await stranger.publish(make_event("lab/s1", {"v": 1}))
        assert unknown.value.status == 403
        with pytest.raises(StateAuthError) as bare:
            await owner.publish(make_event("no-namespace", {"v": 1}))
        assert bare.value.status == 403 and "namespace" in str(bare.value)
        with pytest.raises(StateAuthError):
            await owner.publish_batch([make_event("lab/ok", {"v": 1}), make_event("other/no", {"v": 1})])

        assert (await owner.publish(make_event("lab/s1", {"v": 1}))).ok
        entity = await anonymous.get("lab/s1")  # reads stay open
        assert entity is not None and entity.properties == {"v": 1}
        with pytest.raises(StateAuthError) as delete_refused:
            await wrong.delete("lab/s1")
        assert delete_refused.value.status == 403
        with pytest.raises(StateAuthError):
            await wrong.delete_many(namespace="lab")
        assert (await owner.delete_many(namespace="lab")).deleted == 1

    async with httpx2.AsyncClient(base_url=url) as client:
        info = (await client.get("/api/namespaces/lab")).json()
        assert info["name"] == "lab" and info["entityCount"] == 0 and "token" not in info
        assert (await client.get("/api/namespaces/missing")).status_code == 404


async def test_admin_token_guards_registration_and_may_write_anywhere(
    store: EmbeddedWorldState,
) -> None:
    auth = AuthConfig(admin_token="admin-secret")
    async with serve_in_background(store, auth=auth) as url:
        refused = await register(url, "lab")
        assert (refused.status_code, refused.json()) == (401, {"error": "Admin token required"})
        assert (await register(url, "lab", admin="wrong")).status_code == 401
        assert (await register(url, "lab", admin="admin-secret")).status_code == 200
        async with RemoteWorldState(url, token="admin-secret") as admin:
            assert (await admin.publish(make_event("anything/x", {"v": 1}))).ok


async def test_rate_limit_answers_429_with_retry_after(secured: tuple[str, FakeClock]) -> None:
    url, clock = secured
    token = (await register(url, "lab")).json()["token"]
    other = (await register(url, "other")).json()["token"]
    async with RemoteWorldState(url, token=token) as client, RemoteWorldState(url, token=other) as neighbour:
        for value in range(3):
            await client.publish(make_event("lab/s", {"v": value}))
        with pytest.raises(RateLimitedError) as limited:
            await client.publish(make_event("lab/s", {"v": 99}))
        assert limited.value.retry_after >= 1
        assert (await neighbour.publish(make_event("other/s", {"v": 1}))).ok  # per namespace
        async with httpx2.AsyncClient(base_url=url) as raw:
            answer = await raw.post(
                "/api/events", json=flux_event("lab/s", v=5), headers={"Authorization": f"Bearer {token}"}
            )
        assert answer.status_code == 429
        assert answer.json() == {"error": answer.json()["error"]} and "rate limit" in answer.json()["error"]
        assert int(answer.headers["Retry-After"]) >= 1
        clock.now += 20.0  # 3 per minute: one event back every 20 s
        assert (await client.publish(make_event("lab/s", {"v": 6}))).ok
        with pytest.raises(RateLimitedError):
            await client.publish(make_event("lab/s", {"v": 7}))
        entity = await client.get("lab/s")
        assert entity is not None and entity.properties == {"v": 6}


def test_rate_limiter_refills_continuously() -> None:
    clock = FakeClock()
    limiter = RateLimiter(60, clock=clock)
    assert limiter.take("a", 60) is None
    assert limiter.take("a") == 1.0
    clock.now += 1.0
    assert limiter.take("a") is None
    assert limiter.take("a", 61) == 60.0  # can never fit in one minute


# -- WebSocket ----------------------------------------------------------------------------


async def test_raw_websocket_protocol_matches_flux(open_url: str, store: EmbeddedWorldState) -> None:
    ws_url = open_url.replace("http://", "ws://") + "/api/ws"
    async with connect(ws_url) as one, connect(ws_url) as everything:
        await one.send(json.dumps({"type": "subscribe", "entity_id": "lab/a"}))
        await everything.send(json.dumps({"type": "subscribe", "entity_id": "*"}))
        await one.send("not json at all")  # ignored, like Flux
        assert json.loads(await one.recv()) == {"type": "subscribed", "entity_id": "lab/a"}
        assert json.loads(await everything.recv()) == {"type": "subscribed", "entity_id": "*"}

        await store.publish(make_event("lab/b", {"x": 1}))
        await store.publish(make_event("lab/a", {"x": 2, "y": 3}))
        await store.delete("lab/a")

        messages = [json.loads(await asyncio.wait_for(one.recv(), 5)) for _ in range(3)]
        assert [(m["type"], m.get("property"), m.get("value")) for m in messages] == [
            ("state_update", "x", 2),
            ("state_update", "y", 3),
            ("entity_deleted", None, None),
        ]
        assert all(m["entity_id"] == "lab/a" and m["timestamp"].endswith("Z") for m in messages)
        assert [m.get("last") for m in messages[:2]] == [False, True]
        seen = [json.loads(await asyncio.wait_for(everything.recv(), 5)) for _ in range(4)]
        assert [m["entity_id"] for m in seen] == ["lab/b", "lab/a", "lab/a", "lab/a"]

        await one.send(json.dumps({"type": "subscribe", "entity_id": "lab/c"}))
        await one.send(json.dumps({"type": "unsubscribe", "entity_id": "lab/a"}))
        assert json.loads(await one.recv())["type"] == "subscribed"
        assert json.loads(await one.recv())["type"] == "unsubscribed"
        await store.publish(make_event("lab/a", {"x": 4}))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(one.recv(), 0.3)
        # As in Flux: with no subscription left, a connection receives every update again.
        await one.send(json.dumps({"type": "unsubscribe", "entity_id": "lab/c"}))
        assert json.loads(await one.recv())["type"] == "unsubscribed"
        await store.publish(make_event("lab/a", {"x": 5}))
        update = json.loads(await asyncio.wait_for(one.recv(), 5))
        assert (update["entity_id"], update["value"]) == ("lab/a", 5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_remote_subscription_reconnects_and_fills_the_gap(store: EmbeddedWorldState) -> None:
    port = _free_port()
    await store.publish_batch(
        [make_event("gap/a", {"v": 1}), make_event("gap/b", {"v": 1}), make_event("gap/c", {"v": 1})]
    )
    client = RemoteWorldState(f"http://127.0.0.1:{port}", max_reconnect_delay=0.2)
    try:
        async with serve_in_background(store, port=port):
            subscription = client.subscribe("gap/*", snapshot=True)
            await subscription.start()
            first = [await asyncio.wait_for(anext(subscription), 5) for _ in range(3)]
            assert [item.entity_id for item in first] == ["gap/a", "gap/b", "gap/c"]
        # the server is gone: the world moves on without the subscriber
        await asyncio.sleep(0.01)
        await store.publish(make_event("gap/a", {"v": 2}))
        await store.delete("gap/b")
        await store.publish(make_event("gap/d", {"v": 1}))
        async with serve_in_background(store, port=port):
            caught_up = [await asyncio.wait_for(anext(subscription), 10) for _ in range(3)]
            summary = {(item.type, item.entity_id) for item in caught_up}
            assert summary == {
                ("state_update", "gap/a"),
                ("entity_deleted", "gap/b"),
                ("state_update", "gap/d"),
            }
            assert next(item for item in caught_up if item.entity_id == "gap/a").properties == {"v": 2}
            await store.publish(make_event("gap/c", {"v": 5}))  # and live updates flow again
            live = await asyncio.wait_for(anext(subscription), 5)
            assert (live.entity_id, live.properties, live.snapshot) == ("gap/c", {"v": 5}, False)
            await subscription.aclose()
    finally:
        await client.aclose()


# -- the bundled skill script -------------------------------------------------------------


async def run_script(url: str, *args: str, token: str | None = None) -> tuple[int, Any, str]:
    env = {**os.environ, "FLUX_URL": url}
    if token:
        env["FLUX_TOKEN"] = token
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(FLUX_SCRIPT),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, json.loads(out) if out.strip() else None, err.decode()


async def test_skill_script_talks_to_the_server(
    open_url: str, store: EmbeddedWorldState, tmp_path: Path
) -> None:
    code, answer, _ = await run_script(
        open_url, "publish", "lab/s1", '{"temp": 21.5}', "--stream", "sensors.temp"
    )
    assert code == 0 and answer["stream"] == "sensors.temp"
    code, entity, _ = await run_script(open_url, "get", "lab/s1")
    assert code == 0 and entity["properties"] == {"temp": 21.5}
    events = tmp_path / "events.json"
    events.write_text(json.dumps([flux_event("lab/s2", v=2), {"stream": "x"}]))
    code, batch, _ = await run_script(open_url, "batch", str(events))
    assert code == 0 and (batch["successful"], batch["failed"]) == (1, 1)
    code, listed, _ = await run_script(open_url, "list", "--namespace", "lab")
    assert [item["id"] for item in listed] == ["lab/s1", "lab/s2"]
    code, history, _ = await run_script(open_url, "history", "lab/s1")
    assert code == 0 and len(history) == 1
    code, _, err = await run_script(open_url, "get", "lab/none")
    assert code == 1 and "404" in err and "Entity not found" in err
    code, deleted, _ = await run_script(open_url, "delete", "--prefix", "lab/")
    assert code == 0 and deleted["deleted"] == 2
    assert await store.list() == []


async def test_websocket_subscriptions_per_connection_are_bounded(open_url: str) -> None:
    from openclaw_mini.state.server import MAX_PATTERN_CHARS, MAX_PATTERNS_PER_CONNECTION

    ws_url = open_url.replace("http://", "ws://") + "/api/ws"
    async with connect(ws_url) as ws:
        for index in range(MAX_PATTERNS_PER_CONNECTION):
            await ws.send(json.dumps({"type": "subscribe", "entity_id": f"ns/e{index}"}))
        for _ in range(MAX_PATTERNS_PER_CONNECTION):
            assert json.loads(await ws.recv())["type"] == "subscribed"
        await ws.send(json.dumps({"type": "subscribe", "entity_id": "ns/one-too-many"}))
        assert json.loads(await ws.recv())["type"] == "error"
        await ws.send(json.dumps({"type": "subscribe", "entity_id": "ns/e0"}))  # already there: fine
        assert json.loads(await ws.recv())["type"] == "subscribed"
        await ws.send(json.dumps({"type": "unsubscribe", "entity_id": "ns/e1"}))
        assert json.loads(await ws.recv())["type"] == "unsubscribed"
        await ws.send(json.dumps({"type": "subscribe", "entity_id": "x" * (MAX_PATTERN_CHARS + 1)}))
        assert json.loads(await ws.recv())["type"] == "error"
        await ws.send(json.dumps({"type": "subscribe", "entity_id": "ns/now-there-is-room"}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
