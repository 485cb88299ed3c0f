"""Benchmark V-AURA generation: KV cache vs the original's full recomputation, in one run, on CPU or CUDA.

For each size (random weights; timing does not depend on values) and each number of samples per clip S (CFG
batch 2 S, the paper evaluated with several samples per clip):

* ``kv``: one whole 2.56 s generation (220 DAC frames = 228 loop steps, top-k 128) with the KV cache, dynamic
  shapes (`Transformer.forward_tokens`, one kernel launch per op);
* ``graph`` (CUDA only): the same with every single-position step replayed from a CUDA graph
  (`vaura.sampler.StaticStep`), the default of `vaura generate` on CUDA;
* ``compiled`` (CUDA, ``--compile``): ``graph`` with the step compiled by ``torch.compile`` (Inductor fuses its
  elementwise kernels); the first run, which compiles, is timed apart (``first_run_with_compilation_s``);
* ``thin`` (CPU, fp32): ``kv`` with the linear layers computed by the thin-linear AVX2 kernel
  (`vaura.thin_linear`), what `vaura generate` uses on CPU from 16 MB of linear weights;
* ``packed`` (CPU, fp32): ``kv`` with the linear weights pre-packed for oneDNN (`vaura.packed`), its fallback
  where the kernel does not apply. ``thin`` and ``packed`` run after the others, in that order (they change the
  model in place and are undone after);
* ``full``: the original method (every step recomputes the whole prefix). At sizes listed in ``--full-sizes`` the
  whole generation is run; otherwise only the last ``--steps`` loop steps (prefixes 221..228, the most
  expensive ones) are timed for kv and full, a cached single-position step against a full-prefix step, and the
  ratio of those per-step means is reported as exactly that (no extrapolation to the whole run).

On CUDA every timing is bracketed by ``torch.cuda.synchronize`` and each method runs once untimed first (CUDA
context, cuBLAS handles, graph capture included in the timed run). Peak memory: ``ru_maxrss`` of the process on
CPU (and, where Linux lets the peak be reset, each method's own peak, packing included),
``torch.cuda.max_memory_allocated`` per size on CUDA. As `vaura generate`, the script turns on transparent
huge pages for torch's CPU tensors (``THP_MEM_ALLOC_ENABLE=1``, set before torch is imported, for every method
alike; run with ``THP_MEM_ALLOC_ENABLE=0`` to compare). "same codes" compares the sampled codes of each method
with the kv run's (same seed; differences can only come from float rounding deciding a top-k or sampling tie).

    .venv/bin/python scripts/bench_sampler.py --sizes mid,paper --full-sizes mid --out bench_sampler.json
    python3 scripts/bench_sampler.py --device cuda --sizes mid,paper --full-sizes mid,paper --samples 1,10 --compile
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # before torch allocates anything, as vaura's CLI

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vaura.config import VAuraConfig  # noqa: E402
from vaura.delay import build_pattern  # noqa: E402
from vaura.model import KVCache, Transformer  # noqa: E402
from vaura.packed import pack_linears, packing_available, unpack_linears  # noqa: E402
from vaura.sampler import SamplingParams, generate  # noqa: E402
from vaura.thin_linear import kernel_status, remove_thin_linears, use_thin_linears  # noqa: E402

N_FRAMES = 220  # 2.56 s as the release's generate script
STEPS = N_FRAMES + 8
METHODS = {"kv": (True, "dynamic", False), "packed": (True, "dynamic", False), "thin": (True, "dynamic", False),
           "graph": (True, "graph", False), "compiled": (True, "graph", True),
           "full": (False, "dynamic", False)}
# CPU variants of kv: (apply to the model in place, undo)
CPU_VARIANTS = {"packed": (pack_linears, unpack_linears), "thin": (use_thin_linears, remove_thin_linears)}


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def reset_peak_rss() -> bool:
    """Reset this process's peak resident set size (Linux >= 4.0: ``5`` into ``/proc/self/clear_refs``), so that
    each method's peak is its own; False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_since_reset_gb() -> float:
    """``VmHWM`` of this process in GB (the peak since `reset_peak_rss`)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024 ** 2
    raise RuntimeError("no VmHWM in /proc/self/status")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(cfg: VAuraConfig, dtype: torch.dtype, device: torch.device) -> Transformer:
    model = Transformer(cfg)
    model.init_debug_weights(torch.Generator().manual_seed(0))
    return model.to(device=device, dtype=dtype).eval()


@torch.no_grad()
def timed_generation(model: Transformer, feats: torch.Tensor, method: str, n_frames: int = N_FRAMES
                     ) -> tuple[float, torch.Tensor]:
    use_kv_cache, step_mode, compile_step = METHODS[method]
    gen = torch.Generator(device=feats.device).manual_seed(0)
    sync(feats.device)
    t0 = time.perf_counter()
    out = generate(model, feats, n_frames, SamplingParams(), generator=gen, use_kv_cache=use_kv_cache,
                   step_mode=step_mode, compile_step=compile_step)
    sync(feats.device)
    return time.perf_counter() - t0, out.codes


@torch.no_grad()
def timed_last_steps(model: Transformer, feats: torch.Tensor, seq: torch.Tensor, n_steps: int, full: bool = True
                     ) -> dict[str, float]:
    """Mean seconds of one loop step (CFG batch) at prefixes ``STEPS - n_steps + 1 .. STEPS`` for kv and (with
    `full`) full recomputation."""
    dev = feats.device
    b = feats.shape[0]
    null = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)]).to(dev)
    vis = model.embed_visual(torch.cat([feats, feats]), null)
    seq2 = torch.cat([seq, seq])
    first = STEPS - n_steps + 1
    cache = KVCache(model.cfg, 2 * b, STEPS + 1, dev, next(model.parameters()).dtype)
    model.forward_tokens(seq2[..., :first - 1], vis, cache)  # prefill, not timed
    t_kv = []
    for step in range(first, STEPS + 1):
        sync(dev)
        t0 = time.perf_counter()
        model.forward_tokens(seq2[..., step - 1:step], vis, cache)
        sync(dev)
        t_kv.append(time.perf_counter() - t0)
    t_full = []
    for step in range(first, STEPS + 1 if full else first):
        sync(dev)
        t0 = time.perf_counter()
        model.forward_tokens(seq2[..., :step], vis)
        sync(dev)
        t_full.append(time.perf_counter() - t0)
    out = {"kv_step_s": sum(t_kv) / len(t_kv), "prefix_lengths": [first, STEPS]}
    if full:
        out["full_step_s"] = sum(t_full) / len(t_full)
    return out


def bench_size(name: str, args: argparse.Namespace, device: torch.device, dtype: torch.dtype,
               full_sizes: set[str]) -> dict:
    cfg = VAuraConfig.preset(name).replace(dropout=0.0)
    t0 = time.perf_counter()
    model = build(cfg, dtype, device)
    params = sum(p.numel() for p in model.parameters())
    r: dict = {"params": params, "build_s": time.perf_counter() - t0, "samples": {}}
    methods = (["kv"] + (["graph"] if device.type == "cuda" else [])
               + (["compiled"] if device.type == "cuda" and args.compile else [])
               + (["full"] if name in full_sizes else []))
    variants = []  # thin first: it copies nothing, so its own peak RSS is not inflated by an unpacked model
    if device.type == "cpu" and dtype == torch.float32:
        if not args.no_thin:
            ok, why = kernel_status()
            if not ok:
                raise SystemExit(f"the thin-linear kernel is unavailable ({why}); run with --no-thin")
            variants.append("thin")
        if not args.no_pack and packing_available():
            variants.append("packed")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for n_samples in args.samples:
        feats = torch.randn(n_samples, cfg.visual_tokens, cfg.visual_dim,
                            generator=torch.Generator().manual_seed(1)).to(device=device, dtype=dtype)
        rs: dict = {}
        codes = {}
        run_methods = methods + variants
        for method in run_methods:
            own_peak = device.type == "cpu" and reset_peak_rss()
            if method in CPU_VARIANTS:
                t_pack = time.perf_counter()
                CPU_VARIANTS[method][0](model)
                rs[f"{method}_setup_s"] = time.perf_counter() - t_pack
            warm = None
            if method == "compiled":  # the one-off compilation, at the timed run's shapes, reported apart
                warm, _ = timed_generation(model, feats, method)
            elif device.type == "cuda":  # untimed warm-up: context, cuBLAS/attention kernels, allocator
                timed_generation(model, feats, method, n_frames=16)
            secs, codes[method] = timed_generation(model, feats, method)
            rs[method] = {"generation_s": secs, "steps_per_s": STEPS / secs,
                          "tokens_per_s": N_FRAMES * cfg.n_codebooks * n_samples / secs,
                          "audio_seconds_per_s": 2.56 * n_samples / secs}
            if warm is not None:
                rs[method]["first_run_with_compilation_s"] = warm
            if own_peak:  # the model, plus this method's packing, cache and activations
                rs[method]["peak_rss_gb"] = peak_rss_since_reset_gb()
            if method != "kv":
                rs[method]["same_codes_as_kv"] = bool(torch.equal(codes[method], codes["kv"]))
                rs[method]["fraction_codes_equal_kv"] = float((codes[method] == codes["kv"]).float().mean())
            peak = f", peak RSS {rs[method]['peak_rss_gb']:.2f} GB" if own_peak else ""
            print(f"[{name} S={n_samples}] {method}: {secs:.3f} s for 2.56 s x {n_samples} "
                  f"({STEPS / secs:.1f} steps/s, {rs[method]['tokens_per_s']:.0f} tokens/s{peak})", flush=True)
            if method in CPU_VARIANTS:
                CPU_VARIANTS[method][1](model)
        for method in run_methods:
            if method != "full" and "full" in rs:
                rs[method]["speedup_vs_full"] = rs["full"]["generation_s"] / rs[method]["generation_s"]
                print(f"[{name} S={n_samples}] {method} vs full: {rs[method]['speedup_vs_full']:.1f}x", flush=True)
        for method in ("graph", "compiled", "packed", "thin"):
            if method in rs:
                rs[method]["speedup_vs_kv"] = rs["kv"]["generation_s"] / rs[method]["generation_s"]
        if args.steps > 0 and n_samples == args.samples[0]:
            seq = build_pattern(codes["kv"], cfg.special_token)[..., :STEPS]
            steps = timed_last_steps(model, feats, seq, args.steps)
            rs["last_steps"] = {**steps, "n_steps": args.steps,
                                "speedup_per_step": steps["full_step_s"] / steps["kv_step_s"]}
            print(f"[{name} S={n_samples}] last {args.steps} steps (prefix {steps['prefix_lengths']}): "
                  f"kv {steps['kv_step_s']:.4f} s/step, full {steps['full_step_s']:.4f} s/step "
                  f"-> {rs['last_steps']['speedup_per_step']:.1f}x", flush=True)
            for method in variants:
                CPU_VARIANTS[method][0](model)
                step_s = timed_last_steps(model, feats, seq, args.steps, full=False)["kv_step_s"]
                CPU_VARIANTS[method][1](model)
                rs["last_steps"].update({f"{method}_step_s": step_s,
                                         f"speedup_per_step_{method}": steps["full_step_s"] / step_s})
                print(f"[{name} S={n_samples}] last {args.steps} steps: {method} {step_s:.4f} s/step -> "
                      f"{rs['last_steps'][f'speedup_per_step_{method}']:.1f}x", flush=True)
        r["samples"][str(n_samples)] = rs
    if device.type == "cuda":
        r["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1024 ** 3
    r["peak_rss_gb"] = peak_rss_gb()
    print(f"[{name}] {params / 1e6:.1f} M params; peak RSS {r['peak_rss_gb']:.2f} GB"
          + (f", peak GPU memory {r['peak_gpu_memory_gb']:.2f} GB" if device.type == "cuda" else ""), flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="mid,paper", help="comma-separated VAuraConfig presets, ascending size")
    ap.add_argument("--full-sizes", default="mid", help="sizes whose full-recomputation run is done end to end")
    ap.add_argument("--samples", default="1", help="comma-separated samples per clip (CFG batch = 2 x this)")
    ap.add_argument("--steps", type=int, default=8, help="last loop steps timed per method (0: skip)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (CPU runs)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--compile", action="store_true", help="also time the torch.compile'd graph step (CUDA)")
    ap.add_argument("--no-pack", action="store_true", help="skip the oneDNN-packed kv run (CPU)")
    ap.add_argument("--no-thin", action="store_true", help="skip the thin-linear kernel kv run (CPU)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    args.samples = [int(s) for s in args.samples.split(",")]
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    full_sizes = set(filter(None, args.full_sizes.split(",")))
    machine = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
               "cpu": platform.processor() or platform.machine(), "dtype": args.dtype,
               "threads": torch.get_num_threads(), "THP_MEM_ALLOC_ENABLE": os.environ["THP_MEM_ALLOC_ENABLE"]}
    if device.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(device)
        machine["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    results = {"machine": machine, "n_frames": N_FRAMES, "loop_steps": STEPS, "sizes": {}}
    for name in args.sizes.split(","):
        results["sizes"][name] = bench_size(name, args, device, dtype, full_sizes)
        if args.out is not None:  # keep what is done if a later size runs out of time
            args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
