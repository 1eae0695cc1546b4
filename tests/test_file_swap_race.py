"""File tools against a second process that swaps folders and files for symlinks in a loop.

Before `safe_fs`, a path was checked (`realpath`) and opened by name later: a swap in between let
reads, listings and writes escape the workspace (issue 12 item 6: 237 escapes in 40,953 tries).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from openclaw_mini.tools.base import ToolContext, ToolError
from openclaw_mini.tools.files import edit, grep, ls, read, write
from openclaw_mini.tools.policy import Sandbox

SECRET = "OUTSIDE-SECRET-7f3a"

SWAPPER = """
import ctypes, os, sys, time
ws, outside, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
pairs = [
    (os.path.join(ws, "d"), outside),                           # a folder <-> a link to outside
    (os.path.join(ws, "hooks"), os.path.join(ws, ".git", "hooks")),  # a folder <-> a link into .git
    (os.path.join(ws, "f.txt"), os.path.join(outside, "f.txt")),     # a file <-> a link to outside
]
libc = ctypes.CDLL(None, use_errno=True)


def exchange(a, b):  # renameat2(RENAME_EXCHANGE): `a` is always either the folder/file or the link
    if libc.renameat2(-100, a.encode(), -100, b.encode(), 2) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")


for place, target in pairs:
    os.symlink(target, place + ".link")
print("ready", flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    for place, _target in pairs:
        exchange(place, place + ".link")
"""


def call(tool_obj: Any, ctx: ToolContext, **args: Any) -> str:
    function = tool_obj.function
    try:
        return str(function(**args, ctx=ctx))
    except (ToolError, OSError) as exc:
        return f"error: {exc}"


@pytest.fixture
def arena(tmp_path: Path) -> tuple[Path, Path]:
    ws = tmp_path / "ws"
    outside = tmp_path / "outside"
    for folder in (ws / "d", ws / "hooks", ws / ".git" / "hooks", outside):
        folder.mkdir(parents=True)
    (ws / "d" / "f.txt").write_text("inside d\n")
    (ws / "hooks" / "f.txt").write_text("inside hooks\n")
    (ws / "f.txt").write_text("inside f\n")
    (outside / "f.txt").write_text(SECRET + "\n")
    (outside / "only-outside.txt").write_text(SECRET + "\n")
    return ws, outside


def test_no_file_tool_escapes_while_paths_are_swapped(arena: tuple[Path, Path]) -> None:
    ws, outside = arena
    ctx = ToolContext(workspace=ws, session_key="agent:main:t", agent_id="main", sandbox=Sandbox(ws))
    swapper = subprocess.Popen(
        [sys.executable, "-c", SWAPPER, str(ws), str(outside), "2.5"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert swapper.stdout is not None and swapper.stdout.readline().strip() == "ready"
        escapes: list[str] = []
        inside_reads = 0
        tries = 0
        deadline = time.monotonic() + 60
        while swapper.poll() is None and time.monotonic() < deadline:
            tries += 1
            results = {
                "read d/f.txt": call(read, ctx, path="d/f.txt"),
                "read f.txt": call(read, ctx, path="f.txt"),
                "ls d": call(ls, ctx, path="d"),
                "grep d": call(grep, ctx, pattern="SECRET", path="d"),
                "grep .": call(grep, ctx, pattern="SECRET"),
                "write d": call(write, ctx, path=f"d/new-{tries}.txt", content="planted"),
                "write hooks": call(write, ctx, path="hooks/pre-commit", content="#!/bin/sh\necho pwned\n"),
                "edit f.txt": call(edit, ctx, path="f.txt", old_text="inside", new_text="inside"[::-1] + "x"),
                "edit back": call(edit, ctx, path="f.txt", old_text="edisnix", new_text="inside"),
            }
            inside_reads += sum("inside" in text or "Created" in text for text in results.values())
            escapes.extend(f"{name}: {text[:200]}" for name, text in results.items() if SECRET in text)
            escapes.extend(
                f"ls listed outside: {text[:200]}" for text in [results["ls d"]] if "only-outside" in text
            )
    finally:
        swapper.kill()
        swapper.wait()
        if swapper.stdout is not None:
            swapper.stdout.close()
    escapes.extend(
        f"planted outside: {path.name}" for path in outside.iterdir() if path.name.startswith("new-")
    )
    if (ws / ".git" / "hooks" / "pre-commit").exists():
        escapes.append("planted .git/hooks/pre-commit")
    assert (outside / "f.txt").read_text() == SECRET + "\n", "a write went through the f.txt link"
    assert escapes == [], f"{len(escapes)} escapes in {tries} rounds: {escapes[:5]}"
    assert tries >= 3 and inside_reads >= 1  # the race really ran and the tools still worked
