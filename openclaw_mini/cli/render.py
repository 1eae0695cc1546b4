"""Rendering of run events for the terminal (rich) and for pipes (plain text)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

from .common import error_hint

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions
    from rich.live import Live

    from ..events import RunEvent, RunResult, ToolCallRecord
    from ..llm import Usage

__all__ = ["PlainRenderer", "RichRenderer", "TailView", "short_args"]


def short_args(arguments: dict[str, Any], limit: int = 80) -> str:
    """A one-line view of tool arguments."""
    parts = []
    for key, value in arguments.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        text = text.replace("\n", "⏎")
        if len(text) > 40:
            text = text[:37] + "..."
        parts.append(f"{key}={text}")
    line = ", ".join(parts)
    return line if len(line) <= limit else line[: limit - 3] + "..."


class PlainRenderer:
    """For pipes and scripts: the reply's text on stdout, tool activity on stderr.

    Text from separate model calls of one run (before and after a tool call) goes on separate
    lines, and every reply ends with a newline, so replies never run into each other."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.retries = 0
        """The model's retry count, named in the error hint."""
        self.in_chat = False
        self._wrote_text = False
        self._line_open = False
        self._break = False

    def start(self) -> None:
        self._wrote_text = False
        self._line_open = False
        self._break = False

    def _write(self, text: str) -> None:
        if not text:
            return
        if self._break and self._wrote_text:
            self.out.write("\n" if self._line_open else "")
            self._line_open = False
        self._break = False
        self.out.write(text)
        self.out.flush()
        self._wrote_text = True
        self._line_open = not text.endswith("\n")

    def handle(self, event: RunEvent) -> None:
        if event.type == "text_delta":
            self._write(event.text)
        elif event.type == "turn_end":
            self._break = True
        elif event.type == "tool_end" and event.tool is not None:
            self._break = True
            status = "error" if event.tool.is_error else "ok"
            self.err.write(
                f"[tool {event.tool.name}({short_args(event.tool.input)}) {status} "
                f"{event.tool.duration_ms:.0f} ms]\n"
            )
        elif event.type == "subagent" and event.tool is not None and event.data.get("event") == "tool_end":
            self.err.write(
                f"[  sub-agent {event.data.get('label')}: {event.tool.name}"
                f"({short_args(event.tool.input)})]\n"
            )
        elif event.type == "warning":
            self.err.write(f"warning: {event.text}\n")
        elif event.type == "error":
            hint = error_hint(event.data.get("exception"), retries=self.retries, in_chat=self.in_chat)
            self.err.write(f"error: {event.text}{hint}\n")
        elif event.type == "compaction":
            self.err.write(
                f"[compacted: {event.data.get('tokens_before')} -> {event.data.get('tokens_after')} tokens]\n"
            )

    def finish(self, result: RunResult | None) -> None:
        if self._line_open:
            self.out.write("\n")
            self._line_open = False
        self.out.flush()


class RichRenderer:
    """Streams the reply as markdown, shows each tool call as a compact panel, and a footer."""

    def __init__(self, console: Console, *, context_window: int) -> None:
        self.console = console
        self.context_window = context_window
        self.retries = 0
        self.in_chat = True
        self._live: Live | None = None
        self._text = ""
        self._last_request: Usage | None = None

    def start(self) -> None:
        from rich.live import Live
        from rich.spinner import Spinner

        self._text = ""
        self._last_request = None
        self._live = Live(
            Spinner("dots", text="thinking…", style="cyan"),
            console=self.console,
            refresh_per_second=12,
            transient=True,
        )
        self._live.start()

    def _flush_text(self) -> None:
        """Print the streamed text for good (leaving the live area) before a panel or the end."""
        from rich.markdown import Markdown

        if self._live is not None:
            self._live.stop()
            self._live = None
        if self._text.strip():
            self.console.print(Markdown(self._text))
        self._text = ""

    def _pause_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
            self._paused = True

    def _resume_live(self) -> None:
        from rich.spinner import Spinner

        if getattr(self, "_paused", False):
            self._paused = False
            self._ensure_live()
            assert self._live is not None
            self._live.update(Spinner("dots", text="sub-agent working…", style="yellow"))

    def _ensure_live(self) -> None:
        from rich.live import Live

        if self._live is None:
            self._live = Live(console=self.console, refresh_per_second=12, transient=True)
            self._live.start()

    def handle(self, event: RunEvent) -> None:
        from rich.markdown import Markdown
        from rich.spinner import Spinner

        if event.type == "text_delta":
            self._ensure_live()
            self._text += event.text
            assert self._live is not None
            # Only the tail fits on screen while streaming; the whole reply is printed when it ends.
            self._live.update(TailView(Markdown(self._text)))
        elif event.type == "turn_end" and event.usage is not None:
            self._last_request = event.usage
        elif event.type == "tool_start" and event.tool is not None:
            self._flush_text()
            self._ensure_live()
            assert self._live is not None
            self._live.update(
                Spinner("dots", text=f"{event.tool.name}({short_args(event.tool.input)})", style="yellow")
            )
        elif event.type == "tool_end" and event.tool is not None:
            if self._live is not None:
                self._live.stop()
                self._live = None
            self.console.print(tool_panel(event.tool))
        elif event.type == "subagent" and event.tool is not None:
            if event.data.get("event") == "tool_end":
                mark = "[red]✗[/]" if event.tool.is_error else "[green]✓[/]"
                self._pause_live()
                self.console.print(
                    f"  [dim]↳ {event.data.get('label')}:[/] {mark} {event.tool.name} "
                    f"[dim]{short_args(event.tool.input, 60)} · {event.tool.duration_ms:.0f} ms[/]",
                    highlight=False,
                )
                self._resume_live()
        elif event.type == "warning":
            self._flush_text()
            self.console.print(f"[yellow]warning:[/] {event.text}", highlight=False)
        elif event.type == "error":
            from rich.markup import escape

            self._flush_text()
            hint = error_hint(event.data.get("exception"), retries=self.retries, in_chat=self.in_chat)
            self.console.print(f"[bold red]error:[/] {escape(event.text + hint)}", highlight=False)
        elif event.type == "compaction":
            self._flush_text()
            self.console.print(
                f"[dim]history compacted: {event.data.get('tokens_before')} → "
                f"{event.data.get('tokens_after')} tokens[/]"
            )

    def finish(self, result: RunResult | None) -> None:
        self._flush_text()
        if result is None:
            return
        usage = result.usage
        fill = ""
        # The context window holds one request, not the sum of a turn's calls: show the last one.
        last = self._last_request
        if last is not None and last.context_tokens:
            fill = f" · context {100 * last.context_tokens / self.context_window:.0f}%"
        stop = "" if result.stop_reason in ("end_turn", "aborted") else f" · stopped: {result.stop_reason}"
        if result.stop_reason == "aborted":
            stop = " · cancelled"
        self.console.print(
            f"[dim]{usage.context_tokens:,} in · {usage.output_tokens:,} out{fill}{stop}[/]",
            highlight=False,
        )


class TailView:
    """A renderable showing only the last lines of another that fit the terminal, so a streamed
    reply taller than the screen keeps its newest lines in view (rich's Live would show the top)."""

    def __init__(self, renderable: Any, *, reserve: int = 2) -> None:
        self.renderable = renderable
        self.reserve = reserve

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Any:
        from rich.segment import Segment

        lines = console.render_lines(self.renderable, options.update(height=None), pad=False)
        height = max(1, console.size.height - self.reserve)
        for line in lines[-height:]:
            yield from line
            yield Segment.line()


def tool_panel(call: ToolCallRecord, max_lines: int = 4) -> Any:
    """A compact panel: tool name and short arguments, the first result lines, the duration."""
    from rich.panel import Panel
    from rich.text import Text

    lines = [line.expandtabs(4) for line in call.output.rstrip().splitlines()]
    while lines and not lines[0].strip():
        lines.pop(0)
    body = Text(
        "\n".join(line[:200] for line in lines[:max_lines]) or "(no output)",
        style="red" if call.is_error else "dim",
        no_wrap=True,
        overflow="ellipsis",
    )
    if len(lines) > max_lines:
        body.append(f"\n… {len(lines) - max_lines} more lines", style="dim italic")
    title = Text.assemble(
        (call.name, "bold red" if call.is_error else "bold yellow"), (f" {short_args(call.input)}", "default")
    )
    return Panel(
        body,
        title=title,
        title_align="left",
        subtitle=f"{call.duration_ms:.0f} ms",
        subtitle_align="right",
        border_style="red" if call.is_error else "grey50",
        expand=False,
    )
