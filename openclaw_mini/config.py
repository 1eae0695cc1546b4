"""Agent configuration (pydantic): one validated object instead of loose keyword arguments.

Validation errors name the field and the bad value, so a typo in user code or a config file is
reported where it is, not as a crash ten calls later.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .mcp.config import McpServerConfig, check_server_name
from .tools.policy import ApprovalMode, SandboxConfig, ToolPolicy

__all__ = [
    "DEFAULT_MODEL",
    "AgentConfig",
    "BootstrapConfig",
    "CompactionConfig",
    "ConfigError",
    "PruningConfig",
    "default_agent_id",
]

DEFAULT_MODEL = "claude-sonnet-4-6"
"""claude-sonnet-4-5 (design.md's example) reaches end-of-life on 2026-11-30; the SDK warns on it."""
AGENT_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def default_agent_id() -> str:
    return os.environ.get("OPENCLAW_MINI_AGENT_ID", "").strip().lower() or "main"


class BootstrapConfig(BaseModel):
    """Workspace bootstrap files (AGENTS.md, SOUL.md, ...) injected into the system prompt."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_chars_per_file: int = Field(20_000, ge=100)
    max_total_chars: int = Field(150_000, ge=100)
    head_ratio: float = Field(0.7, gt=0, lt=1)
    tail_ratio: float = Field(0.2, gt=0, lt=1)
    max_file_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    """Files larger than this are not read whole (only head and tail)."""

    @model_validator(mode="after")
    def _ratios_fit(self) -> BootstrapConfig:
        if self.head_ratio + self.tail_ratio >= 1:
            raise ValueError("head_ratio + tail_ratio must be below 1")
        return self


class PruningConfig(BaseModel):
    """In-memory trimming of old tool results before each request (the transcript keeps all)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    keep_last_assistants: int = Field(3, ge=0)
    soft_trim_ratio: float = Field(0.3, ge=0, le=1)
    hard_clear_ratio: float = Field(0.5, ge=0, le=1)
    soft_trim_min_chars: int = Field(4_000, ge=0)
    soft_trim_head_chars: int = Field(1_500, ge=0)
    soft_trim_tail_chars: int = Field(1_500, ge=0)
    min_prunable_chars: int = Field(50_000, ge=0)
    cleared_placeholder: str = "[Old tool result content cleared]"


class CompactionConfig(BaseModel):
    """When and how long histories are summarised."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    reserve_tokens: int = Field(20_000, ge=0)
    """Headroom kept free for the reply; scaled down to a quarter of small windows."""
    keep_recent_tokens: int = Field(20_000, ge=0)
    """Recent history kept verbatim; scaled down to half of small windows."""
    memory_flush: bool = True
    """Before compacting, one silent turn asks the model to save durable facts to memory."""
    memory_flush_soft_tokens: int = Field(4_000, ge=0)
    summary_max_tokens: int = Field(4_096, ge=256)


class AgentConfig(BaseModel):
    """Everything an `Agent` is built from. `Agent(**kwargs)` builds one of these."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, validate_assignment=True)

    workspace_dir: Path = Field(default_factory=lambda: Path("."))
    agent_id: str = Field(default_factory=default_agent_id)
    model: str = DEFAULT_MODEL
    api_key: str | None = Field(default=None, repr=False, exclude=True)
    base_url: str | None = None
    max_turns: int = Field(25, ge=1)
    max_tokens: int = Field(8_192, ge=1)
    max_retries: int = Field(3, ge=0)
    timeout_seconds: float = Field(600.0, gt=0)
    thinking_budget_tokens: int | None = Field(None, ge=1024)
    context_window_tokens: int = Field(200_000, ge=1_000)
    enable_memory: bool = True
    enable_context: bool = True
    enable_skills: bool = True
    enable_heartbeat: bool = False
    enable_state: bool = False
    """Offer the shared world-state tools (state_publish/get/list/delete); remote when FLUX_URL is set."""
    tool_policy: ToolPolicy = Field(default_factory=ToolPolicy)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)
    pruning: PruningConfig = Field(default_factory=PruningConfig)
    compaction: CompactionConfig = Field(default_factory=CompactionConfig)
    timezone: str | None = None
    """IANA timezone for dates in prompts and memory file names; default: the host's."""
    tool_timeout_seconds: float = Field(120.0, gt=0)
    """Every tool call's deadline unless the tool sets its own (`@tool(timeout_seconds=...)`); a call
    past it becomes an error result and the run goes on."""
    max_spawn_depth: int = Field(1, ge=0)
    """How deep sub-agents may spawn sub-agents (1: the main agent may spawn, children may not)."""
    session_lock_timeout_seconds: float = Field(600.0, gt=0)
    """How long a run waits for another process's turn on the same session before it gives up."""
    session_cache_sessions: int = Field(256, ge=1)
    """Sessions kept in memory between runs; older ones are reloaded from disk when used again."""
    session_cache_bytes: int = Field(64 * 1024 * 1024, ge=0)
    """Transcript bytes kept in memory between runs (0: no byte bound, only the count)."""
    approval: dict[str, ApprovalMode] = Field(default_factory=dict)
    """`allow`/`ask`/`deny` per tool name, glob (`mcp__git__*`) or `group:<name>`; `*` is the default.
    `ask` needs the `approve=` callback; without one the call is refused with a hint."""
    mcp_servers: dict[str, McpServerConfig] = Field(default_factory=dict)
    """MCP servers whose tools join the registry as `mcp__<server>__<tool>` (started lazily)."""

    @field_validator("approval")
    @classmethod
    def _check_approval(cls, value: dict[str, ApprovalMode]) -> dict[str, ApprovalMode]:
        for entry in value:
            if not entry.strip():
                raise ValueError("an approval rule needs a tool name, a glob or 'group:<name>'")
        return value

    @field_validator("mcp_servers")
    @classmethod
    def _check_server_names(cls, value: dict[str, McpServerConfig]) -> dict[str, McpServerConfig]:
        for name in value:
            check_server_name(name)
        return value

    @field_validator("workspace_dir", mode="before")
    @classmethod
    def _expand_workspace(cls, value: Any) -> Path:
        return Path(os.path.expanduser(str(value))).absolute()

    @field_validator("agent_id", mode="before")
    @classmethod
    def _check_agent_id(cls, value: Any) -> str:
        text = str(value).strip().lower()
        if not AGENT_ID_PATTERN.match(text):
            raise ValueError(
                f"agent_id {value!r} must be 1-64 characters of a-z, 0-9, '_' or '-', "
                "starting with a letter or digit"
            )
        return text

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str | None) -> str | None:
        if value in (None, "", "local"):
            return None
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r} (use an IANA name like 'Europe/Berlin')") from None
        return value

    @model_validator(mode="after")
    def _thinking_fits(self) -> AgentConfig:
        if self.thinking_budget_tokens is not None and self.thinking_budget_tokens >= self.max_tokens:
            raise ValueError(
                f"thinking_budget_tokens ({self.thinking_budget_tokens}) must be below "
                f"max_tokens ({self.max_tokens})"
            )
        return self

    @property
    def state_dir(self) -> Path:
        """Where the runtime keeps its own files: `<workspace>/.openclaw-mini`."""
        return self.workspace_dir / ".openclaw-mini"

    @property
    def resolved_api_key(self) -> str | None:
        return self.api_key or os.environ.get("ANTHROPIC_API_KEY") or None

    @property
    def resolved_base_url(self) -> str | None:
        return self.base_url or os.environ.get("ANTHROPIC_BASE_URL") or None


def build_config(**values: Any) -> AgentConfig:
    """Build an `AgentConfig`, turning pydantic's error into one `ConfigError` that names each field."""
    try:
        return AgentConfig(**{key: value for key, value in values.items() if value is not None})
    except ValidationError as exc:
        from ._validation import describe_problems

        raise ConfigError("Invalid agent configuration: " + describe_problems(exc, "config")) from None
