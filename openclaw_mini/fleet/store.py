"""Hydration: a worker slot's local copy of an agent, kept in step with the fleet's store.

An agent's definition (AGENTS.md, skills/ ...) ships with the workers; its mutable state (session
transcripts, memory files, files it wrote, heartbeat state) lives in the store. A slot copies the
definition once, then before each turn fetches only the files whose version moved, and after the
turn reports what changed as `FileChange`s that `Queue.complete` applies with the ack:
- memory notes (MEMORY.md, memory/*.md) that only grew become `append`s, so two conversations
  writing notes at once both keep theirs;
- any other change is a `put`/`delete` against the version this slot read; if another conversation
  wrote the file meanwhile, the whole turn is refused (`StoreConflict`) and runs again on fresh state.
The write/edit tools are guarded (`guarded_file_tools`) so such a conflict usually fails the tool call
with a clear message first, before the turn builds on a stale file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import inspect
import os
import shutil
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import ToolError
from .models import FileChange, FileMeta
from .queue import Queue

__all__ = ["AgentWorkspace", "guarded_file_tools", "is_memory_file"]

_SKIPPED_NAMES = ("memory.sqlite", "state.db")
"""Never shipped around: the memory search index (rebuilt on demand) and the embedded world-state
database (a live SQLite file; a fleet's agents share world state through `FLUX_URL`)."""
_SKIPPED_SUFFIXES = (".lock", ".tmp", ".hydrate", "-wal", "-shm", "-journal")
"""Locks, temporaries and SQLite side files: only whole files move between workers."""


def is_memory_file(path: str) -> bool:
    """Memory notes merge by appending: MEMORY.md, memory.md and markdown under memory/."""
    parts = PurePosixPath(path).parts
    if len(parts) == 1:
        return parts[0] in ("MEMORY.md", "memory.md")
    return parts[0] == "memory" and path.endswith(".md")


def _digest(data: bytes) -> str:
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def _safe(path: str) -> bool:
    pure = PurePosixPath(path)
    return bool(path) and not pure.is_absolute() and ".." not in pure.parts and "\\" not in path


@dataclasses.dataclass
class _Seen:
    size: int
    mtime_ns: int


class AgentWorkspace:
    """One slot's working copy of one agent under `root` (a worker-private cache folder)."""

    def __init__(self, queue: Queue, agent: str, definition: Path, root: Path) -> None:
        self.queue = queue
        self.agent = agent
        self.definition = definition
        self.root = root
        self.local: dict[str, FileMeta] = {}
        """Store files present here, at the version (and digest) this slot holds."""
        self.agent_version = -1
        self.fetched = 0
        """Files fetched from the store over this copy's life (the cache's effect shows here)."""
        self._seen: dict[str, _Seen] = {}
        self._memory_base: dict[str, bytes] = {}
        self._outdated_paths: set[str] = set()
        self._fresh = False

    # -- lifecycle -----------------------------------------------------------------------------
    def _build(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(
            self.definition, self.root, symlinks=True, ignore=shutil.ignore_patterns(".openclaw-mini")
        )
        self.local.clear()
        self._outdated_paths.clear()
        self.agent_version = -1
        self._fresh = True

    async def reset(self) -> None:
        """Throw the copy away (after a failed or discarded turn): the next hydrate rebuilds it."""
        self._fresh = False
        await asyncio.to_thread(shutil.rmtree, self.root, True)

    async def hydrate(self, conversation: str | None = None) -> int:
        """Bring the copy up to the store's state; returns how many files were fetched.

        With `conversation`, other conversations' transcripts are left out (remembered as outdated,
        fetched when a turn of theirs runs here): a busy agent's slot fetches what its turn reads.
        """
        if not self._fresh:
            await asyncio.to_thread(self._build)
        version = await self.queue.agent_version(self.agent)
        manifest: dict[str, FileMeta] | None = None
        if version != self.agent_version:
            version, manifest = await self.queue.manifest(self.agent)
            self._outdated_paths = set(await asyncio.to_thread(self._outdated, manifest))
        need = sorted(p for p in self._outdated_paths if self._wanted(p, conversation))
        if manifest is None and not need:
            return 0
        fetched = await self.queue.fetch_files(self.agent, need) if need else {}
        await asyncio.to_thread(self._apply, manifest, fetched)
        self._outdated_paths.difference_update(need)
        self.agent_version = version
        self.fetched += len(fetched)
        return len(fetched)

    def _wanted(self, path: str, conversation: str | None) -> bool:
        prefix = f".openclaw-mini/sessions/{self.agent}/"
        if conversation is None or not path.startswith(prefix):
            return True
        return path[len(prefix) :].startswith(f"{conversation}.")

    def _outdated(self, manifest: dict[str, FileMeta]) -> list[str]:
        need = []
        for path, meta in manifest.items():
            if not _safe(path):
                continue
            held = self.local.get(path)
            if held is not None and held.version == meta.version:
                continue
            target = self.root / path
            if held is not None and held.digest == meta.digest and target.is_file():
                self.local[path] = meta  # our own write, now numbered by the store
                continue
            need.append(path)
        return need

    def _apply(
        self, manifest: dict[str, FileMeta] | None, fetched: dict[str, tuple[FileMeta, bytes]]
    ) -> None:
        for path, (meta, data) in fetched.items():
            _write(self.root / path, data)
            self.local[path] = meta
        for path in [p for p in self.local if manifest is not None and p not in manifest]:
            del self.local[path]  # deleted in the store: back to the definition's copy, or gone
            original = self.definition / path
            target = self.root / path
            if original.is_file():
                _write(target, original.read_bytes())
            else:
                target.unlink(missing_ok=True)
        self._snapshot()

    def _walk(self) -> dict[str, os.stat_result]:
        found: dict[str, os.stat_result] = {}
        for directory, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(directory, d))]
            for name in files:
                if name in _SKIPPED_NAMES or name.endswith(_SKIPPED_SUFFIXES):
                    continue
                full = os.path.join(directory, name)
                info = os.lstat(full)
                if not os.path.isfile(full) or os.path.islink(full):
                    continue
                found[Path(full).relative_to(self.root).as_posix()] = info
        return found

    def _snapshot(self) -> None:
        self._seen = {p: _Seen(s.st_size, s.st_mtime_ns) for p, s in self._walk().items()}
        self._memory_base = {p: (self.root / p).read_bytes() for p in self._seen if is_memory_file(p)}

    # -- after a turn --------------------------------------------------------------------------
    async def changes(self) -> list[FileChange]:
        """What the turn changed, as the store should apply it."""
        return await asyncio.to_thread(self._changes)

    def _changes(self) -> list[FileChange]:
        now = self._walk()
        changes: list[FileChange] = []
        for path, info in sorted(now.items()):
            seen = self._seen.get(path)
            if seen is not None and (seen.size, seen.mtime_ns) == (info.st_size, info.st_mtime_ns):
                continue
            data = (self.root / path).read_bytes()
            held = self.local.get(path)
            if held is not None and held.digest == _digest(data):
                continue
            base = self._memory_base.get(path, b"")
            if is_memory_file(path) and data.startswith(base):
                if len(data) > len(base):
                    changes.append(FileChange(path=path, kind="append", data=data[len(base) :]))
                continue
            changes.append(
                FileChange(path=path, kind="put", data=data, base_version=held.version if held else 0)
            )
        for path in sorted(set(self._seen) - set(now)):
            held = self.local.get(path)
            if held is not None:
                changes.append(FileChange(path=path, kind="delete", base_version=held.version))
        return changes

    async def committed(self, changes: Sequence[FileChange]) -> None:
        """The store took `changes`: this copy is the new clean state (versions refresh on hydrate)."""

        def mark() -> None:
            for change in changes:
                target = self.root / change.path
                if change.kind == "delete":
                    self.local.pop(change.path, None)
                elif target.is_file():
                    # version -1: unknown until the next manifest, which matches it by digest
                    data = target.read_bytes()
                    self.local[change.path] = FileMeta(version=-1, digest=_digest(data), size=len(data))
            self._snapshot()

        await asyncio.to_thread(mark)

    async def refresh(self, path: str) -> FileMeta | None:
        """Fetch one file's current stored version into the copy (the write guard's recovery)."""
        fetched = await self.queue.fetch_files(self.agent, [path])
        if path not in fetched:
            return None
        meta, data = fetched[path]

        def put() -> None:
            target = self.root / path
            _write(target, data)
            self.local[path] = meta
            info = target.stat()
            self._seen[path] = _Seen(info.st_size, info.st_mtime_ns)

        await asyncio.to_thread(put)
        return meta


def _write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.hydrate")
    temporary.write_bytes(data)
    os.replace(temporary, target)


def guarded_file_tools(workspace: AgentWorkspace) -> list[Any]:
    """`write` and `edit` that refuse to overwrite a file another conversation changed since this
    turn read it (memory notes excepted: they merge). They replace the built-ins by name."""
    from ..tools.base import Tool, ToolContext
    from ..tools.files import edit, write

    def guard(original: Tool) -> Tool:
        inner = original.function
        context_name = original.context_param or "ctx"

        async def guarded(**kwargs: Any) -> Any:
            ctx: ToolContext = kwargs[context_name]
            await _check_fresh(workspace, ctx, str(kwargs.get("path", "")))
            if inspect.iscoroutinefunction(inner):
                return await inner(**kwargs)
            return await asyncio.to_thread(inner, **kwargs)

        return dataclasses.replace(original, function=guarded)

    return [guard(write), guard(edit)]


async def _check_fresh(workspace: AgentWorkspace, ctx: Any, path: str) -> None:
    try:
        resolved = ctx.sandbox.resolve_path(path, write=True)
        relative = resolved.relative_to(workspace.root.resolve()).as_posix()
    except Exception:
        return  # the tool itself reports a bad path
    if is_memory_file(relative):
        return
    stored = await workspace.queue.file_meta(workspace.agent, relative)
    held = workspace.local.get(relative)
    if stored is None or (
        held is not None and (held.version == stored.version or held.digest == stored.digest)
    ):
        return
    await workspace.refresh(relative)
    raise ToolError(
        f"{relative} was changed by another conversation of agent {workspace.agent!r} since this turn "
        "read it, so it was not overwritten. The file now holds that newer version: read it again and "
        "redo your change on top of it."
    )
