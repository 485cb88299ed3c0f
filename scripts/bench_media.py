"""Benchmark: windowed decode of 2.56 s from the middle of a 10 s clip vs decoding the whole file.

Writes a synthetic 10 s H.264/AAC clip (keyframe every 2 s, like typical web video), then times in one process:

- video window: ``read_video(path, start, 2.56)`` (seek to the keyframe before ``start``, decode only the window);
- video full:   ``read_video(path)`` then slicing the same 64 frames (what decoding the whole file costs);
- audio window / full: the same for ``read_audio`` at 16 kHz.

It checks the window equals the slice of the full decode, and prints median times and full / window ratios.

    .venv/bin/python scripts/bench_media.py [--size 320x240] [--repeats 5] [--start 3.72]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from visualsound.media import read_audio, read_video, write_video


def make_clip(path: Path, width: int, height: int, seconds: float = 10.0, fps: int = 25, sr: int = 44100) -> None:
    """A moving gradient with noise texture (so the encoder spends real bits) plus a stereo chirp."""
    rng = np.random.default_rng(0)
    n = int(seconds * fps)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = rng.integers(0, 40, size=(height, width, 3)).astype(np.float32)
    frames = np.empty((n, height, width, 3), np.uint8)
    for k in range(n):
        base = 100 + 80 * np.sin((xx + 3 * k) / 23.0)[..., None] * np.cos((yy - 2 * k) / 17.0)[..., None]
        frames[k] = np.clip(base + np.roll(texture, k, axis=1), 0, 255).astype(np.uint8)
    t = np.arange(int(seconds * sr)) / sr
    chirp = 0.3 * np.sin(2 * np.pi * (200 * t + 40 * t**2))
    write_video(path, frames, fps, np.stack([chirp, 0.5 * chirp]).astype(np.float32), sr, gop=2 * fps)


def timeit(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up (file cache, codec init)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="320x240", help="WxH of the synthetic clip")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--start", type=float, default=3.72, help="window start (s); 2.56 s window")
    ap.add_argument("--clip", type=Path, default=None, help="use this 10 s clip instead of a synthetic one")
    args = ap.parse_args()
    torch.set_num_threads(1)
    w, h = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        path = args.clip or Path(tmp) / "clip10s.mp4"
        if args.clip is None:
            make_clip(path, w, h)
        k0, n = int(round(args.start * 25)), 64
        s0, ns = int(round(args.start * 16000)), int(round(2.56 * 16000))
        tv_win, v_win = timeit(lambda: read_video(path, args.start, 2.56), args.repeats)
        tv_full, v_full = timeit(lambda: read_video(path)[k0:k0 + n], args.repeats)
        ta_win, a_win = timeit(lambda: read_audio(path, args.start, 2.56, sample_rate=16000), args.repeats)
        ta_full, a_full = timeit(lambda: read_audio(path, sample_rate=16000)[:, s0:s0 + ns], args.repeats)
    assert torch.equal(v_win, v_full), "windowed video differs from the slice of the full decode"
    audio_diff = float((a_win - a_full).abs().max())
    print(f"command: {' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv])}")
    print(f"clip: {args.clip or f'synthetic 10 s {w}x{h} 25 fps H.264 (GOP 50) + AAC 44.1 kHz stereo'}; "
          f"window {args.start:.2f}-{args.start + 2.56:.2f} s; median of {args.repeats}; torch threads 1")
    print(f"video: window {tv_win * 1e3:.1f} ms, full {tv_full * 1e3:.1f} ms, full/window = {tv_full / tv_win:.2f}x "
          f"(frames identical)")
    print(f"audio: window {ta_win * 1e3:.1f} ms, full {ta_full * 1e3:.1f} ms, full/window = {ta_full / ta_win:.2f}x "
          f"(max abs diff {audio_diff:.2e})")


if __name__ == "__main__":
    main()
