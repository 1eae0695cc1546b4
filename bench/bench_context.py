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

from openclaw_mini.config import BootstrapConfig, CompactionConfig, PruningConfig
from openclaw_mini.context.bootstrap import BootstrapLoader
from openclaw_mini.context.compaction import plan_compaction
from openclaw_mini.context.prompt import build_system_prompt
from openclaw_mini.context.pruning import prune_messages
from openclaw_mini.tools.base import Tool, tool
from openclaw_mini.transcript import CompactionEntry, CustomEntry, MessageEntry, build_messages

AnyEntry = MessageEntry | CompactionEntry | CustomEntry

BOOTSTRAP_SIZES = {
    "AGENTS.md": 8_000,
    "SOUL.md": 2_000,
    "TOOLS.md": 3_000,
    "IDENTITY.md": 500,
    "USER.md": 1_500,
    "HEARTBEAT.md": 600,
    "BOOTSTRAP.md": 1_200,
    "MEMORY.md": 12_000,
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
        return tool(name=name)(function)

    return [
        make(name)
        for name in (
            "read",
            "write",
            "edit",
            "ls",
            "grep",
            "exec",
            "memory_search",
            "memory_get",
            "memory_write",
            "sessions_spawn",
        )
    ]


def _message(role: str, content: list[dict[str, Any]]) -> MessageEntry:
    # model_construct: the entries are known-good, and validating 100,000 of them would dominate the run.
    return MessageEntry.model_construct(role=role, content=content)


def session_entries(count: int, *, seed: int = 11) -> list[AnyEntry]:
    """A realistic agentic transcript: user turns with 0-3 tool round trips each."""
    rng = random.Random(seed)
    entries: list[AnyEntry] = []
    counter = 0
    while len(entries) < count:
        entries.append(_message("user", [{"type": "text", "text": "u" * rng.randint(20, 300)}]))
        for _ in range(rng.randint(0, 3)):
            counter += 1
            tool_id = f"toolu_{counter:08d}"
            entries.append(
                _message(
                    "assistant",
                    [
                        {"type": "text", "text": "thinking aloud " * rng.randint(1, 5)},
                        {
                            "type": "tool_use",
                            "id": tool_id,
                            "name": "read",
                            "input": {"path": f"src/file_{counter}.py"},
                        },
                    ],
                )
            )
            entries.append(
                _message(
                    "user",
                    [
                        {
                            "type": "tool_result",
                            "tool_use_id": tool_id,
                            "content": "r" * rng.randint(50, 6_000),
                        },
                    ],
                )
            )
        entries.append(_message("assistant", [{"type": "text", "text": "a" * rng.randint(20, 600)}]))
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
    now = datetime.now(UTC)
    window = 200_000
    pruning = PruningConfig.model_validate({})
    compaction = CompactionConfig.model_validate({})
    with tempfile.TemporaryDirectory() as folder:
        workspace = Path(folder)
        _workspace(workspace)
        loader = BootstrapLoader(workspace, BootstrapConfig.model_validate({}))
        loader.load()  # warm the cache

        def context_build(entries: list[AnyEntry]) -> Callable[[], None]:
            def build() -> None:
                bootstrap = loader.load()
                build_system_prompt(
                    agent_id="main", tools=tools, bootstrap=bootstrap, workspace=workspace, now=now
                )
                messages = build_messages(entries)
                prune_messages(messages, context_window_tokens=window, config=pruning)

            return build

        raw = session_entries(10_000)
        # A healthy session right below the compaction trigger: ~170k of a 200k window active.
        plan = plan_compaction(raw, keep_recent_tokens=170_000)
        assert plan is not None
        compacted: list[AnyEntry] = [
            *raw,
            CompactionEntry(summary="## Goal\n" + "s" * 6_000, first_kept_id=plan.first_kept_id),
        ]
        active = prune_messages(build_messages(compacted), context_window_tokens=window, config=pruning)
        ms = _median_ms(context_build(compacted), 31)
        rows.append(
            (
                f"context build (warm bootstrap 8 files + prompt + build_messages + pruning), 10,000-entry "
                f"session, compacted ({len(plan.kept)} entries, ~{active.tokens_before:,} tokens active)",
                f"{ms:.1f} ms",
                "< 50 ms",
            )
        )
        ms = _median_ms(context_build(raw), 15)
        messages = build_messages(raw)
        pruned = prune_messages(messages, context_window_tokens=window, config=pruning)
        rows.append(
            (
                f"context build, same 10,000 entries never compacted (worst case: ~{pruned.tokens_before:,} "
                f"tokens, {pruned.soft_trimmed} trimmed + {pruned.cleared} cleared)",
                f"{ms:.1f} ms",
                "< 50 ms",
            )
        )
        build_ms = _median_ms(lambda: build_messages(raw), 15)
        rows.append(("  of which build_messages (transcript.py), 10,000 entries", f"{build_ms:.1f} ms", "-"))
        prune_ms = _median_ms(
            lambda: prune_messages(messages, context_window_tokens=window, config=pruning), 15
        )
        rows.append(
            ("  of which prune_messages, 10,000 messages over the window", f"{prune_ms:.1f} ms", "linear")
        )
        quiet_ms = _median_ms(
            lambda: prune_messages(messages, context_window_tokens=100_000_000, config=pruning), 15
        )
        rows.append(("prune_messages, 10,000 messages under the thresholds", f"{quiet_ms:.1f} ms", "linear"))
        load_us = _median_ms(loader.load, 200) * 1_000
        rows.append(("bootstrap load, 8 files unchanged (9 lstat calls)", f"{load_us:.0f} us", "-"))
        prompt_us = (
            _median_ms(
                lambda: build_system_prompt(
                    agent_id="main", tools=tools, bootstrap=loader.load(), workspace=workspace, now=now
                ),
                200,
            )
            * 1_000
        )
        rows.append(("bootstrap load + build_system_prompt", f"{prompt_us:.0f} us", "-"))
        plan_ms = _median_ms(
            lambda: plan_compaction(raw, keep_recent_tokens=compaction.keep_recent_tokens), 15
        )
        rows.append(("plan_compaction, 10,000 entries", f"{plan_ms:.1f} ms", "linear"))

    big = session_entries(100_000, seed=12)
    big_plan = plan_compaction(big, keep_recent_tokens=compaction.keep_recent_tokens)
    assert big_plan is not None
    resumed: list[AnyEntry] = [
        *big,
        CompactionEntry(summary="## Goal\n" + "s" * 6_000, first_kept_id=big_plan.first_kept_id),
    ]
    resume_ms = _median_ms(lambda: build_messages(resumed), 31)
    rows.append(
        (
            f"build_messages, compacted 100,000-entry session ({len(big_plan.kept)} entries kept)",
            f"{resume_ms:.2f} ms",
            "in-memory part of the < 1 s resume",
        )
    )
    return rows


if __name__ == "__main__":
    for name, measured, goal in run():
        print(f"{name:<120} {measured:>10}   goal: {goal}")
