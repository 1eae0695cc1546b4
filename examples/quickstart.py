"""Quickstart: one agent, one session, a streamed reply.

    export ANTHROPIC_API_KEY=sk-ant-...
    python examples/quickstart.py

The workspace (AGENTS.md, memory/, the session transcripts) is ./example-workspace unless
OPENCLAW_MINI_WORKSPACE says otherwise.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from openclaw_mini import Agent


def prepare() -> Path:
    workspace = Path(os.environ.get("OPENCLAW_MINI_WORKSPACE", "example-workspace"))
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "hello.txt").write_text("openclaw-mini says hello.\n")
    return workspace


async def main(workspace: Path) -> None:
    async with Agent(workspace_dir=workspace) as agent:
        result = await agent.run("quickstart", "What does hello.txt say? Answer in one sentence.")
        print(f"agent: {result.text}")
        print(
            f"(tools used: {[call.name for call in result.tool_calls]}, tokens in/out: "
            f"{result.usage.input_tokens}/{result.usage.output_tokens})"
        )

        print("agent (streamed): ", end="", flush=True)
        async for event in agent.stream("quickstart", "Now say it in French."):
            if event.type == "text_delta":
                print(event.text, end="", flush=True)
        print()


if __name__ == "__main__":
    asyncio.run(main(prepare()))
