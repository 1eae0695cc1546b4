"""`MemoryStore`: the one object callers use; it ties files, index, search and vectors together.

Why synchronous and how it is safe to share: see the package docstring (`openclaw_mini.memory`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from .files import locked_append, read_line_slice, resolve_memory_path
from .index import MemoryIndex, count_chunks
from .models import (
    Embedder,
    MemoryConfig,
    MemoryEntry,
    MemoryHit,
    MemorySlice,
    MemoryWriteResult,
    ReindexStats,
    SyncStats,
)
from .search import run_search
from .text import _TAG_VALID_RE, _query_terms, _resolve_timezone, _split_lines
from .vectors import VectorSearch, embedder_name

__all__ = ["MemoryStore"]

logger = logging.getLogger(__name__)

_LONG_TERM_HEADER = "# Long-term memory\n\n"
_T = TypeVar("_T")


class MemoryStore:
    """Markdown memory of one workspace with an FTS5 index: `search`, `get`, `write`, `reindex`.

    Synchronous and thread-safe; call `close()` (or use `with`) when done. The index opens lazily
    on the first search, so `get` and `write` never touch SQLite.
    """

    def __init__(
        self,
        workspace: str | os.PathLike[str],
        *,
        timezone: str | None = None,
        embedder: Embedder | None = None,
        clock: Callable[[], datetime] | None = None,
        config: MemoryConfig | None = None,
    ) -> None:
        root = Path(workspace).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"workspace {root} does not exist or is not a directory")
        self.workspace = root.resolve()
        self.config = config or MemoryConfig()
        if self.config.chunk_overlap >= self.config.chunk_chars:
            raise ValueError("MemoryConfig.chunk_overlap must be smaller than chunk_chars")
        self.timezone = timezone
        self._tz = _resolve_timezone(timezone)
        self.embedder = embedder
        self._embedder_name = embedder_name(embedder) if embedder else ""
        self._clock = clock
        self.warnings: list[str] = []
        """Problems met while indexing (skipped files, rebuilt index), newest last, without repeats."""
        self.last_sync = SyncStats()
        self._lock = threading.RLock()
        self._index = MemoryIndex(self.workspace, self.config, self._warn)
        self.index_path = self._index.path
        self._vectors = VectorSearch(embedder, self._warn) if embedder is not None else None
        if self._vectors is not None:
            self._index.on_reset = self._vectors.reset

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the index connection. Idempotent; the store cannot search afterwards."""
        with self._lock:
            self._index.close()

    def now(self) -> datetime:
        """The current time in the store's timezone (from the injected clock when given)."""
        current = self._clock() if self._clock else datetime.now(self._tz)
        if current.tzinfo is None:
            return current.replace(tzinfo=self._tz) if self._tz else current.astimezone()
        return current.astimezone(self._tz) if self._tz else current.astimezone()

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            logger.warning("%s", message)

    # ------------------------------------------------------------------ reading and writing files

    def read_lines(
        self,
        path: str | os.PathLike[str],
        from_line: int | None = None,
        lines: int | None = None,
        max_chars: int | None = None,
    ) -> MemorySlice:
        """Lines of a memory file with their numbers; see `get`.

        At most `max_chars` characters (default `MemoryConfig.max_read_chars`) are returned,
        whole lines only unless a single line is longer; `truncated` says when that cut the read.
        """
        if from_line is not None and from_line < 1:
            raise ValueError(f"from_line must be 1 or more (got {from_line})")
        if lines is not None and lines < 1:
            raise ValueError(f"lines must be 1 or more (got {lines})")
        if max_chars is not None and max_chars < 1:
            raise ValueError(f"max_chars must be 1 or more (got {max_chars})")
        target, rel = resolve_memory_path(self.workspace, path)
        if not target.is_file():
            raise FileNotFoundError(f"memory file {rel} does not exist")
        start = from_line or 1
        cap = self.config.max_read_chars if max_chars is None else max_chars
        piece = read_line_slice(target, rel, start, lines, cap)
        if piece.truncated and max_chars is None:  # a caller's own cap is reported by `truncated` alone
            self._warn(
                f"memory file {rel} is larger than the {cap:,}-character read limit; "
                f"read it in parts with from_line and lines"
            )
        if piece.whole_text is not None and from_line is None and lines is None:
            body = piece.whole_text
        else:
            body = "\n".join(piece.lines)
        return MemorySlice(
            path=rel,
            from_line=start,
            to_line=start - 1 + len(piece.lines),
            total_lines=piece.total_lines,
            text=body,
            truncated=piece.truncated,
        )

    def get(
        self, path: str | os.PathLike[str], from_line: int | None = None, lines: int | None = None
    ) -> str:
        """Text of a memory file, whole or `lines` lines from `from_line` (1-based).

        Only MEMORY.md, memory.md and memory/**/*.md inside the workspace are readable; any other
        path (including `..` tricks and symlinks leading elsewhere) raises `MemoryPathError`.
        A file larger than `MemoryConfig.max_read_chars` is cut there (use `read_lines` to see so).
        """
        return self.read_lines(path, from_line, lines).text

    def write(self, text: str, tags: Sequence[str] = (), long_term: bool = False) -> MemoryWriteResult:
        """Append a timestamped bullet to today's `memory/YYYY-MM-DD.md`, or to MEMORY.md.

        Existing lines are never rewritten. The append holds an exclusive lock on the file, so
        writers in other threads and processes cannot interleave.
        """
        body = "\n".join(line.rstrip() for line in _split_lines(text.strip().replace("\r\n", "\n")))
        if not body.strip():
            raise ValueError("memory text is empty")
        clean_tags: list[str] = []
        for tag in tags:
            name = tag.strip().removeprefix("#")
            if not _TAG_VALID_RE.match(name):
                raise ValueError(
                    f"invalid tag {tag!r}: use letters, digits, '-' or '_', starting with a letter or digit"
                )
            if name not in clean_tags:
                clean_tags.append(name)
        now = self.now()
        if long_term:
            existing = [name for name in ("MEMORY.md", "memory.md") if (self.workspace / name).exists()]
            rel = existing[0] if existing else "MEMORY.md"
            header = _LONG_TERM_HEADER
            stamp = now.strftime("%Y-%m-%d %H:%M")
        else:
            rel = f"memory/{now.date().isoformat()}.md"
            header = f"# {now.date().isoformat()}\n\n"
            stamp = now.strftime("%H:%M")
        entry = MemoryEntry(stamp=stamp, text=body, tags=tuple(clean_tags)).to_markdown()
        with self._lock:
            target, rel = resolve_memory_path(self.workspace, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            target, rel = resolve_memory_path(self.workspace, rel)
            line, created = locked_append(target, header, entry)
        return MemoryWriteResult(path=rel, line=line, entry=entry, created=created)

    # ------------------------------------------------------------------ index

    def sync(self) -> SyncStats:
        """Bring the index in step with the files (see `openclaw_mini.memory.index`)."""
        with self._lock:
            stats = self._index.guarded(self._sync_once)
            self.last_sync = stats
            return stats

    def _sync_once(self, conn: sqlite3.Connection, force: bool = False) -> SyncStats:
        stats, changed = self._index.sync(conn, force=force)
        if force and self._vectors is not None:
            self._vectors.reset()
        if self._vectors is not None:
            self._vectors.fill(conn, changed=changed)
        return stats

    def reindex(self) -> ReindexStats:
        """Drop the index and rebuild it from every memory file; returns counts and seconds."""
        started = time.perf_counter()
        with self._lock:
            stats = self._index.guarded(lambda conn: self._sync_once(conn, force=True))
            self.last_sync = stats
            chunks = self._index.guarded(count_chunks)
        return ReindexStats(
            files=stats.files - stats.skipped,
            chunks=chunks,
            skipped=stats.skipped,
            seconds=time.perf_counter() - started,
        )

    def search(
        self, query: str, limit: int | None = None, min_score: float = 0.0, *, explain: bool = False
    ) -> list[MemoryHit]:
        """Best matching entries of the memory files, best first (the index is synced first).

        The AND of all query terms is tried first; when it finds nothing, any single term will do.
        `limit` defaults to 6; hits scoring below `min_score` (0..1) are dropped. With `explain`,
        each hit carries its `ScoreParts`.
        """
        limit = self.config.default_limit if limit is None else limit
        if limit < 1:
            raise ValueError(f"limit must be 1 or more (got {limit})")
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be between 0 and 1 (got {min_score})")
        terms = _query_terms(query)
        with self._lock:
            self.sync()
            if not terms and self._vectors is None:
                return []
            today = self.now().date()
            return self._index.guarded(
                lambda conn: _in_snapshot(
                    conn,
                    lambda: run_search(
                        conn, self.config, query, terms, limit, min_score, today, self._vectors, explain
                    ),
                )
            )

    def stats(self) -> dict[str, int]:
        """Files and chunks currently in the index (after a sync)."""
        with self._lock:
            self.sync()
            return self._index.guarded(
                lambda conn: {
                    "files": int(
                        conn.execute("SELECT count(*) FROM files WHERE status = 'ok'").fetchone()[0]
                    ),
                    "chunks": count_chunks(conn),
                }
            )


def _in_snapshot(conn: sqlite3.Connection, action: Callable[[], _T]) -> _T:
    """Run the reads of one search in one read transaction: a commit by another process lands
    before or after it, never between its queries."""
    conn.execute("BEGIN")
    try:
        result = action()
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result
