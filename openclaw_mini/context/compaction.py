"""Summary compaction: when to compact, what to summarise, the summary request, the memory flush.

Pure building blocks: the caller loads entries, asks `should_compact`, runs the memory flush turn
(before the summary, never after, with a fresh estimate), then `plan_compaction` ->
`build_summary_request` -> `summarize` -> `make_compaction_entry` and appends that entry. The
transcript keeps every entry; `transcript.build_messages` starts from the latest compaction.

Cuts happen only at a user turn (a user message that is not a tool answer), so a tool_use and its
tool_result always stay on the same side. The older part is sent to the model as plain text in one
user message: sent as chat turns, the model tends to continue the conversation instead of
summarising it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from ..config import CompactionConfig
from ..llm import Model, ModelError, ModelRequest, ModelResponse, Usage
from ..transcript import COMPACTION_PREFIX, CompactionEntry, CustomEntry, MessageEntry, active_start
from .tokens import content_chars, estimate_messages_tokens, estimate_tokens, weighted_chars

__all__ = [
    "MEMORY_FLUSH_CUSTOM_TYPE",
    "MEMORY_FLUSH_PROMPT",
    "SILENT_REPLY_TOKEN",
    "SUMMARY_SYSTEM_PROMPT",
    "TOOL_RESULT_PREVIEW_CHARS",
    "CompactionPlan",
    "build_summary_request",
    "compaction_threshold",
    "effective_limits",
    "entry_tokens",
    "estimate_context_tokens",
    "estimate_messages_tokens",
    "estimate_tokens",
    "flushed_since_compaction",
    "is_silent_reply",
    "make_compaction_entry",
    "make_flush_marker",
    "memory_flush_prompt",
    "memory_flush_threshold",
    "plan_compaction",
    "serialize_entries",
    "should_compact",
    "should_flush_memory",
    "summarize",
    "summary_max_tokens",
]

log = logging.getLogger(__name__)

AnyEntry = MessageEntry | CompactionEntry | CustomEntry

TOOL_RESULT_PREVIEW_CHARS = 2_000
_TOOL_ARGS_PREVIEW_CHARS = 200
SILENT_REPLY_TOKEN = "NO_REPLY"
MEMORY_FLUSH_CUSTOM_TYPE = "memory_flush"


# -- estimates and thresholds -------------------------------------------------------------------


def estimate_context_tokens(
    messages: Sequence[Mapping[str, Any]],
    *,
    fixed_tokens: int = 0,
    reported_tokens: int | None = None,
    reported_messages: int = 0,
) -> int:
    """Tokens the next request will hold, preferring what the API reported.

    `reported_tokens` is the last response's `usage.context_tokens + usage.output_tokens`, which
    covered the first `reported_messages` messages (the request plus its reply, system prompt and
    tools included); only messages after those are estimated. Without a report everything is
    estimated and `fixed_tokens` (system prompt + tool definitions) is added.
    """
    if reported_tokens is None:
        return fixed_tokens + estimate_messages_tokens(messages)
    return reported_tokens + estimate_messages_tokens(messages[reported_messages:])


def effective_limits(context_window_tokens: int, config: CompactionConfig) -> tuple[int, int]:
    """(reserve, keep_recent) scaled for small windows: at most a quarter and a half of the window."""
    window = max(context_window_tokens, 0)
    reserve = min(config.reserve_tokens, window // 4)
    keep_recent = min(config.keep_recent_tokens, window // 2)
    return reserve, keep_recent


def summary_max_tokens(context_window_tokens: int, config: CompactionConfig) -> int:
    """The summary's output budget: at most an eighth of the window (a small window has no room for 4k)."""
    return max(min(config.summary_max_tokens, context_window_tokens // 8), 256)


def compaction_threshold(context_window_tokens: int, config: CompactionConfig) -> int:
    reserve, _ = effective_limits(context_window_tokens, config)
    return context_window_tokens - reserve


def should_compact(estimated_tokens: int, context_window_tokens: int, config: CompactionConfig) -> bool:
    """True when the context estimate is over `window - reserve`."""
    return config.enabled and estimated_tokens > compaction_threshold(context_window_tokens, config)


def memory_flush_threshold(context_window_tokens: int, config: CompactionConfig) -> int:
    """`window - reserve - soft`, the soft margin at most 1/20 of the window, never below half of it.

    In a small window the context right after a compaction (keep-recent + summary) sits near
    `window - reserve - window/8`; a narrow margin keeps the flush from firing again at once.
    """
    reserve, _ = effective_limits(context_window_tokens, config)
    soft = min(config.memory_flush_soft_tokens, context_window_tokens // 20)
    return max(context_window_tokens - reserve - soft, context_window_tokens // 2)


def should_flush_memory(estimated_tokens: int, context_window_tokens: int, config: CompactionConfig) -> bool:
    """True when the flush turn is due (the caller also checks `flushed_since_compaction`)."""
    return (
        config.enabled
        and config.memory_flush
        and estimated_tokens >= memory_flush_threshold(context_window_tokens, config)
    )


# -- planning --------------------------------------------------------------------------------------


def entry_tokens(entry: AnyEntry) -> int:
    """Estimated tokens an entry adds to the context (compaction entries add none here)."""
    if isinstance(entry, MessageEntry):
        return -(-(content_chars(entry.content) + 16) // 4)
    if isinstance(entry, CustomEntry) and entry.message:
        return estimate_tokens(entry.message) + 4
    return 0


def _is_user_turn(entry: AnyEntry) -> bool:
    """A user message that is not a tool answer: the only place a cut may happen."""
    if entry.__class__ is not MessageEntry or entry.role != "user":
        return False
    return not any(block.get("type") == "tool_result" for block in entry.content)


def _active(entries: Sequence[AnyEntry]) -> tuple[list[AnyEntry], CompactionEntry | None]:
    """Entries the context is built from (as `build_messages` does) and the latest compaction."""
    start, latest = active_start(entries)
    return [item for item in entries[start:] if not isinstance(item, CompactionEntry)], latest


@dataclass
class CompactionPlan:
    """What one compaction summarises and keeps."""

    older: list[AnyEntry]
    """Entries to summarise, oldest first."""
    kept: list[AnyEntry]
    """Entries kept verbatim after the summary."""
    first_kept_id: str
    previous_summary: str | None
    """The latest compaction's summary: the new summary updates it (chained compaction)."""
    tokens_before: int
    kept_tokens: int

    def tokens_after(self, summary: str) -> int:
        """Estimated context once `summary` replaces the older part."""
        return estimate_tokens(COMPACTION_PREFIX + summary) + 8 + self.kept_tokens


def plan_compaction(entries: Sequence[AnyEntry], *, keep_recent_tokens: int) -> CompactionPlan | None:
    """Choose where to cut: the earliest user turn after which at most `keep_recent_tokens` remain.

    When even the last user turn holds more than that, the cut is at the last user turn (the
    current turn is never split). None when there is no user turn to cut at after the start.
    One linear pass over the entries since the latest compaction.
    """
    active, latest = _active(entries)
    previous = latest.summary if latest is not None else None
    sizes = [entry_tokens(entry) for entry in active]
    total = sum(sizes)
    prefix_tokens = estimate_tokens(COMPACTION_PREFIX + previous) + 8 if previous is not None else 0

    cut: int | None = None
    suffix = total
    for index, entry in enumerate(active):
        if index > 0 and _is_user_turn(entry):
            cut = index  # the latest user turn so far: the fallback when none is small enough
            if suffix <= keep_recent_tokens:
                break
        suffix -= sizes[index]
    if cut is None:
        return None
    kept_tokens = sum(sizes[cut:])
    return CompactionPlan(
        older=active[:cut],
        kept=active[cut:],
        first_kept_id=active[cut].id,
        previous_summary=previous,
        tokens_before=prefix_tokens + total,
        kept_tokens=kept_tokens,
    )


# -- the summary request ---------------------------------------------------------------------------

SUMMARY_SYSTEM_PROMPT = """\
You condense the history of a working session between a user and an AI agent. The agent will \
continue the work with your summary in place of the history, so anything you leave out is lost to it.

Reply with the summary only, in Markdown, using exactly these sections in this order:

## Goal
What the user is trying to achieve, in one to three sentences.

## Constraints & Preferences
Requirements, limits and preferences the user stated or that the work revealed.

## Progress
### Done
### In Progress
### Blocked

## Key Decisions
Choices that were made and, briefly, why.

## Next Steps
What should happen next, in order.

## Critical Context
Facts the agent needs to continue: exact file paths, identifiers, commands, URLs, numbers, \
configuration values and error messages.

Rules:
- Copy paths, names, identifiers, commands and error messages exactly as they appear; never paraphrase them.
- Write in the language the conversation is mostly written in.
- Put "(none)" under a section that has nothing to report.
- Summarise; do not answer the user, continue the conversation, or call tools.
- Tool results were shortened for you; do not guess at the parts you cannot see."""


def _preview(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]} ... [{len(text) - limit:,} more characters]"


def _result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content or ():
        if block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif block.get("type") == "image":
            parts.append("[image]")
    return "\n".join(parts)


def _entry_lines(entry: AnyEntry) -> list[str]:
    if isinstance(entry, CustomEntry):
        return [f"[Note]: {entry.message}"] if entry.message else []
    if not isinstance(entry, MessageEntry) or entry.hidden:
        return []  # silent housekeeping turns (memory flush) are not part of the story
    lines: list[str] = []
    who = "[User]" if entry.role == "user" else "[Assistant]"
    for block in entry.content:
        kind = block.get("type")
        if kind == "text" and block.get("text", "").strip():
            lines.append(f"{who}: {block['text'].strip()}")
        elif kind == "image":
            lines.append(f"{who}: [image]")
        elif kind == "tool_use":
            try:
                args = json.dumps(block.get("input", {}), ensure_ascii=False, default=str)
            except (TypeError, ValueError):
                args = str(block.get("input"))
            lines.append(f"[Tool call]: {block.get('name', '?')}({_preview(args, _TOOL_ARGS_PREVIEW_CHARS)})")
        elif kind == "tool_result":
            label = "[Tool result (error)]" if block.get("is_error") else "[Tool result]"
            text = _result_text(block.get("content")).strip()
            lines.append(f"{label}: {_preview(text, TOOL_RESULT_PREVIEW_CHARS)}")
    return lines


def serialize_entries(entries: Sequence[AnyEntry], *, max_tokens: int | None = None) -> str:
    """The entries as labelled plain text; with `max_tokens`, the oldest lines give way first."""
    lines = [line for entry in entries for line in _entry_lines(entry)]
    if max_tokens is not None:
        budget = max_tokens * 4
        sizes = [weighted_chars(line) + 2 for line in lines]
        total = sum(sizes)
        dropped = 0
        while dropped < len(lines) and total > budget:
            total -= sizes[dropped]
            dropped += 1
        if dropped:
            lines = [
                f"[... {dropped} earlier items were left out to fit the summary request ...]",
                *lines[dropped:],
            ]
    return "\n\n".join(lines)


def build_summary_request(
    plan: CompactionPlan,
    *,
    model: str,
    max_tokens: int,
    max_input_tokens: int | None = None,
) -> ModelRequest:
    """One user message holding the older part as text (and the previous summary to update); no tools.

    `max_input_tokens` bounds the serialised history (the oldest items are left out first) for
    small context windows.
    """
    previous = plan.previous_summary
    budget = max_input_tokens
    if budget is not None and previous:
        budget = max(budget - estimate_tokens(previous), 256)
    history = serialize_entries(plan.older, max_tokens=budget)
    if previous:
        text = (
            "Below is the summary of the session so far, followed by the part of the conversation that "
            "came after it.\n\n"
            f"<previous-summary>\n{previous.strip()}\n</previous-summary>\n\n"
            f"<conversation>\n{history}\n</conversation>\n\n"
            "Update the summary so it covers both: keep what still holds, add the new progress, decisions "
            "and facts, move finished work to Done, and drop what is no longer true. Keep the same sections."
        )
    else:
        text = f"Summarise the conversation below.\n\n<conversation>\n{history}\n</conversation>"
    return ModelRequest(
        model=model,
        messages=[{"role": "user", "content": [{"type": "text", "text": text}]}],
        system_stable=SUMMARY_SYSTEM_PROMPT,
        tools=[],
        max_tokens=max_tokens,
        metadata={"purpose": "compaction"},
    )


async def summarize(model: Model, request: ModelRequest) -> tuple[str, Usage]:
    """Run the summary request to completion; raises `ModelError` when no usable summary came back."""
    response: ModelResponse | None = None
    async for event in model.stream(request):
        if isinstance(event, ModelResponse):
            response = event
    if response is None:
        raise ModelError("The compaction summary request ended without a response.")
    summary = response.text.strip()
    if not summary:
        raise ModelError("The compaction summary came back empty; the history was left as it was.")
    if response.stop_reason == "max_tokens":
        log.warning("compaction summary hit max_tokens (%d); it may be incomplete", request.max_tokens)
    return summary, response.usage


def make_compaction_entry(
    plan: CompactionPlan, summary: str, tokens_after: int, *, parent_id: str | None = None
) -> CompactionEntry:
    """The transcript entry recording this compaction (summary, first kept entry, token counts)."""
    return CompactionEntry(
        parent_id=parent_id,
        summary=summary,
        first_kept_id=plan.first_kept_id,
        tokens_before=plan.tokens_before,
        tokens_after=tokens_after,
    )


# -- memory flush ----------------------------------------------------------------------------------

MEMORY_FLUSH_PROMPT = """\
[Silent housekeeping turn: the user does not see this message or your reply.]
This conversation will soon be compacted, and older messages will be replaced by a short summary. \
Before that happens, save anything worth remembering beyond this session: decisions, facts about \
the user and their preferences, open tasks, names, paths and numbers you would need later.
Append them as short Markdown bullet points to memory/YYYY-MM-DD.md (today's date) with the \
memory_write tool, or with the write tool if memory_write is not available. Add only what is \
not already there; do not rewrite the file.
When you are done, or if there is nothing worth saving, reply with exactly NO_REPLY."""


def memory_flush_prompt(day: date) -> str:
    """`MEMORY_FLUSH_PROMPT` with today's file name filled in."""
    return MEMORY_FLUSH_PROMPT.replace("memory/YYYY-MM-DD.md (today's date)", f"memory/{day.isoformat()}.md")


def flushed_since_compaction(entries: Sequence[AnyEntry]) -> bool:
    """True when a memory flush marker follows the latest compaction (one flush per cycle)."""
    for index in range(len(entries) - 1, -1, -1):
        entry = entries[index]
        if isinstance(entry, CompactionEntry):
            return False
        if isinstance(entry, CustomEntry) and entry.custom_type == MEMORY_FLUSH_CUSTOM_TYPE:
            return True
    return False


def make_flush_marker(estimated_tokens: int, *, parent_id: str | None = None) -> CustomEntry:
    """The transcript entry recording that this cycle's flush ran (never shown to the model)."""
    return CustomEntry(
        parent_id=parent_id,
        custom_type=MEMORY_FLUSH_CUSTOM_TYPE,
        data={"estimated_tokens": estimated_tokens},
    )


_EDGE_CHARS = r"(?:\s|</?[a-zA-Z][^>]*>|[*_`~\"'\[\]().!,;:])+"
_EDGES = re.compile(rf"^{_EDGE_CHARS}|{_EDGE_CHARS}$")
_SILENT_ALONE = re.compile(r"no[ _-]?reply", re.IGNORECASE)
_SILENT_AT_START = re.compile(r"NO_REPLY(?![A-Za-z0-9_])")
_SILENT_AT_END = re.compile(r"(?<![A-Za-z0-9_])NO_REPLY$")


def is_silent_reply(text: str) -> bool:
    """True for an empty reply, or NO_REPLY (alone in any case or spelling like `no reply`, or as
    the exact token at the start or end), ignoring markdown, HTML tags and punctuation around it."""
    core = _EDGES.sub("", text or "")
    if not core:
        return True
    if _SILENT_ALONE.fullmatch(core):
        return True
    return bool(_SILENT_AT_START.match(core) or _SILENT_AT_END.search(core))
