"""HeartbeatRunner on a fake clock: skips, replies, dedupe, persistence, scheduling, notes, status."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from openclaw_mini.heartbeat import (
    DEFAULT_PROMPT,
    ActiveHours,
    FakeClock,
    HeartbeatBusy,
    HeartbeatConfig,
    HeartbeatRequest,
    HeartbeatRunner,
    HeartbeatTask,
    HeartbeatTurn,
)

BERLIN = ZoneInfo("Europe/Berlin")
MONDAY_10 = datetime(2025, 1, 6, 10, 0, tzinfo=BERLIN)


class Turns:
    """A scripted `run_turn`: records prompts/tasks/requests and answers from a list."""

    def __init__(self, clock: FakeClock, *replies: str, tokens: int = 42) -> None:
        self.clock = clock
        self.replies = list(replies)
        self.tokens = tokens
        self.prompts: list[str] = []
        self.tasks: list[list[HeartbeatTask]] = []
        self.requests: list[HeartbeatRequest] = []
        self.times: list[datetime] = []
        self.error: Exception | None = None

    async def __call__(
        self, prompt: str, tasks: list[HeartbeatTask], request: HeartbeatRequest
    ) -> HeartbeatTurn:
        self.prompts.append(prompt)
        self.tasks.append(tasks)
        self.requests.append(request)
        self.times.append(self.clock.now())
        if self.error is not None:
            raise self.error
        text = self.replies.pop(0) if self.replies else "HEARTBEAT_OK"
        return HeartbeatTurn(text=text, tokens=self.tokens)


class Sink:
    def __init__(self) -> None:
        self.items: list[tuple[str, HeartbeatRequest]] = []

    def __call__(self, text: str, request: HeartbeatRequest) -> None:
        self.items.append((text, request))

    @property
    def texts(self) -> list[str]:
        return [text for text, _ in self.items]


def config(**overrides: Any) -> HeartbeatConfig:
    values: dict[str, Any] = {"every": "30m", "active_hours": None, "timezone": "Europe/Berlin"}
    values.update(overrides)
    return HeartbeatConfig(**values)


def write(ws: Path, text: str) -> None:
    (ws / "HEARTBEAT.md").write_text(text, encoding="utf-8")


def make(
    ws: Path, clock: FakeClock, *replies: str, cfg: HeartbeatConfig | None = None, **kwargs: Any
) -> tuple[HeartbeatRunner, Turns, Sink]:
    turns, sink = Turns(clock, *replies), Sink()
    runner = HeartbeatRunner(ws, cfg or config(), run_turn=turns, deliver=sink, clock=clock, **kwargs)
    return runner, turns, sink


# ---------------------------------------------------------------- skips that cost no model call


async def test_empty_file_is_skipped_without_a_model_call(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_10)
    write(tmp_path, "# Heartbeat\n\n- [ ]\n<!-- nothing yet -->\n")
    runner, turns, _ = make(tmp_path, clock)
    outcome = await runner.run_once()
    assert outcome.skipped and outcome.reason == "HEARTBEAT.md is empty"
    assert turns.prompts == [] and outcome.tokens == 0


async def test_missing_file_is_not_empty_and_runs(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_10)
    runner, turns, _ = make(tmp_path, clock)
    outcome = await runner.run_once()
    assert outcome.ran and len(turns.prompts) == 1


@pytest.mark.parametrize("reason", ["exec", "cron"])
async def test_exec_and_cron_wakes_bypass_the_file_checks(tmp_path: Path, reason: str) -> None:
    clock = FakeClock(MONDAY_10)
    write(tmp_path, "# nothing here\n")
    runner, turns, _ = make(tmp_path, clock)
    runner.request(reason)
    await clock.advance(0.3)
    assert len(turns.prompts) == 1
    assert turns.requests[0].reason == reason
    assert runner.last_outcome is not None and runner.last_outcome.ran
    # A plain request on the same empty file is skipped.
    runner.request("requested")
    await clock.advance(0.3)
    assert len(turns.prompts) == 1
    assert runner.last_outcome.reason == "HEARTBEAT.md is empty"
    await runner.aclose()


async def test_outside_active_hours_nothing_runs_unless_forced(tmp_path: Path) -> None:
    night = MONDAY_10.replace(hour=23)
    clock = FakeClock(night)
    write(tmp_path, "- [ ] check mail\n")
    cfg = config(active_hours=ActiveHours(start="08:00", end="22:00"))
    runner, turns, _ = make(tmp_path, clock, cfg=cfg)
    outcome = await runner.run_once()
    assert outcome.skipped and "outside active hours 08:00-22:00 Europe/Berlin" in outcome.reason
    exec_outcome = await runner.run_once("exec")
    assert exec_outcome.skipped  # exec bypasses the file checks, not the window
    assert turns.prompts == []
    forced = await runner.run_once(force=True)
    assert forced.ran and len(turns.prompts) == 1


async def test_nothing_due_is_skipped_and_says_when_the_next_task_is(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_10)
    write(
        tmp_path,
        "- [x] done already\n\ntasks:\n  - name: inbox\n    interval: 2h\n    prompt: Check the inbox.\n",
    )
    runner, turns, _ = make(tmp_path, clock)
    first = await runner.run_once()
    assert first.ran and [t.name for t in turns.tasks[0]] == ["inbox"]
    await clock.advance(3600)
    second = await runner.run_once()
    assert second.skipped and second.reason == "no task due (next: inbox at 2025-01-06 12:00)"
    await clock.advance(3600)
    third = await runner.run_once()
    assert third.ran and len(turns.prompts) == 2


async def test_only_due_tasks_are_sent(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_10)
    write(
        tmp_path,
        "- [ ] every time\n- [x] finished\ntasks:\n  - name: slow\n    interval: 1d\n"
        "  - name: fast\n    interval: 30m\n",
    )
    runner, turns, _ = make(tmp_path, clock)
    await runner.run_once()
    await clock.advance(1800)
    await runner.run_once()
    assert [t.name for t in turns.tasks[0]] == ["every time", "slow", "fast"]
    assert [t.name for t in turns.tasks[1]] == ["every time", "fast"]
    assert "finished" not in turns.prompts[0]


# ---------------------------------------------------------------- replies


@pytest.mark.parametrize(
    ("reply", "delivered"),
    [
        ("HEARTBEAT_OK", None),
        ("**HEARTBEAT_OK**", None),
        ("<b>HEARTBEAT_OK</b>", None),
        ("HEARTBEAT_OK!!!", None),
        ("`HEARTBEAT_OK`.", None),
        ("Nothing new. HEARTBEAT_OK", None),
        ("HEARTBEAT_OK - all quiet, the build is green.", None),
        ("", None),
        ("   \n", None),
        ("Your flight is delayed by 2 hours.", "Your flight is delayed by 2 hours."),
        ("Checked: HEARTBEAT_OK is not what I say here, the server is down.", None),
        ("HEARTBEAT_OK!!!!!", "HEARTBEAT_OK!!!!!"),
    ],
)
async def test_heartbeat_ok_variants(tmp_path: Path, reply: str, delivered: str | None) -> None:
    if reply.startswith("Checked:"):
        delivered = reply  # the token in the middle is left alone: the text is delivered whole
    clock = FakeClock(MONDAY_10)
    write(tmp_path, "- [ ] anything\n")
    runner, _, sink = make(tmp_path, clock, reply)
    outcome = await runner.run_once()
    assert outcome.ran
    assert outcome.delivered == delivered
    assert sink.texts == ([delivered] if delivered else [])


async def test_long_text_after_the_token_is_delivered_without_the_token(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_10)
    body = "Heads up: " + "the deploy failed and needs a look. " * 12
    runner, _, sink = make(tmp_path, clock, f"**HEARTBEAT_OK**\n\n{body}")
    outcome = await runner.run_once()
    assert outcome.delivered == body.strip()
    assert "HEARTBEAT_OK" not in sink.texts[0]
    short_runner, _, short_sink = make(tmp_path, clock, "HEARTBEAT_OK " + "x" * 300)
    assert (await short_runner.run_once()).delivered is None  # 300 chars left: still an ack
    assert short_sink.texts == []


async def test_ack_max_chars_is_configurable(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_10)
    runner, _, _ = make(tmp_path, clock, "HEARTBEAT_OK but one small thing.", cfg=config(ack_max_chars=10))
    assert (await runner.run_once()).delivered == "but one small thing."


# ---------------------------------------------------------------- dedupe and persistence


async def test_dedupe_across_a_restart(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_10)
    message = "It will rain at 5 pm; take an umbrella."
    first, _, sink1 = make(tmp_path, clock, message)
    assert (await first.run_once()).delivered == message
    await first.aclose()

    await clock.advance(3600)
    second, turns2, sink2 = make(tmp_path, clock, f"  {message}\n")
    outcome = await second.run_once()
    assert outcome.ran and outcome.delivered is None
    assert outcome.reason.startswith("duplicate of the delivery at 2025-01-06 10:00")
    assert sink2.texts == [] and len(turns2.prompts) == 1

    await clock.advance(24 * 3600)
    third, _, sink3 = make(tmp_path, clock, message)
    assert (await third.run_once()).delivered == message
    assert sink1.texts == [message] and sink3.texts == [message]


async def test_task_last_run_survives_a_restart(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_10)
    write(tmp_path, "tasks:\n  - name: inbox\n    interval: 2h\n")
    first, _, _ = make(tmp_path, clock)
    assert (await first.run_once()).ran
    await clock.advance(3600)
    second, turns, _ = make(tmp_path, clock)
    assert (await second.run_once()).skipped
    assert turns.prompts == []
    await clock.advance(3600)
    assert (await second.run_once()).ran


async def test_state_file_is_versioned_json(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_10)
    write(tmp_path, "tasks:\n  - name: inbox\n    interval: 2h\n")
    runner, _, _ = make(tmp_path, clock, "Something happened.")
    await runner.run_once()
    data = json.loads((tmp_path / ".openclaw-mini" / "heartbeat.json").read_text(encoding="utf-8"))
    assert data["v"] == 1
    assert data["tasks"]["inbox"]["last_run"].startswith("2025-01-06T10:00")
    assert data["deliveries"][-1]["text"] == "Something happened."
    assert list((tmp_path / ".openclaw-mini").glob("*.tmp")) == []


@pytest.mark.parametrize("content", ["{not json", '{"v": 99}', '{"v": 1, "tasks": 5}', "\xff\xfe"])
async def test_corrupt_state_warns_and_starts_fresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    state = tmp_path / ".openclaw-mini" / "heartbeat.json"
    state.parent.mkdir()
    state.write_bytes(content.encode("latin-1"))
    clock = FakeClock(MONDAY_10)
    runner, _, _ = make(tmp_path, clock, "hello")
    with caplog.at_level(logging.WARNING):
        outcome = await runner.run_once()
    assert outcome.delivered == "hello"
    assert "heartbeat state" in caplog.text and "starting fresh" in caplog.text
    assert json.loads(state.read_text(encoding="utf-8"))["v"] == 1
    assert (state.parent / "heartbeat.json.corrupt").read_bytes() == content.encode("latin-1")


# ---------------------------------------------------------------- scheduling


async def test_interval_ticks_stay_on_the_grid(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_10)
    write(tmp_path, "- [ ] look around\n")
    runner, turns, _ = make(tmp_path, clock)
    runner.start()
    await clock.advance(0)
    assert runner.next_run_at == MONDAY_10 + timedelta(minutes=30)
    for step in (700, 1300, 2000, 1, 2999, 4000):  # uneven steps must not matter
        await clock.advance(step)
    expected = [MONDAY_10 + timedelta(minutes=30 * k) for k in range(1, 7)]  # 11,000 s: six ticks
    assert turns.times == expected
    await runner.aclose()
    assert clock.pending_timers == 0


async def test_late_ticks_do_not_accumulate_drift(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_10)
    write(tmp_path, "- [ ] look around\n")
    runner, turns, _ = make(tmp_path, clock)
    runner.start()
    await clock.advance(0)
    for _ in range(5):
        await clock.advance(1790)
        clock.jump(0.3)  # the loop is busy: this tick fires 300 ms late
        await clock.advance(10)
    late = timedelta(milliseconds=300)
    assert turns.times == [MONDAY_10 + timedelta(minutes=30 * k) + late for k in range(1, 6)]
    await runner.aclose()


async def test_event_triggered_run_pushes_the_next_tick(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_10)
    write(tmp_path, "- [ ] look around\n")
    runner, turns, _ = make(tmp_path, clock)
    runner.start()
    await clock.advance(600)
    runner.request("exec")
    await clock.advance(0.25)
    exec_time = MONDAY_10 + timedelta(minutes=10, milliseconds=250)
    assert turns.times == [exec_time]
    assert runner.next_run_at == exec_time + timedelta(minutes=30)
    await clock.advance(1200)  # the old 10:30 slot passes without a run
    assert len(turns.times) == 1
    await clock.advance(600)
    assert turns.times[1] == exec_time + timedelta(minutes=30)
    await runner.aclose()


async def test_a_tick_that_comes_due_during_an_event_run_is_covered_by_it(tmp_path: Path) -> None:
    import asyncio

    clock = FakeClock(MONDAY_10)
    write(tmp_path, "- [ ] look around\n")
    gate, entered = asyncio.Event(), asyncio.Event()
    times: list[datetime] = []

    async def slow_turn(prompt: str, tasks: list[HeartbeatTask], request: HeartbeatRequest) -> HeartbeatTurn:
        times.append(clock.now())
        if request.reason == "exec":
            entered.set()
            await gate.wait()
        return HeartbeatTurn("HEARTBEAT_OK")

    runner = HeartbeatRunner(tmp_path, config(), run_turn=slow_turn, clock=clock)
    runner.start()
    await clock.advance(1790)
    runner.request("exec")
    await clock.advance(0.25, wait=False)
    await asyncio.wait_for(entered.wait(), timeout=5)
    await clock.advance(20, wait=False)  # the exec run is still going when the 10:30 slot passes
    gate.set()
    await clock.advance(60)
    assert times == [MONDAY_10 + timedelta(minutes=29, seconds=50, milliseconds=250)]
    assert (
        runner.last_outcome is not None
        and runner.last_outcome.reason == "a run finished since this tick was due"
    )
    assert runner.next_run_at == MONDAY_10 + timedelta(minutes=60)
    await clock.advance(1800)
    assert len(times) == 2
    await runner.aclose()


async def test_after_a_suspend_it_runs_once_not_a_burst(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_10)
    write(tmp_path, "- [ ] look around\n")
    runner, turns, _ = make(tmp_path, clock)
    runner.start()
    await clock.advance(300)
    clock.jump(6 * 3600)  # the laptop slept: wall time moved, timers did not
    await clock.advance(61)
    assert len(turns.times) == 1
    woke = turns.times[0]
    assert woke > MONDAY_10 + timedelta(hours=6)
    assert runner.next_run_at == woke + timedelta(minutes=30)
    assert clock.now() == woke + timedelta(seconds=1)
    await clock.advance(1798)
    assert len(turns.times) == 1
    await clock.advance(2)
    assert len(turns.times) == 2
    await runner.aclose()


async def test_restart_continues_the_schedule_and_runs_once_after_downtime(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_10)
    write(tmp_path, "- [ ] look around\n")
    first, turns1, _ = make(tmp_path, clock)
    first.start()
    await clock.advance(1800)
    assert turns1.times == [MONDAY_10 + timedelta(minutes=30)]
    await first.aclose()
    await clock.advance(600)  # restarted ten minutes later: the next tick keeps the old grid
    second, _, _ = make(tmp_path, clock)
    second.start()
    await clock.advance(0)
    assert second.next_run_at == MONDAY_10 + timedelta(minutes=60)
    await second.aclose()
    await clock.advance(5 * 3600)  # down for hours: one run at start, then the grid from there
    third, turns3, _ = make(tmp_path, clock)
    third.start()
    await clock.advance(1)
    assert len(turns3.times) == 1
    await third.aclose()


async def test_quiet_hours_move_the_next_tick_to_the_window_start(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_10.replace(hour=21, minute=50))
    write(tmp_path, "- [ ] look around\n")
    runner, turns, _ = make(tmp_path, clock, cfg=config(active_hours=ActiveHours(start="08:00", end="22:00")))
    runner.start()
    await clock.advance(0)
    tomorrow_eight = datetime(2025, 1, 7, 8, 0, tzinfo=BERLIN)
    assert runner.next_run_at == tomorrow_eight
    await clock.advance(10 * 3600 + 20 * 60)  # until 08:10
    assert turns.times == [tomorrow_eight]  # no wasted night ticks, first tick right at 08:00
    assert runner.next_run_at == tomorrow_eight + timedelta(minutes=30)
    await runner.aclose()


async def test_off_means_no_timer(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_10)
    runner, turns, _ = make(tmp_path, clock, cfg=config(every="0m"))
    runner.start()
    runner.request("exec")
    await clock.advance(7200)
    assert turns.prompts == [] and clock.pending_timers == 0
    assert runner.status().would_reason == "heartbeat is off (every=0)"
    await runner.aclose()


async def test_cron_task_wakes_the_heartbeat_on_time(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_10.replace(hour=8, minute=10))
    write(
        tmp_path, 'tasks:\n  - name: standup\n    cron: "0 9 * * 1-5"\n    prompt: Standup in 15 minutes.\n'
    )
    runner, turns, _ = make(tmp_path, clock, cfg=config(every="4h"))
    runner.start()
    await clock.advance(0)
    assert runner.status().cron_next_at == MONDAY_10.replace(hour=9)
    await clock.advance(3600)
    assert len(turns.times) == 1
    assert turns.times[0] == MONDAY_10.replace(hour=9, minute=0, second=0, microsecond=250000)
    assert turns.requests[0].reason == "cron"
    assert [t.name for t in turns.tasks[0]] == ["standup"]
    await runner.aclose()


# ---------------------------------------------------------------- notes, callback, errors, logs


async def test_exec_note_reaches_the_next_prompt_marked_untrusted_then_is_consumed(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_10)
    write(tmp_path, "# empty on purpose\n")
    runner, turns, _ = make(tmp_path, clock)
    runner.notify_exec("job-7", 0, "line1\n" + "x" * 1000 + "\nall tests passed")
    await clock.advance(0.3)
    assert len(turns.prompts) == 1
    prompt = turns.prompts[0]
    assert "Exec completed (job-7, code 0) :: …" in prompt
    assert prompt.rstrip().count("all tests passed") == 1
    assert "UNTRUSTED" in prompt and '<system-note untrusted="true">' in prompt
    assert turns.requests[0].notes and turns.requests[0].reason == "exec"
    assert runner.pending_notes == ()
    again = await runner.run_once("exec")
    assert again.ran and "Exec completed" not in turns.prompts[1]
    await runner.aclose()


async def test_a_failed_turn_keeps_notes_and_task_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(MONDAY_10)
    write(tmp_path, "tasks:\n  - name: inbox\n    interval: 2h\n")
    runner, turns, _ = make(tmp_path, clock)
    runner.add_system_note("Exec completed (a, code 1) :: oops")
    turns.error = ConnectionError("model unreachable")
    with caplog.at_level(logging.ERROR):
        outcome = await runner.run_once()
    assert outcome.status == "error" and "model unreachable" in outcome.reason
    assert runner.pending_notes == ("Exec completed (a, code 1) :: oops",)
    turns.error = None
    retried = await runner.run_once()
    assert retried.ran and [t.name for t in turns.tasks[1]] == ["inbox"]


async def test_busy_target_is_retried_by_the_wake_layer(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_10)
    write(tmp_path, "- [ ] look around\n")
    runner, turns, _ = make(tmp_path, clock)
    turns.error = HeartbeatBusy("main session is in a run")
    runner.request("exec")
    await clock.advance(0.25)
    assert runner.last_outcome is not None and runner.last_outcome.busy
    turns.error = None
    await clock.advance(1.0)
    assert len(turns.prompts) == 2 and runner.last_outcome.ran
    assert turns.requests[1].reason == "retry" and "exec" in turns.requests[1].reasons
    await runner.aclose()


async def test_callback_mode_gets_tasks_and_request_and_no_model_call(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_10)
    write(tmp_path, "- [ ] water the plants\n- [x] done\n")
    seen: list[tuple[list[str], str]] = []

    async def callback(tasks: list[HeartbeatTask], request: HeartbeatRequest) -> None:
        seen.append(([t.prompt for t in tasks], request.reason))

    turns = Turns(clock)
    runner = HeartbeatRunner(tmp_path, config(), run_turn=turns, callback=callback, clock=clock)
    outcome = await runner.run_once("manual")
    assert outcome.ran and outcome.reason == "callback"
    assert seen == [(["water the plants"], "manual")] and turns.prompts == []
    sync_seen: list[int] = []
    sync_runner = HeartbeatRunner(
        tmp_path, config(), callback=lambda t, r: sync_seen.append(len(t)), clock=clock
    )
    assert (await sync_runner.run_once()).ran and sync_seen == [1]


async def test_one_log_line_per_run_with_outcome_tokens_and_duration(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(MONDAY_10)
    write(tmp_path, "- [ ] look around\n")
    outcomes: list[Any] = []
    runner, _, _ = make(tmp_path, clock, "HEARTBEAT_OK", on_log=outcomes.append)
    with caplog.at_level(logging.INFO, logger="openclaw_mini.heartbeat.runner"):
        await runner.run_once()
        write(tmp_path, "")
        await runner.run_once()
    lines = [r for r in caplog.records if hasattr(r, "heartbeat_outcome")]
    assert len(lines) == 2 and len(outcomes) == 2
    assert "heartbeat ran: HEARTBEAT_OK (reason=manual, tasks=1, tokens=42," in lines[0].getMessage()
    assert lines[0].getMessage().endswith(" ms)")
    assert "heartbeat skipped: HEARTBEAT.md is empty" in lines[1].getMessage()


async def test_many_wakes_in_one_window_make_one_model_call(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_10)
    write(tmp_path, "- [ ] look around\n")
    runner, turns, _ = make(tmp_path, clock)
    for reason in ("requested", "exec", "cron", "interval") * 25:
        runner.request(reason)
    await clock.advance(1)
    assert len(turns.prompts) == 1 and turns.requests[0].coalesced == 100
    await runner.aclose()


# ---------------------------------------------------------------- prompt, session, status


async def test_prompt_has_instructions_tasks_and_time_with_timezone(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_10)
    write(
        tmp_path, "- [ ] check mail\ntasks:\n  - name: inbox\n    interval: 1h\n    prompt: Scan the inbox.\n"
    )
    runner, turns, _ = make(tmp_path, clock)
    await runner.run_once()
    prompt = turns.prompts[0]
    assert prompt.startswith(DEFAULT_PROMPT)
    assert (
        "HEARTBEAT_OK" in DEFAULT_PROMPT
        and "strictly" in DEFAULT_PROMPT
        and "repeat old tasks" in DEFAULT_PROMPT
    )
    assert "- check mail" in prompt and "- [inbox] Scan the inbox." in prompt
    assert "Current time: Monday 2025-01-06 10:00 Europe/Berlin (UTC+01:00)" in prompt
    custom, custom_turns, _ = make(tmp_path, clock, cfg=config(prompt="Be brief."))
    await custom.run_once()
    assert custom_turns.prompts[0].startswith("Be brief.") and DEFAULT_PROMPT not in custom_turns.prompts[0]


async def test_session_is_fixed_by_default_and_fresh_when_isolated(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_10)
    runner, turns, _ = make(tmp_path, clock)
    await runner.run_once()
    assert turns.requests[0].session == "main"
    isolated, iso_turns, _ = make(tmp_path, clock, cfg=config(isolated_session=True))
    await isolated.run_once()
    await clock.advance(60)
    await isolated.run_once()
    sessions = [r.session for r in iso_turns.requests]
    assert sessions == ["heartbeat-20250106-100000", "heartbeat-20250106-100100"]


async def test_status_reports_schedule_tasks_and_a_dry_run(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_10)
    write(tmp_path, "- [ ] check mail\n- [x] old\n- [?] odd\ntasks:\n  - name: inbox\n    interval: 2h\n")
    cfg = config(active_hours=ActiveHours(start="08:00", end="22:00"))
    runner, _, _ = make(tmp_path, clock, "Mail from the bank.", cfg=cfg)
    before = runner.status()
    assert before.would_run and before.would_reason == "would run with 2 due task(s)"
    assert before.in_active_hours and before.active_hours == "08:00-22:00 Europe/Berlin"
    assert before.next_run_at == MONDAY_10 + timedelta(minutes=30)
    assert before.problems == ("HEARTBEAT.md line 3: unknown checkbox mark [?] (use [ ] or [x])",)
    assert before.done_tasks == ("old",)
    await runner.run_once()
    after = runner.status()
    assert after.last_delivery_text == "Mail from the bank."
    assert after.last_delivery_at == MONDAY_10
    inbox = next(t for t in after.tasks if t.name == "inbox")
    assert not inbox.due and inbox.next_due_at == MONDAY_10 + timedelta(hours=2)
    assert inbox.last_run == MONDAY_10
    mail = next(t for t in after.tasks if t.name == "check mail")
    assert mail.due and mail.next_due_at is None and mail.schedule == "every heartbeat"
    night = runner.status(MONDAY_10.replace(hour=23))
    assert not night.would_run and night.would_reason.startswith("outside active hours")
    assert not night.in_active_hours
    write(tmp_path, "# nothing\n")
    assert runner.status().would_reason == "HEARTBEAT.md is empty"


def test_status_works_without_a_loop_or_a_model(tmp_path: Path) -> None:
    runner = HeartbeatRunner(tmp_path, config(), clock=FakeClock(datetime(2025, 1, 6, 9, 0, tzinfo=UTC)))
    status = runner.status()
    assert not status.file_exists and status.would_run and status.started is False
    assert status.timezone == "Europe/Berlin (UTC+01:00)"


def test_start_needs_a_running_loop(tmp_path: Path) -> None:
    runner = HeartbeatRunner(tmp_path, config())
    with pytest.raises(RuntimeError, match="running event loop"):
        runner.start()


async def test_real_time_interval_fires_about_once_per_interval(tmp_path: Path) -> None:
    import asyncio
    import time

    write(tmp_path, "- [ ] look around\n")
    ticks: list[float] = []

    async def run_turn(prompt: str, tasks: list[HeartbeatTask], request: HeartbeatRequest) -> HeartbeatTurn:
        ticks.append(time.monotonic())
        return HeartbeatTurn("HEARTBEAT_OK")

    runner = HeartbeatRunner(tmp_path, config(every="200ms"), run_turn=run_turn)
    start = time.monotonic()
    runner.start()
    await asyncio.sleep(1.1)
    await runner.aclose()
    assert 4 <= len(ticks) <= 6, ticks
    offsets = [t - start for t in ticks]
    # On the grid: the k-th tick lands near k * 200 ms, late by a little, never drifting further.
    for k, offset in enumerate(offsets, start=1):
        assert k * 0.2 - 0.01 <= offset <= k * 0.2 + 0.12, offsets
