"""``vbench evaluate --protocol av-benchmark`` end to end: the parity fixture through the CLI, and synthetic clips
with debug weights (bad, unpaired and too-short files)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from benchmarks.cli import main
from tests import avbench_fixture as fx


def _invoke(args: list[str]) -> str:
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory) -> dict:
    """The fixture's inputs through `vbench datasets build` + `vbench evaluate --protocol av-benchmark`, with the
    fixture's seeded weights (full-size PANNs, VGGish, PaSST; reduced Synchformer; tiny ImageBind)."""
    root = fx.root("inputs/videos", "inputs/gt_audio", "inputs/pred_audio", "weights/synchformer_reduced_state_dict.pt",
                   "weights/imagebind_tiny_state_dict.pt")
    tmp = tmp_path_factory.mktemp("avbench")
    ckpt = {"panns": tmp / "Cnn14_16k_mAP=0.438.pth", "vggish": tmp / "vggish-10086976.pth",
            "passt": tmp / "passt-s-f128-p16-s10-ap.476-swa.pt"}
    torch.save({"model": fx.recipe_state_dict("panns")}, ckpt["panns"])
    torch.save(fx.recipe_state_dict("vggish"), ckpt["vggish"])
    torch.save(fx.recipe_state_dict("passt"), ckpt["passt"])
    manifest = tmp / "avbench-fixture.json"
    _invoke(["datasets", "build", "avbench-fixture", "--videos", str(root / "inputs" / "videos"),
             "--gt-audio", str(root / "inputs" / "gt_audio"), "--out", str(manifest)])
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = _invoke(["evaluate", "--protocol", "av-benchmark", "--model", f"dir:{root / 'inputs' / 'pred_audio'}",
                       "--dataset", str(manifest), "--out", str(tmp / "results"), "--allow-missing", "--no-progress",
                       "--panns-checkpoint", str(ckpt["panns"]), "--vggish-checkpoint", str(ckpt["vggish"]),
                       "--passt-checkpoint", str(ckpt["passt"]),
                       "--imagebind-checkpoint", str(root / "weights" / "imagebind_tiny_state_dict.pt"),
                       "--sync-checkpoint", str(root / "weights" / "synchformer_reduced_state_dict.pt"),
                       "--extractor-preset", "ib=tiny", "--extractor-preset", "sync=reduced-avbench"])
    finally:
        torch.set_num_threads(n)
    path = Path(out.strip().splitlines()[-1].split("result: ", 1)[1])
    return {"result": {**json.loads(path.read_text()), "_path": str(path)}, "output": out, "tmp": tmp}


@pytest.mark.slow
def test_fixture_metrics_end_to_end(fixture_run: dict) -> None:
    got, want = fixture_run["result"]["metrics"], fx.expected()["metrics"]
    for key in ("FD-VGG", "FD-PANN", "FD-PASST"):  # README 6: rtol 1e-3 end to end
        assert abs(got[key] - want[key]) <= 1e-3 * abs(want[key]), (key, got[key], want[key])
    for key in ("KL-PANNS-softmax", "KL-PASST-softmax", "IB-Score"):
        assert abs(got[key] - want[key]) <= 1e-4, (key, got[key], want[key])
    assert got["DeSync"] == want["DeSync"]  # classes exact, float32 grid
    notes = fixture_run["result"]["metric_notes"]
    for key in ("ISC-PANNS-mean", "ISC-PANNS-std", "ISC-PASST-mean", "ISC-PASST-std"):
        assert math.isnan(want[key]) and got[key] is None and "NaN" in notes[key], key  # N = 8 and 7 < 10 splits


@pytest.mark.slow
def test_fixture_pairings_and_exclusions(fixture_run: dict) -> None:
    res, d = fixture_run["result"], fx.expected()["details"]
    det = res["metric_details"]
    assert det["passt"]["pairing"]["pairs"] == d["passt_pairs"]
    assert det["panns"]["kl_pairing"]["pairs"] == [[n, n] for n in d["kl_panns_pair_order"]]
    assert sorted(map(tuple, det["ib"]["pairing"]["pairs"])) == sorted(map(tuple, d["ib_pairs"]))
    assert det["desync"]["pairing"]["pairs"] == d["sync_pairs"]
    assert det["vggish"]["rows"] == {"generated": dict(d["fd_vgg_rows"]["pred"]),
                                     "ground_truth": dict(d["fd_vgg_rows"]["gt"])}
    for name, kl in zip(d["kl_panns_pair_order"], d["kl_panns_per_pair"].tolist()):
        assert abs(det["panns"]["kl_per_pair"][name] - kl) <= 1e-4, name
    for (_, name), cos in zip(d["ib_pairs"], d["ib_cos_per_pair"].tolist()):
        assert abs(det["ib"]["cosine_per_pair"][name] - cos) <= 1e-4, name
    ex = res["excluded"]  # every file left out of a metric is listed with the reason
    assert "DeSync" in ex["generated vid_005_drums"] and "6.000 s" in ex["generated vid_005_drums"]
    assert "199" in ex["ground-truth video vid_005_drums"] and "lose" in ex["ground-truth video vid_005_drums"]
    assert "ground-truth video vid_003_short" in ex
    # a generated file whose video was rejected says so (it used to say "no ground-truth video named ...")
    assert "IB-Score (paired with GT videos by clean_sample_name): its ground-truth video 'vid_003_short' was " \
           "rejected: ImageBind needs 4 frames" in ex["generated vid_003_short"], ex["generated vid_003_short"]
    assert "exact" in ex["generated zxpo56cpUBU_000007-0"]  # KL-PANNS pairs exact names only
    assert "gen_only_birds" in ex["generated gen_only_birds"] or "no ground-truth" in ex["generated gen_only_birds"]
    assert res["counts"]["missing_ids"] == ["gt_only_wind"]
    assert res["counts"]["clips"] == 8 and res["counts"]["samples"] == 8
    out = fixture_run["output"]
    assert "WARNING" in out and "clean_sample_name renamed 1" in out and "note: ISC-PANNS-mean" in out


@pytest.mark.slow
def test_fixture_features_match_the_originals_caches(fixture_run: dict) -> None:
    """Our per-clip features (our caches) against the original's cache files, README 6 (10x end to end)."""
    cache_root = fixture_run["tmp"] / "results" / "cache" / "avbench-fixture"

    def ours(set_key: str, extractor: str) -> dict:
        out = {}
        for f in (cache_root / set_key / extractor / "features").glob("*.pt"):
            entry = torch.load(f, weights_only=True)
            out[entry["clip_id"]] = entry["value"]
        return out

    def close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
        tol = 10 * (1e-4 * b.abs() + 1e-4 * float(b.abs().max()))
        assert ((a - b).abs() <= tol).all(), (what, float((a - b).abs().max()))

    gen_key = next(p.name for p in cache_root.iterdir() if p.name.startswith("dir-"))
    for side, set_key in (("gt", "ground-truth"), ("pred", gen_key)):
        panns, passt_f, passt_l = (fx.cache(side, n) for n in ("pann_features", "passt_features_embed",
                                                                 "passt_logits"))
        mine = ours(set_key, "avb-panns")
        for name, v in panns.items():
            close(mine[name]["embedding"], v["2048"], f"{side} panns {name}")
            close(mine[name]["logits"], v["logits"], f"{side} panns logits {name}")
        mine = ours(set_key, "avb-passt")
        for name in passt_f:
            close(mine[name]["features"], passt_f[name], f"{side} passt {name}")
            close(mine[name]["logits"], passt_l[name], f"{side} passt logits {name}")
        mine = ours(set_key, "avb-vggish")
        for name, v in fx.cache(side, "vggish_features").items():
            close(mine[name], v, f"{side} vggish {name}")
    mine = ours(gen_key, "avb-ib-audio")
    for name, v in fx.cache("pred", "imagebind_audio").items():
        close(mine[name], v, f"ib audio {name}")
    mine = ours(gen_key, "avb-sync-audio")
    for name, v in fx.cache("pred", "synchformer_audio").items():
        close(mine[name], v, f"sync audio {name}")
    assert mine["vid_005_drums"] == {"dropped": mine["vid_005_drums"]["dropped"]}
    for extractor, original in (("avb-ib-video", "imagebind_video"), ("avb-sync-video", "synchformer_video")):
        mine = ours("ground-truth", extractor)
        orig = fx.cache("gt", original)
        assert {n for n, v in mine.items() if not isinstance(v, dict)} == set(orig)
        for name, v in orig.items():
            close(mine[name], v, f"{extractor} {name}")


@pytest.mark.slow
def test_fixture_per_clip_table_and_intervals(fixture_run: dict) -> None:
    """The fixture run's per-clip table: its per-pair values are the original's (README 6 tolerances), its column
    means are the metrics, every file and clip the original leaves out has its row and reason; every defined
    metric has an interval; FD-PASST (paired files only) rebuilt from the caches by `compare` is the metric."""
    from benchmarks.compare import compare_results
    from tests.per_clip_check import assert_per_clip_reproduces

    res, d = fixture_run["result"], fx.expected()["details"]
    rows = {r["item"]: r for r in assert_per_clip_reproduces(res)}
    for name, kl in zip(d["kl_panns_pair_order"], d["kl_panns_per_pair"].tolist()):
        assert abs(rows[name]["KL-PANNS-softmax"] - kl) <= 1e-4, name
    for (_, name), cos in zip(d["ib_pairs"], d["ib_cos_per_pair"].tolist()):
        assert abs(rows[name]["IB-Score"] - cos) <= 1e-4, name
    assert rows["gt:gt_only_wind"]["status"] == "missing" and rows["gen_only_birds"]["status"] == "unpaired"
    assert rows["vid_005_drums"]["DeSync"] is None and "6.000 s" in rows["vid_005_drums"]["reason"]
    assert "ground-truth video vid_005_drums" in rows["vid_005_drums"]["reason"]
    assert rows["zxpo56cpUBU_000007-0"]["KL-PANNS-softmax"] is None  # KL-PANNS pairs exact names only
    assert rows["zxpo56cpUBU_000007-0"]["KL-PASST-softmax"] is not None
    defined = {k for k, v in res["metrics"].items() if v is not None}
    assert set(res["metric_ci"]) == defined
    same = compare_results(res, res, resamples=50, set_resamples=10)
    # 7 rows in 768 dimensions: the original's sqrtm of the rank-6 product is off by 7.6e-5 (relative) from the
    # float64 SVD value, which the bootstrap's eigenvalue form reproduces to 5e-7
    assert same.metrics["FD-PASST"]["a"] == pytest.approx(res["metrics"]["FD-PASST"], rel=2e-4)
    assert all(e["diff"] == 0 for e in same.metrics.values())


@pytest.mark.slow
def test_fixture_result_records_extractors_and_caches(fixture_run: dict) -> None:
    res = fixture_run["result"]
    assert res["protocol"]["name"] == "av-benchmark" and res["dataset"]["name"] == "avbench-fixture"
    assert res["extractors"]["avb-sync-audio"]["preset"] == "reduced-avbench"
    caches = res["metric_details"]["caches"]
    assert caches["generated"]["avb-passt"]["computed"] == 8 and caches["video"]["avb-ib-video"]["computed"] == 7


# ------------------------------------------------------------------------------------------------ debug weights
@pytest.fixture(scope="module")
def synth8(tmp_path_factory) -> dict:
    """Three 8.5 s synthetic clips, a text file and a 0.5 s clip in one folder, built as a folder dataset."""
    from visualsound.synth import SynthConfig, make_bad_clips, synthesize

    root = tmp_path_factory.mktemp("synth8")
    synthesize(root, SynthConfig.preset("tiny").replace(count=3, duration=8.5, test_fraction=1.0))
    zoo = make_bad_clips(root / "zoo")
    videos = root / "video"
    for name in ("not_media", "short"):
        (videos / zoo[name].path.name).write_bytes(zoo[name].path.read_bytes())
    manifest = root / "synth8.json"
    out = _invoke(["datasets", "build", "synth8", "--videos", str(videos), "--out", str(manifest)])
    ids = sorted(p.stem for p in videos.glob("synth*.mp4"))
    return {"root": root, "manifest": manifest, "ids": ids, "build_output": out}


def _gen_dir(synth8: dict, folder: Path) -> Path:
    """A model's outputs: clip 0 (8 s, shifted), clip 1 (6 s), clip 2 missing, an unpaired file, a broken file."""
    from visualsound.media import read_audio, write_wav

    folder.mkdir(parents=True, exist_ok=True)
    a, b, _ = synth8["ids"]
    for cid, seconds in ((a, 8.0), (b, 6.0)):
        wave = read_audio(synth8["root"] / "video" / f"{cid}.mp4", duration=seconds, sample_rate=44100)
        write_wav(folder / f"{cid}.wav", torch.roll(wave, 4410, dims=1) * 0.5, 44100)
    write_wav(folder / "unpaired_extra.wav", torch.zeros(1, 44100 * 8) + 0.01, 44100)
    (folder / "broken.wav").write_bytes(b"RIFF but not a wav at all")
    return folder


def test_folder_dataset_records_rejected_files(synth8: dict) -> None:
    data = json.loads(synth8["manifest"].read_text())
    assert [c["id"] for c in data["clips"]] == synth8["ids"] and data["window_sec"] == 8.0
    assert set(data["rejected"]) == {"not_media", "short"}
    assert "too short" in data["rejected"]["short"] and "unreadable" in data["rejected"]["not_media"]
    assert "left out short" in synth8["build_output"] and "3 clips" in synth8["build_output"]


def test_debug_weights_end_to_end_with_bad_and_unpaired_files(synth8: dict, tmp_path: Path) -> None:
    gen = _gen_dir(synth8, tmp_path / "other_model")
    args = ["evaluate", "--protocol", "av-benchmark", "--model", f"dir:{gen}", "--dataset", str(synth8["manifest"]),
            "--out", str(tmp_path / "res"), "--debug-weights", "--no-progress"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code != 0 and synth8["ids"][2] in res.output and "--allow-missing" in res.output
    out = _invoke([*args, "--allow-missing"])
    result = json.loads(Path(out.strip().splitlines()[-1].split("result: ", 1)[1]).read_text())
    a, b, c = synth8["ids"]
    assert result["debug_weights"] and result["counts"]["missing_ids"] == [c]
    assert result["counts"]["clips"] == 3 and result["counts"]["samples"] == 3  # broken.wav is not a sample
    m = result["metrics"]
    for key in ("FD-PASST", "FD-PANN", "FD-VGG"):
        assert m[key] is None or math.isfinite(m[key]), key
    assert m["ISC-PANNS-mean"] is None and "NaN" in result["metric_notes"]["ISC-PANNS-mean"]
    assert m["DeSync"] is not None and len(result["metric_details"]["desync"]["pairing"]["pairs"]) == 1  # clip 0
    ex = result["excluded"]
    assert "unreadable" in ex["generated broken"]
    assert "no ground-truth" in ex["generated unpaired_extra"]
    assert "DeSync" in ex[f"generated {b}"] and "6.000 s" in ex[f"generated {b}"]
    assert "WARNING" in out and "left out of at least one metric" in out
    _check_per_clip_and_compare(result, Path(out.strip().splitlines()[-1].split("result: ", 1)[1]), synth8)
    again = json.loads(Path(_invoke([*args, "--allow-missing"]).strip().splitlines()[-1].split("result: ", 1)[1])
                       .read_text())
    assert again["metrics"] == result["metrics"]
    assert all(c["computed"] == 0 for side in again["metric_details"]["caches"].values() for c in side.values())


def _check_per_clip_and_compare(result: dict, path: Path, synth8: dict) -> None:
    """The per-clip table of the bad-and-unpaired run: one row per generated file and missing clip with the right
    status, the per-item metrics reproduced; intervals; the result compared with itself (set-level metrics
    rebuilt from the caches on the two paired clips) differs by exactly zero."""
    from benchmarks.compare import compare_results
    from benchmarks.results import load_result
    from tests.per_clip_check import assert_per_clip_reproduces

    a, b, c = synth8["ids"]
    loaded = load_result(path)
    rows = {r["item"]: r for r in assert_per_clip_reproduces(loaded)}
    assert {k: r["status"] for k, r in rows.items()} == {
        a: "scored", b: "excluded", "broken": "unpaired", "unpaired_extra": "unpaired", f"gt:{c}": "missing"}
    assert rows[b]["DeSync"] is None and "6.000 s" in rows[b]["reason"] and rows[b]["KL-PASST-softmax"] is not None
    assert rows[a]["DeSync"] == pytest.approx((rows[a]["desync_first_sec"] + rows[a]["desync_last_sec"]) / 2)
    assert "unreadable" in rows["broken"]["reason"] and rows["broken"]["clip_id"] is None
    assert rows[a]["window_sec"] == 8.0 and rows[a]["video_path"].endswith(f"{a}.mp4")
    defined = {k for k, v in result["metrics"].items() if v is not None}
    assert set(result["metric_ci"]) == defined and result["metric_ci"]["FD-PANN"]["method"] == "normal"
    same = compare_results(loaded, loaded, resamples=100, set_resamples=20)
    assert same.common == [a, b] and not same.only_a and "ISC-PANNS-mean" in same.skipped
    assert {"FD-PANN", "FD-VGG", "KL-PANNS-softmax", "IB-Score", "DeSync"} <= set(same.metrics)
    assert all(e["diff"] == 0 and e["p"] in (1.0, None) for e in same.metrics.values())


def test_ground_truth_against_itself(synth8: dict, tmp_path: Path) -> None:
    out = _invoke(["evaluate", "--protocol", "av-benchmark", "--model", "ground-truth", "--dataset",
                   str(synth8["manifest"]), "--out", str(tmp_path / "res"), "--debug-weights", "--no-progress",
                   "--metrics", "KL-PANNS-softmax", "--metrics", "KL-PASST-softmax", "--metrics", "IB-Score"])
    result = json.loads(Path(out.strip().splitlines()[-1].split("result: ", 1)[1]).read_text())
    assert set(result["metrics"]) == {"KL-PANNS-softmax", "KL-PASST-softmax", "IB-Score"}
    assert abs(result["metrics"]["KL-PANNS-softmax"]) < 1e-6 and abs(result["metrics"]["KL-PASST-softmax"]) < 1e-6
    assert -1 <= result["metrics"]["IB-Score"] <= 1 and not result["excluded"]


def test_vaura_generates_one_8s_sample_per_clip(synth8: dict, tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["evaluate", "--protocol", "av-benchmark", "--model", "vaura", "--dataset",
                                    str(synth8["manifest"]), "--debug-weights", "--samples-per-clip", "2",
                                    "--out", str(tmp_path / "res")])
    assert res.exit_code != 0 and "one generated file per clip" in res.output
    one = json.loads(synth8["manifest"].read_text())  # one clip keeps the 8 s generation short on a CPU
    one["clips"] = one["clips"][:1]
    (manifest := tmp_path / "one.json").write_text(json.dumps(one))
    out = _invoke(["evaluate", "--protocol", "av-benchmark", "--model", "vaura", "--dataset", str(manifest),
                   "--out", str(tmp_path / "res"), "--debug-weights", "--no-progress", "--metrics", "DeSync"])
    assert "1 samples per clip" in out
    result = json.loads(Path(out.strip().splitlines()[-1].split("result: ", 1)[1]).read_text())
    assert result["model"]["samples_per_clip"] == 1 and result["counts"]["samples"] == 1
    assert len(result["metric_details"]["desync"]["pairing"]["pairs"]) == 1  # 8 s were generated (else dropped)
    assert 0 <= result["metrics"]["DeSync"] <= 2


def test_vbench_sync_is_the_protocols_desync(synth8: dict, tmp_path: Path) -> None:
    """`vbench sync --protocol av-benchmark` of one clip gives the offsets `vbench evaluate` computes for it."""
    a = synth8["root"] / "video" / f"{synth8['ids'][0]}.mp4"
    res = CliRunner().invoke(main, ["sync", str(a), "--debug-weights", "--protocol", "av-benchmark", "--json"])
    assert res.exit_code == 0, res.output
    one = json.loads(res.output.strip().splitlines()[-1])
    assert one["window_starts_sec"] == [0.0, 3.2] and len(one["top3"]) == 3
    out = _invoke(["evaluate", "--protocol", "av-benchmark", "--model", "ground-truth", "--dataset",
                   str(synth8["manifest"]), "--out", str(tmp_path / "res"), "--debug-weights", "--no-progress",
                   "--metrics", "DeSync"])
    result = json.loads(Path(out.strip().splitlines()[-1].split("result: ", 1)[1]).read_text())
    per_pair = result["metric_details"]["desync"]["abs_offset_sec_per_pair"][synth8["ids"][0]]
    assert [abs(o) for o in one["window_offsets_sec"]] == pytest.approx(per_pair)
    assert one["desync_sec"] == pytest.approx(sum(per_pair) / 2, abs=1e-4)
