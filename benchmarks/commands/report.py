"""`vbench report`: the listening report (leaderboard, per-item distributions, a gallery of clips with every
model's audio) of result files, as one folder that opens from disk."""

from __future__ import annotations

import click


@click.command("report")
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Report folder (index.html, media/, plots/, report.json); a previous report is updated.")
@click.option("--select", "select_terms", multiple=True, metavar="SPEC",
              help="Gallery clips: ids:A,B | worst:METRIC:N[:MODEL] | best:METRIC:N[:MODEL] | random:N "
                   "(repeatable: their union). Default: every clip up to 50, else the worst and best few per "
                   "metric plus a random sample, 50 in all.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of random:N and the default sample.")
@click.option("--sample", type=click.IntRange(min=0), default=0, show_default=True,
              help="Which generated sample of each clip the gallery plays (and shows the metrics of).")
@click.option("--width", type=click.IntRange(min=32), default=320, show_default=True,
              help="Width of the gallery videos in pixels (smaller videos keep their size).")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Clips encoded at once (default: one per available core).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def report(results: tuple[str, ...], out: str, select_terms: tuple[str, ...], seed: int, sample: int, width: int,
           jobs: int | None, no_progress: bool) -> None:
    """Build the listening report of RESULTS (result JSON files or folders of them; each needs its per-clip
    table) in --out. Open OUT/index.html in a browser: no server and no network needed."""
    from benchmarks.report import build_report
    from benchmarks.report_media import MediaSettings

    summary = build_report(results, out, select_terms, seed=seed, sample=sample,
                           settings=MediaSettings(width=width - width % 2), progress=not no_progress, jobs=jobs)
    click.echo(f"report -> {summary.index} ({summary.clips} clips, {summary.encoded} media files written, "
               f"{summary.removed} stale files removed, {summary.seconds:.1f} s)")
    for msg in summary.errors:
        click.echo(f"  media problem: {msg}", err=True)
