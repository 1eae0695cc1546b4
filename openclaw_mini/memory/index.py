"""The SQLite index of the memory files and how it is kept in step with them.

One row per memory file (stat fields, content hash, where parsing resumes after an append) and
one row per entry chunk, mirrored into an FTS5 table with two columns: the entry's text and the
heading it sits under. Sync is incremental at two levels:

- per file: unchanged files (same mtime and size) cost one stat; a file is read only when those
  moved, or when it was modified within two seconds of being indexed (an mtime tick can hide an
  edit);
- per entry: when the file's old bytes are still its prefix (an append), only the last entry and
  what follows it are parsed again; any other change re-parses the file but touches the index
  only for entries whose text hash is new or gone (moved entries just get new line numbers).

Files are read, hashed and parsed outside the write transaction, so other processes keep going;
the transaction re-checks each row, so two processes indexing the same change do it once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

try:  # POSIX; elsewhere a damaged index is replaced without a cross-process lock.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from .._sqlite import open_wal, write_transaction
from .entries import Entry, parse_entries
from .files import discover
from .models import IndexMeta, MemoryConfig, SyncStats
from .text import _day_of, _is_corruption, _split_lines, _tags_of, index_tokens

__all__ = ["MemoryIndex", "bump_generation", "generation"]

logger = logging.getLogger(__name__)

_FTS_TOKENIZE = "porter unicode61 remove_diacritics 2"
_RACY_NS = 2_000_000_000
"""A file modified this close to when we hashed it may change again within one mtime tick."""
_BUSY_TIMEOUT = 10.0
_T = TypeVar("_T")
_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE files (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, mtime_ns INTEGER NOT NULL, "
    "size INTEGER NOT NULL, hash TEXT NOT NULL, day TEXT, status TEXT NOT NULL, "
    "racy INTEGER NOT NULL DEFAULT 0, note TEXT NOT NULL DEFAULT '', "
    "tail_line INTEGER NOT NULL DEFAULT 1, tail_offset INTEGER NOT NULL DEFAULT 0, "
    "tail_heading TEXT NOT NULL DEFAULT '')",
    "CREATE TABLE chunks (id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, start_line INTEGER NOT NULL, "
    "end_line INTEGER NOT NULL, entry_line INTEGER NOT NULL, heading TEXT NOT NULL, text TEXT NOT NULL, "
    "tags TEXT NOT NULL, hash TEXT NOT NULL)",
    "CREATE INDEX chunks_by_file ON chunks(file_id, entry_line)",
    f"CREATE VIRTUAL TABLE chunks_fts USING fts5(body, heading, tokenize = '{_FTS_TOKENIZE}')",
    "CREATE TABLE vectors (chunk_id INTEGER NOT NULL, model TEXT NOT NULL, vec BLOB NOT NULL, "
    "PRIMARY KEY (chunk_id, model))",
    # Kept across rebuilds: vectors are keyed by model and text hash, so a rebuild embeds nothing twice.
    "CREATE TABLE IF NOT EXISTS embed_cache (key TEXT PRIMARY KEY, vec BLOB NOT NULL)",
)
_BOM = b"\xef\xbb\xbf"


@dataclass
class _Prepared:
    """One file read and parsed, ready to be written in the transaction."""

    rel: str
    mtime_ns: int
    size: int
    hash: str
    racy: bool
    status: str
    entries: list[Entry] | None = None
    """None: content unchanged, only the stat fields need an update."""
    note: str = ""
    from_line: int = 1
    """Only chunks of entries starting at or after this line are replaced (1: the whole file)."""
    base_hash: str = ""
    """For a partial update: the file hash the index must still hold (else redo next sync)."""
    tail: tuple[int, int, str] = (1, 0, "")
    """(line, byte offset, heading) where parsing resumes after the next append."""


@dataclass
class _Known:
    generation: int
    rows: dict[str, tuple[Any, ...]] = field(default_factory=dict)


def generation(conn: sqlite3.Connection) -> int:
    """Counter bumped by every committed index change, by any process: a cheap staleness check."""
    return int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])


def bump_generation(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class MemoryIndex:
    """The index file of one workspace: opening (and rebuilding when damaged) and syncing.

    Not thread-safe by itself: `MemoryStore` calls it under its lock.
    """

    def __init__(self, workspace: Path, config: MemoryConfig, warn: Callable[[str], None]) -> None:
        self.workspace = workspace
        self.config = config
        self.path = workspace / ".openclaw-mini" / "memory.sqlite"
        self._warn = warn
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._known: _Known | None = None
        self.closed = False
        self.on_reset: Callable[[], None] = lambda: None
        """Called when the connection is dropped, so caches derived from it are dropped too."""

    # ------------------------------------------------------------------ the connection

    def close(self) -> None:
        self.closed = True
        self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
        self._conn = None
        self._identity = None
        self._known = None
        self.on_reset()

    def connection(self) -> sqlite3.Connection:
        """The open index, reopened when its file was deleted or replaced since we opened it."""
        if self.closed:
            raise RuntimeError("MemoryStore is closed")
        if self._conn is not None and self._file_identity() != self._identity:
            self._warn(f"memory index {self.path} was deleted or replaced; rebuilding it")
            self._drop()
        if self._conn is None:
            self._open()
        assert self._conn is not None
        return self._conn

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = self._connect()
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                raise
            self._warn(f"memory index {self.path} was unreadable ({exc}); rebuilding it")
            self._drop()
            self._recreate_file(self._file_identity())
            self._conn = self._connect()
        self._identity = self._file_identity()

    def _connect(self) -> sqlite3.Connection:
        return open_wal(self.path, busy_timeout=_BUSY_TIMEOUT, prepare=self._prepare, check_same_thread=False)

    def meta(self) -> IndexMeta:
        return IndexMeta(
            chunk_chars=self.config.chunk_chars,
            chunk_overlap=self.config.chunk_overlap,
            heading_weight=self.config.heading_weight,
        )

    def _prepare(self, conn: sqlite3.Connection) -> None:
        wanted = self.meta()
        if _read_meta(conn) != wanted:
            with write_transaction(conn):
                if _read_meta(conn) != wanted:
                    self.reset_schema(conn)
        conn.execute("SELECT count(*) FROM files").fetchone()

    def reset_schema(self, conn: sqlite3.Connection) -> None:
        """Drop the tables and create empty ones, except the embedding cache (caller's transaction)."""
        for table in ("chunks_fts", "vectors", "chunks", "files", "meta"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO chunks_fts (chunks_fts, rank) VALUES ('rank', ?)",
            (f"bm25(1.0, {self.config.heading_weight})",),
        )
        conn.execute("INSERT INTO meta (key, value) VALUES ('index', ?)", (self.meta().model_dump_json(),))
        # A random start, so a process holding caches from before a rebuild never mistakes the
        # rebuilt index for the one it knew.
        start = int.from_bytes(os.urandom(6), "big")
        conn.execute("INSERT INTO meta (key, value) VALUES ('generation', ?)", (str(start),))
        self._known = None

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return info.st_dev, info.st_ino

    def _recreate_file(self, damaged: tuple[int, int] | None) -> None:
        """Delete the damaged index file `damaged` (by identity) so that a fresh one is created.

        Runs under a lock file; when another process has already replaced the file, its fresh
        index is kept rather than deleted again.
        """
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a+b") as lock_file:
            if fcntl is not None:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            if damaged is not None and self._file_identity() != damaged:
                return
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(str(self.path) + suffix)

    def guarded(self, action: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `action` on the index; if the index turns out damaged, rebuild it once and retry."""
        conn = self.connection()
        try:
            return action(conn)
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                raise
            self._warn(f"memory index {self.path} was damaged ({exc}); rebuilding it")
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            damaged = self._identity
            self._drop()
            self._recreate_file(damaged)
            return action(self.connection())

    # ------------------------------------------------------------------ sync

    def sync(self, conn: sqlite3.Connection, force: bool = False) -> tuple[SyncStats, bool]:
        """Bring the index in step with the files; returns the stats and whether anything changed.

        `force` drops the index and re-adds every file in the same transaction, so other
        processes see the old index or the new one, never an empty one in between.
        """
        disk = discover(self.workspace)
        current = generation(conn)
        if force:
            known: dict[str, tuple[Any, ...]] = {}
        elif self._known is not None and self._known.generation == current:
            known = self._known.rows
        else:
            known = {
                row[0]: row
                for row in conn.execute(
                    "SELECT path, id, mtime_ns, size, hash, status, racy, note, tail_line, tail_offset, "
                    "tail_heading FROM files"
                )
            }
            self._known = _Known(current, known)
        stats = SyncStats(files=len(disk))
        for rel, row in known.items():
            if row[5] == "skipped" and rel in disk and row[7]:
                self._warn(row[7])
        todo = [
            rel
            for rel, (_, info) in disk.items()
            if force
            or rel not in known
            or known[rel][6]
            or (known[rel][2], known[rel][3]) != (info.st_mtime_ns, info.st_size)
        ]
        gone = [rel for rel in known if rel not in disk]
        if not todo and not gone and not force:
            return stats, False
        prepared: list[_Prepared] = []
        for rel in todo:
            full, info = disk[rel]
            item = self._prepare_file(rel, full, info, None if force else known.get(rel))
            stats.read += 1
            if item is None:
                if rel in known:
                    gone.append(rel)
                continue
            prepared.append(item)
        with write_transaction(conn):
            if force:
                self.reset_schema(conn)
            changed = self._apply(conn, prepared, gone, stats) or force
            bump_generation(conn)
        return stats, changed

    def _prepare_file(
        self, rel: str, full: str, listed: os.stat_result, known: tuple[Any, ...] | None
    ) -> _Prepared | None:
        """Read, hash and parse one file (outside any transaction)."""
        cap = self.config.max_file_bytes
        if listed.st_size > cap:
            return self._skip(rel, listed, f"is {_size(listed.st_size)}, over the {_size(cap)} index limit")
        try:
            with open(full, "rb") as handle:
                info = os.fstat(handle.fileno())
                if info.st_size > cap:
                    return self._skip(
                        rel, info, f"is {_size(info.st_size)}, over the {_size(cap)} index limit"
                    )
                data = handle.read(cap + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return self._skip(rel, listed, f"could not be read ({exc.strerror or exc})", digest="unreadable")
        if len(data) > cap:
            return self._skip(rel, info, f"grew over the {_size(cap)} index limit while being read")
        racy = abs(time.time_ns() - info.st_mtime_ns) < _RACY_NS
        view = memoryview(data)
        if known is not None and known[5] == "ok" and 0 < known[3] <= len(data):
            # Is the old content still the prefix? Then only the tail needs parsing.
            hasher = hashlib.sha256(view[: known[3]])
            prefix_digest = hasher.hexdigest()
            hasher.update(view[known[3] :])
            digest = hasher.hexdigest()
            if digest == known[4]:
                return _Prepared(rel, info.st_mtime_ns, info.st_size, digest, racy, "", None)
            if prefix_digest == known[4] and known[9] <= known[3]:
                item = self._parse(rel, info, digest, racy, data, tail=(known[8], known[9], known[10]))
                if item is not None:
                    item.base_hash = known[4]
                    return item
        else:
            digest = hashlib.sha256(view).hexdigest()
            if known is not None and digest == known[4]:
                return _Prepared(rel, info.st_mtime_ns, info.st_size, digest, racy, "", None)
        item = self._parse(rel, info, digest, racy, data, tail=None)
        assert item is not None
        return item

    def _parse(
        self,
        rel: str,
        info: os.stat_result,
        digest: str,
        racy: bool,
        data: bytes,
        tail: tuple[int, int, str] | None,
    ) -> _Prepared | None:
        """Decode and parse the file, or (with `tail`) only its part from the last known entry on.

        Returns None when a partial parse is not possible (the tail is not valid UTF-8 on its
        own); the caller then parses the whole file.
        """
        first_line, offset, heading = tail or (1, 0, "")
        if tail is None and data.startswith(_BOM):
            offset = len(_BOM)
        try:
            text = bytes(data[offset:]).decode("utf-8")
        except UnicodeDecodeError as exc:
            if tail is not None:
                return None
            where = offset + exc.start
            note = f"{rel} is not UTF-8 text (bad byte at offset {where}); skipped by the memory index"
            self._warn(note)
            return _Prepared(rel, info.st_mtime_ns, info.st_size, digest, racy, "skipped", [], note)
        lines = _split_lines(text)
        parsed = parse_entries(
            lines,
            max_chars=self.config.chunk_chars,
            overlap=self.config.chunk_overlap,
            first_line=first_line,
            heading=heading,
        )
        # Byte offset of the new tail line: the raw lines before it (with their `\r`s) plus newlines.
        skip = parsed.tail_line - first_line
        tail_offset = offset + (
            len("\n".join(text.split("\n", skip)[:skip]).encode("utf-8")) + 1 if skip else 0
        )
        return _Prepared(
            rel,
            info.st_mtime_ns,
            info.st_size,
            digest,
            racy,
            "ok",
            parsed.entries,
            from_line=first_line,
            tail=(parsed.tail_line, tail_offset, parsed.tail_heading),
        )

    def _skip(self, rel: str, info: os.stat_result, why: str, digest: str = "skipped") -> _Prepared:
        note = f"{rel} {why}; skipped by the memory index"
        self._warn(note)
        return _Prepared(rel, info.st_mtime_ns, info.st_size, digest, False, "skipped", [], note)

    def _apply(
        self, conn: sqlite3.Connection, prepared: list[_Prepared], gone: list[str], stats: SyncStats
    ) -> bool:
        """Write the prepared changes inside the write transaction.

        Rows are re-read under the lock: when another process indexed the same content meanwhile,
        its work is kept instead of done twice.
        """
        changed = False
        for rel in gone:
            row = conn.execute("SELECT id FROM files WHERE path = ?", (rel,)).fetchone()
            if row is not None:
                _drop_chunks(conn, row[0], 1)
                conn.execute("DELETE FROM files WHERE id = ?", (row[0],))
                stats.deleted += 1
                changed = True
        for item in prepared:
            if item.status == "skipped":
                stats.skipped += 1
            row = conn.execute("SELECT id, hash, status FROM files WHERE path = ?", (item.rel,)).fetchone()
            if row is not None and row[1] == item.hash and (item.entries is None or row[2] == item.status):
                conn.execute(
                    "UPDATE files SET mtime_ns = ?, size = ?, racy = ? WHERE id = ?",
                    (item.mtime_ns, item.size, int(item.racy), row[0]),
                )
                continue
            if item.entries is None or (item.base_hash and (row is None or row[1] != item.base_hash)):
                continue  # the row changed under us; the next sync compares again
            values = (
                item.mtime_ns,
                item.size,
                item.hash,
                item.status,
                int(item.racy),
                item.note,
                *item.tail,
            )
            if row is None:
                cursor = conn.execute(
                    "INSERT INTO files (mtime_ns, size, hash, status, racy, note, tail_line, tail_offset, "
                    "tail_heading, path, day) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*values, item.rel, _day_of(item.rel)),
                )
                file_id = int(cursor.lastrowid or 0)
                stats.added += 1
            else:
                file_id = row[0]
                conn.execute(
                    "UPDATE files SET mtime_ns = ?, size = ?, hash = ?, status = ?, racy = ?, note = ?, "
                    "tail_line = ?, tail_offset = ?, tail_heading = ? WHERE id = ?",
                    (*values, file_id),
                )
                stats.changed += 1
            stats.chunks += _replace_entries(conn, file_id, item.from_line, item.entries)
            changed = True
        return changed


def _replace_entries(conn: sqlite3.Connection, file_id: int, from_line: int, entries: list[Entry]) -> int:
    """Make the file's chunks from `from_line` on equal `entries`; returns how many were inserted.

    Chunks whose text and heading are unchanged keep their rows (and FTS rows and vectors), with
    new line numbers if they moved; only new text is tokenised and inserted.
    """
    old: dict[tuple[str, str], list[tuple[int, int, int, int]]] = {}
    for chunk_id, start, end, entry_line, heading, digest in conn.execute(
        "SELECT id, start_line, end_line, entry_line, heading, hash FROM chunks "
        "WHERE file_id = ? AND entry_line >= ?",
        (file_id, from_line),
    ):
        old.setdefault((digest, heading), []).append((chunk_id, start, end, entry_line))
    moved: list[tuple[int, int, int, int]] = []
    fresh: list[tuple[Entry, str]] = []
    for entry in entries:
        digest = _digest(entry.text)
        reusable = old.get((digest, entry.heading))
        if reusable:
            chunk_id, start, end, entry_line = reusable.pop()
            if (start, end, entry_line) != (entry.start_line, entry.end_line, entry.entry_line):
                moved.append((entry.start_line, entry.end_line, entry.entry_line, chunk_id))
        else:
            fresh.append((entry, digest))
    if fresh:
        # Ids are handed out here (the write lock is held) so both tables fill with executemany.
        first_id = int(conn.execute("SELECT coalesce(max(id), 0) + 1 FROM chunks").fetchone()[0])
        headings: dict[str, str] = {}
        conn.executemany(
            "INSERT INTO chunks (id, file_id, start_line, end_line, entry_line, heading, text, tags, hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    first_id + n,
                    file_id,
                    entry.start_line,
                    entry.end_line,
                    entry.entry_line,
                    entry.heading,
                    entry.text,
                    " ".join(_tags_of(entry.text)) if "#" in entry.text else "",
                    digest,
                )
                for n, (entry, digest) in enumerate(fresh)
            ],
        )
        conn.executemany(
            "INSERT INTO chunks_fts (rowid, body, heading) VALUES (?, ?, ?)",
            [
                (
                    first_id + n,
                    index_tokens(entry.text),
                    headings.get(entry.heading)
                    or headings.setdefault(entry.heading, index_tokens(entry.heading)),
                )
                for n, (entry, _) in enumerate(fresh)
            ],
        )
    if moved:
        conn.executemany("UPDATE chunks SET start_line = ?, end_line = ?, entry_line = ? WHERE id = ?", moved)
    stale = [(row[0],) for rows in old.values() for row in rows]
    if stale:
        conn.executemany("DELETE FROM chunks_fts WHERE rowid = ?", stale)
        conn.executemany("DELETE FROM vectors WHERE chunk_id = ?", stale)
        conn.executemany("DELETE FROM chunks WHERE id = ?", stale)
    return len(fresh)


def _drop_chunks(conn: sqlite3.Connection, file_id: int, from_line: int) -> None:
    ids = "(SELECT id FROM chunks WHERE file_id = ? AND entry_line >= ?)"
    conn.execute(f"DELETE FROM chunks_fts WHERE rowid IN {ids}", (file_id, from_line))
    conn.execute(f"DELETE FROM vectors WHERE chunk_id IN {ids}", (file_id, from_line))
    conn.execute("DELETE FROM chunks WHERE file_id = ? AND entry_line >= ?", (file_id, from_line))


def _read_meta(conn: sqlite3.Connection) -> IndexMeta | None:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'index'").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise
    if row is None:
        return None
    try:
        return IndexMeta.model_validate_json(row[0])
    except ValidationError:
        return None


def _size(count: int) -> str:
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} bytes"  # pragma: no cover


def count_chunks(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM chunks").fetchone()[0])
