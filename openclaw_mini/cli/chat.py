"""`openclaw-mini chat` and `openclaw-mini run`.

One asyncio event loop (an `asyncio.Runner`) lives for the whole chat so the agent's HTTP client is
reused; each turn runs on it. Ctrl-C during a turn cancels that turn (the Runner cancels the task and
the agent records a valid transcript) and returns to the prompt; Ctrl-C twice at the prompt or
Ctrl-D exits.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import fail
from .render import PlainRenderer, RichRenderer

if TYPE_CHECKING:
    from rich.console import Console

    from ..agent import Agent
    from ..events import RunResult

__all__ = ["SLASH_HELP", "make_agent", "run_chat", "run_once"]

SLASH_HELP = """\
/help            this list
/new             start a fresh session
/sessions        list sessions of this agent
/switch ID       continue another session
/skills          list skills and whether each is usable
/memory QUERY    search memory
/compact         summarise this session's older history now
/heartbeat       heartbeat status (/heartbeat TEXT asks the heartbeat skill)
/exit            leave (Ctrl-D works too)
Lines ending in \\ continue on the next line. Ctrl-C cancels a running reply."""

HISTORY_FILE = Path(os.environ.get("OPENCLAW_MINI_HOME", "~/.openclaw-mini")).expanduser() / "chat_history"


def make_agent(workspace: Path, *, model: str | None, agent_id: str | None, approve: Any = None) -> Agent:
    """Build the agent for a CLI command, failing early and plainly on a missing key or workspace."""
    from .config import build_agent

    workspace = workspace.expanduser()
    if not workspace.exists():
        fail(f"The workspace {workspace} does not exist. Create it or run 'openclaw-mini init {workspace}'.")
    if not workspace.is_dir():
        fail(f"The workspace {workspace} is not a folder.")
    agent = build_agent(workspace, model=model or None, agent_id=agent_id, approve=approve)
    if not agent.config.resolved_api_key:
        fail(
            "No API key: set ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL for a compatible server), "
            "then try again."
        )
    return agent


async def _turn(agent: Agent, session: str, text: str, renderer: Any) -> RunResult | None:
    result = None
    renderer.start()
    try:
        async for event in agent.stream(session, text):
            if event.type == "done":
                result = event.result
            else:
                renderer.handle(event)
    finally:
        renderer.finish(result)
    return result


def run_once(
    message: str, *, workspace: Path, session: str, model: str | None, agent_id: str | None, as_json: bool
) -> int:
    agent = make_agent(workspace, model=model, agent_id=agent_id)

    async def go() -> RunResult | None:
        try:
            renderer: Any = _SilentRenderer() if as_json else PlainRenderer()
            return await _turn(agent, session, message, renderer)
        finally:
            await agent.aclose()

    result = asyncio.run(go())
    if result is None:
        return 1
    if as_json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    if result.stop_reason == "error":
        return 2  # the error event already said what went wrong and what to do
    return 1 if result.stop_reason == "aborted" else 0


class _SilentRenderer:
    def start(self) -> None: ...

    def handle(self, event: Any) -> None:
        if event.type in ("error", "warning"):
            print(f"{event.type}: {event.text}", file=sys.stderr)

    def finish(self, result: Any) -> None: ...


def run_chat(*, workspace: Path, session: str | None, model: str | None, agent_id: str | None) -> None:
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    from .approval import TerminalApprover

    approver = TerminalApprover() if interactive else None  # piped: `ask` refuses with a hint
    agent = make_agent(workspace, model=model, agent_id=agent_id, approve=approver)
    # The SDK takes about a second to import: do it while the user types the first message.
    threading.Thread(target=importlib.import_module, args=("anthropic",), daemon=True).start()
    session_id = session or ("chat-" + uuid.uuid4().hex[:8] if interactive else "main")
    with asyncio.Runner() as runner:
        try:
            if interactive:
                _interactive_chat(runner, agent, session_id)
            else:
                _piped_chat(runner, agent, session_id)
        finally:
            runner.run(agent.aclose())


def _piped_chat(runner: asyncio.Runner, agent: Agent, session: str) -> None:
    renderer = PlainRenderer()
    for line in sys.stdin:
        text = line.rstrip("\n")
        if not text.strip():
            continue
        if text.strip() in ("/exit", "/quit"):
            break
        result = runner.run(_turn(agent, session, text, renderer))
        if result is not None and result.stop_reason == "error":
            sys.exit(2)


def _read_message(console: Console) -> str:
    """Read one message; a trailing backslash continues it on the next line."""
    lines = []
    prompt = "[bold cyan]you ›[/] "
    while True:
        line = console.input(prompt)
        if line.endswith("\\"):
            lines.append(line[:-1])
            prompt = "[dim]   …[/] "
            continue
        lines.append(line)
        return "\n".join(lines)


def _setup_history() -> None:
    try:
        import readline
    except ImportError:  # pragma: no cover - platforms without readline
        return
    try:
        HISTORY_FILE.parent.mkdir(parents=True, exist_ok=True)
        if HISTORY_FILE.exists():
            readline.read_history_file(HISTORY_FILE)
        readline.set_history_length(2000)
    except OSError:
        return
    import atexit

    atexit.register(_save_history)


def _save_history() -> None:
    try:
        import readline

        readline.write_history_file(HISTORY_FILE)
    except (ImportError, OSError):
        pass


def _interactive_chat(runner: asyncio.Runner, agent: Agent, session: str) -> None:
    from .approval import chat_console

    console = chat_console()  # shared with the approval prompt
    _setup_history()
    console.print(
        f"[bold]openclaw-mini[/] · {agent.config.model} · workspace {agent.workspace} · "
        f"session [cyan]{session}[/]\n[dim]/help for commands, Ctrl-D to leave[/]"
    )
    renderer = RichRenderer(console, context_window=agent.config.context_window_tokens)
    interrupted_at_prompt = False
    while True:
        try:
            text = _read_message(console)
            interrupted_at_prompt = False
        except EOFError:
            console.print()
            return
        except KeyboardInterrupt:
            if interrupted_at_prompt:
                console.print()
                return
            interrupted_at_prompt = True
            console.print("\n[dim](Ctrl-C again or Ctrl-D to leave)[/]")
            continue
        if not text.strip():
            continue
        # `/heartbeat` alone is the status; with more words it invokes the bundled heartbeat skill.
        is_skill_call = text.split()[0] == "/heartbeat" and len(text.split()) > 1
        if text.startswith("/") and text.split()[0] in _COMMANDS and not is_skill_call:
            try:
                outcome = _COMMANDS[text.split()[0]](runner, agent, session, text, console)
            except KeyboardInterrupt:
                console.print("[dim]cancelled[/]")
                continue
            except Exception as exc:
                from .common import user_error_message

                console.print(f"[red]error:[/] {user_error_message(exc) or exc}")
                continue
            if outcome is _EXIT:
                return
            if isinstance(outcome, str):
                session = outcome
            continue
        try:
            runner.run(_turn(agent, session, text, renderer))
        except KeyboardInterrupt:
            console.print("[dim]cancelled — the turn was stopped; the session is intact[/]")


_EXIT = object()
Command = Callable[[asyncio.Runner, "Agent", str, str, "Console"], Any]


def _cmd_help(runner: asyncio.Runner, agent: Agent, session: str, text: str, console: Console) -> None:
    console.print(SLASH_HELP, markup=False)


def _cmd_exit(runner: asyncio.Runner, agent: Agent, session: str, text: str, console: Console) -> object:
    return _EXIT


def _cmd_new(runner: asyncio.Runner, agent: Agent, session: str, text: str, console: Console) -> str:
    new = "chat-" + uuid.uuid4().hex[:8]
    console.print(f"new session [cyan]{new}[/]")
    return new


def _cmd_switch(
    runner: asyncio.Runner, agent: Agent, session: str, text: str, console: Console
) -> str | None:
    parts = text.split(maxsplit=1)
    if len(parts) < 2:
        console.print("usage: /switch ID")
        return None
    key = agent.session_key(parts[1].strip())
    console.print(f"switched to [cyan]{key}[/]")
    return str(key)


def _cmd_sessions(runner: asyncio.Runner, agent: Agent, session: str, text: str, console: Console) -> None:
    infos = agent.sessions.list_sync(agent.config.agent_id)
    if not infos:
        console.print("no sessions yet")
    current = str(agent.session_key(session))
    for info in infos[:30]:
        marker = "›" if info.key == current else " "
        console.print(
            f"{marker} {info.key}  [dim]{info.last_activity:%Y-%m-%d %H:%M} · {info.size_bytes:,} B[/]"
        )


def _cmd_skills(runner: asyncio.Runner, agent: Agent, session: str, text: str, console: Console) -> None:
    from ..skills import SkillLoader

    snapshot = SkillLoader(agent.workspace).load()
    for skill in snapshot.skills:
        status = "[green]ready[/]" if skill.eligible else f"[red]{skill.ineligible_reason}[/]"
        triggers = ", ".join(skill.triggers) or f"/{skill.name}"
        console.print(f"[bold]{skill.name}[/] ({skill.source}) {triggers} — {status}")
    for warning in snapshot.warnings:
        console.print(f"[yellow]warning:[/] {warning}")


def _cmd_memory(runner: asyncio.Runner, agent: Agent, session: str, text: str, console: Console) -> None:
    from ..memory import MemoryStore

    parts = text.split(maxsplit=1)
    if len(parts) < 2:
        console.print("usage: /memory QUERY")
        return
    store = MemoryStore(agent.workspace, timezone=agent.config.timezone)
    try:
        hits = store.search(parts[1])
    finally:
        store.close()
    if not hits:
        console.print("no matches")
    for hit in hits:
        console.print(
            f"[bold]{hit.path}:{hit.start_line}-{hit.end_line}[/] [dim]{hit.score:.2f}[/]\n{hit.snippet}"
        )


def _cmd_compact(runner: asyncio.Runner, agent: Agent, session: str, text: str, console: Console) -> None:
    data = runner.run(agent.compact(session))
    if data is None:
        console.print("nothing to compact yet")
    else:
        console.print(f"compacted: {data['tokens_before']} → {data['tokens_after']} tokens")


def _cmd_heartbeat(runner: asyncio.Runner, agent: Agent, session: str, text: str, console: Console) -> None:
    from .heartbeat import render_status

    render_status(console, agent.heartbeat_status())


_COMMANDS: dict[str, Command] = {
    "/help": _cmd_help,
    "/exit": _cmd_exit,
    "/quit": _cmd_exit,
    "/new": _cmd_new,
    "/switch": _cmd_switch,
    "/sessions": _cmd_sessions,
    "/skills": _cmd_skills,
    "/memory": _cmd_memory,
    "/compact": _cmd_compact,
    "/heartbeat": _cmd_heartbeat,
}
