"""Skills: SKILL.md folders (OpenClaw form and the mini form with triggers), loading, gating, matching.

A skill is a folder with a `SKILL.md`: YAML frontmatter, then markdown instructions. The loader reads
four sources (bundled < user < `<workspace>/.agents/skills` < `<workspace>/skills`), lets a higher
source override a same-named skill, gates each skill on its declared requirements and caches by
mtime so the per-run `load()` is a few hundred `stat` calls. Bad files never raise: each becomes a
`SkillWarning` naming the file and line, and every other skill still loads.
"""

from __future__ import annotations

from .loader import SkillLoader, bundled_skills_dir
from .models import (
    MAX_SKILL_FILE_BYTES,
    SOURCE_ORDER,
    Skill,
    SkillFrontmatter,
    SkillInstallSpec,
    SkillMetadata,
    SkillRequires,
    SkillShadow,
    SkillSnapshot,
    SkillSource,
    SkillWarning,
)
from .parsing import parse_skill_file
from .prompt import SkillMatch, match_skill, render_skills_prompt

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
