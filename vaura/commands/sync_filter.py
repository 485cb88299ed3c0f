"""`vaura sync-filter`: judge with Synchformer whether each clip's audio and video are in sync (V-AURA's in-sync
filter), as resumable Parquet shards that `visualsound build --sync-filter` applies."""

from __future__ import annotations

import json

import click

from visualsound.scores_io import STATUSES
from visualsound.utils.cli import weights_options
from visualsound.utils.shard import shard_option_help


@click.command("sync-filter")
@click.option("--videos", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder holding the clips (with --csv: named by --pattern; alone: every video file in it, the "
                   "file stem is the clip id).")
@click.option("--csv", "csv_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="VGGSound csv (no header: youtube_id, start_seconds, label, split); default: a plain folder.")
@click.option("--pattern", default="vggsound", show_default=True,
              help="File-name pattern for --csv: a preset (vggsound, vaura) or a format string.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Results folder; shards are added to it and a re-run skips clips already judged there.")
@click.option("--split", type=click.Choice(["train", "validation", "val", "test"]), default=None,
              help="Use this split's threshold (the original's: train 25, validation / test 5) for every clip. "
                   "Default: each clip's VGGSound split from --csv; a plain folder needs --split or "
                   "--min-sync-windows.")
@click.option("--min-sync-windows", type=click.IntRange(min=0), default=None,
              help="Keep a clip when at least this many windows are in sync (overrides --split).")
@click.option("--count-key", type=click.Choice(["exact", "tol1"]), default=None,
              help="exact: windows whose predicted offset is 0 (the original's is_correct, its default); tol1: "
                   "within one class, 0.2 s (is_correct_within_1cls_tol). [default: exact]")
@click.option("--stride-sec", type=float, default=None,
              help="Step between 4.8 s windows, whole 25 fps frames [default: 0.16 = 4 frames; 33 windows in 10 s].")
@click.option("--config", "config_spec", default="default", show_default=True,
              help="SyncFilterConfig preset (default, gpu, tiny) or a JSON/YAML file; the options override it.")
@click.option("--device", default=None, help="torch device, e.g. cuda, cuda:1, cpu.")
@click.option("--dtype", type=click.Choice(["fp32", "bf16", "fp16"]), default=None, help="Model precision.")
@click.option("--workers", type=int, default=None, help="DataLoader worker processes decoding clips (0: inline).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch intra-op threads of the main process (default: torch's choice).")
@click.option("--shard", "shard_spec", default=None,
              help=shard_option_help("clips", "clip id") + " build reads several folders at once.")
@click.option("--retry", "retry", multiple=True, type=click.Choice(STATUSES),
              help="Statuses a resumed run judges again (repeatable; default: error).")
@click.option("--max-batches", type=click.IntRange(min=1), default=None,
              help="Stop after N loader batches (smoke runs; resume later).")
@click.option("--weights", "weights_name", default="synchformer_vggsound", show_default=True,
              type=click.Choice(["synchformer_vggsound", "synchformer_audioset", "synchformer_lrs3"]),
              help="Registry entry of the Synchformer checkpoint (ignored with --checkpoint).")
@weights_options({"synchformer_vggsound": ("--checkpoint", "Synchformer <ID>.pt or bare state dict, used "
                                                          "instead of the --weights entry"),
                  "synchformer_audioset": "--checkpoint", "synchformer_lrs3": "--checkpoint"}, dir_okay=False)
@click.option("--debug-weights", is_flag=True, help="Seeded random tiny Synchformer (judgements are meaningless).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
def sync_filter(videos: str, csv_path: str | None, pattern: str, out_dir: str, split: str | None,
                min_sync_windows: int | None, count_key: str | None, stride_sec: float | None, config_spec: str,
                device: str | None, dtype: str | None, workers: int | None, threads: int | None,
                shard_spec: str | None,
                retry: tuple[str, ...], max_batches: int | None, weights_name: str, weights: dict[str, str | None],
                debug_weights: bool, no_progress: bool, as_json: bool) -> None:
    """Count each clip's 4.8 s windows that Synchformer predicts at offset 0 and keep clips with enough of them
    (V-AURA's thresholds: 25 for train, 5 for validation / test). One row per clip, failures included, in OUT."""
    import torch

    from vaura.sync_filter import SyncFilterConfig, filter_clips
    from visualsound.utils.shard import rank_device, resolve_shard

    overrides = {"device": device, "dtype": dtype, "workers": workers, "split": split,
                 "min_sync_windows": min_sync_windows, "count_key": count_key, "stride_sec": stride_sec,
                 "retry_statuses": tuple(retry) or None}
    cfg = SyncFilterConfig.resolve(config_spec).replace(**{k: v for k, v in overrides.items() if v is not None})
    if threads is not None:
        torch.set_num_threads(threads)
    shard = resolve_shard(shard_spec)
    cfg = cfg.replace(device=rank_device(cfg.device))
    from visualsound.vggsound import index_clips, index_folder

    index = index_clips(csv_path, videos, pattern) if csv_path is not None else index_folder(videos)[0]
    s = filter_clips(index, out_dir, cfg, checkpoint=weights[weights_name], debug_weights=debug_weights,
                     weights_name=weights_name, shard=shard.pair, max_batches=max_batches, progress=not no_progress)
    info = {"shard": str(shard), "in_shard": s.in_shard, "skipped": s.skipped, "judged": s.judged,
            "passed": s.passed, "redecided": s.redecided, "remaining": s.remaining, "statuses": s.statuses,
            "seconds": round(s.seconds, 3), "stopped_early": s.stopped_early,
            "shards": [str(p) for p in s.shards], "debug_weights": s.debug_weights, "out": out_dir,
            "count_key": cfg.count_key, "min_sync_windows": cfg.min_sync_windows, "split": cfg.split,
            "stride_sec": cfg.stride_sec}
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    tag = "DEBUG WEIGHTS: " if debug_weights else ""
    redecided = f", {s.redecided} re-decided" if s.redecided else ""
    click.echo(f"{tag}shard {info['shard']}: {s.judged} clips judged ({s.passed} in sync), {s.skipped} already "
               f"done{redecided}, {s.remaining} remaining; status {s.statuses} -> {out_dir}")
