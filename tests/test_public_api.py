"""The public surface changes only on purpose; the package imports fast; the README runs."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import openclaw_mini

ROOT = Path(__file__).resolve().parent.parent

EXPECTED = [
    "Agent",
    "AgentConfig",
    "AnthropicModel",
    "ApprovalRequest",
    "BootstrapConfig",
    "CompactionConfig",
    "ConfigError",
    "ContextOverflowError",
    "HeartbeatConfig",
    "HeartbeatRequest",
    "HeartbeatTask",
    "McpServerConfig",
    "MemoryHit",
    "MemoryStore",
    "MissingAPIKeyError",
    "Model",
    "ModelError",
    "ModelRequest",
    "ModelResponse",
    "OpenClawMiniError",
    "PruningConfig",
    "RunEvent",
    "RunResult",
    "SandboxConfig",
    "SessionKey",
    "SessionStore",
    "Settings",
    "Skill",
    "SkillLoader",
    "Tool",
    "ToolCallRecord",
    "ToolContext",
    "ToolError",
    "ToolPolicy",
    "ToolRefused",
    "ToolTimeout",
    "Usage",
    "__version__",
    "load_settings",
    "tool",
]


def test_all_is_pinned_and_every_name_resolves() -> None:
    assert openclaw_mini.__all__ == sorted(EXPECTED)
    for name in openclaw_mini.__all__:
        assert getattr(openclaw_mini, name) is not None


def test_import_is_light() -> None:
    code = "import sys, openclaw_mini; print('anthropic' in sys.modules, 'rich' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_core_never_imports_the_cli_or_prints() -> None:
    for path in (ROOT / "openclaw_mini").rglob("*.py"):
        if "cli" in path.parts or path.name == "testing.py":
            continue
        text = path.read_text()
        assert not re.search(r"^\s*(from|import) (rich|typer)\b", text, re.M), path
        assert not re.search(r"^\s*(from \.+cli|import openclaw_mini\.cli)", text, re.M), path
        calls = [
            node
            for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
        ]
        assert not calls, f"{path} prints"


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, re.S)


async def test_readme_offline_example_runs(tmp_path: Path) -> None:
    blocks = [b for b in _python_blocks((ROOT / "README.md").read_text()) if "FakeAnthropicServer" in b]
    assert blocks, "the README shows how to test an agent offline"
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    test = next(v for k, v in namespace.items() if k.startswith("test_"))
    await test(tmp_path)  # type: ignore[operator]


def test_readme_quickstart_runs_as_written(tmp_path: Path) -> None:
    """The Python quickstart, unchanged, against the fake server (a real key works the same)."""
    import os

    from openclaw_mini.testing import FakeAnthropicServer, text_reply, tool_reply

    block = next(b for b in _python_blocks((ROOT / "README.md").read_text()) if "def word_count" in b)
    script = tmp_path / "quickstart.py"
    script.write_text(block)
    with FakeAnthropicServer() as server:
        server.queue(
            tool_reply(("word_count", {"text": "the quick brown fox"})),
            text_reply("Four words."),
            text_reply("Here are the files."),
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        env.update(ANTHROPIC_API_KEY="test-key", ANTHROPIC_BASE_URL=server.url)
        done = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
    assert done.returncode == 0, done.stderr
    assert "Four words." in done.stdout and "Here are the files." in done.stdout
    assert "word_count" in done.stdout  # the tool calls are printed
    assert (tmp_path / ".openclaw-mini" / "sessions" / "main" / "session-1.jsonl").exists()


def test_one_error_tree() -> None:
    """Every error raised on purpose has one root; the built-in bases users catch today stay."""
    from openclaw_mini import errors
    from openclaw_mini.state import errors as state_errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.OpenClawMiniError), name
    for name in state_errors.__all__:
        assert issubclass(getattr(state_errors, name), errors.OpenClawMiniError), name
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.SessionKeyError, ValueError)
    assert issubclass(errors.ToolTimeout, TimeoutError)
    assert issubclass(errors.ContextOverflowError, errors.ModelError)
    # The classes keep their old import paths.
    from openclaw_mini.agent import MissingAPIKeyError
    from openclaw_mini.config import ConfigError
    from openclaw_mini.llm import ModelError
    from openclaw_mini.session import SessionKeyError
    from openclaw_mini.tools.policy import ToolRefused

    assert MissingAPIKeyError is errors.MissingAPIKeyError and ConfigError is errors.ConfigError
    assert ModelError is errors.ModelError and SessionKeyError is errors.SessionKeyError
    assert ToolRefused is errors.ToolRefused
