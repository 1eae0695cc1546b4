"""World state: embedded publish rate (batched, single, concurrent), get latency, publish rate
over HTTP on loopback, and fan-out latency to 50 WebSocket subscribers.

Events are Flux JSON dicts, as they arrive from a client, so validation is part of every number.
The server runs in its own thread with its own event loop, like a separate `state serve`.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from openclaw_mini.state import EmbeddedWorldState, RemoteWorldState, StateUpdate, Subscription

__all__ = ["run"]

BATCH_EVENTS = 20_000
BATCH_SIZE = 500
SINGLE_EVENTS = 3_000
CONCURRENT_EVENTS = 3_000
CONCURRENCY = 16
GETS = 2_000
ENTITIES = 1_000
SERVED_SINGLE = 1_000
SERVED_BATCH_EVENTS = 10_000
SUBSCRIBERS = 50
FANOUT_ROUNDS = 30
RAW_EVENTS = 2_000


def _event(index: int, namespace: str = "bench") -> dict[str, Any]:
    return {
        "stream": "bench.sensors",
        "source": "bench",
        "payload": {"entity_id": f"{namespace}/e{index % ENTITIES}", "properties": {"v": index, "ok": True}},
    }


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _embedded(folder: Path) -> list[tuple[str, str, str]]:
    async with EmbeddedWorldState(folder / "embedded.db") as store:
        events = [_event(index) for index in range(BATCH_EVENTS)]
        started = time.perf_counter()
        for offset in range(0, BATCH_EVENTS, BATCH_SIZE):
            await store.publish_batch(events[offset : offset + BATCH_SIZE])
        batch_rate = BATCH_EVENTS / (time.perf_counter() - started)

        singles = [_event(index, "single") for index in range(SINGLE_EVENTS)]
        started = time.perf_counter()
        for event in singles:
            await store.publish(event)
        single_rate = SINGLE_EVENTS / (time.perf_counter() - started)

        concurrent = [_event(index, "conc") for index in range(CONCURRENT_EVENTS)]

        async def worker(first: int) -> None:
            for index in range(first, CONCURRENT_EVENTS, CONCURRENCY):
                await store.publish(concurrent[index])

        started = time.perf_counter()
        await asyncio.gather(*[worker(first) for first in range(CONCURRENCY)])
        concurrent_rate = CONCURRENT_EVENTS / (time.perf_counter() - started)

        timings = []
        for index in range(GETS):
            started = time.perf_counter()
            await store.get(f"bench/e{index % ENTITIES}")
            timings.append((time.perf_counter() - started) * 1e6)
        consistent = await store.list() == await store.replay()
    return [
        (
            f"state: embedded publish, batches of {BATCH_SIZE}",
            f"{batch_rate:,.0f} events/s",
            "> 10,000 events/s",
        ),
        ("state: embedded publish, one at a time", f"{single_rate:,.0f} events/s", "> 2,000 events/s"),
        (
            f"state: embedded publish, {CONCURRENCY} concurrent publishers",
            f"{concurrent_rate:,.0f} events/s (group commit)",
            "-",
        ),
        (
            "state: embedded get latency p50 / p99",
            f"{_percentile(timings, 0.5):.0f} / {_percentile(timings, 0.99):.0f} µs",
            "-",
        ),
        ("state: entity table equals replay of the log", str(consistent), "True"),
    ]


class _ServerThread:
    """`serve_in_background` on its own thread and loop, like a separate server process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="bench-state-server", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        from openclaw_mini.state.server import serve_in_background

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with EmbeddedWorldState(self.path) as store, serve_in_background(store) as url:
            self.url = url
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> _ServerThread:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None or not self.url:
            raise RuntimeError(f"the bench server did not start: {self._error!r}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


async def _served(url: str) -> list[tuple[str, str, str]]:
    async with RemoteWorldState(url) as client:
        singles = [_event(index, "http") for index in range(SERVED_SINGLE)]
        started = time.perf_counter()
        for event in singles:
            await client.publish(event)
        single_rate = SERVED_SINGLE / (time.perf_counter() - started)

        events = [_event(index, "httpb") for index in range(SERVED_BATCH_EVENTS)]
        started = time.perf_counter()
        for offset in range(0, SERVED_BATCH_EVENTS, BATCH_SIZE):
            await client.publish_batch(events[offset : offset + BATCH_SIZE])
        batch_rate = SERVED_BATCH_EVENTS / (time.perf_counter() - started)

        subscriptions: list[Subscription] = [client.subscribe("fan/*") for _ in range(SUBSCRIBERS)]
        await asyncio.gather(*[subscription.start() for subscription in subscriptions])
        latencies: list[float] = []
        try:
            for round_index in range(FANOUT_ROUNDS):
                started = time.perf_counter()
                await client.publish({**_event(round_index, "fan"), "stream": "bench.fanout"})
                arrivals: list[float] = []

                async def receive(subscription: Subscription, sink: list[float] = arrivals) -> StateUpdate:
                    update = await asyncio.wait_for(anext(subscription), 10)
                    sink.append(time.perf_counter())
                    return update

                await asyncio.gather(*[receive(subscription) for subscription in subscriptions])
                latencies.append((max(arrivals) - started) * 1000)
        finally:
            await asyncio.gather(*[subscription.aclose() for subscription in subscriptions])
    raw_rate = await _raw_flux_client(url)
    return [
        ("state: served publish over HTTP (loopback), one at a time", f"{single_rate:,.0f} events/s", "-"),
        (
            f"state: a raw Flux WebSocket client (no subscription) gets all of {RAW_EVENTS:,} updates",
            f"{raw_rate:,.0f} updates/s (batch publish -> last one received)",
            "-",
        ),
        (
            f"state: served publish over HTTP (loopback), batches of {BATCH_SIZE}",
            f"{batch_rate:,.0f} events/s",
            "-",
        ),
        (
            f"state: fan-out to {SUBSCRIBERS} WebSocket subscribers, p50 / max",
            f"{statistics.median(latencies):.1f} / {max(latencies):.1f} ms (publish -> last one has it)",
            "-",
        ),
    ]


async def _raw_flux_client(url: str) -> float:
    """Flux's own example client never subscribes: it must still receive every state_update."""
    import json

    from websockets.asyncio.client import connect

    async with RemoteWorldState(url) as client, connect(url.replace("http://", "ws://") + "/api/ws") as ws:
        await ws.send(json.dumps({"type": "subscribe"}))  # what subscribe_websocket.py sends
        events = [{**_event(index, "raw"), "stream": "bench.raw"} for index in range(RAW_EVENTS)]
        started = time.perf_counter()
        for offset in range(0, RAW_EVENTS, BATCH_SIZE):
            await client.publish_batch(events[offset : offset + BATCH_SIZE])
        received = 0
        while received < RAW_EVENTS * 2:  # two properties per event, one message each
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if message.get("type") == "state_update" and str(message.get("entity_id", "")).startswith("raw/"):
                received += 1
        return RAW_EVENTS / (time.perf_counter() - started)


def _load() -> tuple[str, str, str]:
    try:
        load = os.getloadavg()[0]
    except OSError:
        return ("state: host load during the run", "unknown", "-")
    return ("state: host load during the run", f"{load:.1f} (1-min loadavg) on {os.cpu_count()} CPUs", "-")


def _run_async(
    factory: Callable[[], Coroutine[Any, Any, list[tuple[str, str, str]]]],
) -> list[tuple[str, str, str]]:
    return asyncio.run(factory())


def run() -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-state-") as folder:
        root = Path(folder)
        rows += _run_async(lambda: _embedded(root))
        try:
            import starlette  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError:
            rows.append(
                ("state: served (HTTP / WebSocket)", "skipped: the 'server' extra is not installed", "-")
            )
        else:
            with _ServerThread(root / "served.db") as server:
                rows += _run_async(lambda: _served(server.url))
    rows.append(_load())
    return rows


if __name__ == "__main__":
    for name, result, goal in run():
        print(f"{name:<62} {result:<48} {goal}")
