"""Seconds per 4.8 s window of the paper-size Synchformer (random weights) on CPU, fp32 and bf16, + peak memory.

Each dtype runs in its own child process so the peak RSS (``resource.getrusage``) belongs to that dtype alone
(the bf16 peak includes building the model in fp32 before the cast). Preprocessing (uint8 frames + waveform ->
model inputs) and the model forward are timed separately, as wall time and as process CPU time (the CPU time is
the robust figure on a shared machine).

    .venv/bin/python scripts/bench_synchformer.py                     # fp32 and bf16, 1 thread, 1 window
    .venv/bin/python scripts/bench_synchformer.py --dtypes fp32 --threads 2 --repeats 2 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_one(dtype_name: str, threads: int, repeats: int, warmup: int, batch: int, preset: str = "paper") -> dict:
    import torch

    from vaura.synchformer import Synchformer, SynchformerConfig, init_random_weights
    from vaura.synchformer import preprocess as P

    torch.set_num_threads(threads)
    dtype = getattr(torch, DTYPES[dtype_name])
    t0 = time.perf_counter()
    model = init_random_weights(Synchformer(SynchformerConfig.preset(preset))).to(dtype).eval()
    build_s = time.perf_counter() - t0
    rss_model = _peak_rss_mib()
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (batch, P.WINDOW_FRAMES, 224, 224, 3), dtype=torch.uint8, generator=gen)
    wave = 0.1 * torch.randn(batch, P.WINDOW_SAMPLES, generator=gen)
    pre, fwd, fwd_cpu = [], [], []
    with torch.no_grad():
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            video = P.video_for_sync(frames, dtype=dtype)
            audio = P.audio_for_sync(wave).to(dtype)
            t1, c1 = time.perf_counter(), time.process_time()
            logits = model(video, audio).logits
            t2, c2 = time.perf_counter(), time.process_time()
            if i >= warmup:
                pre.append(t1 - t0)
                fwd.append(t2 - t1)
                fwd_cpu.append(c2 - c1)
    assert logits.shape == (batch, 21) and torch.isfinite(logits.float()).all(), f"{logits.shape}"
    return {"preset": preset, "dtype": dtype_name, "threads": threads, "batch": batch, "repeats": repeats,
            "warmup": warmup,
            "params": sum(p.numel() for p in model.parameters()), "build_s": round(build_s, 2),
            "preprocess_s_per_window": round(min(pre) / batch, 3),
            "forward_s_per_window": round(min(fwd) / batch, 3),
            "forward_s_per_window_all": [round(t / batch, 3) for t in fwd],
            "forward_cpu_s_per_window": round(min(fwd_cpu) / batch, 3),
            "peak_rss_mib_after_build": round(rss_model, 1), "peak_rss_mib": round(_peak_rss_mib(), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--batch", type=int, default=1, help="windows per forward pass")
    ap.add_argument("--preset", default="paper", help="model size (paper; tiny for a quick smoke run)")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.threads, args.repeats, args.warmup, args.batch, args.preset)))
        return
    results = []
    for name in args.dtypes:
        cmd = [sys.executable, __file__, "--child", name, "--threads", str(args.threads), "--repeats",
               str(args.repeats), "--warmup", str(args.warmup), "--batch", str(args.batch), "--preset", args.preset]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.exit(f"{name} run failed (exit {proc.returncode}):\n{proc.stderr}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(res)
        print(f"{name}: forward {res['forward_s_per_window']:.2f} s/window (CPU time "
              f"{res['forward_cpu_s_per_window']:.2f} s), preprocess "
              f"{res['preprocess_s_per_window']:.2f} s/window, peak RSS {res['peak_rss_mib']:.0f} MiB "
              f"({res['threads']} thread(s))", flush=True)
    if len(results) == 2:
        print(f"bf16 / fp32 forward time ratio: "
              f"{results[1]['forward_s_per_window'] / results[0]['forward_s_per_window']:.2f}")
    report = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
              "results": results}
    if args.out:
        from visualsound.utils.atomic import atomic_write_json

        atomic_write_json(args.out, report)


if __name__ == "__main__":
    main()
