"""The agent's tool loop through the real anthropic SDK and the fake Messages API."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from openclaw_mini import Agent, ModelError, ToolContext, ToolPolicy, tool
from openclaw_mini.testing import (
    FakeAnthropicServer,
    ScriptedModel,
    error_reply,
    text_reply,
    thinking_reply,
    tool_reply,
)


def _roles(messages: list[dict[str, Any]]) -> list[str]:
    return [m["role"] for m in messages]


def _assert_alternating(messages: list[dict[str, Any]]) -> None:
    roles = _roles(messages)
    assert roles[0] == "user"
    assert all(a != b for a, b in itertools.pairwise(roles)), roles


def _assert_every_tool_use_answered(messages: list[dict[str, Any]]) -> None:
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        ids = [b["id"] for b in message["content"] if b.get("type") == "tool_use"]
        if not ids:
            continue
        answer = messages[index + 1]
        got = [b["tool_use_id"] for b in answer["content"] if b.get("type") == "tool_result"]
        assert got == ids


async def test_happy_path_reads_a_file(make_agent, fake_server: FakeAnthropicServer, workspace: Path) -> None:
    (workspace / "notes.txt").write_text("alpha\nbeta\n")
    fake_server.queue(
        tool_reply(("read", {"path": "notes.txt"}), text="Let me look."),
        text_reply("The file has two lines: alpha and beta."),
    )
    agent = make_agent()
    result = await agent.run("s1", "What is in notes.txt?")

    assert result.text == "The file has two lines: alpha and beta."
    assert result.session_key == "agent:main:s1"
    assert result.stop_reason == "end_turn"
    assert [c.name for c in result.tool_calls] == ["read"]
    assert "alpha" in result.tool_calls[0].output and not result.tool_calls[0].is_error
    assert result.usage.output_tokens > 0 and result.turns == 2

    second = fake_server.requests[1]
    _assert_alternating(second.messages)
    _assert_every_tool_use_answered(second.messages)
    result_block = second.messages[-1]["content"][0]
    assert result_block["type"] == "tool_result" and "alpha" in str(result_block["content"])
    # Prompt caching: stable system block and the last tool carry a breakpoint.
    body = second.body
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert second.stream is True


async def test_stream_yields_events_in_order(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    (workspace / "a.txt").write_text("x")
    fake_server.queue(tool_reply(("ls", {})), text_reply("Hello there, friend!"))
    agent = make_agent()
    events = [event async for event in agent.stream("s", "hi")]
    kinds = [e.type for e in events if e.type != "warning"]
    assert kinds[:3] == ["turn_end", "tool_start", "tool_end"]
    assert kinds.index("tool_end") < kinds.index("text_delta")
    assert kinds.count("turn_end") == 2
    assert kinds[-1] == "done"
    text = "".join(e.text for e in events if e.type == "text_delta")
    assert text == "Hello there, friend!"
    assert events[-1].result is not None and events[-1].result.text == text


async def test_tool_that_raises_becomes_error_result(make_agent, fake_server: FakeAnthropicServer) -> None:
    @tool
    def explode(reason: str) -> str:
        """Always fails."""
        raise RuntimeError(f"boom: {reason}")

    fake_server.queue(tool_reply(("explode", {"reason": "testing"})), text_reply("It failed."))
    agent = make_agent(tools=[explode])
    result = await agent.run("s", "go")
    call = result.tool_calls[0]
    assert call.is_error and "boom: testing" in call.output
    block = fake_server.requests[1].messages[-1]["content"][0]
    assert block["is_error"] is True and "boom: testing" in block["content"]


async def test_invalid_arguments_are_reported_to_the_model(
    make_agent, fake_server: FakeAnthropicServer
) -> None:
    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    fake_server.queue(tool_reply(("add", {"a": "x"})), text_reply("ok"))
    result = await make_agent(tools=[add]).run("s", "go")
    assert result.tool_calls[0].is_error
    assert "Invalid arguments for add" in result.tool_calls[0].output


async def test_parallel_tool_calls_run_concurrently_and_keep_order(
    make_agent, fake_server: FakeAnthropicServer
) -> None:
    running = 0
    peak = 0

    @tool
    async def slow(label: str, ctx: ToolContext) -> str:
        """Waits a little."""
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05 if label == "first" else 0.01)
        running -= 1
        return f"{label} done in {ctx.session_key}"

    fake_server.queue(
        tool_reply(("slow", {"label": "first"}, "t1"), ("slow", {"label": "second"}, "t2")),
        text_reply("both done"),
    )
    result = await make_agent(tools=[slow]).run("s", "go")
    assert peak == 2
    results = fake_server.requests[1].messages[-1]["content"]
    assert [b["tool_use_id"] for b in results] == ["t1", "t2"]
    assert results[0]["content"] == "first done in agent:main:s"
    assert result.text == "both done"


async def test_max_turns_ends_a_runaway_loop(make_agent, fake_server: FakeAnthropicServer) -> None:
    fake_server.queue(*[tool_reply(("ls", {})) for _ in range(3)])
    agent = make_agent(max_turns=3)
    result = await agent.run("s", "loop forever")
    assert result.stop_reason == "max_turns"
    assert len(result.tool_calls) == 3 and len(fake_server.requests) == 3
    # The session is still valid: the next run sends alternating roles with every tool answered.
    fake_server.queue(text_reply("ok"))
    await agent.run("s", "stop now")
    _assert_alternating(fake_server.requests[-1].messages)
    _assert_every_tool_use_answered(fake_server.requests[-1].messages)


async def test_overloaded_then_success_is_retried_by_the_sdk(
    make_agent, fake_server: FakeAnthropicServer
) -> None:
    fake_server.queue(error_reply(529), text_reply("fine now"))
    result = await make_agent().run("s", "hello")
    assert result.text == "fine now"
    assert len(fake_server.requests) == 2


async def test_persistent_500_is_a_clear_error_and_the_session_stays_valid(
    make_agent, fake_server: FakeAnthropicServer
) -> None:
    agent = make_agent(max_retries=1)
    fake_server.queue(error_reply(500), error_reply(500))
    with pytest.raises(ModelError) as info:
        await agent.run("s", "first message")
    assert info.value.status == 500 and "500" in str(info.value)

    fake_server.queue(text_reply("back"))
    result = await agent.run("s", "second message")
    assert result.text == "back"
    messages = fake_server.requests[-1].messages
    _assert_alternating(messages)
    texts = [b["text"] for b in messages[0]["content"]]
    # The failed turn stays in the transcript but leaves later requests (issue 12: it used to be
    # sent again with every later message, and one the API always refuses failed them all).
    assert texts == ["second message"]


async def test_stream_reports_error_then_done(make_agent, fake_server: FakeAnthropicServer) -> None:
    fake_server.queue(error_reply(401, "invalid x-api-key"))
    events = [e async for e in make_agent().stream("s", "hi")]
    assert [e.type for e in events] == ["error", "done"]
    assert "invalid x-api-key" in events[0].text
    assert events[-1].result is not None and events[-1].result.stop_reason == "error"


async def test_history_survives_a_new_agent_instance(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    fake_server.queue(text_reply("Nice to meet you, Ada."))
    await make_agent().run("s", "My name is Ada.")
    fake_server.queue(text_reply("You are Ada."))
    result = await make_agent().run("agent:main:s", "Who am I?")
    assert result.text == "You are Ada."
    messages = fake_server.requests[-1].messages
    assert _roles(messages) == ["user", "assistant", "user"]
    assert messages[0]["content"][0]["text"] == "My name is Ada."
    transcript = workspace / ".openclaw-mini" / "sessions" / "main" / "s.jsonl"
    lines = [json.loads(line) for line in transcript.read_text().splitlines()]
    assert lines[0]["type"] == "session" and lines[0]["key"] == "agent:main:s"
    assert [line["type"] for line in lines[1:]] == ["message"] * 4


async def test_thinking_blocks_are_kept_and_sent_back(make_agent, fake_server: FakeAnthropicServer) -> None:
    fake_server.queue(
        thinking_reply("I should list files.", "sig-abc", tool_reply(("ls", {}))),
        text_reply("done"),
    )
    agent = make_agent(thinking_budget_tokens=2048, max_tokens=4096)
    await agent.run("s", "think")
    first, second = fake_server.requests
    assert first.body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assistant = second.messages[1]
    assert assistant["content"][0] == {
        "type": "thinking",
        "thinking": "I should list files.",
        "signature": "sig-abc",
    }
    assert assistant["content"][1]["type"] == "tool_use"


async def test_lanes_serialise_one_key_and_run_keys_concurrently() -> None:
    """Two runs on one key queue; runs on two keys overlap (in-process scripted model)."""
    import tempfile

    active: dict[str, int] = {}
    overlap: list[tuple[str, str]] = []

    @tool
    async def work(ctx: ToolContext) -> str:
        """Pretend to work."""
        active[ctx.session_key] = active.get(ctx.session_key, 0) + 1
        for other, count in active.items():
            if count and other != ctx.session_key:
                overlap.append((ctx.session_key, other))
        assert active[ctx.session_key] == 1, "two runs of one session overlapped"
        await asyncio.sleep(0.05)
        active[ctx.session_key] -= 1
        return "ok"

    model = ScriptedModel()
    model.handler = lambda request: (
        text_reply("done")
        if request.messages[-1]["content"][0].get("type") == "tool_result"
        else tool_reply(("work", {}))
    )
    with tempfile.TemporaryDirectory() as folder:
        async with Agent(workspace_dir=folder, model=model, tools=[work]) as agent:
            await asyncio.gather(agent.run("a", "1"), agent.run("a", "2"))
            assert overlap == []
            await asyncio.gather(agent.run("a", "3"), agent.run("b", "4"))
            assert overlap


async def test_abort_cancels_a_running_turn_and_keeps_the_transcript_valid(
    make_agent, fake_server: FakeAnthropicServer
) -> None:
    started = asyncio.Event()

    @tool
    async def hang() -> str:
        """Never finishes."""
        started.set()
        await asyncio.sleep(60)
        return "unreachable"

    agent = make_agent(tools=[hang])
    fake_server.queue(tool_reply(("hang", {}, "t-hang")))
    task = asyncio.create_task(agent.run("s", "start"))
    await asyncio.wait_for(started.wait(), 5)
    assert agent.abort("s") is True
    result = await asyncio.wait_for(task, 5)
    assert result.stop_reason == "aborted"
    assert agent.abort("s") is False

    fake_server.queue(text_reply("ok"))
    await agent.run("s", "next")
    messages = fake_server.requests[-1].messages
    _assert_alternating(messages)
    _assert_every_tool_use_answered(messages)
    assert "cancelled" in messages[2]["content"][0]["content"]


async def test_abort_during_a_slow_stream_keeps_the_partial_text(
    make_agent, fake_server: FakeAnthropicServer
) -> None:
    reply = text_reply("one two three four five six seven eight nine ten " * 5, chunk_delay=0.02)
    fake_server.queue(reply)
    agent = make_agent()
    got_text = asyncio.Event()
    seen: list[str] = []

    async def consume() -> None:
        async for event in agent.stream("s", "talk"):
            if event.type == "text_delta":
                seen.append(event.text)
                got_text.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_text.wait(), 5)
    agent.abort("s")
    await asyncio.wait_for(task, 5)
    fake_server.queue(text_reply("ok"))
    await agent.run("s", "again")
    messages = fake_server.requests[-1].messages
    _assert_alternating(messages)
    assert messages[1]["role"] == "assistant" and messages[1]["content"][0]["text"].startswith("one")


async def test_denied_tool_is_not_offered_and_refused_if_called(
    make_agent, fake_server: FakeAnthropicServer
) -> None:
    fake_server.queue(tool_reply(("write", {"path": "x.txt", "content": "hi"})), text_reply("ok"))
    agent = make_agent(tool_policy=ToolPolicy(deny=["write", "group:runtime"]))
    assert "write" not in [t.name for t in agent.tools]
    result = await agent.run("s", "write it")
    offered = [t["name"] for t in fake_server.requests[0].tools]
    assert "write" not in offered and "exec" not in offered and "read" in offered
    assert result.tool_calls[0].is_error and "policy" in result.tool_calls[0].output


async def test_exec_is_refused_unless_allowed(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    fake_server.queue(tool_reply(("exec", {"command": "touch pwned"})), text_reply("ok"))
    agent = make_agent()
    assert "exec" not in [t.name for t in agent.tools]
    result = await agent.run("s", "run it")
    assert result.tool_calls[0].is_error and "turned off" in result.tool_calls[0].output
    assert not (workspace / "pwned").exists()


async def test_sandbox_refuses_paths_outside_the_workspace(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    (workspace / "link").symlink_to(secret)
    fake_server.queue(
        tool_reply(
            ("read", {"path": "../secret.txt"}),
            ("read", {"path": str(secret)}),
            ("read", {"path": "link"}),
            ("write", {"path": "../evil.txt", "content": "x"}),
        ),
        text_reply("refused"),
    )
    result = await make_agent().run("s", "read secrets")
    assert [c.is_error for c in result.tool_calls] == [True] * 4
    for call in result.tool_calls:
        assert "outside the workspace" in call.output
        assert "top secret" not in call.output
    assert not (tmp_path / "evil.txt").exists()


async def test_state_lives_under_the_workspace_not_the_cwd(
    make_agent,
    fake_server: FakeAnthropicServer,
    workspace: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    fake_server.queue(text_reply("ok"))
    await make_agent().run("s", "hi")
    assert (workspace / ".openclaw-mini" / "sessions" / "main" / "s.jsonl").exists()
    assert list(elsewhere.iterdir()) == []


async def test_missing_api_key_is_one_clear_error(workspace: Path) -> None:
    from openclaw_mini import MissingAPIKeyError

    async with Agent(workspace_dir=workspace) as agent:
        with pytest.raises(MissingAPIKeyError, match="ANTHROPIC_API_KEY"):
            await agent.run("s", "hi")


async def test_secret_api_key_never_lands_in_the_transcript(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    fake_server.queue(text_reply("ok"))
    agent = make_agent(api_key="sk-ant-very-secret-key")
    await agent.run("s", "hi")
    assert fake_server.requests[0].api_key == "sk-ant-very-secret-key"
    for path in (workspace / ".openclaw-mini").rglob("*"):
        if path.is_file():
            assert b"sk-ant-very-secret-key" not in path.read_bytes()
    assert "very-secret" not in repr(agent.config) and "very-secret" not in repr(agent.model)


async def test_a_memory_written_by_one_agent_is_found_by_a_new_agent(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    fake_server.queue(
        tool_reply(
            ("memory_write", {"text": "The deploy window is Thursday 14:00 UTC.", "tags": ["deploy"]})
        ),
        text_reply("Saved."),
    )
    await make_agent().run("s", "Remember: deploys happen Thursday 14:00 UTC.")
    fake_server.queue(tool_reply(("memory_search", {"query": "deploy window"})), text_reply("Thursday."))
    result = await make_agent().run("other", "When is the deploy window?")
    hits = json.loads(result.tool_calls[0].output)
    assert "Thursday 14:00 UTC" in json.dumps(hits)
    assert "memory_search" in fake_server.requests[-1].system  # recall guidance + tool listed


async def test_pause_turn_continues_one_assistant_message_live_and_after_reload(
    make_agent, fake_server: FakeAnthropicServer
) -> None:
    from openclaw_mini.testing import FakeReply

    fake_server.queue(
        FakeReply(content=[{"type": "text", "text": "Searching the web..."}], stop_reason="pause_turn"),
        text_reply("Found it."),
        text_reply("ok"),
        text_reply("ok again"),
    )
    agent = make_agent()
    result = await agent.run("s", "look it up")
    assert result.text == "Found it." and result.turns == 2
    continued = fake_server.requests[1].messages
    assert continued[-1]["role"] == "assistant"  # the paused turn is sent back to continue
    await agent.run("s", "thanks")
    await make_agent().run("s", "and again")
    live, reloaded = fake_server.requests[2].messages, fake_server.requests[3].messages
    _assert_alternating(live)
    assert [b["text"] for b in live[1]["content"]] == ["Searching the web...", "Found it."]
    assert reloaded[:3] == [
        {**m, "content": [{k: v for k, v in b.items() if k != "cache_control"} for b in m["content"]]}
        for m in live[:3]
    ]
