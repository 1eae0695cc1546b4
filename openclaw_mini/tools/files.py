"""Built-in file tools: `read`, `write`, `edit`, `ls`, `grep`.

Every path goes through `ctx.sandbox.locate`, which walks it one directory descriptor at a time
(`safe_fs`) and refuses anything outside the workspace; files are then opened, listed and replaced
through those descriptors, so a directory swapped for a symlink meanwhile cannot redirect them. Outputs are
bounded (lines, characters, matches) because whatever a tool returns lands in the model's context.
The functions are synchronous: `Tool.invoke` runs them in a worker thread, off the event loop.
"""

from __future__ import annotations

import codecs
import contextlib
import fnmatch
import itertools
import logging
import os
import re
import stat
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import BinaryIO

from . import safe_fs
from .base import Tool, ToolContext, ToolError, tool
from .policy import ToolRefused

__all__ = [
    "BINARY_SNIFF_BYTES",
    "FILE_TOOLS",
    "GREP_LINE_BYTES",
    "GREP_MAX_MATCHES",
    "GREP_SKIP_DIRS",
    "LARGE_FILE_BYTES",
    "LS_MAX_ENTRIES",
    "MAX_LINE_CHARS",
    "MAX_OUTPUT_CHARS",
    "READ_LINE_BYTES",
    "edit",
    "grep",
    "ls",
    "read",
    "write",
]

logger = logging.getLogger(__name__)

BINARY_SNIFF_BYTES = 8 * 1024
"""A NUL byte in this many leading bytes marks a file as binary."""
LARGE_FILE_BYTES = 10 * 1024 * 1024
"""Above this size `read` stops after the requested window instead of counting the remaining lines."""
MAX_LINE_CHARS = 2_000
READ_LINE_BYTES = 64 * 1024
"""`read` holds at most this much of one line; the rest of a longer line is skipped, never loaded."""
GREP_LINE_BYTES = 1024 * 1024
"""Streamed `grep` searches at most this much of one line, so a huge one-line file stays cheap."""
MAX_OUTPUT_CHARS = 50_000
LS_MAX_ENTRIES = 1_000
GREP_MAX_MATCHES = 200
GREP_MAX_LINE_CHARS = 300
GREP_TIME_BUDGET_SECONDS = 30.0
GREP_SLURP_BYTES = 4 * 1024 * 1024
"""Files up to this size are read in one go by grep (faster); bigger ones are streamed."""
GREP_SKIP_DIRS = frozenset({".git", ".openclaw-mini", "node_modules", ".venv", "__pycache__"})


@contextlib.contextmanager
def _existing(
    ctx: ToolContext, path: str, what: str, *, write: bool = False
) -> Iterator[tuple[safe_fs.Location, os.stat_result]]:
    """The located `path` and its stat, held open for the block; `"<what> not found"` when it is not there."""
    try:
        location = ctx.sandbox.locate(path, write=write)
    except FileNotFoundError:
        raise ToolError(f"{what} not found: {path}") from None
    with location:
        info = location.stat()
        if info is None:
            raise ToolError(f"{what} not found: {path}")
        yield location, info


def _open_existing_file(ctx: ToolContext, path: str, *, write: bool = False) -> BinaryIO:
    """Open `path` for reading (race-free, see `safe_fs`) and insist it is an existing regular file."""
    with _existing(ctx, path, "File", write=write) as (location, info):
        if stat.S_ISDIR(info.st_mode):
            raise ToolError(f"{path} is a directory, not a file (use ls to list it).")
        if not stat.S_ISREG(info.st_mode):
            raise ToolError(f"{path} is not a regular file (device, socket or pipe); it cannot be read.")
        try:
            fd = location.open(os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise ToolError(f"Could not open {path}: {exc.strerror or exc} (it changed meanwhile)") from None
    handle = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped between the stat and the open
        handle.close()
        raise ToolError(f"{path} is not a regular file; it cannot be read.")
    os.set_blocking(fd, True)
    return handle


def _is_binary(handle: BinaryIO) -> bool:
    handle.seek(0)
    binary = b"\x00" in handle.read(BINARY_SNIFF_BYTES)
    handle.seek(0)
    return binary


@tool(group="fs")
def read(path: str, ctx: ToolContext, offset: int = 1, limit: int = 2000) -> str:
    """Read a text file, shown with line numbers like `cat -n`.

    Reads at most `limit` lines starting at line `offset` (1-based); the reply says how to read on.
    Binary files are refused; very long lines are cut.

    Args:
        path: File path, relative to the workspace (or absolute inside it).
        offset: First line to show, counting from 1.
        limit: Maximum number of lines to show.
    """
    if offset < 1:
        raise ToolError(f"offset must be 1 or more (lines are numbered from 1), got {offset}.")
    if limit < 1:
        raise ToolError(f"limit must be 1 or more, got {limit}.")
    shown = ctx.sandbox.relative(ctx.sandbox.resolve_path(path))
    with _open_existing_file(ctx, path) as handle:
        return _read_lines(handle, shown, offset, limit)


def _read_lines(handle: BinaryIO, shown: str, offset: int, limit: int) -> str:
    size = os.fstat(handle.fileno()).st_size
    if size == 0:
        return f"{shown} is empty (0 bytes)."
    if _is_binary(handle):
        raise ToolError(
            f"{shown} looks like a binary file (it contains NUL bytes, {size:,} bytes in all); "
            "read only shows text files."
        )

    out: list[str] = []
    used = 0
    invalid_utf8 = False
    truncated_lines = 0
    capped = False
    remaining: int | None = 0
    number = 0
    if True:  # the handle is owned by the caller
        for raw, length in _bounded_lines(handle, READ_LINE_BYTES):
            number += 1
            if number < offset:
                continue
            if number >= offset + limit:
                remaining = _remaining_lines(handle, raw, size)
                break
            if length > len(raw):  # only the head of a huge line was loaded
                text, bad = _decode_head(raw)
                text = f"{text[:MAX_LINE_CHARS]}… [line cut: {length:,} bytes in all]"
                truncated_lines += 1
            else:
                text, bad = _decode_line(raw)
                if len(text) > MAX_LINE_CHARS:
                    text = f"{text[:MAX_LINE_CHARS]}… [line cut: {len(text):,} chars in all]"
                    truncated_lines += 1
            invalid_utf8 = invalid_utf8 or bad
            entry = f"{number:>6}\t{text}"
            if out and used + len(entry) + 1 > MAX_OUTPUT_CHARS:
                capped = True
                remaining = _remaining_lines(handle, raw, size)
                break
            out.append(entry)
            used += len(entry) + 1
    if not out:
        raise ToolError(f"offset {offset} is past the end of {shown}, which has {number:,} line(s).")
    last_shown = offset + len(out) - 1

    notes: list[str] = []
    if invalid_utf8:
        notes.append("note: the file is not valid UTF-8; undecodable bytes are shown as �.")
    if truncated_lines:
        notes.append(f"note: {truncated_lines} line(s) longer than {MAX_LINE_CHARS:,} chars were cut.")
    if capped:
        notes.append(
            f"(output capped at {MAX_OUTPUT_CHARS:,} chars: showed lines {offset}-{last_shown}; "
            f"use offset={last_shown + 1} to read on)"
        )
    elif remaining is None:
        notes.append(
            f"(large file, {size / 1024 / 1024:.1f} MiB: more lines follow; "
            f"use offset={last_shown + 1} to read on)"
        )
    elif remaining:
        notes.append(f"({remaining:,} more lines; use offset={last_shown + 1} to read on)")
    else:
        notes.append("(end of file)")
    return "\n".join([*out, *notes])


def _bounded_lines(handle: BinaryIO, cap: int) -> Iterator[tuple[bytes, int]]:
    """Each line (ending included) cut to `cap` bytes, with its full length in bytes (ending excluded
    for a cut line, the number `read` shows).

    `for raw in handle` would load a whole line, so one multi-GB line (a minified bundle, a data
    dump) would be pulled into memory at once; the rest of a long line is read in pieces and dropped.
    """
    while raw := handle.readline(cap):
        length = len(raw)
        if length == cap and not raw.endswith(b"\n"):
            while rest := handle.readline(cap):
                length += len(rest)
                if rest.endswith(b"\n"):
                    length -= 2 if rest.endswith(b"\r\n") else 1
                    break
        yield raw, length


def _decode_head(raw: bytes) -> tuple[str, bool]:
    """Decode the head of a cut line; a character split by the cut is dropped, not flagged as bad."""
    try:
        return codecs.getincrementaldecoder("utf-8")().decode(raw, final=False), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), True


def _decode_line(raw: bytes) -> tuple[str, bool]:
    """Decode one line without its ending; the flag says whether bytes had to be replaced."""
    if raw.endswith(b"\n"):
        raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), True


def _remaining_lines(handle: BinaryIO, current: bytes, size: int) -> int | None:
    """Lines from `current` (already read, not shown) to the end; None for files too big to count."""
    if size > LARGE_FILE_BYTES:
        return None
    count = 1
    last = current
    while chunk := handle.read(1024 * 1024):
        count += chunk.count(b"\n")
        last = chunk
    if last is not current and not last.endswith(b"\n"):
        count += 1
    return count


def _atomic_write(location: safe_fs.Location, data: bytes, shown: str) -> None:
    """Temp file in the same folder + rename, through the folder's descriptor (see `safe_fs`)."""
    try:
        safe_fs.atomic_write(location, data)
    except OSError as exc:
        raise ToolError(f"Could not write {shown}: {exc.strerror or exc}") from None


def _line_count(text: str) -> int:
    if not text:
        return 0
    return text.count("\n") + (0 if text.endswith("\n") else 1)


@tool(group="fs")
def write(path: str, content: str, ctx: ToolContext) -> str:
    """Create or overwrite a file with `content` (parent folders are created).

    The file is replaced atomically. To change part of an existing file, prefer `edit`.

    Args:
        path: File path, relative to the workspace (or absolute inside it).
        content: The complete new content of the file.
    """
    try:
        data = content.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ToolError(f"content cannot be encoded as UTF-8: {exc}") from None
    shown = ctx.sandbox.relative(ctx.sandbox.resolve_path(path, write=True))
    try:
        location = ctx.sandbox.locate(path, write=True, create_parents=True)
    except (FileExistsError, NotADirectoryError, FileNotFoundError):
        raise ToolError(f"Cannot create folders for {shown}: a file is in the way.") from None
    except ToolRefused as exc:
        if "as if it were a folder" in str(exc):
            raise ToolError(f"Cannot create folders for {shown}: a file is in the way.") from None
        raise
    with location:
        info = location.stat()
        if info is not None and stat.S_ISDIR(info.st_mode):
            raise ToolError(f"{shown} is a directory; give a file path to write.")
        existed = info is not None
        if existed and not stat.S_ISREG(info.st_mode):  # type: ignore[union-attr]
            raise ToolError(f"{shown} exists and is not a regular file; refusing to replace it.")
        _atomic_write(location, data, shown)
    verb = "Overwrote" if existed else "Created"
    return f"{verb} {shown} ({len(data):,} bytes, {_line_count(content):,} lines)."


def _match_positions(content: str, needle: str) -> list[int]:
    """Start offsets of every occurrence, overlapping ones included."""
    positions: list[int] = []
    start = content.find(needle)
    while start != -1:
        positions.append(start)
        start = content.find(needle, start + 1)
    return positions


def _line_of(content: str, position: int) -> int:
    return content.count("\n", 0, position) + 1


def _whitespace_hint(content: str, old_text: str) -> str:
    """Help the model when its text only differs in whitespace (indentation, line breaks)."""
    wanted = [line.strip() for line in old_text.strip("\r\n").splitlines()]
    if wanted and any(wanted):
        have = [line.strip() for line in content.splitlines()]
        hits = [
            index + 1
            for index in range(len(have) - len(wanted) + 1)
            if have[index : index + len(wanted)] == wanted
        ]
        if hits:
            where = ", ".join(str(line) for line in hits[:10])
            return (
                f" It does match if leading/trailing whitespace on each line is ignored (at line {where}): "
                "read those lines again and copy them exactly, indentation included."
            )
    squash = re.compile(r"\s+")
    if squash.sub(" ", old_text).strip() and squash.sub(" ", old_text).strip() in squash.sub(" ", content):
        return (
            " It does match if whitespace and line breaks are ignored: read the file again and copy "
            "the text exactly."
        )
    return " Read the file again and copy the exact text to replace."


@tool(group="fs")
def edit(path: str, old_text: str, new_text: str, ctx: ToolContext) -> str:
    """Replace one exact occurrence of `old_text` with `new_text` in a file.

    `old_text` must match exactly once (whitespace included); add surrounding lines to make it unique.

    Args:
        path: File path, relative to the workspace (or absolute inside it).
        old_text: The exact text to replace; it must occur exactly once in the file.
        new_text: The replacement text (may be empty to delete).
    """
    shown = ctx.sandbox.relative(ctx.sandbox.resolve_path(path, write=True))
    if not old_text:
        raise ToolError("old_text is empty; give the exact text to replace (use write to create a file).")
    if old_text == new_text:
        raise ToolError("old_text and new_text are identical; nothing to change.")
    with _open_existing_file(ctx, path, write=True) as handle:
        if _is_binary(handle):
            raise ToolError(f"{shown} looks like a binary file; edit only changes text files.")
        # surrogateescape keeps bytes that are not UTF-8 intact through the round trip.
        content = handle.read().decode("utf-8", errors="surrogateescape")

    positions = _match_positions(content, old_text)
    if not positions and "\r\n" in content and "\r\n" not in old_text and "\n" in old_text:
        # The file uses Windows line endings; the model almost always sends "\n".
        crlf_old = old_text.replace("\n", "\r\n")
        positions = _match_positions(content, crlf_old)
        if positions:
            old_text, new_text = crlf_old, new_text.replace("\r\n", "\n").replace("\n", "\r\n")
    if not positions:
        raise ToolError(f"old_text was not found in {shown}." + _whitespace_hint(content, old_text))
    if len(positions) > 1:
        lines = ", ".join(str(_line_of(content, pos)) for pos in positions[:20])
        more = f" and {len(positions) - 20} more" if len(positions) > 20 else ""
        raise ToolError(
            f"old_text matches {len(positions)} times in {shown} (at lines {lines}{more}); "
            "include more surrounding lines so it matches exactly once."
        )

    start = positions[0]
    updated = content[:start] + new_text + content[start + len(old_text) :]
    try:
        location = ctx.sandbox.locate(path, write=True)
    except FileNotFoundError:
        raise ToolError(f"File not found: {path}") from None
    with location:
        _atomic_write(location, updated.encode("utf-8", errors="surrogateescape"), shown)

    first = _line_of(content, start)
    old_last = first + max(_line_count(old_text), 1) - 1
    old_span = f"line {first}" if old_last == first else f"lines {first}-{old_last}"
    if not new_text:
        return f"Edited {shown}: removed the text at {old_span}."
    new_last = first + max(_line_count(new_text), 1) - 1
    new_span = f"line {first}" if new_last == first else f"lines {first}-{new_last}"
    return f"Edited {shown}: replaced {old_span}; the new text is at {new_span}."


def _describe_entry(entry: os.DirEntry[str], dir_fd: int) -> str:
    """One `ls` line; `entry` comes from `os.scandir(dir_fd)`, so every look-up is relative to it."""
    if entry.is_symlink():
        try:
            target = os.readlink(entry.name, dir_fd=dir_fd)
        except OSError:
            target = "?"
        try:
            pointed = os.stat(entry.name, dir_fd=dir_fd)
        except OSError:  # broken, or a symlink loop (ELOOP): must not break the whole listing
            return f"{entry.name} -> {target} (broken)"
        return f"{entry.name}{'/' if stat.S_ISDIR(pointed.st_mode) else ''} -> {target}"
    if entry.is_dir(follow_symlinks=False):
        return f"{entry.name}/"
    try:
        size = entry.stat(follow_symlinks=False).st_size
    except OSError:
        return entry.name
    return f"{entry.name}  ({size:,} bytes)"


@tool(group="fs")
def ls(ctx: ToolContext, path: str = ".") -> str:
    """List a directory: folders end with `/`, files show their size, symlinks show `-> target`.

    Args:
        path: Directory path, relative to the workspace (default: the workspace itself).
    """
    with _existing(ctx, path, "Directory") as (location, info):
        shown = ctx.sandbox.relative(location.path)
        if not stat.S_ISDIR(info.st_mode):
            return f"{shown} is a file ({info.st_size:,} bytes), not a directory."
        try:
            dir_fd = location.open_dir()
        except PermissionError:
            raise ToolError(f"Permission denied listing {shown}.") from None
        except OSError as exc:
            raise ToolError(f"Could not list {shown}: {exc.strerror or exc} (it changed meanwhile)") from None
    try:
        with os.scandir(dir_fd) as it:
            entries = sorted(it, key=lambda item: item.name)
        described = [_describe_entry(entry, dir_fd) for entry in entries[:LS_MAX_ENTRIES]]
    except PermissionError:
        raise ToolError(f"Permission denied listing {shown}.") from None
    finally:
        os.close(dir_fd)
    if not entries:
        return f"{shown}/ is empty."
    lines = [f"{shown}/ ({len(entries):,} entries)"]
    lines.extend(described)
    if len(entries) > LS_MAX_ENTRIES:
        lines.append(
            f"(showing the first {LS_MAX_ENTRIES:,} of {len(entries):,} entries; "
            "list a subfolder or use grep with a glob to narrow down)"
        )
    return "\n".join(lines)


def _glob_matches(glob: str, name: str, rel: str) -> bool:
    if fnmatch.fnmatchcase(name, glob) or fnmatch.fnmatchcase(rel, glob):
        return True
    # "**/*.md" should also match "README.md" at the top level.
    while glob.startswith("**/"):
        glob = glob[3:]
        if fnmatch.fnmatchcase(rel, glob) or ("/" not in glob and fnmatch.fnmatchcase(name, glob)):
            return True
    return False


def _walk_files(location: safe_fs.Location) -> Generator[tuple[str, str, int], None, None]:
    """(path below the start, name, folder descriptor) of each file under the folder `location`,
    in a stable order; skipped and linked folders are not entered. `os.fwalk` walks by descriptor
    and refuses to enter a folder swapped for a symlink, so the walk cannot leave the start."""
    top = location.open_dir()
    try:
        for dirpath, dirnames, filenames, dir_fd in os.fwalk(".", dir_fd=top):
            dirnames[:] = sorted(name for name in dirnames if name not in GREP_SKIP_DIRS)
            for name in sorted(filenames):
                yield os.path.normpath(os.path.join(dirpath, name)), name, dir_fd
    finally:
        os.close(top)


def _open_for_grep(ctx: ToolContext, full: Path, name: str, dir_fd: int) -> BinaryIO | None:
    """Open one file of the walk (None: not a regular file); a symlink is followed only inside."""
    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(info.st_mode):
        with ctx.sandbox.locate(full) as location:  # ToolRefused when it leads outside
            fd = location.open(os.O_RDONLY | os.O_NONBLOCK)
    elif stat.S_ISREG(info.st_mode):
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    else:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _text_lines(handle: BinaryIO, size: int) -> Iterator[str] | None:
    """The decoded lines of an open file, or None when it looks binary."""
    head = handle.read(BINARY_SNIFF_BYTES)
    if b"\x00" in head:
        return None
    if size > GREP_SLURP_BYTES:
        handle.seek(0)
        return (_decode_line(raw)[0] for raw, _length in _bounded_lines(handle, GREP_LINE_BYTES))
    text = (head + handle.read()).decode("utf-8", errors="replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return iter(lines)


class _LinearRegex:
    """A pattern compiled by RE2, which matches in linear time: no pattern can make grep hang
    (Python's backtracking `re` takes hours on `(a+)+$` against 'aaa...a!').

    Lines are searched a block at a time (one RE2 call per block, multi-line mode, a superset of
    the per-line matches) and only a block that matches is searched line by line.
    """

    def __init__(self, pattern: str) -> None:
        import re2  # lazily: only grep needs it

        options = re2.Options()
        options.log_errors = False  # RE2 would print parse errors on stderr
        try:
            self.line = re2.compile(pattern, options)
            whole_text_anchor = re.search(r"\\[AzZ]", pattern) is not None
            self.block = None if whole_text_anchor else re2.compile(f"(?m:{pattern})", options)
        except re2.error as exc:
            detail = (
                exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
            )
            hint = ""
            if re.search(r"\(\?<?[=!]|\\[1-9]", pattern):
                hint = (
                    " (lookaround and backreferences are not supported: grep uses RE2 syntax, "
                    "so that no pattern can make it hang)"
                )
            raise ToolError(f"Invalid regular expression {pattern!r}: {detail}{hint}") from None

    def matching(
        self, lines: Iterator[str], deadline: float, block_lines: int = 2048
    ) -> Iterator[tuple[int, str]]:
        """(1-based number, line) of every line that matches, until `deadline` (monotonic)."""
        number = 0
        while time.monotonic() <= deadline:
            block = list(itertools.islice(lines, block_lines))
            if not block:
                return
            if self.block is None or self.block.search("\n".join(block)):
                for offset, line in enumerate(block, start=number + 1):
                    if self.line.search(line):
                        yield offset, line
            number += len(block)


@tool(group="fs")
def grep(pattern: str, ctx: ToolContext, path: str = ".", glob: str | None = None) -> str:
    """Search files for a regular expression; prints `path:line: text` for each matching line.

    Searches recursively, skipping binary files and `.git`, `node_modules`, `.venv`, `__pycache__`,
    `.openclaw-mini`. Uses RE2 syntax (Python `re` without lookaround or backreferences).

    Args:
        pattern: Regular expression (RE2 syntax), matched against each line.
        path: File or directory to search, relative to the workspace (default: everything).
        glob: Only search files whose name or relative path matches, e.g. `*.py` or `docs/**/*.md`.
    """
    regex = _LinearRegex(pattern)
    with _existing(ctx, path, "Path") as (location, info):
        scope = ctx.sandbox.relative(location.path) + (f" (glob {glob})" if glob else "")
        if stat.S_ISDIR(info.st_mode):
            return _grep_walk(ctx, location, regex, pattern, glob, scope)
        base = ctx.sandbox.relative(location.path.parent)
        files = iter([(location.name, location.name, location.dir_fd)])
        return _grep_files(ctx, files, location.path.parent, base, regex, pattern, glob, scope)


def _grep_walk(
    ctx: ToolContext,
    location: safe_fs.Location,
    regex: _LinearRegex,
    pattern: str,
    glob: str | None,
    scope: str,
) -> str:
    base = ctx.sandbox.relative(location.path)
    files = _walk_files(location)
    try:
        return _grep_files(ctx, files, location.path, base, regex, pattern, glob, scope)
    finally:
        files.close()


def _grep_files(
    ctx: ToolContext,
    files: Iterator[tuple[str, str, int]],
    start: Path,
    base: str,
    regex: _LinearRegex,
    pattern: str,
    glob: str | None,
    scope: str,
) -> str:
    deadline = time.monotonic() + GREP_TIME_BUDGET_SECONDS
    results: list[str] = []
    used = 0
    matches = 0
    searched = 0
    skipped_links = 0
    stop_reason = ""
    for below, name, dir_fd in files:
        rel = below if base == "." else os.path.join(base, below)
        if glob and not _glob_matches(glob, name, rel):
            continue
        try:
            try:
                opened = _open_for_grep(ctx, start / below, name, dir_fd)
            except ToolRefused:
                skipped_links += 1
                continue
            if opened is None:
                continue
            with opened as handle:
                lines = _text_lines(handle, os.fstat(handle.fileno()).st_size)
                if lines is None:
                    continue
                searched += 1
                for number, line in regex.matching(lines, deadline):
                    if len(line) > GREP_MAX_LINE_CHARS:
                        line = line[:GREP_MAX_LINE_CHARS] + "…"
                    entry = f"{rel}:{number}: {line}"
                    results.append(entry)
                    matches += 1
                    used += len(entry) + 1
                    if matches >= GREP_MAX_MATCHES:
                        stop_reason = f"stopped at {GREP_MAX_MATCHES} matches"
                        break
                    if used >= MAX_OUTPUT_CHARS:
                        stop_reason = f"stopped at {MAX_OUTPUT_CHARS:,} chars of output"
                        break
        except OSError as exc:
            logger.debug("grep: cannot read %s: %s", rel, exc)
            continue
        if stop_reason:
            break
        if time.monotonic() > deadline:
            stop_reason = f"stopped after {GREP_TIME_BUDGET_SECONDS:.0f} s"
            break

    notes: list[str] = []
    if stop_reason:
        notes.append(f"({stop_reason}; narrow the pattern, path or glob to see the rest)")
    if skipped_links:
        notes.append(f"({skipped_links} symlink(s) pointing outside the workspace were skipped)")
    if not results:
        return "\n".join([f"No matches for {pattern!r} in {scope} ({searched} files searched).", *notes])
    return "\n".join([*results, *notes])


FILE_TOOLS: list[Tool] = [read, write, edit, ls, grep]
