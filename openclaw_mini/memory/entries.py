"""Entry parsing: cut a memory file into the units a person wrote, which are what search ranks.

An entry is a top-level bullet with its continuation lines (`memory_write` writes one bullet per
fact, indenting the lines after the first), a prose paragraph, a fenced code block, or a heading
whose section holds nothing else. Every entry remembers the heading it sits under (indexed as a
separate, lighter field). An entry longer than `max_chars` is cut into overlapping line chunks,
all pointing back at the entry's first line, so a search result still cites exact lines.

Parsing can resume at the first line of any entry given the heading in force there: that is how
an append re-indexes only the file's last entry and what follows it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .text import chunk_lines

__all__ = ["Entry", "ParsedFile", "parse_entries"]

_HEADING_RE = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t#]*$")
_BULLET_RE = re.compile(r"^ ?(?:[-*+]|\d{1,9}[.)])(?:[ \t]|$)")
_FENCE_RE = re.compile(r"^ {0,3}(```|~~~)")


@dataclass(frozen=True, slots=True)
class Entry:
    """One indexed unit: a whole entry, or one chunk of a long one."""

    start_line: int
    end_line: int
    entry_line: int
    """First line of the entry this chunk belongs to (equal to `start_line` unless it was cut)."""
    text: str
    heading: str
    """Text of the nearest heading above (without the `#`s); empty before the first heading."""


@dataclass(frozen=True, slots=True)
class ParsedFile:
    entries: list[Entry]
    tail_line: int
    """First line of the last entry (1 when there is none): where parsing resumes after an append."""
    tail_heading: str
    """The heading in force at `tail_line`."""


def parse_entries(
    lines: Sequence[str],
    *,
    max_chars: int,
    overlap: int,
    first_line: int = 1,
    heading: str = "",
) -> ParsedFile:
    """The entries of `lines`, numbered from `first_line`, starting under `heading`."""
    entries: list[Entry] = []
    tail_line, tail_heading = first_line, heading
    block: list[str] = []
    block_start = 0
    block_kind = ""  # "bullet", "para", "fence" or "" (none open)
    block_heading = heading
    blank_after = False  # a blank line ended the last bullet line (the bullet goes on if indented)
    section_empty = False
    pending_heading: tuple[int, str, str] | None = None  # (line, raw text, heading) of an empty section

    def close() -> None:
        nonlocal block, block_kind, tail_line, tail_heading, section_empty
        if block_kind:
            while block and not block[-1].strip():
                block.pop()
            if block:
                _emit(entries, block, block_start, block_heading, max_chars, overlap)
                tail_line, tail_heading = block_start, block_heading
                section_empty = False
        block, block_kind = [], ""

    def flush_heading() -> None:
        nonlocal pending_heading, tail_line, tail_heading
        if pending_heading is not None and section_empty:
            line, raw, under = pending_heading
            entries.append(Entry(line, line, line, raw, under))
            tail_line, tail_heading = line, under
        pending_heading = None

    def start(kind: str, number: int, line: str) -> None:
        nonlocal block, block_kind, block_start, block_heading, blank_after
        close()
        block, block_kind, block_start, block_heading, blank_after = [line], kind, number, heading, False

    for number, line in enumerate(lines, start=first_line):
        if block_kind == "fence":
            block.append(line)
            if _FENCE_RE.match(line) and line.strip().startswith(block[0].strip()[:3]) and len(block) > 1:
                close()
            continue
        stripped = line.strip()
        if not stripped:
            if block_kind == "bullet":
                blank_after = True
                block.append(line)
            elif block_kind == "para":
                close()
            continue
        indented = line[:1] in (" ", "\t") and not _BULLET_RE.match(line)
        if block_kind == "bullet" and (indented or (not blank_after and not _starts_block(line))):
            block.append(line)
            blank_after = False
            continue
        heading_match = _HEADING_RE.match(line)
        if heading_match:
            close()
            flush_heading()
            heading = (heading_match.group(2) or "").strip()
            pending_heading = (number, line, heading)
            section_empty = True
            continue
        if _FENCE_RE.match(line):
            start("fence", number, line)
        elif _BULLET_RE.match(line):
            start("bullet", number, line)
        elif block_kind == "para":
            block.append(line)
        else:
            start("para", number, line)
    close()
    flush_heading()
    return ParsedFile(entries, tail_line, tail_heading)


def _starts_block(line: str) -> bool:
    return bool(_BULLET_RE.match(line) or _HEADING_RE.match(line) or _FENCE_RE.match(line))


def _emit(
    entries: list[Entry], block: list[str], start: int, heading: str, max_chars: int, overlap: int
) -> None:
    text = "\n".join(block)
    if len(text) <= max_chars:
        entries.append(Entry(start, start + len(block) - 1, start, text, heading))
        return
    for chunk in chunk_lines(block, max_chars, overlap):
        entries.append(
            Entry(start + chunk.start_line - 1, start + chunk.end_line - 1, start, chunk.text, heading)
        )
