"""MCP server declarations: `[mcp_servers.NAME]` in openclaw-mini.toml and `.mcp.json`'s `mcpServers`.

Only pydantic here (no `mcp` SDK import), so `AgentConfig` can hold server declarations without
slowing `import openclaw_mini` or the CLI's start.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError

__all__ = ["MCP_CONFIG_FILE", "McpServerConfig", "load_mcp_json", "tool_prefix"]

MCP_CONFIG_FILE = ".mcp.json"
"""The workspace file Claude Code and Claude Desktop use: `{"mcpServers": {NAME: {...}}}`."""
SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")


def tool_prefix(server: str) -> str:
    """`mcp__<server>__`: the prefix of every tool a server brings (a policy entry
    `mcp__<server>__*` denies or asks for the whole server)."""
    return f"mcp__{server}__"


class McpServerConfig(BaseModel):
    """One MCP server: a command to start (stdio) or a URL (streamable HTTP)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    command: str | None = None
    """Program to start for a stdio server, e.g. `uvx` or `mcp-server-time`."""
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment for the server process (added to a minimal safe environment)."""
    cwd: str | None = None
    """Working directory of a stdio server; default: the workspace."""
    url: str | None = None
    """Endpoint of a streamable-HTTP server, e.g. `http://127.0.0.1:8000/mcp`."""
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    """HTTP headers (e.g. Authorization) for a URL server; never shown in `config show`."""
    type: str | None = None
    """`stdio` or `http` (`streamable-http`); inferred from command/url when missing, as in `.mcp.json`."""
    enabled: bool = True
    timeout_seconds: float = Field(60.0, gt=0)
    """Deadline for one tool call; a slower call becomes an error result."""
    startup_timeout_seconds: float = Field(30.0, gt=0)
    """Deadline for starting the server and listing its tools."""

    @field_validator("type")
    @classmethod
    def _check_type(cls, value: str | None) -> str | None:
        if value is None:
            return None
        normal = value.strip().lower().replace("_", "-")
        if normal in ("stdio",):
            return "stdio"
        if normal in ("http", "streamable-http", "streamablehttp"):
            return "http"
        raise ValueError(f"type {value!r} is not supported (use 'stdio' or 'http'; SSE servers are not)")

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if not self.enabled and not self.command and not self.url:
            return self  # `enabled = false` alone switches off a server declared in .mcp.json
        if bool(self.command) == bool(self.url):
            raise ValueError("set exactly one of 'command' (a stdio server) or 'url' (an HTTP server)")
        kind = "stdio" if self.command else "http"
        if self.type is not None and self.type != kind:
            raise ValueError(
                f"type is {self.type!r} but the server has a {'command' if self.command else 'url'}"
            )
        if self.url and not re.match(r"^https?://", self.url):
            raise ValueError(f"url {self.url!r} must start with http:// or https://")
        return self

    @property
    def transport(self) -> str:
        return "stdio" if self.command else "http"

    def describe(self) -> str:
        """The command line or URL, for listings (headers and env values left out)."""
        if self.command:
            return " ".join([self.command, *self.args])
        return str(self.url or "(disabled)")


def check_server_name(name: str) -> str:
    if not SERVER_NAME.match(name):
        raise ValueError(
            f"MCP server name {name!r} must be 1-48 characters of letters, digits, '_' or '-' "
            "(it becomes part of tool names)"
        )
    return name


def load_mcp_json(workspace: Path) -> dict[str, McpServerConfig]:
    """The servers of `<workspace>/.mcp.json` (none when the file is missing).

    A broken file is a `ConfigError` naming the file, the server and the key (with the line for
    JSON syntax errors), never a silently missing server.
    """
    path = workspace / MCP_CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("mcpServers", {}), dict):
        raise ConfigError(f'{path}: expected an object {{"mcpServers": {{NAME: {{...}}}}}}')
    servers: dict[str, McpServerConfig] = {}
    for name, raw in data.get("mcpServers", {}).items():
        where = f"{path}, mcpServers.{name}"
        try:
            check_server_name(name)
            servers[name] = McpServerConfig.model_validate(_from_claude_format(raw))
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(part) for part in first["loc"])
            line = _json_line(text, name, str(first["loc"][0]) if first["loc"] else None)
            at = f" (line {line})" if line else ""
            detail = first["msg"].removeprefix("Value error, ")
            raise ConfigError(f"{where}{'.' + key if key else ''}{at}: {detail}") from None
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return servers


def _from_claude_format(raw: Any) -> Any:
    """`.mcp.json` entries as they are written for Claude Code: `type: "streamable-http"` or `"sse"`."""
    if isinstance(raw, dict) and str(raw.get("type", "")).lower() == "sse":
        return {**raw, "type": "sse"}  # refused by the validator with a clear message
    return raw


def _json_line(text: str, server: str, key: str | None) -> int | None:
    """Best-effort line of `"key"` inside the server's entry (JSON parsers keep no positions)."""
    start = text.find(json.dumps(server))
    if start < 0:
        return None
    position = start
    if key is not None:
        found = text.find(json.dumps(key), start)
        if found >= 0:
            position = found
    return text.count("\n", 0, position) + 1
