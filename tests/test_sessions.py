"""Session keys, the JSONL store (locks, torn tails, crash recovery) and history building."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from openclaw_mini.session import SessionKey, SessionKeyError, SessionStore
from openclaw_mini.transcript import CompactionEntry, CustomEntry, MessageEntry, build_messages


def test_bare_ids_are_completed_and_full_keys_parsed() -> None:
    assert str(SessionKey.parse("S1")) == "agent:main:s1"
    assert str(SessionKey.parse("s1", "ops")) == "agent:ops:s1"
    key = SessionKey.parse("agent:Ops:subagent:abc-123")
    assert key.agent_id == "ops" and key.rest == "subagent:abc-123" and key.is_subagent


@pytest.mark.parametrize(
    "bad",
    [
        "../x",
        "a/b",
        "a\\b",
        "..",
        "a..b",
        "bad\x00id",
        "tab\there",
        "",
        "agent:main:",
        "agent:-bad:x",
        "agent:main:a:..:b",
    ],
)
def test_unsafe_ids_are_refused(bad: str) -> None:
    with pytest.raises(SessionKeyError):
        SessionKey.parse(bad)


def _message(role: str, text: str) -> MessageEntry:
    return MessageEntry(role=role, content=[{"type": "text", "text": text}])  # type: ignore[arg-type]


def test_append_and_load_round_trip(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    key = SessionKey.parse("s")
    store.append_sync(key, [_message("user", "hi"), _message("assistant", "hello")])
    loaded = store.load_sync(key)
    assert loaded.header is not None and loaded.header.key == "agent:main:s"
    assert [e.role for e in loaded.entries if isinstance(e, MessageEntry)] == ["user", "assistant"]
    assert loaded.warnings == []
    assert store.list_sync()[0].key == "agent:main:s"
    assert store.delete_sync(key) and not store.delete_sync(key)


def test_torn_tail_and_corrupt_lines_are_skipped_with_file_and_line(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    key = SessionKey.parse("s")
    store.append_sync(key, [_message("user", "one"), _message("assistant", "two")])
    path = store.path_for(key)
    with path.open("a") as handle:
        handle.write("not json at all\n")
        handle.write('{"type": "message", "role": "user", "content": [{"type": "text", "text": "tor')
    loaded = store.load_sync(key)
    assert len(loaded.entries) == 2
    assert len(loaded.warnings) == 2
    assert f"{path}:4" in loaded.warnings[0] and "corrupt" in loaded.warnings[0]
    assert f"{path}:5" in loaded.warnings[1] and "torn" in loaded.warnings[1]
    # The next append is not glued onto the torn fragment, and nothing valid is lost.
    store.append_sync(key, [_message("user", "three")])
    again = store.load_sync(key)
    assert [e.content[0]["text"] for e in again.entries if isinstance(e, MessageEntry)] == [
        "one",
        "two",
        "three",
    ]


def _append_many(root: str, worker: int, count: int) -> None:
    store = SessionStore(Path(root))
    key = SessionKey.parse("shared")
    for index in range(count):
        store.append_sync(key, [_message("user", f"w{worker}-{index}-" + "x" * 2000)])


def test_two_processes_appending_lose_nothing_and_never_interleave(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(str(tmp_path), n, 150)) for n in range(2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    path = SessionStore(tmp_path).path_for(SessionKey.parse("shared"))
    lines = path.read_text().splitlines()
    parsed = [json.loads(line) for line in lines]  # every line is valid JSON
    assert sum(1 for p in parsed if p["type"] == "session") == 1
    texts = {p["content"][0]["text"].split("-x")[0] for p in parsed if p["type"] == "message"}
    assert len(texts) == 300


def test_dangling_tool_use_is_closed_with_an_error_result() -> None:
    entries = [
        _message("user", "do it"),
        MessageEntry(
            role="assistant", content=[{"type": "tool_use", "id": "t1", "name": "read", "input": {}}]
        ),
    ]
    messages = build_messages(entries)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    result = messages[2]["content"][0]
    assert result["type"] == "tool_result" and result["tool_use_id"] == "t1" and result["is_error"]


def test_consecutive_user_messages_merge_with_tool_results_first() -> None:
    entries = [
        _message("user", "a"),
        MessageEntry(role="assistant", content=[{"type": "tool_use", "id": "t1", "name": "ls", "input": {}}]),
        MessageEntry(role="user", content=[{"type": "tool_result", "tool_use_id": "t1", "content": "x"}]),
        _message("user", "b"),
    ]
    messages = build_messages(entries)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert [b["type"] for b in messages[2]["content"]] == ["tool_result", "text"]


def test_history_starts_at_the_latest_compaction() -> None:
    first = _message("user", "old question")
    kept = _message("user", "recent question")
    entries = [
        first,
        _message("assistant", "old answer"),
        kept,
        _message("assistant", "recent answer"),
        CompactionEntry(summary="They asked an old question.", first_kept_id=kept.id),
        CustomEntry(custom_type="note", message="A sub-agent finished."),
    ]
    messages = build_messages(entries)
    assert "They asked an old question." in messages[0]["content"][0]["text"]
    texts = [b.get("text") for m in messages for b in m["content"]]
    assert "old question" not in texts and "recent question" in texts
    assert texts[-1] == "A sub-agent finished."
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]


def test_active_only_load_starts_at_the_latest_compactions_kept_entry(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    key = SessionKey.parse("s")
    old = [_message("user", f"old {i}") for i in range(5)]
    kept = _message("user", 'recent "type":"compaction" lookalike')
    tail = [kept, _message("assistant", "recent answer")]
    store.append_sync(
        key,
        [*old, *tail, CompactionEntry(summary="old stuff", first_kept_id=kept.id), _message("user", "after")],
    )
    active = store.load_sync(key, active_only=True)
    assert [e.id for e in active.entries][:2] == [kept.id, tail[1].id]
    assert len(active.entries) == 4
    assert len(store.load_sync(key).entries) == 9
    assert build_messages(active.entries) == build_messages(store.load_sync(key).entries)


def test_tail_bytes_bounds_an_uncompacted_giant_and_keeps_the_latest_summary(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    key = SessionKey.parse("s")
    early = [_message("user", f"early {i}") for i in range(3)]
    summary = CompactionEntry(summary="early stuff", first_kept_id=early[-1].id)
    later = []
    for index in range(200):
        later.append(_message("user", f"later question {index} " + "x" * 100))
        later.append(
            MessageEntry(
                role="assistant", content=[{"type": "tool_use", "id": f"t{index}", "name": "ls", "input": {}}]
            )
        )
        later.append(
            MessageEntry(
                role="user",
                content=[{"type": "tool_result", "tool_use_id": f"t{index}", "content": "y" * 100}],
            )
        )
    store.append_sync(key, [*early, summary, *later])

    loaded = store.load_sync(key, active_only=True, tail_bytes=5_000)
    assert isinstance(loaded.entries[0], CompactionEntry)
    first_message = loaded.entries[1]
    assert isinstance(first_message, MessageEntry) and first_message.role == "user"
    assert first_message.content[0]["type"] == "text"  # starts at a user turn, not a tool result
    assert 10 < len(loaded.entries) < 100
    messages = build_messages(loaded.entries)
    assert "early stuff" in messages[0]["content"][0]["text"]
    assert messages[-1]["content"][0]["content"] == "y" * 100
    # Without the bound everything since the compaction is there.
    assert len(store.load_sync(key, active_only=True).entries) == 1 + 1 + 600
