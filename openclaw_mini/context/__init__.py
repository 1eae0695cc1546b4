"""What the model sees: bootstrap files, the system prompt, pruning and compaction."""

from __future__ import annotations

from .bootstrap import (
    BOOTSTRAP_FILES,
    SUBAGENT_BOOTSTRAP_FILES,
    BootstrapContext,
    BootstrapFile,
    BootstrapLoader,
)
from .compaction import (
    MEMORY_FLUSH_PROMPT,
    CompactionPlan,
    build_summary_request,
    effective_limits,
    estimate_context_tokens,
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
from .prompt import SystemPrompt, build_system_prompt
from .pruning import PruneResult, prune_messages
from .tokens import estimate_messages_tokens, estimate_tokens

__all__ = [
    "BOOTSTRAP_FILES",
    "MEMORY_FLUSH_PROMPT",
    "SUBAGENT_BOOTSTRAP_FILES",
    "BootstrapContext",
    "BootstrapFile",
    "BootstrapLoader",
    "CompactionPlan",
    "PruneResult",
    "SystemPrompt",
    "build_summary_request",
    "build_system_prompt",
    "effective_limits",
    "estimate_context_tokens",
    "estimate_messages_tokens",
    "estimate_tokens",
    "flushed_since_compaction",
    "is_silent_reply",
    "make_compaction_entry",
    "make_flush_marker",
    "memory_flush_prompt",
    "plan_compaction",
    "prune_messages",
    "should_compact",
    "should_flush_memory",
    "summarize",
    "summary_max_tokens",
]
