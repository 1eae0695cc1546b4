"""The heartbeat: the agent checks HEARTBEAT.md on its own and speaks only when something is due.

    export ANTHROPIC_API_KEY=sk-ant-...
    python examples/heartbeat.py            # deliver mode: the agent runs a heartbeat turn
    python examples/heartbeat.py callback   # callback mode: your code gets the due tasks

Replies of `HEARTBEAT_OK` (nothing to report) and repeats of the same message within 24 hours
are never delivered. Outside active hours nothing runs, and an empty HEARTBEAT.md costs no
model call.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from openclaw_mini import Agent, HeartbeatConfig, HeartbeatRequest, HeartbeatTask

HEARTBEAT_MD = """\
# Heartbeat
- [ ] If notes.txt mentions a deadline in the next 3 days, remind me of it.
- [x] Set up the workspace (done: checked items are not sent)
"""


async def deliver_mode(agent: Agent) -> None:
    delivered = asyncio.Event()

    def deliver(text: str, request: HeartbeatRequest) -> None:
        print(f"[heartbeat · {request.reason}] {text}")
        delivered.set()

    agent.start_heartbeat(deliver=deliver)
    agent.request_heartbeat("manual")  # don't wait 30 minutes for the first tick
    try:
        await asyncio.wait_for(delivered.wait(), timeout=120)
    except TimeoutError:
        print("(nothing was worth delivering: the agent answered HEARTBEAT_OK)")
    print(agent.heartbeat_status().would_reason)


async def callback_mode(agent: Agent) -> None:
    seen = asyncio.Event()

    async def on_tasks(tasks: list[HeartbeatTask], request: HeartbeatRequest) -> None:
        for task in tasks:
            print(f"[due · {request.reason}] {task.prompt}")
        seen.set()

    agent.start_heartbeat(on_tasks)
    agent.request_heartbeat("manual")
    await asyncio.wait_for(seen.wait(), timeout=30)


def prepare() -> Path:
    workspace = Path(os.environ.get("OPENCLAW_MINI_WORKSPACE", "example-workspace"))
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "HEARTBEAT.md").write_text(HEARTBEAT_MD)
    (workspace / "notes.txt").write_text("Tax return deadline: in two days.\n")
    return workspace


async def main(workspace: Path) -> None:
    # active_hours=None: run at any hour for this demo (the default window is 08:00-22:00).
    config = HeartbeatConfig(every="30m", active_hours=None)
    async with Agent(workspace_dir=workspace, heartbeat=config) as agent:
        if sys.argv[1:] == ["callback"]:
            await callback_mode(agent)
        else:
            await deliver_mode(agent)
        await agent.stop_heartbeat()


if __name__ == "__main__":
    asyncio.run(main(prepare()))
