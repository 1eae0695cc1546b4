"""`MemoryStore`: the markdown files, their SQLite FTS5 index, search, get and write."""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import logging
import operator
import os
import sqlite3
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

try:  # POSIX; on other systems appends are serialised per process only.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from .models import (
    Embedder,
    IndexMeta,
    MemoryConfig,
    MemoryEntry,
    MemoryHit,
    MemoryPathError,
    MemorySlice,
    MemoryWriteResult,
    ReindexStats,
    SyncStats,
)
from .text import (
    _TAG_VALID_RE,
    _TOKEN_RE,
    _Chunk,
    _day_of,
    _is_corruption,
    _pack,
    _query_terms,
    _resolve_timezone,
    _split_lines,
    _tags_of,
    _Term,
    _unpack,
    chunk_lines,
    index_tokens,
    is_memory_path,
)

__all__ = ["MemoryStore"]

logger = logging.getLogger(__name__)

_FTS_TOKENIZE = "porter unicode61 remove_diacritics 2"
_RACY_NS = 2_000_000_000
"""A file modified this close to when we hashed it may change again within one mtime tick."""
_EMBED_BATCH = 64
_LONG_TERM_HEADER = "# Long-term memory\n\n"
_T = TypeVar("_T")
_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE files (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, mtime_ns INTEGER NOT NULL, "
    "size INTEGER NOT NULL, hash TEXT NOT NULL, day TEXT, status TEXT NOT NULL, "
    "racy INTEGER NOT NULL DEFAULT 0, note TEXT NOT NULL DEFAULT '')",
    "CREATE TABLE chunks (id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, start_line INTEGER NOT NULL, "
    "end_line INTEGER NOT NULL, text TEXT NOT NULL, tags TEXT NOT NULL, hash TEXT NOT NULL)",
    "CREATE INDEX chunks_by_file ON chunks(file_id)",
    f"CREATE VIRTUAL TABLE chunks_fts USING fts5(body, tokenize = '{_FTS_TOKENIZE}')",
    "CREATE TABLE vectors (chunk_id INTEGER NOT NULL, model TEXT NOT NULL, vec BLOB NOT NULL, "
    "PRIMARY KEY (chunk_id, model))",
    "CREATE TABLE embed_cache (key TEXT PRIMARY KEY, vec BLOB NOT NULL)",
)


# --------------------------------------------------------------------------- the store


@dataclass
class _Prepared:
    rel: str
    mtime_ns: int
    size: int
    hash: str
    racy: bool
    status: str
    chunks: list[_Chunk] | None = None
    """None: content unchanged, only the stat fields need an update."""
    note: str = ""


@dataclass
class _Candidate:
    chunk_id: int
    path: str
    day: str | None
    start_line: int
    end_line: int
    tags: list[str]
    text: str = ""
    """Loaded only for the hits that are returned."""
    bm25: float = 0.0
    coverage: float = 0.0
    cosine: float = 0.0


@dataclass
class _VectorCache:
    generation: int = -1
    ids: list[int] = field(default_factory=list)
    vectors: list[array[float]] = field(default_factory=list)


class MemoryStore:
    """Markdown memory of one workspace with an FTS5 index: `search`, `get`, `write`, `reindex`.

    Synchronous and thread-safe (see the module docstring); call `close()` (or use `with`) when
    done. The index opens lazily on the first search, so `get` and `write` never touch SQLite.
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
        self._embedder_name = (
            str(getattr(embedder, "name", "") or type(embedder).__qualname__) if embedder else ""
        )
        self._clock = clock
        self.index_path = self.workspace / ".openclaw-mini" / "memory.sqlite"
        self.warnings: list[str] = []
        """Problems met while indexing (skipped files, rebuilt index), newest last, without repeats."""
        self.last_sync = SyncStats()
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._db_identity: tuple[int, int] | None = None
        self._closed = False
        self._vectors = _VectorCache()
        self._vectors_checked = False
        self._known: tuple[int, dict[str, tuple[Any, ...]]] | None = None
        """Rows of the `files` table as of an index generation (re-read only when it moves)."""

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the index connection. Idempotent; the store cannot search afterwards."""
        with self._lock:
            self._closed = True
            self._close_connection()

    def _close_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
        self._conn = None
        self._db_identity = None
        self._vectors = _VectorCache()
        self._known = None

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

    # ------------------------------------------------------------------ paths

    def _resolve_memory_path(self, path: str | os.PathLike[str]) -> tuple[Path, str]:
        """Map user input to (absolute path, workspace-relative name) of a memory file, or refuse."""
        raw = os.fspath(path)
        shown = raw if len(raw) <= 200 else raw[:200] + "..."
        if not raw.strip() or "\x00" in raw:
            raise MemoryPathError("memory path is empty or contains a NUL byte")
        candidate = Path(raw.strip())
        if not candidate.is_absolute():
            candidate = self.workspace / candidate
        lexical = Path(os.path.normpath(candidate))
        try:
            rel = lexical.relative_to(self.workspace).as_posix()
        except ValueError:
            raise MemoryPathError(
                f"'{shown}' is outside the workspace; only MEMORY.md and memory/*.md can be read"
            ) from None
        if not is_memory_path(rel):
            raise MemoryPathError(
                f"'{shown}' is not a memory file; only MEMORY.md, memory.md and memory/**/*.md are allowed"
            )
        try:
            resolved = lexical.resolve()
        except RuntimeError:  # pathlib's report of a symlink loop (ELOOP)
            raise MemoryPathError(f"'{shown}' is a symlink loop; refused") from None
        try:
            real_rel = resolved.relative_to(self.workspace).as_posix()
        except ValueError:
            raise MemoryPathError(
                f"'{shown}' resolves through a symlink to outside the workspace; refused"
            ) from None
        if not is_memory_path(real_rel):
            raise MemoryPathError(f"'{shown}' resolves through a symlink to '{real_rel}', not a memory file")
        return lexical, rel

    def _discover(self) -> dict[str, tuple[str, os.stat_result]]:
        """Every indexable memory file: regular files only, symlinks never followed.

        Uses `os.scandir` (no pathlib) because this runs before every search: one stat per file.
        """
        found: dict[str, tuple[str, os.stat_result]] = {}
        root = str(self.workspace)
        with contextlib.suppress(OSError), os.scandir(root) as entries:
            for entry in entries:
                if entry.name in ("MEMORY.md", "memory.md") and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(OSError):
                        found[entry.name] = (entry.path, entry.stat(follow_symlinks=False))
        pending = [(os.path.join(root, "memory"), "memory/")]
        while pending:
            folder, prefix = pending.pop()
            try:
                entries = os.scandir(folder)
            except OSError:
                continue
            with entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith("."):
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            pending.append((entry.path, prefix + name + "/"))
                        elif name.endswith(".md") and entry.is_file(follow_symlinks=False):
                            found[prefix + name] = (entry.path, entry.stat(follow_symlinks=False))
                    except OSError:
                        continue
        return found

    # ------------------------------------------------------------------ reading and writing files

    def read_lines(
        self, path: str | os.PathLike[str], from_line: int | None = None, lines: int | None = None
    ) -> MemorySlice:
        """Lines of a memory file with their numbers; see `get`."""
        if from_line is not None and from_line < 1:
            raise ValueError(f"from_line must be 1 or more (got {from_line})")
        if lines is not None and lines < 1:
            raise ValueError(f"lines must be 1 or more (got {lines})")
        target, rel = self._resolve_memory_path(path)
        if not target.is_file():
            raise FileNotFoundError(f"memory file {rel} does not exist")
        data = target.read_bytes()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"memory file {rel} is not UTF-8 text (bad byte at offset {exc.start})"
            ) from None
        all_lines = _split_lines(text)
        start = from_line or 1
        stop = len(all_lines) if lines is None else min(len(all_lines), start - 1 + lines)
        if from_line is None and lines is None:
            body = text
        else:
            body = "\n".join(all_lines[start - 1 : stop])
        return MemorySlice(
            path=rel, from_line=start, to_line=max(start - 1, stop), total_lines=len(all_lines), text=body
        )

    def get(
        self, path: str | os.PathLike[str], from_line: int | None = None, lines: int | None = None
    ) -> str:
        """Text of a memory file, whole or `lines` lines from `from_line` (1-based).

        Only MEMORY.md, memory.md and memory/**/*.md inside the workspace are readable; any other
        path (including `..` tricks and symlinks leading elsewhere) raises `MemoryPathError`.
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
            target, rel = self._resolve_memory_path(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            target, rel = self._resolve_memory_path(rel)
            line, created = _locked_append(target, header, entry)
        return MemoryWriteResult(path=rel, line=line, entry=entry, created=created)

    # ------------------------------------------------------------------ the index connection

    def _connection(self) -> sqlite3.Connection:
        """The open index, reopened when its file was deleted or replaced since we opened it."""
        if self._closed:
            raise RuntimeError("MemoryStore is closed")
        if self._conn is not None:
            try:
                info = os.stat(self.index_path)
                same = (info.st_dev, info.st_ino) == self._db_identity
            except OSError:
                same = False
            if not same:
                self._warn(f"memory index {self.index_path} was deleted or replaced; rebuilding it")
                self._close_connection()
        if self._conn is None:
            self._open()
        assert self._conn is not None
        return self._conn

    def _open(self) -> None:
        self.index_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = self._connect_and_prepare()
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                raise
            self._warn(f"memory index {self.index_path} was unreadable ({exc}); rebuilding it")
            self._close_connection()
            self._recreate_file(self._file_identity())
            self._conn = self._connect_and_prepare()
        info = os.stat(self.index_path)
        self._db_identity = (info.st_dev, info.st_ino)

    def _connect_and_prepare(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.index_path, timeout=10.0, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            wanted = self._index_meta()
            if self._read_meta(conn) != wanted:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if self._read_meta(conn) != wanted:
                        self._reset_schema(conn, wanted)
                    conn.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise
            conn.execute("SELECT count(*) FROM files").fetchone()
        except BaseException:
            conn.close()
            raise
        return conn

    def _index_meta(self) -> IndexMeta:
        return IndexMeta(chunk_chars=self.config.chunk_chars, chunk_overlap=self.config.chunk_overlap)

    @staticmethod
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

    @staticmethod
    def _reset_schema(conn: sqlite3.Connection, meta: IndexMeta) -> None:
        for table in ("chunks_fts", "vectors", "chunks", "files", "embed_cache", "meta"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute("INSERT INTO meta (key, value) VALUES ('index', ?)", (meta.model_dump_json(),))
        # A random start, so a process holding caches from before a rebuild never mistakes the
        # rebuilt index for the one it knew.
        start = int.from_bytes(os.urandom(6), "big")
        conn.execute("INSERT INTO meta (key, value) VALUES ('generation', ?)", (str(start),))

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            info = os.stat(self.index_path)
        except OSError:
            return None
        return info.st_dev, info.st_ino

    def _recreate_file(self, damaged: tuple[int, int] | None) -> None:
        """Delete the damaged index file `damaged` (by identity) so that a fresh one is created.

        Runs under a lock file; when another process has already replaced the file, its fresh
        index is kept rather than deleted again.
        """
        lock_path = self.index_path.with_name(self.index_path.name + ".lock")
        with open(lock_path, "a+b") as lock_file:
            if fcntl is not None:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            if damaged is not None and self._file_identity() != damaged:
                return
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(str(self.index_path) + suffix)

    def _guarded(self, action: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `action` on the index; if the index turns out damaged, rebuild it once and retry."""
        conn = self._connection()
        try:
            return action(conn)
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                raise
            self._warn(f"memory index {self.index_path} was damaged ({exc}); rebuilding it")
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            damaged = self._db_identity
            self._close_connection()
            self._recreate_file(damaged)
            return action(self._connection())

    # ------------------------------------------------------------------ sync

    def sync(self) -> SyncStats:
        """Bring the index in step with the files: add new, re-chunk changed, drop deleted ones.

        Unchanged files cost one stat each; a file is read only when its mtime or size moved (or
        it was modified within the last two seconds, when an mtime tick can hide an edit).
        """
        with self._lock:
            stats = self._guarded(self._sync_once)
            self.last_sync = stats
            return stats

    def _sync_once(self, conn: sqlite3.Connection, force: bool = False) -> SyncStats:
        """One sync; `force` drops the index and re-adds every file in the same transaction, so
        other processes see the old index or the new one, never an empty one in between."""
        disk = self._discover()
        generation = _generation(conn)
        if force:
            known: dict[str, tuple[Any, ...]] = {}
        elif self._known is not None and self._known[0] == generation:
            known = self._known[1]
        else:
            known = {
                row[0]: row
                for row in conn.execute(
                    "SELECT path, id, mtime_ns, size, hash, status, racy, note FROM files"
                )
            }
            self._known = (generation, known)
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
            self._fill_vectors(conn, changed=False)
            return stats
        prepared: list[_Prepared] = []
        for rel in todo:
            full, info = disk[rel]
            previous = known.get(rel)
            item = self._prepare(rel, full, info, None if force or previous is None else previous[4])
            stats.read += 1
            if item is None:
                if rel in known:
                    gone.append(rel)
                continue
            prepared.append(item)
        conn.execute("BEGIN IMMEDIATE")
        try:
            if force:
                self._reset_schema(conn, self._index_meta())
                self._known = None
                self._vectors = _VectorCache()
            changed = self._apply(conn, prepared, gone, stats) or force
            _bump_generation(conn)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self._fill_vectors(conn, changed=changed)
        return stats

    def _prepare(
        self, rel: str, full: str, listed: os.stat_result, known_hash: str | None
    ) -> _Prepared | None:
        """Read, hash and chunk one file (outside any transaction, so other processes keep going)."""
        try:
            with open(full, "rb") as handle:
                info = os.fstat(handle.fileno())
                data = handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            note = f"{rel} could not be read ({exc.strerror or exc}); skipped by the memory index"
            self._warn(note)
            return _Prepared(
                rel, listed.st_mtime_ns, listed.st_size, "unreadable", False, "skipped", [], note
            )
        digest = hashlib.sha256(data).hexdigest()
        racy = abs(time.time_ns() - info.st_mtime_ns) < _RACY_NS
        if known_hash == digest:
            return _Prepared(rel, info.st_mtime_ns, info.st_size, digest, racy, "", None)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            note = f"{rel} is not UTF-8 text (bad byte at offset {exc.start}); skipped by the memory index"
            self._warn(note)
            return _Prepared(rel, info.st_mtime_ns, info.st_size, digest, racy, "skipped", [], note)
        chunks = chunk_lines(_split_lines(text), self.config.chunk_chars, self.config.chunk_overlap)
        return _Prepared(rel, info.st_mtime_ns, info.st_size, digest, racy, "ok", chunks)

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
                self._drop_chunks(conn, row[0])
                conn.execute("DELETE FROM files WHERE id = ?", (row[0],))
                stats.deleted += 1
                changed = True
        for item in prepared:
            if item.status == "skipped":
                stats.skipped += 1
            row = conn.execute("SELECT id, hash, status FROM files WHERE path = ?", (item.rel,)).fetchone()
            if row is not None and row[1] == item.hash and (item.chunks is None or row[2] == item.status):
                conn.execute(
                    "UPDATE files SET mtime_ns = ?, size = ?, racy = ? WHERE id = ?",
                    (item.mtime_ns, item.size, int(item.racy), row[0]),
                )
                continue
            if item.chunks is None:
                continue  # the row changed under us; the next sync compares again
            if row is None:
                cursor = conn.execute(
                    "INSERT INTO files (path, mtime_ns, size, hash, day, status, racy, note) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        item.rel,
                        item.mtime_ns,
                        item.size,
                        item.hash,
                        _day_of(item.rel),
                        item.status,
                        int(item.racy),
                        item.note,
                    ),
                )
                file_id = int(cursor.lastrowid or 0)
                stats.added += 1
            else:
                file_id = row[0]
                self._drop_chunks(conn, file_id)
                conn.execute(
                    "UPDATE files SET mtime_ns = ?, size = ?, hash = ?, status = ?, racy = ?, note = ? "
                    "WHERE id = ?",
                    (item.mtime_ns, item.size, item.hash, item.status, int(item.racy), item.note, file_id),
                )
                stats.changed += 1
            for chunk in item.chunks:
                cursor = conn.execute(
                    "INSERT INTO chunks (file_id, start_line, end_line, text, tags, hash) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        file_id,
                        chunk.start_line,
                        chunk.end_line,
                        chunk.text,
                        " ".join(_tags_of(chunk.text)),
                        hashlib.sha256(chunk.text.encode("utf-8")).hexdigest(),
                    ),
                )
                conn.execute(
                    "INSERT INTO chunks_fts (rowid, body) VALUES (?, ?)",
                    (cursor.lastrowid, index_tokens(chunk.text)),
                )
            stats.chunks += len(item.chunks)
            changed = True
        return changed

    @staticmethod
    def _drop_chunks(conn: sqlite3.Connection, file_id: int) -> None:
        ids = "(SELECT id FROM chunks WHERE file_id = ?)"
        conn.execute(f"DELETE FROM chunks_fts WHERE rowid IN {ids}", (file_id,))
        conn.execute(f"DELETE FROM vectors WHERE chunk_id IN {ids}", (file_id,))
        conn.execute("DELETE FROM chunks WHERE file_id = ?", (file_id,))

    def reindex(self) -> ReindexStats:
        """Drop the index and rebuild it from every memory file; returns counts and seconds."""
        started = time.perf_counter()
        with self._lock:
            stats = self._guarded(lambda conn: self._sync_once(conn, force=True))
            self.last_sync = stats
            chunks = self._guarded(_count_chunks)
        return ReindexStats(
            files=stats.files - stats.skipped,
            chunks=chunks,
            skipped=stats.skipped,
            seconds=time.perf_counter() - started,
        )

    # ------------------------------------------------------------------ vectors

    def _fill_vectors(self, conn: sqlite3.Connection, *, changed: bool) -> None:
        """Embed chunks that have no vector for this embedder yet (cached by chunk hash)."""
        if self.embedder is None or (not changed and self._vectors_checked):
            return
        self._vectors_checked = True
        missing = conn.execute(
            "SELECT c.id, c.text, c.hash FROM chunks c LEFT JOIN vectors v "
            "ON v.chunk_id = c.id AND v.model = ? WHERE v.chunk_id IS NULL",
            (self._embedder_name,),
        ).fetchall()
        if not missing:
            return
        rows: list[tuple[int, bytes, str]] = []
        to_embed: list[tuple[int, str, str]] = []
        for chunk_id, text, digest in missing:
            key = f"{self._embedder_name}:{digest}"
            cached = conn.execute("SELECT vec FROM embed_cache WHERE key = ?", (key,)).fetchone()
            if cached is not None:
                rows.append((chunk_id, cached[0], key))
            else:
                to_embed.append((chunk_id, text, key))
        fresh: list[tuple[int, bytes, str]] = []
        try:
            for begin in range(0, len(to_embed), _EMBED_BATCH):
                batch = to_embed[begin : begin + _EMBED_BATCH]
                vectors = self.embedder.embed([text for _, text, _ in batch])
                if len(vectors) != len(batch):
                    raise ValueError(f"returned {len(vectors)} vectors for {len(batch)} texts")
                for (chunk_id, _, key), vector in zip(batch, vectors, strict=True):
                    fresh.append((chunk_id, _pack(vector)[0], key))
        except Exception as exc:
            self._warn(f"embedder {self._embedder_name} failed ({exc}); memory search uses keywords only")
            self._vectors_checked = False
        if not rows and not fresh:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for chunk_id, blob, _key in rows + fresh:
                conn.execute(
                    "INSERT OR REPLACE INTO vectors (chunk_id, model, vec) "
                    "SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM chunks WHERE id = ?)",
                    (chunk_id, self._embedder_name, blob, chunk_id),
                )
            conn.executemany(
                "INSERT OR REPLACE INTO embed_cache (key, vec) VALUES (?, ?)",
                [(key, blob) for _, blob, key in fresh],
            )
            _bump_generation(conn)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _vector_candidates(self, conn: sqlite3.Connection, query: str, count: int) -> dict[int, float]:
        """Top `count` chunks by cosine similarity to the query (a linear pass over cached vectors)."""
        assert self.embedder is not None
        generation = _generation(conn)
        if self._vectors.generation != generation:
            cache = _VectorCache(generation=generation)
            for chunk_id, blob in conn.execute(
                "SELECT chunk_id, vec FROM vectors WHERE model = ?", (self._embedder_name,)
            ):
                cache.ids.append(chunk_id)
                cache.vectors.append(_unpack(blob))
            self._vectors = cache
        if not self._vectors.ids:
            return {}
        try:
            query_vector = _unpack(_pack(self.embedder.embed([query])[0])[0])
        except Exception as exc:
            self._warn(f"embedder {self._embedder_name} failed on the query ({exc}); keywords only")
            return {}
        scored = (
            (sum(map(operator.mul, query_vector, vector)), chunk_id)
            for chunk_id, vector in zip(self._vectors.ids, self._vectors.vectors, strict=True)
            if len(vector) == len(query_vector)
        )
        return {chunk_id: score for score, chunk_id in heapq.nlargest(count, scored)}

    # ------------------------------------------------------------------ search

    def search(self, query: str, limit: int | None = None, min_score: float = 0.0) -> list[MemoryHit]:
        """Best matching chunks of the memory files, best first (the index is synced first).

        The AND of all query terms is tried first; when it finds nothing, any single term will do.
        `limit` defaults to 6; hits scoring below `min_score` (0..1) are dropped.
        """
        limit = self.config.default_limit if limit is None else limit
        if limit < 1:
            raise ValueError(f"limit must be 1 or more (got {limit})")
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be between 0 and 1 (got {min_score})")
        terms = _query_terms(query)
        with self._lock:
            self.sync()
            if not terms and self.embedder is None:
                return []
            return self._guarded(
                lambda conn: _in_snapshot(conn, lambda: self._search(conn, query, terms, limit, min_score))
            )

    def _search(
        self, conn: sqlite3.Connection, query: str, terms: list[_Term], limit: int, min_score: float
    ) -> list[MemoryHit]:
        wanted = max(self.config.candidates, limit * 10)
        candidates: dict[int, _Candidate] = {}
        if terms:
            rows = self._fts(conn, " AND ".join(t.fts for t in terms), wanted)
            if rows:
                for cand in rows:
                    cand.coverage = 1.0
                    candidates[cand.chunk_id] = cand
            elif len(terms) > 1:
                present = [t for t in terms if self._occurs(conn, t)]
                if present:
                    rows = self._fts(conn, " OR ".join(t.fts for t in present), wanted)
                    self._coverage(conn, rows, present, len(terms))
                    candidates = {cand.chunk_id: cand for cand in rows}
        if self.embedder is not None and query.strip():
            similar = self._vector_candidates(conn, query, wanted)
            missing = [chunk_id for chunk_id in similar if chunk_id not in candidates]
            for cand in self._rows_by_id(conn, missing):
                candidates[cand.chunk_id] = cand
            for chunk_id, cosine in similar.items():
                if chunk_id in candidates:
                    candidates[chunk_id].cosine = max(0.0, cosine)
        if not candidates:
            return []
        return self._rank(conn, list(candidates.values()), terms, limit, min_score)

    _SELECT = (
        "SELECT c.id, f.path, f.day, c.start_line, c.end_line, c.tags{extra} "
        "FROM {source} JOIN chunks c ON c.id = m.rowid JOIN files f ON f.id = c.file_id"
    )

    def _fts(self, conn: sqlite3.Connection, expression: str, wanted: int) -> list[_Candidate]:
        sql = self._SELECT.format(
            extra=", m.rank",
            source="(SELECT rowid, rank FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rank LIMIT ?) m",
        )
        return [
            _Candidate(row[0], row[1], row[2], row[3], row[4], row[5].split(), bm25=max(0.0, -row[6]))
            for row in conn.execute(sql, (expression, wanted))
        ]

    def _rows_by_id(self, conn: sqlite3.Connection, ids: list[int]) -> list[_Candidate]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        sql = self._SELECT.format(
            extra="", source=f"(SELECT id AS rowid FROM chunks WHERE id IN ({marks})) m"
        )
        return [
            _Candidate(row[0], row[1], row[2], row[3], row[4], row[5].split())
            for row in conn.execute(sql, ids)
        ]

    @staticmethod
    def _occurs(conn: sqlite3.Connection, term: _Term) -> bool:
        return (
            conn.execute("SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT 1", (term.fts,)).fetchone()
            is not None
        )

    @staticmethod
    def _coverage(conn: sqlite3.Connection, rows: list[_Candidate], terms: list[_Term], total: int) -> None:
        """Share of all `total` query terms each OR-candidate contains, asked of FTS5 so stemming agrees."""
        if not rows:
            return
        ids = [cand.chunk_id for cand in rows]
        marks = ",".join("?" * len(ids))
        hits: dict[int, int] = dict.fromkeys(ids, 0)
        for term in terms:
            for (rowid,) in conn.execute(
                f"SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? AND rowid IN ({marks})",
                (term.fts, *ids),
            ):
                hits[rowid] += 1
        for cand in rows:
            cand.coverage = hits[cand.chunk_id] / total

    def _rank(
        self,
        conn: sqlite3.Connection,
        candidates: list[_Candidate],
        terms: list[_Term],
        limit: int,
        min_score: float,
    ) -> list[MemoryHit]:
        cfg = self.config
        today = self.now().date()
        best = max((cand.bm25 for cand in candidates), default=0.0)
        raw_terms = {term.raw for term in terms}
        scored: list[tuple[float, int, _Candidate]] = []
        for cand in candidates:
            strength = cand.bm25 / best if best > 0 else 1.0
            keyword = cand.coverage * (0.6 + 0.4 * strength) if cand.coverage else 0.0
            if self.embedder is not None:
                relevance = cfg.vector_weight * cand.cosine + (1 - cfg.vector_weight) * keyword
            else:
                relevance = keyword
            if relevance <= 0.0:
                continue  # a vector neighbour pointing away from the query is no match
            if cand.day is None:
                recency, day_rank = 1.0, date.max.toordinal()
            else:
                day = date.fromisoformat(cand.day)
                age = max(0, (today - day).days)
                recency, day_rank = 0.5 ** (age / cfg.half_life_days), day.toordinal()
            tag_score = (len(raw_terms.intersection(cand.tags)) / len(raw_terms)) if raw_terms else 0.0
            score = (
                (1 - cfg.recency_weight - cfg.tag_weight) * relevance
                + cfg.recency_weight * recency
                + cfg.tag_weight * min(1.0, tag_score)
            )
            score = min(1.0, max(0.0, score))
            if score >= min_score:
                scored.append((score, day_rank, cand))
        scored.sort(key=lambda item: (-item[0], -item[1], item[2].path, item[2].start_line))
        top = scored[:limit]
        ids = [cand.chunk_id for _, _, cand in top]
        marks = ",".join("?" * len(ids))
        texts = dict(conn.execute(f"SELECT id, text FROM chunks WHERE id IN ({marks})", ids).fetchall())
        return [
            self._hit(replace(cand, text=texts.get(cand.chunk_id, "")), score, terms)
            for score, _, cand in top
        ]

    def _hit(self, cand: _Candidate, score: float, terms: list[_Term]) -> MemoryHit:
        start, end, snippet = _snippet(cand, terms, self.config.snippet_chars)
        return MemoryHit(
            path=cand.path, start_line=start, end_line=end, score=round(score, 4), snippet=snippet
        )

    def stats(self) -> dict[str, int]:
        """Files and chunks currently in the index (after a sync)."""
        with self._lock:
            self.sync()
            return self._guarded(
                lambda conn: {
                    "files": int(
                        conn.execute("SELECT count(*) FROM files WHERE status = 'ok'").fetchone()[0]
                    ),
                    "chunks": _count_chunks(conn),
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


def _generation(conn: sqlite3.Connection) -> int:
    """Counter bumped by every committed index change, by any process: a cheap staleness check."""
    return int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])


def _bump_generation(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")


def _count_chunks(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM chunks").fetchone()[0])


def _snippet(cand: _Candidate, terms: list[_Term], max_chars: int) -> tuple[int, int, str]:
    """The chunk's lines around its best line, at most `max_chars`, with their exact line range.

    The best line is the one matching the most query terms (the first of equals); a line of its
    own longer than `max_chars` is cut around the match.
    """
    text = cand.text
    if len(text) <= max_chars:
        return cand.start_line, cand.end_line, text
    lines = text.split("\n")
    best, best_count = 0, 0
    for number, line in enumerate(lines):
        count = _terms_in_line(line, terms)
        if count > best_count:
            best, best_count = number, count
    first = best
    if first > 0 and len(lines[first - 1]) + len(lines[first]) + 1 <= max_chars:
        first -= 1
    picked: list[str] = []
    size = 0
    index = first
    while index < len(lines) and size + len(lines[index]) + (1 if picked else 0) <= max_chars:
        size += len(lines[index]) + (1 if picked else 0)
        picked.append(lines[index])
        index += 1
    if not picked:
        line = lines[first]
        folded = line.casefold()
        offsets = [folded.find(term.raw) for term in terms if term.raw and term.raw in folded]
        position = min(offsets, default=0)
        begin = max(0, min(position - max_chars // 4, len(line) - max_chars))
        picked = [line[begin : begin + max_chars]]
        index = first + 1
    return cand.start_line + first, cand.start_line + index - 1, "\n".join(picked)


def _terms_in_line(line: str, terms: list[_Term]) -> int:
    """How many query terms a line contains: whole words (or a shared stem of 5+ letters) for
    words, substrings for CJK runs and punctuated phrases."""
    folded = line.casefold()
    words: set[str] | None = None
    count = 0
    for term in terms:
        if term.kind != "word":
            count += term.raw in folded
            continue
        stem = term.raw[: max(5, len(term.raw) - 3)] if len(term.raw) >= 5 else term.raw
        if stem not in folded:
            continue
        if words is None:
            words = {match.group("word") for match in _TOKEN_RE.finditer(folded) if match.group("word")}
        count += term.raw in words or (len(term.raw) >= 5 and any(word.startswith(stem) for word in words))
    return count


def _locked_append(target: Path, header: str, entry: str) -> tuple[int, bool]:
    """Append `entry` as new line(s) under an exclusive lock; returns (line number, created)."""
    with open(target, "a+b") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        handle.seek(0)
        existing = handle.read()
        created = not existing
        prefix = b""
        if created:
            prefix = header.encode("utf-8")
        elif not existing.endswith(b"\n"):
            prefix = b"\n"
        before = existing + prefix
        line = before.count(b"\n") + 1
        handle.write(prefix + entry.encode("utf-8") + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    return line, created
