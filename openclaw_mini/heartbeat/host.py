"""`AgentHeartbeat`: one agent's heartbeat, its settings, its runner while started, and its turns.

The agent hands it what a heartbeat turn needs (a way to run a message on a session, and to tell
whether that session is busy) and the handle its tools wake the heartbeat through; the heartbeat
never sees the agent itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import HeartbeatBusy
from .config import HeartbeatConfig
from .runner import HeartbeatOutcome, HeartbeatRunner, HeartbeatStatus, HeartbeatTurn
from .wake import HeartbeatRequest

if TYPE_CHECKING:
    from ..events import RunResult
    from ..services import HeartbeatHandle

__all__ = ["AgentHeartbeat"]


@dataclass
class AgentHeartbeat:
    """The heartbeat of one agent (see the module docstring)."""

    workspace: Path
    setting: Any
    """What the agent was given: a `HeartbeatConfig`, a dict, a duration, False/0/"off" or None."""
    timezone: str | None
    run: Callable[[str, str], Awaitable[RunResult]]
    busy: Callable[[str], bool]
    handle: HeartbeatHandle
    runner: HeartbeatRunner | None = field(default=None, init=False)
    """The started runner (None until `start`)."""

    @property
    def config(self) -> HeartbeatConfig:
        """The settings (`{}`, `False`, `0` or `"off"` turn it off; None means defaults), with the
        agent's timezone when the heartbeat names none."""
        config = HeartbeatConfig.coerce(self.setting)
        if self.timezone and not config.timezone:
            config = config.model_copy(update={"timezone": self.timezone})
        return config

    async def turn(self, prompt: str, tasks: Any, request: HeartbeatRequest) -> HeartbeatTurn:
        """One heartbeat turn: a normal run on the heartbeat session (pruned and compacted like any
        session). If a user turn holds that session's lane, report busy so the wake layer retries."""
        session = request.session or self.config.session
        if self.busy(session):
            raise HeartbeatBusy(f"session {session} is busy")
        result = await self.run(session, prompt)
        return HeartbeatTurn(text=result.text, tokens=result.usage.total_tokens)

    def make_runner(self, callback: Any = None, deliver: Any = None) -> HeartbeatRunner:
        return HeartbeatRunner(
            self.workspace, self.config, run_turn=self.turn, callback=callback, deliver=deliver
        )

    def start(self, callback: Any = None, deliver: Any = None) -> None:
        if self.runner is not None:
            return
        self.runner = self.make_runner(callback, deliver)
        self.runner.start()
        self.handle.runner = self.runner

    def request(self, reason: str) -> None:
        if self.runner is None:
            raise RuntimeError("The heartbeat is not running: call start_heartbeat() first.")
        self.runner.request(reason)

    async def run_once(self, reason: str, *, force: bool) -> HeartbeatOutcome:
        return await (self.runner or self.make_runner()).run_once(reason, force=force)

    def status(self) -> HeartbeatStatus:
        return (self.runner or self.make_runner()).status()

    async def stop(self) -> None:
        runner, self.runner = self.runner, None
        if self.handle.runner is runner:
            self.handle.runner = None
        if runner is not None:
            await runner.aclose()
