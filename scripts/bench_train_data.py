"""Benchmark: training-data throughput, cached features vs decoding + frozen models on the fly (CPU, tiny models).

Writes synthetic clips, extracts a feature cache from them, then measures how many training samples per second
each mode delivers to the trainer (codes ``[B, 9, 221]`` + visual features ``[B, 32, D]``), i.e. everything before
the transformer's forward. The frozen models are the seeded random tiny encoder and codec (DEBUG WEIGHTS), so the
on-the-fly cost here is a lower bound of the real one (the paper's encoder and DAC are far bigger).

    .venv/bin/python scripts/bench_train_data.py --clips 8 --batch-size 4 --batches 4 --out /tmp/bench_train_data
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def _throughput(loader: torch.utils.data.DataLoader, to_inputs, batches: int) -> tuple[float, int]:
    """Samples per second over `batches` batches (after one warm-up batch)."""
    it = iter(loader)
    to_inputs(next(it))
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        codes, visual = to_inputs(next(it))
        assert codes.dim() == 3 and visual.dim() == 3, f"codes {codes.shape} visual {visual.shape}"
        n += codes.shape[0]
    return n / (time.perf_counter() - t0), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--duration", type=float, default=3.3, help="clip length in seconds (2 grid windows at 3.3)")
    ap.add_argument("--size", type=int, default=112, help="synthetic frame width/height")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--batches", type=int, default=4, help="timed batches per mode (after one warm-up)")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--out", default="/tmp/bench_train_data")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from vaura.train.cache import CachedWindows, extract
    from vaura.train.config import TrainConfig
    from vaura.train.data import ClipDataset, DataSource, GlobalBatchSampler, collate_clips
    from vaura.train.frozen import load_frozen_models
    from visualsound.synth import SynthConfig, synthesize

    out = Path(args.out)
    cfg = TrainConfig.preset("tiny").with_overrides([f"data.batch_size={args.batch_size}",
                                                      f"data.num_workers={args.workers}"])
    if not (out / "synth" / "synth.csv").exists():
        synthesize(out / "synth", SynthConfig(count=args.clips, duration=args.duration, width=args.size,
                                              height=args.size, sample_rate=44100, channels=2, test_fraction=0.0,
                                              mismatched_fraction=0.0, max_events=4))
    clips = DataSource.parse(str(out / "synth" / "synth.csv")).clips()
    frozen, _ = load_frozen_models(cfg, "cpu")

    t0 = time.perf_counter()
    manifest = extract(clips, out / "cache", frozen, cfg.data, grid=True, num_workers=args.workers,
                       feature_dtype="float16")
    extract_s = time.perf_counter() - t0

    def loader(ds):
        n_batches = args.batches + 1
        need = n_batches * args.batch_size
        reps = -(-need // len(ds))
        ds = torch.utils.data.ConcatDataset([ds] * reps)  # enough items for the timed batches
        sampler = GlobalBatchSampler(len(ds), args.batch_size, train=True, seed=0)
        return torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=args.workers,
                                           collate_fn=collate_clips)

    fly_ds = ClipDataset(clips, cfg.data, train=True, seed=0)
    fly, n_fly = _throughput(loader(fly_ds), lambda b: (frozen.codes(b["audio"]), frozen.visual(b["video"])),
                             args.batches)
    cached_ds = CachedWindows(out / "cache", cfg.data, train=True, encoder_id=frozen.encoder_id,
                              codec_id=frozen.codec_id)
    cached, n_cached = _throughput(loader(cached_ds), lambda b: (b["codes"], b["visual"]), args.batches)

    result = {"debug_weights": True, "clips": len(clips), "windows_cached": manifest["windows"],
              "extract_seconds": round(extract_s, 2), "batch_size": args.batch_size, "workers": args.workers,
              "threads": args.threads, "on_the_fly_samples_per_s": round(fly, 3),
              "cached_samples_per_s": round(cached, 1), "speedup_cached_vs_on_the_fly": round(cached / fly, 1),
              "timed_samples": {"on_the_fly": n_fly, "cached": n_cached}}
    print("DEBUG WEIGHTS (tiny random encoder and codec)")
    print(f"{'mode':<14}{'samples/s':>12}")
    print(f"{'on the fly':<14}{fly:>12.3f}")
    print(f"{'cached':<14}{cached:>12.1f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
