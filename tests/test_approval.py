"""Tool approval: `allow`/`ask`/`deny` rules, the `approve=` callback, and refusals as error results."""

from __future__ import annotations

from pathlib import Path

import pytest

from openclaw_mini import ConfigError
from openclaw_mini.testing import FakeAnthropicServer, text_reply, tool_reply
from openclaw_mini.tools.files import FILE_TOOLS
from openclaw_mini.tools.policy import ApprovalRequest, approval_mode

TOOLS = {tool.name: tool for tool in FILE_TOOLS}


def test_most_specific_rule_wins() -> None:
    rules = {"*": "ask", "group:fs": "allow", "write": "deny"}
    assert approval_mode(rules, TOOLS["write"]) == "deny"
    assert approval_mode(rules, TOOLS["read"]) == "allow"
    assert approval_mode({"*": "ask"}, TOOLS["read"]) == "ask"
    assert approval_mode({}, TOOLS["read"]) == "allow"
    assert approval_mode({"WRITE": "ask"}, TOOLS["write"]) == "ask"  # case-insensitive like the policy
    assert approval_mode({"wr*": "ask", "group:fs": "deny"}, TOOLS["write"]) == "ask"


def test_bad_approval_value_is_a_config_error(make_agent) -> None:
    with pytest.raises(ConfigError, match=r"approval\.write"):
        make_agent(approval={"write": "maybe"})


async def test_ask_without_a_callback_refuses_with_a_hint(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    fake_server.queue(tool_reply(("write", {"path": "x.txt", "content": "hi"})), text_reply("ok"))
    agent = make_agent(approval={"write": "ask"})
    result = await agent.run("s", "write it")
    call = result.tool_calls[0]
    assert call.is_error and "needs approval" in call.output and '"write" = "allow"' in call.output
    assert not (workspace / "x.txt").exists()
    assert result.text == "ok"  # the run went on: a refusal is an error result, not a crash
    last = fake_server.requests[-1].messages[-1]["content"][0]
    assert last["type"] == "tool_result" and last["is_error"] is True


async def test_callback_sees_the_call_and_decides(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    seen: list[ApprovalRequest] = []

    async def approve(request: ApprovalRequest) -> bool:
        seen.append(request)
        return request.arguments["path"] == "yes.txt"

    fake_server.queue(
        tool_reply(
            ("write", {"path": "yes.txt", "content": "a"}), ("write", {"path": "no.txt", "content": "b"})
        ),
        text_reply("done"),
    )
    agent = make_agent(approval={"group:fs": "ask", "read": "allow"}, approve=approve)
    result = await agent.run("s", "write both")
    assert sorted(r.arguments["path"] for r in seen) == ["no.txt", "yes.txt"]
    assert (
        seen[0].tool == "write" and seen[0].session_key == "agent:main:s" and seen[0].workspace == workspace
    )
    assert (workspace / "yes.txt").read_text() == "a"
    assert not (workspace / "no.txt").exists()
    refused = [c for c in result.tool_calls if c.is_error]
    assert len(refused) == 1 and "did not approve" in refused[0].output


async def test_denied_by_approval_is_not_offered(make_agent, fake_server: FakeAnthropicServer) -> None:
    fake_server.queue(tool_reply(("edit", {"path": "a", "old": "x", "new": "y"})), text_reply("ok"))
    agent = make_agent(approval={"edit": "deny"})
    assert "edit" not in [t.name for t in agent.tools]
    result = await agent.run("s", "edit")
    assert "edit" not in [t["name"] for t in fake_server.requests[0].tools]
    assert result.tool_calls[0].is_error and "denied" in result.tool_calls[0].output


async def test_sync_callback_and_allow_rule(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    calls: list[str] = []

    def approve(request: ApprovalRequest) -> bool:
        calls.append(request.tool)
        return True

    fake_server.queue(
        tool_reply(("write", {"path": "a.txt", "content": "1"})),
        tool_reply(("read", {"path": "a.txt"})),
        text_reply("ok"),
    )
    agent = make_agent(approval={"*": "ask", "read": "allow"}, approve=approve)
    result = await agent.run("s", "go")
    assert calls == ["write"]
    assert not any(c.is_error for c in result.tool_calls)
