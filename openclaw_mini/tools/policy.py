"""The one place where tool access is decided: `ToolPolicy`, `SandboxConfig`, approval and `Sandbox`.

Every refusal the model can meet comes from here, so a reviewer reads one file to know what an
agent may do: which tools are offered (`ToolPolicy.filter`), whether a call may run
(`Sandbox.authorize`: policy, sandbox switches, then the `allow`/`ask`/`deny` approval rules and the
`approve=` callback), and which paths a file tool may touch (`Sandbox.resolve_path`).
"""

from __future__ import annotations

import errno
import fnmatch
import inspect
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError, PathEscapeError, ToolRefused
from . import safe_fs
from .base import Tool

__all__ = [
    "TOOL_GROUPS",
    "ApprovalCallback",
    "ApprovalMode",
    "ApprovalRequest",
    "Sandbox",
    "SandboxConfig",
    "ToolPolicy",
    "ToolRefused",
    "approval_mode",
    "entry_matches",
]

ApprovalMode = Literal["allow", "ask", "deny"]
"""Per tool or group: run without asking, ask the `approve=` callback first, or never run."""

TOOL_GROUPS: dict[str, tuple[str, ...]] = {
    "fs": ("read", "write", "edit", "ls", "grep"),
    "runtime": ("exec",),
    "memory": ("memory_search", "memory_get", "memory_write"),
    "sessions": ("sessions_spawn", "sessions_list", "sessions_history"),
    "state": ("state_publish", "state_get", "state_list", "state_delete"),
}
"""Named groups usable in a policy as `group:<name>`; a tool's own `group` attribute counts too."""

WRITE_TOOLS = frozenset({"write", "edit", "memory_write"})
EXEC_TOOLS = frozenset({"exec"})
PROTECTED_WRITE_DIRS = frozenset({".git", ".openclaw-mini"})
"""Folders file tools may read but never write: the runtime's own state (transcripts, namespace
token hashes, indexes) and git's (a hook or `core.fsmonitor` written there runs on the user's next
git command, which would get round `allow_exec=False`). Matched at any depth, case-insensitively."""


class ToolPolicy(BaseModel):
    """Allow/deny lists of tool names or `group:<name>`; deny wins. `allow=None` allows everything."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    allow: list[str] | None = None
    deny: list[str] = Field(default_factory=list)

    def narrowed(self, offered: set[str], requested: Iterable[str] | None) -> ToolPolicy:
        """The policy of a sub-agent: only tools the parent offers (already through its policy and
        sandbox), or the `requested` subset of them; never wider. The deny list carries over."""
        if requested is not None:
            unknown = sorted(set(requested) - offered)
            if unknown:
                raise ConfigError(
                    f"A sub-agent can only get tools this agent has; not available: {', '.join(unknown)}."
                )
        allowed = sorted(offered if requested is None else set(requested))
        return ToolPolicy(allow=allowed, deny=list(self.deny))

    def _matches(self, entries: Iterable[str], tool: Tool) -> bool:
        return any(entry_matches(entry, tool) for entry in entries)

    def permits(self, tool: Tool) -> bool:
        if self._matches(self.deny, tool):
            return False
        return self.allow is None or self._matches(self.allow, tool)

    def filter(self, tools: Iterable[Tool]) -> list[Tool]:
        """The tools to offer the model: denied ones are not offered at all."""
        return [item for item in tools if self.permits(item)]


def entry_matches(entry: str, tool: Tool) -> bool:
    """One policy or approval entry against a tool: `*`, a name, a glob such as `mcp__git__*`
    (a whole MCP server), or `group:<name>`."""
    # Both sides lower-cased: a deny entry must not fail open for a tool named "DeleteRepo".
    name, tool_group = tool.name.lower(), tool.group.lower()
    entry = entry.strip().lower()
    if entry in ("*", name):
        return True
    if entry.startswith("group:"):
        group = entry.removeprefix("group:")
        return tool_group == group or name in TOOL_GROUPS.get(group, ())
    return any(char in entry for char in "*?[") and fnmatch.fnmatchcase(name, entry)


def approval_mode(rules: Mapping[str, ApprovalMode], tool: Tool) -> ApprovalMode:
    """The rule for a tool: its exact name wins over a glob, a glob over a group, a group over `*`;
    with no rule a tool is allowed. Between two rules of the same rank the stricter one wins."""
    ranked: list[tuple[int, int, ApprovalMode]] = []
    strictness = {"allow": 0, "ask": 1, "deny": 2}
    for entry, mode in rules.items():
        if not entry_matches(entry, tool):
            continue
        key = entry.strip().lower()
        rank = 0 if key == "*" else 1 if key.startswith("group:") else 2 if "*" in key or "?" in key else 3
        ranked.append((rank, strictness[mode], mode))
    return max(ranked)[2] if ranked else "allow"


@dataclass(frozen=True)
class ApprovalRequest:
    """A tool call waiting for a yes or no: what the `approve=` callback receives."""

    tool: str
    arguments: dict[str, Any]
    session_key: str
    workspace: Path
    tool_use_id: str = ""
    group: str = "custom"


ApprovalCallback = Callable[[ApprovalRequest], Awaitable[bool] | bool]
"""`approve=` on `Agent`: return True to run the call, False to refuse it (the model is told)."""


class SandboxConfig(BaseModel):
    """What file and process tools may do. Defaults: confined to the workspace, writes on, exec off."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    """Confine every path to the workspace (symlinks resolved)."""
    allow_exec: bool = False
    """Let the `exec` tool run shell commands."""
    allow_write: bool = True
    """Let `write`/`edit` change files."""
    extra_read_roots: tuple[Path, ...] = ()
    """Folders readable besides the workspace (bundled skills are added automatically)."""
    exec_env_passthrough: tuple[str, ...] = ()
    """Environment variables `exec` commands may see besides the allow-list (PATH, HOME, LANG, LC_*,
    TERM, TZ, USER, ...), by exact name. Everything else in the agent's environment stays hidden."""
    exec_isolation: Literal["auto", "require", "off"] = "auto"
    """Run `exec` commands in their own user + PID namespace with a fresh /proc, so they cannot see
    the agent process and every process they start ends with them. `auto` falls back (with a
    warning) where namespaces are unavailable; `require` refuses to run commands then."""


class Sandbox:
    """Applies a `SandboxConfig` to one workspace."""

    def __init__(
        self,
        workspace: Path,
        config: SandboxConfig | None = None,
        read_roots: Iterable[Path] = (),
        *,
        approval: Mapping[str, ApprovalMode] | None = None,
        approve: ApprovalCallback | None = None,
    ) -> None:
        self.workspace = Path(workspace).resolve()
        self.config = config or SandboxConfig()
        roots = [*self.config.extra_read_roots, *read_roots]
        self.read_roots = tuple(Path(root).resolve() for root in roots)
        self.approval: dict[str, ApprovalMode] = dict(approval or {})
        self.approve = approve

    async def authorize(
        self,
        tool: Tool,
        policy: ToolPolicy,
        arguments: dict[str, Any],
        session_key: str,
        tool_use_id: str = "",
    ) -> None:
        """Everything a call must pass before it runs: `check_call`, then the approval rule.

        `ask` goes to the `approve=` callback; with none (a non-interactive run) the call is
        refused with a message that says how to allow it. A refusal is a `ToolRefused`, which the
        loop turns into an error result for the model.
        """
        self.check_call(tool, policy)
        mode = approval_mode(self.approval, tool)
        if mode == "allow":
            return
        if mode == "deny":
            raise ToolRefused(f"The tool '{tool.name}' is denied by this agent's approval rules.")
        if self.approve is None:
            raise ToolRefused(
                f"The tool '{tool.name}' needs approval and nobody can approve it in this run. "
                f'To allow it without asking, set `"{tool.name}" = "allow"` under [approval] in '
                "openclaw-mini.toml (or pass approve= to Agent)."
            )
        request = ApprovalRequest(
            tool=tool.name,
            arguments=dict(arguments),
            session_key=session_key,
            workspace=self.workspace,
            tool_use_id=tool_use_id,
            group=tool.group,
        )
        answer = self.approve(request)
        if inspect.isawaitable(answer):
            answer = await answer
        if not answer:
            raise ToolRefused(
                f"The user did not approve this call of '{tool.name}'; do not retry it unchanged. "
                "Ask the user what they want instead."
            )

    def check_call(self, tool: Tool, policy: ToolPolicy) -> None:
        """Refuse a call the policy or sandbox does not allow (also catches tools never offered)."""
        if not policy.permits(tool):
            raise ToolRefused(f"The tool '{tool.name}' is not allowed by this agent's tool policy.")
        if tool.name in EXEC_TOOLS and not self.config.allow_exec:
            raise ToolRefused(
                "Running commands is turned off for this agent "
                "(enable it with SandboxConfig(allow_exec=True))."
            )
        if tool.name in WRITE_TOOLS and not self.config.allow_write:
            raise ToolRefused(
                "Writing files is turned off for this agent (SandboxConfig(allow_write=False))."
            )

    def offered(self, tools: Iterable[Tool], policy: ToolPolicy) -> list[Tool]:
        """The tools to show the model: what the policy permits and the sandbox would let run."""
        offered = []
        for item in policy.filter(tools):
            if approval_mode(self.approval, item) == "deny":
                continue
            if item.name in EXEC_TOOLS and not self.config.allow_exec:
                continue
            if item.name in WRITE_TOOLS and not self.config.allow_write:
                continue
            offered.append(item)
        return offered

    def resolve_path(self, path: str | os.PathLike[str], *, write: bool = False) -> Path:
        """Resolve a model-given path against the workspace and confine it.

        Relative paths are taken from the workspace, never from the process's current directory.
        Symlinks are resolved before the check, so a link pointing outside is refused too. Writes
        into `PROTECTED_WRITE_DIRS` are refused. For opening, use `locate`: a path checked here and
        opened by name later can be swapped for a symlink in between.
        """
        with self.locate(path, write=write, missing_ok=True) as location:
            return location.path

    def locate(
        self,
        path: str | os.PathLike[str],
        *,
        write: bool = False,
        create_parents: bool = False,
        missing_ok: bool = False,
    ) -> safe_fs.Location:
        """Walk a model-given path inside the sandbox, race-free (see `safe_fs`); close the result.

        The returned `Location` holds the open parent directory: open, stat or replace the file
        through it and a concurrent symlink swap cannot redirect the access outside.
        """
        raw = os.fspath(path)
        if not raw or "\x00" in raw:
            raise ToolRefused("Path is empty or contains a NUL byte.")
        shown = raw if len(raw) < 200 else raw[:200] + "..."
        candidate = Path(os.path.expanduser(raw)) if raw.startswith("~") else Path(raw)
        if not candidate.is_absolute():
            candidate = self.workspace / candidate
        if not self.config.enabled:
            roots: tuple[Path, ...] = (Path(candidate.anchor),)
        else:
            roots = (self.workspace,) if write else (self.workspace, *self.read_roots)
        forbidden = PROTECTED_WRITE_DIRS if write and self.config.enabled else frozenset()
        target = candidate
        if safe_fs.root_of(candidate, roots) is None:
            # Outside by name; maybe inside through a symlink on the way (`/tmp/link-to-ws/x`).
            target = Path(os.path.realpath(candidate))
        try:
            return safe_fs.resolve(
                target, roots, create_parents=create_parents, forbidden=forbidden, missing_ok=missing_ok
            )
        except PathEscapeError as exc:
            if "enters" in str(exc):
                raise ToolRefused(
                    f"Path '{shown}' is inside {' or '.join(sorted(PROTECTED_WRITE_DIRS))} (runtime state or "
                    "git internals); file tools may read there but not write."
                ) from None
            via = exc.via_symlink or target != candidate or _has_symlink(candidate)
            reason = "resolves (through a symlink) to" if via else "is"
            raise ToolRefused(
                f"Path '{shown}' {reason} outside the workspace {self.workspace}; "
                "file tools only work inside it."
            ) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ToolRefused(f"Path '{shown}' is a symlink loop; it cannot be opened.") from None
            if isinstance(exc, NotADirectoryError):
                raise ToolRefused(f"Path '{shown}' goes through a file as if it were a folder.") from None
            if isinstance(exc, FileNotFoundError):
                raise FileNotFoundError(errno.ENOENT, f"Folder not found on the way to {shown}") from None
            raise

    def relative(self, path: Path) -> str:
        """A path as shown to the model: relative to the workspace when inside it."""
        try:
            return str(path.relative_to(self.workspace)) or "."
        except ValueError:
            return str(path)


def _protected(relative: Path) -> bool:
    return any(part.lower() in PROTECTED_WRITE_DIRS for part in relative.parts)


def _has_symlink(path: Path) -> bool:
    current = path
    while current != current.parent:
        if current.is_symlink():
            return True
        current = current.parent
    return False
