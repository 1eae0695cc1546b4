"""What a run reports: `RunEvent` while it goes, `RunResult` when it ends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .llm import Usage

__all__ = ["RunEvent", "RunEventType", "RunResult", "ToolCallRecord"]

RunEventType = Literal[
    "text_delta",
    "thinking_delta",
    "tool_start",
    "tool_end",
    "turn_end",
    "compaction",
    "warning",
    "subagent",
    "done",
    "error",
]


@dataclass
class ToolCallRecord:
    """One tool call of a run, as the model asked for it and as it ended."""

    id: str
    name: str
    input: dict[str, Any]
    output: str = ""
    is_error: bool = False
    duration_ms: float = 0.0
    output_blocks: list[dict[str, Any]] | None = field(default=None, repr=False)
    """Rich tool output (e.g. image blocks) sent to the model as is; `output` is its text."""


@dataclass
class RunResult:
    """The outcome of `Agent.run`.

    `stop_reason` is the model's (`end_turn`, `max_tokens`, `stop_sequence`, `refusal`) or the
    runtime's own: `max_turns` (the loop guard ended it), `aborted` (cancelled), `error`.
    """

    text: str
    session_key: str
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    stop_reason: str = "end_turn"
    turns: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "session_key": self.session_key,
            "stop_reason": self.stop_reason,
            "turns": self.turns,
            "error": self.error,
            "usage": self.usage.as_dict(),
            "tool_calls": [
                {
                    "id": c.id,
                    "name": c.name,
                    "input": c.input,
                    "output": c.output,
                    "is_error": c.is_error,
                    "duration_ms": round(c.duration_ms, 3),
                }
                for c in self.tool_calls
            ],
        }


@dataclass
class RunEvent:
    """A streamed event. Which fields are set depends on `type`:

    - `text_delta`/`thinking_delta`: `text`
    - `tool_start`: `tool` (the call: id, name, input)
    - `tool_end`: `tool` (with output, is_error, duration_ms)
    - `turn_end`: `turn`, `usage` (of that model call), `stop_reason`
    - `compaction`: `data` (tokens_before, tokens_after, summary)
    - `warning`: `text`
    - `subagent`: `tool` (a sub-agent's tool call) and `data` (`subagent` key, `label`, `event`:
      `tool_start`/`tool_end`, `parent_tool_use_id`)
    - `done`: `result`
    - `error`: `text` (a readable message) and `data["exception"]`; a `done` follows
    """

    type: RunEventType
    session_key: str
    text: str = ""
    tool: ToolCallRecord | None = None
    turn: int = 0
    usage: Usage | None = None
    stop_reason: str | None = None
    result: RunResult | None = None
    data: dict[str, Any] = field(default_factory=dict)
