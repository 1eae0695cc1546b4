"""The heartbeat through the agent: deliver mode, callback mode, dedupe, and exec completion."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from openclaw_mini import HeartbeatConfig, SandboxConfig
from openclaw_mini.testing import FakeAnthropicServer, RecordedRequest, text_reply, tool_reply


def _config(**overrides: Any) -> HeartbeatConfig:
    return HeartbeatConfig(**{"every": "1h", "active_hours": None, **overrides})


async def _wait_for(predicate: Any) -> None:
    """Poll a condition set by a background task (bounded: fails the test after 10 s)."""
    async with asyncio.timeout(10):
        while not predicate():  # noqa: ASYNC110 - the condition has no event to wait on
            await asyncio.sleep(0.02)


async def test_deliver_mode_runs_a_turn_and_suppresses_duplicates(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    (workspace / "HEARTBEAT.md").write_text("# Checks\n- [ ] Look for urgent mail\n- [x] Done already\n")
    fake_server.queue(
        text_reply("You have 2 urgent emails."),
        text_reply("You have 2 urgent emails."),
        text_reply("HEARTBEAT_OK"),
    )
    agent = make_agent(heartbeat=_config())
    delivered: list[str] = []
    agent.start_heartbeat(deliver=lambda text, request: delivered.append(text))
    agent.request_heartbeat("manual")
    await _wait_for(lambda: bool(delivered))
    assert delivered == ["You have 2 urgent emails."]
    prompt = json.dumps(fake_server.requests[0].messages[-1])
    assert "Look for urgent mail" in prompt and "Done already" not in prompt
    assert "HEARTBEAT_OK" in prompt  # the default prompt says how to answer when nothing is due

    second = await agent.run_heartbeat_once("manual")
    third = await agent.run_heartbeat_once("manual")
    assert delivered == ["You have 2 urgent emails."]  # same text within 24 h: suppressed
    assert second.delivered is None and third.delivered is None
    await agent.stop_heartbeat()


async def test_empty_heartbeat_file_makes_no_model_call(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    (workspace / "HEARTBEAT.md").write_text("# Heartbeat\n\n<!-- - [ ] an example -->\n- [ ]\n")
    agent = make_agent(heartbeat=_config())
    outcome = await agent.run_heartbeat_once("interval")
    assert outcome.skipped and fake_server.requests == []


async def test_callback_mode_hands_tasks_to_user_code(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    (workspace / "HEARTBEAT.md").write_text("- [ ] Water the plants\n")
    agent = make_agent(heartbeat=_config())
    seen: list[tuple[list[str], str]] = []

    async def on_tasks(tasks: Any, request: Any) -> None:
        seen.append(([t.prompt for t in tasks], request.reason))

    agent.start_heartbeat(on_tasks)
    agent.request_heartbeat("manual")
    await _wait_for(lambda: bool(seen))
    assert seen == [(["Water the plants"], "manual")]
    assert fake_server.requests == []
    await agent.stop_heartbeat()


async def test_background_exec_wakes_the_heartbeat_with_its_output(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    (workspace / "HEARTBEAT.md").write_text("# nothing scheduled\n")

    def handler(request: RecordedRequest) -> Any:
        text = json.dumps(request.messages)
        if "Exec completed" in text:
            return text_reply("The backup finished: backup-ok-42.")
        if request.messages[-1]["content"][0].get("type") == "tool_result":
            return text_reply("Started the backup.")
        return tool_reply(("exec", {"command": "echo backup-ok-42", "background": True}))

    fake_server.handler = handler
    agent = make_agent(heartbeat=_config(), sandbox=SandboxConfig(allow_exec=True))
    delivered: list[tuple[str, str]] = []
    agent.start_heartbeat(deliver=lambda text, request: delivered.append((text, request.reason)))
    result = await agent.run("chat", "run the backup in the background")
    assert "exec-" in result.tool_calls[0].output
    await _wait_for(lambda: bool(delivered))
    assert delivered == [("The backup finished: backup-ok-42.", "exec")]
    note_request = next(r for r in fake_server.requests if "Exec completed" in json.dumps(r.messages))
    assert "untrusted" in json.dumps(note_request.messages).lower()
    await agent.stop_heartbeat()


async def test_heartbeat_off_values(make_agent) -> None:
    for off in ({}, False, "off", 0):
        agent = make_agent(heartbeat=off)
        assert agent.heartbeat_config.interval_seconds == 0
