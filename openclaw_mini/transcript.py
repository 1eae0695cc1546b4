"""Transcript entries (one JSON object per JSONL line) and their conversion to Messages API params.

Entries keep message content exactly as the API produced it (thinking blocks and their signatures
included), so a history is always valid to send back. Conversion is one linear pass.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "TRANSCRIPT_VERSION",
    "TURN_FAILED",
    "AnyEntry",
    "CompactionEntry",
    "CustomEntry",
    "Entry",
    "HistoryBuilder",
    "MessageEntry",
    "SessionHeader",
    "active_start",
    "build_messages",
    "check_blocks",
    "is_user_turn",
    "locate_compaction",
    "new_entry_id",
    "now_iso",
    "sendable_blocks",
    "text_of",
]

TRANSCRIPT_VERSION = 1
INTERRUPTED_TOOL_MESSAGE = "The tool call was interrupted before it returned a result."
COMPACTION_PREFIX = "The conversation history before this point was compacted into the following summary:\n\n"


def new_entry_id() -> str:
    """A short random id (8 hex chars) that orders nothing: parent ids carry the order."""
    return secrets.token_hex(4)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _EntryBase(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(default_factory=new_entry_id)
    parent_id: str | None = None
    timestamp: str = Field(default_factory=now_iso)


class SessionHeader(BaseModel):
    """First line of every transcript file."""

    model_config = ConfigDict(extra="allow")

    type: Literal["session"] = "session"
    version: int = TRANSCRIPT_VERSION
    id: str
    key: str
    timestamp: str = Field(default_factory=now_iso)
    cwd: str = ""


class MessageEntry(_EntryBase):
    """A user or assistant message; `content` holds API content blocks verbatim."""

    type: Literal["message"] = "message"
    role: Literal["user", "assistant"]
    content: list[dict[str, Any]]
    usage: dict[str, int] | None = None
    stop_reason: str | None = None
    model: str | None = None
    hidden: bool = False
    """Part of a silent turn (memory flush): sent to the model, never shown as chat."""


class CompactionEntry(_EntryBase):
    """Older history was summarised: the context is `summary` + entries from `first_kept_id` on."""

    type: Literal["compaction"] = "compaction"
    summary: str
    first_kept_id: str | None = None
    """None: nothing before the compaction is kept."""
    tokens_before: int = 0
    tokens_after: int = 0


class CustomEntry(_EntryBase):
    """Runtime notes (sub-agent results, aborted runs, ...). `message` entries reach the model."""

    type: Literal["custom"] = "custom"
    custom_type: str
    data: dict[str, Any] = Field(default_factory=dict)
    message: str | None = None
    """When set, shown to the model as a user-side note at this point of the history."""


Entry = Annotated[MessageEntry | CompactionEntry | CustomEntry, Field(discriminator="type")]
ENTRY_ADAPTER: TypeAdapter[MessageEntry | CompactionEntry | CustomEntry] = TypeAdapter(Entry)
ENTRY_LIST_ADAPTER: TypeAdapter[list[MessageEntry | CompactionEntry | CustomEntry]] = TypeAdapter(list[Entry])


def text_of(content: list[dict[str, Any]] | str) -> str:
    """The visible text of a message's content."""
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content if block.get("type") == "text")


def sendable_blocks(content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Assistant content as it may go back to the API, which refuses blank text blocks (and a
    message left with no block at all) though a reply can contain them; the transcript keeps
    the reply verbatim."""
    return [
        block
        for block in content
        if not (block.get("type") == "text" and not str(block.get("text", "")).strip())
        and (block.get("type") != "tool_use" or block.get("id"))
    ]


TURN_FAILED = "turn_failed"
"""`CustomEntry.custom_type` of the note that a turn ended in an error (`data`: `turn` = the id of
its user entry, `error` = what went wrong)."""


def is_user_turn(entry: AnyEntry) -> bool:
    """A visible user message that is not only tool results: where a turn starts."""
    if not isinstance(entry, MessageEntry) or entry.role != "user" or entry.hidden:
        return False
    return any(block.get("type") != "tool_result" for block in entry.content)


def check_blocks(role: str, content: list[Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The content blocks the Messages API accepts, and a description of each one it would refuse.

    A blank text block in an assistant reply is kept (replies contain them; `sendable_blocks`
    leaves them out when sending); one in a user message is not.
    """
    kept: list[dict[str, Any]] = []
    problems: list[str] = []
    for index, block in enumerate(content):
        problem = _block_problem(role, block)
        if problem is None:
            kept.append(block)
        else:
            kind = block.get("type") if isinstance(block, dict) else None
            problems.append(f"block {index} ({kind or 'no type'}): {problem}")
    return kept, problems


def _block_problem(role: str, block: Any) -> str | None:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        return "not a content block"
    kind = block["type"]
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str):
            return "no text"
        return "blank text" if role == "user" and not text.strip() else None
    if kind == "tool_use":
        if not (isinstance(block.get("id"), str) and block["id"] and isinstance(block.get("name"), str)):
            return "a tool call without an id or name"
        return None if isinstance(block.get("input", {}), dict) else "tool input is not an object"
    if kind == "tool_result":
        if not isinstance(block.get("tool_use_id"), str):
            return "a tool result without a tool_use_id"
        return (
            None if isinstance(block.get("content", ""), (str, list)) else "tool result content is not text"
        )
    if kind == "thinking":
        ok = isinstance(block.get("thinking"), str) and isinstance(block.get("signature"), str)
        return None if ok else "thinking without its text or signature"
    if kind == "redacted_thinking":
        return None if isinstance(block.get("data"), str) else "redacted thinking without data"
    if kind in ("image", "document"):
        return None if isinstance(block.get("source"), dict) else f"{kind} without a source"
    return None  # server tool blocks and newer kinds: the API knows them


def _user(content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"role": "user", "content": content}


def _interrupted(tool_ids: list[str]) -> list[dict[str, Any]]:
    return [
        {"type": "tool_result", "tool_use_id": tool_id, "is_error": True, "content": INTERRUPTED_TOOL_MESSAGE}
        for tool_id in tool_ids
    ]


AnyEntry = MessageEntry | CompactionEntry | CustomEntry


def locate_compaction(
    count: int,
    compaction_at: Callable[[int], CompactionEntry | None],
    has_id: Callable[[int, str], bool],
) -> tuple[int, int | None, CompactionEntry] | None:
    """The latest compaction of a history: (its index, the index of its first kept entry, the entry).

    The one search for "where the active history starts", over anything indexable: parsed
    entries here and in compaction, raw JSONL lines when a session loads. The kept index is None
    when the compaction kept nothing or its kept entry is missing; each caller decides what that
    means for it. One backwards pass.
    """
    for index in range(count - 1, -1, -1):
        entry = compaction_at(index)
        if entry is None:
            continue
        kept: int | None = None
        if entry.first_kept_id is not None:
            kept = next((k for k in range(index - 1, -1, -1) if has_id(k, entry.first_kept_id)), None)
        return index, kept, entry
    return None


def active_start(entries: Sequence[AnyEntry]) -> tuple[int, CompactionEntry | None]:
    """Where the model's view starts (the latest compaction's first kept entry, else just after
    the compaction, else 0) and that compaction."""

    def compaction_at(index: int) -> CompactionEntry | None:
        entry = entries[index]
        return entry if isinstance(entry, CompactionEntry) else None

    found = locate_compaction(len(entries), compaction_at, lambda i, entry_id: entries[i].id == entry_id)
    if found is None:
        return 0, None
    index, kept, compaction = found
    return (kept if kept is not None else index + 1), compaction


class HistoryBuilder:
    """Messages API history built one transcript entry at a time.

    `add(entry)` applies the rules that turn entries into API messages: consecutive same-role
    messages merge (a paused turn continues as one assistant message; a user turn after a failed
    run joins the previous one), a `tool_use` left without a result is closed with a synthetic
    error result when the history moves on, and an orphan `tool_result` (its call compacted away)
    is dropped. A live session and a reload share this one code path, so they cannot drift apart;
    `build_messages` is a fold over it. Compaction entries are the caller's: start a new builder
    with the summary (see `HistoryBuilder.from_entries`).
    """

    __slots__ = ("_known", "_pending", "_turn", "messages")

    def __init__(self, summary: str | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self._pending: list[str] = []
        self._known: set[str] = set()
        self._turn: tuple[str, int, dict[str, Any] | None, list[str]] | None = None
        """Where the latest user turn started (its entry id, the message count, the last message
        then, the pending calls then): what a failed turn rolls back to."""
        if summary is not None:
            self.messages.append(_user([{"type": "text", "text": COMPACTION_PREFIX + summary}]))

    @classmethod
    def from_entries(cls, entries: Sequence[AnyEntry]) -> HistoryBuilder:
        """A builder holding the active part of `entries` (from the latest compaction on)."""
        start, compaction = active_start(entries)
        builder = cls(compaction.summary if compaction is not None else None)
        for entry in entries[start:]:
            builder.add(entry)
        return builder

    def add(self, entry: AnyEntry) -> None:
        """Apply one entry; only the last message ever changes (or one is appended), except that a
        failed turn is taken out again."""
        if isinstance(entry, MessageEntry):
            if entry.role == "assistant":
                self._add_assistant(entry.content)
            else:
                if is_user_turn(entry):
                    last = self.messages[-1] if self.messages else None
                    self._turn = (entry.id, len(self.messages), last, list(self._pending))
                self._add_user(entry.content)
        elif isinstance(entry, CustomEntry):
            if entry.custom_type == TURN_FAILED:
                self._drop_turn(str(entry.data.get("turn", "")))
            elif entry.message:
                self.close()
                self._push("user", [{"type": "text", "text": entry.message}])

    def _drop_turn(self, entry_id: str) -> None:
        """A turn that ended in a model error leaves later requests: its user message would
        otherwise be sent again with every later one, and a message the API always refuses would
        fail every later turn. The transcript keeps it, marked failed."""
        if self._turn is None or self._turn[0] != entry_id:
            return
        _, count, last, pending = self._turn
        del self.messages[count:]
        if count and last is not None:
            self.messages[count - 1] = last
        self._pending = pending
        self._turn = None

    def close(self) -> None:
        """Answer every pending `tool_use` with an 'interrupted' error result."""
        if self._pending:
            self._push("user", _interrupted(self._pending))
            self._pending = []

    def view(self) -> list[dict[str, Any]]:
        """The history as it may be sent now: `messages` itself, or a copy with pending calls closed."""
        if not self._pending:
            return self.messages
        clone = HistoryBuilder()
        clone.messages, clone._pending = list(self.messages), list(self._pending)
        clone.close()
        return clone.messages

    def _add_assistant(self, content: list[dict[str, Any]]) -> None:
        self.close()
        # Thinking blocks are kept verbatim: the API accepts them in history as returned.
        blocks = sendable_blocks(content)
        for block in blocks:
            if block.get("type") == "tool_use":
                self._pending.append(block["id"])
                self._known.add(block["id"])
        if not self.messages:
            self.messages.append(_user([{"type": "text", "text": "(continued)"}]))
        self._push("assistant", blocks)

    def _add_user(self, content: list[dict[str, Any]]) -> None:
        blocks: list[dict[str, Any]] = []
        answered = False
        for block in content:
            if block.get("type") == "tool_result":
                tool_id = block.get("tool_use_id")
                if tool_id not in self._known or tool_id not in self._pending:
                    continue  # orphan (compacted away) or answered twice
                self._pending.remove(tool_id)
                answered = True
            blocks.append(block)
        if self._pending and not answered:
            self.close()
        elif self._pending:  # partial results: close the rest in this same message
            blocks.extend(_interrupted(self._pending))
            self._pending = []
        self._push("user", blocks)

    def _push(self, role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        messages = self.messages
        if messages and messages[-1]["role"] == role:
            merged = [*messages[-1]["content"], *blocks]
            if role == "user":  # tool_result blocks must come first in a user message
                merged = [b for b in merged if b.get("type") == "tool_result"] + [
                    b for b in merged if b.get("type") != "tool_result"
                ]
            messages[-1] = {"role": role, "content": merged}  # a new dict: views stay valid
        else:
            messages.append({"role": role, "content": list(blocks)})


def build_messages(entries: Sequence[AnyEntry]) -> list[dict[str, Any]]:
    """Messages API history from transcript entries: a fold of `HistoryBuilder` over the active
    part (from the latest compaction on), with any call left pending at the end closed."""
    builder = HistoryBuilder.from_entries(entries)
    builder.close()
    return builder.messages
