"""The `safe_fs` primitives on their own: what a walk follows, what it refuses, what it returns."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from openclaw_mini.errors import OpenClawMiniError
from openclaw_mini.tools.safe_fs import PathEscapeError, atomic_write, read_regular, resolve


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = tmp_path / "root"
    (base / "a" / "b").mkdir(parents=True)
    (base / "a" / "b" / "f.txt").write_text("deep")
    (tmp_path / "outside.txt").write_text("outside")
    return base


def test_symlinks_inside_are_followed_and_the_canonical_path_is_reported(root: Path) -> None:
    (root / "rel").symlink_to("a/b")
    (root / "abs").symlink_to(root / "a")
    (root / "a" / "up").symlink_to("../a/b/f.txt")
    for path, parts in (
        (root / "rel" / "f.txt", ("a", "b", "f.txt")),
        (root / "abs" / "b" / "f.txt", ("a", "b", "f.txt")),
        (root / "a" / "up", ("a", "b", "f.txt")),
        (root / "a" / "b" / ".." / "b" / "f.txt", ("a", "b", "f.txt")),
    ):
        with resolve(path, [root]) as location:
            assert location.parts == parts and location.path == root / "a" / "b" / "f.txt"
            assert read_regular(location) == b"deep"
    with resolve(root / "a" / "up", [root], follow_last=False) as location:
        assert location.name == "up" and stat.S_ISLNK(location.stat().st_mode)  # type: ignore[union-attr]


def test_escapes_are_refused_by_dotdot_absolute_and_relative_links(root: Path) -> None:
    (root / "out-abs").symlink_to(root.parent / "outside.txt")
    (root / "a" / "out-rel").symlink_to("../../outside.txt")
    for path in (root / ".." / "outside.txt", root / "out-abs", root / "a" / "out-rel"):
        with pytest.raises(PathEscapeError) as caught:
            resolve(path, [root])
        assert isinstance(caught.value, PermissionError) and isinstance(caught.value, OpenClawMiniError)
    (root / "loop").symlink_to("loop")
    with pytest.raises(OSError, match="symbolic links"):
        resolve(root / "loop", [root])


def test_forbidden_names_and_creating_parents(root: Path) -> None:
    with pytest.raises(PathEscapeError, match="enters"):
        resolve(root / "x" / ".GIT" / "hooks" / "pre-commit", [root], create_parents=True, forbidden={".git"})
    assert not (root / "x" / ".GIT").exists()
    with resolve(root / "new" / "deeper" / "f.txt", [root], create_parents=True) as location:
        atomic_write(location, b"made")
    assert (root / "new" / "deeper" / "f.txt").read_bytes() == b"made"
    with resolve(root / "nope" / "more" / ".." / "g.txt", [root], missing_ok=True) as location:
        assert location.path == root / "nope" / "g.txt" and location.name == "nope"


def test_atomic_write_keeps_the_mode_and_replaces_a_symlink_instead_of_following_it(root: Path) -> None:
    target = root / "a" / "b" / "f.txt"
    target.chmod(0o640)
    with resolve(target, [root]) as location:
        atomic_write(location, b"new")
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o640
    (root / "link").symlink_to(root.parent / "outside.txt")
    with resolve(root / "link", [root], follow_last=False) as location:
        atomic_write(location, b"replaced")
    assert (root.parent / "outside.txt").read_text() == "outside"
    assert not (root / "link").is_symlink() and (root / "link").read_bytes() == b"replaced"
    assert not [name for name in os.listdir(root) if name.endswith(".tmp")]


def test_fifo_is_refused_without_blocking(root: Path) -> None:
    os.mkfifo(root / "pipe")
    with resolve(root / "pipe", [root]) as location, pytest.raises(OSError, match="regular"):
        read_regular(location)
