from __future__ import annotations

import copy
from typing import Any

from openclaw_mini.config import PruningConfig
from openclaw_mini.context.pruning import prune_messages, soft_trim_text
from openclaw_mini.context.tokens import IMAGE_CHARS

CONFIG = PruningConfig()


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def call(tool_id: str, text: str = "") -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    blocks.append({"type": "tool_use", "id": tool_id, "name": "read", "input": {"path": f"{tool_id}.txt"}})
    return {"role": "assistant", "content": blocks}


def result(tool_id: str, content: Any) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": content}]}


def answer(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def session_with_big_old_result(size: int = 60_000) -> list[dict[str, Any]]:
    big = "BEGIN" + "x" * (size - 10) + "END!!"
    return [
        user("please look at the log"),
        call("t1"),
        result("t1", big),
        answer("the log is long"),
        user("and now?"),
        call("t2"),
        result("t2", "small output"),
        call("t3"),
        result("t3", "y" * 5_000),
        answer("done"),
    ]


def test_soft_trim_shrinks_old_result_and_leaves_input_alone() -> None:
    messages = session_with_big_old_result()
    snapshot = copy.deepcopy(messages)
    ids = [id(m) for m in messages]
    out = prune_messages(messages, context_window_tokens=40_000, config=CONFIG)

    assert messages == snapshot and [id(m) for m in messages] == ids  # input untouched
    assert out.messages is not messages
    trimmed = out.messages[2]["content"][0]
    assert trimmed["tool_use_id"] == "t1" and trimmed["type"] == "tool_result"
    assert trimmed["content"].startswith("BEGIN") and trimmed["content"].endswith("END!!")
    assert len(trimmed["content"]) < 3_300
    assert "cut from the middle" in trimmed["content"] and "57,000" in trimmed["content"]
    assert out.soft_trimmed == 1 and out.cleared == 0
    assert out.chars_saved > 55_000
    assert out.tokens_after < out.tokens_before
    # Unchanged messages are shared, not copied.
    assert out.messages[0] is messages[0] and out.messages[5] is messages[5]
    # The last three assistant turns and their results are intact (t3's 5,000 chars stay).
    assert out.messages[6:] == messages[6:]


def test_under_threshold_is_untouched() -> None:
    messages = session_with_big_old_result()
    out = prune_messages(messages, context_window_tokens=1_000_000, config=CONFIG)
    assert not out.changed and out.chars_saved == 0
    assert all(a is b for a, b in zip(out.messages, messages, strict=True))


def test_disabled_does_nothing() -> None:
    messages = session_with_big_old_result()
    out = prune_messages(messages, context_window_tokens=10_000, config=PruningConfig(enabled=False))
    assert not out.changed and out.messages == messages


def test_fixed_tokens_count_towards_the_ratio() -> None:
    messages = session_with_big_old_result()
    assert not prune_messages(messages, context_window_tokens=80_000, config=CONFIG).changed
    assert prune_messages(messages, context_window_tokens=80_000, config=CONFIG, fixed_tokens=20_000).changed


def test_last_three_assistant_turns_untouched() -> None:
    messages = [user("go")]
    for index in range(5):
        messages += [call(f"t{index}"), result(f"t{index}", f"{index}" * 30_000)]
    messages.append(answer("finished"))
    out = prune_messages(messages, context_window_tokens=60_000, config=CONFIG)
    # assistants at 1,3,5,7,9,11: the last three start at index 7.
    assert out.messages[7:] == messages[7:]
    for index in (2, 4, 6):
        assert len(out.messages[index]["content"][0]["content"]) < 3_300
    assert out.soft_trimmed == 3


def test_too_few_assistant_turns_nothing_pruned() -> None:
    messages = [user("go"), call("t1"), result("t1", "z" * 200_000), answer("ok")]
    out = prune_messages(messages, context_window_tokens=10_000, config=CONFIG)
    assert not out.changed


def test_nothing_before_first_user_message_is_touched() -> None:
    leading = result("t0", "p" * 50_000)  # setup output before the first real user turn
    messages = [leading, answer("ready"), user("hi")]
    for index in range(1, 5):
        messages += [call(f"t{index}"), result(f"t{index}", "q" * 20_000)]
    messages.append(answer("done"))
    out = prune_messages(messages, context_window_tokens=50_000, config=CONFIG)
    assert out.messages[0] is leading
    assert out.soft_trimmed >= 1


def test_hard_clear_oldest_first_until_under_ratio() -> None:
    messages = [user("start")]
    for index in range(30):  # each result is below the soft-trim minimum
        messages += [call(f"t{index}"), result(f"t{index}", f"{index:02d}" + "r" * 3_898)]
    messages.append(answer("end"))
    snapshot = copy.deepcopy(messages)
    window = 40_000
    out = prune_messages(messages, context_window_tokens=window, config=CONFIG)
    assert messages == snapshot
    assert out.soft_trimmed == 0 and out.cleared > 0
    contents = [
        m["content"][0]["content"] for m in out.messages if m["role"] == "user" and m is not out.messages[0]
    ]
    cleared = [c == CONFIG.cleared_placeholder for c in contents]
    # Oldest first: a run of cleared results followed by intact ones.
    assert cleared == sorted(cleared, reverse=True)
    assert cleared.count(True) == out.cleared
    assert out.tokens_after * 4 < window * 4 * CONFIG.hard_clear_ratio
    # Not more than needed: restoring the last cleared one would put it back over the ratio.
    assert (out.tokens_after * 4 + 3_900) >= window * 4 * CONFIG.hard_clear_ratio - 200
    # ids are kept on every block, so every tool_use still has its tool_result.
    uses = [b["id"] for m in out.messages for b in m["content"] if b["type"] == "tool_use"]
    results = [b["tool_use_id"] for m in out.messages for b in m["content"] if b["type"] == "tool_result"]
    assert uses == results


def test_no_hard_clear_below_min_prunable_chars() -> None:
    messages = [user("start")]
    for index in range(5):
        messages += [call(f"t{index}"), result(f"t{index}", "r" * 3_000)]
    messages.append(answer("end"))
    # 15k prunable chars: above the ratio of a tiny window, but below min_prunable_chars.
    out = prune_messages(messages, context_window_tokens=5_000, config=CONFIG)
    assert out.cleared == 0


def test_list_content_text_and_images() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    old_list = [{"type": "text", "text": "L" * 10_000}, image]
    messages = [user("start"), call("t1"), result("t1", old_list)]
    for index in range(2, 6):
        messages += [call(f"t{index}"), result(f"t{index}", [image])]
    messages.append(answer("end"))
    out = prune_messages(messages, context_window_tokens=30_000, config=CONFIG)
    first = out.messages[2]["content"][0]["content"]
    assert isinstance(first, list)
    assert first[0]["type"] == "text" and len(first[0]["text"]) < 3_300
    assert first[1] is image
    assert old_list[0]["text"] == "L" * 10_000  # input block list untouched

    # With a small window, images get cleared too (they count as IMAGE_CHARS each).
    config = PruningConfig(min_prunable_chars=IMAGE_CHARS)
    out = prune_messages(messages, context_window_tokens=10_000, config=config)
    assert out.cleared >= 1
    assert out.messages[2]["content"][0]["content"] == config.cleared_placeholder


def test_string_content_messages_are_fine() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "plain string"},
        call("t1"),
        result("t1", "s" * 50_000),
        call("t2"),
        result("t2", "ok"),
        call("t3"),
        result("t3", "ok"),
        answer("done"),
    ]
    out = prune_messages(messages, context_window_tokens=30_000, config=CONFIG)
    assert out.soft_trimmed == 1


def test_soft_trim_text_short_text_unchanged() -> None:
    assert soft_trim_text("abc", 10, 10) == "abc"
    trimmed = soft_trim_text("a" * 100 + "b" * 100, 10, 5)
    assert trimmed.startswith("a" * 10) and trimmed.endswith("b" * 5) and "185" in trimmed


def test_cjk_results_are_trimmed_by_weighted_size() -> None:
    cjk = "漢字" * 1_500  # 3,000 characters, ~3,000 tokens: as heavy as 12,000 ASCII characters
    ascii_text = "a" * 3_000  # ~750 tokens: below the trim minimum
    messages = [user("go"), call("t1"), result("t1", cjk), call("t2"), result("t2", ascii_text)]
    messages += [call("t3"), result("t3", "ok"), call("t4"), result("t4", "ok"), answer("done")]
    out = prune_messages(
        messages, context_window_tokens=8_000, config=PruningConfig(min_prunable_chars=10**9)
    )
    assert out.soft_trimmed == 1
    trimmed = out.messages[2]["content"][0]["content"]
    assert trimmed.startswith("漢字" * 180) and trimmed.endswith("漢字" * 180)
    assert len(trimmed) < 1_000  # 1,500 + 1,500 weighted characters kept ~ 750 CJK characters
    assert out.messages[4] is messages[4]
