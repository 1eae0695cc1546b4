"""Delegation: the agent hands a self-contained task to a sub-agent with `sessions_spawn`.

    export ANTHROPIC_API_KEY=sk-ant-...
    python examples/subagent.py

The sub-agent runs on its own session (agent:main:subagent:<uuid>), sees only AGENTS.md and
TOOLS.md of the workspace, and gets at most the tools its parent has. Its tool calls show up in the
parent's stream as `subagent` events.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from openclaw_mini import Agent


def prepare() -> Path:
    workspace = Path(os.environ.get("OPENCLAW_MINI_WORKSPACE", "example-workspace"))
    (workspace / "docs").mkdir(parents=True, exist_ok=True)
    (workspace / "docs" / "a.md").write_text("# Alpha\nThe alpha service stores invoices.\n")
    (workspace / "docs" / "b.md").write_text("# Beta\nThe beta service sends reminders.\n")
    return workspace


async def main(workspace: Path) -> None:
    async with Agent(workspace_dir=workspace) as agent:
        prompt = (
            "Use sessions_spawn to have a sub-agent (with only the read and ls tools) summarise "
            "every file in docs/ in one line each, then give me its summary."
        )
        async for event in agent.stream("delegation", prompt):
            if event.type == "subagent" and event.tool is not None and event.data.get("event") == "tool_end":
                print(f"  ↳ sub-agent {event.data['label']}: {event.tool.name} {event.tool.input}")
            elif event.type == "tool_end" and event.tool is not None:
                print(f"[{event.tool.name}] done in {event.tool.duration_ms:.0f} ms")
            elif event.type == "text_delta":
                print(event.text, end="", flush=True)
        print()


if __name__ == "__main__":
    asyncio.run(main(prepare()))
