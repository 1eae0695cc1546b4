"""The terminal a daily user expects (issue 15 item 4): the screen through tmux and a real
pseudo-terminal, pipes and `run` through real subprocesses, all against the fake Messages API."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pexpect
import pytest

from openclaw_mini.testing import FakeAnthropicServer, RecordedRequest, error_reply, text_reply, tool_reply

CLI = [sys.executable, "-m", "openclaw_mini.cli.main"]


def _env(server: FakeAnthropicServer | None, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "PYTEST"))}
    env.update(
        ANTHROPIC_API_KEY="test-key",
        OPENCLAW_MINI_HOME=str(home),
        OPENCLAW_MINI_SKILLS_DIR=str(home / "skills"),
        TERM="xterm-256color",
        PYTHONUNBUFFERED="1",
    )
    if server is not None:
        env["ANTHROPIC_BASE_URL"] = server.url
    env.update(extra)
    return env


def _user_texts(request: RecordedRequest) -> list[str]:
    content = request.messages[-1]["content"]
    return [block.get("text", "") for block in content if block.get("type") == "text"]


def _wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


# ------------------------------------------------------------------------------------------ tmux


class Tmux:
    """A detached tmux session running one command; the screen is read with capture-pane."""

    def __init__(
        self, command: list[str], env: dict[str, str], *, width: int = 100, height: int = 24
    ) -> None:
        self.name = f"ocm-{uuid.uuid4().hex[:8]}"
        self.socket = f"ocm-test-{self.name}"
        shell_env = " ".join(f"{k}={_quote(v)}" for k, v in env.items() if k != "TMUX")
        line = f"env -i {shell_env} {' '.join(_quote(part) for part in command)}; sleep 600"
        self._tmux("new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height), line)

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30, check=True
        )
        return done.stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", self.name)

    def history(self) -> str:
        return self._tmux("capture-pane", "-p", "-S", "-2000", "-t", self.name)

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", self.name, *keys)

    def paste(self, text: str, *, bracketed: bool) -> None:
        self._tmux("set-buffer", "-b", "p", text)
        self._tmux("paste-buffer", "-d", "-b", "p", *(["-p"] if bracketed else []), "-t", self.name)

    def wait_screen(self, needle: str, timeout: float = 60.0) -> str:
        _wait_for(lambda: needle in self.screen(), timeout)
        screen = self.screen()
        assert needle in screen, f"{needle!r} not on screen:\n{screen}"
        return screen

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


@pytest.fixture
def tmux_chat(
    fake_server: FakeAnthropicServer, workspace: Path, tmp_path: Path
) -> Iterator[Callable[..., Tmux]]:
    sessions: list[Tmux] = []

    def start(*args: str, height: int = 24) -> Tmux:
        session = Tmux(
            [*CLI, "chat", "-w", str(workspace), *args], _env(fake_server, tmp_path), height=height
        )
        sessions.append(session)
        session.wait_screen("you ›")
        return session

    yield start
    for session in sessions:
        session.close()


@needs_tmux
def test_a_reply_taller_than_the_screen_keeps_its_tail_in_view(
    tmux_chat: Callable[..., Tmux], fake_server: FakeAnthropicServer
) -> None:
    story = "\n\n".join(f"Paragraph {n} of the story." for n in range(1, 41))
    fake_server.queue(text_reply(story, chunk_delay=0.08))
    tmux = tmux_chat(height=20)
    tmux.keys("tell me a story", "Enter")
    # While it streams (no footer yet), the newest paragraphs are on screen, not the top and "...".
    seen_tail_while_streaming = _wait_for(
        lambda: (
            "Paragraph 25 " in (screen := tmux.screen()) and " out ·" not in screen.split("Paragraph 25")[-1]
        )
    )
    assert seen_tail_while_streaming, tmux.screen()
    tmux.wait_screen(" out ")
    history = tmux.history()  # the whole reply went to the scrollback, once
    for n in (1, 20, 40):
        assert history.count(f"Paragraph {n} of the story.") == 1, history


@needs_tmux
def test_a_paste_is_one_message_bracketed_or_not(
    tmux_chat: Callable[..., Tmux], fake_server: FakeAnthropicServer
) -> None:
    fake_server.queue(text_reply("Got the bracketed one."), text_reply("Got the plain one."))
    tmux = tmux_chat()
    tmux.paste("line one\nline two\nline three", bracketed=True)
    tmux.keys("Enter")
    tmux.wait_screen("Got the bracketed one.")
    tmux.paste("alpha\nbeta\ngamma\n", bracketed=False)  # no brackets: the newlines arrive as Enter
    tmux.wait_screen("Got the plain one.")
    assert len(fake_server.requests) == 2, [r.messages for r in fake_server.requests]
    assert "line one\nline two\nline three" in _user_texts(fake_server.requests[0])
    assert any("alpha\nbeta\ngamma" in text for text in _user_texts(fake_server.requests[1]))


@needs_tmux
def test_ctrl_l_clears_the_screen_and_keeps_the_message(
    tmux_chat: Callable[..., Tmux], fake_server: FakeAnthropicServer
) -> None:
    fake_server.queue(text_reply("Cleared and fine."))
    tmux = tmux_chat()
    tmux.keys("half a ", "C-l")
    _wait_for(lambda: "openclaw-mini ·" not in tmux.screen())  # the banner is gone: the screen was cleared
    assert "openclaw-mini ·" not in tmux.screen()
    assert "you › half a" in tmux.screen()
    tmux.keys("message", "Enter")
    tmux.wait_screen("Cleared and fine.")
    assert _user_texts(fake_server.requests[-1])[-1] == "half a message"


@needs_tmux
def test_the_heartbeat_runs_while_the_user_chats(
    fake_server: FakeAnthropicServer, workspace: Path, tmp_path: Path
) -> None:
    (workspace / "HEARTBEAT.md").write_text("- [ ] Check whether the backup finished\n", encoding="utf-8")
    # All day: the default active hours (08:00-22:00) made this test fail in the evening.
    (workspace / "openclaw-mini.toml").write_text(
        '[heartbeat]\nactive_hours = { start = "00:00", end = "24:00" }\n', encoding="utf-8"
    )

    def heartbeat_only(request: RecordedRequest) -> object:
        if "backup" in json.dumps(request.messages[-1]):
            return text_reply("The nightly backup failed at 02:00.")
        return None

    fake_server.handler = heartbeat_only  # type: ignore[assignment]
    fake_server.queue(text_reply("Hello from the chat."))
    tmux = Tmux([*CLI, "chat", "-w", str(workspace), "--heartbeat", "1s"], _env(fake_server, tmp_path))
    try:
        tmux.wait_screen("you ›")
        tmux.wait_screen("The nightly backup failed")  # shown while the user sits at the prompt
        _wait_for(lambda: tmux.screen().rstrip().endswith("you ›"))
        screen = tmux.screen()
        assert "heartbeat ›" in screen
        assert screen.rstrip().endswith("you ›"), screen  # the prompt is redrawn below it
        tmux.keys("hi", "Enter")
        tmux.wait_screen("Hello from the chat.")
        tmux.keys("/heartbeat", "Enter")
        tmux.wait_screen("Last run")
    finally:
        tmux.close()


# ------------------------------------------------------------------------------ pseudo-terminal


def _spawn(env: dict[str, str], *args: str, preexec: Callable[[], None] | None = None) -> pexpect.spawn:
    return pexpect.spawn(
        CLI[0],
        [*CLI[1:], *args],
        env=env,
        encoding="utf-8",
        timeout=30,
        dimensions=(40, 100),
        preexec_fn=preexec,
    )


def test_ctrl_c_cancels_a_turn_even_when_sigint_was_ignored_by_the_parent(
    fake_server: FakeAnthropicServer, workspace: Path, tmp_path: Path
) -> None:
    """Issue 12's flake: a test run started as a background job (`pytest ... &`) hands SIGINT's
    "ignore" down to the chat, which then never saw Ctrl-C. The chat now handles SIGINT itself."""
    fake_server.queue(
        text_reply("Once upon a time " + "there was a long story. " * 200, chunk_delay=0.05),
        text_reply("Still here."),
    )
    child = _spawn(
        _env(fake_server, tmp_path),
        "chat",
        "-w",
        str(workspace),
        preexec=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        child.expect("you ›")
        child.sendline("tell me a story")
        child.expect("Once upon a time")
        child.sendintr()
        child.expect("cancelled")
        child.expect("you ›")
        child.sendline("still there?")
        child.expect("Still here")
        child.expect("you ›")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_slash_commands_footer_and_sessions_in_a_terminal(
    fake_server: FakeAnthropicServer, workspace: Path, tmp_path: Path
) -> None:
    usage = {"input_tokens": 10_000, "output_tokens": 20}
    fake_server.queue(
        tool_reply(("ls", {}), usage=usage),
        text_reply("Nothing much here.", usage=usage),
        text_reply("Resumed."),
    )
    child = _spawn(_env(fake_server, tmp_path), "chat", "-w", str(workspace), "-s", "first")
    try:
        child.expect("you ›")
        child.sendline("/frobnicate now")  # unknown: never sent to the model
        child.expect("unknown command /frobnicate")
        child.sendline("/swich x")
        child.expect("Did you mean /switch")
        child.sendline("look around")
        # Two calls of 10,000 input tokens each: the window holds one request (5%), not the sum.
        child.expect("20,000 in · 40 out · context 5%")
        child.sendline("/switch nope")
        child.expect("no session nope yet")
        child.expect("/new starts a fresh one")
        child.sendline("/model")
        child.expect("model: claude-")
        child.sendline("/model claude-test-2")
        child.expect("model set to claude-test-2")
        child.sendline("/clear")
        child.expect("new session")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert len(fake_server.requests) == 2
    child = _spawn(_env(fake_server, tmp_path), "chat", "-w", str(workspace), "--continue")
    try:
        child.expect("continuing the last session")
        child.sendline("and now?")
        child.expect("Resumed.")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert fake_server.requests[-1].model == "claude-sonnet-4-6"
    assert len(fake_server.requests[-1].messages) == 5  # the "first" session's history came along
    listing = subprocess.run(
        [*CLI, "sessions", "list", "-w", str(workspace)],
        capture_output=True,
        text=True,
        env=_env(fake_server, tmp_path),
        timeout=60,
    )
    assert "agent:main:first" in listing.stdout and "look around" in listing.stdout


# ----------------------------------------------------------------------------------------- pipes


def _run(args: list[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_piped_chat_handles_commands_and_separates_replies(
    fake_server: FakeAnthropicServer, workspace: Path, tmp_path: Path
) -> None:
    fake_server.queue(
        tool_reply(("ls", {}), text="Let me look."),
        text_reply("Nothing here."),
        text_reply("Second answer."),
    )
    done = _run(
        ["chat", "-w", str(workspace)],
        _env(fake_server, tmp_path),
        stdin="/help\nwhat is here?\n/bogus\nand now?\n",
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "/compact" in done.stdout and "\x1b[" not in done.stdout  # /help answered locally, plainly
    assert lines[-3:] == ["Let me look.", "Nothing here.", "Second answer."]
    assert "unknown command /bogus" in done.stderr
    assert len(fake_server.requests) == 3
    sent = json.dumps([r.messages for r in fake_server.requests])
    assert "/help" not in sent and "/bogus" not in sent


def test_run_reads_stdin(fake_server: FakeAnthropicServer, workspace: Path, tmp_path: Path) -> None:
    fake_server.queue(text_reply("one"), text_reply("two"), text_reply("three"))
    env = _env(fake_server, tmp_path)
    assert _run(["run", "-w", str(workspace)], env, stdin="from a pipe\n").returncode == 0
    assert _user_texts(fake_server.requests[-1])[-1] == "from a pipe"
    assert _run(["run", "-w", str(workspace), "-"], env, stdin="dash means stdin").returncode == 0
    assert _user_texts(fake_server.requests[-1])[-1] == "dash means stdin"
    done = _run(["run", "-w", str(workspace), "review this"], env, stdin="+ added a line\n")
    assert done.returncode == 0 and done.stdout == "three\n"
    assert _user_texts(fake_server.requests[-1])[-1] == "review this\n\n+ added a line"
    nothing = _run(["run", "-w", str(workspace)], env)
    assert nothing.returncode == 2 and "Nothing to send" in nothing.stderr


def test_run_json_reports_errors_as_json(
    fake_server: FakeAnthropicServer, workspace: Path, tmp_path: Path
) -> None:
    no_key = _env(fake_server, tmp_path)
    no_key.pop("ANTHROPIC_API_KEY")
    done = _run(["run", "-w", str(workspace), "hi", "--json"], no_key)
    assert done.returncode == 2
    assert "ANTHROPIC_API_KEY" in json.loads(done.stdout)["error"]

    fake_server.queue(error_reply(401, "invalid x-api-key"))
    done = _run(["run", "--json", "-w", str(workspace), "hi"], _env(fake_server, tmp_path))
    data = json.loads(done.stdout)
    assert done.returncode == 2 and data["stop_reason"] == "error"
    assert "invalid x-api-key" in data["error"] and "Check your API key" in data["error"]

    missing = _run(["run", "--json", "-w", str(tmp_path / "nope"), "hi"], _env(fake_server, tmp_path))
    assert missing.returncode == 2 and "does not exist" in json.loads(missing.stdout)["error"]


def test_run_json_after_ctrl_c(fake_server: FakeAnthropicServer, workspace: Path, tmp_path: Path) -> None:
    fake_server.queue(text_reply("slow " * 400, chunk_delay=0.05))
    process = subprocess.Popen(
        [*CLI, "run", "--json", "-w", str(workspace), "hi"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(fake_server, tmp_path),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert _wait_for(lambda: len(fake_server.requests) >= 1)
    time.sleep(0.5)  # the reply is streaming (20 s of it)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert json.loads(out)["error"].startswith("cancelled")


def test_errors_name_the_next_step(fake_server: FakeAnthropicServer, workspace: Path, tmp_path: Path) -> None:
    fake_server.handler = lambda request: error_reply(529, "Overloaded")  # type: ignore[assignment]
    done = _run(["run", "-w", str(workspace), "hi"], _env(fake_server, tmp_path))
    assert done.returncode == 2
    assert "Gave up after 3 retries" in done.stderr and "try again in a minute" in done.stderr

    too_long = error_reply(400, "prompt is too long: 250000 tokens > 200000 maximum")
    fake_server.handler = lambda request: too_long  # type: ignore[assignment]
    done = _run(["run", "-w", str(workspace), "hi"], _env(fake_server, tmp_path))
    assert "no longer fits" in done.stderr and "--session" in done.stderr

    no_scheme = _env(fake_server, tmp_path, ANTHROPIC_BASE_URL=fake_server.url.removeprefix("http://"))
    done = _run(["run", "-w", str(workspace), "hi"], no_scheme)
    assert done.returncode == 2 and "has no http:// or https://" in done.stderr


@pytest.mark.parametrize(
    "command",
    [["state", "list"], ["state", "serve"], ["sessions", "list"], ["chat"], ["run", "hi"]],
)
def test_a_mistyped_workspace_is_never_created(command: list[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    done = _run([*command, "-w", str(missing)], _env(None, tmp_path))
    assert done.returncode == 2
    assert f"The workspace {missing} does not exist" in done.stderr
    assert not missing.exists()


def test_state_serve_on_a_busy_port(workspace: Path, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = _run(["state", "serve", "-w", str(workspace), "--port", str(port)], _env(None, tmp_path))
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == f"Error: port {port} on 127.0.0.1 is already in use: stop what is there or pick another --port."
    )
    assert "Serving" not in done.stdout


def test_version_completion_and_debug_after_the_command(workspace: Path, tmp_path: Path) -> None:
    env = _env(None, tmp_path)
    version = _run(["--version"], env)
    assert version.returncode == 0 and version.stdout.startswith("openclaw-mini 0.")
    completion = _run(["--show-completion", "bash"], env)
    assert completion.returncode == 0 and "complete -o default -F" in completion.stdout
    assert "--install-completion" in _run(["--help"], env).stdout
    env.pop("ANTHROPIC_API_KEY")
    debug = _run(["run", "--debug", "-w", str(workspace), "--agent-id", "Bad Id!", "hi"], env)
    assert "Traceback" in debug.stderr
    plain = _run(["run", "-w", str(workspace), "--agent-id", "Bad Id!", "hi"], env)
    assert "Traceback" not in plain.stderr and "agent_id" in plain.stderr


# ---------------------------------------------------------------------------------------- doctor


class _Refuses(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.dumps({"type": "error", "error": {"type": "authentication_error", "message": "bad key"}})
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_doctor_makes_one_real_request_with_the_key(
    fake_server: FakeAnthropicServer, workspace: Path, tmp_path: Path
) -> None:
    env = _env(fake_server, tmp_path, COLUMNS="250")
    done = _run(["doctor", "-w", str(workspace)], env)
    assert "the key works" in done.stdout, done.stdout
    assert [r.path for r in fake_server.requests] == ["/v1/messages/count_tokens"]
    assert fake_server.requests[0].api_key == "test-key"

    server = HTTPServer(("127.0.0.1", 0), _Refuses)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        refused = _run(
            ["doctor", "-w", str(workspace)],
            {**env, "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{server.server_port}"},
        )
    finally:
        server.shutdown()
        server.server_close()
    assert refused.returncode == 1
    assert "refused the key (HTTP 401)" in refused.stdout and "check ANTHROPIC_API_KEY" in refused.stdout
