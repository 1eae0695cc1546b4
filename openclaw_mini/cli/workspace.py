"""`openclaw-mini init`: write the workspace templates into a folder without losing anyone's edits.

Only the standard library, typer and the bootstrap file table (`context.bootstrap`, stdlib only at
import) are imported here: `init` must start in well under 0.3 s, so it never touches the agent,
pydantic or the anthropic SDK.
"""

from __future__ import annotations

import os
import shlex
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import typer

from ..context.bootstrap import BOOTSTRAP_TABLE, MEMORY_FILE_NAMES
from .common import fail

__all__ = [
    "BOOTSTRAP_TEMPLATE",
    "CONFIG_TEMPLATE",
    "MEMORY_TEMPLATE",
    "PROFILE_TEMPLATES",
    "InitReport",
    "init_workspace",
    "workspace_templates_dir",
    "write_templates",
]

PROFILE_TEMPLATES: tuple[str, ...] = tuple(
    spec.name for spec in BOOTSTRAP_TABLE if spec.template == "profile"
)
"""Written on every init (kept when present, unless `--force`)."""
BOOTSTRAP_TEMPLATE = next(spec.name for spec in BOOTSTRAP_TABLE if spec.template == "first-run")
"""The first-run ritual: only for a brand-new workspace, since the agent deletes it when done."""
CONFIG_TEMPLATE = "openclaw-mini.toml"
"""The commented settings file (kept when present, unless `--force`)."""
MEMORY_TEMPLATE = next(spec.name for spec in BOOTSTRAP_TABLE if spec.template == "memory")
"""Written only when no memory file exists, even with `--force`: it holds the user's memories."""
_MEMORY_NAMES = MEMORY_FILE_NAMES
_MEMORY_DIR = "memory"


def workspace_templates_dir() -> Path:
    """The templates: the checkout's top-level `workspace-templates/`, else the wheel's bundled copy."""
    package = Path(__file__).resolve().parent.parent
    checkout = package.parent / "workspace-templates"
    if checkout.is_dir() and (package.parent / "pyproject.toml").is_file():
        return checkout
    return package / "_bundled" / "workspace-templates"


@dataclass
class InitReport:
    """What `write_templates` did, for the CLI to print (and for tests to check)."""

    workspace: Path
    new_workspace: bool = False
    written: list[str] = field(default_factory=list)
    overwritten: list[str] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)
    """(name, why) for each file left as it was."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(name, why) for each template deliberately not written."""
    created_dirs: list[str] = field(default_factory=list)


def _occupied(path: Path) -> bool:
    """Something is at `path` (a file, a folder, or even a dangling symlink)."""
    return path.exists() or path.is_symlink()


def _write_new(path: Path, data: bytes) -> bool:
    """Create `path` with `data`; False if it appeared meanwhile (never clobbers)."""
    try:
        with open(path, "xb") as handle:
            handle.write(data)
    except FileExistsError:
        return False
    return True


def _replace(path: Path, data: bytes) -> None:
    """Write `data` to a temp file next to `path` and rename it over `path`.

    Renaming replaces a symlink itself instead of writing through it into a file elsewhere.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            mode = 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _template(templates: Path, name: str) -> bytes:
    try:
        return (templates / name).read_bytes()
    except OSError:
        fail(
            f"The workspace template {name} is missing from {templates}; "
            "the openclaw-mini installation looks incomplete (reinstall it)."
        )


def write_templates(directory: Path, *, force: bool, templates: Path | None = None) -> InitReport:
    """Set up `directory` from the templates; see `init_workspace` for the rules."""
    directory = Path(os.path.expanduser(str(directory)))
    if _occupied(directory) and not directory.is_dir():
        fail(f"{directory} exists but is not a folder; choose another path for the workspace.")
    source = templates or workspace_templates_dir()
    if not source.is_dir():
        fail(
            f"The workspace templates folder {source} is missing; "
            "the openclaw-mini installation looks incomplete (reinstall it)."
        )
    contents = {
        name: _template(source, name)
        for name in (*PROFILE_TEMPLATES, CONFIG_TEMPLATE, BOOTSTRAP_TEMPLATE, MEMORY_TEMPLATE)
    }

    report = InitReport(workspace=directory.absolute())
    if not directory.is_dir():
        directory.mkdir(parents=True)
        report.created_dirs.append(f"{directory}{os.sep}")
    existing_memory = [name for name in _MEMORY_NAMES if _occupied(directory / name)]
    report.new_workspace = (
        not existing_memory
        and not _occupied(directory / _MEMORY_DIR)
        and not any(_occupied(directory / name) for name in PROFILE_TEMPLATES)
    )

    def put(name: str) -> None:
        target = directory / name
        if _occupied(target):
            if target.is_dir():
                report.kept.append((name, "a folder of that name is in the way"))
            elif not force:
                report.kept.append((name, "already there; --force overwrites"))
            else:
                _replace(target, contents[name])
                report.overwritten.append(name)
            return
        if _write_new(target, contents[name]):
            report.written.append(name)
        else:
            report.kept.append((name, "appeared while writing; left alone"))

    for name in PROFILE_TEMPLATES:
        put(name)
    put(CONFIG_TEMPLATE)

    bootstrap = directory / BOOTSTRAP_TEMPLATE
    if report.new_workspace or _occupied(bootstrap):
        put(BOOTSTRAP_TEMPLATE)
    else:
        report.skipped.append((BOOTSTRAP_TEMPLATE, "only a new workspace gets the first-run ritual"))

    if existing_memory:
        report.kept.append((existing_memory[0], "memory is never overwritten, even with --force"))
    elif _write_new(directory / MEMORY_TEMPLATE, contents[MEMORY_TEMPLATE]):
        report.written.append(MEMORY_TEMPLATE)

    memory_dir = directory / _MEMORY_DIR
    if not _occupied(memory_dir):
        memory_dir.mkdir()
        report.created_dirs.append(f"{_MEMORY_DIR}/")
    elif not memory_dir.is_dir():
        report.kept.append((_MEMORY_DIR, "exists but is not a folder; daily notes need memory/ to be one"))
    return report


def _hint(command: str, directory: Path) -> str:
    if directory == Path("."):
        return f"openclaw-mini {command}"
    return f"openclaw-mini {command} -w {shlex.quote(str(directory))}"


def init_workspace(directory: Path, *, force: bool) -> None:
    """Write AGENTS.md, SOUL.md, TOOLS.md, IDENTITY.md, USER.md, HEARTBEAT.md and a commented
    openclaw-mini.toml into `directory`.

    The folder is created when missing. An existing file is kept unless `force`. BOOTSTRAP.md (the
    first-run ritual) is written only into a brand-new workspace, so a finished ritual is not
    started again. MEMORY.md and `memory/` are created when absent and never overwritten.
    """
    report = write_templates(directory, force=force)
    typer.echo(f"Workspace: {report.workspace}")
    for name in report.created_dirs:
        typer.echo(f"  created  {name}")
    for name in report.written:
        typer.echo(f"  wrote    {name}")
    for name in report.overwritten:
        typer.echo(f"  replaced {name} (--force)")
    for name, why in report.kept:
        typer.echo(f"  kept     {name} ({why})")
    for name, why in report.skipped:
        typer.echo(f"  skipped  {name} ({why})")
    if not report.written and not report.overwritten:
        typer.echo("Nothing to write: the workspace is already set up.")
    typer.echo("")
    typer.echo(f"Next: {_hint('chat', directory)}")
    if BOOTSTRAP_TEMPLATE in report.written:
        typer.echo("The first chat starts with a short getting-to-know-you (BOOTSTRAP.md).")
    typer.echo(f"Check your setup any time: {_hint('doctor', directory)}")
