"""Shared CLI pieces: the workspace option, the `--debug` switch, and turning errors into one
plain sentence with exit code 2 instead of a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

__all__ = ["DEBUG", "WorkspaceOption", "fail", "handle_errors", "user_error_message"]

F = TypeVar("F", bound=Callable[..., Any])

WorkspaceOption = Annotated[
    Path, typer.Option("--workspace", "-w", help="Workspace folder (AGENTS.md, skills/, memory/ ...).")
]


class _Debug:
    enabled = False


DEBUG = _Debug()


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one plain message to stderr and exit."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


def user_error_message(exc: BaseException) -> str | None:
    """A plain sentence for errors users cause or can fix; None for bugs (show the traceback)."""
    from ..config import ConfigError
    from ..llm import ModelError
    from ..session import SessionKeyError

    if isinstance(exc, ModelError):
        return str(exc)
    if isinstance(exc, (ConfigError, SessionKeyError)):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return f"File not found: {exc.filename}"
    if isinstance(exc, PermissionError):
        return f"Permission denied: {exc.filename}"
    if isinstance(exc, (NotADirectoryError, IsADirectoryError)):
        return f"{exc.strerror}: {exc.filename}"
    if isinstance(exc, ValueError) and type(exc).__module__.startswith("openclaw_mini"):
        return str(exc)
    return None


def handle_errors(function: F) -> F:
    """Run a command; known errors become one sentence and exit 2 (`--debug` shows the traceback)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit, BrokenPipeError):
            raise
        except Exception as exc:
            if DEBUG.enabled:
                raise
            message = user_error_message(exc)
            if message is None:
                message = f"unexpected {type(exc).__name__}: {exc} (run with --debug for details)"
            print(f"Error: {message}", file=sys.stderr)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]
