"""`openclaw-mini chat` and `openclaw-mini run`.

One asyncio event loop lives for the whole chat: the agent's HTTP client is reused, and the
heartbeat (when on) runs while the user types; its messages appear between turns. In a terminal the
input line is prompt_toolkit (bracketed paste, multi-line editing, Ctrl-R history search, Tab
completion of slash commands and workspace paths), imported only there so start-up stays fast.

Ctrl-C during a turn cancels that turn (the agent records a valid transcript) and returns to the
prompt; Ctrl-C twice at the prompt or Ctrl-D exits. SIGINT is handled by the loop itself, so a chat
started from a shell that ignores SIGINT (a background job of a script) still reacts to Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import os
import re
import signal
import stat
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .common import error_hint, fail, print_json_error
from .render import PlainRenderer, RichRenderer

if TYPE_CHECKING:
    from rich.console import Console

    from ..agent import Agent
    from ..events import RunResult

__all__ = ["SLASH_HELP", "latest_session", "make_agent", "read_run_message", "run_chat", "run_once"]

T = TypeVar("T")

SLASH_HELP = """\
/help            this list
/new, /clear     start a fresh session
/sessions        list sessions of this agent
/switch ID       continue another session
/model [ID]      show or change the model
/skills          list skills and whether each is usable
/memory QUERY    search memory
/compact         summarise this session's older history now
/heartbeat       heartbeat status (/heartbeat TEXT asks the heartbeat skill)
/exit            leave (Ctrl-D works too)
Enter sends; Esc Enter (or a line ending in \\) adds a line; a paste is one message.
Tab completes commands and workspace paths; Ctrl-R searches history; Ctrl-C cancels a reply.
Skill triggers such as /review go to the agent; start a message with a space to send a leading /."""

HISTORY_FILE = Path(os.environ.get("OPENCLAW_MINI_HOME", "~/.openclaw-mini")).expanduser() / "chat_history"
_COMMAND_WORD = re.compile(r"^/[A-Za-z][\w-]*$")


def _base_url_problem(url: str | None) -> str | None:
    if url and not re.match(r"^https?://", url.strip(), re.IGNORECASE):
        return (
            f"ANTHROPIC_BASE_URL={url!r} has no http:// or https:// in front; "
            f"write it in full, e.g. http://{url.strip()}"
        )
    return None


def make_agent(
    workspace: Path,
    *,
    model: str | None,
    agent_id: str | None,
    heartbeat: str | None = None,
    approve: Any = None,
) -> Agent:
    """Build the agent for a CLI command from the config files, env and flags (flags win), failing
    early and plainly on a missing workspace, a missing key or a bad URL."""
    from .common import workspace_problem
    from .config import build_agent

    workspace = workspace.expanduser()
    problem = workspace_problem(workspace)
    if problem is not None:
        fail(problem)
    beat = None
    if heartbeat:
        from ..heartbeat import HeartbeatConfig

        beat = HeartbeatConfig(every=heartbeat)
    agent = build_agent(
        workspace,
        model=model or None,
        agent_id=agent_id,
        approve=approve,
        heartbeat=beat,
        enable_heartbeat=True if beat is not None else None,
    )
    if not agent.config.resolved_api_key:
        fail(
            "No API key: set ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL for a compatible server), "
            "then try again."
        )
    problem = _base_url_problem(agent.config.resolved_base_url)
    if problem is not None:
        fail(problem)
    return agent


def latest_session(agent: Agent) -> str | None:
    """The most recently active session of this agent, leaving out sub-agent sessions and the
    heartbeat's one-off isolated sessions (`<session>-heartbeat-<stamp>`)."""
    from ..session import SessionKey

    for info in agent.sessions.list_sync(agent.config.agent_id):
        key = SessionKey.parse(info.key)
        if not key.is_subagent and "-heartbeat-" not in info.key:
            return info.key
    return None


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


# ----------------------------------------------------------------------------------------- run


def _stdin_is_data() -> bool:
    """True when stdin is a pipe or a file: text to read. A terminal, /dev/null or a socket is not."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


def read_run_message(message: str | None) -> str:
    """`run`'s message: the argument, `-` for stdin, and piped stdin appended to an argument."""
    piped = ""
    if message == "-" or (_stdin_is_data() and not sys.stdin.isatty()):
        piped = sys.stdin.read()
    if message == "-":
        message = None
    parts = [part for part in (message, piped.strip("\n")) if part and part.strip()]
    if not parts:
        fail(
            "Nothing to send: give a message (openclaw-mini run 'text'), "
            "or pipe one in (... | openclaw-mini run)."
        )
    return "\n\n".join(parts)


def run_once(
    message: str, *, workspace: Path, session: str, model: str | None, agent_id: str | None, as_json: bool
) -> int:
    agent = make_agent(workspace, model=model, agent_id=agent_id)
    renderer: Any = _SilentRenderer() if as_json else PlainRenderer()
    renderer.retries = agent.config.max_retries

    async def go() -> RunResult | None:
        try:
            return await _turn(agent, session, message, renderer)
        finally:
            await agent.aclose()

    try:
        result = asyncio.run(go())
    except KeyboardInterrupt:
        if as_json:
            print_json_error(
                "cancelled (Ctrl-C)", stop_reason="aborted", session_key=str(agent.session_key(session))
            )
        else:
            print("cancelled", file=sys.stderr)
        return 130
    if result is None:
        return 1
    if as_json:
        data = result.to_dict()
        if result.stop_reason == "error" and renderer.error:
            data["error"] = renderer.error
        print(json.dumps(data, ensure_ascii=False, indent=2))
    if result.stop_reason == "error":
        return 2  # the error event already said what went wrong and what to do
    return 1 if result.stop_reason == "aborted" else 0


class _SilentRenderer:
    """`run --json`: nothing on stdout but the JSON; warnings and errors on stderr."""

    def __init__(self) -> None:
        self.retries = 0
        self.error: str | None = None

    def start(self) -> None: ...

    def handle(self, event: Any) -> None:
        if event.type == "error":
            hint = error_hint(event.data.get("exception"), retries=self.retries, in_chat=False)
            self.error = event.text + hint
            print(f"error: {self.error}", file=sys.stderr)
        elif event.type == "warning":
            print(f"warning: {event.text}", file=sys.stderr)

    def finish(self, result: Any) -> None: ...


# ---------------------------------------------------------------------------------------- chat


def run_chat(
    *,
    workspace: Path,
    session: str | None,
    model: str | None,
    agent_id: str | None,
    resume: bool = False,
    heartbeat: str | None = None,
) -> None:
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if interactive:  # the SDK takes about a second to import: do it while the user types
        import importlib
        import threading

        threading.Thread(target=importlib.import_module, args=("anthropic",), daemon=True).start()
    from .approval import TerminalApprover

    approver = TerminalApprover() if interactive else None  # piped: `ask` refuses with a hint
    agent = make_agent(workspace, model=model, agent_id=agent_id, heartbeat=heartbeat, approve=approver)
    note = ""
    if session is None and resume:
        session = latest_session(agent)
        note = "continuing the last session" if session else "no earlier session: starting a new one"
    session_id = session or ("chat-" + uuid.uuid4().hex[:8] if interactive else "main")
    chat = _Chat(agent, session_id, interactive=interactive)
    if approver is not None:
        approver.sigint_guard = chat.sigint_paused
    asyncio.run(chat.main(note))
    if chat.exit_code:
        sys.exit(chat.exit_code)


_EXIT = object()


class _Chat:
    """One chat: the session in use, the slash commands, Ctrl-C routing and heartbeat messages."""

    def __init__(self, agent: Agent, session: str, *, interactive: bool) -> None:
        from rich.console import Console

        self.agent = agent
        self.session = session
        self.interactive = interactive
        self.exit_code = 0
        from .approval import chat_console

        self.console: Console = (
            chat_console()  # shared with the approval prompt, which pauses the live view
            if interactive
            else Console(highlight=False, no_color=True, soft_wrap=True, force_terminal=False)
        )
        self.renderer: Any = (
            RichRenderer(self.console, context_window=agent.config.context_window_tokens)
            if interactive
            else PlainRenderer()
        )
        self.renderer.retries = agent.config.max_retries
        self.renderer.in_chat = True
        self._busy: asyncio.Task[Any] | None = None
        self._at_prompt = False
        self._pending: list[str] = []
        self._prompt: Any = None
        self.commands: dict[str, Callable[[str], Awaitable[Any]]] = {
            "/help": self.cmd_help,
            "/exit": self.cmd_exit,
            "/quit": self.cmd_exit,
            "/new": self.cmd_new,
            "/clear": self.cmd_new,
            "/switch": self.cmd_switch,
            "/sessions": self.cmd_sessions,
            "/model": self.cmd_model,
            "/skills": self.cmd_skills,
            "/memory": self.cmd_memory,
            "/compact": self.cmd_compact,
            "/heartbeat": self.cmd_heartbeat,
        }

    # -- the loop --------------------------------------------------------------------------

    async def main(self, note: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGINT, self._on_sigint)
            handled = True
        except (NotImplementedError, RuntimeError):  # no loop signal handlers here (Windows)
            handled = False
        try:
            if self.agent.config.enable_heartbeat:
                self.agent.start_heartbeat(deliver=self._deliver)
            if self.interactive:
                await self._interactive(note)
            else:
                await self._piped()
        finally:
            if handled:
                loop.remove_signal_handler(signal.SIGINT)
            await self.agent.aclose()

    @contextlib.contextmanager
    def sigint_paused(self) -> Iterator[None]:
        """While the approval question is asked, Ctrl-C answers it (KeyboardInterrupt in the input)
        instead of reaching `_on_sigint` and cancelling the turn behind the question."""
        loop = asyncio.get_running_loop()
        if not loop.remove_signal_handler(signal.SIGINT):
            yield
            return
        try:
            yield
        finally:
            loop.add_signal_handler(signal.SIGINT, self._on_sigint)

    def _on_sigint(self) -> None:
        """Ctrl-C: cancel what is running (a turn, /compact). At the prompt, prompt_toolkit reads
        Ctrl-C as a key, so a signal there comes from outside: leave like the default would."""
        if not self.interactive:  # a script's Ctrl-C ends the whole chat, as it always did
            raise KeyboardInterrupt
        if self._busy is not None and not self._busy.done():
            self._busy.cancel()
        elif not self._at_prompt:
            raise KeyboardInterrupt

    async def _cancellable(self, work: Awaitable[T]) -> tuple[bool, T | None]:
        """Run `work` so Ctrl-C cancels it; (False, None) when it was cancelled."""
        task = asyncio.ensure_future(work)
        self._busy = task
        try:
            return True, await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and not (current is not None and current.cancelling()):
                return False, None
            raise
        finally:
            self._busy = None

    async def _interactive(self, note: str) -> None:
        console = self.console
        console.print(
            f"[bold]openclaw-mini[/] · {self.agent.config.model} · workspace {self.agent.workspace} · "
            f"session [cyan]{self.session}[/]"
            + (" · heartbeat on" if self.agent.config.enable_heartbeat else "")
            + "\n[dim]/help for commands, Ctrl-D to leave[/]"
        )
        if note:
            console.print(f"[dim]{note}[/]")
        self._prompt = _make_prompt(self)
        interrupted = False
        while True:
            self._print_pending()
            try:
                self._at_prompt = True
                text = await self._prompt.prompt_async(handle_sigint=False)
                interrupted = False
            except EOFError:
                return
            except KeyboardInterrupt:
                if interrupted:
                    return
                interrupted = True
                console.print("[dim](Ctrl-C again or Ctrl-D to leave)[/]")
                continue
            finally:
                self._at_prompt = False
            if await self._handle(text) is _EXIT:
                return

    async def _piped(self) -> None:
        lines = _stdin_lines()
        while True:
            line = await lines.get()
            if line is None:
                return
            outcome = await self._handle(line.rstrip("\n"))
            if outcome is _EXIT or self.exit_code:
                return

    async def _handle(self, text: str) -> object:
        """One line from the user: a slash command, or a message for the agent."""
        if not text.strip():
            return None
        word = text.split()[0] if text.startswith("/") else ""
        # `/heartbeat` alone is the status; with more words it invokes the bundled heartbeat skill.
        if word in self.commands and not (word == "/heartbeat" and len(text.split()) > 1):
            rest = text[len(word) :].strip()
            try:
                done, outcome = await self._cancellable(self.commands[word](rest))
            except Exception as exc:
                from .common import user_error_message

                self._say_error(f"{user_error_message(exc) or exc}")
                return None
            if not done:
                self.console.print("cancelled")
            return outcome
        if _COMMAND_WORD.match(word) and not self._is_skill_trigger(text):
            known = sorted(self.commands)
            close = difflib.get_close_matches(word, known, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            self._say_error(f"unknown command {word}.{hint} /help lists the commands.")
            return None
        done, result = await self._cancellable(_turn(self.agent, self.session, text, self.renderer))
        if not done:
            self.console.print("[dim]cancelled — the turn was stopped; the session is intact[/]")
        elif not self.interactive and result is not None and result.stop_reason == "error":
            self.exit_code = 2
        return None

    def _is_skill_trigger(self, text: str) -> bool:
        from ..skills import SkillLoader
        from ..skills.prompt import match_skill

        if not self.agent.config.enable_skills:
            return False
        return match_skill(SkillLoader(self.agent.workspace).load(), text) is not None

    def _say_error(self, message: str) -> None:
        if self.interactive:
            from rich.markup import escape

            self.console.print(f"[red]error:[/] {escape(message)}")
        else:
            print(f"error: {message}", file=sys.stderr)

    # -- heartbeat -------------------------------------------------------------------------

    async def _deliver(self, text: str, request: Any) -> None:
        """A heartbeat message: shown above the prompt now, or after the running turn."""
        self._pending.append(text)
        if self._at_prompt and self.interactive:
            from prompt_toolkit.application import run_in_terminal

            await run_in_terminal(self._print_pending)
        elif not self.interactive and self._busy is None:
            self._print_pending()

    def _print_pending(self) -> None:
        pending, self._pending = self._pending, []
        for text in pending:
            if self.interactive:
                from rich.markdown import Markdown

                self.console.print("[bold magenta]heartbeat ›[/]")
                self.console.print(Markdown(text))
            else:
                print(f"[heartbeat] {text}", flush=True)

    # -- commands --------------------------------------------------------------------------

    def out(self, text: str, *, markup: bool = True) -> None:
        self.console.print(text, markup=markup and self.interactive, highlight=False)

    async def cmd_help(self, rest: str) -> None:
        self.out(SLASH_HELP, markup=False)

    async def cmd_exit(self, rest: str) -> object:
        return _EXIT

    async def cmd_new(self, rest: str) -> None:
        self.session = "chat-" + uuid.uuid4().hex[:8]
        self.out(f"new session [cyan]{self.session}[/]")

    def _known_sessions(self) -> list[str]:
        return [info.key for info in self.agent.sessions.list_sync(self.agent.config.agent_id)]

    async def cmd_switch(self, rest: str) -> None:
        if not rest:
            self.out("usage: /switch ID (/sessions lists them)")
            return
        key = str(self.agent.session_key(rest))
        known = self._known_sessions()
        if key not in known:
            short = {k.split(":", 2)[-1]: k for k in known}
            close = difflib.get_close_matches(rest, list(short), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            self._say_error(f"no session {rest} yet.{hint} /sessions lists them; /new starts a fresh one.")
            return
        self.session = key
        self.out(f"switched to [cyan]{key}[/]")

    async def cmd_sessions(self, rest: str) -> None:
        from .sessions import preview

        infos = self.agent.sessions.list_sync(self.agent.config.agent_id)
        if not infos:
            self.out("no sessions yet")
        current = str(self.agent.session_key(self.session))
        for info in infos[:30]:
            marker = "›" if info.key == current else " "
            text = preview(info.path)
            self.out(f"{marker} {info.key}  [dim]{info.last_activity:%Y-%m-%d %H:%M}[/]  {_escape(text)}")

    async def cmd_model(self, rest: str) -> None:
        if not rest:
            self.out(f"model: {self.agent.config.model} (/model ID changes it for the next turns)")
            return
        self.agent.config.model = rest.strip()
        self.out(f"model set to {self.agent.config.model}")

    async def cmd_skills(self, rest: str) -> None:
        from ..skills import SkillLoader

        snapshot = SkillLoader(self.agent.workspace).load()
        for skill in snapshot.skills:
            status = "ready" if skill.eligible else str(skill.ineligible_reason)
            if self.interactive:
                status = "[green]ready[/]" if skill.eligible else f"[red]{_escape(status)}[/]"
            triggers = ", ".join(skill.triggers) or f"/{skill.name}"
            self.out(f"{skill.name} ({skill.source}) {triggers} — {status}")
        for warning in snapshot.warnings:
            self.out(f"warning: {_escape(str(warning))}")

    async def cmd_memory(self, rest: str) -> None:
        from ..memory import MemoryStore

        if not rest:
            self.out("usage: /memory QUERY")
            return
        store = MemoryStore(self.agent.workspace, timezone=self.agent.config.timezone)
        try:
            hits = await asyncio.to_thread(store.search, rest)
        finally:
            store.close()
        if not hits:
            self.out("no matches")
        for hit in hits:
            self.out(
                f"{hit.path}:{hit.start_line}-{hit.end_line} ({hit.score:.2f})\n{hit.snippet}", markup=False
            )

    async def cmd_compact(self, rest: str) -> None:
        data = await self.agent.compact(self.session)
        if data is None:
            self.out("nothing to compact yet")
        else:
            self.out(f"compacted: {data['tokens_before']} → {data['tokens_after']} tokens")

    async def cmd_heartbeat(self, rest: str) -> None:
        from .heartbeat import render_status

        if not self.agent.config.enable_heartbeat:
            self.out("the heartbeat is off in this chat (chat --heartbeat 30m runs it while you chat)")
        render_status(self.console, self.agent.heartbeat_status())


def _stdin_lines() -> asyncio.Queue[str | None]:
    """Lines of stdin from a daemon thread (None at the end), so a blocked read never holds up exit."""
    import threading

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def pump() -> None:
        try:
            for line in sys.stdin:
                loop.call_soon_threadsafe(queue.put_nowait, line)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=pump, name="stdin-lines", daemon=True).start()
    return queue


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


# ------------------------------------------------------------------------------ prompt_toolkit


def _make_prompt(chat: _Chat) -> Any:
    """The input line: history in a file, Tab completion, paste-safe Enter."""
    # No cursor-position request at start: a terminal that never answers it (a pipe-driven pty,
    # some multiplexers) made prompt_toolkit wait, and keys typed meanwhile could be lost.
    os.environ.setdefault("PROMPT_TOOLKIT_NO_CPR", "1")
    from prompt_toolkit import PromptSession
    from prompt_toolkit.formatted_text import FormattedText
    from prompt_toolkit.history import FileHistory, InMemoryHistory
    from prompt_toolkit.key_binding import KeyBindings

    bindings = KeyBindings()

    @bindings.add("enter")
    @bindings.add("c-j")
    def _enter(event: Any) -> None:
        buffer = event.current_buffer
        document = buffer.document
        if event.app.key_processor.input_queue:  # more keys in the same read: a paste without brackets
            buffer.insert_text("\n")
        elif document.is_cursor_at_the_end and document.text.endswith("\\"):
            buffer.delete_before_cursor(1)
            buffer.insert_text("\n")
        else:
            buffer.validate_and_handle()

    @bindings.add("escape", "enter")
    def _newline(event: Any) -> None:
        event.current_buffer.insert_text("\n")

    try:
        HISTORY_FILE.parent.mkdir(parents=True, exist_ok=True)
        history: Any = FileHistory(str(HISTORY_FILE))
    except OSError:
        history = InMemoryHistory()
    return PromptSession(
        message=FormattedText([("bold ansicyan", "you ›"), ("", " ")]),
        prompt_continuation=lambda width, line, wrap: FormattedText([("ansibrightblack", "   … ")]),
        history=history,
        completer=_completer(chat),
        complete_while_typing=False,
        key_bindings=bindings,
        multiline=False,
        enable_suspend=True,
    )


def _completer(chat: _Chat) -> Any:
    from prompt_toolkit.completion import Completer, Completion

    class ChatCompleter(Completer):
        """Slash commands (and skill triggers) at the start of the line; workspace paths elsewhere."""

        def get_completions(self, document: Any, complete_event: Any) -> Any:
            before = document.text_before_cursor
            if before.startswith("/") and " " not in before:
                names = set(chat.commands)
                with contextlib.suppress(Exception):
                    from ..skills import SkillLoader

                    for skill in SkillLoader(chat.agent.workspace).load().skills:
                        names.update(t for t in skill.triggers if t.startswith("/"))
                        names.add(f"/{skill.name}")
                for name in sorted(names):
                    if name.startswith(before):
                        yield Completion(name, start_position=-len(before))
                return
            word = before.split()[-1] if before and not before[-1].isspace() else ""
            yield from _path_completions(chat.agent.workspace, word)

    return ChatCompleter()


def _path_completions(workspace: Path, word: str) -> Any:
    from prompt_toolkit.completion import Completion

    head, _, stem = word.rpartition("/")
    folder = (workspace / head) if head else workspace
    try:
        folder.resolve().relative_to(workspace.resolve())
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except (OSError, ValueError):
        return
    for entry in entries:
        if entry.name.startswith(stem) and (stem.startswith(".") or not entry.name.startswith(".")):
            suffix = "/" if entry.is_dir() else ""
            text = f"{head}/{entry.name}{suffix}" if head else entry.name + suffix
            yield Completion(text, start_position=-len(word), display=entry.name + suffix)
