"""Transcript entries (one JSON object per JSONL line) and their conversion to Messages API params.

Entries keep message content exactly as the API produced it (thinking blocks and their signatures
included), so a history is always valid to send back. Conversion is one linear pass.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "TRANSCRIPT_VERSION",
    "CompactionEntry",
    "CustomEntry",
    "Entry",
    "MessageEntry",
    "SessionHeader",
    "build_messages",
    "new_entry_id",
    "now_iso",
    "sendable_blocks",
    "text_of",
]

TRANSCRIPT_VERSION = 1
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


def _user(content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"role": "user", "content": content}


def build_messages(entries: list[MessageEntry | CompactionEntry | CustomEntry]) -> list[dict[str, Any]]:
    """Messages API history from transcript entries, in one linear pass.

    Starts at the latest compaction (its summary, then entries from its first kept id), merges
    consecutive same-role messages so roles alternate even after a failed run, closes any
    `tool_use` left without a result (a crash mid-tool) with a synthetic error result, and drops
    orphan `tool_result` blocks whose call was compacted away.
    """
    start = 0
    summary: str | None = None
    for index in range(len(entries) - 1, -1, -1):
        entry = entries[index]
        if isinstance(entry, CompactionEntry):
            summary = entry.summary
            start = index + 1
            if entry.first_kept_id is not None:
                for kept_index in range(index - 1, -1, -1):
                    if entries[kept_index].id == entry.first_kept_id:
                        start = kept_index
                        break
            break

    messages: list[dict[str, Any]] = []
    if summary is not None:
        messages.append(_user([{"type": "text", "text": COMPACTION_PREFIX + summary}]))

    pending_tool_ids: list[str] = []
    known_tool_ids: set[str] = set()

    def push(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if messages and messages[-1]["role"] == role:
            merged = list(messages[-1]["content"])
            if role == "user":
                # tool_result blocks must come first in a user message.
                results = [b for b in merged + blocks if b.get("type") == "tool_result"]
                others = [b for b in merged + blocks if b.get("type") != "tool_result"]
                merged = results + others
            else:
                merged.extend(blocks)
            messages[-1] = {"role": role, "content": merged}
        else:
            messages.append({"role": role, "content": list(blocks)})

    def close_pending() -> None:
        if pending_tool_ids:
            push(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": tool_id,
                        "is_error": True,
                        "content": "The tool call was interrupted before it returned a result.",
                    }
                    for tool_id in pending_tool_ids
                ],
            )
            pending_tool_ids.clear()

    for entry in entries[start:]:
        if isinstance(entry, MessageEntry):
            if entry.role == "assistant":
                close_pending()
                # Thinking blocks are only valid in the latest assistant turn's position,
                # but the API accepts them verbatim in history: keep them as returned.
                blocks = sendable_blocks(entry.content)
                for block in blocks:
                    if block.get("type") == "tool_use":
                        pending_tool_ids.append(block["id"])
                        known_tool_ids.add(block["id"])
                if not messages:
                    messages.append(_user([{"type": "text", "text": "(continued)"}]))
                push("assistant", blocks)
            else:
                blocks = []
                for block in entry.content:
                    if block.get("type") == "tool_result":
                        tool_id = block.get("tool_use_id")
                        if tool_id not in known_tool_ids:
                            continue
                        if tool_id in pending_tool_ids:
                            pending_tool_ids.remove(tool_id)
                        else:
                            continue
                    blocks.append(block)
                if pending_tool_ids and not any(b.get("type") == "tool_result" for b in blocks):
                    close_pending()
                elif pending_tool_ids:
                    # Partial results: close the rest in this same message.
                    blocks = [
                        *blocks,
                        *(
                            {
                                "type": "tool_result",
                                "tool_use_id": tool_id,
                                "is_error": True,
                                "content": "The tool call was interrupted before it returned a result.",
                            }
                            for tool_id in pending_tool_ids
                        ),
                    ]
                    pending_tool_ids.clear()
                push("user", blocks)
        elif isinstance(entry, CustomEntry) and entry.message:
            close_pending()
            push("user", [{"type": "text", "text": entry.message}])
    close_pending()
    return messages
