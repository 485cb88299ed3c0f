"""`vbench compare`: paired bootstrap comparison of two results on the clips both have."""

from __future__ import annotations

import click

from benchmarks.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SET_RESAMPLES
from benchmarks.compare import FORMATS


@click.command("compare")
@click.argument("first")
@click.argument("second")
@click.option("--results", "results_dir", type=click.Path(file_okay=False), default=None,
              help="A results folder: FIRST and SECOND are then model names (as in the leaderboard) on --dataset.")
@click.option("--dataset", default=None, help="With --results: the dataset both models were evaluated on.")
@click.option("--protocol", default=None, help="With --results: pick the results of this protocol.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option("--bootstrap", "resamples", type=click.IntRange(min=0), default=DEFAULT_RESAMPLES, show_default=True,
              help="Paired bootstrap resamples over the common clips (0: differences only, no intervals).")
@click.option("--bootstrap-set", "set_resamples", type=click.IntRange(min=0), default=None,
              help=f"Resamples for the set-level metrics: FAD, FD_*, IS (default {DEFAULT_SET_RESAMPLES}, at most "
                   f"--bootstrap).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="Where the Fréchet distances' resamples run.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write to this file instead of stdout.")
def compare(first: str, second: str, results_dir: str | None, dataset: str | None, protocol: str | None, fmt: str,
            resamples: int, set_resamples: int | None, seed: int, device: str, out: str | None) -> None:
    """Compare result B (SECOND) with result A (FIRST): the difference B - A of every metric on the clips both
    scored, with its 95 % paired-bootstrap interval and p-value, and the clips only one side has. No verdict on
    fewer than 30 common clips (the intervals are unreliable there; a warning says so). FIRST and
    SECOND are result JSON files, or model names with --results DIR --dataset NAME. Refuses results of different
    protocols, datasets, extractor weights, or debug and real weights."""
    from benchmarks.compare import compare_results, load_pair, render
    from visualsound.utils.atomic import atomic_write_text

    a, b = load_pair(first, second, results_dir, dataset, protocol)
    n_set = min(DEFAULT_SET_RESAMPLES, resamples) if set_resamples is None else set_resamples
    comparison = compare_results(a, b, resamples, n_set, seed, device=device)
    text = render(comparison, fmt)
    if out:
        atomic_write_text(out, text)
        click.echo(f"comparison ({fmt}) -> {out}")
    else:
        click.echo(text, nl=False)
    if out or fmt == "json":  # the text / markdown on the terminal already start with them
        for warning in comparison.warnings:
            click.echo(f"WARNING: {warning}", err=True)
