"""Why `vbench compare` gives no verdict below 30 common clips (`benchmarks.compare.MIN_VERDICT_CLIPS`).

Usage::

    .venv/bin/python scripts/sim_compare_min_clips.py                 # what the compare docstring and README quote
    .venv/bin/python scripts/sim_compare_min_clips.py --sizes 3 5 8 --datasets 2000

For each number of clips, seeded data sets of per-clip differences B - A with a true mean of zero (normal, and a
skewed centred gamma(2)) are drawn; each gets the paired percentile bootstrap of `vbench compare` (the toolkit's
own `benchmarks.bootstrap.interval` and `p_value` on `--resamples` resampled means). Printed per size: how often
the nominal 95 % interval covers the true difference, and how often the verdict would wrongly say "better"
(p < 0.05 although the models are equal; nominal 5 %).
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.bootstrap import PERCENTILE, interval, p_value


def simulate(n: int, dist: str, datasets: int, resamples: int, rng: np.random.Generator) -> tuple[float, float]:
    covered = wrong = 0
    for _ in range(datasets):
        d = rng.normal(0.0, 1.0, n) if dist == "normal" else rng.gamma(2.0, 1.0, n) - 2.0
        reps = d[rng.integers(0, n, (resamples, n))].mean(axis=1)
        lo, hi = interval(reps, float(d.mean()), PERCENTILE)
        covered += lo <= 0.0 <= hi
        wrong += p_value(reps, float(d.mean()), PERCENTILE) < 0.05
    return covered / datasets, wrong / datasets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[3, 5, 10, 20, 30, 50])
    ap.add_argument("--datasets", type=int, default=1000, help="Data sets per size and distribution.")
    ap.add_argument("--resamples", type=int, default=1000, help="Bootstrap resamples (vbench compare's default).")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    print("clips  distribution  95% interval covers  'better' with no difference")
    for n in args.sizes:
        for dist in ("normal", "gamma"):
            cover, wrong = simulate(n, dist, args.datasets, args.resamples, rng)
            print(f"{n:5d}  {dist:12s}  {100 * cover:18.1f}%  {100 * wrong:26.1f}%")


if __name__ == "__main__":
    main()
