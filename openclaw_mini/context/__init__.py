"""What the model sees: bootstrap files, the system prompt, pruning and compaction.

Names load on first use, so `from openclaw_mini.context.bootstrap import BOOTSTRAP_FILES` (the CLI's
`init`, which must start fast) does not pull in compaction, pruning and the prompt builder.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_LAZY = {
    "BOOTSTRAP_FILES": "bootstrap",
    "SUBAGENT_BOOTSTRAP_FILES": "bootstrap",
    "BootstrapContext": "bootstrap",
    "BootstrapFile": "bootstrap",
    "BootstrapLoader": "bootstrap",
    "MEMORY_FLUSH_PROMPT": "compaction",
    "CompactionPlan": "compaction",
    "build_summary_request": "compaction",
    "effective_limits": "compaction",
    "estimate_context_tokens": "compaction",
    "flushed_since_compaction": "compaction",
    "is_silent_reply": "compaction",
    "make_compaction_entry": "compaction",
    "make_flush_marker": "compaction",
    "memory_flush_prompt": "compaction",
    "plan_compaction": "compaction",
    "should_compact": "compaction",
    "should_flush_memory": "compaction",
    "summarize": "compaction",
    "summary_max_tokens": "compaction",
    "SystemPrompt": "prompt",
    "build_system_prompt": "prompt",
    "PruneResult": "pruning",
    "prune_messages": "pruning",
    "estimate_messages_tokens": "tokens",
    "estimate_tokens": "tokens",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


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
