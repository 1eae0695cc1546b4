"""The terminal side of tool approval: show a call, ask y / n / always (for this session).

The agent asks through its `approve=` callback (see `openclaw_mini.tools.policy`); this module is
that callback for `chat` in a terminal. It shows a unified diff for `write` and `edit`, the command
line for `exec`, and the arguments for anything else. Ctrl-C or Ctrl-D at the question means no.
"""

from __future__ import annotations

import difflib
import json
import signal
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..tools.policy import ApprovalRequest

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["MAX_DIFF_LINES", "TerminalApprover", "chat_console", "preview_call"]

MAX_DIFF_LINES = 60
_MAX_PREVIEW_BYTES = 1 << 20
_console: Console | None = None


def chat_console() -> Console:
    """The one rich `Console` of a chat, shared with the approver so it can pause the live view."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(highlight=False)
    return _console


def preview_call(request: ApprovalRequest) -> str:
    """What the call would do, as plain text: a diff for write/edit, the command for exec."""
    args = request.arguments
    if request.tool in ("write", "edit") and isinstance(args.get("path"), str):
        return _file_diff(request.workspace, args)
    if request.tool == "exec" and isinstance(args.get("command"), str):
        extras = [f"{key}={value}" for key, value in args.items() if key != "command"]
        suffix = f"\n({', '.join(extras)})" if extras else ""
        return f"$ {args['command']}{suffix}"
    return json.dumps(args, ensure_ascii=False, indent=2)


def _file_diff(workspace: Path, args: dict[str, Any]) -> str:
    relative = str(args["path"])
    target = (workspace / relative).resolve()  # an absolute path stays absolute under `/`
    if workspace not in (target, *target.parents):
        return f"{relative}: outside the workspace (the sandbox will refuse it)"
    old = ""
    if target.is_file():
        if target.stat().st_size > _MAX_PREVIEW_BYTES:
            return f"{relative}: a large file ({target.stat().st_size:,} bytes); no diff shown"
        old = target.read_text(encoding="utf-8", errors="replace")
    if "content" in args:
        new = str(args.get("content", ""))
    else:
        old_text, new_text = str(args.get("old_text", "")), str(args.get("new_text", ""))
        if not old_text or old.count(old_text) != 1:
            return (
                f"{relative}: old_text does not occur exactly once (the edit will fail)\n- {old_text[:200]}"
            )
        new = old.replace(old_text, new_text, 1)
    label = relative if target.exists() else f"{relative} (new file)"
    lines = list(
        difflib.unified_diff(
            old.splitlines(), new.splitlines(), fromfile=label, tofile=label, lineterm="", n=2
        )
    )
    if not lines:
        return f"{relative}: no change"
    if len(lines) > MAX_DIFF_LINES:
        lines = [*lines[:MAX_DIFF_LINES], f"... {len(lines) - MAX_DIFF_LINES} more diff lines"]
    return "\n".join(lines)


class TerminalApprover:
    """`approve=` for an interactive chat: y runs the call, n refuses it, a runs it and every later
    call of the same tool in this session without asking."""

    def __init__(self, console: Console | None = None) -> None:
        self._console = console
        self.always: set[tuple[str, str]] = set()
        """(session key, tool) pairs approved for the rest of the session."""
        self.sigint_guard: Callable[[], AbstractContextManager[None]] | None = None
        """Set by a chat that handles SIGINT on its event loop: lets Ctrl-C answer the question."""

    @property
    def console(self) -> Console:
        return self._console or chat_console()

    async def __call__(self, request: ApprovalRequest) -> bool:
        if (request.session_key, request.tool) in self.always:
            return True
        lives = self._pause_live()
        try:
            answer = self._ask(request)
        finally:
            for live in lives:
                live.start()
        if answer == "always":
            self.always.add((request.session_key, request.tool))
        return answer in ("yes", "always")

    def _pause_live(self) -> list[Any]:
        # The chat's streaming view would redraw over the question: stop it while asking.
        lives = list(getattr(self.console, "_live_stack", []))
        for live in reversed(lives):
            live.stop()
        return lives

    def _ask(self, request: ApprovalRequest) -> str:
        from rich.markup import escape
        from rich.syntax import Syntax

        console = self.console
        console.print(f"[bold yellow]approve[/] [bold]{escape(request.tool)}[/]?")
        preview = preview_call(request)
        if request.tool in ("write", "edit"):
            console.print(Syntax(preview, "diff", theme="ansi_dark", word_wrap=True))
        else:
            console.print(
                preview, markup=False, highlight=False, style="bold" if request.tool == "exec" else ""
            )
        # Ctrl-C must answer this question, not cancel the turn behind it half-way.
        if self.sigint_guard is not None:
            with self.sigint_guard():
                return self._read_answer(console)
        try:
            previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        except ValueError:  # not the main thread: leave Ctrl-C as it is
            previous = None
        try:
            return self._read_answer(console)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    @staticmethod
    def _read_answer(console: Console) -> str:
        while True:
            try:
                reply = console.input("[bold]y[/]es / [bold]n[/]o / [bold]a[/]lways this session › ")
            except (KeyboardInterrupt, EOFError):
                console.print("[dim]refused[/]")
                return "no"
            choice = reply.strip().lower()
            if choice in ("y", "yes"):
                return "yes"
            if choice in ("n", "no", ""):
                return "no"
            if choice in ("a", "always"):
                return "always"
            console.print("answer y, n or a")
