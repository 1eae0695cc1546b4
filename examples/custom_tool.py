"""A custom tool: a typed Python function becomes a tool the model can call.

export ANTHROPIC_API_KEY=sk-ant-...
python examples/custom_tool.py
"""

from __future__ import annotations

import asyncio
import os
from datetime import date
from pathlib import Path

from openclaw_mini import Agent, ToolContext, ToolError, ToolPolicy, tool


@tool
def days_until(day: str) -> str:
    """Count the days from today until a date.

    Args:
        day: The date in ISO form, e.g. 2026-12-24.
    """
    try:
        target = date.fromisoformat(day)
    except ValueError:
        raise ToolError(f"'{day}' is not an ISO date like 2026-12-24.") from None
    return f"{(target - date.today()).days} days until {target.isoformat()}"


@tool
async def workspace_size(ctx: ToolContext) -> str:
    """Report how many files the workspace holds and their total size."""

    def measure() -> str:  # file-system walks run off the event loop
        files = [p for p in ctx.workspace.rglob("*") if p.is_file() and ".openclaw-mini" not in p.parts]
        return f"{len(files)} files, {sum(p.stat().st_size for p in files):,} bytes"

    return await asyncio.to_thread(measure)


async def main(workspace: Path) -> None:
    agent = Agent(
        workspace_dir=workspace,
        tools=[days_until, workspace_size],
        tool_policy=ToolPolicy(deny=["group:runtime"]),  # no shell for this agent
    )
    async with agent:
        question = "How many days until 2026-12-24, and how big is the workspace?"
        async for event in agent.stream("tools-demo", question):
            if event.type == "tool_end" and event.tool is not None:
                print(f"[{event.tool.name}] {event.tool.output}")
            elif event.type == "text_delta":
                print(event.text, end="", flush=True)
        print()


if __name__ == "__main__":
    folder = Path(os.environ.get("OPENCLAW_MINI_WORKSPACE", "example-workspace"))
    folder.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(folder))
