"""Cost of the bootstrap intervals (`benchmarks.bootstrap`) at the size of a full ``vggsound-test`` evaluation.

Usage::

    .venv/bin/python scripts/bench_bootstrap.py                     # 15,220 clips, what the README quotes
    .venv/bin/python scripts/bench_bootstrap.py --clips 2000 --timed-fd 5

Random features of the real sizes stand in for the caches (the cost does not depend on the values). The per-item
metrics of both protocols (av-benchmark: 4 metrics, one file per clip; vaura-paper: 3 metrics, 10 samples per
clip) are bootstrapped in full with their default count (1000 resamples). The set-level statistics are timed on a
few resamples each (``--timed`` / ``--timed-fd``) and extrapolated to their default count (100): IS over PANNs /
PaSST logits (527 classes, one row per clip), FD_VGG (128-d, 8 VGGish rows per 8 s clip and side), FD_PaSST
(768-d) and FD_PANNs (2048-d; one row per clip and side), and the vaura-paper FAD (128-d, 2 VGGish rows per 2.56 s
window, 10 samples per clip). Fréchet distances run with torch in float64 on ``--device`` (``--threads`` on the
CPU). The JSON (printed, and written to ``--out``; default ``docs/measurements/<date>-<device>-bench_bootstrap.json``)
holds seconds per resample and the extrapolated totals.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import bootstrap as bs  # noqa: E402


def _features(rng: np.random.Generator, units: list[str], rows_per_unit: int, dim: int, shift: float
              ) -> list[tuple[str, np.ndarray]]:
    """Rows with a full-rank covariance (a random low-rank part plus noise), float32 like the caches."""
    mix = rng.standard_normal((min(dim, 64), dim)) / 8
    out = []
    for u in units:
        z = rng.standard_normal((rows_per_unit, mix.shape[0]))
        out.append((u, (z @ mix + 0.3 * rng.standard_normal((rows_per_unit, dim)) + shift).astype(np.float32)))
    return out


def _time_set(stat: bs.Statistic, timed: int, default: int) -> dict[str, Any]:
    rng = bs.rng_for(0, stat.name)
    t0 = time.perf_counter()
    done = 0
    for counts in bs.resample_counts(rng, len(stat.units), timed):
        stat.evaluate(counts)
        done += counts.shape[0]
    per = (time.perf_counter() - t0) / done
    return {"units": len(stat.units), "timed_resamples": done, "seconds_per_resample": round(per, 4),
            "default_resamples": default, "extrapolated_seconds": round(per * default, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=15220)
    ap.add_argument("--timed", type=int, default=50, help="resamples timed for IS and the 128-d FDs")
    ap.add_argument("--timed-fd", type=int, default=3, help="resamples timed for FD_PaSST and FD_PANNs")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="cpu", help="where the Fréchet distances run (cpu, cuda)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    units = [f"clip{i:05d}" for i in range(args.clips)]
    report: dict[str, Any] = {"clips": args.clips, "defaults": {"resamples": bs.DEFAULT_RESAMPLES,
                                                                "set_resamples": bs.DEFAULT_SET_RESAMPLES},
                              "machine": {"python": platform.python_version(), "numpy": np.__version__,
                                          "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                                          "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg(),
                                          "processor": platform.processor() or platform.machine()},
                              "device": args.device, "date": dt.date.today().isoformat(), "stages": {}}
    stages = report["stages"]

    for name, samples, keys in (("per-item av-benchmark (4 metrics)", 1, ["KL-PANNS", "KL-PASST", "IB", "DeSync"]),
                                ("per-item vaura-paper (3 metrics, 10 samples per clip)", 10, ["kld", "ib", "sync"])):
        item_units = [u for u in units for _ in range(samples)]
        stats = [bs.MeanStatistic(k, rng.gamma(2.0, 1.0, len(item_units)), item_units) for k in keys]
        values = {s.key: bs.value_of(s)[s.key] for s in stats}
        t0 = time.perf_counter()
        bs.confidence_intervals(stats, values, bs.DEFAULT_RESAMPLES, 0)
        stages[name] = {"items": len(item_units), "resamples": bs.DEFAULT_RESAMPLES,
                        "seconds": round(time.perf_counter() - t0, 2)}
        print(name, stages[name], flush=True)

    def fd(key: str, gen_rows: int, ref_rows: int, dim: int) -> bs.FrechetStatistic:
        return bs.FrechetStatistic(key, _features(rng, units, gen_rows, dim, 0.1),
                                   _features(rng, units, ref_rows, dim, 0.0), args.device)

    n_set = bs.DEFAULT_SET_RESAMPLES
    sets = [
        ("IS (527 logits, one row per clip)", lambda: bs.InceptionStatistic(
            ("m", "s"), [(u, 3 * rng.standard_normal(527).astype(np.float32)) for u in units]), args.timed, n_set),
        ("FD_VGG (128-d, 8 rows per clip and side)", lambda: fd("FD-VGG", 8, 8, 128), args.timed, n_set),
        ("vaura-paper FAD (128-d, 2 rows per window, 10 samples per clip)", lambda: fd("fad", 20, 2, 128),
         args.timed, n_set),
        ("FD_PaSST (768-d, one row per clip and side)", lambda: fd("FD-PASST", 1, 1, 768), args.timed_fd, n_set),
        ("FD_PANNs (2048-d, one row per clip and side)", lambda: fd("FD-PANN", 1, 1, 2048), args.timed_fd, n_set),
    ]
    for name, build, timed, default in sets:
        t0 = time.perf_counter()
        stat = build()
        built = time.perf_counter() - t0
        stages[name] = {**_time_set(stat, timed, default), "build_seconds": round(built, 2)}
        print(name, stages[name], flush=True)
        del stat

    avb = ["per-item av-benchmark (4 metrics)", "IS (527 logits, one row per clip)", "FD_VGG (128-d, 8 rows per clip "
           "and side)", "FD_PaSST (768-d, one row per clip and side)", "FD_PANNs (2048-d, one row per clip and side)"]
    total = stages[avb[0]]["seconds"] + 2 * stages[avb[1]]["extrapolated_seconds"] + sum(
        stages[k]["extrapolated_seconds"] for k in avb[2:])
    report["av_benchmark_total_seconds"] = round(total, 1)
    vp = ["per-item vaura-paper (3 metrics, 10 samples per clip)",
          "vaura-paper FAD (128-d, 2 rows per window, 10 samples per clip)"]
    report["vaura_paper_total_seconds"] = round(stages[vp[0]]["seconds"] + stages[vp[1]]["extrapolated_seconds"], 1)
    report["load_average_at_end"] = os.getloadavg()
    text = json.dumps(report, indent=2)
    print(text)
    default = REPO / "docs" / "measurements" / f"{report['date']}-{args.device}-bench_bootstrap.json"
    out = Path(args.out) if args.out else default
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
