"""`openclaw-mini state`: read, write, watch and serve the shared world state.

Without `--url`/`FLUX_URL` the commands use the workspace's embedded store; with one they talk
to that Flux-compatible server. `serve` always serves the workspace's embedded store.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from .common import WorkspaceOption, fail

if TYPE_CHECKING:
    from ..state import StateUpdate, WorldState

__all__ = ["app"]

T = TypeVar("T")

app = typer.Typer(
    help="Shared world state (Flux model): get, list, publish, delete, watch, serve.",
    no_args_is_help=True,
)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url", envvar="FLUX_URL", help="A Flux-compatible server; default: the workspace's own store."
    ),
]
TokenOption = Annotated[
    str | None, typer.Option("--token", envvar="FLUX_TOKEN", help="Bearer token for the server (writes).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print raw Flux JSON.")]


def _open(workspace: Path, url: str | None, token: str | None) -> WorldState:
    from ..state import open_world_state

    try:
        return open_world_state(workspace, url=url, token=token)
    except ValueError as exc:
        fail(str(exc))


def _run(
    workspace: Path, url: str | None, token: str | None, work: Callable[[WorldState], Awaitable[T]]
) -> T:
    """Open the store, run `work`, close the store; world-state errors become one sentence."""
    from ..state import StateError

    async def main() -> T:
        store = _open(workspace, url, token)
        try:
            return await work(store)
        finally:
            await store.aclose()

    try:
        return asyncio.run(main())
    except StateError as exc:
        fail(str(exc))


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2))


def _show_entity(wire: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.json import JSON
    from rich.markup import escape

    console = Console()
    console.print(f"[bold]{escape(wire['id'])}[/bold]  [dim]updated {escape(wire['lastUpdated'])}[/dim]")
    console.print(JSON.from_data(wire["properties"]))


@app.command()
def get(
    entity_id: Annotated[str, typer.Argument(help="Entity id, e.g. lab/sensor-1.")],
    as_json: JsonOption = False,
    workspace: WorkspaceOption = Path("."),
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show one entity's properties."""

    async def work(store: WorldState) -> dict[str, Any] | None:
        entity = await store.get(entity_id)
        return entity.to_wire() if entity else None

    wire = _run(workspace, url, token, work)
    if wire is None:
        fail(f"no entity {entity_id!r} in the world state")
    if as_json:
        _print_json(wire)
    else:
        _show_entity(wire)


@app.command("list")
def list_entities(
    prefix: Annotated[str | None, typer.Option("--prefix", help="Only ids starting with this.")] = None,
    namespace: Annotated[str | None, typer.Option("--namespace", "-n", help="Only this namespace.")] = None,
    as_json: JsonOption = False,
    workspace: WorkspaceOption = Path("."),
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List entities, sorted by id."""

    async def work(store: WorldState) -> list[dict[str, Any]]:
        return [entity.to_wire() for entity in await store.list(prefix=prefix, namespace=namespace)]

    wires = _run(workspace, url, token, work)
    if as_json:
        _print_json(wires)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not wires:
        console.print("No entities.")
        return
    table = Table("id", "properties", "last updated", show_lines=False)
    for wire in wires:
        text = json.dumps(wire["properties"], ensure_ascii=False)
        table.add_row(wire["id"], text if len(text) <= 120 else text[:117] + "...", wire["lastUpdated"])
    console.print(table)
    console.print(f"{len(wires)} entit{'y' if len(wires) == 1 else 'ies'}")


def _parse_properties(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        fail(f"PROPERTIES must be a JSON object like '{{\"temp\": 21.5}}': {exc}")
    if not isinstance(value, dict):
        fail(f"PROPERTIES must be a JSON object like '{{\"temp\": 21.5}}', got {type(value).__name__}")
    return value


@app.command()
def publish(
    entity_id: Annotated[str, typer.Argument(help="Entity id, e.g. lab/sensor-1.")],
    properties: Annotated[str, typer.Argument(help="Properties as a JSON object, e.g. '{\"temp\": 21.5}'.")],
    stream: Annotated[str, typer.Option("--stream", help="Event stream (a-z0-9, dot-separated).")] = "state",
    source: Annotated[str, typer.Option("--source", help="Who publishes.")] = "cli",
    key: Annotated[str | None, typer.Option("--key", help="Optional ordering/grouping key.")] = None,
    as_json: JsonOption = False,
    workspace: WorkspaceOption = Path("."),
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Publish an event that sets properties on an entity (others are kept)."""
    from ..state import make_event

    values = _parse_properties(properties)

    async def work(store: WorldState) -> tuple[str | None, dict[str, Any] | None]:
        result = await store.publish(make_event(entity_id, values, stream=stream, source=source, key=key))
        entity = await store.get(entity_id)
        return result.event_id, entity.to_wire() if entity else None

    event_id, wire = _run(workspace, url, token, work)
    if as_json:
        _print_json({"eventId": event_id, "entity": wire})
        return
    typer.echo(f"Published {event_id}")
    if wire is not None:
        _show_entity(wire)


@app.command()
def delete(
    entity_id: Annotated[str | None, typer.Argument(help="Entity id to delete.")] = None,
    prefix: Annotated[
        str | None, typer.Option("--prefix", help="Delete every id starting with this.")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Delete a whole namespace.")
    ] = None,
    workspace: WorkspaceOption = Path("."),
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Delete one entity, or many by --prefix / --namespace (at most 10,000 at once)."""
    given = [value for value in (entity_id, prefix, namespace) if value is not None]
    if len(given) != 1:
        fail("give exactly one of ENTITY_ID, --prefix or --namespace")

    async def work(store: WorldState) -> str:
        if entity_id is not None:
            if await store.get(entity_id) is None:
                fail(f"no entity {entity_id!r} in the world state")
            result = await store.delete(entity_id)
            return f"Deleted {entity_id} (tombstone {result.event_id})"
        outcome = await store.delete_many(prefix=prefix, namespace=namespace)
        lines = [f"Deleted {outcome.deleted} entit{'y' if outcome.deleted == 1 else 'ies'}"]
        lines += [f"failed: {error}" for error in outcome.errors]
        return "\n".join(lines)

    typer.echo(_run(workspace, url, token, work))


@app.command()
def history(
    entity_id: Annotated[str, typer.Argument(help="Entity id.")],
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="How many events.")] = 20,
    workspace: WorkspaceOption = Path("."),
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show an entity's stored events, newest first (tombstones included)."""

    async def work(store: WorldState) -> list[dict[str, Any]]:
        return [event.to_wire() for event in await store.history(entity_id, limit=limit)]

    _print_json(_run(workspace, url, token, work))


def _describe(update: StateUpdate) -> str:
    stamp = update.timestamp.strftime("%H:%M:%S.%f")[:-3]
    if update.deleted:
        return f"{stamp}  {update.entity_id}  deleted"
    marker = "  (snapshot)" if update.snapshot else ""
    return f"{stamp}  {update.entity_id}  {json.dumps(update.properties, ensure_ascii=False)}{marker}"


@app.command()
def watch(
    patterns: Annotated[
        list[str] | None, typer.Argument(help="Ids or patterns ('*', 'lab/*'); default '*'.")
    ] = None,
    snapshot: Annotated[bool, typer.Option("--snapshot", help="Print current state first.")] = False,
    as_json: JsonOption = False,
    count: Annotated[int | None, typer.Option("--count", min=1, help="Stop after this many updates.")] = None,
    workspace: WorkspaceOption = Path("."),
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Print updates and deletions as they happen (Ctrl-C to stop)."""

    async def work(store: WorldState) -> None:
        seen = 0
        async with store.subscribe(patterns or "*", snapshot=snapshot) as updates:
            async for update in updates:
                if as_json:
                    typer.echo(update.model_dump_json(by_alias=True))
                else:
                    typer.echo(_describe(update))
                seen += 1
                if count is not None and seen >= count:
                    return

    try:
        _run(workspace, url, token, work)
    except KeyboardInterrupt:
        return


def _missing_server_extra() -> NoReturn:
    fail(
        "the state server needs the optional 'server' extra: pip install 'openclaw-mini[server]' "
        "(from a source checkout: pip install -e '.[server]')"
    )


def _port_problem(host: str, port: int) -> str | None:
    """One sentence when `host:port` cannot be bound (checked before anything is printed or opened)."""
    import errno
    import socket

    if port == 0:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server itself binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use: stop what is there or pick another --port."
            return f"cannot serve on {host}:{port}: {exc.strerror or exc}."
    return None


@app.command()
def serve(
    workspace: WorkspaceOption = Path("."),
    host: Annotated[
        str, typer.Option("--host", help="Interface to bind; loopback unless you ask.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 3000,
    auth: Annotated[
        bool, typer.Option("--auth/--no-auth", help="Namespaces and bearer tokens for writes.")
    ] = False,
    admin_token: Annotated[
        str | None,
        typer.Option(
            "--admin-token",
            envvar="OPENCLAW_MINI_STATE_ADMIN_TOKEN",
            help="Required to register namespaces (and may write anywhere).",
        ),
    ] = None,
    rate_limit: Annotated[
        int | None, typer.Option("--rate-limit", min=1, help="Events per minute per namespace.")
    ] = None,
) -> None:
    """Serve the workspace's world state over Flux's HTTP/WebSocket API."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        _missing_server_extra()
    from ..state import AuthConfig, EmbeddedWorldState, StateError
    from ..state.server import serve as serve_state

    auth_config = AuthConfig.for_workspace(workspace, admin_token=admin_token) if auth else None
    if admin_token and not auth:
        fail("--admin-token only makes sense with --auth")

    async def main() -> None:
        store = EmbeddedWorldState.for_workspace(workspace)
        try:
            await serve_state(store, host=host, port=port, auth=auth_config, rate_limit=rate_limit)
        finally:
            await store.aclose()

    problem = _port_problem(host, port)
    if problem is not None:
        fail(problem)
    shown = f"[{host}]" if ":" in host else host
    mode = "auth on" if auth else "auth off"
    typer.echo(f"Serving the world state of {os.path.abspath(workspace)} on http://{shown}:{port} ({mode})")
    try:
        asyncio.run(main())
    except StateError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot serve on {host}:{port}: {exc.strerror or exc}")
    except SystemExit as exc:  # uvicorn exits (code 3) when the bind fails after all (a race)
        if exc.code in (0, None):
            return
        fail(_port_problem(host, port) or f"the state server on {host}:{port} could not start.")
    except KeyboardInterrupt:
        return
