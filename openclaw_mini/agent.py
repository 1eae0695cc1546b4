"""`Agent`: wires sessions, context, skills, memory, tools and the model into runs.

Data flows one way: `run()` -> the session's lane -> load transcript -> skill match -> context
(bootstrap + prompt + pruning + compaction, `context.manager`) -> the tool loop -> appended
entries. Subsystems never call back up into the agent: tools get typed services
(`ToolContext.memory`, `.subagents`, `.heartbeat`, `.exec_manager`, `.state`), and whoever creates
a service closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import (
    AgentConfig,
    BootstrapConfig,
    CompactionConfig,
    ConfigError,
    PruningConfig,
    build_config,
)
from .context.manager import ActiveSession, ContextManager
from .errors import MissingAPIKeyError
from .events import RunEvent, RunResult
from .llm import AnthropicModel, Model, ModelError
from .loop import LoopHooks, run_tool_loop
from .services import AgentServices
from .session import LiveSession, SessionCache, SessionKey, SessionLanes, SessionStore
from .subagents import Subagents
from .tools import builtin_tools
from .tools.base import Tool, ToolContext, ToolRegistry
from .tools.policy import ApprovalCallback, ApprovalMode, Sandbox, SandboxConfig, ToolPolicy
from .transcript import TURN_FAILED, CustomEntry, MessageEntry

if TYPE_CHECKING:
    from .heartbeat import HeartbeatConfig, HeartbeatOutcome, HeartbeatStatus
    from .mcp import McpServerConfig

__all__ = ["Agent", "MissingAPIKeyError"]

log = logging.getLogger(__name__)

_DONE = object()


class Agent:
    """An agent over one workspace. Runs on different sessions proceed concurrently; runs on one
    session queue in its lane.

    ```python
    async with Agent(workspace_dir=".") as agent:
        result = await agent.run("session-1", "List the files here")
        print(result.text)
    ```
    """

    def __init__(
        self,
        workspace_dir: str | Path = ".",
        *,
        agent_id: str | None = None,
        model: str | Model | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        max_turns: int | None = None,
        max_tokens: int | None = None,
        max_retries: int | None = None,
        timeout_seconds: float | None = None,
        thinking_budget_tokens: int | None = None,
        context_window_tokens: int | None = None,
        tools: Sequence[Tool] = (),
        tool_policy: ToolPolicy | None = None,
        sandbox: SandboxConfig | None = None,
        enable_memory: bool | None = None,
        enable_context: bool | None = None,
        enable_skills: bool | None = None,
        enable_heartbeat: bool | None = None,
        enable_state: bool | None = None,
        bootstrap: BootstrapConfig | None = None,
        pruning: PruningConfig | None = None,
        compaction: CompactionConfig | None = None,
        heartbeat: HeartbeatConfig | dict[str, Any] | str | bool | None = None,
        timezone: str | None = None,
        max_spawn_depth: int | None = None,
        tool_timeout_seconds: float | None = None,
        system_prompt: str | None = None,
        config: AgentConfig | None = None,
        approval: Mapping[str, ApprovalMode] | None = None,
        approve: ApprovalCallback | None = None,
        mcp_servers: Mapping[str, McpServerConfig | dict[str, Any]] | None = None,
    ) -> None:
        # None keeps `config`'s model (else the default, `DEFAULT_MODEL`); a `Model` names itself.
        model_name = (
            model if model is None or isinstance(model, str) else getattr(model, "model_name", "custom")
        )
        # Every keyword named like an `AgentConfig` field is a setting (None: the default).
        values: dict[str, Any] = {k: v for k, v in locals().items() if k in AgentConfig.model_fields}
        values["model"] = model_name
        if config is not None:
            merged = config.model_dump()
            merged["api_key"] = config.api_key
            merged.update({k: v for k, v in values.items() if v is not None and k != "workspace_dir"})
            if workspace_dir != ".":
                merged["workspace_dir"] = workspace_dir
            values = merged
        self.config: AgentConfig = build_config(**values)
        self._setup(
            model=None if model is None or isinstance(model, str) else model,
            owns_model=True,
            services=None,
            extra_tools=tools,
            depth=0,
            heartbeat=heartbeat,
            system_prompt=system_prompt,
            extras={},
            approve=approve,
        )

    def _setup(
        self,
        *,
        model: Model | None,
        owns_model: bool,
        services: AgentServices | None,
        extra_tools: Sequence[Tool],
        depth: int,
        heartbeat: Any,
        system_prompt: str | None,
        extras: dict[str, Any],
        approve: ApprovalCallback | None,
    ) -> None:
        """Every attribute an agent has, set in one place for the constructor and `spawn_child`."""
        config = self.config
        self._system_prompt_extra = system_prompt
        self._model = model
        self._owns_model = owns_model
        self._owns_services = services is None
        self._services = services if services is not None else AgentServices.create(config)
        self._depth = depth
        self.workspace: Path = config.workspace_dir
        self.sessions = SessionStore(config.state_dir, workspace=self.workspace)
        self.extras: dict[str, Any] = extras
        """Your own handles for your custom tools, passed as `ToolContext.extras`."""
        self._lanes = SessionLanes(
            self.sessions.lock_path_for, lock_timeout=config.session_lock_timeout_seconds
        )
        self._states: SessionCache[ActiveSession] = SessionCache(
            max_sessions=config.session_cache_sessions,
            max_bytes=config.session_cache_bytes,
            weigh=lambda cached: cached.session.held_bytes,
            pinned=self._lanes.busy,
        )
        self._running: dict[str, asyncio.Task[RunResult]] = {}
        self._closed = False
        from .heartbeat.host import AgentHeartbeat  # the heartbeat package loads only when used

        self._heartbeat = AgentHeartbeat(
            workspace=self.workspace,
            setting=heartbeat,
            timezone=config.timezone,
            run=self.run,
            busy=lambda session: self._lanes.busy(str(self.session_key(session))),
            handle=self._services.heartbeat,
        )
        self._registry = ToolRegistry(builtin_tools(config, can_spawn=depth < config.max_spawn_depth))
        for item in extra_tools:
            self._registry.add(item)
        self._skill_loader = None
        if config.enable_skills:
            from .skills import SkillLoader

            self._skill_loader = SkillLoader(self.workspace)
        # Bundled and user skill folders stay readable with the sandbox on: the prompt points there.
        read_roots = self._skill_loader.read_roots if self._skill_loader is not None else ()
        self._sandbox = Sandbox(
            self.workspace, config.sandbox, read_roots=read_roots, approval=config.approval, approve=approve
        )
        self._subagents: Subagents | None = None
        if depth < config.max_spawn_depth:
            self._subagents = Subagents(
                agent_id=config.agent_id,
                sessions=self.sessions,
                parse_key=self.session_key,
                spawn=self.spawn_child,
                append_note=self._append_note,
                wake=self._services.heartbeat.request,
            )
        self._context = ContextManager(
            config=config,
            model=lambda: self.model,
            offered_tools=lambda: self.tools,
            policy=config.tool_policy,
            sandbox=self._sandbox,
            tool_context=self._tool_context,
            skill_loader=self._skill_loader,
            system_prompt_extra=system_prompt,
        )

    @property
    def model(self) -> Model:
        """The model backend (an `AnthropicModel` unless one was passed in)."""
        if self._model is None:
            self._model = AnthropicModel.from_config(self.config)
        return self._model

    def _check_credentials(self) -> None:
        if isinstance(self._model, AnthropicModel) or self._model is None:
            if not self.config.resolved_api_key:
                raise MissingAPIKeyError(
                    "No API key found: set the ANTHROPIC_API_KEY environment variable (or pass api_key=...)."
                )

    @property
    def tools(self) -> list[Tool]:
        """The tools this agent offers the model (after policy and sandbox)."""
        return self._sandbox.offered(self._registry, self.config.tool_policy)

    def session_key(self, session: str | SessionKey) -> SessionKey:
        return SessionKey.parse(session, self.config.agent_id)

    # -- running -------------------------------------------------------------------------

    async def run(self, session: str | SessionKey, text: str) -> RunResult:
        """Run one user message to completion and return the result.

        Raises `ModelError` when the model cannot be reached after retries (the transcript stays
        valid: the next run on the session works), `ValueError` for a blank message.
        """
        result: RunResult | None = None
        error: BaseException | None = None
        async for event in self.stream(session, text):
            if event.type == "error":
                error = event.data.get("exception")
            elif event.type == "done":
                result = event.result
        if error is not None:
            raise error
        assert result is not None
        return result

    async def stream(self, session: str | SessionKey, text: str) -> AsyncIterator[RunEvent]:
        """Run one user message, yielding `RunEvent`s; the last one is `done` with the result.

        Leaving the iteration early cancels the run (the transcript stays valid).
        """
        if self._closed:
            raise RuntimeError("This agent is closed.")
        if not text.strip():  # it would be kept and resent, and the API refuses blank text
            raise ValueError("The message is empty: there is nothing to send to the model.")
        key = self.session_key(session)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        task = asyncio.create_task(self._run_in_lane(key, text, queue.put_nowait))
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                yield item
            await task
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def abort(self, session: str | SessionKey) -> bool:
        """Cancel the run in progress on a session; True when there was one."""
        task = self._running.get(str(self.session_key(session)))
        if task is None or task.done():
            return False
        task.cancel()
        return True

    async def _run_in_lane(self, key: SessionKey, text: str, emit: Callable[[Any], None]) -> RunResult:
        name = str(key)
        try:
            async with self._lanes.lane(name):
                current = asyncio.current_task()
                assert current is not None
                self._running[name] = current
                try:
                    result = await self._execute(key, text, emit)
                finally:
                    self._running.pop(name, None)
        except asyncio.CancelledError:
            result = RunResult(text="", session_key=name, stop_reason="aborted")
        except Exception as exc:
            expected = isinstance(exc, (ModelError, ConfigError))
            message = str(exc) if expected else f"{type(exc).__name__}: {exc}"
            if not expected:
                log.exception("run on %s failed", name)
            emit(RunEvent("error", name, text=message, data={"exception": exc}))
            result = RunResult(text="", session_key=name, stop_reason="error", error=message)
        emit(RunEvent("done", name, result=result, stop_reason=result.stop_reason))
        emit(_DONE)
        return result

    async def _execute(self, key: SessionKey, text: str, emit: Callable[[RunEvent], None]) -> RunResult:
        self._check_credentials()
        cached = await self._load(key)
        session, context, name = cached.session, cached.context, str(key)
        turn: MessageEntry | None = None
        try:
            for warning in session.warnings:
                emit(RunEvent("warning", name, text=warning))
            session.warnings.clear()
            skills = await self._context.skills(name, emit)
            turn = MessageEntry(role="user", content=self._context.user_content(text, skills))
            session.append(turn)
            await self._add_mcp_tools(name, emit)
            request = await self._context.base_request(key, skills, emit)

            async def prepare() -> list[dict[str, Any]]:
                return await self._context.prepare(session, context, request, emit)

            async def on_overflow() -> bool:
                return await self._context.compact(session, context, request, emit, reason="overflow")

            outcome = await run_tool_loop(
                model=self.model,
                history=session,
                base_request=request,
                tools={tool.name: tool for tool in self._registry},  # refusals come from the policy
                policy=self.config.tool_policy,
                sandbox=self._sandbox,
                hooks=LoopHooks(
                    emit=emit,
                    prepare=prepare,
                    on_overflow=on_overflow,
                    tool_context=self._tool_context(name, emit),
                ),
                max_turns=self.config.max_turns,
                session_key=name,
                tool_timeout=self.config.tool_timeout_seconds,
            )
        except Exception as exc:  # the failed turn leaves later requests (see HistoryBuilder)
            if turn is not None:
                data = {"turn": turn.id, "error": f"{type(exc).__name__}: {exc}"[:2_000]}
                session.append(CustomEntry(custom_type=TURN_FAILED, data=data))
            raise
        finally:
            await self._flush(session)
        return outcome.result(name)

    async def _add_mcp_tools(self, session_key: str, emit: Callable[[RunEvent], None]) -> None:
        """Start the MCP servers (first run, or after a failed start) and register their tools."""
        if self._services.mcp is not None:
            found, problems = await self._services.mcp.tools()
            for item in found:
                self._registry.add(item)
            for problem in problems:
                emit(RunEvent("warning", session_key, text=problem))

    def _tool_context(
        self, session_key: str, emit: Callable[[RunEvent], None] | None = None
    ) -> Callable[[str], ToolContext]:
        """Per call: what a tool may know of the run, and the typed services it may use."""
        services = self._services
        make = functools.partial(
            ToolContext,
            workspace=self.workspace,
            session_key=session_key,
            agent_id=self.config.agent_id,
            sandbox=self._sandbox,
            extras=self.extras,
            emit=emit,
            memory=services.memory,
            subagents=self._subagents,
            heartbeat=services.heartbeat,
            exec_manager=services.exec_manager,
            state=services.state,
        )
        return lambda tool_use_id: make(tool_use_id=tool_use_id)

    # -- session state -------------------------------------------------------------------

    async def _load(self, key: SessionKey) -> ActiveSession:
        """The session and its context state, reused between runs unless another process
        appended to the file (or the bounded cache let it go)."""
        name = str(key)
        cached = self._states.get(name)
        if cached is not None:
            await self._flush(cached.session)
        size = await asyncio.to_thread(self.sessions.size_sync, key)
        if cached is not None and cached.session.file_size == size:
            return cached
        # Beyond a few windows of text nothing can reach the model (not even the summary, whose
        # input is bounded by the window), so an uncompacted giant resumes from its tail.
        tail = max(self.config.context_window_tokens * 4 * 3, 1 << 20)
        loaded = await self.sessions.load(key, active_only=True, tail_bytes=tail)
        session = LiveSession(
            self.sessions,
            key,
            loaded.entries,
            file_size=size,
            held_bytes=loaded.parsed_bytes,
            warnings=list(loaded.warnings),
        )
        cached = self._context.attach(session)
        self._states.put(name, cached)
        return cached

    async def _flush(self, session: LiveSession) -> None:
        """Wait until the session's entries are on disk; after a write error, reload next time."""
        try:
            await session.flush()
        except Exception:
            self._states.pop(str(session.key))
            raise

    async def _append_note(self, key: SessionKey, entry: CustomEntry) -> None:
        """Add a runtime note (a background sub-agent's result) to a session, in its lane."""
        async with self._lanes.lane(str(key)):
            session = (await self._load(key)).session
            session.append(entry)
            await self._flush(session)

    async def compact(self, session: str | SessionKey) -> dict[str, Any] | None:
        """Force a compaction of a session now (the CLI's `/compact`); None when nothing to cut."""
        self._check_credentials()
        key = self.session_key(session)
        events: list[RunEvent] = []
        async with self._lanes.lane(str(key)):
            cached = await self._load(key)
            skills = await self._context.skills(str(key), events.append)
            request = await self._context.base_request(key, skills, events.append)
            try:
                done = await self._context.compact(
                    cached.session, cached.context, request, events.append, reason="manual"
                )
            finally:
                await self._flush(cached.session)
        if not done:
            return None
        return next(e.data for e in events if e.type == "compaction")

    # -- sub-agents ----------------------------------------------------------------------

    def spawn_child(self, tools: Sequence[str] | None = None) -> Agent:
        """A sub-agent on this workspace: same model client and services (owned by this agent),
        a tool set no wider than ours, one level deeper (it may spawn only while under
        `max_spawn_depth`). The one factory for children: every attribute comes from `_setup`."""
        if self._depth >= self.config.max_spawn_depth:
            raise ConfigError(
                f"Sub-agents may not spawn further (max_spawn_depth={self.config.max_spawn_depth})."
            )
        policy = self.config.tool_policy.narrowed({tool.name for tool in self.tools}, tools)
        child = Agent.__new__(Agent)
        child.config = self.config.model_copy(update={"tool_policy": policy, "enable_heartbeat": False})
        builtin = {tool.name for tool in builtin_tools(self.config, can_spawn=True)}
        child._setup(
            model=self.model,
            owns_model=False,
            services=self._services,
            extra_tools=[tool for tool in self._registry if tool.name not in builtin],
            depth=self._depth + 1,
            heartbeat=False,
            system_prompt=self._system_prompt_extra,
            extras=self.extras,
            approve=self._sandbox.approve,
        )
        return child

    def new_subagent_key(self) -> str:
        return f"agent:{self.config.agent_id}:subagent:{uuid.uuid4()}"

    # -- heartbeat -----------------------------------------------------------------------

    @property
    def heartbeat_config(self) -> HeartbeatConfig:
        """The heartbeat settings (`{}`, `False`, `0` or `"off"` turn it off; None means defaults)."""
        return self._heartbeat.config

    def start_heartbeat(
        self,
        callback: Callable[..., Awaitable[None] | None] | None = None,
        *,
        deliver: Callable[[str, Any], Awaitable[None] | None] | None = None,
    ) -> None:
        """Start the proactive heartbeat on the running event loop.

        With `callback`, it is called with `(tasks, request)` when tasks are due and your code acts;
        without one, the agent runs a heartbeat turn on the heartbeat session and hands replies
        that survive the `HEARTBEAT_OK` and duplicate filters to `deliver(text, request)`.
        """
        self._heartbeat.start(callback, deliver)

    def request_heartbeat(self, reason: str = "requested") -> None:
        """Wake the heartbeat soon (requests within 250 ms coalesce into one run)."""
        self._heartbeat.request(reason)

    async def run_heartbeat_once(self, reason: str = "manual", *, force: bool = False) -> HeartbeatOutcome:
        """Run one heartbeat tick now (started or not). `force` skips the active-hours and
        HEARTBEAT.md checks."""
        return await self._heartbeat.run_once(reason, force=force)

    def heartbeat_status(self) -> HeartbeatStatus:
        """Next run, active window, tasks and when each is due, and whether a tick now would run."""
        return self._heartbeat.status()

    async def stop_heartbeat(self) -> None:
        await self._heartbeat.stop()

    # -- lifecycle -----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Cancel running runs, stop the heartbeat and background work, close what this agent owns."""
        if self._closed:
            return
        self._closed = True
        await self.stop_heartbeat()
        if self._subagents is not None:
            await self._subagents.aclose()
        for task in list(self._running.values()):
            task.cancel()
        for task in list(self._running.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._owns_services:  # a sub-agent shares its parent's handles and processes
            await self._services.aclose()
        if self._owns_model and self._model is not None:
            await self._model.aclose()

    async def __aenter__(self) -> Agent:
        """`async with Agent(...)`: starts the heartbeat when `enable_heartbeat=True`."""
        if self.config.enable_heartbeat:
            self.start_heartbeat()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
