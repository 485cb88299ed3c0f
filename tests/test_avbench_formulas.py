"""av-benchmark formulas and pairing rules against the original's caches and metrics (fixture ``avbench``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmarks.protocols.avbench import formulas as fm
from benchmarks.protocols.avbench.pairing import clean_sample_name, pair
from tests import avbench_fixture as fx


def _close(value: float, expected: float, rtol: float, atol: float) -> None:
    assert abs(value - expected) <= atol + rtol * abs(expected), (value, expected, abs(value - expected))


@pytest.fixture(scope="module")
def exp() -> dict:
    return fx.expected()


# ------------------------------------------------------------------------------------------------ pairing
def test_clean_sample_name_rules(exp: dict) -> None:
    for name, cleaned in exp["details"]["clean_sample_name"].items():
        assert clean_sample_name(name) == cleaned, name
    assert clean_sample_name("Y---g-f_I2yQ_000001_0") == "---g-f_I2yQ_000001"  # 21 chars: the leading Y is lost
    assert clean_sample_name("x" * 10 + "zxpo56cpUBU_000007" + "yy") == "zxpo56cpUBU_000007"  # 30 chars
    assert clean_sample_name("a" * 19) == "a" * 19 and clean_sample_name("a" * 22) == "a" * 22


def test_pairings_match_the_original(exp: dict) -> None:
    d = exp["details"]
    gt_audio = list(fx.cache("gt", "passt_logits"))
    pred_audio = list(fx.cache("pred", "passt_logits"))
    passt = pair(gt_audio, pred_audio, "cleaned")
    assert [list(p) for p in passt.pairs] == d["passt_pairs"] == d["fd_passt_rows"]
    assert sorted([*passt.unpaired_generated, *passt.unpaired_gt]) == d["passt_unpaired_names"]
    assert passt.renamed == {"zxpo56cpUBU_000007-0": "zxpo56cpUBU_000007"}

    kl = pair(list(fx.cache("gt", "pann_features")), list(fx.cache("pred", "pann_features")), "exact")
    assert kl.gt_names == d["kl_panns_pair_order"] == kl.generated_names
    assert "zxpo56cpUBU_000007-0" in kl.unpaired_generated and "exact" in kl.unpaired_generated[
        "zxpo56cpUBU_000007-0"]

    ib = pair(list(fx.cache("gt", "imagebind_video")), list(fx.cache("pred", "imagebind_audio")), "cleaned",
              gt_what="ground-truth video")
    assert [list(p) for p in ib.pairs] == d["ib_pairs"]
    assert sorted(ib.unpaired_generated) == sorted(d["ib_unpaired_names"])
    sync = pair(list(fx.cache("gt", "synchformer_video")), list(fx.cache("pred", "synchformer_audio")), "cleaned",
                gt_what="ground-truth video")
    assert [list(p) for p in sync.pairs] == d["sync_pairs"]
    assert sorted(sync.unpaired_generated) == sorted(d["sync_unpaired_names"])


def test_pairing_explains_a_21_character_name() -> None:
    p = pair(["---g-f_I2yQ_000001", "Y---g-f_I2yQ_000001"], ["Y---g-f_I2yQ_000001_0"], "cleaned")
    assert p.pairs == [("---g-f_I2yQ_000001", "Y---g-f_I2yQ_000001_0")]  # the original's (wrong) partner
    p = pair(["Y---g-f_I2yQ_000001"], ["Y---g-f_I2yQ_000001_0"], "cleaned")
    assert p.pairs == [] and "---g-f_I2yQ_000001" in p.unpaired_generated["Y---g-f_I2yQ_000001_0"]
    assert p.unpaired_gt == {"Y---g-f_I2yQ_000001": "no generated file pairs with it"}


def test_several_generated_files_pair_with_one_gt() -> None:
    p = pair(["zxpo56cpUBU_000007"], ["zxpo56cpUBU_000007-0", "zxpo56cpUBU_000007-1"], "cleaned")
    assert p.pairs == [("zxpo56cpUBU_000007", "zxpo56cpUBU_000007-0"), ("zxpo56cpUBU_000007", "zxpo56cpUBU_000007-1")]


# ------------------------------------------------------------------------------------------------ formulas
def _stack(side: str, name: str, keys, field: str | None = None) -> torch.Tensor:
    c = fx.cache(side, name)
    return torch.stack([c[k][field] if field else c[k] for k in keys])


def test_fd_from_the_original_caches(exp: dict) -> None:
    d, m = exp["details"], exp["metrics"]
    rows = d["fd_vgg_rows"]
    vgg_pred = torch.cat([fx.cache("pred", "vggish_features")[k] for k, _ in rows["pred"]])
    vgg_gt = torch.cat([fx.cache("gt", "vggish_features")[k] for k, _ in rows["gt"]])
    assert [n for _, n in rows["pred"]] == [fx.cache("pred", "vggish_features")[k].shape[0] for k, _ in rows["pred"]]
    _close(fm.frechet_distance(vgg_pred, vgg_gt), m["FD-VGG"], 1e-4, 1e-3)
    _close(fm.frechet_distance(vgg_gt, vgg_pred), d["fd_vgg_swapped_args"], 1e-4, 1e-3)
    rows = d["fd_panns_rows"]
    _close(fm.frechet_distance(_stack("pred", "pann_features", rows["pred"], "2048"),
                               _stack("gt", "pann_features", rows["gt"], "2048")), m["FD-PANN"], 1e-4, 1e-3)
    pairs = d["fd_passt_rows"]
    _close(fm.frechet_distance(_stack("pred", "passt_features_embed", [p for _, p in pairs]),
                               _stack("gt", "passt_features_embed", [g for g, _ in pairs])), m["FD-PASST"], 1e-4, 1e-3)


def test_fd_undefined_cases_raise_with_reasons() -> None:
    with pytest.raises(fm.UndefinedMetricError, match="at least 2 rows"):
        fm.frechet_distance(np.ones((1, 4), np.float32), np.ones((3, 4), np.float32))
    with pytest.raises(fm.UndefinedMetricError, match="non-finite"):
        fm.frechet_distance(np.full((3, 4), np.nan, np.float32), np.ones((3, 4), np.float32))
    with pytest.raises(fm.UndefinedMetricError, match="feature sizes"):
        fm.frechet_distance(np.ones((3, 4), np.float32), np.ones((3, 5), np.float32))


def test_fd_imaginary_check_is_the_originals(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((40, 3)).astype(np.float32), rng.standard_normal((40, 3)).astype(np.float32)
    monkeypatch.setattr(fm, "_scipy_sqrtm", lambda m: np.eye(3) * (1 + 0.01j))
    with pytest.raises(fm.UndefinedMetricError, match="-1"):
        fm.frechet_distance(a, b)
    monkeypatch.setattr(fm, "_scipy_sqrtm", lambda m: np.eye(3) * (1 + 1e-4j))
    assert math.isfinite(fm.frechet_distance(a, b))  # a small imaginary part is dropped, as upstream


def test_fd_retries_with_a_diagonal_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake(m):
        calls.append(m)
        return np.full_like(m, np.nan) if len(calls) == 1 else np.eye(m.shape[0])

    monkeypatch.setattr(fm, "_scipy_sqrtm", fake)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((10, 2)), rng.standard_normal((10, 2))
    fm.frechet_distance(a, b)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eye = np.eye(2) * fm.SQRTM_EPS
    assert len(calls) == 2
    np.testing.assert_array_equal(calls[0], s1 @ s2)
    np.testing.assert_array_equal(calls[1], (s1 + eye) @ (s2 + eye))


def test_kl_from_the_original_caches(exp: dict) -> None:
    d, m = exp["details"], exp["metrics"]
    order = d["kl_panns_pair_order"]
    pred, gt = _stack("pred", "pann_features", order, "logits"), _stack("gt", "pann_features", order, "logits")
    _close(fm.kl_softmax(pred, gt), m["KL-PANNS-softmax"], 0, 1e-6)
    assert torch.allclose(fm.kl_per_pair(pred, gt), d["kl_panns_per_pair"], atol=1e-6, rtol=0)
    _close(fm.kl_sigmoid(pred, gt), d["kl_panns_sigmoid_variant"], 0, 1e-5)
    pairs = d["passt_pairs"]
    pred = _stack("pred", "passt_logits", [p for _, p in pairs])
    gt = _stack("gt", "passt_logits", [g for g, _ in pairs])
    _close(fm.kl_softmax(pred, gt), m["KL-PASST-softmax"], 0, 1e-6)
    assert torch.allclose(fm.kl_per_pair(pred, gt), d["kl_passt_per_pair"], atol=1e-6, rtol=0)
    assert float(fm.kl_per_pair(pred, gt).mean()) == pytest.approx(m["KL-PASST-softmax"], abs=1e-6)
    _close(fm.kl_sigmoid(pred, gt), d["kl_passt_sigmoid_variant"], 0, 1e-5)


def test_kl_sigmoid_is_finite_for_very_negative_logits() -> None:
    """The original's ``logsigmoid`` form: a logit of -200 gives a finite KL (``sigmoid().log()`` gave NaN)."""
    pred = torch.zeros(2, 527)
    pred[0, 3] = -200.0
    gt = torch.zeros(2, 527)
    got = fm.kl_sigmoid(pred, gt)
    # by hand: only class 3 of row 0 differs; sigmoid(0) = 1/2 and log sigmoid(-200) = -200 (to float32)
    want = 0.5 * (math.log(0.5) + 200.0) / 2
    assert math.isfinite(got) and got == pytest.approx(want, rel=1e-6)


def test_inception_score_cases(exp: dict) -> None:
    for name, case in exp["details"]["isc_function_cases"].items():
        mean, std = fm.inception_score(case["logits"])
        want = case["result"]
        if math.isnan(want["inception_score_mean"]):
            assert math.isnan(mean) and math.isnan(std), name
            assert "NaN" in fm.is_undefined_reason(case["logits"].shape[0])
        else:
            assert mean == pytest.approx(want["inception_score_mean"], rel=1e-9), name
            assert std == pytest.approx(want["inception_score_std"], rel=1e-9, abs=1e-12), name
        assert np.array_equal(np.random.RandomState(fm.IS_SEED).permutation(case["logits"].shape[0]),
                              case["permutation_RandomState2020"].numpy())
    assert fm.is_undefined_reason(10).startswith("exactly 10") and fm.is_undefined_reason(11) == ""
    # the fixture's own sets are below 10 clips: NaN, as reported
    n_panns, n_passt = exp["details"]["isc_panns_N"], exp["details"]["isc_passt_N"]
    assert math.isnan(fm.inception_score(torch.randn(n_panns, 527))[0]) and math.isnan(exp["metrics"]["ISC-PANNS-mean"])
    assert math.isnan(fm.inception_score(torch.randn(n_passt, 527))[0])


def test_ib_from_the_original_caches(exp: dict) -> None:
    d = exp["details"]
    video = _stack("gt", "imagebind_video", [g for g, _ in d["ib_pairs"]])
    audio = _stack("pred", "imagebind_audio", [p for _, p in d["ib_pairs"]])
    assert torch.allclose(fm.ib_cosines(video, audio), d["ib_cos_per_pair"], atol=1e-6, rtol=0)
    _close(fm.ib_score(video, audio), exp["metrics"]["IB-Score"], 0, 1e-6)


def test_desync_grid_and_mean(exp: dict) -> None:
    d = exp["details"]
    assert torch.equal(fm.sync_grid(), d["sync_class_grid"])
    logits = torch.stack([d["sync_logits_first_window"], d["sync_logits_last_window"]], dim=1)  # [N, 2, 21]
    offsets = fm.desync_offsets(logits)
    assert torch.equal(offsets[:, 0], d["sync_abs_offset_sec_first"])
    assert torch.equal(offsets[:, 1], d["sync_abs_offset_sec_last"])
    assert fm.desync(offsets) == exp["metrics"]["DeSync"]  # float32 grid: 1.1999999880...
    with pytest.raises(fm.UndefinedMetricError):
        fm.desync([])


def test_desync_logits_from_cached_features(exp: dict) -> None:
    """The reduced Synchformer's sync head on the original's cached features gives its logits and classes."""
    from vaura.synchformer.config import SynchformerConfig
    from vaura.synchformer.model import Synchformer
    from visualsound.utils.checkpoint import load_state_dict_strict

    root = fx.root("weights/synchformer_reduced_state_dict.pt")
    model = Synchformer(SynchformerConfig.preset("reduced-avbench")).eval()
    load_state_dict_strict(model, torch.load(root / "weights" / "synchformer_reduced_state_dict.pt",
                                             weights_only=True), what="fixture Synchformer")
    d = exp["details"]
    v = _stack("gt", "synchformer_video", [g for g, _ in d["sync_pairs"]])
    a = _stack("pred", "synchformer_audio", [p for _, p in d["sync_pairs"]])
    with torch.no_grad():
        first = model.compare(v[:, :14], a[:, :14])[0]
        last = model.compare(v[:, -14:], a[:, -14:])[0]
    for got, want in ((first, d["sync_logits_first_window"]), (last, d["sync_logits_last_window"])):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    assert torch.equal(first.argmax(-1), d["sync_pred_class_first"])
    assert torch.equal(last.argmax(-1), d["sync_pred_class_last"])
