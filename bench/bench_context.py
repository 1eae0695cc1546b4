"""Context subsystem benchmarks: the per-run context build and history rebuild of large sessions.

Run: `python bench/bench_context.py`. Everything is in memory except the (warm) bootstrap stat calls.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from openclaw_mini.config import BootstrapConfig, CompactionConfig, PruningConfig  # noqa: E402
from openclaw_mini.context.bootstrap import BootstrapLoader  # noqa: E402
from openclaw_mini.context.compaction import plan_compaction  # noqa: E402
from openclaw_mini.context.prompt import build_system_prompt  # noqa: E402
from openclaw_mini.context.pruning import prune_messages  # noqa: E402
from openclaw_mini.tools.base import Tool, tool  # noqa: E402
from openclaw_mini.transcript import CompactionEntry, CustomEntry, MessageEntry, build_messages  # noqa: E402

AnyEntry = MessageEntry | CompactionEntry | CustomEntry

BOOTSTRAP_SIZES = {
    "AGENTS.md": 8_000, "SOUL.md": 2_000, "TOOLS.md": 3_000, "IDENTITY.md": 500,
    "USER.md": 1_500, "HEARTBEAT.md": 600, "BOOTSTRAP.md": 1_200, "MEMORY.md": 12_000,
}


def _workspace(root: Path) -> None:
    rng = random.Random(1)
    words = ["agent", "workspace", "memory", "tool", "deploy", "review", "note", "user", "file", "run"]
    for name, size in BOOTSTRAP_SIZES.items():
        text: list[str] = [f"# {name}\n"]
        length = 0
        while length < size:
            line = "- " + " ".join(rng.choice(words) for _ in range(12)) + "\n"
            text.append(line)
            length += len(line)
        (root / name).write_text("".join(text), encoding="utf-8")


def _tools() -> list[Tool]:
    def make(name: str) -> Tool:
        def function(path: str) -> str:
            return path

        function.__doc__ = f"The {name} tool: does {name} things in the workspace."
        return tool(function, name=name)

    return [make(name) for name in ("read", "write", "edit", "ls", "grep", "exec", "memory_search",
                                    "memory_get", "memory_write", "sessions_spawn")]


def session_entries(count: int, *, seed: int = 11) -> list[AnyEntry]:
    """A realistic agentic transcript: user turns with 0-3 tool round trips each."""
    rng = random.Random(seed)
    entries: list[AnyEntry] = []
    counter = 0
    while len(entries) < count:
        entries.append(MessageEntry(role="user", content=[{"type": "text", "text": "u" * rng.randint(20, 300)}]))
        for _ in range(rng.randint(0, 3)):
            counter += 1
            tool_id = f"toolu_{counter:08d}"
            entries.append(MessageEntry(role="assistant", content=[
                {"type": "text", "text": "thinking aloud " * rng.randint(1, 5)},
                {"type": "tool_use", "id": tool_id, "name": "read", "input": {"path": f"src/file_{counter}.py"}},
            ]))
            entries.append(MessageEntry(role="user", content=[
                {"type": "tool_result", "tool_use_id": tool_id, "content": "r" * rng.randint(50, 6_000)},
            ]))
        entries.append(MessageEntry(role="assistant", content=[{"type": "text", "text": "a" * rng.randint(20, 600)}]))
    return entries[:count]


def _median_ms(function: Callable[[], Any], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        samples.append((time.perf_counter() - start) * 1_000)
    return statistics.median(samples)


def run() -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    tools = _tools()
    with tempfile.TemporaryDirectory() as folder:
        workspace = Path(folder)
        _workspace(workspace)
        loader = BootstrapLoader(workspace, BootstrapConfig())
        loader.load()  # warm the cache
        entries = session_entries(10_000)
        now = datetime.now(UTC)
        window = 200_000
        pruning = PruningConfig()

        def context_build() -> None:
            bootstrap = loader.load()
            build_system_prompt(agent_id="main", tools=tools, bootstrap=bootstrap, workspace=workspace, now=now)
            messages = build_messages(entries)
            prune_messages(messages, context_window_tokens=window, config=pruning)

        build_ms = _median_ms(context_build, 15)
        rows.append(("context build: warm bootstrap (8 files) + prompt + build_messages + pruning, "
                     "10,000-entry session", f"{build_ms:.1f} ms", "< 50 ms"))
        load_us = _median_ms(loader.load, 200) * 1_000
        rows.append(("bootstrap load, 8 files unchanged (stat only)", f"{load_us:.0f} us", "a few stat calls"))

        messages = build_messages(entries)
        result = prune_messages(messages, context_window_tokens=window, config=pruning)
        prune_ms = _median_ms(lambda: prune_messages(messages, context_window_tokens=window, config=pruning), 15)
        rows.append((f"prune_messages, 10,000 entries (~{result.tokens_before:,} tokens, "
                     f"{result.soft_trimmed} trimmed, {result.cleared} cleared)", f"{prune_ms:.1f} ms", "linear"))
        big_window = 10_000_000
        quiet_ms = _median_ms(lambda: prune_messages(messages, context_window_tokens=big_window, config=pruning), 15)
        rows.append(("prune_messages, 10,000 entries, under thresholds", f"{quiet_ms:.1f} ms", "linear"))
        _, keep_recent = (20_000, CompactionConfig().keep_recent_tokens)
        plan_ms = _median_ms(lambda: plan_compaction(entries, keep_recent_tokens=keep_recent), 15)
        rows.append(("plan_compaction, 10,000 entries", f"{plan_ms:.1f} ms", "linear"))

    big = session_entries(100_000, seed=12)
    plan = plan_compaction(big, keep_recent_tokens=20_000)
    assert plan is not None
    compacted: list[AnyEntry] = [*big, CompactionEntry(summary="## Goal\n" + "s" * 6_000,
                                                       first_kept_id=plan.first_kept_id)]
    resume_ms = _median_ms(lambda: build_messages(compacted), 15)
    kept = len(plan.kept)
    rows.append((f"build_messages, compacted 100,000-entry session ({kept} entries kept)",
                 f"{resume_ms:.2f} ms", "in-memory part of < 1 s resume"))
    return rows


if __name__ == "__main__":
    for name, measured, goal in run():
        print(f"{name:<110} {measured:>12}   goal: {goal}")
