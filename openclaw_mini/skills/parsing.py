"""Reading one SKILL.md: frontmatter (YAML, or lenient JSON for metadata real files write as
flow mappings with trailing commas), body with `{baseDir}`, and warnings with file and line."""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .models import (
    MAX_SKILL_FILE_BYTES,
    METADATA_KEYS,
    Skill,
    SkillFrontmatter,
    SkillMetadata,
    SkillSource,
    SkillWarning,
    coerce_bool,
)

__all__ = ["parse_skill_file"]

_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader when present: about 10x faster than pure Python on a cold load."""


# ------------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class _Parsed:
    """One SKILL.md parse: a skill (eligibility not yet decided) and/or warnings."""

    skill: Skill | None
    warnings: tuple[SkillWarning, ...] = ()


_FENCE = re.compile(r"^---[ \t]*$")
_FENCE_END = re.compile(r"^(?:---|\.\.\.)[ \t]*$")
_FLAG_KEYS = {
    "user-invocable": True,
    "user_invocable": True,
    "disable-model-invocation": False,
    "disable_model_invocation": False,
}
"""Boolean frontmatter fields and their defaults (a value that is not a boolean falls back)."""
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
    data = dict(data)
    for key in _FLAG_KEYS:
        if key in data and data[key] is not None and coerce_bool(data[key]) is None:
            default = str(_FLAG_KEYS[key]).lower()
            warnings.append(
                SkillWarning(
                    path=path,
                    line=_key_line(lines, end, key),
                    message=f"'{key}: {data[key]}' is not true or false; using the default ({default})",
                )
            )
            del data[key]
    try:
        front = SkillFrontmatter.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        return _fail(path, _key_line(lines, end, key), f"frontmatter field '{key}': {first['msg']}; skipped")

    folder = path.parent
    # Any non-blank name loads (a real community skill is `name: Agent Browser`); its slash
    # command is the sanitised form (`/agent_browser`), as upstream.
    name = " ".join((front.id or front.name or folder.name).split())
    if not name:
        return _fail(path, _key_line(lines, end, "name"), "skill name is blank; skipped")
    if not front.description:
        return _fail(
            path,
            _key_line(lines, end, "description") or 2,
            "frontmatter has no 'description' (required); skipped",
        )

    metadata, meta_warnings = _metadata(front.metadata)
    for message in meta_warnings:
        warnings.append(SkillWarning(path=path, line=_key_line(lines, end, "metadata"), message=message))
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
                # OpenClaw's line-based reading: the rest of the line is the value, as text
                # (`description: Use anime style IMPORTANT: Must be kawaii`). A broken quoted or
                # flow value (`"unterminated`, `[a`) stays an error: guessing would hide a typo.
                if value_text.strip()[:1] in ("", '"', "'", "[", "{", "|", ">", "&", "*", "!"):
                    return None
                value = _plain_value(value_text)
            result[key] = value
            continue
        if not isinstance(loaded, dict):
            return None
        result.update(loaded)
    return result


def _plain_value(text: str) -> str:
    """A value as plain text: lines joined, surrounding quotes removed."""
    value = " ".join(line.strip() for line in text.split("\n") if line.strip())
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return value


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


def _metadata(raw: Any) -> tuple[SkillMetadata | None, list[str]]:
    if raw is None:
        return None, []
    if isinstance(raw, str):
        parsed = _lenient_json(raw)
        if not isinstance(parsed, dict):
            return None, ["metadata is a string that is not a JSON object; ignored"]
        raw = parsed
    if not isinstance(raw, dict):
        return None, [f"metadata must be an object, not {type(raw).__name__}; ignored"]
    block = next((raw[key] for key in METADATA_KEYS if isinstance(raw.get(key), dict)), None)
    if block is None:
        return None, []
    messages: list[str] = []
    always = block.get("always")
    if always is not None and coerce_bool(always) is None:
        messages.append(f"metadata field 'always: {always}' is not true or false; using the default (false)")
        block = {key: value for key, value in block.items() if key != "always"}
    elif always is not None:
        block = {**block, "always": coerce_bool(always)}
    try:
        return SkillMetadata.model_validate(block), messages
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return None, [*messages, f"metadata field '{where}': {first['msg']}; requirements ignored"]


def _key_line(lines: list[str], end: int, key: str) -> int | None:
    """1-based file line of a top-level frontmatter key, for warnings."""
    top = key.split(".", 1)[0]
    for index in range(1, end):
        match = _TOP_KEY.match(lines[index])
        if match and match.group(1) in {top, top.replace("_", "-")}:
            return index + 1
    return None


def _fail(path: Path, line: int | None, message: str) -> _Parsed:
    return _Parsed(None, (SkillWarning(path=path, line=line, message=message, skipped=True),))


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _human_size(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB"
    return f"{size / 1024:.0f} KB" if size >= 1024 else f"{size} bytes"
