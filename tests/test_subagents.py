"""Sub-agents through `sessions_spawn`, and the session inspection tools."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from openclaw_mini.testing import FakeAnthropicServer, RecordedRequest, text_reply, tool_reply


def _is_child(request: RecordedRequest) -> bool:
    return "Summarise README" in json.dumps(request.messages[:1])


async def test_spawn_waits_and_returns_the_child_text(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    (workspace / "AGENTS.md").write_text("agents rules")
    (workspace / "SOUL.md").write_text("parent persona only")
    (workspace / "README.md").write_text("A tiny project.")

    def handler(request: RecordedRequest):
        if _is_child(request):
            if request.messages[-1]["content"][0].get("type") == "tool_result":
                return text_reply("It is a tiny project.")
            return tool_reply(("read", {"path": "README.md"}))
        if request.messages[-1]["content"][0].get("type") == "tool_result":
            return text_reply("The child says: tiny.")
        return tool_reply(
            (
                "sessions_spawn",
                {"task": "Summarise README.md in one line.", "label": "reader", "tools": ["read", "ls"]},
            )
        )

    fake_server.handler = handler
    agent = make_agent()
    events = [e async for e in agent.stream("s", "delegate it")]
    result = events[-1].result
    assert result is not None and result.text == "The child says: tiny."
    spawn = result.tool_calls[0]
    assert not spawn.is_error and "It is a tiny project." in spawn.output
    progress = [e for e in events if e.type == "subagent"]
    assert [e.data["event"] for e in progress] == ["tool_start", "tool_end"]
    assert progress[0].tool is not None and progress[0].tool.name == "read"

    child_requests = [r for r in fake_server.requests if _is_child(r)]
    assert sorted(t["name"] for t in child_requests[0].tools) == ["ls", "read"]
    assert "agents rules" in child_requests[0].system
    assert "parent persona only" not in child_requests[0].system  # sub-agent allow-list
    child_sessions = list((workspace / ".openclaw-mini" / "sessions" / "main").glob("subagent*.jsonl"))
    assert len(child_sessions) == 1


async def test_child_cannot_get_more_tools_or_spawn_beyond_depth(
    make_agent, fake_server: FakeAnthropicServer
) -> None:
    fake_server.queue(tool_reply(("sessions_spawn", {"task": "x", "tools": ["exec"]})), text_reply("ok"))
    agent = make_agent()
    result = await agent.run("s", "spawn with exec")
    assert result.tool_calls[0].is_error and "not available: exec" in result.tool_calls[0].output

    child = agent.spawn_child()
    assert "sessions_spawn" not in [t.name for t in child.tools]
    await child.aclose()
    deeper = make_agent(max_spawn_depth=0)
    assert "sessions_spawn" not in [t.name for t in deeper.tools]


async def test_background_spawn_writes_into_the_parent_and_wakes_the_heartbeat(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    release = asyncio.Event()

    def handler(request: RecordedRequest):
        if "nightly crunch" in json.dumps(request.messages[:1]):
            return text_reply("background result 42")
        if request.messages[-1]["content"][0].get("type") == "tool_result":
            return text_reply("started it")
        return tool_reply(("sessions_spawn", {"task": "nightly crunch", "background": True}))

    fake_server.handler = handler
    agent = make_agent()
    wakes: list[str] = []

    class FakeHeartbeat:
        def request(self, reason: str) -> None:
            wakes.append(reason)
            release.set()

        async def aclose(self) -> None:
            return None

    agent._services.heartbeat.runner = FakeHeartbeat()  # type: ignore[assignment]  # the real runner: heartbeat tests
    result = await agent.run("s", "start it")
    assert "started in the background" in result.tool_calls[0].output
    await asyncio.wait_for(release.wait(), 10)
    assert wakes == ["exec"]
    lines = [
        json.loads(x) for x in (workspace / ".openclaw-mini/sessions/main/s.jsonl").read_text().splitlines()
    ]
    notes = [x for x in lines if x.get("custom_type") == "subagent_result"]
    assert notes and "background result 42" in notes[0]["message"]
    fake_server.handler = None
    fake_server.queue(text_reply("seen"))
    await agent.run("s", "what happened?")
    assert "background result 42" in json.dumps(fake_server.requests[-1].messages)


async def test_sessions_list_and_history(make_agent, fake_server: FakeAnthropicServer) -> None:
    agent = make_agent()
    fake_server.queue(text_reply("first answer"))
    await agent.run("other", "first question")
    fake_server.queue(
        tool_reply(("sessions_list", {}), ("sessions_history", {"session": "other"})), text_reply("done")
    )
    result = await agent.run("s", "look around")
    listing, history = (call.output for call in result.tool_calls)
    assert "agent:main:other" in listing
    assert "user: first question" in history and "assistant: first answer" in history
