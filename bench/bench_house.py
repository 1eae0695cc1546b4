"""Costs that grow with the history or with the number of sessions an agent serves.

- 1,000 tool steps with 1 KB results: the history passes the pruning threshold early; a step must
  cost what it adds, so the first and last 10% of steps should take about as long.
- 10,000 sessions through one `Agent`: resident memory must stay bounded by the session cache.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path

from openclaw_mini import Agent, tool
from openclaw_mini.testing import ScriptedModel, text_reply, tool_reply

STEPS = 1_000
SESSIONS = 10_000
USAGE = {"input_tokens": 1_000, "output_tokens": 20}


STAMPS: list[float] = []


@tool
async def kilobyte(value: int) -> str:
    """Return 1 KB of text (a typical small tool result)."""
    STAMPS.append(time.perf_counter())  # the gap between two calls is one whole step
    return f"{value:06d} " + "x" * 1_017


async def _long_run(workspace: Path) -> tuple[float, float]:
    model = ScriptedModel()
    steps = [tool_reply(("kilobyte", {"value": i}), usage=USAGE) for i in range(STEPS)]
    model.queue(text_reply("warm", usage=USAGE), *steps, text_reply("done", usage=USAGE))
    STAMPS.clear()
    async with Agent(
        workspace_dir=workspace,
        model=model,
        tools=[kilobyte],
        max_turns=STEPS + 1,
        enable_memory=False,
        enable_skills=False,
    ) as agent:
        await agent.run("warm-up", "hi")
        result = await agent.run("bench", "go")
    assert len(result.tool_calls) == STEPS
    gaps = [b - a for a, b in itertools.pairwise(STAMPS)]
    tenth = len(gaps) // 10
    return statistics.mean(gaps[:tenth]) * 1000, statistics.mean(gaps[-tenth:]) * 1000


def _rss_mib() -> float:
    with open(f"/proc/{os.getpid()}/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


async def _many_sessions(workspace: Path) -> list[tuple[int, float]]:
    reply = "y" * 2_000
    model = ScriptedModel(handler=lambda request: text_reply(reply, usage=USAGE))
    marks: list[tuple[int, float]] = []
    async with Agent(
        workspace_dir=workspace, model=model, enable_memory=False, enable_skills=False, enable_context=False
    ) as agent:
        for index in range(1, SESSIONS + 1):
            await agent.run(f"s{index}", "z" * 2_000)
            model.requests.clear()  # the scripted model keeps every request; the agent must not
            if index in (1_000, 5_000, SESSIONS):
                gc.collect()
                marks.append((index, _rss_mib()))
    return marks


def run() -> list[tuple[str, str, str]]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        # Sessions first: the long run's scripted model keeps every request it was sent.
        started = time.perf_counter()
        marks = asyncio.run(_many_sessions(Path(folder) / "b"))
        elapsed = time.perf_counter() - started
        rss = " -> ".join(f"{mib:.0f}" for _, mib in marks)
        growth = marks[-1][1] - marks[0][1]
        rows.append(
            (
                f"{SESSIONS:,} sessions through one Agent: RSS growth 1k -> 10k",
                f"{growth:+.0f} MiB (RSS {rss} MiB at 1k/5k/10k; {elapsed / SESSIONS * 1000:.1f} ms/session)",
                "bounded by the session cache",
            )
        )
        first, last = asyncio.run(_long_run(Path(folder) / "a"))
        rows.append(
            (
                "1,000 tool steps, 1 KB results: step, first 10% -> last 10%",
                f"{first:.2f} -> {last:.2f} ms ({last / first:.1f}x)",
                "flat",
            )
        )
    return rows


if __name__ == "__main__":
    for row in run():
        print(" | ".join(row))
