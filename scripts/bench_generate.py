"""Benchmark `vaura generate` end to end on 8 s clips: seconds per clip at batch 1, clips/s at each batch size, by
stage, for each precision and step mode, on CPU or CUDA; JSON with the commit and the command.

The pipeline is built with random weights (`vaura.generate.random_pipeline`; timing does not depend on values):
``--size tiny`` is the debug pipeline of ``--debug-weights`` (tiny transformer, MotionFormer and DAC), ``--size
paper`` the release's architecture (694.5 M transformer, paper MotionFormer, DAC 44 kHz). Input: synthetic 8 s clips
(`visualsound.synth`, 25 fps, ``--width`` x ``--height``, H.264), reused cyclically when ``--clips`` asks for
more. Every configuration runs once untimed on one clip in a batch of its shape first (CUDA context, graph
capture, ``torch.compile``), then ``--clips`` clips are timed through `vaura.generate.generate_batch` (what
``vaura generate --batch-clips`` and ``vbench evaluate --model vaura`` run) plus the wav + mp4 writing of
`vaura.generate.write_outputs`.

Stages (seconds per clip; `StageTimes`, CUDA-synchronised at each boundary): ``decode`` (reading and resizing
the frames, in ``--decode-workers`` threads, so it overlaps the rest; ``decode_wait`` is the time the main thread
waited for them), ``features`` (Segment AVCLIP, each 16-frame segment once), ``sampling`` (all windows of a
batch), ``codec`` (DAC decode), ``mux`` (wav + mp4 writing). ``s_per_clip`` is the wall time over the clips.

    .venv/bin/python scripts/bench_generate.py --size tiny --clips 8 --batches 1,4,8 --out bench_generate.json
    python3 scripts/bench_generate.py --device cuda --size paper --dtypes fp32,bf16 --modes graph,compiled \\
        --batches 1,16,64 --clips 64 --samples 1,10 --out h200-bench_generate.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # before torch allocates anything, as vaura's CLI

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vaura.generate import (  # noqa: E402
    ClipRequest,
    StageTimes,
    VAuraPipeline,
    generate_batch,
    random_pipeline,
    write_outputs,
)
from vaura.sampler import SamplingParams  # noqa: E402

CLIP_SECONDS = 8.0


def make_clips(folder: Path, count: int, width: int, height: int) -> list[Path]:
    from visualsound.synth import SynthConfig, synthesize

    cfg = SynthConfig(count=count, duration=CLIP_SECONDS, width=width, height=height, test_fraction=0.0)
    synthesize(folder, cfg)
    return sorted((folder / "video").glob("*.mp4"))


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def run_once(pipe: VAuraPipeline, videos: list[Path], n_clips: int, batch: int, samples: int, decode_workers: int,
             out: Path, mux: bool) -> dict:
    """Generate `n_clips` clips (videos reused cyclically) at `batch` clips per sampler batch; timings."""
    requests = [ClipRequest(videos[i % len(videos)], tuple(range(samples)), stream=f"clip{i}")
                for i in range(n_clips)]
    times = StageTimes(sync=True)
    dev = pipe.device
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    done = 0
    for i, res in enumerate(generate_batch(requests, pipe, SamplingParams(), batch_clips=batch,
                                           samples_per_clip=samples, decode_workers=decode_workers, times=times)):
        if res.error is not None:
            raise res.error
        paths = [(out / f"{i}_{k}.wav", out / f"{i}_{k}.mp4") for k in range(samples)]
        with times.stage("mux"):
            write_outputs(Path(res.request.video), res.output, paths, mux=mux)
        done += 1
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    wall = time.perf_counter() - t0
    return {"clips": done, "wall_s": wall, "s_per_clip": wall / done, "clips_per_s": done / wall,
            "stages_s_per_clip": {k: v / done for k, v in sorted(times.seconds.items())}}


def bench(args: argparse.Namespace, videos: list[Path], out: Path) -> dict:
    results: dict = {}
    for dtype in args.dtypes:
        for mode in args.modes:
            pipe = random_pipeline(args.size, args.device)
            pipe.compile_step = mode == "compiled"
            backend = pipe.accelerate_cpu("auto", rows=2 * max(args.samples) * max(args.batches)) \
                if pipe.device.type == "cpu" and dtype == "fp32" else "off"
            pipe.set_dtype(dtype)
            key = f"{dtype}-{mode}"
            results[key] = {"cpu_linear": backend, "samples": {}}
            for samples in args.samples:
                rs: dict = {}
                for batch in args.batches:
                    n = max(args.clips, batch)
                    if pipe.device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(pipe.device)
                    if not args.no_warmup:  # untimed, one clip in a batch of this shape: CUDA context, graph
                        run_once(pipe, videos, 1, batch, samples, args.decode_workers, out, False)  # capture, compile
                    r = run_once(pipe, videos, n, batch, samples, args.decode_workers, out, not args.no_mux)
                    if pipe.device.type == "cuda":
                        r["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(pipe.device) / 1024 ** 3
                    r["peak_rss_gb"] = peak_rss_gb()
                    rs[str(batch)] = r
                    st = ", ".join(f"{k} {v:.3f}" for k, v in r["stages_s_per_clip"].items())
                    print(f"[{args.size} {key} S={samples} batch {batch}] {r['s_per_clip']:.3f} s per 8 s clip, "
                          f"{r['clips_per_s']:.3f} clips/s ({st})", flush=True)
                best = max(rs, key=lambda b: rs[b]["clips_per_s"])
                results[key]["samples"][str(samples)] = {
                    "batches": rs, "batch1_s_per_clip": rs["1"]["s_per_clip"] if "1" in rs else None,
                    "best_batch": int(best), "best_clips_per_s": rs[best]["clips_per_s"],
                    "vggsound_test_15220_clips_hours_at_best": 15220 / rs[best]["clips_per_s"] / 3600}
            del pipe
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="tiny", choices=["tiny", "mid", "paper"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtypes", default="fp32", help="comma-separated: fp32, bf16, fp16")
    ap.add_argument("--modes", default=None,
                    help="comma-separated step modes: auto (CPU default: dynamic), graph, compiled (CUDA)")
    ap.add_argument("--batches", default="1,4", help="comma-separated clips per sampler batch")
    ap.add_argument("--samples", default="1", help="comma-separated samples per clip")
    ap.add_argument("--clips", type=int, default=4, help="clips timed per configuration (at least the batch)")
    ap.add_argument("--videos", type=int, default=4, help="distinct synthetic videos (reused cyclically)")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--decode-workers", type=int, default=None, help="default: 0 on CPU, 4 on CUDA")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--no-mux", action="store_true", help="write wavs only")
    ap.add_argument("--no-warmup", action="store_true", help="time the first run too (CPU: nothing to warm up)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    args.dtypes = args.dtypes.split(",")
    args.batches = [int(b) for b in args.batches.split(",")]
    args.samples = [int(s) for s in args.samples.split(",")]
    on_cuda = args.device.startswith("cuda")
    args.modes = (args.modes or ("graph" if on_cuda else "auto")).split(",")
    if args.decode_workers is None:
        args.decode_workers = 4 if on_cuda else 0
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if on_cuda:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True).stdout.strip())
    machine = {"python": platform.python_version(), "torch": torch.__version__, "device": args.device,
               "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "gpu": torch.cuda.get_device_name(torch.device(args.device)) if on_cuda else None}
    with tempfile.TemporaryDirectory() as tmp:
        videos = make_clips(Path(tmp) / "clips", args.videos, args.width, args.height)
        out = Path(tmp) / "out"
        out.mkdir()
        results = bench(args, videos, out)
    report = {"script": "scripts/bench_generate.py", "command": " ".join(sys.argv), "commit": commit + (
        "+dirty" if dirty else ""), "date": _dt.date.today().isoformat(), "machine": machine,
        "random_weights": True, "clip_seconds": CLIP_SECONDS, "size": args.size,
        "video": f"{args.width}x{args.height} H.264 25 fps", "results": results}
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
