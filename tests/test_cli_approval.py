"""The approval prompt of `chat` in a real pseudo-terminal: a diff for write/edit, the command for
exec, and y / n / always-for-this-session; plus the previews on their own."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pexpect

from openclaw_mini.cli.approval import preview_call
from openclaw_mini.testing import FakeAnthropicServer, text_reply, tool_reply
from openclaw_mini.tools.policy import ApprovalRequest


def _env(server: FakeAnthropicServer, home: Path) -> dict[str, str]:
    dropped = ("ANTHROPIC_", "PYTEST", "OPENCLAW_MINI_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(
        ANTHROPIC_API_KEY="test-key",
        ANTHROPIC_BASE_URL=server.url,
        OPENCLAW_MINI_HOME=str(home),
        OPENCLAW_MINI_SKILLS_DIR=str(home / "skills"),
        XDG_CONFIG_HOME=str(home / "config"),
        TERM="xterm-256color",
        PYTHONUNBUFFERED="1",
    )
    return env


def test_chat_asks_before_writing(fake_server: FakeAnthropicServer, workspace: Path, tmp_path: Path) -> None:
    (workspace / "plan.md").write_text("ship on monday\n")
    (workspace / "openclaw-mini.toml").write_text(
        '[sandbox]\nallow_exec = true\n[approval]\nedit = "ask"\nwrite = "ask"\nexec = "ask"\n'
    )
    fake_server.queue(
        tool_reply(("edit", {"path": "plan.md", "old_text": "monday", "new_text": "friday"})),
        text_reply("Edited."),
        tool_reply(("exec", {"command": "touch pwned"})),
        text_reply("Refused, fine."),
        tool_reply(("write", {"path": "a.txt", "content": "one"})),
        tool_reply(("write", {"path": "b.txt", "content": "two"})),
        text_reply("Both written."),
        tool_reply(("exec", {"command": "touch again"})),
        text_reply("Not run either."),
    )
    child = pexpect.spawn(
        sys.executable,
        ["-m", "openclaw_mini.cli.main", "chat", "-w", str(workspace)],
        env=_env(fake_server, tmp_path),
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 120),
    )
    try:
        child.expect("you ›")
        child.sendline("move the date")
        child.expect("approve")
        child.expect(r"-ship on monday")
        child.expect(r"\+ship on friday")
        child.expect("this session ›")
        child.sendline("y")
        child.expect("Edited.")
        child.expect("you ›")
        child.sendline("run something")
        child.expect(r"\$ touch pwned")
        child.expect("this session ›")
        child.sendline("n")
        child.expect("Refused, fine.")
        child.expect("you ›")
        child.sendline("write two files")
        child.expect("a.txt \\(new file\\)")
        child.expect("this session ›")
        child.sendline("a")
        child.expect("Both written.")  # b.txt was not asked about
        child.expect("you ›")
        child.sendline("once more")
        child.expect(r"\$ touch again")
        child.expect("this session ›")
        child.sendintr()  # Ctrl-C answers no; the turn goes on
        child.expect("refused")
        child.expect("Not run either.")
        child.expect("you ›")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert (workspace / "plan.md").read_text() == "ship on friday\n"
    assert not (workspace / "pwned").exists() and not (workspace / "again").exists()
    assert (workspace / "a.txt").read_text() == "one" and (workspace / "b.txt").read_text() == "two"
    refused = fake_server.requests[3].messages[-1]["content"][0]
    assert refused["is_error"] is True and "did not approve" in str(refused["content"])


def _request(tool: str, workspace: Path, **arguments: object) -> ApprovalRequest:
    return ApprovalRequest(
        tool=tool, arguments=dict(arguments), session_key="k", workspace=workspace.resolve()
    )


def test_previews(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("a\nb\nc\n")
    diff = preview_call(_request("edit", tmp_path, path="f.txt", old_text="b", new_text="B"))
    assert "-b" in diff and "+B" in diff and "f.txt" in diff
    missing = _request("edit", tmp_path, path="f.txt", old_text="zz", new_text="y")
    assert "exactly once" in preview_call(missing)
    assert "outside the workspace" in preview_call(_request("write", tmp_path, path="../x", content="1"))
    assert preview_call(_request("write", tmp_path, path="f.txt", content="a\nb\nc\n")).endswith("no change")
    assert preview_call(_request("exec", tmp_path, command="ls -la")) == "$ ls -la"
    assert '"q": 1' in preview_call(_request("mcp__x__y", tmp_path, q=1))
