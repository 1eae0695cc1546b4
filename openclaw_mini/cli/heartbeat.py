"""`openclaw-mini heartbeat`: status, one tick now, or run in the foreground.

`status` needs no API key (it reads HEARTBEAT.md and the state file); `once` and `run` build an
`Agent` and go through its heartbeat methods, so they behave exactly as an embedded agent would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from openclaw_mini.agent import Agent
    from openclaw_mini.heartbeat import HeartbeatConfig, HeartbeatOutcome, HeartbeatRequest, HeartbeatStatus

__all__ = ["app"]

T = TypeVar("T")

app = typer.Typer(help="The heartbeat: status, one tick now, or run in the foreground.", no_args_is_help=True)

WorkspaceOption = typer.Option(Path("."), "--workspace", "-w", help="Workspace folder (default: here).")
EveryOption = typer.Option(None, "--every", help="Interval: 30m, 1h30m, 45s; 0 turns it off (default 30m).")
HoursOption = typer.Option(
    None, "--active-hours", help="Daily window HH:MM-HH:MM (e.g. 08:00-22:00), or 'always'."
)
TimezoneOption = typer.Option(
    None, "--timezone", help="IANA timezone for the window and cron tasks, or 'local'."
)


def escape(text: str) -> str:
    """Rich-escape user text (task names, replies) so `[x]` is shown, not read as markup."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(code=2)


def _build_config(every: str | None, active_hours: str | None, timezone: str | None) -> HeartbeatConfig:
    from pydantic import ValidationError

    from openclaw_mini.heartbeat import ActiveHours, HeartbeatConfig

    values: dict[str, Any] = {}
    if every is not None:
        values["every"] = every
    if timezone is not None:
        values["timezone"] = timezone
    if active_hours is not None:
        text = active_hours.strip().lower()
        if text in ("always", "none", "off", "24h"):
            values["active_hours"] = None
        else:
            start, sep, end = active_hours.partition("-")
            if not sep:
                raise _fail(f"--active-hours {active_hours!r} must look like 08:00-22:00 (or 'always').")
            values["active_hours"] = {"start": start.strip(), "end": end.strip()}
    try:
        if isinstance(values.get("active_hours"), dict):
            values["active_hours"] = ActiveHours(**values["active_hours"])
        return HeartbeatConfig(**values)
    except (ValidationError, ValueError) as exc:
        raise _fail(_first_error(exc)) from None


def _first_error(exc: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        message = str(error["msg"]).removeprefix("Value error, ")
        return message if message.endswith(".") else message + "."
    text = str(exc).strip() or type(exc).__name__
    return text if text.endswith(".") else text + "."


def _when(value: datetime | None, now: datetime) -> str:
    """`value` in the zone of `now` (the heartbeat's zone) plus a relative hint."""
    if value is None:
        return "-"
    local = value.astimezone(now.tzinfo)
    seconds = (value - now).total_seconds()
    if abs(seconds) < 1:
        rel = "now"
    elif seconds > 0:
        rel = f"in {_span(seconds)}"
    else:
        rel = f"{_span(-seconds)} ago"
    return f"{local:%Y-%m-%d %H:%M} ({rel})"


def _span(seconds: float) -> str:
    from openclaw_mini.heartbeat import format_duration

    if seconds >= 3600:
        seconds = round(seconds / 60) * 60
    return format_duration(seconds)


def render_status(console: Console, status: HeartbeatStatus) -> None:
    from rich.table import Table

    now = status.now
    state = "on" if status.enabled else "off"
    console.print(
        f"[bold]Heartbeat[/bold]  every {status.every} ({state}), timezone {escape(status.timezone)}"
    )
    if status.active_hours is None:
        console.print("Active hours  always")
    else:
        inside = "inside the window now" if status.in_active_hours else "outside the window now"
        console.print(f"Active hours  {escape(status.active_hours)} ({inside})")
    console.print(f"Next run      {_when(status.next_run_at, now)}")
    if status.cron_next_at is not None:
        console.print(f"Next cron     {_when(status.cron_next_at, now)}")
    session = "fresh per run" if status.isolated_session else status.session
    console.print(f"Session       {session}")
    verdict = "[green]would run[/green]" if status.would_run else "[yellow]would skip[/yellow]"
    console.print(f"Right now     {verdict}: {escape(status.would_reason)}", highlight=False)
    if not status.file_exists:
        console.print(f"HEARTBEAT.md  missing at {status.heartbeat_file} (the heartbeat still runs)")
    if status.tasks:
        table = Table(title="Tasks", title_justify="left")
        for column in ("line", "task", "schedule", "due", "next due", "last run"):
            table.add_column(column)
        for task in status.tasks:
            next_due = "every heartbeat" if task.next_due_at is None else _when(task.next_due_at, now)
            table.add_row(
                str(task.line),
                escape(task.name),
                task.schedule,
                "yes" if task.due else "no",
                next_due,
                _when(task.last_run, now),
            )
        console.print(table)
    elif status.file_exists:
        console.print("Tasks         none open")
    if status.done_tasks:
        console.print(f"Done          {len(status.done_tasks)} task(s) checked off")
    for problem in status.problems:
        console.print(f"[red]Problem[/red]       {escape(problem)}", highlight=False)
    last = f"Last run      {_when(status.last_run_at, now)}  {status.last_outcome or ''}".rstrip()
    console.print(escape(last), highlight=False)
    if status.last_delivery_at is not None:
        text = (status.last_delivery_text or "").replace("\n", " ")
        preview = text if len(text) <= 100 else text[:99] + "…"
        console.print(
            escape(f"Last delivery {_when(status.last_delivery_at, now)}: {preview}"), highlight=False
        )
    else:
        console.print("Last delivery -")


def _status_json(status: HeartbeatStatus) -> str:
    return json.dumps(asdict(status), default=str, indent=2)


@app.command()
def status(
    workspace: Path = WorkspaceOption,
    every: str | None = EveryOption,
    active_hours: str | None = HoursOption,
    timezone: str | None = TimezoneOption,
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
) -> None:
    """Next run, active window, tasks and when each is due, last delivery, and what a tick would do now."""
    from openclaw_mini.heartbeat import HeartbeatRunner

    config, console = _prepare(workspace, every, active_hours, timezone)
    runner = HeartbeatRunner(workspace.absolute(), _with_file_config(workspace, config))
    result = runner.status()
    if as_json:
        typer.echo(_status_json(result))
        return
    render_status(console, result)


def _print_outcome(console: Console, outcome: HeartbeatOutcome) -> None:
    stamp = datetime.now().strftime("%H:%M:%S")
    if outcome.delivered:
        return  # the delivery itself was printed by deliver()
    color = {"ran": "green", "skipped": "yellow", "busy": "yellow", "error": "red"}[outcome.status]
    console.print(
        f"[dim]{stamp}[/dim] [{color}]{outcome.status}[/{color}] {escape(outcome.reason)} "
        f"[dim](reason {escape(outcome.request_reason)}, {outcome.tokens} tokens, "
        f"{outcome.duration_ms:.0f} ms)[/dim]",
        highlight=False,
    )


def _print_delivery(console: Console, text: str, request: HeartbeatRequest) -> None:
    from rich.panel import Panel
    from rich.text import Text

    stamp = datetime.now().strftime("%H:%M:%S")
    title = Text(f"heartbeat {stamp} ({request.reason})")
    console.print(Panel(Text(text), title=title, title_align="left"))


class _CliLogHandler(logging.Handler):
    """Turns the library's log records into plain lines: tick outcomes (in `run`), then warnings.

    Installed on the `openclaw_mini` logger for the command's duration, so Python's last-resort
    handler never dumps a traceback on the user; the full error stays in the outcome's reason.
    """

    def __init__(self, console: Console, *, show_outcomes: bool) -> None:
        super().__init__(logging.INFO)
        self.console = console
        self.show_outcomes = show_outcomes

    def emit(self, record: logging.LogRecord) -> None:
        outcome = getattr(record, "heartbeat_outcome", None)
        if outcome is not None:
            if self.show_outcomes:
                _print_outcome(self.console, outcome)
            return
        if record.levelno >= logging.WARNING:
            self.console.print(f"[yellow]warning[/yellow] {escape(record.getMessage())}", highlight=False)


@contextlib.contextmanager
def _library_logs(console: Console, *, show_outcomes: bool) -> Iterator[None]:
    package = logging.getLogger("openclaw_mini")
    handler = _CliLogHandler(console, show_outcomes=show_outcomes)
    previous = package.level
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(previous)


def _with_file_config(workspace: Path, flags: HeartbeatConfig) -> HeartbeatConfig:
    """`[heartbeat]` of the config files, with the flags given on top."""
    from .config import command_settings, merge_heartbeat

    try:
        return merge_heartbeat(command_settings(workspace).heartbeat, flags)
    except Exception as exc:
        raise _fail(_first_error(exc)) from None


def _make_agent(workspace: Path, config: HeartbeatConfig) -> Any:
    try:
        from .config import build_agent

        return build_agent(workspace, heartbeat=config)  # the config files apply; flags win
    except Exception as exc:
        raise _fail(f"cannot start the agent: {_first_error(exc)}") from None


def _with_agent(
    workspace: Path,
    config: HeartbeatConfig,
    console: Console,
    body: Callable[[Agent], Awaitable[T]],
) -> Callable[[], Coroutine[Any, Any, T]]:
    """A coroutine function running `body` with an agent whose heartbeat delivers to `console`."""
    root = workspace.absolute()

    async def main() -> T:
        agent = _make_agent(root, config)
        try:
            agent.start_heartbeat(deliver=lambda text, request: _print_delivery(console, text, request))
            return await body(agent)
        finally:
            await agent.stop_heartbeat()
            await agent.aclose()

    return main


def _prepare(
    workspace: Path, every: str | None, active_hours: str | None, timezone: str | None
) -> tuple[HeartbeatConfig, Console]:
    from rich.console import Console

    if not workspace.is_dir():
        raise _fail(f"workspace {workspace} is not a folder.")
    return _build_config(every, active_hours, timezone), Console()


@app.command()
def once(
    workspace: Path = WorkspaceOption,
    every: str | None = EveryOption,
    active_hours: str | None = HoursOption,
    timezone: str | None = TimezoneOption,
    reason: str = typer.Option(
        "manual", "--reason", help="Wake reason to report (exec/cron bypass file checks)."
    ),
) -> None:
    """Run one heartbeat tick now (with the usual checks) and print what happened."""
    config, console = _prepare(workspace, every, active_hours, timezone)

    async def tick(agent: Agent) -> HeartbeatOutcome:
        return await agent.run_heartbeat_once(reason)

    try:
        with _library_logs(console, show_outcomes=False):
            outcome = asyncio.run(_with_agent(workspace, config, console, tick)())
    except typer.Exit:
        raise
    except Exception as exc:
        raise _fail(_first_error(exc)) from None
    if outcome.status == "error":
        raise _fail(f"the heartbeat run failed: {outcome.reason}")
    if not outcome.delivered:
        _print_outcome(console, outcome)


async def _until_stop_signal() -> None:
    """Wait for Ctrl-C (SIGINT) or SIGTERM, then return so the heartbeat shuts down cleanly.

    The handlers are installed on the loop explicitly: a process started as a background job
    (`cmd &` in a script, some test runners) inherits SIGINT as *ignored*, and then neither
    Python nor asyncio.run ever reacts to Ctrl-C, so the heartbeat kept ticking after it.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
            continue
        installed.append(signum)
    try:
        await stop.wait()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


@app.command()
def run(
    workspace: Path = WorkspaceOption,
    every: str | None = EveryOption,
    active_hours: str | None = HoursOption,
    timezone: str | None = TimezoneOption,
) -> None:
    """Run the heartbeat in the foreground, printing deliveries and skips; Ctrl-C (or SIGTERM) stops."""
    config, console = _prepare(workspace, every, active_hours, timezone)

    async def forever(agent: Agent) -> None:
        current = agent.heartbeat_status()
        next_run = _when(current.next_run_at, current.now)
        console.print(
            f"Heartbeat running every {current.every}; next run {next_run}. Ctrl-C stops.", highlight=False
        )
        if not current.would_run:
            console.print(
                f"[yellow]A tick now would skip:[/yellow] {escape(current.would_reason)}", highlight=False
            )
        await _until_stop_signal()

    try:
        with _library_logs(console, show_outcomes=True):
            asyncio.run(_with_agent(workspace, config, console, forever)())
        console.print("Heartbeat stopped.")
    except KeyboardInterrupt:
        console.print("Heartbeat stopped.")
    except typer.Exit:
        raise
    except Exception as exc:
        raise _fail(_first_error(exc)) from None
