"""Memory search: the FTS5 index against the original's linear keyword scan, and planted-target relevance.

Corpus: 50,000 lines in 200 daily files, generated from `random.Random(SEED)` (about a quarter of
the lines Chinese, a third tagged). Queries: 200 drawn from the same vocabulary (one to three words,
some Chinese, some tags, some with a word that occurs nowhere, which exercises the per-term fallback).

The baseline re-implements the TypeScript original's approach in Python: read every file on every
query, score each line as matching terms + 0.5 per matching tag + 0.3 x recency, keep the top 6.

Planted targets (`generate_planted`): 10,000 or 100,000 bullets (today's file holds 3,600 of them,
like a busy day), 20 queries of three words each; for each query exactly one bullet, in an older
file, holds all three words. Distractors make that hard for a ranker of large chunks: bullets
with two of the three words (repeated, some as tags, many in today's file) and runs of three
neighbouring bullets holding one word each.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from openclaw_mini.memory import MemoryStore

__all__ = ["SEED", "baseline_search", "generate_corpus", "generate_planted", "make_queries", "run"]

SEED = 20240601
FILES = 200
LINES_PER_FILE = 250
QUERIES = 200
BASELINE_QUERIES = 50
FIRST_DAY = date(2024, 1, 1)
NOW = datetime(2024, 7, 20, 12, 0, tzinfo=UTC)

_CHINESE = (
    "数据库 部署 会议 决定 客户 项目 预算 测试 服务器 设计 用户 需求 上线 版本 问题 修复 文档 计划 团队 周报 "
    "合同 发票 性能 缓存 日志 监控 报警 接口 前端 后端 迁移 备份 权限 账号 密码 支付 订单 报表 审核 培训"
).split()
_HANZI = (
    "的一是在人有我他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么"
    "心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样"
)
_TAGS = [
    f"t{n}" for n in range(10)
] + "deploy people todo decision budget infra travel health family ops".split()


def _vocabulary(rng: random.Random, size: int = 3000) -> list[str]:
    syllables = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "de", "va", "zu", "gan", "tor", "bel", "fin"]
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def _zipf_weights(size: int) -> list[float]:
    # Zipf's law (s = 1), like words in real notes: the top word is ~12% of all words.
    weights, total = [], 0.0
    for rank in range(1, size + 1):
        total += 1.0 / rank
        weights.append(total)
    return weights


def _chinese_vocabulary(rng: random.Random, size: int = 800) -> list[str]:
    words = set(_CHINESE)
    while len(words) < size:
        words.add("".join(rng.choice(_HANZI) for _ in range(rng.choice((2, 2, 2, 3)))))
    ordered = sorted(words - set(_CHINESE))
    rng.shuffle(ordered)
    for word in _CHINESE:  # the named words are common but not the most common ones
        ordered.insert(rng.randrange(20, 300), word)
    return ordered


def generate_corpus(root: Path, seed: int = SEED) -> tuple[list[str], int]:
    """Write the daily files under `root/memory`; returns (vocabulary, total lines)."""
    rng = random.Random(seed)
    vocabulary = _vocabulary(rng)
    rng.shuffle(vocabulary)
    cumulative = _zipf_weights(len(vocabulary))
    chinese = _chinese_vocabulary(rng)
    chinese_weights = _zipf_weights(len(chinese))
    folder = root / "memory"
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for day_index in range(FILES):
        day = FIRST_DAY + timedelta(days=day_index)
        lines = [f"# {day.isoformat()}", ""]
        while len(lines) < LINES_PER_FILE:
            minute = rng.randrange(24 * 60)
            if rng.random() < 0.25:
                words = rng.choices(chinese, cum_weights=chinese_weights, k=rng.randint(3, 7))
                sentence = "".join(words) + "。"
            else:
                count = rng.randint(5, 14)
                sentence = " ".join(rng.choices(vocabulary, cum_weights=cumulative, k=count))
            tags = "".join(f" #{rng.choice(_TAGS)}" for _ in range(rng.choice((0, 0, 1, 1, 2))))
            lines.append(f"- {minute // 60:02d}:{minute % 60:02d} {sentence}{tags}")
        path = folder / f"{day.isoformat()}.md"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        written = datetime(day.year, day.month, day.day, 23, 0, tzinfo=UTC).timestamp()
        os.utime(path, (written, written))  # old notes are old: no file is within an mtime tick
        total += len(lines)
    return vocabulary, total


def make_queries(vocabulary: list[str], count: int = QUERIES, seed: int = SEED) -> list[str]:
    rng = random.Random(seed + 1)
    queries: list[str] = []
    common = vocabulary[:1000]
    for index in range(count):
        kind = index % 10
        if kind < 5:
            queries.append(" ".join(rng.choice(common) for _ in range(rng.randint(1, 3))))
        elif kind < 7:
            queries.append(rng.choice(_CHINESE) + ("" if rng.random() < 0.5 else " " + rng.choice(_CHINESE)))
        elif kind < 8:
            queries.append(f"{rng.choice(common)} #{rng.choice(_TAGS)}")
        else:
            queries.append(f"{rng.choice(common)} {rng.choice(common)} zzqx{index}")  # AND misses: fallback
    return queries


def baseline_search(root: Path, query: str, today: date, limit: int = 6) -> list[tuple[float, str, int]]:
    """The original's linear scan: every file read, every line scored, on every query."""
    terms = [term.lower().lstrip("#") for term in query.split() if term.strip("#")]
    results: list[tuple[float, str, int]] = []
    for path in sorted((root / "memory").glob("*.md")):
        age = max(0, (today - date.fromisoformat(path.stem)).days)
        recency = 0.5 ** (age / 30)
        text = path.read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), start=1):
            lowered = line.lower()
            matched = sum(1 for term in terms if term in lowered)
            if not matched:
                continue
            tags = {word[1:] for word in lowered.split() if word.startswith("#")}
            score = matched + 0.5 * sum(1 for term in terms if term in tags) + 0.3 * recency
            results.append((score, path.name, number))
    results.sort(key=lambda item: -item[0])
    return results[:limit]


PLANTED_QUERIES = 20
TODAY_BULLETS = 3_600


@dataclass(frozen=True)
class Planted:
    query: str
    path: str
    line: int


def _bullet(rng: random.Random, words: list[str]) -> str:
    minute = rng.randrange(24 * 60)
    return f"- {minute // 60:02d}:{minute % 60:02d} {' '.join(words)}"


def generate_planted(root: Path, entries: int, seed: int = SEED) -> list[Planted]:
    """Write `entries` bullets under `root/memory` with 20 planted targets; returns the targets."""
    rng = random.Random(seed * 7 + entries)
    vocabulary = _vocabulary(rng)
    rng.shuffle(vocabulary)
    cumulative = _zipf_weights(len(vocabulary))
    pool = vocabulary[150:1500]
    rng.shuffle(pool)
    triples = [pool[3 * i : 3 * i + 3] for i in range(PLANTED_QUERIES)]
    owner = {word: index for index, triple in enumerate(triples) for word in triple}
    today = NOW.date()
    per_day = 200 if entries <= 20_000 else 1_000
    older = entries - TODAY_BULLETS
    days = [today - timedelta(days=offset) for offset in range(1, -(-older // per_day) + 1)]
    files: dict[date, list[str]] = {today: []}
    for day in days:
        files[day] = []

    def random_words(avoid: Sequence[str] = ()) -> list[str]:
        """5-14 Zipf-drawn words that never hold all three words of a query (nor any of `avoid`)."""
        while True:
            words = rng.choices(vocabulary, cum_weights=cumulative, k=rng.randint(5, 14))
            words = [word for word in words if word not in avoid] or [vocabulary[0]]
            counts: dict[int, set[str]] = {}
            for word in words:
                if word in owner:
                    counts.setdefault(owner[word], set()).add(word)
            if all(len(found) < 3 for found in counts.values()):
                return words

    budget = {today: TODAY_BULLETS, **{day: per_day for day in days}}
    budget[days[-1]] = older - per_day * (len(days) - 1)
    distractors: list[tuple[date, list[str]]] = []
    for triple in triples:
        for n in range(24):  # two of the three words, repeated; a third of them in today's file
            pair = [triple[n % 3], triple[(n + 1) % 3]]
            words = [*random_words(triple)[:6], *pair, *pair]
            if n % 4 == 0:
                words.append(f"#{pair[0]}")
            distractors.append((today if n % 3 == 0 else rng.choice(days), words))
    spread: list[tuple[date, list[list[str]]]] = []
    for triple in triples:
        for n in range(6):  # three neighbouring bullets, one query word each (twice)
            run = [[*random_words(triple)[:5], word, word] for word in triple]
            spread.append((today if n % 2 == 0 else rng.choice(days), run))
    for day, count in budget.items():
        files[day] = [_bullet(rng, random_words()) for _ in range(count)]
    for day, words in distractors:
        rng.shuffle(words)
        files[day][rng.randrange(len(files[day]))] = _bullet(rng, words)
    for day, run in spread:
        at = rng.randrange(len(files[day]) - 3)
        for offset, words in enumerate(run):
            files[day][at + offset] = _bullet(rng, words)
    targets: list[tuple[int, date, int]] = []
    for index, triple in enumerate(triples):
        day = rng.choice(days[len(days) // 3 :])  # an older note: recency does not help it
        words = [*random_words(triple)[:8], *triple]
        rng.shuffle(words)
        position = rng.randrange(len(files[day]))
        files[day][position] = _bullet(rng, words)
        targets.append((index, day, position))
    folder = root / "memory"
    folder.mkdir(parents=True, exist_ok=True)
    for day, bullets in files.items():
        path = folder / f"{day.isoformat()}.md"
        path.write_text(f"# {day.isoformat()}\n\n" + "\n".join(bullets) + "\n", encoding="utf-8")
        written = datetime(day.year, day.month, day.day, 23, 0, tzinfo=UTC).timestamp()
        os.utime(path, (written, written))
    return [
        Planted(" ".join(triples[index]), f"memory/{day.isoformat()}.md", position + 3)
        for index, day, position in targets
    ]


def planted_run(entries: int, rounds: int = 5) -> dict[str, float]:
    """Build, then rank the 20 planted queries; and time a search right after a write."""
    with tempfile.TemporaryDirectory(prefix="bench-memory-planted-") as folder:
        root = Path(folder)
        targets = generate_planted(root, entries)
        with MemoryStore(root, timezone="UTC", clock=lambda: NOW) as store:
            started = time.perf_counter()
            built = store.reindex()
            build = time.perf_counter() - started
            top3 = first = 0
            for target in targets:
                hits = store.search(target.query, limit=6)
                cited = [
                    hit.path == target.path and hit.start_line <= target.line <= hit.end_line for hit in hits
                ]
                top3 += any(cited[:3])
                first += bool(cited) and cited[0]
            timings: list[float] = []
            for _ in range(rounds):
                for target in targets:
                    started = time.perf_counter()
                    store.search(target.query, limit=6)
                    timings.append((time.perf_counter() - started) * 1000)
            after_write: list[float] = []
            for n in range(10):
                store.write(f"fresh planted note number {n} zorblax{n}", tags=("bench",))
                started = time.perf_counter()
                found = store.search(f"zorblax{n}")
                after_write.append((time.perf_counter() - started) * 1000)
                assert found and f"zorblax{n}" in found[0].snippet
    return {
        "build": build,
        "chunks": built.chunks,
        "top3": top3,
        "first": first,
        "p50": _percentile(timings, 0.5),
        "p95": _percentile(timings, 0.95),
        "after_write": _percentile(after_write, 0.5),
    }


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run() -> list[tuple[str, str, str]]:
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as folder:
        root = Path(folder)
        vocabulary, total_lines = generate_corpus(root)
        queries = make_queries(vocabulary)
        with MemoryStore(root, timezone="UTC", clock=lambda: NOW) as store:
            started = time.perf_counter()
            built = store.reindex()
            build_seconds = time.perf_counter() - started
            index_mb = store.index_path.stat().st_size / 1e6
            timings: list[float] = []
            empty = 0
            for query in queries:
                started = time.perf_counter()
                hits = store.search(query)
                timings.append((time.perf_counter() - started) * 1000)
                empty += not hits
            # one appended line, then the next search picks it up (stat all, read one file)
            target = root / "memory" / f"{(FIRST_DAY + timedelta(days=FILES - 1)).isoformat()}.md"
            with target.open("a", encoding="utf-8") as handle:
                handle.write("- 23:59 freshly appended kalomine note\n")
            started = time.perf_counter()
            fresh = store.search("freshly appended kalomine")
            incremental_ms = (time.perf_counter() - started) * 1000
        # The scan is ~100x slower, so it runs on a fixed sample to keep the bench under a minute;
        # the ratio compares both methods on that same sample.
        sample = sorted(random.Random(SEED + 2).sample(range(len(queries)), BASELINE_QUERIES))
        baseline: list[float] = []
        for index in sample:
            started = time.perf_counter()
            baseline_search(root, queries[index], NOW.date())
            baseline.append((time.perf_counter() - started) * 1000)
        same = [timings[index] for index in sample]

    small, large = planted_run(10_000), planted_run(100_000)
    p50, p95 = _percentile(timings, 0.5), _percentile(timings, 0.95)
    base50, base95 = _percentile(baseline, 0.5), _percentile(baseline, 0.95)
    same50, same95 = _percentile(same, 0.5), _percentile(same, 0.95)
    corpus = f"{total_lines:,} lines / {FILES} files"
    return [
        (
            "memory: first index build",
            f"{build_seconds:.2f} s ({built.chunks:,} chunks, {index_mb:.1f} MB; {corpus})",
            "-",
        ),
        ("memory: query p50 (FTS5, incl. sync)", f"{p50:.2f} ms", "< 10 ms"),
        ("memory: query p95 (FTS5, incl. sync)", f"{p95:.2f} ms", "-"),
        ("memory: queries with no hit", f"{empty} of {len(queries)}", "-"),
        ("memory: search after appending a line", f"{incremental_ms:.2f} ms (found: {bool(fresh)})", "-"),
        (f"memory: baseline linear scan p50 ({BASELINE_QUERIES} queries)", f"{base50:.1f} ms", "-"),
        (f"memory: baseline linear scan p95 ({BASELINE_QUERIES} queries)", f"{base95:.1f} ms", "-"),
        (
            "memory: speed-up vs linear scan, same queries (p50 / p95)",
            f"{base50 / same50:.0f}x / {base95 / same95:.0f}x",
            "-",
        ),
        (
            "memory: mean query (FTS5 / baseline)",
            f"{statistics.fmean(same):.2f} ms / {statistics.fmean(baseline):.1f} ms",
            "-",
        ),
        *_planted_rows("10k", small),
        *_planted_rows("100k", large),
    ]


def _planted_rows(label: str, result: dict[str, float]) -> list[tuple[str, str, str]]:
    n = PLANTED_QUERIES
    big = label == "100k"
    return [
        (
            f"memory planted {label}: target in top 3 / ranked first",
            f"{result['top3']:.0f}/{n} / {result['first']:.0f}/{n}",
            f">= 19/{n} / >= 18/{n}",
        ),
        (
            f"memory planted {label}: query p50 / p95 (incl. sync)",
            f"{result['p50']:.2f} ms / {result['p95']:.2f} ms",
            "<= 2 ms / <= 5 ms" if big else "-",
        ),
        (
            f"memory planted {label}: first index build",
            f"{result['build']:.2f} s ({result['chunks']:,.0f} entries)",
            "<= 3 s" if big else "-",
        ),
        (
            f"memory planted {label}: search right after a write (p50 of 10)",
            f"{result['after_write']:.2f} ms",
            "-" if big else "<= 5 ms",
        ),
    ]


if __name__ == "__main__":
    for row in run():
        print(" | ".join(row))
