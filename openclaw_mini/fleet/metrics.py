"""Prometheus metrics of the fleet: what a worker did (counters, the turn latency histogram) and what
the queue holds (gauges read from `Queue.status()` at scrape time).

A worker serves them on `/metrics` (`fleet worker --metrics-port N`, loopback by default). Any other
HTTP server (the gateway) mounts the same text with

```python
from openclaw_mini.fleet.metrics import CONTENT_TYPE, render
body: bytes = await render(fleet)            # queue gauges only
body = await render(fleet, worker.metrics)   # plus one worker's counters, as /metrics on the worker
```
`prometheus-client` is imported only when metrics are used (the `fleet` extra installs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from ..errors import FleetError
from .handle import Fleet
from .queue import Queue

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["CONTENT_TYPE", "TURN_BUCKETS", "FleetMetrics", "MetricsServer", "render"]

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format (what `prometheus_client.generate_latest` writes)."""
TURN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""Turn latency buckets in seconds: a chat turn is 1-30 s, a tool-heavy one minutes."""
_TOKEN_KINDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


class FleetMetrics:
    """One process's metrics in its own registry (several workers in one process do not clash)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ModuleNotFoundError as exc:
            raise FleetError(
                "fleet metrics need prometheus-client: pip install 'openclaw-mini[fleet]'"
            ) from exc

        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.queued = Gauge("openclaw_fleet_queued_messages", "Messages waiting to be claimed.", registry=r)
        self.in_flight = Gauge(
            "openclaw_fleet_in_flight_messages", "Messages leased by a worker.", registry=r
        )
        self.delayed = Gauge("openclaw_fleet_delayed_messages", "Messages waiting out a retry.", registry=r)
        self.dead_letters = Gauge("openclaw_fleet_dead_letters", "Messages in the dead letter.", registry=r)
        self.workers = Gauge(
            "openclaw_fleet_workers",
            "Registered workers by state (lost: stale heartbeat).",
            ["state"],
            registry=r,
        )
        self.heartbeats_scheduled = Gauge(
            "openclaw_fleet_heartbeats_scheduled", "Agents with a heartbeat in the schedule.", registry=r
        )
        self.turns = Counter(
            "openclaw_fleet_turns", "Turns this worker finished, by outcome.", ["outcome"], registry=r
        )
        self.turn_seconds = Histogram(
            "openclaw_fleet_turn_seconds",
            "Claim to ack of a turn on this worker (hydration, model calls, tools, persisting).",
            buckets=TURN_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "openclaw_fleet_model_tokens",
            "Model tokens this worker's turns used, by kind.",
            ["kind"],
            registry=r,
        )
        self.failures = Counter(
            "openclaw_fleet_failures", "Failed turns on this worker, by kind.", ["kind"], registry=r
        )
        self.heartbeat_fires = Counter(
            "openclaw_fleet_heartbeat_fires", "Heartbeat slots this worker enqueued.", registry=r
        )
        self.heartbeat_runs = Counter(
            "openclaw_fleet_heartbeat_runs",
            "Heartbeat ticks this worker ran, by status (ran, skipped, error).",
            ["status"],
            registry=r,
        )
        self.heartbeat_skips = Counter(
            "openclaw_fleet_heartbeat_skips",
            "Heartbeat ticks skipped with no model call, by reason.",
            ["reason"],
            registry=r,
        )
        for state in ("active", "draining", "stopping", "lost"):
            self.workers.labels(state=state)
        for outcome in ("done", "failed", "discarded"):
            self.turns.labels(outcome=outcome)
        for kind in _TOKEN_KINDS:
            self.tokens.labels(kind=kind.removesuffix("_tokens"))

    # -- recording (the worker calls these) -----------------------------------------------------
    def turn_finished(self, outcome: str, seconds: float) -> None:
        self.turns.labels(outcome=outcome).inc()
        self.turn_seconds.observe(seconds)

    def failure(self, kind: str) -> None:
        self.failures.labels(kind=kind).inc()

    def count_tokens(self, usage: Any) -> None:
        for kind in _TOKEN_KINDS:
            value = int(getattr(usage, kind, 0) or 0)
            if value:
                self.tokens.labels(kind=kind.removesuffix("_tokens")).inc(value)

    def heartbeat_outcome(self, status: str, skip_reason: str) -> None:
        self.heartbeat_runs.labels(status=status).inc()
        if status == "skipped":
            self.heartbeat_skips.labels(reason=skip_reason).inc()

    # -- reading --------------------------------------------------------------------------------
    async def refresh(self, fleet: Fleet | Queue) -> None:
        """Set the queue gauges from the backend (one status call and one schedule read)."""
        queue = fleet.queue if isinstance(fleet, Fleet) else fleet
        status = await queue.status()
        self.queued.set(status.queued)
        self.in_flight.set(status.in_flight)
        self.delayed.set(status.delayed)
        self.dead_letters.set(status.dead_letters)
        counts = dict.fromkeys(("active", "draining", "stopping", "lost"), 0)
        for worker in status.workers:
            key = "lost" if worker.lost else worker.state
            counts[key] = counts.get(key, 0) + 1
        for state, count in counts.items():
            self.workers.labels(state=state).set(count)
        self.heartbeats_scheduled.set(len(await queue.heartbeat_schedule()))

    async def render(self, fleet: Fleet | Queue) -> bytes:
        from prometheus_client import generate_latest

        await self.refresh(fleet)
        return bytes(generate_latest(self.registry))


async def render(fleet: Fleet | Queue, metrics: FleetMetrics | None = None) -> bytes:
    """The fleet's metrics in the Prometheus text format: the queue gauges, plus `metrics`' counters
    when given (a worker's). Serve it with `Content-Type: CONTENT_TYPE`."""
    return await (metrics or FleetMetrics()).render(fleet)


class MetricsServer:
    """`GET /metrics` on the worker's event loop (so a scrape can read the queue asynchronously).

    Binds to 127.0.0.1 unless told otherwise: the numbers say how busy and how big the fleet is.
    """

    def __init__(
        self, fleet: Fleet | Queue, metrics: FleetMetrics, *, host: str = "127.0.0.1", port: int = 0
    ):
        self.fleet = fleet
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, _, rest = request.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                await _respond(writer, 405, b"only GET /metrics\n", "text/plain", method == "HEAD")
            elif path != "/metrics":
                await _respond(
                    writer, 404, b"not found: this server has /metrics only\n", "text/plain", False
                )
            else:
                try:
                    body = await self.metrics.render(self.fleet)
                except Exception as exc:  # the backend is down: say so, the scrape marks it failed
                    log.warning("metrics: cannot read the fleet: %s", exc)
                    await _respond(
                        writer, 503, f"cannot read the fleet: {exc}\n".encode(), "text/plain", False
                    )
                else:
                    await _respond(writer, 200, body, CONTENT_TYPE, method == "HEAD")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _respond(
    writer: asyncio.StreamWriter, code: int, body: bytes, content_type: str, head: bool
) -> None:
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[code]
    header = (
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(header.encode("latin-1") + (b"" if head else body))
    await writer.drain()
