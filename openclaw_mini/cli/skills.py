"""`openclaw-mini skills`: list the skills a workspace sees and show one of them."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from .common import fail

if TYPE_CHECKING:
    from ..skills import Skill, SkillSnapshot

__all__ = ["app"]

app = typer.Typer(help="List and inspect skills (SKILL.md folders).", no_args_is_help=True)

_WORKSPACE = typer.Option(".", "--workspace", "-w", help="Workspace folder.")


def _snapshot(workspace: str) -> SkillSnapshot:
    from ..skills import SkillLoader

    folder = Path(workspace).expanduser()
    if not folder.is_dir():
        fail(f"Workspace folder {folder} does not exist.")
    # The loader also logs each warning; here the snapshot's list is printed (once, formatted),
    # so keep the log records from reaching Python's last-resort stderr handler as raw lines.
    skills_logger = logging.getLogger("openclaw_mini.skills")
    quiet = logging.NullHandler()
    skills_logger.addHandler(quiet)
    propagate, skills_logger.propagate = skills_logger.propagate, False
    try:
        return SkillLoader(folder).load()
    finally:
        skills_logger.propagate = propagate
        skills_logger.removeHandler(quiet)


def _skill_json(skill: Skill) -> dict[str, Any]:
    return {
        "name": skill.name,
        "title": skill.title,
        "description": skill.description,
        "source": skill.source,
        "path": str(skill.path),
        "triggers": _invocations(skill),
        "user_invocable": skill.user_invocable,
        "model_invocable": not skill.disable_model_invocation,
        "eligible": skill.eligible,
        "ineligible_reason": skill.ineligible_reason,
        "emoji": skill.emoji,
        "homepage": skill.homepage,
    }


def _invocations(skill: Skill) -> list[str]:
    names = list(skill.triggers)
    if skill.user_invocable:
        seen = {name.lower() for name in names}
        names += [command for command in skill.slash_commands if command.lower() not in seen]
    return names


@app.command("list")
def list_skills(
    workspace: str = _WORKSPACE,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Every skill with its source, triggers and whether it is offered (or why not)."""
    snapshot = _snapshot(workspace)
    if as_json:
        payload = {
            "skills": [_skill_json(skill) for skill in snapshot.skills],
            "skipped": [
                {
                    "name": item.folder_name,
                    "source": item.source,
                    "path": str(item.path),
                    "reason": item.message,
                }
                for item in snapshot.warnings
                if item.skipped
            ],
            "shadowed": [item.model_dump(mode="json") for item in snapshot.shadowed],
            "warnings": [item.model_dump(mode="json") for item in snapshot.warnings],
        }
        typer.echo(json.dumps(payload, ensure_ascii=False, indent=2))
        return

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    skipped = [item for item in snapshot.warnings if item.skipped]
    title = f"Skills ({len(snapshot.eligible)} of {len(snapshot.skills)} eligible"
    title += f", {len(skipped)} skipped)" if skipped else ")"
    table = Table(title=title)
    table.add_column("name", style="bold")
    table.add_column("source")
    table.add_column("triggers")
    table.add_column("eligible")
    for skill in snapshot.skills:
        label = f"{skill.emoji} {skill.name}" if skill.emoji else skill.name
        reason = escape(skill.ineligible_reason or "")
        status = "[green]yes[/green]" if skill.eligible else f"[red]no[/red]: {reason}"
        if skill.eligible and skill.disable_model_invocation:
            status += " (command only)"
        table.add_row(escape(label), skill.source, escape(", ".join(_invocations(skill))), status)
    for problem in skipped:
        where = f"line {problem.line}: " if problem.line else ""
        reason = problem.message.removesuffix("; skipped")
        table.add_row(
            escape(problem.folder_name),
            problem.source or "",
            "",
            f"[red]skipped[/red]: {escape(where + reason)} [dim]({escape(str(problem.path))})[/dim]",
        )
    console.print(table)
    for item in snapshot.shadowed:
        console.print(
            f"[dim]shadowed: {escape(item.name)} ({item.source}, {escape(str(item.path))}) "
            f"by {item.winner_source} {escape(str(item.winner_path))}[/dim]"
        )
    for warning in snapshot.warnings:
        if not warning.skipped:
            console.print(f"[yellow]warning:[/yellow] {escape(str(warning))}")


@app.command("show")
def show_skill(
    name: str = typer.Argument(..., help="Skill name (with or without the leading '/')."),
    workspace: str = _WORKSPACE,
) -> None:
    """A skill's frontmatter summary and its instructions."""
    snapshot = _snapshot(workspace)
    skill = snapshot.get(name)
    if skill is None:
        known = ", ".join(item.name for item in snapshot.skills) or "none"
        fail(f"No skill named '{name}' (known: {known}).")

    from rich.console import Console
    from rich.markdown import Markdown
    from rich.markup import escape

    console = Console()
    rows: list[tuple[str, str]] = [
        ("name", f"{skill.emoji} {skill.name}" if skill.emoji else skill.name),
        ("title", skill.title or ""),
        ("description", skill.description),
        ("source", skill.source),
        ("path", str(skill.path)),
        ("triggers", ", ".join(_invocations(skill))),
        ("model-invocable", "no" if skill.disable_model_invocation else "yes"),
        ("eligible", "yes" if skill.eligible else f"no: {skill.ineligible_reason}"),
        ("homepage", skill.homepage or ""),
    ]
    meta = skill.metadata
    if meta is not None:
        requires = meta.requires
        needs = [
            f"bins {', '.join(requires.bins)}" if requires.bins else "",
            f"one of {', '.join(requires.any_bins)}" if requires.any_bins else "",
            f"env {', '.join(requires.env)}" if requires.env else "",
            f"config {', '.join(requires.config)}" if requires.config else "",
            f"os {', '.join(meta.os)}" if meta.os else "",
        ]
        rows.append(("requires", "; ".join(part for part in needs if part)))
        rows.append(("install", "; ".join(spec.label or spec.kind or "" for spec in meta.install)))
    for key, value in rows:
        if value:
            console.print(f"[bold]{key}:[/bold] {escape(value)}")
    for item in snapshot.shadowed:
        if item.name.lower() == skill.name.lower():
            console.print(f"[dim]shadows {escape(str(item.path))} ({item.source})[/dim]")
    console.rule()
    console.print(Markdown(skill.body))
