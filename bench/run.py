"""Run every benchmark module in bench/ and print one table: `python bench/run.py [name ...]`."""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(selected: list[str]) -> int:
    sys.path.insert(0, str(HERE))
    modules = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if selected:
        modules = [m for m in modules if m.removeprefix("bench_") in selected or m in selected]
    rows: list[tuple[str, str, str, str]] = []
    failed = 0
    for name in modules:
        started = time.perf_counter()
        try:
            module = importlib.import_module(name)
            for bench, result, goal in module.run():
                rows.append((name.removeprefix("bench_"), bench, result, goal))
        except Exception as exc:  # one broken bench must not hide the others
            failed += 1
            rows.append((name.removeprefix("bench_"), "FAILED", f"{type(exc).__name__}: {exc}", ""))
        print(f"# {name} took {time.perf_counter() - started:.1f} s", file=sys.stderr)
    widths = [max(len(r[i]) for r in [("area", "benchmark", "result", "goal"), *rows]) for i in range(4)]
    header = ("area", "benchmark", "result", "goal")
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
