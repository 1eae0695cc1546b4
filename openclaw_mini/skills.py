"""Skills: SKILL.md folders (OpenClaw form and the mini form with triggers), loading, gating, matching.

A skill is a folder with a `SKILL.md`: YAML frontmatter, then markdown instructions. The loader reads
four sources (bundled < user < `<workspace>/.agents/skills` < `<workspace>/skills`), lets a higher
source override a same-named skill, gates each skill on its declared requirements and caches by
mtime so the per-run `load()` is a few hundred `stat` calls. Bad files never raise: each becomes a
`SkillWarning` naming the file and line, and every other skill still loads.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import shutil
import stat
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

__all__ = [
    "MAX_SKILL_FILE_BYTES",
    "SOURCE_ORDER",
    "Skill",
    "SkillFrontmatter",
    "SkillInstallSpec",
    "SkillLoader",
    "SkillMatch",
    "SkillMetadata",
    "SkillRequires",
    "SkillShadow",
    "SkillSnapshot",
    "SkillSource",
    "SkillWarning",
    "bundled_skills_dir",
    "match_skill",
    "parse_skill_file",
    "render_skills_prompt",
]

logger = logging.getLogger(__name__)

SkillSource = Literal["bundled", "user", "workspace-agents", "workspace"]
SOURCE_ORDER: tuple[SkillSource, ...] = ("bundled", "user", "workspace-agents", "workspace")
"""Lowest precedence first: a later source overrides a same-named skill from an earlier one."""

MAX_SKILL_FILE_BYTES = 256 * 1024
SKILL_FILE = "SKILL.md"
METADATA_KEYS = ("openclaw", "clawdbot", "clawdis", "moltbot")
"""Keys of `metadata` that hold the OpenClaw block (the later three are legacy names)."""

_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader when present: about 10x faster than pure Python on a cold load."""
_DEFAULT_USER_DIR = Path("~/.openclaw-mini/skills")
_USER_DIR_ENV = "OPENCLAW_MINI_SKILLS_DIR"
_HOME_ENV = "OPENCLAW_MINI_HOME"


# --------------------------------------------------------------------------------------------- models


def _as_str_list(value: Any) -> list[str]:
    """Accept `"a"`, `["a", "b"]` or null where a list of strings is meant (real files mix them)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, (list, tuple)):
        if any(isinstance(item, (dict, list)) for item in value):
            raise ValueError("expected a list of strings")
        return [str(item) for item in value if item is not None and str(item).strip()]
    if isinstance(value, dict):
        raise ValueError("expected a string or a list of strings, not a mapping")
    return [str(value)]


class SkillRequires(BaseModel):
    """What must be present for a skill to be offered."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    bins: list[str] = Field(default_factory=list)
    """Executables that must all be on PATH."""
    any_bins: list[str] = Field(default_factory=list, alias="anyBins")
    """At least one of these must be on PATH."""
    env: list[str] = Field(default_factory=list)
    """Environment variables that must be set and non-empty."""
    config: list[str] = Field(default_factory=list)
    """Dotted config paths that must be truthy (OpenClaw channel settings and the like)."""

    @field_validator("bins", "any_bins", "env", "config", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> list[str]:
        return _as_str_list(value)


class SkillInstallSpec(BaseModel):
    """One way to install what a skill needs (shown to the user; never run by the loader)."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    kind: str | None = None
    label: str | None = None
    bins: list[str] = Field(default_factory=list)

    @field_validator("bins", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> list[str]:
        return _as_str_list(value)


class SkillMetadata(BaseModel):
    """The `metadata.openclaw` object (or its legacy `clawdbot`/`clawdis`/`moltbot` spelling)."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    emoji: str | None = None
    always: bool = False
    """Offer the skill even when its requirements are missing (the os list still applies)."""
    os: list[str] = Field(default_factory=list)
    """Platforms (`darwin`, `linux`, `win32`) the skill works on; empty means all."""
    requires: SkillRequires = Field(default_factory=SkillRequires)
    primary_env: str | None = Field(default=None, alias="primaryEnv")
    install: list[SkillInstallSpec] = Field(default_factory=list)

    @field_validator("os", mode="before")
    @classmethod
    def _os_list(cls, value: Any) -> list[str]:
        return [item.strip().lower() for item in _as_str_list(value)]

    @field_validator("requires", mode="before")
    @classmethod
    def _requires(cls, value: Any) -> Any:
        return value if value is not None else {}

    @field_validator("install", mode="before")
    @classmethod
    def _install(cls, value: Any) -> Any:
        if value is None:
            return []
        return [value] if isinstance(value, dict) else value


class SkillFrontmatter(BaseModel):
    """The on-disk frontmatter of a SKILL.md; accepts both the OpenClaw and the mini form.

    `v` is the format version: files in the wild carry none, which means 1. Unknown keys are kept in
    `model_extra` so a newer file still loads.
    """

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    v: int = 1
    id: str | None = None
    name: str | None = None
    description: str | None = None
    triggers: list[str] = Field(default_factory=list)
    user_invocable: bool = Field(default=True, alias="user-invocable")
    disable_model_invocation: bool = Field(default=False, alias="disable-model-invocation")
    homepage: str | None = None
    allowed_tools: list[str] = Field(default_factory=list, alias="allowed-tools")
    metadata: Any = None

    @field_validator("id", "name", "description", "homepage", mode="before")
    @classmethod
    def _scalar_text(cls, value: Any) -> Any:
        if isinstance(value, (int, float, datetime.date)) and not isinstance(value, bool):
            return str(value)  # YAML turns `description: 2024-01-01` or `id: 42` into non-strings
        return value.strip() if isinstance(value, str) else value

    @field_validator("triggers", "allowed_tools", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> list[str]:
        return [item.strip() for item in _as_str_list(value)]

    @field_validator("user_invocable", "disable_model_invocation", mode="before")
    @classmethod
    def _flags(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in {"true", "yes", "on", "1"}:
            return True
        if isinstance(value, str) and value.strip().lower() in {"false", "no", "off", "0"}:
            return False
        return value


class Skill(BaseModel):
    """A loaded skill: what the prompt lists, what a trigger injects, and whether it is offered."""

    model_config = ConfigDict(frozen=True)

    name: str
    """Identifier: the mini form's `id`, else `name`, else the folder name. `/name` invokes it."""
    description: str
    source: SkillSource
    path: Path
    """The SKILL.md file."""
    base_dir: Path
    """The skill's folder (what `{baseDir}` in the body means)."""
    body: str
    """Markdown after the frontmatter, `{baseDir}` replaced."""
    title: str | None = None
    """The frontmatter `name` when the mini form also gives an `id`."""
    triggers: list[str] = Field(default_factory=list)
    user_invocable: bool = True
    disable_model_invocation: bool = False
    homepage: str | None = None
    allowed_tools: list[str] = Field(default_factory=list)
    metadata: SkillMetadata | None = None
    eligible: bool = True
    ineligible_reason: str | None = None

    @property
    def emoji(self) -> str | None:
        return self.metadata.emoji if self.metadata else None


class SkillWarning(BaseModel):
    """A problem with one skill file; the skill was skipped or shadowed, nothing else was affected."""

    model_config = ConfigDict(frozen=True)

    path: Path
    line: int | None = None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"{where}: {self.message}"


class SkillShadow(BaseModel):
    """A skill hidden by a same-named one from a higher source (or an earlier folder of its source)."""

    model_config = ConfigDict(frozen=True)

    name: str
    source: SkillSource
    path: Path
    winner_source: SkillSource
    winner_path: Path


class SkillSnapshot(BaseModel):
    """The skills as of one `load()`; immutable, and the same object while nothing changed on disk."""

    model_config = ConfigDict(frozen=True)

    workspace: Path
    skills: list[Skill] = Field(default_factory=list)
    """Every winning skill, eligible or not, sorted by name."""
    warnings: list[SkillWarning] = Field(default_factory=list)
    shadowed: list[SkillShadow] = Field(default_factory=list)

    _by_name: dict[str, Skill] = PrivateAttr(default_factory=dict)
    _triggers: list[tuple[str, str, bool, int, Skill]] = PrivateAttr(default_factory=list)
    _rendered: dict[tuple[int, int], tuple[str, tuple[str, ...]]] = PrivateAttr(default_factory=dict)

    def model_post_init(self, __context: Any) -> None:
        self._by_name = {_ascii_lower(skill.name): skill for skill in self.skills}
        self._triggers = _trigger_table(self.skills)

    @property
    def eligible(self) -> list[Skill]:
        return [skill for skill in self.skills if skill.eligible]

    def get(self, name: str) -> Skill | None:
        """The skill called `name` (ASCII case-insensitive), eligible or not."""
        return self._by_name.get(_ascii_lower(name.strip().lstrip("/")))


# ------------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class _Parsed:
    """One SKILL.md parse: a skill (eligibility not yet decided) and/or warnings."""

    skill: Skill | None
    warnings: tuple[SkillWarning, ...] = ()


_FENCE = re.compile(r"^---[ \t]*$")
_FENCE_END = re.compile(r"^(?:---|\.\.\.)[ \t]*$")
_TOP_KEY = re.compile(r"^([A-Za-z_][\w.-]*)[ \t]*:(?:[ \t]|$)")


def parse_skill_file(
    path: Path, source: SkillSource = "workspace", *, max_bytes: int = MAX_SKILL_FILE_BYTES
) -> tuple[Skill | None, list[SkillWarning]]:
    """Parse one SKILL.md into a `Skill` (eligible until gated) plus any warnings; never raises."""
    parsed = _parse_path(Path(path), source, max_bytes)
    return parsed.skill, list(parsed.warnings)


def _parse_path(path: Path, source: SkillSource, max_bytes: int) -> _Parsed:
    try:
        # O_NONBLOCK + fstat: a FIFO named SKILL.md would otherwise block open() forever, and with
        # it every run (load() holds the loader's lock).
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with open(fd, "rb") as handle:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return _fail(path, None, "SKILL.md is not a regular file (a pipe or device?); skipped")
            if info.st_size > max_bytes:
                size, limit = _human_size(info.st_size), _human_size(max_bytes)
                return _fail(path, None, f"SKILL.md is {size}, over the {limit} limit; skipped")
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        return _fail(path, None, f"cannot read SKILL.md: {exc.strerror or exc}")
    if len(raw) > max_bytes:
        return _fail(path, None, f"SKILL.md grew over the {_human_size(max_bytes)} limit; skipped")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return _fail(path, line, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x}); skipped")
    return _parse_text(text, path, source)


def _parse_text(text: str, path: Path, source: SkillSource) -> _Parsed:
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if not lines or not _FENCE.match(lines[0]):
        return _fail(path, 1, "no YAML frontmatter (a SKILL.md starts with a '---' line); skipped")
    end = next((index for index in range(1, len(lines)) if _FENCE_END.match(lines[index])), None)
    if end is None:
        return _fail(path, 1, "frontmatter opened with '---' is never closed; skipped")
    front_text = "\n".join(lines[1:end])
    body = "\n".join(lines[end + 1 :]).strip("\n")

    data, error = _load_frontmatter(front_text)
    if error is not None:
        return _fail(path, *error)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return _fail(path, 2, f"frontmatter must be a mapping of keys, not {type(data).__name__}; skipped")

    warnings: list[SkillWarning] = []
    try:
        front = SkillFrontmatter.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        return _fail(path, _key_line(lines, end, key), f"frontmatter field '{key}': {first['msg']}; skipped")

    folder = path.parent
    name = front.id or front.name or folder.name
    if not name or any(char.isspace() for char in name) or "/" in name:
        return _fail(
            path,
            _key_line(lines, end, "id" if front.id else "name"),
            f"skill name {name!r} must be one word without '/'; skipped",
        )
    if not front.description:
        return _fail(
            path,
            _key_line(lines, end, "description") or 2,
            "frontmatter has no 'description' (required); skipped",
        )

    metadata, meta_warning = _metadata(front.metadata)
    if meta_warning:
        warnings.append(SkillWarning(path=path, line=_key_line(lines, end, "metadata"), message=meta_warning))
    homepage = front.homepage or (
        _str_or_none(metadata.model_extra.get("homepage")) if metadata and metadata.model_extra else None
    )
    skill = Skill(
        name=name,
        title=front.name if front.id and front.name and front.name != front.id else None,
        description=" ".join(front.description.split()),
        source=source,
        path=path,
        base_dir=folder,
        body=body.replace("{baseDir}", str(folder)),
        triggers=[trigger for trigger in front.triggers if trigger],
        user_invocable=front.user_invocable,
        disable_model_invocation=front.disable_model_invocation,
        homepage=homepage,
        allowed_tools=front.allowed_tools,
        metadata=metadata,
    )
    return _Parsed(skill, tuple(warnings))


def _load_frontmatter(text: str) -> tuple[Any, tuple[int | None, str] | None]:
    """YAML first; on failure a per-key retry with a lenient JSON parse for flow objects.

    Real OpenClaw files write `metadata` as JSON with trailing commas, sometimes at column 0 or
    tab-indented, which YAML rejects; those still load. Anything else reports YAML's own line.
    """
    try:
        return _safe_yaml(text), None
    except yaml.YAMLError as exc:
        lenient = _lenient_frontmatter(text)
        if lenient is not None:
            return lenient, None
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 2 if mark is not None else None  # +1 for 1-based, +1 for the opening '---'
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return None, (line, f"invalid YAML frontmatter: {problem}; skipped")


def _safe_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_YAML_LOADER)  # a safe loader, C or pure Python


def _lenient_frontmatter(text: str) -> dict[str, Any] | None:
    blocks: list[tuple[str, list[str]]] = []
    for line in text.split("\n"):
        match = _TOP_KEY.match(line)
        if match:
            blocks.append((match.group(1), [line]))
        elif blocks:
            blocks[-1][1].append(line)
        elif line.strip() and not line.lstrip().startswith("#"):
            return None
    result: dict[str, Any] = {}
    for key, block_lines in blocks:
        block = "\n".join(block_lines)
        try:
            loaded = _safe_yaml(block)
        except yaml.YAMLError:
            value_text = block.split(":", 1)[1]
            value = _lenient_json(value_text)
            if value is None:
                return None
            result[key] = value
            continue
        if not isinstance(loaded, dict):
            return None
        result.update(loaded)
    return result


def _lenient_json(text: str) -> Any:
    """JSON with `//` and `/* */` comments and trailing commas (the JSON5 bits real files use)."""
    out: list[str] = []
    index, length = 0, len(text)
    while index < length:
        char = text[index]
        if char == '"':
            end = index + 1
            while end < length and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            out.append(text[index : end + 1])
            index = end + 1
        elif text.startswith("//", index):
            newline = text.find("\n", index)
            index = length if newline < 0 else newline
        elif text.startswith("/*", index):
            close = text.find("*/", index + 2)
            index = length if close < 0 else close + 2
        elif char == ",":
            rest = index + 1
            while rest < length and text[rest] in " \t\r\n":
                rest += 1
            if rest < length and text[rest] in "}]":
                index += 1
                continue
            out.append(char)
            index += 1
        else:
            out.append(char)
            index += 1
    cleaned = "".join(out).strip()
    if not cleaned:
        return None
    try:
        return json.loads(cleaned)
    except ValueError:
        return None


def _metadata(raw: Any) -> tuple[SkillMetadata | None, str | None]:
    if raw is None:
        return None, None
    if isinstance(raw, str):
        parsed = _lenient_json(raw)
        if not isinstance(parsed, dict):
            return None, "metadata is a string that is not a JSON object; ignored"
        raw = parsed
    if not isinstance(raw, dict):
        return None, f"metadata must be an object, not {type(raw).__name__}; ignored"
    block = next((raw[key] for key in METADATA_KEYS if isinstance(raw.get(key), dict)), None)
    if block is None:
        return None, None
    try:
        return SkillMetadata.model_validate(block), None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return None, f"metadata field '{where}': {first['msg']}; requirements ignored"


def _key_line(lines: list[str], end: int, key: str) -> int | None:
    """1-based file line of a top-level frontmatter key, for warnings."""
    top = key.split(".", 1)[0]
    for index in range(1, end):
        match = _TOP_KEY.match(lines[index])
        if match and match.group(1) in {top, top.replace("_", "-")}:
            return index + 1
    return None


def _fail(path: Path, line: int | None, message: str) -> _Parsed:
    return _Parsed(None, (SkillWarning(path=path, line=line, message=message),))


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _human_size(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB"
    return f"{size / 1024:.0f} KB" if size >= 1024 else f"{size} bytes"


# ------------------------------------------------------------------------------------------- loading


def bundled_skills_dir() -> Path:
    """Where the bundled skills live: the checkout's top-level `skills/`, else the wheel's copy."""
    package = Path(__file__).resolve().parent
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
                    root_warnings.append(SkillWarning(path=Path(skill_file), message=problem))
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
            warnings.extend(parsed.warnings)
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
    current: Any = config
    for part in dotted.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return False
        current = current[part]
    return bool(current)


# ------------------------------------------------------------------------------------------ matching


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _ascii_lower(text: str) -> str:
    """Lower-case ASCII letters only, keeping length (so offsets into the original stay valid)."""
    return text.translate(_ASCII_LOWER)


def _needs_boundary(trigger: str) -> bool:
    """ASCII word-ish endings need a space or the end after them; CJK and punctuation do not."""
    last = trigger[-1]
    return last.isascii() and (last.isalnum() or last in "_-")


def _trigger_table(skills: Iterable[Skill]) -> list[tuple[str, str, bool, int, Skill]]:
    """(lowered trigger, trigger, needs boundary, precedence, skill), longest trigger first."""
    rank = {source: index for index, source in enumerate(SOURCE_ORDER)}
    table: list[tuple[str, str, bool, int, Skill]] = []
    for skill in skills:
        if not skill.eligible:
            continue
        names = list(skill.triggers)
        if skill.user_invocable:
            names.append(f"/{skill.name}")
        seen: set[str] = set()
        for trigger in names:
            lowered = _ascii_lower(trigger)
            if not trigger or lowered in seen:
                continue
            seen.add(lowered)
            table.append((lowered, trigger, _needs_boundary(trigger), rank[skill.source], skill))
    table.sort(key=lambda row: (-len(row[0]), -row[3], row[4].name))
    return table


class SkillMatch(BaseModel):
    """A message that invokes a skill: the skill, the trigger it started with, and the rest of it."""

    model_config = ConfigDict(frozen=True)

    skill: Skill
    trigger: str
    """The trigger as the skill declares it (`/deploy`, `部署`, `/weather`)."""
    remaining: str
    """The message after the trigger, stripped: the user's input for the skill."""
    message: str
    """The whole original message."""

    @property
    def user_text(self) -> str:
        """What to send as the user's turn: the remaining input, or the message when nothing follows."""
        return self.remaining or self.message.strip()

    def injection(self) -> str:
        """Text to add to the context for this run only, so the model follows the skill."""
        skill = self.skill
        lines = [
            f'<skill name="{_xml(skill.name, attribute=True)}" '
            f'location="{_xml(str(skill.path), attribute=True)}">',
            f"The user invoked the skill '{skill.name}' with {self.trigger}. Follow the instructions "
            "below for this request; the user's input follows the trigger in their message.",
            f"Relative paths in the skill refer to {skill.base_dir}.",
            "",
            skill.body,
            "</skill>",
        ]
        return "\n".join(lines)


def match_skill(snapshot: SkillSnapshot, text: str) -> SkillMatch | None:
    """The skill a message invokes, if it starts with a trigger or `/<name>`; longest trigger wins."""
    stripped = text.lstrip()
    if not stripped:
        return None
    lowered = _ascii_lower(stripped)
    for trigger_lower, trigger, boundary, _rank, skill in snapshot._triggers:
        if not lowered.startswith(trigger_lower):
            continue
        after = stripped[len(trigger_lower) :]
        if boundary and after and not after[0].isspace():
            continue
        return SkillMatch(skill=skill, trigger=trigger, remaining=after.strip(), message=text)
    return None


# -------------------------------------------------------------------------------------------- prompt


_PROMPT_RULE = (
    "Skills are folders of instructions for specific tasks. Before replying, scan the list below. "
    "If exactly one skill clearly applies, read its SKILL.md with the read tool (at the listed "
    "location), then follow it. If several might apply, choose the most specific one. If none "
    "clearly applies, read none. Never read more than one skill up front."
)


def render_skills_prompt(
    snapshot: SkillSnapshot, *, max_skills: int = 150, max_chars: int = 30_000
) -> tuple[str, list[str]]:
    """The system prompt's skills section and warnings about anything left out or shortened.

    Lists eligible skills the model may invoke, workspace ones first when something must go.
    Over `max_chars` the list drops descriptions; if still over, trailing skills are left out.
    Returns `("", [])` when there is nothing to list. Memoised per snapshot, so calling it every run
    costs nothing while the skills are unchanged.
    """
    cached = snapshot._rendered.get((max_skills, max_chars))
    if cached is None:
        text, warnings = _render(snapshot, max_skills, max_chars)
        cached = snapshot._rendered[(max_skills, max_chars)] = (text, tuple(warnings))
    return cached[0], list(cached[1])


def _render(snapshot: SkillSnapshot, max_skills: int, max_chars: int) -> tuple[str, list[str]]:
    rank = {source: index for index, source in enumerate(SOURCE_ORDER)}
    offered = [skill for skill in snapshot.skills if skill.eligible and not skill.disable_model_invocation]
    if not offered:
        return "", []
    offered.sort(key=lambda skill: (-rank[skill.source], skill.name))
    warnings: list[str] = []
    chosen = offered[: max(max_skills, 0)]
    if len(chosen) < len(offered):
        warnings.append(
            f"{len(offered) - len(chosen)} of {len(offered)} skills left out of the prompt "
            f"(cap {max_skills} skills)"
        )

    entries = [_entry(skill, snapshot.workspace, full=True) for skill in chosen]
    text = _assemble(entries, len(offered) - len(chosen), compact=False)
    if len(text) > max_chars:
        warnings.append(
            f"skills list is {len(text):,} chars, over {max_chars:,}: "
            "switched to the compact form (no descriptions)"
        )
        entries = [_entry(skill, snapshot.workspace, full=False) for skill in chosen]
        text = _assemble(entries, len(offered) - len(chosen), compact=True)
        if len(text) > max_chars:
            while entries and len(text) > max_chars:
                entries.pop()
                text = _assemble(entries, len(offered) - len(entries), compact=True)
            warnings.append(
                f"{len(offered) - len(entries)} of {len(offered)} skills left out of the "
                f"prompt (cap {max_chars:,} chars)"
            )
            if not entries:
                text = ""
    for warning in warnings:
        logger.debug("skills prompt: %s", warning)  # returned to the caller, who decides how loud to be
    return text, warnings


def _entry(skill: Skill, workspace: Path, *, full: bool) -> str:
    location = _location(skill.path, workspace)
    if not full:
        return (
            f'  <skill name="{_xml(skill.name, attribute=True)}" '
            f'location="{_xml(location, attribute=True)}"/>'
        )
    return (
        "  <skill>\n"
        f"    <name>{_xml(skill.name)}</name>\n"
        f"    <description>{_xml(skill.description)}</description>\n"
        f"    <location>{_xml(location)}</location>\n"
        "  </skill>"
    )


def _assemble(entries: list[str], left_out: int, *, compact: bool) -> str:
    parts = ["## Skills", _PROMPT_RULE]
    if compact:
        parts.append(
            "(Compact list: descriptions omitted to save space; a skill's name and its "
            "SKILL.md tell you what it is for.)"
        )
    parts.append(
        "<available_skills>\n" + "\n".join(entries) + ("\n" if entries else "") + "</available_skills>"
    )
    if left_out:
        parts.append(
            f"({left_out} more skills are installed but not listed here; if the user names "
            "one, look for its SKILL.md in the skills folders.)"
        )
    return "\n".join(parts)


def _location(path: Path, workspace: Path) -> str:
    try:
        return path.relative_to(workspace).as_posix()
    except ValueError:
        return str(path)


def _xml(text: str, *, attribute: bool = False) -> str:
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return escaped.replace('"', "&quot;") if attribute else escaped
