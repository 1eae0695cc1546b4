"""Workspace memory: markdown files a person can read and edit, and a fast index to search them.

Layout: `MEMORY.md` (or `memory.md`) holds curated long-term facts; `memory/YYYY-MM-DD.md` holds
daily notes; any other `memory/**/*.md` is indexed too. The files are the truth: the index under
`<workspace>/.openclaw-mini/memory.sqlite` is a cache that is brought in step with them before
every search (stat first, then a hash for files whose mtime or size moved) and rebuilt
transparently when it is missing, unreadable or from another format version.

`MemoryStore` is synchronous on purpose: sqlite3 and file appends are blocking calls, and one
sync API serves the CLI, scripts and tests without an event loop. Async callers (the memory tools)
run its methods through `asyncio.to_thread`; a lock makes one store safe to share between threads,
and SQLite's WAL mode makes several processes on one workspace safe.

Tokenisation (why CJK bigrams and not the FTS5 `trigram` tokenizer): text is pre-tokenised in
Python, CJK runs become overlapping bigrams plus the run's last character (so a one-character
query can still be answered by a prefix query), and other words pass through; the result goes into
one FTS5 table with `porter unicode61` (case folding, diacritics, English stems). Measured on the
benchmark corpus (50,000 lines in 200 files, a quarter of the lines Chinese) against a `unicode61`
table plus a `trigram` table over the same chunks: build times were alike (~1.7 s), raw FTS
queries were both well under a millisecond at p50, and the bigram index was half the size (16 MB
vs 33 MB). The deciding difference: a trigram cannot match a query shorter than three characters,
and most Chinese words are two characters long ("数据", "决定"); all 40 Chinese queries of the
benchmark (each with a two-character word) found nothing in the trigram table, while the bigram
index answers them, and one-character queries too.

Score, in 0..1 (see `MemoryConfig` for the weights):
  relevance = keyword, or 0.7 * cosine + 0.3 * keyword when an `Embedder` is configured
  keyword   = coverage * (0.6 + 0.4 * bm25 / best_bm25_of_the_query)
  score     = 0.75 * relevance + 0.15 * recency + 0.10 * tag_match
FTS5's BM25 has no fixed scale (its IDF is floored at ~0 when a term occurs in half of a small
corpus), so it is normalised against the best hit of the same query, and `coverage` (the share of
query terms a chunk contains: 1 for the AND query, less in the per-term fallback) keeps a partial
match below a full one. Recency halves every 30 days from the date in the file name; MEMORY.md and
undated files never decay; on equal scores the newer file comes first.
"""

from __future__ import annotations

from .models import (
    MEMORY_PROMPT_GUIDANCE,
    Embedder,
    IndexMeta,
    MemoryConfig,
    MemoryEntry,
    MemoryHit,
    MemoryPathError,
    MemorySlice,
    MemoryWriteResult,
    ReindexStats,
    ScoreParts,
    SyncStats,
)
from .store import MemoryStore
from .text import chunk_lines, index_tokens, is_memory_path

__all__ = [
    "MEMORY_PROMPT_GUIDANCE",
    "Embedder",
    "IndexMeta",
    "MemoryConfig",
    "MemoryEntry",
    "MemoryHit",
    "MemoryPathError",
    "MemorySlice",
    "MemoryStore",
    "MemoryWriteResult",
    "ReindexStats",
    "ScoreParts",
    "SyncStats",
    "chunk_lines",
    "index_tokens",
    "is_memory_path",
]
