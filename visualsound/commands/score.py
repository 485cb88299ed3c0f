"""`visualsound score`: ImageBind audio-visual scores of VGGSound clips, as resumable Parquet shards."""

from __future__ import annotations

import json

import click

from visualsound.scores_io import STATUSES
from visualsound.scoring import DTYPES, ScoringConfig, score_clips
from visualsound.utils.cli import threads_option, weights_options
from visualsound.utils.shard import shard_option_help
from visualsound.vggsound import PATTERN_PRESETS, index_clips, index_folder, resolve_pattern, summarize_index


@click.command("score")
@click.option("--csv", "csv_path", default=None, type=click.Path(exists=True, dir_okay=False),
              help="VGGSound csv (no header: youtube_id, start_seconds, label, split). Without it, every video "
                   "file of --videos is scored with its file stem as clip id (no label or split).")
@click.option("--videos", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder holding the clips.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Scores folder; shards are added to it and a re-run skips clips already scored there.")
@click.option("--pattern", default="vggsound", show_default=True,
              help=f"File-name pattern: a preset ({', '.join(sorted(PATTERN_PRESETS))}) or a format string over "
                   "ytid, start, start_ms, end_ms, label, split, clip_id.")
@click.option("--config", "config_spec", default="default", show_default=True,
              help=f"Scoring config: a preset ({', '.join(ScoringConfig.preset_names())}) or a JSON/YAML file; the "
                   "options below override it.")
@click.option("--device", default=None, help="torch device, e.g. cuda, cuda:1, cpu.")
@click.option("--dtype", type=click.Choice(sorted(DTYPES)), default=None,
              help="Model precision (fp32 reproduces VisualSound; bf16 / fp16 are faster).")
@click.option("--batch-size", type=int, default=None, help="Clips per model batch.")
@click.option("--workers", type=int, default=None,
              help="DataLoader worker processes decoding clips (0: inline; default: the config's, capped at the "
                   "available cores).")
@click.option("--batches-per-shard", type=int, default=None,
              help="Write a shard every N batches (a killed run loses at most N batches).")
@click.option("--shard", "shard_spec", default=None,
              help=shard_option_help("clips", "clip id") + " Shards may share one --out folder, or be merged with "
                   "`visualsound merge`.")
@click.option("--silence-threshold", type=float, default=None,
              help="Mark clips whose audio peak is <= this value 'silent' instead of scoring them (default: off, "
                   "silent clips are scored, as VisualSound did). Fixed per --out folder.")
@click.option("--min-duration", type=float, default=None,
              help="Mark clips whose video or audio is shorter than this (seconds) 'too_short' (default: off, "
                   "every decodable clip is scored). Fixed per --out folder.")
@click.option("--retry", "retry", multiple=True, type=click.Choice(STATUSES),
              help="Statuses a resumed run scores again (repeatable; default: error). E.g. --retry missing after "
                   "downloading more clips.")
@click.option("--max-batches", type=int, default=None, help="Stop after N batches (smoke runs; resume later).")
@weights_options({"imagebind_huge": ("--checkpoint", "ImageBind-Huge weights, imagebind_huge.pth")}, dir_okay=False)
@click.option("--debug-weights", is_flag=True, help="Seeded random tiny ImageBind (scores are meaningless).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@threads_option
def score(csv_path: str, videos: str, out_dir: str, pattern: str, config_spec: str, device: str | None,
          dtype: str | None, batch_size: int | None, workers: int | None, batches_per_shard: int | None,
          shard_spec: str | None, silence_threshold: float | None, min_duration: float | None, retry: tuple[str, ...],
          max_batches: int | None, weights: dict[str, str | None], debug_weights: bool, no_progress: bool,
          as_json: bool, threads: int | None) -> None:
    """Score every clip of CSV found under VIDEOS with ImageBind; one row per clip (failures included) in OUT."""
    overrides = {"device": device, "dtype": dtype, "batch_size": batch_size, "workers": workers,
                 "batches_per_shard": batches_per_shard, "silence_threshold": silence_threshold,
                 "min_duration": min_duration, "retry_statuses": tuple(retry) or None}
    from visualsound.utils.threads import cap_default_workers, set_threads

    cfg = ScoringConfig.resolve(config_spec).replace(**{k: v for k, v in overrides.items() if v is not None})
    if workers is None:
        cfg = cfg.replace(workers=cap_default_workers(cfg.workers, "score decode workers"))
    set_threads(threads)
    if max_batches is not None and max_batches < 1:
        raise click.BadParameter("--max-batches must be >= 1", param_hint="--max-batches")
    from visualsound.utils.shard import rank_device, resolve_shard

    shard = resolve_shard(shard_spec)
    cfg = cfg.replace(device=rank_device(cfg.device))
    not_videos = []
    if csv_path is None:
        index, not_videos = index_folder(videos)
    else:
        index = index_clips(csv_path, videos, pattern)
        found = summarize_index(index)
        if found.missing:
            click.echo(f"{found.missing} of {found.total} clips of the csv are not under {videos} (pattern "
                       f"{pattern!r} = {resolve_pattern(pattern)!r}; e.g. looked for {found.example_missing}); "
                       "they are recorded as 'missing'. Check --pattern, or score a plain folder without --csv.",
                       err=True)
    s = score_clips(index, out_dir, cfg, checkpoint=weights["imagebind_huge"], debug_weights=debug_weights,
                    shard=shard.pair, max_batches=max_batches, progress=not no_progress)
    info = {"shard": str(shard), "in_shard": s.in_shard, "skipped": s.skipped, "scored": s.scored,
            "remaining": s.remaining, "statuses": s.statuses, "clips_per_second": round(s.clips_per_second, 3),
            "seconds": round(s.seconds, 3), "stopped_early": s.stopped_early, "shards": [str(p) for p in s.shards],
            "debug_weights": s.debug_weights, "out": out_dir, "not_videos": len(not_videos)}
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    tag = "DEBUG WEIGHTS: " if debug_weights else ""
    click.echo(f"{tag}shard {info['shard']}: {s.scored} clips scored ({s.clips_per_second:.2f} clips/s), "
               f"{s.skipped} already done, {s.remaining} remaining; status {s.statuses} -> {out_dir}")
    if not_videos:
        click.echo(f"{len(not_videos)} files without a video extension were not scored: "
                   f"{', '.join(p.name for p in not_videos[:8])}{' ...' if len(not_videos) > 8 else ''}")
