"""Every example in examples/ runs as written, against the fake Messages API instead of a real key."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from openclaw_mini.testing import FakeAnthropicServer, RecordedRequest, text_reply, tool_reply

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _has_tool_result(request: RecordedRequest) -> bool:
    last = request.messages[-1]["content"]
    return isinstance(last, list) and any(b.get("type") == "tool_result" for b in last)


def _scripted(request: RecordedRequest) -> object:
    """A model that uses the first tool each example is about, then answers."""
    prompt = json.dumps(request.messages[:1])
    names = {tool["name"] for tool in request.tools}
    if _has_tool_result(request):
        return text_reply("All done: the tools answered.")
    if "hello.txt" in prompt and "read" in names:
        return tool_reply(("read", {"path": "hello.txt"}))
    if "days until" in prompt and "days_until" in names:
        return tool_reply(("days_until", {"day": "2030-01-01"}), ("workspace_size", {}))
    if "sub-agent" in prompt and "sessions_spawn" in names:
        return tool_reply(
            (
                "sessions_spawn",
                {"task": "Summarise docs/ one line per file.", "label": "docs", "tools": ["read", "ls"]},
            )
        )
    if "Summarise docs/" in prompt:
        return tool_reply(("ls", {"path": "docs"}))
    if "HEARTBEAT_OK" in prompt:
        return text_reply("Reminder: the tax return is due in two days.")
    return text_reply("Bonjour, le fichier dit bonjour.")


def _run(
    name: str, server: FakeAnthropicServer, workspace: Path, home: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        ANTHROPIC_API_KEY="test-key",
        ANTHROPIC_BASE_URL=server.url,
        OPENCLAW_MINI_WORKSPACE=str(workspace),
        OPENCLAW_MINI_HOME=str(home),
        OPENCLAW_MINI_SKILLS_DIR=str(home / "skills"),
    )
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=workspace.parent,
    )


@pytest.mark.parametrize("name", ["quickstart.py", "custom_tool.py", "subagent.py"])
def test_example_runs(name: str, fake_server: FakeAnthropicServer, tmp_path: Path) -> None:
    fake_server.handler = _scripted
    done = _run(name, fake_server, tmp_path / "ws", tmp_path / "home")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    tools_used = {
        b["name"]
        for r in fake_server.requests
        for m in r.messages
        if m["role"] == "assistant"
        for b in m["content"]
        if b.get("type") == "tool_use"
    }
    expected = {"quickstart.py": "read", "custom_tool.py": "days_until", "subagent.py": "sessions_spawn"}[
        name
    ]
    assert expected in tools_used
    if name == "custom_tool.py":
        assert "days until 2030-01-01" in done.stdout
    if name == "subagent.py":
        assert "sub-agent docs: ls" in done.stdout


def test_heartbeat_example_in_both_modes(fake_server: FakeAnthropicServer, tmp_path: Path) -> None:
    fake_server.handler = _scripted
    done = _run("heartbeat.py", fake_server, tmp_path / "ws", tmp_path / "home")
    assert done.returncode == 0, done.stderr
    assert "[heartbeat · manual] Reminder: the tax return is due in two days." in done.stdout
    calls = len(fake_server.requests)
    done = _run("heartbeat.py", fake_server, tmp_path / "ws", tmp_path / "home", "callback")
    assert done.returncode == 0, done.stderr
    assert "[due · manual] If notes.txt mentions a deadline" in done.stdout
    assert "Set up the workspace" not in done.stdout
    assert len(fake_server.requests) == calls  # callback mode makes no model call


def _multi_agent(request: RecordedRequest) -> object:
    """The sensor agent publishes what it is asked to; the watcher checks on each heartbeat."""
    first = json.dumps(request.messages[-1])
    last = request.messages[-1]["content"]
    results = [b for b in last if isinstance(b, dict) and b.get("type") == "tool_result"]
    if "Publish this reading" in first and not results:
        temp = float(re.search(r'temp\\": ([0-9.]+)', first).group(1))  # type: ignore[union-attr]
        return tool_reply(
            (
                "state_publish",
                {"entity_id": "lab/sensor-1", "properties": {"temp": temp}, "stream": "sensors.temp"},
            )
        )
    if (
        results
        and "lab/sensor-1" in json.dumps(request.messages[-2])
        and "state_publish" in json.dumps(request.messages[-2])
        and "lab/alert" not in json.dumps(request.messages[-2])
    ):
        return text_reply("published")
    if results:
        output = json.dumps(results[0]["content"])
        if "lab/alert" in json.dumps(request.messages[-2]):
            return text_reply("Alert raised: lab/sensor-1 is above 25 C.")
        found = re.search(r'temp\\": ([0-9.]+)', output)
        if found and float(found.group(1)) > 25:
            return tool_reply(
                (
                    "state_publish",
                    {"entity_id": "lab/alert", "properties": {"active": True, "temp": float(found.group(1))}},
                )
            )
        return text_reply("HEARTBEAT_OK")
    if "HEARTBEAT_OK" in first:
        return tool_reply(("state_get", {"entity_id": "lab/sensor-1"}))
    return text_reply("HEARTBEAT_OK")


def test_multi_agent_example(fake_server: FakeAnthropicServer, tmp_path: Path) -> None:
    fake_server.handler = _multi_agent
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        ANTHROPIC_API_KEY="test-key",
        ANTHROPIC_BASE_URL=fake_server.url,
        OPENCLAW_MINI_HOME=str(tmp_path),
        OPENCLAW_MINI_SKILLS_DIR=str(tmp_path / "skills"),
    )
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "multi_agent.py"),
            "--workspace",
            str(tmp_path / "ws"),
            "--readings",
            "7",
            "--beat",
            "300ms",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "[sensor]  temp=27.0: published" in done.stdout
    assert "[watcher] heartbeat" in done.stdout and "Alert raised" in done.stdout
    assert "lab/alert: {'active': True, 'temp': 2" in done.stdout
