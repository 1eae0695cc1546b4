"""Memory tools: `memory_search`, `memory_get`, `memory_write`.

They use the `MemoryStore` the Agent puts in `ctx.memory`; without one (a tool used on its own) a
store for `ctx.workspace` is created once and kept on the context, so whoever owns the context
should `close()` it. The store is synchronous, so every call runs in a worker thread. Replies are
JSON text the model can read; refusals are `ToolError`s with a plain reason.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from pydantic import Field

from ..memory import MemoryPathError, MemoryStore
from ._services import context_service, json_reply
from .base import Tool, ToolContext, ToolError, tool

__all__ = [
    "MEMORY_GET_MAX_CHARS",
    "MEMORY_TOOLS",
    "memory_get",
    "memory_search",
    "memory_store",
    "memory_write",
]

MEMORY_GET_MAX_CHARS = 20_000
"""`memory_get` returns at most this many characters; the reply says where to continue."""


def memory_store(ctx: ToolContext) -> MemoryStore:
    """The context's memory store; a tool used on its own (no agent) gets one for its workspace,
    kept on that context (whoever made the context closes it)."""
    return context_service(ctx, "memory", MemoryStore, lambda: MemoryStore(ctx.workspace), "Memory")


@tool(group="memory")
async def memory_search(
    query: str,
    ctx: ToolContext,
    max_results: Annotated[int, Field(ge=1, le=50)] = 6,
    min_score: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0,
) -> str:
    """Search the memory files (MEMORY.md and memory/*.md) for earlier facts, decisions and notes.

    Use it before answering about prior work, decisions, dates, people, preferences or todos.
    Returns the best matches with path, line range, score (0-1, recent notes rank higher) and a
    snippet; read more of a match with memory_get.

    Args:
        query: Words to look for; all words are tried first, then any of them. `#tag` matches tags.
        max_results: How many matches to return (default 6).
        min_score: Drop matches scoring below this (0-1).
    """
    if not query.strip():
        raise ToolError("memory_search needs a non-empty query.")
    store = memory_store(ctx)
    try:
        hits = await asyncio.to_thread(store.search, query, max_results, min_score)
    except ValueError as exc:
        raise ToolError(f"memory_search failed: {exc}") from None
    results = [
        {
            "path": hit.path,
            "start_line": hit.start_line,
            "end_line": hit.end_line,
            "score": hit.score,
            "snippet": hit.snippet,
        }
        for hit in hits
    ]
    reply: dict[str, Any] = {"query": query, "results": results}
    if not results:
        reply["note"] = "No memory matched. Say so rather than guessing."
    return json_reply(reply)


@tool(group="memory")
async def memory_get(
    path: str,
    ctx: ToolContext,
    from_line: Annotated[int, Field(ge=1)] | None = None,
    lines: Annotated[int, Field(ge=1)] | None = None,
) -> str:
    """Read lines of a memory file (MEMORY.md, memory.md or memory/**/*.md only).

    Use the path and line range from memory_search to read just what you need.

    Args:
        path: Workspace-relative path of the memory file, e.g. memory/2025-01-31.md.
        from_line: First line to read (1-based; default 1).
        lines: How many lines to read (default: to the end of the file).
    """
    store = memory_store(ctx)
    try:
        piece = await asyncio.to_thread(store.read_lines, path, from_line, lines, MEMORY_GET_MAX_CHARS)
    except MemoryPathError as exc:
        raise ToolError(f"memory_get refused: {exc}") from None
    except FileNotFoundError as exc:
        raise ToolError(f"memory_get: {exc}") from None
    except (OSError, ValueError) as exc:
        raise ToolError(f"memory_get failed: {exc}") from None
    reply: dict[str, Any] = {"path": piece.path, "from_line": piece.from_line}
    if piece.truncated:
        # The store reads at most this much (a huge file is streamed, never loaded whole).
        reply["truncated"] = (
            f"output capped at {MEMORY_GET_MAX_CHARS} characters; continue with from_line={piece.to_line + 1}"
        )
    reply.update({"to_line": piece.to_line, "total_lines": piece.total_lines, "text": piece.text})
    return json_reply(reply)


@tool(group="memory")
async def memory_write(
    text: str,
    ctx: ToolContext,
    tags: list[str] | None = None,
    long_term: bool = False,
) -> str:
    """Save a memory: appends a timestamped bullet to today's note (memory/YYYY-MM-DD.md).

    Write one short sentence that makes sense on its own (names, dates, the decision and why).
    Never store secrets.

    Args:
        text: The fact, decision, preference or todo to remember.
        tags: Optional tags like ["deploy", "people"], written as #tag.
        long_term: Append to MEMORY.md instead, for facts that should stay true for months.
    """
    store = memory_store(ctx)
    try:
        result = await asyncio.to_thread(store.write, text, tuple(tags or ()), long_term)
    except MemoryPathError as exc:
        raise ToolError(f"memory_write refused: {exc}") from None
    except (OSError, ValueError) as exc:
        raise ToolError(f"memory_write failed: {exc}") from None
    return json_reply({"saved": True, "path": result.path, "line": result.line, "entry": result.entry})


MEMORY_TOOLS: list[Tool] = [memory_search, memory_get, memory_write]
"""The memory tools, in the order they are offered to the model."""
