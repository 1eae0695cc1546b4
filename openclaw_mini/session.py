"""Sessions: `SessionKey`, the JSONL `SessionStore`, and `SessionLanes` (one serial lane per key).

A transcript is `<workspace>/.openclaw-mini/sessions/<agentId>/<sessionId>.jsonl`: a header line,
then one entry a line, only ever appended. Appends take an OS file lock (`flock`) for the duration
of one write, so two processes never interleave lines, and a lock dies with its process: there is
no stale lock to reclaim. Loading is one linear pass that skips (and reports) corrupt lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import unicodedata
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import ValidationError

from .errors import SessionBusyError, SessionKeyError
from .transcript import (
    ENTRY_ADAPTER,
    ENTRY_LIST_ADAPTER,
    AnyEntry,
    CompactionEntry,
    HistoryBuilder,
    MessageEntry,
    SessionHeader,
    check_blocks,
    locate_compaction,
)

try:  # POSIX file locks; elsewhere appends are not locked across processes.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LiveSession",
    "LoadedSession",
    "SessionCache",
    "SessionInfo",
    "SessionKey",
    "SessionKeyError",
    "SessionLanes",
    "SessionStore",
]

log = logging.getLogger(__name__)

_AGENT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_SEGMENT = re.compile(r"^[a-z0-9_.@+\-]{1,128}$")


@dataclass(frozen=True)
class SessionKey:
    """`agent:<agentId>:<rest>`; `rest` is one or more `:`-separated segments."""

    agent_id: str
    rest: str

    @classmethod
    def parse(cls, value: str | SessionKey, default_agent_id: str = "main") -> SessionKey:
        """Parse a full key or complete a bare session id with the agent's id.

        Refuses path separators, `..`, control characters and anything else that could turn a
        session id into a path outside the sessions folder.
        """
        if isinstance(value, SessionKey):
            return value
        raw = str(value)
        if any(unicodedata.category(ch).startswith("C") for ch in raw):
            raise SessionKeyError(f"Session id {raw!r} contains control characters.")
        if not raw.isascii():  # lower() maps U+212A KELVIN SIGN to "k": "\u212aate" would open "kate"
            raise SessionKeyError(f"Session id {raw!r} must be ASCII (letters, digits and . _ - @ +).")
        if "/" in raw or "\\" in raw:
            raise SessionKeyError(f"Session id {raw!r} must not contain path separators.")
        text = raw.strip().lower()
        if not text:
            raise SessionKeyError("Session id is empty.")
        if text.startswith("agent:"):
            parts = text.split(":", 2)
            if len(parts) < 3 or not parts[2]:
                raise SessionKeyError(f"Session key {raw!r} must look like agent:<agentId>:<sessionId>.")
            agent_id, rest = parts[1], parts[2]
        else:
            agent_id, rest = default_agent_id, text
        if not _AGENT_ID.match(agent_id):
            raise SessionKeyError(f"Agent id {agent_id!r} in session key {raw!r} is not valid.")
        for segment in rest.split(":"):
            if segment in ("", ".", "..") or ".." in segment or not _SEGMENT.match(segment):
                raise SessionKeyError(
                    f"Session id {raw!r} is not valid: use letters, digits and . _ - @ + "
                    "(':' separates parts); no '..'."
                )
        return cls(agent_id, rest)

    def __str__(self) -> str:
        return f"agent:{self.agent_id}:{self.rest}"

    @property
    def is_subagent(self) -> bool:
        return self.rest.startswith("subagent:")

    @property
    def file_stem(self) -> str:
        # ':' is not allowed in Windows file names; '%' never occurs in a valid id.
        return self.rest.replace(":", "%3a")


@dataclass
class LoadedSession:
    key: SessionKey
    path: Path
    header: SessionHeader | None
    entries: list[AnyEntry]
    warnings: list[str] = field(default_factory=list)
    parsed_bytes: int = 0
    """Bytes of the lines parsed (the active part only, with `active_only`)."""


@dataclass
class SessionInfo:
    key: str
    path: Path
    last_activity: datetime
    size_bytes: int


class SessionStore:
    """JSONL transcripts under `<state_dir>/sessions/<agentId>/`."""

    def __init__(self, state_dir: Path, *, workspace: Path | None = None) -> None:
        self.root = Path(state_dir) / "sessions"
        self.workspace = workspace

    def path_for(self, key: SessionKey) -> Path:
        return self.root / key.agent_id / f"{key.file_stem}.jsonl"

    def lock_path_for(self, key: str | SessionKey) -> Path:
        """The file whose OS lock a turn holds across processes (beside the transcript)."""
        parsed = SessionKey.parse(key)
        return self.root / parsed.agent_id / f"{parsed.file_stem}.lock"

    # -- writing ---------------------------------------------------------------------------

    def append_sync(self, key: SessionKey, entries: Iterable[AnyEntry]) -> tuple[int, int]:
        """Append whole lines under an exclusive lock; writes the header first for a new file.

        A torn last line left by a crash is terminated first, so the new line is never glued to it.
        Returns the file's size before and after the write, so a caller that caches the session
        notices when another process wrote in between.
        """
        lines = [entry.model_dump_json(exclude_none=True) + "\n" for entry in entries]
        path = self.path_for(key)
        if not lines:
            return _size(path), _size(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                size = os.fstat(fd).st_size
                prefix = ""
                if size == 0:
                    header = SessionHeader(id=key.rest, key=str(key), cwd=str(self.workspace or ""))
                    prefix = header.model_dump_json() + "\n"
                else:
                    last = os.pread(fd, 1, size - 1)
                    if last != b"\n":
                        prefix = "\n"
                data = (prefix + "".join(lines)).encode("utf-8")
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                return size, os.fstat(fd).st_size
            finally:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    async def append(self, key: SessionKey, entries: Iterable[AnyEntry]) -> tuple[int, int]:
        return await asyncio.to_thread(self.append_sync, key, list(entries))

    # -- reading ---------------------------------------------------------------------------

    def load_sync(
        self, key: SessionKey, *, active_only: bool = False, tail_bytes: int | None = None
    ) -> LoadedSession:
        """Read a transcript in one pass; corrupt or torn lines are skipped and reported.

        `active_only` skips what the latest compaction summarised: only its summary and the
        entries from its first kept entry on are parsed (what the model sees). `tail_bytes`
        bounds that further for a session that grew far past any context window without being
        compacted: only about the last `tail_bytes` are parsed, starting at a user turn. Resuming
        then costs what the model can see, not what the file holds; the file keeps everything.
        """
        path = self.path_for(key)
        loaded = LoadedSession(key=key, path=path, header=None, entries=[])
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return loaded
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        torn_candidate = not data.endswith(b"\n") and bool(lines)
        first = 0
        if lines and lines[0].startswith(b'{"type":"session"'):
            try:
                loaded.header = SessionHeader.model_validate_json(lines[0])
                first = 1
            except ValidationError:
                pass
        if active_only:
            start, compaction = _active_range(lines)
            first = max(first, start)
            if tail_bytes is not None:
                tail = _tail_start(lines, first, tail_bytes)
                if tail > first:
                    first = tail
                    if compaction is not None and compaction[0] < first:
                        loaded.entries.append(compaction[1])  # the summary still leads the history
        body = lines[first:]
        loaded.parsed_bytes = sum(len(line) + 1 for line in body)
        try:
            # Fast path: one pydantic-core call parses and validates the whole file.
            parsed = ENTRY_LIST_ADAPTER.validate_json(b"[" + b",".join(body) + b"]")
            _repair_blocks(path, enumerate(parsed, start=first + 1), loaded.warnings)
            loaded.entries.extend(parsed)
            return loaded
        except ValueError:  # a corrupt or torn line somewhere: go line by line
            pass
        validate = ENTRY_ADAPTER.validate_json
        numbered: list[tuple[int, AnyEntry]] = []
        for index, raw in enumerate(body):
            number = first + index + 1
            if not raw.strip():
                continue
            try:
                if raw.startswith(b'{"type":"session"'):
                    if loaded.header is None:
                        loaded.header = SessionHeader.model_validate_json(raw)
                    continue
                entry = validate(raw)
                numbered.append((number, entry))
                loaded.entries.append(entry)
            except ValueError as exc:
                torn = torn_candidate and index == len(body) - 1
                what = "torn last line (an interrupted write)" if torn else "corrupt line"
                detail = str(exc).splitlines()[0][:200]
                message = f"{path}:{number}: skipped {what}: {detail}"
                loaded.warnings.append(message)
                log.warning(message)
        _repair_blocks(path, numbered, loaded.warnings)
        return loaded

    async def load(
        self, key: SessionKey, *, active_only: bool = False, tail_bytes: int | None = None
    ) -> LoadedSession:
        return await asyncio.to_thread(
            functools.partial(self.load_sync, key, active_only=active_only, tail_bytes=tail_bytes)
        )

    def list_sync(self, agent_id: str | None = None) -> list[SessionInfo]:
        """Sessions with their last activity (file mtime), newest first."""
        infos: list[SessionInfo] = []
        if not self.root.is_dir():
            return infos
        folders = [self.root / agent_id] if agent_id else sorted(p for p in self.root.iterdir() if p.is_dir())
        for folder in folders:
            if not folder.is_dir():
                continue
            for path in folder.glob("*.jsonl"):
                stat = path.stat()
                rest = path.stem.replace("%3a", ":")
                infos.append(
                    SessionInfo(
                        key=f"agent:{folder.name}:{rest}",
                        path=path,
                        last_activity=datetime.fromtimestamp(stat.st_mtime, UTC),
                        size_bytes=stat.st_size,
                    )
                )
        infos.sort(key=lambda info: info.last_activity, reverse=True)
        return infos

    async def list(self, agent_id: str | None = None) -> list[SessionInfo]:
        return await asyncio.to_thread(self.list_sync, agent_id)

    def size_sync(self, key: SessionKey) -> int:
        """The transcript's size in bytes (0 when there is none yet)."""
        return _size(self.path_for(key))

    def delete_sync(self, key: SessionKey) -> bool:
        path = self.path_for(key)
        with contextlib.suppress(FileNotFoundError):
            self.lock_path_for(key).unlink()
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True


def _repair_blocks(path: Path, numbered: Iterable[tuple[int, AnyEntry]], warnings: list[str]) -> None:
    """Drop the content blocks the Messages API would refuse (a text block without text, a tool
    call without an id, ...): sent back, one such block fails every later request of the session.
    Each repair is reported with the file and line; the file itself is not changed."""
    for number, entry in numbered:
        if not isinstance(entry, MessageEntry):
            continue
        kept, problems = check_blocks(entry.role, entry.content)
        if problems:
            entry.content = kept
            message = f"{path}:{number}: dropped what the API would refuse: {'; '.join(problems)}"
            warnings.append(message)
            log.warning(message)


def _active_range(lines: list[bytes]) -> tuple[int, tuple[int, CompactionEntry] | None]:
    """Where the model's view starts in raw lines: the latest compaction's first kept line (the
    compaction line itself when it kept nothing; 0 when its kept line is missing, so nothing is
    lost), and that compaction (line index and entry).

    A byte search finds candidates (JSON escapes quotes inside strings, so message text cannot
    fake the marker); each candidate is validated before it is trusted.
    """

    def compaction_at(index: int) -> CompactionEntry | None:
        if b'"type":"compaction"' not in lines[index]:
            return None
        try:
            entry = ENTRY_ADAPTER.validate_json(lines[index])
        except ValueError:
            return None
        return entry if isinstance(entry, CompactionEntry) else None

    found = locate_compaction(
        len(lines),
        compaction_at,
        lambda i, entry_id: lines[i].startswith(b'{"id":"' + entry_id.encode() + b'"'),
    )
    if found is None:
        return 0, None
    index, kept, entry = found
    if kept is not None:
        return kept, (index, entry)
    return (index if entry.first_kept_id is None else 0), (index, entry)


_USER_TURN = b'"type":"message","role":"user"'


def _tail_start(lines: list[bytes], first: int, tail_bytes: int) -> int:
    """The first user-turn line within the last `tail_bytes` of `lines[first:]` (or `first`)."""
    total = 0
    index = len(lines)
    while index > first and total < tail_bytes:
        index -= 1
        total += len(lines[index]) + 1
    if index <= first:
        return first
    for candidate in range(index, len(lines)):
        line = lines[candidate]
        if _USER_TURN in line and b'"tool_result"' not in line:
            return candidate
    return first


def _open_lock_file(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


async def _lock_file(path: Path, key: str, wait_seconds: float) -> int:
    """Take the exclusive lock on `path`, polling (the loop never blocks) for up to `wait_seconds`."""
    fd = await asyncio.to_thread(_open_lock_file, path)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    delay = 0.005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if loop.time() >= deadline:
                os.close(fd)
                raise SessionBusyError(
                    f"Session {key} is busy: another process has been running a turn on it for "
                    f"{wait_seconds:g} s (lock {path}). Try again when it has finished."
                ) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        except BaseException:
            os.close(fd)
            raise


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class LiveSession:
    """A session held in memory between runs: its entries, the API history built from them, and
    an ordered background writer, so the loop never waits on the disk between steps.

    `append(entry)` is the one write path: it links the entry to the previous one, adds it to the
    entries, folds it into the API history (`HistoryBuilder`, the same code a reload uses) and
    queues it for the disk.
    """

    def __init__(
        self,
        store: SessionStore,
        key: SessionKey,
        entries: list[AnyEntry] | None = None,
        *,
        file_size: int = 0,
        held_bytes: int = 0,
        warnings: list[str] | None = None,
    ) -> None:
        self.store = store
        self.key = key
        self.entries: list[AnyEntry] = entries if entries is not None else []
        self.file_size = file_size
        """The transcript's size after our last write; another value on disk means another writer."""
        self.held_bytes = held_bytes
        """Transcript bytes this session holds in memory (what a bounded cache weighs)."""
        self.warnings: list[str] = warnings if warnings is not None else []
        self._history = HistoryBuilder.from_entries(self.entries)
        self._pending: list[AnyEntry] = []
        self._writer: asyncio.Task[None] | None = None
        self._write_error: BaseException | None = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The API history (the same list object until a compaction replaces it)."""
        return self._history.view()

    @property
    def last_id(self) -> str | None:
        return self.entries[-1].id if self.entries else None

    def append(self, entry: AnyEntry) -> None:
        """Add an entry to the history now and queue it for the disk (one writer keeps the order)."""
        entry.parent_id = self.last_id
        self.entries.append(entry)
        if isinstance(entry, CompactionEntry):
            self._history = HistoryBuilder.from_entries(self.entries)
        else:
            self._history.add(entry)
        self._pending.append(entry)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                before, after = await self.store.append(self.key, batch)
            except Exception as exc:  # raised by flush(), at the end of the run
                self._write_error = exc
                self._pending[:0] = batch
                return
            self.held_bytes += after - before
            # Another process wrote in between: keep going, but reload on the next run.
            self.file_size = after if before == self.file_size else -1

    async def flush(self) -> None:
        """Wait until every appended entry is on disk (shielded: a cancelled run still flushes)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)
        if self._write_error is not None:
            error, self._write_error = self._write_error, None
            raise error


V = TypeVar("V")


class SessionCache(Generic[V]):
    """Sessions kept in memory between runs, bounded by count and by transcript bytes.

    Least recently used first out; a value that `pinned` says is in use (a running turn, an
    unflushed writer) is never evicted, so the bounds can be exceeded only while that many runs
    are in flight. An evicted session is simply loaded from disk again on its next run.
    """

    def __init__(
        self, *, max_sessions: int, max_bytes: int, weigh: Callable[[V], int], pinned: Callable[[str], bool]
    ) -> None:
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self._weigh = weigh
        self._pinned = pinned
        self._items: OrderedDict[str, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def get(self, key: str) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        self.trim()

    def pop(self, key: str) -> V | None:
        return self._items.pop(key, None)

    def held_bytes(self) -> int:
        return sum(self._weigh(value) for value in self._items.values())

    def trim(self) -> None:
        """Evict least recently used, unpinned sessions until both bounds hold again."""
        total = self.held_bytes() if self.max_bytes else 0
        for key in list(self._items):
            if len(self._items) <= self.max_sessions and total <= self.max_bytes:
                return
            if self._pinned(key):
                continue
            total -= self._weigh(self._items.pop(key))


class SessionLanes:
    """One serial lane per session key: runs on one key queue, different keys run concurrently.

    With `lock_path`, a lane is also held across processes for its whole length, by an OS file
    lock on a file beside the transcript: two processes never interleave turns of one session. A
    holder that dies releases it with its process (no stale lock); a waiter gives up after
    `lock_timeout` seconds with `SessionBusyError`.
    """

    def __init__(
        self, lock_path: Callable[[str], Path] | None = None, *, lock_timeout: float = 600.0
    ) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}
        self._lock_path = lock_path
        self._lock_timeout = lock_timeout

    @contextlib.asynccontextmanager
    async def lane(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                if self._lock_path is None or fcntl is None:
                    yield
                    return
                fd = await _lock_file(self._lock_path(key), key, self._lock_timeout)
                try:
                    yield
                finally:
                    os.close(fd)  # releases the lock
        finally:
            self._users[key] -= 1
            if self._users[key] == 0:
                del self._users[key]
                del self._locks[key]

    def busy(self, key: str) -> bool:
        lock = self._locks.get(key)
        return lock is not None and lock.locked()
