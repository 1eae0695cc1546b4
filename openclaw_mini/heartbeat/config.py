"""Heartbeat configuration: `HeartbeatConfig`, `ActiveHours`, duration strings and timezones.

Everything is validated when the config is built, so `start="25:00"` or a misspelt timezone is a
clear error at startup instead of a heartbeat that silently never (or always) runs, which is what
upstream does with a bad time.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ActiveHours",
    "HeartbeatConfig",
    "format_duration",
    "host_timezone",
    "parse_duration",
    "resolve_timezone",
]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_OFF_WORDS = {"", "off", "none", "never", "false", "disabled"}
_HHMM = re.compile(r"^(\d{1,2}):(\d{2})$")
MAX_DURATION_SECONDS = 10 * 366 * 86400.0
"""Ten years: a longer duration is a typo, and far-future datetimes overflow (`3000000d`)."""


def parse_duration(value: str | float | timedelta | None, *, what: str = "duration") -> float:
    """Seconds in `value`: `500ms`, `30s`, `5m`, `1h`, `1h30m`, `1.5h`, `2d`; a bare number is minutes.

    `0`, `0m`, `off` (and None) give 0.0, which callers read as "disabled". Anything else raises
    `ValueError` naming `what` and the bad text.
    """
    if value is None:
        return 0.0
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError(f"{what}: expected a duration like '30m', got {value!r}")
    elif isinstance(value, int | float):
        seconds = float(value) * 60.0
    else:
        text = str(value).strip().lower()
        if text in _OFF_WORDS:
            return 0.0
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text) * 60.0
        else:
            compact = re.sub(r"\s+", "", text)
            parts = _DURATION_PART.findall(compact)
            if not parts or "".join(f"{n}{u}" for n, u in parts) != compact:
                raise ValueError(
                    f"{what}: cannot read {value!r} as a duration (use e.g. '500ms', '30s', '5m', '1h30m')"
                )
            seconds = sum(float(number) * _UNIT_SECONDS[unit.lower()] for number, unit in parts)
    if seconds < 0:
        raise ValueError(f"{what}: a duration cannot be negative ({value!r})")
    if not seconds <= MAX_DURATION_SECONDS:  # also catches inf/nan from huge numbers
        raise ValueError(f"{what}: {value!r} is longer than the maximum of 10 years")
    return seconds


def format_duration(seconds: float) -> str:
    """Short human form of a duration: `1h30m`, `45s`, `250ms`, `off`."""
    if seconds <= 0:
        return "off"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    out = "".join(f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if n)
    return out or "0s"


def _host_zone_name() -> str | None:
    """IANA name of the host zone: `$TZ`, else the `/etc/localtime` link target."""
    env = os.environ.get("TZ", "").strip().lstrip(":")
    if env:
        try:
            ZoneInfo(env)
            return env
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        target = str(Path("/etc/localtime").resolve())
    except OSError:
        return None
    marker = "zoneinfo/"
    if marker in target:
        name = target.split(marker, 1)[1]
        try:
            ZoneInfo(name)
            return name
        except (ZoneInfoNotFoundError, ValueError):
            return None
    return None


def host_timezone() -> tzinfo:
    """The host's timezone, DST-aware when it can be named, else its current fixed offset, else UTC."""
    name = _host_zone_name()
    if name:
        return ZoneInfo(name)
    local = datetime.now().astimezone().tzinfo
    return local if local is not None else UTC


def _check_zone(value: str | None, where: str) -> str | None:
    if value is None:
        return None
    text = value.strip()
    if text == "" or text.lower() == "user":
        # `user` (upstream's word) is the user's configured zone, else the host's: what an
        # unset zone resolves to here (the Agent passes its own timezone down as the fallback).
        return None
    if text.lower() == "local":
        return "local"
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{where}: unknown timezone {value!r} (use an IANA name like 'Europe/Berlin', or 'local')"
        ) from None
    return text


def resolve_timezone(*names: str | None) -> tzinfo:
    """The first configured zone among `names` (IANA or `local`), else the host's, else UTC."""
    for name in names:
        if name is None or name == "":
            continue
        if name == "local":
            return host_timezone()
        return ZoneInfo(name)
    return host_timezone()


def _minutes(value: str, *, allow_24: bool, where: str) -> int:
    match = _HHMM.match(value.strip())
    if not match:
        raise ValueError(f"{where}: {value!r} is not a time of day in HH:MM form")
    hours, minutes = int(match.group(1)), int(match.group(2))
    if hours == 24 and minutes == 0:
        if allow_24:
            return 24 * 60
        raise ValueError(f"{where}: '24:00' is allowed only as the end of the window")
    if hours > 23 or minutes > 59:
        raise ValueError(f"{where}: {value!r} is not a valid time (00:00-23:59)")
    return hours * 60 + minutes


class ActiveHours(BaseModel):
    """The daily window in which heartbeats may run, in a timezone.

    `end` before `start` wraps past midnight (`22:00`-`06:00` is a night window); `24:00` is a valid
    end; `start == end` means never. `timezone` is an IANA name, `local` (the host), `user` or None, which
    falls back to `HeartbeatConfig.timezone`, then the host, then UTC.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    start: str = "08:00"
    end: str = "22:00"
    timezone: str | None = None

    @field_validator("start")
    @classmethod
    def _check_start(cls, value: str) -> str:
        _minutes(value, allow_24=False, where="active_hours.start")
        return value.strip()

    @field_validator("end")
    @classmethod
    def _check_end(cls, value: str) -> str:
        _minutes(value, allow_24=True, where="active_hours.end")
        return value.strip()

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str | None) -> str | None:
        return _check_zone(value, "active_hours.timezone")

    @property
    def start_minute(self) -> int:
        return _minutes(self.start, allow_24=False, where="active_hours.start")

    @property
    def end_minute(self) -> int:
        return _minutes(self.end, allow_24=True, where="active_hours.end")

    @property
    def never(self) -> bool:
        """`start == end`: an empty window (not a 24-hour one; use `00:00`-`24:00` for that)."""
        return self.start_minute == self.end_minute

    def contains(self, when: datetime, tz: tzinfo) -> bool:
        """Whether `when` (aware) falls inside the window, read in `tz`."""
        if self.never:
            return False
        local = when.astimezone(tz)
        second = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
        start, end = self.start_minute * 60, self.end_minute * 60
        if start < end:
            return start <= second < end
        return second >= start or second < end

    def next_start(self, when: datetime, tz: tzinfo) -> datetime | None:
        """The first moment at or after `when` that is inside the window (None when never)."""
        if self.never:
            return None
        if self.contains(when, tz):
            return when
        local = when.astimezone(tz)
        start = time(self.start_minute // 60, self.start_minute % 60)
        for days in range(0, 3):
            day = local.date() + timedelta(days=days)
            # Through UTC and back so a start inside a DST gap lands on the first real instant.
            candidate = datetime.combine(day, start, tzinfo=tz).astimezone(UTC)
            if candidate >= when and self.contains(candidate, tz):
                return candidate.astimezone(when.tzinfo or UTC)
            if candidate >= when:
                # The wall time does not exist today (DST gap): the window opens just after it.
                shifted = candidate + timedelta(hours=1)
                if self.contains(shifted, tz):
                    return shifted.astimezone(when.tzinfo or UTC)
        return None

    def describe(self, tz: tzinfo | None = None) -> str:
        zone = self.timezone or (str(tz) if tz is not None else "local")
        if self.never:
            return f"never ({self.start}-{self.end}, start == end) {zone}"
        return f"{self.start}-{self.end} {zone}"


class HeartbeatConfig(BaseModel):
    """How often the heartbeat runs, when, and how its replies are filtered.

    Session choice (issue item 5): by default the heartbeat turn runs on one fixed session
    (`session`, default `main`), so the model sees the recent conversation and does not nag about
    things the user already handled; that session is kept bounded by the same pruning and
    compaction as every session, and the ack turns it adds are small. Set `isolated_session=True`
    for a fresh session per run (`<session>-heartbeat-<UTC stamp>`): no history tokens at all, but
    no memory of earlier heartbeats either (dedupe still works, it lives in heartbeat.json).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    every: str = "30m"
    """Interval: `500ms`, `30s`, `5m`, `1h`, `1h30m`; a bare number is minutes; `0`/`0m`/`off` turn it off."""
    active_hours: ActiveHours | None = Field(default_factory=ActiveHours)
    """Daily window (default 08:00-22:00); None runs around the clock."""
    timezone: str | None = None
    """Zone for active hours and cron tasks when `active_hours.timezone` is unset (IANA or `local`);
    the Agent passes its own `timezone` setting here; None: the host's."""
    dedupe_hours: float = Field(default=24.0, ge=0)
    """The same delivered text within this many hours is not delivered again (0: no dedupe)."""
    ack_max_chars: int = Field(default=300, ge=0)
    """After stripping HEARTBEAT_OK, a remainder this short is an ack and is not delivered."""
    prompt: str | None = None
    """Replaces the default instructions of the heartbeat prompt (tasks, notes and time are still added)."""
    session: str = "main"
    """Session id the heartbeat turn runs on (the Agent completes it to `agent:<id>:<session>`)."""
    isolated_session: bool = False
    """True: a fresh session per run instead of the fixed `session` (see the class docstring)."""
    coalesce_ms: float = Field(default=250.0, ge=0)
    """Wake requests within this window become one run."""
    retry_ms: float = Field(default=1000.0, gt=0)
    """A busy or failing run is retried after this long (doubling up to a minute)."""
    sink: str | None = None
    """Fleet only: where a heartbeat reply that is not an ack goes: an `http(s)://` webhook (POSTed as
    JSON) or `log` (the fleet's delivery log: a Redis stream, or a table of the SQLite queue; the
    default). A single-machine agent hands replies to its `deliver` callback instead."""

    @field_validator("sink")
    @classmethod
    def _check_sink(cls, value: str | None) -> str | None:
        if value is None or value.strip() in ("", "log"):
            return None if value is None or not value.strip() else "log"
        text = value.strip()
        if not text.startswith(("http://", "https://")):
            raise ValueError(f"heartbeat.sink: {value!r} is neither an http(s):// webhook URL nor 'log'")
        return text

    @field_validator("every", mode="before")
    @classmethod
    def _check_every(cls, value: Any) -> str:
        if value is None:
            return "0"
        if isinstance(value, timedelta):
            return format_duration(value.total_seconds()) if value.total_seconds() > 0 else "0"
        parse_duration(value, what="heartbeat.every")
        return str(value).strip()

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str | None) -> str | None:
        return _check_zone(value, "heartbeat.timezone")

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, value: str | None) -> str | None:
        """Trimmed; a blank override means the default prompt (as upstream)."""
        if value is None:
            return None
        return value.strip() or None

    @field_validator("session")
    @classmethod
    def _check_session(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("heartbeat.session must not be empty")
        return value.strip()

    @classmethod
    def coerce(cls, value: Any) -> HeartbeatConfig:
        """A config from what a user may write: a config, a dict, a duration string, or a switch.

        `{}`, `False`, `"off"` and `0` mean OFF: upstream read an empty `heartbeat: {}` as "all
        defaults" and kept burning a model call every 30 minutes for users who meant to disable it.
        `None` and `True` mean the defaults (the caller asked for a heartbeat without details).
        """
        if isinstance(value, cls):
            return value
        if value is None or value is True:
            return cls()
        if value is False or value == {} or (isinstance(value, int | float) and value == 0):
            return cls(every="0")
        if isinstance(value, dict):
            return cls.model_validate(value)
        if isinstance(value, str | int | float | timedelta):
            return cls(every=value)
        raise ValueError(
            f"heartbeat: expected a HeartbeatConfig, a dict, a duration or a bool, got {value!r}"
        )

    @property
    def interval_seconds(self) -> float:
        """The interval in seconds (0.0 when the heartbeat is off)."""
        return parse_duration(self.every, what="heartbeat.every")

    @property
    def enabled(self) -> bool:
        return self.interval_seconds > 0

    def zone(self) -> tzinfo:
        """The effective timezone: active hours' zone, else `timezone`, else the host's."""
        own = self.active_hours.timezone if self.active_hours is not None else None
        return resolve_timezone(own, self.timezone)
