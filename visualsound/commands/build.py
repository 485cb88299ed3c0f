"""`visualsound build`: VisualSound split files from ImageBind score shards."""

from __future__ import annotations

import json

import click

from visualsound.scores_io import load_scores
from visualsound.splits import DEFAULT_SEED, VAL_RATIO, build_visualsound, read_id_list


@click.command("build")
@click.option("--scores", "scores_dirs", required=True, multiple=True, type=click.Path(exists=True),
              help="Scores folder (or Parquet file) from `visualsound score`; repeat to combine several.")
@click.option("--threshold", type=float, default=0.3, show_default=True,
              help="Keep clips with status ok and score >= threshold.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--val-list", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Validation clip ids (e.g. V-AURA's visualsound_validation.txt); default: a stratified carve.")
@click.option("--val-ratio", type=float, default=VAL_RATIO, show_default=True,
              help="Validation share of VGGSound train for the stratified carve (V-AURA: 19055/175542).")
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True, help="Seed of the stratified carve.")
def build(scores_dirs: tuple[str, ...], threshold: float, out_dir: str, val_list: str | None, val_ratio: float,
          seed: int) -> None:
    """Keep ok clips scoring >= THRESHOLD and write train/validation/test lists, csv, Parquet and summary."""
    s = load_scores(list(scores_dirs))
    val_ids = read_id_list(val_list) if val_list else None
    summary = build_visualsound(s.frame, threshold, out_dir, val_ids=val_ids,
                                val_source=f"id list {val_list}" if val_list else None, ratio=val_ratio,
                                seed=seed, meta=s.meta)
    tag = " [DEBUG WEIGHTS]" if summary["debug_weights"] else ""
    click.echo(f"VisualSound{tag} at threshold {threshold:g}: {json.dumps(summary['counts'])} "
               f"({summary['scored_total']} scored, {s.duplicates} duplicates resolved) -> {out_dir}")
