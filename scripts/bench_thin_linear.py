"""Micro-benchmark: thin fp32 products ``x [M, K] @ W^T`` over the paper-size transformer's block weights.

Times, in one process and with the same random weights (24 layers x wqkv, wo, w1, w3, w2 = 2.7 GB fp32), one
pass over all matrices for each row count M with

* ``thin``: the thin-linear AVX2 kernel (`vaura.thin_linear`);
* ``linear``: `torch.nn.functional.linear` (MKL ``sgemm``);
* ``packed``: oneDNN on weights reordered once (`vaura.packed`'s op);
* ``read``: ``torch.sum`` of every matrix, a reference for how fast the weights can be read at all.

and reports seconds per pass and GB/s of weights. Each method runs once untimed, then ``--repeats`` times.

    .venv/bin/python scripts/bench_thin_linear.py --rows 1,2,4,20,32,64 --threads 1 --out bench_thin_linear.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as the vaura CLI

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vaura.config import VAuraConfig  # noqa: E402
from vaura.packed import packing_available  # noqa: E402
from vaura.thin_linear import kernel_status, thin_linear  # noqa: E402


def block_weights(cfg: VAuraConfig) -> list[torch.Tensor]:
    d, h = cfg.d_model, cfg.ffn_hidden
    shapes = [(3 * d, d), (d, d), (h, d), (h, d), (d, h)]
    g = torch.Generator().manual_seed(0)
    return [torch.randn(n, k, generator=g) * 0.02 for _ in range(cfg.n_layer) for n, k in shapes]


def timed(fn, repeats: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="paper", help="VAuraConfig preset whose block weights are used")
    ap.add_argument("--rows", default="1,2,4,20,32,64", help="comma-separated row counts M")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ok, why = kernel_status()
    if not ok:
        raise SystemExit(f"the thin-linear kernel is unavailable: {why}")
    cfg = VAuraConfig.preset(args.size)
    weights = block_weights(cfg)
    nbytes = sum(w.numel() * w.element_size() for w in weights)
    packed = ([torch.ops.mkldnn._reorder_linear_weight(w, 2) for w in weights] if packing_available() else None)
    results: dict = {"size": args.size, "weights_gb": nbytes / 1e9, "threads": torch.get_num_threads(),
                     "torch": torch.__version__, "rows": {}}
    read_s = timed(lambda: [w.sum() for w in weights], args.repeats)
    results["read_s"], results["read_gb_per_s"] = read_s, nbytes / read_s / 1e9
    print(f"read: {read_s * 1e3:.1f} ms per pass, {nbytes / read_s / 1e9:.1f} GB/s", flush=True)
    with torch.no_grad():
        for m in (int(r) for r in args.rows.split(",")):
            xs = {k: torch.randn(m, k) for k in {w.shape[1] for w in weights}}
            methods = {"thin": lambda xs=xs: [thin_linear(xs[w.shape[1]], w) for w in weights],
                       "linear": lambda xs=xs: [F.linear(xs[w.shape[1]], w) for w in weights]}
            if packed is not None:
                methods["packed"] = lambda xs=xs: [
                    torch.ops.mkldnn._linear_pointwise(xs[w.shape[1]], p, None, "none", [], "")
                    for w, p in zip(weights, packed)]
            row: dict = {}
            for name, fn in methods.items():
                secs = timed(fn, args.repeats)
                row[name] = {"s": secs, "gb_per_s": nbytes / secs / 1e9}
            row["thin_vs_linear"] = row["linear"]["s"] / row["thin"]["s"]
            if "packed" in row:
                row["thin_vs_packed"] = row["packed"]["s"] / row["thin"]["s"]
            results["rows"][str(m)] = row
            print(f"M={m}: " + ", ".join(f"{n} {r['s'] * 1e3:.1f} ms ({r['gb_per_s']:.1f} GB/s)"
                                          for n, r in row.items() if isinstance(r, dict))
                  + f"; thin vs linear {row['thin_vs_linear']:.2f}x", flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
