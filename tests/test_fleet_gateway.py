"""The fleet's HTTP gateway against a real server (uvicorn on 127.0.0.1), a real redis-server and real
`Worker`s running `Agent` turns against the fake model: enqueue with idempotency keys, status and
replies, SSE streams of running turns, tokens and scopes, error bodies, dead-letter admin."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from openclaw_mini.fleet import Fleet, RetryPolicy, Worker
from openclaw_mini.fleet.gateway import GatewayTokens, serve_gateway_in_background
from openclaw_mini.testing import FakeAnthropicServer, error_reply, text_reply, tool_reply
from tests.fleet_support import RedisServer, echo_handler, last_user_text, make_agents, needs_redis, wait_for

pytestmark = needs_redis
FAST = RetryPolicy(max_attempts=2, base_delay=0.05, max_delay=0.2)


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


class Gateway:
    """A fleet with in-process workers and the gateway on a free loopback port."""

    def __init__(self, fleet: Fleet, url: str, tokens: GatewayTokens, agents: Path, model_url: str) -> None:
        self.fleet, self.url, self.tokens, self.agents, self.model_url = fleet, url, tokens, agents, model_url
        self.workers: list[tuple[Worker, asyncio.Task[None]]] = []

    async def create_tokens(self) -> None:
        """`GatewayTokens.create` is a sync admin call (the CLI's): run it off the event loop."""
        create = self.tokens.create
        self.admin = await asyncio.to_thread(create, scope="admin")
        self.support = await asyncio.to_thread(create, scope="agent", agent="support")
        self.sales = await asyncio.to_thread(create, scope="agent", agent="sales")

    def start_worker(self, concurrency: int = 8) -> Worker:
        options = {"base_url": self.model_url, "api_key": "test"}
        worker = Worker(self.fleet, self.agents, concurrency=concurrency, lease=5.0, agent_options=options)
        self.workers.append((worker, asyncio.create_task(worker.run())))
        return worker

    async def stop_workers(self) -> None:
        for worker, _ in self.workers:
            worker.drain()
        await asyncio.wait_for(asyncio.gather(*(task for _, task in self.workers)), 60)
        self.workers = []

    def client(self, token: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60)


@pytest.fixture
async def gateway(
    tmp_path: Path, redis_server: RedisServer, model: FakeAnthropicServer
) -> AsyncIterator[Gateway]:
    fleet = await Fleet.connect(redis_server.url, retry=FAST)
    tokens = GatewayTokens(tmp_path / "tokens.json")
    agents = make_agents(tmp_path / "agents", "support", "sales")
    async with serve_gateway_in_background(fleet, tokens, stream_timeout=60) as url:
        gw = Gateway(fleet, url, tokens, agents, model.url)
        await gw.create_tokens()
        try:
            yield gw
        finally:
            await gw.stop_workers()
    await fleet.close()


def _send(conversation: str, text: str, agent: str = "support") -> dict[str, Any]:
    return {"agent": agent, "conversation": conversation, "text": text}


async def _sse(client: httpx.AsyncClient, message_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every (event, data) of a message's stream, until `done`."""
    events: list[tuple[str, dict[str, Any]]] = []
    async with client.stream("GET", f"/v1/messages/{message_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    return events


async def test_enqueue_stream_and_read_the_reply(gateway: Gateway, model: FakeAnthropicServer) -> None:
    calls = {"n": 0}

    def handle(request: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            return tool_reply(("write", {"path": "notes.md", "content": "hi"}), text="Writing. ")
        return text_reply(f"Done with {last_user_text(request) or 'it'}, all good.", chunk_delay=0.01)

    model.handler = handle
    gateway.start_worker()
    async with gateway.client(gateway.support) as client:
        sent = await client.post(
            "/v1/messages", json=_send("u1", "note this"), headers={"Idempotency-Key": "k1"}
        )
        assert sent.status_code == 201, sent.text
        body = sent.json()
        assert body["created"] is True and body["message"]["agent"] == "support"
        message_id = body["message"]["id"]
        events = await _sse(client, message_id)
        kinds = [kind for kind, _ in events]
        assert "tool_start" in kinds and "tool_end" in kinds and "text_delta" in kinds
        assert kinds[-1] == "done" and kinds.count("done") == 1
        start = next(data for kind, data in events if kind == "tool_start")
        assert start["tool"] == "write" and "at" in start
        done = events[-1][1]
        assert done["status"] == "done" and done["text"].endswith("all good.")
        streamed = "".join(data["text"] for kind, data in events if kind == "text_delta")
        assert streamed.endswith(done["text"].removeprefix("Writing. "))
        read = await client.get(f"/v1/messages/{message_id}")
        assert read.status_code == 200 and read.json()["status"] == "done"
        assert read.json()["text"] == done["text"]
        # The stream of a finished message replays its events and ends.
        again = await _sse(client, message_id)
        assert [kind for kind, _ in again] == kinds
        # The same key: the first message, no second turn.
        dup = await client.post(
            "/v1/messages", json=_send("u1", "note this"), headers={"Idempotency-Key": "k1"}
        )
        assert dup.status_code == 200 and dup.json() == {**body, "created": False}
    assert calls["n"] == 2


async def test_tokens_scopes_and_error_bodies(gateway: Gateway) -> None:
    gateway.start_worker()  # registers the agents, so unknown ones are refused
    await wait_for(lambda: gateway.fleet.queue.known_agents(), what="agents registered")
    async with gateway.client(None) as anonymous:
        refused = await anonymous.post("/v1/messages", json=_send("u1", "hi"))
        assert refused.status_code == 401 and "bearer token" in refused.json()["error"]
        assert refused.headers["www-authenticate"] == "Bearer"
        assert (await anonymous.get("/healthz")).json() == {"ok": True}
        spec = (await anonymous.get("/openapi.json")).json()
        assert spec["openapi"].startswith("3.1") and "/v1/messages/{message_id}/events" in spec["paths"]
    async with gateway.client("ocmg_not-a-real-token") as forged:
        assert (await forged.get("/v1/status")).status_code == 401
    async with gateway.client(gateway.support) as support, gateway.client(gateway.sales) as sales:
        wrong_agent = await support.post("/v1/messages", json=_send("u1", "hi", agent="sales"))
        assert wrong_agent.status_code == 403 and "support" in wrong_agent.json()["error"]
        assert (await support.get("/v1/status")).status_code == 403
        assert (await support.get("/v1/dead-letters")).status_code == 403
        empty = await support.post("/v1/messages", json=_send("u1", "   "))
        assert empty.status_code == 400 and "empty" in empty.json()["error"]
        bad = await support.post("/v1/messages", json={"agent": "support", "text": "no conversation"})
        assert bad.status_code == 400 and "conversation" in bad.json()["error"]
        not_json = await support.post(
            "/v1/messages", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert not_json.status_code == 400 and "invalid message body" in not_json.json()["error"]
        huge = await support.post("/v1/messages", json=_send("u1", "x" * 600_000))
        assert huge.status_code == 413 and "limit" in huge.json()["error"]
        sent = await support.post("/v1/messages", json=_send("u2", "hello"))
        assert sent.status_code == 201
        message_id = sent.json()["message"]["id"]
        # Another agent's token does not see it (404, not 403: ids are not confirmed).
        assert (await sales.get(f"/v1/messages/{message_id}")).status_code == 404
        assert (await sales.get(f"/v1/messages/{message_id}/events")).status_code == 404
        missing = await support.get("/v1/messages/m-nope")
        assert missing.status_code == 404 and "m-nope" in missing.json()["error"]
        nowhere = await support.get("/v1/nowhere")
        assert nowhere.status_code == 404 and "error" in nowhere.json()
    async with gateway.client(gateway.admin) as admin:
        ghost = await admin.post("/v1/messages", json=_send("u1", "hi", agent="ghost"))
        assert ghost.status_code == 404 and "unknown agent 'ghost'" in ghost.json()["error"]
        status = (await admin.get("/v1/status")).json()
        assert {"fleet", "backlog"} <= status.keys() and status["fleet"]["workers"]
        assert (await admin.get("/v1/dead-letters?limit=0")).status_code == 400
        scraped = await admin.get("/metrics")  # Prometheus text, as on each worker
        assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
        assert (
            "openclaw_fleet_queued_messages" in scraped.text and "openclaw_fleet_dead_letters" in scraped.text
        )
    async with gateway.client(gateway.support) as support:
        assert (await support.get("/metrics")).status_code == 403  # admin scope only


async def test_dead_letter_admin_over_http(gateway: Gateway, model: FakeAnthropicServer) -> None:
    model.handler = lambda request: error_reply(400, "this request is refused")
    gateway.start_worker()
    async with gateway.client(gateway.admin) as admin:
        sent = await admin.post("/v1/messages", json=_send("u9", "doomed"))
        message_id = sent.json()["message"]["id"]
        events = await _sse(admin, message_id)
        assert events[-1][0] == "done" and events[-1][1]["status"] == "dead_letter"
        assert any(kind == "error" for kind, _ in events)
        letters = (await admin.get("/v1/dead-letters")).json()
        assert [item["id"] for item in letters] == [message_id]
        model.handler = echo_handler()
        retried = await admin.post(f"/v1/dead-letters/{message_id}/retry")
        assert retried.status_code == 200 and retried.json()["status"] in ("queued", "in_flight", "done")
        result = await gateway.fleet.result(message_id, timeout=60)
        assert result.status == "done" and result.text == "echo: doomed"
        assert (await admin.get("/v1/dead-letters")).json() == []
        # Dead-letter it again, then drop it.
        model.handler = lambda request: error_reply(400, "refused again")
        second = (await admin.post("/v1/messages", json=_send("u10", "doomed too"))).json()["message"]["id"]
        await wait_for(lambda: _is_dead(gateway.fleet, second), what="the second message in the dead letter")
        assert (await admin.delete(f"/v1/dead-letters/{second}")).status_code == 204
        assert (await admin.delete(f"/v1/dead-letters/{second}")).status_code == 404
        assert (await admin.get(f"/v1/messages/{second}")).status_code == 404


async def _is_dead(fleet: Fleet, message_id: str) -> bool:
    return (await fleet.message(message_id)).status == "dead_letter"


async def test_1000_enqueues_with_100_duplicate_keys_make_900_turns(
    gateway: Gateway, model: FakeAnthropicServer
) -> None:
    model.handler = echo_handler()
    keys = [f"key-{i}" for i in range(900)] + [f"key-{i}" for i in range(0, 900, 9)]  # 100 repeats
    assert len(keys) == 1000 and len(set(keys)) == 900
    limit = asyncio.Semaphore(16)

    async def send(index: int, key: str, client: httpx.AsyncClient) -> tuple[int, str]:
        number = int(key.removeprefix("key-"))
        async with limit:
            response = await client.post(
                "/v1/messages",
                json=_send(f"c{number % 60}", f"message {number}"),
                headers={"Idempotency-Key": key},
            )
        assert response.status_code in (200, 201), response.text
        return response.status_code, response.json()["message"]["id"]

    async with gateway.client(gateway.admin) as client:
        answers = await asyncio.gather(*(send(i, key, client) for i, key in enumerate(keys)))
    assert sum(1 for code, _ in answers if code == 201) == 900
    assert sum(1 for code, _ in answers if code == 200) == 100
    ids = {message_id for _, message_id in answers}
    assert len(ids) == 900
    gateway.start_worker(concurrency=16)
    gateway.start_worker(concurrency=16)

    async def all_done() -> bool:
        return (await gateway.fleet.queue.backlog()).waiting == 0 and all(
            [(await gateway.fleet.message(i)).status == "done" for i in ids]
        )

    await wait_for(all_done, timeout=150, what="900 turns")
    assert len(model.requests) == 900


async def test_a_stream_resumes_after_last_event_id(gateway: Gateway, model: FakeAnthropicServer) -> None:
    model.handler = lambda request: text_reply("one two three four five six", chunk_delay=0.01)
    gateway.start_worker()
    async with gateway.client(gateway.support) as client:
        message_id = (await client.post("/v1/messages", json=_send("r1", "go"))).json()["message"]["id"]
        await gateway.fleet.result(message_id, timeout=60)
        ids: list[str] = []
        async with client.stream("GET", f"/v1/messages/{message_id}/events") as response:
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    ids.append(line.removeprefix("id: "))
        assert len(ids) >= 3
        resumed: list[str] = []
        headers = {"Last-Event-ID": ids[1]}
        async with client.stream("GET", f"/v1/messages/{message_id}/events", headers=headers) as response:
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    resumed.append(line.removeprefix("id: "))
        assert resumed == ids[2:]
        bad = await client.get(f"/v1/messages/{message_id}/events", headers={"Last-Event-ID": "x; drop"})
        assert bad.status_code == 400


async def test_sse_on_the_embedded_sqlite_queue(tmp_path: Path, model: FakeAnthropicServer) -> None:
    model.handler = lambda request: text_reply("streamed from sqlite", chunk_delay=0.01)
    fleet = await Fleet.connect(f"sqlite:///{tmp_path}/fleet.db", retry=FAST)
    tokens = GatewayTokens(tmp_path / "tokens.json")
    try:
        async with serve_gateway_in_background(fleet, tokens, stream_timeout=60) as url:
            gw = Gateway(fleet, url, tokens, make_agents(tmp_path / "agents", "support"), model.url)
            await gw.create_tokens()
            gw.start_worker()
            try:
                async with gw.client(gw.support) as client:
                    sent = await client.post("/v1/messages", json=_send("s1", "hi"))
                    events = await _sse(client, sent.json()["message"]["id"])
            finally:
                await gw.stop_workers()
    finally:
        await fleet.close()
    kind, done = events[-1]
    assert kind == "done" and done["id"].isdigit()
    assert (done["status"], done["text"], done["attempt"]) == ("done", "streamed from sqlite", 1)
    assert "".join(d["text"] for k, d in events if k == "text_delta") == "streamed from sqlite"
