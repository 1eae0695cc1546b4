"""The `openclaw-mini` command. Heavy modules (the agent, the anthropic SDK) load inside commands,
so `--help` and `init` start fast."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from . import config as config_cli
from . import fleet as fleet_cli
from . import heartbeat as heartbeat_cli
from . import mcp as mcp_cli
from . import memory as memory_cli
from . import sessions as sessions_cli
from . import skills as skills_cli
from . import state as state_cli
from .common import DEBUG, JSON_ERRORS, WorkspaceOption, handle_errors

__all__ = ["app", "main"]


class _DebugAnywhere(TyperGroup):
    """Accepts `--debug` anywhere before `--` (`openclaw-mini run --debug hi` too), not only first."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if ctx.parent is None:
            end = args.index("--") if "--" in args else len(args)
            DEBUG.enabled = "--debug" in args[:end]
            JSON_ERRORS.enabled = False  # set again by a command's --json (one process, many CliRunner calls)
            args = [arg for arg in args[:end] if arg != "--debug"] + args[end:]
        return super().parse_args(ctx, args)


app = typer.Typer(
    name="openclaw-mini",
    cls=_DebugAnywhere,
    help="A minimal agent runtime with a proactive heartbeat. Start with: openclaw-mini chat",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(skills_cli.app, name="skills")
app.add_typer(memory_cli.app, name="memory")
app.add_typer(heartbeat_cli.app, name="heartbeat")
app.add_typer(sessions_cli.app, name="sessions")
app.add_typer(state_cli.app, name="state")
app.add_typer(config_cli.app, name="config")
app.add_typer(mcp_cli.app, name="mcp")
app.add_typer(fleet_cli.app, name="fleet")


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"openclaw-mini {version('openclaw-mini')}")
        except PackageNotFoundError:  # pragma: no cover - run from a source tree without install
            typer.echo("openclaw-mini (not installed)")
        raise typer.Exit()


def _json_errors(value: bool) -> bool:
    JSON_ERRORS.enabled = value
    return value


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks for errors (also accepted after the command).")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", help="Show the version and exit.", callback=_show_version, is_eager=True),
    ] = False,
) -> None:
    if debug:  # normally taken out by _DebugAnywhere already
        DEBUG.enabled = True


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
    resume: Annotated[
        bool, typer.Option("--continue", "-c", help="Continue the most recent session.")
    ] = False,
    heartbeat: Annotated[
        str | None,
        typer.Option(
            "--heartbeat",
            metavar="EVERY",
            help="Run the heartbeat every EVERY (e.g. 30m) while you chat; its messages show between turns.",
        ),
    ] = None,
) -> None:
    """Chat with the agent in this terminal (or one message per line from a pipe)."""
    from .chat import run_chat

    run_chat(
        workspace=workspace,
        session=session,
        model=model,
        agent_id=agent_id,
        resume=resume,
        heartbeat=heartbeat,
    )


@app.command()
@handle_errors
def run(
    message: Annotated[
        str | None,
        typer.Argument(help="The message; '-' reads it from stdin. Piped stdin is appended to a message."),
    ] = None,
    workspace: WorkspaceOption = Path("."),
    session: SessionOption = None,
    model: ModelOption = None,
    agent_id: AgentIdOption = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the RunResult (or the error) as JSON.", callback=_json_errors, is_eager=True
        ),
    ] = False,
) -> None:
    """Send one message, print the reply, exit (non-zero on failure).

    echo text | openclaw-mini run, or: git diff | openclaw-mini run 'review this'"""
    from .chat import read_run_message, run_once

    code = run_once(
        read_run_message(message),
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
def doctor(
    workspace: Annotated[
        Path, typer.Option("--workspace", "-w", help="Workspace folder (AGENTS.md, skills/, memory/ ...).")
    ] = Path("."),
) -> None:
    """Check the key and base URL (one small real request), workspace files, skills and heartbeat."""
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
