"""Text helpers of the memory index: tokens (CJK bigrams), query terms, tags, chunks, paths."""

from __future__ import annotations

import re
import sqlite3
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, tzinfo
from typing import Literal

__all__ = ["chunk_lines", "index_tokens", "is_memory_path"]

_MAX_QUERY_TERMS = 32

# Scripts written without spaces between words: indexed as overlapping character bigrams.
_CJK = (
    "\u1100-\u11ff\u2e80-\u2fdf\u3005-\u3007\u3040-\u309f\u30a0-\u30ff\u3100-\u312f\u3130-\u318f"
    "\u31a0-\u31bf\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\ua960-\ua97f\uac00-\ud7af\uf900-\ufaff"
    "\U00020000-\U0003134f"
)
_TOKEN_RE = re.compile(rf"(?P<cjk>[{_CJK}]+)|(?P<word>[^\W_{_CJK}]+)")
_TAG_RE = re.compile(r"(?<![\w&/#])#([^\W_][\w-]*)")
_TAG_VALID_RE = re.compile(r"^[^\W_][\w-]*$")
_DATE_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


# --------------------------------------------------------------------------- text helpers


def _split_lines(text: str) -> list[str]:
    """Lines as numbered by editors: split on newline only, `\\r` dropped, no phantom last line."""
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _cjk_tokens(run: str) -> list[str]:
    if len(run) == 1:
        return [run]
    return [run[i : i + 2] for i in range(len(run) - 1)] + [run[-1]]


def index_tokens(text: str) -> str:
    """The text as the FTS table sees it: words as they are, CJK runs as bigrams (+ last char)."""
    if text.isascii():
        # No CJK, and NFKC changes nothing: FTS5's unicode61 splits on the same characters
        # (anything but letters and digits) that the regex would, so the text goes in as it is.
        return text
    out: list[str] = []
    for match in _TOKEN_RE.finditer(unicodedata.normalize("NFKC", text)):
        cjk = match.group("cjk")
        if cjk:
            out.extend(_cjk_tokens(cjk))
        else:
            out.append(match.group("word"))
    return " ".join(out)


@dataclass(frozen=True)
class _Term:
    fts: str
    """A safe FTS5 expression: only quoted strings built from letter/digit tokens."""
    raw: str
    """Casefolded user text, for tag matching and snippet placement."""
    kind: Literal["word", "phrase", "cjk"] = "word"


def _query_terms(query: str) -> list[_Term]:
    """Turn user text into FTS5 terms that cannot be read as query syntax.

    Words glued by punctuation (`2024-05-01`, `foo_bar`) become one phrase, a CJK run a phrase of
    its bigrams (a single CJK character a prefix query). Tokens contain only letters and digits,
    and are quoted, so `"`, `*`, `AND`, `-`, `NEAR(` from a user are plain words.
    """
    terms: list[_Term] = []
    seen: set[str] = set()

    def add(fts: str, raw: str, kind: Literal["word", "phrase", "cjk"]) -> None:
        if fts not in seen and len(terms) < _MAX_QUERY_TERMS:
            seen.add(fts)
            terms.append(_Term(fts=fts, raw=raw.casefold(), kind=kind))

    def add_words(words: list[str], raw: str) -> None:
        add('"' + " ".join(words) + '"', raw, "word" if len(words) == 1 else "phrase")

    for piece in unicodedata.normalize("NFKC", query).split():
        words: list[str] = []
        span = end = 0
        for match in _TOKEN_RE.finditer(piece):
            cjk = match.group("cjk")
            if cjk:
                if words:
                    add_words(words, piece[span:end])
                    words = []
                if len(cjk) == 1:
                    add(f'"{cjk}"*', cjk, "cjk")
                else:
                    add('"' + " ".join(_cjk_tokens(cjk)[:-1]) + '"', cjk, "cjk")
            else:
                if not words:
                    span = match.start()
                words.append(match.group("word"))
                end = match.end()
        if words:
            add_words(words, piece[span:end])
    return terms


def _tags_of(text: str) -> list[str]:
    return sorted({tag.casefold() for tag in _TAG_RE.findall(text)})


@dataclass(frozen=True)
class _Chunk:
    start_line: int
    end_line: int
    text: str


def chunk_lines(lines: Sequence[str], max_chars: int, overlap: int) -> list[_Chunk]:
    """Cut lines into chunks of at most `max_chars`, each repeating up to `overlap` chars of the last.

    A line longer than `max_chars` is cut into overlapping pieces of its own, all carrying that
    line's number. Whitespace-only chunks are dropped.
    """
    chunks: list[_Chunk] = []
    current: list[tuple[int, str]] = []
    size = 0

    def flush() -> None:
        if current and any(line.strip() for _, line in current):
            chunks.append(_Chunk(current[0][0], current[-1][0], "\n".join(line for _, line in current)))

    step = max(1, max_chars - overlap)
    for number, line in enumerate(lines, start=1):
        if len(line) > max_chars:
            flush()
            current, size = [], 0
            for begin in range(0, len(line), step):
                piece = line[begin : begin + max_chars]
                if piece.strip():
                    chunks.append(_Chunk(number, number, piece))
                if begin + max_chars >= len(line):
                    break
            continue
        cost = len(line) + 1
        if current and size + cost > max_chars:
            flush()
            kept: list[tuple[int, str]] = []
            kept_size = 0
            for item in reversed(current):
                if kept_size + len(item[1]) + 1 > overlap:
                    break
                kept.insert(0, item)
                kept_size += len(item[1]) + 1
            current, size = kept, kept_size
            while current and size + cost > max_chars:
                size -= len(current.pop(0)[1]) + 1
        current.append((number, line))
        size += cost
    flush()
    return chunks


def _day_of(rel_path: str) -> str | None:
    """The ISO date in a file's name (`memory/2024-05-01.md`, `memory/2024-05-01-standup.md`)."""
    match = _DATE_RE.search(rel_path.rsplit("/", 1)[-1])
    if not match:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3])).isoformat()
    except ValueError:
        return None


def is_memory_path(rel_path: str) -> bool:
    """True for `MEMORY.md`, `memory.md` and `memory/**/*.md` (relative, forward slashes)."""
    parts = rel_path.split("/")
    if len(parts) == 1:
        return parts[0] in ("MEMORY.md", "memory.md")
    return (
        parts[0] == "memory"
        and parts[-1].endswith(".md")
        and len(parts[-1]) > 3
        and all(part not in ("", ".", "..") for part in parts)
    )


def _resolve_timezone(name: str | None) -> tzinfo | None:
    if name in (None, "", "local"):
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r} (use an IANA name like 'Europe/Berlin')") from None


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """Errors that mean the index file is damaged (rebuild), not busy or misused (re-raise)."""
    text = str(exc).lower()
    if any(
        word in text
        for word in (
            "malformed",
            "not a database",
            "no such table",
            "no such column",
            "corrupt",
            "file is encrypted",
        )
    ):
        return True
    return type(exc) is sqlite3.DatabaseError
