"""`vbench evaluate` end to end on synthetic clips with debug weights: known answers, caches, missing outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from benchmarks.cache import FeatureCache
from benchmarks.datasets import Dataset, build_dataset
from benchmarks.evaluate import EvalOptions, MissingOutputsError, evaluate
from benchmarks.metrics.sync import SyncMetricError, sync_score_ms
from benchmarks.models import ModelError, make_model
from benchmarks.protocols import EvaluationError
from benchmarks.results import load_result, validate_result

EPS_KLD_FLOOR = 527 * 1e-6  # identical distributions: KL = sum p log(p / (p + 1e-6)) lies in [-527e-6, 0]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, Dataset]:
    from visualsound.synth import SynthConfig, synthesize

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, SynthConfig.preset("tiny").replace(count=4, duration=2.8, test_fraction=0.75))
    ds = build_dataset("synthetic", root)
    assert len(ds.clips) == 3 and all(c.window_sec == 2.56 for c in ds.clips)
    return root, ds


def test_vaura_paper_on_other_windows_says_it_is_not_the_papers(synth, tmp_path: Path) -> None:
    """A folder dataset (8 s windows by default, here the clips' 2.8 s) under vaura-paper: the result warns that
    the windows are not the paper's 2.56 s; the paper's own windows give no such warning."""
    root, ds = synth
    videos = sorted({Path(c.video) for c in ds.clips})
    folder = tmp_path / "videos"
    folder.mkdir()
    for v in videos:
        (folder / v.name).symlink_to(v)
    other = build_dataset("myset", videos=folder)
    assert {round(c.window_sec, 2) for c in other.clips} == {2.8}
    opts = EvalOptions(out_dir=tmp_path / "res", debug_weights=True, metrics=["ib"])
    warned = evaluate(other, make_model("ground-truth"), opts)["warnings"]
    assert any("windows of 2.8 s (the manifest's): the V-AURA paper evaluates 2.56 s windows" in w for w in warned)
    papers = evaluate(ds, make_model("ground-truth"), opts)["warnings"]
    assert not any("the V-AURA paper evaluates" in w for w in papers)


def _write_outputs(ds: Dataset, folder: Path, ids: list[str], shift: int = 4410) -> None:
    from visualsound.media import read_audio, write_wav

    folder.mkdir(parents=True, exist_ok=True)
    for clip in ds.clips:
        if clip.id in ids:
            audio = read_audio(clip.video, start=clip.start_sec, duration=clip.window_sec, sample_rate=44100)
            write_wav(folder / f"{clip.id}.wav", torch.roll(audio, shift, dims=1) * 0.5, 44100)


def test_ground_truth_identical_sets_known_answers(synth, tmp_path: Path) -> None:
    _, ds = synth
    opts = EvalOptions(out_dir=tmp_path / "res", debug_weights=True, metrics=["fad", "kld", "ib"])
    result = evaluate(ds, make_model("ground-truth"), opts)
    assert abs(result["metrics"]["fad"]) < 1e-3  # identical sets: FAD 0 up to the sqrtm floor
    assert -EPS_KLD_FLOOR <= result["metrics"]["kld"] <= 0.0  # KL(p || p) with the 1e-6 eps
    assert -100.0 <= result["metrics"]["ib"] <= 100.0
    on_disk = load_result(result["_path"])
    assert on_disk["debug_weights"] is True and on_disk["counts"] == {**result["counts"]}
    assert on_disk["dataset"]["num_clips"] == 3 and on_disk["model"]["samples_per_clip"] == 1
    assert on_disk["protocol"] == {"name": "vaura-paper", "version": 1, "description": on_disk["protocol"]
                                   ["description"]}
    assert on_disk["extractors"]["kld"]["sha256"] == "debug:passt"
    # a second run reads every feature from the caches
    again = evaluate(ds, make_model("ground-truth"), opts)
    assert again["metrics"] == result["metrics"]
    assert again["metric_details"]["fad"]["caches"]["gt"]["computed"] == 0
    assert again["metric_details"]["ib"]["caches"]["audio"]["hits"] == 3


def test_dir_model_missing_and_unreadable_outputs(synth, tmp_path: Path) -> None:
    _, ds = synth
    out = tmp_path / "other_model"
    _write_outputs(ds, out, ds.ids[:1])
    (out / f"{ds.ids[1]}.wav").write_bytes(b"RIFF not really a wav")
    opts = EvalOptions(out_dir=tmp_path / "res", debug_weights=True, metrics=["kld"])
    with pytest.raises(MissingOutputsError) as err:
        evaluate(ds, make_model(f"dir:{out}"), opts)
    assert set(err.value.missing) == set(ds.ids[1:])
    assert "unreadable" in err.value.missing[ds.ids[1]] and "missing" in err.value.missing[ds.ids[2]]
    opts.allow_missing = True
    result = evaluate(ds, make_model(f"dir:{out}"), opts)
    assert result["counts"]["missing"] == 2 and result["counts"]["missing_ids"] == sorted(ds.ids[1:])
    assert result["counts"]["clips"] == 1 and result["metrics"]["kld"] > EPS_KLD_FLOOR  # not the GT itself


def test_dir_model_shifted_copy_differs_from_ground_truth(synth, tmp_path: Path) -> None:
    _, ds = synth
    out = tmp_path / "shifted"
    _write_outputs(ds, out, ds.ids)
    opts = EvalOptions(out_dir=tmp_path / "res", debug_weights=True, metrics=["fad"])
    result = evaluate(ds, make_model(f"dir:{out}"), opts)
    assert result["metrics"]["fad"] > 1e-2
    assert result["model"]["name"] == "dir:shifted"
    with pytest.raises(ModelError, match="not a folder"):
        make_model(f"dir:{tmp_path / 'nope'}")


def test_cache_invalidated_when_window_changes(synth, tmp_path: Path) -> None:
    root, ds = synth
    opts = EvalOptions(out_dir=tmp_path / "res", debug_weights=True, metrics=["fad"])
    first = evaluate(ds, make_model("ground-truth"), opts)["metric_details"]["fad"]["caches"]["gt"]
    assert first["computed"] == 3 and first["invalidated"] == []
    shorter = build_dataset("synthetic", root, window_sec=2.0)
    second = evaluate(shorter, make_model("ground-truth"), opts)["metric_details"]["fad"]["caches"]["gt"]
    assert second["invalidated"] == ["window_sec"] and second["computed"] == 3 and second["hits"] == 0


def test_feature_cache_manifest_and_sources(tmp_path: Path) -> None:
    src = tmp_path / "a.wav"
    src.write_bytes(b"x")
    calls = []

    def compute(key: str) -> torch.Tensor:
        calls.append(key)
        return torch.ones(2)

    def open_cache(sha: str) -> FeatureCache:
        return FeatureCache(tmp_path / "c", extractor="e", weights_sha256=sha, sample_rate=16000, window_sec=2.56)

    from benchmarks.cache import file_fingerprint

    open_cache("w1").get_or_compute([("a", file_fingerprint(src))], compute)
    open_cache("w1").get_or_compute([("a", file_fingerprint(src))], compute)
    assert calls == ["a"]
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["clip_ids"] == ["a"] and manifest["weights_sha256"] == "w1"
    other = open_cache("w2")  # other weights: wiped and recomputed
    assert other.invalidated == ["weights_sha256"]
    other.get_or_compute([("a", file_fingerprint(src))], compute)
    src.write_bytes(b"yy")  # the input changed: that clip is recomputed
    open_cache("w2").get_or_compute([("a", file_fingerprint(src))], compute)
    assert calls == ["a", "a", "a"]
    for entry in (tmp_path / "c" / "features").iterdir():  # a corrupt entry is recomputed, not trusted
        entry.write_bytes(b"garbage")
    assert open_cache("w2").get_or_compute([("a", file_fingerprint(src))], compute)["a"].tolist() == [1.0, 1.0]
    assert calls == ["a", "a", "a", "a"]


def test_weights_checksum_of_explicit_checkpoint(tmp_path: Path) -> None:
    import hashlib

    from benchmarks.cache import weights_checksum

    ckpt = tmp_path / "vggish.pth"
    ckpt.write_bytes(b"weights")
    path, sha = weights_checksum("vggish", ckpt, debug_weights=False)
    assert path == str(ckpt) and sha == hashlib.sha256(b"weights").hexdigest()
    assert weights_checksum("vggish", None, debug_weights=True) == ("debug", "debug:vggish")


def test_sync_score_is_mean_absolute_offset_in_ms() -> None:
    assert sync_score_ms([0.2, -0.4, 0.0]) == pytest.approx(200.0)
    with pytest.raises(SyncMetricError):
        sync_score_ms([])


def test_sync_metric_reports_abs_offset_of_predict_offset(synth, tmp_path: Path) -> None:
    from benchmarks.metrics.sync import load_sync_metric_model, read_sync_inputs
    from vaura.synchformer import predict_offset

    _, ds = synth
    one = Dataset(name="one", window_sec=ds.window_sec, clips=ds.clips[:1])
    opts = EvalOptions(out_dir=tmp_path / "res", debug_weights=True, metrics=["sync_ms"])
    result = evaluate(one, make_model("ground-truth"), opts)
    clip = one.clips[0]
    frames, wave = read_sync_inputs(clip.video, clip.start_sec, clip.window_sec, clip.video, clip.start_sec,
                                    clip.window_sec)
    pred = predict_offset(load_sync_metric_model(debug_weights=True), frames, wave, protocol="paper")
    assert result["metrics"]["sync_ms"] == pytest.approx(1000 * abs(pred.offset_sec), abs=1e-3)
    assert result["metric_details"]["sync_ms"]["offsets_sec"][f"{clip.id}#0"] == pytest.approx(pred.offset_sec)


def test_cli_evaluate_writes_result(synth, tmp_path: Path) -> None:
    from benchmarks.cli import main

    _, ds = synth
    manifest = ds.save(tmp_path / "synthetic.json")
    res = CliRunner().invoke(main, ["evaluate", "--model", "ground-truth", "--dataset", str(manifest),
                                    "--debug-weights", "--metrics", "kld", "--out", str(tmp_path / "res"),
                                    "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "DEBUG WEIGHTS" in res.output
    assert "95% interval [" in res.output and "percentile bootstrap over clips, 1000 resamples" in res.output
    files = list((tmp_path / "res").glob("*.json"))
    assert len(files) == 1 and validate_result(json.loads(files[0].read_text()))["metrics"].keys() == {"kld"}
    assert files[0].with_name(files[0].name.replace(".json", ".clips.parquet")).is_file()
    res = CliRunner().invoke(main, ["evaluate", "--model", "ground-truth", "--dataset", str(manifest),
                                    "--debug-weights", "--metrics", "kld", "--out", str(tmp_path / "res"),
                                    "--no-progress", "--bootstrap", "0"])
    assert res.exit_code == 0 and "interval" not in res.output
    assert "metric_ci" not in json.loads(files[0].read_text())


def test_every_metric_weights_file_has_an_evaluate_option() -> None:
    """`vbench evaluate` takes the path of every weights file a protocol's metrics load (its `weights_options`
    table), and hands each to `EvalOptions.checkpoints` under the key the protocols use."""
    from benchmarks.commands.evaluate import evaluate as command
    from benchmarks.evaluate import extractor_checkpoints, extractor_keys
    from benchmarks.protocols import PROTOCOL_NAMES, get_protocol
    from visualsound.utils.cli import command_weights_options

    table = command_weights_options(command)
    for name in PROTOCOL_NAMES:
        proto = get_protocol(name)
        for key, registry in proto.required_weights(proto.metrics).items():
            assert registry in table, (name, registry)
            assert extractor_keys()[registry] == key
    assert set(table) == {*extractor_keys(), "vaura_release"}
    assert extractor_checkpoints({"vggish": "v.pth", "imagebind_huge": None, "panns_cnn14_16k": "p.pth"}) == {
        "vggish": "v.pth", "panns": "p.pth"}
    with pytest.raises(EvaluationError, match="no metric loads the weights"):
        extractor_checkpoints({"vaura_release": "x.ckpt"})


def test_missing_weights_are_all_named_before_anything_is_generated(synth, tmp_path: Path, monkeypatch) -> None:
    """A user without VGGish generated the whole set first, then got one missing-weights error per run: every
    weights file the protocol, the chosen metrics and the model need is checked first, and all the missing ones are
    named in one error (URL, path, the command's option for each), exit 2, nothing generated."""
    from benchmarks.cli import main
    from visualsound import weights as W

    monkeypatch.setenv("VAURA_CACHE_DIR", str(tmp_path / "empty-cache"))
    _, ds = synth
    manifest = ds.save(tmp_path / "synthetic.json")
    out = tmp_path / "res"
    res = CliRunner().invoke(main, ["evaluate", "--model", "vaura", "--dataset", str(manifest), "--out", str(out),
                                    "--no-progress"])
    assert res.exit_code == 2, res.output
    assert "5 weights files this evaluation needs are missing (nothing was run)" in res.output
    for name, option in (("vaura_release", "--checkpoint"), ("vggish", "--vggish-checkpoint"),
                         ("passt", "--passt-checkpoint"), ("imagebind_huge", "--imagebind-checkpoint"),
                         ("synchformer_audioset", "--sync-checkpoint")):
        assert f"  - {name}: not in the cache" in res.output and W.get(name).url in res.output, name
        assert str(W.download_path(name)) in res.output and f"Or pass {option} PATH" in res.output, name
    assert not out.exists()  # nothing generated, no folder made
    # av-benchmark on two metrics: only their extractors' weights; a given path that does not exist is named
    res = CliRunner().invoke(main, ["evaluate", "--model", "ground-truth", "--dataset", str(manifest), "--out",
                                    str(out), "--protocol", "av-benchmark", "--metrics", "FD-VGG", "--metrics",
                                    "IB-Score", "--vggish-checkpoint", str(tmp_path / "nope.pth")])
    assert res.exit_code == 2 and "2 weights files" in res.output, res.output
    assert f"vggish: {tmp_path / 'nope.pth'} (given with --vggish-checkpoint) does not exist" in res.output
    assert "imagebind_huge: not in the cache" in res.output and "passt" not in res.output
    res = CliRunner().invoke(main, ["evaluate", "--model", "ground-truth", "--dataset", str(manifest), "--out",
                                    str(out), "--protocol", "av-benchmark", "--metrics", "FD-PANN"])
    assert res.exit_code == 2 and "1 weights file" in res.output, res.output
    assert "panns_cnn14_16k: not in the cache" in res.output and "Or pass --panns-checkpoint PATH" in res.output
    # a sharded run computes no metric: it needs the model's weights only
    res = CliRunner().invoke(main, ["evaluate", "--model", "vaura", "--dataset", str(manifest), "--out", str(out),
                                    "--shard", "0/2"])
    assert res.exit_code == 2 and "1 weights file this evaluation needs is missing" in res.output
    assert "vaura_release" in res.output and "vggish" not in res.output
    # the library checks before the model generates anything
    model = make_model("ground-truth")
    monkeypatch.setattr(model, "outputs", lambda *a, **k: pytest.fail("generated before the weights check"))
    with pytest.raises(W.WeightsNotFoundError, match="1 weights file this evaluation needs is missing"):
        evaluate(ds, model, EvalOptions(out_dir=out, metrics=["fad"]))


@pytest.mark.slow
def test_end_to_end_all_models_all_metrics(synth, tmp_path: Path) -> None:
    """vaura (debug weights, generated and cached), ground-truth and dir: models with the four metrics."""
    _, ds = synth
    opts = EvalOptions(out_dir=tmp_path / "res", debug_weights=True)
    vaura = make_model("vaura", debug_weights=True, samples_per_clip=1, out_dir=tmp_path / "res")
    r_vaura = evaluate(ds, vaura, opts)
    assert set(r_vaura["metrics"]) == {"fad", "kld", "ib", "sync_ms"} and r_vaura["counts"]["samples"] == 3
    wavs = sorted((tmp_path / "res" / "generated").rglob("*.wav"))
    assert len(wavs) == 3 and all(p.name == "seed0_0.000s+2.560s.wav" for p in wavs)
    mtimes = [p.stat().st_mtime_ns for p in wavs]
    again = evaluate(ds, make_model("vaura", debug_weights=True, out_dir=tmp_path / "res"), opts)
    assert [p.stat().st_mtime_ns for p in wavs] == mtimes and again["metrics"] == r_vaura["metrics"]
    r_gt = evaluate(ds, make_model("ground-truth"), opts)
    _write_outputs(ds, tmp_path / "dir", ds.ids)
    r_dir = evaluate(ds, make_model(f"dir:{tmp_path / 'dir'}"), opts)
    assert abs(r_gt["metrics"]["fad"]) < 1e-3 and r_dir["metrics"]["fad"] > 1e-2
    assert len(list((tmp_path / "res").glob("*.json"))) == 3


def test_plot_figure_with_events(synth, tmp_path: Path) -> None:
    from benchmarks.cli import main
    from benchmarks.datasets import DatasetClip
    from benchmarks.plot import events_from_json, window_events

    root, ds = synth
    clip = DatasetClip(id="c", video="v.mp4", start_sec=1.0, window_sec=2.56, events=(0.5, 1.2, 3.5, 3.6))
    assert window_events(clip) == pytest.approx([0.2, 2.5])  # relative to the window, outside ones dropped
    first = ds.clips[0]
    assert events_from_json(root / "events.json", first.id) == list(first.events)
    _write_outputs(ds, tmp_path / "gen", ds.ids[:1])
    manifest = ds.save(tmp_path / "synthetic.json")
    out = tmp_path / "fig.png"
    res = CliRunner().invoke(main, ["plot", "--dataset", str(manifest), "--clip", first.id, "--model",
                                    f"dir:{tmp_path / 'gen'}", "--events", str(root / "events.json"),
                                    "--frames", "4", "--debug-weights", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = CliRunner().invoke(main, ["plot", "--dataset", str(manifest), "--clip", ds.ids[1], "--model",
                                    f"dir:{tmp_path / 'gen'}", "--out", str(tmp_path / "x.png")])
    assert res.exit_code == 2 and "missing" in res.output


def _own_checkpoint(path: Path, seed: int, debug: bool) -> Path:
    from vaura.checkpoint import save_checkpoint
    from vaura.config import VAuraConfig
    from vaura.model import build_model

    return save_checkpoint(path, build_model(VAuraConfig.preset("tiny"), debug_weights=True, seed=seed),
                           {"debug_weights": debug})


def test_vaura_cache_key_follows_the_checkpoint_under_debug_weights(tmp_path: Path) -> None:
    """--debug-weights with our own checkpoint generates with that checkpoint, so its audio must not share a cache
    folder with the random debug model's or another checkpoint's (it used to be ``vaura-debug-*`` for all)."""
    a = _own_checkpoint(tmp_path / "a.pt", 1, debug=True)
    b = _own_checkpoint(tmp_path / "b.pt", 2, debug=True)
    random_model = make_model("vaura", debug_weights=True, out_dir=tmp_path)
    with_a = make_model("vaura", checkpoint=str(a), debug_weights=True, out_dir=tmp_path)
    with_b = make_model("vaura", checkpoint=str(b), debug_weights=True, out_dir=tmp_path)
    assert len({random_model.cache_key, with_a.cache_key, with_b.cache_key}) == 3
    assert with_a.info()["checkpoint_sha256"] != with_b.info()["checkpoint_sha256"]
    # a checkpoint trained on debug weights is a debug-weights model even without the flag
    assert make_model("vaura", checkpoint=str(a), out_dir=tmp_path).debug_weights is True
    real = _own_checkpoint(tmp_path / "real.pt", 1, debug=False)
    assert make_model("vaura", checkpoint=str(real), out_dir=tmp_path).debug_weights is False
    release = tmp_path / "release.ckpt"
    release.write_bytes(b"not read")
    with pytest.raises(ModelError, match="released V-AURA checkpoint"):
        make_model("vaura", checkpoint=str(release), debug_weights=True, out_dir=tmp_path)


def test_options_of_vaura_are_refused_by_other_models(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="checkpoint only apply to the vaura model"):
        make_model("ground-truth", checkpoint="x.pt")
    with pytest.raises(ModelError, match="seed only apply to the vaura model"):
        make_model(f"dir:{tmp_path}", seed=3)
    assert make_model("vaura", debug_weights=True, seed=None, out_dir=tmp_path).seeds == [0]


def test_vaura_generation_cache_keys_window_and_seed(synth, tmp_path: Path, monkeypatch) -> None:
    """Generated files are reused only for the same (clip, window, seed); a changed window regenerates."""
    import vaura.generate
    from benchmarks.datasets import DatasetClip

    calls = []

    def fake_generate(requests, pipe, params, batch_clips, samples_per_clip, decode_workers):
        assert samples_per_clip == 2 and batch_clips == 1
        for req in requests:
            calls.extend((seed, req.start, req.duration) for seed in req.seeds)
            audio = torch.stack([torch.full((1, int(req.duration * 44100)), 0.01 * (s + 1)) for s in req.seeds])
            yield vaura.generate.ClipResult(req, vaura.generate.GeneratedAudio(
                audio, torch.zeros(len(req.seeds), 9, 1, dtype=torch.long), 44100, req.duration, [], True))

    monkeypatch.setattr(vaura.generate, "generate_batch", fake_generate)
    _, ds = synth
    clip = ds.clips[0]
    one = Dataset(name="one", window_sec=2.56, clips=(clip,))
    model = make_model("vaura", debug_weights=True, samples_per_clip=2, seed=5, out_dir=tmp_path)
    model._pipe = object()  # never loaded: generation is faked
    first = model.outputs(one)
    assert [s.seed for s in first.samples[clip.id]] == [5, 6] and len(calls) == 2
    assert model.outputs(one).samples[clip.id] == first.samples[clip.id] and len(calls) == 2  # all reused
    moved = DatasetClip(id=clip.id, video=clip.video, start_sec=0.2, window_sec=2.0)
    shifted = model.outputs(Dataset(name="one", window_sec=2.0, clips=(moved,)))
    assert calls[2:] == [(5, 0.2, 2.0), (6, 0.2, 2.0)]
    assert {s.path for s in shifted.samples[clip.id]}.isdisjoint(s.path for s in first.samples[clip.id])


def test_metric_subsets_write_separate_results(synth, tmp_path: Path) -> None:
    """A --metrics subset run must not overwrite another run's result file."""
    _, ds = synth
    one = Dataset(name="one", window_sec=ds.window_sec, clips=ds.clips[:1])
    kld = evaluate(one, make_model("ground-truth"), EvalOptions(out_dir=tmp_path, debug_weights=True,
                                                                metrics=["kld", "kld"]))
    fad = evaluate(one, make_model("ground-truth"), EvalOptions(out_dir=tmp_path, debug_weights=True,
                                                                metrics=["fad"]))
    assert kld["_path"] != fad["_path"] and list(kld["metrics"]) == ["kld"]
    assert load_result(kld["_path"])["metrics"].keys() == {"kld"}


def test_one_bad_clip_never_aborts_an_evaluation(synth, tmp_path: Path) -> None:
    """A generated file that reads but is too short for VGGish (0.5 s) is left out of FAD, listed with the reason,
    and every metric is still computed from the other samples."""
    from visualsound.media import read_audio, write_wav

    _, ds = synth
    out = tmp_path / "model"
    _write_outputs(ds, out, ds.ids[1:])
    short = read_audio(ds.clips[0].video, duration=0.5, sample_rate=44100)
    write_wav(out / f"{ds.ids[0]}.wav", short, 44100)
    result = evaluate(ds, make_model(f"dir:{out}"), EvalOptions(out_dir=tmp_path / "res", debug_weights=True))
    key = f"{ds.ids[0]}#0"
    assert list(result["excluded"]) == [key] and result["excluded"][key].startswith("fad: ")
    assert "0.975" in result["excluded"][key] or "too short" in result["excluded"][key].lower()
    assert all(v is not None for v in result["metrics"].values())
    assert result["metric_details"]["fad"]["num_generated_samples"] == 2
    assert any("fad: 1 clips or samples" in w for w in result["warnings"])
    assert validate_result(result)


def test_per_clip_table_intervals_and_compare(synth, tmp_path: Path) -> None:
    """Both results' per-clip tables reproduce their KLD / IB / Sync; every metric has an interval (FAD from the
    clips' VGGish frames); `compare` pairs the common clips, names the one only the ground truth has, and on a
    result against itself rebuilds FAD from the caches to the reported value with a zero difference."""
    from benchmarks.compare import compare_results
    from tests.per_clip_check import assert_per_clip_reproduces

    _, ds = synth
    out = tmp_path / "model"
    _write_outputs(ds, out, ds.ids[1:])
    res = tmp_path / "res"
    model = evaluate(ds, make_model(f"dir:{out}"), EvalOptions(out_dir=res, debug_weights=True, allow_missing=True))
    truth = evaluate(ds, make_model("ground-truth"), EvalOptions(out_dir=res, debug_weights=True, bootstrap=200))
    rows = assert_per_clip_reproduces(load_result(model["_path"]))
    assert [r["item"] for r in rows] == [f"{c}#0" for c in ds.ids[1:]] + [f"gt:{ds.ids[0]}"]
    assert rows[0]["generated_path"] == str((out / f"{ds.ids[1]}.wav").resolve())
    assert rows[0]["sync_ms"] == pytest.approx(1000 * abs(rows[0]["sync_offset_sec"]))
    assert "missing" in rows[-1]["reason"] and rows[-1]["kld"] is None
    assert_per_clip_reproduces(load_result(truth["_path"]))
    ci = model["metric_ci"]
    assert set(ci) == {"fad", "kld", "ib", "sync_ms"} and model["bootstrap"]["resamples"] == 1000
    assert ci["fad"]["method"] == "normal" and ci["fad"]["resamples"] == 100 and ci["kld"]["method"] == "percentile"
    assert truth["metric_ci"]["kld"]["resamples"] == 200
    c = compare_results(load_result(truth["_path"]), load_result(model["_path"]), resamples=200, set_resamples=50)
    assert c.common == sorted(ds.ids[1:]) and c.only_a == [ds.ids[0]] and c.only_b == []
    assert c.metrics["kld"]["diff"] > 0 and set(c.metrics) == {"fad", "kld", "ib", "sync_ms"}
    same = compare_results(load_result(model["_path"]), load_result(model["_path"]), resamples=200, set_resamples=50)
    for key, entry in same.metrics.items():
        assert entry["a"] == pytest.approx(model["metrics"][key], rel=1e-6), key
        assert entry["diff"] == 0 and entry["p"] == 1.0, key
    manifest = Path(model["metric_details"]["fad"]["caches"]["gen"]["directory"]) / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "weights_sha256": "other"}))
    stale = compare_results(load_result(model["_path"]), load_result(model["_path"]), resamples=50)
    assert "fad" not in stale.metrics and "other weights" in stale.skipped["fad"] and "kld" in stale.metrics
    no_ci = evaluate(ds, make_model("ground-truth"), EvalOptions(out_dir=tmp_path / "r0", debug_weights=True,
                                                                  metrics=["kld"], bootstrap=0))
    assert "metric_ci" not in no_ci and "bootstrap" not in no_ci and no_ci["per_clip"]["rows"] == 3


def test_a_failing_ground_truth_is_named_and_in_its_samples_rows(synth, tmp_path: Path) -> None:
    """A clip whose window starts 0.1 s before the end of its video: its ground truth is too short for VGGish, so
    FAD leaves it out as ``ground truth <clip id>`` (not under its first sample's key, which the generated sample
    shares) and the clip's sample row carries that reason; `compare` rebuilds FAD with the sample's rows, as the
    run took them."""
    import dataclasses

    from tests.per_clip_check import assert_per_clip_reproduces

    _, ds = synth
    out = tmp_path / "model"
    _write_outputs(ds, out, ds.ids)
    late = dataclasses.replace(ds.clips[0], start_sec=2.7)
    moved = Dataset(name="late", window_sec=ds.window_sec, clips=(late, *ds.clips[1:]))
    result = evaluate(moved, make_model(f"dir:{out}"), EvalOptions(out_dir=tmp_path / "res", debug_weights=True,
                                                                    metrics=["fad"], bootstrap_set=50))
    key = f"ground truth {late.id}"
    assert list(result["excluded"]) == [key] and result["excluded"][key].startswith("fad: ")
    rows = {r["item"]: r for r in assert_per_clip_reproduces(load_result(result["_path"]))}
    assert rows[f"{late.id}#0"]["status"] == "excluded" and rows[f"{late.id}#0"]["reason"].startswith(f"{key}: fad")
    assert rows[f"{ds.ids[1]}#0"]["status"] == "scored" and result["metric_ci"]["fad"]["resamples"] == 50
    # `compare` takes FAD's rows as the run did: the late clip's sample without its ground truth
    from benchmarks.compare import compare_results

    same = compare_results(load_result(result["_path"]), load_result(result["_path"]), resamples=20, set_resamples=5)
    assert same.metrics["fad"]["a"] == pytest.approx(result["metrics"]["fad"], rel=1e-6)
    assert same.metrics["fad"]["units"] == len(ds.ids) and not same.notes


def test_sharded_vaura_generation_adds_up_to_the_unsharded_run(synth, tmp_path: Path) -> None:
    """``vbench evaluate --shard i/3`` generates its clips only and computes no metrics; the three shards' files
    equal, file for file, an unsharded run's (same --batch-clips); the final unsharded run generates nothing and
    scores."""
    from benchmarks.cli import main
    from visualsound.media import read_audio

    torch.set_num_threads(1)
    _, ds = synth
    manifest = ds.save(tmp_path / "synthetic.json")
    base = ["evaluate", "--model", "vaura", "--dataset", str(manifest), "--debug-weights", "--metrics", "kld",
            "--samples-per-clip", "2", "--batch-clips", "2", "--no-progress"]

    def run(*extra: str) -> str:
        res = CliRunner().invoke(main, [*base, *extra], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res.output

    for i in range(3):
        out = run("--out", str(tmp_path / "sharded"), "--shard", f"{i}/3")
        assert f"shard {i}/3" in out and "No metrics" in out
    assert not list((tmp_path / "sharded").glob("*.json"))  # no result yet
    run("--out", str(tmp_path / "whole"))
    wavs = sorted(p.relative_to(tmp_path / "whole") for p in (tmp_path / "whole" / "generated").rglob("*.wav"))
    assert len(wavs) == 6
    got = sorted(p.relative_to(tmp_path / "sharded") for p in (tmp_path / "sharded" / "generated").rglob("*.wav"))
    assert got == wavs
    for rel in wavs:
        assert torch.equal(read_audio(tmp_path / "sharded" / rel), read_audio(tmp_path / "whole" / rel)), rel
    mtimes = [(tmp_path / "sharded" / rel).stat().st_mtime_ns for rel in wavs]
    run("--out", str(tmp_path / "sharded"))
    assert [(tmp_path / "sharded" / rel).stat().st_mtime_ns for rel in wavs] == mtimes  # reused, not regenerated
    results = list((tmp_path / "sharded").glob("*.json"))
    assert len(results) == 1 and load_result(results[0])["model"]["batch_clips"] == 2


def test_dir_model_finds_generated_files_as_av_benchmark_does(tmp_path: Path) -> None:
    """av-benchmark reads ``*.wav`` and ``*.flac`` (case-sensitive) of the folder: other audio files are left out
    with a note, hidden files too (the original would read them and fail); a folder of m4a / mp4 only is used
    (the original would find nothing), noted; a wav and a flac of one stem are refused."""
    from benchmarks.models import DirModel, ModelError
    from visualsound.media import write_wav

    def wav(path: Path) -> None:
        write_wav(path, torch.zeros((1, 1600)), 16000)

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("a.wav", "b.flac", "C.WAV", ".junk.wav", "d.mp4", "notes.txt"):
        wav(mixed / name)  # (the names are what counts here, not the contents)
    files, notes = DirModel(mixed).top_level_files()
    assert {k: p.name for k, p in files.items()} == {"a": "a.wav", "b": "b.flac"}
    assert len(notes) == 2 and "1 hidden file(s) left out" in notes[0] and ".junk.wav" in notes[0]
    assert "2 file(s) left out, as the original reads only *.wav and *.flac: C.WAV, d.mp4" == notes[1]
    only = tmp_path / "only"
    only.mkdir()
    wav(only / "x.mp4")
    wav(only / "Y.WAV")
    files, notes = DirModel(only).top_level_files()
    assert list(files) == ["Y", "x"] and notes == [
        "no *.wav or *.flac file: evaluating the 2 .m4a / .mp4 / upper-case file(s) instead (the original would "
        "find no generated file)"]
    wav(only / "x.wav")
    (only / "x.flac").write_bytes((only / "x.wav").read_bytes())
    with pytest.raises(ModelError, match="both x.wav and x.flac"):
        DirModel(only).top_level_files()
