"""Config files: precedence (flags > env > workspace file > user file > defaults), errors with
file, key and line, `config show`, and the CLI commands reading the files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from openclaw_mini import ConfigError
from openclaw_mini.cli.main import app
from openclaw_mini.settings import load_settings, toml_key_lines, user_config_file
from openclaw_mini.testing import FakeAnthropicServer, text_reply, tool_reply


@pytest.fixture
def user_file() -> Path:
    path = user_config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_precedence_flags_env_workspace_user_default(
    workspace: Path, user_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_file.write_text(
        'model = "user-model"\nmax_turns = 5\nmax_tokens = 1000\n[sandbox]\nallow_write = false\n'
    )
    (workspace / "openclaw-mini.toml").write_text(
        'model = "ws-model"\nmax_turns = 6\n\n[sandbox]\nallow_exec = true\n\n[heartbeat]\nevery = "1h"\n'
    )
    monkeypatch.setenv("OPENCLAW_MINI_MAX_TURNS", "7")
    settings = load_settings(workspace, {"model": "flag-model"})
    config = settings.config
    assert config.model == "flag-model"
    assert config.max_turns == 7
    assert config.max_tokens == 1000
    assert config.sandbox.allow_exec is True and config.sandbox.allow_write is False  # tables merge
    assert config.max_retries == 3
    assert settings.heartbeat is not None and settings.heartbeat.every == "1h"
    assert settings.origin(("model",)) == "command line"
    assert settings.origin(("max_turns",)) == "environment variable OPENCLAW_MINI_MAX_TURNS"
    assert settings.origin(("sandbox", "allow_exec")) == f"{workspace / 'openclaw-mini.toml'}, line 5"
    assert settings.origin(("sandbox", "allow_write")) == f"{user_file}, line 5"
    assert settings.origin(("sandbox", "enabled")) == "default"


def test_unknown_keys_and_bad_values_name_file_key_and_line(workspace: Path) -> None:
    (workspace / "openclaw-mini.toml").write_text(
        '# settings\nmodel = "m"\n\n[sandbox]\nallow_exec = "sometimes"\nallow_wrte = false\n\n'
        '[approval]\nwrite = "maybe"\n\n[mcp_servers.git]\nargs = ["x"]\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(workspace)
    message = str(caught.value)
    path = workspace / "openclaw-mini.toml"
    assert f"{path}, line 5: sandbox.allow_exec: Input should be a valid boolean" in message
    assert f"{path}, line 6: sandbox.allow_wrte: unknown key (valid keys here: allow_exec" in message
    assert f"{path}, line 9: approval.write: Input should be 'allow', 'ask' or 'deny'" in message
    assert f"{path}, line 11: mcp_servers.git: set exactly one of 'command'" in message


def test_syntax_error_secret_and_env_errors(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = workspace / "openclaw-mini.toml"
    path.write_text("model = \n")
    with pytest.raises(ConfigError, match=r"openclaw-mini\.toml: not valid TOML: .*line 1"):
        load_settings(workspace)
    path.write_text('\napi_key = "sk-secret"\n')
    with pytest.raises(ConfigError, match=r"line 2: 'api_key' cannot be set in a config file") as caught:
        load_settings(workspace)
    assert "sk-secret" not in str(caught.value)
    path.write_text("")
    monkeypatch.setenv("OPENCLAW_MINI_MAX_TOKENS", "lots")
    with pytest.raises(ConfigError, match="environment variable OPENCLAW_MINI_MAX_TOKENS: max_tokens"):
        load_settings(workspace)


def test_dot_mcp_json_joins_below_the_files(workspace: Path) -> None:
    (workspace / ".mcp.json").write_text(
        json.dumps({"mcpServers": {"a": {"command": "srv-a"}, "b": {"command": "srv-b"}}})
    )
    (workspace / "openclaw-mini.toml").write_text("[mcp_servers.b]\nenabled = false\n")
    settings = load_settings(workspace)
    servers = settings.config.mcp_servers
    assert servers["a"].command == "srv-a" and servers["b"].enabled is False
    assert settings.origin(("mcp_servers", "a", "command")).endswith(".mcp.json")


def test_key_lines_handle_quoted_and_dotted_keys() -> None:
    lines = toml_key_lines(
        '[approval]\n"group:fs" = "ask"\n[mcp_servers."my-srv"]\nsandbox.allow_exec = true\n'
    )
    assert lines[("approval", "group:fs")] == 2
    assert lines[("mcp_servers", "my-srv", "sandbox", "allow_exec")] == 4


def test_config_show_prints_values_and_origins(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (workspace / "openclaw-mini.toml").write_text(
        '[sandbox]\nallow_exec = true\n[mcp_servers.api]\nurl = "http://127.0.0.1:9/mcp"\n'
        'headers = { Authorization = "Bearer hunter2" }\n'
    )
    monkeypatch.setenv("OPENCLAW_MINI_MODEL", "env-model")
    result = CliRunner().invoke(app, ["config", "show", "--workspace", str(workspace)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(
        line.startswith("sandbox.allow_exec = true") and "openclaw-mini.toml, line 2" in line
        for line in lines
    )
    assert any(line.startswith('model = "env-model"') and "OPENCLAW_MINI_MODEL" in line for line in lines)
    assert any(line.startswith("max_tokens = 8192") and "# default" in line for line in lines)
    assert "hunter2" not in result.output and "mcp_servers.api.headers.Authorization = ***" in result.output
    assert "api_key" not in result.output
    changed = CliRunner().invoke(app, ["config", "show", "-w", str(workspace), "--changed"])
    assert "max_tokens" not in changed.output and "sandbox.allow_exec" in changed.output


def test_config_show_reports_a_bad_file_in_one_sentence(workspace: Path) -> None:
    (workspace / "openclaw-mini.toml").write_text("[sandbox]\nallow_exec = 3\n")
    result = CliRunner().invoke(app, ["config", "show", "-w", str(workspace)])
    assert result.exit_code == 2
    assert "line 2: sandbox.allow_exec" in result.output and "Traceback" not in result.output


def _cli_env(server: FakeAnthropicServer, home: Path) -> dict[str, str]:
    dropped = ("ANTHROPIC_", "PYTEST", "OPENCLAW_MINI_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(
        ANTHROPIC_API_KEY="test-key",
        ANTHROPIC_BASE_URL=server.url,
        OPENCLAW_MINI_HOME=str(home),
        OPENCLAW_MINI_SKILLS_DIR=str(home / "skills"),
        XDG_CONFIG_HOME=str(home / "config"),
    )
    return env


def test_run_reads_the_workspace_file_exec_switched_on(
    fake_server: FakeAnthropicServer, workspace: Path, tmp_path: Path
) -> None:
    fake_server.queue(tool_reply(("exec", {"command": "echo from-exec > out.txt"})), text_reply("done"))
    config = 'model = "claude-from-file"\n[sandbox]\nallow_exec = true\n'
    (workspace / "openclaw-mini.toml").write_text(config)
    completed = subprocess.run(
        [sys.executable, "-m", "openclaw_mini.cli.main", "run", "-w", str(workspace), "--json", "go"],
        env=_cli_env(fake_server, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert (workspace / "out.txt").read_text().strip() == "from-exec"
    assert fake_server.requests[0].model == "claude-from-file"
    assert "exec" in [tool["name"] for tool in fake_server.requests[0].tools]


def test_run_ask_without_a_terminal_refuses_with_a_hint(
    fake_server: FakeAnthropicServer, workspace: Path, tmp_path: Path
) -> None:
    fake_server.queue(tool_reply(("write", {"path": "a.txt", "content": "x"})), text_reply("ok"))
    (workspace / "openclaw-mini.toml").write_text('[approval]\nwrite = "ask"\n')
    completed = subprocess.run(
        [sys.executable, "-m", "openclaw_mini.cli.main", "run", "-w", str(workspace), "--json", "go"],
        env=_cli_env(fake_server, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    call = json.loads(completed.stdout)["tool_calls"][0]
    assert call["is_error"] and "needs approval" in call["output"] and "[approval]" in call["output"]
    assert not (workspace / "a.txt").exists()


def test_run_with_a_bad_config_file_fails_plainly(
    fake_server: FakeAnthropicServer, workspace: Path, tmp_path: Path
) -> None:
    (workspace / "openclaw-mini.toml").write_text("max_turns = 0\n")
    completed = subprocess.run(
        [sys.executable, "-m", "openclaw_mini.cli.main", "run", "-w", str(workspace), "go"],
        env=_cli_env(fake_server, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    assert "openclaw-mini.toml, line 1: max_turns" in completed.stderr and "Traceback" not in completed.stderr


def test_session_commands_use_the_configured_agent_id(
    fake_server: FakeAnthropicServer, workspace: Path, tmp_path: Path
) -> None:
    fake_server.queue(text_reply("hello from ada"))
    (workspace / "openclaw-mini.toml").write_text('agent_id = "ada"\n')
    completed = subprocess.run(
        [sys.executable, "-m", "openclaw_mini.cli.main", "run", "-w", str(workspace), "hi"],
        env=_cli_env(fake_server, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    shown = CliRunner().invoke(app, ["sessions", "show", "main", "-w", str(workspace)])
    assert shown.exit_code == 0, shown.output
    assert "hello from ada" in shown.output  # found under agent:ada:main, not agent:main:main


async def test_agent_from_settings(workspace: Path, fake_server: FakeAnthropicServer) -> None:
    from openclaw_mini import Agent

    (workspace / "openclaw-mini.toml").write_text(
        'model = "claude-from-file"\n[approval]\nwrite = "deny"\n[heartbeat]\nevery = "2h"\n'
    )
    settings = load_settings(workspace, {"base_url": fake_server.url, "api_key": "test-key"})
    fake_server.queue(text_reply("hi"))
    async with Agent(**settings.agent_kwargs()) as agent:
        await agent.run("s", "hello")
        assert "write" not in [tool.name for tool in agent.tools]
        assert agent.heartbeat_config.every == "2h"
    assert fake_server.requests[0].model == "claude-from-file"


def test_relative_read_roots_are_taken_from_the_workspace(workspace: Path) -> None:
    text = '[sandbox]\nextra_read_roots = ["../shared", "/opt/docs"]\n'
    (workspace / "openclaw-mini.toml").write_text(text)
    roots = load_settings(workspace).config.sandbox.extra_read_roots
    assert roots == (workspace / "../shared", Path("/opt/docs"))
