"""The tool loop: model turn -> tool calls -> results -> next turn, until the model stops.

No I/O of its own: persistence, context preparation (pruning, compaction) and event delivery are
hooks the `Agent` provides. History is appended to, never rebuilt, so a run of N steps costs O(N).

Invariants the loop keeps:
- every `tool_use` gets exactly one `tool_result` (failures become `is_error: true`), even when the
  run is cancelled mid-tool, so the transcript is always valid to send back;
- tool calls of one turn run concurrently and their results keep the order of the calls;
- `max_turns` ends a runaway loop with `stop_reason="max_turns"`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from .events import RunEvent, ToolCallRecord
from .llm import ContextOverflowError, Model, ModelRequest, ModelResponse, TextDelta, ThinkingDelta, Usage
from .tools.base import Tool, ToolContext, ToolError, render_tool_output
from .tools.policy import Sandbox, ToolPolicy, ToolRefused
from .transcript import MessageEntry, sendable_blocks

__all__ = ["Conversation", "LoopHooks", "LoopOutcome", "run_tool_loop"]

ABORTED_TOOL_MESSAGE = "The run was cancelled before this tool call finished."


class Conversation(Protocol):
    """The messages sent to the model; hooks may replace the list (compaction)."""

    messages: list[dict[str, Any]]


@dataclass
class LoopHooks:
    emit: Callable[[RunEvent], None]
    persist: Callable[[MessageEntry], Awaitable[None]]
    prepare: Callable[[Conversation], Awaitable[list[dict[str, Any]]]]
    """Before each request: compaction if due, then pruning; returns the messages to send."""
    on_overflow: Callable[[Conversation], Awaitable[bool]]
    """After a 'prompt is too long' error: compact; True when the history got shorter."""
    tool_context: Callable[[str], ToolContext]


@dataclass
class LoopOutcome:
    text: str = ""
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    stop_reason: str = "end_turn"
    turns: int = 0


async def run_tool_loop(
    *,
    model: Model,
    conversation: Conversation,
    base_request: ModelRequest,
    tools: Mapping[str, Tool],
    policy: ToolPolicy,
    sandbox: Sandbox,
    hooks: LoopHooks,
    max_turns: int,
    session_key: str,
) -> LoopOutcome:
    outcome = LoopOutcome()
    overflow_retried = False
    partial: list[str] = []
    pending_calls: list[ToolCallRecord] = []
    try:
        while outcome.turns < max_turns:
            messages = await hooks.prepare(conversation)
            request = replace(base_request, messages=messages)
            partial.clear()
            try:
                response = await _stream_turn(model, request, hooks, session_key, partial)
            except ContextOverflowError:
                if overflow_retried or not await hooks.on_overflow(conversation):
                    raise
                overflow_retried = True
                continue
            partial.clear()
            outcome.turns += 1
            outcome.usage.add(response.usage)
            assistant = MessageEntry(
                role="assistant",
                content=response.content,
                usage=response.usage.as_dict(),
                stop_reason=response.stop_reason,
                model=response.model or None,
            )
            sendable = sendable_blocks(response.content)
            previous = conversation.messages[-1] if conversation.messages else None
            if not sendable:  # an empty reply (it happens) would make the next request invalid
                pass
            elif previous is not None and previous["role"] == "assistant":  # continuing a paused turn
                merged = [*previous["content"], *sendable]
                conversation.messages[-1] = {"role": "assistant", "content": merged}
            else:
                conversation.messages.append({"role": "assistant", "content": sendable})
            await hooks.persist(assistant)
            if response.text:
                outcome.text = response.text
            hooks.emit(
                RunEvent(
                    "turn_end",
                    session_key,
                    turn=outcome.turns,
                    usage=response.usage,
                    stop_reason=response.stop_reason,
                )
            )
            calls = response.tool_uses
            if not calls or response.stop_reason not in ("tool_use", None, "pause_turn"):
                if response.stop_reason == "pause_turn":
                    continue
                outcome.stop_reason = response.stop_reason or "end_turn"
                if calls:  # tool_use blocks with another stop reason (e.g. max_tokens): answer them
                    await _answer_unrun(
                        calls, hooks, conversation, "The reply was cut off before this tool ran."
                    )
                return outcome
            pending_calls = [
                ToolCallRecord(id=c["id"], name=c["name"], input=c.get("input") or {}) for c in calls
            ]
            await _run_tools(pending_calls, tools, policy, sandbox, hooks, session_key)
            outcome.tool_calls.extend(pending_calls)
            results = [_result_block(record) for record in pending_calls]
            pending_calls = []
            conversation.messages.append({"role": "user", "content": results})
            await hooks.persist(MessageEntry(role="user", content=results))
        outcome.stop_reason = "max_turns"
        return outcome
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        outcome.stop_reason = "aborted"
        if pending_calls:
            for record in pending_calls:
                if not record.output and not record.is_error:
                    record.output, record.is_error = ABORTED_TOOL_MESSAGE, True
            outcome.tool_calls.extend(pending_calls)
            results = [_result_block(record) for record in pending_calls]
            conversation.messages.append({"role": "user", "content": results})
            await hooks.persist(MessageEntry(role="user", content=results))
        elif partial and "".join(partial).strip():
            text = "".join(partial)
            content = [{"type": "text", "text": text}]
            conversation.messages.append({"role": "assistant", "content": content})
            await hooks.persist(MessageEntry(role="assistant", content=content, stop_reason="aborted"))
            outcome.text = text
        return outcome


async def _stream_turn(
    model: Model, request: ModelRequest, hooks: LoopHooks, session_key: str, partial: list[str]
) -> ModelResponse:
    response: ModelResponse | None = None
    async for event in model.stream(request):
        if isinstance(event, TextDelta):
            partial.append(event.text)
            hooks.emit(RunEvent("text_delta", session_key, text=event.text))
        elif isinstance(event, ThinkingDelta):
            hooks.emit(RunEvent("thinking_delta", session_key, text=event.thinking))
        elif isinstance(event, ModelResponse):
            response = event
    if response is None:
        raise RuntimeError("The model stream ended without a final message.")
    return response


async def _run_tools(
    calls: list[ToolCallRecord],
    tools: Mapping[str, Tool],
    policy: ToolPolicy,
    sandbox: Sandbox,
    hooks: LoopHooks,
    session_key: str,
) -> None:
    async def run_one(record: ToolCallRecord) -> None:
        hooks.emit(RunEvent("tool_start", session_key, tool=record))
        started = time.perf_counter()
        try:
            tool = tools.get(record.name)
            if tool is None:
                raise ToolRefused(
                    f"Unknown tool '{record.name}'. Available tools: {', '.join(sorted(tools))}."
                )
            await sandbox.authorize(tool, policy, record.input, session_key, record.id)
            if "_invalid_json" in record.input:
                raise ToolError("The tool input was not valid JSON; send the arguments again.")
            output = render_tool_output(await tool.invoke(record.input, hooks.tool_context(record.id)))
            if isinstance(output, str):
                record.output = output
            else:
                record.output, record.output_blocks = _blocks_text(output), output
        except (ToolError, ToolRefused) as exc:
            record.output, record.is_error = str(exc) or type(exc).__name__, True
        except asyncio.CancelledError:
            record.output, record.is_error = ABORTED_TOOL_MESSAGE, True
            raise
        except Exception as exc:  # a tool bug must not kill the run: the model reads the error
            record.output, record.is_error = f"{type(exc).__name__}: {exc}", True
        finally:
            record.duration_ms = (time.perf_counter() - started) * 1000
            hooks.emit(RunEvent("tool_end", session_key, tool=record))

    if len(calls) == 1:
        await run_one(calls[0])
    else:
        await asyncio.gather(*(run_one(record) for record in calls))


def _blocks_text(blocks: list[dict[str, Any]]) -> str:
    return "\n".join(block.get("text", f"[{block.get('type')}]") for block in blocks)


def _result_block(record: ToolCallRecord) -> dict[str, Any]:
    content: Any = record.output_blocks if record.output_blocks and not record.is_error else record.output
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": record.id, "content": content}
    if record.is_error:
        block["is_error"] = True
    return block


async def _answer_unrun(
    calls: list[dict[str, Any]], hooks: LoopHooks, conversation: Conversation, reason: str
) -> None:
    results = [
        {"type": "tool_result", "tool_use_id": c["id"], "is_error": True, "content": reason} for c in calls
    ]
    conversation.messages.append({"role": "user", "content": results})
    await hooks.persist(MessageEntry(role="user", content=results))
