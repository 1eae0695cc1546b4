"""Workspace bootstrap files (AGENTS.md, SOUL.md, ...) read for the system prompt.

Users shape their agent by editing these files, so they are re-checked on every run: one `lstat`
per candidate file, and a file is only read again when its (mtime_ns, size) changed. A problem with
one file (binary, not UTF-8, unreadable, a symlink leaving the workspace) skips that file with a
warning; it never fails the run. Long files keep their head and tail with a marker saying what
was cut, and every cut is reported as a warning: silent truncation confused users upstream.
"""

from __future__ import annotations

import codecs
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ..config import BootstrapConfig

__all__ = [
    "BOOTSTRAP_FILES",
    "BOOTSTRAP_TABLE",
    "MEMORY_FILE_NAMES",
    "SUBAGENT_BOOTSTRAP_FILES",
    "BootstrapContext",
    "BootstrapFile",
    "BootstrapFileSpec",
    "BootstrapLoader",
    "truncation_marker",
]

log = logging.getLogger(__name__)

TemplateKind = Literal["profile", "first-run", "memory"]


@dataclass(frozen=True)
class BootstrapFileSpec:
    """One row of the bootstrap table: a file the prompt reads, and how `init` treats its template."""

    name: str
    subagent: bool = False
    """Sub-agents get it too (the working rules and tool notes, not the persona or user profile)."""
    template: TemplateKind | None = None
    """`profile`: written by every `init`; `first-run`: only into a new workspace; `memory`: only
    when no memory file exists; None: no template."""


BOOTSTRAP_TABLE: tuple[BootstrapFileSpec, ...] = (
    BootstrapFileSpec("AGENTS.md", subagent=True, template="profile"),
    BootstrapFileSpec("SOUL.md", template="profile"),
    BootstrapFileSpec("TOOLS.md", subagent=True, template="profile"),
    BootstrapFileSpec("IDENTITY.md", template="profile"),
    BootstrapFileSpec("USER.md", template="profile"),
    BootstrapFileSpec("HEARTBEAT.md", template="profile"),
    BootstrapFileSpec("BOOTSTRAP.md", template="first-run"),
    BootstrapFileSpec("MEMORY.md", template="memory"),
    BootstrapFileSpec("memory.md"),
)
"""The one list of bootstrap files, in load order (the prompt and `init` both read it)."""

MEMORY_FILE_NAMES = ("MEMORY.md", "memory.md")
"""The curated memory file: `MEMORY.md`, else `memory.md` (one of them, never both)."""
BOOTSTRAP_FILES: tuple[str, ...] = tuple(spec.name for spec in BOOTSTRAP_TABLE)
"""Load order. Only one of the two memory names is used."""
SUBAGENT_BOOTSTRAP_FILES: tuple[str, ...] = tuple(spec.name for spec in BOOTSTRAP_TABLE if spec.subagent)
"""Sub-agents get the working rules and tool notes, not the persona or the user's profile."""

_MIN_KEPT_CHARS = 64
"""Below this many kept characters a truncated file says nothing useful: drop it instead."""


@dataclass(frozen=True)
class BootstrapFile:
    """One file as it goes into the prompt."""

    name: str
    content: str
    original_chars: int
    """Characters in the file (for a file too large to read whole: its size in bytes, an upper bound)."""
    truncated: bool = False
    path: Path | None = None


@dataclass
class BootstrapContext:
    """The files for one run, in load order, plus warnings for the caller to surface."""

    files: list[BootstrapFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def get(self, name: str) -> BootstrapFile | None:
        for item in self.files:
            if item.name == name:
                return item
        return None

    @property
    def total_chars(self) -> int:
        return sum(len(item.content) for item in self.files)


@dataclass(frozen=True)
class _Source:
    """A file's decoded text: whole, or only its head and tail when it is too large to read."""

    head: str
    tail: str
    original_chars: int
    whole: bool


@dataclass(frozen=True)
class _CacheEntry:
    key: tuple[str, int, int]
    source: _Source | None
    error: str | None


def truncation_marker(name: str, kept: int, original: int, *, approximate: bool = False) -> str:
    """The note placed where the middle of a long file was cut."""
    about = "about " if approximate else ""
    return (
        f"\n\n[... {name} was shortened here: {kept:,} of {about}{original:,} characters are shown "
        f"(the beginning and the end). Use the read tool on {name} to see the full file. ...]\n\n"
    )


class BootstrapLoader:
    """Loads the bootstrap files of one workspace, with a per-file (mtime_ns, size) cache.

    `load()` is synchronous and, when nothing changed, costs one `lstat` per candidate name;
    a cold load reads files, so from async code prefer `aload()` (runs in a thread).
    """

    def __init__(self, workspace: Path, config: BootstrapConfig | None = None) -> None:
        self.workspace = Path(workspace)
        if config is None:
            from ..config import BootstrapConfig  # lazily: `init` reads the table without pydantic

            config = BootstrapConfig.model_validate({})
        self.config = config
        self._real_root: str | None = None
        self._cache: dict[str, _CacheEntry] = {}

    async def aload(self, *, subagent: bool = False) -> BootstrapContext:
        import asyncio  # here, not at the top: `init` imports this module for its table only

        return await asyncio.to_thread(self.load, subagent=subagent)

    def load(self, *, subagent: bool = False) -> BootstrapContext:
        """The files for a run (sub-agents: AGENTS.md and TOOLS.md only), capped per file and in total."""
        result = BootstrapContext()
        names = SUBAGENT_BOOTSTRAP_FILES if subagent else BOOTSTRAP_FILES
        config = self.config
        budget = config.max_total_chars
        memory_seen = False
        for name in names:
            if name in MEMORY_FILE_NAMES:
                if memory_seen:
                    continue
            entry = self._read(name)
            if entry is None:
                continue
            if name in MEMORY_FILE_NAMES:
                memory_seen = True
            if entry.error is not None:
                result.warnings.append(entry.error)
                continue
            source = entry.source
            assert source is not None
            if not source.head.strip() and not source.tail.strip():
                continue  # whitespace only: says nothing, left out like a missing file
            cap = min(config.max_chars_per_file, budget)
            content, truncated = self._fit(name, source, cap, keep_tiny=cap == config.max_chars_per_file)
            if content is None:
                why = (
                    f"the per-file limit of {config.max_chars_per_file:,} characters is too small for a "
                    "shortened copy"
                    if cap == config.max_chars_per_file
                    else f"the total limit of {config.max_total_chars:,} characters was used up by earlier "
                    "files"
                )
                result.warnings.append(
                    f"Bootstrap file {name} ({source.original_chars:,} characters) was left out of the "
                    f"prompt: {why}."
                )
                continue
            if truncated:
                why = (
                    f"the per-file limit of {config.max_chars_per_file:,}"
                    if cap == config.max_chars_per_file
                    else f"what was left of the total limit of {config.max_total_chars:,}"
                )
                size = f"{source.original_chars:,}" if source.whole else f"about {source.original_chars:,}"
                result.warnings.append(
                    f"Bootstrap file {name} has {size} characters; it was shortened to {len(content):,} "
                    f"to fit {why} characters (head and tail kept, middle cut). The model can read the "
                    "whole file with the read tool."
                )
            budget -= len(content)
            result.files.append(
                BootstrapFile(
                    name=name,
                    content=content,
                    original_chars=source.original_chars,
                    truncated=truncated,
                    path=self.workspace / name,
                )
            )
        return result

    # -- one file ---------------------------------------------------------------------------

    @property
    def _root(self) -> str:
        """The workspace with links resolved: found on the first load, which `aload` runs in a
        thread (the loader is built on the event loop)."""
        if self._real_root is None:
            self._real_root = os.path.realpath(self.workspace)
        return self._real_root

    def _read(self, name: str) -> _CacheEntry | None:
        """The cached or freshly read file; None when it does not exist."""
        path = os.path.join(self._root, name)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            self._cache.pop(name, None)
            return None
        except OSError as exc:
            return _skipped(f"{name} was skipped: {exc.strerror or exc}.")
        target = path
        if stat.S_ISLNK(info.st_mode):
            target = os.path.realpath(path)
            if not _inside(target, self._root):
                return _skipped(
                    f"{name} was skipped: it is a symlink to {target}, outside the workspace.",
                )
            try:
                info = os.stat(target)
            except FileNotFoundError:
                return _skipped(f"{name} was skipped: a broken symlink.")
            except OSError as exc:
                return _skipped(f"{name} was skipped: {exc.strerror or exc}.")
        if not stat.S_ISREG(info.st_mode):
            return _skipped(f"{name} was skipped: it is not a regular file.")
        key = (target, info.st_mtime_ns, info.st_size)
        cached = self._cache.get(name)
        if cached is not None and cached.key == key:
            return cached
        source, error = self._decode(name, target, info.st_size)
        entry = _CacheEntry(key, source, error)
        self._cache[name] = entry
        if error:
            log.warning(error)
        return entry

    def _decode(self, name: str, path: str, size: int) -> tuple[_Source | None, str | None]:
        config = self.config
        try:
            with open(path, "rb") as handle:
                if size <= config.max_file_bytes:
                    data = handle.read()
                    head_bytes, tail_bytes = data, b""
                else:
                    # Never read a huge file whole: enough bytes for the head and tail we can show.
                    want_head = 4 * int(config.max_chars_per_file * config.head_ratio) + 4
                    want_tail = 4 * int(config.max_chars_per_file * config.tail_ratio) + 4
                    half = config.max_file_bytes // 2
                    head_bytes = handle.read(min(want_head, half))
                    handle.seek(max(size - min(want_tail, half), 0))
                    tail_bytes = handle.read()
        except OSError as exc:
            return None, f"Bootstrap file {name} was skipped: it could not be read ({exc.strerror or exc})."
        if b"\x00" in head_bytes or b"\x00" in tail_bytes:
            return None, f"Bootstrap file {name} was skipped: it looks binary (contains NUL bytes)."
        try:
            if not tail_bytes:
                text = head_bytes.decode("utf-8-sig")
                return _Source(text, "", len(text), True), None
            head = codecs.getincrementaldecoder("utf-8-sig")().decode(head_bytes, final=False)
            start = 0
            while start < min(3, len(tail_bytes)) and 0x80 <= tail_bytes[start] <= 0xBF:
                start += 1  # skip a character split by the seek
            tail = tail_bytes[start:].decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, (
                f"Bootstrap file {name} was skipped: it is not valid UTF-8 "
                f"(byte {exc.start} of the part read)."
            )
        return _Source(head, tail, size, False), None

    def _fit(
        self, name: str, source: _Source, cap: int, *, keep_tiny: bool = True
    ) -> tuple[str | None, bool]:
        """The content within `cap` characters: whole, or head + marker + tail; None when nothing fits.

        A cap too small for the full marker gets a shorter one, so a small per-file cap still
        shows head and tail. `keep_tiny=False` (the total budget is nearly spent) drops a file
        whose shortened copy would keep fewer than `_MIN_KEPT_CHARS`.
        """
        if source.whole and source.original_chars <= cap:
            return source.head, False
        config = self.config
        approximate = not source.whole
        text_tail = source.head if source.whole else source.tail
        head_n = min(int(cap * config.head_ratio), len(source.head))
        tail_n = min(int(cap * config.tail_ratio), len(text_tail) - (head_n if source.whole else 0))
        wanted_room = min(_MIN_KEPT_CHARS, cap // 2) if keep_tiny else _MIN_KEPT_CHARS
        original = source.original_chars
        for marker_of in (
            lambda kept: truncation_marker(name, kept, original, approximate=approximate),
            lambda kept: f"\n[... {name} shortened; read it for the rest ...]\n",
            lambda kept: "\n[...]\n",
        ):
            # The marker's longest form (kept == original) bounds its length, so the result fits.
            room = cap - len(marker_of(original))
            if room >= wanted_room:
                break
        else:
            return None, True
        if head_n + tail_n > room:  # a small cap: shrink head and tail to leave room for the marker
            total = head_n + tail_n
            head_n = room * head_n // total
            tail_n = room - head_n
        if head_n + tail_n < wanted_room:
            return None, True
        head = source.head[:head_n]
        tail = text_tail[len(text_tail) - tail_n :] if tail_n else ""
        return head + marker_of(head_n + tail_n) + tail, True


def _skipped(message: str) -> _CacheEntry:
    return _CacheEntry(("", 0, 0), None, "Bootstrap file " + message)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
