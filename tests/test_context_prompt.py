from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from openclaw_mini.context.bootstrap import BootstrapContext, BootstrapFile, BootstrapLoader
from openclaw_mini.context.prompt import build_system_prompt, format_now
from openclaw_mini.tools.base import tool


@tool(group="fs")
def read(path: str) -> str:
    """Read a text file from the workspace.

    Longer explanation that must not reach the tool list.
    """
    return path


@tool(group="runtime")
def exec_command(command: str) -> str:
    """Run a shell command."""
    return command


NOW = datetime(2025, 3, 4, 14, 5, tzinfo=ZoneInfo("Europe/Berlin"))


def files(*names: str) -> BootstrapContext:
    return BootstrapContext(files=[BootstrapFile(name, f"<<{name} body>>", 12) for name in names])


def test_stable_order_and_project_context(tmp_path: Path) -> None:
    context = files("AGENTS.md", "SOUL.md", "TOOLS.md", "USER.md", "HEARTBEAT.md", "MEMORY.md")
    prompt = build_system_prompt(
        agent_id="main",
        tools=[read, exec_command],
        bootstrap=context,
        skills_block="<available_skills>\n<skill>deploy</skill>\n</available_skills>",
        memory_guidance="Search memory before answering about earlier work.",
        workspace=tmp_path,
        now=NOW,
        extra_instructions="Always answer in haiku.",
    )
    stable = prompt.stable
    order = [
        stable.index("You are main"),
        stable.index("## Tools"),
        stable.index("- read: Read a text file from the workspace."),
        stable.index("- exec_command: Run a shell command."),
        stable.index("## Safety"),
        stable.index("<available_skills>"),
        stable.index("Search memory before answering"),
        stable.index(str(tmp_path)),
        stable.index("Always answer in haiku."),
        stable.index("# Project Context"),
        stable.index("## AGENTS.md"),
        stable.index("## SOUL.md"),
        stable.index("## TOOLS.md"),
        stable.index("## USER.md"),
        stable.index("## MEMORY.md"),
    ]
    assert order == sorted(order)
    assert "Longer explanation" not in stable
    assert "<<AGENTS.md body>>" in stable
    assert "take on its persona" in stable and "tone" in stable


def test_soul_line_only_with_soul(tmp_path: Path) -> None:
    prompt = build_system_prompt(
        agent_id="main", tools=[], bootstrap=files("AGENTS.md"), workspace=tmp_path, now=NOW
    )
    assert "take on its persona" not in prompt.stable
    assert "No tools are available" in prompt.stable


def test_dynamic_part_has_time_and_heartbeat_stable_part_does_not(tmp_path: Path) -> None:
    context = files("AGENTS.md", "HEARTBEAT.md")
    prompt = build_system_prompt(
        agent_id="main", tools=[read], bootstrap=context, workspace=tmp_path, now=NOW
    )
    assert "<<HEARTBEAT.md body>>" in prompt.dynamic
    assert "HEARTBEAT.md" not in prompt.stable
    assert "2025-03-04 14:05" in prompt.dynamic and "Europe/Berlin" in prompt.dynamic
    assert "UTC+01:00" in prompt.dynamic
    assert "2025-03-04" not in prompt.stable and "14:05" not in prompt.stable

    later = build_system_prompt(
        agent_id="main", tools=[read], bootstrap=context, workspace=tmp_path, now=NOW + timedelta(hours=3)
    )
    assert later.stable == prompt.stable  # the cached prefix does not move with the clock
    assert later.dynamic != prompt.dynamic


def test_heartbeat_edit_changes_only_dynamic(tmp_path: Path) -> None:
    (tmp_path / "AGENTS.md").write_text("rules", encoding="utf-8")
    (tmp_path / "HEARTBEAT.md").write_text("- check inbox", encoding="utf-8")
    loader = BootstrapLoader(tmp_path)
    first = build_system_prompt(agent_id="a", tools=[], bootstrap=loader.load(), workspace=tmp_path, now=NOW)
    (tmp_path / "HEARTBEAT.md").write_text("- check calendar and inbox", encoding="utf-8")
    second = build_system_prompt(agent_id="a", tools=[], bootstrap=loader.load(), workspace=tmp_path, now=NOW)
    assert first.stable == second.stable
    assert "check calendar" in second.dynamic and "check calendar" not in first.dynamic


def test_no_bootstrap_no_project_context(tmp_path: Path) -> None:
    prompt = build_system_prompt(agent_id="x", tools=[], bootstrap=None, workspace=tmp_path, now=NOW)
    assert "Project Context" not in prompt.stable
    assert prompt.dynamic.startswith("## Current time")


def test_format_now_offsets() -> None:
    assert "UTC-05:30" in format_now(
        datetime(2025, 1, 1, 9, 0, tzinfo=timezone(timedelta(hours=-5, minutes=-30)))
    )
    text = format_now(datetime(2025, 1, 1, 9, 0, tzinfo=UTC))
    assert "2025-01-01 09:00 (Wednesday)" in text and "UTC+00:00" in text
    naive = format_now(datetime(2025, 1, 1, 9, 0))  # taken as local time
    assert "2025-01-01 09:00" in naive and "UTC" in naive
