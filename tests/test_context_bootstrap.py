from __future__ import annotations

import os
from pathlib import Path

import pytest

from openclaw_mini.config import BootstrapConfig
from openclaw_mini.context.bootstrap import (
    BOOTSTRAP_FILES,
    SUBAGENT_BOOTSTRAP_FILES,
    BootstrapLoader,
)

ALL_EIGHT = [
    "AGENTS.md",
    "SOUL.md",
    "TOOLS.md",
    "IDENTITY.md",
    "USER.md",
    "HEARTBEAT.md",
    "BOOTSTRAP.md",
    "MEMORY.md",
]


def write_all(workspace: Path) -> None:
    for name in reversed(ALL_EIGHT):  # creation order must not matter
        (workspace / name).write_text(f"content of {name}\n", encoding="utf-8")


def test_file_list_order() -> None:
    assert list(BOOTSTRAP_FILES[:8]) == ALL_EIGHT
    assert BOOTSTRAP_FILES[8] == "memory.md"
    assert SUBAGENT_BOOTSTRAP_FILES == ("AGENTS.md", "TOOLS.md")


def test_loads_in_order_and_skips_missing(workspace: Path) -> None:
    write_all(workspace)
    (workspace / "USER.md").unlink()
    context = BootstrapLoader(workspace, BootstrapConfig()).load()
    assert [f.name for f in context.files] == [n for n in ALL_EIGHT if n != "USER.md"]
    assert context.warnings == []
    assert context.get("SOUL.md") is not None
    assert context.get("SOUL.md").content == "content of SOUL.md\n"  # type: ignore[union-attr]


def test_lowercase_memory_used_only_when_upper_missing(workspace: Path) -> None:
    (workspace / "memory.md").write_text("lower", encoding="utf-8")
    loader = BootstrapLoader(workspace)
    assert [(f.name, f.content) for f in loader.load().files] == [("memory.md", "lower")]
    (workspace / "MEMORY.md").write_text("upper", encoding="utf-8")
    names = [f.name for f in loader.load().files]
    if os.path.samefile(workspace / "MEMORY.md", workspace / "memory.md"):  # case-insensitive FS
        assert len(names) == 1
    else:
        assert names == ["MEMORY.md"]


def test_subagent_allow_list(workspace: Path) -> None:
    write_all(workspace)
    context = BootstrapLoader(workspace).load(subagent=True)
    assert [f.name for f in context.files] == ["AGENTS.md", "TOOLS.md"]


def test_edit_seen_on_next_load_and_unchanged_file_not_reread(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agents = workspace / "AGENTS.md"
    agents.write_text("version one", encoding="utf-8")
    os.utime(agents, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    loader = BootstrapLoader(workspace)
    assert loader.load().files[0].content == "version one"

    opened: list[str] = []
    real_open = open

    def counting_open(file: str, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        opened.append(str(file))
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", counting_open)
    assert loader.load().files[0].content == "version one"
    assert opened == []  # cache hit: stat only

    # Same size, new mtime: must be picked up.
    agents.write_text("version two", encoding="utf-8")
    os.utime(agents, ns=(1_000_000_001_000_000_000, 1_000_000_001_000_000_000))
    assert loader.load().files[0].content == "version two"
    assert len(opened) == 1

    # Same mtime, new size: picked up too.
    agents.write_text("version three!", encoding="utf-8")
    os.utime(agents, ns=(1_000_000_001_000_000_000, 1_000_000_001_000_000_000))
    assert loader.load().files[0].content == "version three!"

    agents.unlink()
    assert loader.load().files == []


def test_long_file_keeps_head_and_tail_with_marker_and_warning(workspace: Path) -> None:
    head = "HEAD-START " + "a" * 20_000
    middle = "MIDDLE-PART " + "m" * 60_000
    tail = "z" * 19_976 + " TAIL-END"
    text = head + middle + tail
    assert len(text) > 99_000
    (workspace / "AGENTS.md").write_text(text, encoding="utf-8")
    context = BootstrapLoader(workspace, BootstrapConfig()).load()
    item = context.files[0]
    assert item.truncated and item.original_chars == len(text)
    assert len(item.content) <= 20_000
    assert item.content.startswith("HEAD-START")
    assert item.content.endswith("TAIL-END")
    assert "MIDDLE-PART" not in item.content
    # head 70% and tail 20% of the cap
    marker_start = item.content.index("\n\n[...")
    assert marker_start == 14_000
    assert item.content.endswith("z" * (4_000 - len(" TAIL-END")) + " TAIL-END")
    marker = item.content[marker_start : len(item.content) - 4_000]
    assert "AGENTS.md" in marker and "18,000" in marker and f"{len(text):,}" in marker
    assert "read tool" in marker
    assert len(context.warnings) == 1
    assert "AGENTS.md" in context.warnings[0] and "shortened" in context.warnings[0]


def test_warning_repeats_on_every_load(workspace: Path) -> None:
    (workspace / "TOOLS.md").write_text("x" * 30_000, encoding="utf-8")
    loader = BootstrapLoader(workspace)
    assert len(loader.load().warnings) == 1
    assert len(loader.load().warnings) == 1


def test_binary_soul_skipped_with_warning(workspace: Path) -> None:
    (workspace / "AGENTS.md").write_text("rules", encoding="utf-8")
    (workspace / "SOUL.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (workspace / "TOOLS.md").write_text("tools", encoding="utf-8")
    context = BootstrapLoader(workspace).load()
    assert [f.name for f in context.files] == ["AGENTS.md", "TOOLS.md"]
    assert len(context.warnings) == 1 and "SOUL.md" in context.warnings[0]
    assert "binary" in context.warnings[0]


def test_non_utf8_skipped_with_warning(workspace: Path) -> None:
    (workspace / "USER.md").write_bytes("caf\u00e9".encode("latin-1"))
    context = BootstrapLoader(workspace).load()
    assert context.files == []
    assert "USER.md" in context.warnings[0] and "UTF-8" in context.warnings[0]


def test_utf8_bom_is_dropped(workspace: Path) -> None:
    (workspace / "USER.md").write_bytes(b"\xef\xbb\xbfName: Ada")
    assert BootstrapLoader(workspace).load().files[0].content == "Name: Ada"


def test_unreadable_file_skipped_with_warning(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # chmod 0 does not stop root, so simulate the permission error where the loader opens the file.
    path = workspace / "IDENTITY.md"
    path.write_text("me", encoding="utf-8")
    (workspace / "USER.md").write_text("user", encoding="utf-8")
    real_open = open

    def guarded_open(file: str, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        if str(file).endswith("IDENTITY.md"):
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", guarded_open)
    context = BootstrapLoader(workspace).load()
    assert [f.name for f in context.files] == ["USER.md"]
    assert "IDENTITY.md" in context.warnings[0] and "Permission denied" in context.warnings[0]


def test_directory_with_bootstrap_name_is_skipped(workspace: Path) -> None:
    (workspace / "AGENTS.md").mkdir()
    context = BootstrapLoader(workspace).load()
    assert context.files == [] and "not a regular file" in context.warnings[0]


def test_symlink_outside_workspace_refused(workspace: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET", encoding="utf-8")
    (workspace / "SOUL.md").symlink_to(secret)
    inside = workspace / "docs"
    inside.mkdir()
    (inside / "agents.txt").write_text("inside rules", encoding="utf-8")
    (workspace / "AGENTS.md").symlink_to(inside / "agents.txt")
    context = BootstrapLoader(workspace).load()
    assert [(f.name, f.content) for f in context.files] == [("AGENTS.md", "inside rules")]
    assert len(context.warnings) == 1
    assert "SOUL.md" in context.warnings[0] and "outside the workspace" in context.warnings[0]
    assert all("TOP SECRET" not in f.content for f in context.files)


def test_total_cap_later_files_get_the_rest_then_dropped(workspace: Path) -> None:
    config = BootstrapConfig(max_chars_per_file=1_000, max_total_chars=2_500)
    (workspace / "AGENTS.md").write_text("A" * 1_000, encoding="utf-8")
    (workspace / "SOUL.md").write_text("S" * 1_000, encoding="utf-8")
    (workspace / "TOOLS.md").write_text("T" * 900, encoding="utf-8")
    (workspace / "USER.md").write_text("U" * 50, encoding="utf-8")
    context = BootstrapLoader(workspace, config).load()
    names = [f.name for f in context.files]
    assert names == ["AGENTS.md", "SOUL.md", "TOOLS.md"]
    tools = context.get("TOOLS.md")
    assert tools is not None and tools.truncated and len(tools.content) <= 500
    assert tools.content.startswith("T") and tools.content.endswith("T")
    assert context.total_chars <= 2_500
    assert any("TOOLS.md" in w and "total limit" in w for w in context.warnings)
    assert any("USER.md" in w and "left out" in w for w in context.warnings)


def test_huge_file_read_only_head_and_tail(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = BootstrapConfig(max_chars_per_file=1_000, max_file_bytes=64 * 1024)
    body = "START" + "é" * 200_000 + "b" * 1_000 + "END"  # multi-byte chars around the seek point
    (workspace / "AGENTS.md").write_text(body, encoding="utf-8")
    size = (workspace / "AGENTS.md").stat().st_size
    reads: list[int] = []
    import io

    real_read = io.BufferedReader.read

    class CountingReader(io.BufferedReader):
        def read(self, size: int | None = -1, /) -> bytes:
            data = real_read(self, size)
            reads.append(len(data))
            return data

    real_open = open

    def spy_open(file: str, mode: str = "r", *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        handle = real_open(file, mode, *args, **kwargs)  # type: ignore[call-overload]
        if "b" in mode:
            raw = handle.detach()
            return CountingReader(raw)
        return handle

    monkeypatch.setattr("builtins.open", spy_open)
    context = BootstrapLoader(workspace, config).load()
    monkeypatch.undo()
    item = context.files[0]
    assert sum(reads) < size // 10
    assert item.truncated and item.content.startswith("START") and item.content.endswith("END")
    assert "about" in item.content and f"{size:,}" in item.content
    assert len(item.content) <= 1_000
    assert context.warnings and "AGENTS.md" in context.warnings[0]


def test_small_caps_still_fit(workspace: Path) -> None:
    config = BootstrapConfig(max_chars_per_file=300, max_total_chars=100_000)
    (workspace / "AGENTS.md").write_text("x" * 5_000, encoding="utf-8")
    item = BootstrapLoader(workspace, config).load().files[0]
    assert item.truncated and len(item.content) <= 300


async def test_aload_runs_off_loop(workspace: Path) -> None:
    write_all(workspace)
    context = await BootstrapLoader(workspace).aload()
    assert len(context.files) == 8


def test_missing_workspace_is_empty(tmp_path: Path) -> None:
    context = BootstrapLoader(tmp_path / "nope").load()
    assert context.files == [] and context.warnings == []


@pytest.mark.parametrize("cap", [100, 150, 230])
def test_a_per_file_cap_smaller_than_the_marker_still_keeps_head_marker_and_tail(
    workspace: Path, cap: int
) -> None:
    # Upstream keeps head + marker + tail for any cap (issue 13); it used to drop the file.
    config = BootstrapConfig(max_chars_per_file=cap)
    (workspace / "AGENTS.md").write_text("short enough", encoding="utf-8")
    (workspace / "SOUL.md").write_text("HEAD" + "s" * 1_000 + "TAIL", encoding="utf-8")
    context = BootstrapLoader(workspace, config).load()
    assert [f.name for f in context.files] == ["AGENTS.md", "SOUL.md"]
    soul = context.get("SOUL.md")
    assert soul is not None and soul.truncated and len(soul.content) <= cap
    assert soul.content.startswith("HEAD") and soul.content.endswith("TAIL")
    assert "[..." in soul.content
    assert "SOUL.md" in context.warnings[0] and "shortened" in context.warnings[0]


def test_whitespace_only_files_are_left_out_like_missing_ones(workspace: Path) -> None:
    (workspace / "AGENTS.md").write_text("Be brief.\n", encoding="utf-8")
    (workspace / "SOUL.md").write_text("  \n\t\n   \n", encoding="utf-8")
    (workspace / "USER.md").write_text("", encoding="utf-8")
    context = BootstrapLoader(workspace).load()
    assert [f.name for f in context.files] == ["AGENTS.md"]
    assert context.warnings == []


def test_init_and_the_prompt_share_one_bootstrap_table() -> None:
    from openclaw_mini.cli import workspace as init_module
    from openclaw_mini.context.bootstrap import BOOTSTRAP_FILES, BOOTSTRAP_TABLE

    templated = [spec.name for spec in BOOTSTRAP_TABLE if spec.template is not None]
    written = [*init_module.PROFILE_TEMPLATES, init_module.BOOTSTRAP_TEMPLATE, init_module.MEMORY_TEMPLATE]
    assert written == templated
    assert [name for name in BOOTSTRAP_FILES if name in written] == written
    for name in templated:  # every file the table templates has a template to write
        assert (init_module.workspace_templates_dir() / name).is_file(), name
