"""`openclaw-mini skills list/show` through typer's CliRunner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from openclaw_mini.cli.skills import app

FIXTURES = Path(__file__).parent / "fixtures" / "real-skills"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    shutil.copytree(FIXTURES / "weather", workspace / "skills" / "weather")
    shutil.copytree(FIXTURES / "notion", workspace / "skills" / "notion")
    broken = workspace / "skills" / "broken" / "SKILL.md"
    broken.parent.mkdir()
    broken.write_text("---\nname: broken\n---\nno description\n", encoding="utf-8")
    mine = workspace / "skills" / "review" / "SKILL.md"
    mine.parent.mkdir()
    mine.write_text(
        '---\nid: review\ndescription: Our own review.\ntriggers: ["/cr"]\n---\nReview it.\n',
        encoding="utf-8",
    )
    return workspace


def test_list_table(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTION_API_KEY", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["list", "--workspace", str(workspace)])
    assert result.exit_code == 0, result.output
    out = result.output
    for needle in (
        "weather",
        "notion",
        "missing env: NOTION_API_KEY",
        "review",
        "/cr",
        "/review",
        "workspace",
        "bundled",
        "解释代码",
        "skipped",
        "broken",
        "no 'description'",
        "shadowed: review",
    ):
        assert needle in out, needle
    # Each problem is printed once: as the skipped skill's row, not also as a raw log line.
    assert out.count("no 'description'") == 1
    assert "warning:" not in out


def test_list_json(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTION_API_KEY", "x")
    result = CliRunner().invoke(app, ["list", "-w", str(workspace), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    skills = {item["name"]: item for item in payload["skills"]}
    assert skills["notion"]["eligible"] is True
    assert skills["review"]["source"] == "workspace" and skills["review"]["triggers"] == ["/cr", "/review"]
    assert skills["explain"]["source"] == "bundled"
    assert [item["source"] for item in payload["shadowed"]] == ["bundled"]
    ours = [item for item in payload["warnings"] if item["path"].startswith(str(workspace.resolve()))]
    assert len(ours) == 1 and ours[0]["path"].endswith("broken/SKILL.md")
    assert ours[0]["line"] == 2


def test_show(workspace: Path) -> None:
    result = CliRunner().invoke(app, ["show", "/weather", "-w", str(workspace)])
    assert result.exit_code == 0, result.output
    for needle in (
        "description: Get current weather",
        "homepage: https://wttr.in/:help",
        "requires: bins curl",
        "Install curl (brew)",
        "Weather Skill",
    ):
        assert needle in result.output, needle


def test_show_unknown_skill_is_a_plain_error(workspace: Path) -> None:
    result = CliRunner().invoke(app, ["show", "nope", "-w", str(workspace)])
    assert result.exit_code == 2
    assert "No skill named 'nope'" in result.output
    assert "Traceback" not in result.output


def test_missing_workspace_is_a_plain_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["list", "-w", str(tmp_path / "absent")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
