"""The services an agent hands its tools, and who closes them.

An `Agent` creates one `AgentServices` (memory store, background-command manager, world state,
heartbeat handle, MCP server connections), passes its parts to every `ToolContext`, and closes it
in `aclose`; sub-agents share their parent's and close nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import AgentConfig
    from .heartbeat import HeartbeatRunner
    from .mcp import McpManager
    from .memory import MemoryStore
    from .state import WorldState
    from .tools.shell import ExecManager

__all__ = ["AgentServices", "HeartbeatHandle"]


class HeartbeatHandle:
    """The `HeartbeatHandle` tools get: forwards to the heartbeat while one runs, else does nothing.

    Stable for the agent's life, so a background command started before `start_heartbeat()` still
    wakes the heartbeat when it finishes."""

    def __init__(self) -> None:
        self.runner: HeartbeatRunner | None = None

    def request(self, reason: str = "requested") -> None:
        if self.runner is not None:
            self.runner.request(reason)

    def notify_exec(self, exec_id: str, exit_code: int | None, output_tail: str) -> None:
        if self.runner is not None:
            self.runner.notify_exec(exec_id, exit_code, output_tail)


@dataclass
class AgentServices:
    """Handles shared by an agent's tools; the agent that created them (`owner`) closes them."""

    memory: MemoryStore | None
    exec_manager: ExecManager
    state: WorldState | None
    heartbeat: HeartbeatHandle
    mcp: McpManager | None = None
    """The MCP servers' connections (started on the first run), shared by sub-agents."""

    @classmethod
    def create(cls, config: AgentConfig) -> AgentServices:
        from .tools.shell import ExecManager

        memory = state = None
        if config.enable_memory:
            from .memory import MemoryStore, embedder_from_env

            # Opened lazily; OPENCLAW_MINI_EMBEDDINGS=local|http adds search by meaning.
            memory = MemoryStore(config.workspace_dir, timezone=config.timezone, embedder=embedder_from_env())
        if config.enable_state:
            from .state import open_world_state

            state = open_world_state(config.workspace_dir)  # opened on first use
        mcp = None
        if config.mcp_servers:
            from .mcp import McpManager

            mcp = McpManager(config.mcp_servers, config.workspace_dir, config.state_dir / "mcp")
        return cls(
            memory=memory, exec_manager=ExecManager(), state=state, heartbeat=HeartbeatHandle(), mcp=mcp
        )

    async def aclose(self) -> None:
        if self.mcp is not None:
            await self.mcp.aclose()
        await self.exec_manager.aclose()
        if self.memory is not None:
            self.memory.close()
        if self.state is not None:
            await self.state.aclose()
