"""`state serve` as Flux's own clients see it (issue 13) and server hardening (issue 12 item 12).

Each `flux.sh` command is replayed here as the HTTP call the script makes (same method, path,
body and headers, including the `Content-Type: application/json` it sends on every call), and
`subscribe_websocket.py`'s protocol as the messages it sends. Texts asserted exactly are Flux's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from openclaw_mini.state import AuthConfig, EmbeddedWorldState, NamespaceRegistry, RateLimiter, make_event
from openclaw_mini.state.server import serve_in_background

pytestmark = pytest.mark.timeout(90)

JSON = {"Content-Type": "application/json"}
FLUX_SCRIPT = Path(__file__).resolve().parents[1] / "skills" / "flux" / "scripts" / "flux.py"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EmbeddedWorldState]:
    state = EmbeddedWorldState(tmp_path / "state.db")
    yield state
    await state.aclose()


@pytest.fixture
async def url(store: EmbeddedWorldState) -> AsyncIterator[str]:
    async with serve_in_background(store, metrics_interval=0) as base:
        yield base


def auth_config(tmp_path: Path, **options: Any) -> AuthConfig:
    return AuthConfig(registry=NamespaceRegistry(tmp_path / "namespaces.json"), **options)


def flux_sh_publish_body(stream: str, source: str, entity_id: str, properties: str) -> str:
    """The text `flux.sh publish` builds with its heredocs (timestamp in epoch milliseconds)."""
    payload = f'{{\n  "entity_id": "{entity_id}",\n  "properties": {properties}\n}}'
    timestamp = f"{int(time.time())}000"
    return (
        f'{{\n  "stream": "{stream}",\n  "source": "{source}",\n  "timestamp": {timestamp},\n'
        f'  "payload": {payload}\n}}'
    )


async def wait_for(check: Any, what: str, seconds: float = 20.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# ------------------------------------------------------------------ every flux.sh command


async def test_every_flux_sh_command_as_http_calls(url: str) -> None:
    async with httpx2.AsyncClient(base_url=url) as http:
        # publish sensors agent-01 lab/temp-1 '{"temperature":22.5}'
        answer = await http.post(
            "/api/events",
            content=flux_sh_publish_body("sensors", "agent-01", "lab/temp-1", '{"temperature":22.5}'),
            headers=JSON,
        )
        assert answer.status_code == 200, answer.text
        assert set(answer.json()) == {"eventId", "stream"} and answer.json()["stream"] == "sensors"

        # batch '[...]'
        events = json.dumps(
            [
                {
                    "stream": "sensors",
                    "source": "a",
                    "timestamp": 1,
                    "payload": {"entity_id": f"lab/b{i}", "properties": {"i": i}},
                }
                for i in range(3)
            ]
        )
        answer = await http.post("/api/events/batch", content=f'{{"events": {events}}}', headers=JSON)
        assert answer.json()["successful"] == 3 and answer.json()["failed"] == 0

        # get lab/temp-1 (the script encodes '/' as %2F)
        answer = await http.get("/api/state/entities/lab%2Ftemp-1", headers=JSON)
        assert answer.status_code == 200
        assert answer.json()["id"] == "lab/temp-1" and answer.json()["properties"] == {"temperature": 22.5}

        # list, list --prefix, list --namespace
        assert len((await http.get("/api/state/entities", headers=JSON)).json()) == 4
        prefixed = (await http.get("/api/state/entities?prefix=lab/b", headers=JSON)).json()
        assert [entity["id"] for entity in prefixed] == ["lab/b0", "lab/b1", "lab/b2"]
        assert len((await http.get("/api/state/entities?namespace=lab", headers=JSON)).json()) == 4

        # delete lab/b0
        answer = await http.request("DELETE", "/api/state/entities/lab%2Fb0", headers=JSON)
        assert answer.status_code == 200 and answer.json()["entity_id"] == "lab/b0"

        # batch-delete '{"prefix":"lab/b"}'
        answer = await http.post("/api/state/entities/delete", content='{"prefix":"lab/b"}', headers=JSON)
        assert answer.json() == {"deleted": 2, "failed": 0, "errors": []}

        # connectors
        answer = await http.get("/api/connectors", headers=JSON)
        assert answer.status_code == 200 and answer.json() == {"connectors": []}

        # admin-config (read), admin-config '{"rate_limit_per_namespace_per_minute": 500}' (update)
        answer = await http.get("/api/admin/config", headers=JSON)
        assert answer.json() == {
            "rate_limit_enabled": True,
            "rate_limit_per_namespace_per_minute": 10_000,
            "body_size_limit_single_bytes": 1_048_576,
            "body_size_limit_batch_bytes": 10_485_760,
        }
        answer = await http.put(
            "/api/admin/config",
            content='{"rate_limit_per_namespace_per_minute": 500}',
            # flux.sh needs FLUX_ADMIN_TOKEN set; a server without an admin token accepts any.
            headers={**JSON, "Authorization": "Bearer dev"},
        )
        assert answer.status_code == 200
        assert answer.json()["rate_limit_per_namespace_per_minute"] == 500
        assert answer.json()["body_size_limit_single_bytes"] == 1_048_576  # the whole config comes back

        # health: GET /api/state/entities, then the script counts the JSON list
        answer = await http.get("/api/state/entities", headers=JSON)
        assert answer.status_code == 200 and isinstance(answer.json(), list) and len(answer.json()) == 1


async def test_flux_sh_with_a_token_sends_it_on_every_call(store: EmbeddedWorldState, tmp_path: Path) -> None:
    auth = auth_config(tmp_path, admin_token="root-secret")
    async with serve_in_background(store, auth=auth, metrics_interval=0) as base:
        async with httpx2.AsyncClient(base_url=base) as http:
            admin = {**JSON, "Authorization": "Bearer root-secret"}
            token = (await http.post("/api/namespaces", json={"name": "lab"}, headers=admin)).json()["token"]
            user = {**JSON, "Authorization": f"Bearer {token}"}
            body = flux_sh_publish_body("sensors", "agent-01", "lab/t", '{"v":1}')
            assert (await http.post("/api/events", content=body, headers=user)).status_code == 200
            assert (await http.get("/api/connectors", headers=user)).json() == {"connectors": []}
            assert (await http.get("/api/connectors", headers=JSON)).status_code == 401
            assert (await http.get("/api/admin/config", headers=user)).status_code == 200
            # Updating needs the admin token (flux.sh sends FLUX_ADMIN_TOKEN there).
            refused = await http.put(
                "/api/admin/config", content='{"rate_limit_enabled": false}', headers=user
            )
            assert refused.status_code == 401 and refused.json() == {"error": "Unauthorized"}
            changed = await http.put(
                "/api/admin/config", content='{"rate_limit_enabled": false}', headers=admin
            )
            assert changed.status_code == 200 and changed.json()["rate_limit_enabled"] is False


# ------------------------------------------------------------------ routes Flux clients call


async def test_admin_config_changes_the_limits_at_once(url: str) -> None:
    async with httpx2.AsyncClient(base_url=url) as http:
        answer = await http.put("/api/admin/config", json={"body_size_limit_single_bytes": 200})
        assert answer.json()["body_size_limit_single_bytes"] == 200
        big = {"stream": "s", "source": "x", "payload": {"entity_id": "a", "properties": {"v": "x" * 300}}}
        too_large = await http.post("/api/events", json=big)
        assert too_large.status_code == 413 and too_large.json() == {"error": "payload too large"}
        bad = await http.put("/api/admin/config", json={"body_size_limit_single_bytes": -1})
        assert bad.status_code == 400 and "body_size_limit_single_bytes" in bad.json()["error"]
        unknown = await http.put("/api/admin/config", json={"colour": "blue"})
        assert unknown.status_code == 400 and "colour" in unknown.json()["error"]


async def test_connector_detail_and_namespace_deletion(store: EmbeddedWorldState, tmp_path: Path) -> None:
    auth = auth_config(tmp_path, admin_token="root-secret")
    async with serve_in_background(store, auth=auth, metrics_interval=0) as base:
        async with httpx2.AsyncClient(base_url=base) as http:
            missing = await http.get("/api/connectors/github")
            assert missing.status_code == 404 and missing.json() == {"error": "Connector 'github' not found"}
            admin = {"Authorization": "Bearer root-secret"}
            token = (await http.post("/api/namespaces", json={"name": "lab"}, headers=admin)).json()["token"]
            assert (await http.delete("/api/namespaces/lab")).status_code == 401
            wrong = await http.delete("/api/namespaces/lab", headers={"Authorization": f"Bearer {token}"})
            assert wrong.status_code == 401 and wrong.json() == {"error": "Admin token required"}
            gone = await http.delete("/api/namespaces/lab", headers=admin)
            assert gone.status_code == 204 and gone.content == b""
            again = await http.delete("/api/namespaces/lab", headers=admin)
            assert again.status_code == 404 and again.json() == {"error": "Namespace not found"}
            assert (await http.get("/api/namespaces/lab")).status_code == 404
            # The deleted namespace's token no longer writes.
            event = {"stream": "s", "source": "x", "payload": {"entity_id": "lab/a", "properties": {"v": 1}}}
            assert (
                await http.post("/api/events", json=event, headers={"Authorization": f"Bearer {token}"})
            ).status_code == 403


async def test_unknown_routes_and_methods_answer_json(url: str) -> None:
    async with httpx2.AsyncClient(base_url=url) as http:
        missing = await http.get("/api/nothing/here")
        assert missing.status_code == 404 and "/api/nothing/here" in missing.json()["error"]
        wrong = await http.patch("/api/events")
        assert wrong.status_code == 405 and "PATCH" in wrong.json()["error"]


# ------------------------------------------------------------------ limits and texts


async def test_an_event_of_exactly_one_mebibyte_as_sent_is_accepted(
    url: str, store: EmbeddedWorldState
) -> None:
    head = '{"stream":"s","source":"x","payload":{"entity_id":"big","properties":{"v":"'
    tail = '"}}}'
    exact = head + "x" * (1_048_576 - len(head) - len(tail)) + tail
    assert len(exact.encode()) == 1_048_576
    async with httpx2.AsyncClient(base_url=url, timeout=60) as http:
        accepted = await http.post("/api/events", content=exact, headers=JSON)
        assert accepted.status_code == 200, accepted.text
        over = exact[: len(head)] + "x" + exact[len(head) :]
        refused = await http.post("/api/events", content=over, headers=JSON)
        assert refused.status_code == 413 and refused.json() == {"error": "payload too large"}
    entity = await store.get("big")
    assert entity is not None and len(entity.properties["v"]) == 1_048_576 - len(head) - len(tail)


async def test_rate_limit_is_per_namespace_under_auth_with_flux_texts(
    store: EmbeddedWorldState, tmp_path: Path
) -> None:
    auth = auth_config(tmp_path, admin_token="root")
    frozen = RateLimiter(2, clock=lambda: 1000.0)  # no refill while the test runs, however slow
    async with serve_in_background(store, auth=auth, rate_limit=frozen, metrics_interval=0) as base:
        async with httpx2.AsyncClient(base_url=base, headers={"Authorization": "Bearer root"}) as http:

            def event(entity: str) -> dict[str, Any]:
                return {
                    "stream": "s",
                    "source": "x",
                    "payload": {"entity_id": entity, "properties": {"v": 1}},
                }

            for _ in range(2):
                assert (await http.post("/api/events", json=event("lab/a"))).status_code == 200
            limited = await http.post("/api/events", json=event("lab/b"))
            assert limited.status_code == 429 and limited.json() == {"error": "rate limit exceeded"}
            assert int(limited.headers["Retry-After"]) >= 1
            assert (await http.post("/api/events", json=event("other/a"))).status_code == 200  # own bucket
            # In a batch, only the events over the limit fail, each with Flux's text.
            batch = await http.post(
                "/api/events/batch", json={"events": [event("other/b"), event("other/c")]}
            )
            assert batch.status_code == 200
            assert [item.get("error") for item in batch.json()["results"]] == [None, "rate limit exceeded"]


async def test_without_auth_there_is_no_rate_limit_as_in_flux(store: EmbeddedWorldState) -> None:
    async with serve_in_background(store, rate_limit=1, metrics_interval=0) as base:
        async with httpx2.AsyncClient(base_url=base) as http:
            event = {"stream": "s", "source": "x", "payload": {"entity_id": "a", "properties": {"v": 1}}}
            for _ in range(3):
                assert (await http.post("/api/events", json=event)).status_code == 200


@pytest.mark.parametrize(
    "payload",
    [{"properties": {"v": 1}}, {"entity_id": "lab/a"}, {"entity_id": "lab/a", "properties": [1, 2]}, {}],
)
async def test_an_event_without_entity_id_or_properties_is_accepted_and_changes_nothing(
    url: str, store: EmbeddedWorldState, payload: dict[str, Any]
) -> None:
    async with httpx2.AsyncClient(base_url=url) as http:
        answer = await http.post("/api/events", json={"stream": "s", "source": "x", "payload": payload})
        assert answer.status_code == 200 and answer.json()["eventId"]
    assert await store.list() == []
    assert await store.event_count() == 1
    assert await store.replay() == []


# ------------------------------------------------------------------ WebSocket as Flux does it


async def test_subscribe_websocket_py_protocol_receives_updates(url: str, store: EmbeddedWorldState) -> None:
    ws_url = url.replace("http://", "ws://") + "/api/ws"
    async with connect(ws_url) as everything, connect(ws_url) as one_entity, connect(ws_url) as silent:
        await everything.send(json.dumps({"type": "subscribe"}))  # the script without --entity
        await one_entity.send(json.dumps({"type": "subscribe", "entityId": "sensor-1"}))  # --entity sensor-1
        assert json.loads(await asyncio.wait_for(one_entity.recv(), 10))["type"] == "subscribed"
        await store.publish(make_event("sensor-2", {"t": 1}))
        await store.publish(make_event("sensor-1", {"t": 2}))
        first = json.loads(await asyncio.wait_for(everything.recv(), 10))
        assert first["type"] == "state_update" and (first["entity_id"], first["value"]) == ("sensor-2", 1)
        assert {"type", "entity_id", "property", "value", "timestamp"} <= set(first)
        # A connection that never subscribed receives every state_update too.
        quiet = [json.loads(await asyncio.wait_for(silent.recv(), 10)) for _ in range(2)]
        assert [m["entity_id"] for m in quiet] == ["sensor-2", "sensor-1"]
        mine = json.loads(await asyncio.wait_for(one_entity.recv(), 10))
        assert (mine["entity_id"], mine["value"]) == ("sensor-1", 2)
        # entity_deleted goes to every client, subscribed to it or not.
        await store.delete("sensor-2")
        for client in (one_entity, silent):
            message = json.loads(await asyncio.wait_for(client.recv(), 10))
            assert (message["type"], message["entity_id"]) == ("entity_deleted", "sensor-2")


async def test_metrics_update_arrives_periodically(store: EmbeddedWorldState) -> None:
    async with serve_in_background(store, metrics_interval=0.2) as base:
        await store.publish(make_event("lab/a", {"v": 1}))
        async with connect(base.replace("http://", "ws://") + "/api/ws") as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), 20))
            assert first["type"] == "metrics_update" and first["events"]["total"] == 0
            async with httpx2.AsyncClient(base_url=base) as http:
                event = {
                    "stream": "s",
                    "source": "probe",
                    "payload": {"entity_id": "lab/b", "properties": {"v": 1}},
                }
                assert (await http.post("/api/events", json=event)).status_code == 200
            while True:  # the next snapshot counts the published event and its source
                message = json.loads(await asyncio.wait_for(ws.recv(), 20))
                if message["type"] == "metrics_update" and message["events"]["total"] == 1:
                    break
    assert message["entities"] == {"total": 2}
    assert message["events"]["rate_per_second"] > 0
    assert message["websocket"] == {"connections": 1} and message["publishers"] == {"active": 1}
    assert message["timestamp"].endswith("Z")


# ------------------------------------------------------------------ issue 12 item 12


async def test_json_nested_a_thousand_deep_is_a_short_400(url: str) -> None:
    deep = "[" * 1000 + "]" * 1000
    body = '{"stream":"s","source":"x","payload":{"entity_id":"a","properties":{"v":' + deep + "}}}"
    async with httpx2.AsyncClient(base_url=url) as http:
        for path in ("/api/events", "/api/events/batch", "/api/state/entities/delete", "/api/admin/config"):
            answer = await http.request(
                "PUT" if "admin" in path else "POST", path, content=body, headers=JSON
            )
            assert answer.status_code == 400, (path, answer.text)
            assert "nested too deeply" in answer.json()["error"] and "Recursion" not in answer.text


async def test_a_binary_websocket_frame_is_ignored(url: str, store: EmbeddedWorldState) -> None:
    async with connect(url.replace("http://", "ws://") + "/api/ws") as ws:
        await ws.send(b"\x00\x01binary")
        await ws.send(json.dumps({"type": "subscribe", "entity_id": "lab/a"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "subscribed"
        await store.publish(make_event("lab/a", {"v": 1}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["value"] == 1


async def test_a_subscriber_that_never_reads_is_closed_at_the_byte_bound(
    store: EmbeddedWorldState, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve_in_background(store, metrics_interval=0, max_ws_buffer_bytes=256 * 1024) as base:
        host, port = urlsplit(base).hostname, urlsplit(base).port
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /api/ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        try:
            blob = "x" * 100_000

            async def closed() -> bool:
                if any("stopped reading" in record.getMessage() for record in caplog.records):
                    return True
                await store.publish(make_event("lab/big", {"blob": blob}))
                return False

            with caplog.at_level(logging.WARNING, logger="openclaw_mini.state.server"):
                await wait_for(closed, "the slow subscriber to be closed", seconds=60)
        finally:
            sock.close()


async def test_private_reads_apply_to_http_and_websocket_alike(
    store: EmbeddedWorldState, tmp_path: Path
) -> None:
    auth = auth_config(tmp_path, admin_token="root", private_reads=True)
    async with serve_in_background(store, auth=auth, metrics_interval=0) as base:
        async with httpx2.AsyncClient(base_url=base) as http:
            assert (await http.get("/api/state/entities")).status_code == 401
            token = (
                await http.post(
                    "/api/namespaces", json={"name": "lab"}, headers={"Authorization": "Bearer root"}
                )
            ).json()["token"]
            assert (
                await http.get("/api/state/entities", headers={"Authorization": f"Bearer {token}"})
            ).status_code == 200
        ws_url = base.replace("http://", "ws://") + "/api/ws"
        with pytest.raises((ConnectionClosed, InvalidStatus)):  # refused at the handshake
            async with connect(ws_url) as ws:
                await asyncio.wait_for(ws.recv(), 10)
        async with connect(ws_url + f"?token={token}") as ws:
            await ws.send(json.dumps({"type": "subscribe", "entity_id": "lab/a"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "subscribed"


async def test_the_bundled_skill_script_reads_and_changes_the_runtime_config(
    store: EmbeddedWorldState, tmp_path: Path
) -> None:
    import sys

    auth = auth_config(tmp_path, admin_token="root")

    async def run(*args: str, **env: str) -> tuple[int, Any, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(FLUX_SCRIPT),
            *args,
            env={**os.environ, "FLUX_URL": base, **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode is not None
        return process.returncode, json.loads(out) if out.strip() else None, err.decode()

    async with serve_in_background(store, auth=auth, metrics_interval=0) as base:
        code, config, _ = await run("config")
        assert code == 0 and config["rate_limit_per_namespace_per_minute"] == 10_000
        code, _, err = await run("config", '{"rate_limit_enabled": false}')
        assert code == 1 and "401" in err and "Unauthorized" in err
        code, config, _ = await run("config", '{"rate_limit_enabled": false}', FLUX_ADMIN_TOKEN="root")
        assert code == 0 and config["rate_limit_enabled"] is False


async def test_with_auth_a_namespace_token_cannot_write_entity_less_events(
    store: EmbeddedWorldState, tmp_path: Path
) -> None:
    auth = auth_config(tmp_path, admin_token="root")
    async with serve_in_background(store, auth=auth, metrics_interval=0) as base:
        async with httpx2.AsyncClient(base_url=base) as http:
            admin = {"Authorization": "Bearer root"}
            token = (await http.post("/api/namespaces", json={"name": "lab"}, headers=admin)).json()["token"]
            user = {"Authorization": f"Bearer {token}"}
            bare = {"stream": "s", "source": "x", "payload": {"note": "no entity"}}
            assert (await http.post("/api/events", json=bare, headers=user)).status_code == 403
            batch = await http.post("/api/events/batch", json={"events": [bare]}, headers=user)
            assert batch.status_code == 403 and "entity_id" in batch.json()["error"]
            assert (await http.post("/api/events", json=bare, headers=admin)).status_code == 200
