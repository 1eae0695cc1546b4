"""The model-facing world-state tools and the `openclaw-mini state` CLI."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from typer.testing import CliRunner

from openclaw_mini.cli.state import app
from openclaw_mini.state import EmbeddedWorldState, WorldState, make_event
from openclaw_mini.tools.base import Tool, ToolContext, ToolError
from openclaw_mini.tools.policy import TOOL_GROUPS, Sandbox, ToolPolicy
from openclaw_mini.tools.state import (
    STATE_TOOLS,
    state_delete,
    state_get,
    state_list,
    state_publish,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[ToolContext]:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    context = ToolContext(
        workspace=workspace, session_key="agent:main:s1", agent_id="main", sandbox=Sandbox(workspace)
    )
    yield context
    store = context.state
    if isinstance(store, WorldState):
        await store.aclose()


async def call(tool_obj: Tool, ctx: ToolContext, **arguments: Any) -> Any:
    return json.loads(await tool_obj.invoke(arguments, ctx))


def test_state_tools_are_the_state_group() -> None:
    assert [item.name for item in STATE_TOOLS] == list(TOOL_GROUPS["state"])
    assert all(item.group == "state" for item in STATE_TOOLS)
    assert ToolPolicy(deny=["group:state"]).filter(STATE_TOOLS) == []
    schema = state_publish.input_schema
    assert schema["required"] == ["entity_id", "properties"] and "ctx" not in schema["properties"]


async def test_publish_merges_and_reports_the_entity(ctx: ToolContext) -> None:
    first = await call(state_publish, ctx, entity_id="lab/s1", properties={"temp": 20, "unit": "C"})
    assert first["entity"]["properties"] == {"temp": 20, "unit": "C"}
    second = await call(
        state_publish, ctx, entity_id="lab/s1", properties={"temp": 21}, stream="sensors.temp"
    )
    assert second["entity"]["properties"] == {"temp": 21, "unit": "C"}
    assert second["eventId"] != first["eventId"]
    store = ctx.state
    assert isinstance(store, EmbeddedWorldState)  # opened for the workspace and kept on the context
    assert store.path == ctx.workspace / ".openclaw-mini" / "state.db"
    [latest, _] = await store.history("lab/s1")
    assert latest.source == "agent:main:s1" and latest.stream == "sensors.temp"


async def test_get_list_and_delete(ctx: ToolContext) -> None:
    for index in range(3):
        await call(state_publish, ctx, entity_id=f"lab/e{index}", properties={"v": index})
    await call(state_publish, ctx, entity_id="other/x", properties={"v": 9})
    entity = await call(state_get, ctx, entity_id="lab/e1")
    assert entity["properties"] == {"v": 1} and set(entity) == {"id", "properties", "lastUpdated"}
    listed = await call(state_list, ctx, namespace="lab", limit=2)
    assert (listed["total"], listed["shown"]) == (3, 2) and "note" in listed
    assert [item["id"] for item in listed["entities"]] == ["lab/e0", "lab/e1"]
    assert (await call(state_list, ctx, prefix="other/"))["total"] == 1
    gone = await call(state_delete, ctx, entity_id="lab/e1")
    assert gone["deleted"] == "lab/e1" and gone["eventId"]
    with pytest.raises(ToolError, match="No entity 'lab/e1'"):
        await call(state_get, ctx, entity_id="lab/e1")
    with pytest.raises(ToolError, match="nothing to delete"):
        await call(state_delete, ctx, entity_id="lab/e1")


async def test_bad_input_becomes_a_tool_error_the_model_can_read(ctx: ToolContext) -> None:
    with pytest.raises(ToolError, match="stream"):
        await call(state_publish, ctx, entity_id="lab/x", properties={"v": 1}, stream="Not Valid")
    with pytest.raises(ToolError, match="1 MB"):
        await call(state_publish, ctx, entity_id="lab/x", properties={"blob": "x" * (1024 * 1024 + 10)})
    with pytest.raises(ToolError, match="properties"):
        await call(state_publish, ctx, entity_id="lab/x", properties="not an object")
    with pytest.raises(ToolError, match="limit"):
        await call(state_list, ctx, limit=0)


async def test_tools_use_the_store_the_agent_provides(ctx: ToolContext, tmp_path: Path) -> None:
    provided = EmbeddedWorldState(tmp_path / "elsewhere.db")
    ctx.extras["state"] = provided
    await call(state_publish, ctx, entity_id="lab/p", properties={"v": 1})
    assert await provided.get("lab/p") is not None
    assert not (ctx.workspace / ".openclaw-mini" / "state.db").exists()
    ctx.extras["state"] = object()
    with pytest.raises(ToolError, match="not a WorldState"):
        await call(state_get, ctx, entity_id="lab/p")
    await provided.aclose()


# -- CLI ----------------------------------------------------------------------------------

runner = CliRunner()


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args))


def test_cli_publish_get_list_history_delete(tmp_path: Path) -> None:
    ws = str(tmp_path)
    result = cli("publish", "lab/s1", '{"temp": 21.5, "unit": "C"}', "-w", ws, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["entity"]["properties"] == {"temp": 21.5, "unit": "C"}
    assert cli("publish", "lab/s1", '{"temp": 22}', "-w", ws).exit_code == 0
    got = cli("get", "lab/s1", "-w", ws, "--json")
    assert json.loads(got.output)["properties"] == {"temp": 22, "unit": "C"}
    listed = cli("list", "-w", ws, "--json", "--namespace", "lab")
    assert [item["id"] for item in json.loads(listed.output)] == ["lab/s1"]
    table = cli("list", "-w", ws)
    assert "lab/s1" in table.output and "1 entity" in table.output
    history = cli("history", "lab/s1", "-w", ws, "--limit", "1")
    assert [event["payload"]["properties"] for event in json.loads(history.output)] == [{"temp": 22}]
    deleted = cli("delete", "lab/s1", "-w", ws)
    assert deleted.exit_code == 0 and "Deleted lab/s1" in deleted.output
    assert cli("get", "lab/s1", "-w", ws).exit_code == 2


def test_cli_errors_are_one_sentence_and_exit_2(tmp_path: Path) -> None:
    ws = str(tmp_path)
    for args, expected in [
        (("publish", "lab/x", "[1, 2]", "-w", ws), "JSON object"),
        (("publish", "lab/x", "{oops", "-w", ws), "JSON object"),
        (("publish", "lab/x", "{}", "--stream", "UPPER", "-w", ws), "stream"),
        (("get", "missing/x", "-w", ws), "no entity"),
        (("delete", "-w", ws), "exactly one"),
        (("list", "-w", ws, "--url", "ftp://x"), "http"),
        (("list", "-w", ws, "--url", f"http://127.0.0.1:{_free_port()}"), "cannot reach"),
    ]:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert expected in result.output and "Traceback" not in result.output


def test_cli_watch_prints_snapshot_and_stops_after_count(tmp_path: Path) -> None:
    async def seed() -> None:
        async with EmbeddedWorldState.for_workspace(tmp_path) as store:
            await store.publish_batch([make_event("w/a", {"v": 1}), make_event("w/b", {"v": 2})])

    asyncio.run(seed())
    result = cli("watch", "w/*", "--snapshot", "--count", "2", "-w", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [(line["entity_id"], line["snapshot"]) for line in lines] == [("w/a", True), ("w/b", True)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cli_serve_runs_a_flux_server_until_interrupted(tmp_path: Path) -> None:
    port = _free_port()
    command = [
        sys.executable,
        "-c",
        "from openclaw_mini.cli.state import app; app()",
        "serve",
        "-w",
        str(tmp_path),
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                answer = httpx2.post(
                    f"http://127.0.0.1:{port}/api/events",
                    json={
                        "stream": "s",
                        "source": "t",
                        "payload": {"entity_id": "cli/x", "properties": {"v": 1}},
                    },
                )
                break
            except httpx2.TransportError:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        assert answer.status_code == 200
        entity = httpx2.get(f"http://127.0.0.1:{port}/api/state/entities/cli%2Fx").json()
        assert entity["properties"] == {"v": 1}
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert f"127.0.0.1:{port}" in out and "auth off" in out
    assert (tmp_path / ".openclaw-mini" / "state.db").exists()


def test_cli_serve_refuses_admin_token_without_auth(tmp_path: Path) -> None:
    result = cli("serve", "-w", str(tmp_path), "--admin-token", "x")
    assert result.exit_code == 2 and "--auth" in result.output
