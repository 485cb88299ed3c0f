"""Benchmark: where a listening-report clip's first-build CPU time goes, and what the audio codecs cost.

1. Stages of one gallery clip (an 8 s window of a 10 s 640x360 25 fps source from `bench_report.make_sources`,
   ``--source-crf`` 32: about 0.3 Mbit/s), CPU ms each, medians over ``--repeats``: reading the ground-truth
   audio, decoding the window, decoding + scaling to 320 px in YUV (the report's `convert_frame` call), libx264
   at the report's settings, the ground-truth stereo AAC, the copied window (`copy_window`, with the source's AAC
   copied and with the ground truth encoded), one model's track (`mux_audio` under the preview) and one
   spectrogram.
2. Audio encoders for 8 s of mono 44.1 kHz sound (tone in noise) into mp4: FFmpeg's AAC (default coder, the
   fast coder the report uses, fast without PNS / TNS / M-S / IS), libopus (complexity 10 / 5 / 0, at 48 kHz),
   libmp3lame (default / compression level 7) and FLAC: CPU ms, bytes, and the ratio to the report's choice
   (AAC fast) measured in the same run.

    .venv/bin/python scripts/bench_report_codecs.py [--repeats 3] [--source-crf 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.report_media import MediaSettings, _read_window, spectrogram_image  # noqa: E402
from scripts.bench_report import make_sources  # noqa: E402
from visualsound.media import copy_window, mux_audio, write_preview, write_wav  # noqa: E402
from visualsound.media.video import convert_frame, iter_video_window  # noqa: E402

CODECS = {  # name: (codec, sample rate, options, bit rate)
    "aac-default": ("aac", 44100, {}, None),
    "aac-fast (the report's)": ("aac", 44100, {"aac_coder": "fast"}, None),
    "aac-fast-no-pns-tns-ms-is": ("aac", 44100, {"aac_coder": "fast", "aac_pns": "0", "aac_tns": "0", "aac_ms": "0",
                                                 "aac_is": "0"}, None),
    "opus-c10": ("libopus", 48000, {}, 96000),
    "opus-c5": ("libopus", 48000, {"compression_level": "5"}, 96000),
    "opus-c0": ("libopus", 48000, {"compression_level": "0"}, 96000),
    "mp3": ("libmp3lame", 44100, {}, None),
    "mp3-q7": ("libmp3lame", 44100, {"compression_level": "7"}, None),
    "flac": ("flac", 44100, {}, None),
}


def cpu_ms(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.process_time()
        out = fn()
        times.append((time.process_time() - t) * 1000)
    return round(statistics.median(times), 1), out


def encode_audio(x: np.ndarray, sr: int, codec: str, rate: int, options: dict, bit_rate: int | None) -> int:
    """`x` float32 ``[N]`` mono at `sr` -> an in-memory mp4 with `codec`; returns its size in bytes."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream(codec, rate=rate, layout="mono", options=options)
        if bit_rate:
            s.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(x[None], format="flt", layout="mono")
        frame.sample_rate, frame.pts = sr, 0
        rs = av.AudioResampler(format=s.format.name, layout="mono", rate=rate, frame_size=s.frame_size or None)
        for f in [*rs.resample(frame), *rs.resample(None)]:
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return len(buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--source-crf", type=int, default=32)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    s = MediaSettings()
    out: dict = {"script": "scripts/bench_report_codecs.py", "repeats": args.repeats, "stages_cpu_ms": {},
                 "codecs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = str(make_sources(tmp / "src", 1, crf=args.source_crf)[0])
        st = out["stages_cpu_ms"]
        st["read ground-truth audio (8 s stereo)"], (a, sr) = cpu_ms(lambda: _read_window(src, 0.0, 8.0),
                                                                     args.repeats)

        def frames(convert):
            return sum(1 for _ in iter_video_window(src, 0.0, 8.0, s.fps, convert=convert, threads=1))

        st["decode the window"], _ = cpu_ms(lambda: frames(lambda f, r: f), args.repeats)
        scaled: list = []

        def decode_scale():
            scaled.clear()
            scaled.extend(iter_video_window(src, 0.0, 8.0, s.fps, threads=1, convert=lambda f, r: convert_frame(
                f, width=320, height=180, format="yuv420p", interpolation="AREA", dst_color_range="MPEG")))

        st["decode + scale to 320 px"], _ = cpu_ms(decode_scale, args.repeats)

        def x264():
            buf = io.BytesIO()
            with av.open(buf, "w", format="mp4") as c:
                vs = c.add_stream("libx264", rate=int(s.fps))
                vs.width, vs.height, vs.pix_fmt = 320, 180, "yuv420p"
                vs.options = {"crf": str(s.crf), "preset": s.preset, "threads": "1"}
                for i, f in enumerate(scaled):
                    f.pts, f.time_base = i, Fraction(1, int(s.fps))
                    for p in vs.encode(f):
                        c.mux(p)
                for p in vs.encode(None):
                    c.mux(p)

        st["x264 (the report's settings)"], _ = cpu_ms(x264, args.repeats)
        preview = tmp / "gt.mp4"
        st["write_preview without audio (decode + scale + x264)"], _ = cpu_ms(lambda: write_preview(
            src, preview, start=0.0, duration=8.0, fps=s.fps, max_width=s.width, crf=s.crf, preset=s.preset,
            encoder_threads=1, decoder_threads=1), args.repeats)
        st["write_preview with the stereo ground truth"], _ = cpu_ms(lambda: write_preview(
            src, preview, start=0.0, duration=8.0, fps=s.fps, max_width=s.width, audio=a, sample_rate=sr,
            crf=s.crf, preset=s.preset, aac_coder=s.aac_coder, encoder_threads=1, decoder_threads=1), args.repeats)
        copied = tmp / "gt-copy.mp4"
        st["copy_window with the source's AAC (the report's path for small H.264)"], _ = cpu_ms(lambda: copy_window(
            src, copied, start=0.0, duration=8.0, max_width=s.width, audio_from_source=True), args.repeats)
        st["copy_window with the stereo ground truth encoded"], _ = cpu_ms(lambda: copy_window(
            src, copied, start=0.0, duration=8.0, max_width=s.width, audio=a, sample_rate=sr,
            aac_coder=s.aac_coder), args.repeats)
        gen = tmp / "gen.wav"
        write_wav(gen, torch.randn(1, 44100 * 10, generator=torch.Generator().manual_seed(0)) * 0.1, 44100)
        st["read a generated 10 s wav"], (g, gsr) = cpu_ms(lambda: _read_window(str(gen), 0.0, None), args.repeats)
        g = g[:, :8 * gsr]
        st["model track: mux_audio under the preview (AAC)"], _ = cpu_ms(
            lambda: mux_audio(preview, g, gsr, tmp / "track.mp4", aac_coder=s.aac_coder), args.repeats)
        st["spectrogram image"], _ = cpu_ms(lambda: spectrogram_image(g, gsr, s), args.repeats)

        t = np.arange(44100 * 8) / 44100
        x = (np.random.default_rng(0).standard_normal(t.size) * 0.1 + 0.3 * np.sin(2 * np.pi * 440 * t))
        x = x.astype(np.float32)
        for name, spec in CODECS.items():
            ms, size = cpu_ms(functools.partial(encode_audio, x, 44100, *spec), args.repeats)
            out["codecs"][name] = {"cpu_ms": ms, "bytes": size}
        base = out["codecs"]["aac-fast (the report's)"]
        for v in out["codecs"].values():
            v["cpu_vs_aac_fast"] = round(v["cpu_ms"] / base["cpu_ms"], 2)
            v["bytes_vs_aac_fast"] = round(v["bytes"] / base["bytes"], 2)
    print(json.dumps(out, indent=2))
    if args.json:
        from visualsound.utils.atomic import atomic_write_json

        atomic_write_json(args.json, out)


if __name__ == "__main__":
    main()
