"""Core review: Messages API invariants on every request the agent sends, through the real SDK."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from openclaw_mini import ToolContext, tool
from openclaw_mini.testing import (
    FakeAnthropicServer,
    FakeReply,
    RecordedRequest,
    text_reply,
    thinking_reply,
    tool_reply,
)


def _check_request(body: dict[str, Any]) -> None:
    """What the real Messages API would reject (or silently misread) in one request body."""
    messages = body["messages"]
    assert messages, "no messages"
    roles = [m["role"] for m in messages]
    assert roles[0] == "user", roles
    assert all(a != b for a, b in itertools.pairwise(roles)), roles
    assert roles[-1] == "user", f"the request ends with an assistant message (prefill): {roles}"
    breakpoints = 0
    for block in [*body.get("system", []), *body.get("tools", [])]:
        breakpoints += "cache_control" in block
    for index, message in enumerate(messages):
        content = message["content"]
        if isinstance(content, str):
            assert content.strip(), f"message {index} is empty"
            continue
        assert content, f"message {index} has an empty content list"
        for block in content:
            if "cache_control" in block:
                breakpoints += 1
                assert block["type"] not in ("thinking", "redacted_thinking"), block
            if block["type"] == "text":
                assert block["text"].strip(), f"message {index} has an empty text block"
        if message["role"] == "user":
            kinds = [b["type"] for b in content]
            results = [b["tool_use_id"] for b in content if b["type"] == "tool_result"]
            assert kinds[: len(results)] == ["tool_result"] * len(results), kinds
            previous = messages[index - 1] if index else {"content": []}
            asked = [b["id"] for b in previous["content"] if b["type"] == "tool_use"]
            assert results == asked, (index, results, asked)
        else:
            asked = [b["id"] for b in content if b["type"] == "tool_use"]
            if asked:
                assert index + 1 < len(messages), "a tool_use is the last message"
    assert breakpoints <= 4, breakpoints
    if body.get("thinking") and messages[-1]["role"] == "user":
        last = messages[-1]["content"]
        if isinstance(last, list) and any(b["type"] == "tool_result" for b in last):
            first = messages[-2]["content"][0]["type"]
            assert first in ("thinking", "redacted_thinking"), "tool loop lost its thinking block"


def _check_all(server: FakeAnthropicServer) -> None:
    for request in server.requests:
        _check_request(request.body)


def _transcript(workspace: Path, session: str = "s") -> list[dict[str, Any]]:
    path = workspace / ".openclaw-mini" / "sessions" / "main" / f"{session}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _is_flush(request: RecordedRequest) -> bool:
    return "Silent housekeeping turn" in json.dumps(request.messages[-1:])


def _is_summary(request: RecordedRequest) -> bool:
    return "<conversation>" in json.dumps(request.messages[-1]["content"])


async def _run_turns_until(agent: Any, seen: asyncio.Event, turns: int) -> asyncio.Task[Any]:
    """Run growing turns one after another until `seen` is set; the run in flight then."""
    for turn in range(turns):
        task = asyncio.create_task(agent.run("s", f"turn {turn} " + "text " * 100))
        waiter = asyncio.create_task(seen.wait())
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if seen.is_set():
            return task
        await task
    raise AssertionError("the awaited request never came")


# -- bugs ------------------------------------------------------------------------------------------


async def test_after_a_memory_flush_the_next_request_ends_with_a_user_turn(
    make_agent, fake_server: FakeAnthropicServer
) -> None:
    """The flush reply used to end the history, so the run's own request sent it as a prefill
    (the model continued "NO_REPLY"; with thinking on the API refuses the request)."""
    flushes = 0

    def handler(request: RecordedRequest) -> FakeReply:
        nonlocal flushes
        if _is_summary(request):
            return text_reply("## Goal\nsummary")
        if _is_flush(request):
            flushes += 1
            return text_reply("NO_REPLY")
        return text_reply("ok " * 100)

    fake_server.handler = handler
    options: dict[str, Any] = {"context_window_tokens": 6_000, "max_tokens": 1_000, "enable_memory": True}
    agent = make_agent(**options)
    for turn in range(12):
        await agent.run("s", f"turn {turn} " + "text " * 100)
    assert flushes >= 1
    _check_all(fake_server)
    # What a new agent rebuilds from the file is what the live session holds.
    from openclaw_mini.transcript import build_messages

    key = agent.session_key("s")
    cached = agent._states.get(str(key))
    assert cached is not None
    live = cached.session.messages
    assert build_messages(agent.sessions.load_sync(key, active_only=True).entries) == live
    assert any(b["text"].startswith("[Housekeeping done") for m in live for b in m["content"] if "text" in b)


async def test_abort_during_the_memory_flush_stops_the_run(
    make_agent, fake_server: FakeAnthropicServer
) -> None:
    """The flush's nested loop swallowed the cancellation: the run went on to its next request."""
    loop = asyncio.get_running_loop()
    flushing = asyncio.Event()
    kinds: list[str] = []

    def handler(request: RecordedRequest) -> FakeReply:
        if _is_summary(request):
            kinds.append("summary")
            return text_reply("## Goal\nsummary")
        if _is_flush(request):
            kinds.append("flush")
            loop.call_soon_threadsafe(flushing.set)
            return text_reply("NO_REPLY", chunk_delay=0.2)
        kinds.append("turn")
        return text_reply("ok " * 100)

    fake_server.handler = handler
    options: dict[str, Any] = {"context_window_tokens": 6_000, "max_tokens": 1_000, "enable_memory": True}
    agent = make_agent(**options)
    task = await _run_turns_until(agent, flushing, 12)
    assert agent.abort("s") is True
    result = await asyncio.wait_for(task, 10)
    assert result.stop_reason == "aborted"
    assert kinds[-1] == "flush", kinds  # no model call after the abort

    fake_server.handler = None
    fake_server.queue(text_reply("back"))
    assert (await agent.run("s", "next")).text == "back"
    fake_server.queue(text_reply("back again"))
    assert (await make_agent(**options).run("s", "next")).text == "back again"
    _check_all(fake_server)


async def test_an_empty_reply_is_never_sent_back_as_an_empty_message(
    make_agent, fake_server: FakeAnthropicServer
) -> None:
    """The API can answer with no content at all; sending `content: []` back is refused."""
    fake_server.queue(tool_reply(("ls", {})), FakeReply(content=[], stop_reason="end_turn"))
    agent = make_agent()
    result = await agent.run("s", "one")
    assert result.text == "" and result.stop_reason == "end_turn"
    fake_server.queue(text_reply("two"), text_reply("three"))
    await agent.run("s", "two")
    await make_agent().run("s", "three")
    _check_all(fake_server)


async def test_blank_text_blocks_are_not_sent_back(make_agent, fake_server: FakeAnthropicServer) -> None:
    """The API refuses blank text blocks ("must contain non-whitespace text"); a reply may hold one."""
    fake_server.queue(
        FakeReply(
            content=[
                {"type": "text", "text": "\n\n"},
                {"type": "tool_use", "id": "t1", "name": "ls", "input": {}},
            ],
            stop_reason="tool_use",
        ),
        FakeReply(content=[{"type": "text", "text": ""}], stop_reason="end_turn"),
        text_reply("fine"),
        text_reply("fine again"),
    )
    agent = make_agent()
    await agent.run("s", "one")
    await agent.run("s", "two")
    await make_agent().run("s", "three")
    _check_all(fake_server)
    # The transcript still holds the reply exactly as the API sent it.
    assert _transcript(agent.workspace)[2]["content"][0] == {"type": "text", "text": "\n\n"}


async def test_a_connection_dropped_mid_stream_is_a_model_error(
    make_agent, fake_server: FakeAnthropicServer
) -> None:
    """The SDK lets transport errors raised while reading the stream through; `run()` promised
    a `ModelError` (and logged a traceback for the raw httpx error)."""
    from openclaw_mini import ModelError

    fake_server.queue(text_reply("one two three four five six " * 20, chunk_delay=0.02))
    agent = make_agent()
    seen = asyncio.Event()

    async def consume() -> list[Any]:
        events = []
        async for event in agent.stream("s", "talk"):
            events.append(event)
            if event.type == "text_delta":
                seen.set()
        return events

    task = asyncio.create_task(consume())
    await asyncio.wait_for(seen.wait(), 5)
    await asyncio.to_thread(fake_server.stop)
    events = await asyncio.wait_for(task, 10)
    errors = [event for event in events if event.type == "error"]
    assert len(errors) == 1 and events[-1].type == "done"
    error = errors[0].data["exception"]
    assert isinstance(error, ModelError) and error.retryable
    assert "broke while the reply was streaming" in str(error)


async def test_an_error_event_inside_the_stream_keeps_its_real_status() -> None:
    """An `error` event after a 200 (e.g. overloaded) came out as "Model API error 200", not retryable."""
    import httpx2
    from anthropic import AsyncAnthropic

    from openclaw_mini.llm import AnthropicModel, ModelError, ModelRequest

    start = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "m",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 1},
        },
    }
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    body = (
        f"event: message_start\ndata: {json.dumps(start)}\n\nevent: error\ndata: {json.dumps(error)}\n\n"
    ).encode()

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(answer))
    client = AsyncAnthropic(api_key="k", base_url="http://fake.invalid", http_client=http, max_retries=0)
    model = AnthropicModel(client=client)
    request = ModelRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(ModelError) as info:
        async for _ in model.stream(request):
            pass
    await model.aclose()
    assert info.value.status == 529 and info.value.retryable
    assert str(info.value) == "Model API error 529: Overloaded"


async def test_input_plus_max_tokens_over_the_limit_compacts_and_retries(
    make_agent, fake_server: FakeAnthropicServer
) -> None:
    """The API's other overflow wording was not recognised: the run failed instead of compacting
    (and so did every run after it until the estimate alone crossed the threshold)."""
    from openclaw_mini.testing import error_reply

    agent = make_agent()
    for index in range(3):
        fake_server.queue(text_reply(f"reply {index}"))
        await agent.run("s", f"message {index}")
    fake_server.queue(
        error_reply(
            400,
            "input length and `max_tokens` exceed context limit: 178959 + 64000 > 200000, "
            "decrease input length or `max_tokens` and try again",
        ),
        text_reply("## Goal\nshort summary"),
        text_reply("after compaction"),
    )
    events = [e async for e in agent.stream("s", "one more")]
    assert [e.type for e in events if e.type in ("compaction", "error", "done")] == ["compaction", "done"]
    assert events[-1].result is not None and events[-1].result.text == "after compaction"
    _check_all(fake_server)


async def test_a_blank_message_is_refused_and_does_not_poison_the_session(
    make_agent, fake_server: FakeAnthropicServer
) -> None:
    """A blank user text became a blank text block in the transcript: the API refuses it, and
    since every later run resends it, the session could never be used again."""
    agent = make_agent()
    with pytest.raises(ValueError, match="empty"):
        await agent.run("s", "  \n ")
    assert fake_server.requests == []
    fake_server.queue(text_reply("hello"))
    assert (await agent.run("s", "hi")).text == "hello"
    _check_all(fake_server)
    assert fake_server.requests[-1].messages == [
        {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}
    ]


def test_a_compaction_that_keeps_nothing_survives_the_round_trip(tmp_path: Path) -> None:
    """`first_kept_id=None` (nothing kept) is valid in memory, but the writer drops None fields
    and the field had no default: the line came back "corrupt" and the summary was lost."""
    from openclaw_mini.session import SessionKey, SessionStore
    from openclaw_mini.transcript import CompactionEntry, MessageEntry, build_messages

    store = SessionStore(tmp_path)
    key = SessionKey.parse("s")
    old = MessageEntry(role="user", content=[{"type": "text", "text": "old"}])
    new = MessageEntry(role="user", content=[{"type": "text", "text": "new"}])
    store.append_sync(key, [old, CompactionEntry(summary="the summary", first_kept_id=None), new])
    for active_only in (False, True):
        loaded = store.load_sync(key, active_only=active_only)
        assert loaded.warnings == []
        messages = build_messages(loaded.entries)
        assert "old" not in json.dumps(messages) and "the summary" in json.dumps(messages)


# -- invariants that hold (guards) -----------------------------------------------------------------


async def test_thinking_signatures_and_cjk_survive_three_tool_turns_and_a_reload(
    make_agent, fake_server: FakeAnthropicServer
) -> None:
    fake_server.queue(
        thinking_reply("think 1 思考", "sig-1", tool_reply(("ls", {}), text="列出")),
        FakeReply(
            content=[
                {"type": "redacted_thinking", "data": "REDACTED-2"},
                {"type": "tool_use", "id": "t2", "name": "ls", "input": {}},
            ],
            stop_reason="tool_use",
        ),
        thinking_reply("think 3", "sig-3", text_reply("完成 ✓")),
    )
    options: dict[str, Any] = {"thinking_budget_tokens": 2048, "max_tokens": 4096}
    result = await make_agent(**options).run("s", "请列出文件 🚀")
    assert result.text == "完成 ✓"
    fake_server.queue(text_reply("ok"))
    await make_agent(**options).run("s", "again")
    _check_all(fake_server)
    last = fake_server.requests[-1].messages
    assert last[0]["content"][0]["text"] == "请列出文件 🚀"
    assert last[1]["content"][0] == {"type": "thinking", "thinking": "think 1 思考", "signature": "sig-1"}
    assert last[3]["content"][0] == {"type": "redacted_thinking", "data": "REDACTED-2"}
    assert last[5]["content"][0]["signature"] == "sig-3"


async def test_abort_during_compaction_leaves_a_session_a_new_agent_sends_validly(
    make_agent, fake_server: FakeAnthropicServer
) -> None:
    loop = asyncio.get_running_loop()
    summarizing = asyncio.Event()

    def handler(request: RecordedRequest) -> FakeReply:
        if _is_summary(request):
            loop.call_soon_threadsafe(summarizing.set)
            return text_reply("## Goal\nsummary", chunk_delay=0.3)
        return text_reply("ok " * 100)

    fake_server.handler = handler
    options: dict[str, Any] = {"context_window_tokens": 6_000, "max_tokens": 1_000, "enable_memory": False}
    agent = make_agent(**options)
    task = await _run_turns_until(agent, summarizing, 30)
    agent.abort("s")
    assert (await asyncio.wait_for(task, 10)).stop_reason == "aborted"
    fake_server.handler = None
    fake_server.queue(text_reply("fresh"))
    await make_agent(**options).run("s", "after")
    _check_all(fake_server)


async def test_an_entry_another_writer_appends_between_runs_reaches_the_model(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    from openclaw_mini.session import SessionStore
    from openclaw_mini.transcript import CustomEntry

    fake_server.queue(text_reply("one"), text_reply("two"))
    agent = make_agent()
    await agent.run("s", "first")
    other = SessionStore(workspace / ".openclaw-mini", workspace=workspace)
    other.append_sync(agent.session_key("s"), [CustomEntry(custom_type="note", message="from elsewhere")])
    await agent.run("s", "second")
    assert "from elsewhere" in json.dumps(fake_server.requests[-1].messages)
    _check_all(fake_server)


async def test_two_queued_runs_abort_of_the_first_lets_the_second_run(
    make_agent, fake_server: FakeAnthropicServer
) -> None:
    started = asyncio.Event()

    @tool
    async def hang(ctx: ToolContext) -> str:
        """Never finishes."""
        started.set()
        await asyncio.sleep(60)
        return "unreachable"

    fake_server.queue(tool_reply(("hang", {}, "h1")), text_reply("second done"))
    agent = make_agent(tools=[hang])
    first = asyncio.create_task(agent.run("s", "first"))
    await asyncio.wait_for(started.wait(), 5)
    second = asyncio.create_task(agent.run("s", "second"))
    await asyncio.sleep(0.05)
    assert agent.abort("s") is True
    assert (await asyncio.wait_for(first, 5)).stop_reason == "aborted"
    assert (await asyncio.wait_for(second, 5)).text == "second done"
    _check_all(fake_server)
