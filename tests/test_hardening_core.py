"""Hardening of the core: streams that end early, tools without a deadline, tools that try to end
the process, failed turns, transcripts the API would refuse, two processes on one session."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from openclaw_mini.errors import ModelError
from openclaw_mini.testing import FakeAnthropicServer, FakeReply, text_reply, tool_reply
from openclaw_mini.transcript import build_messages


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


# -- 5. a failed turn does not poison the session ------------------------------------------------


async def test_a_message_the_api_always_refuses_does_not_fail_every_later_turn(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    from typer.testing import CliRunner

    from openclaw_mini.cli.main import app
    from openclaw_mini.testing import error_reply

    agent = make_agent()
    fake_server.queue(text_reply("hello back"))
    await agent.run("s", "hello")
    for status, tries in ((400, 1), (401, 1), (500, 3)):  # the SDK retries a 500 twice here
        fake_server.queue(*[error_reply(status, "this message is refused")] * tries)
        with pytest.raises(ModelError):
            await agent.run("s", f"poison {status}")
    fake_server.queue(tool_reply(("ls", {})), text_reply("all good"))
    assert (await agent.run("s", "a normal question")).text == "all good"
    sent = json.dumps(fake_server.requests[-1].messages)
    assert "poison" not in sent and "hello" in sent and "a normal question" in sent
    # A new agent (a reload from disk) sends the same, and the transcript still has everything.
    fake_server.queue(text_reply("still good"))
    await make_agent().run("s", "after a restart")
    sent = json.dumps(fake_server.requests[-1].messages)
    assert "poison" not in sent and "a normal question" in sent and "all good" in sent
    shown = CliRunner().invoke(app, ["sessions", "show", "s", "-w", str(workspace)])
    assert shown.exit_code == 0, shown.output
    assert shown.output.count("(failed: left out of later requests)") == 3
    assert "[turn failed]" in shown.output and "poison 400" in shown.output


# -- 11. a transcript the API would refuse is repaired on load -------------------------------------


async def test_blocks_the_api_would_refuse_are_dropped_on_load_with_file_and_line(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    fake_server.queue(text_reply("first answer"))
    agent = make_agent()
    await agent.run("s", "first question")
    path = workspace / ".openclaw-mini" / "sessions" / "main" / "s.jsonl"
    bad = [
        {"type": "message", "id": "bad00001", "role": "user", "content": [{"type": "text"}]},
        {
            "type": "message",
            "id": "bad00002",
            "role": "user",
            "content": [
                {"type": "text", "text": "kept"},
                {"type": "tool_use", "name": "x"},
                {"text": "no type"},
            ],
        },
    ]
    with path.open("a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(line) + "\n" for line in bad)
    lines = len(path.read_text().splitlines())
    fake_server.queue(text_reply("fine"))
    events = [event async for event in make_agent().stream("s", "go on")]
    warnings = [e.text for e in events if e.type == "warning"]
    assert any(f"s.jsonl:{lines - 1}:" in w and "block 0 (text): no text" in w for w in warnings), warnings
    assert any(
        f"s.jsonl:{lines}:" in w and "tool call without an id" in w and "not a content block" in w
        for w in warnings
    ), warnings
    sent = fake_server.requests[-1].messages
    blocks = [block for message in sent for block in message["content"]]
    assert all(block.get("text") for block in blocks if block["type"] == "text")
    assert "kept" in json.dumps(sent) and events[-1].result.text == "fine"


# -- 4. one turn at a time per session, across processes ------------------------------------------

_TWO_PROCESS_SCRIPT = """
import asyncio, sys
from openclaw_mini import Agent

async def main(workspace, url, tag):
    async with Agent(workspace_dir=workspace, api_key="k", base_url=url, enable_memory=False) as agent:
        for i in range(25):
            await agent.run("shared", f"{tag} question {i}")

asyncio.run(main(*sys.argv[1:]))
"""


def test_two_processes_on_one_session_keep_every_turn_intact(
    fake_server: FakeAnthropicServer, workspace: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from openclaw_mini.session import SessionKey, SessionStore
    from openclaw_mini.testing import RecordedRequest

    def handler(request: RecordedRequest) -> FakeReply:
        last = request.messages[-1]["content"]
        if last and last[0].get("type") == "tool_result":  # the tool ran: answer the question
            asked = [
                b["text"]
                for m in request.messages
                if m["role"] == "user"
                for b in m["content"]
                if b.get("type") == "text"
            ][-1]
            return text_reply(f"answer to {asked}")
        return replace(tool_reply(("ls", {})), chunk_delay=0.002)  # a tool call in every turn

    fake_server.handler = handler
    script = tmp_path / "runner.py"
    script.write_text(_TWO_PROCESS_SCRIPT)
    runners = [
        subprocess.Popen([sys.executable, str(script), str(workspace), fake_server.url, tag])
        for tag in ("alpha", "beta")
    ]
    for runner in runners:
        assert runner.wait(timeout=240) == 0
    entries = SessionStore(workspace / ".openclaw-mini").load_sync(SessionKey.parse("shared")).entries
    turns: list[list[str]] = []
    for entry in entries:
        if entry.type != "message":
            continue
        kinds = [b["type"] for b in entry.content]
        if entry.role == "user" and kinds == ["text"]:
            turns.append([f"user:{entry.content[0]['text']}"])
        else:
            turns[-1].append(f"{entry.role}:{','.join(kinds)}")
    assert len(turns) == 50
    for turn in turns:  # question, tool call, its result, the answer: never another turn's parts
        assert turn[1:] == ["assistant:tool_use", "user:tool_result", "assistant:text"], turn
    answers = [
        e.content[0]["text"]
        for e in entries
        if e.type == "message" and e.role == "assistant" and e.content[0]["type"] == "text"
    ]
    questions = [t[0].removeprefix("user:") for t in turns]
    assert answers == [f"answer to {q}" for q in questions]
    assert "interrupted" not in json.dumps(build_messages(entries))
