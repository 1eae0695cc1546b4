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

__all__ = ["PruneResult", "Pruner", "prune_messages", "soft_trim_text"]


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
    is over the thresholds. A one-off `Pruner`: a session that grows uses one `Pruner` for life.
    """
    return Pruner(context_window_tokens=context_window_tokens, config=config).prune(
        messages, fixed_tokens=fixed_tokens
    )


class Pruner:
    """Pruning of one growing history that costs, per request, what was added since the last one.

    The history only grows at its end (a merge replaces the last message; a compaction replaces
    the list, which is noticed by identity and starts over). Sizes are measured once per message;
    tool results are soft-trimmed once, when they leave the protected tail; the hard clear moves
    forward through the oldest results and never restores one, which also keeps the pruned prefix
    stable for the prompt cache. The pruned list is shared with the caller and valid until the
    next `prune` call (requests are sent before that).
    """

    def __init__(self, *, context_window_tokens: int, config: PruningConfig) -> None:
        self.context_window_tokens = context_window_tokens
        self.config = config
        self._reset()

    def _reset(self) -> None:
        self._source: list[dict[str, Any]] = []
        """The messages seen so far (compared by identity)."""
        self._out: list[dict[str, Any]] = []
        """The pruned history: `_source` with changed messages copied."""
        self._sizes: list[int] = []
        self._total = 0
        self._saved = 0
        self._assistants: list[int] = []
        self._first_user: int | None = None
        self._scanned = 0
        """Messages before this index have given their tool results to `_candidates`."""
        self._candidates: list[list[int]] = []
        """[message index, block index, current size] of each prunable tool result, oldest first."""
        self._candidate_chars = 0
        self._next_clear = 0
        self._copied: set[int] = set()
        self._soft_trimmed = 0
        self._cleared = 0

    def prune(self, messages: list[dict[str, Any]], *, fixed_tokens: int = 0) -> PruneResult:
        self._sync(messages)
        config = self.config
        total = fixed_tokens * CHARS_PER_TOKEN + self._total
        char_window = self.context_window_tokens * CHARS_PER_TOKEN
        if config.enabled and char_window > 0 and total >= char_window * config.soft_trim_ratio:
            self._collect(self._protect_from())
            target = char_window * config.hard_clear_ratio
            if total - self._saved >= target and self._candidate_chars >= config.min_prunable_chars:
                self._hard_clear(total, target)
        pruned = self._out if self._copied else self._source
        return PruneResult(
            messages=pruned,
            soft_trimmed=self._soft_trimmed,
            cleared=self._cleared,
            chars_saved=self._saved,
            tokens_before=-(-total // CHARS_PER_TOKEN),
            tokens_after=-(-(total - self._saved) // CHARS_PER_TOKEN),
        )

    def _sync(self, messages: list[dict[str, Any]]) -> None:
        """Take in what changed since the last call: new messages, or a replaced last one."""
        source = self._source
        seen = len(source)
        if seen and (len(messages) < seen or messages[0] is not source[0]):
            self._reset()
            source, seen = self._source, 0
        if seen and messages[seen - 1] is not source[seen - 1]:  # the last message was merged into
            last = seen - 1
            if last < self._scanned or last in self._copied:
                self._reset()
                source, seen = self._source, 0
            else:
                self._total -= self._sizes.pop()
                source.pop()
                self._out.pop()
                if self._assistants and self._assistants[-1] == last:
                    self._assistants.pop()
                if self._first_user == last:
                    self._first_user = None
                seen = last
        for index in range(seen, len(messages)):
            message = messages[index]
            size = content_chars(message.get("content")) + MESSAGE_OVERHEAD_CHARS
            self._sizes.append(size)
            self._total += size
            source.append(message)
            self._out.append(message)
            if message.get("role") == "assistant":
                self._assistants.append(index)
            elif self._first_user is None and _is_user_turn(message):
                self._first_user = index

    def _protect_from(self) -> int:
        """Start of the protected tail: the last `keep_last_assistants` assistant messages on."""
        keep = self.config.keep_last_assistants
        if keep <= 0:
            return len(self._source)
        if len(self._assistants) < keep:
            return 0  # not enough assistant turns yet: nothing is old
        return self._assistants[-keep]

    def _collect(self, protect_from: int) -> None:
        """Soft-trim the tool results that left the protected tail since the last call."""
        if self._first_user is None:
            return
        config = self.config
        for index in range(max(self._scanned, self._first_user + 1), protect_from):
            message = self._source[index]
            content = message.get("content")
            if message.get("role") != "user" or not isinstance(content, list):
                continue
            for block_index, block in enumerate(content):
                if block.get("type") != "tool_result":
                    continue
                size = content_chars(block.get("content"))
                if size > config.soft_trim_min_chars:  # else too short to trim
                    trimmed = _trim_content(block.get("content"), config)
                    if trimmed is not None:
                        self._replace(index, block_index, trimmed)
                        new_size = content_chars(trimmed)
                        self._saved += size - new_size
                        size = new_size
                        self._soft_trimmed += 1
                self._candidates.append([index, block_index, size])
                self._candidate_chars += size
        self._scanned = max(self._scanned, protect_from)

    def _hard_clear(self, total: int, target: float) -> None:
        """Replace the oldest results by the placeholder until the history is under `target`."""
        placeholder = self.config.cleared_placeholder
        placeholder_size = weighted_chars(placeholder)
        candidates = self._candidates
        while self._next_clear < len(candidates) and total - self._saved >= target:
            candidate = candidates[self._next_clear]
            self._next_clear += 1
            index, block_index, size = candidate
            if size <= placeholder_size:
                continue
            self._replace(index, block_index, placeholder)
            self._saved += size - placeholder_size
            self._candidate_chars -= size - placeholder_size
            candidate[2] = placeholder_size
            self._cleared += 1

    def _replace(self, index: int, block_index: int, new_content: Any) -> None:
        """Swap one block's content, copying the message and block (never the input's)."""
        out = self._out
        if index not in self._copied:
            out[index] = {**out[index], "content": list(out[index]["content"])}
            self._copied.add(index)
        blocks = out[index]["content"]
        blocks[block_index] = {**blocks[block_index], "content": new_content}
