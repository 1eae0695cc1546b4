"""Matching a message to a skill (triggers, `/name`) and the `<available_skills>` prompt block."""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from .models import SOURCE_ORDER, Skill, SkillSnapshot, _ascii_lower

__all__ = ["SkillMatch", "match_skill", "render_skills_prompt"]

logger = logging.getLogger(__name__)


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
