"""The `openclaw-mini` command. Heavy modules (the agent, the anthropic SDK) load inside commands,
so `--help` and `init` start fast."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from . import fleet as fleet_cli
from . import heartbeat as heartbeat_cli
from . import memory as memory_cli
from . import sessions as sessions_cli
from . import skills as skills_cli
from . import state as state_cli
from .common import DEBUG, WorkspaceOption, handle_errors

__all__ = ["app", "main"]

app = typer.Typer(
    name="openclaw-mini",
    help="A minimal agent runtime with a proactive heartbeat. Start with: openclaw-mini chat",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
app.add_typer(skills_cli.app, name="skills")
app.add_typer(memory_cli.app, name="memory")
app.add_typer(heartbeat_cli.app, name="heartbeat")
app.add_typer(sessions_cli.app, name="sessions")
app.add_typer(state_cli.app, name="state")
app.add_typer(fleet_cli.app, name="fleet")


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    DEBUG.enabled = debug


SessionOption = Annotated[
    str | None,
    typer.Option("--session", "-s", help="Session id (default: a new one for chat, 'main' for run)."),
]
ModelOption = Annotated[str | None, typer.Option("--model", "-m", help="Model id, e.g. claude-sonnet-4-5.")]
AgentIdOption = Annotated[
    str | None, typer.Option("--agent-id", help="Agent id (default: $OPENCLAW_MINI_AGENT_ID or 'main').")
]


@app.command()
@handle_errors
def chat(
    workspace: WorkspaceOption = Path("."),
    session: SessionOption = None,
    model: ModelOption = None,
    agent_id: AgentIdOption = None,
) -> None:
    """Chat with the agent in this terminal (or one message per line from a pipe)."""
    from .chat import run_chat

    run_chat(workspace=workspace, session=session, model=model, agent_id=agent_id)


@app.command()
@handle_errors
def run(
    message: Annotated[str, typer.Argument(help="The message to send.")],
    workspace: WorkspaceOption = Path("."),
    session: SessionOption = None,
    model: ModelOption = None,
    agent_id: AgentIdOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the RunResult as JSON.")] = False,
) -> None:
    """Send one message, print the reply, exit (non-zero on failure)."""
    from .chat import run_once

    code = run_once(
        message,
        workspace=workspace,
        session=session or "main",
        model=model,
        agent_id=agent_id,
        as_json=as_json,
    )
    raise typer.Exit(code)


@app.command()
@handle_errors
def init(
    directory: Annotated[Path, typer.Argument(help="Workspace folder to set up.")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Write the workspace templates (AGENTS.md, SOUL.md, HEARTBEAT.md, ...) into DIR."""
    from .workspace import init_workspace

    init_workspace(directory, force=force)


@app.command()
@handle_errors
def doctor(workspace: WorkspaceOption = Path(".")) -> None:
    """Check the API key, base URL, workspace files, skills and heartbeat config."""
    from .doctor import run_doctor

    raise typer.Exit(run_doctor(workspace))


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - interactive
        sys.exit(130)
    except BrokenPipeError:  # `openclaw-mini ... | head`: the reader left; exit quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)


if __name__ == "__main__":  # pragma: no cover
    main()
