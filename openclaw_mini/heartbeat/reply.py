"""What to do with a heartbeat reply: strip the `HEARTBEAT_OK` ack, decide whether to deliver.

Models decorate the token (`**HEARTBEAT_OK**`, `<b>HEARTBEAT_OK</b>`, `HEARTBEAT_OK!!!`), so it is
recognised at the start or the end of the reply with markdown/HTML around it and up to four
trailing punctuation characters. A token in the middle of a sentence is left alone (it is part of
what the model is saying). Only the final text is judged, never a stream, so the token cannot leak
to the user half-way through a reply (an upstream complaint).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["HEARTBEAT_OK", "ReplyDecision", "decide_reply", "strip_heartbeat_ok"]

HEARTBEAT_OK = "HEARTBEAT_OK"
MAX_TRAILING_PUNCTUATION = 4

_MARKUP = r"(?:\*{1,3}|_{1,3}|`{1,3}|~~|</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?>)"
_PUNCT_CHARS = ".!?,;:…。！？、-–—"
_PUNCT = "[" + re.escape(_PUNCT_CHARS) + "]"
_TAIL = rf"(?P<tail>(?:\s*(?:{_MARKUP}|{_PUNCT}))*)"
_START = re.compile(rf"^\s*(?:{_MARKUP}\s*)*{HEARTBEAT_OK}{_TAIL}(?=\s|$)")
_END = re.compile(rf"(?:(?<=\s)|^)(?:{_MARKUP}\s*)*{HEARTBEAT_OK}{_TAIL}\s*$")
_NOTHING_LEFT = re.compile(rf"^(?:\s|{_MARKUP}|{_PUNCT})*$")
"""What is left of `... HEARTBEAT_OK !!!` after the token: no words, so nothing to say."""


def _punctuation_in(tail: str) -> str:
    return "".join(ch for ch in re.sub(_MARKUP, "", tail) if ch in _PUNCT_CHARS)


def strip_heartbeat_ok(text: str) -> tuple[str, bool]:
    """`text` without a leading and/or trailing ack token, and whether one was found.

    A remainder of only punctuation and markup counts as nothing. When a trailing token is cut
    from a sentence that has no final punctuation of its own, the token's punctuation moves onto
    the sentence (`Check the oven HEARTBEAT_OK.` -> `Check the oven.`).
    """
    rest = text.strip()
    found = False
    match = _START.match(rest)
    if match and len(_punctuation_in(match.group("tail"))) <= MAX_TRAILING_PUNCTUATION:
        rest, found = rest[match.end() :].strip(), True
    if rest:
        match = _END.search(rest)
        punctuation = _punctuation_in(match.group("tail")) if match else ""
        if match and len(punctuation) <= MAX_TRAILING_PUNCTUATION:
            rest, found = rest[: match.start()].strip(), True
            if rest and punctuation and rest[-1] not in _PUNCT_CHARS and not _NOTHING_LEFT.match(rest):
                rest += punctuation
    if found and _NOTHING_LEFT.match(rest):
        rest = ""
    return rest, found


@dataclass(frozen=True)
class ReplyDecision:
    """`deliver` is the text to send (None: send nothing); `reason` says why, for the log."""

    deliver: str | None
    reason: str
    acknowledged: bool = False


def decide_reply(text: str, ack_max_chars: int = 300) -> ReplyDecision:
    """Deliver a reply unless it is empty or an ack (token + at most `ack_max_chars` of remainder)."""
    if not text.strip():
        return ReplyDecision(None, "empty reply")
    rest, found = strip_heartbeat_ok(text)
    if found and len(rest) <= ack_max_chars:
        return ReplyDecision(None, "HEARTBEAT_OK", acknowledged=True)
    if not rest:
        return ReplyDecision(None, "empty reply")
    return ReplyDecision(rest if found else text.strip(), "reply", acknowledged=found)
