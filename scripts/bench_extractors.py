"""Throughput (clips/s) of the benchmark's audio embedders on random clips, with random paper-size weights.

Usage::

    .venv/bin/python scripts/bench_extractors.py                       # VGGish and PaSST, 8 clips at 44.1 kHz
    .venv/bin/python scripts/bench_extractors.py --extractor vggish --clips 4 --sample-rate 16000 --threads 2
    .venv/bin/python scripts/bench_extractors.py --extractor passt --clips 9 --threads 1

Each extractor is one function ``bench_<name>(clips, sample_rate, device) -> dict`` registered in
`EXTRACTORS`; it builds its model with random weights (no download), runs one warm-up clip (JIT, allocator)
and times the rest with `time_clips`. Output: one JSON line per extractor. The weights are random, so the
numbers measure speed only.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch


def time_clips(fn: Callable[[Any], object], clips: Sequence[Any]) -> dict:
    """Run ``fn`` on ``clips[0]`` (warm-up), then time it on the others; seconds and clips/s."""
    assert len(clips) >= 2, f"need a warm-up clip plus at least one timed clip, got {len(clips)}"
    fn(clips[0])
    start = time.perf_counter()
    for clip in clips[1:]:
        fn(clip)
    seconds = time.perf_counter() - start
    timed = len(clips) - 1
    return {"timed_clips": timed, "seconds": round(seconds, 3), "clips_per_s": round(timed / seconds, 3)}


def bench_vggish(clips: list[np.ndarray], sample_rate: int, device: str) -> dict:
    """VGGish as FAD runs it: mixdown, resampy to 16 kHz, float64 log-mel, paper-size network (random)."""
    from benchmarks.metrics.vggish import (
        VGGish,
        VGGishConfig,
        embed_examples,
        init_random_,
        log_mel_examples,
        mixdown,
        resample_to_16k,
        vggish_embeddings,
    )

    cfg = VGGishConfig.preset("paper")
    model = init_random_(VGGish(cfg), seed=0).eval().to(device)
    total = time_clips(lambda clip: vggish_embeddings(clip, sample_rate, model), clips)
    # stage split on the same clips: front-end (resample + log-mel) vs network
    examples = []
    start = time.perf_counter()
    for clip in clips[1:]:
        examples.append(log_mel_examples(resample_to_16k(mixdown(clip), sample_rate), cfg))
    front = time.perf_counter() - start
    start = time.perf_counter()
    for ex in examples:
        embed_examples(model, ex)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    net = time.perf_counter() - start
    return {**total, "frames_per_clip": int(examples[0].shape[0]),
            "front_end_s_per_clip": round(front / len(examples), 4),
            "network_s_per_clip": round(net / len(examples), 4)}


def bench_passt(clips: list[np.ndarray], sample_rate: int, device: str) -> dict:
    """PaSST-S as KLD scores one file: the first 2.56 s of each clip, mixdown, julius resample to 32 kHz, log-mel
    ``[128, 256]``, paper-size PaSST (12 blocks, 302 tokens, random weights), softmax over 527 classes."""
    from benchmarks.metrics.passt import load_passt, passt_probs

    model = load_passt(debug_weights=True, config="paper", device=device)
    n = int(2.56 * sample_rate)
    assert all(c.shape[-1] >= n for c in clips), f"PaSST needs clips of >= 2.56 s, got {clips[0].shape}"
    windows = [torch.from_numpy(c[..., :n]) for c in clips]
    return {**time_clips(lambda w: passt_probs(model, w, sample_rate), windows), "window_seconds": 2.56}


EXTRACTORS: dict[str, Callable[[list[np.ndarray], int, str], dict]] = {
    "passt": bench_passt,
    "vggish": bench_vggish,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extractor", choices=sorted(EXTRACTORS), action="append",
                        help="extractor to time (repeatable; default: all)")
    parser.add_argument("--clips", type=int, default=8, help="clips per extractor, the first is a warm-up")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--sample-rate", type=int, default=44100, help="input rate (V-AURA generates 44.1 kHz)")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    n = int(args.seconds * args.sample_rate)
    clips = [(rng.standard_normal((args.channels, n)) * 0.1).astype(np.float32) for _ in range(args.clips)]
    for name in args.extractor or sorted(EXTRACTORS):
        result = EXTRACTORS[name](clips, args.sample_rate, args.device)
        print(json.dumps({"extractor": name, "random_weights": True, "clip_seconds": args.seconds,
                          "sample_rate": args.sample_rate, "channels": args.channels, "threads": args.threads,
                          "device": args.device, "cpu": platform.processor() or platform.machine(),
                          "torch": torch.__version__, **result}))


if __name__ == "__main__":
    main()
