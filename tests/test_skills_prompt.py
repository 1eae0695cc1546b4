"""Skills prompt block (caps, compact fallback) and the bundled skills shipped in `skills/`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from openclaw_mini.skills import (
    SkillLoader,
    SkillSnapshot,
    bundled_skills_dir,
    match_skill,
    parse_skill_file,
    render_skills_prompt,
)

REPO = Path(__file__).resolve().parents[1]
OURS = {
    "review": ("/review", "代码审查"),
    "explain": ("/explain", "解释代码"),
    "refactor": ("/refactor", "重构"),
    "test": ("/test", "编写测试"),
    "skill-creator": ("/skill-creator", "创建技能"),
    "heartbeat": ("/heartbeat", "心跳任务"),
}


def write_skill(root: Path, folder: str, front: str, body: str = "Body.\n") -> Path:
    path = root / folder / "SKILL.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"---\n{front.strip()}\n---\n{body}", encoding="utf-8")
    return path


def snapshot_with(tmp_path: Path, count: int, description: str = "Does a useful thing.") -> SkillSnapshot:
    workspace = tmp_path / "ws"
    for index in range(count):
        write_skill(workspace / "skills", f"skill-{index:03d}", f"description: {description} #{index}")
    return SkillLoader(
        workspace,
        user_dir=tmp_path / "u",
        bundled_dir=tmp_path / "b",
        env={},
        platform="linux",
        which=lambda name: None,
    ).load()


def listed_names(text: str) -> list[str]:
    return re.findall(r"<name>([^<]+)</name>", text) + re.findall(r'<skill name="([^"]+)"', text)


# ----------------------------------------------------------------------------------------- prompt


def test_prompt_lists_eligible_model_invocable_skills(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    root = workspace / "skills"
    write_skill(root, "alpha", "description: Alpha does <things> & more.")
    write_skill(root, "hidden", "description: Command only.\ndisable-model-invocation: true")
    write_skill(
        root,
        "blocked",
        'description: Needs a tool.\nmetadata: {"openclaw": {"requires": {"bins": ["missing-tool"]}}}',
    )
    write_skill(tmp_path / "b", "bundled-one", "description: From the bundle.")
    snapshot = SkillLoader(
        workspace,
        user_dir=tmp_path / "u",
        bundled_dir=tmp_path / "b",
        env={},
        platform="linux",
        which=lambda name: None,
    ).load()
    text, warnings = render_skills_prompt(snapshot)
    assert warnings == []
    assert "<available_skills>" in text and text.rstrip().endswith("</available_skills>")
    assert "read its SKILL.md with the read tool" in text
    assert "Never read more than one skill up front" in text
    assert listed_names(text) == ["alpha", "bundled-one"]  # workspace first, then bundled
    assert "<description>Alpha does &lt;things&gt; &amp; more.</description>" in text
    assert "<location>skills/alpha/SKILL.md</location>" in text
    assert f"<location>{tmp_path / 'b' / 'bundled-one' / 'SKILL.md'}</location>" in text
    assert "hidden" not in text and "blocked" not in text
    # the hidden skill is still a command
    assert match_skill(snapshot, "/hidden now") is not None


def test_prompt_empty_when_nothing_to_offer(tmp_path: Path) -> None:
    assert render_skills_prompt(snapshot_with(tmp_path, 0)) == ("", [])


def test_prompt_within_caps_uses_full_form(tmp_path: Path) -> None:
    snapshot = snapshot_with(tmp_path, 40)
    text, warnings = render_skills_prompt(snapshot)
    assert warnings == []
    assert len(text) <= 30_000
    assert text.count("<description>") == 40
    assert "more skills are installed" not in text


def test_prompt_switches_to_compact_form_over_the_char_cap(tmp_path: Path) -> None:
    snapshot = snapshot_with(tmp_path, 120, description="A long description " * 12)
    full, _ = render_skills_prompt(snapshot, max_chars=10_000_000)
    assert len(full) > 30_000
    text, warnings = render_skills_prompt(snapshot)
    assert len(text) <= 30_000
    assert "<description>" not in text
    assert "Compact list" in text
    assert len(listed_names(text)) == 120
    assert len(warnings) == 1 and "compact" in warnings[0]


def test_prompt_leaves_skills_out_over_the_count_cap(tmp_path: Path) -> None:
    snapshot = snapshot_with(tmp_path, 160)
    text, warnings = render_skills_prompt(snapshot)
    assert len(listed_names(text)) == 150
    assert "(10 more skills are installed but not listed here" in text
    assert warnings == ["10 of 160 skills left out of the prompt (cap 150 skills)"]
    assert len(text) <= 30_000


def test_prompt_drops_trailing_skills_when_even_compact_is_too_long(tmp_path: Path) -> None:
    snapshot = snapshot_with(tmp_path, 60)
    text, warnings = render_skills_prompt(snapshot, max_chars=3_000)
    assert len(text) <= 3_000
    shown = listed_names(text)
    assert 0 < len(shown) < 60
    assert shown == sorted(shown)
    assert f"({60 - len(shown)} more skills are installed" in text
    assert any("compact" in warning for warning in warnings)
    assert any(f"{60 - len(shown)} of 60 skills left out" in warning for warning in warnings)
    tiny, tiny_warnings = render_skills_prompt(snapshot, max_chars=50)
    assert tiny == "" and tiny_warnings


# ---------------------------------------------------------------------------------- bundled skills


def test_bundled_dir_is_the_checkout_skills_folder() -> None:
    assert bundled_skills_dir() == REPO / "skills"


def test_wheel_includes_the_bundled_skills() -> None:
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert '"skills" = "openclaw_mini/_bundled/skills"' in pyproject


@pytest.mark.parametrize("name", sorted(OURS))
def test_bundled_skill_is_complete(name: str) -> None:
    path = REPO / "skills" / name / "SKILL.md"
    skill, warnings = parse_skill_file(path, "bundled")
    assert warnings == []
    assert skill is not None and skill.name == name and skill.title
    english, chinese = OURS[name]
    assert skill.triggers == [english, chinese]
    assert len(skill.description) > 80
    assert len(skill.body) > 1500
    assert skill.body.count("\n## ") >= 3  # a real procedure with sections, not a stub
    assert "TODO" not in skill.body


def test_bundled_skills_load_and_match_by_default(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    loader = SkillLoader(workspace, user_dir=tmp_path / "u", env={"PATH": ""}, platform="linux")
    snapshot = loader.load()
    for name, (english, chinese) in OURS.items():
        skill = snapshot.get(name)
        assert skill is not None and skill.source == "bundled" and skill.eligible
        for trigger in (english, chinese):
            match = match_skill(snapshot, f"{trigger} src/app.py")
            assert match is not None and match.skill.name == name and match.remaining == "src/app.py"
    assert loader.read_roots[0] == REPO / "skills"
    text, _ = render_skills_prompt(snapshot)
    assert f"<location>{REPO / 'skills' / 'review' / 'SKILL.md'}</location>" in text


def test_heartbeat_skill_documents_the_task_formats() -> None:
    body = (REPO / "skills" / "heartbeat" / "SKILL.md").read_text(encoding="utf-8")
    for needle in ("- [ ]", "- [x]", "tasks:", "interval:", 'cron: "0 9 * * 1-5"', "HEARTBEAT_OK"):
        assert needle in body


def test_skill_creator_documents_both_forms() -> None:
    body = (REPO / "skills" / "skill-creator" / "SKILL.md").read_text(encoding="utf-8")
    for needle in (
        "id:",
        "triggers:",
        "description:",
        "user-invocable",
        "disable-model-invocation",
        "homepage",
        '"openclaw"',
        "anyBins",
        "primaryEnv",
        "always",
        "skills/<name>/SKILL.md",
    ):
        assert needle in body


def test_prompt_is_memoised_per_snapshot(tmp_path: Path) -> None:
    snapshot = snapshot_with(tmp_path, 160)
    first_text, first_warnings = render_skills_prompt(snapshot)
    first_warnings.append("caller scribbles on its copy")
    second_text, second_warnings = render_skills_prompt(snapshot)
    assert second_text is first_text
    assert second_warnings == ["10 of 160 skills left out of the prompt (cap 150 skills)"]
    other_text, _ = render_skills_prompt(snapshot, max_skills=5)
    assert len(listed_names(other_text)) == 5
