"""The memory files on disk: which paths count, finding them, bounded reads, locked appends.

No function here reads a whole file into memory: line slices stream through the file, and the
append counts lines in fixed-size blocks, so a multi-gigabyte `memory/*.md` costs time, not RAM.
"""

from __future__ import annotations

import codecs
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

try:  # POSIX; on other systems appends are serialised per process only.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from ..errors import MemoryPathError
from .text import is_memory_path

__all__ = ["LineSlice", "discover", "locked_append", "read_line_slice", "resolve_memory_path"]

_BLOCK = 1 << 18


def _inside(path: Path, workspace: Path, refusal: str) -> str:
    """`path` relative to the workspace (posix), or `MemoryPathError(refusal)` when it is outside."""
    try:
        return path.relative_to(workspace).as_posix()
    except ValueError:
        raise MemoryPathError(refusal) from None


def resolve_memory_path(workspace: Path, path: str | os.PathLike[str]) -> tuple[Path, str]:
    """Map user input to (absolute path, workspace-relative name) of a memory file, or refuse."""
    raw = os.fspath(path)
    shown = raw if len(raw) <= 200 else raw[:200] + "..."
    if not raw.strip() or "\x00" in raw:
        raise MemoryPathError("memory path is empty or contains a NUL byte")
    candidate = Path(raw.strip())
    if not candidate.is_absolute():
        candidate = workspace / candidate
    lexical = Path(os.path.normpath(candidate))
    rel = _inside(
        lexical, workspace, f"'{shown}' is outside the workspace; only MEMORY.md and memory/*.md can be read"
    )
    if not is_memory_path(rel):
        raise MemoryPathError(
            f"'{shown}' is not a memory file; only MEMORY.md, memory.md and memory/**/*.md are allowed"
        )
    try:
        resolved = lexical.resolve()
    except RuntimeError:  # pathlib's report of a symlink loop (ELOOP)
        raise MemoryPathError(f"'{shown}' is a symlink loop; refused") from None
    real_rel = _inside(
        resolved, workspace, f"'{shown}' resolves through a symlink to outside the workspace; refused"
    )
    if not is_memory_path(real_rel):
        raise MemoryPathError(f"'{shown}' resolves through a symlink to '{real_rel}', not a memory file")
    return lexical, rel


def discover(workspace: Path) -> dict[str, tuple[str, os.stat_result]]:
    """Every indexable memory file: regular files only, symlinks never followed.

    Uses `os.scandir` (no pathlib) because this runs before every search: one stat per file.
    """
    found: dict[str, tuple[str, os.stat_result]] = {}
    root = str(workspace)
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


@dataclass(frozen=True, slots=True)
class LineSlice:
    lines: list[str]
    """The wanted lines, `\\r` and the newline removed."""
    total_lines: int
    truncated: bool
    """True when `max_chars` stopped the slice before `lines` lines were collected."""
    whole_text: str | None
    """The file's exact text, when the whole file was asked for and fits in `max_chars`."""


def read_line_slice(target: Path, rel: str, start: int, count: int | None, max_chars: int) -> LineSlice:
    """Lines `start`.. (1-based) of a file, at most `count` lines and at most `max_chars` characters.

    Streams the file in pieces of at most 256 KiB (a longer line arrives in several): memory use is
    bounded by `max_chars`, whatever the size of the file or of one line. Counting the lines
    still takes one pass over the file.
    """
    picked: list[str] = []
    whole: list[str] | None = [] if start == 1 and count is None else None
    size = total = offset = 0
    truncated = line_open = False
    current: list[str] | None = None
    current_len = 0
    decoder = codecs.getincrementaldecoder("utf-8")()

    def finish(parts: list[str]) -> None:
        nonlocal size, truncated
        line = "".join(parts)
        body = line.removesuffix("\n").removesuffix("\r")
        if len(body) > max_chars - size:
            truncated = True
            if not picked:  # one line longer than the cap: its head, so the reader sees something
                picked.append(body[:max_chars])
            return
        picked.append(body)
        size += len(body) + 1
        if whole is not None:
            whole.append(line)

    with open(target, "rb") as handle:
        while piece := handle.readline(_BLOCK):
            piece_offset = offset
            offset += len(piece)
            if piece_offset == 0 and piece.startswith(b"\xef\xbb\xbf"):
                piece, piece_offset = piece[3:], 3
            if not line_open:
                total += 1
                wanted = total >= start and not truncated and (count is None or len(picked) < count)
                current, current_len = ([], 0) if wanted else (None, 0)
                decoder.reset()
            complete = piece.endswith(b"\n")
            line_open = not complete
            if current is None:
                continue
            room = (max_chars + 2 - current_len) * 4  # bytes enough for the characters still wanted
            if len(piece) > room:
                piece, complete = piece[:room], False
            try:
                text = decoder.decode(piece, final=complete)
            except UnicodeDecodeError as exc:
                raise ValueError(
                    f"memory file {rel} is not UTF-8 text (bad byte at offset {piece_offset + exc.start})"
                ) from None
            current.append(text)
            current_len += len(text)
            if complete:
                finish(current)
                current = None
            elif current_len > max_chars or not line_open:
                finish(current)  # over the cap: recorded as truncated; the rest of the line is skipped
                current = None
        if line_open and current is not None:
            try:
                current.append(decoder.decode(b"", final=True))
            except UnicodeDecodeError as exc:
                raise ValueError(
                    f"memory file {rel} is not UTF-8 text (bad byte at offset {offset + exc.start})"
                ) from None
            finish(current)
    if truncated:
        whole = None
    return LineSlice(picked, total, truncated, "".join(whole) if whole is not None else None)


def _count_newlines(handle: BinaryIO, end: int) -> tuple[int, bytes]:
    """Newlines in the first `end` bytes of an open binary file, and its last byte."""
    handle.seek(0)
    count = 0
    last = b""
    remaining = end
    while remaining > 0:
        block = handle.read(min(_BLOCK, remaining))
        if not block:
            break
        count += block.count(b"\n")
        last = block[-1:]
        remaining -= len(block)
    return count, last


def locked_append(target: Path, header: str, entry: str) -> tuple[int, bool]:
    """Append `entry` as new line(s) under an exclusive lock; returns (line number, created).

    Writers in other threads and processes wait for the lock, so their bullets never
    interleave; lines already in the file are never rewritten.
    """
    with open(target, "a+b") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        end = os.fstat(handle.fileno()).st_size
        newlines, last = _count_newlines(handle, end)
        created = end == 0
        prefix = b""
        if created:
            prefix = header.encode("utf-8")
        elif last != b"\n":
            prefix = b"\n"
        line = newlines + prefix.count(b"\n") + 1
        handle.write(prefix + entry.encode("utf-8") + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    return line, created
