"""Memory tools through `Tool.invoke` with a real ToolContext, and the `memory` CLI."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from openclaw_mini.cli.memory import app
from openclaw_mini.memory import MemoryStore
from openclaw_mini.tools.base import ToolContext, ToolError
from openclaw_mini.tools.memory import MEMORY_TOOLS, memory_get, memory_search, memory_write
from openclaw_mini.tools.policy import TOOL_GROUPS, Sandbox, SandboxConfig, ToolPolicy, ToolRefused

NOW = datetime(2025, 3, 10, 9, 30, tzinfo=UTC)


def write_note(workspace: Path, rel: str, text: str) -> None:
    path = workspace / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    stamp = time.time() - 3600
    os.utime(path, (stamp, stamp))


@pytest.fixture
def store(workspace: Path) -> Iterator[MemoryStore]:
    with MemoryStore(workspace, timezone="UTC", clock=lambda: NOW) as opened:
        yield opened


@pytest.fixture
def ctx(workspace: Path, store: MemoryStore) -> ToolContext:
    return ToolContext(
        workspace=workspace,
        session_key="agent:main:test",
        agent_id="main",
        sandbox=Sandbox(workspace),
        extras={"memory": store},
    )


def test_tools_are_exported_in_the_memory_group() -> None:
    assert [item.name for item in MEMORY_TOOLS] == ["memory_search", "memory_get", "memory_write"]
    assert all(item.group == "memory" for item in MEMORY_TOOLS)
    assert set(TOOL_GROUPS["memory"]) == {item.name for item in MEMORY_TOOLS}
    schema = memory_search.input_schema
    assert schema["required"] == ["query"]
    assert set(schema["properties"]) == {"query", "max_results", "min_score"}
    assert set(memory_get.input_schema["properties"]) == {"path", "from_line", "lines"}
    assert set(memory_write.input_schema["properties"]) == {"text", "tags", "long_term"}


async def test_memory_search_returns_readable_json(workspace: Path, ctx: ToolContext) -> None:
    write_note(
        workspace, "memory/2025-03-09.md", "# 2025-03-09\n\n- 10:00 We picked Postgres for the ledger\n"
    )
    write_note(workspace, "memory/2025-03-08.md", "# 2025-03-08\n\n- 10:00 我们决定使用PostgreSQL数据库\n")
    reply = json.loads(await memory_search.invoke({"query": "Postgres ledger"}, ctx))
    assert reply["query"] == "Postgres ledger"
    [result] = reply["results"]
    assert result["path"] == "memory/2025-03-09.md"
    assert result["start_line"] <= 3 <= result["end_line"]
    assert 0 < result["score"] <= 1
    assert "Postgres for the ledger" in result["snippet"]
    chinese = json.loads(await memory_search.invoke({"query": "数据库", "max_results": 1}, ctx))
    assert [r["path"] for r in chinese["results"]] == ["memory/2025-03-08.md"]
    nothing = json.loads(await memory_search.invoke({"query": "zeppelin", "min_score": 0.2}, ctx))
    assert nothing["results"] == [] and "No memory matched" in nothing["note"]


async def test_memory_search_validates_arguments(ctx: ToolContext) -> None:
    with pytest.raises(ToolError, match="max_results"):
        await memory_search.invoke({"query": "x", "max_results": 0}, ctx)
    with pytest.raises(ToolError, match="non-empty"):
        await memory_search.invoke({"query": "   "}, ctx)
    with pytest.raises(ToolError, match="min_score"):
        await memory_search.invoke({"query": "x", "min_score": 2}, ctx)


async def test_memory_search_survives_fts_syntax(ctx: ToolContext, workspace: Path) -> None:
    write_note(workspace, "memory/2025-03-09.md", "- plain note\n")
    reply = json.loads(await memory_search.invoke({"query": '"NEAR(* AND -)'}, ctx))
    assert reply["results"] == []


async def test_memory_get_reads_lines(workspace: Path, ctx: ToolContext) -> None:
    write_note(workspace, "memory/2025-03-09.md", "# 2025-03-09\n\n- a\n- b\n- c\n")
    reply = json.loads(
        await memory_get.invoke({"path": "memory/2025-03-09.md", "from_line": 3, "lines": 2}, ctx)
    )
    assert reply == {
        "path": "memory/2025-03-09.md",
        "from_line": 3,
        "to_line": 4,
        "total_lines": 5,
        "text": "- a\n- b",
    }
    whole = json.loads(await memory_get.invoke({"path": "memory/2025-03-09.md"}, ctx))
    assert whole["text"] == "# 2025-03-09\n\n- a\n- b\n- c\n"


@pytest.mark.parametrize("path", ["../../etc/passwd", "AGENTS.md", "/etc/passwd", "memory/../AGENTS.md"])
async def test_memory_get_refuses_other_paths(workspace: Path, ctx: ToolContext, path: str) -> None:
    (workspace / "AGENTS.md").write_text("rules", encoding="utf-8")
    with pytest.raises(ToolError, match="memory_get refused"):
        await memory_get.invoke({"path": path}, ctx)


async def test_memory_get_missing_file_is_a_clear_error(ctx: ToolContext) -> None:
    with pytest.raises(ToolError, match=r"memory/2020-01-01\.md does not exist"):
        await memory_get.invoke({"path": "memory/2020-01-01.md"}, ctx)


async def test_memory_get_caps_huge_output(workspace: Path, ctx: ToolContext) -> None:
    write_note(workspace, "MEMORY.md", "".join(f"- line {n} " + "x" * 200 + "\n" for n in range(1, 400)))
    reply = json.loads(await memory_get.invoke({"path": "MEMORY.md"}, ctx))
    assert len(reply["text"]) <= 20_000
    assert "from_line=" in reply["truncated"]
    next_line = int(reply["truncated"].rsplit("=", 1)[1])
    assert reply["text"].splitlines()[-1].startswith(f"- line {next_line - 1} ")


async def test_memory_write_then_search(workspace: Path, ctx: ToolContext) -> None:
    reply = json.loads(
        await memory_write.invoke({"text": "Maya is the new design lead", "tags": ["people"]}, ctx)
    )
    assert reply == {
        "saved": True,
        "path": "memory/2025-03-10.md",
        "line": 3,
        "entry": "- 09:30 Maya is the new design lead #people",
    }
    found = json.loads(await memory_search.invoke({"query": "design lead"}, ctx))
    assert found["results"][0]["path"] == "memory/2025-03-10.md"
    long_term = json.loads(
        await memory_write.invoke({"text": "Fiscal year starts in April", "long_term": True}, ctx)
    )
    assert long_term["path"] == "MEMORY.md"


async def test_memory_write_errors(workspace: Path, ctx: ToolContext) -> None:
    with pytest.raises(ToolError, match="invalid tag"):
        await memory_write.invoke({"text": "x", "tags": ["two words"]}, ctx)
    with pytest.raises(ToolError, match="empty"):
        await memory_write.invoke({"text": "  "}, ctx)
    # The write gate lives in the policy module (one place), like for write/edit.
    read_only = Sandbox(workspace, SandboxConfig(allow_write=False))
    with pytest.raises(ToolRefused, match="Writing files is turned off"):
        read_only.check_call(memory_write, ToolPolicy())
    assert memory_write not in read_only.offered([memory_write], ToolPolicy())
    assert not (workspace / "memory").exists()


async def test_store_is_created_and_kept_on_the_context_when_none_is_given(workspace: Path) -> None:
    write_note(workspace, "memory/2025-03-09.md", "- standalone tools still work\n")
    context = ToolContext(workspace=workspace, session_key="k", agent_id="main", sandbox=Sandbox(workspace))
    try:
        reply = json.loads(await memory_search.invoke({"query": "standalone"}, context))
        assert reply["results"][0]["path"] == "memory/2025-03-09.md"
        cached = context.memory
        assert isinstance(cached, MemoryStore)
        await memory_get.invoke({"path": "memory/2025-03-09.md"}, context)
        assert context.memory is cached
    finally:
        assert context.memory is not None
        context.memory.close()


async def test_wrong_object_in_extras_is_a_tool_error(workspace: Path) -> None:
    context = ToolContext(
        workspace=workspace,
        session_key="k",
        agent_id="main",
        sandbox=Sandbox(workspace),
        extras={"memory": 42},
    )
    with pytest.raises(ToolError, match="not a MemoryStore"):
        await memory_search.invoke({"query": "x"}, context)


# ------------------------------------------------------------------ CLI


def test_cli_add_search_reindex(workspace: Path) -> None:
    runner = CliRunner()
    added = runner.invoke(
        app, ["add", "Rollback plan lives in the wiki", "--tag", "ops", "-w", str(workspace)]
    )
    assert added.exit_code == 0, added.output
    assert "Saved to memory/" in added.output
    long_term = runner.invoke(app, ["add", "Company founded in 2019", "--long-term", "-w", str(workspace)])
    assert long_term.exit_code == 0 and "MEMORY.md" in long_term.output

    found = runner.invoke(app, ["search", "rollback wiki", "--workspace", str(workspace)])
    assert found.exit_code == 0, found.output
    assert "Rollback plan lives in the wiki #ops" in found.output
    assert "score" in found.output

    as_json = runner.invoke(app, ["search", "founded", "--json", "--limit", "3", "-w", str(workspace)])
    assert as_json.exit_code == 0, as_json.output
    hits = json.loads(as_json.output)
    assert [hit["path"] for hit in hits] == ["MEMORY.md"]
    assert set(hits[0]) == {"path", "start_line", "end_line", "score", "snippet"}

    none = runner.invoke(app, ["search", "zeppelin", "-w", str(workspace)])
    assert none.exit_code == 0 and "No memory matched" in none.output

    rebuilt = runner.invoke(app, ["reindex", "-w", str(workspace)])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "Indexed 2 files, 2 chunks in" in rebuilt.output


def test_cli_errors_are_one_sentence_and_exit_2(workspace: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["search", "x", "-w", str(tmp_path / "missing")])
    assert missing.exit_code == 2
    assert "does not exist" in missing.output
    assert "Traceback" not in missing.output
    empty = runner.invoke(app, ["add", "   ", "-w", str(workspace)])
    assert empty.exit_code == 2 and "memory text is empty" in empty.output
    bad_tag = runner.invoke(app, ["add", "x", "--tag", "a b", "-w", str(workspace)])
    assert bad_tag.exit_code == 2 and "invalid tag" in bad_tag.output


def test_cli_reports_skipped_files(workspace: Path) -> None:
    (workspace / "memory").mkdir()
    (workspace / "memory" / "bad.md").write_bytes(b"caf\xe9")
    result = CliRunner().invoke(app, ["reindex", "-w", str(workspace)])
    assert result.exit_code == 0
    assert "1 skipped" in result.output
    assert "not UTF-8" in result.output
