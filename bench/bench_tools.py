"""Cost of the tool hardening: exec in a namespace vs. without, RE2 grep, race-free file access."""

from __future__ import annotations

import asyncio
import re
import statistics
import tempfile
import time
from pathlib import Path

from openclaw_mini.tools.base import ToolContext
from openclaw_mini.tools.exec_isolation import isolation
from openclaw_mini.tools.files import _LinearRegex, grep, read
from openclaw_mini.tools.policy import Sandbox, SandboxConfig
from openclaw_mini.tools.shell import run_command


def _median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.1f} ms"


async def _exec_times(workspace: Path, mode: str, runs: int = 15) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await run_command("true", workspace, time_limit=10, isolation=mode)  # type: ignore[arg-type]
        times.append(time.perf_counter() - started)
    return times


def run() -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp)
        if isolation().namespaces:
            rows.append(
                (
                    "exec 'true', user+PID namespace (median of 15)",
                    _median_ms(asyncio.run(_exec_times(workspace, "auto"))),
                    "measured",
                )
            )
        rows.append(
            (
                "exec 'true', no namespace (median of 15)",
                _median_ms(asyncio.run(_exec_times(workspace, "off"))),
                "-",
            )
        )

        line = "a" * 22 + "!"
        linear = _LinearRegex("(a+)+$")
        started = time.perf_counter()
        linear.line.search(line)
        rows.append(
            ("RE2 '(a+)+$' on 'a'*22+'!'", f"{(time.perf_counter() - started) * 1e6:.0f} us", "linear")
        )
        started = time.perf_counter()
        re.search("(a+)+$", line)
        rows.append(
            (
                "  Python re, same (grows 2x per 'a'; 30 a's: minutes)",
                f"{(time.perf_counter() - started) * 1000:.0f} ms",
                "-",
            )
        )

        text = "".join(f"line {i} with some ordinary text in it\n" for i in range(200_000))
        (workspace / "big.txt").write_text(text)
        ctx = ToolContext(
            workspace=workspace,
            session_key="agent:main:b",
            agent_id="main",
            sandbox=Sandbox(workspace, SandboxConfig()),
        )
        started = time.perf_counter()
        grep.function(pattern="line 199999 with", ctx=ctx)
        rows.append(
            (
                "grep 200,000-line file (7.8 MB), one match",
                f"{(time.perf_counter() - started) * 1000:.0f} ms",
                "-",
            )
        )

        deep = workspace.joinpath(*[f"d{i}" for i in range(8)])
        deep.mkdir(parents=True)
        (deep / "f.txt").write_text("x\n")
        rel = str((deep / "f.txt").relative_to(workspace))
        started = time.perf_counter()
        for _ in range(500):
            read.function(path=rel, ctx=ctx)
        rows.append(
            (
                "read, file 8 folders deep (fd walk per call)",
                f"{(time.perf_counter() - started) * 2:.2f} ms",
                "-",
            )
        )
    return rows
