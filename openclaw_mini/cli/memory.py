"""`openclaw-mini memory`: search the memory files, add a note, rebuild the index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from ..memory import MemoryStore, ScoreParts

__all__ = ["app"]

app = typer.Typer(
    help="Search and add to the workspace memory (MEMORY.md and memory/*.md).",
    no_args_is_help=True,
)

WorkspaceOption = Annotated[
    Path, typer.Option("--workspace", "-w", help="Workspace folder holding MEMORY.md and memory/.")
]


def _fail(message: str) -> NoReturn:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[red]Error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


EmbeddingsOption = Annotated[
    str | None,
    typer.Option(
        "--embeddings",
        help="Search by meaning too: local, http or off (default: $OPENCLAW_MINI_EMBEDDINGS, else off).",
    ),
]


def _open(workspace: Path, embeddings: str | None = None) -> MemoryStore:
    import os

    from ..errors import EmbeddingsError
    from ..memory import MemoryStore, embedder_from_env
    from .config import command_settings

    try:  # the config file's timezone names the daily notes, as in the agent
        environ = dict(os.environ)
        if embeddings is not None:
            environ["OPENCLAW_MINI_EMBEDDINGS"] = embeddings
        timezone = command_settings(workspace).config.timezone
        return MemoryStore(workspace, timezone=timezone, embedder=embedder_from_env(environ))
    except (OSError, ValueError, EmbeddingsError) as exc:
        _fail(str(exc))


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="Words to look for; #tag matches tags.")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=100, help="How many results.")] = 6,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    explain: Annotated[
        bool, typer.Option("--explain", help="Show the parts of each score (BM25, coverage, recency, tags).")
    ] = False,
    embeddings: EmbeddingsOption = None,
    workspace: WorkspaceOption = Path("."),
) -> None:
    """Search the memory files, best match first."""
    import sqlite3

    from rich.console import Console
    from rich.markup import escape

    with _open(workspace, embeddings) as store:
        try:
            hits = store.search(query, limit=limit, explain=explain)
        except (OSError, ValueError, sqlite3.Error) as exc:
            _fail(f"memory search failed: {exc}")
        warnings = list(store.warnings)
    console = Console()
    err = Console(stderr=True)
    for warning in warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True)
    if as_json:
        from dataclasses import asdict

        rows = [asdict(hit) for hit in hits]
        if not explain:
            for row in rows:
                row.pop("parts", None)
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not hits:
        console.print("No memory matched.")
        return
    for hit in hits:
        where = f"[bold]{escape(hit.path)}[/bold]:{hit.start_line}-{hit.end_line}"
        console.print(f"{where}  [dim]score {hit.score:.2f}[/dim]", soft_wrap=True)
        if hit.parts is not None:
            console.print(f"[dim]{escape(_explain(hit.parts))}[/dim]", highlight=False, soft_wrap=True)
        console.print(escape(hit.snippet), highlight=False, soft_wrap=True)
        console.print()


def _explain(parts: ScoreParts) -> str:
    """One line saying how a score was made (the formula is in `openclaw_mini.memory`'s docstring)."""
    words = [
        f"keyword {parts.keyword:.3f} = coverage {parts.coverage:.2f} x (0.6 + 0.4 x bm25 "
        f"{parts.bm25:.2f}/best = {parts.bm25_norm:.2f})",
    ]
    if parts.cosine or parts.relevance != parts.keyword:
        words.append(f"cosine {parts.cosine:.3f}")
    words.append(f"relevance {parts.relevance:.3f}")
    words.append(f"recency {parts.recency:.3f}")
    words.append(f"tags {parts.tags:.2f}")
    return "  ".join(words)


@app.command()
def add(
    text: Annotated[str, typer.Argument(help="The fact, decision or note to remember.")],
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="A tag (repeat for more).")] = None,
    long_term: Annotated[
        bool, typer.Option("--long-term", help="Append to MEMORY.md instead of today's note.")
    ] = False,
    workspace: WorkspaceOption = Path("."),
) -> None:
    """Append a timestamped note to today's memory file (or MEMORY.md)."""
    from rich.console import Console
    from rich.markup import escape

    with _open(workspace, "off") as store:  # appending needs no embedder
        try:
            result = store.write(text, tags=tuple(tag or ()), long_term=long_term)
        except (OSError, ValueError) as exc:
            _fail(str(exc))
    Console().print(
        f"Saved to {escape(result.path)}:{result.line}: {escape(result.entry)}",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def reindex(embeddings: EmbeddingsOption = None, workspace: WorkspaceOption = Path(".")) -> None:
    """Rebuild the memory search index from the files (and embed new entries when asked to)."""
    import sqlite3

    from rich.console import Console
    from rich.markup import escape

    with _open(workspace, embeddings) as store:
        try:
            stats = store.reindex()
        except (OSError, ValueError, sqlite3.Error) as exc:
            _fail(f"reindex failed: {exc}")
        warnings = list(store.warnings)
    err = Console(stderr=True)
    for warning in warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True)
    skipped = f", {stats.skipped} skipped" if stats.skipped else ""
    Console().print(
        f"Indexed {stats.files} files, {stats.chunks} chunks in {stats.seconds:.2f} s{skipped}.",
        highlight=False,
        soft_wrap=True,
    )
