"""Shared CLI pieces: the workspace option, the `--debug` switch, and turning errors into one
plain sentence with exit code 2 instead of a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

__all__ = [
    "DEBUG",
    "JSON_ERRORS",
    "WorkspaceOption",
    "error_hint",
    "fail",
    "handle_errors",
    "print_json_error",
    "user_error_message",
    "workspace_problem",
]

F = TypeVar("F", bound=Callable[..., Any])


def workspace_problem(path: Path) -> str | None:
    """The one sentence every command gives for a workspace it cannot use (None when it is fine).

    Commands never create a missing workspace: a mistyped `-w` must not leave folders behind."""
    path = path.expanduser()
    if not path.exists():
        return (
            f"The workspace {path} does not exist. Check -w/--workspace, "
            f"or create it with: openclaw-mini init {path}"
        )
    if not path.is_dir():
        return f"The workspace {path} is not a folder. Point -w/--workspace at the workspace folder."
    return None


def _check_workspace(value: Path) -> Path:
    problem = workspace_problem(value)
    if problem is not None:
        fail(problem)
    return value.expanduser()


WorkspaceOption = Annotated[
    Path,
    typer.Option(
        "--workspace",
        "-w",
        help="Workspace folder (AGENTS.md, skills/, memory/ ...); it must exist.",
        callback=_check_workspace,
    ),
]


class _Flag:
    enabled = False


DEBUG = _Flag()
"""`--debug` anywhere on the command line: show tracebacks."""
JSON_ERRORS = _Flag()
"""Set by `--json` (an eager option): errors go to stdout as `{"error": ...}` so scripts parse them."""


def print_json_error(message: str, **extra: Any) -> None:
    import json

    print(json.dumps({"error": message, "stop_reason": "error", **extra}, ensure_ascii=False, indent=2))


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one plain message to stderr (or a JSON object to stdout under `--json`) and exit."""
    if JSON_ERRORS.enabled:
        print_json_error(message)
    else:
        typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


def error_hint(exc: BaseException | None, *, retries: int, in_chat: bool) -> str:
    """The next step for a failed model call, appended to the error's own message."""
    from ..errors import ContextOverflowError, ModelError

    if isinstance(exc, ContextOverflowError):
        full = " The conversation no longer fits the context window:"
        if in_chat:
            return f"{full} /compact summarises it, /new starts fresh."
        return f"{full} use a new --session, or /compact it in chat."
    if isinstance(exc, ModelError) and exc.retryable:
        tries = f"after {retries} retr{'y' if retries == 1 else 'ies'}" if retries else "(retries are off)"
        return f" Gave up {tries}; the service may be busy or unreachable, try again in a minute."
    return ""


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
            if JSON_ERRORS.enabled:
                print_json_error(message)
            else:
                print(f"Error: {message}", file=sys.stderr)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]
