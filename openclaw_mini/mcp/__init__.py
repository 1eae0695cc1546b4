"""MCP tool servers (official `mcp` SDK): stdio and streamable-HTTP servers whose tools join the
agent's registry as `mcp__<server>__<tool>`.

`openclaw_mini.mcp.config` is light (pydantic only); the SDK is imported when a server first starts.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = ["McpManager", "McpServer", "McpServerConfig", "load_mcp_json", "tool_prefix"]

_EXPORTS = {
    "McpManager": ".servers",
    "McpServer": ".servers",
    "McpServerConfig": ".config",
    "load_mcp_json": ".config",
    "tool_prefix": ".config",
}

if TYPE_CHECKING:
    from .config import McpServerConfig, load_mcp_json, tool_prefix
    from .servers import McpManager, McpServer


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'openclaw_mini.mcp' has no attribute {name!r}")
    return getattr(import_module(module, __name__), name)
