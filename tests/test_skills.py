"""Skills: parsing real OpenClaw files and the mini form, sources/precedence, gating, caching, matching."""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from openclaw_mini.skills import (
    Skill,
    SkillLoader,
    SkillSnapshot,
    bundled_skills_dir,
    match_skill,
    parse_skill_file,
)
from openclaw_mini.skills import loader as skills_module  # where the loader looks up _parse_path

FIXTURES = Path(__file__).parent / "fixtures" / "real-skills"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "real-skills"


def write_skill(root: Path, folder: str, front: str, body: str = "Do the thing.\n") -> Path:
    path = root / folder / "SKILL.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"---\n{front.strip()}\n---\n{body}", encoding="utf-8")
    return path


def bump(path: Path, seconds: int) -> None:
    """Give a path a distinct mtime so a same-second change is never missed by the test."""
    stamp = path.stat().st_mtime + seconds
    os.utime(path, (stamp, stamp))


def make_loader(workspace: Path, tmp_path: Path, **kwargs: object) -> SkillLoader:
    options: dict[str, object] = {
        "user_dir": tmp_path / "user-skills",
        "bundled_dir": tmp_path / "bundled-skills",
        "env": {},
        "platform": "linux",
        "which": lambda name: None,
    }
    options.update(kwargs)
    return SkillLoader(workspace, **options)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ real skills

# Facts stated in the real files: (description start, bins, anyBins, env, config, emoji).
REAL: dict[str, tuple[str, list[str], list[str], list[str], list[str], str | None]] = {
    "1password": ("Set up and use 1Password CLI (op).", ["op"], [], [], [], "🔐"),
    "coding-agent": (
        "Delegate coding tasks to Codex, Claude Code, or Pi agents",
        [],
        ["claude", "codex", "opencode", "pi"],
        [],
        [],
        "🧩",
    ),
    "discord": (
        "Discord ops via the message tool (channel=discord).",
        [],
        [],
        [],
        ["channels.discord.token"],
        "🎮",
    ),
    "gemini": ("Gemini CLI for one-shot Q&A, summaries, and generation.", ["gemini"], [], [], [], "✨"),
    "gh-issues": ("Fetch GitHub issues, spawn sub-agents", ["curl", "git", "gh"], [], [], [], None),
    "github": ("GitHub operations via `gh` CLI", ["gh"], [], [], [], "🐙"),
    "healthcheck": ("Host security hardening and risk-tolerance configuration", [], [], [], [], None),
    "notion": ("Notion API for creating and managing pages", [], [], ["NOTION_API_KEY"], [], "📝"),
    "openai-whisper-api": (
        "Transcribe audio via OpenAI Audio Transcriptions API (Whisper).",
        ["curl"],
        [],
        ["OPENAI_API_KEY"],
        [],
        "🌐",
    ),
    "session-logs": ("Search and analyze your own session logs", ["jq", "rg"], [], [], [], "📜"),
    "skill-creator": ("Create, edit, improve, or audit AgentSkills.", [], [], [], [], None),
    "summarize": ("Summarize or extract text/transcripts from URLs", ["summarize"], [], [], [], "🧾"),
    "taskflow": ("Use when work should span one or more detached tasks", [], [], [], [], "🪝"),
    "weather": ("Get current weather and forecasts via wttr.in or Open-Meteo.", ["curl"], [], [], [], "☔"),
}


@pytest.fixture
def real_workspace(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    shutil.copytree(FIXTURES, workspace / "skills")
    return workspace


def test_fixture_has_all_fourteen_real_skills() -> None:
    assert sorted(path.name for path in FIXTURES.iterdir()) == sorted(REAL)
    if SHARED.is_dir():
        for folder in SHARED.iterdir():
            shared_bytes = (folder / "SKILL.md").read_bytes()
            assert (FIXTURES / folder.name / "SKILL.md").read_bytes() == shared_bytes


def test_real_skills_parse_with_live_eligibility(real_workspace: Path, tmp_path: Path) -> None:
    loader = SkillLoader(real_workspace, user_dir=tmp_path / "none", bundled_dir=tmp_path / "none2")
    snapshot = loader.load()
    assert snapshot.warnings == []
    assert snapshot.shadowed == []
    assert sorted(skill.name for skill in snapshot.skills) == sorted(REAL)
    for name, (description, bins, any_bins, env, config, emoji) in REAL.items():
        skill = snapshot.get(name)
        assert skill is not None, name
        assert skill.source == "workspace"
        assert skill.description.startswith(description), name
        assert skill.path == real_workspace.resolve() / "skills" / name / "SKILL.md"
        assert skill.emoji == emoji
        requires = skill.metadata.requires if skill.metadata else None
        assert (requires.bins if requires else []) == bins
        assert (requires.any_bins if requires else []) == any_bins
        assert (requires.env if requires else []) == env
        assert (requires.config if requires else []) == config
        expected = (
            all(shutil.which(item) for item in bins)
            and (not any_bins or any(shutil.which(item) for item in any_bins))
            and all(os.environ.get(item, "").strip() for item in env)
            and not config  # no OpenClaw channel config in a mini workspace
        )
        assert skill.eligible is bool(expected), (name, skill.ineligible_reason)
        assert (skill.ineligible_reason is None) is bool(expected)
        assert skill.body and not skill.body.startswith("---")


def test_real_skill_details(real_workspace: Path, tmp_path: Path) -> None:
    snapshot = make_loader(real_workspace, tmp_path).load()
    whisper = snapshot.get("openai-whisper-api")
    assert whisper is not None and whisper.metadata is not None
    assert "{baseDir}" not in whisper.body
    assert f"{whisper.base_dir}/scripts/transcribe.sh /path/to/audio.m4a" in whisper.body
    assert whisper.metadata.primary_env == "OPENAI_API_KEY"
    assert whisper.homepage == "https://platform.openai.com/docs/guides/speech-to-text"
    github = snapshot.get("github")
    assert github is not None and github.metadata is not None
    assert [spec.label for spec in github.metadata.install] == [
        "Install GitHub CLI (brew)",
        "Install GitHub CLI (apt)",
    ]
    assert github.metadata.install[1].model_extra == {"package": "gh"}
    discord = snapshot.get("discord")
    assert discord is not None and discord.allowed_tools == ["message"]
    assert discord.ineligible_reason == "missing config: channels.discord.token"
    gh_issues = snapshot.get("gh-issues")
    assert gh_issues is not None and gh_issues.user_invocable
    assert gh_issues.ineligible_reason == "missing bins: curl, git, gh"
    coding = snapshot.get("coding-agent")
    assert coding is not None
    assert coding.ineligible_reason == "needs one of: claude, codex, opencode, pi"
    notion = snapshot.get("notion")
    assert notion is not None and notion.ineligible_reason == "missing env: NOTION_API_KEY"


def test_real_skills_eligibility_follows_injected_environment(real_workspace: Path, tmp_path: Path) -> None:
    present = {"curl", "gh", "git", "jq", "codex"}
    loader = make_loader(
        real_workspace,
        tmp_path,
        env={"NOTION_API_KEY": "secret"},
        which=lambda name: f"/bin/{name}" if name in present else None,
        config={"channels": {"discord": {"token": "t"}}},
    )
    eligible = {skill.name for skill in loader.load().eligible}
    assert eligible == {
        "coding-agent",
        "discord",
        "gh-issues",
        "github",
        "healthcheck",
        "notion",
        "skill-creator",
        "taskflow",
        "weather",
    }


# ----------------------------------------------------------------------------------- frontmatter


def test_mini_form_fields(tmp_path: Path) -> None:
    path = write_skill(
        tmp_path / "ws" / "skills",
        "deploy-folder",
        """
id: deploy
name: Deploy the app
description: Deploy to an environment.
triggers: ["/deploy", "部署"]
""",
        "Run {baseDir}/deploy.sh with the environment.\n",
    )
    skill, warnings = parse_skill_file(path)
    assert warnings == []
    assert skill is not None
    assert skill.name == "deploy"
    assert skill.title == "Deploy the app"
    assert skill.triggers == ["/deploy", "部署"]
    assert skill.body == f"Run {path.parent}/deploy.sh with the environment."
    assert skill.user_invocable and not skill.disable_model_invocation and skill.metadata is None


def test_missing_name_falls_back_to_folder(tmp_path: Path) -> None:
    path = write_skill(tmp_path, "folder-name", "description: Something useful.")
    skill, warnings = parse_skill_file(path)
    assert warnings == [] and skill is not None and skill.name == "folder-name" and skill.title is None


def test_crlf_and_bom_file(tmp_path: Path) -> None:
    path = tmp_path / "crlf" / "SKILL.md"
    path.parent.mkdir()
    text = (
        "---\r\nname: crlf\r\ndescription: Windows line endings.\r\nmetadata:\r\n  {\r\n"
        '    "openclaw": { "emoji": "🪟", "os": "win32", },\r\n  }\r\n---\r\n# Title\r\nLine two\r\n'
    )
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    skill, warnings = parse_skill_file(path)
    assert warnings == []
    assert skill is not None and skill.name == "crlf" and skill.description == "Windows line endings."
    assert skill.metadata is not None and skill.metadata.os == ["win32"] and skill.metadata.emoji == "🪟"
    assert skill.body == "# Title\nLine two"
    assert "\r" not in skill.body


def test_json_metadata_that_yaml_rejects_uses_lenient_parse(tmp_path: Path) -> None:
    # A JSON object starting at column 0 and tab-indented lines are invalid YAML but real-world JSON.
    path = write_skill(
        tmp_path,
        "col0",
        """
name: col0
description: Metadata written as JSON at column 0.
metadata:
{
\t"openclaw": {
\t\t"emoji": "🧭",
\t\t"requires": { "bins": ["git",], "env": ["TOKEN"], },  // trailing commas and a comment
\t\t"install": [{ "id": "brew", "kind": "brew", "bins": ["git"], },],
\t},
}
user-invocable: false
""",
    )
    skill, warnings = parse_skill_file(path)
    assert warnings == []
    assert skill is not None and skill.metadata is not None
    assert skill.metadata.requires.bins == ["git"]
    assert skill.metadata.requires.env == ["TOKEN"]
    assert skill.metadata.install[0].id == "brew"
    assert skill.user_invocable is False


def test_metadata_as_json_string_and_legacy_keys(tmp_path: Path) -> None:
    path = write_skill(
        tmp_path,
        "legacy",
        """
name: legacy
description: Uses the clawdbot key inside a JSON string.
metadata: '{"clawdbot": {"always": true, "requires": {"bins": ["nope",]}}}'
disable-model-invocation: "true"
""",
    )
    skill, warnings = parse_skill_file(path)
    assert warnings == []
    assert skill is not None and skill.metadata is not None
    assert skill.metadata.always is True and skill.metadata.requires.bins == ["nope"]
    assert skill.disable_model_invocation is True


@pytest.mark.parametrize("key", ["clawdis", "moltbot", "openclaw"])
def test_every_metadata_key_spelling(tmp_path: Path, key: str) -> None:
    path = write_skill(tmp_path, "k", f'description: d\nmetadata: {{ "{key}": {{ "emoji": "x" }} }}')
    skill, _ = parse_skill_file(path)
    assert skill is not None and skill.emoji == "x"


def test_bad_metadata_warns_but_keeps_skill(tmp_path: Path) -> None:
    path = write_skill(tmp_path, "meta", "description: d\nmetadata: [1, 2]")
    skill, warnings = parse_skill_file(path)
    assert skill is not None and skill.metadata is None
    assert (
        len(warnings) == 1 and warnings[0].line == 3 and "metadata must be an object" in warnings[0].message
    )


# ---------------------------------------------------------------------------------------- bad input


def test_broken_skills_beside_good_ones(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    root = workspace / "skills"
    write_skill(root, "good", "description: A good skill.")
    bad_yaml = write_skill(root, "bad-yaml", 'name: bad\ndescription: "unterminated\ntriggers: [a')
    no_description = write_skill(root, "no-desc", "name: no-desc")
    (root / "latin1").mkdir()
    (root / "latin1" / "SKILL.md").write_bytes(b"---\ndescription: ok\n---\ncaf\xe9\n")
    (root / "no-front").mkdir()
    (root / "no-front" / "SKILL.md").write_text("# Just markdown\n", encoding="utf-8")
    (root / "unclosed").mkdir()
    (root / "unclosed" / "SKILL.md").write_text("---\ndescription: x\n", encoding="utf-8")
    write_skill(root, "not-a-map", "- a\n- b")
    write_skill(root, "aaa-dup", "name: twin\ndescription: First twin.")
    write_skill(root, "bbb-dup", "name: twin\ndescription: Second twin.")
    (root / "empty-folder").mkdir()
    (root / "loose-file.md").write_text("not a skill folder", encoding="utf-8")

    snapshot = make_loader(workspace, tmp_path).load()
    assert sorted(skill.name for skill in snapshot.skills) == ["good", "twin"]
    assert snapshot.get("twin").description == "First twin."  # type: ignore[union-attr]
    by_folder = {warning.path.parent.name: warning for warning in snapshot.warnings}
    assert sorted(by_folder) == [
        "bad-yaml",
        "bbb-dup",
        "latin1",
        "no-desc",
        "no-front",
        "not-a-map",
        "unclosed",
    ]
    yaml_warning = by_folder["bad-yaml"]
    assert yaml_warning.path == bad_yaml.resolve() or yaml_warning.path == bad_yaml
    assert yaml_warning.line is not None and 2 <= yaml_warning.line <= 5
    assert "invalid YAML" in yaml_warning.message
    assert str(yaml_warning).startswith(f"{yaml_warning.path}:{yaml_warning.line}: ")
    assert "description" in by_folder["no-desc"].message
    assert by_folder["no-desc"].path.name == no_description.name
    assert by_folder["latin1"].line == 4 and "UTF-8" in by_folder["latin1"].message
    assert "duplicate skill name 'twin'" in by_folder["bbb-dup"].message
    assert [
        (item.name, item.path.parent.name, item.winner_path.parent.name) for item in snapshot.shadowed
    ] == [("twin", "bbb-dup", "aaa-dup")]


def test_yaml_error_line_points_into_the_file(tmp_path: Path) -> None:
    path = write_skill(tmp_path, "x", "name: x\ndescription: fine\nbad: [unclosed\nmore: 1")
    skill, warnings = parse_skill_file(path)
    assert skill is None
    lines = path.read_text(encoding="utf-8").splitlines()
    assert warnings[0].line is not None
    assert lines[warnings[0].line - 1] in {"bad: [unclosed", "more: 1", "---"}


def test_two_megabyte_skill_is_skipped_without_reading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = tmp_path / "ws"
    write_skill(workspace / "skills", "small", "description: small")
    big = workspace / "skills" / "huge" / "SKILL.md"
    big.parent.mkdir()
    with big.open("wb") as handle:
        handle.write(b"---\ndescription: huge\n---\n")
        handle.truncate(2 * 1024 * 1024)
    opened: list[Path] = []
    real_open = pathlib.Path.open

    def spy(self: Path, *args: object, **kwargs: object) -> object:
        opened.append(self)
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(pathlib.Path, "open", spy)
    snapshot = make_loader(workspace, tmp_path).load()
    assert [skill.name for skill in snapshot.skills] == ["small"]
    assert len(snapshot.warnings) == 1
    assert snapshot.warnings[0].path.name == "SKILL.md" and snapshot.warnings[0].path.parent.name == "huge"
    assert "2.0 MB" in snapshot.warnings[0].message and "256 KB" in snapshot.warnings[0].message
    assert all(path.parent.name != "huge" for path in opened)


def test_symlinked_skill_folder_leaving_the_root_is_skipped(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    root = workspace / "skills"
    write_skill(root, "inside", "description: inside")
    write_skill(tmp_path / "outside", "evil", "description: outside the root")
    (root / "evil").symlink_to(tmp_path / "outside" / "evil", target_is_directory=True)
    (root / "alias").symlink_to(root / "inside", target_is_directory=True)
    (root / "linked-file").mkdir()
    (root / "linked-file" / "SKILL.md").symlink_to(tmp_path / "outside" / "evil" / "SKILL.md")

    snapshot = make_loader(workspace, tmp_path).load()
    names = sorted(skill.name for skill in snapshot.skills)
    assert names == ["alias", "inside"]  # a link that stays inside the root is fine
    messages = {warning.path.parent.name: warning.message for warning in snapshot.warnings}
    assert set(messages) == {"evil", "linked-file"}
    assert "outside" in messages["evil"] and "symlink" in messages["evil"]
    assert "symlink" in messages["linked-file"]


def test_nothing_raises_on_unreadable_or_odd_roots(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "skills").write_text("a file where a folder should be", encoding="utf-8")
    snapshot = make_loader(workspace, tmp_path).load()
    assert snapshot.skills == [] and snapshot.warnings == []


# -------------------------------------------------------------------------- sources and precedence


def test_precedence_and_shadowing_across_all_sources(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    sources = {
        "bundled": tmp_path / "bundled-skills",
        "user": tmp_path / "user-skills",
        "workspace-agents": workspace / ".agents" / "skills",
        "workspace": workspace / "skills",
    }
    for source, root in sources.items():
        write_skill(root, "shared", f"description: shared from {source}")
        write_skill(root, f"only-{source}", f"description: only in {source}")
    loader = make_loader(workspace, tmp_path)
    snapshot = loader.load()
    shared = snapshot.get("shared")
    assert shared is not None and shared.source == "workspace"
    assert shared.description == "shared from workspace"
    for source in sources:
        only = snapshot.get(f"only-{source}")
        assert only is not None and only.source == source
    assert [(item.source, item.winner_source) for item in snapshot.shadowed] == [
        ("bundled", "user"),
        ("user", "workspace-agents"),
        ("workspace-agents", "workspace"),
    ]

    shutil.rmtree(sources["workspace"] / "shared")
    bump(sources["workspace"], 5)
    snapshot = loader.load()
    shared = snapshot.get("shared")
    assert shared is not None and shared.source == "workspace-agents"
    assert len(snapshot.shadowed) == 2


def test_user_dir_from_environment(tmp_path: Path) -> None:
    user = tmp_path / "from-env"
    write_skill(user, "mine", "description: mine")
    loader = SkillLoader(
        tmp_path / "ws", bundled_dir=tmp_path / "b", env={"OPENCLAW_MINI_SKILLS_DIR": str(user)}
    )
    assert loader.user_dir == user
    skill = loader.load().get("mine")
    assert skill is not None and skill.source == "user"
    assert loader.read_roots == (tmp_path / "b", user)
    home = SkillLoader(tmp_path / "ws", env={"OPENCLAW_MINI_HOME": str(tmp_path / "h")})
    assert home.user_dir == tmp_path / "h" / "skills"
    default = SkillLoader(tmp_path / "ws", env={})
    assert default.user_dir == Path("~/.openclaw-mini/skills").expanduser()
    assert default.bundled_dir == bundled_skills_dir()


def test_same_folder_as_two_sources_is_not_self_shadowing(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    write_skill(workspace / "skills", "one", "description: one")
    snapshot = make_loader(workspace, tmp_path, bundled_dir=workspace / "skills").load()
    assert [(skill.name, skill.source) for skill in snapshot.skills] == [("one", "workspace")]
    assert snapshot.shadowed == []


def test_only_immediate_subfolders(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    write_skill(workspace / "skills" / "group", "nested", "description: nested too deep")
    write_skill(workspace / "skills", ".hidden", "description: hidden")
    assert make_loader(workspace, tmp_path).load().skills == []


# ------------------------------------------------------------------------------------------- cache


def test_skill_dropped_in_between_two_loads_is_seen(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    root = workspace / "skills"
    write_skill(root, "first", "description: first")
    loader = make_loader(workspace, tmp_path)
    first = loader.load()
    assert [skill.name for skill in first.skills] == ["first"]
    assert loader.load() is first  # nothing changed: same snapshot object

    write_skill(root, "second", "description: second")
    bump(root, 10)
    second = loader.load()
    assert [skill.name for skill in second.skills] == ["first", "second"]

    path = root / "first" / "SKILL.md"
    path.write_text("---\ndescription: edited in place\n---\nNew body\n", encoding="utf-8")
    bump(path, 10)
    third = loader.load()
    assert third.get("first").description == "edited in place"  # type: ignore[union-attr]
    assert third.get("first").body == "New body"  # type: ignore[union-attr]


def test_warm_load_parses_nothing_and_a_change_reparses_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = tmp_path / "ws"
    root = workspace / "skills"
    for index in range(20):
        write_skill(root, f"s{index:02d}", f"description: skill {index}")
    calls: list[Path] = []
    real_parse = skills_module._parse_path

    def counting(path: Path, *args: object) -> object:
        calls.append(path)
        return real_parse(path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(skills_module, "_parse_path", counting)
    loader = make_loader(workspace, tmp_path)
    assert len(loader.load().skills) == 20 and len(calls) == 20
    calls.clear()
    loader.load()
    assert calls == []
    target = root / "s07" / "SKILL.md"
    target.write_text("---\ndescription: changed\n---\n", encoding="utf-8")
    bump(target, 3)
    assert loader.load().get("s07").description == "changed"  # type: ignore[union-attr]
    assert calls == [target]


def test_eligibility_is_rechecked_each_load(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    write_skill(
        workspace / "skills",
        "needs-tool",
        'description: d\nmetadata: {"openclaw": {"requires": {"bins": ["tool"], "env": ["KEY"]}}}',
    )
    installed: set[str] = set()
    env: dict[str, str] = {}
    loader = make_loader(workspace, tmp_path, env=env, which=lambda name: name if name in installed else None)
    first = loader.load()
    assert first.skills[0].ineligible_reason == "missing bins: tool; missing env: KEY"
    installed.add("tool")
    env["KEY"] = "value"
    second = loader.load()
    assert second is not first and second.skills[0].eligible


async def test_aload_runs_off_the_loop(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    write_skill(workspace / "skills", "a", "description: a")
    snapshot = await make_loader(workspace, tmp_path).aload()
    assert [skill.name for skill in snapshot.skills] == ["a"]


def test_real_path_lookup_cache_sees_new_binary(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    workspace = tmp_path / "ws"
    write_skill(
        workspace / "skills",
        "t",
        'description: d\nmetadata: {"openclaw": {"requires": {"bins": ["my-tool-xyz"]}}}',
    )
    loader = SkillLoader(
        workspace,
        user_dir=tmp_path / "u",
        bundled_dir=tmp_path / "b",
        env={"PATH": str(bin_dir)},
        platform="linux",
    )
    assert not loader.load().skills[0].eligible
    tool = bin_dir / "my-tool-xyz"
    tool.write_text("#!/bin/sh\n", encoding="utf-8")
    tool.chmod(0o755)
    bump(bin_dir, 5)
    assert loader.load().skills[0].eligible


# ------------------------------------------------------------------------------------------ gating


@pytest.mark.parametrize(
    ("metadata", "platform", "present", "env", "reason"),
    [
        ('{"openclaw": {"os": ["darwin"]}}', "linux", set(), {}, "needs os darwin (this is linux)"),
        ('{"openclaw": {"os": ["darwin", "linux"]}}', "linux", set(), {}, None),
        ('{"openclaw": {"os": "win32"}}', "win32", set(), {}, None),
        ('{"openclaw": {"requires": {"bins": ["a", "b"]}}}', "linux", {"a"}, {}, "missing bins: b"),
        ('{"openclaw": {"requires": {"anyBins": ["a", "b"]}}}', "linux", {"b"}, {}, None),
        ('{"openclaw": {"requires": {"anyBins": ["a", "b"]}}}', "linux", set(), {}, "needs one of: a, b"),
        ('{"openclaw": {"requires": {"env": ["K"]}}}', "linux", set(), {"K": "  "}, "missing env: K"),
        ('{"openclaw": {"requires": {"env": ["K"]}}}', "linux", set(), {"K": "v"}, None),
        (
            '{"openclaw": {"always": true, "requires": {"bins": ["x"], "env": ["K"]}}}',
            "linux",
            set(),
            {},
            None,
        ),
        (
            '{"openclaw": {"always": true, "os": ["darwin"]}}',
            "linux",
            set(),
            {},
            "needs os darwin (this is linux)",
        ),
    ],
)
def test_gating(
    tmp_path: Path, metadata: str, platform: str, present: set[str], env: dict[str, str], reason: str | None
) -> None:
    workspace = tmp_path / "ws"
    write_skill(workspace / "skills", "gated", f"description: d\nmetadata: {metadata}")
    loader = make_loader(
        workspace, tmp_path, platform=platform, env=env, which=lambda name: name if name in present else None
    )
    skill = loader.load().skills[0]
    assert skill.ineligible_reason == reason
    assert skill.eligible is (reason is None)


def test_platform_names_are_normalised(tmp_path: Path) -> None:
    loader = SkillLoader(tmp_path, platform="linux2", env={})
    assert loader.platform == "linux"
    assert SkillLoader(tmp_path, env={}).platform in {"linux", "darwin", "win32", sys.platform}


# ---------------------------------------------------------------------------------------- matching


@pytest.fixture
def deploy_snapshot(tmp_path: Path) -> Callable[..., SkillSnapshot]:
    def build(**kwargs: object) -> SkillSnapshot:
        workspace = tmp_path / "ws"
        write_skill(
            workspace / "skills",
            "deploy",
            """
id: deploy
description: Deploy the app.
triggers: ["/deploy", "部署"]
""",
            "Deploy steps: build, push, verify.\n",
        )
        write_skill(
            workspace / "skills",
            "weather",
            """
name: weather
description: Weather via wttr.in.
metadata: { "openclaw": { "requires": { "bins": ["curl"] } } }
""",
            "curl wttr.in\n",
        )
        write_skill(
            workspace / "skills",
            "secret",
            """
name: secret
description: Not a command.
user-invocable: false
triggers: ["!secret"]
""",
        )
        write_skill(
            workspace / "skills",
            "review-long",
            """
id: review-long
description: Longer trigger.
triggers: ["/deploy now", "部署生产"]
""",
        )
        return make_loader(workspace, tmp_path, **kwargs).load()

    return build


def test_mini_triggers_inject_for_english_and_chinese(deploy_snapshot: Callable[..., SkillSnapshot]) -> None:
    snapshot = deploy_snapshot()
    match = match_skill(snapshot, "/deploy staging")
    assert match is not None
    assert (match.skill.name, match.trigger, match.remaining) == ("deploy", "/deploy", "staging")
    injection = match.injection()
    assert "deploy" in injection and "Deploy steps: build, push, verify." in injection
    assert str(match.skill.path) in injection

    match = match_skill(snapshot, "部署 生产环境")
    assert match is not None
    assert (match.skill.name, match.trigger, match.remaining) == ("deploy", "部署", "生产环境")
    match = match_skill(snapshot, "部署测试环境")  # no space needed after a CJK trigger
    assert match is not None and match.remaining == "测试环境"

    assert match_skill(snapshot, "hello") is None
    assert match_skill(snapshot, "please /deploy staging") is None
    assert match_skill(snapshot, "") is None


def test_matching_rules(deploy_snapshot: Callable[..., SkillSnapshot]) -> None:
    snapshot = deploy_snapshot()
    upper = match_skill(snapshot, "  /DEPLOY  Staging ")
    assert upper is not None and upper.skill.name == "deploy" and upper.remaining == "Staging"
    assert match_skill(snapshot, "/deployer x") is None  # ASCII trigger needs a boundary
    assert match_skill(snapshot, "/deploy") is not None  # end of message is a boundary
    assert match_skill(snapshot, "/deploy").user_text == "/deploy"  # type: ignore[union-attr]
    assert match_skill(snapshot, "/deploy\nline two").remaining == "line two"  # type: ignore[union-attr]
    longest = match_skill(snapshot, "/deploy now please")
    assert longest is not None and longest.skill.name == "review-long" and longest.remaining == "please"
    longest_cjk = match_skill(snapshot, "部署生产 数据库")
    assert longest_cjk is not None and longest_cjk.skill.name == "review-long"
    by_name = match_skill(snapshot, "/review-long x")
    assert by_name is not None and by_name.trigger == "/review-long"
    secret = match_skill(snapshot, "!secret go")
    assert secret is not None and secret.skill.name == "secret"  # explicit triggers still work
    assert match_skill(snapshot, "/secret go") is None  # but /name needs user-invocable


def test_openclaw_skill_invoked_by_slash_name(deploy_snapshot: Callable[..., SkillSnapshot]) -> None:
    snapshot = deploy_snapshot(which=lambda name: "/usr/bin/curl" if name == "curl" else None)
    match = match_skill(snapshot, "/weather Berlin tomorrow")
    assert match is not None
    assert (match.skill.name, match.trigger, match.remaining) == ("weather", "/weather", "Berlin tomorrow")
    assert "curl wttr.in" in match.injection()


def test_ineligible_skill_does_not_match(deploy_snapshot: Callable[..., SkillSnapshot]) -> None:
    snapshot = deploy_snapshot()  # `which` finds nothing, so weather is ineligible
    assert snapshot.get("weather") is not None and not snapshot.get("weather").eligible  # type: ignore[union-attr]
    assert match_skill(snapshot, "/weather Berlin") is None


def test_workspace_trigger_beats_bundled_on_tie(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    write_skill(tmp_path / "bundled-skills", "b-skill", 'description: b\ntriggers: ["/go"]')
    write_skill(workspace / "skills", "w-skill", 'description: w\ntriggers: ["/go"]')
    match = match_skill(make_loader(workspace, tmp_path).load(), "/go")
    assert match is not None and match.skill.name == "w-skill"


def test_skill_model_is_immutable(tmp_path: Path) -> None:
    path = write_skill(tmp_path, "x", "description: d")
    skill, _ = parse_skill_file(path)
    assert isinstance(skill, Skill)
    with pytest.raises(Exception, match="frozen"):
        skill.name = "other"  # type: ignore[misc]


def test_odd_yaml_values(tmp_path: Path) -> None:
    dated = write_skill(tmp_path, "dated", "id: 42\ndescription: 2024-01-01")
    skill, warnings = parse_skill_file(dated)
    assert warnings == [] and skill is not None
    assert (skill.name, skill.description) == ("42", "2024-01-01")
    mapped = write_skill(tmp_path, "mapped", "description: d\ntriggers: {a: 1}")
    skill, warnings = parse_skill_file(mapped)
    assert skill is None
    assert warnings[0].line == 3 and "'triggers'" in warnings[0].message
    spaced = write_skill(tmp_path, "spaced", "name: two words\ndescription: d")
    skill, warnings = parse_skill_file(spaced)
    # Upstream loads any name (a real community skill is `name: Agent Browser`).
    assert skill is not None and warnings == [] and skill.command == "two_words"


def test_unexpected_error_in_one_file_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = tmp_path / "ws"
    write_skill(workspace / "skills", "fine", "description: fine")
    write_skill(workspace / "skills", "explodes", "description: boom")
    real_parse = skills_module._parse_path

    def flaky(path: Path, *args: object) -> object:
        if path.parent.name == "explodes":
            raise RuntimeError("parser bug")
        return real_parse(path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(skills_module, "_parse_path", flaky)
    snapshot = make_loader(workspace, tmp_path).load()
    assert [skill.name for skill in snapshot.skills] == ["fine"]
    assert snapshot.warnings[0].path.parent.name == "explodes"
    assert "RuntimeError: parser bug" in snapshot.warnings[0].message
