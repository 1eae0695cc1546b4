"""Heartbeat config: durations, active hours (midnight wrap, 24:00, timezones) and clear errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from openclaw_mini.heartbeat import ActiveHours, HeartbeatConfig, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        ("1.5h", 5400),
        ("2d", 172800),
        ("15", 900),
        (15, 900),
        ("0", 0),
        ("0m", 0),
        ("off", 0),
        (timedelta(minutes=2), 120),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["abc", "5x", "1h30", "-5m", "m5", "1h-30m"])
def test_parse_duration_rejects_garbage_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="every"):
        parse_duration(text, what="heartbeat.every")


def test_format_duration_round_trips_common_values() -> None:
    for text in ("500ms", "30s", "5m", "1h", "1h30m"):
        assert format_duration(parse_duration(text)) == text
    assert format_duration(0) == "off"


def test_config_defaults_and_off_switch() -> None:
    config = HeartbeatConfig()
    assert config.interval_seconds == 1800
    assert config.enabled
    assert config.active_hours == ActiveHours(start="08:00", end="22:00")
    assert config.dedupe_hours == 24 and config.ack_max_chars == 300 and config.session == "main"
    for off in ("0", "0m", 0, None):
        assert not HeartbeatConfig(every=off).enabled  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"start": "25:00"}, "active_hours.start"),
        ({"start": "24:00"}, "only as the end"),
        ({"end": "24:30"}, "active_hours.end"),
        ({"start": "8am"}, "HH:MM"),
        ({"end": "12:60"}, "active_hours.end"),
        ({"timezone": "Mars/Olympus"}, "unknown timezone"),
    ],
)
def test_bad_active_hours_are_clear_errors(kwargs: dict[str, str], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        ActiveHours(**kwargs)


def test_bad_config_values_are_clear_errors() -> None:
    with pytest.raises(ValidationError, match=r"heartbeat\.every"):
        HeartbeatConfig(every="soon")
    with pytest.raises(ValidationError, match="unknown timezone"):
        HeartbeatConfig(timezone="Nowhere/Land")
    with pytest.raises(ValidationError, match="extra"):
        HeartbeatConfig(evry="5m")  # type: ignore[call-arg]


def _at(hour: int, minute: int = 0, tz: str = "UTC") -> datetime:
    return datetime(2025, 1, 8, hour, minute, tzinfo=ZoneInfo(tz))


def test_window_across_midnight() -> None:
    night = ActiveHours(start="22:00", end="06:00")
    utc = ZoneInfo("UTC")
    assert night.contains(_at(23), utc)
    assert night.contains(_at(0, 30), utc)
    assert night.contains(_at(5, 59), utc)
    assert night.contains(_at(22), utc)
    assert not night.contains(_at(6), utc)
    assert not night.contains(_at(12), utc)
    assert not night.contains(_at(21, 59), utc)


def test_end_24_00_and_start_equals_end() -> None:
    utc = ZoneInfo("UTC")
    evening = ActiveHours(start="18:00", end="24:00")
    assert evening.contains(_at(23, 59), utc)
    assert not evening.contains(_at(0, 0), utc)
    whole_day = ActiveHours(start="00:00", end="24:00")
    assert all(whole_day.contains(_at(h), utc) for h in range(24))
    never = ActiveHours(start="09:00", end="09:00")
    assert never.never
    assert not any(never.contains(_at(h), utc) for h in range(24))
    assert never.next_start(_at(3), utc) is None


def test_window_in_another_timezone() -> None:
    new_york = ActiveHours(start="09:00", end="17:00", timezone="America/New_York")
    config = HeartbeatConfig(active_hours=new_york)
    tz = config.zone()
    # 14:00 UTC is 09:00 in New York in January (UTC-5): inside; 13:59 UTC is 08:59: outside.
    assert new_york.contains(datetime(2025, 1, 8, 14, 0, tzinfo=UTC), tz)
    assert not new_york.contains(datetime(2025, 1, 8, 13, 59, tzinfo=UTC), tz)
    assert new_york.contains(datetime(2025, 1, 8, 21, 59, tzinfo=UTC), tz)
    assert not new_york.contains(datetime(2025, 1, 8, 22, 0, tzinfo=UTC), tz)
    # In July (UTC-4) the same window starts an hour earlier in UTC.
    assert new_york.contains(datetime(2025, 7, 8, 13, 0, tzinfo=UTC), tz)


def test_zone_falls_back_to_config_timezone() -> None:
    config = HeartbeatConfig(active_hours=ActiveHours(start="08:00", end="09:00"), timezone="Asia/Tokyo")
    assert str(config.zone()) == "Asia/Tokyo"
    own = HeartbeatConfig(active_hours=ActiveHours(timezone="Europe/Berlin"), timezone="Asia/Tokyo")
    assert str(own.zone()) == "Europe/Berlin"


def test_next_start_finds_the_window_opening() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    hours = ActiveHours(start="08:00", end="22:00")
    late = datetime(2025, 1, 8, 23, 0, tzinfo=berlin)
    assert hours.next_start(late, berlin) == datetime(2025, 1, 9, 8, 0, tzinfo=berlin)
    early = datetime(2025, 1, 8, 6, 0, tzinfo=berlin)
    assert hours.next_start(early, berlin) == datetime(2025, 1, 8, 8, 0, tzinfo=berlin)
    inside = datetime(2025, 1, 8, 12, 0, tzinfo=berlin)
    assert hours.next_start(inside, berlin) == inside


def test_coerce_reads_an_empty_dict_as_off() -> None:
    assert not HeartbeatConfig.coerce({}).enabled
    assert not HeartbeatConfig.coerce(False).enabled
    assert not HeartbeatConfig.coerce("off").enabled
    assert not HeartbeatConfig.coerce(0).enabled
    assert HeartbeatConfig.coerce(None) == HeartbeatConfig()
    assert HeartbeatConfig.coerce(True) == HeartbeatConfig()
    assert HeartbeatConfig.coerce("1h").interval_seconds == 3600
    nested = HeartbeatConfig.coerce({"every": "2h", "active_hours": {"start": "09:00", "end": "17:00"}})
    assert nested.active_hours == ActiveHours(start="09:00", end="17:00")
    with pytest.raises(ValidationError, match=r"active_hours\.start"):
        HeartbeatConfig.coerce({"active_hours": {"start": "25:00"}})
    with pytest.raises(ValueError, match="heartbeat"):
        HeartbeatConfig.coerce([1, 2])


def test_public_names_and_import_lightness() -> None:
    import subprocess
    import sys

    import openclaw_mini.heartbeat as heartbeat

    for name in ("HeartbeatWake", "HeartbeatRunner", "HeartbeatConfig", "ActiveHours", "HeartbeatRequest"):
        assert name in heartbeat.__all__
    assert "HeartbeatTask" in heartbeat.__all__
    assert all(hasattr(heartbeat, name) for name in heartbeat.__all__)
    code = (
        "import sys, openclaw_mini.heartbeat as h; "
        "h.parse_heartbeat('- [ ] a\\ntasks:\\n  - name: b\\n    interval: 1h\\n'); "
        "print(sorted(m for m in ('anthropic', 'croniter', 'rich', 'typer') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
