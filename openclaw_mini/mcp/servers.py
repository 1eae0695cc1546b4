"""Running MCP servers: `McpServer` (one connection) and `McpManager` (the agent's set of them).

Each connection lives in its own owner task: the SDK's transports are anyio task groups, which
must be entered and left by the same task, while tool calls come from the agent's run tasks. The
owner task opens the client, lists the tools, then waits for `stop`; whoever starts a server (the
manager, owned by the `Agent`) closes it in `aclose`.

Servers start lazily, on the first run that needs the tool list. A call that finds the server
gone (crashed process, closed connection) is an error result and the server is restarted on the
next call; a call past `timeout_seconds` is a `ToolTimeout` error result.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from ..errors import ToolError, ToolTimeout
from ..tools.base import Tool
from .config import McpServerConfig, tool_prefix

if TYPE_CHECKING:
    from mcp import Client

__all__ = ["McpManager", "McpServer", "McpServerError", "result_to_output"]

log = logging.getLogger(__name__)

State = Literal["stopped", "starting", "running", "failed", "crashed", "disabled"]
_TOOL_NAME = re.compile(r"[^A-Za-z0-9_-]")
MAX_TOOL_NAME = 64
"""The Messages API's limit on a tool name."""
_LIST_PAGES = 100
RETRY_FAILED_SECONDS = 60.0
"""A server that failed to start is not retried by every run (a hanging one would stall each
run for its whole startup timeout); a call of one of its tools still retries at once."""


class McpServerError(ToolError):
    """An MCP server could not start, or went away during a call."""


class McpServer:
    """One MCP server connection, started on demand and restarted after a crash."""

    def __init__(self, name: str, config: McpServerConfig, workspace: Path, log_dir: Path | None = None):
        self.name = name
        self.config = config
        self.workspace = workspace
        self.log_dir = log_dir
        self.state: State = "stopped" if config.enabled else "disabled"
        self.error: str | None = None
        self.listing: list[Any] = []
        """The server's tools (`mcp_types.Tool`) as last listed; kept across a crash."""
        self.starts = 0
        self.started_at: float | None = None
        """When the last start began (monotonic): a failed server is retried at most every
        `RETRY_FAILED_SECONDS` by runs (a call to one of its tools retries at once)."""
        self._client: Client | None = None
        self._owner: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._lock = asyncio.Lock()

    @property
    def log_path(self) -> Path | None:
        """Where a stdio server's stderr goes (it would garble the terminal otherwise)."""
        return self.log_dir / f"{self.name}.log" if self.log_dir is not None else None

    async def start(self) -> None:
        """Start the server and list its tools; a no-op while it runs. Raises `McpServerError`."""
        async with self._lock:
            if self._client is not None and self._owner is not None and not self._owner.done():
                return
            await self._shutdown()
            self.state = "starting"
            self.starts += 1
            self.started_at = time.monotonic()
            loop = asyncio.get_running_loop()
            ready: asyncio.Future[None] = loop.create_future()
            self._stop = asyncio.Event()
            self._owner = asyncio.create_task(self._own(ready, self._stop), name=f"mcp:{self.name}")
            try:
                await asyncio.wait_for(asyncio.shield(ready), self.config.startup_timeout_seconds)
            except TimeoutError:
                await self._shutdown()
                self.state, self.error = (
                    "failed",
                    (f"did not start and list its tools within {self.config.startup_timeout_seconds:g} s"),
                )
                raise McpServerError(self._failure_text()) from None
            except Exception as exc:
                await self._shutdown()
                self.state, self.error = "failed", _describe(exc)
                raise McpServerError(self._failure_text()) from None
            self.state, self.error = "running", None

    def _failure_text(self) -> str:
        where = f" (its output is in {self.log_path})" if self.log_path and self.config.command else ""
        return f"MCP server '{self.name}' ({self.config.describe()}) {self.error}{where}"

    async def _own(self, ready: asyncio.Future[None], stop: asyncio.Event) -> None:
        errlog: TextIO | None = None
        try:
            from mcp import Client

            target: Any
            if self.config.command:
                from mcp import StdioServerParameters

                errlog = await asyncio.to_thread(self._open_errlog)
                target = StdioServerParameters(
                    command=self.config.command,
                    args=list(self.config.args),
                    env=dict(self.config.env),
                    cwd=self.config.cwd or str(self.workspace),
                )
                if errlog is not None:
                    from mcp.client.stdio import stdio_client

                    target = stdio_client(target, errlog=errlog)
            async with contextlib.AsyncExitStack() as stack:
                if not self.config.command:
                    target = await self._http_transport(stack)
                client = await stack.enter_async_context(Client(target, mode="legacy", cache=None))
                self.listing = await _list_tools(client)
                self._client = client
                if not ready.done():
                    ready.set_result(None)
                await stop.wait()
        except asyncio.CancelledError:
            if not ready.done():
                ready.cancel()
            raise
        except BaseException as exc:
            error = exc.exceptions[0] if isinstance(exc, BaseExceptionGroup) and exc.exceptions else exc
            if not ready.done():
                ready.set_exception(error if isinstance(error, Exception) else RuntimeError(str(error)))
            elif not stop.is_set():
                self.state, self.error = "crashed", _describe(error)
                log.warning("MCP server %s stopped: %s", self.name, self.error)
        finally:
            self._client = None
            if errlog is not None:
                errlog.close()

    def _open_errlog(self) -> TextIO | None:
        if self.log_path is None:  # no log folder: the output is dropped, never shown in the terminal
            return open(os.devnull, "w", encoding="utf-8")
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            return open(self.log_path, "a", encoding="utf-8")
        except OSError:
            return None

    async def _http_transport(self, stack: contextlib.AsyncExitStack) -> Any:
        """The streamable-HTTP transport; with headers, over an HTTP client this task owns and closes."""
        from mcp.client.streamable_http import streamable_http_client

        if not self.config.headers:
            return streamable_http_client(self.config.url or "")
        from mcp.shared._httpx_utils import create_mcp_http_client

        http = await stack.enter_async_context(create_mcp_http_client(headers=dict(self.config.headers)))
        return streamable_http_client(self.config.url or "", http_client=http)

    async def call(self, tool: str, arguments: dict[str, Any]) -> str | list[dict[str, Any]]:
        """Call one tool; its result as tool-result content. Errors become `ToolError`s."""
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED

        await self.start()
        client = self._client
        if client is None:  # stopped between start() and here
            raise McpServerError(
                f"MCP server '{self.name}' stopped before the call; it restarts on the next call."
            )
        try:
            result = await asyncio.wait_for(
                client.call_tool(tool, arguments or {}), timeout=self.config.timeout_seconds
            )
        except TimeoutError:
            raise ToolTimeout(
                f"The MCP tool '{tool}' on server '{self.name}' did not answer within "
                f"{self.config.timeout_seconds:g} s (timeout_seconds under [mcp_servers.{self.name}])."
            ) from None
        except MCPError as exc:
            if exc.code != CONNECTION_CLOSED:
                raise ToolError(
                    f"MCP server '{self.name}' refused the call of '{tool}': {exc.error.message}"
                ) from None
            await self._crashed(exc)
        except (asyncio.CancelledError, ToolError):
            raise
        except Exception as exc:
            await self._crashed(exc)
        return result_to_output(result)

    async def _crashed(self, exc: BaseException) -> None:
        self.state, self.error = "crashed", _describe(exc)
        async with self._lock:
            await self._shutdown()
        raise McpServerError(
            f"MCP server '{self.name}' stopped during the call ({self.error}); "
            "it will be restarted on the next call."
        ) from None

    async def _shutdown(self) -> None:
        owner, self._owner = self._owner, None
        if self._stop is not None:
            self._stop.set()
        if owner is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(owner), 5.0)
        except (TimeoutError, Exception):
            owner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await owner
        self._client = None

    async def aclose(self) -> None:
        async with self._lock:
            await self._shutdown()
        if self.state in ("running", "starting"):
            self.state = "stopped"

    def tools(self) -> list[Tool]:
        """The listed tools as agent `Tool`s named `mcp__<server>__<tool>` (group `mcp`)."""
        made: list[Tool] = []
        for item in self.listing:
            name = _tool_name(self.name, item.name)
            description = item.description or item.title or item.name
            schema = dict(item.input_schema or {"type": "object", "properties": {}})
            schema.setdefault("type", "object")
            made.append(
                Tool(
                    name=name,
                    description=f"{description}\n(MCP server '{self.name}', tool '{item.name}')",
                    input_schema=schema,
                    function=_caller(self, item.name),
                    group="mcp",
                )
            )
        return made


def _caller(server: McpServer, tool: str) -> Callable[..., Any]:
    async def call(**arguments: Any) -> str | list[dict[str, Any]]:
        return await server.call(tool, arguments)

    return call


def _tool_name(server: str, tool: str) -> str:
    return (tool_prefix(server) + _TOOL_NAME.sub("_", tool))[:MAX_TOOL_NAME]


async def _list_tools(client: Client) -> list[Any]:
    tools: list[Any] = []
    cursor: str | None = None
    for _ in range(_LIST_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip()
    if isinstance(exc, FileNotFoundError):
        return f"could not be started: command not found ({exc.filename or text})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def result_to_output(result: Any) -> str | list[dict[str, Any]]:
    """A `CallToolResult` as tool-result content: text, images as image blocks, resources as text,
    structured content as JSON when the server sent no text. `isError` raises `ToolError`."""
    blocks: list[dict[str, Any]] = []
    for item in result.content or []:
        kind = getattr(item, "type", "")
        if kind == "text":
            blocks.append({"type": "text", "text": item.text})
        elif kind == "image" and item.mime_type in ("image/png", "image/jpeg", "image/gif", "image/webp"):
            base64.b64decode(item.data, validate=True)  # a broken image must not reach the API
            source = {"type": "base64", "media_type": item.mime_type, "data": item.data}
            blocks.append({"type": "image", "source": source})
        elif kind == "resource":
            resource = item.resource
            text = getattr(resource, "text", None)
            body = text if text is not None else f"[binary resource, {getattr(resource, 'mime_type', None)}]"
            blocks.append({"type": "text", "text": f"[resource {resource.uri}]\n{body}"})
        elif kind == "resource_link":
            blocks.append({"type": "text", "text": f"[resource link {item.uri}] {item.name}"})
        else:
            blocks.append({"type": "text", "text": f"[{kind or 'unknown'} content omitted]"})
    structured = result.structured_content
    if structured is not None and not any(block["type"] == "text" for block in blocks):
        blocks.append({"type": "text", "text": json.dumps(structured, ensure_ascii=False, indent=2)})
    if result.is_error:
        text = "\n".join(block.get("text", "") for block in blocks if block["type"] == "text").strip()
        raise ToolError(text or "The MCP tool reported an error without a message.")
    if all(block["type"] == "text" for block in blocks):
        return "\n".join(block["text"] for block in blocks)
    return blocks


class McpManager:
    """The MCP servers of one agent. Started lazily by `tools()`, closed by `aclose()`."""

    def __init__(
        self, servers: Mapping[str, McpServerConfig], workspace: Path, log_dir: Path | None = None
    ) -> None:
        self.servers = {name: McpServer(name, config, workspace, log_dir) for name, config in servers.items()}

    async def start(self) -> list[str]:
        """Start every enabled server that is not running (concurrently); the failures' messages."""
        now = time.monotonic()
        pending = [
            server
            for server in self.servers.values()
            if server.state == "stopped"
            or (
                server.state == "failed"
                and (server.started_at is None or now - server.started_at >= RETRY_FAILED_SECONDS)
            )
        ]
        outcomes = await asyncio.gather(*(server.start() for server in pending), return_exceptions=True)
        problems = []
        for outcome in outcomes:
            if isinstance(outcome, asyncio.CancelledError):
                raise outcome
            if isinstance(outcome, BaseException):
                problems.append(str(outcome))
        return problems

    async def tools(self) -> tuple[list[Tool], list[str]]:
        """Every server's tools (a crashed server keeps its last listing: a call restarts it), and
        the warnings of servers that could not start."""
        problems = await self.start()
        found: list[Tool] = []
        for server in self.servers.values():
            if server.state != "disabled":
                found.extend(server.tools())
        return found, problems

    async def aclose(self) -> None:
        await asyncio.gather(*(server.aclose() for server in self.servers.values()), return_exceptions=True)
