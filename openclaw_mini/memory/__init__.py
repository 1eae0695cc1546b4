"""Workspace memory: markdown files a person can read and edit, and a fast index to search them.

Layout: `MEMORY.md` (or `memory.md`) holds curated long-term facts; `memory/YYYY-MM-DD.md` holds
daily notes; any other `memory/**/*.md` is indexed too. The files are the truth: the index under
`<workspace>/.openclaw-mini/memory.sqlite` is a cache that is brought in step with them before
every search and rebuilt transparently when it is missing, unreadable or from another format
version.

Modules: `files` (which paths count, discovery, bounded reads, locked appends), `entries` (a file
cut into the units a person wrote), `index` (the SQLite schema and incremental sync), `search`
(candidates and scoring), `vectors` (embedding cache and cosine scan), `embeddings` (optional
local model and HTTP API embedders), `store` (`MemoryStore`, the one object callers use).

`MemoryStore` is synchronous on purpose: sqlite3 and file appends are blocking calls, and one
sync API serves the CLI, scripts and tests without an event loop. Async callers (the memory tools)
run its methods through `asyncio.to_thread`; a lock makes one store safe to share between threads,
and SQLite's WAL mode (opened through `openclaw_mini._sqlite`) makes several processes on one
workspace safe. Appends hold an exclusive file lock, so bullets from two processes never mix.

What is ranked: the entry a person wrote, not a window of text. A bullet with its indented
continuation lines (one `memory_write`), a prose paragraph, a fenced block, or a heading whose
section is empty; an entry over `chunk_chars` is cut into overlapping chunks. Each hit cites the
entry's exact lines (`path#Lstart-Lend`). Ranking ~1,600-character chunks let a chunk holding the
query words spread over unrelated bullets beat the one bullet holding them all (on the planted-
target benchmark in `bench/`: 0 of 20 targets in the top 3; ranking entries: 20 of 20).

Incremental: an unchanged file costs one stat; an append re-parses only the file's last entry
and what follows; an edit re-inserts only entries whose text hash is new (see `index`). No read
loads a whole file: `get`/`read_lines` stream with a character cap, and files over
`MemoryConfig.max_file_bytes` are left out of the index with a warning naming them.

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

Candidates: the entries matching ALL query terms (FTS5 AND, best `candidates` by BM25); only when
there is none, the entries matching ANY term that occurs at all. With an embedder, the entries
nearest to the query by cosine join them. The FTS table has two fields, the entry's text
(weight 1) and the heading it sits under (`heading_weight`, 0.3): a heading word counts, less.

Score, in 0..1 (see `MemoryConfig` for the weights; `search(explain=True)` and
`openclaw-mini memory search --explain` show every part):
  keyword   = coverage * (0.6 + 0.4 * bm25 / best_bm25_of_the_query)
  vector    = best_cos * (cos - floor) / (best_cos - floor)    (only with an `Embedder`)
  relevance = keyword, or 0.7 * vector + 0.3 * keyword when an `Embedder` is configured
  score     = 0.75 * relevance + 0.15 * recency + 0.10 * tag_match
FTS5's BM25 has no fixed scale (its IDF is floored at ~0 when a term occurs in half of a small
corpus), so it is normalised against the best candidate of the same query, and `coverage` (the
share of query terms an entry contains: 1 for the AND query, less in the per-term fallback) keeps
a partial match below a full one. Cosine is stretched the same way: a sentence encoder puts
related and unrelated notes in a narrow band (0.2-0.5 for MiniLM), where recency would decide;
`floor` is the cosine of the last of the `candidates` nearest entries (0 when the index holds
fewer, which leaves the plain cosine), so the nearest entry keeps its cosine and the background
maps to 0 (on the paraphrase benchmark: 15/20 targets in the top 3 with plain cosine, 18/20
stretched). Recency halves every 30 days from the date in the file name;
MEMORY.md and undated files never decay; `tag_match` is the share of query words that are tags of
the entry; on equal scores the newer file comes first.
"""

from __future__ import annotations

from .embeddings import EmbeddingsError, HttpEmbedder, LocalEmbedder, embedder_from_env
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
    "EmbeddingsError",
    "HttpEmbedder",
    "IndexMeta",
    "LocalEmbedder",
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
    "embedder_from_env",
    "index_tokens",
    "is_memory_path",
]
