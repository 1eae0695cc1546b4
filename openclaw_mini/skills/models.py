"""Skill data: the SKILL.md frontmatter (both forms), a loaded `Skill`, warnings and the
snapshot a load returns (with its trigger table, built once)."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

__all__ = [
    "MAX_SKILL_FILE_BYTES",
    "SOURCE_ORDER",
    "Skill",
    "SkillFrontmatter",
    "SkillInstallSpec",
    "SkillMetadata",
    "SkillRequires",
    "SkillShadow",
    "SkillSnapshot",
    "SkillSource",
    "SkillWarning",
    "coerce_bool",
    "skill_command_name",
]

SkillSource = Literal["bundled", "user", "workspace-agents", "workspace"]
SOURCE_ORDER: tuple[SkillSource, ...] = ("bundled", "user", "workspace-agents", "workspace")
"""Lowest precedence first: a later source overrides a same-named skill from an earlier one."""

MAX_SKILL_FILE_BYTES = 256 * 1024
SKILL_FILE = "SKILL.md"
METADATA_KEYS = ("openclaw", "clawdbot", "clawdis", "moltbot")
"""Keys of `metadata` that hold the OpenClaw block (the later three are legacy names)."""

# --------------------------------------------------------------------------------------------- models


def _as_str_list(value: Any, *, commas: bool = False) -> list[str]:
    """Accept `"a"`, `["a", "b"]` or null where a list of strings is meant (real files mix them).

    Items are trimmed and empty ones dropped. `commas=True` also splits a string on commas
    (`bins: "bun, node"`), as upstream reads requirement lists.
    """
    if value is None:
        return []
    if isinstance(value, str):
        parts = value.split(",") if commas else [value]
        return [part.strip() for part in parts if part.strip()]
    if isinstance(value, (list, tuple)):
        if any(isinstance(item, (dict, list)) for item in value):
            raise ValueError("expected a list of strings")
        return [str(item).strip() for item in value if item is not None and str(item).strip()]
    if isinstance(value, dict):
        raise ValueError("expected a string or a list of strings, not a mapping")
    return [str(value)]


BOOL_WORDS = {
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
}


def coerce_bool(value: Any) -> bool | None:
    """A boolean from YAML's `true`, a `"yes"`/`"off"` string or 0/1; None when it is none of those."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        return BOOL_WORDS.get(value.strip().lower())
    return None


_COMMAND_CHARS = re.compile(r"[^a-z0-9_]+")
MAX_COMMAND_CHARS = 32


def skill_command_name(name: str) -> str:
    """The slash command of a skill name, sanitised as upstream: `Agent Browser` -> `agent_browser`."""
    lowered = _COMMAND_CHARS.sub("_", name.lower()).strip("_")
    return re.sub(r"_+", "_", lowered)[:MAX_COMMAND_CHARS].rstrip("_") or "skill"


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
        return _as_str_list(value, commas=True)


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
        return _as_str_list(value, commas=True)


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
        return [item.lower() for item in _as_str_list(value, commas=True)]

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
        flag = coerce_bool(value)
        return value if flag is None else flag


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

    @property
    def command(self) -> str:
        """The name sanitised as upstream (`Agent Browser` -> `agent_browser`): `/<command>` invokes it."""
        return skill_command_name(self.name)

    @property
    def slash_commands(self) -> list[str]:
        """`/<name>` when the name is one word (`/gh-issues`), and the sanitised `/command`."""
        commands = []
        if self.name.split() == [self.name] and "/" not in self.name:
            commands.append(f"/{self.name}")
        if _ascii_lower(self.name) != self.command:
            commands.append(f"/{self.command}")
        return commands


class SkillWarning(BaseModel):
    """A problem with one skill file; the skill was skipped or shadowed, nothing else was affected."""

    model_config = ConfigDict(frozen=True)

    path: Path
    line: int | None = None
    message: str
    skipped: bool = False
    """True when the problem kept the skill from loading at all (listed as skipped)."""
    source: SkillSource | None = None

    @property
    def folder_name(self) -> str:
        """The skill folder's name (what a skipped skill is listed as)."""
        return self.path.parent.name if self.path.name == SKILL_FILE else self.path.name

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
        self._by_name = {skill.command: skill for skill in self.skills}
        self._by_name.update({_ascii_lower(skill.name): skill for skill in self.skills})
        self._triggers = _trigger_table(self.skills)

    @property
    def eligible(self) -> list[Skill]:
        return [skill for skill in self.skills if skill.eligible]

    def get(self, name: str) -> Skill | None:
        """The skill called `name` (ASCII case-insensitive), eligible or not."""
        return self._by_name.get(_ascii_lower(name.strip().lstrip("/")))


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
            names.extend(skill.slash_commands)
        seen: set[str] = set()
        for trigger in names:
            lowered = _ascii_lower(trigger)
            if not trigger or lowered in seen:
                continue
            seen.add(lowered)
            table.append((lowered, trigger, _needs_boundary(trigger), rank[skill.source], skill))
    table.sort(key=lambda row: (-len(row[0]), -row[3], row[4].name))
    return table
