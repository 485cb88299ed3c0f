"""Benchmark the ImageBind/VisualSound preprocessing and the huge model on CPU.

1. Preprocessing, one worker (1 torch thread, 1 decoder thread): `preprocess_clip` (demux once, decode video only
   from the keyframe before each selected frame, skip unneeded non-reference frames, convert 10 frames to RGB,
   resample only the 3 audio windows) vs a whole-file approach on the same clips, as upstream does it (decode
   every video frame to RGB, sort by pts, pick the same frames; resample the whole waveform; the same transform
   and fbank functions). Both must give identical tensors; runs are interleaved so machine load hits both alike.
   Peak resident memory of each approach is measured in a fresh worker process.
2. ``--breakdown``: CPU time per stage of both approaches (open, demux, audio decode, audio frames -> array,
   video decode, RGB conversion, video transform, resample, fbank), medians over the clips and repeats. The
   staged code mirrors the two approaches step by step and is checked to give the same tensors.
3. Model: `ImageBindAV` at ``huge`` size with random weights (constructed, no checkpoint), fp32, clips/s for
   `--model-clips` clips (15 views + 3 audio windows each).

Usage::

    .venv/bin/python scripts/bench_imagebind.py --clips 4 --repeats 3 --breakdown --model-clips 1 \\
        --out bench_imagebind.json
"""

from __future__ import annotations

import json
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path

import av
import click
import numpy as np
import torch

from visualsound.imagebind import ImageBindAV, ImageBindConfig, preprocess_clip
from visualsound.imagebind.preprocess import (
    FRAMES_PER_CLIP,
    _decode_selected,
    _window_fbanks,
    audio_to_fbanks,
    audio_window_samples,
    resample_span_to_16k,
    resample_to_16k,
    resampled_length,
    transform_video,
    video_frame_indices,
)
from visualsound.media import open_media
from visualsound.media.audio import audio_frames_to_array
from visualsound.media.info import video_stream
from visualsound.media.video import frame_to_rgb


def write_clip(path: Path, seconds: float = 10.0, fps: int = 25, size: tuple[int, int] = (360, 640),
               seed: int = 0, texture_amplitude: int = 64) -> None:
    """A 10 s H.264 (x264 defaults: GOP 250, 3 B-frames) + AAC 44.1 kHz stereo clip with moving content: moving
    gradients plus a static random texture of `texture_amplitude` levels (64: about 1.6 Mbit/s, hard to code;
    8: about 0.5 Mbit/s)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    texture = rng.integers(0, max(texture_amplitude, 1), size=(h, w, 3))
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps, options={"preset": "fast", "crf": "23"})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        aus = out.add_stream("aac", rate=44100, layout="stereo")
        for i in range(int(seconds * fps)):
            img = np.stack([(xx + 3 * i) % 256, (yy + 2 * i) % 192, ((xx - yy) // 2 + 5 * i) % 256], -1)
            img = (img + texture).clip(0, 255).astype(np.uint8)
            out.mux(vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(vs.encode(None))
        n = int(seconds * 44100)
        t = np.arange(n) / 44100
        sig = np.stack([0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t), 0.05 * rng.standard_normal(n)])
        sig = sig.astype(np.float32)
        for s in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(sig[:, s:s + 1024]), format="fltp",
                                               layout="stereo")
            frame.sample_rate = 44100
            out.mux(aus.encode(frame))
        out.mux(aus.encode(None))


def whole_file_preprocess(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Baseline: decode the whole video to RGB, index frames by pts order, resample the whole waveform, then the
    same transforms."""
    with av.open(path) as c:
        vs, aus = video_stream(c, path), c.streams.audio[0]
        vs.thread_count = 1
        frames, audio_frames = [], []
        for f in c.decode(vs, aus):
            if isinstance(f, av.VideoFrame):
                frames.append((f.pts, frame_to_rgb(f)))
            else:
                audio_frames.append(f)
        frames.sort(key=lambda x: x[0])
        fps = float(vs.average_rate)
        rate = aus.codec_context.sample_rate
    _, kept = video_frame_indices(len(frames), fps)
    sel = torch.from_numpy(np.stack([np.stack([frames[i][1] for i in pair]) for pair in kept]))
    wav16 = resample_to_16k(torch.from_numpy(audio_frames_to_array(audio_frames)), rate)
    return transform_video(sel), audio_to_fbanks(wav16)


class StageTimer:
    """CPU seconds (``time.process_time``) accumulated per named stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.process_time()

    def lap(self, stage: str) -> None:
        """Charge the time since the previous lap to `stage`."""
        now = time.process_time()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._t
        self._t = now


def staged_fast(path: str) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """`preprocess_clip`'s steps (no rotation, no error statuses), timed per stage."""
    t = StageTimer()
    c = open_media(path)
    vs, aus = video_stream(c, path), c.streams.audio[0]
    vs.thread_count = 1
    t.lap("open/close")
    packets, audio_frames = [], []
    for pk in c.demux(vs, aus):
        t.lap("demux")
        if pk.stream.index == aus.index:
            audio_frames.extend(pk.decode())
            t.lap("audio decode")
        elif pk.size:
            packets.append(pk)
    t.lap("demux")
    waveform = torch.from_numpy(audio_frames_to_array(audio_frames))
    rate = int(aus.codec_context.sample_rate)
    t.lap("audio frames -> array")
    fps = float(vs.average_rate)
    pts_sorted = sorted(pk.pts for pk in packets if not pk.is_discard)  # the frames that play
    _, kept = video_frame_indices(len(pts_sorted), fps)
    wanted = {pts_sorted[i] for pair in kept for i in pair}
    decoded = _decode_selected(vs, packets, wanted, path)
    t.lap("video decode")
    first = decoded[pts_sorted[0]]
    frames = np.empty((len(kept), FRAMES_PER_CLIP, first.height, first.width, 3), dtype=np.uint8)
    for w, pair in enumerate(kept):
        for k, i in enumerate(pair):
            frames[w, k] = frame_to_rgb(decoded[pts_sorted[i]])
    t.lap("rgb conversion")
    c.close()
    t.lap("open/close")
    video = transform_video(torch.from_numpy(frames))
    t.lap("video transform")
    n16 = resampled_length(waveform.shape[1], rate)
    windows = audio_window_samples(n16)
    wav = waveform.new_empty((waveform.shape[0], n16))
    for s, e in windows:
        wav[:, s:e] = resample_span_to_16k(waveform, rate, s, e)
    t.lap("resample")
    audio = _window_fbanks([wav[:, s:e] for s, e in windows])
    t.lap("fbank")
    return video, audio, t.seconds


def staged_whole_file(path: str) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """`whole_file_preprocess`'s steps, timed per stage."""
    t = StageTimer()
    c = av.open(path)
    vs, aus = video_stream(c, path), c.streams.audio[0]
    vs.thread_count = 1
    t.lap("open/close")
    frames, audio_frames = [], []
    for pk in c.demux(vs, aus):  # what container.decode does, with the stages apart
        t.lap("demux")
        if pk.stream.index == aus.index:
            audio_frames.extend(pk.decode())
            t.lap("audio decode")
            continue
        decoded = pk.decode()  # an empty flush packet at the end drains the decoder
        t.lap("video decode")
        frames.extend((f.pts, frame_to_rgb(f)) for f in decoded)
        t.lap("rgb conversion")
    t.lap("demux")
    frames.sort(key=lambda x: x[0])
    fps = float(vs.average_rate)
    rate = aus.codec_context.sample_rate
    c.close()
    t.lap("open/close")
    waveform = torch.from_numpy(audio_frames_to_array(audio_frames))
    t.lap("audio frames -> array")
    _, kept = video_frame_indices(len(frames), fps)
    sel = torch.from_numpy(np.stack([np.stack([frames[i][1] for i in pair]) for pair in kept]))
    video = transform_video(sel)
    t.lap("video transform")
    wav16 = resample_to_16k(waveform, rate)
    t.lap("resample")
    audio = audio_to_fbanks(wav16)
    t.lap("fbank")
    return video, audio, t.seconds


def stage_breakdown(paths: list[str], repeats: int) -> dict[str, dict[str, float]]:
    """Median CPU ms per stage (and their total) of both approaches, after checking they give the same
    tensors as `preprocess_clip`."""
    runs: dict[str, list[dict[str, float]]] = {"fast": [], "whole_file": []}
    for p in paths:
        ref_v, ref_a, _ = preprocess_clip(p)
        for name, fn in (("fast", staged_fast), ("whole_file", staged_whole_file)):
            v, a, _ = fn(p)
            assert torch.equal(v, ref_v) and torch.equal(a, ref_a), f"staged {name} differs from preprocess_clip"
    for _ in range(repeats):
        for p in paths:
            for name, fn in (("fast", staged_fast), ("whole_file", staged_whole_file)):
                runs[name].append(fn(p)[2])
    out = {}
    for name, rows in runs.items():
        stages = {k: 1000 * statistics.median(r.get(k, 0.0) for r in rows) for k in rows[0]}
        stages["total"] = 1000 * statistics.median(sum(r.values()) for r in rows)
        out[name] = stages
    return out


def _fast(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    video, audio, _ = preprocess_clip(path)
    return video, audio


def _worker_peak_rss(approach: str, paths: list[str], queue: mp.Queue) -> None:
    torch.set_num_threads(1)
    fn = _fast if approach == "fast" else whole_file_preprocess
    for p in paths:
        fn(p)
    # VmHWM is this process's own peak (ru_maxrss would include the parent's peak, kept across exec)
    status = Path("/proc/self/status").read_text().splitlines()
    queue.put(next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024)  # KiB -> MiB


def peak_rss_mib(approach: str, paths: list[str]) -> float:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker_peak_rss, args=(approach, paths, queue))
    proc.start()
    value = queue.get(timeout=600)
    proc.join()
    return float(value)


@click.command()
@click.option("--clips", default=4, show_default=True, help="synthetic 10 s clips (640x360, 25 fps)")
@click.option("--texture-amplitude", default=64, show_default=True,
              help="static noise texture of the synthetic clips (levels): sets how hard they are to decode")
@click.option("--repeats", default=3, show_default=True)
@click.option("--fixture-dir", type=click.Path(path_type=Path), default=None,
              help="also time clipA/clipB of the imagebind parity fixture")
@click.option("--breakdown", is_flag=True, help="also time each stage of both approaches (CPU ms per clip)")
@click.option("--model-clips", default=1, show_default=True, help="clips for the huge-model timing (0: skip)")
@click.option("--model-threads", default=1, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="write the numbers as JSON")
def main(clips: int, texture_amplitude: int, repeats: int, fixture_dir: Path | None, breakdown: bool,
         model_clips: int, model_threads: int, out: Path | None) -> None:
    torch.set_num_threads(1)
    results: dict = {"torch_threads_preprocess": 1, "model_threads": model_threads,
                     "texture_amplitude": texture_amplitude}
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(clips):
            p = Path(tmp) / f"bench{i}.mp4"
            write_clip(p, seed=i, texture_amplitude=texture_amplitude)
            paths.append(str(p))
        if fixture_dir is not None:
            paths += [str(fixture_dir / "clipA.mp4"), str(fixture_dir / "clipB.mp4")]
        for p in paths:  # warm-up and equality check
            fv, fa = _fast(p)
            bv, ba = whole_file_preprocess(p)
            assert torch.equal(fv, bv) and torch.equal(fa, ba), f"fast and whole-file outputs differ on {p}"
        wall: dict[str, list[float]] = {"fast": [], "whole_file": []}
        cpu: dict[str, list[float]] = {"fast": [], "whole_file": []}
        for _ in range(repeats):
            for p in paths:
                for name, fn in (("fast", _fast), ("whole_file", whole_file_preprocess)):
                    t, c = time.perf_counter(), time.process_time()
                    fn(p)
                    wall[name].append(time.perf_counter() - t)
                    cpu[name].append(time.process_time() - c)
        per_clip = {k: statistics.median(v) for k, v in wall.items()}
        cpu_clip = {k: statistics.median(v) for k, v in cpu.items()}
        results["preprocess"] = {
            "clips": len(paths), "repeats": repeats,
            "median_wall_s_per_clip": per_clip, "median_cpu_s_per_clip": cpu_clip,
            "clips_per_s_per_worker_wall": {k: 1.0 / v for k, v in per_clip.items()},
            "speedup_wall": per_clip["whole_file"] / per_clip["fast"],
            "speedup_cpu": cpu_clip["whole_file"] / cpu_clip["fast"],
            "speedup_cpu_per_clip": [w / f for f, w in zip(cpu["fast"], cpu["whole_file"])],
            "peak_rss_mib": {"fast": peak_rss_mib("fast", paths),
                             "whole_file": peak_rss_mib("whole_file", paths)},
        }
        click.echo(json.dumps(results["preprocess"], indent=1))
        if breakdown:
            results["preprocess_stages_cpu_ms"] = stage_breakdown(paths, repeats)
            click.echo(json.dumps(results["preprocess_stages_cpu_ms"], indent=1))
        if model_clips > 0:
            torch.set_num_threads(model_threads)
            t = time.perf_counter()
            model = ImageBindAV(ImageBindConfig.preset("huge")).eval()
            build_s = time.perf_counter() - t
            video, audio = _fast(paths[0])
            video = video[None].expand(model_clips, *video.shape).contiguous()
            audio = audio[None].expand(model_clips, *audio.shape).contiguous()
            with torch.inference_mode():
                t = time.perf_counter()
                ev = model.embed_vision(video)
                t_vision = time.perf_counter() - t
                t = time.perf_counter()
                ea = model.embed_audio(audio)
                t_audio = time.perf_counter() - t
                torch.nn.functional.cosine_similarity(ev, ea, dim=-1)
            results["model_huge_fp32_cpu"] = {
                "clips": model_clips, "build_s": build_s, "vision_s": t_vision, "audio_s": t_audio,
                "clips_per_s": model_clips / (t_vision + t_audio),
                "params": sum(p.numel() for p in model.parameters()),
            }
            click.echo(json.dumps(results["model_huge_fp32_cpu"], indent=1))
    if out is not None:
        out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
