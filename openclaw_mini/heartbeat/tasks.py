"""HEARTBEAT.md parsing: which tasks exist, which are done, and when each is due.

The file is written by people, so the parser is forgiving and explicit: open checklist items
(`- [ ] text`) and plain list items run every heartbeat, checked items (`- [x]`) are done, and a
`tasks:` block holds named tasks with their own `interval` or `cron` schedule. Headings, HTML
comments, fence markers and empty items are not tasks. A line that cannot be read is reported with
its line number and skipped; the rest of the file still counts.

croniter is imported only when a cron task is present.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Literal

from .config import format_duration, parse_duration

__all__ = [
    "HEARTBEAT_FILE",
    "HeartbeatFile",
    "HeartbeatTask",
    "ParseProblem",
    "cron_next",
    "cron_prev",
    "load_heartbeat_file",
    "parse_heartbeat",
]

HEARTBEAT_FILE = "HEARTBEAT.md"

TaskKind = Literal["checklist", "item", "interval", "cron"]

_LIST_ITEM = re.compile(r"^(?P<indent>\s*)(?:[-*+]|\d+[.)])(?:\s+(?P<rest>.*))?$")
_CHECKBOX = re.compile(r"^\[(?P<mark>[^\]]{0,3})\](?!\()(?:\s+(?P<text>.*))?$")
_EMPTY_ITEM = re.compile(r"^(?:[-*+]|\d+[.)])\s*(?:\[[\sxX]?\]\s*)?$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_TASKS_HEADER = re.compile(r"^tasks\s*:\s*$", re.IGNORECASE)
_KEY_VALUE = re.compile(r"^(?P<key>[A-Za-z_][\w-]*)\s*:\s*(?P<value>.*)$")
_TASK_KEYS = {"name", "interval", "every", "cron", "prompt", "done", "enabled"}


@dataclass(frozen=True)
class HeartbeatTask:
    """One thing the heartbeat should look at.

    `kind` is `checklist` (`- [ ] text`) or `item` (`- text`), which run every heartbeat, or
    `interval`/`cron` for named tasks from the `tasks:` block. `key` identifies the task in the
    persisted state (named tasks by name, so editing the prompt keeps the schedule).
    """

    name: str
    prompt: str
    kind: TaskKind = "item"
    line: int = 0
    interval_seconds: float | None = None
    cron: str | None = None

    @property
    def key(self) -> str:
        return self.name if self.kind in ("interval", "cron") else f"{self.kind}:{self.prompt}"

    @property
    def every_heartbeat(self) -> bool:
        return self.kind in ("checklist", "item")

    def describe_schedule(self) -> str:
        if self.kind == "interval" and self.interval_seconds is not None:
            return f"every {format_duration(self.interval_seconds)}"
        if self.kind == "cron" and self.cron is not None:
            return f"cron {self.cron}"
        return "every heartbeat"

    def is_due(
        self, now: datetime, last_run: datetime | None, first_seen: datetime | None, tz: tzinfo
    ) -> bool:
        """Due if it runs every heartbeat, never ran, its interval passed, or a cron time passed.

        A cron task that never ran waits for its first fire time after it was first seen, so adding
        `0 9 * * 1-5` at 15:00 does not fire at once.
        """
        if self.every_heartbeat:
            return True
        if self.kind == "interval":
            if last_run is None:
                return True
            return now >= last_run + timedelta(seconds=self.interval_seconds or 0)
        assert self.cron is not None
        since = last_run or first_seen
        if since is None:
            return False
        previous = cron_prev(self.cron, now, tz)
        return previous is not None and previous > since

    def next_due(
        self, now: datetime, last_run: datetime | None, first_seen: datetime | None, tz: tzinfo
    ) -> datetime | None:
        """When the task is next due (now if due already; None for every-heartbeat tasks)."""
        if self.every_heartbeat:
            return None
        if self.is_due(now, last_run, first_seen, tz):
            return now
        if self.kind == "interval":
            assert last_run is not None
            return last_run + timedelta(seconds=self.interval_seconds or 0)
        assert self.cron is not None
        return cron_next(self.cron, now, tz)


@dataclass(frozen=True)
class ParseProblem:
    """A line of HEARTBEAT.md that was skipped, and why."""

    line: int
    message: str
    text: str = ""

    def __str__(self) -> str:
        return f"{HEARTBEAT_FILE} line {self.line}: {self.message}"


@dataclass
class HeartbeatFile:
    """What HEARTBEAT.md says: open tasks, done ones, free instructions and problems."""

    path: Path | None = None
    exists: bool = True
    tasks: list[HeartbeatTask] = field(default_factory=list)
    done: list[HeartbeatTask] = field(default_factory=list)
    instructions: list[str] = field(default_factory=list)
    """Free text lines (not tasks, not headings/comments): the file has something to say."""
    problems: list[ParseProblem] = field(default_factory=list)
    error: str | None = None
    """Set when the file exists but could not be read."""

    @property
    def effectively_empty(self) -> bool:
        """Only blank lines, headings, empty items, fence markers and comments (missing is not empty)."""
        return (
            self.exists
            and self.error is None
            and not self.tasks
            and not self.done
            and not self.instructions
            and not self.problems
        )

    @property
    def has_cron(self) -> bool:
        return any(task.kind == "cron" for task in self.tasks)


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _check_cron(expression: str) -> str | None:
    """An error message for a bad cron expression, else None."""
    from croniter import croniter

    if not expression.strip():
        return "empty cron expression"
    if not croniter.is_valid(expression):
        return f"invalid cron expression {expression!r}"
    return None


def cron_prev(expression: str, now: datetime, tz: tzinfo) -> datetime | None:
    """The latest fire time at or before `now`, computed in `tz` (DST-aware)."""
    from croniter import croniter

    local = now.astimezone(tz)
    try:
        result = croniter(expression, local + timedelta(microseconds=1)).get_prev(datetime)
    except (ValueError, KeyError):
        return None
    return result.astimezone(now.tzinfo) if isinstance(result, datetime) else None


def cron_next(expression: str, now: datetime, tz: tzinfo) -> datetime | None:
    """The first fire time strictly after `now`, computed in `tz` (DST-aware)."""
    from croniter import croniter

    local = now.astimezone(tz)
    try:
        result = croniter(expression, local).get_next(datetime)
    except (ValueError, KeyError):
        return None
    return result.astimezone(now.tzinfo) if isinstance(result, datetime) else None


class _TaskBlockParser:
    """The `tasks:` block: `- name: x` starts an item, `key: value` lines continue it."""

    def __init__(self, out: HeartbeatFile) -> None:
        self.out = out
        self.current: dict[str, tuple[str, int]] | None = None
        self.start_line = 0
        self.names: set[str] = set()

    def feed(self, number: int, raw: str) -> None:
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            return
        if stripped.startswith("-"):
            self.finish()
            body = stripped[1:].strip()
            self.current, self.start_line = {}, number
            if body:
                self._pair(number, body, raw)
            return
        if self.current is None:
            self.out.problems.append(ParseProblem(number, "expected '- name: ...' to start a task", raw))
            return
        self._pair(number, stripped, raw)

    def _pair(self, number: int, text: str, raw: str) -> None:
        assert self.current is not None
        match = _KEY_VALUE.match(text)
        if not match:
            self.out.problems.append(ParseProblem(number, "expected 'key: value' in the tasks block", raw))
            return
        key = match.group("key").lower()
        if key not in _TASK_KEYS:
            known = ", ".join(sorted(_TASK_KEYS))
            self.out.problems.append(ParseProblem(number, f"unknown task key {key!r} (known: {known})", raw))
            return
        if key == "every":
            key = "interval"
        if key in self.current:
            self.out.problems.append(ParseProblem(number, f"task key {key!r} given twice", raw))
            return
        self.current[key] = (_unquote(match.group("value")), number)

    def finish(self) -> None:
        item, self.current = self.current, None
        if item is None:
            return
        line = self.start_line
        name = item.get("name", ("", line))[0].strip()
        if not name:
            self.out.problems.append(ParseProblem(line, "task has no name (add 'name: ...')"))
            return
        if name in self.names:
            self.out.problems.append(ParseProblem(line, f"task name {name!r} is used twice; skipped"))
            return
        prompt = item.get("prompt", ("", line))[0].strip() or name
        done = item.get("done", ("false", line))[0].strip().lower() in ("true", "yes", "1")
        disabled = item.get("enabled", ("true", line))[0].strip().lower() in ("false", "no", "0")
        if "interval" in item and "cron" in item:
            self.out.problems.append(
                ParseProblem(item["cron"][1], f"task {name!r} has both interval and cron; give one")
            )
            return
        task: HeartbeatTask
        if "cron" in item:
            expression, cron_line = item["cron"]
            error = _check_cron(expression)
            if error:
                self.out.problems.append(ParseProblem(cron_line, f"task {name!r}: {error}"))
                return
            task = HeartbeatTask(name=name, prompt=prompt, kind="cron", line=line, cron=expression.strip())
        elif "interval" in item:
            text, interval_line = item["interval"]
            try:
                seconds = parse_duration(text, what=f"task {name!r} interval")
            except ValueError as exc:
                self.out.problems.append(ParseProblem(interval_line, str(exc)))
                return
            if seconds <= 0:
                self.out.problems.append(
                    ParseProblem(interval_line, f"task {name!r}: interval must be positive")
                )
                return
            task = HeartbeatTask(
                name=name, prompt=prompt, kind="interval", line=line, interval_seconds=seconds
            )
        else:
            # A named task without a schedule runs every heartbeat, like a checklist item.
            task = HeartbeatTask(name=name, prompt=prompt, kind="item", line=line)
        self.names.add(name)
        if done or disabled:
            self.out.done.append(task)
        else:
            self.out.tasks.append(task)


def parse_heartbeat(text: str, *, path: Path | None = None) -> HeartbeatFile:
    """Parse the text of HEARTBEAT.md (see the module docstring for the format)."""
    out = HeartbeatFile(path=path, exists=True)
    lines = text.splitlines()
    in_comment = False
    fence: str | None = None
    block: _TaskBlockParser | None = None
    last_task_index: int | None = None  # where indented continuation lines attach
    last_was_done = False

    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip()
        # HTML comments, possibly spanning lines; text around a one-line comment still counts.
        if in_comment:
            if "-->" not in line:
                continue
            line = line.split("-->", 1)[1]
            in_comment = False
        while "<!--" in line:
            before, after = line.split("<!--", 1)
            if "-->" in after:
                line = before + after.split("-->", 1)[1]
            else:
                line, in_comment = before, True
        if not line.strip():
            continue

        fence_match = _FENCE.match(line)
        if fence_match:
            marker = fence_match.group(1)
            if fence is None:
                fence = marker
            elif marker == fence:
                fence = None
            if block is not None:
                block.finish()
                block = None
            continue

        if block is not None:
            if line[:1].isspace() or re.match(r"^-\s*name\s*:", line, re.IGNORECASE):
                block.feed(number, line)
                continue
            block.finish()
            block = None

        if _TASKS_HEADER.match(line.strip()) and not line[:1].isspace():
            block = _TaskBlockParser(out)
            last_task_index = None
            continue

        if fence is not None:
            # Code or data inside a fence is content, not tasks. Headings and empty items inside
            # it are not: the upstream template pasted whole is a fenced block of just those.
            if not line.lstrip().startswith("#") and not _EMPTY_ITEM.match(line.strip()):
                out.instructions.append(line.strip())
            continue

        if line.lstrip().startswith("#"):
            continue  # heading (or a '#' comment line)

        item = _LIST_ITEM.match(line)
        if item is None:
            if line[:1].isspace() and last_task_index is not None:
                _attach(out, last_task_index, line.strip())
            elif line[:1].isspace() and last_was_done:
                pass  # detail of a done item
            else:
                out.instructions.append(line.strip())
                last_task_index, last_was_done = None, False
            continue

        indent = len(item.group("indent"))
        rest = (item.group("rest") or "").strip()
        if indent > 0 and (last_task_index is not None or last_was_done):
            # A sub-item details its parent task rather than being a task of its own.
            if last_task_index is not None and rest:
                _attach(out, last_task_index, f"- {rest}")
            continue

        checkbox = _CHECKBOX.match(rest)
        mark = checkbox.group("mark").strip() if checkbox else None
        if checkbox is not None and mark is not None and len(mark) > 1:
            checkbox = None  # `[WIP] fix the build`: bracketed text in a plain item
        if checkbox is not None and mark not in ("", "x", "X"):
            out.problems.append(ParseProblem(number, f"unknown checkbox mark [{mark}] (use [ ] or [x])", raw))
            last_task_index, last_was_done = None, False
            continue
        body = (checkbox.group("text") or "").strip() if checkbox is not None else rest
        if not body:
            last_task_index, last_was_done = None, False
            continue  # `- [ ]` or `-` alone: an empty item, not a task
        done = mark in ("x", "X")
        kind: TaskKind = "checklist" if checkbox is not None else "item"
        task = HeartbeatTask(name=_short_name(body), prompt=body, kind=kind, line=number)

        if done:
            out.done.append(task)
            last_task_index, last_was_done = None, True
        else:
            out.tasks.append(task)
            last_task_index, last_was_done = len(out.tasks) - 1, False

    if block is not None:
        block.finish()
    if in_comment:
        out.problems.append(ParseProblem(len(lines), "HTML comment '<!--' is never closed"))
    return out


def _attach(out: HeartbeatFile, index: int, detail: str) -> None:
    task = out.tasks[index]
    out.tasks[index] = HeartbeatTask(
        name=task.name,
        prompt=f"{task.prompt}\n  {detail}",
        kind=task.kind,
        line=task.line,
        interval_seconds=task.interval_seconds,
        cron=task.cron,
    )


def _short_name(text: str, limit: int = 60) -> str:
    first = text.splitlines()[0].strip()
    return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"


def load_heartbeat_file(workspace: Path, name: str = HEARTBEAT_FILE) -> HeartbeatFile:
    """Read and parse `<workspace>/HEARTBEAT.md`. Missing -> `exists=False`; unreadable -> `error` set."""
    path = workspace / name
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return HeartbeatFile(path=path, exists=False)
    except OSError as exc:
        return HeartbeatFile(path=path, exists=True, error=f"cannot read {path}: {exc.strerror or exc}")
    text = raw.decode("utf-8", errors="replace")
    result = parse_heartbeat(text, path=path)
    if "\ufffd" in text and b"\xef\xbf\xbd" not in raw:
        result.problems.append(ParseProblem(0, "file is not valid UTF-8; undecodable bytes were replaced"))
    return result
