"""File access that stays below a root directory even while another process swaps paths around.

Checking a path (`realpath`, then "is it inside?") and opening it by name later leaves a window in
which a directory or file can be replaced by a symlink to anywhere. Here a path is walked one
component at a time, each opened relative to the previous directory's file descriptor with
`O_NOFOLLOW`; symlinks are read (`readlink`) and expanded by this code, never by the kernel, and
`..` pops the walk's own stack. Whatever is swapped meanwhile, every step happens on a descriptor
that was below the root when it was opened, so nothing outside can be read, listed or written.

API (all functions take and return plain descriptors and names, so memory and skill code can use
them as well as the file tools):

- `resolve(path, roots, ...) -> Location`: walk an absolute path that lies under one of `roots`;
  a `Location` holds the open parent directory (`dir_fd`), the last name in it (`name`, "." for a
  root itself) and the canonical path (`path`). Use it as a context manager (it closes `dir_fd`).
- `Location.open(flags)`, `Location.stat()`, `Location.open_dir()`: act on the last name without
  following a symlink there.
- `read_regular(location, limit)`: bytes of a regular file (FIFOs and devices refused, never block).
- `atomic_write(location, data)`: temp file in the same directory + `rename`, all by descriptor.

Errors: `PathEscapeError` (a `PermissionError`) when a path leaves its root or enters a forbidden
name; the usual `FileNotFoundError` / `NotADirectoryError` / `OSError(ELOOP)` otherwise.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ..errors import PathEscapeError

__all__ = [
    "MAX_SYMLINKS",
    "Location",
    "PathEscapeError",
    "atomic_write",
    "read_regular",
    "resolve",
    "root_of",
]

MAX_SYMLINKS = 40
"""Symlinks expanded in one walk before giving up with ELOOP (the kernel's own limit)."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Location:
    """Where a path led: the open parent directory and the last name in it."""

    root: Path
    parts: tuple[str, ...]
    """Canonical components below `root`, symlinks expanded (the last one is `name`)."""
    dir_fd: int
    name: str
    """The last component, opened relative to `dir_fd`; "." when the path is the root itself."""
    via_symlink: bool = False

    @property
    def path(self) -> Path:
        return self.root.joinpath(*self.parts)

    def stat(self) -> os.stat_result | None:
        """`lstat` of the last name (a symlink there is not followed); None when it does not exist."""
        try:
            return os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def open(self, flags: int, mode: int = 0o666) -> int:
        """Open the last name with `O_NOFOLLOW` (a symlink swapped in meanwhile fails with ELOOP)."""
        return os.open(self.name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.dir_fd)

    def open_dir(self) -> int:
        """A descriptor of the last name as a directory (`os.scandir(fd)`, `os.fwalk(dir_fd=fd)`)."""
        return os.open(self.name, _DIR_FLAGS, dir_fd=self.dir_fd)

    def close(self) -> None:
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1

    def __enter__(self) -> Location:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def root_of(path: Path, roots: Sequence[Path]) -> tuple[Path, list[str]] | None:
    """The first of `roots` that `path` lies under by name (`..` not yet applied: the walk does
    that) and the components below it; None when it is under none of them."""
    for root in roots:
        if path.parts[: len(root.parts)] == root.parts:
            return root, list(path.parts[len(root.parts) :])
    return None


def resolve(
    path: str | os.PathLike[str],
    roots: Sequence[Path],
    *,
    follow_last: bool = True,
    create_parents: bool = False,
    forbidden: Collection[str] = (),
    missing_ok: bool = False,
) -> Location:
    """Walk the absolute `path` below one of `roots` (absolute, symlink-free) without ever leaving it.

    Symlinks are expanded by the walk: one whose target stays under a root is followed, one that
    leaves raises `PathEscapeError`, as does `..` above the root. `follow_last=False` stops at a
    symlink in the last place. `create_parents` makes missing directories on the way (never in a
    `forbidden` name). `forbidden` names (compared case-insensitively) may not be entered at all.
    `missing_ok` answers for a path whose folders do not exist yet: the `Location` then holds the
    deepest existing folder and `name` is the first missing component (`parts` has the rest).
    """
    start = Path(path)
    if not start.is_absolute():
        raise ValueError(f"safe_fs.resolve needs an absolute path, got {os.fspath(path)!r}")
    found = root_of(start, roots)
    if found is None:
        raise PathEscapeError(f"{start} is not under {', '.join(map(str, roots))}")
    root, components = found
    banned = {name.lower() for name in forbidden}
    via_symlink = False
    links = 0
    pending = deque(components)
    stack = [os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
    names: list[str] = []
    try:
        while True:
            while pending and pending[0] in ("", "."):
                pending.popleft()
            if not pending:  # the walk ended on a directory it entered (`a/b/..`) or on the root
                if not names:
                    return Location(root, (), os.dup(stack[-1]), ".", via_symlink)
                os.close(stack.pop())
                return Location(root, tuple(names), os.dup(stack[-1]), names[-1], via_symlink)
            part = pending.popleft()
            if part == "..":
                if not names:
                    raise PathEscapeError(f"{start} goes above {root} (..)", via_symlink=via_symlink)
                os.close(stack.pop())
                names.pop()
                continue
            if part.lower() in banned:
                raise PathEscapeError(f"{start} enters {part!r}", via_symlink=via_symlink)
            last = not pending
            try:
                info = os.stat(part, dir_fd=stack[-1], follow_symlinks=False)
            except FileNotFoundError:
                if last:
                    return Location(root, (*names, part), os.dup(stack[-1]), part, via_symlink)
                if missing_ok and not create_parents:
                    rest = [*names, part]
                    for more in pending:
                        if more == "..":
                            if not rest:
                                raise PathEscapeError(
                                    f"{start} goes above {root} (..)", via_symlink=via_symlink
                                ) from None
                            rest.pop()
                        elif more not in ("", "."):
                            if more.lower() in banned:
                                raise PathEscapeError(
                                    f"{start} enters {more!r}", via_symlink=via_symlink
                                ) from None
                            rest.append(more)
                    return Location(root, tuple(rest), os.dup(stack[-1]), part, via_symlink)
                if not create_parents:
                    raise
                try:
                    os.mkdir(part, dir_fd=stack[-1])
                except FileExistsError:
                    pass
                pending.appendleft(part)
                continue
            if stat.S_ISLNK(info.st_mode) and (follow_last or not last):
                links += 1
                if links > MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, "Too many levels of symbolic links", str(start))
                via_symlink = True
                target = os.readlink(part, dir_fd=stack[-1])
                if os.path.isabs(target):
                    jump = root_of(Path(target), [root, *[other for other in roots if other != root]])
                    if jump is None:
                        raise PathEscapeError(
                            f"{start} leads through a symlink to {target}", via_symlink=True
                        )
                    root, below = jump
                    for fd in stack:
                        os.close(fd)
                    stack = [os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
                    names = []
                    pending.extendleft(reversed(below))
                else:
                    pending.extendleft(reversed(Path(target).parts))
                continue
            if last:
                return Location(root, (*names, part), os.dup(stack[-1]), part, via_symlink)
            if not stat.S_ISDIR(info.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "Not a directory", part)
            try:
                fd = os.open(part, _DIR_FLAGS, dir_fd=stack[-1])
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                # Swapped for a symlink (or a file) since the stat: look at it again.
                links += 1
                if links > MAX_SYMLINKS:
                    raise
                pending.appendleft(part)
                continue
            stack.append(fd)
            names.append(part)
    finally:
        for fd in stack:
            os.close(fd)


def read_regular(location: Location, limit: int | None = None) -> bytes:
    """The bytes of the regular file at `location` (up to `limit`); refuses anything else.

    Opened with `O_NONBLOCK` so a FIFO swapped in cannot block, and checked with `fstat` on the
    descriptor actually read.
    """
    fd = location.open(os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IsADirectoryError(errno.EISDIR, "Not a regular file", location.name)
        os.set_blocking(fd, True)
        return handle.read() if limit is None else handle.read(limit)


def atomic_write(location: Location, data: bytes, mode: int | None = None) -> None:
    """Replace the file at `location` with `data`: a temp file in the same directory, fsync, rename.

    Both the temp file and the rename work on `location.dir_fd`, so a directory swapped for a
    symlink meanwhile cannot redirect the write; a symlink swapped in at the last name is replaced,
    not followed. `mode` defaults to the old file's, or 0o666 minus the umask for a new one.
    """
    if mode is None:
        old = location.stat()
        mode = stat.S_IMODE(old.st_mode) if old is not None and stat.S_ISREG(old.st_mode) else None
    temp = f".{location.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(
        temp,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o666 if mode is None else 0o600,
        dir_fd=location.dir_fd,
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temp, location.name, src_dir_fd=location.dir_fd, dst_dir_fd=location.dir_fd)
    except BaseException:
        try:
            os.unlink(temp, dir_fd=location.dir_fd)
        except FileNotFoundError:
            pass
        raise
