"""`openclaw-mini doctor`: one table that says whether this setup can work, and what to fix if not.

Each check reuses the code the agent itself runs (the bootstrap loader, the skill loader, the
HEARTBEAT.md parser), so doctor cannot disagree with what a real run would do. It reads only: it
never creates, moves or rewrites a file. The API key is never shown, at most its last 4 characters.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ..heartbeat import HeartbeatTask

__all__ = [
    "DEFAULT_BASE_URL",
    "Check",
    "check_api_access",
    "check_api_key",
    "check_base_url",
    "check_bootstrap",
    "check_config",
    "check_heartbeat",
    "check_mcp",
    "check_skills",
    "check_workspace",
    "collect_checks",
    "run_doctor",
]

DEFAULT_BASE_URL = "https://api.anthropic.com"
"""What the anthropic SDK talks to when ANTHROPIC_BASE_URL is unset."""
PROBE_TIMEOUT_SECONDS = 3.0
_MAX_DETAIL_LINES = 12

Status = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    """One row of the doctor table."""

    name: str
    status: Status
    detail: str


def _listing(header: str, lines: list[str]) -> str:
    """`header` followed by at most a dozen indented lines (and how many more there were)."""
    shown = lines[:_MAX_DETAIL_LINES]
    more = len(lines) - len(shown)
    body = [header, *(f"  {line}" for line in shown)]
    if more:
        body.append(f"  ... and {more} more")
    return "\n".join(body)


# ----------------------------------------------------------------------------------- environment


def check_api_key(env: Mapping[str, str]) -> Check:
    """ANTHROPIC_API_KEY is set; shows at most its last 4 characters, and only for a long key."""
    raw = env.get("ANTHROPIC_API_KEY", "")
    key = raw.strip()
    if not key:
        return Check(
            "API key",
            "fail",
            "ANTHROPIC_API_KEY is not set. Export it (export ANTHROPIC_API_KEY=...) and run doctor again.",
        )
    shown = f"ends in ...{key[-4:]}" if len(key) >= 20 else f"{len(key)} characters"
    if raw != key:
        return Check(
            "API key",
            "warn",
            f"ANTHROPIC_API_KEY is set ({shown}) but has spaces or a newline around it; remove them.",
        )
    return Check("API key", "pass", f"ANTHROPIC_API_KEY is set ({shown}).")


def check_base_url(env: Mapping[str, str], *, timeout: float = PROBE_TIMEOUT_SECONDS) -> Check:
    """The API base URL answers HTTP at all (any status counts: only reachability is tested)."""
    import time
    from urllib.parse import urlsplit

    configured = env.get("ANTHROPIC_BASE_URL", "").strip()
    url = configured or DEFAULT_BASE_URL
    source = "ANTHROPIC_BASE_URL" if configured else "default; ANTHROPIC_BASE_URL is unset"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return Check("Base URL", "fail", f"ANTHROPIC_BASE_URL={url!r} is not a valid URL ({exc}).")
    if "://" not in url:
        return Check(
            "Base URL",
            "fail",
            f"ANTHROPIC_BASE_URL={url!r} has no http:// or https:// in front; write it in full "
            f"(e.g. http://{url}).",
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Check(
            "Base URL",
            "fail",
            f"ANTHROPIC_BASE_URL={url!r} is not an http(s) URL; set it to one "
            f"(e.g. {DEFAULT_BASE_URL}) or unset it.",
        )
    del port

    import httpx2

    started = time.perf_counter()
    try:
        with httpx2.Client(timeout=timeout, follow_redirects=False) as client:
            response = client.head(url)
    except httpx2.TimeoutException:
        return Check(
            "Base URL",
            "fail",
            f"{url} ({source}) did not answer within {timeout:g} s. Check ANTHROPIC_BASE_URL, "
            "your network and any proxy settings.",
        )
    except httpx2.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        if "refused" in reason.lower():
            reason = "connection refused (nothing is listening there)"
        return Check(
            "Base URL",
            "fail",
            f"Cannot reach {url} ({source}): {reason}. Check ANTHROPIC_BASE_URL and your network.",
        )
    elapsed_ms = (time.perf_counter() - started) * 1000
    return Check(
        "Base URL",
        "pass",
        f"{url} ({source}) is reachable (it answered HTTP {response.status_code} in {elapsed_ms:.0f} ms).",
    )


def check_api_access(env: Mapping[str, str], model: str, *, timeout: float = 10.0) -> Check:
    """One real request with the key: a token count (free on the Anthropic API), or, where a
    compatible server has no such route, a 1-token message. It proves the key, the URL and the model."""
    import time

    import anthropic

    url = env.get("ANTHROPIC_BASE_URL", "").strip() or DEFAULT_BASE_URL
    client = anthropic.Anthropic(
        api_key=env.get("ANTHROPIC_API_KEY", "").strip(), base_url=url, max_retries=0, timeout=timeout
    )
    messages: Any = [{"role": "user", "content": "ping"}]
    started = time.perf_counter()
    what = "a token count"
    try:
        try:
            client.messages.count_tokens(model=model, messages=messages)
        except anthropic.NotFoundError:  # a compatible server without count_tokens: one tiny message
            what = "a 1-token message"
            client.messages.create(model=model, max_tokens=1, messages=messages)
    except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as exc:
        return Check(
            "API access",
            "fail",
            f"{url} refused the key (HTTP {exc.status_code}): check ANTHROPIC_API_KEY "
            "(a typo, a revoked key, or a key for another server).",
        )
    except anthropic.NotFoundError as exc:
        return Check(
            "API access",
            "fail",
            f"{url} answered HTTP 404 for model {model!r}: check the model id, and that "
            f"ANTHROPIC_BASE_URL points at a Messages API ({_api_message(exc)}).",
        )
    except anthropic.APIStatusError as exc:
        status: Status = "warn" if exc.status_code in (429, 529) or exc.status_code >= 500 else "fail"
        return Check(
            "API access",
            status,
            f"{url} answered HTTP {exc.status_code} to {what}: {_api_message(exc)}.",
        )
    except anthropic.APIConnectionError as exc:
        return Check("API access", "fail", f"Could not complete a request to {url}: {exc}.")
    finally:
        client.close()
    elapsed_ms = (time.perf_counter() - started) * 1000
    return Check(
        "API access",
        "pass",
        f"the key works: {url} answered {what} for {model} in {elapsed_ms:.0f} ms.",
    )


def _api_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return str(getattr(exc, "message", exc))


# ------------------------------------------------------------------------------------- workspace


def check_workspace(workspace: Path) -> Check:
    """The workspace folder exists (everything after this check needs it); same words as every command."""
    from .common import workspace_problem

    problem = workspace_problem(workspace)
    if problem is not None:
        return Check("Workspace", "fail", problem)
    return Check("Workspace", "pass", f"{workspace.resolve()}")


_MISSING_NOTE: dict[str, tuple[Status, str]] = {
    "AGENTS.md": ("warn", "missing: the agent gets no working rules. Run openclaw-mini init to add one."),
    "SOUL.md": ("warn", "missing: the agent has no persona. Run openclaw-mini init to add one."),
    "BOOTSTRAP.md": ("pass", "not present (the first-run ritual is done)."),
    "MEMORY.md": ("pass", "not present (the first long-term memory creates it)."),
    "HEARTBEAT.md": ("pass", "not present (see the heartbeat check)."),
}


def check_bootstrap(workspace: Path) -> list[Check]:
    """Each bootstrap file: found or not, its size against the per-file and total caps."""
    from ..config import BootstrapConfig
    from ..context.bootstrap import BOOTSTRAP_FILES, MEMORY_FILE_NAMES, BootstrapLoader

    config = BootstrapConfig.model_validate({})
    context = BootstrapLoader(workspace, config).load()
    loaded = {item.name: item for item in context.files}
    memory_name = next(
        (name for name in MEMORY_FILE_NAMES if os.path.lexists(workspace / name)), MEMORY_FILE_NAMES[0]
    )
    checks: list[Check] = []
    for name in BOOTSTRAP_FILES:
        if name in MEMORY_FILE_NAMES and name != memory_name:
            continue
        label = f"File {name}"
        notes = [text for text in context.warnings if text.startswith(f"Bootstrap file {name} ")]
        item = loaded.get(name)
        if item is not None:
            size = f"{item.original_chars:,} chars (cap {config.max_chars_per_file:,})"
            if item.truncated:
                checks.append(Check(label, "warn", " ".join(notes) or f"{size}: will be shortened."))
                continue
            extra = " The first-run ritual is pending." if name == "BOOTSTRAP.md" else ""
            checks.append(Check(label, "pass", size + "." + extra))
        elif os.path.lexists(workspace / name):
            checks.append(Check(label, "warn", " ".join(notes) or "present but not loaded."))
        else:
            key = "MEMORY.md" if name in MEMORY_FILE_NAMES else name
            status, note = _MISSING_NOTE.get(key, ("pass", "not present (optional)."))
            checks.append(Check(label, status, note))

    raw_total = sum(item.original_chars for item in context.files)
    caps = f"cap {config.max_total_chars:,} total, {config.max_chars_per_file:,} per file"
    if raw_total > config.max_total_chars:
        checks.append(
            Check(
                "Files total",
                "warn",
                f"{raw_total:,} chars ({caps}): later files are shortened or left out of the prompt.",
            )
        )
    else:
        checks.append(
            Check("Files total", "pass", f"{context.total_chars:,} chars go into the prompt ({caps}).")
        )
    return checks


def check_skills(workspace: Path) -> list[Check]:
    """How many skills are offered, why the others are not, and any skill file that did not load."""
    from ..skills import SkillLoader

    try:
        snapshot = SkillLoader(workspace).load()
    except Exception as exc:  # the loader promises not to raise; doctor must not crash if it does
        return [Check("Skills", "fail", f"Could not load skills: {type(exc).__name__}: {exc}")]
    ineligible = [skill for skill in snapshot.skills if not skill.eligible]
    header = f"{len(snapshot.eligible)} eligible, {len(ineligible)} ineligible"
    if snapshot.shadowed:
        header += f", {len(snapshot.shadowed)} overridden by a same-named skill"
    lines = [f"{skill.name}: {skill.ineligible_reason or 'not eligible'}" for skill in ineligible]
    checks = [Check("Skills", "pass", _listing(header + ("; not offered:" if lines else "."), lines))]
    if snapshot.warnings:
        count = len(snapshot.warnings)
        checks.append(
            Check(
                "Skill files",
                "warn",
                _listing(
                    f"{count} problem{'s' if count != 1 else ''} (those skills were skipped):",
                    [str(item) for item in snapshot.warnings],
                ),
            )
        )
    return checks


def _describe_tasks(tasks: list[HeartbeatTask]) -> str:
    parts: dict[str, int] = {}
    for task in tasks:
        schedule = task.describe_schedule()
        parts[schedule] = parts.get(schedule, 0) + 1
    return ", ".join(f"{count} {schedule}" for schedule, count in parts.items())


def check_heartbeat(workspace: Path) -> list[Check]:
    """The heartbeat config and its state file are valid, and HEARTBEAT.md parses (with line numbers)."""
    from pydantic import ValidationError

    from ..heartbeat import HeartbeatConfig, HeartbeatState, load_heartbeat_file
    from ..heartbeat.state import state_path

    checks: list[Check] = []
    try:
        config = HeartbeatConfig()
        zone = config.zone()
        hours = config.active_hours.describe(zone) if config.active_hours else "around the clock"
        checks.append(Check("Heartbeat config", "pass", f"every {config.every}, active {hours}."))
    except (ValidationError, ValueError) as exc:
        checks.append(Check("Heartbeat config", "fail", f"invalid: {exc}"))

    state_file = state_path(workspace)
    if os.path.lexists(state_file):
        try:
            HeartbeatState.model_validate_json(state_file.read_bytes())
            checks.append(Check("Heartbeat state", "pass", f"{state_file} is readable."))
        except (OSError, ValidationError) as exc:
            first = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            checks.append(
                Check(
                    "Heartbeat state",
                    "warn",
                    f"{state_file} is unreadable ({first}); the next heartbeat sets it aside and starts "
                    "fresh (due times and dedupe history are lost).",
                )
            )

    parsed = load_heartbeat_file(workspace)
    label = "HEARTBEAT.md"
    if not parsed.exists:
        checks.append(
            Check(
                label,
                "warn",
                "missing: with the heartbeat on, every tick calls the model with no tasks. "
                "openclaw-mini init writes an empty one.",
            )
        )
        return checks
    if parsed.error is not None:
        checks.append(Check(label, "fail", parsed.error))
        return checks
    done = f", {len(parsed.done)} done" if parsed.done else ""
    if parsed.tasks:
        summary = f"{len(parsed.tasks)} open task{'s' if len(parsed.tasks) != 1 else ''} "
        summary += f"({_describe_tasks(list(parsed.tasks))}){done}."
    elif parsed.effectively_empty:
        summary = "effectively empty: heartbeat ticks skip without a model call until you add tasks."
    elif parsed.done or not parsed.instructions:
        summary = f"no open tasks{done}: heartbeat ticks skip without a model call."
    else:
        summary = "free text but no task lines: every tick inside active hours makes a model call."
    if parsed.problems:
        count = len(parsed.problems)
        lines = [f"line {problem.line}: {problem.message}" for problem in parsed.problems]
        header = f"{count} malformed line{'s' if count != 1 else ''} skipped (fix them):"
        checks.append(Check(label, "fail", _listing(header, lines) + "\n" + summary))
    else:
        checks.append(Check(label, "pass", summary))
    return checks


# ------------------------------------------------------------------------------- config and MCP


def check_config(workspace: Path) -> Check:
    """The config files and OPENCLAW_MINI_* variables load (errors name file, key and line)."""
    from ..errors import ConfigError
    from ..settings import load_settings

    try:
        settings = load_settings(workspace)
    except ConfigError as exc:
        return Check("Config", "fail", str(exc))
    files = [source.label for source in settings.sources if source.kind in ("workspace", "user", "mcp.json")]
    changed = sum(1 for _, _, origin in settings.rows() if origin != "default") - 1  # minus workspace_dir
    where = "; ".join(files) if files else "no config file (defaults; openclaw-mini init writes one)"
    return Check("Config", "pass", f"{where}. {changed} value{'s' if changed != 1 else ''} set.")


def check_mcp(workspace: Path) -> list[Check]:
    """Each MCP server starts and lists its tools (each is started once and stopped again)."""
    import asyncio

    from ..errors import ConfigError
    from .mcp import probe_servers

    try:
        rows = asyncio.run(probe_servers(workspace, keep_logs=False))  # doctor writes no file
    except ConfigError:
        return []  # the Config row already says what is wrong
    checks = []
    for name, what, state, tools, error in rows:
        label = f"MCP {name}"
        if state == "running":
            shown = ", ".join(tools[:8]) + (f" and {len(tools) - 8} more" if len(tools) > 8 else "")
            checks.append(Check(label, "pass", f"{what}: {len(tools)} tools ({shown or 'none'})."))
        elif state == "disabled":
            checks.append(Check(label, "warn", f"{what}: disabled (enabled = false)."))
        else:
            checks.append(Check(label, "fail", f"{error or state}. Fix the server entry or disable it."))
    return checks


# --------------------------------------------------------------------------------------- command


def collect_checks(
    workspace: Path, env: Mapping[str, str] | None = None, *, model: str | None = None
) -> list[Check]:
    """Every check in table order; the API request only runs with a key and a reachable URL, the
    workspace checks only when the folder exists."""
    from ..config import DEFAULT_MODEL

    env = os.environ if env is None else env
    workspace = Path(os.path.expanduser(str(workspace)))
    key, url = check_api_key(env), check_base_url(env)
    checks = [key, url]
    if key.status != "fail" and url.status != "fail":
        checks.append(check_api_access(env, model or DEFAULT_MODEL))
    place = check_workspace(workspace)
    checks.append(place)
    if place.status == "fail":
        return checks
    checks.extend(check_bootstrap(workspace))
    checks.extend(check_skills(workspace))
    checks.extend(check_heartbeat(workspace))
    config = check_config(workspace)
    checks.append(config)
    if config.status != "fail":
        checks.extend(check_mcp(workspace))
    return checks


def run_doctor(workspace: Path) -> int:
    """Print the checks as a table; 0 when nothing failed, 1 otherwise."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    checks = collect_checks(workspace)
    badge = {
        "pass": "[green]PASS[/green]",
        "warn": "[yellow]WARN[/yellow]",
        "fail": "[bold red]FAIL[/bold red]",
    }
    table = Table(title="openclaw-mini doctor", title_justify="left", show_lines=False)
    table.add_column("Check", style="bold", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    table.add_column("Detail", overflow="fold")
    for check in checks:
        table.add_row(escape(check.name), badge[check.status], escape(check.detail))
    console = Console(highlight=False)
    console.print(table)
    failed = sum(1 for check in checks if check.status == "fail")
    warned = sum(1 for check in checks if check.status == "warn")
    if failed:
        console.print(
            f"[bold red]{failed} check{'s' if failed != 1 else ''} failed[/bold red]"
            + (f", {warned} warning{'s' if warned != 1 else ''}" if warned else "")
            + ". Fix the FAIL rows above and run doctor again."
        )
        return 1
    if warned:
        console.print(
            f"[yellow]All essential checks passed, {warned} warning{'s' if warned != 1 else ''}.[/yellow]"
        )
    else:
        console.print("[green]All checks passed.[/green]")
    return 0
