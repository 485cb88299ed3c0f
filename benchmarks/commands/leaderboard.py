"""`vbench leaderboard`: all results of a folder, one table per dataset and protocol, plus reported rows."""

from __future__ import annotations

import click

from benchmarks.leaderboard import FORMATS
from benchmarks.reported import TABLES


@click.command("leaderboard")
@click.option("--results", "results_dir", type=click.Path(file_okay=False), default="results", show_default=True)
@click.option("--dataset", default=None, help="Only this dataset.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--reported", "reported_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="JSON file of reported rows (see benchmarks/reported.py); repeatable.")
@click.option("--no-paper-rows", is_flag=True,
              help="Leave out the built-in reported rows (rows of --reported files are still shown).")
@click.option("--tables", "tables", default=",".join(TABLES), show_default=True,
              help="Which built-in reported tables to show: the V-AURA paper's I-IV (II-IV are its ablations on "
                   "vggsound-sparse) and 'MMAudio 1' (av-benchmark on vggsound-test), comma-separated.")
@click.option("--paper", "paper_tables", is_flag=True,
              help="Show the built-in reported rows for every dataset, also where nothing is measured yet (an empty "
                   "or missing --results folder included).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write to this file instead of stdout.")
def leaderboard(results_dir: str, dataset: str | None, fmt: str, reported_files: tuple[str, ...],
                no_paper_rows: bool, tables: str, paper_tables: bool, out: str | None) -> None:
    """Render the leaderboard of every result under --results, with the papers' reported rows beside measured
    rows of the same dataset and protocol (only next to the complete official set; marked reported)."""
    import dataclasses

    from benchmarks.leaderboard import leaderboard as render
    from benchmarks.reported import reported_rows
    from visualsound.utils.atomic import atomic_write_text

    if paper_tables and no_paper_rows:
        raise click.UsageError("--paper and --no-paper-rows contradict each other")
    rows = reported_rows(list(reported_files), builtin=not no_paper_rows,
                         tables=[t.strip() for t in tables.split(",") if t.strip()])
    if paper_tables:
        rows = [dataclasses.replace(r, only_beside_measured=False) for r in rows]
    text = render(results_dir, fmt, dataset, rows, allow_no_results=paper_tables)
    if out:
        atomic_write_text(out, text if text.endswith("\n") else text + "\n")
        click.echo(f"leaderboard ({fmt}) -> {out}")
    else:
        click.echo(text)
