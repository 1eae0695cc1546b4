"""HEARTBEAT.md parsing and task due computation (interval and cron, in a timezone)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from openclaw_mini.heartbeat import HeartbeatTask, load_heartbeat_file, parse_heartbeat

SAMPLE = """\
# Heartbeat checklist
<!-- the agent reads this every 30 minutes -->

- [ ] Check email for anything urgent
  - especially from the landlord
- [x] Renew the passport
- Review the calendar for tomorrow
- [ ]
-
* [X] Also done
1. [ ] Numbered open item
- [WIP] bracketed text is a plain item
- [y] not a real checkbox

tasks:
  - name: inbox
    interval: 2h
    prompt: Check the inbox for anything urgent.
  - name: standup
    cron: "0 9 * * 1-5"
    prompt: "Remind me about the standup."
  - name: broken
    interval: soon
  - prompt: no name here
  - name: weekly
    every: 7d
    colour: blue
"""


def test_sample_file() -> None:
    parsed = parse_heartbeat(SAMPLE)
    kinds = {task.name: task.kind for task in parsed.tasks}
    assert kinds == {
        "Check email for anything urgent": "checklist",
        "Review the calendar for tomorrow": "item",
        "Numbered open item": "checklist",
        "[WIP] bracketed text is a plain item": "item",
        "inbox": "interval",
        "standup": "cron",
        "weekly": "interval",
    }
    email = parsed.tasks[0]
    assert email.line == 4
    assert "especially from the landlord" in email.prompt
    assert [task.name for task in parsed.done] == ["Renew the passport", "Also done"]
    inbox = next(task for task in parsed.tasks if task.name == "inbox")
    assert inbox.interval_seconds == 7200 and inbox.prompt == "Check the inbox for anything urgent."
    standup = next(task for task in parsed.tasks if task.name == "standup")
    assert standup.cron == "0 9 * * 1-5" and standup.prompt == "Remind me about the standup."
    assert not parsed.effectively_empty


def test_malformed_lines_are_reported_with_line_numbers_and_skipped() -> None:
    parsed = parse_heartbeat(SAMPLE)
    by_line = {problem.line: problem.message for problem in parsed.problems}
    assert set(by_line) == {13, 23, 24, 27}
    assert "unknown checkbox mark [y]" in by_line[13]
    assert "cannot read 'soon'" in by_line[23]
    assert "no name" in by_line[24]
    assert "unknown task key 'colour'" in by_line[27]
    assert str(parsed.problems[0]).startswith("HEARTBEAT.md line 13:")
    # The broken and nameless tasks were skipped; the rest still counts.
    assert "broken" not in {task.name for task in parsed.tasks}


def test_effectively_empty_file() -> None:
    text = "# Heartbeat\n\n## Nothing yet\n<!--\n- [ ] commented out\n-->\n- [ ]\n-\n```\n```\n\n"
    parsed = parse_heartbeat(text)
    assert parsed.effectively_empty
    assert parsed.tasks == [] and parsed.problems == []


def test_free_text_is_content_but_not_a_task() -> None:
    parsed = parse_heartbeat("Tell me if it will rain tomorrow.\n")
    assert not parsed.effectively_empty and parsed.tasks == []
    assert parsed.instructions == ["Tell me if it will rain tomorrow."]


def test_fenced_code_is_not_tasks_but_a_fenced_tasks_block_is() -> None:
    text = "```bash\n- rm -rf build\n```\n```yaml\ntasks:\n  - name: backup\n    interval: 1d\n```\n"
    parsed = parse_heartbeat(text)
    assert [task.name for task in parsed.tasks] == ["backup"]
    assert parsed.instructions == ["- rm -rf build"]


def test_missing_file_is_not_empty(tmp_path: Path) -> None:
    parsed = load_heartbeat_file(tmp_path)
    assert not parsed.exists
    assert not parsed.effectively_empty
    (tmp_path / "HEARTBEAT.md").write_text("- [ ] water the plants\n", encoding="utf-8")
    assert [task.prompt for task in load_heartbeat_file(tmp_path).tasks] == ["water the plants"]


def test_unclosed_comment_and_bad_cron_and_both_schedules() -> None:
    text = (
        "tasks:\n  - name: a\n    cron: 61 * * * *\n"
        "  - name: b\n    interval: 1h\n    cron: 0 9 * * *\n<!-- open\n"
    )
    parsed = parse_heartbeat(text)
    messages = {problem.line: problem.message for problem in parsed.problems}
    assert "invalid cron expression" in messages[3]
    assert "both interval and cron" in messages[6]
    assert "never closed" in messages[7]
    assert parsed.tasks == []


def test_interval_due_computation() -> None:
    tz = ZoneInfo("UTC")
    task = HeartbeatTask(name="inbox", prompt="x", kind="interval", interval_seconds=7200)
    now = datetime(2025, 1, 8, 12, 0, tzinfo=UTC)
    assert task.is_due(now, None, now, tz)  # never ran
    ran = now - timedelta(hours=1)
    assert not task.is_due(now, ran, ran, tz)
    assert task.next_due(now, ran, ran, tz) == ran + timedelta(hours=2)
    assert task.is_due(ran + timedelta(hours=2), ran, ran, tz)
    every = HeartbeatTask(name="x", prompt="x", kind="checklist")
    assert every.is_due(now, now, now, tz) and every.next_due(now, now, now, tz) is None


def test_cron_due_computation_in_the_configured_timezone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    task = HeartbeatTask(name="standup", prompt="x", kind="cron", cron="0 9 * * 1-5")
    # First seen on Wednesday 15:00 Berlin: not due at once, due from Thursday 09:00 Berlin.
    seen = datetime(2025, 1, 8, 15, 0, tzinfo=berlin)
    assert not task.is_due(seen, None, seen, berlin)
    thursday_nine = datetime(2025, 1, 9, 9, 0, tzinfo=berlin)
    assert task.next_due(seen, None, seen, berlin) == thursday_nine
    assert not task.is_due(thursday_nine - timedelta(minutes=1), None, seen, berlin)
    assert task.is_due(thursday_nine, None, seen, berlin)
    # 08:00 UTC is 09:00 in Berlin in winter: the schedule follows Berlin, not UTC.
    assert task.is_due(datetime(2025, 1, 9, 8, 0, tzinfo=UTC), None, seen, berlin)
    assert not task.is_due(datetime(2025, 1, 9, 7, 59, tzinfo=UTC), None, seen, berlin)
    # Once run on Thursday, it waits for Friday; the weekend is skipped.
    ran = thursday_nine + timedelta(minutes=5)
    assert not task.is_due(thursday_nine + timedelta(hours=5), ran, seen, berlin)
    friday = datetime(2025, 1, 10, 9, 0, tzinfo=berlin)
    assert task.next_due(thursday_nine + timedelta(hours=5), ran, seen, berlin) == friday
    ran_friday = friday + timedelta(minutes=1)
    monday = datetime(2025, 1, 13, 9, 0, tzinfo=berlin)
    assert task.next_due(friday + timedelta(hours=1), ran_friday, seen, berlin) == monday
    # Missed for days: due once, not once per missed day.
    assert task.is_due(datetime(2025, 1, 20, 12, 0, tzinfo=berlin), ran_friday, seen, berlin)
