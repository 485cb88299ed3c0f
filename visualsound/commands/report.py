"""`visualsound report`: histogram, per-class keep rates, threshold sweep and a markdown summary."""

from __future__ import annotations

import click
import pandas as pd

from visualsound.report import SWEEP_THRESHOLDS, markdown_table, write_report
from visualsound.scores_io import load_scores
from visualsound.splits import read_id_list, uses_debug_weights


@click.command("report")
@click.option("--scores", "scores_dirs", required=True, multiple=True, type=click.Path(exists=True),
              help="Scores folder (or Parquet file); repeat to combine several.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--threshold", type=float, default=0.3, show_default=True, help="Threshold drawn and reported.")
@click.option("--val-list", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Validation ids (as for `visualsound build`); default: the stratified carve.")
@click.option("--sweep", default=",".join(f"{t:g}" for t in SWEEP_THRESHOLDS), show_default=True,
              help="Comma-separated thresholds of the sweep table.")
def report(scores_dirs: tuple[str, ...], out_dir: str, threshold: float, val_list: str | None, sweep: str) -> None:
    """Write scores_hist.png, class_keep_rate.png, threshold_sweep.csv and report.md into OUT."""
    try:
        thresholds = [float(t) for t in sweep.split(",") if t.strip()]
    except ValueError as e:
        raise click.BadParameter(f"--sweep must be comma-separated numbers: {e}") from e
    s = load_scores(list(scores_dirs))
    val_ids = read_id_list(val_list) if val_list else None
    files = write_report(s.frame, out_dir, threshold, val_ids=val_ids, thresholds=thresholds, meta=s.meta,
                         duplicates=s.duplicates)
    table = pd.read_csv(files["sweep"])  # the sweep write_report computed (no second validation carve)
    if uses_debug_weights(s.frame, s.meta):
        click.echo("DEBUG WEIGHTS: scores from seeded random debug weights")
    click.echo(markdown_table(table))
    click.echo(f"report: {files['markdown']}")
