"""MCP tool servers against real servers: the published `mcp-server-time` and `mcp-server-git`
(PyPI), `@modelcontextprotocol/server-filesystem` (npm, when installed), and an SDK-written server
for the edge cases (errors, structured content, slow, crash, HTTP)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from openclaw_mini import ConfigError, ToolPolicy
from openclaw_mini.mcp import McpServerConfig, load_mcp_json
from openclaw_mini.mcp.servers import McpManager, result_to_output
from openclaw_mini.testing import FakeAnthropicServer, text_reply, tool_reply

EDGE = Path(__file__).parent / "fixtures" / "mcp_edge_server.py"
ROOT = Path(__file__).resolve().parent.parent
NPM_FILESYSTEM = ROOT / ".ci" / "node" / "node_modules" / ".bin" / "mcp-server-filesystem"


def edge(**options: object) -> dict[str, object]:
    return {"command": sys.executable, "args": [str(EDGE)], **options}


async def test_published_time_server_through_the_agent(make_agent, fake_server: FakeAnthropicServer) -> None:
    fake_server.queue(
        tool_reply(("mcp__time__get_current_time", {"timezone": "Asia/Tokyo"})),
        text_reply("It is late in Tokyo."),
    )
    servers = {
        "time": {"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]}
    }
    agent = make_agent(mcp_servers=servers)
    result = await agent.run("s", "what time is it in Tokyo?")
    offered = [tool["name"] for tool in fake_server.requests[0].tools]
    assert {"mcp__time__get_current_time", "mcp__time__convert_time"} <= set(offered)
    call = result.tool_calls[0]
    assert not call.is_error, call.output
    assert json.loads(call.output)["timezone"] == "Asia/Tokyo"
    sent = fake_server.requests[1].messages[-1]["content"][0]
    assert sent["type"] == "tool_result" and "Asia/Tokyo" in json.dumps(sent["content"])


async def test_published_git_server_reads_a_real_repository(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    await asyncio.to_thread(subprocess.run, ["git", "init", "-q", str(workspace)], check=True)
    (workspace / "notes.md").write_text("hello\n")
    fake_server.queue(
        tool_reply(("mcp__git__git_status", {"repo_path": str(workspace)})),
        text_reply("One untracked file."),
    )
    agent = make_agent(mcp_servers={"git": {"command": sys.executable, "args": ["-m", "mcp_server_git"]}})
    result = await agent.run("s", "git status?")
    call = result.tool_calls[0]
    assert not call.is_error, call.output
    assert "notes.md" in call.output


@pytest.mark.skipif(
    not NPM_FILESYSTEM.exists(),
    reason="@modelcontextprotocol/server-filesystem is not installed (.ci/run installs it when npm is there)",
)
async def test_published_npm_filesystem_server(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    (workspace / "plan.txt").write_text("ship on friday\n")
    fake_server.queue(
        tool_reply(("mcp__fs__read_text_file", {"path": str(workspace / "plan.txt")})),
        tool_reply(("mcp__fs__read_text_file", {"path": "/etc/passwd"})),
        text_reply("done"),
    )
    agent = make_agent(mcp_servers={"fs": {"command": str(NPM_FILESYSTEM), "args": [str(workspace)]}})
    result = await agent.run("s", "read the plan")
    inside, outside = result.tool_calls
    assert not inside.is_error and "ship on friday" in inside.output
    assert outside.is_error  # the server's own sandbox refuses paths outside its root


async def test_edge_server_errors_structured_and_deadline(
    make_agent, fake_server: FakeAnthropicServer
) -> None:
    fake_server.queue(
        tool_reply(
            ("mcp__edge__weather", {"city": "Oslo"}),
            ("mcp__edge__fail", {"reason": "disk full"}),
            ("mcp__edge__slow", {"seconds": 60}),
            ("mcp__edge__echo", {}),
        ),
        text_reply("ok"),
    )
    agent = make_agent(mcp_servers={"edge": edge(timeout_seconds=1.5)})
    result = await agent.run("s", "go")
    weather, failed, slow, invalid = result.tool_calls
    assert json.loads(weather.output) == {"city": "Oslo", "celsius": 21.5}
    assert failed.is_error and "fail" in failed.output
    assert slow.is_error and "did not answer within 1.5 s" in slow.output
    assert invalid.is_error and "text" in invalid.output
    assert result.text == "ok"


async def test_crashed_server_is_an_error_then_restarts(make_agent, fake_server: FakeAnthropicServer) -> None:
    fake_server.queue(
        tool_reply(("mcp__edge__pid", {})),
        tool_reply(("mcp__edge__crash", {})),
        tool_reply(("mcp__edge__pid", {})),
        text_reply("ok"),
    )
    agent = make_agent(mcp_servers={"edge": edge()})
    result = await agent.run("s", "go")
    first, crashed, second = result.tool_calls
    assert crashed.is_error and "restarted on the next call" in crashed.output
    assert not second.is_error and second.output != first.output  # a new process answered
    assert agent._services.mcp is not None and agent._services.mcp.servers["edge"].starts == 2


async def test_policy_and_approval_apply_to_mcp_tools(make_agent, fake_server: FakeAnthropicServer) -> None:
    fake_server.queue(
        tool_reply(("mcp__edge__echo", {"text": "hi"}), ("mcp__edge__pid", {})),
        text_reply("ok"),
    )
    agent = make_agent(
        mcp_servers={"edge": edge()},
        tool_policy=ToolPolicy(deny=["mcp__edge__pid"]),
        approval={"mcp__edge__*": "ask"},
    )
    result = await agent.run("s", "go")
    offered = {tool["name"] for tool in fake_server.requests[0].tools}
    assert "mcp__edge__echo" in offered and "mcp__edge__pid" not in offered
    echo, pid = result.tool_calls
    assert echo.is_error and "needs approval" in echo.output
    assert pid.is_error and "policy" in pid.output


async def test_whole_server_denied(make_agent, fake_server: FakeAnthropicServer) -> None:
    fake_server.queue(text_reply("ok"))
    agent = make_agent(mcp_servers={"edge": edge()}, tool_policy=ToolPolicy(deny=["mcp__edge__*"]))
    await agent.run("s", "go")
    assert not [t for t in fake_server.requests[0].tools if t["name"].startswith("mcp__")]


async def test_server_that_cannot_start_is_a_warning(make_agent, fake_server: FakeAnthropicServer) -> None:
    fake_server.queue(text_reply("still here"), text_reply("again"))
    agent = make_agent(mcp_servers={"ghost": {"command": "no-such-mcp-server-command"}})
    events = [event async for event in agent.stream("s", "hi")]
    warnings = [event.text for event in events if event.type == "warning"]
    assert any("'ghost'" in text and "command not found" in text for text in warnings)
    assert events[-1].result is not None and events[-1].result.text == "still here"
    # The next run does not wait for it again right away (a hanging server would stall every run).
    events = [event async for event in agent.stream("s", "hi again")]
    assert not [event for event in events if event.type == "warning"]
    assert agent._services.mcp is not None and agent._services.mcp.servers["ghost"].starts == 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purpose
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except OSError:
        return True


async def test_agent_close_stops_the_servers_it_started(make_agent, fake_server: FakeAnthropicServer) -> None:
    fake_server.queue(tool_reply(("mcp__edge__pid", {})), text_reply("ok"))
    agent = make_agent(mcp_servers={"edge": edge()})
    result = await agent.run("s", "go")
    pid = int(result.tool_calls[0].output)
    assert _alive(pid)
    await agent.aclose()
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:  # noqa: ASYNC110 - polling another process
        await asyncio.sleep(0.1)
    assert not _alive(pid)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def http_edge() -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, str(EDGE), "http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail("the HTTP MCP server exited")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(timeout=30)


async def test_streamable_http_server(make_agent, fake_server: FakeAnthropicServer, http_edge: str) -> None:
    fake_server.queue(tool_reply(("mcp__remote__echo", {"text": "over http"})), text_reply("ok"))
    agent = make_agent(mcp_servers={"remote": {"url": http_edge}})
    result = await agent.run("s", "go")
    assert result.tool_calls[0].output == "over http"


async def test_streamable_http_server_with_headers(
    make_agent, fake_server: FakeAnthropicServer, http_edge: str
) -> None:
    fake_server.queue(tool_reply(("mcp__remote__pid", {})), text_reply("ok"))
    headers = {"Authorization": "Bearer not-a-real-token"}
    agent = make_agent(mcp_servers={"remote": {"url": http_edge, "headers": headers}})
    result = await agent.run("s", "go")
    assert not result.tool_calls[0].is_error and result.tool_calls[0].output.isdigit()
    assert "not-a-real-token" not in repr(agent.config)
    await agent.aclose()  # closes the HTTP client it opened (warnings are errors in this suite)


async def test_stdio_server_gets_no_secrets_from_our_environment(
    make_agent, fake_server: FakeAnthropicServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-value")
    fake_server.queue(
        tool_reply(
            ("mcp__edge__env_var", {"name": "ANTHROPIC_API_KEY"}), ("mcp__edge__env_var", {"name": "MINE"})
        ),
        text_reply("ok"),
    )
    agent = make_agent(mcp_servers={"edge": edge(env={"MINE": "given"})})
    result = await agent.run("s", "go")
    assert [call.output for call in result.tool_calls] == ["<unset>", "given"]


async def test_manager_lists_without_an_agent(tmp_path: Path) -> None:
    manager = McpManager({"edge": McpServerConfig.model_validate(edge())}, tmp_path, tmp_path / "logs")
    try:
        tools, problems = await manager.tools()
    finally:
        await manager.aclose()
    assert problems == []
    assert {tool.name for tool in tools} >= {"mcp__edge__echo", "mcp__edge__crash"}
    assert all(tool.group == "mcp" for tool in tools)
    assert manager.servers["edge"].state == "stopped"


def test_result_mapping_structured_only_and_images() -> None:
    from mcp_types import CallToolResult, ImageContent

    structured = CallToolResult(content=[], structured_content={"a": 1})
    assert json.loads(str(result_to_output(structured))) == {"a": 1}
    image = CallToolResult(content=[ImageContent(type="image", data="aGk=", mime_type="image/png")])
    blocks = result_to_output(image)
    assert isinstance(blocks, list) and blocks[0]["type"] == "image"
    assert blocks[0]["source"] == {"type": "base64", "media_type": "image/png", "data": "aGk="}


def test_dot_mcp_json_is_read_and_errors_name_file_server_and_line(tmp_path: Path) -> None:
    (tmp_path / ".mcp.json").write_text(
        json.dumps(
            {
                "mcpServers": {
                    "time": {"command": "uvx", "args": ["mcp-server-time"], "env": {"TZ": "UTC"}},
                    "remote": {"type": "http", "url": "https://example.com/mcp"},
                }
            },
            indent=2,
        )
    )
    servers = load_mcp_json(tmp_path)
    assert servers["time"].args == ["mcp-server-time"] and servers["remote"].transport == "http"
    (tmp_path / ".mcp.json").write_text(
        '{\n  "mcpServers": {\n    "bad": {\n      "command": "x",\n      "colour": 1\n    }\n  }\n}'
    )
    with pytest.raises(ConfigError) as caught:
        load_mcp_json(tmp_path)
    message = str(caught.value)
    assert ".mcp.json" in message and "mcpServers.bad.colour" in message and "line 5" in message
    (tmp_path / ".mcp.json").write_text('{"mcpServers": {"old": {"type": "sse", "url": "http://x/sse"}}}')
    with pytest.raises(ConfigError, match="SSE servers are not"):
        load_mcp_json(tmp_path)
    (tmp_path / ".mcp.json").write_text("{\n  oops\n}")
    with pytest.raises(ConfigError, match="line 2"):
        load_mcp_json(tmp_path)
    assert load_mcp_json(tmp_path / "missing") == {}


def test_mcp_list_and_doctor_show_servers_state_and_tools(workspace: Path) -> None:
    from typer.testing import CliRunner

    from openclaw_mini.cli.doctor import collect_checks
    from openclaw_mini.cli.main import app

    (workspace / "openclaw-mini.toml").write_text(
        f"[mcp_servers.edge]\ncommand = {json.dumps(sys.executable)}\nargs = [{json.dumps(str(EDGE))}]\n"
        '[mcp_servers.ghost]\ncommand = "no-such-mcp-server-command"\n'
    )
    (workspace / ".mcp.json").write_text(
        json.dumps({"mcpServers": {"off": {"command": "x", "enabled": False}}})
    )
    result = CliRunner().invoke(app, ["mcp", "list", "-w", str(workspace)])
    assert result.exit_code == 1, result.output  # one server failed
    assert "edge  running" in result.output and "    mcp__edge__echo" in result.output
    assert "ghost  failed" in result.output and "command not found" in result.output
    assert "off  disabled" in result.output
    listed = json.loads(CliRunner().invoke(app, ["mcp", "list", "-w", str(workspace), "--json"]).output)
    assert {row["name"]: row["state"] for row in listed} == {
        "edge": "running",
        "ghost": "failed",
        "off": "disabled",
    }
    assert (workspace / ".openclaw-mini" / "mcp" / "ghost.log").exists()
    rows = {check.name: check for check in collect_checks(workspace, env={})}
    assert rows["Config"].status == "pass" and "openclaw-mini.toml" in rows["Config"].detail
    assert rows["MCP edge"].status == "pass" and "mcp__edge__weather" in rows["MCP edge"].detail
    assert rows["MCP ghost"].status == "fail" and rows["MCP off"].status == "warn"


def test_doctor_reports_a_bad_config_file(workspace: Path) -> None:
    from openclaw_mini.cli.doctor import collect_checks

    (workspace / "openclaw-mini.toml").write_text("\n[approval]\nexec = 1\n")
    rows = {check.name: check for check in collect_checks(workspace, env={})}
    assert rows["Config"].status == "fail" and "line 3: approval.exec" in rows["Config"].detail
