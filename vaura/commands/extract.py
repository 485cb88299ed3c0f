"""`vaura extract`: precompute DAC codes and Segment AVCLIP features of 2.56 s windows into a feature cache."""

from __future__ import annotations

import json

import click

from visualsound.utils.cli import threads_option, weights_options


@click.command("extract")
@click.option("--data", required=True,
              help="Clips: a visualsound build .parquet, a VGGSound-style .csv, a V-AURA split dir / id list, a "
                   "directory of clips, a YAML/JSON data spec, or key=value,... (kind, path, video_dir, split, meta, "
                   "fixed_starts, limit).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Cache directory (resumable).")
@click.option("--split", default=None,
              help="train | validation | test (default: the data spec's split=, else train).")
@click.option("--fixed-starts", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Evaluation splits: csv 'file,start_sec' of window starts (default 0.0).")
@click.option("--grid/--fixed", "grid", default=None,
              help="Windows at every --set data.start_grid multiple (default for train) or one fixed window per clip.")
@click.option("--config", "config", default="paper", show_default=True, help="TrainConfig preset or YAML/JSON file.")
@click.option("--set", "overrides", multiple=True, help="Config override key=value (repeatable).")
@weights_options({"avclip_vggsound": ("--checkpoint", "Segment AVCLIP visual encoder weights"),
                  "dac_44khz": ("--codec-checkpoint", "DAC 44 kHz weights")})
@click.option("--debug-weights", is_flag=True, help="Seeded random tiny encoder and codec.")
@click.option("--shard-size", type=int, default=256, show_default=True, help="Clips per shard.")
@click.option("--shard", "shard_spec", default=None,
              help="Extract part i of n: 'i/n' (e.g. one job of n on other machines, all with the same --out and "
                   "arguments), or 'auto' for the SLURM job array task; under torchrun each rank takes its part of "
                   "that. Part i writes the cache shards s (of --shard-size clips of the planned clip list) with "
                   "s mod n = i into OUT; the job finishing the last one marks the cache complete (no merge step).")
@click.option("--feature-dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True)
@click.option("--workers", type=int, default=None,
              help="Decoding workers (default: data.num_workers, capped at the available cores).")
@click.option("--device", default=None, help="torch device (default: cuda if available).")
@threads_option
def extract(data: str, out: str, split: str | None, fixed_starts: str | None, grid: bool | None, config: str,
            overrides: tuple[str, ...], weights: dict[str, str | None], debug_weights: bool,
            shard_size: int, shard_spec: str | None, feature_dtype: str, workers: int | None, device: str | None,
            threads: int | None) -> None:
    """Cache codes (uint16) and visual features of the clips in DATA under OUT, with a manifest."""
    from tqdm import tqdm

    from vaura.train.config import TrainConfig
    from vaura.train.run import run_extract
    from visualsound.utils.shard import resolve_shard

    shard = resolve_shard(shard_spec)
    cfg = TrainConfig.resolve(config).with_overrides(list(overrides))
    changes = {"encoder_checkpoint": weights["avclip_vggsound"] or cfg.encoder_checkpoint,
               "codec_checkpoint": weights["dac_44khz"] or cfg.codec_checkpoint,
               "debug_weights": debug_weights or cfg.debug_weights}
    from visualsound.utils.threads import cap_default_workers, set_threads

    set_threads(threads)
    if workers is None and not any(o.split("=", 1)[0].strip() == "data.num_workers" for o in overrides):
        workers = cap_default_workers(cfg.data.num_workers, "extract decode workers")
    if workers is not None:
        changes["data"] = cfg.data.replace(num_workers=workers)
    cfg = cfg.replace(**changes)
    bar = tqdm(desc="extract", unit="clip")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    manifest = run_extract(cfg, data, out, split=split, fixed_starts=fixed_starts, grid=grid, shard_size=shard_size,
                           feature_dtype=feature_dtype, device=device, progress=progress, part=shard.pair)
    bar.close()
    if not manifest["complete"]:  # this part is done, others are not
        summary = {k: manifest[k] for k in ("num_clips", "starts", "start_grid", "debug_weights")}
        summary.update(out=out, shard=str(shard), complete=False, missing_shards=len(manifest["missing_shards"]))
        click.echo(json.dumps(summary))
        click.echo(f"part {shard} ({shard.source}) is done; {len(manifest['missing_shards'])} cache shards of other "
                   f"parts are still missing: the cache is complete once they are written", err=True)
    else:
        summary = {k: manifest[k] for k in ("num_clips", "windows", "bad_clips", "starts", "start_grid",
                                            "debug_weights")}
        summary.update(out=out, complete=True, **({"shard": str(shard)} if shard.sharded else {}))
        click.echo(json.dumps(summary))
    if manifest["debug_weights"]:
        click.echo("DEBUG WEIGHTS: features and codes come from random models", err=True)
