"""`scripts/demo.py` (`make demo`): the output-folder rules and threshold choice (fast), and the whole `--small`
workflow with every artefact checked (slow: real CLI subprocesses on debug weights, ~2-3 min on 2 CPU cores)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.results import load_result

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "demo.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _load_demo():
    spec = importlib.util.spec_from_file_location("vaura_demo_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class body runs
    spec.loader.exec_module(module)
    return module


demo = _load_demo()


# ------------------------------------------------------------------------------------------------ fast
def test_prepare_out_refuses_a_folder_that_is_not_a_demo(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(demo.DemoError, match="not a previous demo folder"):
        demo.prepare_out(tmp_path)
    assert (tmp_path / "thesis.tex").read_text() == "precious"
    assert not (tmp_path / demo.MARKER).exists()


def test_prepare_out_refuses_a_file(tmp_path):
    f = tmp_path / "out"
    f.write_text("x")
    with pytest.raises(demo.DemoError, match="not a folder"):
        demo.prepare_out(f)


def test_prepare_out_starts_a_previous_demo_folder_clean(tmp_path):
    out = tmp_path / "demo_out"
    demo.prepare_out(out)  # new folder
    marker = json.loads((out / demo.MARKER).read_text())
    assert marker["status"] == "running" and marker["debug_weights"] is True
    assert "RANDOM (DEBUG) WEIGHTS" in (out / demo.README).read_text()
    (out / "synth").mkdir()
    (out / "synth" / "stale.mp4").write_bytes(b"old run")
    demo.prepare_out(out)  # a previous demo: deleted and started again
    assert sorted(p.name for p in out.iterdir()) == sorted([demo.MARKER, demo.README])


def test_main_refuses_a_foreign_folder_before_running_anything(tmp_path, capsys):
    (tmp_path / "data.csv").write_text("a,b\n")
    assert demo.main(["--out", str(tmp_path), "--small"]) == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and "not a previous demo folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv"]


def test_choose_threshold_keeps_the_default_when_it_keeps_enough():
    scores = [("train", s) for s in (0.3, 0.2, 0.0, -0.05, -0.3)] + [("test", 0.1)]
    assert demo.choose_threshold(scores, min_train=4, default=-0.1) == -0.1


def test_choose_threshold_lowers_to_keep_enough_train_and_a_test_clip():
    scores = [("train", s) for s in (0.3, 0.2, -0.23, -0.4)] + [("test", -0.12)]
    t = demo.choose_threshold(scores, min_train=3, default=-0.1)
    assert t == -0.25
    assert sum(s >= t for split, s in scores if split == "train") == 3
    scores = [("train", s) for s in (0.3, 0.2, 0.1)] + [("test", -0.31)]
    assert demo.choose_threshold(scores, min_train=3, default=-0.1) == -0.35


def test_choose_threshold_raises_without_enough_clips():
    with pytest.raises(demo.DemoError, match="only 2 train / 1 test"):
        demo.choose_threshold([("train", 0.1), ("train", 0.2), ("test", 0.0)], min_train=3)
    with pytest.raises(demo.DemoError, match="1 test clip"):
        demo.choose_threshold([("train", 0.1)], min_train=1)


def test_stage_bad_inputs_names_every_file_as_a_clip_and_adds_a_missing_one(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "audio_only.m4a").write_bytes(b"a")
    (bad / "not_media.mp4").write_bytes(b"b")
    csv = demo.stage_bad_inputs(bad, tmp_path / "staged")
    rows = csv.read_text().splitlines()
    assert rows == ["bad-audio-only,0,bad input,train", "bad-not-media,0,bad input,train",
                    "bad-missing-file,0,bad input,train"]
    assert (tmp_path / "staged" / "bad-audio-only_000000.mp4").read_bytes() == b"a"
    assert not (tmp_path / "staged" / "bad-missing-file_000000.mp4").exists()


def test_pick_plot_clip_prefers_a_clip_with_events_and_finds_its_audio(tmp_path):
    manifest = tmp_path / "synthetic.json"
    manifest.write_text(json.dumps({"clips": [
        {"id": "a", "video": "/v/a_000000.mp4", "events": []},
        {"id": "b", "video": "/v/b_000000.mp4", "events": [0.4]},
        {"id": "c", "video": "/v/c_000000.mp4", "events": [1.2]}]}))
    generated, results = tmp_path / "generated", tmp_path / "results"
    generated.mkdir()
    (generated / "a_000000.wav").write_bytes(b"")
    # no audio at all for b; c only through `vbench evaluate`'s generated samples
    assert demo.pick_plot_clip(manifest, generated, results) == ("a", generated / "a_000000.wav")
    wav = results / "generated" / "synthetic" / "vaura-debug-x" / "c" / "seed0_0.000s+2.560s.wav"
    wav.parent.mkdir(parents=True)
    wav.write_bytes(b"")
    assert demo.pick_plot_clip(manifest, generated, results) == ("c", wav)
    (generated / "a_000000.wav").unlink()
    wav.unlink()
    with pytest.raises(demo.DemoError, match="no clip"):
        demo.pick_plot_clip(manifest, generated, results)


# ------------------------------------------------------------------------------------------------ slow
def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
def test_small_demo_writes_every_artefact(tmp_path):
    from visualsound.media import probe

    out = tmp_path / "demo_out"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--small"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    log = proc.stdout

    # every step ran as a printed, copyable CLI call
    for cmd in ("visualsound synth", "visualsound score", "visualsound build", "visualsound report",
                "vaura extract", "vaura train", "vaura generate", "vbench datasets build synthetic",
                "vbench evaluate --model vaura", "vbench evaluate --model ground-truth", "vbench leaderboard",
                "vbench plot", "vbench report"):
        assert f"\n$ {cmd}" in log, f"{cmd!r} not printed"
    assert re.search(r"threshold -?\d\.\d+: debug ImageBind scores are random", log)

    # the folder is labelled debug and marked as a finished demo
    assert "RANDOM (DEBUG) WEIGHTS" in (out / demo.README).read_text()
    marker = json.loads((out / demo.MARKER).read_text())
    assert marker["status"] == "complete" and marker["small"] is True and marker["steps"] == 20
    for rel in marker["artefacts"]:
        assert (out / rel).is_file(), rel

    # scoring: the bad inputs got their statuses; build wrote the split files
    report = (out / "visualsound" / "report" / "report.md").read_text()
    assert "DEBUG WEIGHTS" in report
    for status in ("corrupt", "truncated", "no_audio", "no_video", "missing", "silent", "too_short"):
        assert f"| {status} |" in report, status
    build = out / "visualsound" / "build"
    for split in ("train", "validation", "test"):
        assert (build / f"visualsound_{split}.txt").is_file(), split
    summary = json.loads((build / "summary.json").read_text())
    assert summary["debug_weights"] is True
    train_ids = (build / "visualsound_train.txt").read_text().split()
    assert len(train_ids) == summary["counts"]["train"] >= 3

    # training: checkpoint, metrics of 20 steps, loss curve
    run = out / "vaura" / "run"
    assert (run / "last.pt").stat().st_size > 0
    last = (run / "metrics.csv").read_text().strip().splitlines()[-1]
    assert last.startswith("train,20,"), last
    for png in (run / "loss_curve.png", out / "visualsound" / "report" / "scores_hist.png",
                out / "visualsound" / "report" / "class_keep_rate.png", out / "clip_plot.png"):
        assert _is_png(png), png

    # generation: each mp4 plays, with audio and video of the same length
    mp4s = sorted((out / "vaura" / "generated").glob("*.mp4"))
    assert mp4s
    for mp4 in mp4s:
        info = probe(mp4)
        assert info.has_video and info.has_audio, info
        video_s, audio_s = info.num_frames / info.fps, info.num_samples / info.sample_rate
        assert abs(video_s - audio_s) <= 1.0 / info.fps, (mp4, video_s, audio_s)

    # benchmark: valid debug results for both models, one HTML table per dataset
    results = [load_result(p) for p in sorted((out / "vbench" / "results").glob("*.json"))]
    assert sorted(r["model"]["name"] for r in results) == ["ground-truth", "vaura"]
    assert all(r["debug_weights"] is True for r in results)
    datasets = {r["dataset"]["name"] for r in results}
    html = (out / "leaderboard.html").read_text()
    assert html.count("<table") == len(datasets) == 1
    assert "DEBUG WEIGHTS" in html
    assert "[DEBUG WEIGHTS]" in log  # the leaderboard table printed to stdout

    # the listening report ends the demo: every test clip once, both models' media playable, labelled debug
    assert log.rstrip().splitlines()[-1].strip().startswith("report/index.html")
    report_dir = out / "report"
    report = json.loads((report_dir / "report.json").read_text())
    assert report["debug_weights"] is True and not report["errors"]
    (group,) = report["groups"]
    test_clips = json.loads((out / "vbench" / "datasets" / "synthetic.json").read_text())["clips"]
    assert sorted(c["clip_id"] for c in group["clips"]) == sorted(c["id"] for c in test_clips)
    page = (report_dir / "index.html").read_text()
    assert "<title>vbench listening report [DEBUG WEIGHTS]</title>" in page
    assert page.count("<tr data-clip=") == len(test_clips)
    media = re.findall(r"<(?:video|audio) [^>]*src='([^']+)'", page)
    assert len(media) == len(test_clips) * 3  # ground truth + vaura + ground-truth model
    for rel in media:
        info = probe(report_dir / rel)
        assert info.has_audio, rel
