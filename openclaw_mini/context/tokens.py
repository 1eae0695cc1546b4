"""Cheap token estimates shared by pruning and compaction.

No tokenizer ships with the SDK, and a real count would need a network call per request, so the
estimate is characters / 4. CJK characters carry roughly one token each, so each one counts as four
characters ("weighted characters"); otherwise a Chinese or Japanese session would be under-counted
about fourfold and overflow the window before compaction fires.

Everything here is one linear pass; pure-ASCII text (the common case) costs a length lookup only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "CHARS_PER_TOKEN",
    "IMAGE_CHARS",
    "MESSAGE_OVERHEAD_CHARS",
    "block_chars",
    "content_chars",
    "estimate_messages_tokens",
    "estimate_tokens",
    "message_chars",
    "weighted_chars",
]

CHARS_PER_TOKEN = 4
IMAGE_CHARS = 8_000
"""An image counts as this many characters (~2,000 tokens) whatever its byte size."""
_CJK_WEIGHT = CHARS_PER_TOKEN  # one CJK character ~ one token
MESSAGE_OVERHEAD_CHARS = 16  # role markers and block framing
_BLOCK_OVERHEAD_CHARS = 8
_OTHER_BLOCK_CHARS = 200

_CJK = re.compile(
    "["
    "\u1100-\u11ff"  # Hangul Jamo
    "\u2e80-\u2fdf"  # CJK radicals, Kangxi radicals
    "\u3000-\u303f"  # CJK symbols and punctuation
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3100-\u31ff"  # Bopomofo, Hangul compatibility Jamo, Katakana extensions
    "\u3200-\u4dbf"  # enclosed CJK, compatibility, extension A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\ua960-\ua97f"  # Hangul Jamo extended A
    "\uac00-\ud7ff"  # Hangul syllables and Jamo extended B
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\uff00-\uffef"  # half- and full-width forms
    "\U00020000-\U0003134f"  # extensions B..H
    "]"
)


def weighted_chars(text: str) -> int:
    """Length of `text` with each CJK character counted as four."""
    if text.isascii():  # O(1) in CPython: ASCII strings carry a flag
        return len(text)
    cjk = len(_CJK.findall(text))
    return len(text) + cjk * (_CJK_WEIGHT - 1)


def estimate_tokens(text: str) -> int:
    """Estimated tokens of `text` (chars / 4, CJK-aware), rounded up."""
    return -(-weighted_chars(text) // CHARS_PER_TOKEN)


def _value_chars(value: Any) -> int:
    """Approximate JSON size of a tool input without serialising it."""
    if value.__class__ is str:
        return (len(value) if value.isascii() else weighted_chars(value)) + 2
    if isinstance(value, Mapping):
        total = 2
        for key, item in value.items():
            if item.__class__ is str:  # the common case, inlined
                total += len(key) + 6 + (len(item) if item.isascii() else weighted_chars(item))
            else:
                total += len(str(key)) + 4 + _value_chars(item)
        return total
    if isinstance(value, list | tuple):
        return 2 + sum(_value_chars(item) + 1 for item in value)
    if value is None or isinstance(value, bool):
        return 5
    return len(str(value))


def content_chars(content: str | Iterable[Mapping[str, Any]] | None) -> int:
    """Weighted characters of a message's or a tool result's content (string or blocks).

    Runs over every message before every request, so the common block kinds are inlined.
    """
    if content is None:
        return 0
    if isinstance(content, str):
        return len(content) if content.isascii() else weighted_chars(content)
    total = 0
    for block in content:
        kind = block.get("type")
        if kind == "text":
            text = block.get("text", "")
            total += (len(text) if text.isascii() else weighted_chars(text)) + _BLOCK_OVERHEAD_CHARS
        elif kind == "tool_result":
            inner = block.get("content")
            if inner.__class__ is str:
                total += len(inner) if inner.isascii() else weighted_chars(inner)
            else:
                total += content_chars(inner)
            total += _BLOCK_OVERHEAD_CHARS * 3
        elif kind == "tool_use":
            total += len(block.get("name", "")) + _value_chars(block.get("input")) + _BLOCK_OVERHEAD_CHARS * 3
        else:
            total += block_chars(block)
    return total


def block_chars(block: Mapping[str, Any]) -> int:
    """Weighted characters of one content block, as the model would read it."""
    kind = block.get("type")
    if kind == "text":
        return weighted_chars(block.get("text", "")) + _BLOCK_OVERHEAD_CHARS
    if kind == "tool_result":
        return content_chars(block.get("content")) + _BLOCK_OVERHEAD_CHARS * 3
    if kind == "tool_use":
        return len(block.get("name", "")) + _value_chars(block.get("input")) + _BLOCK_OVERHEAD_CHARS * 3
    if kind == "thinking":
        return weighted_chars(block.get("thinking", "")) + _BLOCK_OVERHEAD_CHARS
    if kind == "image":
        return IMAGE_CHARS
    return _OTHER_BLOCK_CHARS


def message_chars(message: Mapping[str, Any]) -> int:
    """Weighted characters of one Messages API message."""
    return content_chars(message.get("content")) + MESSAGE_OVERHEAD_CHARS


def estimate_messages_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Estimated tokens of a message list (one linear pass)."""
    total = 0
    for message in messages:
        total += content_chars(message.get("content")) + MESSAGE_OVERHEAD_CHARS
    return -(-total // CHARS_PER_TOKEN)
