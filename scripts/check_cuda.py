"""CUDA checks that CI cannot run (it has no GPU): run on a GPU machine, results as JSON.

Each check records its numbers and its failed expectations (``failures``), or the error it raised; the script
exits 1 if any check failed.

* ``sampler_parity``: the reduced V-AURA parity fixture on CUDA, greedy CFG generation of 221 frames with the
  CUDA-graph, dynamic KV and full-recompute loops: codes against the fixture's ``gen_codes`` (computed by the
  original code on CPU), first-3-step guided logits' max abs difference;
* ``sampler_random``: tiny random models, sampled generation (top-k, temperature): graph == dynamic == full codes;
* ``train``: the trainer on CUDA with bf16 and fp16 (GradScaler) autocast on a memorisable toy set: losses;
* ``imagebind_huge`` / ``synchformer_paper``: random-weight models at release size, fp32 and bf16 autocast,
  clips (windows) per second on the GPU;
* ``score_cli``: ``visualsound synth`` + ``visualsound score --device cuda --debug-weights`` on synthetic clips
  with bad inputs: every clip gets a row.
* ``batch_determinism``: `vaura.generate.generate_batch` with a random paper-size pipeline (``--small``: tiny) on
  64 synthetic clips of 2.0 / 3.1 / 5.0 s, fp32 and bf16: three clips generated alone (a batch padded to 64
  clips) and the 64 clips in reverse order give bit-identical codes and audio to the batch of 64 (required);
  the same clips at ``batch_clips=1`` (another batch shape: other GEMM kernels) are compared and reported;
* ``dtype``: the reduced fixture in fp32 / bf16 / fp16 on the GPU (`tests.vaura_reduced.dtype_fidelity`), the
  paper-size decode step's time per precision (CUDA graph and eager, 2 and 128 rows) and, for the eager step,
  the kernels that take the time (profiler), to see why bf16 graph sampling was not faster than fp32.

    VAURA_PARITY_DIR=... python3 scripts/check_cuda.py --out check_cuda.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEV = torch.device("cuda")  # --device cpu dry-runs the checks here (static steps instead of CUDA graphs)


SMALL = False  # --small: tiny ImageBind / Synchformer presets (dry runs)


def graph_mode() -> str:
    return "graph" if DEV.type == "cuda" else "static"


COMPILE = False  # --compile: also the torch.compile'd graph step


def modes() -> tuple[tuple[str, bool, str, bool], ...]:
    """(name, use_kv_cache, step_mode, compile_step) of the generation loops."""
    out = [("graph", True, graph_mode(), False), ("kv", True, "dynamic", False), ("full", False, "dynamic", False)]
    return tuple(out + ([("compiled", True, graph_mode(), True)] if COMPILE else []))


def sync() -> None:
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], repeats: int = 3) -> float:
    """Best seconds of `repeats` calls after one warm-up call, CUDA-synchronised."""
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def check_sampler_parity() -> dict:
    from tests.vaura_reduced import load_reduced
    from vaura.sampler import SamplingParams, generate

    model, inputs, e = load_reduced()
    model = model.to(DEV)
    feats = inputs["visual_features"].to(DEV)
    out = {}
    for name, use_cache, mode, comp in modes():
        seen = []
        res = generate(model, feats, 221, SamplingParams(cfg_scale=6.0, top_k=1), use_kv_cache=use_cache,
                       step_mode=mode, compile_step=comp,
                       on_step=lambda s, c, n, g, seen=seen: seen.append(g) if s <= 3 else None)
        codes = res.codes.cpu()
        out[name] = {"codes_equal_fixture": bool(torch.equal(codes, e["gen_codes"])),
                     "codes_differing": int((codes != e["gen_codes"]).sum()),
                     "first3_guided_max_abs_diff": float(
                         (torch.stack(seen).cpu() - e["gen_first3_guided_logits"]).abs().max())}
    out["failures"] = [f"{n}: {k}" for n, r in out.items() for k, bad in (
        ("codes differ from the fixture", not r["codes_equal_fixture"]),
        ("guided logits beyond the fixture's 2e-4", not r["first3_guided_max_abs_diff"] <= 2e-4)) if bad]
    return out


def check_sampler_random() -> dict:
    from vaura.config import VAuraConfig
    from vaura.model import build_model
    from vaura.sampler import SamplingParams, generate

    out = {}
    for seed in range(3):
        cfg = VAuraConfig.preset("tiny")
        model = build_model(cfg, debug_weights=True, seed=seed).eval().to(DEV)
        feats = torch.randn(3, 32, cfg.visual_dim, generator=torch.Generator().manual_seed(seed)).to(DEV)
        codes = {}
        for name, use_cache, mode, comp in modes():
            gen = torch.Generator(device=DEV).manual_seed(7)
            codes[name] = generate(model, feats, 60, SamplingParams(cfg_scale=3.0, top_k=5, temperature=0.9),
                                   generator=gen, use_kv_cache=use_cache, step_mode=mode, compile_step=comp).codes
        out[f"seed{seed}"] = {f"{a}_equals_full": bool(torch.equal(codes[a], codes["full"])) for a in codes
                              if a != "full"}
        # chunked generation (a prompt prefilled by the multi-position path) and CFG scale 1 (no null branch)
        for case, kw in (("prompt", {"prompt": codes["full"][..., :20]}), ("cfg1", {})):
            params = SamplingParams(cfg_scale=1.0 if case == "cfg1" else 3.0, top_k=5, temperature=0.9)
            got = {}
            for name, use_cache, mode, comp in modes():
                gen = torch.Generator(device=DEV).manual_seed(8)
                got[name] = generate(model, feats, 60, params, generator=gen, use_kv_cache=use_cache,
                                     step_mode=mode, compile_step=comp, **kw).codes
            out[f"seed{seed}"].update({f"{case}_{a}_equals_full": bool(torch.equal(got[a], got["full"]))
                                       for a in got if a != "full"})
    # a bf16 model: every loop runs (bf16 rounding may pick other tokens, so agreement is reported, not required)
    model = build_model(VAuraConfig.preset("tiny"), debug_weights=True, seed=0).eval().to(DEV, torch.bfloat16)
    feats = torch.randn(2, 32, model.cfg.visual_dim, generator=torch.Generator().manual_seed(0)).to(DEV)
    bf = {name: generate(model, feats.to(torch.bfloat16), 40, SamplingParams(top_k=1), use_kv_cache=use_cache,
                         step_mode=mode, compile_step=comp).codes for name, use_cache, mode, comp in modes()}
    out["bf16_fraction_equal_full"] = {a: float((bf[a] == bf["full"]).float().mean()) for a in bf if a != "full"}
    out["failures"] = [f"{seed}: {k}" for seed, r in out.items() if seed.startswith("seed")
                       for k, same in r.items() if not same]
    return out


class Toy(torch.utils.data.Dataset):
    """Clip ``c``: codes ``table[c, q, t % 6]`` (24 frames) and random 32-d visual features."""

    def __init__(self, n: int = 8) -> None:
        g = torch.Generator().manual_seed(0)
        self.codes = torch.randint(0, 1024, (n, 9, 6), generator=g)[:, :, torch.arange(24) % 6]
        self.visual = torch.randn(n, 32, 32, generator=g)

    def set_epoch(self, epoch: int) -> None:
        pass

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: int) -> dict:
        return {"index": i, "clip_id": f"c{i}", "start": 0.0, "codes": self.codes[i], "visual": self.visual[i]}


def check_train() -> dict:
    from vaura.config import VAuraConfig
    from vaura.model import build_model
    from vaura.train.config import TrainConfig
    from vaura.train.ddp import DistInfo
    from vaura.train.loop import Trainer

    out = {}
    for precision, steps in (("bf16", 150), ("fp16", 30)):
        cfg = TrainConfig.preset("tiny").with_overrides(
            ["model_overrides=[visual_dim=32, cond_drop=0.0]", "data.batch_size=4", "log_every=10", "val_every=0",
             "ckpt_every=1000", f"precision={precision}", f"max_steps={steps}", "optim.lr=3e-3",
             "optim.warmup_steps=10"])
        model = build_model(VAuraConfig.resolve(cfg.model).with_overrides(list(cfg.model_overrides)), seed=0)
        with tempfile.TemporaryDirectory() as tmp:
            tr = Trainer(cfg, tmp, model, Toy(), dist_info=DistInfo(device=DEV), record_history=True)
            t0 = time.perf_counter()
            tr.fit()
            secs = time.perf_counter() - t0
            losses = [h["loss"] for h in tr.history if "loss" in h]
            ckpt = sorted(p.name for p in Path(tmp).iterdir())
        out[precision] = {"steps": steps, "first_loss": losses[0], "last_loss": losses[-1],
                          "param_device": str(next(model.parameters()).device), "seconds": secs, "files": ckpt,
                          "scaler_skips": tr.scaler_skips}
    out["failures"] = [f"{p}: loss {r['first_loss']:.3f} -> {r['last_loss']:.3f} did not fall"
                       for p, r in out.items() if not r["last_loss"] < r["first_loss"]]
    return out


def check_imagebind() -> dict:
    from visualsound.imagebind import ImageBindAV, ImageBindConfig

    model = ImageBindAV(ImageBindConfig.preset("tiny" if SMALL else "huge")).init_random_(0).eval().to(DEV)
    b = 2 if SMALL else 8
    video = torch.randn(b, 15, 3, 2, 224, 224, device=DEV)
    audio = torch.randn(b, 3, 1, 128, 204, device=DEV)
    out: dict = {"batch": b, "params": sum(p.numel() for p in model.parameters())}
    with torch.inference_mode():
        ref = model.score(video, audio)
        out["fp32_s_per_batch"] = timed(lambda: model.score(video, audio))
        with torch.autocast(DEV.type, dtype=torch.bfloat16):
            bf = model.score(video, audio)
            out["bf16_autocast_s_per_batch"] = timed(lambda: model.score(video, audio))
    out["fp32_clips_per_s"] = b / out["fp32_s_per_batch"]
    out["bf16_clips_per_s"] = b / out["bf16_autocast_s_per_batch"]
    out["bf16_vs_fp32_score_max_abs_diff"] = float((bf.float() - ref).abs().max())
    if DEV.type == "cuda":
        out["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 1024 ** 3
    return out


def check_synchformer() -> dict:
    from vaura.synchformer import Synchformer, SynchformerConfig, init_random_weights
    from vaura.synchformer import preprocess as P

    model = init_random_weights(Synchformer(SynchformerConfig.preset("tiny" if SMALL else "paper"))).eval().to(DEV)
    b = 2 if SMALL else 16
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (b, P.WINDOW_FRAMES, 224, 224, 3), dtype=torch.uint8, generator=g)
    video = P.video_for_sync(frames).to(DEV)
    audio = P.audio_for_sync(0.1 * torch.randn(b, P.WINDOW_SAMPLES, generator=g)).to(DEV)
    out: dict = {"batch_windows": b}
    with torch.inference_mode():
        ref = model(video, audio).logits
        out["fp32_s_per_batch"] = timed(lambda: model(video, audio))
        with torch.autocast(DEV.type, dtype=torch.bfloat16):
            bf = model(video, audio).logits
            out["bf16_autocast_s_per_batch"] = timed(lambda: model(video, audio))
    out["fp32_windows_per_s"] = b / out["fp32_s_per_batch"]
    out["bf16_windows_per_s"] = b / out["bf16_autocast_s_per_batch"]
    out["bf16_argmax_agreement"] = float((bf.float().argmax(-1) == ref.argmax(-1)).float().mean())
    return out


def check_score_cli() -> dict:
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        py = [sys.executable, "-c", "import sys; from visualsound.cli import main; sys.argv[0] = 'visualsound'; main()"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        subprocess.run([*py, "synth", "--out", str(t / "s"), "--count", "12", "--size", "96", "--duration", "3",
                        "--bad-clips"], check=True, env=env, capture_output=True, text=True)
        t0 = time.perf_counter()
        r = subprocess.run([*py, "score", "--csv", str(t / "s" / "synth.csv"), "--videos", str(t / "s" / "video"),
                            "--out", str(t / "scores"), "--device", str(DEV), "--debug-weights", "--workers", "2",
                            "--batch-size", "4"], env=env, capture_output=True, text=True)
        secs = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"score exited {r.returncode}: {r.stderr[-2000:]}")
        df = pd.concat([pd.read_parquet(p) for p in sorted((t / "scores").glob("*.parquet"))])
        n_csv = sum(1 for line in (t / "s" / "synth.csv").read_text().splitlines() if line.strip())
        unique = int(df.iloc[:, 0].nunique())
        return {"csv_rows": n_csv, "score_rows": len(df), "unique_ids": unique,
                "statuses": df["status"].value_counts().to_dict(), "seconds": secs,
                "stdout_tail": r.stdout[-400:],
                "failures": [] if n_csv == len(df) == unique else [f"{n_csv} clips but {len(df)} rows, {unique} ids"]}


def _synth_clips(folder: Path, durations: tuple[float, ...], per_duration: int) -> list[Path]:
    from visualsound.synth import SynthConfig, synthesize

    videos = []
    for i, d in enumerate(durations):
        sub = folder / f"d{i}"
        synthesize(sub, SynthConfig(count=per_duration, duration=d, width=96, height=64, test_fraction=0.0,
                                    prefix=f"d{i}x", seed=i))
        videos += sorted((sub / "video").glob("*.mp4"))
    return videos


def check_batch_determinism() -> dict:
    from vaura.generate import ClipRequest, generate_batch, random_pipeline
    from vaura.sampler import SamplingParams

    pipe = random_pipeline("tiny" if SMALL else "paper", DEV)
    n = 8 if SMALL else 64
    out: dict = {"clips": n, "size": "tiny" if SMALL else "paper", "failures": []}
    with tempfile.TemporaryDirectory() as tmp:
        videos = _synth_clips(Path(tmp), (2.0, 3.1, 5.0), -(-n // 3))[:n]
        requests = [ClipRequest(v, seeds=(i,), stream=v.stem) for i, v in enumerate(videos)]
        params = SamplingParams()  # the release's: CFG 6, top-k 128

        def run(reqs: list, batch_clips: int) -> list:
            res = list(generate_batch(reqs, pipe, params, batch_clips=batch_clips, decode_workers=4))
            bad = [r.error for r in res if r.error is not None]
            if bad:
                raise RuntimeError(f"generation failed: {bad[0]}")
            return [r.output for r in res]

        for dtype in ("fp32", "bf16"):
            pipe.set_dtype(dtype)
            t0 = time.perf_counter()
            batch = run(requests, n)
            r: dict = {"batch_seconds": time.perf_counter() - t0, "windows": sorted({len(b.windows) for b in batch})}
            rev = run(requests[::-1], n)[::-1]
            r["reverse_order_equal"] = all(torch.equal(a.audio, b.audio) and torch.equal(a.codes, b.codes)
                                           for a, b in zip(batch, rev))
            r["alone_padded_equal"], r["alone_batch1_codes_fraction_equal"] = {}, {}
            for t in (0, n // 2, n - 1):
                alone = run([requests[t]], n)[0]
                r["alone_padded_equal"][t] = bool(torch.equal(alone.audio, batch[t].audio)
                                                  and torch.equal(alone.codes, batch[t].codes))
                one = run([requests[t]], 1)[0]
                r["alone_batch1_codes_fraction_equal"][t] = float((one.codes == batch[t].codes).float().mean())
            out[dtype] = r
            out["failures"] += [f"{dtype}: clip {t} alone differs from its batch of {n}"
                                for t, ok in r["alone_padded_equal"].items() if not ok]
            if not r["reverse_order_equal"]:
                out["failures"].append(f"{dtype}: the batch in reverse order differs")
    return out


def _step_seconds(model: object, rows: int, dtype: torch.dtype, graph: bool, steps: int = 40) -> float:
    from vaura.model import KVCache
    from vaura.sampler import StaticStep

    cfg = model.cfg
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        vis = model.embed_visual(torch.randn(rows, 32, cfg.visual_dim, generator=g).to(DEV, dtype))
        step = StaticStep(model, vis, KVCache(cfg, rows, cfg.rope_len, DEV, dtype), graph=graph)
        tokens = torch.randint(0, cfg.card, (rows, cfg.n_codebooks, 1), generator=g).to(DEV)
        for i in range(5):
            step(tokens, i)
        sync()
        t0 = time.perf_counter()
        for i in range(steps):
            step(tokens, 5 + i)
        sync()
    return (time.perf_counter() - t0) / steps


def _top_kernels(model: object, rows: int, dtype: torch.dtype, steps: int = 3) -> dict:
    from torch.profiler import ProfilerActivity, profile

    from vaura.model import KVCache
    from vaura.sampler import StaticStep

    cfg = model.cfg
    with torch.no_grad():
        vis = model.embed_visual(torch.randn(rows, 32, cfg.visual_dim, device=DEV, dtype=dtype))
        step = StaticStep(model, vis, KVCache(cfg, rows, cfg.rope_len, DEV, dtype), graph=False)
        tokens = torch.zeros(rows, cfg.n_codebooks, 1, dtype=torch.long, device=DEV)
        step(tokens, 0)
        sync()
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEV.type == "cuda" else [])
        with profile(activities=acts) as prof:
            for i in range(steps):
                step(tokens, 1 + i)
            sync()
    key = "device_time_total" if DEV.type == "cuda" else "cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, key, 0) > 0]
    kernels = [e for e in events if DEV.type != "cuda" or str(e.device_type).endswith("CUDA")]
    kernels.sort(key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in kernels)
    return {"kernel_launches_per_step": sum(e.count for e in kernels) / steps,
            "kernel_us_per_step": total / steps,
            "top": [{"name": e.key[:120], "count_per_step": e.count / steps, "us_per_step": getattr(e, key) / steps}
                    for e in kernels[:12]]}


def check_dtype() -> dict:
    from tests.vaura_reduced import dtype_fidelity
    from vaura.config import VAuraConfig
    from vaura.model import build_model
    from visualsound.utils.dtypes import DTYPES

    out: dict = {"fixture": {}, "step_s": {}, "profile": {}}
    for name in ("fp32", "bf16", "fp16"):
        out["fixture"][name] = dtype_fidelity(DTYPES[name], DEV)
    if out["fixture"]["fp32"]["greedy_codes_fraction_equal"] != 1.0:
        out["failures"] = ["fp32 greedy codes differ from the fixture"]
    size = "tiny" if SMALL else "paper"
    for name in ("fp32", "bf16", "fp16"):
        model = build_model(VAuraConfig.preset(size), debug_weights=True).eval().to(DEV).cast(DTYPES[name])
        for rows in (2, 128):
            for graph in ((True, False) if DEV.type == "cuda" else (False,)):
                out["step_s"][f"{name}-rows{rows}-{'graph' if graph else 'eager'}"] = _step_seconds(
                    model, rows, DTYPES[name], graph)
        out["profile"][f"{name}-rows2-eager"] = _top_kernels(model, 2, DTYPES[name])
        del model
        if DEV.type == "cuda":
            torch.cuda.empty_cache()
    return out


CHECKS = {"sampler_parity": check_sampler_parity, "sampler_random": check_sampler_random, "train": check_train,
          "imagebind_huge": check_imagebind, "synchformer_paper": check_synchformer, "score_cli": check_score_cli,
          "batch_determinism": check_batch_determinism, "dtype": check_dtype}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--only", default=",".join(CHECKS), help="comma-separated checks")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="tiny ImageBind / Synchformer (dry runs)")
    ap.add_argument("--compile", action="store_true", help="sampler checks also with the torch.compile'd step")
    args = ap.parse_args()
    global DEV, SMALL, COMPILE
    DEV, SMALL, COMPILE = torch.device(args.device), args.small, args.compile
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32
    results: dict = {"gpu": torch.cuda.get_device_name(0) if DEV.type == "cuda" else None,
                     "torch": torch.__version__, "checks": {}}
    failed = []
    for name in args.only.split(","):
        t0 = time.perf_counter()
        try:
            res = CHECKS[name]()
            res = {"ok": not res.get("failures"), **res}
        except Exception as e:  # a diagnostics run: record the failure and go on to the next check
            res = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        if not res["ok"]:
            failed.append(name)
        res["check_seconds"] = time.perf_counter() - t0
        results["checks"][name] = res
        print(name, json.dumps(res, default=str)[:1500], flush=True)
        args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    if failed:
        print("FAILED:", ", ".join(failed), flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
