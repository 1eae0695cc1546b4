"""Tests for the `exec` tool and `ExecManager`: real processes, real process groups."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from openclaw_mini.tools.base import ToolContext, ToolError
from openclaw_mini.tools.policy import Sandbox, SandboxConfig
from openclaw_mini.tools.shell import SHELL_TOOLS, ExecManager, exec_, run_command


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    return ToolContext(
        workspace=tmp_path,
        session_key="agent:main:t",
        agent_id="main",
        sandbox=Sandbox(tmp_path, SandboxConfig(allow_exec=True)),
    )


async def run(ctx: ToolContext, **args: Any) -> str:
    result = await exec_.invoke(args, ctx)
    assert isinstance(result, str)
    return result


def unique_sleep() -> str:
    """A `sleep` argument no other process on the machine uses, to find our processes in /proc."""
    # 8 random decimals: other test runs on the same machine (other worktrees) use this helper too.
    return f"{30 + secrets.randbelow(10**8) / 10**8:.8f}"


def live_processes_with(marker: str) -> list[int]:
    """PIDs of live (non-zombie) processes whose command line is exactly `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\x00", b" ").decode().strip()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state = stat[stat.rfind(")") + 2 :].split()[0]
        if cmdline == marker and state != "Z":
            found.append(int(entry.name))
    return found


async def wait_until(predicate: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def test_exports_exec_in_the_runtime_group() -> None:
    assert [t.name for t in SHELL_TOOLS] == ["exec"]
    assert exec_.group == "runtime"
    assert set(exec_.input_schema["properties"]) == {"command", "timeout", "background"}


async def test_exec_reports_exit_code_stdout_and_stderr(ctx: ToolContext) -> None:
    out = await run(ctx, command="echo out-line; echo err-line >&2")
    assert out.startswith("Exit code 0.")
    assert "[stdout]\nout-line\n[stderr]\nerr-line" in out


async def test_exec_non_zero_exit_is_reported_not_raised(ctx: ToolContext) -> None:
    out = await run(ctx, command="echo partial; exit 3")
    assert out.startswith("Command FAILED with exit code 3.")
    assert "[stdout]\npartial\n[stderr]\n(empty)" in out
    killed = await run(ctx, command="kill -9 $$")
    assert killed.startswith("Command FAILED: killed by SIGKILL (exit code -9).")


async def test_exec_runs_in_the_workspace(ctx: ToolContext, tmp_path: Path) -> None:
    (tmp_path / "marker.txt").write_text("here")
    out = await run(ctx, command="pwd; cat marker.txt")
    assert f"[stdout]\n{ctx.sandbox.workspace}\nhere\n" in out


async def test_exec_hides_secrets_from_the_child(ctx: ToolContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-very-secret-1")
    monkeypatch.setenv("FLUX_TOKEN", "flux-very-secret-2")
    monkeypatch.setenv("DB_PASSWORD", "hunter2-very-secret")
    monkeypatch.setenv("OPENCLAW_TEST_VISIBLE", "plain-value")
    monkeypatch.setenv("DATABASE_URL", "postgres://user:pw-very-secret@db/x")
    out = await run(ctx, command='env; echo "key=[$ANTHROPIC_API_KEY]"')
    for leaked in ("sk-ant-very-secret-1", "flux-very-secret-2", "hunter2-very-secret", "FLUX_TOKEN"):
        assert leaked not in out
    assert "key=[]" in out
    # Only the allow-list reaches the command: a variable no pattern flags stays hidden too.
    assert "pw-very-secret" not in out and "OPENCLAW_TEST_VISIBLE" not in out
    assert "PATH=" in out and "HOME=" in out
    passing = ToolContext(
        workspace=ctx.workspace,
        session_key=ctx.session_key,
        agent_id="main",
        sandbox=Sandbox(
            ctx.workspace, SandboxConfig(allow_exec=True, exec_env_passthrough=("OPENCLAW_TEST_VISIBLE",))
        ),
    )
    assert "OPENCLAW_TEST_VISIBLE=plain-value" in await run(passing, command="env")
    # A secret that reaches the output another way (e.g. from a file) is redacted too.
    echoed = await run(ctx, command="echo sk-ant-very-secret-1")
    assert "sk-ant-very-secret-1" not in echoed and "[redacted]" in echoed


async def test_exec_caps_output_keeping_head_and_tail(ctx: ToolContext) -> None:
    out = await run(ctx, command="seq 1 100000")
    assert len(out) < 31_000
    stdout = out.split("[stdout]\n", 1)[1]
    assert stdout.startswith("1\n2\n3\n")
    assert "\n99999\n100000\n[stderr]" in stdout
    cut = re.search(r"\[\.\.\. ([\d,]+) bytes cut from the middle \(([\d,]+) bytes in all\) \.\.\.\]", out)
    assert cut is not None
    total = sum(len(f"{i}\n") for i in range(1, 100_001))
    assert int(cut.group(2).replace(",", "")) == total
    assert int(cut.group(1).replace(",", "")) == total - 30_000


async def test_exec_timeout_kills_the_whole_process_group(ctx: ToolContext) -> None:
    marker = unique_sleep()
    started = time.monotonic()
    out = await run(ctx, command=f"echo started; sleep {marker} & sleep {marker}", timeout=1)
    elapsed = time.monotonic() - started
    assert elapsed < 4, f"timeout took {elapsed:.1f} s"
    assert out.startswith("Command timed out after 1 s and was stopped")
    assert "[stdout]\nstarted" in out
    await wait_until(lambda: not live_processes_with(f"sleep {marker}"), seconds=10)


async def test_cancelling_exec_kills_the_process_group(ctx: ToolContext) -> None:
    marker = unique_sleep()
    task = asyncio.create_task(run(ctx, command=f"sleep {marker} & sleep {marker}", timeout=60))
    await wait_until(lambda: len(live_processes_with(f"sleep {marker}")) == 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: not live_processes_with(f"sleep {marker}"), seconds=10)


async def test_exec_stops_leftover_background_children(ctx: ToolContext) -> None:
    marker = unique_sleep()
    started = time.monotonic()
    out = await run(ctx, command=f"sleep {marker} & echo shell-done")
    assert time.monotonic() - started < 20  # it did not wait for the 30 s sleep (no tight stopwatch)
    assert out.startswith("Exit code 0.")
    assert "use background=true" in out
    assert "shell-done" in out
    redirected = await run(ctx, command=f"sleep {marker} >/dev/null 2>&1 & echo ok")
    assert "use background=true" in redirected
    await wait_until(lambda: not live_processes_with(f"sleep {marker}"), seconds=10)


async def test_exec_validates_arguments(ctx: ToolContext) -> None:
    with pytest.raises(ToolError, match="timeout must be between 1 and"):
        await run(ctx, command="true", timeout=0)
    with pytest.raises(ToolError, match="command is empty"):
        await run(ctx, command="   ")


async def test_background_exec_returns_at_once_and_reports_completion(ctx: ToolContext) -> None:
    done: asyncio.Future[tuple[str, int, str]] = asyncio.get_running_loop().create_future()

    async def on_exec_complete(exec_id: str, exit_code: int, tail: str) -> None:
        done.set_result((exec_id, exit_code, tail))

    ctx.extras["on_exec_complete"] = on_exec_complete
    started = time.monotonic()
    out = await run(ctx, command="sleep 1.5; echo built; echo warn >&2; exit 4", background=True)
    assert time.monotonic() - started < 1.5  # it did not wait for the command
    match = re.match(r"Started background command (exec-[0-9a-f]{8}) \(pid \d+, timeout 60 s\)", out)
    assert match, out
    exec_id, code, tail = await asyncio.wait_for(done, 5)
    assert (exec_id, code) == (match.group(1), 4)
    assert tail == "built\n[stderr] warn"
    manager = ctx.exec_manager
    assert manager is not None
    assert isinstance(manager, ExecManager)
    job = manager.get(exec_id)
    assert job is not None and not job.running and job.outcome is not None
    assert job.outcome.exit_code == 4


async def test_background_exec_with_sync_callback(ctx: ToolContext) -> None:
    calls: list[tuple[str, int, str]] = []
    ctx.extras["on_exec_complete"] = lambda *args: calls.append(args)
    await run(ctx, command="echo quick", background=True)
    manager = ctx.exec_manager
    assert manager is not None
    await asyncio.wait_for(asyncio.gather(*(job.task for job in manager.jobs() if job.task)), 5)
    assert [(code, tail) for _, code, tail in calls] == [(0, "quick")]


async def test_exec_manager_aclose_kills_running_background_groups(ctx: ToolContext) -> None:
    calls: list[Any] = []
    ctx.extras["on_exec_complete"] = lambda *args: calls.append(args)
    marker = unique_sleep()
    await run(ctx, command=f"sleep {marker} & sleep {marker}", background=True)
    manager = ctx.exec_manager
    assert manager is not None
    await wait_until(lambda: len(live_processes_with(f"sleep {marker}")) == 2)
    assert len(manager.running()) == 1
    await asyncio.wait_for(manager.aclose(), 5)
    await wait_until(lambda: not live_processes_with(f"sleep {marker}"), seconds=10)
    assert manager.running() == []
    assert calls == []
    with pytest.raises(ToolError, match="shutting down"):
        await run(ctx, command="true", background=True)


async def test_run_command_engine_can_be_used_directly(tmp_path: Path) -> None:
    outcome = await run_command("printf abc", tmp_path, time_limit=5, env={"PATH": "/usr/bin:/bin"})
    assert (outcome.exit_code, outcome.stdout, outcome.stderr, outcome.timed_out) == (0, "abc", "", False)
