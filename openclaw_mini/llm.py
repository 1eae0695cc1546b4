"""The model boundary: the `Model` protocol and `AnthropicModel` on the official SDK.

The loop only sees `ModelRequest` in and a stream of `ModelEvent`s out, so tests and other
backends plug in without touching the loop. The anthropic SDK is imported the first time a
request is made (importing it costs about a second), and one `AsyncAnthropic` client is reused.

We stream with raw `messages.create(stream=True)` events and assemble blocks ourselves: measured
here, the SDK's `messages.stream()` helper costs about twice as much per event.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .errors import ContextOverflowError, ModelError

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic

    from .config import AgentConfig

__all__ = [
    "ERROR_STATUS",
    "USAGE_FIELDS",
    "AnthropicModel",
    "ContextOverflowError",
    "Model",
    "ModelError",
    "ModelRequest",
    "ModelResponse",
    "TextDelta",
    "ThinkingDelta",
    "ToolUseStart",
    "Usage",
]


USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
"""The token counts of a Messages API `usage` object, in one place."""


@dataclass
class Usage:
    """Token counts as the API reports them, added up over a run."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    def add(self, other: Usage) -> None:
        for name in USAGE_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def context_tokens(self) -> int:
        """Everything the model read for this request: what the context window holds."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens

    @property
    def total_tokens(self) -> int:
        """What the request read plus what the reply wrote: the context the next request builds on."""
        return self.context_tokens + self.output_tokens

    @classmethod
    def from_dict(cls, values: Mapping[str, int]) -> Usage:
        """Usage from a transcript entry's `usage` (missing counts are 0, unknown keys ignored)."""
        return cls(**{name: int(values.get(name, 0) or 0) for name in USAGE_FIELDS})

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in USAGE_FIELDS}


@dataclass
class ModelRequest:
    """One Messages API call. `system` is split so the stable part can be cached."""

    model: str
    messages: list[dict[str, Any]]
    system_stable: str = ""
    system_dynamic: str = ""
    tools: list[dict[str, Any]] = field(default_factory=list)
    max_tokens: int = 8192
    thinking_budget_tokens: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    """Free-form tags for fakes and logs (e.g. `{"purpose": "compaction"}`); never sent."""


@dataclass
class ModelResponse:
    """The finished assistant message: content blocks exactly as the API returned them."""

    content: list[dict[str, Any]]
    stop_reason: str | None
    usage: Usage
    model: str = ""

    @property
    def text(self) -> str:
        return "".join(block.get("text", "") for block in self.content if block.get("type") == "text")

    @property
    def tool_uses(self) -> list[dict[str, Any]]:
        return [block for block in self.content if block.get("type") == "tool_use"]


@dataclass
class TextDelta:
    text: str


@dataclass
class ThinkingDelta:
    thinking: str


@dataclass
class ToolUseStart:
    """The model began writing a tool call (its input follows as JSON deltas)."""

    id: str
    name: str


ModelEvent = TextDelta | ThinkingDelta | ToolUseStart | ModelResponse


@runtime_checkable
class Model(Protocol):
    """Anything that turns a `ModelRequest` into streamed events ending with one `ModelResponse`."""

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]: ...

    async def aclose(self) -> None: ...


_OVERFLOW_MARKERS = (
    "prompt is too long",
    "context window",
    "exceed context limit",  # "input length and `max_tokens` exceed context limit: ..."
    "context length",
    "too many tokens",
    "maximum context",
    "context_length_exceeded",
)


def is_context_overflow(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _OVERFLOW_MARKERS)


def api_error(status: int, message: str) -> ModelError:
    """The error for an HTTP error answer: `ContextOverflowError` when the prompt was too long,
    retryable for 408/409/429 and 5xx (529 is "overloaded")."""
    error_cls = ContextOverflowError if is_context_overflow(message) else ModelError
    retryable = status in (408, 409, 429) or status >= 500
    return error_cls(f"Model API error {status}: {message}", status=status, retryable=retryable)


def with_cache_breakpoints(request: ModelRequest) -> dict[str, Any]:
    """Build the API params with prompt-cache breakpoints on the stable prefix.

    Breakpoints: the last tool definition, the stable system block, and the last message (so the
    conversation so far is read from cache next turn). The dynamic system part (time, heartbeat)
    comes after the system breakpoint so it never invalidates the cached prefix. The request's own
    lists are not modified: only the last message is copied.
    """
    ephemeral = {"type": "ephemeral"}
    system: list[dict[str, Any]] = []
    if request.system_stable:
        system.append({"type": "text", "text": request.system_stable, "cache_control": ephemeral})
    if request.system_dynamic:
        system.append({"type": "text", "text": request.system_dynamic})
    tools = list(request.tools)
    if tools:
        tools[-1] = {**tools[-1], "cache_control": ephemeral}
    messages = list(request.messages)
    if messages:
        last = copy.copy(messages[-1])
        content = last.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if isinstance(content, list) and content:
            blocks = list(content)
            final = blocks[-1]
            if final.get("type") not in ("thinking", "redacted_thinking"):
                blocks[-1] = {**final, "cache_control": ephemeral}
            last["content"] = blocks
            messages[-1] = last
    params: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": messages,
    }
    if system:
        params["system"] = system
    if tools:
        params["tools"] = tools
    if request.thinking_budget_tokens:
        params["thinking"] = {"type": "enabled", "budget_tokens": request.thinking_budget_tokens}
    return params


class AnthropicModel:
    """`Model` on the official `anthropic` SDK (`AsyncAnthropic`), streaming raw events.

    Retries (429, 5xx, 529 overloaded, connection errors) are the SDK's own, with its backoff and
    `retry-after` handling; `max_retries` sets how many.
    """

    @classmethod
    def from_config(cls, config: AgentConfig) -> AnthropicModel:
        """The client an agent with `config` uses (key and base URL from the environment if unset)."""
        return cls(
            api_key=config.resolved_api_key,
            base_url=config.resolved_base_url,
            max_retries=config.max_retries,
            timeout_seconds=config.timeout_seconds,
        )

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        max_retries: int = 3,
        timeout_seconds: float = 600.0,
        prompt_caching: bool = True,
        client: AsyncAnthropic | None = None,
    ) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self._max_retries = max_retries
        self._timeout = timeout_seconds
        self._prompt_caching = prompt_caching
        self._client = client

    def __repr__(self) -> str:  # never show the key
        return f"AnthropicModel(base_url={self._base_url!r}, max_retries={self._max_retries})"

    @property
    def client(self) -> AsyncAnthropic:
        if self._client is None:
            from anthropic import AsyncAnthropic

            self._client = AsyncAnthropic(
                api_key=self._api_key,
                base_url=self._base_url,
                max_retries=self._max_retries,
                timeout=self._timeout,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def params_for(self, request: ModelRequest) -> dict[str, Any]:
        if self._prompt_caching:
            return with_cache_breakpoints(request)
        params = with_cache_breakpoints(request)
        _strip_cache_control(params)
        return params

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        """Stream one reply. A stream that breaks before anything visible was produced (the
        connection dropped, the body ended without `message_stop`, malformed events) is sent
        again, up to `max_retries` times; after visible output it is a `ModelError`, never a
        partial reply passed off as complete."""
        attempt = 0
        while True:
            visible = False
            try:
                async for event in self._stream_once(request):
                    visible = visible or isinstance(event, (TextDelta, ThinkingDelta))
                    yield event
                return
            except _StreamBroken:
                if visible or attempt >= self._max_retries:
                    raise
                attempt += 1

    async def _stream_once(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        import anthropic
        import httpx2

        params = self.params_for(request)
        where = self._base_url or "the Anthropic API"
        try:
            stream = await self.client.messages.create(**params, stream=True)
            assembler = _StreamAssembler(where)
            async with stream:
                async for event in stream:
                    for out in assembler.feed(event):
                        yield out
            yield assembler.finish()
        except anthropic.APIStatusError as exc:
            message = _error_message(exc)
            status = exc.status_code
            if status < 400:  # an `error` event inside a 200 stream: its type tells the status
                status = ERROR_STATUS.get(_error_type(exc), 500)
            if status in (401, 403):
                message += " Check your API key (ANTHROPIC_API_KEY)."
            raise api_error(status, message) from exc
        except anthropic.APIConnectionError as exc:
            raise ModelError(
                f"Could not reach {where} ({exc}). Check ANTHROPIC_BASE_URL and your network connection.",
                retryable=True,
            ) from exc
        except httpx2.TransportError as exc:  # raised while reading the stream: the SDK lets it through
            detail = f"{type(exc).__name__}: {exc}"
            raise _StreamBroken(
                f"The connection to {where} broke while the reply was streaming ({detail})."
            ) from exc
        except (ValueError, KeyError, AttributeError, TypeError) as exc:  # malformed SSE data or events
            raise _StreamBroken(
                f"{where} sent a malformed reply stream ({type(exc).__name__}: {str(exc)[:200]})."
            ) from exc


class _StreamBroken(ModelError):
    """The reply stream broke or ended early: retryable, and resent when nothing was shown yet."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


def _strip_cache_control(params: dict[str, Any]) -> None:
    for key in ("system", "tools"):
        for block in params.get(key, []):
            block.pop("cache_control", None)
    for message in params["messages"]:
        if isinstance(message.get("content"), list):
            for block in message["content"]:
                if "cache_control" in block:
                    message["content"] = [
                        {k: v for k, v in b.items() if k != "cache_control"} for b in message["content"]
                    ]
                    break


ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
"""The Messages API's error types and their HTTP statuses (the fake server answers with the same)."""


def _error_type(exc: Any) -> str:
    body = getattr(exc, "body", None)
    error = body.get("error") if isinstance(body, dict) else None
    return str(error.get("type", "")) if isinstance(error, dict) else ""


def _error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return str(getattr(exc, "message", exc))


class _StreamAssembler:
    """Builds the final message from raw SSE events, keeping thinking signatures intact."""

    def __init__(self, where: str = "the Anthropic API") -> None:
        self.where = where
        self.blocks: dict[int, dict[str, Any]] = {}
        self.json_parts: dict[int, list[str]] = {}
        self.open: set[int] = set()
        self.usage = Usage()
        self.stop_reason: str | None = None
        self.model = ""
        self.stopped = False

    def _block(self, index: int) -> dict[str, Any]:
        if index not in self.open:
            raise _StreamBroken(f"{self.where} sent an event for content block {index}, which is not open.")
        return self.blocks[index]

    def feed(self, event: Any) -> list[ModelEvent]:
        kind = event.type
        if kind == "message_start":
            message = event.message
            self.model = message.model
            self._take_usage(message.usage)
            return []
        if kind == "content_block_start":
            block = event.content_block.model_dump(exclude_none=True)
            if block["type"] == "tool_use":
                block["input"] = {}
                self.json_parts[event.index] = []
            if block["type"] == "thinking":
                block.setdefault("thinking", "")
                block.setdefault("signature", "")
            if block["type"] == "text":
                block.pop("citations", None)
            self.blocks[event.index] = block
            self.open.add(event.index)
            if block["type"] == "tool_use":
                return [ToolUseStart(id=block["id"], name=block["name"])]
            if block["type"] == "text" and block.get("text"):
                return [TextDelta(block["text"])]
            return []
        if kind == "content_block_delta":
            delta = event.delta
            block = self._block(event.index)
            if delta.type == "text_delta":
                block["text"] = block.get("text", "") + delta.text
                return [TextDelta(delta.text)]
            if delta.type == "input_json_delta":
                self.json_parts[event.index].append(delta.partial_json)
            elif delta.type == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta.thinking
                return [ThinkingDelta(delta.thinking)]
            elif delta.type == "signature_delta":
                block["signature"] = block.get("signature", "") + delta.signature
            return []
        if kind == "content_block_stop":
            self._block(event.index)
            self.open.discard(event.index)
            parts = self.json_parts.pop(event.index, None)
            if parts is not None:
                raw = "".join(parts)
                try:
                    self.blocks[event.index]["input"] = json.loads(raw) if raw else {}
                except json.JSONDecodeError:
                    self.blocks[event.index]["input"] = {"_invalid_json": raw}
            return []
        if kind == "message_delta":
            self.stop_reason = event.delta.stop_reason or self.stop_reason
            if event.usage is not None:
                self._take_usage(event.usage)
            return []
        if kind == "message_stop":
            self.stopped = True
        return []

    def _take_usage(self, usage: Any) -> None:
        if usage is None:
            return
        for name in USAGE_FIELDS:
            value = getattr(usage, name, None)
            if value:
                setattr(self.usage, name, value)

    def finish(self) -> ModelResponse:
        """The complete reply; a stream that ended without `message_stop` (or with a block left
        open) was cut off, and its half-sent tool calls must never run."""
        if not self.stopped or self.open:
            raise _StreamBroken(
                f"The reply stream from {self.where} ended before the message was complete "
                f"(no {'message_stop' if not self.stopped else 'content_block_stop'})."
            )
        content = [self.blocks[index] for index in sorted(self.blocks)]
        return ModelResponse(
            content=content, stop_reason=self.stop_reason, usage=self.usage, model=self.model
        )
