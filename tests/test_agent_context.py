"""Context through the agent: bootstrap files in the prompt, pruning, compaction, memory flush."""

from __future__ import annotations

import json
import os
from pathlib import Path

from openclaw_mini import tool
from openclaw_mini.testing import FakeAnthropicServer, RecordedRequest, error_reply, text_reply, tool_reply


def _is_summary(request: RecordedRequest) -> bool:
    return "<conversation>" in json.dumps(request.messages[-1]["content"])


def _is_flush(request: RecordedRequest) -> bool:
    return "Silent housekeeping turn" in json.dumps(request.messages)[-3000:]


def _transcript(workspace: Path, session: str = "s") -> list[dict]:
    path = workspace / ".openclaw-mini" / "sessions" / "main" / f"{session}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_bootstrap_files_appear_in_order_and_edits_show_next_run(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    names = [
        "AGENTS.md",
        "SOUL.md",
        "TOOLS.md",
        "IDENTITY.md",
        "USER.md",
        "HEARTBEAT.md",
        "BOOTSTRAP.md",
        "MEMORY.md",
    ]
    for name in reversed(names):
        (workspace / name).write_text(f"content of {name}\n")
    fake_server.queue(text_reply("one"), text_reply("two"))
    agent = make_agent()
    await agent.run("s", "hi")
    system = fake_server.requests[0].system
    stable = fake_server.requests[0].body["system"][0]["text"]
    positions = [stable.find(f"content of {name}") for name in names if name != "HEARTBEAT.md"]
    assert all(p >= 0 for p in positions) and positions == sorted(positions)
    # HEARTBEAT.md changes often: it sits after the cache breakpoint, in the dynamic block.
    assert "content of HEARTBEAT.md" in system and "content of HEARTBEAT.md" not in stable

    path = workspace / "AGENTS.md"
    path.write_text("brand new rules\n")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    await agent.run("s", "again")
    assert "brand new rules" in fake_server.requests[1].system


async def test_binary_soul_file_does_not_break_the_run(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    (workspace / "SOUL.md").write_bytes(b"\x00\x01\x02binary")
    (workspace / "AGENTS.md").write_text("be kind")
    fake_server.queue(text_reply("fine"))
    events = [e async for e in make_agent().stream("s", "hi")]
    warnings = [e.text for e in events if e.type == "warning"]
    assert any("SOUL.md" in w for w in warnings)
    assert events[-1].result is not None and events[-1].result.text == "fine"
    assert "be kind" in fake_server.requests[0].system


async def test_pruning_shrinks_an_old_tool_result_but_the_transcript_keeps_it(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    @tool
    def dump() -> str:
        """Return a 60,000-character report."""
        return "\n".join(f"line {i} " + "y" * 60 for i in range(900))[:60_000]

    fake_server.queue(tool_reply(("dump", {})), text_reply("read it"))
    for index in range(4):
        fake_server.queue(text_reply(f"answer {index}"))
    agent = make_agent(context_window_tokens=40_000, tools=[dump])
    await agent.run("s", "dump the report")
    for index in range(4):
        await agent.run("s", f"question {index}")
    first_sent = json.dumps(fake_server.requests[1].messages)
    last_sent = json.dumps(fake_server.requests[-1].messages)
    assert "line 450 " in first_sent and "line 850 " in first_sent
    assert len(last_sent) < len(first_sent) - 20_000
    assert "line 450 " not in last_sent
    on_disk = json.dumps(_transcript(workspace))
    assert "line 450 " in on_disk and "line 850 " in on_disk


async def test_long_session_in_a_small_window_compacts_and_keeps_every_message(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    summaries = 0

    def handler(request: RecordedRequest):
        nonlocal summaries
        if _is_summary(request):
            summaries += 1
            return text_reply(f"## Goal\nKeep chatting (summary {summaries}).")
        if _is_flush(request):
            return text_reply("NO_REPLY")
        return text_reply("Noted. " + "ok " * 120)

    fake_server.handler = handler
    window = 6_000
    agent = make_agent(context_window_tokens=window, max_tokens=1_000, enable_memory=True)
    compactions = 0
    for turn in range(40):
        async for event in agent.stream("s", f"message number {turn}: " + "words " * 100):
            compactions += event.type == "compaction"
    assert compactions >= 2 and summaries == compactions

    for request in fake_server.requests:
        assert len(json.dumps(request.body)) / 4 < window, "a request overflowed the window"
    last = fake_server.requests[-1]
    assert "compacted" in last.messages[0]["content"][0]["text"]
    assert "message number 39" in json.dumps(last.messages)
    # Chained compaction: the later summary request carries the earlier summary.
    summary_requests = [r for r in fake_server.requests if _is_summary(r)]
    assert "summary 1" in json.dumps(summary_requests[1].messages)

    lines = _transcript(workspace)
    user_texts = [
        b["text"]
        for e in lines
        if e.get("role") == "user" and not e.get("hidden")
        for b in e["content"]
        if b.get("type") == "text"
    ]
    for turn in range(40):
        assert any(t.startswith(f"message number {turn}:") for t in user_texts)
    assert sum(1 for e in lines if e["type"] == "compaction") == compactions


async def test_memory_flush_runs_before_the_summary(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    order: list[str] = []

    def handler(request: RecordedRequest):
        if _is_summary(request):
            order.append("summary")
            return text_reply("## Goal\nsummary")
        if _is_flush(request):
            order.append("flush")
            if any(b.get("type") == "tool_result" for m in request.messages[-1:] for b in m["content"]):
                return text_reply("NO_REPLY")
            return tool_reply(("memory_write", {"text": "The user prefers tea."}))
        order.append("turn")
        return text_reply("ok " * 100)

    fake_server.handler = handler
    agent = make_agent(context_window_tokens=6_000, max_tokens=1_000, enable_memory=True)
    for turn in range(25):
        await agent.run("s", f"turn {turn} " + "text " * 100)
    assert "flush" in order and "summary" in order
    assert order.index("flush") < order.index("summary")
    notes = list((workspace / "memory").glob("*.md"))
    assert notes and "prefers tea" in notes[0].read_text()


async def test_prompt_too_long_error_compacts_and_retries_once(
    make_agent, fake_server: FakeAnthropicServer
) -> None:
    agent = make_agent()
    for index in range(3):
        fake_server.queue(text_reply(f"reply {index}"))
        await agent.run("s", f"message {index}")
    fake_server.queue(
        error_reply(400, "prompt is too long: 210000 tokens > 200000 maximum"),
        text_reply("## Goal\nshort summary"),
        text_reply("after compaction"),
    )
    events = [e async for e in agent.stream("s", "one more")]
    assert [e.type for e in events if e.type in ("compaction", "done")] == ["compaction", "done"]
    assert events[-1].result is not None and events[-1].result.text == "after compaction"
    assert "short summary" in fake_server.requests[-1].messages[0]["content"][0]["text"]


async def test_manual_compact(make_agent, fake_server: FakeAnthropicServer) -> None:
    agent = make_agent()
    for index in range(3):
        fake_server.queue(text_reply(f"reply {index}"))
        await agent.run("s", f"message {index}")
    fake_server.queue(text_reply("## Goal\nmanual summary"))
    data = await agent.compact("s")
    assert data is not None and data["summary"].endswith("manual summary")
    fake_server.queue(text_reply("ok"))
    await agent.run("s", "next")
    assert "manual summary" in fake_server.requests[-1].messages[0]["content"][0]["text"]


async def test_a_failing_memory_flush_does_not_fail_the_users_turn(
    make_agent, fake_server: FakeAnthropicServer, workspace: Path
) -> None:
    from openclaw_mini.testing import error_reply

    def handler(request: RecordedRequest):
        if _is_summary(request):
            return text_reply("## Goal\nsummary")
        if "grep" not in {tool["name"] for tool in request.tools}:  # the flush offers memory/file tools only
            return error_reply(400, "flush request rejected")
        return text_reply("ok " * 100)

    fake_server.handler = handler
    agent = make_agent(context_window_tokens=6_000, max_tokens=1_000, enable_memory=True)
    for turn in range(25):
        result = await agent.run("s", f"turn {turn} " + "text " * 100)
        assert result.stop_reason == "end_turn"
    flushes = [r for r in fake_server.requests if "grep" not in {t["name"] for t in r.tools}]
    assert len(flushes) >= 1  # it was tried, failed, and the turns went on
