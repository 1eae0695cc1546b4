"""The semantic half of search: entry vectors from an `Embedder`, cached, and a cosine scan.

Vectors are stored per chunk and model, and also in `embed_cache` under `model:text-hash`, so
re-indexing a file (or a rebuilt chunk row with the same text) never asks the embedder again.
The scan is a matrix product when numpy is installed (the `embeddings` extra brings it) and a
plain-Python loop otherwise.
"""

from __future__ import annotations

import heapq
import math
import operator
import sqlite3
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._sqlite import write_transaction
from .index import bump_generation, generation
from .models import Embedder

__all__ = ["VectorSearch", "embedder_name"]

_EMBED_BATCH = 64


def embedder_name(embedder: Embedder) -> str:
    return str(getattr(embedder, "name", "") or type(embedder).__qualname__)


def _pack(vector: Sequence[float]) -> bytes:
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return array("f", (x / norm for x in vector)).tobytes()


def _unpack(blob: bytes) -> array[float]:
    values = array("f")
    values.frombytes(blob)
    return values


@dataclass
class _Cache:
    generation: int = -1
    ids: list[int] = field(default_factory=list)
    vectors: list[array[float]] = field(default_factory=list)
    matrix: Any = None
    """The same vectors as one numpy matrix (rows aligned with `ids`), when numpy is there."""


class VectorSearch:
    """Fills missing vectors after a sync and finds the entries nearest to a query."""

    def __init__(self, embedder: Embedder, warn: Callable[[str], None]) -> None:
        self.embedder = embedder
        self.name = embedder_name(embedder)
        self._warn = warn
        self._cache = _Cache()
        self._checked = False

    def reset(self) -> None:
        self._cache = _Cache()
        self._checked = False

    def fill(self, conn: sqlite3.Connection, *, changed: bool) -> None:
        """Embed chunks that have no vector for this embedder yet (from the cache when possible)."""
        if not changed and self._checked:
            return
        self._checked = True
        missing = conn.execute(
            "SELECT c.id, c.text, c.hash FROM chunks c LEFT JOIN vectors v "
            "ON v.chunk_id = c.id AND v.model = ? WHERE v.chunk_id IS NULL",
            (self.name,),
        ).fetchall()
        if not missing:
            return
        rows: list[tuple[int, bytes, str]] = []
        to_embed: list[tuple[int, str, str]] = []
        for chunk_id, text, digest in missing:
            key = f"{self.name}:{digest}"
            cached = conn.execute("SELECT vec FROM embed_cache WHERE key = ?", (key,)).fetchone()
            if cached is not None:
                rows.append((chunk_id, cached[0], key))
            else:
                to_embed.append((chunk_id, text, key))
        fresh: list[tuple[int, bytes, str]] = []
        try:
            for begin in range(0, len(to_embed), _EMBED_BATCH):
                batch = to_embed[begin : begin + _EMBED_BATCH]
                vectors = self.embedder.embed([text for _, text, _ in batch])
                if len(vectors) != len(batch):
                    raise ValueError(f"returned {len(vectors)} vectors for {len(batch)} texts")
                for (chunk_id, _, key), vector in zip(batch, vectors, strict=True):
                    fresh.append((chunk_id, _pack(vector), key))
        except Exception as exc:
            self._warn(f"embedder {self.name} failed ({exc}); memory search uses keywords only")
            self._checked = False
        if not rows and not fresh:
            return
        with write_transaction(conn):
            conn.executemany(
                "INSERT OR REPLACE INTO vectors (chunk_id, model, vec) "
                "SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM chunks WHERE id = ?)",
                [(chunk_id, self.name, blob, chunk_id) for chunk_id, blob, _ in rows + fresh],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO embed_cache (key, vec) VALUES (?, ?)",
                [(key, blob) for _, blob, key in fresh],
            )
            bump_generation(conn)

    def nearest(self, conn: sqlite3.Connection, query: str, count: int) -> dict[int, float]:
        """Top `count` chunks by cosine similarity to the query."""
        current = generation(conn)
        if self._cache.generation != current:
            cache = _Cache(generation=current)
            for chunk_id, blob in conn.execute(
                "SELECT chunk_id, vec FROM vectors WHERE model = ?", (self.name,)
            ):
                cache.ids.append(chunk_id)
                cache.vectors.append(_unpack(blob))
            self._cache = cache
        cache = self._cache
        if not cache.ids:
            return {}
        try:
            query_vector = _unpack(_pack(self.embedder.embed([query])[0]))
        except Exception as exc:
            self._warn(f"embedder {self.name} failed on the query ({exc}); keywords only")
            return {}
        try:
            import numpy as np
        except ImportError:
            scored = (
                (sum(map(operator.mul, query_vector, vector)), chunk_id)
                for chunk_id, vector in zip(cache.ids, cache.vectors, strict=True)
                if len(vector) == len(query_vector)
            )
            return {chunk_id: score for score, chunk_id in heapq.nlargest(count, scored)}
        if cache.matrix is None:
            width = len(query_vector)
            kept = [(i, v) for i, v in zip(cache.ids, cache.vectors, strict=True) if len(v) == width]
            cache.ids = [i for i, _ in kept]
            cache.vectors = [v for _, v in kept]
            cache.matrix = np.frombuffer(b"".join(v.tobytes() for v in cache.vectors), dtype=np.float32)
            cache.matrix = cache.matrix.reshape(len(kept), width) if kept else None
        if cache.matrix is None or cache.matrix.shape[1] != len(query_vector):
            return {}
        scores = cache.matrix @ np.frombuffer(query_vector.tobytes(), dtype=np.float32)
        top = min(count, len(scores))
        best = np.argpartition(-scores, top - 1)[:top]
        return {cache.ids[int(i)]: float(scores[int(i)]) for i in best}
