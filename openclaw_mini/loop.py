"""The tool loop: model turn -> tool calls -> results -> next turn, until the model stops.

No I/O of its own: context preparation (pruning, compaction) and event delivery are hooks the
`Agent` provides, and every change to the history is one `history.append(entry)` (the session
turns it into API messages and queues it for the disk). History is appended to, never rebuilt, so
a run of N steps costs O(N).

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

from .errors import ToolError, ToolRefused, ToolTimeout
from .events import RunEvent, RunResult, ToolCallRecord
from .llm import ContextOverflowError, Model, ModelRequest, ModelResponse, TextDelta, ThinkingDelta, Usage
from .tools.base import Tool, ToolContext, render_tool_output
from .tools.policy import Sandbox, ToolPolicy
from .transcript import AnyEntry, MessageEntry

__all__ = ["History", "LoopHooks", "LoopOutcome", "run_tool_loop"]

ABORTED_TOOL_MESSAGE = "The run was cancelled before this tool call finished."
DEFAULT_TOOL_TIMEOUT = 120.0


class History(Protocol):
    """A session's history: what the model is sent, and the one way to change it."""

    @property
    def messages(self) -> list[dict[str, Any]]: ...

    def append(self, entry: AnyEntry) -> None: ...


@dataclass
class LoopHooks:
    emit: Callable[[RunEvent], None]
    prepare: Callable[[], Awaitable[list[dict[str, Any]]]]
    """Before each request: compaction if due, then pruning; returns the messages to send."""
    on_overflow: Callable[[], Awaitable[bool]]
    """After a 'prompt is too long' error: compact; True when the history got shorter."""
    tool_context: Callable[[str], ToolContext]


@dataclass
class LoopOutcome:
    text: str = ""
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    stop_reason: str = "end_turn"
    turns: int = 0

    def result(self, session_key: str) -> RunResult:
        """What `Agent.run` returns for this outcome."""
        return RunResult(
            text=self.text,
            session_key=session_key,
            tool_calls=self.tool_calls,
            usage=self.usage,
            stop_reason=self.stop_reason,
            turns=self.turns,
        )


async def run_tool_loop(
    *,
    model: Model,
    history: History,
    base_request: ModelRequest,
    tools: Mapping[str, Tool],
    policy: ToolPolicy,
    sandbox: Sandbox,
    hooks: LoopHooks,
    max_turns: int,
    session_key: str,
    tool_timeout: float = DEFAULT_TOOL_TIMEOUT,
) -> LoopOutcome:
    outcome = LoopOutcome()
    overflow_retried = False
    partial: list[str] = []
    pending_calls: list[ToolCallRecord] = []
    try:
        while outcome.turns < max_turns:
            messages = await hooks.prepare()
            request = replace(base_request, messages=messages)
            partial.clear()
            try:
                response = await _stream_turn(model, request, hooks, session_key, partial)
            except ContextOverflowError:
                if overflow_retried or not await hooks.on_overflow():
                    raise
                overflow_retried = True
                continue
            partial.clear()
            outcome.turns += 1
            outcome.usage.add(response.usage)
            # A paused turn's continuation merges into the same assistant message; an empty reply
            # adds no message (it would make the next request invalid): the history's rules.
            history.append(
                MessageEntry(
                    role="assistant",
                    content=response.content,
                    usage=response.usage.as_dict(),
                    stop_reason=response.stop_reason,
                    model=response.model or None,
                )
            )
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
                    _answer_unrun(calls, history, "The reply was cut off before this tool ran.")
                return outcome
            pending_calls = [
                ToolCallRecord(id=c["id"], name=c["name"], input=c.get("input") or {}) for c in calls
            ]
            await _run_tools(pending_calls, tools, policy, sandbox, hooks, session_key, tool_timeout)
            outcome.tool_calls.extend(pending_calls)
            results = [_result_block(record) for record in pending_calls]
            pending_calls = []
            history.append(MessageEntry(role="user", content=results))
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
            history.append(
                MessageEntry(role="user", content=[_result_block(record) for record in pending_calls])
            )
        elif partial and "".join(partial).strip():
            text = "".join(partial)
            history.append(
                MessageEntry(
                    role="assistant", content=[{"type": "text", "text": text}], stop_reason="aborted"
                )
            )
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
    default_timeout: float,
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
            deadline = tool.timeout_seconds or default_timeout
            result = await _invoke(tool, record.input, hooks.tool_context(record.id), deadline)
            output = render_tool_output(result)
            if isinstance(output, str):
                record.output = output
            else:
                record.output, record.output_blocks = _blocks_text(output), output
        except ToolError as exc:  # includes refusals and timeouts
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


async def _invoke(tool: Tool, arguments: dict[str, Any], context: ToolContext, deadline: float) -> Any:
    """Call a tool under its deadline; a tool can neither hang the run nor end the process.

    `SystemExit`/`KeyboardInterrupt` are caught here, in the task that runs the tool: a task that
    lets them through re-raises them in the event loop, which ends the host program. A sync tool
    past its deadline keeps its worker thread until it returns (Python cannot stop a thread).
    """
    try:
        async with asyncio.timeout(deadline) as scope:
            return await tool.invoke(arguments, context)
    except TimeoutError:
        if not scope.expired():
            raise  # the tool's own TimeoutError: an ordinary tool failure
        raise ToolTimeout(
            f"The tool '{tool.name}' did not finish within its {deadline:g} s deadline and was stopped; "
            "try a smaller request or another approach."
        ) from None
    except (SystemExit, KeyboardInterrupt) as exc:
        raise ToolError(
            f"The tool '{tool.name}' tried to end the process ({type(exc).__name__}"
            f"{f' {exc}' if str(exc) else ''}); the call was stopped and the run goes on."
        ) from None


def _blocks_text(blocks: list[dict[str, Any]]) -> str:
    return "\n".join(block.get("text", f"[{block.get('type')}]") for block in blocks)


def _result_block(record: ToolCallRecord) -> dict[str, Any]:
    content: Any = record.output_blocks if record.output_blocks and not record.is_error else record.output
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": record.id, "content": content}
    if record.is_error:
        block["is_error"] = True
    return block


def _answer_unrun(calls: list[dict[str, Any]], history: History, reason: str) -> None:
    results = [
        {"type": "tool_result", "tool_use_id": c["id"], "is_error": True, "content": reason} for c in calls
    ]
    history.append(MessageEntry(role="user", content=results))
