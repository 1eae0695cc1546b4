"""`Agent`: wires sessions, context, skills, memory, tools and the model into runs.

Data flows one way: `run()` -> the session's lane -> load transcript -> skill match -> context
(bootstrap + prompt + pruning + compaction) -> the tool loop -> appended entries. Subsystems
never call back up into the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import (
    DEFAULT_MODEL,
    AgentConfig,
    BootstrapConfig,
    CompactionConfig,
    ConfigError,
    PruningConfig,
    build_config,
)
from .errors import MissingAPIKeyError
from .events import RunEvent, RunResult
from .llm import AnthropicModel, Model, ModelError, ModelRequest
from .loop import LoopHooks, LoopOutcome, run_tool_loop
from .session import LiveSession, LoadedSession, SessionKey, SessionLanes, SessionStore
from .tools.base import Tool, ToolContext, ToolRegistry
from .tools.policy import Sandbox, SandboxConfig, ToolPolicy
from .transcript import CompactionEntry, CustomEntry, MessageEntry, build_messages

if TYPE_CHECKING:
    from .context.bootstrap import BootstrapLoader
    from .heartbeat import (
        HeartbeatConfig,
        HeartbeatOutcome,
        HeartbeatRequest,
        HeartbeatRunner,
        HeartbeatStatus,
        HeartbeatTurn,
    )
    from .skills import SkillLoader, SkillSnapshot

__all__ = ["Agent", "MissingAPIKeyError"]

log = logging.getLogger(__name__)

_DONE = object()
_FLUSH_DONE_NOTE = (
    "[Housekeeping done; the user saw none of it. Continue the conversation from where it was "
    "before the housekeeping turn.]"
)


AnyEntry = MessageEntry | CompactionEntry | CustomEntry


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
        model: str | Model = DEFAULT_MODEL,
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
        system_prompt: str | None = None,
        config: AgentConfig | None = None,
    ) -> None:
        model_name = model if isinstance(model, str) else getattr(model, "model_name", "custom")
        values: dict[str, Any] = dict(
            workspace_dir=workspace_dir,
            agent_id=agent_id,
            model=model_name,
            api_key=api_key,
            base_url=base_url,
            max_turns=max_turns,
            max_tokens=max_tokens,
            max_retries=max_retries,
            timeout_seconds=timeout_seconds,
            thinking_budget_tokens=thinking_budget_tokens,
            context_window_tokens=context_window_tokens,
            tool_policy=tool_policy,
            sandbox=sandbox,
            enable_memory=enable_memory,
            enable_context=enable_context,
            enable_skills=enable_skills,
            enable_heartbeat=enable_heartbeat,
            enable_state=enable_state,
            bootstrap=bootstrap,
            pruning=pruning,
            compaction=compaction,
            timezone=timezone,
            max_spawn_depth=max_spawn_depth,
        )
        if config is not None:
            merged = config.model_dump()
            merged["api_key"] = config.api_key
            merged.update({k: v for k, v in values.items() if v is not None and k != "workspace_dir"})
            if workspace_dir != ".":
                merged["workspace_dir"] = workspace_dir
            values = merged
        self.config: AgentConfig = build_config(**values)
        self._heartbeat_config = heartbeat
        self._system_prompt_extra = system_prompt
        self._model: Model | None = None if isinstance(model, str) else model
        self.workspace: Path = self.config.workspace_dir
        self.sessions = SessionStore(self.config.state_dir, workspace=self.workspace)
        self._lanes = SessionLanes()
        self._states: dict[str, LiveSession] = {}
        self._running: dict[str, asyncio.Task[RunResult]] = {}
        self._closed = False
        self._depth = 0
        self._owns_model = True
        self._background: set[asyncio.Task[None]] = set()
        self.extras: dict[str, Any] = {"agent": self, "on_exec_complete": self._on_exec_complete}
        """Subsystem handles passed to tools through `ToolContext.extras`."""
        if self.config.enable_memory:
            from .memory import MemoryStore, embedder_from_env

            # Opened lazily by the store itself; shared by the memory tools of every run.
            # OPENCLAW_MINI_EMBEDDINGS=local|http turns on search by meaning (see README, Memory).
            self.extras["memory"] = MemoryStore(
                self.workspace, timezone=self.config.timezone, embedder=embedder_from_env()
            )
        self._registry = ToolRegistry(self._builtin_tools())
        for item in tools:
            self._registry.add(item)
        self._skill_loader: SkillLoader | None = None
        if self.config.enable_skills:
            from .skills import SkillLoader

            self._skill_loader = SkillLoader(self.workspace)
        # Bundled and user skill folders stay readable with the sandbox on: the prompt points there.
        read_roots = self._skill_loader.read_roots if self._skill_loader is not None else ()
        self._sandbox = Sandbox(self.workspace, self.config.sandbox, read_roots=read_roots)
        self._heartbeat: HeartbeatRunner | None = None
        self._bootstrap_loader: BootstrapLoader | None = None

    # -- construction helpers ------------------------------------------------------------

    def _builtin_tools(self) -> list[Tool]:
        from .tools.files import FILE_TOOLS
        from .tools.shell import SHELL_TOOLS

        found: list[Tool] = [*FILE_TOOLS, *SHELL_TOOLS]
        if self.config.enable_memory:
            from .tools.memory import MEMORY_TOOLS

            found.extend(MEMORY_TOOLS)
        if self._depth < self.config.max_spawn_depth:
            from .tools.sessions import SESSION_TOOLS

            found.extend(SESSION_TOOLS)
        if self.config.enable_state:
            from .tools.state import STATE_TOOLS

            found.extend(STATE_TOOLS)
        return found

    @property
    def model(self) -> Model:
        """The model backend (an `AnthropicModel` unless one was passed in)."""
        if self._model is None:
            self._model = AnthropicModel(
                api_key=self.config.resolved_api_key,
                base_url=self.config.resolved_base_url,
                max_retries=self.config.max_retries,
                timeout_seconds=self.config.timeout_seconds,
            )
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

    async def _run_in_lane(self, key: SessionKey, text: str, put: Callable[[Any], None]) -> RunResult:
        name = str(key)
        result = RunResult(text="", session_key=name, stop_reason="error")

        def emit(event: RunEvent) -> None:
            put(event)

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
            message = (
                str(exc) if isinstance(exc, (ModelError, ConfigError)) else f"{type(exc).__name__}: {exc}"
            )
            if not isinstance(exc, (ModelError, ConfigError)):
                log.exception("run on %s failed", name)
            emit(RunEvent("error", name, text=message, data={"exception": exc}))
            result = RunResult(text="", session_key=name, stop_reason="error", error=message)
        emit(RunEvent("done", name, result=result, stop_reason=result.stop_reason))
        put(_DONE)
        return result

    async def _execute(self, key: SessionKey, text: str, emit: Callable[[RunEvent], None]) -> RunResult:
        self._check_credentials()
        state = await self._load_state(key)
        try:
            return await self._execute_loaded(state, text, emit)
        finally:
            await self._flush(state)

    async def _execute_loaded(
        self, state: LiveSession, text: str, emit: Callable[[RunEvent], None]
    ) -> RunResult:
        key = state.key
        name = str(key)
        for warning in state.warnings:
            emit(RunEvent("warning", name, text=warning))
        state.warnings.clear()

        skills = await self._skills_snapshot(name, emit)
        user_content = self._user_content(text, skills)
        await self._persist(state, MessageEntry(role="user", content=user_content))
        state.append_user(user_content)

        request = await self._base_request(key, skills, emit)
        hooks = LoopHooks(
            emit=emit,
            persist=lambda entry: self._persist(state, entry),
            prepare=lambda conv: self._prepare(state, request, emit),
            on_overflow=lambda conv: self._compact(state, request, emit, reason="overflow"),
            tool_context=self._tool_context(name, emit),
        )
        outcome = await run_tool_loop(
            model=self.model,
            conversation=state,
            base_request=request,
            tools={tool.name: tool for tool in self._registry},  # refusals come from the policy
            policy=self.config.tool_policy,
            sandbox=self._sandbox,
            hooks=hooks,
            max_turns=self.config.max_turns,
            session_key=name,
        )
        return RunResult(
            text=outcome.text,
            session_key=name,
            tool_calls=outcome.tool_calls,
            usage=outcome.usage,
            stop_reason=outcome.stop_reason,
            turns=outcome.turns,
        )

    def _tool_context(
        self, session_key: str, emit: Callable[[RunEvent], None] | None = None
    ) -> Callable[[str], ToolContext]:
        def make(tool_use_id: str) -> ToolContext:
            return ToolContext(
                workspace=self.workspace,
                session_key=session_key,
                agent_id=self.config.agent_id,
                sandbox=self._sandbox,
                tool_use_id=tool_use_id,
                extras=self.extras,
                emit=emit,
            )

        return make

    def _user_content(self, text: str, skills: SkillSnapshot | None) -> list[dict[str, Any]]:
        """The user message; a skill the message invokes has its body injected ahead of the input.

        The injection is part of the user turn (and so of the transcript), so follow-up turns still
        know which instructions the agent was following.
        """
        if skills is not None and text.strip():
            from .skills import match_skill

            match = match_skill(skills, text)
            if match is not None:
                return [
                    {"type": "text", "text": match.injection()},
                    {"type": "text", "text": match.user_text},
                ]
        return [{"type": "text", "text": text}]

    async def _skills_snapshot(
        self, session_key: str, emit: Callable[[RunEvent], None]
    ) -> SkillSnapshot | None:
        if self._skill_loader is None:
            return None
        try:
            return await self._skill_loader.aload()
        except Exception as exc:  # skills must never break a run
            emit(RunEvent("warning", session_key, text=f"Skills could not be loaded: {exc}"))
            return None

    async def _base_request(
        self, key: SessionKey, skills: SkillSnapshot | None, emit: Callable[[RunEvent], None]
    ) -> ModelRequest:
        stable, dynamic = await self._system_prompt(key, skills, emit)
        return ModelRequest(
            model=self.config.model,
            messages=[],
            system_stable=stable,
            system_dynamic=dynamic,
            tools=[tool.definition() for tool in self.tools],
            max_tokens=self.config.max_tokens,
            thinking_budget_tokens=self.config.thinking_budget_tokens,
        )

    async def _system_prompt(
        self, key: SessionKey, skills: SkillSnapshot | None, emit: Callable[[RunEvent], None]
    ) -> tuple[str, str]:
        from .context.bootstrap import BootstrapLoader
        from .context.prompt import build_system_prompt

        name = str(key)
        bootstrap = None
        if self.config.enable_context:
            if self._bootstrap_loader is None:
                self._bootstrap_loader = BootstrapLoader(self.workspace, self.config.bootstrap)
            bootstrap = await self._bootstrap_loader.aload(subagent=key.is_subagent)
            for warning in bootstrap.warnings:
                emit(RunEvent("warning", name, text=warning))
        skills_block = ""
        if skills is not None:
            from .skills import render_skills_prompt

            skills_block, skill_warnings = render_skills_prompt(skills)
            for warning in skill_warnings:
                emit(RunEvent("warning", name, text=warning))
        memory_guidance = None
        if self.config.enable_memory:
            from .memory import MEMORY_PROMPT_GUIDANCE

            memory_guidance = MEMORY_PROMPT_GUIDANCE
        prompt = build_system_prompt(
            agent_id=self.config.agent_id,
            tools=self.tools,
            bootstrap=bootstrap,
            skills_block=skills_block,
            memory_guidance=memory_guidance,
            workspace=self.workspace,
            now=self._now(),
            extra_instructions=self._system_prompt_extra,
        )
        return prompt.stable, prompt.dynamic

    def _now(self) -> datetime:
        from zoneinfo import ZoneInfo

        if self.config.timezone:
            return datetime.now(ZoneInfo(self.config.timezone))
        return datetime.now().astimezone()

    # -- session state -------------------------------------------------------------------

    async def _load_state(self, key: SessionKey) -> LiveSession:
        """The session's state, reused between runs unless another process appended to the file."""
        name = str(key)
        cached = self._states.get(name)
        if cached is not None:
            await self._flush(cached)
        size = await asyncio.to_thread(self.sessions.size_sync, key)
        if cached is not None and cached.file_size == size:
            return cached
        # Beyond a few windows of text nothing can reach the model (not even the summary, whose
        # input is bounded by the window), so an uncompacted giant resumes from its tail.
        tail = max(self.config.context_window_tokens * 4 * 3, 1 << 20)
        loaded: LoadedSession = await self.sessions.load(key, active_only=True, tail_bytes=tail)
        state = LiveSession(
            store=self.sessions,
            key=key,
            entries=loaded.entries,
            messages=build_messages(loaded.entries),
            file_size=size,
            warnings=list(loaded.warnings),
        )
        from .context.compaction import flushed_since_compaction

        state.flushed_this_cycle = flushed_since_compaction(loaded.entries)
        self._states[name] = state
        return state

    async def _persist(self, state: LiveSession, entry: AnyEntry) -> None:
        """Record an entry (the loop's persist hook): in memory now, on disk by the writer."""
        state.record(entry)

    async def _flush(self, state: LiveSession) -> None:
        """Wait until the session's entries are on disk; after a write error, reload next time."""
        try:
            await state.flush()
        except Exception:
            self._states.pop(str(state.key), None)
            raise

    # -- context: pruning, compaction, memory flush --------------------------------------

    def _estimate_tokens(self, state: LiveSession, request: ModelRequest) -> int:
        """The next request's size: the API's last report plus an estimate of what came since."""
        from .context.compaction import estimate_context_tokens

        fixed = self._fixed_tokens(request) if state.last_context_tokens is None else 0
        return estimate_context_tokens(
            state.messages,
            fixed_tokens=fixed,
            reported_tokens=state.last_context_tokens,
            reported_messages=state.messages_at_usage,
        )

    @staticmethod
    def _fixed_tokens(request: ModelRequest) -> int:
        """What every request carries besides the messages: system prompt and tool definitions."""
        from .context.compaction import estimate_tokens

        tools = sum(len(json.dumps(definition)) for definition in request.tools)
        return estimate_tokens(request.system_stable + request.system_dynamic) + tools // 4

    async def _prepare(
        self, state: LiveSession, request: ModelRequest, emit: Callable[[RunEvent], None]
    ) -> list[dict[str, Any]]:
        """Before each request: memory flush and compaction when due, then pruning by size."""
        if not self.config.enable_context:
            return state.messages
        window = self.config.context_window_tokens
        estimate = self._estimate_tokens(state, request)
        if self.config.compaction.enabled:
            from .context.compaction import should_compact, should_flush_memory

            if (
                self.config.enable_memory
                and not state.flushed_this_cycle
                and should_flush_memory(estimate, window, self.config.compaction)
            ):
                await self._memory_flush(state, request, estimate)
                estimate = self._estimate_tokens(state, request)
            if should_compact(estimate, window, self.config.compaction):
                await self._compact(state, request, emit, reason="threshold")
                estimate = self._estimate_tokens(state, request)
        pruning = self.config.pruning
        # Sized on the full history (the API's usage reflects the pruned request), incrementally:
        # below the soft-trim ratio nothing would change, so the O(history) pass is skipped.
        if pruning.enabled and state.history_chars() >= pruning.soft_trim_ratio * window * 4:
            from .context.pruning import prune_messages

            return prune_messages(state.messages, context_window_tokens=window, config=pruning).messages
        return state.messages

    async def _memory_flush(self, state: LiveSession, request: ModelRequest, estimate: int) -> None:
        """One silent turn, before any summary, that lets the model save durable facts to memory."""
        from .context.compaction import is_silent_reply, make_flush_marker, memory_flush_prompt

        state.flushed_this_cycle = True
        name = str(state.key)
        content = [{"type": "text", "text": memory_flush_prompt(self._now().date())}]
        await self._persist(state, MessageEntry(role="user", content=content, hidden=True))
        state.append_user(content)
        allowed = {"memory_write", "memory_search", "memory_get", "read", "write", "edit"}
        tools = {tool.name: tool for tool in self.tools if tool.name in allowed}
        flush_request = ModelRequest(
            model=request.model,
            messages=[],
            system_stable=request.system_stable,
            system_dynamic=request.system_dynamic,
            tools=[t.definition() for t in tools.values()],
            max_tokens=request.max_tokens,
            metadata={"purpose": "memory_flush"},
        )

        async def persist_hidden(entry: MessageEntry) -> None:
            entry.hidden = True
            await self._persist(state, entry)

        async def unchanged(conv: Any) -> list[dict[str, Any]]:
            return state.messages

        async def no_overflow(conv: Any) -> bool:
            return False

        try:
            outcome = await run_tool_loop(
                model=self.model,
                conversation=state,
                base_request=flush_request,
                tools=tools,
                policy=self.config.tool_policy,
                sandbox=self._sandbox,
                hooks=LoopHooks(
                    emit=lambda event: None,
                    persist=persist_hidden,
                    prepare=unchanged,
                    on_overflow=no_overflow,
                    tool_context=self._tool_context(name),
                ),
                max_turns=4,
                session_key=name,
            )
        except ModelError as exc:  # best effort: the user's turn goes on without the flush
            log.warning("memory flush on %s failed: %s", name, exc)
            outcome = LoopOutcome(stop_reason="error")
        await self._persist(state, make_flush_marker(estimate))
        if outcome.stop_reason == "aborted":
            # The nested loop absorbed the cancellation to keep its history valid: pass it on,
            # or an abort during the flush would be lost and the run would go on.
            raise asyncio.CancelledError
        # The history must not end with the flush reply: the run's next request would send it as
        # a prefill to continue (refused outright with thinking on). Hand the turn back.
        back = [{"type": "text", "text": _FLUSH_DONE_NOTE}]
        await self._persist(state, MessageEntry(role="user", content=back, hidden=True))
        state.append_user(back)
        if not is_silent_reply(outcome.text):
            log.info("memory flush on %s replied: %s", name, outcome.text[:200])

    async def _compact(
        self, state: LiveSession, request: ModelRequest, emit: Callable[[RunEvent], None], *, reason: str
    ) -> bool:
        """Summarise the older part of the history; the transcript keeps every entry."""
        from .context.compaction import (
            build_summary_request,
            effective_limits,
            make_compaction_entry,
            plan_compaction,
            summarize,
            summary_max_tokens,
        )

        window = self.config.context_window_tokens
        reserve, keep_recent = effective_limits(window, self.config.compaction)
        budget = summary_max_tokens(window, self.config.compaction)
        # In a small window the system prompt and tool definitions take a real share: what is
        # kept verbatim must fit beside them, the reserve and the summary.
        room = window - reserve - budget - self._fixed_tokens(request)
        keep_recent = max(min(keep_recent, room), window // 10)
        plan = plan_compaction(state.entries, keep_recent_tokens=keep_recent)
        if plan is None:
            return False
        summary_request = build_summary_request(
            plan,
            model=self.config.model,
            max_tokens=min(budget, self.config.max_tokens),
            max_input_tokens=max(window - budget - 1_000, 256),
        )
        summary, _usage = await summarize(self.model, summary_request)
        entry = make_compaction_entry(plan, summary, plan.tokens_after(summary))
        await self._persist(state, entry)
        state.messages = build_messages(state.entries)
        state.last_context_tokens = None
        state.messages_at_usage = 0
        state.flushed_this_cycle = False
        emit(
            RunEvent(
                "compaction",
                str(state.key),
                data={
                    "reason": reason,
                    "tokens_before": entry.tokens_before,
                    "tokens_after": entry.tokens_after,
                    "summary": summary,
                },
            )
        )
        return True

    async def compact(self, session: str | SessionKey) -> dict[str, Any] | None:
        """Force a compaction of a session now (the CLI's `/compact`); None when nothing to cut."""
        self._check_credentials()
        key = self.session_key(session)
        events: list[RunEvent] = []
        async with self._lanes.lane(str(key)):
            state = await self._load_state(key)
            request = await self._base_request(
                key, await self._skills_snapshot(str(key), events.append), events.append
            )
            try:
                done = await self._compact(state, request, events.append, reason="manual")
            finally:
                await self._flush(state)
        if not done:
            return None
        return next(e.data for e in events if e.type == "compaction")

    # -- sub-agents ----------------------------------------------------------------------

    def spawn_child(self, tools: Sequence[str] | None = None) -> Agent:
        """A sub-agent on this workspace: same model client, a tool set no wider than ours, one
        level deeper (it may spawn only while under `max_spawn_depth`)."""
        if self._depth >= self.config.max_spawn_depth:
            raise ConfigError(
                f"Sub-agents may not spawn further (max_spawn_depth={self.config.max_spawn_depth})."
            )
        offered = {tool.name for tool in self.tools}
        if tools is not None:
            unknown = sorted(set(tools) - offered)
            if unknown:
                raise ConfigError(
                    f"A sub-agent can only get tools this agent has; not available: {', '.join(unknown)}."
                )
        # Only names this agent offers (already through its policy and sandbox): never wider.
        allowed = sorted(offered if tools is None else set(tools))
        policy = ToolPolicy(allow=allowed, deny=list(self.config.tool_policy.deny))
        child = Agent.__new__(Agent)
        child.__dict__.update(self.__dict__)
        child.config = self.config.model_copy(update={"tool_policy": policy, "enable_heartbeat": False})
        child._depth = self._depth + 1
        child._owns_model = False
        child._model = self.model
        child._lanes = SessionLanes()
        child._states = {}
        child._running = {}
        child._background = set()
        child._closed = False
        child._heartbeat = None
        child._registry = ToolRegistry(
            t for t in self._registry if t.group != "sessions" or child._depth < child.config.max_spawn_depth
        )
        child.extras = {**self.extras, "agent": child}
        return child

    def new_subagent_key(self) -> str:
        return f"agent:{self.config.agent_id}:subagent:{uuid.uuid4()}"

    def track_background(self, task: asyncio.Task[None]) -> None:
        """Keep a background task alive until it ends (and cancel it on `aclose`)."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def deliver_subagent_result(self, session: str, note: str, *, data: dict[str, Any]) -> None:
        """Write a background sub-agent's result into the parent session and wake the heartbeat."""
        key = self.session_key(session)
        async with self._lanes.lane(str(key)):
            state = await self._load_state(key)
            await self._persist(state, CustomEntry(custom_type="subagent_result", data=data, message=note))
            state.append_user([{"type": "text", "text": note}])
            await self._flush(state)
        if self._heartbeat is not None:
            self._heartbeat.request("exec")

    # -- heartbeat -----------------------------------------------------------------------

    def _heartbeat_runner(self, callback: Any = None, deliver: Any = None) -> HeartbeatRunner:
        from .heartbeat import HeartbeatRunner

        return HeartbeatRunner(
            self.workspace,
            self.heartbeat_config,
            run_turn=self._heartbeat_turn,
            callback=callback,
            deliver=deliver,
        )

    @property
    def heartbeat_config(self) -> HeartbeatConfig:
        """The heartbeat settings (`{}`, `False`, `0` or `"off"` turn it off; None means defaults),
        with the agent's timezone when the heartbeat names none."""
        from .heartbeat import HeartbeatConfig

        config = HeartbeatConfig.coerce(self._heartbeat_config)
        if self.config.timezone and not config.timezone:
            config = config.model_copy(update={"timezone": self.config.timezone})
        return config

    async def _heartbeat_turn(self, prompt: str, tasks: Any, request: HeartbeatRequest) -> HeartbeatTurn:
        """One heartbeat turn: a normal run on the heartbeat session (pruned and compacted like any
        session). If a user turn holds that session's lane, report busy so the wake layer retries."""
        from .heartbeat import HeartbeatBusy, HeartbeatTurn

        session = request.session or self.heartbeat_config.session
        if self._lanes.busy(str(self.session_key(session))):
            raise HeartbeatBusy(f"session {session} is busy")
        result = await self.run(session, prompt)
        tokens = result.usage.context_tokens + result.usage.output_tokens
        return HeartbeatTurn(text=result.text, tokens=tokens)

    def _on_exec_complete(self, exec_id: str, exit_code: int | None, output_tail: str) -> None:
        """A background command finished: its output reaches the next heartbeat turn."""
        if self._heartbeat is not None:
            self._heartbeat.notify_exec(exec_id, exit_code, output_tail)

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
        if self._heartbeat is not None:
            return
        self._heartbeat = self._heartbeat_runner(callback, deliver)
        self._heartbeat.start()
        self.extras["heartbeat"] = self._heartbeat

    def request_heartbeat(self, reason: str = "requested") -> None:
        """Wake the heartbeat soon (requests within 250 ms coalesce into one run)."""
        if self._heartbeat is None:
            raise RuntimeError("The heartbeat is not running: call start_heartbeat() first.")
        self._heartbeat.request(reason)

    async def run_heartbeat_once(self, reason: str = "manual", *, force: bool = False) -> HeartbeatOutcome:
        """Run one heartbeat tick now (started or not). `force` skips the active-hours and
        HEARTBEAT.md checks."""
        runner = self._heartbeat or self._heartbeat_runner()
        return await runner.run_once(reason, force=force)

    def heartbeat_status(self) -> HeartbeatStatus:
        """Next run, active window, tasks and when each is due, and whether a tick now would run."""
        runner = self._heartbeat or self._heartbeat_runner()
        return runner.status()

    async def stop_heartbeat(self) -> None:
        runner, self._heartbeat = self._heartbeat, None
        self.extras.pop("heartbeat", None)
        if runner is not None:
            await runner.aclose()

    # -- lifecycle -----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Cancel running runs, stop the heartbeat and background processes, close the client."""
        if self._closed:
            return
        self._closed = True
        await self.stop_heartbeat()
        for background in list(self._background):
            background.cancel()
        for background in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await background
        for task in list(self._running.values()):
            task.cancel()
        for task in list(self._running.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if not self._owns_model:
            return  # a sub-agent shares its parent's model, tools' handles and processes
        manager = self.extras.get("exec_manager")
        if manager is not None:
            await manager.aclose()
        for name in ("memory", "state"):
            handle = self.extras.pop(name, None)
            closer = getattr(handle, "aclose", None) or getattr(handle, "close", None)
            if closer is not None:
                outcome = closer()
                if asyncio.iscoroutine(outcome):
                    await outcome
        if self._model is not None:
            await self._model.aclose()

    async def __aenter__(self) -> Agent:
        """`async with Agent(...)`: starts the heartbeat when `enable_heartbeat=True`."""
        if self.config.enable_heartbeat:
            self.start_heartbeat()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
