"""Test support for the fleet: a real `redis-server` on a free port, worker processes, polling."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

REDIS_BIN = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(
    REDIS_BIN is None and os.environ.get("CI") != "true",
    reason="redis-server is not installed (.ci/run installs it)",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A `redis-server` of our own in a temp dir, append-only with fsync on every write."""

    def __init__(self, directory: Path) -> None:
        if REDIS_BIN is None:
            raise RuntimeError("redis-server is not on PATH (.ci/run installs it from the OS packages)")
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_BIN is not None
        self.process = subprocess.Popen(
            [
                REDIS_BIN,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
                "--daemonize", "no",
                "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING within 30 s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            assert sock.recv(64).startswith(b"+OK")


async def wait_for(
    condition: Callable[[], Awaitable[Any]],
    *,
    timeout: float = 60.0,  # noqa: ASYNC109
    what: str = "condition",
) -> Any:
    """Poll an async condition until it returns a truthy value (generous timeout, no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def spawn_worker(
    url: str,
    agents_dir: Path,
    *,
    model_url: str,
    worker_id: str,
    concurrency: int = 4,
    lease: float = 2.0,
    extra: list[str] | None = None,
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """`openclaw-mini fleet worker` as a real OS process against the fake model server."""
    env = dict(os.environ)
    env.update({"ANTHROPIC_BASE_URL": model_url, "ANTHROPIC_API_KEY": "test", "OPENCLAW_MINI_FLEET_URL": url})
    command = [
        sys.executable, "-m", "openclaw_mini.cli.main", "fleet", "worker",
        "--agents", str(agents_dir), "--concurrency", str(concurrency), "--id", worker_id,
        "--lease", f"{lease}s", *(extra or []),
    ]  # fmt: skip
    if log is None:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(log, "ab") as output:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, env=env, stdout=output, stderr=output)


def last_user_text(request: Any) -> str:
    """The text of the newest user message of a recorded request (tool results skipped)."""
    for message in reversed(request.messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        texts = [b.get("text", "") for b in content if b.get("type") == "text"]
        if texts:
            return texts[-1]
    return ""


def echo_handler(delay: float = 0.0, hook: Callable[[str, Any], Any] | None = None) -> Callable[[Any], Any]:
    """A fake model that answers `echo: <the user's text>` after `delay` s; `hook(text, request)` may
    return another reply (or act, e.g. kill a worker) first."""
    from openclaw_mini.testing import text_reply

    def handle(request: Any) -> Any:
        text = last_user_text(request)
        if hook is not None:
            reply = hook(text, request)
            if reply is not None:
                return reply
        if delay:
            time.sleep(delay)
        return text_reply(f"echo: {text}")

    return handle


def make_agents(root: Path, *names: str) -> Path:
    """An agents dir with one minimal workspace per name."""
    for name in names:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "AGENTS.md").write_text(f"You are the {name} agent. Be brief.\n")
    return root
