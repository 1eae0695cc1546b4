"""Skills on upstream-style inputs (issue 13): real third-party SKILL.md shapes must load."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from openclaw_mini.skills import SkillLoader, match_skill, parse_skill_file

FIXTURES = Path(__file__).parent / "fixtures" / "real-skills"


def write_skill(root: Path, folder: str, front: str, body: str = "Do the thing.\n") -> Path:
    path = root / folder / "SKILL.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"---\n{front}\n---\n{body}", encoding="utf-8")
    return path


def loader(workspace: Path, **options: object) -> SkillLoader:
    empty = workspace / "no-other-skills"
    empty.mkdir(exist_ok=True)
    values: dict[str, object] = {"bundled_dir": empty, "user_dir": empty, "platform": "linux", "env": {}}
    values.update(options)
    return SkillLoader(workspace, **values)  # type: ignore[arg-type]


def test_frontmatter_valid_only_in_the_line_based_fallback_loads(tmp_path: Path) -> None:
    path = write_skill(
        tmp_path, "anime", "name: anime-art\ndescription: Use anime style IMPORTANT: Must be kawaii"
    )
    skill, warnings = parse_skill_file(path)
    assert warnings == [] and skill is not None
    assert skill.description == "Use anime style IMPORTANT: Must be kawaii"


def test_a_name_with_spaces_and_capitals_loads_with_a_sanitised_command(tmp_path: Path) -> None:
    write_skill(
        tmp_path / "skills", "agent-browser", "name: Agent Browser\ndescription: Drive a headless browser."
    )
    snapshot = loader(tmp_path).load()
    skill = snapshot.get("agent_browser")
    assert skill is not None and skill.name == "Agent Browser" and skill.command == "agent_browser"
    assert skill.slash_commands == ["/agent_browser"]
    assert snapshot.get("Agent Browser") is skill
    match = match_skill(snapshot, "/agent_browser open example.com")
    assert match is not None and match.skill is skill and match.remaining == "open example.com"


def test_a_one_word_name_keeps_its_own_command_and_gains_the_sanitised_one(tmp_path: Path) -> None:
    write_skill(tmp_path / "skills", "gh-issues", "name: gh-issues\ndescription: Issues.")
    snapshot = loader(tmp_path).load()
    skill = snapshot.get("gh-issues")
    assert skill is not None and skill.slash_commands == ["/gh-issues", "/gh_issues"]
    for text in ("/gh-issues owner/repo", "/gh_issues owner/repo"):
        found = match_skill(snapshot, text)
        assert found is not None and found.skill is skill


def test_a_non_boolean_flag_falls_back_to_the_default_with_a_warning(tmp_path: Path) -> None:
    path = write_skill(
        tmp_path,
        "odd",
        'name: odd\ndescription: d\nuser-invocable: sometimes\nmetadata: {"openclaw": {"always": "maybe", '
        '"requires": {"bins": ["definitely-not-installed"]}}}',
    )
    skill, warnings = parse_skill_file(path)
    assert skill is not None and skill.user_invocable is True
    assert skill.metadata is not None and skill.metadata.always is False
    messages = [str(warning) for warning in warnings]
    assert any(":4: 'user-invocable: sometimes' is not true or false" in message for message in messages)
    assert any("'always: maybe' is not true or false; using the default (false)" in m for m in messages)
    assert not any(warning.skipped for warning in warnings)


def test_string_lists_accept_commas_and_are_trimmed(tmp_path: Path) -> None:
    write_skill(
        tmp_path / "skills",
        "media",
        'name: media\ndescription: d\nmetadata: {"openclaw": {"os": "linux, darwin", '
        '"requires": {"bins": "bun, node", "anyBins": [" ffmpeg ", ""], "env": [" MEDIA_KEY "]}}}',
    )
    found = {"bun", "node", "ffmpeg"}
    snapshot = loader(
        tmp_path, env={"MEDIA_KEY": "k"}, which=lambda name: f"/bin/{name}" if name in found else None
    ).load()
    skill = snapshot.get("media")
    assert skill is not None and skill.metadata is not None
    assert skill.metadata.os == ["linux", "darwin"]
    assert skill.metadata.requires.bins == ["bun", "node"]
    assert skill.metadata.requires.any_bins == ["ffmpeg"]
    assert skill.metadata.requires.env == ["MEDIA_KEY"]
    assert skill.eligible, skill.ineligible_reason


@pytest.mark.parametrize(
    ("config", "eligible"),
    [
        ({"channels": {"discord": {"token": "   "}}}, False),
        ({"channels": {"discord": {"token": {}}}}, True),
        ({"channels": {"discord": {"token": "abc"}}}, True),
        ({"channels": {"discord": {"token": 0}}}, False),
        ({"channels": {"discord": {}}}, False),
    ],
)
def test_config_gating_truthiness_as_upstream(
    tmp_path: Path, config: dict[str, object], eligible: bool
) -> None:
    write_skill(
        tmp_path / "skills",
        "chat",
        "name: chat\ndescription: d\n"
        'metadata: {"openclaw": {"requires": {"config": [".channels..discord.token."]}}}',
    )
    skill = loader(tmp_path, config=config).load().get("chat")
    assert skill is not None and skill.eligible is eligible


def test_every_real_third_party_skill_loads(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES, tmp_path / "skills")
    snapshot = loader(tmp_path).load()
    assert sorted(skill.name for skill in snapshot.skills) == sorted(p.name for p in FIXTURES.iterdir())
    assert not any(warning.skipped for warning in snapshot.warnings)


def test_skills_list_prints_each_warning_once_and_shows_skipped_skills(tmp_path: Path) -> None:
    root = tmp_path / "skills"
    write_skill(root, "fine", "name: fine\ndescription: Fine.")
    write_skill(root, "flaky", "name: flaky\ndescription: Flaky.\nuser-invocable: perhaps")
    write_skill(root, "nodesc", "name: nodesc")
    write_skill(root, "Agent Browser", "name: Agent Browser\ndescription: Browser.")
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1"}
    command = [sys.executable, "-c", "from openclaw_mini.cli.main import main; main()"]
    result = subprocess.run(
        [*command, "skills", "list", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert output.count("'user-invocable: perhaps' is not true or false") == 1
    assert output.count("no 'description'") == 1
    row = next(line for line in result.stdout.splitlines() if "nodesc" in line and "skipped" in line)
    assert "line 2" in row
    assert "/agent_browser" in result.stdout
    as_json = subprocess.run(
        [*command, "skills", "list", "-w", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    payload = json.loads(as_json.stdout)
    assert [item["name"] for item in payload["skipped"]] == ["nodesc"]
    assert as_json.stderr == ""
