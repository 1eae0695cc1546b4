"""Hardening of the core: streams that end early, tools without a deadline, tools that try to end
the process, failed turns, transcripts the API would refuse, two processes on one session."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from openclaw_mini.errors import ModelError
from openclaw_mini.testing import FakeAnthropicServer, FakeReply, text_reply, tool_reply


def _transcript(workspace: Path, session: str = "s") -> list[dict]:
    path = workspace / ".openclaw-mini" / "sessions" / "main" / f"{session}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- 2. a cut-off stream never passes as a complete reply -----------------------------------------


def _cut(reply: FakeReply, after: int, chunk: int = 8) -> FakeReply:
    return replace(reply, end_stream_after=after, text_chunk_size=chunk)


async def test_a_stream_cut_inside_a_tool_call_is_an_error_and_the_tool_never_runs(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    ran: list[str] = []

    from openclaw_mini import tool

    @tool
    def wipe(target: str) -> str:
        """Delete something."""
        ran.append(target)
        return "wiped"

    # message_start, ping, content_block_start (tool_use), one JSON delta: then a clean end.
    cut = _cut(tool_reply(("wipe", {"target": "everything-but-not-this"})), 4, chunk=4)
    fake_server.queue(*[cut] * 3)  # the first try and both retries end the same way
    agent = make_agent(tools=[wipe])
    with pytest.raises(ModelError, match="ended before the message was complete"):
        await agent.run("s", "clean up")
    assert ran == []
    entries = _transcript(workspace)
    assert [e.get("role") for e in entries if e.get("type") == "message"] == ["user"]  # nothing half-written
    fake_server.queue(text_reply("fine now"))
    assert (await agent.run("s", "again")).text == "fine now"


async def test_a_cut_stream_is_sent_again_when_nothing_was_shown_yet(
    make_agent, fake_server: FakeAnthropicServer
) -> None:
    fake_server.queue(_cut(text_reply("complete answer"), 2), text_reply("complete answer"))
    result = await make_agent().run("s", "hi")
    assert result.text == "complete answer" and result.stop_reason == "end_turn"
    assert len(fake_server.requests) == 2


async def test_a_stream_cut_after_visible_text_is_an_error_not_a_short_answer(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    fake_server.queue(_cut(text_reply("The answer is forty-two and"), 6, chunk=5))
    events = [event async for event in make_agent().stream("s", "hi")]
    errors = [e for e in events if e.type == "error"]
    assert errors and "ended before the message was complete" in errors[0].text
    assert events[-1].result is not None and events[-1].result.stop_reason == "error"
    assert not [e for e in _transcript(workspace) if e.get("role") == "assistant"]


@pytest.mark.parametrize(
    "raw",
    [
        [("message_start", "{not json")],
        [
            (
                "message_start",
                '{"type":"message_start","message":{"id":"m","type":"message","role":'
                '"assistant","model":"x","content":[],"stop_reason":null,"usage":{"input_tokens":1,'
                '"output_tokens":1}}}',
            ),
            (
                "content_block_delta",
                '{"type":"content_block_delta","index":7,"delta":{"type":"text_delta","text":"ghost"}}',
            ),
        ],
    ],
    ids=["malformed-json", "unknown-block-index"],
)
async def test_malformed_stream_data_is_a_model_error(
    make_agent, fake_server: FakeAnthropicServer, raw: list[tuple[str, str]]
) -> None:
    fake_server.queue(*[FakeReply(raw_events=raw)] * 3)
    with pytest.raises(ModelError, match=r"malformed reply stream|not open"):
        await make_agent().run("s", "hi")


# -- 3. every tool has a deadline; 9. a tool cannot end the process -------------------------------


async def test_hanging_tools_time_out_and_the_run_goes_on(
    make_agent, fake_server: FakeAnthropicServer
) -> None:
    import asyncio
    import threading

    from openclaw_mini import tool

    release = threading.Event()

    @tool(timeout_seconds=0.5)
    async def stuck_async() -> str:
        """Never returns."""
        await asyncio.sleep(3_600)
        return "never"

    @tool
    def stuck_sync() -> str:
        """Blocks its thread until the test ends."""
        release.wait(30)
        return "late"

    @tool
    async def own_timeout() -> str:
        """Fails with its own TimeoutError (not the deadline)."""
        raise TimeoutError("upstream timed out")

    fake_server.queue(
        tool_reply(("stuck_async", {}), ("stuck_sync", {}), ("own_timeout", {})), text_reply("carried on")
    )
    agent = make_agent(tools=[stuck_async, stuck_sync, own_timeout], tool_timeout_seconds=1.0)
    try:
        result = await asyncio.wait_for(agent.run("s", "go"), 20)
    finally:
        release.set()
    assert result.text == "carried on"
    hung_async, hung_sync, own = result.tool_calls
    assert hung_async.is_error and "within its 0.5 s deadline" in hung_async.output
    assert hung_sync.is_error and "within its 1 s deadline" in hung_sync.output
    assert own.is_error and "upstream timed out" in own.output and "deadline" not in own.output


@pytest.mark.parametrize("kind", ["sync-exit", "async-exit", "thread-interrupt"])
async def test_a_tool_cannot_end_the_process(make_agent, fake_server: FakeAnthropicServer, kind: str) -> None:
    import sys

    from openclaw_mini import tool

    @tool
    def sync_exit() -> str:
        """Calls sys.exit."""
        sys.exit(3)

    @tool
    async def async_exit() -> str:
        """Raises SystemExit in the event loop."""
        raise SystemExit("bye")

    @tool
    def thread_interrupt() -> str:
        """Raises KeyboardInterrupt from its worker thread."""
        raise KeyboardInterrupt

    name = kind.replace("-", "_")
    fake_server.queue(tool_reply((name, {})), text_reply("still here"))
    agent = make_agent(tools=[sync_exit, async_exit, thread_interrupt])
    result = await agent.run("s", "try it")
    assert result.text == "still here"
    [call] = result.tool_calls
    assert call.is_error and "tried to end the process" in call.output
