"""Benchmark V-AURA generation: KV cache vs the original's full recomputation, on CPU, in one run.

For each size (random weights; timing does not depend on values):

* ``kv``: one whole 2.56 s generation (220 DAC frames = 228 loop steps, CFG batch 2, top-k 128) with the KV
  cache, end to end;
* ``full``: the original method (every step recomputes the whole prefix). At sizes listed in ``--full-sizes`` the
  whole generation is run; otherwise only the last ``--steps`` loop steps (prefixes 221..228, the most
  expensive ones) are timed for both methods, a cached single-position step against a full-prefix step, and the
  ratio of those per-step means is reported as exactly that (no extrapolation to the whole run).

Peak resident memory is ``ru_maxrss`` of this process right after the KV-cached run of each size (sizes run in
ascending order, so the paper-size number includes the smaller ones' peak only if it was higher).

    .venv/bin/python scripts/bench_sampler.py --sizes mid,paper --full-sizes mid --out bench_sampler.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vaura.config import VAuraConfig  # noqa: E402
from vaura.model import KVCache, Transformer  # noqa: E402
from vaura.sampler import SamplingParams, generate  # noqa: E402

N_FRAMES = 220  # 2.56 s as the release's generate script
STEPS = N_FRAMES + 8


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def build(cfg: VAuraConfig, dtype: torch.dtype) -> Transformer:
    model = Transformer(cfg)
    model.init_debug_weights(torch.Generator().manual_seed(0))
    return model.to(dtype).eval()


@torch.no_grad()
def timed_generation(model: Transformer, feats: torch.Tensor, use_kv_cache: bool) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    out = generate(model, feats, N_FRAMES, SamplingParams(), generator=torch.Generator().manual_seed(0),
                   use_kv_cache=use_kv_cache)
    return time.perf_counter() - t0, out.codes


@torch.no_grad()
def timed_last_steps(model: Transformer, feats: torch.Tensor, seq: torch.Tensor, n_steps: int) -> dict[str, float]:
    """Mean seconds of one loop step (CFG batch) at prefixes ``STEPS - n_steps + 1 .. STEPS`` for both methods."""
    null = torch.tensor([False, True])
    vis = model.embed_visual(torch.cat([feats, feats]), null)
    seq2 = torch.cat([seq, seq])
    first = STEPS - n_steps + 1
    cache = KVCache(model.cfg, 2, STEPS + 1, "cpu", next(model.parameters()).dtype)
    model.forward_tokens(seq2[..., :first - 1], vis, cache)  # prefill, not timed
    t_kv = []
    for step in range(first, STEPS + 1):
        t0 = time.perf_counter()
        model.forward_tokens(seq2[..., step - 1:step], vis, cache)
        t_kv.append(time.perf_counter() - t0)
    t_full = []
    for step in range(first, STEPS + 1):
        t0 = time.perf_counter()
        model.forward_tokens(seq2[..., :step], vis)
        t_full.append(time.perf_counter() - t0)
    return {"kv_step_s": sum(t_kv) / len(t_kv), "full_step_s": sum(t_full) / len(t_full),
            "prefix_lengths": [first, STEPS]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="mid,paper", help="comma-separated VAuraConfig presets, ascending size")
    ap.add_argument("--full-sizes", default="mid", help="sizes whose full-recomputation run is done end to end")
    ap.add_argument("--steps", type=int, default=8, help="last loop steps timed per method at the other sizes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    full_sizes = set(filter(None, args.full_sizes.split(",")))
    results = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                           "cpu": platform.processor() or platform.machine(), "threads": args.threads,
                           "dtype": args.dtype}, "sizes": {}}
    for name in args.sizes.split(","):
        cfg = VAuraConfig.preset(name).replace(dropout=0.0)
        t0 = time.perf_counter()
        model = build(cfg, dtype)
        params = sum(p.numel() for p in model.parameters())
        feats = torch.randn(1, cfg.visual_tokens, cfg.visual_dim, generator=torch.Generator().manual_seed(1))
        r: dict = {"params": params, "build_s": time.perf_counter() - t0}
        kv_s, codes = timed_generation(model, feats, True)
        r.update(kv_generation_s=kv_s, kv_steps_per_s=STEPS / kv_s, kv_audio_frames_per_s=N_FRAMES / kv_s,
                 kv_realtime_factor=2.56 / kv_s, peak_rss_gb_after_kv=peak_rss_gb())
        print(f"[{name}] {params / 1e6:.1f} M params; KV cache: {kv_s:.2f} s for 2.56 s ({STEPS} steps, "
              f"{STEPS / kv_s:.1f} steps/s); peak RSS {r['peak_rss_gb_after_kv']:.2f} GB", flush=True)
        if name in full_sizes:
            full_s, full_codes = timed_generation(model, feats, False)
            r.update(full_generation_s=full_s, speedup_whole_generation=full_s / kv_s,
                     same_codes=bool(torch.equal(codes, full_codes)))
            print(f"[{name}] full recomputation: {full_s:.2f} s -> speed-up {full_s / kv_s:.1f}x "
                  f"(same codes: {r['same_codes']})", flush=True)
        from vaura.delay import build_pattern

        seq = build_pattern(codes, cfg.special_token)[..., :STEPS]
        steps = timed_last_steps(model, feats, seq, args.steps)
        r["last_steps"] = {**steps, "n_steps": args.steps,
                           "speedup_per_step": steps["full_step_s"] / steps["kv_step_s"]}
        print(f"[{name}] last {args.steps} steps (prefix {steps['prefix_lengths']}): "
              f"KV {steps['kv_step_s']:.4f} s/step, full {steps['full_step_s']:.4f} s/step "
              f"-> {r['last_steps']['speedup_per_step']:.1f}x", flush=True)
        results["sizes"][name] = r
        del model
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
