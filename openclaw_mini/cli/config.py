"""`openclaw-mini config show`, and building a command's agent from the config files.

Every command that runs the agent (chat, run, heartbeat) goes through `build_agent`, so a setting
such as `[sandbox] allow_exec = true` in `openclaw-mini.toml` applies to all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .common import WorkspaceOption, handle_errors

if TYPE_CHECKING:
    from ..agent import Agent
    from ..heartbeat import HeartbeatConfig
    from ..settings import Settings
    from ..tools.policy import ApprovalCallback

__all__ = ["app", "build_agent", "command_settings", "configured_agent_id", "merge_heartbeat"]

app = typer.Typer(
    help="Show the effective configuration and where each value comes from.", no_args_is_help=True
)


def command_settings(workspace: Path, **overrides: Any) -> Settings:
    """The settings for a CLI command on `workspace` (flags given as `overrides`)."""
    from ..settings import load_settings

    return load_settings(workspace, overrides)


def configured_agent_id(workspace: Path) -> str:
    """The agent id the config files (or $OPENCLAW_MINI_AGENT_ID) give, for commands on sessions."""
    return command_settings(workspace).config.agent_id


def merge_heartbeat(base: HeartbeatConfig | None, flags: HeartbeatConfig) -> HeartbeatConfig:
    """The file's `[heartbeat]` with the values given on the command line on top."""
    if base is None:
        return flags
    return base.model_copy(update={name: getattr(flags, name) for name in flags.model_fields_set})


def build_agent(
    workspace: Path,
    *,
    model: str | None = None,
    agent_id: str | None = None,
    approve: ApprovalCallback | None = None,
    heartbeat: HeartbeatConfig | None = None,
    enable_heartbeat: bool | None = None,
) -> Agent:
    """The agent a command runs: config files + env + flags (flags win)."""
    from ..agent import Agent

    settings = command_settings(workspace, model=model, agent_id=agent_id)
    kwargs = settings.agent_kwargs()
    if enable_heartbeat is not None:
        kwargs["enable_heartbeat"] = enable_heartbeat
    beat = settings.heartbeat if heartbeat is None else merge_heartbeat(settings.heartbeat, heartbeat)
    return Agent(**{**kwargs, "heartbeat": beat}, approve=approve)


@app.command("show")
@handle_errors
def show(
    workspace: WorkspaceOption = Path("."),
    changed: Annotated[bool, typer.Option("--changed", help="Only values that are not defaults.")] = False,
) -> None:
    """Print every setting, its effective value and where it came from (flag, env, file:line, default)."""
    from ..settings import CONFIG_FILE, user_config_file

    settings = command_settings(workspace)
    files = [
        f"workspace file: {Path(settings.config.workspace_dir) / CONFIG_FILE}",
        f"user file: {user_config_file()}",
    ]
    for line in files:
        path = Path(line.split(": ", 1)[1])
        typer.echo(f"# {line}{'' if path.is_file() else ' (not present)'}")
    rows = [row for row in settings.rows() if not changed or row[2] != "default"]
    width = max((len(key) + len(value) for key, value, _ in rows), default=0) + 3
    for key, value, origin in rows:
        typer.echo(f"{key} = {value}".ljust(width) + f"  # {origin}")
