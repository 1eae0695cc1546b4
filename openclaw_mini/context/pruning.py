"""In-memory pruning of old tool results before each request.

Old tool output (file dumps, command logs) is the bulk of a long session and rarely matters once
the model has acted on it. Before every request, by size (upstream waited for the prompt cache to
expire, so busy sessions never pruned): above `soft_trim_ratio` of the window, long results keep
only their head and tail; above `hard_clear_ratio`, the oldest results are replaced by a
placeholder until the estimate is under the ratio again. The transcript on disk is never touched,
and neither are the input messages: changed messages and blocks are copied, the rest shared.

Protected: everything up to the first real user message (setup context), and the last
`keep_last_assistants` assistant messages with the tool results answering them. Blocks keep their
`tool_use_id`, so a tool_use is never separated from its result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import PruningConfig
from .tokens import CHARS_PER_TOKEN, MESSAGE_OVERHEAD_CHARS, content_chars, weighted_chars

__all__ = ["PruneResult", "prune_messages", "soft_trim_text"]


@dataclass
class PruneResult:
    messages: list[dict[str, Any]]
    soft_trimmed: int = 0
    cleared: int = 0
    chars_saved: int = 0
    tokens_before: int = 0
    """Estimated tokens of the messages (plus `fixed_tokens`) before pruning."""
    tokens_after: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.soft_trimmed or self.cleared)


def soft_trim_text(text: str, head_chars: int, tail_chars: int) -> str:
    """Head and tail of `text` with a note saying how much of the middle was cut."""
    cut = len(text) - head_chars - tail_chars
    if cut <= 0:
        return text
    tail = text[len(text) - tail_chars :] if tail_chars else ""
    return (
        f"{text[:head_chars]}\n\n[... {cut:,} of {len(text):,} characters were cut from the middle of this "
        f"old tool result to save context; run the tool again if you need them ...]\n\n{tail}"
    )


def _is_user_turn(message: dict[str, Any]) -> bool:
    """A user message that is not only tool results (a real turn, not a tool answer)."""
    if message.get("role") != "user":
        return False
    content = message.get("content")
    if isinstance(content, str):
        return True
    return any(block.get("type") != "tool_result" for block in content or ())


def _trim_text(text: str, config: PruningConfig) -> str | None:
    """Head + tail of a long text, sized in weighted characters so CJK output is trimmed alike."""
    weighted = weighted_chars(text)
    if weighted <= config.soft_trim_min_chars:
        return None
    scale = len(text) / weighted  # 1.0 for ASCII, down to 0.25 for pure CJK
    head = int(config.soft_trim_head_chars * scale)
    tail = int(config.soft_trim_tail_chars * scale)
    if head + tail >= len(text):
        return None
    return soft_trim_text(text, head, tail)


def _trim_content(content: Any, config: PruningConfig) -> Any | None:
    """Soft-trimmed tool_result content, or None when it is not long enough to trim."""
    if isinstance(content, str):
        return _trim_text(content, config)
    if not isinstance(content, list):
        return None
    joined = "\n".join(block.get("text", "") for block in content if block.get("type") == "text")
    trimmed = _trim_text(joined, config)
    if trimmed is None:
        return None
    # Images are left for the hard clear: trimming does not make them smaller.
    return [{"type": "text", "text": trimmed}, *(block for block in content if block.get("type") != "text")]


def prune_messages(
    messages: list[dict[str, Any]],
    *,
    context_window_tokens: int,
    config: PruningConfig,
    fixed_tokens: int = 0,
) -> PruneResult:
    """Return a pruned copy of `messages` (the input list and dicts are never modified).

    `fixed_tokens` is what the request carries besides the messages (system prompt, tool
    definitions): it counts towards the ratios but is never pruned. One linear pass when nothing
    is over the thresholds.
    """
    total = fixed_tokens * CHARS_PER_TOKEN + MESSAGE_OVERHEAD_CHARS * len(messages)
    for message in messages:
        total += content_chars(message.get("content"))
    tokens = -(-total // CHARS_PER_TOKEN)
    result = PruneResult(messages=list(messages), tokens_before=tokens, tokens_after=tokens)
    char_window = context_window_tokens * CHARS_PER_TOKEN
    if not config.enabled or char_window <= 0 or total < char_window * config.soft_trim_ratio:
        return result

    # Prunable range: after the first real user message, before the protected last assistants.
    first_user = next((i for i, m in enumerate(messages) if _is_user_turn(m)), None)
    if first_user is None:
        return result
    protect_from = len(messages)
    if config.keep_last_assistants > 0:
        seen = 0
        for index in range(len(messages) - 1, -1, -1):
            if messages[index].get("role") == "assistant":
                seen += 1
                if seen == config.keep_last_assistants:
                    protect_from = index
                    break
        else:
            return result  # not enough assistant turns yet: nothing is old
    # [message index, block index, content size] of each prunable tool_result, oldest first.
    candidates: list[list[int]] = []
    for index in range(first_user + 1, protect_from):
        message = messages[index]
        content = message.get("content")
        if message.get("role") != "user" or not isinstance(content, list):
            continue
        for block_index, block in enumerate(content):
            if block.get("type") == "tool_result":
                candidates.append([index, block_index, content_chars(block.get("content"))])
    if not candidates:
        return result

    out = result.messages
    copied: set[int] = set()

    def replace(index: int, block_index: int, new_content: Any) -> None:
        """Swap one block's content, copying the message and block (never the input's)."""
        if index not in copied:
            out[index] = {**out[index], "content": list(out[index]["content"])}
            copied.add(index)
        blocks = out[index]["content"]
        blocks[block_index] = {**blocks[block_index], "content": new_content}

    saved = 0
    min_chars = config.soft_trim_min_chars
    for candidate in candidates:
        index, block_index, size = candidate
        if size <= min_chars:
            continue  # the text's weighted size is at most this: too short to trim
        trimmed = _trim_content(out[index]["content"][block_index].get("content"), config)
        if trimmed is not None:
            replace(index, block_index, trimmed)
            new_size = content_chars(trimmed)
            saved += size - new_size
            candidate[2] = new_size
            result.soft_trimmed += 1

    target = char_window * config.hard_clear_ratio
    if total - saved >= target and sum(c[2] for c in candidates) >= config.min_prunable_chars:
        placeholder = config.cleared_placeholder
        placeholder_size = weighted_chars(placeholder)
        for index, block_index, size in candidates:
            if total - saved < target:
                break
            if size <= placeholder_size:
                continue
            replace(index, block_index, placeholder)
            saved += size - placeholder_size
            result.cleared += 1

    result.chars_saved = saved
    result.tokens_after = -(-(total - saved) // CHARS_PER_TOKEN)
    return result
