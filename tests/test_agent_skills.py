"""Skills through the agent: the prompt block, trigger injection, and bundled skills readable."""

from __future__ import annotations

import json
import os
from pathlib import Path

from openclaw_mini.testing import FakeAnthropicServer, text_reply, tool_reply

DEPLOY = """---
id: deploy
name: deploy
description: Deploy the app to an environment.
triggers: ["/deploy", "部署"]
---
DEPLOY-STEPS: run the checks, then ship to {baseDir}.
"""


def _write_skill(root: Path, name: str, text: str) -> Path:
    folder = root / "skills" / name
    folder.mkdir(parents=True)
    path = folder / "SKILL.md"
    path.write_text(text)
    return folder


async def test_trigger_injects_the_body_for_that_run(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    folder = _write_skill(workspace, "deploy", DEPLOY)
    fake_server.queue(text_reply("deploying"), text_reply("deploying"), text_reply("hi"))
    agent = make_agent()
    await agent.run("s", "/deploy staging")
    await agent.run("t", "部署 生产环境")
    await agent.run("u", "hello")
    first, second, third = (r.messages[-1]["content"] for r in fake_server.requests)
    assert "DEPLOY-STEPS" in first[0]["text"] and str(folder) in first[0]["text"]
    assert first[-1]["text"] == "staging"
    assert "DEPLOY-STEPS" in second[0]["text"] and second[-1]["text"] == "生产环境"
    assert all("DEPLOY-STEPS" not in block["text"] for block in third)
    system = fake_server.requests[0].system
    assert "<available_skills>" in system and "deploy" in system and "review" in system


async def test_skill_dropped_in_between_runs_is_seen(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    fake_server.queue(text_reply("one"), text_reply("two"))
    agent = make_agent()
    await agent.run("s", "hello")
    assert "deploy" not in fake_server.requests[0].system
    folder = _write_skill(workspace, "deploy", DEPLOY)
    later = os.stat(workspace / "skills").st_mtime_ns + 2_000_000_000
    for path in (workspace / "skills", folder, folder / "SKILL.md"):
        os.utime(path, ns=(later, later))
    await agent.run("s", "/deploy prod")
    assert "DEPLOY-STEPS" in json.dumps(fake_server.requests[1].messages[-1])


async def test_bundled_skill_is_readable_with_the_sandbox_on(
    make_agent, fake_server: FakeAnthropicServer
) -> None:
    from openclaw_mini.skills import bundled_skills_dir

    review = bundled_skills_dir() / "review" / "SKILL.md"
    fake_server.queue(tool_reply(("read", {"path": str(review)})), text_reply("read the skill"))
    result = await make_agent().run("s", "please review src/app.py")
    call = result.tool_calls[0]
    assert not call.is_error, call.output
    assert "review" in call.output.lower()
    assert str(review) in fake_server.requests[0].system  # the prompt points where read may go
