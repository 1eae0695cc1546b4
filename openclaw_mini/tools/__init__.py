"""Built-in tools, their registry and the one policy that decides what may run."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import AgentConfig
    from .base import Tool

__all__ = ["builtin_tools"]


def builtin_tools(config: AgentConfig, *, can_spawn: bool) -> list[Tool]:
    """The built-in tools an agent with `config` registers (modules imported only when used)."""
    from .files import FILE_TOOLS
    from .shell import SHELL_TOOLS

    found: list[Tool] = [*FILE_TOOLS, *SHELL_TOOLS]
    if config.enable_memory:
        from .memory import MEMORY_TOOLS

        found.extend(MEMORY_TOOLS)
    if can_spawn:
        from .sessions import SESSION_TOOLS

        found.extend(SESSION_TOOLS)
    if config.enable_state:
        from .state import STATE_TOOLS

        found.extend(STATE_TOOLS)
    return found
