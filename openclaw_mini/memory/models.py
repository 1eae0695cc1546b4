"""Memory data: the results, entries and settings `MemoryStore` reads and writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from ..errors import MemoryPathError

__all__ = [
    "INDEX_FORMAT_VERSION",
    "MEMORY_PROMPT_GUIDANCE",
    "TOKENIZER",
    "Embedder",
    "IndexMeta",
    "MemoryConfig",
    "MemoryEntry",
    "MemoryHit",
    "MemoryPathError",
    "MemorySlice",
    "MemoryWriteResult",
    "ReindexStats",
    "ScoreParts",
    "SyncStats",
]

INDEX_FORMAT_VERSION = 2
TOKENIZER = "cjk-bigram+porter-unicode61"

MEMORY_PROMPT_GUIDANCE = """\
## Memory
You do not remember earlier conversations by yourself. What you know from them lives in plain \
markdown files in the workspace: MEMORY.md for lasting facts and memory/YYYY-MM-DD.md for daily notes.
- Before you answer anything that depends on earlier work, decisions, dates, people, preferences or \
open todos, call memory_search first. Then call memory_get with the path and line range of the \
useful results to read just those lines, not whole files.
- If the search finds nothing relevant, say that you checked and found nothing; do not guess.
- When you learn something worth keeping (a decision and its reason, a preference, a date, who \
someone is, a todo), save it with memory_write: one short sentence that makes sense on its own, \
with concrete names and dates, plus a tag or two. Use long_term=true only for facts that should \
stay true for months; everything else goes to today's note.
- Never store secrets such as passwords, API keys or tokens.
"""
"""Recall guidance for the system prompt when memory is on."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors for the optional semantic half of search.

    An optional `name` attribute identifies the model, so cached vectors of another model are
    never mixed in; without it the class name is used.
    """

    def embed(self, texts: list[str]) -> list[list[float]]: ...


class MemoryConfig(BaseModel):
    """Tunable numbers of the memory index and score (defaults follow upstream OpenClaw)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chunk_chars: int = Field(default=1_600, ge=200)
    """An entry longer than this is cut into chunks of at most this many characters."""
    chunk_overlap: int = Field(default=320, ge=0)
    snippet_chars: int = Field(default=700, ge=80)
    default_limit: int = Field(default=6, ge=1, le=100)
    half_life_days: float = Field(default=30.0, gt=0)
    recency_weight: float = Field(default=0.15, ge=0, le=1)
    tag_weight: float = Field(default=0.10, ge=0, le=1)
    vector_weight: float = Field(default=0.7, ge=0, le=1)
    """Share of cosine similarity in relevance when an embedder is set (the rest is keyword)."""
    candidates: int = Field(default=60, ge=1)
    """Keyword (and vector) candidates re-scored per search, at least 10 x the limit."""
    heading_weight: float = Field(default=0.3, ge=0, le=10)
    """BM25 weight of the heading an entry sits under, relative to the entry's own text (1.0)."""
    max_file_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Memory files larger than this are not indexed (a warning names them); `get` still reads them."""
    max_read_chars: int = Field(default=1_000_000, ge=1_000)
    """`get`/`read_lines` return at most this many characters (`MemorySlice.truncated` says so)."""


@dataclass(frozen=True, slots=True)
class MemoryHit:
    """One search result: where it is, how well it matched, and the text around the match."""

    path: str
    """Relative to the workspace, with forward slashes."""
    start_line: int
    end_line: int
    score: float
    snippet: str
    parts: ScoreParts | None = None
    """How the score was made; filled when `search(..., explain=True)`."""


@dataclass(frozen=True, slots=True)
class ScoreParts:
    """The parts of one hit's score (see the package docstring for the formula)."""

    bm25: float
    """FTS5 BM25 of the entry (higher is better; 0 for a hit found by meaning only)."""
    bm25_norm: float
    """`bm25` divided by the best BM25 among this query's candidates."""
    coverage: float
    """Share of the query's terms the entry contains."""
    keyword: float
    cosine: float
    """Cosine similarity to the query (0 without an embedder)."""
    relevance: float
    recency: float
    tags: float
    """Share of the query's words that are tags of the entry."""


@dataclass(frozen=True, slots=True)
class MemorySlice:
    """Lines read from a memory file by `MemoryStore.read_lines`."""

    path: str
    from_line: int
    to_line: int
    total_lines: int
    text: str
    truncated: bool = False
    """True when the read stopped at `MemoryConfig.max_read_chars` (continue at `to_line + 1`)."""


class MemoryEntry(BaseModel):
    """One appended memory bullet: `- HH:MM text #tag` (MEMORY.md bullets carry the date too)."""

    v: Literal[1] = 1
    stamp: str
    text: str
    tags: tuple[str, ...] = ()

    def to_markdown(self) -> str:
        lines = self.text.split("\n")
        tail = "".join(f" #{tag}" for tag in self.tags)
        body = "\n".join([lines[0], *(f"  {line}" if line else "" for line in lines[1:])])
        return f"- {self.stamp} {body}{tail}"


@dataclass(frozen=True, slots=True)
class MemoryWriteResult:
    """Where `MemoryStore.write` put the entry."""

    path: str
    line: int
    """1-based line number of the new bullet."""
    entry: str
    """The markdown written."""
    created: bool
    """True when the file did not exist before."""


@dataclass(slots=True)
class SyncStats:
    """What one index sync did."""

    files: int = 0
    added: int = 0
    changed: int = 0
    deleted: int = 0
    read: int = 0
    """Files whose bytes were read (unchanged files are only stat'ed)."""
    skipped: int = 0
    chunks: int = 0
    """Chunks written."""


@dataclass(frozen=True, slots=True)
class ReindexStats:
    """Result of a full `MemoryStore.reindex`."""

    files: int
    chunks: int
    skipped: int
    seconds: float


class IndexMeta(BaseModel):
    """Format of the index; a mismatch with the running code drops and rebuilds it."""

    model_config = ConfigDict(frozen=True)

    v: int = INDEX_FORMAT_VERSION
    tokenizer: str = TOKENIZER
    chunk_chars: int
    chunk_overlap: int
    heading_weight: float
