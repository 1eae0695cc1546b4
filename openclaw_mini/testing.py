"""Offline test kit: a scripted Anthropic Messages API that the real `anthropic` SDK talks to.

`FakeAnthropicServer` answers `POST /v1/messages` on 127.0.0.1 with the JSON and server-sent events
the real API sends, so a test runs the SDK's own HTTP client, retries and stream parsing instead of
a mock of them. `ScriptedModel` plays the same `FakeReply` scripts in process, without HTTP, for
unit tests and loop-overhead benchmarks. Both take replies in order from `.queue(...)`, or from
`.handler` when it returns one, and record every request in `.requests`.

Usage::

    from anthropic import AsyncAnthropic
    from openclaw_mini.testing import FakeAnthropicServer, error_reply, tool_reply

    async def test_weather_call() -> None:
        async with FakeAnthropicServer() as server:
            server.queue(
                error_reply(529),  # overloaded: the SDK retries it by itself
                tool_reply(("get_weather", {"city": "Paris"})),
            )
            client = AsyncAnthropic(base_url=server.url, api_key="test")
            message = await client.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=512,
                messages=[{"role": "user", "content": "Weather in Paris?"}],
            )
            await client.close()
        assert message.content[0].input == {"city": "Paris"}
        assert len(server.requests) == 2  # the 529 and its retry
        assert server.requests[1].messages[0]["content"] == "Weather in Paris?"

The library's own model talks to it the same way: `AnthropicModel(base_url=server.url,
api_key="test")`. Where no HTTP is wanted, `ScriptedModel([text_reply("hi")])` is a `Model`.

Thinking: `thinking_reply("Let me check.", "sig-1", text_reply("Done."))` puts a signed thinking
block before the other reply's content. A context overflow is
`error_reply(400, "prompt is too long: 210000 tokens > 200000 maximum")`. Answer compaction
requests apart with a handler, e.g. `server.handler = lambda r: text_reply("summary") if
"summar" in r.system.lower() else None` (None falls through to the queue).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import selectors
import socket
import threading
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from types import TracebackType
from typing import Any

from .errors import ScriptError
from .llm import (
    ERROR_STATUS,
    ModelEvent,
    ModelRequest,
    ModelResponse,
    TextDelta,
    ThinkingDelta,
    ToolUseStart,
    Usage,
    api_error,
)

__all__ = [
    "FakeAnthropicServer",
    "FakeReply",
    "RecordedRequest",
    "ScriptError",
    "ScriptedModel",
    "demo_reply",
    "error_reply",
    "text_reply",
    "thinking_reply",
    "tool_reply",
]

_log = logging.getLogger(__name__)

NO_REPLY_MESSAGE = "FakeAnthropicServer: no scripted reply left for this request"
_MAX_JSON_PIECES = 32
"""Tool input JSON is split into at most this many deltas, so a large input stays a few events."""

_ERROR_TYPES = {status: kind for kind, status in ERROR_STATUS.items()}
_ERROR_MESSAGES = {
    "invalid_request_error": "Invalid request",
    "authentication_error": "invalid x-api-key",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "Number of requests has exceeded your rate limit",
    "api_error": "Internal server error",
    "overloaded_error": "Overloaded",
}


@dataclass
class FakeReply:
    """One scripted answer: a message (content blocks as the API sends them) or an HTTP error."""

    content: list[dict[str, Any]] = field(default_factory=list)
    """API content blocks: text, tool_use {id, name, input}, thinking {thinking, signature},
    redacted_thinking {data}."""
    stop_reason: str | None = "end_turn"
    usage: dict[str, int] | None = None
    """Token counts to report. Keys left out are estimated at about 4 characters a token."""
    status: int = 200
    error_type: str | None = None
    error_message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    """Extra response headers (e.g. `retry-after-ms`)."""
    chunk_delay: float = 0.0
    """Seconds between SSE events (or before a whole JSON answer): for slow-stream and cancel tests."""
    text_chunk_size: int = 8
    """Characters per text/thinking delta; 0 sends each block's text in one delta."""
    end_stream_after: int | None = None
    """Streamed answers only: send this many SSE events, then end the response cleanly, as a
    proxy or a dropped upstream does (no `message_stop`)."""
    raw_events: list[tuple[str, str]] | None = None
    """Streamed answers only: these (event name, data text) pairs instead of the message's own
    events, sent verbatim: for malformed-stream tests."""

    def __post_init__(self) -> None:
        if self.status < 400:
            for position, block in enumerate(self.content):
                _check_block(block, position)

    @property
    def is_error(self) -> bool:
        return self.status >= 400


def _check_block(block: Any, position: int) -> None:
    """Fail when the reply is built, not in the server thread where the test would only see a 400."""
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise ValueError(f"FakeReply content block {position} must be a dict with a 'type', got {block!r}")
    if block["type"] == "tool_use":
        missing = [key for key in ("id", "name") if not isinstance(block.get(key), str)]
        if missing or not isinstance(block.get("input", {}), dict):
            raise ValueError(
                f"FakeReply content block {position}: tool_use needs a str 'id' and 'name' and a dict "
                f"'input', got {block!r}"
            )


def text_reply(text: str, *, usage: dict[str, int] | None = None, chunk_delay: float = 0.0) -> FakeReply:
    """The model answers `text` and ends its turn."""
    return FakeReply(
        content=[{"type": "text", "text": text}], stop_reason="end_turn", usage=usage, chunk_delay=chunk_delay
    )


def tool_reply(
    *calls: tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], str],
    text: str | None = None,
    usage: dict[str, int] | None = None,
) -> FakeReply:
    """The model calls tools: each call is `(name, input)` or `(name, input, id)` (default id `toolu_...`)."""
    if not calls:
        raise ValueError("tool_reply needs at least one (name, input) call")
    content: list[dict[str, Any]] = []
    if text:
        content.append({"type": "text", "text": text})
    for position, call in enumerate(calls):
        if not isinstance(call, tuple) or len(call) not in (2, 3):
            raise TypeError(
                f"tool_reply call {position} must be (name, input) or (name, input, id), got {call!r}"
            )
        name, arguments = call[0], call[1]
        call_id = call[2] if len(call) == 3 else f"toolu_{uuid.uuid4().hex[:24]}"
        if not isinstance(name, str) or not isinstance(arguments, dict) or not isinstance(call_id, str):
            raise TypeError(
                f"tool_reply call {position} must be (str, dict) or (str, dict, str), got {call!r}"
            )
        content.append({"type": "tool_use", "id": call_id, "name": name, "input": arguments})
    return FakeReply(content=content, stop_reason="tool_use", usage=usage)


def thinking_reply(thinking: str, signature: str, then: FakeReply | str) -> FakeReply:
    """`then` (a reply, or a text answer) preceded by a thinking block carrying `signature`."""
    base = text_reply(then) if isinstance(then, str) else then
    block = {"type": "thinking", "thinking": thinking, "signature": signature}
    return replace(base, content=[block, *base.content])


def error_reply(
    status: int,
    message: str | None = None,
    *,
    error_type: str | None = None,
    retry_after_ms: int | None = 10,
) -> FakeReply:
    """An HTTP error the way the API sends it. `retry-after-ms` keeps the SDK's retries fast in tests.

    The SDK retries 408, 409, 429 and 5xx (529 is "overloaded") and raises at once on other 4xx.
    """
    if status < 400:
        raise ValueError(f"error_reply needs an HTTP error status (>= 400), got {status}")
    kind = error_type or _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    headers = {} if retry_after_ms is None else {"retry-after-ms": str(retry_after_ms)}
    return FakeReply(
        content=[],
        stop_reason=None,
        status=status,
        error_type=kind,
        error_message=message if message is not None else _ERROR_MESSAGES.get(kind, kind),
        headers=headers,
    )


def _describe_miss(number: int, messages: Any) -> str:
    last = messages[-1] if isinstance(messages, list) and messages else {}
    preview = json.dumps(last, ensure_ascii=False)[:120] if last else "(no messages)"
    return f"request #{number}, last message {preview}"


def _check_complete(owner: str, unused: int, misses: list[str]) -> None:
    problems = []
    if unused:
        problems.append(f"{unused} scripted repl{'y was' if unused == 1 else 'ies were'} never used")
    if misses:
        problems.append(f"{len(misses)} request(s) found no reply left: " + "; ".join(misses[:5]))
    if problems:
        raise ScriptError(f"{owner}: " + ", and ".join(problems) + ".")


def _exhausted_reply(message: str = NO_REPLY_MESSAGE) -> FakeReply:
    return error_reply(400, message, retry_after_ms=None)


@dataclass
class RecordedRequest:
    """One HTTP request the fake server received, as sent by the client."""

    method: str
    path: str
    headers: dict[str, str]
    """Header names in lower case."""
    body: dict[str, Any]
    """The parsed JSON body ({} when there was none or it was not a JSON object)."""

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or [])

    @property
    def system(self) -> str:
        """The system prompt as plain text (blocks joined by newlines); `body["system"]` has the blocks."""
        system = self.body.get("system")
        if isinstance(system, list):
            return "\n".join(block.get("text", "") for block in system if isinstance(block, dict))
        return system if isinstance(system, str) else ""

    @property
    def tools(self) -> list[dict[str, Any]]:
        return list(self.body.get("tools") or [])

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream", False))

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def api_key(self) -> str | None:
        """The key the client sent: `x-api-key`, or `Authorization: Bearer` (what SDK 2.x sends)."""
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token if scheme.lower() == "bearer" and token else None


def _estimate_tokens(*parts: Any) -> int:
    """About four characters a token: enough for context-size logic to see growth."""
    chars = 0
    for part in parts:
        if part:
            chars += len(part) if isinstance(part, str) else len(json.dumps(part, ensure_ascii=False))
    return chars // 4


def _resolve_usage(reply: FakeReply, input_tokens: int) -> dict[str, int]:
    usage = {
        "input_tokens": max(1, input_tokens),
        "output_tokens": max(1, _estimate_tokens(reply.content)),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    if reply.usage:
        usage.update(reply.usage)
    return usage


def _pieces(text: str, size: int) -> list[str]:
    if not text:
        return []
    if size <= 0:
        return [text]
    return [text[start : start + size] for start in range(0, len(text), size)]


def _json_pieces(raw: str, size: int) -> list[str]:
    size = max(size, 1, math.ceil(len(raw) / _MAX_JSON_PIECES))
    return _pieces(raw, size)


def _message_object(
    reply: FakeReply, *, message_id: str, model: str, usage: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": copy.deepcopy(reply.content),
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


def _stream_events(
    reply: FakeReply, *, message_id: str, model: str, usage: dict[str, int]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The SSE events of one streamed message, in the order and shapes the real API sends them."""
    start_usage = {key: value for key, value in usage.items() if key != "output_tokens"}
    start_usage["output_tokens"] = min(1, usage.get("output_tokens", 0))
    start = _message_object(replace(reply, content=[]), message_id=message_id, model=model, usage=start_usage)
    start["stop_reason"] = None
    yield "message_start", {"type": "message_start", "message": start}
    yield "ping", {"type": "ping"}
    size = reply.text_chunk_size
    for index, block in enumerate(reply.content):
        kind = block["type"]
        deltas: list[dict[str, Any]] = []
        if kind == "text":
            opening: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": piece} for piece in _pieces(block.get("text", ""), size)]
        elif kind == "tool_use":
            opening = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            raw = json.dumps(block.get("input", {}), ensure_ascii=False)
            deltas = [
                {"type": "input_json_delta", "partial_json": piece} for piece in _json_pieces(raw, size)
            ]
        elif kind == "thinking":
            opening = {"type": "thinking", "thinking": "", "signature": ""}
            pieces = _pieces(block.get("thinking", ""), size)
            deltas = [{"type": "thinking_delta", "thinking": piece} for piece in pieces]
            deltas.append({"type": "signature_delta", "signature": block.get("signature", "")})
        else:  # redacted_thinking (and any other block) arrives whole in its start event
            opening = copy.deepcopy(block)
        yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": opening}
        for delta in deltas:
            yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": usage.get("output_tokens", 0)},
        },
    )
    yield "message_stop", {"type": "message_stop"}


def _error_body(reply: FakeReply) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": reply.error_type or "api_error", "message": reply.error_message},
    }


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class _HTTPServer(ThreadingHTTPServer):
    """Tracks each connection and its thread so `stop()` can end keep-alive connections at once."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], fake: FakeAnthropicServer) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can take seconds on some hosts.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="FakeAnthropicServer-connection",
            daemon=True,
        )
        self.fake._track(request, thread)
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        self.fake._untrack(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        _log.debug("FakeAnthropicServer: connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # without it every response waits ~40 ms for a delayed ACK
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("FakeAnthropicServer: " + format, *args)

    def do_POST(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        fake = self.server.fake
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            raw = self._read_body()
        except ValueError as exc:
            self.close_connection = True
            fake._record(RecordedRequest(self.command, self.path, headers, {}))
            self._send_error(_exhausted_reply(f"FakeAnthropicServer: unreadable request body: {exc}"))
            return
        parsed: Any = None
        if raw:
            try:
                parsed = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                parsed = None
        body = parsed if isinstance(parsed, dict) else {}
        request = RecordedRequest(self.command, self.path, headers, body)
        fake._record(request)
        route = self.path.split("?", 1)[0]
        if self.command != "POST" or route not in ("/v1/messages", "/v1/messages/count_tokens"):
            missing = error_reply(404, f"FakeAnthropicServer: no route for {self.command} {route}")
            self._send_error(missing)
            return
        if raw and not isinstance(parsed, dict):
            self._send_error(_exhausted_reply("FakeAnthropicServer: the request body is not a JSON object"))
            return
        if route == "/v1/messages/count_tokens":
            tokens = _estimate_tokens(body.get("system"), body.get("messages"), body.get("tools"))
            self._send_json(200, {"input_tokens": tokens}, {})
            return
        reply = fake._reply_for(request)
        if reply.chunk_delay > 0 and (reply.is_error or not request.stream):
            if fake._stopping.wait(reply.chunk_delay):
                self.close_connection = True
                return
        if reply.is_error:
            self._send_error(reply)
            return
        model = request.model or "claude-fake"
        message_id = f"msg_fake_{uuid.uuid4().hex[:20]}"
        input_tokens = _estimate_tokens(body.get("system"), body.get("messages"), body.get("tools"))
        usage = _resolve_usage(reply, input_tokens)
        if request.stream:
            self._send_stream(reply, _stream_events(reply, message_id=message_id, model=model, usage=usage))
        else:
            message = _message_object(reply, message_id=message_id, model=model, usage=usage)
            self._send_json(200, message, reply.headers)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline(65537).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _start(self, status: int, content_type: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("request-id", f"req_fake_{uuid.uuid4().hex[:20]}")
        for name, value in headers.items():
            self.send_header(name, value)

    def _send_json(self, status: int, value: Any, headers: dict[str, str]) -> None:
        data = _dumps(value)
        self._start(status, "application/json", headers)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self._write(data)

    def _send_error(self, reply: FakeReply) -> None:
        self._send_json(reply.status, _error_body(reply), reply.headers)

    def _send_stream(self, reply: FakeReply, events: Iterator[tuple[str, dict[str, Any]]]) -> None:
        """Chunked transfer encoding keeps the connection reusable by the SDK's keep-alive pool."""
        self._start(200, "text/event-stream; charset=utf-8", reply.headers)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if reply.raw_events is not None:
            chunks = [_raw_chunk(name, data.encode()) for name, data in reply.raw_events]
        else:
            chunks = [_chunk(name, data) for name, data in events]
        if reply.end_stream_after is not None:
            chunks = chunks[: reply.end_stream_after]
        if reply.chunk_delay <= 0:
            self._write(b"".join(chunks) + b"0\r\n\r\n")
            return
        stopping = self.server.fake._stopping
        for position, chunk in enumerate(chunks):
            if position and stopping.wait(reply.chunk_delay):
                self.close_connection = True
                return
            if not self._write(chunk):
                return
        self._write(b"0\r\n\r\n")

    def _write(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
        except OSError:  # the client went away (a cancelled stream) or the server is stopping
            self.close_connection = True
            return False
        return True


def _chunk(event: str, data: dict[str, Any]) -> bytes:
    return _raw_chunk(event, _dumps(data))


def _raw_chunk(event: str, data: bytes) -> bytes:
    payload = b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(payload), payload)


class FakeAnthropicServer:
    """A scripted Messages API on a local port, for the real SDK: `AsyncAnthropic(base_url=server.url)`.

    Replies come from `handler` (when set and it returns one), else from the queue in order; with
    nothing scripted a request gets HTTP 400 (not retried by the SDK) saying so. `count_tokens` is
    answered with an estimate. Every request, on any path, is recorded in `requests`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.handler: Callable[[RecordedRequest], FakeReply | None] | None = None
        self.requests: list[RecordedRequest] = []
        self.misses: list[str] = []
        """Requests that found no scripted reply left (see `assert_complete`)."""
        self._replies: deque[FakeReply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: dict[int, tuple[socket.socket, threading.Thread]] = {}
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None

    def __repr__(self) -> str:
        state = self.url if self._httpd is not None else "stopped"
        return f"FakeAnthropicServer({state}, pending={self.pending}, requests={len(self.requests)})"

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError(
                "FakeAnthropicServer is not running: call start() or use it as a context manager"
            )
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def pending(self) -> int:
        """Queued replies not yet consumed (assert 0 at the end to catch a request that never came)."""
        with self._lock:
            return len(self._replies)

    def assert_complete(self) -> None:
        """Raise `ScriptError` if a queued reply was never used or a request found none left."""
        with self._lock:
            _check_complete("FakeAnthropicServer", len(self._replies), list(self.misses))

    def queue(self, *replies: FakeReply) -> None:
        for position, reply in enumerate(replies):
            if not isinstance(reply, FakeReply):
                raise TypeError(f"queue() takes FakeReply objects, argument {position} is {reply!r}")
        with self._lock:
            self._replies.extend(replies)

    def reset(self) -> None:
        """Forget queued replies, recorded requests and the handler."""
        with self._lock:
            self._replies.clear()
            self.requests.clear()
            self.misses.clear()
        self.handler = None

    def start(self) -> FakeAnthropicServer:
        if self._httpd is not None:
            raise RuntimeError("FakeAnthropicServer is already running")
        self._stopping.clear()
        httpd = _HTTPServer((self.host, self.port), self)
        httpd.timeout = 0  # handle_request() is only called once the listening socket is readable
        self._wake = socket.socketpair()
        self._httpd = httpd
        self._thread = threading.Thread(
            target=self._serve, args=(httpd, self._wake[0]), name="FakeAnthropicServer", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, end open (keep-alive or streaming) connections and wait for their threads."""
        httpd, thread, wake = self._httpd, self._thread, self._wake
        if httpd is None or thread is None or wake is None:
            return
        self._stopping.set()
        try:
            wake[1].send(b"x")
        except OSError:
            pass
        thread.join(timeout=5)
        httpd.server_close()
        with self._lock:
            live = list(self._connections.values())
        for connection, _ in live:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for _, worker in live:
            worker.join(timeout=5)
        wake[0].close()
        wake[1].close()
        self._httpd = self._thread = self._wake = None

    def _serve(self, httpd: _HTTPServer, wake: socket.socket) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(httpd.socket, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is wake:
                        return
                    httpd.handle_request()

    def __enter__(self) -> FakeAnthropicServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> FakeAnthropicServer:
        return self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    # Called from connection threads.
    def _track(self, connection: socket.socket, thread: threading.Thread) -> None:
        with self._lock:
            self._connections[id(connection)] = (connection, thread)

    def _untrack(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.pop(id(connection), None)

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _reply_for(self, request: RecordedRequest) -> FakeReply:
        handler = self.handler
        if handler is not None:
            try:
                reply = handler(request)
            except Exception as exc:
                _log.exception("FakeAnthropicServer: the handler raised")
                return _exhausted_reply(f"FakeAnthropicServer: the handler raised {exc!r}")
            if reply is not None:
                return reply
        with self._lock:
            if self._replies:
                return self._replies.popleft()
            self.misses.append(_describe_miss(len(self.requests), request.messages))
        return _exhausted_reply()


class ScriptedModel:
    """The `Model` protocol played from `FakeReply` scripts in process: no HTTP, no SDK.

    Events match `AnthropicModel`: `TextDelta`/`ThinkingDelta` per delta, `ToolUseStart` per tool
    call, then one `ModelResponse`. An error reply raises `ModelError` (`ContextOverflowError` for
    "prompt is too long"), as `AnthropicModel` does after the SDK's retries.
    """

    def __init__(
        self,
        replies: Iterable[FakeReply] = (),
        *,
        handler: Callable[[ModelRequest], FakeReply | None] | None = None,
    ) -> None:
        self.handler = handler
        self.requests: list[ModelRequest] = []
        self.misses: list[str] = []
        """Requests that found no scripted reply (see `assert_complete`)."""
        self.closed = False
        self._replies: deque[FakeReply] = deque()
        self.queue(*replies)

    @property
    def pending(self) -> int:
        return len(self._replies)

    def queue(self, *replies: FakeReply) -> None:
        for position, reply in enumerate(replies):
            if not isinstance(reply, FakeReply):
                raise TypeError(f"queue() takes FakeReply objects, argument {position} is {reply!r}")
        self._replies.extend(replies)

    def reset(self) -> None:
        self._replies.clear()
        self.requests.clear()
        self.misses.clear()
        self.handler = None

    def assert_complete(self) -> None:
        """Raise `ScriptError` if a queued reply was never used or a request found none left."""
        _check_complete("ScriptedModel", len(self._replies), self.misses)

    async def aclose(self) -> None:
        self.closed = True

    def _reply_for(self, request: ModelRequest) -> FakeReply:
        if self.handler is not None:
            reply = self.handler(request)
            if reply is not None:
                return reply
        if self._replies:
            return self._replies.popleft()
        miss = _describe_miss(len(self.requests), request.messages)
        self.misses.append(miss)
        raise ScriptError(f"ScriptedModel: no scripted reply left for {miss}")

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        self.requests.append(request)
        reply = self._reply_for(request)
        if reply.chunk_delay > 0:
            await asyncio.sleep(reply.chunk_delay)
        if reply.is_error:
            raise api_error(reply.status, reply.error_message)
        for event in _model_events(reply):
            if reply.chunk_delay > 0:
                await asyncio.sleep(reply.chunk_delay)
            yield event
        estimated = 0
        if "input_tokens" not in (reply.usage or {}):  # the estimate serialises the whole request
            system = request.system_stable + request.system_dynamic
            estimated = _estimate_tokens(system, request.messages, request.tools)
        usage = _resolve_usage(reply, estimated)
        yield ModelResponse(
            content=copy.deepcopy(reply.content),
            stop_reason=reply.stop_reason,
            usage=Usage.from_dict(usage),
            model=request.model,
        )


def _model_events(reply: FakeReply) -> Iterator[TextDelta | ThinkingDelta | ToolUseStart]:
    for block in reply.content:
        kind = block["type"]
        if kind == "text":
            for piece in _pieces(block.get("text", ""), reply.text_chunk_size):
                yield TextDelta(piece)
        elif kind == "thinking":
            for piece in _pieces(block.get("thinking", ""), reply.text_chunk_size):
                yield ThinkingDelta(piece)
        elif kind == "tool_use":
            yield ToolUseStart(id=block["id"], name=block["name"])


def demo_reply(request: RecordedRequest) -> FakeReply:
    """A stand-in model for trying the CLI without a key: it lists the workspace once, then
    answers by echoing the user's last words."""
    last = request.messages[-1] if request.messages else {"content": []}
    content = last.get("content")
    blocks = content if isinstance(content, list) else [{"type": "text", "text": str(content or "")}]
    if any(block.get("type") == "tool_result" for block in blocks):
        return text_reply(
            "That was the `ls` tool. I am the offline demo model: set ANTHROPIC_API_KEY for a real one."
        )
    words = " ".join(block.get("text", "") for block in blocks if block.get("type") == "text").strip()
    if "ls" in {tool.get("name") for tool in request.tools} and len(request.messages) == 1:
        return tool_reply(("ls", {}), text="Let me look at the workspace first.")
    return text_reply(f"You said: **{words[-200:]}**")


def main(argv: list[str] | None = None) -> None:
    """`python -m openclaw_mini.testing [--port N]`: serve the demo model until Ctrl-C."""
    import argparse
    import time

    parser = argparse.ArgumentParser(description="A fake Anthropic Messages API for offline tries.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback)")
    parser.add_argument("--port", type=int, default=8765, help="TCP port (0 picks a free one)")
    options = parser.parse_args(argv)
    server = FakeAnthropicServer(host=options.host, port=options.port)
    server.handler = demo_reply
    with server:
        print(f"Fake Messages API on {server.url}. In another terminal:", flush=True)
        print(f"  ANTHROPIC_BASE_URL={server.url} ANTHROPIC_API_KEY=demo openclaw-mini chat", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
