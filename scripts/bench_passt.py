"""Throughput of PaSST extraction for the KLD metric: clips/s on CPU at full size with seeded random weights.

One "clip" is what KLD scores per file: a 2.56 s 44.1 kHz mono waveform -> julius resample to 32 kHz -> log-mel
[128, 256] -> PaSST-S (12 blocks, 302 tokens) -> softmax [527]. The weights are random (same compute as the
released checkpoint), so no download is needed.

    .venv/bin/python scripts/bench_passt.py --clips 8 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from benchmarks.metrics.passt import load_passt, passt_probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8, help="timed clips (after one warm-up clip)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--config", default="paper", help="PasstConfig preset (paper = full PaSST-S)")
    parser.add_argument("--json", default=None, help="also write the result to this JSON file")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model = load_passt(debug_weights=True, config=args.config)
    gen = torch.Generator().manual_seed(0)
    clips = [torch.randn(1, 112896, generator=gen) * 0.1 for _ in range(args.clips + 1)]
    passt_probs(model, clips[0], 44100)  # warm-up
    start = time.perf_counter()
    for clip in clips[1:]:
        passt_probs(model, clip, 44100)
    elapsed = time.perf_counter() - start
    result = {"benchmark": "passt_extraction", "config": args.config, "clip_seconds": 2.56, "sample_rate": 44100,
              "clips": args.clips, "threads": args.threads, "seconds": round(elapsed, 3),
              "clips_per_s": round(args.clips / elapsed, 3), "torch": torch.__version__,
              "cpu": platform.processor() or platform.machine(), "debug_weights": True}
    print(json.dumps(result, indent=2))
    if args.json:
        from visualsound.utils.atomic import atomic_write_json

        atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()
