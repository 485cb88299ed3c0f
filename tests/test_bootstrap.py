"""The bootstrap over clips (`benchmarks.bootstrap`): coverage on known distributions, exact statistics under
resampling weights, the paired test's sign and symmetry, seeding, and the cost of a 15,220-clip table."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from benchmarks import bootstrap as bs
from benchmarks.protocols.avbench import formulas as fm


def _clustered(rng: np.random.Generator, clips: int, samples: int, rho: float) -> tuple[np.ndarray, list[str]]:
    """Per-item values of `clips` clips x `samples` samples: a clip effect (variance rho) plus skewed noise
    (exponential, variance 1 - rho); the population mean is 1."""
    effect = rng.normal(0.0, np.sqrt(rho), clips)
    noise = rng.exponential(np.sqrt(1 - rho), (clips, samples)) - np.sqrt(1 - rho)
    return (1.0 + effect[:, None] + noise).ravel(), [f"c{i}" for i in range(clips) for _ in range(samples)]


def test_grouped_percentile_interval_covers_the_mean_95_percent_of_the_time() -> None:
    """200 simulated data sets (40 clips x 3 samples, strongly correlated within a clip): the clip bootstrap's
    95 % interval holds the true mean close to 95 % of the time; resampling items instead ignores the clip effect
    and covers far less (the reason samples of one clip move together). Measured: 0.92 and 0.745."""
    rng = np.random.default_rng(17)
    hits_clip = hits_item = 0
    trials = 200
    for t in range(trials):
        values, units = _clustered(rng, 40, 3, rho=0.7)
        for stat_units, counter in ((units, "clip"), ([f"i{k}" for k in range(len(values))], "item")):
            ci = bs.confidence_intervals([bs.MeanStatistic("m", values, stat_units)], {"m": float(values.mean())},
                                         resamples=400, set_resamples=0, seed=t)["m"]
            inside = ci["lo"] <= 1.0 <= ci["hi"]
            hits_clip += inside and counter == "clip"
            hits_item += inside and counter == "item"
    assert 0.90 <= hits_clip / trials <= 0.985, hits_clip
    assert hits_item / trials < 0.86, hits_item


def test_normal_interval_of_a_frechet_distance_covers_its_mean(one_thread) -> None:
    """1-d Gaussians (generated N(0, 1), reference N(0.5, 1.2^2)), 150 clips each with one row per side: over 100
    data sets the normal interval with the default resample count (bootstrap sd of the clip-resampled FD) holds
    the FD's expectation close to 95 % of the time (the expectation, estimated from 4000 draws, is what the
    sampling variability is about; measured 0.93)."""
    rng = np.random.default_rng(5)
    n = 150

    def draw() -> tuple[np.ndarray, np.ndarray]:
        return rng.normal(0, 1, (n, 1)), rng.normal(0.5, 1.2, (n, 1))

    def fd(g: np.ndarray, r: np.ndarray) -> float:
        return float((g.mean() - r.mean()) ** 2 + (g.std(ddof=1) - r.std(ddof=1)) ** 2)

    expected = np.mean([fd(*draw()) for _ in range(4000)])
    hits, trials = 0, 100
    for t in range(trials):
        g, r = draw()
        units = [f"c{i}" for i in range(n)]
        stat = bs.FrechetStatistic("fd", list(zip(units, g)), list(zip(units, r)))
        value = bs.value_of(stat)["fd"]
        assert value == pytest.approx(fd(g, r), rel=1e-6)  # rows are kept in float32
        ci = bs.confidence_intervals([stat], {"fd": value}, 0, bs.DEFAULT_SET_RESAMPLES, seed=t)["fd"]
        hits += ci["lo"] <= expected <= ci["hi"]
        assert ci["method"] == "normal" and ci["lo"] + ci["hi"] == pytest.approx(2 * value)
    assert 0.88 <= hits / trials <= 0.99, hits


@pytest.mark.parametrize("rows, dim", [(30, 64), (300, 16)])  # the Gram form (rows < D) and the D x D form
def test_frechet_statistic_under_weights_is_the_formula_on_repeated_rows(rows: int, dim: int) -> None:
    rng = np.random.default_rng(rows)
    g = rng.standard_normal((rows, dim)).astype(np.float32)
    r = (1.3 * rng.standard_normal((rows + 7, dim)) + 0.2).astype(np.float32)
    gen = [(f"c{i // 2}", g[i]) for i in range(rows)]  # two generated rows per clip
    ref = [(f"c{i % (rows // 2)}", r[i]) for i in range(rows + 7)]
    stat = bs.FrechetStatistic("fd", gen, ref)
    assert bs.value_of(stat)["fd"] == pytest.approx(fm.frechet_distance(g, r), rel=1e-6)
    counts = rng.integers(0, 3, (2, len(stat.units))).astype(np.float64)
    for w in counts:
        weight = {u: int(k) for u, k in zip(stat.units, w)}
        rep_g = np.concatenate([np.repeat(x[None], weight[u], 0) for u, x in gen])
        rep_r = np.concatenate([np.repeat(x[None], weight[u], 0) for u, x in ref])
        got = stat.evaluate(w[None])[0, 0]
        assert got == pytest.approx(fm.frechet_distance(rep_g, rep_r), rel=1e-6), (rows, dim)


def test_trace_sqrt_product_with_a_singular_covariance() -> None:
    """A rank-deficient S1 with more rows than dimensions (one duplicated direction): the eigen factor replaces
    Cholesky and the trace still equals scipy's sqrtm."""
    import scipy.linalg

    rng = np.random.default_rng(0)
    a1 = rng.standard_normal((40, 8))
    a1[:, 3] = a1[:, 2]  # S1 is singular
    a2 = rng.standard_normal((50, 8))
    s1, s2 = a1.T @ a1, a2.T @ a2
    want = np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
    assert bs.trace_sqrt_product(a1, a2) == pytest.approx(want, rel=1e-6)
    assert bs.trace_sqrt_product(a1[:5], a2) == pytest.approx(np.trace(scipy.linalg.sqrtm(
        a1[:5].T @ a1[:5] @ s2)).real, rel=1e-5, abs=1e-6)


def test_inception_statistic_is_the_original_formula() -> None:
    rng = np.random.default_rng(3)
    logits = (3 * rng.standard_normal((57, 527))).astype(np.float32)
    stat = bs.InceptionStatistic(("m", "s"), [(f"u{i // 2}", logits[i]) for i in range(57)])
    want = fm.inception_score(torch.from_numpy(logits))
    assert tuple(bs.value_of(stat).values()) == pytest.approx(want, rel=1e-9)
    w = rng.integers(0, 3, len(stat.units)).astype(np.float64)
    weight = dict(zip(stat.units, w.astype(int)))
    rep = np.concatenate([np.repeat(logits[i:i + 1], weight[f"u{i // 2}"], 0) for i in range(57)])
    assert tuple(stat.evaluate(w[None])[0]) == pytest.approx(fm.inception_score(torch.from_numpy(rep)), rel=1e-9)
    few = bs.InceptionStatistic(("m", "s"), [(f"u{i}", logits[i]) for i in range(9)])  # < 10 splits: NaN
    assert np.isnan(bs.value_of(few)["m"])


def _pair(shift: float, seed: int = 0) -> tuple[bs.MeanStatistic, bs.MeanStatistic]:
    """A and B = A + shift + per-item noise whose overall mean is exactly zero."""
    rng = np.random.default_rng(seed)
    values, units = _clustered(rng, 60, 2, rho=0.5)
    noise = 0.1 * rng.standard_normal(values.shape)
    return bs.MeanStatistic("m", values, units), bs.MeanStatistic("m", values + shift + noise - noise.mean(), units)


def test_paired_difference_sign_and_symmetry() -> None:
    a, b = _pair(0.3)
    ab = bs.paired_differences([(a, b)], 2000, 0)["m"]
    ba = bs.paired_differences([(b, a)], 2000, 0)["m"]
    assert ab["diff"] > 0 and ab["lo"] > 0 and ab["p"] < 0.01  # B = A + 0.3: B - A is positive, significant
    assert ba["diff"] == pytest.approx(-ab["diff"]) and ba["p"] == ab["p"]
    assert (ba["lo"], ba["hi"]) == pytest.approx((-ab["hi"], -ab["lo"]))
    assert ab["a"] == ba["b"] and ab["units"] == 60 and ab["method"] == "percentile"
    same = bs.paired_differences([(a, a)], 500, 0)["m"]
    assert same["diff"] == 0 and same["lo"] == same["hi"] == 0 and same["p"] == 1.0
    none = bs.paired_differences([_pair(0.0, seed=1)], 2000, 0)["m"]
    assert none["diff"] == pytest.approx(0, abs=1e-12) and none["lo"] < 0 < none["hi"] and none["p"] > 0.5


def test_paired_frechet_difference_flips_with_the_sides(one_thread) -> None:
    rng = np.random.default_rng(2)
    units = [f"c{i}" for i in range(80)]
    ref = rng.standard_normal((80, 4))
    a = bs.FrechetStatistic("fd", list(zip(units, rng.standard_normal((80, 4)))), list(zip(units, ref)))
    b = bs.FrechetStatistic("fd", list(zip(units, rng.standard_normal((80, 4)) + 0.8)), list(zip(units, ref)))
    ab = bs.paired_differences([(a, b)], 0, 150)["fd"]
    ba = bs.paired_differences([(b, a)], 0, 150)["fd"]
    assert ab["diff"] > 0 and ab["lo"] > 0 and ab["p"] < 0.01 and ab["method"] == "normal"
    assert ba["diff"] == pytest.approx(-ab["diff"]) and ba["p"] == pytest.approx(ab["p"])
    assert (ba["lo"], ba["hi"]) == pytest.approx((-ab["hi"], -ab["lo"]))
    with pytest.raises(bs.BootstrapError, match="same units"):
        bs.paired_differences([(a, bs.FrechetStatistic("fd", list(zip(units[:5], ref)), list(zip(units[:5], ref))))],
                              0, 10)


def test_intervals_are_seeded_and_independent_of_other_metrics() -> None:
    values, units = _clustered(np.random.default_rng(0), 30, 1, rho=0.0)
    m = bs.MeanStatistic("m", values, units)
    k = bs.MeanStatistic("k", values[::-1].copy(), units)
    v = {"m": float(values.mean()), "k": float(values.mean())}
    alone = bs.confidence_intervals([m], v, 500, 0, seed=4)["m"]
    both = bs.confidence_intervals([k, m], v, 500, 0, seed=4)
    assert (alone["lo"], alone["hi"]) == (both["m"]["lo"], both["m"]["hi"])
    other = bs.confidence_intervals([m], v, 500, 0, seed=5)["m"]
    assert (other["lo"], other["hi"]) != (alone["lo"], alone["hi"])
    assert alone["resamples"] == 500 and alone["level"] == 0.95 and alone["lo"] < v["m"] < alone["hi"]


def test_undefined_resamples_are_counted_and_bad_inputs_refused() -> None:
    """Generated rows in units a, b and reference rows in c, d (unpaired files, GT clips without a partner): a
    resample that draws fewer than two reference units has no covariance; such resamples are counted, not
    silently mixed in."""
    rng = np.random.default_rng(1)
    stat = bs.FrechetStatistic("fd", list(zip("ab", rng.standard_normal((2, 2)))),
                               list(zip("cd", rng.standard_normal((2, 2)))))
    ci = bs.confidence_intervals([stat], {"fd": bs.value_of(stat)["fd"]}, 0, 300, seed=0)["fd"]
    assert 0 < ci["undefined_resamples"] < 300 and ci["lo"] <= ci["hi"]
    assert bs.confidence_intervals([stat], {"fd": None}, 100, 100) == {}  # a null metric gets no interval
    with pytest.raises(bs.BootstrapError, match="non-finite"):
        bs.MeanStatistic("m", [1.0, float("nan")], ["a", "b"])
    with pytest.raises(bs.BootstrapError, match="one unit per value"):
        bs.MeanStatistic("m", [1.0, 2.0], ["a"])


def test_per_item_bootstrap_of_15220_clips_takes_seconds() -> None:
    """The issue's size: a 15,220-clip per-item table with the four av-benchmark per-item metrics, the default
    resample count. Measured about 1 s on the 2-core CI machine; the bound is generous."""
    rng = np.random.default_rng(0)
    units = [f"clip{i:05d}" for i in range(15220)]
    stats = [bs.MeanStatistic(k, rng.gamma(2.0, 1.0, len(units)), units) for k in "abcd"]
    values = {s.key: float(bs.value_of(s)[s.key]) for s in stats}
    t0 = time.perf_counter()
    ci = bs.confidence_intervals(stats, values, bs.DEFAULT_RESAMPLES, bs.DEFAULT_SET_RESAMPLES)
    seconds = time.perf_counter() - t0
    assert set(ci) == set("abcd") and all(c["resamples"] == bs.DEFAULT_RESAMPLES for c in ci.values())
    assert seconds < 20, seconds
