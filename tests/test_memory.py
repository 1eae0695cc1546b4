"""MemoryStore: files, index, search, get, write (no Agent needed)."""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import pytest

from openclaw_mini.memory import (
    MEMORY_PROMPT_GUIDANCE,
    MemoryConfig,
    MemoryHit,
    MemoryPathError,
    MemoryStore,
    chunk_lines,
    index_tokens,
    is_memory_path,
)

NOW = datetime(2025, 3, 10, 9, 30, tzinfo=UTC)


def fixed_clock() -> datetime:
    return NOW


def age(path: Path, seconds: float = 3600) -> None:
    """Push a file's mtime into the past, as for notes written earlier (outside the racy window)."""
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


def note(workspace: Path, rel: str, text: str) -> Path:
    path = workspace / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    age(path)
    return path


@pytest.fixture
def store(workspace: Path) -> Iterator[MemoryStore]:
    with MemoryStore(workspace, timezone="UTC", clock=fixed_clock) as opened:
        yield opened


def paths(hits: list[MemoryHit]) -> list[str]:
    return [hit.path for hit in hits]


# ------------------------------------------------------------------ finding things


def test_finds_a_fact_in_a_daily_note_and_in_memory_md(workspace: Path, store: MemoryStore) -> None:
    note(
        workspace,
        "memory/2025-03-08.md",
        """
        # 2025-03-08

        - 10:02 Standup moved to 9:15 on Tuesdays
        - 14:40 Dana owns the billing migration #people
        """,
    )
    note(workspace, "MEMORY.md", "# Long-term memory\n\n- The production database is hosted in Frankfurt\n")

    hits = store.search("billing migration")
    assert paths(hits) == ["memory/2025-03-08.md"]
    hit = hits[0]
    assert hit.start_line <= 4 <= hit.end_line
    assert "Dana owns the billing migration" in hit.snippet
    assert 0.0 < hit.score <= 1.0

    hits = store.search("Frankfurt database")
    assert paths(hits) == ["MEMORY.md"]
    assert "Frankfurt" in hits[0].snippet
    assert store.search("kubernetes") == []


def test_lowercase_memory_md_is_indexed(workspace: Path, store: MemoryStore) -> None:
    note(workspace, "memory.md", "- Prefers dark roast coffee\n")
    assert paths(store.search("coffee")) == ["memory.md"]


def test_nested_memory_files_are_indexed_but_other_markdown_is_not(
    workspace: Path, store: MemoryStore
) -> None:
    note(workspace, "memory/projects/atlas.md", "Atlas ships in April\n")
    note(workspace, "notes/atlas.md", "Atlas is secret elsewhere\n")
    note(workspace, "AGENTS.md", "Atlas agent rules\n")
    assert paths(store.search("Atlas")) == ["memory/projects/atlas.md"]


@pytest.mark.parametrize("query", ["数据库", "PostgreSQL", "数据", "决定", "使用", "库", "postgresql 数据库"])
def test_chinese_query_finds_chinese_note(workspace: Path, store: MemoryStore, query: str) -> None:
    note(workspace, "memory/2025-03-09.md", "# 2025-03-09\n\n- 11:00 我们决定使用PostgreSQL数据库\n")
    note(workspace, "memory/2025-03-07.md", "# 2025-03-07\n\n- 09:00 今天的午饭很好吃\n")
    hits = store.search(query)
    assert paths(hits) == ["memory/2025-03-09.md"], query
    assert "我们决定使用PostgreSQL数据库" in hits[0].snippet


def test_cjk_does_not_match_unrelated_characters(workspace: Path, store: MemoryStore) -> None:
    note(workspace, "memory/2025-03-09.md", "- 我们决定使用PostgreSQL数据库\n")
    assert store.search("咖啡") == []
    assert store.search("据数") == []  # same characters, other order: not the word


def test_japanese_and_korean_notes(workspace: Path, store: MemoryStore) -> None:
    note(workspace, "memory/2025-03-09.md", "- 東京オフィスは金曜日休み\n- 회의는 목요일에 있습니다\n")
    assert paths(store.search("オフィス")) == ["memory/2025-03-09.md"]
    assert paths(store.search("목요일")) == ["memory/2025-03-09.md"]


def test_newer_day_wins_a_tie(workspace: Path, store: MemoryStore) -> None:
    for day in ("2025-01-15", "2025-03-01", "2024-12-24"):
        note(workspace, f"memory/{day}.md", "- 10:00 The release train leaves on Thursday\n")
    hits = store.search("release train")
    assert paths(hits) == ["memory/2025-03-01.md", "memory/2025-01-15.md", "memory/2024-12-24.md"]
    assert hits[0].score > hits[1].score > hits[2].score


def test_ties_between_very_old_notes_still_prefer_the_newer(workspace: Path, store: MemoryStore) -> None:
    for day in ("2001-01-01", "2001-06-01"):
        note(workspace, f"memory/{day}.md", "- ancient trivia about the old mainframe\n")
    assert paths(store.search("mainframe")) == ["memory/2001-06-01.md", "memory/2001-01-01.md"]


def test_memory_md_never_decays(workspace: Path, store: MemoryStore) -> None:
    note(workspace, "MEMORY.md", "- The office wifi password rotates monthly\n")
    note(workspace, "memory/2024-01-01.md", "- The office wifi password rotates monthly\n")
    hits = store.search("wifi password")
    assert paths(hits) == ["MEMORY.md", "memory/2024-01-01.md"]


def test_tag_match_boosts(workspace: Path, store: MemoryStore) -> None:
    note(workspace, "memory/2025-03-09.md", "- deploy went fine, nothing to report\n")
    note(workspace, "memory/2025-03-08.md", "- deploy went fine, nothing to report #deploy\n")
    hits = store.search("#deploy")
    assert paths(hits)[0] == "memory/2025-03-08.md"  # the older note wins through its tag
    assert paths(store.search("deploy")) == paths(hits)


def test_and_first_then_per_term_fallback(workspace: Path, store: MemoryStore) -> None:
    note(workspace, "memory/2025-03-09.md", "- Grafana dashboards live on the ops server\n")
    note(workspace, "memory/2025-03-08.md", "- Grafana alert thresholds were lowered\n")
    both = store.search("Grafana dashboards")
    assert paths(both) == ["memory/2025-03-09.md"]  # AND: only the note with both words
    fallback = store.search("Grafana dashboards zeppelin")  # no note has all three
    assert set(paths(fallback)) == {"memory/2025-03-09.md", "memory/2025-03-08.md"}
    assert fallback[0].path == "memory/2025-03-09.md"  # covers two of three words
    assert fallback[0].score < both[0].score  # a partial match scores below a full one


@pytest.mark.parametrize(
    "query",
    [
        '"',
        '""',
        "*",
        "a*",
        "AND",
        "OR",
        "NOT",
        "NEAR",
        "NEAR(a b)",
        "-",
        "--x",
        "a - b",
        "(",
        ")",
        "col:val",
        "^start",
        "a AND",
        "OR b",
        '"unbalanced',
        "{body}: x",
        "x + y",
        "'; DROP TABLE files; --",
        "\x00",
        "   ",
        "",
        "#",
        "##",
        "🙂",
        '数据库"*',
        "a\nb",
        "NOT deploy",
    ],
)
def test_fts_syntax_in_queries_never_raises(workspace: Path, store: MemoryStore, query: str) -> None:
    note(
        workspace, "memory/2025-03-09.md", "- AND OR NOT NEAR are words here; deploy col val start x y b a\n"
    )
    hits = store.search(query)
    assert isinstance(hits, list)


def test_operator_words_are_plain_words(workspace: Path, store: MemoryStore) -> None:
    note(workspace, "memory/2025-03-09.md", "- rock AND roll forever\n")
    note(workspace, "memory/2025-03-08.md", "- rock music\n")
    assert paths(store.search("rock AND roll")) == ["memory/2025-03-09.md"]
    assert paths(store.search('"roll')) == ["memory/2025-03-09.md"]


def test_punctuated_tokens_search_as_a_phrase(workspace: Path, store: MemoryStore) -> None:
    note(workspace, "memory/2025-03-09.md", "- invoice due 2025-04-01 for acme\n")
    note(workspace, "memory/2025-03-08.md", "- 2025 goals: 04 hires, 01 office\n")
    assert paths(store.search("2025-04-01")) == ["memory/2025-03-09.md"]


def test_limit_and_min_score(workspace: Path, store: MemoryStore) -> None:
    for day in range(1, 10):
        note(workspace, f"memory/2025-03-0{day}.md", f"- status report number {day}\n")
    assert len(store.search("status report")) == 6
    assert len(store.search("status report", limit=3)) == 3
    everything = store.search("status report", limit=20)
    assert len(everything) == 9
    threshold = everything[4].score
    assert all(hit.score >= threshold for hit in store.search("status report", limit=20, min_score=threshold))
    assert store.search("status report", min_score=1.0) == []
    with pytest.raises(ValueError, match="limit"):
        store.search("status", limit=0)
    with pytest.raises(ValueError, match="min_score"):
        store.search("status", min_score=1.5)


def test_snippet_is_capped_and_its_lines_are_exact(workspace: Path, store: MemoryStore) -> None:
    lines = [f"- filler line {n:02d} " + "lorem ipsum " * 7 for n in range(1, 30)]
    lines[20] = "- the secret handshake is two taps and a wink"
    note(workspace, "memory/2025-03-09.md", "\n".join(lines) + "\n")
    hit = store.search("secret handshake")[0]
    assert len(hit.snippet) <= 700
    assert "secret handshake" in hit.snippet
    assert hit.start_line <= 21 <= hit.end_line
    fetched = store.get(hit.path, from_line=hit.start_line, lines=hit.end_line - hit.start_line + 1)
    assert fetched == hit.snippet


def test_snippet_of_a_huge_line_centres_on_the_match(workspace: Path, store: MemoryStore) -> None:
    line = "x" * 3000 + " needle in the haystack " + "y" * 3000
    note(workspace, "memory/2025-03-09.md", "first line\n" + line + "\n")
    hit = store.search("needle haystack")[0]
    assert (hit.start_line, hit.end_line) == (2, 2)
    assert "needle in the haystack" in hit.snippet
    assert len(hit.snippet) <= 700


def test_crlf_files_keep_line_numbers(workspace: Path, store: MemoryStore) -> None:
    path = workspace / "memory" / "2025-03-09.md"
    path.parent.mkdir()
    path.write_bytes(b"# day\r\n\r\n- alpha\r\n- bravo charlie\r\n")
    age(path)
    hit = store.search("charlie")[0]
    assert store.get(hit.path, from_line=4, lines=1) == "- bravo charlie"


# ------------------------------------------------------------------ keeping the index in step


def test_deleted_file_disappears(workspace: Path, store: MemoryStore) -> None:
    path = note(workspace, "memory/2025-03-09.md", "- the canary release is paused\n")
    assert paths(store.search("canary")) == ["memory/2025-03-09.md"]
    path.unlink()
    assert store.search("canary") == []
    assert store.last_sync.deleted == 1


def test_edited_file_new_text_found_old_text_gone(workspace: Path, store: MemoryStore) -> None:
    path = note(workspace, "memory/2025-03-09.md", "- lunch with Priya on Friday\n")
    assert store.search("Priya")
    path.write_text("- lunch with Tomasz on Monday\n", encoding="utf-8")
    assert store.search("Priya") == []
    assert store.last_sync.changed == 1
    assert paths(store.search("Tomasz")) == ["memory/2025-03-09.md"]


def test_same_size_edit_within_one_mtime_tick_is_seen(workspace: Path, store: MemoryStore) -> None:
    path = workspace / "memory" / "2025-03-09.md"
    path.parent.mkdir()
    path.write_text("- code word: apple\n", encoding="utf-8")
    assert store.search("apple")
    stat = path.stat()
    path.write_text("- code word: mango\n", encoding="utf-8")  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same mtime
    assert paths(store.search("mango")) == ["memory/2025-03-09.md"]
    assert store.search("apple") == []


def test_unchanged_files_are_not_read_again(workspace: Path, store: MemoryStore) -> None:
    for day in range(1, 6):
        note(workspace, f"memory/2025-03-0{day}.md", f"- item {day} of the list\n")
    store.search("item")
    assert store.last_sync.read == 5
    store.search("item")
    assert store.last_sync.read == 0
    with (workspace / "memory" / "2025-03-02.md").open("a", encoding="utf-8") as handle:
        handle.write("- appended later about zucchini\n")
    age(workspace / "memory" / "2025-03-02.md")
    assert paths(store.search("zucchini")) == ["memory/2025-03-02.md"]
    assert store.last_sync.read == 1
    assert store.last_sync.changed == 1


def test_touched_but_unchanged_file_is_not_reindexed(workspace: Path, store: MemoryStore) -> None:
    path = note(workspace, "memory/2025-03-09.md", "- nothing new here\n")
    store.search("nothing")
    age(path, 60)  # mtime moves, content does not
    store.search("nothing")
    assert store.last_sync.read == 1
    assert store.last_sync.changed == 0
    assert store.last_sync.chunks == 0


def test_written_memory_is_found_by_a_fresh_store(workspace: Path) -> None:
    with MemoryStore(workspace, timezone="UTC", clock=fixed_clock) as first:
        first.write("Jonas prefers async code reviews", tags=["people"])
        first.write("The VPN certificate expires in June", long_term=True)
    with MemoryStore(workspace, timezone="UTC", clock=fixed_clock) as second:
        assert paths(second.search("Jonas reviews")) == ["memory/2025-03-10.md"]
        assert paths(second.search("VPN certificate")) == ["MEMORY.md"]


def test_index_survives_a_restart_without_rereading(workspace: Path) -> None:
    note(workspace, "memory/2025-03-09.md", "- the rollout checklist lives in Notion\n")
    with MemoryStore(workspace, clock=fixed_clock) as first:
        assert first.search("rollout checklist")
        assert first.last_sync.read == 1
    with MemoryStore(workspace, clock=fixed_clock) as second:
        assert paths(second.search("rollout checklist")) == ["memory/2025-03-09.md"]
        assert second.last_sync.read == 0
        assert second.warnings == []


def test_index_rebuilt_when_its_file_is_deleted(workspace: Path) -> None:
    note(workspace, "memory/2025-03-09.md", "- the rollout checklist lives in Notion\n")
    with MemoryStore(workspace, clock=fixed_clock) as first:
        first.search("rollout")
    for suffix in ("", "-wal", "-shm"):
        Path(str(first.index_path) + suffix).unlink(missing_ok=True)
    with MemoryStore(workspace, clock=fixed_clock) as second:
        assert paths(second.search("rollout")) == ["memory/2025-03-09.md"]
        assert second.index_path.exists()


def test_index_rebuilt_when_deleted_while_open(workspace: Path, store: MemoryStore) -> None:
    note(workspace, "memory/2025-03-09.md", "- the rollout checklist lives in Notion\n")
    assert store.search("rollout")
    for suffix in ("", "-wal", "-shm"):
        Path(str(store.index_path) + suffix).unlink(missing_ok=True)
    assert paths(store.search("rollout")) == ["memory/2025-03-09.md"]
    assert store.index_path.exists()
    assert any("deleted or replaced" in warning for warning in store.warnings)


def test_index_rebuilt_when_overwritten_with_garbage(
    workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    note(workspace, "memory/2025-03-09.md", "- the rollout checklist lives in Notion\n")
    with MemoryStore(workspace, clock=fixed_clock) as first:
        first.search("rollout")
    first.index_path.write_bytes(b"this is not a database at all " * 200)
    with (
        caplog.at_level(logging.WARNING, logger="openclaw_mini.memory"),
        MemoryStore(workspace, clock=fixed_clock) as second,
    ):
        assert paths(second.search("rollout")) == ["memory/2025-03-09.md"]
        assert any("rebuilding" in warning for warning in second.warnings)
    assert "rebuilding" in caplog.text
    check = sqlite3.connect(first.index_path)
    try:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        check.close()


def test_index_rebuilt_when_overwritten_while_open(workspace: Path, store: MemoryStore) -> None:
    note(workspace, "memory/2025-03-09.md", "- the rollout checklist lives in Notion\n")
    assert store.search("rollout")
    store.index_path.write_bytes(b"\x00garbage" * 4096)
    Path(str(store.index_path) + "-wal").unlink(missing_ok=True)
    assert paths(store.search("rollout")) == ["memory/2025-03-09.md"]


def test_index_from_another_format_version_is_rebuilt(workspace: Path) -> None:
    note(workspace, "memory/2025-03-09.md", "- the rollout checklist lives in Notion\n")
    with MemoryStore(workspace, clock=fixed_clock) as first:
        first.search("rollout")
    conn = sqlite3.connect(first.index_path)
    try:
        conn.execute("""UPDATE meta SET value = '{"v": 0}' WHERE key = 'index'""")
        conn.commit()
    finally:
        conn.close()
    with MemoryStore(workspace, clock=fixed_clock) as second:
        assert paths(second.search("rollout")) == ["memory/2025-03-09.md"]
        assert second.last_sync.read == 1  # rebuilt from the files


def test_changed_chunk_size_rebuilds_the_index(workspace: Path) -> None:
    # one long prose paragraph: an entry longer than chunk_chars is cut into chunks
    note(workspace, "memory/2025-03-09.md", "\n".join(f"line {n} " + "word " * 30 for n in range(60)))
    with MemoryStore(workspace, clock=fixed_clock) as first:
        assert first.stats()["chunks"] > 1
        big = first.stats()["chunks"]
    with MemoryStore(
        workspace, clock=fixed_clock, config=MemoryConfig(chunk_chars=400, chunk_overlap=80)
    ) as small:
        assert small.stats()["chunks"] > big


def test_non_utf8_file_is_skipped_with_a_warning(
    workspace: Path, store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    note(workspace, "memory/2025-03-09.md", "- good note about lighthouses\n")
    bad = workspace / "memory" / "2025-03-08.md"
    bad.write_bytes(b"- latin-1 caf\xe9 about lighthouses\n")
    age(bad)
    with caplog.at_level(logging.WARNING, logger="openclaw_mini.memory"):
        hits = store.search("lighthouses")
    assert paths(hits) == ["memory/2025-03-09.md"]
    assert any("memory/2025-03-08.md" in w and "UTF-8" in w for w in store.warnings)
    assert "memory/2025-03-08.md" in caplog.text
    store.search("lighthouses")
    assert store.last_sync.read == 0  # not re-read until it changes
    assert len(store.warnings) == 1
    with MemoryStore(workspace, clock=fixed_clock) as fresh:
        fresh.search("lighthouses")
        assert any("memory/2025-03-08.md" in w for w in fresh.warnings)
    bad.write_text("- fixed note about lighthouses\n", encoding="utf-8")
    assert set(paths(store.search("lighthouses"))) == {"memory/2025-03-08.md", "memory/2025-03-09.md"}


def test_symlinks_out_of_the_workspace_are_not_indexed(
    workspace: Path, store: MemoryStore, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.md"
    outside.write_text("- private diary entry about volcanoes\n", encoding="utf-8")
    (workspace / "memory").mkdir()
    (workspace / "memory" / "link.md").symlink_to(outside)
    assert store.search("volcanoes") == []


def test_reindex_reports_counts(workspace: Path, store: MemoryStore) -> None:
    note(workspace, "memory/2025-03-09.md", "- one\n")
    note(workspace, "MEMORY.md", "- two\n")
    (workspace / "memory" / "bad.md").write_bytes(b"\xff\xfe\x00")
    stats = store.reindex()
    assert (stats.files, stats.chunks, stats.skipped) == (2, 2, 1)
    assert stats.seconds >= 0


def test_two_processes_search_and_write_at_once(workspace: Path) -> None:
    for day in range(1, 10):
        note(workspace, f"memory/2025-02-0{day}.md", f"- shared baseline note {day}\n")
    script = textwrap.dedent(
        """
        import sys
        from openclaw_mini.memory import MemoryStore
        workspace, name = sys.argv[1], sys.argv[2]
        with MemoryStore(workspace) as store:
            for n in range(25):
                store.write(f"{name} wrote entry {n}", tags=[name])
                assert store.search("shared baseline"), "baseline lost"
                store.search(f"{name} entry")
                if n % 8 == 7:
                    store.reindex()  # atomic: the other process never sees an empty index
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(workspace), name],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name in ("alpha", "beta")
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    written = [line for path in (workspace / "memory").glob("*.md") for line in path.read_text().splitlines()]
    assert sum(" wrote entry " in line for line in written) == 50  # no lost or torn appends
    with MemoryStore(workspace) as store:
        for name in ("alpha", "beta"):
            for n in (3, 17, 24):
                hits = store.search(f"{name} wrote entry {n}")
                assert any(f"{name} wrote entry {n} #{name}" in hit.snippet for hit in hits)


def test_threads_share_one_store(workspace: Path, store: MemoryStore) -> None:
    for day in range(1, 10):
        note(workspace, f"memory/2025-03-0{day}.md", f"- threaded note {day} about kites\n")
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(20):
                assert len(store.search("kites", limit=9)) == 9
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_closed_store_refuses_to_search(workspace: Path) -> None:
    opened = MemoryStore(workspace)
    opened.close()
    opened.close()
    with pytest.raises(RuntimeError, match="closed"):
        opened.search("anything")


# ------------------------------------------------------------------ get


def test_get_reads_whole_files_and_line_ranges(workspace: Path, store: MemoryStore) -> None:
    note(workspace, "memory/2025-03-09.md", "# 2025-03-09\n\n- a\n- b\n- c\n")
    assert store.get("memory/2025-03-09.md") == "# 2025-03-09\n\n- a\n- b\n- c\n"
    assert store.get("memory/2025-03-09.md", from_line=3, lines=2) == "- a\n- b"
    assert store.get("./memory/2025-03-09.md", from_line=5) == "- c"
    assert store.get(workspace / "memory" / "2025-03-09.md", lines=1) == "# 2025-03-09"
    assert store.get("memory/2025-03-09.md", from_line=50) == ""
    piece = store.read_lines("memory/2025-03-09.md", from_line=4, lines=10)
    assert (piece.from_line, piece.to_line, piece.total_lines) == (4, 5, 5)
    with pytest.raises(ValueError, match="from_line"):
        store.get("memory/2025-03-09.md", from_line=0)
    with pytest.raises(FileNotFoundError, match=r"memory/2020-01-01\.md"):
        store.get("memory/2020-01-01.md")


@pytest.mark.parametrize(
    "path",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "AGENTS.md",
        "memory/../AGENTS.md",
        "memory/../../outside.md",
        "memory/notes.txt",
        "memory",
        ".openclaw-mini/memory.sqlite",
        "MEMORY.md.bak",
        "",
        "memory/\x00.md",
    ],
)
def test_get_refuses_non_memory_paths(workspace: Path, store: MemoryStore, path: str) -> None:
    (workspace / "AGENTS.md").write_text("rules", encoding="utf-8")
    with pytest.raises(MemoryPathError):
        store.get(path)


def test_memory_path_error_is_a_value_error_with_a_clear_message(store: MemoryStore) -> None:
    with pytest.raises(ValueError, match="outside the workspace"):
        store.get("../../etc/passwd")
    with pytest.raises(ValueError, match="not a memory file"):
        store.get("AGENTS.md")


def test_get_refuses_symlinks_leaving_the_workspace(
    workspace: Path, store: MemoryStore, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.md"
    secret.write_text("top secret", encoding="utf-8")
    (workspace / "memory").mkdir()
    (workspace / "memory" / "escape.md").symlink_to(secret)
    (workspace / "AGENTS.md").write_text("rules", encoding="utf-8")
    (workspace / "memory" / "agents.md").symlink_to(workspace / "AGENTS.md")
    with pytest.raises(MemoryPathError, match="outside the workspace"):
        store.get("memory/escape.md")
    with pytest.raises(MemoryPathError, match=r"AGENTS\.md"):
        store.get("memory/agents.md")
    (workspace / "elsewhere").mkdir()
    (workspace / "memory" / "sub").symlink_to(tmp_path)
    with pytest.raises(MemoryPathError):
        store.get("memory/sub/secret.md")


def test_get_reports_non_utf8_files(workspace: Path, store: MemoryStore) -> None:
    (workspace / "memory").mkdir()
    (workspace / "memory" / "bad.md").write_bytes(b"caf\xe9")
    with pytest.raises(ValueError, match=r"memory/bad\.md is not UTF-8"):
        store.get("memory/bad.md")


# ------------------------------------------------------------------ write


def test_write_appends_a_timestamped_bullet_to_todays_note(workspace: Path, store: MemoryStore) -> None:
    result = store.write("Ship the beta on Friday", tags=["release", "#todo"])
    assert result.path == "memory/2025-03-10.md"
    assert result.created is True
    assert result.line == 3
    assert result.entry == "- 09:30 Ship the beta on Friday #release #todo"
    assert (workspace / result.path).read_text(encoding="utf-8") == (
        "# 2025-03-10\n\n- 09:30 Ship the beta on Friday #release #todo\n"
    )
    second = store.write("Second thought")
    assert (second.line, second.created) == (4, False)
    assert paths(store.search("#release")) == ["memory/2025-03-10.md"]


def test_write_uses_the_configured_timezone(workspace: Path) -> None:
    late = datetime(2025, 3, 10, 23, 30, tzinfo=UTC)
    with MemoryStore(workspace, timezone="Asia/Tokyo", clock=lambda: late) as tokyo:
        result = tokyo.write("Tokyo is already tomorrow")
    assert result.path == "memory/2025-03-11.md"
    assert result.entry.startswith("- 08:30 ")
    with MemoryStore(workspace, timezone="America/Los_Angeles", clock=lambda: late) as la:
        assert la.write("LA is still today").path == "memory/2025-03-10.md"


def test_write_naive_clock_is_taken_in_the_configured_timezone(workspace: Path) -> None:
    with MemoryStore(workspace, timezone="Europe/Berlin", clock=lambda: datetime(2025, 7, 1, 7, 5)) as berlin:
        assert berlin.write("naive time").entry == "- 07:05 naive time"


def test_write_never_rewrites_existing_lines(workspace: Path, store: MemoryStore) -> None:
    path = workspace / "memory" / "2025-03-10.md"
    path.parent.mkdir()
    original = "# my own heading\n- hand-written line without newline at end"
    path.write_text(original, encoding="utf-8")
    result = store.write("machine line")
    content = path.read_text(encoding="utf-8")
    assert content.startswith(original + "\n")
    assert content == original + "\n- 09:30 machine line\n"
    assert result.line == 3
    assert store.get(result.path, from_line=result.line, lines=1) == "- 09:30 machine line"


def test_write_long_term_goes_to_memory_md(workspace: Path, store: MemoryStore) -> None:
    result = store.write("Our fiscal year starts in April", long_term=True)
    assert result.path == "MEMORY.md"
    assert result.entry == "- 2025-03-10 09:30 Our fiscal year starts in April"
    assert (
        (workspace / "MEMORY.md").read_text(encoding="utf-8").startswith("# Long-term memory\n\n- 2025-03-10")
    )
    (workspace / "MEMORY.md").unlink()
    (workspace / "memory.md").write_text("# mine\n", encoding="utf-8")
    assert store.write("lowercase file is used", long_term=True).path == "memory.md"


def test_write_multiline_text_stays_one_bullet(workspace: Path, store: MemoryStore) -> None:
    result = store.write("first line\nsecond line\n\nthird", tags=["x"])
    assert result.entry == "- 09:30 first line\n  second line\n\n  third #x"


@pytest.mark.parametrize("tag", ["two words", "", "#", "a/b", "-dash"])
def test_write_rejects_bad_tags(store: MemoryStore, tag: str) -> None:
    with pytest.raises(ValueError, match="invalid tag"):
        store.write("text", tags=[tag])


def test_write_rejects_empty_text(store: MemoryStore) -> None:
    with pytest.raises(ValueError, match="empty"):
        store.write("   \n ")


def test_write_refuses_a_memory_dir_that_links_outside(
    workspace: Path, store: MemoryStore, tmp_path: Path
) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (workspace / "memory").symlink_to(target)
    with pytest.raises(MemoryPathError):
        store.write("should not land outside")
    assert list(target.iterdir()) == []


def test_concurrent_writes_do_not_interleave(workspace: Path, store: MemoryStore) -> None:
    def writer(name: str) -> None:
        for n in range(30):
            store.write(f"{name} line {n} " + "z" * 200)

    threads = [threading.Thread(target=writer, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = (workspace / "memory" / "2025-03-10.md").read_text(encoding="utf-8").splitlines()
    bullets = [line for line in lines if line.startswith("- ")]
    assert len(bullets) == 120
    assert all(line.endswith("z" * 200) for line in bullets)
    assert lines[0] == "# 2025-03-10"
    assert lines.count("# 2025-03-10") == 1


# ------------------------------------------------------------------ embedder (semantic half)


class ConceptEmbedder:
    """Deterministic toy embedder: each word maps to a concept axis, synonyms share one."""

    name = "toy-concepts-v1"
    AXES: ClassVar[dict[str, int]] = {
        "car": 0,
        "automobile": 0,
        "vehicle": 0,
        "cat": 1,
        "kitten": 1,
        "feline": 1,
        "money": 2,
        "cash": 2,
    }

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def embed(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        vectors = []
        for text in texts:
            vector = [0.0] * 4
            for word in text.lower().replace(".", " ").split():
                vector[self.AXES.get(word, 3)] += 1.0 if word in self.AXES else 0.1
            vectors.append(vector)
        return vectors


def test_hybrid_search_finds_synonyms_with_an_embedder(workspace: Path) -> None:
    note(workspace, "memory/2025-03-09.md", "- bought a new car today\n")
    note(workspace, "memory/2025-03-08.md", "- the kitten knocked over a plant\n")
    with MemoryStore(workspace, clock=fixed_clock) as plain:
        assert plain.search("automobile") == []
    embedder = ConceptEmbedder()
    with MemoryStore(workspace, clock=fixed_clock, embedder=embedder) as hybrid:
        hits = hybrid.search("automobile")
        assert paths(hits) == ["memory/2025-03-09.md"]  # the kitten note is orthogonal: no hit
        assert paths(hybrid.search("feline"))[0] == "memory/2025-03-08.md"
        both = hybrid.search("car")  # keyword and vector agree: highest score
        assert both[0].path == "memory/2025-03-09.md"
        assert both[0].score > hits[0].score
        assert all(0.0 <= hit.score <= 1.0 for hit in hits)
    chunk_texts = [text for call in embedder.calls for text in call if "bought" in text]
    assert len(chunk_texts) == 1  # each chunk embedded once


def test_embedder_vectors_are_cached_across_instances(workspace: Path) -> None:
    note(workspace, "memory/2025-03-09.md", "- bought a new car today\n")
    first = ConceptEmbedder()
    with MemoryStore(workspace, clock=fixed_clock, embedder=first) as store:
        store.search("vehicle")
    second = ConceptEmbedder()
    with MemoryStore(workspace, clock=fixed_clock, embedder=second) as store:
        assert paths(store.search("vehicle")) == ["memory/2025-03-09.md"]
    assert second.calls == [["vehicle"]]  # only the query was embedded


def test_failing_embedder_falls_back_to_keywords(workspace: Path) -> None:
    class Broken:
        def embed(self, texts: list[str]) -> list[list[float]]:
            raise ConnectionError("model offline")

    note(workspace, "memory/2025-03-09.md", "- bought a new car today\n")
    with MemoryStore(workspace, clock=fixed_clock, embedder=Broken()) as store:
        assert paths(store.search("car")) == ["memory/2025-03-09.md"]
        assert any("model offline" in warning for warning in store.warnings)


# ------------------------------------------------------------------ pieces


def test_chunks_respect_size_overlap_and_line_ranges() -> None:
    lines = [f"line {n:03d} " + "x" * 90 for n in range(1, 101)]  # 100 chars each
    chunks = chunk_lines(lines, 1600, 320)
    assert chunks[0].start_line == 1
    assert chunks[-1].end_line == 100
    for chunk in chunks:
        assert len(chunk.text) <= 1600
        assert chunk.text.split("\n") == lines[chunk.start_line - 1 : chunk.end_line]
    for before, after in itertools.pairwise(chunks):
        overlap = before.end_line - after.start_line + 1
        assert 1 <= overlap <= 4  # ~320 chars of 100-char lines
    long_line = chunk_lines(["y" * 4000], 1600, 320)
    assert all(chunk.start_line == chunk.end_line == 1 for chunk in long_line)
    assert "".join(chunk.text[:1280] for chunk in long_line[:-1]) + long_line[-1].text == "y" * 4000
    assert chunk_lines(["", "   ", ""], 1600, 320) == []


def test_index_tokens_split_cjk_into_bigrams() -> None:
    assert (
        index_tokens("我们决定使用PostgreSQL数据库") == "我们 们决 决定 定使 使用 用 PostgreSQL 数据 据库 库"
    )
    assert index_tokens("Café, naïve ＡＢＣ") == "Café naïve ABC"


def test_is_memory_path() -> None:
    assert is_memory_path("MEMORY.md")
    assert is_memory_path("memory.md")
    assert is_memory_path("memory/2025-01-01.md")
    assert is_memory_path("memory/a/b.md")
    assert not is_memory_path("memory/.md")
    assert not is_memory_path("memory/../x.md")
    assert not is_memory_path("other/x.md")
    assert not is_memory_path("Memory.md")


def test_invalid_timezone_is_a_clear_error(workspace: Path) -> None:
    with pytest.raises(ValueError, match="unknown timezone 'Mars/Olympus'"):
        MemoryStore(workspace, timezone="Mars/Olympus")


def test_missing_workspace_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MemoryStore(tmp_path / "nope")


def test_prompt_guidance_names_the_tools() -> None:
    assert "memory_search" in MEMORY_PROMPT_GUIDANCE
    assert "memory_get" in MEMORY_PROMPT_GUIDANCE
    assert "memory_write" in MEMORY_PROMPT_GUIDANCE
    assert "decisions" in MEMORY_PROMPT_GUIDANCE and "todos" in MEMORY_PROMPT_GUIDANCE
