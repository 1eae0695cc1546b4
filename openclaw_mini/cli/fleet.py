"""`openclaw-mini fleet`: run a worker, send a message, see status, handle dead letters.

Every command takes `--url` (default $OPENCLAW_MINI_FLEET_URL, else the embedded SQLite queue in
`.openclaw-mini/fleet.db`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from .common import fail, handle_errors

if TYPE_CHECKING:
    from openclaw_mini.fleet import Fleet

__all__ = ["app"]

T = TypeVar("T")

app = typer.Typer(
    help="Serve agents from a pool of workers (Redis, or the embedded SQLite queue).", no_args_is_help=True
)
dead_app = typer.Typer(
    help="Messages that used up their attempts: list, retry or drop them.", no_args_is_help=True
)
app.add_typer(dead_app, name="dead-letter")

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="redis://host:port/db or sqlite:///path/fleet.db (default: $OPENCLAW_MINI_FLEET_URL, "
        "else sqlite:///.openclaw-mini/fleet.db).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m)?")


def parse_duration(text: str, option: str) -> float:
    """`30s`, `1.5s`, `500ms`, `2m` or plain seconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        fail(f"{option} {text!r} is not a duration: use e.g. 30s, 500ms or 2m")
    value = float(match.group(1))
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match.group(2)]


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    from openclaw_mini.errors import FleetError

    try:
        return asyncio.run(coroutine)
    except FleetError as exc:
        fail(str(exc))


def _fleet_command(function: Callable[..., Any]) -> Callable[..., Any]:
    return handle_errors(function)


async def _connect(url: str | None, **kwargs: Any) -> Fleet:
    from openclaw_mini.fleet import Fleet

    return await Fleet.connect(url, **kwargs)


@app.command()
@_fleet_command
def worker(
    agents: Annotated[Path, typer.Option("--agents", help="Folder with one workspace folder per agent.")],
    url: UrlOption = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Turns run at once.")] = 8,
    worker_id: Annotated[str | None, typer.Option("--id", help="Worker id (default: host-pid).")] = None,
    lease: Annotated[
        str, typer.Option("--lease", help="Lease length: a dead worker's turns move after it.")
    ] = "30s",
    max_attempts: Annotated[
        int, typer.Option("--max-attempts", min=1, help="Attempts before the dead letter.")
    ] = 5,
    backoff: Annotated[
        str, typer.Option("--backoff", help="First retry delay (doubles, at most 120s).")
    ] = "1s",
    drain_timeout: Annotated[
        str | None,
        typer.Option("--drain-timeout", help="On SIGTERM, wait this long for turns (default: lease)."),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", min=0, max=65535, help="Serve Prometheus /metrics here.")
    ] = None,
    metrics_host: Annotated[
        str, typer.Option("--metrics-host", help="Address /metrics binds to (loopback by default).")
    ] = "127.0.0.1",
    heartbeats: Annotated[
        bool, typer.Option("--heartbeats/--no-heartbeats", help="Fire the agents' due heartbeat slots.")
    ] = True,
    clock_speed: Annotated[
        float,
        typer.Option("--clock-speed", min=0.001, hidden=True, help="Heartbeat clock speed (drills, tests)."),
    ] = 1.0,
    clock_start: Annotated[
        float | None,
        typer.Option("--clock-start", hidden=True, help="Epoch seconds the sped-up clock starts at."),
    ] = None,
) -> None:
    """Serve messages until SIGTERM (then drain: finish or hand back in-flight turns, exit 0)."""
    from openclaw_mini.fleet import RetryPolicy, Worker

    lease_seconds = parse_duration(lease, "--lease")
    retry = RetryPolicy(max_attempts=max_attempts, base_delay=parse_duration(backoff, "--backoff"))
    drain = parse_duration(drain_timeout, "--drain-timeout") if drain_timeout else None
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("openclaw_mini.fleet").setLevel(logging.INFO)

    async def serve() -> None:
        from openclaw_mini.fleet import FleetMetrics, ScaledClock
        from openclaw_mini.fleet.metrics import MetricsServer

        fleet = await _connect_patiently(url, retry)
        exporter: MetricsServer | None = None
        try:
            metrics = FleetMetrics() if metrics_port is not None else None
            clock = ScaledClock(clock_speed, clock_start) if clock_speed != 1.0 or clock_start else None
            poll = min(1.0, 10.0 / clock_speed)
            pool = Worker(
                fleet,
                agents,
                concurrency=concurrency,
                worker_id=worker_id,
                lease=lease_seconds,
                drain_timeout=drain,
                heartbeats=heartbeats,
                clock=clock,
                heartbeat_poll=poll,
                metrics=metrics,
            )
            if metrics is not None and metrics_port is not None:
                exporter = MetricsServer(fleet, metrics, host=metrics_host, port=metrics_port)
                bound = await exporter.start()
                logging.getLogger("openclaw_mini.fleet.worker").info(
                    "metrics on http://%s:%d/metrics", metrics_host, bound
                )
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, pool.drain)
            await pool.run()
            print(
                f"worker {pool.id} stopped: {pool.completed} done, {pool.failed} failed, "
                f"{pool.discarded} discarded",
                file=sys.stderr,
            )
        finally:
            if exporter is not None:
                await exporter.close()
            await fleet.close()

    _run(serve())


async def _connect_patiently(url: str | None, retry: Any) -> Fleet:
    """A worker may start before its Redis: retry with backoff (bad URLs still fail at once)."""
    from openclaw_mini.errors import FleetUnavailable

    log = logging.getLogger("openclaw_mini.fleet.worker")
    delay = 0.5
    while True:
        try:
            return await _connect(url, retry=retry)
        except FleetUnavailable as exc:
            log.warning("%s; retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


@app.command()
@_fleet_command
def send(
    text: Annotated[str, typer.Argument(help="The message.")],
    agent: Annotated[str, typer.Option("--agent", help="Agent name (a folder under the workers' --agents).")],
    conversation: Annotated[
        str, typer.Option("--conversation", help="Conversation (the agent's session id).")
    ],
    url: UrlOption = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the reply and print it.")] = False,
    timeout: Annotated[str, typer.Option("--timeout", help="With --wait: how long.")] = "120s",
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="Same key again: same message, no second turn.")
    ] = None,
    priority: Annotated[
        int, typer.Option("--priority", min=0, max=100, help=">= 70 urgent, <= 30 low.")
    ] = 50,
    as_json: JsonOption = False,
) -> None:
    """Enqueue a message (and with --wait, print the reply)."""
    limit = parse_duration(timeout, "--timeout")

    async def go() -> dict[str, Any]:
        fleet = await _connect(url)
        try:
            message = await fleet.enqueue(
                agent=agent,
                conversation=conversation,
                text=text,
                idempotency_key=idempotency_key,
                priority=priority,
            )
            if not wait:
                return {"id": message.id, "status": (await fleet.message(message.id)).status}
            return (await fleet.result(message.id, timeout=limit)).model_dump(mode="json")
        finally:
            await fleet.close()

    outcome = _run(go())
    if as_json:
        typer.echo(json.dumps(outcome, indent=2))
    elif not wait:
        typer.echo(outcome["id"])
    elif outcome["status"] == "done":
        typer.echo(outcome["text"] or "")
    else:
        fail(
            f"message {outcome['id']} is in the dead letter after {outcome['attempts']} attempt(s): "
            f"{outcome['error']}",
            1,
        )


@app.command()
@_fleet_command
def status(
    url: UrlOption = None,
    as_json: JsonOption = False,
    agents: Annotated[
        Path | None,
        typer.Option("--agents", help="The agents folder: also say whether each next heartbeat would run."),
    ] = None,
) -> None:
    """Queued, in flight, delayed and dead-letter counts; each worker's state, load and heartbeat;
    each agent's next heartbeat slot and its last outcome (why it skipped)."""
    from openclaw_mini.fleet.heartbeats import describe_due, heartbeat_report

    async def go() -> Any:
        fleet = await _connect(url)
        try:
            return await fleet.status(), await heartbeat_report(fleet.queue, agents)
        finally:
            await fleet.close()

    current, beats = _run(go())
    if as_json:
        data = current.model_dump(mode="json")
        data["heartbeats"] = [dataclasses.asdict(row) for row in beats]
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(
        f"queued {current.queued}  in flight {current.in_flight}  delayed {current.delayed}  "
        f"dead letters {current.dead_letters}"
    )
    if not current.workers:
        typer.echo("no workers")
    now = time.time()
    for w in current.workers:
        state = "lost" if w.lost else w.state
        typer.echo(
            f"{w.id:<24} {state:<9} load {w.load}/{w.concurrency}  "
            f"heartbeat {max(0.0, now - w.heartbeat_at):.1f}s ago"
            f"  {w.host} pid {w.pid}"
        )
    if beats:
        typer.echo("heartbeats:")
    for row in beats:
        line = f"{row.agent:<24} next {describe_due(row.due, now)} {row.reason}"
        if row.last_outcome:
            line += f"; last: {row.last_outcome}"
        if row.would_reason is not None:
            line += (
                f"; next: {row.would_reason}" if row.would_run else f"; next would skip: {row.would_reason}"
            )
        typer.echo(line)


@dead_app.command("list")
@_fleet_command
def dead_list(
    url: UrlOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 100,
    as_json: JsonOption = False,
) -> None:
    """Dead letters, oldest first."""

    async def go() -> Any:
        fleet = await _connect(url)
        try:
            return await fleet.dead_letters(limit)
        finally:
            await fleet.close()

    letters = _run(go())
    if as_json:
        typer.echo(json.dumps([item.model_dump(mode="json") for item in letters], indent=2))
        return
    if not letters:
        typer.echo("no dead letters")
    for item in letters:
        typer.echo(f"{item.id}  {item.agent}/{item.conversation}  attempts {item.attempts}  {item.error}")


def _dead_op(method: str, message_id: str, url: str | None) -> None:
    async def go() -> None:
        fleet = await _connect(url)
        try:
            await getattr(fleet, method)(message_id)
        finally:
            await fleet.close()

    _run(go())


@dead_app.command("retry")
@_fleet_command
def dead_retry(message_id: Annotated[str, typer.Argument(help="Message id.")], url: UrlOption = None) -> None:
    """Queue a dead letter again (at the tail of its conversation, attempts reset)."""
    _dead_op("retry_dead", message_id, url)
    typer.echo(f"{message_id} queued again")


@dead_app.command("drop")
@_fleet_command
def dead_drop(message_id: Annotated[str, typer.Argument(help="Message id.")], url: UrlOption = None) -> None:
    """Delete a dead letter for good."""
    _dead_op("drop_dead", message_id, url)
    typer.echo(f"{message_id} dropped")


TokensOption = Annotated[
    Path,
    typer.Option("--tokens", help="The gateway's token file (hashes only)."),
]
_DEFAULT_TOKENS = Path(".openclaw-mini/gateway-tokens.json")


@app.command()
@_fleet_command
def serve(
    url: UrlOption = None,
    host: Annotated[str, typer.Option("--host", help="Bind address (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port.")] = 8787,
    tokens: TokensOption = _DEFAULT_TOKENS,
) -> None:
    """HTTP gateway: enqueue, read replies, stream turns as SSE, status, dead letters (`server` extra)."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        fail("fleet serve needs the server extra: pip install 'openclaw-mini[server]'")
    from openclaw_mini.fleet.gateway import GatewayTokens, serve_gateway

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    registry = GatewayTokens(tokens)

    async def go() -> None:
        fleet = await _connect(url)
        try:
            print(f"fleet gateway on http://{host}:{port} for {fleet.url}", file=sys.stderr)
            await serve_gateway(fleet, registry, host=host, port=port)
        finally:
            await fleet.close()

    _run(go())


token_app = typer.Typer(help="Bearer tokens of the HTTP gateway (stored hashed).", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create")
@_fleet_command
def token_create(
    agent: Annotated[
        str | None, typer.Option("--agent", help="Token for this agent only (enqueue, read its messages).")
    ] = None,
    admin: Annotated[
        bool, typer.Option("--admin", help="Admin token (status, dead letters, any agent).")
    ] = False,
    name: Annotated[str, typer.Option("--name", help="A label to recognise it by.")] = "",
    tokens: TokensOption = _DEFAULT_TOKENS,
) -> None:
    """Create a gateway token and print it (the only time it is shown)."""
    from openclaw_mini.errors import FleetError
    from openclaw_mini.fleet.gateway import GatewayTokens

    if admin == (agent is not None):
        fail("say either --admin or --agent NAME")
    try:
        token = GatewayTokens(tokens).create(scope="admin" if admin else "agent", agent=agent, name=name)
    except FleetError as exc:
        fail(str(exc))
    typer.echo(token)


@app.command()
@_fleet_command
def backlog(url: UrlOption = None, as_json: JsonOption = False) -> None:
    """Conversations waiting and in flight, per stream: what an external autoscaler watches."""

    async def go() -> Any:
        fleet = await _connect(url)
        try:
            return await fleet.queue.backlog()
        finally:
            await fleet.close()

    current = _run(go())
    if as_json:
        typer.echo(current.model_dump_json(indent=2))
        return
    typer.echo(f"waiting {current.waiting}  in flight {current.in_flight}  delayed {current.delayed}")
    for stream in current.streams:
        typer.echo(f"{stream.stream:<24} lag {stream.lag}  pending {stream.pending}")


@app.command()
@_fleet_command
def up(
    agents: Annotated[Path, typer.Option("--agents", help="Folder with one workspace folder per agent.")],
    url: UrlOption = None,
    min_workers: Annotated[int, typer.Option("--min", min=0, help="Workers kept even when idle.")] = 1,
    max_workers: Annotated[int, typer.Option("--max", min=1, help="Workers at most.")] = 4,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Turns per worker.")] = 8,
    per_worker: Annotated[
        int | None,
        typer.Option("--per-worker", min=1, help="Conversations per worker (default: --concurrency)."),
    ] = None,
    idle: Annotated[
        str, typer.Option("--idle", help="Drain idle workers once fewer are needed for this long.")
    ] = "30s",
    interval: Annotated[str, typer.Option("--interval", help="How often the backlog is read.")] = "1s",
    lease: Annotated[str, typer.Option("--lease", help="Workers' lease length.")] = "30s",
    drain_timeout: Annotated[
        str | None, typer.Option("--drain-timeout", help="Workers' drain timeout (default: lease).")
    ] = None,
    backoff: Annotated[str, typer.Option("--backoff", help="Workers' first retry delay.")] = "1s",
) -> None:
    """Supervise local workers: scale between --min and --max on the conversations waiting; SIGTERM
    drains them all and exits 0."""
    from pydantic import ValidationError

    from openclaw_mini.fleet.queue import resolve_url
    from openclaw_mini.fleet.scaler import ScalePolicy, Scaler

    try:
        policy = ScalePolicy(
            min_workers=min_workers,
            max_workers=max_workers,
            per_worker=per_worker or concurrency,
            scale_down_after=parse_duration(idle, "--idle"),
            interval=parse_duration(interval, "--interval"),
        )
    except ValidationError as exc:
        fail("; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors()))
    if not agents.is_dir():
        fail(f"--agents {agents} is not a folder (one workspace folder per agent)")
    fleet_url = resolve_url(url)
    lease_seconds = parse_duration(lease, "--lease")
    drain = parse_duration(drain_timeout, "--drain-timeout") if drain_timeout else lease_seconds
    command = [
        sys.executable, "-m", "openclaw_mini.cli.main", "fleet", "worker",
        "--url", fleet_url, "--agents", str(agents), "--concurrency", str(concurrency),
        "--lease", lease, "--backoff", backoff, "--drain-timeout", f"{drain}s",
    ]  # fmt: skip
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("openclaw_mini.fleet").setLevel(logging.INFO)

    async def go() -> None:
        fleet = await _connect_patiently(fleet_url, None)
        try:
            scaler = Scaler(fleet, command, policy)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, scaler.stop)
            await scaler.run(drain_timeout=drain)
            print(
                f"fleet up stopped: {scaler.started} started, {scaler.drained} drained, "
                f"{scaler.replaced} replaced",
                file=sys.stderr,
            )
        finally:
            await fleet.close()

    _run(go())
