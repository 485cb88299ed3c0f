"""`vbench compare` rebuilds the av-benchmark set-level metrics (FD-PANN, FD-VGG, FD-PASST, IS) from the caches
with each metric's own rows: on all the files of a result it gives the value the evaluation itself computed, also
where the original's pairing rules differ (generated names of 20, 21 and 30 characters that ``clean_sample_name``
cuts, several generated files on one clip, files that pair with no clip, clips nobody generated, a file too short
for VGGish, an unreadable file); on fewer clips it gives the original's formula on those clips' rows, and says
which clips each metric used; where the caches no longer hold what the run used, it says so instead of a number.

Debug weights, audio-only ground truth (no videos: only the audio metrics run), 8 s files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from benchmarks.cli import main

SR = 16000
SECONDS = 8.0
SET_KEYS = ("FD-PANN", "FD-VGG", "FD-PASST", "ISC-PANNS-mean", "ISC-PANNS-std", "ISC-PASST-mean", "ISC-PASST-std")
METRICS = (*SET_KEYS, "KL-PANNS-softmax", "KL-PASST-softmax")

CLIPS = [f"clip{i:02d}_abcdef_0001" for i in range(10)]  # 18 characters: clean_sample_name keeps them
C0, C1, C3, C4, C5 = CLIPS[0], CLIPS[1], CLIPS[3], CLIPS[4], CLIPS[5]
E20 = "exact20_abcdefg_0001"  # 20 characters, a clip id: its cleaned name (first 18) is none
E21 = "Xexact21_abcdefg_0001"  # 21: cleaned [1:19] is none
E30 = "exact30_ab" + "cdefghijklmnopqrst" + "uv"  # 30: cleaned [10:28] is none
D = C1 + "-0"  # a 20-character clip id: its generated namesake cleans to C1 (PaSST) but pairs D exactly (KL-PANNS)
G = "gt_only_wind"  # no generated file
GT_IDS = sorted([*CLIPS, E20, E21, E30, D, G])
#: generated files of model A: every clip, three more files on C0 (20, 21, 30 characters), D's namesake on C1,
#: the exact-only names, a file pairing with no clip, C3's file too short for VGGish, an unreadable file on C4
EXTRA_C0 = [C0 + "-1", "Y" + C0 + "_2", "prefix_30_" + C0 + "_3"]
UNPAIRED = "gen_only_birds"
BROKEN = C4 + "-b"


def _invoke(args: list[str]) -> str:
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def _signal(seed: int, seconds: float = SECONDS) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(SR * seconds)) / SR
    freqs = 150 + 2500 * torch.rand(3, generator=g)
    tones = (torch.rand(3, 1, generator=g) * torch.sin(2 * math.pi * freqs[:, None] * t)).sum(0)
    noise = torch.randn(t.shape[0], generator=g) * float(0.05 + 0.3 * torch.rand(1, generator=g))
    env = 0.5 + 0.5 * torch.sin(2 * math.pi * float(0.2 + 2 * torch.rand(1, generator=g)) * t)
    return (0.25 * (tones * env + noise)).clamp(-1, 1)[None]


def _write(folder: Path, names: dict[str, float], seed: int) -> None:
    from visualsound.media import write_wav

    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, seconds) in enumerate(sorted(names.items())):
        write_wav(folder / f"{name}.wav", _signal(seed + i, seconds), SR)


def _generated(folder: Path, seed: int, drop: tuple[str, ...] = (), add: tuple[str, ...] = ()) -> Path:
    names = {n: SECONDS for n in [*CLIPS, *EXTRA_C0, D, E20, E21, E30, UNPAIRED, *add] if n not in drop}
    names[C3] = 0.5  # VGGish needs 0.96 s: dropped there, kept by PANNs and PaSST
    _write(folder, names, seed)
    (folder / f"{BROKEN}.wav").write_bytes(b"RIFF but not a wav at all")
    return folder


def _evaluate(tmp: Path, manifest: Path, gen: Path) -> dict:
    from benchmarks.results import load_result

    args = ["evaluate", "--protocol", "av-benchmark", "--model", f"dir:{gen}", "--dataset", str(manifest),
            "--out", str(tmp / "results"), "--debug-weights", "--no-progress", "--allow-missing",
            "--bootstrap", "20", "--bootstrap-set", "5"]
    for m in METRICS:
        args += ["--metrics", m]
    out = _invoke(args)
    return load_result(out.strip().splitlines()[-1].split("result: ", 1)[1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """A dataset of 15 audio-only clips and three models' av-benchmark results: A (see above), B (the same names,
    other audio) and C (B without C5's, E30's and the unpaired file, with another unpaired file)."""
    tmp = tmp_path_factory.mktemp("avbench-compare")
    _write(tmp / "gt", {n: SECONDS for n in GT_IDS}, 1000)
    manifest = tmp / "pairing.json"
    _invoke(["datasets", "build", "pairing", "--gt-audio", str(tmp / "gt"), "--out", str(manifest)])
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = {name: _evaluate(tmp, manifest, _generated(tmp / name, seed, drop, add))
               for name, seed, drop, add in (("model_a", 2000, (), ()), ("model_b", 3000, (), ()),
                                             ("model_c", 3000, (C5, E30, UNPAIRED), ("gen_only_rain",)))}
    finally:
        torch.set_num_threads(n)
    return out


def _close(key: str, got: float, want: float) -> bool:
    # FD: the bootstrap's eigenvalue form against the original's scipy sqrtm of a singular product (fewer rows
    # than dimensions); IS: the same float64 formula
    return abs(got - want) <= (1e-4 * max(abs(want), 1.0) if key.startswith("FD") else 1e-9 * abs(want))


def test_the_runs_hit_every_pairing_case(runs: dict) -> None:
    a = runs["model_a"]
    pairs = a["metric_details"]["passt"]["pairing"]["pairs"]
    assert sorted(g for g, _ in pairs) == sorted([C0] * 4 + [C1] * 2 + CLIPS[2:])  # the broken file is not read
    assert {p for _, p in pairs} >= {*EXTRA_C0, D} and not {E20, E21, E30} & {p for _, p in pairs}
    assert [D, D] in a["metric_details"]["panns"]["kl_pairing"]["pairs"]  # exact: D's namesake pairs D itself
    assert C3 not in a["metric_details"]["vggish"]["rows"]["generated"]  # too short for VGGish
    assert "unreadable" in a["excluded"][f"generated {BROKEN}"]
    assert all(a["metrics"][k] is not None for k in SET_KEYS), a["metric_notes"]  # 14 PaSST pairs, 18 files: IS


@pytest.mark.parametrize("other", ["model_a", "model_b"])
def test_full_coverage_gives_each_runs_own_values(runs: dict, other: str) -> None:
    """A against itself and against B (the same clips): every set metric's compared values are the runs' own,
    on the units each metric uses (stated as its clips, with a note where they are not the common clips)."""
    from benchmarks.compare import compare_results, render

    a, b = runs["model_a"], runs[other]
    c = compare_results(a, b, resamples=20, set_resamples=5)
    assert not {k for k in SET_KEYS if k in c.skipped}, c.skipped
    for key in SET_KEYS:
        e = c.metrics[key]
        assert _close(key, e["a"], a["metrics"][key]), (key, e["a"], a["metrics"][key])
        assert _close(key, e["b"], b["metrics"][key]), (key, e["b"], b["metrics"][key])
    scored = sorted([*CLIPS, E20, E21, E30])
    assert c.common == scored and not c.only_a and not c.only_b
    # PaSST pairs by clean_sample_name: the 10 clips; the exact-only names E20, E21, E30 pair with nothing there
    for key in ("FD-PASST", "ISC-PASST-mean", "ISC-PASST-std"):
        assert c.metrics[key]["units"] == 10, key
    # PANNs and VGGish use every file: the 13 scored clips, the 2 GT clips nobody generated and the unpaired file
    assert c.metrics["FD-PANN"]["units"] == c.metrics["FD-VGG"]["units"] == 16
    assert c.metrics["ISC-PANNS-mean"]["units"] == 14  # generated files only: no unit for D or G
    text, md, js = (render(c, f) for f in ("text", "markdown", "json"))
    for out in (text, md):
        assert "FD-PASST" in out and E20 in out and "clean_sample_name" in out, out
        assert G in out and D in out and UNPAIRED in out, out
    assert "evaluation recorded" not in text  # the check of the values on all the files is quiet
    notes = json.loads(js)["metrics"]["FD-PASST"]["notes"]
    assert any(E20 in n for n in notes), notes
    assert any(G in n and UNPAIRED in n for n in json.loads(js)["metrics"]["FD-PANN"]["notes"])


# ------------------------------------------------------------------------------------------------ fewer clips
def _features(result: dict, side: str, extractor: str) -> dict:
    """A result's cached features ``{name: value}`` of one set (``generated`` / ``ground-truth``), read directly."""
    folder = Path(result["metric_details"]["caches"][side][extractor]["directory"]) / "features"
    entries = (torch.load(f, weights_only=True) for f in folder.glob("*.pt"))
    return {e["clip_id"]: e["value"] for e in entries}


def _dropped(value: object) -> bool:
    return isinstance(value, dict) and "dropped" in value


def _original(result: dict, key: str, units: set[str]) -> float:
    """The original's formula (`formulas`) on the rows of `units` by its own rules, from the caches and what the
    result records: PaSST's recorded pairs of these clips (a clip's ground truth once per pair); PANNs / VGGish:
    every generated file whose unit (its clip, ``item:<name>`` unpaired) is one of them, every clip of them."""
    from benchmarks import per_clip
    from benchmarks.protocols.avbench import formulas as fm

    rows = per_clip.load_for_result(result).to_pylist()
    unit = {r["item"]: per_clip.unit_of(r) for r in rows if r["status"] != "missing"}
    extractor = {"PASST": "avb-passt", "PANN": "avb-panns", "VGG": "avb-vggish"}[key.split("-")[1].rstrip("S")]
    gen, gt = _features(result, "generated", extractor), _features(result, "ground-truth", extractor)
    if extractor == "avb-passt":
        pairs = [(g, n) for g, n in result["metric_details"]["passt"]["pairing"]["pairs"] if g in units]
        p_rows, g_rows = [gen[n] for _, n in pairs], [gt[g] for g, _ in pairs]
    else:
        p_rows = [gen[n] for n in sorted(unit) if unit[n] in units and n in gen and not _dropped(gen[n])]
        g_rows = [gt[c] for c in sorted(units) if c in gt and not _dropped(gt[c])]
    if key.startswith("ISC"):
        mean, std = fm.inception_score(torch.stack([v["logits"] for v in p_rows]))
        return mean if key.endswith("mean") else std
    if extractor == "avb-vggish":
        return fm.frechet_distance(torch.cat(p_rows), torch.cat(g_rows))
    field = "features" if extractor == "avb-passt" else "embedding"
    return fm.frechet_distance(torch.stack([v[field] for v in p_rows]), torch.stack([v[field] for v in g_rows]))


def test_fewer_clips_use_each_metrics_own_rows_of_them(runs: dict) -> None:
    """A against C (C lacks C5's and E30's files and A's unpaired file, and has another): the common clips, by
    each metric's own rule, plus the clips neither side generated where a metric takes every file; the values
    are the original's formulas on exactly those rows, and the notes say what was left out."""
    from benchmarks.compare import compare_results, render

    a, b = runs["model_a"], runs["model_c"]
    c = compare_results(a, b, resamples=20, set_resamples=5)
    common = set(CLIPS) - {C5} | {E20, E21}
    assert set(c.common) == common and c.only_a == sorted([C5, E30]) and not c.only_b
    assert c.other_units == {D: "clip", G: "clip"}  # the unpaired files differ: neither is compared
    units = {"FD-PASST": set(CLIPS) - {C5}, "ISC-PASST-mean": set(CLIPS) - {C5}, "ISC-PASST-std": set(CLIPS) - {C5},
             "FD-PANN": common | {D, G}, "FD-VGG": common | {D, G}, "ISC-PANNS-mean": common,
             "ISC-PANNS-std": common}
    for key, used in units.items():
        e = c.metrics[key]
        assert e["units"] == len(used), (key, e["units"])
        assert _close(key, e["a"], _original(a, key, used)), (key, e["a"], _original(a, key, used))
        assert _close(key, e["b"], _original(b, key, used)), (key, e["b"], _original(b, key, used))
        assert not _close(key, e["a"], a["metrics"][key]), key  # not A's own value: fewer rows
    text = render(c, "text")
    assert f"A's own value also counts 1 generated file pairing with no clip that the other side lacks ({UNPAIRED})" \
           in text and "gen_only_rain" in text
    assert "on 9 of the 11 common clips" in text


# ------------------------------------------------------------------------------------------------ changed caches
def _entry(result: dict, side: str, extractor: str, name: str) -> Path:
    folder = Path(result["metric_details"]["caches"][side][extractor]["directory"]) / "features"
    return next(f for f in folder.glob("*.pt") if torch.load(f, weights_only=True)["clip_id"] == name)


def test_caches_that_no_longer_hold_what_the_run_used_are_said(runs: dict) -> None:
    """A cache entry gone since the run: the metrics that used it are not compared, with the file named in every
    format. An entry recomputed with other features: the value on all the files is not the recorded one, and a
    note says so in every format."""
    from benchmarks.compare import compare_results, render

    a, b = runs["model_a"], runs["model_b"]
    gone = _entry(a, "generated", "avb-passt", EXTRA_C0[0])
    changed = _entry(a, "generated", "avb-panns", CLIPS[2])
    saved = {gone: gone.read_bytes(), changed: changed.read_bytes()}
    try:
        gone.unlink()
        entry = torch.load(changed, weights_only=True)
        entry["value"]["embedding"] = entry["value"]["embedding"] * 3 + 1
        torch.save(entry, changed)
        c = compare_results(a, b, resamples=20, set_resamples=5)
        outs = [render(c, f) for f in ("text", "markdown", "json")]
    finally:
        for path, data in saved.items():
            path.write_bytes(data)
    for key in ("FD-PASST", "ISC-PASST-mean", "ISC-PASST-std"):
        assert key not in c.metrics and "no longer hold" in c.skipped[key] and EXTRA_C0[0] in c.skipped[key], key
    for out in outs:
        assert "FD-PASST" in out and EXTRA_C0[0] in out and "no longer hold" in out
        assert "not the one its evaluation recorded" in out
    assert "FD-PANN" in c.metrics and any("recorded" in n for n in json.loads(outs[2])["metrics"]["FD-PANN"]["notes"])
    assert not any("recorded" in n for n in json.loads(outs[2])["metrics"]["ISC-PANNS-mean"]["notes"])  # logits kept
    assert compare_results(a, b, resamples=20, set_resamples=5).skipped == {}  # restored
