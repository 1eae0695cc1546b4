"""Heartbeat behaviour on OpenClaw's own test inputs (issue 13) and the huge-interval fix (issue 12.10)."""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from openclaw_mini.heartbeat import (
    DEFAULT_PROMPT,
    ActiveHours,
    FakeClock,
    HeartbeatConfig,
    HeartbeatRequest,
    HeartbeatRunner,
    HeartbeatTask,
    HeartbeatTurn,
    parse_duration,
    parse_heartbeat,
    strip_heartbeat_ok,
)

BERLIN = ZoneInfo("Europe/Berlin")
MONDAY_10 = datetime(2025, 1, 6, 10, 0, tzinfo=BERLIN)


class Turns:
    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.prompts: list[str] = []
        self.tasks: list[list[str]] = []

    async def __call__(
        self, prompt: str, tasks: list[HeartbeatTask], request: HeartbeatRequest
    ) -> HeartbeatTurn:
        self.prompts.append(prompt)
        self.tasks.append([task.name for task in tasks])
        return HeartbeatTurn(text=self.replies.pop(0) if self.replies else "HEARTBEAT_OK", tokens=7)


def make(ws: Path, *replies: str, **config: object) -> tuple[HeartbeatRunner, Turns, list[str]]:
    values: dict[str, object] = {"every": "30m", "active_hours": None, "timezone": "Europe/Berlin"}
    values.update(config)
    turns, delivered = Turns(*replies), []
    runner = HeartbeatRunner(
        ws,
        HeartbeatConfig.model_validate(values),
        run_turn=turns,
        deliver=lambda text, request: delivered.append(text),
        clock=FakeClock(MONDAY_10),
    )
    return runner, turns, delivered


@pytest.mark.parametrize(
    "reply",
    ["... HEARTBEAT_OK !!!", "HEARTBEAT_OK.", "**HEARTBEAT_OK**", "HEARTBEAT_OK !!", "_HEARTBEAT_OK_ ."],
)
async def test_an_ack_with_punctuation_or_emphasis_reaches_nobody(tmp_path: Path, reply: str) -> None:
    (tmp_path / "HEARTBEAT.md").write_text("- [ ] check the oven\n", encoding="utf-8")
    runner, turns, delivered = make(tmp_path, reply)
    outcome = await runner.run_once()
    assert outcome.ran and len(turns.prompts) == 1
    assert outcome.delivered is None and delivered == []


@pytest.mark.parametrize(
    ("reply", "rest"),
    [
        ("The oven is still on HEARTBEAT_OK.", "The oven is still on."),
        ("The oven is still on! HEARTBEAT_OK.", "The oven is still on!"),
        ("Is the oven on? **HEARTBEAT_OK**", "Is the oven on?"),
    ],
)
def test_a_stripped_trailing_token_leaves_the_sentence_its_own_punctuation(reply: str, rest: str) -> None:
    assert strip_heartbeat_ok(reply) == (rest, True)


@pytest.mark.parametrize(
    "text",
    [
        # The upstream template pasted whole, fence and all.
        "```markdown\n# Keep this file empty (or with only comments) to skip heartbeat API calls.\n\n"
        "# Add tasks below when you want the agent to check something periodically.\n```\n",
        "# HEARTBEAT.md\n\n~~~\n# Example\n- [ ]\n~~~\n",
        "# HEARTBEAT.md\n\n<!-- Example:\n- [ ] Check email\n"
        "tasks:\n  - name: inbox\n    interval: 2h\n-->\n",
    ],
)
async def test_only_the_templates_example_block_is_effectively_empty(tmp_path: Path, text: str) -> None:
    assert parse_heartbeat(text).effectively_empty
    (tmp_path / "HEARTBEAT.md").write_text(text, encoding="utf-8")
    runner, turns, delivered = make(tmp_path, "Something to say.")
    outcome = await runner.run_once()
    assert outcome.skipped and outcome.reason == "HEARTBEAT.md is empty"
    assert turns.prompts == [] and delivered == []


async def test_an_unreadable_heartbeat_file_runs_with_the_default_prompt_and_reports_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "HEARTBEAT.md").mkdir()  # a directory where the file should be
    runner, turns, delivered = make(tmp_path, "The oven is on.")
    with caplog.at_level(logging.WARNING, logger="openclaw_mini.heartbeat"):
        outcome = await runner.run_once("interval")
    assert outcome.ran and turns.prompts[0].startswith(DEFAULT_PROMPT)
    assert delivered == ["The oven is on."]
    assert outcome.warnings and "HEARTBEAT.md" in outcome.warnings[0]
    assert "warning:" in outcome.summary()
    assert any("cannot read" in record.getMessage() for record in caplog.records)
    status = runner.status()
    assert status.would_run and any("cannot read" in problem for problem in status.problems)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
async def test_a_heartbeat_file_without_read_permission_still_runs(tmp_path: Path) -> None:
    path = tmp_path / "HEARTBEAT.md"
    path.write_text("- [ ] secret\n", encoding="utf-8")
    path.chmod(0)
    try:
        runner, turns, _ = make(tmp_path)
        outcome = await runner.run_once("interval")
    finally:
        path.chmod(0o600)
    assert outcome.ran and len(turns.prompts) == 1 and "Permission denied" in outcome.warnings[0]


async def test_a_prompt_override_is_trimmed_and_a_blank_one_means_the_default(tmp_path: Path) -> None:
    assert HeartbeatConfig(prompt="  Check the plants.\n").prompt == "Check the plants."
    assert HeartbeatConfig(prompt="   ").prompt is None
    runner, turns, _ = make(tmp_path, prompt="\n  Check the plants.  \n")
    await runner.run_once()
    assert turns.prompts[0].startswith("Check the plants.\n")


def test_timezone_user_means_the_users_zone_else_the_hosts() -> None:
    hours = ActiveHours(start="08:00", end="22:00", timezone="user")
    with_user_zone = HeartbeatConfig(active_hours=hours, timezone="Asia/Tokyo")
    assert str(with_user_zone.zone()) == "Asia/Tokyo"
    assert HeartbeatConfig(timezone=" User ").timezone is None
    from openclaw_mini.heartbeat.config import host_timezone

    assert HeartbeatConfig(active_hours=hours).zone() == host_timezone()


# ------------------------------------------------------------------ issue 12 item 10


def test_a_huge_duration_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="longer than the maximum"):
        parse_duration("3000000d", what="task 'x' interval")
    with pytest.raises(ValueError, match=r"heartbeat\.every"):
        HeartbeatConfig(every="99999999999999h")
    assert parse_duration("3650d") == 3650 * 86400


async def test_one_huge_task_interval_warns_with_its_line_and_the_other_tasks_still_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "HEARTBEAT.md").write_text(
        "tasks:\n  - name: forever\n    interval: 3000000d\n  - name: inbox\n    interval: 2h\n"
        "- [ ] water the plants\n",
        encoding="utf-8",
    )
    runner, turns, _ = make(tmp_path)
    status = runner.status()  # used to raise OverflowError
    assert status.problems == (
        "HEARTBEAT.md line 3: task 'forever' interval: '3000000d' is longer than the maximum of 10 years",
    )
    assert {task.name for task in status.tasks} == {"inbox", "water the plants"}
    with caplog.at_level(logging.WARNING, logger="openclaw_mini.heartbeat"):
        first = await runner.run_once("interval")
        await runner.clock.advance(3 * 3600)  # type: ignore[attr-defined]
        second = await runner.run_once("interval")
    assert first.ran and second.ran
    assert sorted(turns.tasks[0]) == ["inbox", "water the plants"]
    assert any("line 3" in record.getMessage() for record in caplog.records)
    assert runner.status(MONDAY_10 + timedelta(days=1)).would_run
