"""Search: keyword (FTS5) and vector candidates, scored as the package docstring describes."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from datetime import date

from .models import MemoryConfig, MemoryHit, ScoreParts
from .text import _TOKEN_RE, _Term
from .vectors import VectorSearch

__all__ = ["run_search"]


@dataclass
class _Candidate:
    chunk_id: int
    path: str
    day: str | None
    start_line: int
    end_line: int
    tags: list[str]
    text: str = ""
    """Loaded only for the hits that are returned."""
    bm25: float = 0.0
    coverage: float = 0.0
    cosine: float = 0.0


_SELECT = (
    "SELECT c.id, f.path, f.day, c.start_line, c.end_line, c.tags{extra} "
    "FROM {source} JOIN chunks c ON c.id = m.rowid JOIN files f ON f.id = c.file_id"
)


def run_search(
    conn: sqlite3.Connection,
    config: MemoryConfig,
    query: str,
    terms: list[_Term],
    limit: int,
    min_score: float,
    today: date,
    vectors: VectorSearch | None,
    explain: bool,
) -> list[MemoryHit]:
    """The best `limit` hits for `query` (call inside one read transaction)."""
    wanted = max(config.candidates, limit * 10)
    candidates: dict[int, _Candidate] = {}
    if terms:
        rows = _fts(conn, " AND ".join(t.fts for t in terms), wanted)
        if rows:
            for cand in rows:
                cand.coverage = 1.0
                candidates[cand.chunk_id] = cand
        elif len(terms) > 1:
            present = [t for t in terms if _occurs(conn, t)]
            if present:
                rows = _fts(conn, " OR ".join(t.fts for t in present), wanted)
                _coverage(conn, rows, present, len(terms))
                candidates = {cand.chunk_id: cand for cand in rows}
    cos_floor = 0.0
    if vectors is not None and query.strip():
        similar = vectors.nearest(conn, query, wanted)
        if len(similar) >= wanted:
            cos_floor = max(0.0, min(similar.values()))
        missing = [chunk_id for chunk_id in similar if chunk_id not in candidates]
        for cand in _rows_by_id(conn, missing):
            candidates[cand.chunk_id] = cand
        for chunk_id, cosine in similar.items():
            if chunk_id in candidates:
                candidates[chunk_id].cosine = max(0.0, cosine)
    if not candidates:
        return []
    found = list(candidates.values())
    return _rank(conn, config, found, terms, limit, min_score, today, vectors, cos_floor, explain)


def _fts(conn: sqlite3.Connection, expression: str, wanted: int) -> list[_Candidate]:
    sql = _SELECT.format(
        extra=", m.rank",
        source="(SELECT rowid, rank FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rank LIMIT ?) m",
    )
    return [
        _Candidate(row[0], row[1], row[2], row[3], row[4], row[5].split(), bm25=max(0.0, -row[6]))
        for row in conn.execute(sql, (expression, wanted))
    ]


def _rows_by_id(conn: sqlite3.Connection, ids: list[int]) -> list[_Candidate]:
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    sql = _SELECT.format(extra="", source=f"(SELECT id AS rowid FROM chunks WHERE id IN ({marks})) m")
    return [
        _Candidate(row[0], row[1], row[2], row[3], row[4], row[5].split()) for row in conn.execute(sql, ids)
    ]


def _occurs(conn: sqlite3.Connection, term: _Term) -> bool:
    sql = "SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT 1"
    return conn.execute(sql, (term.fts,)).fetchone() is not None


def _coverage(conn: sqlite3.Connection, rows: list[_Candidate], terms: list[_Term], total: int) -> None:
    """Share of all `total` query terms each OR-candidate contains, asked of FTS5 so stemming agrees."""
    if not rows:
        return
    ids = [cand.chunk_id for cand in rows]
    marks = ",".join("?" * len(ids))
    hits: dict[int, int] = dict.fromkeys(ids, 0)
    for term in terms:
        for (rowid,) in conn.execute(
            f"SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? AND rowid IN ({marks})",
            (term.fts, *ids),
        ):
            hits[rowid] += 1
    for cand in rows:
        cand.coverage = hits[cand.chunk_id] / total


def _rank(
    conn: sqlite3.Connection,
    cfg: MemoryConfig,
    candidates: list[_Candidate],
    terms: list[_Term],
    limit: int,
    min_score: float,
    today: date,
    vectors: VectorSearch | None,
    cos_floor: float,
    explain: bool,
) -> list[MemoryHit]:
    best = max((cand.bm25 for cand in candidates), default=0.0)
    raw_terms = {term.raw for term in terms}
    # Cosine is stretched per query: a sentence encoder puts related and unrelated notes within a
    # narrow band (0.2-0.5), where recency would otherwise decide. `floor` is the cosine of the
    # last of the `wanted` nearest entries (0 when the index holds fewer): the best entry keeps
    # its cosine, the floor maps to 0, linear in between. With floor 0 this is the plain cosine.
    top_cos = max((cand.cosine for cand in candidates), default=0.0)
    floor_cos = cos_floor if 0.0 < cos_floor < top_cos else 0.0
    scored: list[tuple[float, int, _Candidate, ScoreParts]] = []
    for cand in candidates:
        strength = cand.bm25 / best if best > 0 else 1.0
        keyword = cand.coverage * (0.6 + 0.4 * strength) if cand.coverage else 0.0
        if vectors is not None:
            vector = top_cos * max(0.0, cand.cosine - floor_cos) / (top_cos - floor_cos) if top_cos else 0.0
            relevance = cfg.vector_weight * vector + (1 - cfg.vector_weight) * keyword
        else:
            relevance = keyword
        if relevance <= 0.0:
            continue  # a vector neighbour pointing away from the query is no match
        if cand.day is None:
            recency, day_rank = 1.0, date.max.toordinal()
        else:
            day = date.fromisoformat(cand.day)
            age = max(0, (today - day).days)
            recency, day_rank = 0.5 ** (age / cfg.half_life_days), day.toordinal()
        tag_score = min(1.0, len(raw_terms.intersection(cand.tags)) / len(raw_terms)) if raw_terms else 0.0
        score = (
            (1 - cfg.recency_weight - cfg.tag_weight) * relevance
            + cfg.recency_weight * recency
            + cfg.tag_weight * tag_score
        )
        score = min(1.0, max(0.0, score))
        if score >= min_score:
            parts = ScoreParts(
                bm25=round(cand.bm25, 4),
                bm25_norm=round(strength if cand.coverage else 0.0, 4),
                coverage=round(cand.coverage, 4),
                keyword=round(keyword, 4),
                cosine=round(cand.cosine, 4),
                relevance=round(relevance, 4),
                recency=round(recency, 4),
                tags=round(tag_score, 4),
            )
            scored.append((score, day_rank, cand, parts))
    scored.sort(key=lambda item: (-item[0], -item[1], item[2].path, item[2].start_line))
    top = scored[:limit]
    ids = [cand.chunk_id for _, _, cand, _ in top]
    marks = ",".join("?" * len(ids))
    texts = dict(conn.execute(f"SELECT id, text FROM chunks WHERE id IN ({marks})", ids).fetchall())
    hits: list[MemoryHit] = []
    for score, _, cand, parts in top:
        start, end, snippet = _snippet(
            replace(cand, text=texts.get(cand.chunk_id, "")), terms, cfg.snippet_chars
        )
        hits.append(
            MemoryHit(
                path=cand.path,
                start_line=start,
                end_line=end,
                score=round(score, 4),
                snippet=snippet,
                parts=parts if explain else None,
            )
        )
    return hits


def _snippet(cand: _Candidate, terms: list[_Term], max_chars: int) -> tuple[int, int, str]:
    """The chunk's lines around its best line, at most `max_chars`, with their exact line range.

    The best line is the one matching the most query terms (the first of equals); a line of its
    own longer than `max_chars` is cut around the match.
    """
    text = cand.text
    if len(text) <= max_chars:
        return cand.start_line, cand.end_line, text
    lines = text.split("\n")
    best, best_count = 0, 0
    for number, line in enumerate(lines):
        count = _terms_in_line(line, terms)
        if count > best_count:
            best, best_count = number, count
    first = best
    if first > 0 and len(lines[first - 1]) + len(lines[first]) + 1 <= max_chars:
        first -= 1
    picked: list[str] = []
    size = 0
    index = first
    while index < len(lines) and size + len(lines[index]) + (1 if picked else 0) <= max_chars:
        size += len(lines[index]) + (1 if picked else 0)
        picked.append(lines[index])
        index += 1
    if not picked:
        line = lines[first]
        folded = line.casefold()
        offsets = [folded.find(term.raw) for term in terms if term.raw and term.raw in folded]
        position = min(offsets, default=0)
        begin = max(0, min(position - max_chars // 4, len(line) - max_chars))
        picked = [line[begin : begin + max_chars]]
        index = first + 1
    return cand.start_line + first, cand.start_line + index - 1, "\n".join(picked)


def _terms_in_line(line: str, terms: list[_Term]) -> int:
    """How many query terms a line contains: whole words (or a shared stem of 5+ letters) for
    words, substrings for CJK runs and punctuated phrases."""
    folded = line.casefold()
    words: set[str] | None = None
    count = 0
    for term in terms:
        if term.kind != "word":
            count += term.raw in folded
            continue
        stem = term.raw[: max(5, len(term.raw) - 3)] if len(term.raw) >= 5 else term.raw
        if stem not in folded:
            continue
        if words is None:
            words = {match.group("word") for match in _TOKEN_RE.finditer(folded) if match.group("word")}
        count += term.raw in words or (len(term.raw) >= 5 and any(word.startswith(stem) for word in words))
    return count
