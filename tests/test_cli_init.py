"""`openclaw-mini init` and the workspace templates it writes."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from openclaw_mini.cli.main import app
from openclaw_mini.cli.workspace import (
    BOOTSTRAP_TEMPLATE,
    CONFIG_TEMPLATE,
    MEMORY_TEMPLATE,
    PROFILE_TEMPLATES,
    workspace_templates_dir,
)
from openclaw_mini.config import BootstrapConfig
from openclaw_mini.context.bootstrap import BOOTSTRAP_FILES, BootstrapLoader
from openclaw_mini.heartbeat import load_heartbeat_file, parse_heartbeat

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "workspace-templates"
ALL_TEMPLATES = (*PROFILE_TEMPLATES, BOOTSTRAP_TEMPLATE, MEMORY_TEMPLATE)

runner = CliRunner()


def init(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["init", *args])
    return result.exit_code, result.output


def template(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------- templates


def test_every_bootstrap_file_has_a_template_and_the_checkout_copy_is_used() -> None:
    assert workspace_templates_dir() == TEMPLATES
    names = {path.name for path in TEMPLATES.iterdir()}
    assert {*ALL_TEMPLATES, CONFIG_TEMPLATE} == names
    assert set(BOOTSTRAP_FILES) - {"memory.md"} == names - {CONFIG_TEMPLATE}


def test_wheel_ships_the_templates_where_the_code_looks_for_them() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    include = config["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert include["workspace-templates"] == "openclaw_mini/_bundled/workspace-templates"


@pytest.mark.parametrize("name", ALL_TEMPLATES)
def test_templates_are_concise_and_never_truncated(name: str) -> None:
    text = template(name)
    limit = 3000 if name == "AGENTS.md" else 1500
    assert 100 < len(text) < limit
    assert text.startswith("# ")
    assert text.endswith("\n")
    assert "TODO" not in text


def test_templates_load_whole_into_the_prompt(tmp_path: Path) -> None:
    for name in ALL_TEMPLATES:
        (tmp_path / name).write_text(template(name), encoding="utf-8")
    context = BootstrapLoader(tmp_path, BootstrapConfig.model_validate({})).load()
    assert context.warnings == []
    assert [item.name for item in context.files] == [n for n in BOOTSTRAP_FILES if n != "memory.md"]
    assert not any(item.truncated for item in context.files)


def test_heartbeat_template_is_effectively_empty() -> None:
    parsed = parse_heartbeat(template("HEARTBEAT.md"))
    assert parsed.tasks == []
    assert parsed.done == []
    assert parsed.problems == []
    assert parsed.instructions == []
    assert parsed.effectively_empty


def test_heartbeat_template_examples_parse_into_every_task_form() -> None:
    text = template("HEARTBEAT.md")
    assert text.count("<!--") == 1 and text.count("-->") == 1
    parsed = parse_heartbeat(text.replace("<!--", "").replace("-->", ""))
    assert parsed.problems == []
    by_kind = {task.kind: task for task in parsed.tasks}
    assert [task.kind for task in parsed.tasks] == ["checklist", "item", "interval", "cron"]
    assert "backup" in by_kind["checklist"].prompt
    assert "todo.md" in by_kind["item"].prompt
    assert by_kind["interval"].name == "inbox-digest"
    assert by_kind["interval"].interval_seconds == 2 * 3600
    assert "notes/inbox.md" in by_kind["interval"].prompt
    assert by_kind["cron"].name == "weekday-plan"
    assert by_kind["cron"].cron == "0 9 * * 1-5"
    assert [task.kind for task in parsed.done] == ["checklist"]
    # And each example, copied below the comment on its own, is exactly one task.
    for kind, lines in {
        "checklist": "- [ ] Tell me when the nightly backup log in logs/backup.log reports an error.",
        "item": "- Remind me of anything in todo.md that is due today.",
    }.items():
        assert lines in text
        alone = parse_heartbeat(text + "\n" + lines + "\n")
        assert [task.kind for task in alone.tasks] == [kind]


# ------------------------------------------------------------------------------------------ init


def test_init_writes_a_new_workspace(tmp_path: Path) -> None:
    target = tmp_path / "new" / "ws"
    code, out = init(str(target))
    assert code == 0, out
    for name in ALL_TEMPLATES:
        assert (target / name).read_text(encoding="utf-8") == template(name)
        assert f"wrote    {name}" in out
    assert (target / "memory").is_dir()
    assert f"openclaw-mini chat -w {target}" in out
    assert "BOOTSTRAP.md" in out
    heartbeat = load_heartbeat_file(target)
    assert heartbeat.exists and heartbeat.effectively_empty


def test_init_twice_keeps_user_edits(tmp_path: Path) -> None:
    assert init(str(tmp_path))[0] == 0
    (tmp_path / "SOUL.md").write_text("# SOUL\nYou are a pirate.\n", encoding="utf-8")
    (tmp_path / "HEARTBEAT.md").write_text("- [ ] water the plants\n", encoding="utf-8")
    (tmp_path / "BOOTSTRAP.md").unlink()  # the first-run ritual is done
    (tmp_path / "TOOLS.md").unlink()
    (tmp_path / "memory" / "2025-01-01.md").write_text("- note\n", encoding="utf-8")

    code, out = init(str(tmp_path))
    assert code == 0, out
    assert (tmp_path / "SOUL.md").read_text(encoding="utf-8") == "# SOUL\nYou are a pirate.\n"
    assert (tmp_path / "HEARTBEAT.md").read_text(encoding="utf-8") == "- [ ] water the plants\n"
    assert (tmp_path / "TOOLS.md").read_text(encoding="utf-8") == template("TOOLS.md")
    assert not (tmp_path / "BOOTSTRAP.md").exists()
    assert (tmp_path / "memory" / "2025-01-01.md").read_text(encoding="utf-8") == "- note\n"
    assert "kept     SOUL.md" in out
    assert "wrote    TOOLS.md" in out
    assert "wrote    SOUL.md" not in out


def test_force_overwrites_templates_but_never_memory(tmp_path: Path) -> None:
    assert init(str(tmp_path))[0] == 0
    (tmp_path / "AGENTS.md").write_text("mine\n", encoding="utf-8")
    (tmp_path / "MEMORY.md").write_text("# MEMORY\n- the user likes tea\n", encoding="utf-8")
    (tmp_path / "BOOTSTRAP.md").unlink()

    code, out = init(str(tmp_path), "--force")
    assert code == 0, out
    assert (tmp_path / "AGENTS.md").read_text(encoding="utf-8") == template("AGENTS.md")
    assert "replaced AGENTS.md" in out
    assert (tmp_path / "MEMORY.md").read_text(encoding="utf-8") == "# MEMORY\n- the user likes tea\n"
    assert "kept     MEMORY.md" in out
    assert not (tmp_path / "BOOTSTRAP.md").exists()  # --force does not restart the ritual


def test_force_replaces_a_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    outside = tmp_path / "shared-soul.md"
    outside.write_text("shared persona\n", encoding="utf-8")
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "SOUL.md").symlink_to(outside)

    assert init(str(ws))[0] == 0
    assert (ws / "SOUL.md").is_symlink()
    assert init(str(ws), "--force")[0] == 0
    assert not (ws / "SOUL.md").is_symlink()
    assert (ws / "SOUL.md").read_text(encoding="utf-8") == template("SOUL.md")
    assert outside.read_text(encoding="utf-8") == "shared persona\n"


@pytest.mark.parametrize(
    ("existing", "bootstrap"),
    [
        (None, True),  # an empty folder is brand new
        ("USER.md", False),
        ("HEARTBEAT.md", False),
        ("MEMORY.md", False),
        ("memory.md", False),
        ("memory/", False),
        ("notes.txt", True),  # unrelated files do not make it a workspace
    ],
)
def test_bootstrap_only_for_a_brand_new_workspace(
    tmp_path: Path, existing: str | None, bootstrap: bool
) -> None:
    if existing == "memory/":
        (tmp_path / "memory").mkdir()
    elif existing is not None:
        (tmp_path / existing).write_text("x\n", encoding="utf-8")
    code, out = init(str(tmp_path))
    assert code == 0, out
    assert (tmp_path / "BOOTSTRAP.md").exists() is bootstrap
    if not bootstrap:
        assert "only a new workspace" in out
    if existing is not None and existing != "memory/":
        assert (tmp_path / existing).read_text(encoding="utf-8") == "x\n"


def test_lowercase_memory_file_counts_as_the_memory(tmp_path: Path) -> None:
    (tmp_path / "memory.md").write_text("- mine\n", encoding="utf-8")
    assert init(str(tmp_path), "--force")[0] == 0
    names = set(os.listdir(tmp_path))
    assert "memory.md" in names and "MEMORY.md" not in names
    assert (tmp_path / "memory.md").read_text(encoding="utf-8") == "- mine\n"


def test_init_on_a_file_is_a_plain_error(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("data\n", encoding="utf-8")
    result = runner.invoke(app, ["init", str(target)])
    assert result.exit_code == 2
    assert "is not a folder" in result.stderr
    assert "Traceback" not in result.output
    assert target.read_text(encoding="utf-8") == "data\n"


def test_a_folder_in_the_way_is_kept_and_reported(tmp_path: Path) -> None:
    (tmp_path / "SOUL.md").mkdir()
    code, out = init(str(tmp_path), "--force")
    assert code == 0, out
    assert (tmp_path / "SOUL.md").is_dir()
    assert "SOUL.md (a folder of that name is in the way)" in out


def test_init_does_not_import_the_sdk_or_the_agent(tmp_path: Path) -> None:
    target = tmp_path / "ws"
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "openclaw_mini.cli.main", "init", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (target / "AGENTS.md").is_file()
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "openclaw_mini.cli.workspace" in imported
    assert not {name for name in imported if name.split(".")[0] in ("anthropic", "httpx2", "httpx")}
    assert "openclaw_mini.agent" not in imported


def test_init_writes_a_commented_config_file_that_loads(tmp_path: Path) -> None:
    from openclaw_mini.config import AgentConfig
    from openclaw_mini.settings import load_settings

    target = tmp_path / "ws"
    code, out = init(str(target))
    assert code == 0, out
    assert f"wrote    {CONFIG_TEMPLATE}" in out
    text = (target / CONFIG_TEMPLATE).read_text(encoding="utf-8")
    settings = load_settings(target)  # every line commented out: the defaults
    assert settings.config.model == AgentConfig().model and settings.config.approval == {}
    (target / CONFIG_TEMPLATE).write_text(
        text.replace("# allow_exec = false", "allow_exec = true").replace('# write = "ask"', 'write = "ask"')
    )
    settings = load_settings(target)
    assert settings.config.sandbox.allow_exec is True and settings.config.approval == {"write": "ask"}
    (target / CONFIG_TEMPLATE).write_text("# mine\n")
    code, out = init(str(target))
    assert (target / CONFIG_TEMPLATE).read_text() == "# mine\n"  # kept without --force
