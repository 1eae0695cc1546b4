"""Sub-agents and session inspection: `sessions_spawn`, `sessions_list`, `sessions_history`.

A sub-agent runs on `agent:<id>:subagent:<uuid>` with the sub-agent bootstrap allow-list (AGENTS.md
and TOOLS.md) and a tool set no wider than its parent's. Depth is limited so a child cannot spawn
without bound. The tools use the `SubagentHost` in `ctx.subagents`, a narrow typed view of the
parent agent; the agent module is never imported here (data flows down, not back up).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..events import RunEvent
from ..transcript import CompactionEntry, CustomEntry, MessageEntry, text_of
from .base import Tool, ToolContext, ToolError, tool

if TYPE_CHECKING:
    from ..session import SessionKey, SessionStore

__all__ = ["SESSION_TOOLS", "Subagent", "SubagentHost"]

log = logging.getLogger(__name__)
_HISTORY_TEXT_LIMIT = 2_000
SUBAGENT_TIMEOUT_SECONDS = 3_600.0
"""A sub-agent waited for runs a whole task of its own: its deadline is an hour, not a tool's."""


class Subagent(Protocol):
    """A child agent: runs one task on its own session, then is closed by whoever spawned it."""

    def new_subagent_key(self) -> str: ...

    def stream(self, session: str, text: str) -> AsyncIterator[RunEvent]: ...

    async def aclose(self) -> None: ...


class SubagentHost(Protocol):
    """What the session tools may ask of the agent that runs them."""

    @property
    def agent_id(self) -> str: ...

    @property
    def sessions(self) -> SessionStore: ...

    def session_key(self, session: str) -> SessionKey: ...

    def spawn_child(self, tools: Sequence[str] | None = None) -> Subagent: ...

    def track_background(self, task: asyncio.Task[None]) -> None: ...

    async def deliver_subagent_result(self, session: str, note: str, *, data: dict[str, Any]) -> None: ...


def _parent(ctx: ToolContext) -> SubagentHost:
    host = ctx.subagents
    if host is None:
        raise ToolError("Sub-agents need an Agent; this tool was called outside one.")
    return host


@tool(group="sessions", timeout_seconds=SUBAGENT_TIMEOUT_SECONDS)
async def sessions_spawn(
    task: str,
    ctx: ToolContext,
    label: str | None = None,
    tools: list[str] | None = None,
    background: bool = False,
) -> str:
    """Delegate a self-contained task to a sub-agent and get its final answer.

    The sub-agent starts with a fresh session (it does not see this conversation), so put everything
    it needs into `task`. By default this waits and returns the sub-agent's reply; with
    background=true it returns at once and the result is added to this session when it finishes.

    Args:
        task: Complete instructions for the sub-agent, including paths and the expected output.
        label: A short name for the sub-agent, shown in progress and results.
        tools: Names of the tools the sub-agent may use (default: the same as yours, never more).
        background: Return immediately and deliver the result later.
    """
    parent = _parent(ctx)
    if not task.strip():
        raise ToolError("The task is empty: describe what the sub-agent should do.")
    try:
        child = parent.spawn_child(tools=tools)
    except ValueError as exc:  # a tool the parent does not have, or the depth limit
        raise ToolError(str(exc)) from None
    key = child.new_subagent_key()
    name = label or key.rsplit(":", 1)[-1][:8]

    async def run_child() -> str:
        final: Any = None
        try:
            async for event in child.stream(key, task):
                if event.type in ("tool_start", "tool_end") and ctx.emit is not None:
                    ctx.emit(
                        RunEvent(
                            "subagent",
                            ctx.session_key,
                            tool=event.tool,
                            data={
                                "subagent": key,
                                "label": name,
                                "event": event.type,
                                "parent_tool_use_id": ctx.tool_use_id,
                            },
                        )
                    )
                elif event.type == "done":
                    final = event.result
        finally:
            await child.aclose()
        if final is None:
            raise ToolError(f"Sub-agent {name} ended without a result.")
        if final.stop_reason == "error":
            raise ToolError(f"Sub-agent {name} failed: {final.error}")
        return str(final.text)

    if not background:
        text = await run_child()
        return f"Sub-agent {name} ({key}) finished:\n{text}"

    async def run_in_background() -> None:
        try:
            text = await run_child()
            note = f"[Background sub-agent {name} ({key}) finished]\n{text}"
            ok = True
        except Exception as exc:  # delivered to the parent session, never lost
            note = f"[Background sub-agent {name} ({key}) failed] {exc}"
            ok = False
        await parent.deliver_subagent_result(
            ctx.session_key, note, data={"subagent": key, "label": name, "ok": ok}
        )

    parent.track_background(asyncio.create_task(run_in_background(), name=f"subagent:{key}"))
    return (
        f"Sub-agent {name} started in the background as {key}. Its result will be added to this "
        "session when it finishes; do not wait for it."
    )


@tool(group="sessions")
async def sessions_list(ctx: ToolContext, limit: int = 20) -> str:
    """List this agent's sessions, most recently active first.

    Args:
        limit: How many sessions to show.
    """
    parent = _parent(ctx)
    infos = await parent.sessions.list(parent.agent_id)
    if not infos:
        return "No sessions yet."
    lines = [
        f"{info.key}  last active {info.last_activity:%Y-%m-%d %H:%M} UTC  {info.size_bytes:,} bytes"
        for info in infos[: max(limit, 1)]
    ]
    return "\n".join(lines)


@tool(group="sessions")
async def sessions_history(session: str, ctx: ToolContext, limit: int = 20) -> str:
    """Show the last messages of a session (text, tool calls and results in short).

    Args:
        session: A session id or full key from sessions_list.
        limit: How many entries to show, newest last.
    """
    parent = _parent(ctx)
    try:
        key = parent.session_key(session)
    except ValueError as exc:
        raise ToolError(str(exc)) from None
    loaded = await parent.sessions.load(key)
    if not loaded.entries:
        raise ToolError(f"No session {key}.")
    lines: list[str] = []
    for entry in loaded.entries[-max(limit, 1) :]:
        if isinstance(entry, MessageEntry):
            if entry.hidden:
                continue
            parts = [text_of(entry.content)]
            for block in entry.content:
                if block.get("type") == "tool_use":
                    parts.append(f"[tool call {block.get('name')}]")
                elif block.get("type") == "tool_result":
                    content = block.get("content")
                    preview = content if isinstance(content, str) else text_of(content or [])
                    parts.append(
                        f"[tool result{' (error)' if block.get('is_error') else ''}: {preview[:200]}]"
                    )
            text = " ".join(part for part in parts if part)[:_HISTORY_TEXT_LIMIT]
            lines.append(f"{entry.role}: {text}")
        elif isinstance(entry, CompactionEntry):
            lines.append(f"[summary of earlier history]\n{entry.summary[:_HISTORY_TEXT_LIMIT]}")
        elif isinstance(entry, CustomEntry) and entry.message:
            lines.append(f"[{entry.custom_type}] {entry.message[:_HISTORY_TEXT_LIMIT]}")
    return "\n\n".join(lines) or "(no visible messages)"


SESSION_TOOLS: list[Tool] = [sessions_spawn, sessions_list, sessions_history]
