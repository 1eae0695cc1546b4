"""`openclaw-mini sessions list|show|rm`: look at and remove transcripts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import WorkspaceOption, fail, handle_errors

__all__ = ["app", "preview"]

_PREVIEW_BYTES = 64 * 1024

app = typer.Typer(help="List, show and remove sessions.", no_args_is_help=True)

AgentOption = Annotated[str | None, typer.Option("--agent-id", help="Agent id (default: main).")]
SessionArgument = Annotated[str, typer.Argument(help="Session id or full key.")]


def _store(workspace: Path):  # type: ignore[no-untyped-def]
    from ..session import SessionStore

    return SessionStore(workspace.expanduser() / ".openclaw-mini", workspace=workspace)


def _key(session: str, workspace: Path, agent_id: str | None):  # type: ignore[no-untyped-def]
    """The full key a user's session id names (the agent: `--agent-id`, else the configured one)."""
    from ..session import SessionKey
    from .config import configured_agent_id

    return SessionKey.parse(session, agent_id or configured_agent_id(workspace))


def preview(path: Path, width: int = 60) -> str:
    """The first thing the user said in a transcript, on one line (read from the file's head only,
    so listing many long sessions stays fast)."""
    import json

    try:
        with open(path, "rb") as handle:
            head = handle.read(_PREVIEW_BYTES)
    except OSError:
        return ""
    for raw in head.splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(entry, dict) or entry.get("type") != "message" or entry.get("role") != "user":
            continue
        if entry.get("hidden"):
            continue
        content = entry.get("content")
        blocks = [content] if isinstance(content, str) else content if isinstance(content, list) else []
        texts = [b if isinstance(b, str) else b.get("text", "") for b in blocks if isinstance(b, (str, dict))]
        text = " ".join(" ".join(texts[-1:]).split()) if texts else ""
        if text:
            return text if len(text) <= width else text[: width - 1] + "…"
    return ""


@app.command("list")
@handle_errors
def list_sessions(workspace: WorkspaceOption = Path("."), agent_id: AgentOption = None) -> None:
    """Sessions, newest first, with the first message of each."""
    infos = _store(workspace).list_sync(agent_id)
    if not infos:
        typer.echo("No sessions yet.")
        return
    for info in infos:
        when = f"{info.last_activity:%Y-%m-%d %H:%M}"
        typer.echo(f"{info.key}\t{when}\t{info.size_bytes:,} bytes\t{preview(info.path)}")


@app.command()
@handle_errors
def show(
    session: SessionArgument,
    workspace: WorkspaceOption = Path("."),
    agent_id: AgentOption = None,
    limit: Annotated[int, typer.Option(help="Show the last N messages.")] = 50,
) -> None:
    """Print a session's messages."""
    from ..transcript import TURN_FAILED, CompactionEntry, CustomEntry, MessageEntry, text_of

    key = _key(session, workspace, agent_id)
    loaded = _store(workspace).load_sync(key)
    if not loaded.entries and loaded.header is None:
        fail(f"No session {key} in {workspace}.")
    for warning in loaded.warnings:
        typer.echo(f"warning: {warning}", err=True)
    failed = {
        str(entry.data.get("turn")): str(entry.data.get("error", ""))
        for entry in loaded.entries
        if isinstance(entry, CustomEntry) and entry.custom_type == TURN_FAILED
    }
    for entry in loaded.entries[-limit:]:
        if isinstance(entry, MessageEntry):
            text = text_of(entry.content)
            tools = [b for b in entry.content if b.get("type") in ("tool_use", "tool_result")]
            if not text and tools:
                text = ", ".join(f"[{b['type']} {b.get('name', '')}]".replace(" ]", "]") for b in tools)
            tag = " (silent)" if entry.hidden else ""
            if entry.id in failed:
                tag += " (failed: left out of later requests)"
            typer.echo(f"{entry.timestamp} {entry.role}{tag}: {text}")
        elif isinstance(entry, CompactionEntry):
            typer.echo(f"{entry.timestamp} [compaction {entry.tokens_before} -> {entry.tokens_after} tokens]")
        elif isinstance(entry, CustomEntry) and entry.custom_type == TURN_FAILED:
            typer.echo(f"{entry.timestamp} [turn failed] {entry.data.get('error', '')}".rstrip())
        elif isinstance(entry, CustomEntry):
            typer.echo(f"{entry.timestamp} [{entry.custom_type}] {entry.message or ''}".rstrip())


@app.command()
@handle_errors
def rm(
    session: SessionArgument, workspace: WorkspaceOption = Path("."), agent_id: AgentOption = None
) -> None:
    """Delete a session's transcript."""
    key = _key(session, workspace, agent_id)
    if not _store(workspace).delete_sync(key):
        fail(f"No session {key} in {workspace}.")
    typer.echo(f"Removed {key}.")
