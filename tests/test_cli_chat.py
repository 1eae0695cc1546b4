"""`openclaw-mini chat` and `run` as a person and a script use them: a real pseudo-terminal,
piped stdin, and typer's runner, all against the fake Messages API."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pexpect
import pytest
from typer.testing import CliRunner

from openclaw_mini.cli.main import app
from openclaw_mini.testing import FakeAnthropicServer, error_reply, text_reply, tool_reply


def _env(server: FakeAnthropicServer, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "PYTEST"))}
    env.update(
        ANTHROPIC_API_KEY="test-key",
        ANTHROPIC_BASE_URL=server.url,
        OPENCLAW_MINI_HOME=str(home),
        OPENCLAW_MINI_SKILLS_DIR=str(home / "skills"),
        TERM="xterm-256color",
        COLUMNS="100",
        LINES="40",
        PYTHONUNBUFFERED="1",
    )
    return env


def test_chat_in_a_real_terminal(fake_server: FakeAnthropicServer, workspace: Path, tmp_path: Path) -> None:
    (workspace / "notes.txt").write_text("hello")
    fake_server.queue(
        text_reply("Hello **there**, I am ready."),
        tool_reply(("ls", {})),
        text_reply("I see notes.txt."),
        text_reply("Once upon a time " + "there was a very long story. " * 60, chunk_delay=0.03),
        text_reply("Pasted fine."),
        text_reply("Still here."),
    )
    child = pexpect.spawn(
        sys.executable,
        ["-m", "openclaw_mini.cli.main", "chat", "-w", str(workspace)],
        env=_env(fake_server, tmp_path),
        encoding="utf-8",
        timeout=20,
        dimensions=(40, 100),
    )
    try:
        child.expect("you ›")
        child.sendline("hi")
        child.expect("I am ready")
        child.expect("you ›")
        child.sendline("what files are here?")
        child.expect("ls")
        child.expect("notes.txt")
        child.expect("I see notes.txt")
        child.expect("you ›")
        child.sendline("tell me a story")
        child.expect("Once upon a time")
        child.sendintr()  # Ctrl-C during the slow reply
        child.expect("cancelled")
        child.expect("you ›")
        child.sendline("/help")
        child.expect("/compact")
        child.send("\x1b[200~pasted line one\npasted line two\x1b[201~\r")  # a bracketed paste
        child.expect("Pasted fine")
        child.expect("you ›")
        child.sendline("are you \\")  # a trailing backslash continues the message
        child.sendline("there?")
        child.expect("Still here")
        child.expect("you ›")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    # The cancelled turn left a valid transcript: the last request alternates roles.
    pasted = fake_server.requests[-2].messages[-1]["content"]
    assert any(block.get("text") == "pasted line one\npasted line two" for block in pasted)
    last_user = fake_server.requests[-1].messages[-1]["content"]
    assert any(block.get("text") == "are you \nthere?" for block in last_user)
    roles = [m["role"] for m in fake_server.requests[-1].messages]
    assert roles[0] == "user" and all(a != b for a, b in itertools.pairwise(roles))


def test_chat_reads_one_message_per_line_from_a_pipe(
    fake_server: FakeAnthropicServer, workspace: Path, tmp_path: Path
) -> None:
    fake_server.queue(text_reply("first reply"), text_reply("second reply"))
    done = subprocess.run(
        [sys.executable, "-m", "openclaw_mini.cli.main", "chat", "-w", str(workspace), "--session", "piped"],
        input="one\n\ntwo\n",
        capture_output=True,
        text=True,
        env=_env(fake_server, tmp_path),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["first reply", "second reply"]
    assert "\x1b[" not in done.stdout  # plain text, no terminal codes
    assert [m["role"] for m in fake_server.requests[-1].messages] == ["user", "assistant", "user"]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_run_json(
    runner: CliRunner, fake_server: FakeAnthropicServer, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_server.url)
    fake_server.queue(text_reply("forty-two"))
    result = runner.invoke(app, ["run", "-w", str(workspace), "--json", "what is the answer?"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["text"] == "forty-two" and data["session_key"] == "agent:main:main"
    assert data["stop_reason"] == "end_turn" and data["usage"]["output_tokens"] > 0


def test_run_fails_with_exit_code_and_one_sentence(
    runner: CliRunner, fake_server: FakeAnthropicServer, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_server.url)
    fake_server.queue(error_reply(401, "invalid x-api-key"))
    result = runner.invoke(app, ["run", "-w", str(workspace), "hello"])
    assert result.exit_code != 0
    assert "invalid x-api-key" in result.output and "Traceback" not in result.output


def test_missing_api_key_is_one_sentence_exit_2(runner: CliRunner, workspace: Path) -> None:
    for command in (["chat", "-w", str(workspace)], ["run", "-w", str(workspace), "hi"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2
        assert "ANTHROPIC_API_KEY" in result.output and "Traceback" not in result.output


def test_unreachable_base_url_and_bad_workspace(
    runner: CliRunner, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")  # base URL: a closed port (conftest)
    result = runner.invoke(app, ["run", "-w", str(workspace), "hi"])
    assert result.exit_code == 2 and "ANTHROPIC_BASE_URL" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["run", "-w", str(tmp_path / "missing"), "hi"])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(app, ["run", "-w", str(workspace), "--agent-id", "Bad Id!", "hi"])
    assert result.exit_code == 2 and "agent_id" in result.output and "Traceback" not in result.output


def test_sessions_commands(
    runner: CliRunner, fake_server: FakeAnthropicServer, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_server.url)
    fake_server.queue(text_reply("noted"))
    assert runner.invoke(app, ["run", "-w", str(workspace), "-s", "demo", "remember this"]).exit_code == 0
    listing = runner.invoke(app, ["sessions", "list", "-w", str(workspace)])
    assert "agent:main:demo" in listing.output
    shown = runner.invoke(app, ["sessions", "show", "demo", "-w", str(workspace)])
    assert "user: remember this" in shown.output and "assistant: noted" in shown.output
    assert runner.invoke(app, ["sessions", "rm", "demo", "-w", str(workspace)]).exit_code == 0
    missing = runner.invoke(app, ["sessions", "show", "demo", "-w", str(workspace)])
    assert missing.exit_code == 2 and "No session" in missing.output


def test_the_offline_demo_server_answers_the_cli(workspace: Path, tmp_path: Path) -> None:
    """`python -m openclaw_mini.testing` lets a newcomer try the CLI without a key."""
    server = subprocess.Popen(
        [sys.executable, "-m", "openclaw_mini.testing", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split(" on ")[1].split(". ")[0]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        env.update(ANTHROPIC_API_KEY="demo", ANTHROPIC_BASE_URL=url, OPENCLAW_MINI_HOME=str(tmp_path))
        command = [sys.executable, "-m", "openclaw_mini.cli.main", "run", "-w", str(workspace), "--json"]
        quiet: dict[str, Any] = {"stdin": subprocess.DEVNULL, "capture_output": True, "text": True}
        first = subprocess.run([*command, "hello there"], env=env, timeout=60, **quiet)  # piped stdin is read
        assert first.returncode == 0, first.stderr
        data = json.loads(first.stdout)
        assert [call["name"] for call in data["tool_calls"]] == ["ls"]
        assert "offline demo model" in data["text"]
        second = subprocess.run([*command, "how are you"], env=env, timeout=60, **quiet)
        assert json.loads(second.stdout)["text"] == "You said: **how are you**"
    finally:
        server.terminate()
        server.communicate(timeout=10)
