"""The offline test kit, driven through the real `anthropic` SDK over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic import AsyncAnthropic
from anthropic.types import MessageParam, ToolParam

from openclaw_mini.llm import (
    AnthropicModel,
    ContextOverflowError,
    ModelError,
    ModelRequest,
    ModelResponse,
    TextDelta,
    ThinkingDelta,
    ToolUseStart,
)
from openclaw_mini.testing import (
    FakeAnthropicServer,
    FakeReply,
    RecordedRequest,
    ScriptedModel,
    error_reply,
    text_reply,
    thinking_reply,
    tool_reply,
)

MODEL = "claude-test-1"
USER: list[MessageParam] = [{"role": "user", "content": "hello"}]
PLAIN_USER: list[dict[str, Any]] = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def server() -> AsyncIterator[FakeAnthropicServer]:
    async with FakeAnthropicServer() as fake:
        yield fake


@pytest.fixture
async def client(server: FakeAnthropicServer) -> AsyncIterator[AsyncAnthropic]:
    sdk = AsyncAnthropic(base_url=server.url, api_key="test", max_retries=2)
    yield sdk
    await sdk.close()


async def test_non_streaming_text_reply(server: FakeAnthropicServer, client: AsyncAnthropic) -> None:
    server.queue(text_reply("Hello there!", usage={"input_tokens": 12, "output_tokens": 3}))
    message = await client.messages.create(model=MODEL, max_tokens=100, messages=USER)
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == MODEL
    assert message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "Hello there!"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 3)
    assert server.pending == 0


async def test_raw_stream_events_in_order_and_tool_input_reassembles(
    server: FakeAnthropicServer, client: AsyncAnthropic
) -> None:
    arguments = {"path": "src/app.py", "lines": [1, 2, 3], "note": "ünïcode ✓", "nested": {"a": None}}
    server.queue(tool_reply(("read_file", arguments, "toolu_abc"), text="Let me look."))
    stream = await client.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=USER,
        stream=True,
    )
    events: list[Any] = []
    async with stream:
        async for event in stream:
            events.append(event)
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert events[0].message.content == []
    assert events[0].message.model == MODEL
    # Block 0 (text), then block 1 (tool_use), each start -> deltas -> stop.
    blocks = [e for e in events if e.type.startswith("content_block")]
    assert blocks[0].type == "content_block_start" and blocks[0].content_block.type == "text"
    first_stop = next(i for i, e in enumerate(blocks) if e.type == "content_block_stop")
    assert all(e.type == "content_block_delta" and e.index == 0 for e in blocks[1:first_stop])
    text = "".join(e.delta.text for e in blocks[1:first_stop])
    assert text == "Let me look."
    assert first_stop > 2  # split into several deltas
    tool_start = blocks[first_stop + 1]
    assert tool_start.type == "content_block_start"
    assert tool_start.content_block.model_dump(exclude_none=True) == {
        "type": "tool_use",
        "id": "toolu_abc",
        "name": "read_file",
        "input": {},
    }
    json_deltas = [e.delta for e in blocks[first_stop + 2 : -1]]
    assert len(json_deltas) > 1
    assert all(delta.type == "input_json_delta" for delta in json_deltas)
    assert json.loads("".join(delta.partial_json for delta in json_deltas)) == arguments
    assert blocks[-1].type == "content_block_stop" and blocks[-1].index == 1
    assert events[-2].delta.stop_reason == "tool_use"
    assert events[-2].usage.output_tokens > 0
    assert server.requests[0].stream is True


async def test_stream_helper_final_message_keeps_thinking_signature(
    server: FakeAnthropicServer, client: AsyncAnthropic
) -> None:
    reply = thinking_reply(
        "First I consider the question carefully.",
        "EqQBCkYIARgCIkDsig==",
        tool_reply(("lookup", {"q": "weather"}, "toolu_1")),
    )
    reply.content.append({"type": "redacted_thinking", "data": "opaque-bytes"})
    server.queue(reply)
    async with client.messages.stream(model=MODEL, max_tokens=2048, messages=USER) as stream:
        message = await stream.get_final_message()
    assert [block.model_dump(exclude_none=True) for block in message.content] == [
        {
            "type": "thinking",
            "thinking": "First I consider the question carefully.",
            "signature": "EqQBCkYIARgCIkDsig==",
        },
        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "weather"}},
        {"type": "redacted_thinking", "data": "opaque-bytes"},
    ]
    assert message.stop_reason == "tool_use"


async def test_anthropic_model_reads_the_fake_stream(server: FakeAnthropicServer) -> None:
    server.queue(thinking_reply("hmm", "sig-9", text_reply("All done.", usage={"output_tokens": 7})))
    model = AnthropicModel(base_url=server.url, api_key="test", max_retries=0)
    try:
        events = [e async for e in model.stream(ModelRequest(model=MODEL, messages=PLAIN_USER))]
    finally:
        await model.aclose()
    final = events[-1]
    assert isinstance(final, ModelResponse)
    assert final.content == [
        {"type": "thinking", "thinking": "hmm", "signature": "sig-9"},
        {"type": "text", "text": "All done."},
    ]
    assert final.usage.output_tokens == 7 and final.usage.input_tokens > 0
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "All done."


async def test_overloaded_then_success_is_retried_by_the_sdk(
    server: FakeAnthropicServer, client: AsyncAnthropic
) -> None:
    server.queue(error_reply(529), text_reply("ok"))
    message = await client.messages.create(model=MODEL, max_tokens=10, messages=USER)
    assert message.content[0].text == "ok"  # type: ignore[union-attr]
    assert len(server.requests) == 2
    assert server.requests[0].body == server.requests[1].body


async def test_persistent_500_raises_after_max_retries(server: FakeAnthropicServer) -> None:
    server.queue(*[error_reply(500, "boom") for _ in range(5)])
    sdk = AsyncAnthropic(base_url=server.url, api_key="test", max_retries=2)
    try:
        with pytest.raises(anthropic.InternalServerError) as caught:
            await sdk.messages.create(model=MODEL, max_tokens=10, messages=USER)
    finally:
        await sdk.close()
    assert caught.value.status_code == 500
    assert caught.value.body == {"type": "error", "error": {"type": "api_error", "message": "boom"}}
    assert caught.value.response.headers["request-id"].startswith("req_")
    assert len(server.requests) == 3
    assert server.pending == 2


async def test_rate_limit_error_type(server: FakeAnthropicServer) -> None:
    server.queue(error_reply(429, "slow down"))
    sdk = AsyncAnthropic(base_url=server.url, api_key="test", max_retries=0)
    try:
        with pytest.raises(anthropic.RateLimitError) as caught:
            await sdk.messages.create(model=MODEL, max_tokens=10, messages=USER, stream=True)
    finally:
        await sdk.close()
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
    }
    assert caught.value.response.headers["retry-after-ms"] == "10"


async def test_nothing_scripted_is_a_clear_bad_request(
    server: FakeAnthropicServer, client: AsyncAnthropic
) -> None:
    with pytest.raises(anthropic.BadRequestError, match="no scripted reply left for this request"):
        await client.messages.create(model=MODEL, max_tokens=10, messages=USER)
    assert len(server.requests) == 1  # 400 is not retried


async def test_handler_overrides_queue_and_falls_through_on_none(
    server: FakeAnthropicServer, client: AsyncAnthropic
) -> None:
    def answer(request: RecordedRequest) -> FakeReply | None:
        return text_reply("a summary") if "summarize" in request.system else None

    server.handler = answer
    server.queue(text_reply("from the queue"))
    summary = await client.messages.create(
        model=MODEL,
        max_tokens=10,
        system=[{"type": "text", "text": "Please summarize the chat."}],
        messages=USER,
    )
    normal = await client.messages.create(model=MODEL, max_tokens=10, messages=USER)
    assert summary.content[0].text == "a summary"  # type: ignore[union-attr]
    assert normal.content[0].text == "from the queue"  # type: ignore[union-attr]
    assert server.pending == 0


async def test_handler_exception_becomes_a_400_naming_it(
    server: FakeAnthropicServer, client: AsyncAnthropic
) -> None:
    def broken(request: RecordedRequest) -> FakeReply | None:
        raise KeyError("oops")

    server.handler = broken
    with pytest.raises(anthropic.BadRequestError, match="handler raised KeyError"):
        await client.messages.create(model=MODEL, max_tokens=10, messages=USER)


async def test_requests_are_recorded_with_body_and_headers(
    server: FakeAnthropicServer, client: AsyncAnthropic
) -> None:
    server.queue(text_reply("one"), text_reply("two"))
    tools: list[ToolParam] = [
        {"name": "noop", "description": "does nothing", "input_schema": {"type": "object"}}
    ]
    await client.messages.create(
        model=MODEL,
        max_tokens=10,
        system="Be brief.",
        messages=USER,
        tools=tools,
    )
    count = await client.messages.count_tokens(model=MODEL, messages=USER)
    assert count.input_tokens == len(json.dumps(USER)) // 4
    first, second = server.requests
    assert (first.method, first.path) == ("POST", "/v1/messages")
    assert first.api_key == "test"  # SDK 2.x sends it as `Authorization: Bearer`, older ones as x-api-key
    assert first.headers["content-type"] == "application/json"
    assert "anthropic-version" in first.headers
    assert first.model == MODEL
    assert first.system == "Be brief."
    assert first.messages == USER
    assert first.tools == tools
    assert first.stream is False
    assert first.body["max_tokens"] == 10
    assert second.path == "/v1/messages/count_tokens"
    assert server.pending == 1
    server.reset()
    assert server.requests == [] and server.pending == 0


async def test_unknown_path_is_a_404(server: FakeAnthropicServer, client: AsyncAnthropic) -> None:
    with pytest.raises(anthropic.NotFoundError, match="no route for GET /v1/models"):
        await client.models.list()


async def test_keep_alive_connection_is_reused_and_nagle_is_off(server: FakeAnthropicServer) -> None:
    sdk = AsyncAnthropic(base_url=server.url, api_key="test", max_retries=0)
    try:
        for index in range(6):
            server.queue(text_reply(f"reply {index}"))
            if index % 2:
                stream = await sdk.messages.create(model=MODEL, max_tokens=10, messages=USER, stream=True)
                async with stream:
                    async for _ in stream:
                        pass
            else:
                await sdk.messages.create(model=MODEL, max_tokens=10, messages=USER)
        connections = [connection for connection, _ in server._connections.values()]
        # Without TCP_NODELAY each small write waits for a delayed ACK (~40 ms a call).
        nodelay = [c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for c in connections]
    finally:
        await sdk.close()
    assert len(connections) == 1  # every call went over the one keep-alive connection
    assert nodelay == [1]
    assert len(server.requests) == 6


async def test_slow_stream_can_be_cancelled_and_server_stops_promptly() -> None:
    server = FakeAnthropicServer().start()
    sdk = AsyncAnthropic(base_url=server.url, api_key="test", max_retries=0)
    try:
        server.queue(text_reply("x" * 400, chunk_delay=0.05))
        stream = await sdk.messages.create(
            model=MODEL,
            max_tokens=10,
            messages=USER,
            stream=True,
        )
        seen = 0
        async with stream:
            async for _event in stream:
                seen += 1
                if seen == 4:
                    break
        assert seen == 4
    finally:
        await sdk.close()
        started = time.perf_counter()
        await asyncio.to_thread(server.stop)
        assert time.perf_counter() - started < 1.0


def test_sync_context_manager_and_url() -> None:
    fake = FakeAnthropicServer()
    with pytest.raises(RuntimeError, match="not running"):
        _ = fake.url
    with fake as running:
        assert running.url.startswith("http://127.0.0.1:")
        with pytest.raises(RuntimeError, match="already running"):
            running.start()
    with pytest.raises(RuntimeError, match="not running"):
        _ = fake.url


def test_factories_validate_and_build_api_blocks() -> None:
    reply = tool_reply(("a", {"x": 1}), ("b", {}, "toolu_b"))
    assert reply.stop_reason == "tool_use"
    assert reply.content[0]["id"].startswith("toolu_") and reply.content[1]["id"] == "toolu_b"
    assert reply.content[0]["id"] != tool_reply(("a", {"x": 1})).content[0]["id"]
    error = error_reply(529)
    assert (error.status, error.error_type, error.error_message) == (529, "overloaded_error", "Overloaded")
    assert error_reply(401).error_type == "authentication_error"
    assert error_reply(400, retry_after_ms=None).headers == {}
    with pytest.raises(ValueError, match="at least one"):
        tool_reply()
    with pytest.raises(TypeError, match="call 0"):
        tool_reply(("only-a-name",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="content block 0: tool_use"):
        FakeReply(content=[{"type": "tool_use", "name": "x"}])
    with pytest.raises(ValueError, match="error status"):
        error_reply(200)
    with pytest.raises(TypeError, match="FakeReply"):
        ScriptedModel().queue("hello")  # type: ignore[arg-type]


async def test_scripted_model_yields_deltas_then_response() -> None:
    model = ScriptedModel(
        replies=[
            thinking_reply(
                "ponder", "sig", tool_reply(("grep", {"pattern": "x"}, "toolu_9"), text="Searching")
            ),
            text_reply("Found it.", usage={"input_tokens": 50, "output_tokens": 4}),
        ]
    )
    request = ModelRequest(model=MODEL, messages=PLAIN_USER, system_stable="You help.")
    events = [event async for event in model.stream(request)]
    final = events[-1]
    assert isinstance(final, ModelResponse)
    assert [type(e) for e in events[:-1]] == [ThinkingDelta, TextDelta, TextDelta, ToolUseStart]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Searching"
    assert events[-2] == ToolUseStart(id="toolu_9", name="grep")
    assert final.stop_reason == "tool_use"
    assert final.tool_uses == [
        {"type": "tool_use", "id": "toolu_9", "name": "grep", "input": {"pattern": "x"}}
    ]
    assert final.content[0] == {"type": "thinking", "thinking": "ponder", "signature": "sig"}
    assert final.model == MODEL and final.usage.input_tokens > 0
    # Mutating the response must not change the script.
    final.content.clear()

    second = [event async for event in model.stream(request)]
    assert isinstance(second[-1], ModelResponse)
    assert second[-1].text == "Found it."
    assert (second[-1].usage.input_tokens, second[-1].usage.output_tokens) == (50, 4)
    assert model.requests == [request, request]
    assert model.pending == 0
    await model.aclose()
    assert model.closed


async def test_scripted_model_errors_and_handler() -> None:
    model = ScriptedModel(
        replies=[error_reply(529), error_reply(400, "prompt is too long: 210000 tokens > 200000 maximum")],
        handler=lambda request: text_reply("compacted") if request.metadata.get("purpose") else None,
    )
    request = ModelRequest(model=MODEL, messages=PLAIN_USER)
    with pytest.raises(ModelError) as overloaded:
        _ = [event async for event in model.stream(request)]
    assert overloaded.value.status == 529 and overloaded.value.retryable
    assert not isinstance(overloaded.value, ContextOverflowError)
    summary = [
        e
        async for e in model.stream(ModelRequest(model=MODEL, messages=PLAIN_USER, metadata={"purpose": "x"}))
    ]
    assert isinstance(summary[-1], ModelResponse) and summary[-1].text == "compacted"
    with pytest.raises(ContextOverflowError) as overflow:
        _ = [event async for event in model.stream(request)]
    assert overflow.value.status == 400 and not overflow.value.retryable
    with pytest.raises(ModelError, match="no scripted reply left"):
        _ = [event async for event in model.stream(request)]


async def test_concurrent_requests_each_get_one_reply(
    server: FakeAnthropicServer, client: AsyncAnthropic
) -> None:
    server.queue(*[text_reply(f"r{index}") for index in range(6)])

    async def ask(stream: bool) -> str:
        if stream:
            async with client.messages.stream(model=MODEL, max_tokens=10, messages=USER) as events:
                return (await events.get_final_message()).content[0].text  # type: ignore[union-attr]
        message = await client.messages.create(model=MODEL, max_tokens=10, messages=USER)
        return message.content[0].text  # type: ignore[union-attr]

    answers = await asyncio.gather(*[ask(index % 2 == 0) for index in range(6)])
    assert sorted(answers) == [f"r{index}" for index in range(6)]
    assert len(server.requests) == 6 and server.pending == 0


def test_recorded_request_reads_either_key_header() -> None:
    bearer = RecordedRequest("POST", "/v1/messages", {"authorization": "Bearer sk-1"}, {})
    legacy = RecordedRequest("POST", "/v1/messages", {"x-api-key": "sk-2"}, {"system": "plain"})
    assert (bearer.api_key, legacy.api_key) == ("sk-1", "sk-2")
    assert RecordedRequest("POST", "/", {}, {}).api_key is None
    assert legacy.system == "plain" and legacy.messages == [] and legacy.stream is False


def test_thinking_reply_accepts_plain_text() -> None:
    reply = thinking_reply("why", "sig", "because")
    assert reply.content == [
        {"type": "thinking", "thinking": "why", "signature": "sig"},
        {"type": "text", "text": "because"},
    ]
    assert reply.stop_reason == "end_turn"


async def test_scripted_model_names_a_script_that_ran_out_or_was_left_over(tmp_path: Path) -> None:
    from openclaw_mini import Agent
    from openclaw_mini.errors import ScriptError

    model = ScriptedModel([text_reply("one")])
    async with Agent(workspace_dir=tmp_path, model=model) as agent:
        assert (await agent.run("s", "first")).text == "one"
        model.assert_complete()  # every reply used, no request left without one
        with pytest.raises(ScriptError, match="no scripted reply left for request #2"):
            await agent.run("s", "second")
    with pytest.raises(ScriptError, match="1 request\\(s\\) found no reply left"):
        model.assert_complete()
    leftover = ScriptedModel([text_reply("a"), text_reply("b")])
    with pytest.raises(ScriptError, match="2 scripted replies were never used"):
        leftover.assert_complete()


def test_fake_server_assert_complete_reports_unused_and_missing_replies() -> None:
    import urllib.error
    import urllib.request

    from openclaw_mini.errors import ScriptError

    with FakeAnthropicServer() as server:
        server.queue(text_reply("unused"))
        with pytest.raises(ScriptError, match="1 scripted reply was never used"):
            server.assert_complete()
        server.reset()
        body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        request = urllib.request.Request(
            f"{server.url}/v1/messages", data=json.dumps(body).encode(), method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=10)
        assert answer.value.code == 400
        answer.value.close()
        with pytest.raises(ScriptError, match="found no reply left"):
            server.assert_complete()
