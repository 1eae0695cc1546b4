"""Shared fixtures. Every test runs offline: any model call that is not aimed at a fake server
fails fast (the default base URL points at a closed local port)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from openclaw_mini.testing import FakeAnthropicServer


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(autouse=True)
def _offline_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No real keys, no real API, no user-level skills or history leaking into tests."""
    for name in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "FLUX_URL",
        "FLUX_TOKEN",
        "OPENCLAW_MINI_AGENT_ID",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("OPENCLAW_MINI_SKILLS_DIR", str(home / "skills"))
    monkeypatch.setenv("OPENCLAW_MINI_HOME", str(home))
    # The user's own ~/.config/openclaw-mini/config.toml must not change what a test sees.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))


@pytest.fixture
def fake_server() -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer() as server:
        yield server


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


@pytest.fixture
async def make_agent(workspace: Path, fake_server: FakeAnthropicServer) -> AsyncIterator[Callable[..., Any]]:
    """Build agents on the fake server; all are closed at the end of the test."""
    from openclaw_mini import Agent

    agents: list[Agent] = []

    def build(**overrides: Any) -> Agent:
        options: dict[str, Any] = {
            "workspace_dir": workspace,
            "api_key": "test-key",
            "base_url": fake_server.url,
            "max_retries": 2,
        }
        options.update(overrides)
        agent = Agent(**options)
        agents.append(agent)
        return agent

    yield build
    for agent in agents:
        await agent.aclose()


class _MayBlock(NamedTuple):
    """Library code that may block the event loop: `calls` (blockbuster's names) made anywhere below
    `functions` of a file whose path ends with `file`."""

    file: str
    functions: frozenset[str]
    calls: tuple[str, ...]
    reason: str


_PATH_CALLS = ("os.stat", "os.path.abspath", "os.readlink")
_FILE_WRITES = ("io.TextIOWrapper.write", "io.BufferedWriter.write")
_READS = ("io.BufferedReader.read", "io.TextIOWrapper.read", "os.read")
_LISTINGS = ("os.listdir", "os.scandir")

# Every place the library may block the event loop, each with its reason. Everything else that
# blocks inside `openclaw_mini` (file I/O, sleeps, sockets, SQLite, locks) while a loop runs fails.
_MAY_BLOCK: tuple[_MayBlock, ...] = (
    _MayBlock(
        "openclaw_mini/fleet/gateway.py",
        frozenset({"_load"}),
        (*_PATH_CALLS, *_READS),
        "the gateway's token file: one stat at most once a second per request, re-read only when it "
        "changed (so `fleet token create` applies to a running gateway)",
    ),
    _MayBlock(
        "openclaw_mini/skills/loader.py",
        frozenset({"__init__", "bundled_skills_dir"}),
        _PATH_CALLS,
        "resolving the skill roots once per Agent (bundled dir: once per process)",
    ),
    _MayBlock(
        "openclaw_mini/tools/policy.py",
        frozenset({"__init__"}),
        _PATH_CALLS,
        "the Sandbox resolves its workspace and read roots once, when it is built",
    ),
    _MayBlock(
        "openclaw_mini/memory/store.py",
        frozenset({"__init__"}),
        (*_PATH_CALLS, *_READS),
        "the MemoryStore checks its workspace and loads its zone once (its reads and writes run in threads)",
    ),
    _MayBlock(
        "openclaw_mini/heartbeat/config.py",
        frozenset({"_host_zone_name"}),
        (*_PATH_CALLS, "io.BufferedReader.read"),
        "the host zone (/etc/localtime link, then zoneinfo's cached tz file): once per heartbeat tick",
    ),
    _MayBlock(
        "openclaw_mini/llm.py",
        frozenset({"client"}),
        ("os.listdir", "io.TextIOWrapper.read", "io.BufferedReader.read", "os.stat"),
        "the SDK client is built once per model, on first use; it loads the CA bundle (lead's file)",
    ),
    _MayBlock(
        "openclaw_mini/state/remote.py",
        frozenset({"_http"}),
        ("os.listdir", "io.TextIOWrapper.read", "io.BufferedReader.read", "os.stat"),
        "the HTTP client is built once per remote store, on first use; it loads the CA bundle",
    ),
    _MayBlock(
        "openclaw_mini/fleet/redis_queue.py",
        frozenset({"connect"}),
        ("os.stat", "os.listdir", "io.TextIOWrapper.read", "io.BufferedReader.read"),
        "once per queue: redis-py's first connection finishes its lazy imports",
    ),
    _MayBlock(
        "openclaw_mini/settings.py",
        frozenset({"load_settings"}),
        (*_PATH_CALLS, "io.TextIOWrapper.read", "io.BufferedReader.read"),
        "the config files are read once, when a command or an Agent starts",
    ),
    _MayBlock(
        "openclaw_mini/session.py",
        frozenset({"load_sync", "append_sync", "delete_sync"}),
        (*_PATH_CALLS, "io.BufferedReader.read", "os.mkdir", "os.write", "os.read"),
        "the `*_sync` methods are the explicitly blocking API (the CLI, tests); the loop awaits the others",
    ),
    _MayBlock(
        "openclaw_mini/heartbeat/runner.py",
        frozenset({"status"}),
        (*_PATH_CALLS, "io.BufferedReader.read", "io.TextIOWrapper.read"),
        "`status()` is the synchronous report for the CLI and tests (ticks read the files in a thread)",
    ),
    _MayBlock(
        "openclaw_mini/state/server.py",
        frozenset({"serve_in_background"}),
        (*_PATH_CALLS, "os.getcwd", "os.listdir", "io.TextIOWrapper.read", "io.BufferedReader.read"),
        "starting the server, once: uvicorn loads its config (tests, the benchmark, the example)",
    ),
    _MayBlock(
        "openclaw_mini/fleet/worker.py",
        frozenset({"agents", "_workspace"}),
        (*_PATH_CALLS, "os.listdir", "os.scandir"),
        "listing the agent folders when a worker starts and preparing a conversation's workspace"
        " (being reworked by the fleet engineers; should move to a thread)",
    ),
    _MayBlock(
        "openclaw_mini/fleet/store.py",
        frozenset({"_check_fresh"}),
        _PATH_CALLS,
        "the write guard resolves the path (a few stats) before each write/edit (fleet engineers' file;"
        " should move to a thread)",
    ),
    _MayBlock(
        "openclaw_mini/state/auth.py",
        frozenset({"__init__"}),
        (*_PATH_CALLS, "io.TextIOWrapper.read"),
        "a NamespaceRegistry reads its file once when built (the server's lookups run in threads)",
    ),
    _MayBlock(
        "<frozen importlib._bootstrap>",
        frozenset({"_call_with_frames_removed"}),
        (
            *_PATH_CALLS,
            "os.getcwd",
            "os.listdir",
            "os.scandir",
            "io.BufferedReader.read",
            "io.TextIOWrapper.read",
        ),
        "a module's first import (heavy libraries are imported lazily, on first use, by design)",
    ),
    _MayBlock(
        "importlib/metadata/__init__.py",
        frozenset({"version", "metadata", "distribution", "from_name"}),
        (*_PATH_CALLS, *_LISTINGS, *_READS),
        "package metadata: redis-py reads its own version when it opens a connection",
    ),
    _MayBlock(
        "logging/__init__.py",
        frozenset({"emit"}),
        _FILE_WRITES,
        "log records reach their handler synchronously, as everywhere in Python (use a QueueHandler)",
    ),
)


@pytest.fixture(autouse=True)
def _no_blocking_in_the_event_loop() -> Iterator[None]:
    """Fail a test when library code blocks the event loop (what pydantic-ai's suite does).

    The CLI (it renders to a terminal, synchronously by design) and the testing kit (its fake
    server runs in threads) are not scanned.
    """
    from blockbuster import blockbuster_ctx

    with blockbuster_ctx(
        "openclaw_mini", excluded_modules=["openclaw_mini.cli", "openclaw_mini.testing"]
    ) as bb:
        for place in _MAY_BLOCK:
            for call in place.calls:
                bb.functions[call].can_block_in(place.file, place.functions)
        yield
