"""Throughput of PaSST extraction for the KLD metric: clips/s on CPU at full size with seeded random weights.

One "clip" is what KLD scores per file: a 2.56 s 44.1 kHz mono waveform -> julius resample to 32 kHz -> log-mel
[128, 256] -> PaSST-S (12 blocks, 302 tokens) -> softmax [527]. The weights are random (same compute as the
released checkpoint), so no download is needed. The measurement is `bench_extractors.bench_passt` (one warm-up
clip, then the timed ones); this script is its documented entry point with a JSON summary.

    .venv/bin/python scripts/bench_passt.py --clips 8 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform

import numpy as np
import torch
from bench_extractors import bench_passt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8, help="timed clips (after one warm-up clip)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="also write the result to this JSON file")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    clips = [(rng.standard_normal((1, 112896)) * 0.1).astype(np.float32) for _ in range(args.clips + 1)]
    result = {"benchmark": "passt_extraction", "config": "paper", "clip_seconds": 2.56, "sample_rate": 44100,
              "threads": args.threads, **bench_passt(clips, 44100, "cpu"), "torch": torch.__version__,
              "cpu": platform.processor() or platform.machine(), "debug_weights": True}
    print(json.dumps(result, indent=2))
    if args.json:
        from visualsound.utils.atomic import atomic_write_json

        atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()
