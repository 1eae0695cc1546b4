"""Core benchmarks: tool-loop overhead (in process and through the real SDK), session resume,
and start-up time of the package and the CLI."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from openclaw_mini import Agent, tool
from openclaw_mini.session import SessionKey, SessionStore
from openclaw_mini.testing import FakeAnthropicServer, ScriptedModel, text_reply, tool_reply
from openclaw_mini.transcript import CompactionEntry, MessageEntry, build_messages

STEPS = 100


@tool
async def noop(value: int) -> str:
    """Return at once (async: what is measured is the loop itself)."""
    return str(value)


@tool
def sync_noop(value: int) -> str:
    """Return at once (sync: the loop runs it in a worker thread)."""
    return str(value)


USAGE = {"input_tokens": 1_000, "output_tokens": 20}


def _script(steps: int, name: str = "noop") -> list:
    calls = (tool_reply((name, {"value": i}), usage=USAGE) for i in range(steps))
    return [*calls, text_reply("done", usage=USAGE)]


async def _loop_in_process(workspace: Path, name: str = "noop") -> float:
    model = ScriptedModel()
    model.queue(text_reply("warm", usage=USAGE), *_script(STEPS, name))
    async with Agent(
        workspace_dir=workspace,
        model=model,
        tools=[noop, sync_noop],
        max_turns=STEPS + 1,
        enable_memory=False,
        enable_skills=False,
    ) as agent:
        await agent.run("warm-up", "hi")  # imports and first-use setup are not loop overhead
        started = time.perf_counter()
        result = await agent.run("bench", "go")
        elapsed = time.perf_counter() - started
    assert len(result.tool_calls) == STEPS
    return elapsed / (STEPS + 1) * 1000


async def _loop_over_http(workspace: Path) -> float:
    with FakeAnthropicServer() as server:
        server.queue(text_reply("warm", usage=USAGE), *_script(STEPS))
        async with Agent(
            workspace_dir=workspace,
            api_key="bench",
            base_url=server.url,
            tools=[noop],
            max_turns=STEPS + 1,
            enable_memory=False,
            enable_skills=False,
        ) as agent:
            await agent.run("warm-up", "hi")  # the SDK's import (~1 s) is not per-step cost
            started = time.perf_counter()
            result = await agent.run("bench", "go")
            elapsed = time.perf_counter() - started
    assert len(result.tool_calls) == STEPS
    return elapsed / (STEPS + 1) * 1000


async def _sdk_event_costs(deltas: int = 3_000) -> tuple[float, float]:
    """µs per streamed event in the SDK alone: raw `create(stream=True)` vs `messages.stream()`.

    The SSE body is recorded once from the fake server, then replayed through an in-memory
    transport (the SDK's supported `http_client` option), so neither a server thread nor the
    network is in the measurement.
    """
    import urllib.request

    import httpx2
    from anthropic import AsyncAnthropic

    params = {
        "model": "bench",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "go"}],
        "stream": True,
    }
    with FakeAnthropicServer() as server:
        reply = text_reply("word " * (deltas * 2))
        reply.text_chunk_size = 10
        server.queue(reply)
        request = urllib.request.Request(
            f"{server.url}/v1/messages",
            data=json.dumps(params).encode(),
            headers={"content-type": "application/json", "x-api-key": "b"},
        )

        def fetch() -> bytes:
            with urllib.request.urlopen(request) as response:
                return bytes(response.read())

        body = await asyncio.to_thread(fetch)
    events_in_body = body.count(b"\nevent: ") + body.startswith(b"event: ")

    def replay(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(replay))
    client = AsyncAnthropic(api_key="bench", http_client=http, max_retries=0)
    create_params = {k: v for k, v in params.items() if k != "stream"}
    results = []
    try:
        for helper in (False, True, False, True, False, True):  # the first pair warms up
            started = time.perf_counter()
            if helper:
                async with client.messages.stream(**create_params) as stream:
                    async for _ in stream:
                        pass
            else:
                async for _ in await client.messages.create(**create_params, stream=True):
                    pass
            results.append((time.perf_counter() - started) / events_in_body * 1e6)
    finally:
        await client.close()
    return min(results[2::2]), min(results[3::2])


def _fill(store: SessionStore, key: SessionKey, count: int) -> tuple[float, list[MessageEntry]]:
    batch: list[MessageEntry] = []
    last: list[MessageEntry] = []
    started = time.perf_counter()
    for index in range(count):
        role = "user" if index % 2 == 0 else "assistant"
        batch.append(
            MessageEntry(role=role, content=[{"type": "text", "text": f"message {index} " + "x" * 80}])
        )
        if len(batch) == 1000:
            store.append_sync(key, batch)
            last, batch = batch, []
    return time.perf_counter() - started, last


def _resume(workspace: Path, count: int = 100_000) -> tuple[float, float, float, float]:
    """Append `count` entries; resume them (the agent's path, and a full parse); then compact
    (keeping 200) and resume that."""
    store = SessionStore(workspace / ".openclaw-mini")
    key = SessionKey.parse("big")
    append_s, last = _fill(store, key, count)
    tail = 200_000 * 4 * 3  # what Agent passes for the default 200k-token window

    def resume(**options: Any) -> tuple[float, int]:
        started = time.perf_counter()
        loaded = store.load_sync(key, active_only=True, **options)
        messages = build_messages(loaded.entries)
        return time.perf_counter() - started, len(messages)

    agent_s, kept = resume(tail_bytes=tail)
    assert 0 < kept < count
    full_s, everything = resume()
    assert everything == count
    store.append_sync(key, [CompactionEntry(summary="summary " * 200, first_kept_id=last[-200].id)])
    compacted_s, after = resume(tail_bytes=tail)
    assert after == 200
    return append_s, agent_s, full_s, compacted_s


def _wall(command: list[str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def run() -> list[tuple[str, str, str]]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        per_step = asyncio.run(_loop_in_process(Path(folder) / "a"))
        rows.append(
            ("loop overhead per tool step (scripted model, 100 steps)", f"{per_step:.3f} ms", "< 0.5 ms")
        )
        per_sync = asyncio.run(_loop_in_process(Path(folder) / "a2", "sync_noop"))
        rows.append(("same, sync tool (runs in a worker thread)", f"{per_sync:.3f} ms", "measured"))
        raw_us, helper_us = asyncio.run(_sdk_event_costs())
        rows.append(("SDK stream event, raw create(stream=True)", f"{raw_us:.1f} µs/event", "used"))
        rows.append(("SDK stream event, messages.stream() helper", f"{helper_us:.1f} µs/event", "not used"))
        per_http = asyncio.run(_loop_over_http(Path(folder) / "b"))
        rows.append(("loop per tool step via real SDK + fake server", f"{per_http:.2f} ms", "measured"))
        append_s, agent_s, full_s, compacted_s = _resume(Path(folder) / "c")
        rows.append(("append 100,000 entries (batches of 1,000)", f"{append_s:.2f} s", "measured"))
        rows.append(
            ("resume 100,000-entry session (agent: load + history)", f"{agent_s * 1000:.0f} ms", "< 1 s")
        )
        rows.append(("  same, parsing all 100,000 entries (sessions show)", f"{full_s * 1000:.0f} ms", "-"))
        rows.append(("resume compacted 100,000-entry session", f"{compacted_s * 1000:.0f} ms", "< 1 s"))
    python = sys.executable
    rows.append(
        (
            "import openclaw_mini (median of 5)",
            f"{_wall([python, '-c', 'import openclaw_mini']):.0f} ms",
            "< 300 ms",
        )
    )
    cli = [python, "-m", "openclaw_mini.cli.main", "--help"]
    rows.append(("openclaw-mini --help (median of 5)", f"{_wall(cli):.0f} ms", "< 300 ms"))
    return rows


if __name__ == "__main__":
    for row in run():
        print(" | ".join(row))
