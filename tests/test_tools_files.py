"""Tests for the built-in file tools (read, write, edit, ls, grep) through `Tool.invoke`."""

from __future__ import annotations

import asyncio
import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from openclaw_mini.tools import files as files_module
from openclaw_mini.tools.base import ToolContext, ToolError
from openclaw_mini.tools.files import FILE_TOOLS, LARGE_FILE_BYTES, edit, grep, ls, read, write
from openclaw_mini.tools.policy import Sandbox, SandboxConfig, ToolRefused


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


@pytest.fixture
def ctx(workspace: Path) -> ToolContext:
    return ToolContext(
        workspace=workspace,
        session_key="agent:main:t",
        agent_id="main",
        sandbox=Sandbox(workspace, SandboxConfig(allow_exec=True)),
    )


def names(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def text_of(path: Path) -> str:
    return path.read_text()


async def call(tool_obj: Any, ctx: ToolContext, **args: Any) -> str:
    result = await tool_obj.invoke(args, ctx)
    assert isinstance(result, str)
    return result


def test_exports_the_five_fs_tools() -> None:
    assert [t.name for t in FILE_TOOLS] == ["read", "write", "edit", "ls", "grep"]
    assert {t.group for t in FILE_TOOLS} == {"fs"}
    assert all("ctx" not in t.input_schema["properties"] for t in FILE_TOOLS)


# --- read -------------------------------------------------------------------------------------


async def test_read_window_has_cat_n_numbers_and_says_how_to_go_on(workspace: Path, ctx: ToolContext) -> None:
    (workspace / "a.txt").write_text("".join(f"line{i}\n" for i in range(1, 11)))
    out = await call(read, ctx, path="a.txt", offset=3, limit=2)
    assert out.splitlines() == [
        "     3\tline3",
        "     4\tline4",
        "(6 more lines; use offset=5 to read on)",
    ]
    tail = await call(read, ctx, path="a.txt", offset=9)
    assert tail.splitlines() == ["     9\tline9", "    10\tline10", "(end of file)"]


async def test_read_whole_file_without_trailing_newline_and_crlf(workspace: Path, ctx: ToolContext) -> None:
    (workspace / "w.txt").write_bytes(b"one\r\ntwo\r\nthree")
    out = await call(read, ctx, path="w.txt")
    assert out.splitlines() == ["     1\tone", "     2\ttwo", "     3\tthree", "(end of file)"]


async def test_read_bad_offsets_missing_files_and_directories(workspace: Path, ctx: ToolContext) -> None:
    (workspace / "a.txt").write_text("x\ny\n")
    (workspace / "sub").mkdir()
    with pytest.raises(ToolError, match=r"past the end of a\.txt, which has 2 line"):
        await call(read, ctx, path="a.txt", offset=3)
    with pytest.raises(ToolError, match="offset must be 1 or more"):
        await call(read, ctx, path="a.txt", offset=0)
    with pytest.raises(ToolError, match=r"File not found: nope\.txt"):
        await call(read, ctx, path="nope.txt")
    with pytest.raises(ToolError, match="sub is a directory"):
        await call(read, ctx, path="sub")


async def test_read_refuses_binary_files(workspace: Path, ctx: ToolContext) -> None:
    (workspace / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(100))
    with pytest.raises(ToolError, match=r"img\.png looks like a binary file"):
        await call(read, ctx, path="img.png")


async def test_read_non_utf8_is_replaced_with_a_note(workspace: Path, ctx: ToolContext) -> None:
    (workspace / "latin.txt").write_bytes("café\n".encode("latin-1"))
    out = await call(read, ctx, path="latin.txt")
    assert "     1\tcaf\ufffd" in out
    assert "not valid UTF-8" in out


async def test_read_cuts_long_lines_and_caps_output(workspace: Path, ctx: ToolContext) -> None:
    (workspace / "long.txt").write_text("x" * 5000 + "\nshort\n")
    out = await call(read, ctx, path="long.txt")
    first = out.splitlines()[0]
    assert first.startswith("     1\t" + "x" * 2000 + "…")
    assert "5,000 chars in all" in first
    assert "     2\tshort" in out

    (workspace / "wide.txt").write_text("".join(f"{i:04d}" + "y" * 996 + "\n" for i in range(1, 201)))
    capped = await call(read, ctx, path="wide.txt")
    assert len(capped) < 52_000
    last_line = [line for line in capped.splitlines() if "\t" in line][-1]
    shown = int(last_line.split("\t")[0])
    assert 40 < shown < 60
    assert f"use offset={shown + 1} to read on" in capped
    again = await call(read, ctx, path="wide.txt", offset=shown + 1, limit=1)
    assert again.startswith(f"{shown + 1:>6}\t{shown + 1:04d}")


async def test_read_huge_file_streams_only_the_window(workspace: Path, ctx: ToolContext) -> None:
    big = workspace / "big.log"
    line = "z" * 99 + "\n"
    count = LARGE_FILE_BYTES // len(line) + 5000
    with big.open("w") as handle:
        for start in range(0, count, 10_000):
            handle.write(line * min(10_000, count - start))
    assert big.stat().st_size > LARGE_FILE_BYTES
    tracemalloc.start()
    try:
        out = await call(read, ctx, path="big.log", offset=100_000, limit=3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024 * 1024, f"read kept {peak} bytes in memory for a 10+ MiB file"
    lines = out.splitlines()
    assert lines[0] == "100000\t" + "z" * 99
    assert lines[2].startswith("100002\t")
    assert "large file" in lines[3] and "use offset=100003" in lines[3]


# --- write ------------------------------------------------------------------------------------


async def test_write_creates_parents_then_overwrites_atomically(workspace: Path, ctx: ToolContext) -> None:
    out = await call(write, ctx, path="notes/deep/a.md", content="hello\nworld\n")
    assert out == "Created notes/deep/a.md (12 bytes, 2 lines)."
    assert (workspace / "notes/deep/a.md").read_text() == "hello\nworld\n"
    os.chmod(workspace / "notes/deep/a.md", 0o640)

    out = await call(write, ctx, path="notes/deep/a.md", content="héllo")
    assert out == "Overwrote notes/deep/a.md (6 bytes, 1 lines)."
    assert (workspace / "notes/deep/a.md").stat().st_mode & 0o777 == 0o640
    assert names(workspace / "notes/deep") == ["a.md"]  # no temp file left

    read_back = await call(read, ctx, path="notes/deep/a.md")
    assert read_back.splitlines() == ["     1\théllo", "(end of file)"]


async def test_write_refuses_a_directory_target(workspace: Path, ctx: ToolContext) -> None:
    (workspace / "d").mkdir()
    with pytest.raises(ToolError, match="d is a directory"):
        await call(write, ctx, path="d", content="x")


# --- edit -------------------------------------------------------------------------------------


async def test_edit_replaces_exactly_one_match(workspace: Path, ctx: ToolContext) -> None:
    target = workspace / "app.py"
    target.write_text("def a():\n    return 1\n\n\ndef b():\n    return 2\n")
    out = await call(
        edit, ctx, path="app.py", old_text="    return 2\n", new_text="    x = 2\n    return x\n"
    )
    assert out == "Edited app.py: replaced line 6; the new text is at lines 6-7."
    assert target.read_text() == "def a():\n    return 1\n\n\ndef b():\n    x = 2\n    return x\n"
    assert names(workspace) == ["app.py"]


async def test_edit_zero_matches_explains_whitespace_difference(workspace: Path, ctx: ToolContext) -> None:
    target = workspace / "app.py"
    original = "def b():\n        return 2\n"
    target.write_text(original)
    with pytest.raises(ToolError, match=r"not found in app\.py") as excinfo:
        await call(edit, ctx, path="app.py", old_text="def b():\n  return 2", new_text="pass")
    assert "whitespace" in str(excinfo.value) and "line 1" in str(excinfo.value)
    with pytest.raises(ToolError, match=r"not found in app\.py") as excinfo:
        await call(edit, ctx, path="app.py", old_text="return 3", new_text="pass")
    assert "whitespace" not in str(excinfo.value)
    assert target.read_text() == original


async def test_edit_multiple_matches_reports_count_and_lines(workspace: Path, ctx: ToolContext) -> None:
    target = workspace / "cfg.ini"
    original = "a=1\nflag=on\nb=2\nflag=on\nc=3\nflag=on\n"
    target.write_text(original)
    with pytest.raises(ToolError, match=r"matches 3 times in cfg.ini \(at lines 2, 4, 6\)"):
        await call(edit, ctx, path="cfg.ini", old_text="flag=on", new_text="flag=off")
    assert target.read_text() == original
    out = await call(edit, ctx, path="cfg.ini", old_text="b=2\nflag=on", new_text="b=2\nflag=off")
    assert "lines 3-4" in out
    assert target.read_text() == "a=1\nflag=on\nb=2\nflag=off\nc=3\nflag=on\n"


async def test_edit_keeps_crlf_and_undecodable_bytes(workspace: Path, ctx: ToolContext) -> None:
    target = workspace / "win.txt"
    target.write_bytes(b"caf\xe9\r\nold line\r\nend\r\n")
    await call(edit, ctx, path="win.txt", old_text="old line\nend", new_text="new line\nend")
    assert target.read_bytes() == b"caf\xe9\r\nnew line\r\nend\r\n"


async def test_edit_rejects_empty_and_identical_text(workspace: Path, ctx: ToolContext) -> None:
    (workspace / "f.txt").write_text("abc\n")
    with pytest.raises(ToolError, match="old_text is empty"):
        await call(edit, ctx, path="f.txt", old_text="", new_text="x")
    with pytest.raises(ToolError, match="identical"):
        await call(edit, ctx, path="f.txt", old_text="abc", new_text="abc")
    with pytest.raises(ToolError, match="File not found"):
        await call(edit, ctx, path="missing.txt", old_text="a", new_text="b")


# --- ls ---------------------------------------------------------------------------------------


async def test_ls_sorted_with_dirs_sizes_and_symlinks(workspace: Path, ctx: ToolContext) -> None:
    (workspace / "b.txt").write_text("12345")
    (workspace / "a_dir").mkdir()
    (workspace / ".hidden").write_text("")
    (workspace / "link.txt").symlink_to("b.txt")
    out = await call(ls, ctx)
    assert out.splitlines() == [
        "./ (4 entries)",
        ".hidden  (0 bytes)",
        "a_dir/",
        "b.txt  (5 bytes)",
        "link.txt -> b.txt",
    ]
    with pytest.raises(ToolError, match="Directory not found: nope"):
        await call(ls, ctx, path="nope")


async def test_ls_caps_entries(workspace: Path, ctx: ToolContext) -> None:
    many = workspace / "many"
    many.mkdir()
    for i in range(1005):
        (many / f"f{i:04d}").touch()
    out = await call(ls, ctx, path="many")
    lines = out.splitlines()
    assert lines[0] == "many/ (1,005 entries)"
    assert lines[1].startswith("f0000") and lines[1000].startswith("f0999")
    assert "first 1,000 of 1,005 entries" in lines[-1]
    assert len(lines) == 1002


# --- grep -------------------------------------------------------------------------------------


def _grep_tree(workspace: Path) -> None:
    (workspace / "src").mkdir()
    (workspace / "src/app.py").write_text("import os\n# TODO: fix\nprint('todo')\n")
    (workspace / "src/util.py").write_text("def todo():\n    pass\n")
    (workspace / "README.md").write_text("TODO list\n")
    (workspace / "docs").mkdir()
    (workspace / "docs/guide.md").write_text("nothing\nTODO docs\n")
    for skipped in (".git", "node_modules", ".venv", "__pycache__", ".openclaw-mini"):
        (workspace / skipped).mkdir()
        (workspace / skipped / "x.py").write_text("TODO hidden\n")
    (workspace / "blob.bin").write_bytes(b"TODO\x00binary")


async def test_grep_recursive_with_relative_paths_and_skips(workspace: Path, ctx: ToolContext) -> None:
    _grep_tree(workspace)
    out = await call(grep, ctx, pattern="TODO")
    assert out.splitlines() == [
        "README.md:1: TODO list",
        "docs/guide.md:2: TODO docs",
        "src/app.py:2: # TODO: fix",
    ]
    insensitive = await call(grep, ctx, pattern="(?i)todo", path="src")
    assert insensitive.splitlines() == [
        "src/app.py:2: # TODO: fix",
        "src/app.py:3: print('todo')",
        "src/util.py:1: def todo():",
    ]


async def test_grep_glob_filters_file_names(workspace: Path, ctx: ToolContext) -> None:
    _grep_tree(workspace)
    py = await call(grep, ctx, pattern="(?i)todo", glob="*.py")
    assert {line.split(":")[0] for line in py.splitlines()} == {"src/app.py", "src/util.py"}
    md = await call(grep, ctx, pattern="TODO", glob="**/*.md")
    assert {line.split(":")[0] for line in md.splitlines()} == {"README.md", "docs/guide.md"}
    docs_only = await call(grep, ctx, pattern="TODO", glob="docs/*.md")
    assert docs_only.splitlines() == ["docs/guide.md:2: TODO docs"]
    none = await call(grep, ctx, pattern="TODO", glob="*.rs")
    assert none.startswith("No matches for 'TODO' in . (glob *.rs) (0 files searched)")


async def test_grep_bad_regex_is_a_tool_error(ctx: ToolContext) -> None:
    with pytest.raises(ToolError, match=r"Invalid regular expression '\(unclosed': missing \)"):
        await call(grep, ctx, pattern="(unclosed")


async def test_grep_caps_matches(workspace: Path, ctx: ToolContext) -> None:
    (workspace / "many.txt").write_text("hit\n" * 500)
    out = await call(grep, ctx, pattern="hit")
    lines = out.splitlines()
    assert len(lines) == 201
    assert lines[199] == "many.txt:200: hit"
    assert "stopped at 200 matches" in lines[-1]


# --- sandbox ----------------------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path, workspace: Path) -> Path:
    secret = tmp_path / "x"
    secret.write_text("TOP SECRET\n")
    (workspace / "escape").symlink_to(secret)
    (workspace / "escape_dir").symlink_to(tmp_path)
    return secret


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "escape", "escape_dir/x"])
async def test_read_write_grep_refuse_paths_outside(ctx: ToolContext, outside: Path, path: str) -> None:
    with pytest.raises(ToolRefused, match="outside the workspace"):
        await call(read, ctx, path=path)
    with pytest.raises(ToolRefused, match="outside the workspace"):
        await call(write, ctx, path=path, content="pwned")
    with pytest.raises(ToolRefused, match="outside the workspace"):
        await call(grep, ctx, pattern="SECRET", path=path)
    with pytest.raises(ToolRefused, match="outside the workspace"):
        await call(edit, ctx, path=path, old_text="TOP", new_text="pwned")
    assert text_of(outside) == "TOP SECRET\n"


async def test_grep_walk_skips_links_that_leave_the_workspace(
    workspace: Path, ctx: ToolContext, outside: Path
) -> None:
    (workspace / "inside.txt").write_text("SECRET inside\n")
    (workspace / "alias.txt").symlink_to(workspace / "inside.txt")
    out = await call(grep, ctx, pattern="SECRET")
    assert "TOP SECRET" not in out
    assert out.splitlines() == [
        "alias.txt:1: SECRET inside",
        "inside.txt:1: SECRET inside",
        "(1 symlink(s) pointing outside the workspace were skipped)",
    ]
    listing = await call(ls, ctx)
    assert f"escape -> {outside}" in listing


async def test_grep_streamed_big_files_match_the_slurped_result(
    workspace: Path, ctx: ToolContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workspace / "crlf.txt").write_bytes(b"alpha\r\nbeta hit\r\ngamma\r\nhit again")
    slurped = await call(grep, ctx, pattern="hit$")
    monkeypatch.setattr(files_module, "GREP_SLURP_BYTES", 4)
    streamed = await call(grep, ctx, pattern="hit$")
    assert slurped == streamed == "crlf.txt:2: beta hit"


async def test_fifos_are_neither_read_nor_grepped(workspace: Path, ctx: ToolContext) -> None:
    os.mkfifo(workspace / "pipe")
    (workspace / "plain.txt").write_text("hit\n")
    out = await asyncio.wait_for(call(grep, ctx, pattern="hit"), 5)
    assert out == "plain.txt:1: hit"
    with pytest.raises(ToolError, match="not a regular file"):
        await asyncio.wait_for(call(read, ctx, path="pipe"), 5)


async def test_grep_catastrophic_regex_cannot_hang(workspace: Path, ctx: ToolContext) -> None:
    # Python's backtracking `re` needs about 2**30 steps for this line; RE2 is linear.
    (workspace / "evil.txt").write_text("a" * 30 + "!\n" + "aaaa\n")
    out = await asyncio.wait_for(call(grep, ctx, pattern="(a+)+$"), timeout=60)
    assert out.splitlines()[0] == "evil.txt:2: aaaa"
    assert "evil.txt:1:" not in out


async def test_grep_line_anchors_and_whole_line_semantics_hold_across_blocks(
    workspace: Path, ctx: ToolContext
) -> None:
    lines = [f"row {i} end" for i in range(5000)]
    lines[4321] = "row 4321 target"
    (workspace / "many.txt").write_text("\n".join(lines) + "\n")
    assert await call(grep, ctx, pattern="target$") == "many.txt:4322: row 4321 target"
    assert await call(grep, ctx, pattern=r"\Arow 4321") == "many.txt:4322: row 4321 target"
    # A match that would only exist across a line break is not a line match.
    assert (await call(grep, ctx, pattern=r"end\s+row 4321")).startswith("No matches")


async def test_grep_explains_unsupported_lookaround(ctx: ToolContext) -> None:
    with pytest.raises(ToolError, match="lookaround and backreferences are not supported"):
        await call(grep, ctx, pattern=r"(?<=x)y")
