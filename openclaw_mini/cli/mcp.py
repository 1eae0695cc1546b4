"""`openclaw-mini mcp list`: the MCP servers of this workspace, their state and their tools."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from .common import WorkspaceOption, handle_errors

__all__ = ["app", "probe_servers"]

app = typer.Typer(help="MCP tool servers from openclaw-mini.toml and .mcp.json.", no_args_is_help=True)


async def probe_servers(
    workspace: Path, *, keep_logs: bool = True
) -> list[tuple[str, str, str, list[str], str | None]]:
    """Start each server once: (name, transport + command/url, state, tool names, error).

    With `keep_logs`, a stdio server's stderr goes to `.openclaw-mini/mcp/NAME.log`; else nowhere
    (doctor writes no file)."""
    from ..mcp.servers import McpManager
    from .config import command_settings

    settings = command_settings(workspace)
    config = settings.config
    logs = config.state_dir / "mcp" if keep_logs else None
    manager = McpManager(config.mcp_servers, config.workspace_dir, logs)
    try:
        await manager.start()
        rows: list[tuple[str, str, str, list[str], str | None]] = []
        for name, server in manager.servers.items():
            tools = [tool.name for tool in server.tools()] if server.state == "running" else []
            what = f"{server.config.transport}: {server.config.describe()}"
            rows.append((name, what, server.state, tools, server.error))
        return rows
    finally:
        await manager.aclose()


@app.command("list")
@handle_errors
def list_servers(
    workspace: WorkspaceOption = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Start every configured server once and show its state and tools (exit 1 if one fails)."""
    rows = asyncio.run(probe_servers(workspace.expanduser()))
    if as_json:
        import json

        data = [
            {"name": name, "server": what, "state": state, "tools": tools, "error": error}
            for name, what, state, tools, error in rows
        ]
        typer.echo(json.dumps(data, indent=2))
    elif not rows:
        typer.echo("No MCP servers: add [mcp_servers.NAME] to openclaw-mini.toml or a .mcp.json.")
    for name, what, state, tools, error in [] if as_json else rows:
        typer.echo(f"{name}  {state}  ({what})")
        if error:
            typer.echo(f"    error: {error}")
        for tool in tools:
            typer.echo(f"    {tool}")
    if any(state == "failed" for _, _, state, _, _ in rows):
        raise typer.Exit(1)
