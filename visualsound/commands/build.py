"""`visualsound build`: VisualSound split files from ImageBind score shards."""

from __future__ import annotations

import json

import click

from visualsound.scores_io import load_scores
from visualsound.splits import DEFAULT_SEED, VAL_RATIO, build_visualsound, check_threshold, read_id_list


@click.command("build")
@click.option("--scores", "scores_dirs", required=True, multiple=True, type=click.Path(exists=True),
              help="Scores folder (or Parquet file) from `visualsound score`; repeat to combine several.")
@click.option("--threshold", type=float, default=0.3, show_default=True,
              help="Keep clips with status ok and score >= threshold: an ImageBind cosine in [-1, 1] (not x100).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--val-list", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Validation clip ids (e.g. V-AURA's visualsound_validation.txt); default: a stratified carve.")
@click.option("--val-ratio", type=float, default=VAL_RATIO, show_default=True,
              help="Validation share of VGGSound train for the stratified carve (V-AURA: 19055/175542).")
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True, help="Seed of the stratified carve.")
@click.option("--sync-filter", "sync_dirs", multiple=True, type=click.Path(exists=True),
              help="Results folder (or Parquet file) of `vaura sync-filter`; repeat to combine several. Kept clips "
                   "must also be judged in sync.")
@click.option("--sync-min-windows", default="train=25,validation=5,test=5", show_default=True,
              help="In-sync windows a clip needs, per VisualSound split (V-AURA's defaults), applied to the stored "
                   "counts: 'train=25,validation=5,test=5', one number for all splits, or 'stored' (the decisions "
                   "sync-filter recorded).")
@click.option("--sync-missing", type=click.Choice(["keep", "drop"]), default="keep", show_default=True,
              help="Clips without a sync-filter row: keep them (as V-AURA does) or drop them.")
def build(scores_dirs: tuple[str, ...], threshold: float, out_dir: str, val_list: str | None, val_ratio: float,
          seed: int, sync_dirs: tuple[str, ...], sync_min_windows: str, sync_missing: str) -> None:
    """Keep ok clips scoring >= THRESHOLD (and, with --sync-filter, judged in sync) and write train/validation/test
    lists, csv, Parquet and summary."""
    check_threshold(threshold)  # before reading any score
    s = load_scores(list(scores_dirs))
    val_ids = read_id_list(val_list) if val_list else None
    sync = None
    if sync_dirs:
        from visualsound.sync_io import SyncFilterSpec, parse_min_windows_spec, read_sync_results

        sync = SyncFilterSpec(read_sync_results(list(sync_dirs)), parse_min_windows_spec(sync_min_windows),
                              missing=sync_missing, source=", ".join(sync_dirs))
    summary = build_visualsound(s.frame, threshold, out_dir, val_ids=val_ids,
                                val_source=f"id list {val_list}" if val_list else None, ratio=val_ratio,
                                seed=seed, meta=s.meta, sync=sync)
    tag = " [DEBUG WEIGHTS]" if summary["debug_weights"] else ""
    dropped = (f", {summary['sync_filter']['dropped_total']} dropped by the in-sync filter"
               if "sync_filter" in summary else "")
    click.echo(f"VisualSound{tag} at threshold {threshold:g}: {json.dumps(summary['counts'])} "
               f"({summary['scored_total']} scored, {s.duplicates} duplicates resolved{dropped}) -> {out_dir}")
    for warning in summary.get("warnings", []):
        click.echo(f"WARNING: {warning}", err=True)
