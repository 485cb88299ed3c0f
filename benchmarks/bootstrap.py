"""Bootstrap confidence intervals over clips and paired bootstrap comparisons (issue 17).

**The resampling unit is the clip.** A resample draws as many units as there are, with replacement (seeded), and
recomputes each metric on the drawn units; everything that belongs to one unit moves together: the several
generated samples of one clip (vaura-paper), a clip's generated and ground-truth rows of a Fréchet distance, a
clip's VGGish frames. A generated file that pairs with no clip is a unit of its own (``item:<name>``), and so is a
ground-truth clip without a generated partner where a metric uses it (av-benchmark's FD-PANN uses all files).
A resample is represented by its count vector ``W [B, U]`` (how often each of the ``U`` units was drawn).

Statistics (each yields one or more metric keys from ``W``):

* `MeanStatistic` -- a per-item metric (KL per pair, IB, Sync / DeSync per item): the mean of the item values,
  ``sum_u W_u S_u / sum_u W_u n_u`` with ``S_u`` / ``n_u`` the sum and number of unit ``u``'s values, so a
  resample costs one product ``W @ S`` (vectorised over resamples). Interval: **percentile** (the 2.5 % and
  97.5 % quantiles of the replicates).
* `FrechetStatistic` -- a Fréchet distance (FAD, FD_*) between generated and reference rows: each resample
  recomputes the weighted means and covariances (a row drawn k times has weight k, exactly ``np.cov`` of the
  repeated rows) and ``tr sqrtm(S1 S2)`` as ``sum sqrt(eig(L^T S2 L))`` with ``S1 = L L^T`` (Cholesky; an
  eigendecomposition when ``S1`` is singular) -- one symmetric ``D x D`` eigenvalue problem instead of a general
  ``sqrtm``; with fewer rows ``m`` than dimensions the ``m x m`` Gram form is used instead. Interval: **normal**.
* `InceptionStatistic` -- IS mean and std over the original's 10 splits after its ``RandomState(2020)`` shuffle of
  the resampled rows (softmax and entropies precomputed once; a split's class mean is a counts-matrix product).
  Interval: **normal**.

Resample counts: `DEFAULT_RESAMPLES` (1000) for per-item metrics, whose percentile intervals need many and cost
one product each; `DEFAULT_SET_RESAMPLES` (100) for the set-level statistics, whose normal intervals need only a
standard deviation (100 resamples estimate it within about 7 %) and which cost up to seconds each (README: cost
table, ``scripts/bench_bootstrap.py``).

Interval methods: ``percentile`` for means (unbiased, cheap, so many resamples are affordable); ``normal`` --
``value ± z * sd(replicates)``, centred on the reported value -- for set statistics, whose replicates are biased
by resampling itself (a resample holds ~63 % distinct clips: an FD rises, an IS falls; a percentile interval
would sit beside the reported value) and which afford fewer resamples (an FD over 2048-d PANNs features costs a
2048 x 2048 eigenvalue problem per resample). The interval describes the clip-sampling variability of the
reported number; an FD's finite-sample bias is not corrected (it is shared by every model on the same clips).

Paired comparison (`paired_differences`): the same ``W`` over the clips both results have is applied to both
sides, the replicate difference is ``B(W) - A(W)``; the interval is the method's interval of the differences,
the two-sided p-value its inversion: percentile -- ``min(1, 2 (1 + min(#{d <= 0}, #{d >= 0})) / (B + 1))``;
normal -- ``2 (1 - Phi(|d| / sd))``. Swapping A and B negates every replicate, so the difference flips sign and
the p-value is unchanged. Random streams are seeded by ``(seed, crc32(statistic name))``: a metric's interval
does not depend on which other metrics ran.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Protocol

import numpy as np
import torch

from visualsound.errors import ToolkitError

log = logging.getLogger(__name__)

LEVEL = 0.95
DEFAULT_RESAMPLES = 1000  # per-item metrics (percentile intervals)
DEFAULT_SET_RESAMPLES = 100  # set-level metrics: FAD / FD_* (a D x D eigenvalue problem each) and IS (normal)
PERCENTILE = "percentile"
NORMAL = "normal"
IS_SPLITS = 10
IS_SEED = 2020
_MAX_CHUNK_CELLS = 1 << 22  # W chunks of at most 4 M counts (32 MB as float64)


class BootstrapError(ToolkitError):
    """Bootstrap inputs are malformed (no items, non-finite values, mismatched lengths)."""


class Statistic(Protocol):
    """What the resampler needs from a statistic: the metric keys it yields, its units (sorted), its interval
    method, whether it is a set-level statistic (``kind == "set"``: the smaller resample count) and
    ``evaluate``."""

    name: str
    keys: tuple[str, ...]
    units: list[str]
    method: str
    kind: str

    def evaluate(self, counts: np.ndarray) -> np.ndarray: ...


# ------------------------------------------------------------------------------------------------ resampling
def rng_for(seed: int, name: str) -> np.random.Generator:
    """The random stream of one statistic: seeded by ``(seed, crc32(name))``."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def resample_counts(rng: np.random.Generator, n_units: int, resamples: int) -> Iterator[np.ndarray]:
    """Chunks of count vectors ``[b, n_units]`` (float64), `resamples` rows in all: each row counts how often each
    unit was drawn in ``n_units`` draws with replacement."""
    if n_units < 1:
        raise BootstrapError("cannot resample an empty set of units")
    chunk = max(1, min(256, _MAX_CHUNK_CELLS // n_units))
    done = 0
    while done < resamples:
        b = min(chunk, resamples - done)
        idx = rng.integers(0, n_units, size=(b, n_units))
        flat = (idx + np.arange(b)[:, None] * n_units).ravel()
        yield np.bincount(flat, minlength=b * n_units).reshape(b, n_units).astype(np.float64)
        done += b


def _unit_index(units: Sequence[str]) -> tuple[list[str], np.ndarray]:
    names = sorted(set(units))
    pos = {u: i for i, u in enumerate(names)}
    return names, np.fromiter((pos[u] for u in units), dtype=np.int64, count=len(units))


def _ones(stat: Statistic) -> np.ndarray:
    return np.ones((1, len(stat.units)))


def value_of(stat: Statistic) -> dict[str, float]:
    """The statistic on the data itself (every unit once): the metric values."""
    return dict(zip(stat.keys, stat.evaluate(_ones(stat))[0].tolist()))


# ------------------------------------------------------------------------------------------------ statistics
class MeanStatistic:
    """Mean of per-item values ``[N]`` with one unit per item (see the module docstring)."""

    method = PERCENTILE
    kind = "item"

    def __init__(self, key: str, values: Sequence[float] | np.ndarray, units: Sequence[str]) -> None:
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 1 or v.shape[0] == 0 or v.shape[0] != len(units):
            raise BootstrapError(f"{key}: expected values [N] with N > 0 and one unit per value; got values "
                                 f"{v.shape} and {len(units)} units")
        if not np.isfinite(v).all():
            raise BootstrapError(f"{key}: {int((~np.isfinite(v)).sum())} non-finite per-item values")
        self.name = self.key = key
        self.keys = (key,)
        self.units, idx = _unit_index(units)
        self.sums = np.bincount(idx, weights=v, minlength=len(self.units))
        self.counts = np.bincount(idx, minlength=len(self.units)).astype(np.float64)

    def evaluate(self, counts: np.ndarray) -> np.ndarray:
        """``[B, U]`` counts -> ``[B, 1]`` means."""
        return ((counts @ self.sums) / (counts @ self.counts))[:, None]

    def restrict(self, units: Sequence[str]) -> MeanStatistic:
        """The same statistic on a subset of its units (in the given order's sorted form)."""
        keep = set(units)
        out = object.__new__(MeanStatistic)
        out.name, out.key, out.keys = self.name, self.key, self.keys
        sel = [i for i, u in enumerate(self.units) if u in keep]
        out.units = [self.units[i] for i in sel]
        out.sums, out.counts = self.sums[sel], self.counts[sel]
        return out


def stack_rows(entries: Sequence[tuple[str, Any]], what: str) -> tuple[list[str], np.ndarray]:
    """``[(unit, rows [n, D] or [D])]`` -> (row units, float64 rows ``[N, D]``)."""
    units: list[str] = []
    blocks = []
    for unit, rows in entries:
        arr = np.asarray(rows.detach().cpu().numpy() if hasattr(rows, "detach") else rows, dtype=np.float64)
        arr = arr[None] if arr.ndim == 1 else arr
        if arr.ndim != 2:
            raise BootstrapError(f"{what}: unit {unit!r} has rows of shape {arr.shape}, expected [n, D]")
        units += [unit] * arr.shape[0]
        blocks.append(arr)
    if not blocks:
        raise BootstrapError(f"{what}: no rows")
    out = np.concatenate(blocks)
    if not np.isfinite(out).all():
        raise BootstrapError(f"{what}: non-finite features")
    return units, out


class _WeightedSet:
    """One side of a Fréchet distance on `device`: rows centred at their mean, kept in float32 (as the caches
    hold them), with each row's unit index; moments are computed in float64."""

    def __init__(self, rows: np.ndarray, unit_idx: np.ndarray, device: str) -> None:
        center = rows.mean(axis=0)
        self.center = torch.from_numpy(center).to(device)
        self.rows = torch.from_numpy((rows - center).astype(np.float32)).to(device)
        self.unit_idx = torch.from_numpy(unit_idx).to(device)

    def moments(self, w: torch.Tensor, factor: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """``(mean [D], A, S)`` of the rows weighted by `w` ``[N]`` (a row's unit count): with `factor` the
        factor ``A [m, D]`` of the covariance (``S = A^T A``; S not formed), else the covariance ``S [D, D]``
        itself (A None) -- both equal ``np.cov`` of the rows repeated by their weights. None with fewer than 2
        rows drawn."""
        n = float(w.sum())
        if n < 2:
            return None
        nz = w > 0
        x = self.rows[nz].double()
        wn = w[nz]
        mean = (wn @ x) / n
        if factor:
            x -= mean
            x *= torch.sqrt(wn / (n - 1.0))[:, None]
            return self.center + mean, x, None
        cov = (x.T @ (x * wn[:, None]) - n * torch.outer(mean, mean)) / (n - 1.0)  # rows are centred already
        return self.center + mean, None, cov


def _as_tensor(a: np.ndarray | torch.Tensor) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a, dtype=np.float64))


def trace_sqrt_product(a1: np.ndarray | torch.Tensor, a2: np.ndarray | torch.Tensor) -> float:
    """``tr sqrtm(S1 S2)`` for ``S1 = a1^T a1``, ``S2 = a2^T a2`` given by factors ``[m1, D]``, ``[m2, D]``
    (float64): the sum of the square roots of the (real, non-negative) eigenvalues of ``S1 S2``, from the
    ``m x m`` form ``(a1 a2^T)(a1 a2^T)^T`` when a side has fewer rows than dimensions, else from the
    covariances (`trace_sqrt_product_cov`)."""
    a1, a2 = _as_tensor(a1), _as_tensor(a2)
    m1, d = a1.shape
    m2 = a2.shape[0]
    if min(m1, m2) >= d:
        return trace_sqrt_product_cov(a1.T @ a1, a2.T @ a2)
    g = a1 @ a2.T  # [m1, m2]: eig(S1 S2) \ {0} = eig(a1 S2 a1^T) = sigma^2(a1 a2^T)
    ev = torch.linalg.eigvalsh(g @ g.T if m1 <= m2 else g.T @ g)
    return float(torch.sqrt(ev.clamp(min=0.0)).sum())


def trace_sqrt_product_cov(s1: torch.Tensor, s2: torch.Tensor) -> float:
    """``tr sqrtm(S1 S2)`` of covariances ``[D, D]``: ``sum sqrt(eig(L^T S2 L))`` with ``S1 = L L^T`` (Cholesky;
    an eigendecomposition when ``S1`` is singular) -- one symmetric eigenvalue problem."""
    lower, info = torch.linalg.cholesky_ex(s1)
    if int(info) != 0:  # singular S1: any factor S1 = L L^T will do
        e, v = torch.linalg.eigh(s1)
        lower = v * torch.sqrt(e.clamp(min=0.0))
    ev = torch.linalg.eigvalsh(lower.T @ s2 @ lower)
    return float(torch.sqrt(ev.clamp(min=0.0)).sum())


def frechet_from_moments(mu1: torch.Tensor, a1: torch.Tensor, mu2: torch.Tensor, a2: torch.Tensor) -> float:
    """``|mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrtm(S1 S2)`` with covariances given by factors (see above)."""
    diff = mu1 - mu2
    return float(diff @ diff + (a1 * a1).sum() + (a2 * a2).sum()) - 2.0 * trace_sqrt_product(a1, a2)


def frechet_from_covariances(mu1: torch.Tensor, s1: torch.Tensor, mu2: torch.Tensor, s2: torch.Tensor) -> float:
    """The same from covariance matrices ``[D, D]``."""
    diff = mu1 - mu2
    return float(diff @ diff + torch.trace(s1) + torch.trace(s2)) - 2.0 * trace_sqrt_product_cov(s1, s2)


class FrechetStatistic:
    """A Fréchet distance between generated and reference rows, each row tagged with its unit; computed with
    torch in float64 on `device` (a GPU makes the D x D eigenvalue problems of 2048-d features cheap)."""

    method = NORMAL
    kind = "set"

    def __init__(self, key: str, generated: Sequence[tuple[str, Any]], reference: Sequence[tuple[str, Any]],
                 device: str = "cpu") -> None:
        self.name = self.key = key
        self.keys = (key,)
        gen_units, gen = stack_rows(generated, f"{key} generated")
        ref_units, ref = stack_rows(reference, f"{key} reference")
        if gen.shape[1] != ref.shape[1]:
            raise BootstrapError(f"{key}: feature sizes differ, generated {gen.shape}, reference {ref.shape}")
        self.units, idx = _unit_index(gen_units + ref_units)
        self.device = device
        self.sides = (_WeightedSet(gen, idx[:len(gen_units)], device),
                      _WeightedSet(ref, idx[len(gen_units):], device))

    @torch.no_grad()
    def spread(self) -> float:
        """``tr S_generated + tr S_reference`` on the data itself (every unit once): the size of what the
        distance cancels, the scale of its rounding."""
        return sum(float(torch.linalg.vector_norm(s.rows)) ** 2 / max(s.rows.shape[0] - 1, 1) for s in self.sides)

    @torch.no_grad()
    def evaluate(self, counts: np.ndarray) -> np.ndarray:
        out = np.full((counts.shape[0], 1), np.nan)
        weights = torch.from_numpy(counts).to(self.device)
        dim = self.sides[0].rows.shape[1]
        for b in range(counts.shape[0]):
            w1, w2 = (weights[b][side.unit_idx] for side in self.sides)
            factor = min(int((w1 > 0).sum()), int((w2 > 0).sum())) < dim  # the m x m form is the smaller one
            m1, m2 = self.sides[0].moments(w1, factor), self.sides[1].moments(w2, factor)
            if m1 is None or m2 is None:
                continue
            out[b, 0] = (frechet_from_moments(m1[0], m1[1], m2[0], m2[1]) if factor
                         else frechet_from_covariances(m1[0], m1[2], m2[0], m2[2]))
        return out


class InceptionStatistic:
    """Inception score (mean, std over the splits) of generated logits, one row per item, tagged with units."""

    method = NORMAL
    kind = "set"

    def __init__(self, keys: tuple[str, str], logits: Sequence[tuple[str, Any]], splits: int = IS_SPLITS) -> None:
        self.name = keys[0]
        self.keys = tuple(keys)
        units, x = stack_rows(logits, f"{keys[0]} logits")
        self.units, self.unit_idx = _unit_index(units)
        x = x - x.max(axis=1, keepdims=True)
        log_p = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
        self.p = np.exp(log_p)
        self.h = (self.p * log_p).sum(axis=1)  # sum_c p log p per row
        self.splits = splits
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, n: int) -> np.ndarray:
        if n not in self._perms:
            self._perms[n] = np.random.RandomState(IS_SEED).permutation(n)
        return self._perms[n]

    def evaluate(self, counts: np.ndarray) -> np.ndarray:
        out = np.full((counts.shape[0], 2), np.nan)
        n_rows, k = self.p.shape[0], self.splits
        for b, w in enumerate(counts):
            reps = w[self.unit_idx].astype(np.int64)
            rows = np.repeat(np.arange(n_rows), reps)[self._perm(int(reps.sum()))]
            n = rows.shape[0]
            split = np.repeat(np.arange(k), [(i + 1) * n // k - i * n // k for i in range(k)])
            cnt = np.bincount(split * n_rows + rows, minlength=k * n_rows).reshape(k, n_rows).astype(np.float64)
            size = cnt.sum(axis=1)
            if (size == 0).any():  # the original's NaN (empty splits)
                continue
            pbar = (cnt @ self.p) / size[:, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                plogp = np.where(pbar > 0, pbar * np.log(pbar), 0.0).sum(axis=1)
            scores = np.exp((cnt @ self.h) / size - plogp)
            out[b] = scores.mean(), scores.std()
        return out


@dataclass
class SetInput:
    """The inputs of a set-level statistic before it is built: ``kind`` ``"fd"`` (`FrechetStatistic`, one key)
    or ``"is"`` (`InceptionStatistic`, keys ``(mean, std)``), and ``[(unit, rows)]`` of the generated side and
    (FD) the reference side, in the order the metric's formula takes them (IS shuffles by position) and with
    every row it takes (a reference clip paired with two generated files is there twice, as in the formula).
    Kept as references to the features, so building (stacking) happens only when an interval is computed.
    ``rule`` says in words which rows the metric takes (`vbench compare` quotes it); `units` / `restrict` serve
    `vbench compare`."""

    kind: str
    keys: tuple[str, ...]
    generated: list[tuple[str, Any]] = field(default_factory=list)
    reference: list[tuple[str, Any]] = field(default_factory=list)
    rule: str = ""

    @property
    def name(self) -> str:
        return self.keys[0]

    def units(self) -> set[str]:
        """Every unit with a row on either side (a unit with reference rows only, e.g. a ground-truth clip
        without a generated file in a metric that uses every file, counts: the formula takes its rows)."""
        return {u for u, _ in self.generated} | {u for u, _ in self.reference}

    def restrict(self, units: set[str]) -> SetInput:
        """The rows of `units` only, in the same order."""
        return SetInput(self.kind, self.keys, [e for e in self.generated if e[0] in units],
                        [e for e in self.reference if e[0] in units], self.rule)

    def statistic(self, device: str = "cpu") -> Statistic:
        """The statistic (an FD computes on `device`)."""
        if self.kind == "fd":
            return FrechetStatistic(self.keys[0], self.generated, self.reference, device)
        if self.kind == "is":
            return InceptionStatistic((self.keys[0], self.keys[1]), self.generated)
        raise BootstrapError(f"unknown set statistic kind {self.kind!r}")


# ------------------------------------------------------------------------------------------------ intervals
def _z(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + level / 2)


def _replicates(stats: Sequence[Statistic], resamples: int, seed: int) -> np.ndarray:
    """``[resamples, len(stats), K]``: every statistic evaluated on the same count vectors (paired)."""
    first = stats[0]
    chunks = [np.stack([s.evaluate(counts) for s in stats], axis=1)
              for counts in resample_counts(rng_for(seed, first.name), len(first.units), resamples)]
    return np.concatenate(chunks)


def interval(replicates: np.ndarray, value: float, method: str, level: float = LEVEL) -> tuple[float, float]:
    """``(lo, hi)`` of finite `replicates` ``[B]``: percentile quantiles, or ``value ± z sd`` (normal)."""
    r = replicates[np.isfinite(replicates)]
    if r.size < 2:
        raise BootstrapError(f"only {r.size} finite bootstrap replicates")
    if method == PERCENTILE:
        lo, hi = np.quantile(r, [(1 - level) / 2, (1 + level) / 2])
        return float(lo), float(hi)
    if method == NORMAL:
        half = _z(level) * float(r.std(ddof=1))
        return value - half, value + half
    raise BootstrapError(f"unknown interval method {method!r}")


def p_value(replicates: np.ndarray, observed: float, method: str) -> float:
    """Two-sided p-value of "no difference" from difference replicates (see the module docstring)."""
    r = replicates[np.isfinite(replicates)]
    if method == PERCENTILE:
        below, above = int((r <= 0).sum()), int((r >= 0).sum())
        return float(min(1.0, 2.0 * (1 + min(below, above)) / (r.size + 1)))
    sd = float(r.std(ddof=1))
    if sd == 0.0:
        return 1.0 if observed == 0.0 else 0.0
    return float(2.0 * (1.0 - NormalDist().cdf(abs(observed) / sd)))


def _count(stat: Statistic | SetInput, resamples: int, set_resamples: int) -> int:
    return resamples if stat.kind == "item" else set_resamples


def confidence_intervals(stats: Sequence[Statistic | SetInput], values: Mapping[str, float | None], resamples: int,
                         set_resamples: int, seed: int = 0, level: float = LEVEL, device: str = "cpu"
                         ) -> dict[str, dict[str, Any]]:
    """``{metric key: {"lo", "hi", "level", "resamples", "method", "unit", "seconds"}}`` for every statistic
    whose metric has a value (a `SetInput` is built only then, one at a time); the normal method centres on
    ``values[key]`` (the reported value). A statistic with fewer than two finite replicates gets no interval
    (logged); fewer finite replicates than drawn are recorded as ``"undefined_resamples"``."""
    out: dict[str, dict[str, Any]] = {}
    for item in stats:
        n = _count(item, resamples, set_resamples)
        keys = [k for k in item.keys if values.get(k) is not None]
        if n <= 0 or not keys:
            continue
        stat = item.statistic(device) if isinstance(item, SetInput) else item
        t0 = time.perf_counter()
        reps = _replicates([stat], n, seed)[:, 0, :]
        seconds = round(time.perf_counter() - t0, 3)
        for j, key in enumerate(stat.keys):
            if key not in keys:
                continue
            try:
                lo, hi = interval(reps[:, j], float(values[key]), stat.method, level)
            except BootstrapError as e:
                log.warning("%s: no confidence interval: %s", key, e)
                continue
            entry = {"lo": lo, "hi": hi, "level": level, "resamples": n, "method": stat.method,
                     "unit": "clip", "seconds": seconds}
            bad = int((~np.isfinite(reps[:, j])).sum())
            if bad:
                entry["undefined_resamples"] = bad
            out[key] = entry
        log.info("bootstrap %s: %d resamples over %d units in %.2f s", stat.name, n, len(stat.units), seconds)
    return out


def paired_differences(pairs: Sequence[tuple[Statistic, Statistic]], resamples: int, set_resamples: int,
                       seed: int = 0, level: float = LEVEL) -> dict[str, dict[str, Any]]:
    """For each ``(A statistic, B statistic)`` over the same units: ``{metric key: {"a", "b", "diff", "lo", "hi",
    "p", "level", "resamples", "method", "units"}}`` with ``diff = b - a`` on these units and its bootstrap
    interval and p-value (same count vectors for both sides)."""
    out: dict[str, dict[str, Any]] = {}
    for sa, sb in pairs:
        if sa.units != sb.units or sa.keys != sb.keys:
            raise BootstrapError(f"{sa.name}: paired statistics need the same units and keys "
                                 f"({len(sa.units)} vs {len(sb.units)} units)")
        n = _count(sa, resamples, set_resamples)
        a, b = value_of(sa), value_of(sb)
        reps = _replicates([sa, sb], n, seed) if n > 0 else np.empty((0, 2, len(sa.keys)))
        for j, key in enumerate(sa.keys):
            diff = b[key] - a[key]
            entry: dict[str, Any] = {"a": a[key], "b": b[key], "diff": diff, "lo": None, "hi": None, "p": None,
                                     "level": level, "resamples": n, "method": sa.method, "units": len(sa.units)}
            if not (math.isfinite(a[key]) and math.isfinite(b[key])):
                entry["note"] = "undefined on the common clips"
            elif n > 0:
                d = reps[:, 1, j] - reps[:, 0, j]
                try:
                    entry["lo"], entry["hi"] = interval(d, diff, sa.method, level)
                    entry["p"] = p_value(d, diff, sa.method)
                except BootstrapError as e:
                    entry["note"] = str(e)
            out[key] = entry
    return out
