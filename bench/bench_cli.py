"""The terminal's start-up: how long a user waits for `--help`, for the chat prompt in a real
pseudo-terminal (prompt_toolkit is imported only there), and for a piped `run` reply."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from openclaw_mini.testing import FakeAnthropicServer, text_reply

CLI = [sys.executable, "-m", "openclaw_mini.cli.main"]


def _env(url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    env.update(ANTHROPIC_API_KEY="bench", ANTHROPIC_BASE_URL=url, OPENCLAW_MINI_HOME=str(home), TERM="xterm")
    return env


def _median_ms(action: object, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def run() -> list[tuple[str, str, str]]:
    import pexpect

    rows = []
    with tempfile.TemporaryDirectory() as folder, FakeAnthropicServer() as server:
        workspace = Path(folder) / "ws"
        workspace.mkdir()
        env = _env(server.url, Path(folder))
        help_ms = _median_ms(lambda: subprocess.run([*CLI, "--help"], check=True, capture_output=True))
        rows.append(("openclaw-mini --help (median of 5)", f"{help_ms:.0f} ms", "< 300 ms"))

        def to_prompt() -> None:
            child = pexpect.spawn(CLI[0], [*CLI[1:], "chat", "-w", str(workspace)], env=env, timeout=30)
            try:
                child.expect("you ")
            finally:
                child.close(force=True)

        rows.append(
            ("chat: start to prompt in a pty (median of 5)", f"{_median_ms(to_prompt):.0f} ms", "< 1 s")
        )

        def piped_run() -> None:
            server.queue(text_reply("ok"))
            subprocess.run(
                [*CLI, "run", "-w", str(workspace)],
                input="hi",
                text=True,
                env=env,
                check=True,
                capture_output=True,
            )

        rows.append(
            ("echo hi | run: start to reply (median of 5)", f"{_median_ms(piped_run):.0f} ms", "measured")
        )
    return rows


if __name__ == "__main__":
    for row in run():
        print(" | ".join(row))
