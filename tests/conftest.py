"""Shared fixtures. Every test runs offline: any model call that is not aimed at a fake server
fails fast (the default base URL points at a closed local port)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

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
