"""`Subagents`: the service an agent hands its session tools (`ctx.subagents`).

It implements `tools.sessions.SubagentHost` from what the agent gives it (how to spawn a child,
how to add a note to a session, how to wake the heartbeat), and owns the background sub-agent
tasks: `aclose()` cancels the ones still running. Tools never see the agent itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .transcript import CustomEntry

if TYPE_CHECKING:
    from .session import SessionKey, SessionStore
    from .tools.sessions import Subagent

__all__ = ["Subagents"]


@dataclass
class Subagents:
    """Spawns children, tracks background ones, and delivers their results into a session."""

    agent_id: str
    sessions: SessionStore
    parse_key: Callable[[str], SessionKey]
    spawn: Callable[[Sequence[str] | None], Subagent]
    append_note: Callable[[SessionKey, CustomEntry], Awaitable[None]]
    """Adds a note to a session, in that session's lane."""
    wake: Callable[[str], None]
    """Wakes the heartbeat (a finished background child reports as `exec`)."""
    _background: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    def session_key(self, session: str) -> SessionKey:
        return self.parse_key(session)

    def spawn_child(self, tools: Sequence[str] | None = None) -> Subagent:
        return self.spawn(tools)

    def track_background(self, task: asyncio.Task[None]) -> None:
        """Keep a background task alive until it ends (and cancel it on `aclose`)."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def deliver_subagent_result(self, session: str, note: str, *, data: dict[str, Any]) -> None:
        """Write a background sub-agent's result into the parent session and wake the heartbeat."""
        entry = CustomEntry(custom_type="subagent_result", data=data, message=note)
        await self.append_note(self.parse_key(session), entry)
        self.wake("exec")

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
