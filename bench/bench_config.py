"""Config files and MCP: CLI start-up with a config file present, loading the settings, and the
cost of an MCP server (start + tool list, one tool call over stdio)."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EDGE = ROOT / "tests" / "fixtures" / "mcp_edge_server.py"
CONFIG = """model = "claude-sonnet-4-6"
max_tokens = 4096
[sandbox]
allow_exec = true
[approval]
write = "ask"
"group:runtime" = "ask"
[heartbeat]
every = "1h"
[mcp_servers.edge]
command = "python"
args = ["server.py"]
"""


def _wall(command: list[str], cwd: Path, env: dict[str, str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=cwd, env=env)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def _mcp_costs(workspace: Path) -> tuple[float, float]:
    from openclaw_mini.mcp.config import McpServerConfig
    from openclaw_mini.mcp.servers import McpManager

    config = McpServerConfig(command=sys.executable, args=[str(EDGE)])
    manager = McpManager({"edge": config}, workspace, None)
    try:
        started = time.perf_counter()
        await manager.start()
        start_ms = (time.perf_counter() - started) * 1000
        server = manager.servers["edge"]
        await server.call("echo", {"text": "warm"})
        calls = 200
        started = time.perf_counter()
        for _ in range(calls):
            await server.call("echo", {"text": "x"})
        call_ms = (time.perf_counter() - started) * 1000 / calls
    finally:
        await manager.aclose()
    return start_ms, call_ms


def run() -> list[tuple[str, str, str]]:
    from openclaw_mini.settings import load_settings

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        workspace = Path(folder) / "ws"
        workspace.mkdir()
        (workspace / "openclaw-mini.toml").write_text(CONFIG)
        user = Path(folder) / "config" / "openclaw-mini"
        user.mkdir(parents=True)
        (user / "config.toml").write_text("max_turns = 10\n[sandbox]\nallow_write = true\n")
        (workspace / ".mcp.json").write_text(json.dumps({"mcpServers": {"t": {"command": "true"}}}))
        env = {**os.environ, "XDG_CONFIG_HOME": str(Path(folder) / "config")}
        python = sys.executable
        help_ms = _wall([python, "-m", "openclaw_mini.cli.main", "--help"], workspace, env)
        rows.append(
            ("openclaw-mini --help, config files present (median of 5)", f"{help_ms:.0f} ms", "< 300 ms")
        )
        show = [python, "-m", "openclaw_mini.cli.main", "config", "show"]
        rows.append(
            (
                "openclaw-mini config show (loads both files, median of 5)",
                f"{_wall(show, workspace, env):.0f} ms",
                "-",
            )
        )
        base = [python, "-c", "import openclaw_mini.agent"]
        loaded = [
            python,
            "-c",
            "import openclaw_mini.agent, openclaw_mini.settings as s; s.load_settings('.')",
        ]
        extra = _wall(loaded, workspace, env) - _wall(base, workspace, env)
        rows.append(("config cost at chat/run start (import + first load)", f"{extra:.0f} ms", "-"))
        saved = os.environ.get("XDG_CONFIG_HOME")
        os.environ["XDG_CONFIG_HOME"] = env["XDG_CONFIG_HOME"]
        try:
            load_settings(workspace)  # the first call builds the settings class
            runs = 50
            started = time.perf_counter()
            for _ in range(runs):
                load_settings(workspace)
            per_load = (time.perf_counter() - started) * 1000 / runs
        finally:
            if saved is None:
                os.environ.pop("XDG_CONFIG_HOME", None)
            else:
                os.environ["XDG_CONFIG_HOME"] = saved
        rows.append(("load_settings (2 TOML files + env + .mcp.json)", f"{per_load:.2f} ms", "< 20 ms"))
        start_ms, call_ms = asyncio.run(_mcp_costs(workspace))
    rows.append(("MCP stdio server: start + list tools (SDK server)", f"{start_ms:.0f} ms", "< 3 s"))
    rows.append(("MCP tool call round trip over stdio (mean of 200)", f"{call_ms:.2f} ms", "< 20 ms"))
    return rows


if __name__ == "__main__":
    for row in run():
        print(" | ".join(row))
