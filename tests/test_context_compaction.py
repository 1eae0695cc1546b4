from __future__ import annotations

import random
from datetime import date
from typing import Any

import pytest

from openclaw_mini.config import CompactionConfig
from openclaw_mini.context.compaction import (
    MEMORY_FLUSH_PROMPT,
    SUMMARY_SYSTEM_PROMPT,
    build_summary_request,
    effective_limits,
    entry_tokens,
    estimate_context_tokens,
    flushed_since_compaction,
    is_silent_reply,
    make_compaction_entry,
    make_flush_marker,
    memory_flush_prompt,
    memory_flush_threshold,
    plan_compaction,
    serialize_entries,
    should_compact,
    should_flush_memory,
    summarize,
    summary_max_tokens,
)
from openclaw_mini.context.tokens import estimate_messages_tokens, estimate_tokens
from openclaw_mini.llm import ModelError
from openclaw_mini.testing import ScriptedModel, text_reply
from openclaw_mini.transcript import (
    COMPACTION_PREFIX,
    CompactionEntry,
    CustomEntry,
    MessageEntry,
    build_messages,
)

AnyEntry = MessageEntry | CompactionEntry | CustomEntry
CONFIG = CompactionConfig()


def user(text: str) -> MessageEntry:
    return MessageEntry(role="user", content=[{"type": "text", "text": text}])


def assistant(text: str) -> MessageEntry:
    return MessageEntry(role="assistant", content=[{"type": "text", "text": text}])


def tool_call(tool_id: str, *, name: str = "read", args: dict[str, Any] | None = None) -> MessageEntry:
    return MessageEntry(
        role="assistant",
        content=[
            {"type": "tool_use", "id": tool_id, "name": name, "input": args or {"path": f"{tool_id}.py"}},
        ],
    )


def tool_result(tool_id: str, text: str, *, error: bool = False) -> MessageEntry:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_id, "content": text}
    if error:
        block["is_error"] = True
    return MessageEntry(role="user", content=[block])


def agentic_session(turns: int, *, seed: int = 7, result_chars: int = 800) -> list[AnyEntry]:
    """User turns with 0-4 tool round trips each: a realistic shape for cut-point tests."""
    rng = random.Random(seed)
    entries: list[AnyEntry] = []
    counter = 0
    for turn in range(turns):
        entries.append(user(f"request {turn}: " + "u" * rng.randint(10, 400)))
        for _ in range(rng.randint(0, 4)):
            counter += 1
            entries.append(tool_call(f"toolu_{counter}"))
            entries.append(tool_result(f"toolu_{counter}", "r" * rng.randint(10, result_chars)))
        entries.append(assistant(f"answer {turn}: " + "a" * rng.randint(10, 400)))
    return entries


# -- estimates ---------------------------------------------------------------------------------


def test_cjk_counts_heavier() -> None:
    assert estimate_tokens("abcd" * 100) == 100
    assert estimate_tokens("你好世界" * 100) == 400  # one token per ideograph
    assert estimate_tokens("こんにちは") == 5 and estimate_tokens("안녕하세요") == 5
    assert estimate_tokens("café") == 1  # non-CJK accents are not weighted
    mixed = estimate_tokens("hello 世界")
    assert mixed == -(-(8 + 2 * 4) // 4)


def test_messages_estimate_covers_every_block_kind() -> None:
    messages = [
        {"role": "user", "content": "x" * 400},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "t" * 400, "signature": "sig"},
                {
                    "type": "tool_use",
                    "id": "a",
                    "name": "write",
                    "input": {"path": "p", "content": "c" * 4_000},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "a",
                    "content": [
                        {"type": "text", "text": "ok" * 200},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "A" * 90_000},
                        },
                    ],
                }
            ],
        },
    ]
    tokens = estimate_messages_tokens(messages)
    assert 100 + 100 + 1_000 + 100 + 2_000 <= tokens <= 3_600  # image counts fixed, not its base64


def test_estimate_context_prefers_reported_usage() -> None:
    messages = [{"role": "user", "content": "x" * 4_000}, {"role": "assistant", "content": "y" * 400}]
    assert estimate_context_tokens(messages, fixed_tokens=500) == 500 + estimate_messages_tokens(messages)
    new = [*messages, {"role": "user", "content": "z" * 40}]
    assert estimate_context_tokens(new, reported_tokens=5_000, reported_messages=2) == (
        5_000 + estimate_messages_tokens(new[2:])
    )


# -- thresholds --------------------------------------------------------------------------------


def test_default_limits_for_a_large_window() -> None:
    assert effective_limits(200_000, CONFIG) == (20_000, 20_000)
    assert not should_compact(180_000, 200_000, CONFIG)
    assert should_compact(180_001, 200_000, CONFIG)
    assert memory_flush_threshold(200_000, CONFIG) == 176_000
    assert should_flush_memory(176_000, 200_000, CONFIG) and not should_flush_memory(175_999, 200_000, CONFIG)
    assert summary_max_tokens(200_000, CONFIG) == CONFIG.summary_max_tokens


def test_small_window_limits_scale_down() -> None:
    reserve, keep = effective_limits(6_000, CONFIG)
    assert (reserve, keep) == (1_500, 3_000)
    assert not should_compact(4_500, 6_000, CONFIG) and should_compact(4_501, 6_000, CONFIG)
    flush_at = memory_flush_threshold(6_000, CONFIG)
    assert 4_000 <= flush_at < 4_500  # shortly before compaction, not right after the last one
    assert summary_max_tokens(6_000, CONFIG) == 750
    # keep-recent + summary budget leave room below the trigger
    assert keep + summary_max_tokens(6_000, CONFIG) < 6_000 - reserve


def test_disabled_switches() -> None:
    assert not should_compact(10**9, 6_000, CompactionConfig(enabled=False))
    assert not should_flush_memory(10**9, 6_000, CompactionConfig(memory_flush=False))


# -- planning ------------------------------------------------------------------------------------


def _check_pairs_stay_together(plan_older: list[AnyEntry], kept: list[AnyEntry]) -> None:
    def ids(entries: list[AnyEntry], kind: str, key: str) -> set[str]:
        return {
            block[key]
            for entry in entries
            if isinstance(entry, MessageEntry)
            for block in entry.content
            if block.get("type") == kind
        }

    assert ids(kept, "tool_use", "id") == ids(kept, "tool_result", "tool_use_id")
    assert ids(plan_older, "tool_use", "id") == ids(plan_older, "tool_result", "tool_use_id")


@pytest.mark.parametrize("keep_recent", [0, 200, 1_000, 3_000, 8_000, 50_000])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_plan_cuts_only_at_user_turns(keep_recent: int, seed: int) -> None:
    entries = agentic_session(30, seed=seed)
    plan = plan_compaction(entries, keep_recent_tokens=keep_recent)
    assert plan is not None
    first = plan.kept[0]
    assert isinstance(first, MessageEntry) and first.role == "user"
    assert all(block["type"] != "tool_result" for block in first.content)
    assert plan.first_kept_id == first.id
    assert plan.older + plan.kept == entries
    _check_pairs_stay_together(plan.older, plan.kept)
    kept_tokens = sum(entry_tokens(e) for e in plan.kept)
    assert plan.kept_tokens == kept_tokens
    last_user = max(
        i
        for i, e in enumerate(entries)
        if isinstance(e, MessageEntry) and e.role == "user" and e.content[0]["type"] == "text"
    )
    if kept_tokens > keep_recent:
        assert entries.index(first) == last_user  # only when the last turn alone is larger
    else:
        # The earliest possible cut: one user turn earlier would keep more than keep_recent.
        earlier = [
            i
            for i, e in enumerate(entries[: entries.index(first)])
            if isinstance(e, MessageEntry) and e.role == "user" and e.content[0]["type"] == "text"
        ]
        if len(earlier) > 1:
            assert sum(entry_tokens(e) for e in entries[earlier[-1] :]) > keep_recent

    # The history rebuilt after compaction keeps every pair intact (no synthetic results needed).
    entry = make_compaction_entry(plan, "SUMMARY", 123)
    messages = build_messages([*entries, entry])
    assert messages[0]["content"][0]["text"] == COMPACTION_PREFIX + "SUMMARY"
    uses = [b["id"] for m in messages for b in m["content"] if b["type"] == "tool_use"]
    results = [b["tool_use_id"] for m in messages for b in m["content"] if b["type"] == "tool_result"]
    assert uses == results
    assert all(not b.get("is_error") for m in messages for b in m["content"] if b["type"] == "tool_result")


def test_plan_with_one_giant_turn_has_nothing_to_cut() -> None:
    entries: list[AnyEntry] = [user("do everything")]
    for index in range(50):
        entries += [tool_call(f"t{index}"), tool_result(f"t{index}", "x" * 5_000)]
    assert plan_compaction(entries, keep_recent_tokens=1_000) is None
    entries += [assistant("done"), user("next"), assistant("ok")]
    plan = plan_compaction(entries, keep_recent_tokens=1_000)
    assert plan is not None and plan.kept[0].content[0]["text"] == "next"  # type: ignore[union-attr]


def test_chained_compaction_uses_previous_summary_and_only_new_entries() -> None:
    entries = agentic_session(20, seed=5)
    first = plan_compaction(entries, keep_recent_tokens=1_500)
    assert first is not None and first.previous_summary is None
    compaction = make_compaction_entry(first, "EARLIER SUMMARY: user wants /srv/app/main.py fixed", 900)
    assert compaction.first_kept_id == first.first_kept_id and compaction.tokens_before == first.tokens_before
    history: list[AnyEntry] = [*entries, compaction, *agentic_session(20, seed=6)]

    second = plan_compaction(history, keep_recent_tokens=1_500)
    assert second is not None
    assert second.previous_summary == "EARLIER SUMMARY: user wants /srv/app/main.py fixed"
    assert second.older[0] is first.kept[0]  # starts at the previous first kept entry
    assert compaction not in second.older and compaction not in second.kept
    assert second.tokens_before >= estimate_tokens(second.previous_summary)

    request = build_summary_request(second, model="m", max_tokens=1_000)
    text = request.messages[0]["content"][0]["text"]
    assert "EARLIER SUMMARY: user wants /srv/app/main.py fixed" in text
    assert "<previous-summary>" in text and "Update the summary" in text
    assert text.index("<previous-summary>") < text.index("<conversation>")
    # The older part of the first compaction is not re-sent: the summary already covers it.
    assert first.older[0].content[0]["text"] not in text  # type: ignore[union-attr]


def test_summary_request_shape() -> None:
    entries: list[AnyEntry] = [
        user("Please fix the bug in src/app.py, keep the API stable."),
        tool_call("t1", name="read", args={"path": "src/app.py"}),
        tool_result("t1", "L" * 5_000),
        tool_call("t2", name="exec", args={"command": "pytest -x " + "-v " * 200}),
        tool_result("t2", "E   KeyError: 'user_id'", error=True),
        MessageEntry(role="user", hidden=True, content=[{"type": "text", "text": "SILENT FLUSH PROMPT"}]),
        CustomEntry(custom_type="subagent", message="sub-agent finished: 3 files changed"),
        assistant("Fixed: the handler now checks user_id."),
        user("thanks, now the docs"),
        assistant("On it."),
    ]
    plan = plan_compaction(entries, keep_recent_tokens=10)
    assert plan is not None and plan.first_kept_id == entries[8].id
    request = build_summary_request(plan, model="claude-x", max_tokens=777)
    assert request.metadata == {"purpose": "compaction"}
    assert request.tools == [] and request.max_tokens == 777 and request.model == "claude-x"
    assert len(request.messages) == 1 and request.messages[0]["role"] == "user"
    for section in (
        "Goal",
        "Constraints & Preferences",
        "Progress",
        "Done",
        "In Progress",
        "Blocked",
        "Key Decisions",
        "Next Steps",
        "Critical Context",
    ):
        assert section in request.system_stable
    assert "language" in request.system_stable and request.system_stable == SUMMARY_SYSTEM_PROMPT
    text = request.messages[0]["content"][0]["text"]
    assert "[User]: Please fix the bug in src/app.py" in text
    assert '[Tool call]: read({"path": "src/app.py"})' in text
    assert "[Tool result]: " + "L" * 2_000 + " ... [3,000 more characters]" in text
    assert "L" * 2_001 not in text
    assert "[Tool call]: exec(" in text and "more characters]" in text.split("[Tool call]: exec(")[1]
    assert "[Tool result (error)]: E   KeyError: 'user_id'" in text
    assert "[Note]: sub-agent finished" in text
    assert "[Assistant]: Fixed: the handler" in text
    assert "SILENT FLUSH PROMPT" not in text
    assert "thanks, now the docs" not in text  # kept part is not summarised
    assert "<previous-summary>" not in text


def test_serialize_with_budget_drops_oldest_first() -> None:
    entries = [user(f"message number {i} " + "w" * 400) for i in range(50)]
    text = serialize_entries(entries, max_tokens=1_000)
    assert estimate_tokens(text) <= 1_100
    assert "message number 49" in text and "message number 0 " not in text
    assert text.startswith("[... ") and "earlier items were left out" in text


def test_tokens_after_counts_summary_and_kept() -> None:
    entries = agentic_session(10)
    plan = plan_compaction(entries, keep_recent_tokens=500)
    assert plan is not None
    after = plan.tokens_after("short summary")
    rebuilt = build_messages([*entries, make_compaction_entry(plan, "short summary", after)])
    assert abs(after - estimate_messages_tokens(rebuilt)) <= 20
    assert after < plan.tokens_before


# -- summarize -----------------------------------------------------------------------------------


async def test_summarize_consumes_the_stream() -> None:
    model = ScriptedModel(
        [text_reply("## Goal\nFix the bug.\n", usage={"input_tokens": 900, "output_tokens": 40})]
    )
    plan = plan_compaction(agentic_session(6), keep_recent_tokens=100)
    assert plan is not None
    request = build_summary_request(plan, model="m", max_tokens=500)
    summary, usage = await summarize(model, request)
    assert summary == "## Goal\nFix the bug."
    assert usage.input_tokens == 900 and usage.output_tokens == 40
    assert model.requests == [request]


async def test_summarize_empty_reply_is_an_error() -> None:
    model = ScriptedModel([text_reply("   ")])
    plan = plan_compaction(agentic_session(6), keep_recent_tokens=100)
    assert plan is not None
    with pytest.raises(ModelError, match="empty"):
        await summarize(model, build_summary_request(plan, model="m", max_tokens=500))


# -- a long session in a small window ------------------------------------------------------------


async def test_forty_turns_in_a_small_window_stay_inside_and_keep_the_transcript() -> None:
    window = 6_000
    reserve, keep_recent = effective_limits(window, CONFIG)
    system_tokens = 600
    transcript: list[AnyEntry] = []
    summaries: list[str] = []
    flushes = 0

    def model_handler(request: Any) -> Any:
        previous = "<previous-summary>" in request.messages[0]["content"][0]["text"]
        summaries.append("chained" if previous else "fresh")
        return text_reply(f"## Goal\nsummary {len(summaries)} " + "s" * 1_200)

    model = ScriptedModel(handler=model_handler)
    rng = random.Random(3)
    counter = 0
    for turn in range(40):
        transcript.append(user(f"user message {turn} " + "u" * rng.randint(100, 600)))
        for _ in range(rng.randint(0, 2)):
            counter += 1
            transcript += [
                tool_call(f"t{counter}"),
                tool_result(f"t{counter}", "r" * rng.randint(200, 1_500)),
            ]
        transcript.append(assistant(f"reply {turn} " + "a" * rng.randint(100, 600)))

        estimate = system_tokens + estimate_messages_tokens(build_messages(transcript))
        if should_flush_memory(estimate, window, CONFIG) and not flushed_since_compaction(transcript):
            flushes += 1
            transcript.append(make_flush_marker(estimate))
        if should_compact(estimate, window, CONFIG):
            assert flushed_since_compaction(transcript)  # the flush came first
            plan = plan_compaction(transcript, keep_recent_tokens=keep_recent)
            assert plan is not None
            request = build_summary_request(
                plan,
                model="m",
                max_tokens=summary_max_tokens(window, CONFIG),
                max_input_tokens=window - summary_max_tokens(window, CONFIG) - 500,
            )
            assert (
                estimate_tokens(request.system_stable) + estimate_messages_tokens(request.messages) < window
            )
            summary, _ = await summarize(model, request)
            transcript.append(make_compaction_entry(plan, summary, plan.tokens_after(summary)))
            estimate = system_tokens + estimate_messages_tokens(build_messages(transcript))
        assert estimate <= window - reserve, f"turn {turn}: {estimate} tokens"

    assert len(summaries) >= 3 and summaries[0] == "fresh" and set(summaries[1:]) == {"chained"}
    # One flush per compaction cycle, each before its compaction (the last may await its compaction).
    assert len(summaries) <= flushes <= len(summaries) + 1
    messages = build_messages(transcript)
    assert messages[0]["content"][0]["text"].startswith(COMPACTION_PREFIX + "## Goal")
    user_texts = [
        e.content[0]["text"]
        for e in transcript
        if isinstance(e, MessageEntry) and e.role == "user" and e.content[0]["type"] == "text"
    ]
    assert [t.split(" ")[2] for t in user_texts] == [str(i) for i in range(40)]


# -- memory flush --------------------------------------------------------------------------------


def test_flush_prompt_and_markers() -> None:
    assert "NO_REPLY" in MEMORY_FLUSH_PROMPT and "memory_write" in MEMORY_FLUSH_PROMPT
    prompt = memory_flush_prompt(date(2025, 3, 4))
    assert "memory/2025-03-04.md" in prompt and "YYYY" not in prompt
    entries: list[AnyEntry] = [user("a"), assistant("b")]
    assert not flushed_since_compaction(entries)
    entries.append(make_flush_marker(1_234))
    assert flushed_since_compaction(entries)
    entries.append(CompactionEntry(summary="s", first_kept_id=None))
    assert not flushed_since_compaction(entries)  # a new cycle starts after each compaction
    assert build_messages([*entries, make_flush_marker(1)]) == build_messages(
        entries
    )  # invisible to the model


@pytest.mark.parametrize(
    "text",
    [
        "NO_REPLY",
        "no_reply",
        "  NO_REPLY.  ",
        "**NO_REPLY**",
        "`NO_REPLY`",
        "<b>NO_REPLY</b>",
        "No reply",
        "[NO_REPLY]",
        "",
        "   ",
        "Saved two facts to memory.\nNO_REPLY",
        "NO_REPLY - nothing new",
    ],
)
def test_silent_replies(text: str) -> None:
    assert is_silent_reply(text)


@pytest.mark.parametrize(
    "text",
    [
        "I saved the facts.",
        "No reply needed from you, but I updated memory/2025-03-04.md",
        "The NO_REPLY token is what I answer when nothing is new, but here: I saved 3 facts.",
        "NO_REPLYING",
        "no",
    ],
)
def test_visible_replies(text: str) -> None:
    assert not is_silent_reply(text)
