"""openclaw-mini: a minimal, production-grade agent runtime with a proactive heartbeat.

```python
from openclaw_mini import Agent

async with Agent(workspace_dir=".") as agent:
    result = await agent.run("session-1", "List the files here")
```

Names are loaded on first use (PEP 562), so `import openclaw_mini` stays fast: the anthropic SDK
is imported only when a model is first called.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Agent": ".agent",
    "AgentConfig": ".config",
    "AnthropicModel": ".llm",
    "ApprovalRequest": ".tools.policy",
    "BootstrapConfig": ".config",
    "CompactionConfig": ".config",
    "ConfigError": ".errors",
    "ContextOverflowError": ".errors",
    "HeartbeatConfig": ".heartbeat",
    "HeartbeatRequest": ".heartbeat",
    "HeartbeatTask": ".heartbeat",
    "MemoryHit": ".memory",
    "McpServerConfig": ".mcp.config",
    "MemoryStore": ".memory",
    "MissingAPIKeyError": ".errors",
    "Model": ".llm",
    "ModelError": ".errors",
    "ModelRequest": ".llm",
    "ModelResponse": ".llm",
    "OpenClawMiniError": ".errors",
    "PruningConfig": ".config",
    "RunEvent": ".events",
    "RunResult": ".events",
    "SandboxConfig": ".tools.policy",
    "Settings": ".settings",
    "SessionKey": ".session",
    "SessionStore": ".session",
    "Skill": ".skills",
    "SkillLoader": ".skills",
    "Tool": ".tools.base",
    "ToolCallRecord": ".events",
    "ToolContext": ".tools.base",
    "ToolRefused": ".errors",
    "ToolTimeout": ".errors",
    "ToolError": ".errors",
    "ToolPolicy": ".tools.policy",
    "Usage": ".llm",
    "load_settings": ".settings",
    "tool": ".tools.base",
}

__all__ = [
    "Agent",
    "AgentConfig",
    "AnthropicModel",
    "ApprovalRequest",
    "BootstrapConfig",
    "CompactionConfig",
    "ConfigError",
    "ContextOverflowError",
    "HeartbeatConfig",
    "HeartbeatRequest",
    "HeartbeatTask",
    "McpServerConfig",
    "MemoryHit",
    "MemoryStore",
    "MissingAPIKeyError",
    "Model",
    "ModelError",
    "ModelRequest",
    "ModelResponse",
    "OpenClawMiniError",
    "PruningConfig",
    "RunEvent",
    "RunResult",
    "SandboxConfig",
    "SessionKey",
    "SessionStore",
    "Settings",
    "Skill",
    "SkillLoader",
    "Tool",
    "ToolCallRecord",
    "ToolContext",
    "ToolError",
    "ToolPolicy",
    "ToolRefused",
    "ToolTimeout",
    "Usage",
    "__version__",
    "load_settings",
    "tool",
]

if TYPE_CHECKING:
    from .agent import Agent
    from .config import AgentConfig, BootstrapConfig, CompactionConfig, PruningConfig
    from .errors import (
        ConfigError,
        ContextOverflowError,
        MissingAPIKeyError,
        ModelError,
        OpenClawMiniError,
        ToolError,
        ToolRefused,
        ToolTimeout,
    )
    from .events import RunEvent, RunResult, ToolCallRecord
    from .heartbeat import HeartbeatConfig, HeartbeatRequest, HeartbeatTask
    from .llm import AnthropicModel, Model, ModelRequest, ModelResponse, Usage
    from .mcp.config import McpServerConfig
    from .memory import MemoryHit, MemoryStore
    from .session import SessionKey, SessionStore
    from .settings import Settings, load_settings
    from .skills import Skill, SkillLoader
    from .tools.base import Tool, ToolContext, tool
    from .tools.policy import ApprovalRequest, SandboxConfig, ToolPolicy


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'openclaw_mini' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
