"""Security review regressions: each test pins one problem found in the tool sandbox, the file and
memory tools, the skill loader and session keys (see the review report for the impact of each)."""

from __future__ import annotations

import asyncio
import os
import threading
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from openclaw_mini.memory import MemoryPathError, MemoryStore
from openclaw_mini.session import SessionKey, SessionKeyError
from openclaw_mini.skills import SkillLoader
from openclaw_mini.tools.base import ToolContext, ToolError, tool
from openclaw_mini.tools.files import grep, ls, read, write
from openclaw_mini.tools.memory import memory_get
from openclaw_mini.tools.policy import Sandbox, SandboxConfig, ToolPolicy, ToolRefused

NOW = datetime(2025, 3, 10, 9, 30, tzinfo=UTC)


@pytest.fixture
def ctx(workspace: Path) -> ToolContext:
    return ToolContext(
        workspace=workspace, session_key="agent:main:t", agent_id="main", sandbox=Sandbox(workspace)
    )


async def call(tool_obj: Any, ctx: ToolContext, **args: Any) -> str:
    result = await tool_obj.invoke(args, ctx)
    assert isinstance(result, str)
    return result


def finishes(action: Callable[[], object], seconds: float = 5.0) -> tuple[bool, object]:
    """Run `action` in a daemon thread: (finished in time, its result or exception).

    A daemon thread, so a regression that blocks forever fails the test instead of hanging pytest.
    """
    box: list[object] = []

    def target() -> None:
        try:
            box.append(action())
        except BaseException as exc:
            box.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    return (not thread.is_alive(), box[0] if box else None)


# -- policy.py ----------------------------------------------------------------------------------


def test_policy_deny_and_allow_match_mixed_case_tool_names() -> None:
    @tool(name="DeleteRepo", group="Danger")
    def delete_repo(repo: str) -> str:
        """Delete a repository."""
        return repo

    # Entries are lower-cased before matching; the tool's own name and group must be too, or a
    # deny list silently fails open for every custom tool with a capital letter.
    assert not ToolPolicy(deny=["DeleteRepo"]).permits(delete_repo)
    assert not ToolPolicy(deny=["deleterepo"]).permits(delete_repo)
    assert not ToolPolicy(deny=["group:Danger"]).permits(delete_repo)
    assert ToolPolicy(allow=["DeleteRepo"]).permits(delete_repo)
    assert ToolPolicy(allow=["group:danger"]).permits(delete_repo)
    assert not ToolPolicy(allow=["read"]).permits(delete_repo)


async def test_symlink_loop_is_refused_and_does_not_break_grep_or_ls(
    workspace: Path, ctx: ToolContext
) -> None:
    (workspace / "notes.txt").write_text("needle here\n")
    os.symlink("loop", workspace / "loop")
    os.symlink("b", workspace / "a")
    os.symlink("a", workspace / "b")

    for path in ("loop", "a", "loop/x.txt"):
        with pytest.raises(ToolRefused, match="symlink loop"):
            await asyncio.to_thread(ctx.sandbox.resolve_path, path)
    with pytest.raises(ToolRefused):
        await call(read, ctx, path="loop")
    with pytest.raises(ToolRefused):
        await call(write, ctx, path="a", content="x")

    found = await call(grep, ctx, pattern="needle")
    assert found.splitlines()[0] == "notes.txt:1: needle here"
    listing = await call(ls, ctx, path=".")
    assert "notes.txt  (12 bytes)" in listing
    assert "loop -> loop (broken)" in listing


async def test_writes_into_runtime_state_and_git_are_refused(workspace: Path, ctx: ToolContext) -> None:
    runtime = workspace / ".openclaw-mini"
    runtime.mkdir()
    (runtime / "state-namespaces.json").write_text('{"v": 1, "namespaces": []}\n')
    (workspace / ".git" / "hooks").mkdir(parents=True)
    (workspace / ".git" / "config").write_text("[core]\n")
    forged = '{"v": 1, "namespaces": [{"namespace_id": "ns_1", "name": "ops", "token_sha256": "0"}]}'

    # A namespace token hash the model chose, a forged transcript, or a git hook / fsmonitor that
    # runs on the user's next `git status` would all bypass the server's auth or the exec gate.
    for path in (
        ".openclaw-mini/state-namespaces.json",
        ".openclaw-mini/sessions/main/other.jsonl",
        ".git/hooks/pre-commit",
        ".git/config",
        "sub/.git/config",
        ".GIT/config",
    ):
        with pytest.raises(ToolRefused, match="runtime state or git"):
            await call(write, ctx, path=path, content=forged)
    os.symlink(".git", workspace / "gitlink")
    with pytest.raises(ToolRefused):
        await call(write, ctx, path="gitlink/config", content="[core]\n\tfsmonitor = touch /tmp/pwned\n")

    assert (runtime / "state-namespaces.json").read_text() == '{"v": 1, "namespaces": []}\n'
    assert (workspace / ".git" / "config").read_text() == "[core]\n"
    assert not (workspace / ".git" / "hooks" / "pre-commit").exists()
    # Reading stays allowed, and so do look-alike names.
    assert "namespaces" in await call(read, ctx, path=".openclaw-mini/state-namespaces.json")
    created = await call(write, ctx, path=".github/workflows/ci.yml", content="on: push\n")
    assert created.startswith("Created")
    assert (await call(write, ctx, path="docs/git/notes.md", content="x\n")).startswith("Created")
    open_sandbox = Sandbox(workspace, SandboxConfig(enabled=False))
    opened = await asyncio.to_thread(open_sandbox.resolve_path, ".git/config", write=True)
    assert opened == workspace / ".git" / "config"


# -- files.py -----------------------------------------------------------------------------------


async def test_read_and_grep_keep_memory_bounded_on_a_huge_single_line(
    workspace: Path, ctx: ToolContext
) -> None:
    size = 24 * 1024 * 1024
    with (workspace / "dump.json").open("wb") as handle:
        handle.write(b'{"key": "needle", "blob": "')
        for _ in range(size // (1024 * 1024)):
            handle.write(b"x" * (1024 * 1024))
        handle.write(b'"}\nsecond line\n')

    tracemalloc.start()
    try:
        out = await call(read, ctx, path="dump.json")
        _, read_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        found = await call(grep, ctx, pattern="needle|second")
        _, grep_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert read_peak < 4 * 1024 * 1024, f"read held {read_peak:,} bytes for one 24 MiB line"
    assert grep_peak < 8 * 1024 * 1024, f"grep held {grep_peak:,} bytes for one 24 MiB line"

    lines = out.splitlines()
    assert lines[0].startswith('     1\t{"key": "needle", "blob": "xxx')
    assert "[line cut:" in lines[0] and f"{size + 29:,} bytes in all" in lines[0]
    assert lines[1] == "     2\tsecond line"
    assert lines[-1] == "(end of file)"
    assert [line.split(":")[:2] for line in found.splitlines()] == [["dump.json", "1"], ["dump.json", "2"]]


# -- memory.py ----------------------------------------------------------------------------------


async def test_memory_paths_with_symlink_loops_are_refused(workspace: Path) -> None:
    (workspace / "memory").mkdir()
    os.symlink("loop.md", workspace / "memory" / "loop.md")
    with MemoryStore(workspace, timezone="UTC", clock=lambda: NOW) as store:
        with pytest.raises(MemoryPathError, match="symlink loop"):
            await asyncio.to_thread(store.get, "memory/loop.md")
        context = ToolContext(
            workspace=workspace,
            session_key="agent:main:t",
            agent_id="main",
            sandbox=Sandbox(workspace),
            extras={"memory": store},
        )
        with pytest.raises(ToolError, match="memory_get refused"):
            await memory_get.invoke({"path": "memory/loop.md"}, context)


# -- skills.py ----------------------------------------------------------------------------------


def test_skill_loader_skips_a_fifo_skill_file_instead_of_hanging(workspace: Path, tmp_path: Path) -> None:
    good = workspace / "skills" / "good"
    good.mkdir(parents=True)
    (good / "SKILL.md").write_text("---\nname: good\ndescription: Fine.\n---\nbody\n")
    (workspace / "skills" / "pipe").mkdir()
    fifo = workspace / "skills" / "pipe" / "SKILL.md"
    os.mkfifo(fifo)
    loader = SkillLoader(
        workspace,
        user_dir=tmp_path / "user",
        bundled_dir=tmp_path / "bundled",
        env={},
        platform="linux",
        which=lambda name: None,
    )
    done, snapshot = finishes(loader.load)
    if not done:  # let the blocked open() return so the thread ends
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    assert done, "SkillLoader.load blocked on a FIFO named SKILL.md"
    assert not isinstance(snapshot, BaseException), snapshot
    assert [skill.name for skill in snapshot.skills] == ["good"]  # type: ignore[attr-defined]
    assert any("not a regular file" in str(w) for w in snapshot.warnings)  # type: ignore[attr-defined]


# -- session.py ---------------------------------------------------------------------------------


def test_session_ids_with_unicode_look_alikes_are_refused() -> None:
    # U+212A KELVIN SIGN lower-cases to ASCII "k": without a check "\u212aate" opened Kate's session.
    for value in ("\u212aate", "agent:main:\u212a", "agent:\u212aitchen:s1", "caf\u00e9"):
        with pytest.raises(SessionKeyError, match="ASCII"):
            SessionKey.parse(value)
    assert str(SessionKey.parse("Kate")) == "agent:main:kate"


async def test_a_secret_cut_in_two_by_the_output_cap_is_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from openclaw_mini.tools.shell import SHELL_TOOLS

    secret = "Zq81-secret-Value-4471"
    monkeypatch.setenv("DEMO_SERVICE_API_KEY", secret)
    context = ToolContext(
        workspace=tmp_path,
        session_key="agent:main:t",
        agent_id="main",
        sandbox=Sandbox(tmp_path, SandboxConfig(allow_exec=True)),
    )
    # 5,000 copies back to back: whatever the cap keeps, its cuts land inside a copy.
    command = f"python3 -c \"print('{secret}' * 5000)\""
    out = await SHELL_TOOLS[0].invoke({"command": command}, context)
    assert "bytes cut from the middle" in out
    for start in range(len(secret) - 6):
        assert secret[start : start + 7] not in out, secret[start : start + 7]
