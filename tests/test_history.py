"""One history object: the live session and a reload from disk build the same API messages.

Property tests (hypothesis) over random entry sequences: plain turns, tool calls answered in
full, in part or not at all, orphan results, paused turns, blank replies, notes, and compactions
(keeping something, nothing, or an entry that is missing).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openclaw_mini.config import PruningConfig
from openclaw_mini.context.pruning import Pruner, prune_messages
from openclaw_mini.session import LiveSession, SessionCache, SessionKey, SessionStore
from openclaw_mini.transcript import (
    TURN_FAILED,
    AnyEntry,
    CompactionEntry,
    CustomEntry,
    HistoryBuilder,
    MessageEntry,
    build_messages,
    is_user_turn,
)

# One step of a history, drawn as a tag plus a few numbers; turned into entries below.
STEP = st.tuples(
    st.sampled_from(
        [
            *("user", "assistant", "tool_use", "results", "partial", "orphan", "blank", "paused"),
            *("note", "quiet", "compact_keep", "compact_none", "compact_missing", "failed", "failed_old"),
        ]
    ),
    st.integers(0, 3),
)


def _entries(steps: list[tuple[str, int]]) -> list[AnyEntry]:
    entries: list[AnyEntry] = []
    pending: list[str] = []
    counter = 0
    for kind, n in steps:
        counter += 1
        text = {"type": "text", "text": f"{kind} {counter}"}
        if kind == "user":
            entries.append(MessageEntry(role="user", content=[text], hidden=n == 3))
        elif kind in ("assistant", "paused"):
            stop = "pause_turn" if kind == "paused" else "end_turn"
            entries.append(MessageEntry(role="assistant", content=[text], stop_reason=stop))
        elif kind == "blank":
            entries.append(MessageEntry(role="assistant", content=[{"type": "text", "text": "  "}]))
        elif kind == "tool_use":
            ids = [f"toolu_{counter}_{i}" for i in range(n + 1)]
            pending = ids
            uses = [{"type": "tool_use", "id": i, "name": "ls", "input": {}} for i in ids]
            entries.append(MessageEntry(role="assistant", content=[text, *uses], stop_reason="tool_use"))
        elif kind in ("results", "partial"):
            answered = pending if kind == "results" else pending[: max(len(pending) - 1, 0)]
            results = [{"type": "tool_result", "tool_use_id": i, "content": f"out {i}"} for i in answered]
            entries.append(MessageEntry(role="user", content=results or [text]))
            pending = []
        elif kind == "orphan":
            orphan = {"type": "tool_result", "tool_use_id": f"toolu_gone_{counter}", "content": "x"}
            entries.append(MessageEntry(role="user", content=[orphan, text]))
        elif kind == "note":
            entries.append(CustomEntry(custom_type="subagent_result", message=f"note {counter}"))
        elif kind in ("failed", "failed_old"):  # the latest user turn failed (or an older one: a no-op)
            users = [e for e in entries if isinstance(e, MessageEntry) and is_user_turn(e)]
            target = users[-1 if kind == "failed" else 0].id if users else "missing"
            entries.append(CustomEntry(custom_type=TURN_FAILED, data={"turn": target, "error": "500"}))
        elif kind == "quiet":
            entries.append(CustomEntry(custom_type="memory_flush", data={"n": n}))
        else:
            first_kept: str | None = None
            if kind == "compact_keep" and entries:
                first_kept = entries[-min(n + 1, len(entries))].id
            elif kind == "compact_missing":
                first_kept = "deadbeef"
            entries.append(CompactionEntry(summary=f"summary {counter}", first_kept_id=first_kept))
    return entries


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(STEP, max_size=40))
def test_incremental_equals_full_rebuild_after_every_entry(steps: list[tuple[str, int]]) -> None:
    entries = _entries(steps)
    builder = HistoryBuilder()
    for index, entry in enumerate(entries):
        if isinstance(entry, CompactionEntry):
            builder = HistoryBuilder.from_entries(entries[: index + 1])
        else:
            builder.add(entry)
        assert builder.view() == build_messages(entries[: index + 1])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(STEP, max_size=30))
def test_live_session_equals_what_a_reload_from_disk_builds(steps: list[tuple[str, int]]) -> None:
    """The one write path (`LiveSession.append`) against the file it wrote."""
    entries = _entries(steps)

    async def scenario(root: Path) -> None:
        store = SessionStore(root)
        key = SessionKey.parse("prop")
        live = LiveSession(store, key)
        for entry in entries:
            live.append(entry)
        await live.flush()
        assert live.messages == build_messages(store.load_sync(key).entries)
        assert live.messages == build_messages(store.load_sync(key, active_only=True).entries)
        # A session resumed from disk goes on exactly as the live one does.
        resumed = LiveSession(store, key, store.load_sync(key, active_only=True).entries)
        for target in (live, resumed):
            target.append(MessageEntry(role="user", content=[{"type": "text", "text": "next"}]))
        assert resumed.messages == live.messages
        await asyncio.gather(live.flush(), resumed.flush())

    with tempfile.TemporaryDirectory() as root:
        asyncio.run(scenario(Path(root)))


def _tool_turns(count: int, size: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": "go"}]}]
    for i in range(count):
        use = {"type": "tool_use", "id": f"t{i}", "name": "read", "input": {}}
        messages.append({"role": "assistant", "content": [use]})
        result = {"type": "tool_result", "tool_use_id": f"t{i}", "content": f"{i} " + "x" * size}
        messages.append({"role": "user", "content": [result]})
    return messages


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 60), st.integers(10, 3_000), st.integers(0, 4))
def test_incremental_pruning_matches_a_fresh_pass_while_nothing_is_cleared(
    turns: int, size: int, keep_last: int
) -> None:
    config = PruningConfig(
        soft_trim_ratio=0.1,
        min_prunable_chars=10**12,  # no hard clear: a fresh pass and the live one must agree exactly
        soft_trim_min_chars=500,
        soft_trim_head_chars=100,
        soft_trim_tail_chars=100,
        keep_last_assistants=keep_last,
    )
    history = _tool_turns(turns, size)
    pruner = Pruner(context_window_tokens=4_000, config=config)
    for end in range(1, len(history) + 1):
        live: list[dict[str, Any]] = history[:end]
        incremental = pruner.prune(live)
        fresh = prune_messages(live, context_window_tokens=4_000, config=config)
        assert incremental.messages == fresh.messages
        assert incremental.tokens_after == fresh.tokens_after
    assert history == _tool_turns(turns, size)  # the input is never modified


def test_incremental_hard_clear_moves_forward_and_stays_under_the_ratio() -> None:
    config = PruningConfig(soft_trim_ratio=0.2, hard_clear_ratio=0.5, keep_last_assistants=2)
    history = _tool_turns(300, 1_000)
    pruner = Pruner(context_window_tokens=20_000, config=config)
    cleared_before = 0
    live: list[dict[str, Any]] = []
    for message in history:
        live.append(message)  # the same list grows, as a session's history does
        result = pruner.prune(live)
        assert result.cleared >= cleared_before  # never restored: a stable prefix for the cache
        cleared_before = result.cleared
        ids = [b["tool_use_id"] for m in result.messages for b in m["content"] if b["type"] == "tool_result"]
        answers = sum(m["role"] == "user" and m["content"][0]["type"] == "tool_result" for m in live)
        assert len(ids) == len(set(ids)) == answers
    assert cleared_before > 0
    assert result.tokens_after <= 20_000 * 0.5 + 400  # under the ratio, but for the last step's growth


def test_session_cache_is_bounded_by_count_and_bytes_and_never_evicts_a_busy_session() -> None:
    sizes = {f"s{i}": 100 for i in range(10)}
    busy = {"s0"}
    cache: SessionCache[str] = SessionCache(
        max_sessions=4, max_bytes=250, weigh=lambda value: sizes[value], pinned=busy.__contains__
    )
    for key in sizes:
        cache.put(key, key)
    assert "s0" in cache and "s9" in cache  # s0 is busy: kept although it is the oldest
    assert len(cache) == 2 and cache.held_bytes() <= 250  # the byte bound wins over the count
    busy.clear()
    assert cache.get("s9") == "s9"
    cache.put("s1", "s1")
    assert "s0" not in cache and len(cache) == 2  # least recently used goes first
    many: SessionCache[str] = SessionCache(max_sessions=3, max_bytes=0, weigh=len, pinned=lambda key: False)
    for key in sizes:
        many.put(key, key)
    assert len(many) == 3  # max_bytes=0: only the count bounds it
