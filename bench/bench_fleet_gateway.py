"""Fleet gateway benchmarks: how long after a worker produces a turn's first text delta an SSE client
of the gateway has it (worker process, gateway and client on this machine, one Redis), and the
gateway's enqueue rate. The model answers after 0.2 s so each stream is open before the turn starts.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx2  # noqa: E402

from openclaw_mini.fleet import Fleet  # noqa: E402
from openclaw_mini.fleet.gateway import GatewayTokens, serve_gateway_in_background  # noqa: E402
from openclaw_mini.testing import FakeAnthropicServer, text_reply  # noqa: E402
from tests.fleet_support import REDIS_BIN, RedisServer, make_agents, spawn_worker, wait_for  # noqa: E402

Row = tuple[str, str, str]


async def _registered(fleet: Fleet) -> bool:
    return "w1" in {w.id for w in (await fleet.status()).workers}


async def _first_delta(client: httpx2.AsyncClient, message_id: str) -> float:
    """Seconds from the worker stamping the first text delta to this client parsing it."""
    async with client.stream("GET", f"/v1/messages/{message_id}/events") as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                event = json.loads(line.removeprefix("data: "))
                if event["type"] == "text_delta":
                    return time.time() - event["at"]
    raise RuntimeError(f"no text delta for {message_id}")


async def _bench(redis: RedisServer, tmp: Path, turns: int = 40, enqueues: int = 400) -> list[Row]:
    async with FakeAnthropicServer() as model:

        def reply(request: object) -> object:
            time.sleep(0.2)
            return text_reply("streamed reply in a few chunks for the client", chunk_delay=0.005)

        model.handler = reply
        worker = spawn_worker(
            redis.url, make_agents(tmp / "agents", "bench"), model_url=model.url, worker_id="w1", lease=5.0
        )
        fleet = await Fleet.connect(redis.url)
        tokens = GatewayTokens(tmp / "tokens.json")
        token = tokens.create(scope="admin")
        try:
            async with (
                serve_gateway_in_background(fleet, tokens) as url,
                httpx2.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client,
            ):
                await wait_for(lambda: _registered(fleet), what="the worker")
                latencies = []
                for i in range(turns):
                    body = {"agent": "bench", "conversation": f"c{i}", "text": f"turn {i}"}
                    message_id = (await client.post("/v1/messages", json=body)).json()["message"]["id"]
                    latencies.append(await _first_delta(client, message_id))
                started = time.perf_counter()
                for i in range(enqueues):
                    body = {"agent": "bench", "conversation": f"e{i % 50}", "text": f"enqueue {i}"}
                    await client.post("/v1/messages", json=body, headers={"Idempotency-Key": f"k{i}"})
                rate = enqueues / (time.perf_counter() - started)
        finally:
            worker.terminate()
            worker.wait(timeout=60)
            await fleet.close()
    ms = sorted(x * 1000 for x in latencies)
    p95 = ms[int(len(ms) * 0.95) - 1]
    return [
        (
            "gateway SSE: worker's first text delta -> client",
            f"median {statistics.median(ms):.1f} ms, p95 {p95:.1f} ms, max {ms[-1]:.1f} ms ({turns} turns)",
            "<= 50 ms",
        ),
        ("gateway enqueue over HTTP (one client, sequential)", f"{rate:.0f} req/s", "-"),
    ]


async def _all() -> list[Row]:
    if REDIS_BIN is None:
        return [("gateway rows", "skipped: no redis-server on PATH", "-")]
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        redis = RedisServer(tmp / "redis")
        redis.directory.mkdir()
        redis.start()
        try:
            return await _bench(redis, tmp)
        finally:
            redis.kill()


def run() -> list[Row]:
    return asyncio.run(_all())


if __name__ == "__main__":
    for row in run():
        print(" | ".join(row))
