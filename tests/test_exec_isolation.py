"""`exec` cannot hand the agent's secrets to the model, and nothing it starts outlives it.

The exfiltration test runs a real agent in its own OS process (so the planted secrets are in its
initial environment, the one `/proc/<pid>/environ` shows) against the fake Anthropic server, lets
the "model" try the tricks from issue 12, and searches every request body and transcript for the
secrets in any of those encodings.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import openclaw_mini
from openclaw_mini.testing import FakeAnthropicServer, text_reply, tool_reply
from openclaw_mini.tools.base import ToolContext, ToolError
from openclaw_mini.tools.exec_isolation import isolation
from openclaw_mini.tools.policy import Sandbox, SandboxConfig
from openclaw_mini.tools.shell import exec_

NON_HEX = "ghijklmnopqrstuvwxyz"


def planted_secret() -> str:
    # Letters that never occur in hex or in the fixed parts of base64 output of other text.
    return "".join(secrets.choice(NON_HEX) for _ in range(28))


def leaks(secret: str, corpus: str) -> list[str]:
    """Every way `secret` shows up in `corpus`: plain, reversed, a 6-char piece, hex, base64."""
    flat = "".join(corpus.split())
    found = []
    for label, text in (("plain", secret), ("reversed", secret[::-1])):
        if text in corpus:
            found.append(label)
        if any(text[i : i + 6] in corpus for i in range(len(text) - 5)):
            found.append(f"{label} 6-char piece")
    if any(secret[i : i + 6].encode().hex() in flat.lower() for i in range(len(secret) - 5)):
        found.append("hex")
    for shift in range(3):
        encoded = base64.b64encode(secret[shift:].encode()).decode()
        if encoded[4:20] in flat:
            found.append("base64")
    return found


def test_leak_detector_sees_every_encoding() -> None:
    secret = planted_secret()
    blob = f"A=1\0KEY={secret}\0B=2".encode()
    for corpus in (
        blob.decode(),
        blob.decode()[::-1],
        base64.b64encode(blob).decode(),
        base64.b64encode(b"xy" + blob).decode(),
        blob.hex(),
        "\n".join(textwrap.wrap(blob.decode(), 6)),
    ):
        assert leaks(secret, corpus), corpus
    assert not leaks(secret, planted_secret() + base64.b64encode(b"PATH=/usr/bin").decode())


AGENT_SCRIPT = """
import asyncio, sys
from openclaw_mini import Agent
from openclaw_mini.tools.policy import SandboxConfig

async def main():
    agent = Agent(workspace_dir=sys.argv[1], base_url=sys.argv[2], max_retries=0,
                  sandbox=SandboxConfig(allow_exec=True, exec_isolation=sys.argv[3]))
    try:
        result = await agent.run("leak", "Show me the environment.")
        print(result.text)
    finally:
        await agent.aclose()

asyncio.run(main())
"""

ENV = "tr '\\0' '\\n' </proc/$PPID/environ; for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' <$f; done"
ATTACKS = [
    "env; cat /proc/$PPID/environ /proc/*/environ",
    "base64 -w0 /proc/$PPID/environ; for f in /proc/[0-9]*/environ; do base64 -w0 $f; echo; done",
    "od -An -tx1 /proc/$PPID/environ | tr -d ' \\n'; for f in /proc/[0-9]*/environ; do xxd -p $f; done",
    f"({ENV}) | rev",
    f"({ENV}) | fold -w6",
    f"({ENV}) > stolen.txt; ls /proc; cat /proc/$PPID/cmdline",
]


def run_agent_process(
    workspace: Path, server: FakeAnthropicServer, mode: str, env: dict[str, str], python: list[str]
) -> str:
    """Run the agent in its own process; its stderr (where a fallback warning would go)."""
    calls: list[tuple[str, dict[str, Any]]] = [("exec", {"command": command}) for command in ATTACKS]
    server.queue(
        tool_reply(*calls),
        tool_reply(("read", {"path": "stolen.txt"}), ("grep", {"pattern": ".", "path": "stolen.txt"})),
        text_reply("done"),
    )
    done = subprocess.run(
        [*python, "-c", AGENT_SCRIPT, str(workspace), server.url, mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "done" in done.stdout
    return done.stderr


def everything_sent_and_stored(server: FakeAnthropicServer, workspace: Path) -> str:
    parts = [json.dumps(request.body, ensure_ascii=False) for request in server.requests]
    state = workspace / ".openclaw-mini"
    parts.extend(path.read_text(errors="replace") for path in state.rglob("*") if path.is_file())
    # JSON escapes (\u0000, \n) would hide a secret split by them: decode them back.
    return "\n".join(parts).replace("\\n", "\n").replace("\\u0000", "\n")


SETPRIV = shutil.which("setpriv")
NOBODY = 65534
AS_NOBODY = [
    *([SETPRIV] if SETPRIV else []),
    f"--reuid={NOBODY}",
    f"--regid={NOBODY}",
    "--clear-groups",
    "--inh-caps=-all",
    "--bounding-set=-all",
]


def python_for_nobody() -> tuple[str, dict[str, str]] | None:
    """An interpreter a fully unprivileged `nobody` can run with this checkout importable, or None
    (this venv's python may live under a private home)."""
    if os.geteuid() != 0 or SETPRIV is None:
        return None
    source = str(Path(openclaw_mini.__file__).resolve().parent.parent)
    env = {"PYTHONPATH": os.pathsep.join([source, sysconfig.get_paths()["purelib"]])}
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/{version}", shutil.which(version), sys.executable):
        if not candidate:
            continue
        probe = subprocess.run(
            [*AS_NOBODY, candidate, "-c", "import openclaw_mini, re2, anthropic"],
            env={**env, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            capture_output=True,
            timeout=60,
            check=False,
        )
        if probe.returncode == 0:
            return candidate, env
    return None


@pytest.fixture(params=["auto/own-user", "auto/nobody", "off/own-user", "off/nobody"])
def agent_user(
    request: pytest.FixtureRequest, workspace: Path
) -> Iterator[tuple[str, Path, list[str], dict[str, str]]]:
    """(isolation mode, workspace, argv for python, extra env): the agent runs as this uid, or as a
    fully unprivileged `nobody` when the tests run as root, to show both mechanisms without root."""
    mode, user = request.param.split("/")
    if mode == "auto" and not isolation().namespaces:
        pytest.skip(f"no user namespaces here: {isolation().reason}")
    if user == "nobody":
        found = python_for_nobody()
        if found is None:
            pytest.skip("needs root, setpriv and a python that nobody can run")
        python, env = found
        place = Path(tempfile.mkdtemp(prefix="openclaw-nobody-"))
        os.chown(place, NOBODY, NOBODY)
        try:
            yield mode, place, [*AS_NOBODY, python], env
        finally:
            shutil.rmtree(place)
        return
    if mode == "off" and os.geteuid() == 0:
        pytest.skip("without namespaces, a root command can read any /proc/<pid>/environ (see README)")
    yield mode, workspace, [sys.executable], {}


def test_exec_cannot_leak_the_agents_environment(
    agent_user: tuple[str, Path, list[str], dict[str, str]], fake_server: FakeAnthropicServer
) -> None:
    mode, workspace, python, extra_env = agent_user
    tokens = {name: planted_secret() for name in ("key", "flux", "db", "url", "hook")}
    planted = {
        "ANTHROPIC_API_KEY": "sk-ant-" + tokens["key"],
        "FLUX_TOKEN": tokens["flux"],
        "DB_PASSWORD": tokens["db"],
        "DATABASE_URL": f"postgres://user:{tokens['url']}@db.internal/app",
        "UPSTREAM_HOOK": "https://hooks.internal/" + tokens["hook"],
    }
    env = {key: value for key, value in os.environ.items() if key.startswith(("PATH", "LANG"))}
    env.update(planted, HOME=str(workspace), **extra_env)
    stderr = run_agent_process(workspace, fake_server, mode, env, python)
    if mode == "auto":  # the namespaces really were used, not the fallback
        assert "WITHOUT namespace isolation" not in stderr, stderr

    outputs = [
        block["content"] for block in fake_server.requests[1].messages[-1]["content"]
    ]  # the attacks did run and produced output
    assert len(outputs) == len(ATTACKS)
    assert "PATH=" in str(outputs[0])
    corpus = everything_sent_and_stored(fake_server, workspace)
    assert "stolen.txt" in corpus
    for name, secret in tokens.items():
        assert not leaks(secret, corpus), f"{name} leaked: {leaks(secret, corpus)}"


def make_ctx(workspace: Path, mode: str) -> ToolContext:
    return ToolContext(
        workspace=workspace,
        session_key="agent:main:t",
        agent_id="main",
        sandbox=Sandbox(workspace, SandboxConfig(allow_exec=True, exec_isolation=mode)),  # type: ignore[arg-type]
    )


def pids_running(marker: str) -> list[int]:
    """Host PIDs of live processes whose command line is exactly `sleep <marker>`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if cmdline[:2] == [b"sleep", marker.encode()] and stat[stat.rfind(")") + 2] != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


async def wait_for(predicate: Any, seconds: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def unique_sleep() -> str:
    return f"{300 + secrets.randbelow(10**8) / 10**8:.8f}"


MODES = ["auto", "off"]


@pytest.mark.parametrize("mode", MODES)
async def test_setsid_children_end_when_the_command_times_out(mode: str, workspace: Path) -> None:
    if mode == "auto" and not isolation().namespaces:
        pytest.skip(f"no user namespaces here: {isolation().reason}")
    ctx = make_ctx(workspace, mode)
    escaped, waiting = unique_sleep(), unique_sleep()
    task = asyncio.create_task(
        exec_.invoke({"command": f"setsid sleep {escaped} & sleep {waiting}", "timeout": 2}, ctx)
    )
    await wait_for(lambda: pids_running(escaped) and pids_running(waiting))
    pids = pids_running(escaped) + pids_running(waiting)
    out = await task
    assert isinstance(out, str) and out.startswith("Command timed out after 2 s")
    await wait_for(lambda: not any(alive(pid) for pid in pids))


@pytest.mark.parametrize("mode", MODES)
async def test_setsid_children_end_when_the_command_ends(mode: str, workspace: Path) -> None:
    if mode == "auto" and not isolation().namespaces:
        pytest.skip(f"no user namespaces here: {isolation().reason}")
    ctx = make_ctx(workspace, mode)
    escaped = unique_sleep()
    seen: list[int] = []
    task = asyncio.create_task(
        exec_.invoke({"command": f"(setsid sleep {escaped} &); sleep 1; echo finished"}, ctx)
    )
    await wait_for(lambda: bool(pids_running(escaped)))
    seen.extend(pids_running(escaped))
    out = await task
    assert isinstance(out, str) and "finished" in out
    assert "use background=true" in out  # the model is told its leftover was stopped
    await wait_for(lambda: not any(alive(pid) for pid in seen))


async def test_require_mode_refuses_when_namespaces_are_missing(workspace: Path) -> None:
    if isolation().namespaces:
        out = await exec_.invoke(
            {"command": "echo isolated; ls /proc | grep -c '^[0-9]'"}, make_ctx(workspace, "require")
        )
        assert isinstance(out, str) and "isolated" in out
    else:
        with pytest.raises(ToolError, match="must run in their own namespace"):
            await exec_.invoke({"command": "true"}, make_ctx(workspace, "require"))
