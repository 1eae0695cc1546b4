"""`openclaw-mini doctor`: the pass/warn/fail table and its exit code."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from openclaw_mini.cli.doctor import Check, check_base_url, collect_checks
from openclaw_mini.cli.main import app
from openclaw_mini.cli.workspace import write_templates
from openclaw_mini.testing import FakeAnthropicServer

KEY = "sk-ant-test-0123456789abcdefWXYZ"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wide table, so details are not wrapped in the middle of what the tests look for."""
    monkeypatch.setenv("COLUMNS", "250")


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    write_templates(path, force=False)
    return path


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer() as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
        yield fake


def doctor(workspace: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["doctor", "-w", str(workspace)])
    return result.exit_code, result.output


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def row(output: str, name: str) -> str:
    """The table line(s) of one check (continuation lines of a multi-line detail included)."""
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("│ " + name + " "):
            block = [line]
            for follow in lines[index + 1 :]:
                if not follow.startswith("│  "):
                    break
                block.append(follow)
            return "\n".join(block)
    raise AssertionError(f"no row {name!r} in:\n{output}")


def test_healthy_setup_passes(ws: Path, server: FakeAnthropicServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    code, out = doctor(ws)
    assert code == 0, out
    assert "FAIL" not in out
    assert "...WXYZ" in row(out, "API key")
    assert KEY not in out and KEY[:-4] not in out
    assert "PASS" in row(out, "Base URL") and server.url in row(out, "Base URL")
    assert "is reachable (it answered HTTP" in row(out, "Base URL")
    for name in ("AGENTS.md", "SOUL.md", "TOOLS.md", "IDENTITY.md", "USER.md", "HEARTBEAT.md", "MEMORY.md"):
        size = (ws / name).stat().st_size
        assert f"{size:,} chars (cap 20,000)" in row(out, f"File {name}")
    assert "first-run ritual is pending" in row(out, "File BOOTSTRAP.md")
    assert "effectively empty" in row(out, "HEARTBEAT.md")
    assert "All checks passed" in out


def test_missing_key_fails(ws: Path, server: FakeAnthropicServer) -> None:
    code, out = doctor(ws)
    assert code == 1
    assert "FAIL" in row(out, "API key")
    assert "ANTHROPIC_API_KEY is not set" in out
    assert "PASS" in row(out, "Base URL")
    assert "1 check failed" in out


def test_short_key_shows_no_characters(
    ws: Path, server: FakeAnthropicServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "abc12345")
    code, out = doctor(ws)
    assert code == 0, out
    assert "8 characters" in row(out, "API key")
    assert "2345" not in out


def test_unreachable_base_url_fails_clearly(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The autouse fixture points ANTHROPIC_BASE_URL at a closed local port.
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    code, out = doctor(ws)
    assert code == 1
    line = row(out, "Base URL")
    assert "FAIL" in line
    assert "connection refused" in line
    assert "Check ANTHROPIC_BASE_URL" in out


def test_base_url_that_never_answers_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)  # accepts connections into the backlog, never replies
        port = listener.getsockname()[1]
        check = check_base_url({"ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}"}, timeout=0.3)
    assert check.status == "fail"
    assert "did not answer within 0.3 s" in check.detail


@pytest.mark.parametrize("url", ["ftp://example.com", "localhost:8080", "http://127.0.0.1:99999"])
def test_malformed_base_url_fails_without_a_request(url: str) -> None:
    check = check_base_url({"ANTHROPIC_BASE_URL": url})
    assert check.status == "fail"
    assert url in check.detail


def test_bad_heartbeat_line_is_reported_with_its_number(
    ws: Path, server: FakeAnthropicServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    (ws / "HEARTBEAT.md").write_text(
        "# Heartbeat\n\n- [?] check the oven\n- [ ] water the plants\n", encoding="utf-8"
    )
    code, out = doctor(ws)
    assert code == 1
    line = row(out, "HEARTBEAT.md")
    assert "FAIL" in line
    assert "line 3: unknown checkbox mark [?]" in line
    assert "1 open task (1 every heartbeat)" in line


def test_heartbeat_tasks_are_summarised(ws: Path) -> None:
    (ws / "HEARTBEAT.md").write_text(
        "- [ ] check mail\n- [x] old thing\ntasks:\n  - name: digest\n    interval: 2h\n"
        '  - name: standup\n    cron: "0 9 * * 1-5"\n',
        encoding="utf-8",
    )
    check = by_name(collect_checks(ws, env={}))["HEARTBEAT.md"]
    assert check.status == "pass"
    assert check.detail == "3 open tasks (1 every heartbeat, 1 every 2h, 1 cron 0 9 * * 1-5), 1 done."


def test_missing_heartbeat_file_warns(ws: Path) -> None:
    (ws / "HEARTBEAT.md").unlink()
    checks = by_name(collect_checks(ws, env={}))
    assert checks["HEARTBEAT.md"].status == "warn"
    assert "every tick calls the model" in checks["HEARTBEAT.md"].detail


def test_corrupt_heartbeat_state_warns_and_is_left_in_place(ws: Path) -> None:
    state = ws / ".openclaw-mini" / "heartbeat.json"
    state.parent.mkdir()
    state.write_text("{not json", encoding="utf-8")
    check = by_name(collect_checks(ws, env={}))["Heartbeat state"]
    assert check.status == "warn"
    assert "starts fresh" in check.detail
    assert state.read_text(encoding="utf-8") == "{not json"  # doctor only reads


def test_oversized_bootstrap_file_warns_about_truncation(ws: Path) -> None:
    (ws / "AGENTS.md").write_text("# Rules\n" + "be careful. " * 2500, encoding="utf-8")
    checks = by_name(collect_checks(ws, env={}))
    agents = checks["File AGENTS.md"]
    assert agents.status == "warn"
    assert "30,008 characters" in agents.detail and "shortened" in agents.detail
    assert checks["File SOUL.md"].status == "pass"


def test_total_cap_warns(ws: Path) -> None:
    for name in ("AGENTS.md", "SOUL.md", "TOOLS.md", "IDENTITY.md", "USER.md", "MEMORY.md", "BOOTSTRAP.md"):
        (ws / name).write_text("x" * 19_000 + "\n", encoding="utf-8")
    (ws / "HEARTBEAT.md").write_text("- " + "y" * 19_000 + "\n", encoding="utf-8")
    checks = by_name(collect_checks(ws, env={}))
    assert checks["Files total"].status == "warn"
    assert "cap 150,000 total" in checks["Files total"].detail


def test_missing_agents_file_warns_and_optional_ones_pass(ws: Path) -> None:
    for name in ("AGENTS.md", "BOOTSTRAP.md", "MEMORY.md"):
        (ws / name).unlink()
    checks = by_name(collect_checks(ws, env={}))
    assert checks["File AGENTS.md"].status == "warn"
    assert "openclaw-mini init" in checks["File AGENTS.md"].detail
    assert checks["File BOOTSTRAP.md"].status == "pass"
    assert checks["File MEMORY.md"].status == "pass"


def test_skills_eligibility_and_broken_skill_files(ws: Path) -> None:
    needy = ws / "skills" / "needy"
    needy.mkdir(parents=True)
    (needy / "SKILL.md").write_text(
        "---\nname: needy\ndescription: Needs a tool nobody has.\n"
        'metadata: {"openclaw": {"requires": {"bins": ["no-such-binary-xyz"]}}}\n---\nBody.\n',
        encoding="utf-8",
    )
    broken = ws / "skills" / "broken"
    broken.mkdir()
    (broken / "SKILL.md").write_text("---\nname: [unclosed\n---\nBody.\n", encoding="utf-8")

    checks = by_name(collect_checks(ws, env={}))
    skills = checks["Skills"]
    assert skills.status == "pass"
    assert " 1 ineligible" in skills.detail
    assert "needy:" in skills.detail and "no-such-binary-xyz" in skills.detail
    files = checks["Skill files"]
    assert files.status == "warn"
    assert str(broken / "SKILL.md") in files.detail


def test_missing_workspace_fails_and_skips_workspace_checks(
    tmp_path: Path, server: FakeAnthropicServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    missing = tmp_path / "nope"
    code, out = doctor(missing)
    assert code == 1
    assert "FAIL" in row(out, "Workspace")
    assert "openclaw-mini init" in out
    assert "File AGENTS.md" not in out and "Skills" not in out
    assert not missing.exists()


def test_doctor_on_a_file_fails(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x", encoding="utf-8")
    checks = by_name(collect_checks(target, env={}))
    assert checks["Workspace"].status == "fail"
    assert "not a folder" in checks["Workspace"].detail


def test_doctor_writes_nothing(ws: Path, server: FakeAnthropicServer) -> None:
    before = sorted(str(path.relative_to(ws)) for path in ws.rglob("*"))
    doctor(ws)
    after = sorted(str(path.relative_to(ws)) for path in ws.rglob("*"))
    assert before == after
