"""`SkillLoader`: the four sources, precedence and shadowing, gating, and an mtime cache so a
per-run load of unchanged skills costs a few hundred `stat` calls."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .models import (
    MAX_SKILL_FILE_BYTES,
    SKILL_FILE,
    Skill,
    SkillShadow,
    SkillSnapshot,
    SkillSource,
    SkillWarning,
    _ascii_lower,
)
from .parsing import _fail, _parse_path, _Parsed

__all__ = ["SkillLoader", "bundled_skills_dir"]

logger = logging.getLogger(__name__)

_DEFAULT_USER_DIR = Path("~/.openclaw-mini/skills")
_USER_DIR_ENV = "OPENCLAW_MINI_SKILLS_DIR"
_HOME_ENV = "OPENCLAW_MINI_HOME"


# ------------------------------------------------------------------------------------------- loading


@functools.cache
def bundled_skills_dir() -> Path:
    """Where the bundled skills live: the checkout's top-level `skills/`, else the wheel's copy.
    Looked up once per process (it cannot move while the package is imported)."""
    package = Path(__file__).resolve().parent.parent  # openclaw_mini/
    checkout = package.parent / "skills"
    if checkout.is_dir() and (package.parent / "pyproject.toml").is_file():
        return checkout
    return package / "_bundled" / "skills"


def _platform_name(value: str) -> str:
    if value.startswith("linux"):
        return "linux"
    if value.startswith(("win", "cygwin", "msys")):
        return "win32"
    return value


_StatKey = tuple[int, int, int, int]


def _stat_key(path: str | Path) -> _StatKey | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_ctime_ns, info.st_size, info.st_ino)


@dataclass
class _RootEntry:
    key: _StatKey | None
    folders: list[tuple[str, str | None]]
    """(path of the folder's SKILL.md, warning if the folder leaves the root) in name order."""


class SkillLoader:
    """Loads the skills of one workspace; build once, call `load()` (or `aload()`) every run.

    The user folder defaults to `$OPENCLAW_MINI_SKILLS_DIR`, else `$OPENCLAW_MINI_HOME/skills`, else
    `~/.openclaw-mini/skills`.

    `env`, `platform`, `which` and `config` exist for tests and embedders; by default they are the
    live process environment, `sys.platform`, `shutil.which` on that environment's PATH, and no
    config (so skills that need OpenClaw channel config are listed as ineligible).
    """

    def __init__(
        self,
        workspace: str | os.PathLike[str],
        *,
        user_dir: str | os.PathLike[str] | None = None,
        bundled_dir: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        platform: str | None = None,
        which: Callable[[str], str | None] | None = None,
        config: Mapping[str, Any] | None = None,
        max_bytes: int = MAX_SKILL_FILE_BYTES,
    ) -> None:
        self.workspace = Path(workspace).expanduser().resolve()
        self._env = env
        live_env = env if env is not None else os.environ
        if user_dir is None:
            override = live_env.get(_USER_DIR_ENV, "").strip()
            home = live_env.get(_HOME_ENV, "").strip()
            user_dir = override or (Path(home) / "skills" if home else _DEFAULT_USER_DIR)
        self.user_dir = Path(user_dir).expanduser().absolute()
        self.bundled_dir = Path(bundled_dir).expanduser().absolute() if bundled_dir else bundled_skills_dir()
        self.platform = _platform_name(platform or sys.platform)
        self._which = which
        self._config = config or {}
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._roots: dict[SkillSource, _RootEntry] = {}
        self._parsed: dict[str, tuple[_StatKey, _Parsed]] = {}
        self._which_cache: dict[str, str | None] = {}
        self._which_key: tuple[Any, ...] | None = None
        self._env_names: tuple[str, ...] = ()
        self._config_names: tuple[str, ...] = ()
        self._gate_inputs: tuple[Any, ...] | None = None
        self._signature: tuple[Any, ...] | None = None
        self._snapshot: SkillSnapshot | None = None
        # One folder serving as two sources (running inside this repo: workspace/skills is the bundled
        # folder) would shadow every skill by itself; keep it only as the higher source.
        resolved = [root.resolve() for _source, root in self.sources]
        self._active_sources = [
            (source, root)
            for index, (source, root) in enumerate(self.sources)
            if resolved[index] not in resolved[index + 1 :]
        ]

    @property
    def sources(self) -> list[tuple[SkillSource, Path]]:
        """Every source folder, lowest precedence first."""
        return [
            ("bundled", self.bundled_dir),
            ("user", self.user_dir),
            ("workspace-agents", self.workspace / ".agents" / "skills"),
            ("workspace", self.workspace / "skills"),
        ]

    @property
    def read_roots(self) -> tuple[Path, ...]:
        """Folders outside the workspace whose skills the model must be able to read (sandbox roots)."""
        return tuple(root for source, root in self.sources if source in ("bundled", "user"))

    async def aload(self) -> SkillSnapshot:
        """`load()` off the event loop."""
        import asyncio

        return await asyncio.to_thread(self.load)

    def load(self) -> SkillSnapshot:
        """Current skills; rescans only what changed since the last call (mtime based)."""
        with self._lock:
            return self._load()

    def _load(self) -> SkillSnapshot:
        found: list[tuple[SkillSource, str, _StatKey, _Parsed]] = []
        root_warnings: list[SkillWarning] = []
        disk_changed = self._snapshot is None
        for source, root in self._active_sources:
            folders, root_changed = self._folders(source, root)
            disk_changed = disk_changed or root_changed
            for skill_file, problem in folders:
                if problem is not None:
                    root_warnings.append(
                        SkillWarning(path=Path(skill_file), message=problem, skipped=True, source=source)
                    )
                    continue
                key = _stat_key(skill_file)
                cached = self._parsed.get(skill_file)
                if key is None:
                    if cached is not None:
                        del self._parsed[skill_file]
                        disk_changed = True
                    continue
                if cached is None or cached[0] != key:
                    disk_changed = True
                    parsed = self._parse_checked(Path(skill_file), root, source)
                    self._parsed[skill_file] = (key, parsed)
                    for warning in parsed.warnings:
                        logger.warning("skill %s", warning)
                else:
                    parsed = cached[1]
                found.append((source, skill_file, key, parsed))

        gate_inputs = self._current_gate_inputs()
        if not disk_changed and gate_inputs is not None and gate_inputs == self._gate_inputs:
            assert self._snapshot is not None
            return self._snapshot  # the per-run fast path: a few hundred stats, nothing else

        if disk_changed:
            live = {skill_file for _source, skill_file, _key, _parsed in found}
            for stale in [path for path in self._parsed if path not in live]:
                del self._parsed[stale]
        winners, warnings, shadowed = self._resolve(found)
        warnings[:0] = root_warnings
        requirements = [skill.metadata.requires for skill in winners.values() if skill.metadata]
        self._env_names = tuple(sorted({name for needs in requirements for name in needs.env}))
        self._config_names = tuple(sorted({name for needs in requirements for name in needs.config}))
        self._gate_inputs = self._current_gate_inputs()
        gates = {lookup: self._gate(skill) for lookup, skill in winners.items()}
        signature = (
            tuple((source, path, key) for source, path, key, _parsed in found),
            tuple(problem.message for problem in root_warnings),
            tuple(sorted(gates.items())),
        )
        if self._snapshot is not None and signature == self._signature:
            return self._snapshot

        skills = []
        for lookup, skill in sorted(winners.items()):
            reason = gates[lookup]
            if reason is not None:
                skill = skill.model_copy(update={"eligible": False, "ineligible_reason": reason})
            skills.append(skill)
        self._snapshot = SkillSnapshot(
            workspace=self.workspace, skills=skills, warnings=warnings, shadowed=shadowed
        )
        self._signature = signature
        return self._snapshot

    def _resolve(
        self, found: list[tuple[SkillSource, str, _StatKey, _Parsed]]
    ) -> tuple[dict[str, Skill], list[SkillWarning], list[SkillShadow]]:
        """Apply precedence: later sources win; within one source the first folder (by name) wins."""
        winners: dict[str, Skill] = {}
        warnings: list[SkillWarning] = []
        shadowed: list[SkillShadow] = []
        per_source: dict[tuple[SkillSource, str], Path] = {}
        for source, _skill_file, _key, parsed in found:
            warnings.extend(warning.model_copy(update={"source": source}) for warning in parsed.warnings)
            skill = parsed.skill
            if skill is None:
                continue
            lookup = _ascii_lower(skill.name)
            first = per_source.get((source, lookup))
            if first is not None:
                warnings.append(
                    SkillWarning(
                        path=skill.path,
                        message=f"duplicate skill name '{skill.name}' in the {source} skills "
                        f"(also {first}); the first one is used",
                    )
                )
                shadowed.append(
                    SkillShadow(
                        name=skill.name,
                        source=source,
                        path=skill.path,
                        winner_source=source,
                        winner_path=first,
                    )
                )
                continue
            per_source[(source, lookup)] = skill.path
            loser = winners.get(lookup)
            if loser is not None:
                shadowed.append(
                    SkillShadow(
                        name=loser.name,
                        source=loser.source,
                        path=loser.path,
                        winner_source=source,
                        winner_path=skill.path,
                    )
                )
            winners[lookup] = skill
        return winners, warnings, shadowed

    def _current_gate_inputs(self) -> tuple[Any, ...] | None:
        """Everything eligibility depends on, or None when it cannot be known cheaply (injected `which`)."""
        if self._which is not None:
            self._which_cache.clear()
            return None
        env = self._env if self._env is not None else os.environ
        self._refresh_which_cache()
        return (
            self._which_key,
            tuple(env.get(name) for name in self._env_names),
            tuple(_config_value(self._config, name) for name in self._config_names),
        )

    def _folders(self, source: SkillSource, root: Path) -> tuple[list[tuple[str, str | None]], bool]:
        """Immediate sub-folders of a source, cached until the source folder's mtime changes."""
        key = _stat_key(root)
        cached = self._roots.get(source)
        if cached is not None and cached.key == key:
            return cached.folders, False
        folders: list[tuple[str, str | None]] = []
        if key is not None:
            try:
                real_root = root.resolve()
                entries = sorted(os.scandir(root), key=lambda entry: entry.name)
            except OSError as exc:
                logger.warning("cannot list skills folder %s: %s", root, exc)
                entries = []
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if not entry.is_dir(follow_symlinks=True):
                        continue
                    problem = None
                    if entry.is_symlink():
                        target = Path(entry.path).resolve()
                        if real_root != target and real_root not in target.parents:
                            problem = f"skill folder is a symlink to {target}, outside {root}; skipped"
                except OSError:
                    continue
                folders.append((os.path.join(entry.path, SKILL_FILE), problem))
        self._roots[source] = _RootEntry(key, folders)
        return folders, True

    def _parse_checked(self, skill_file: Path, root: Path, source: SkillSource) -> _Parsed:
        try:
            if skill_file.is_symlink():
                target = skill_file.resolve()
                if root.resolve() not in target.parents:
                    return _fail(
                        skill_file, None, f"SKILL.md is a symlink to {target}, outside {root}; skipped"
                    )
            return _parse_path(skill_file, source, self.max_bytes)
        except Exception as exc:  # one odd file must never break the run; the warning names it
            logger.debug("unexpected error loading %s", skill_file, exc_info=True)
            return _fail(skill_file, None, f"could not load ({type(exc).__name__}: {exc}); skipped")

    def _gate(self, skill: Skill) -> str | None:
        """Why a skill is not offered here, or None when it is."""
        meta = skill.metadata
        if meta is None:
            return None
        if meta.os and self.platform not in meta.os:
            return f"needs os {', '.join(meta.os)} (this is {self.platform})"
        if meta.always:
            return None
        reasons: list[str] = []
        requires = meta.requires
        missing = [name for name in requires.bins if not self._has_bin(name)]
        if missing:
            reasons.append(f"missing bins: {', '.join(missing)}")
        if requires.any_bins and not any(self._has_bin(name) for name in requires.any_bins):
            reasons.append(f"needs one of: {', '.join(requires.any_bins)}")
        env = self._env if self._env is not None else os.environ
        missing = [name for name in requires.env if not env.get(name, "").strip()]
        if missing:
            reasons.append(f"missing env: {', '.join(missing)}")
        missing = [name for name in requires.config if not _config_value(self._config, name)]
        if missing:
            reasons.append(f"missing config: {', '.join(missing)}")
        return "; ".join(reasons) or None

    def _refresh_which_cache(self) -> None:
        """Forget PATH look-ups when PATH or one of its folders changed (installing a binary
        changes its folder's mtime), so a per-run load costs a few stats, not a PATH walk per bin."""
        if self._which is not None:
            return
        path_value = self._path_value()
        key = (path_value, tuple(_stat_key(Path(part)) for part in path_value.split(os.pathsep) if part))
        if key != self._which_key:
            self._which_cache.clear()
            self._which_key = key

    def _path_value(self) -> str:
        env = self._env if self._env is not None else os.environ
        return env.get("PATH", os.defpath)

    def _has_bin(self, name: str) -> bool:
        if name not in self._which_cache:
            if self._which is not None:
                self._which_cache[name] = self._which(name)
            else:
                self._which_cache[name] = shutil.which(name, path=self._path_value())
        return self._which_cache[name] is not None


def _config_value(config: Mapping[str, Any], dotted: str) -> bool:
    """Whether a dotted config path is set, with upstream's truthiness.

    Stray dots are ignored (`.channels..discord.` is `channels.discord`); a whitespace-only
    string and 0 are false, an empty object or list is true (it is configured, just empty).
    """
    current: Any = config
    for part in (piece.strip() for piece in dotted.split(".")):
        if not part:
            continue
        if not isinstance(current, Mapping) or part not in current:
            return False
        current = current[part]
    if current is None:
        return False
    if isinstance(current, bool):
        return current
    if isinstance(current, int | float):
        return current != 0
    if isinstance(current, str):
        return bool(current.strip())
    return True
