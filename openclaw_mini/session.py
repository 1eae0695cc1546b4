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
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import SessionKeyError
from .transcript import (
    ENTRY_ADAPTER,
    ENTRY_LIST_ADAPTER,
    CompactionEntry,
    CustomEntry,
    MessageEntry,
    SessionHeader,
)

try:  # POSIX file locks; elsewhere appends are not locked across processes.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LiveSession",
    "LoadedSession",
    "SessionInfo",
    "SessionKey",
    "SessionKeyError",
    "SessionLanes",
    "SessionStore",
]

log = logging.getLogger(__name__)

AnyEntry = MessageEntry | CompactionEntry | CustomEntry
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
        try:
            # Fast path: one pydantic-core call parses and validates the whole file.
            loaded.entries.extend(ENTRY_LIST_ADAPTER.validate_json(b"[" + b",".join(body) + b"]"))
            return loaded
        except ValueError:  # a corrupt or torn line somewhere: go line by line
            pass
        validate = ENTRY_ADAPTER.validate_json
        for index, raw in enumerate(body):
            number = first + index + 1
            if not raw.strip():
                continue
            try:
                if raw.startswith(b'{"type":"session"'):
                    if loaded.header is None:
                        loaded.header = SessionHeader.model_validate_json(raw)
                    continue
                loaded.entries.append(validate(raw))
            except ValueError as exc:
                torn = torn_candidate and index == len(body) - 1
                what = "torn last line (an interrupted write)" if torn else "corrupt line"
                detail = str(exc).splitlines()[0][:200]
                message = f"{path}:{number}: skipped {what}: {detail}"
                loaded.warnings.append(message)
                log.warning(message)
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
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True


def _active_range(lines: list[bytes]) -> tuple[int, tuple[int, CompactionEntry] | None]:
    """Where the model's view starts: the latest compaction's first kept line (0 without one),
    and that compaction (line index and entry).

    A byte search finds candidates (JSON escapes quotes inside strings, so message text cannot
    fake the marker); each candidate is validated before it is trusted.
    """
    for index in range(len(lines) - 1, -1, -1):
        if b'"type":"compaction"' not in lines[index]:
            continue
        try:
            entry = ENTRY_ADAPTER.validate_json(lines[index])
        except ValueError:
            continue
        if not isinstance(entry, CompactionEntry):
            continue
        if entry.first_kept_id is None:
            return index, (index, entry)
        needle = b'{"id":"' + entry.first_kept_id.encode() + b'"'
        for kept in range(index - 1, -1, -1):
            if lines[kept].startswith(needle):
                return kept, (index, entry)
        return 0, (index, entry)  # the kept entry is missing: read everything rather than lose history
    return 0, None


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


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@dataclass
class LiveSession:
    """A session held in memory between runs: its entries, the API history built from them once,
    and an ordered background writer, so the loop never waits on the disk between steps."""

    store: SessionStore
    key: SessionKey
    entries: list[AnyEntry]
    messages: list[dict[str, Any]]
    file_size: int = 0
    """The transcript's size after our last write; another value on disk means another writer."""
    last_context_tokens: int | None = None
    """Tokens the API reported for the last request (and reply) ..."""
    messages_at_usage: int = 0
    """... and how many leading messages that report covered."""
    flushed_this_cycle: bool = False
    warnings: list[str] = field(default_factory=list)
    _pending: list[AnyEntry] = field(default_factory=list)
    _writer: asyncio.Task[None] | None = None
    _write_error: BaseException | None = None
    _sized: list[tuple[dict[str, Any], int]] = field(default_factory=list)
    _sized_chars: int = 0

    @property
    def last_id(self) -> str | None:
        return self.entries[-1].id if self.entries else None

    def record(self, entry: AnyEntry) -> None:
        """Add an entry now and queue it for the disk (a single writer keeps the order)."""
        entry.parent_id = self.last_id
        self.entries.append(entry)
        self._pending.append(entry)
        if isinstance(entry, MessageEntry) and entry.role == "assistant" and entry.usage:
            usage = entry.usage
            self.last_context_tokens = (
                usage.get("input_tokens", 0)
                + usage.get("cache_creation_input_tokens", 0)
                + usage.get("cache_read_input_tokens", 0)
                + usage.get("output_tokens", 0)
            )
            self.messages_at_usage = len(self.messages)  # the loop appends before it records
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
            # Another process wrote in between: keep going, but reload on the next run.
            self.file_size = after if before == self.file_size else -1

    async def flush(self) -> None:
        """Wait until every recorded entry is on disk (shielded: a cancelled run still flushes)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)
        if self._write_error is not None:
            error, self._write_error = self._write_error, None
            raise error

    def append_user(self, content: list[dict[str, Any]]) -> None:
        """Add a user message to the API history, merging into a trailing user message."""
        if self.messages and self.messages[-1]["role"] == "user":
            last = self.messages[-1]
            self.messages[-1] = {"role": "user", "content": [*last["content"], *content]}
        else:
            self.messages.append({"role": "user", "content": content})

    def history_chars(self) -> int:
        """Weighted chars of `messages` as pruning counts them, measuring only what is new.

        The loop only appends; a merge replaces the last message and compaction the whole list,
        which the identity checks below notice (then everything is measured again, once).
        """
        from .context.tokens import MESSAGE_OVERHEAD_CHARS, content_chars

        messages, sized = self.messages, self._sized
        count = len(sized)
        if count and (
            count > len(messages) or sized[0][0] is not messages[0] or sized[-1][0] is not messages[count - 1]
        ):
            sized.clear()
            self._sized_chars = count = 0
        for message in messages[count:]:
            chars = content_chars(message.get("content")) + MESSAGE_OVERHEAD_CHARS
            sized.append((message, chars))
            self._sized_chars += chars
        return self._sized_chars


class SessionLanes:
    """One serial lane per session key: runs on one key queue, different keys run concurrently."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def lane(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if self._users[key] == 0:
                del self._users[key]
                del self._locks[key]

    def busy(self, key: str) -> bool:
        lock = self._locks.get(key)
        return lock is not None and lock.locked()
