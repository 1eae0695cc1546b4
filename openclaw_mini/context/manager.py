"""`ContextManager`: what each request carries and when the history is pruned, flushed or compacted.

The policy in one place. Before each request (`prepare`): estimate the next request's size (the
API's last usage report plus an estimate of what came since), run the silent memory-flush turn when
the flush threshold is passed (once per compaction cycle, before any summary), compact when over
`window - reserve`, then prune by size. After a "prompt is too long" answer, `compact` and retry.
Per-session state (`SessionContext`: the incremental pruner, the flush flag, which usage reports
can be trusted) lives beside the session in the agent's cache, so evicting a session drops both.

The manager also assembles the request itself: skills snapshot and skill injection, bootstrap
files and the system prompt. It reaches the model, tools and sandbox only through what the agent
hands it; it never calls back into the agent.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import AgentConfig
from ..events import RunEvent
from ..llm import Model, ModelError, ModelRequest, Usage
from ..loop import LoopHooks, LoopOutcome, run_tool_loop
from ..transcript import AnyEntry, CompactionEntry, MessageEntry
from .compaction import (
    build_summary_request,
    effective_limits,
    estimate_tokens,
    flushed_since_compaction,
    is_silent_reply,
    make_compaction_entry,
    make_flush_marker,
    memory_flush_prompt,
    plan_compaction,
    should_compact,
    should_flush_memory,
    summarize,
    summary_max_tokens,
)
from .pruning import Pruner
from .tokens import estimate_messages_tokens

if TYPE_CHECKING:
    from ..session import LiveSession, SessionKey
    from ..skills import SkillLoader, SkillSnapshot
    from ..tools.base import Tool, ToolContext
    from ..tools.policy import Sandbox, ToolPolicy
    from .bootstrap import BootstrapLoader

__all__ = ["ActiveSession", "ContextManager", "SessionContext"]

log = logging.getLogger(__name__)

Emit = Callable[[RunEvent], None]
FLUSH_TOOLS = frozenset({"memory_write", "memory_search", "memory_get", "read", "write", "edit"})
FLUSH_MAX_TURNS = 4
FLUSH_DONE_NOTE = (
    "[Housekeeping done; the user saw none of it. Continue the conversation from where it was "
    "before the housekeeping turn.]"
)


@dataclass
class SessionContext:
    """Context state of one session, kept between requests and runs."""

    pruner: Pruner
    trusted_from: int
    """Usage reports of entries before this index are not used (read from disk: the request they
    measured was built by another process or an older configuration)."""
    flushed_this_cycle: bool


@dataclass
class ActiveSession:
    """A session in memory with its context state: what an agent keeps between runs."""

    session: LiveSession
    context: SessionContext


class _HiddenHistory:
    """The session's history as the memory flush writes it: every entry marked hidden."""

    def __init__(self, session: LiveSession) -> None:
        self._session = session

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self._session.messages

    def append(self, entry: AnyEntry) -> None:
        if isinstance(entry, MessageEntry):
            entry.hidden = True
        self._session.append(entry)


@dataclass
class ContextManager:
    """Builds requests and keeps each session's context inside the window (see module docstring).

    It reaches the model, tools and sandbox only through what the agent hands it here."""

    config: AgentConfig
    model: Callable[[], Model]
    offered_tools: Callable[[], list[Tool]]
    """The tools the agent offers now (after policy and sandbox)."""
    policy: ToolPolicy
    sandbox: Sandbox
    tool_context: Callable[[str], Callable[[str], ToolContext]]
    skill_loader: SkillLoader | None
    system_prompt_extra: str | None = None
    _bootstrap_loader: BootstrapLoader | None = field(default=None, init=False)

    @property
    def workspace(self) -> Path:
        return self.config.workspace_dir

    def attach(self, session: LiveSession) -> ActiveSession:
        """A session just loaded from disk, with fresh context state."""
        pruner = Pruner(context_window_tokens=self.config.context_window_tokens, config=self.config.pruning)
        state = SessionContext(
            pruner=pruner,
            trusted_from=len(session.entries),
            flushed_this_cycle=flushed_since_compaction(session.entries),
        )
        return ActiveSession(session, state)

    # -- the request -----------------------------------------------------------------------

    async def skills(self, session_key: str, emit: Emit) -> SkillSnapshot | None:
        if self.skill_loader is None:
            return None
        try:
            return await self.skill_loader.aload()
        except Exception as exc:  # skills must never break a run
            emit(RunEvent("warning", session_key, text=f"Skills could not be loaded: {exc}"))
            return None

    def user_content(self, text: str, skills: SkillSnapshot | None) -> list[dict[str, Any]]:
        """The user message; a skill the message invokes has its body injected ahead of the input.

        The injection is part of the user turn (and so of the transcript), so follow-up turns still
        know which instructions the agent was following.
        """
        if skills is not None and text.strip():
            from ..skills import match_skill

            match = match_skill(skills, text)
            if match is not None:
                return [
                    {"type": "text", "text": match.injection()},
                    {"type": "text", "text": match.user_text},
                ]
        return [{"type": "text", "text": text}]

    async def base_request(self, key: SessionKey, skills: SkillSnapshot | None, emit: Emit) -> ModelRequest:
        """The request every step of a run starts from: system prompt, tools, limits (no messages)."""
        from ..context.prompt import build_system_prompt

        name = str(key)
        bootstrap = None
        if self.config.enable_context:
            if self._bootstrap_loader is None:
                from .bootstrap import BootstrapLoader

                self._bootstrap_loader = BootstrapLoader(self.workspace, self.config.bootstrap)
            bootstrap = await self._bootstrap_loader.aload(subagent=key.is_subagent)
            for warning in bootstrap.warnings:
                emit(RunEvent("warning", name, text=warning))
        skills_block = ""
        if skills is not None:
            from ..skills import render_skills_prompt

            skills_block, skill_warnings = render_skills_prompt(skills)
            for warning in skill_warnings:
                emit(RunEvent("warning", name, text=warning))
        memory_guidance = None
        if self.config.enable_memory:
            from ..memory import MEMORY_PROMPT_GUIDANCE

            memory_guidance = MEMORY_PROMPT_GUIDANCE
        tools = self.offered_tools()
        prompt = build_system_prompt(
            agent_id=self.config.agent_id,
            tools=tools,
            bootstrap=bootstrap,
            skills_block=skills_block,
            memory_guidance=memory_guidance,
            workspace=self.workspace,
            now=self.now(),
            extra_instructions=self.system_prompt_extra,
        )
        return ModelRequest(
            model=self.config.model,
            messages=[],
            system_stable=prompt.stable,
            system_dynamic=prompt.dynamic,
            tools=[tool.definition() for tool in tools],
            max_tokens=self.config.max_tokens,
            thinking_budget_tokens=self.config.thinking_budget_tokens,
        )

    def now(self) -> datetime:
        from zoneinfo import ZoneInfo

        if self.config.timezone:
            return datetime.now(ZoneInfo(self.config.timezone))
        return datetime.now().astimezone()

    # -- estimates -------------------------------------------------------------------------

    def estimate(self, session: LiveSession, state: SessionContext, request: ModelRequest) -> int:
        """The next request's size: the API's last report plus an estimate of what came since.

        Costs what came since the last reply, not what the history holds: both scans stop at the
        latest assistant turn.
        """
        reported: int | None = None
        entries = session.entries
        for index in range(len(entries) - 1, state.trusted_from - 1, -1):
            entry = entries[index]
            if isinstance(entry, CompactionEntry):
                break
            if isinstance(entry, MessageEntry) and entry.role == "assistant" and entry.usage:
                reported = Usage.from_dict(entry.usage).total_tokens
                break
        messages = session.messages
        if reported is None:
            return self.fixed_tokens(request) + estimate_messages_tokens(messages)
        since = len(messages)
        while since > 0 and messages[since - 1]["role"] != "assistant":
            since -= 1
        return reported + estimate_messages_tokens(messages[since:])

    @staticmethod
    def fixed_tokens(request: ModelRequest) -> int:
        """What every request carries besides the messages: system prompt and tool definitions."""
        tools = sum(len(json.dumps(definition)) for definition in request.tools)
        return estimate_tokens(request.system_stable + request.system_dynamic) + tools // 4

    # -- the policy ------------------------------------------------------------------------

    async def prepare(
        self, session: LiveSession, state: SessionContext, request: ModelRequest, emit: Emit
    ) -> list[dict[str, Any]]:
        """Before each request: memory flush and compaction when due, then pruning by size."""
        if not self.config.enable_context:
            return session.messages
        window = self.config.context_window_tokens
        compaction = self.config.compaction
        if compaction.enabled:
            estimate = self.estimate(session, state, request)
            if (
                self.config.enable_memory
                and not state.flushed_this_cycle
                and should_flush_memory(estimate, window, compaction)
            ):
                await self._memory_flush(session, state, request, estimate)
                estimate = self.estimate(session, state, request)
            if should_compact(estimate, window, compaction):
                await self.compact(session, state, request, emit, reason="threshold")
        # Sized on the full history (the API's usage reflects the pruned request); the pruner
        # measures each message once, so a step costs what it added.
        return state.pruner.prune(session.messages).messages

    async def _memory_flush(
        self, session: LiveSession, state: SessionContext, request: ModelRequest, estimate: int
    ) -> None:
        """One silent turn, before any summary, that lets the model save durable facts to memory."""
        state.flushed_this_cycle = True
        name = str(session.key)
        hidden = _HiddenHistory(session)
        prompt = memory_flush_prompt(self.now().date())
        hidden.append(MessageEntry(role="user", content=[{"type": "text", "text": prompt}]))
        tools = self.flush_tools()
        flush_request = ModelRequest(
            model=request.model,
            messages=[],
            system_stable=request.system_stable,
            system_dynamic=request.system_dynamic,
            tools=[t.definition() for t in tools.values()],
            max_tokens=request.max_tokens,
            metadata={"purpose": "memory_flush"},
        )

        async def unchanged() -> list[dict[str, Any]]:
            return session.messages

        async def no_overflow() -> bool:
            return False

        try:
            outcome = await run_tool_loop(
                model=self.model(),
                history=hidden,
                base_request=flush_request,
                tools=tools,
                policy=self.policy,
                sandbox=self.sandbox,
                hooks=LoopHooks(
                    emit=lambda event: None,
                    prepare=unchanged,
                    on_overflow=no_overflow,
                    tool_context=self.tool_context(name),
                ),
                max_turns=FLUSH_MAX_TURNS,
                session_key=name,
                tool_timeout=self.config.tool_timeout_seconds,
            )
        except ModelError as exc:  # best effort: the user's turn goes on without the flush
            log.warning("memory flush on %s failed: %s", name, exc)
            outcome = LoopOutcome(stop_reason="error")
        session.append(make_flush_marker(estimate))
        if outcome.stop_reason == "aborted":
            # The nested loop absorbed the cancellation to keep its history valid: pass it on,
            # or an abort during the flush would be lost and the run would go on.
            raise asyncio.CancelledError
        # The history must not end with the flush reply: the run's next request would send it as
        # a prefill to continue (refused outright with thinking on). Hand the turn back.
        hidden.append(MessageEntry(role="user", content=[{"type": "text", "text": FLUSH_DONE_NOTE}]))
        if not is_silent_reply(outcome.text):
            log.info("memory flush on %s replied: %s", name, outcome.text[:200])

    async def compact(
        self, session: LiveSession, state: SessionContext, request: ModelRequest, emit: Emit, *, reason: str
    ) -> bool:
        """Summarise the older part of the history; the transcript keeps every entry."""
        window = self.config.context_window_tokens
        reserve, keep_recent = effective_limits(window, self.config.compaction)
        budget = summary_max_tokens(window, self.config.compaction)
        # In a small window the system prompt and tool definitions take a real share: what is
        # kept verbatim must fit beside them, the reserve and the summary.
        room = window - reserve - budget - self.fixed_tokens(request)
        keep_recent = max(min(keep_recent, room), window // 10)
        plan = plan_compaction(session.entries, keep_recent_tokens=keep_recent)
        if plan is None:
            return False
        summary_request = build_summary_request(
            plan,
            model=self.config.model,
            max_tokens=min(budget, self.config.max_tokens),
            max_input_tokens=max(window - budget - 1_000, 256),
        )
        summary, _usage = await summarize(self.model(), summary_request)
        entry = make_compaction_entry(plan, summary, plan.tokens_after(summary))
        session.append(entry)  # the history restarts from the summary; the pruner notices
        state.flushed_this_cycle = False
        emit(
            RunEvent(
                "compaction",
                str(session.key),
                data={
                    "reason": reason,
                    "tokens_before": entry.tokens_before,
                    "tokens_after": entry.tokens_after,
                    "summary": summary,
                },
            )
        )
        return True

    def flush_tools(self) -> Mapping[str, Tool]:
        """The tools the memory flush may use (a subset of what the agent offers)."""
        return {tool.name: tool for tool in self.offered_tools() if tool.name in FLUSH_TOOLS}
