"""`openclaw-mini heartbeat status`: works from the workspace alone (no Agent, no API key)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from openclaw_mini.cli.heartbeat import app

runner = CliRunner()


def test_status_shows_window_tasks_problems_and_verdict(tmp_path: Path) -> None:
    (tmp_path / "HEARTBEAT.md").write_text(
        "- [ ] check mail\n- [z] odd\ntasks:\n  - name: inbox\n    interval: 2h\n", encoding="utf-8"
    )
    result = runner.invoke(
        app,
        [
            "status",
            "-w",
            str(tmp_path),
            "--every",
            "15m",
            "--active-hours",
            "00:00-24:00",
            "--timezone",
            "Asia/Tokyo",
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "every 15m (on), timezone Asia/Tokyo" in out
    assert "Active hours  00:00-24:00 Asia/Tokyo (inside the window now)" in out
    assert "would run: would run with 2 due task(s)" in out
    assert "check mail" in out and "inbox" in out and "every 2h" in out
    assert "HEARTBEAT.md line 2: unknown checkbox mark [z]" in out
    assert "Last delivery -" in out


def test_status_json_and_empty_file_skip(tmp_path: Path) -> None:
    (tmp_path / "HEARTBEAT.md").write_text("# nothing yet\n", encoding="utf-8")
    result = runner.invoke(app, ["status", "-w", str(tmp_path), "--active-hours", "always", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["would_run"] is False and data["would_reason"] == "HEARTBEAT.md is empty"
    assert data["active_hours"] is None and data["every"] == "30m"


def test_status_outside_a_never_window(tmp_path: Path) -> None:
    result = runner.invoke(app, ["status", "-w", str(tmp_path), "--active-hours", "09:00-09:00", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["would_run"] is False and data["would_reason"].startswith("outside active hours never")
    assert data["next_run_at"] is None


def test_bad_config_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    for args, needle in (
        (["--active-hours", "25:00-22:00"], "active_hours.start: '25:00' is not a valid time"),
        (["--active-hours", "8 to 10"], "must look like 08:00-22:00"),
        (["--every", "soon"], "heartbeat.every: cannot read 'soon'"),
        (["--timezone", "Mars/Base"], "unknown timezone 'Mars/Base'"),
    ):
        result = runner.invoke(app, ["status", "-w", str(tmp_path), *args])
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.output
        assert "Traceback" not in result.output
    missing = runner.invoke(app, ["status", "-w", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "is not a folder" in missing.output


def _env_for(server_url: str, home: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        ANTHROPIC_API_KEY="test-key",
        ANTHROPIC_BASE_URL=server_url,
        OPENCLAW_MINI_HOME=str(home),
        OPENCLAW_MINI_SKILLS_DIR=str(home / "skills"),
        COLUMNS="100",
    )
    return env


def test_once_delivers_then_suppresses_the_duplicate(tmp_path: Path) -> None:
    import subprocess
    import sys

    from openclaw_mini.testing import FakeAnthropicServer, text_reply

    (tmp_path / "HEARTBEAT.md").write_text("- [ ] check the backups\n")
    command = [
        sys.executable,
        "-m",
        "openclaw_mini.cli.main",
        "heartbeat",
        "once",
        "-w",
        str(tmp_path),
        "--active-hours",
        "00:00-24:00",
    ]
    with FakeAnthropicServer() as server:
        server.queue(text_reply("Backups are 3 days old."), text_reply("Backups are 3 days old."))
        env = _env_for(server.url, tmp_path / "home")
        first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "Backups are 3 days old." in first.stdout and "(manual)" in first.stdout
    assert second.returncode == 0, second.stderr
    assert "Backups are 3 days old." not in second.stdout  # the same text within 24 h is not delivered


def _ignore_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize(
    ("stop_signal", "inherited_sigint"),
    [
        ("SIGINT", "default"),
        # A background job (`pytest &`, `cmd &` in a script) starts with SIGINT ignored: Ctrl-C
        # must still stop `heartbeat run` (it used to keep ticking, the issue-12 flake).
        ("SIGINT", "ignored"),
        ("SIGTERM", "default"),
    ],
)
def test_run_in_the_foreground_delivers_and_stops_on_ctrl_c(
    tmp_path: Path, stop_signal: str, inherited_sigint: str
) -> None:
    import signal
    import subprocess
    import sys

    from openclaw_mini.testing import FakeAnthropicServer, text_reply

    (tmp_path / "HEARTBEAT.md").write_text("- [ ] look at the queue\n")
    with FakeAnthropicServer() as server:
        server.handler = lambda request: text_reply("The queue has 4 stuck jobs.")
        child = subprocess.Popen(
            preexec_fn=_ignore_sigint if inherited_sigint == "ignored" else None,
            args=[
                sys.executable,
                "-m",
                "openclaw_mini.cli.main",
                "heartbeat",
                "run",
                "-w",
                str(tmp_path),
                "--every",
                "300ms",
                "--active-hours",
                "00:00-24:00",
            ],
            env=_env_for(server.url, tmp_path / "home"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            lines = []
            for line in child.stdout:
                lines.append(line)
                if "4 stuck jobs" in line:
                    break
            child.send_signal(getattr(signal, stop_signal))
            out, err = child.communicate(timeout=60)
        finally:
            child.kill()
            child.wait(timeout=60)  # reaped, so no ResourceWarning from a collected Popen
            for stream in (child.stdout, child.stderr):
                if stream is not None:
                    stream.close()
    assert "Ctrl-C stops" in "".join(lines)
    assert child.returncode == 0, err
    assert "Heartbeat stopped." in out


def test_status_reads_the_config_file_and_flags_win(tmp_path: Path) -> None:
    (tmp_path / "openclaw-mini.toml").write_text(
        '[heartbeat]\nevery = "2h"\nactive_hours = { start = "07:00", end = "09:00" }\n'
    )
    data = json.loads(runner.invoke(app, ["status", "-w", str(tmp_path), "--json"]).output)
    assert data["every"] == "2h" and data["active_hours"].startswith("07:00-09:00")
    result = runner.invoke(app, ["status", "-w", str(tmp_path), "--every", "15m", "--json"])
    data = json.loads(result.output)
    assert data["every"] == "15m" and data["active_hours"].startswith("07:00-09:00")
    (tmp_path / "openclaw-mini.toml").write_text('[heartbeat]\nevery = "soon"\n')
    result = runner.invoke(app, ["status", "-w", str(tmp_path)])
    assert result.exit_code == 2 and "line 2: heartbeat.every" in result.output
