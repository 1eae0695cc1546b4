"""Memory search ranks entries (not big chunks), indexes incrementally and reads within bounds."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from openclaw_mini.cli.memory import app
from openclaw_mini.memory import MemoryConfig, MemoryStore, ScoreParts
from openclaw_mini.memory.entries import parse_entries

NOW = datetime(2025, 3, 10, 9, 30, tzinfo=UTC)


def fixed_clock() -> datetime:
    return NOW


def write_old(path: Path, text: str) -> Path:
    """Write a note whose mtime lies in the past (outside the index's racy window)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    stamp = time.time() - 3600
    os.utime(path, (stamp, stamp))
    return path


def append_old(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
    stamp = time.time() - 1800
    os.utime(path, (stamp, stamp))


@pytest.fixture
def store(workspace: Path) -> Iterator[MemoryStore]:
    with MemoryStore(workspace, timezone="UTC", clock=fixed_clock) as opened:
        yield opened


def _filler(rng: random.Random, words: list[str], count: int) -> list[str]:
    return [f"- {n % 24:02d}:{n % 60:02d} " + " ".join(rng.choices(words, k=10)) for n in range(count)]


# ------------------------------------------------------------------ ranking the unit a person wrote


def test_planted_bullet_among_distractors_in_the_same_daily_file_is_found_first(
    workspace: Path, store: MemoryStore
) -> None:
    rng = random.Random(7)
    words = [f"w{n}" for n in range(300)]
    bullets = _filler(rng, words, 400)
    # Distractors: many bullets with two of the three words (repeated, one as a tag), and runs of
    # neighbouring bullets that hold one word each: a 1,600-character chunk holds all three.
    for n in range(40):
        pair = [("falcon", "harbour"), ("harbour", "quartz"), ("falcon", "quartz")][n % 3]
        bullets[rng.randrange(400)] = f"- 08:{n:02d} {pair[0]} {pair[1]} {pair[0]} {pair[1]} #{pair[0]}"
    for at in range(10, 400, 37):
        for offset, word in enumerate(("falcon", "harbour", "quartz")):
            bullets[at + offset] = f"- 09:{offset:02d} {word} {word} {word} w1 w2"
    bullets[250] = "- 14:05 the falcon camera in the harbour has a quartz clock w3 w4 w5"
    write_old(workspace / "memory" / "2025-03-09.md", "# 2025-03-09\n\n" + "\n".join(bullets) + "\n")

    hits = store.search("falcon harbour quartz")
    assert (hits[0].path, hits[0].start_line, hits[0].end_line) == ("memory/2025-03-09.md", 253, 253)
    assert hits[0].snippet == bullets[250]


def test_multiline_bullet_is_one_entry_with_its_own_line_range(workspace: Path, store: MemoryStore) -> None:
    store.write("Deploy checklist:\nfreeze the branch\nrun the smoke tests", tags=["deploy"])
    store.write("Lunch with Maria on Friday")
    hits = store.search("deploy smoke tests")
    assert [(hit.start_line, hit.end_line) for hit in hits] == [(3, 5)]
    assert hits[0].snippet.splitlines()[-1] == "  run the smoke tests #deploy"


def test_headings_count_as_a_lighter_field(workspace: Path, store: MemoryStore) -> None:
    write_old(
        workspace / "MEMORY.md",
        "# People\n\n- Jonas reviews the billing code\n\n"
        "# Billing\n\n- invoices go out on the 3rd\n\n# Other\n\n"
        + "".join(f"- unrelated fact number {n}\n" for n in range(20)),
    )
    hits = store.search("billing", explain=True)
    # the entry that says "billing" itself beats the one that is only under a "Billing" heading
    assert [hit.start_line for hit in hits] == [3, 7]
    assert all(isinstance(hit.parts, ScoreParts) for hit in hits)
    assert hits[0].parts is not None and hits[1].parts is not None
    assert hits[0].parts.bm25 > hits[1].parts.bm25


def test_parse_entries_units() -> None:
    text = (
        "# Day\n\n- first bullet\n  continued\n\n  still the first\n- second\nlazy line\n\n"
        "A paragraph\nof prose.\n\n```\ncode\n\nmore\n```\n## Empty\n## Notes\nlast words"
    )
    parsed = parse_entries(text.split("\n"), max_chars=1600, overlap=320)
    got = [(e.start_line, e.end_line, e.heading) for e in parsed.entries]
    assert got == [
        (3, 6, "Day"),
        (7, 8, "Day"),
        (10, 11, "Day"),
        (13, 17, "Day"),
        (18, 18, "Empty"),
        (20, 20, "Notes"),
    ]
    assert (parsed.tail_line, parsed.tail_heading) == (20, "Notes")
    long = parse_entries(["para " * 100] * 10, max_chars=1600, overlap=320)
    assert len(long.entries) > 1 and {e.entry_line for e in long.entries} == {1}


# ------------------------------------------------------------------ incremental indexing


def test_an_append_indexes_only_the_new_entry(workspace: Path, store: MemoryStore) -> None:
    rng = random.Random(3)
    path = write_old(
        workspace / "memory" / "2025-03-10.md",
        "# 2025-03-10\n\n" + "\n".join(_filler(rng, [f"x{n}" for n in range(50)], 3000)) + "\n",
    )
    assert store.search("x7")
    store.write("the new espresso machine arrives Tuesday")
    hits = store.search("espresso machine")
    assert store.last_sync.read == 1 and store.last_sync.chunks == 1
    assert (hits[0].start_line, hits[0].end_line) == (3003, 3003)
    # an appended continuation line extends the last entry instead of making a new one
    append_old(path, "  and it needs a new power socket\n")
    hits = store.search("espresso socket")
    assert (hits[0].start_line, hits[0].end_line) == (3003, 3004)
    assert store.stats()["chunks"] == 3001


def test_an_edit_reindexes_only_the_changed_entries(workspace: Path, store: MemoryStore) -> None:
    path = write_old(
        workspace / "memory" / "2025-03-09.md",
        "# 2025-03-09\n\n" + "\n".join(f"- note {n} about topic{n}" for n in range(200)) + "\n",
    )
    store.search("topic5")
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[2:2] = ["- inserted at the top about walnuts"]  # every later entry moves down one line
    lines[100] = "- note 97 rewritten about chestnuts"
    write_old(path, "\n".join(lines) + "\n")
    assert [hit.start_line for hit in store.search("walnuts")] == [3]
    assert store.last_sync.chunks == 2  # the inserted and the rewritten entry; the rest only moved
    assert [hit.start_line for hit in store.search("topic150")] == [154]
    assert [hit.start_line for hit in store.search("chestnuts")] == [101]
    assert store.search("topic97") == []


def test_a_file_rewritten_shorter_is_parsed_again_in_full(workspace: Path, store: MemoryStore) -> None:
    path = write_old(workspace / "memory" / "2025-03-09.md", "- alpha one\n- beta two\n- gamma three\n")
    store.search("alpha")
    write_old(path, "- beta two\n")
    assert store.search("alpha") == []
    assert [hit.start_line for hit in store.search("beta")] == [1]


def test_appends_from_a_bom_and_crlf_file_keep_exact_lines(workspace: Path, store: MemoryStore) -> None:
    path = workspace / "memory" / "2025-03-09.md"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xef\xbb\xbf# Day\r\n\r\n- first thing\r\n- second thing\r\n")
    os.utime(path, (time.time() - 3600,) * 2)
    store.search("thing")
    with path.open("ab") as handle:
        handle.write("- third thing with émoji ✓\r\n".encode())
    os.utime(path, (time.time() - 1800,) * 2)
    hits = store.search("third")
    assert (hits[0].start_line, hits[0].snippet) == (5, "- third thing with émoji ✓")
    assert store.last_sync.chunks == 1
    assert [hit.start_line for hit in store.search("second")] == [4]


# ------------------------------------------------------------------ bounded reads (hardening item 8)


def test_a_file_over_the_size_cap_is_skipped_with_a_warning_and_the_rest_works(workspace: Path) -> None:
    write_old(workspace / "memory" / "big.md", "- huge pasted log about pelicans\n" * 200)
    write_old(workspace / "memory" / "2025-03-09.md", "- small note about pelicans\n")
    config = MemoryConfig(max_file_bytes=2048)
    with MemoryStore(workspace, clock=fixed_clock, config=config) as store:
        hits = store.search("pelicans")
        assert [hit.path for hit in hits] == ["memory/2025-03-09.md"]
        assert any("memory/big.md" in w and "index limit" in w for w in store.warnings)
        # still readable in bounded slices
        piece = store.read_lines("memory/big.md", from_line=199, lines=5)
        assert (piece.from_line, piece.to_line, piece.total_lines) == (199, 200, 200)


def test_reading_a_huge_file_uses_bounded_memory(workspace: Path) -> None:
    path = workspace / "memory" / "huge.md"
    path.parent.mkdir(parents=True)
    with path.open("w", encoding="utf-8") as handle:
        for n in range(200_000):  # ~12 MB of lines, then one 8 MB line with no newline at all
            handle.write(f"- line {n} of a very large memory file\n")
        handle.write("z" * 8_000_000)
    with MemoryStore(workspace, clock=fixed_clock, config=MemoryConfig(max_read_chars=5_000)) as store:
        tracemalloc.start()
        try:
            whole = store.read_lines("memory/huge.md")
            tail = store.read_lines("memory/huge.md", from_line=200_001)
            middle = store.get("memory/huge.md", from_line=100_001, lines=2)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 2_000_000, f"reading used {peak:,} bytes"
    assert whole.truncated and whole.total_lines == 200_001 and len(whole.text) <= 5_000
    assert whole.text.startswith("- line 0 of") and whole.to_line == whole.from_line + whole.text.count("\n")
    assert tail.truncated and tail.text == "z" * 5_000
    assert middle == "- line 100000 of a very large memory file\n- line 100001 of a very large memory file"


def test_writing_to_a_huge_file_uses_bounded_memory(workspace: Path, store: MemoryStore) -> None:
    path = workspace / "memory" / "2025-03-10.md"
    path.parent.mkdir(parents=True)
    with path.open("w", encoding="utf-8") as handle:
        for n in range(300_000):
            handle.write(f"- line {n} of today's giant note\n")
    tracemalloc.start()
    try:
        result = store.write("one more thing")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, f"appending used {peak:,} bytes"
    assert result.line == 300_001


def test_memory_get_tool_reply_is_capped_for_a_huge_file(workspace: Path) -> None:
    path = workspace / "memory" / "2025-03-09.md"
    path.parent.mkdir(parents=True)
    path.write_text("".join(f"- entry {n} {'x' * 80}\n" for n in range(50_000)), encoding="utf-8")
    with MemoryStore(workspace, clock=fixed_clock) as store:
        piece = store.read_lines("memory/2025-03-09.md", max_chars=20_000)
    assert piece.truncated and len(piece.text) <= 20_000 and piece.total_lines == 50_000


# ------------------------------------------------------------------ CLI --explain


def test_cli_search_explain_shows_the_score_parts(workspace: Path) -> None:
    write_old(workspace / "memory" / "2025-03-09.md", "- the rollback plan lives in the wiki #ops\n")
    runner = CliRunner()
    shown = runner.invoke(app, ["search", "rollback ops", "--explain", "-w", str(workspace)])
    assert shown.exit_code == 0, shown.output
    assert "coverage 1.00" in shown.output and "recency" in shown.output and "tags 0.50" in shown.output
    as_json = runner.invoke(app, ["search", "rollback", "--explain", "--json", "-w", str(workspace)])
    parts = json.loads(as_json.output)[0]["parts"]
    assert set(parts) == {
        "bm25",
        "bm25_norm",
        "coverage",
        "keyword",
        "cosine",
        "relevance",
        "recency",
        "tags",
    }
    assert parts["coverage"] == 1.0


# ------------------------------------------------------------------ the shared SQLite opener


def test_open_wal_retries_a_locked_start_then_gives_up_clearly(tmp_path: Path) -> None:
    from openclaw_mini._sqlite import open_wal

    path = tmp_path / "x.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode = DELETE")
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")  # nobody can switch the file to WAL while this is held
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        open_wal(path, busy_timeout=0.3)
    assert time.monotonic() - started >= 0.3  # it kept trying for the whole busy timeout
    holder.execute("COMMIT")
    conn = open_wal(path, busy_timeout=5)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    holder.close()
