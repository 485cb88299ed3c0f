"""The `visualsound score` job on synthetic clips with the debug (tiny, seeded random) ImageBind.

The clip set: 4 good synthetic clips, the bad-input zoo of `visualsound.synth.make_bad_clips` (not media, empty,
truncated, video only, audio only, silent, 0.5 s, 29.97 fps, 50 fps) and one clip listed but absent.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from visualsound.cli import main
from visualsound.scores_io import read_scores
from visualsound.scoring import (
    DEBUG_CHECKPOINT_TAG,
    SCORE_VERSION,
    ScoringConfig,
    ScoringError,
    score_batch,
    score_clips,
)
from visualsound.utils.shard import shard_of
from visualsound.vggsound import index_clips

REPO = Path(__file__).resolve().parents[1]
EXPECTED = {  # clip id -> status with silence_threshold=1e-4, min_duration=1.0
    "synth0000_0_10000": "ok", "synth0001_0_10000": "ok", "synth0002_0_10000": "ok", "synth0003_0_10000": "ok",
    "badnot_media_0_10000": "corrupt", "badempty_0_10000": "corrupt", "badtruncated_0_10000": "truncated",
    "badvideo_only_0_10000": "no_audio", "badaudio_only_0_10000": "no_video", "badsilent_0_10000": "silent",
    "badshort_0_10000": "too_short", "badfps_29_97_0_10000": "ok", "badfps_50_0_10000": "ok",
    "gone_0_10000": "missing",
}
CFG = ScoringConfig(batch_size=3, workers=0, silence_threshold=1e-4, min_duration=1.0)
CLI_FILTERS = ["--silence-threshold", "1e-4", "--min-duration", "1.0", "--debug-weights", "--no-progress"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models on a shared CPU: one torch thread is fastest (and is what DataLoader workers use)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"csv": ..., "videos": ...}``: the clip set in VGGSound naming (``{ytid}_{start:06d}.mp4``)."""
    from visualsound.synth import SynthConfig, make_bad_clips, synthesize

    root = tmp_path_factory.mktemp("clips")
    videos = root / "videos"
    videos.mkdir()
    records = synthesize(root / "synth", SynthConfig(count=4, duration=2.0))
    rows = []
    for r in records:
        shutil.copy(root / "synth" / r["file"], videos / f"{r['ytid']}_000000.mp4")
        rows.append([r["ytid"], 0, r["label"], r["split"]])
    for name, bad in make_bad_clips(root / "bad").items():
        shutil.copy(bad.path, videos / f"bad{name}_000000.mp4")
        rows.append([f"bad{name}", 0, "bad, odd or broken", "test" if name.startswith("fps") else "train"])
    rows.append(["gone", 0, "never downloaded", "test"])
    with open(root / "vggsound.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return {"csv": root / "vggsound.csv", "videos": videos}


@pytest.fixture(scope="module")
def reference(clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """One uninterrupted in-process run (workers=0): the rows every other run must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    index = index_clips(clips["csv"], clips["videos"], "vggsound")
    s = score_clips(index, out, CFG, debug_weights=True, progress=False)
    assert s.scored == len(EXPECTED) and s.skipped == 0 and not s.stopped_early
    assert len(list(out.glob("*.parquet"))) == 1, "the run's shards were not compacted into one"
    print(f"workers=0 scoring: {s.clips_per_second:.2f} clips/s over {s.scored} clips (debug model, CPU)")
    return read_scores(out)


def test_every_clip_gets_one_row_with_status_and_facts(reference: pd.DataFrame, clips: dict[str, Path]) -> None:
    df = reference.set_index("clip_id")
    assert dict(df["status"]) == EXPECTED
    assert df.attrs["duplicates"] == 0
    assert df["debug_weights"].all() and (df["score_version"] == SCORE_VERSION).all()
    assert df.attrs["meta"]["checkpoint_sha256"] == DEBUG_CHECKPOINT_TAG
    assert df.attrs["meta"]["debug_weights"] == "true"
    ok = df["status"] == "ok"
    assert df.loc[ok, "score"].between(-1, 1).all() and df.loc[~ok, "score"].isna().all()
    assert (df.loc[ok, "reason"] == "").all() and (df.loc[~ok, "reason"].str.len() > 0).all()
    assert df.loc["badfps_29_97_0_10000", "video_fps"] == pytest.approx(30000 / 1001)
    assert df.loc["badfps_50_0_10000", "num_frames"] == 100
    assert df.loc["synth0000_0_10000", "audio_sample_rate"] == 16000
    assert df.loc["synth0000_0_10000", "duration"] == pytest.approx(2.0)
    # failures keep whatever decode facts a probe still gives
    assert df.loc["badvideo_only_0_10000", "video_fps"] == pytest.approx(25.0)
    assert pd.isna(df.loc["badvideo_only_0_10000", "audio_sample_rate"])
    assert df.loc["badaudio_only_0_10000", "audio_channels"] == 1
    assert df.loc["badshort_0_10000", "duration"] < 1.0
    assert pd.isna(df.loc["gone_0_10000", "duration"])
    assert "file not found" in df.loc["gone_0_10000", "reason"]
    assert df.loc["gone_0_10000", "split"] == "test" and df.loc["synth0002_0_10000", "label"] == "playing drum"


def test_batched_scores_equal_single_clip_scores(reference: pd.DataFrame, clips: dict[str, Path]) -> None:
    from visualsound.imagebind import load_imagebind, preprocess_clip

    model = load_imagebind(debug_weights=True)
    df = reference.set_index("clip_id")
    for cid in ("synth0001_0_10000", "badfps_29_97_0_10000"):
        video, audio, _ = preprocess_clip(df.loc[cid, "path"])
        with torch.inference_mode():
            single = float(model.score(video[None], audio[None])[0])
        assert df.loc[cid, "score"] == pytest.approx(single, abs=1e-5), cid
    assert df.loc[df["status"] == "ok", "score"].nunique() == 6  # content-dependent scores


def test_half_precision_scores_track_fp32(reference: pd.DataFrame) -> None:
    from visualsound.imagebind import load_imagebind, preprocess_clip

    model = load_imagebind(debug_weights=True)
    ok = reference.loc[reference["status"] == "ok"].head(1)  # half precision is emulated (slow) on CPUs
    video, audio = (torch.stack(t) for t in zip(*(preprocess_clip(p)[:2] for p in ok["path"])))
    with torch.inference_mode():
        fp32 = score_batch(model, video, audio, torch.device("cpu"), "fp32")
        assert fp32.dtype == torch.float32 and fp32.shape == (1,)
        torch.testing.assert_close(fp32.double(), torch.tensor(ok["score"].to_numpy()), rtol=0, atol=1e-5)
        for dtype in ("bf16", "fp16"):
            half = score_batch(model, video, audio, torch.device("cpu"), dtype)
            assert half.dtype == torch.float32
            torch.testing.assert_close(half, fp32, rtol=0, atol=0.02, msg=dtype)


def test_worker_exception_becomes_error_row_then_retried(clips: dict[str, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         reference: pd.DataFrame) -> None:
    import visualsound.imagebind as ib

    real = ib.preprocess_clip

    def flaky(path: str, silence_threshold: float | None = None):
        if "synth0003" in str(path):
            raise RuntimeError("decoder exploded")
        return real(path, silence_threshold=silence_threshold)

    index = index_clips(clips["csv"], clips["videos"], "vggsound")
    monkeypatch.setattr(ib, "preprocess_clip", flaky)
    s = score_clips(index, tmp_path, CFG, debug_weights=True, progress=False)
    assert s.statuses["error"] == 1 and s.scored == len(EXPECTED)
    row = read_scores(tmp_path).set_index("clip_id").loc["synth0003_0_10000"]
    assert row["status"] == "error" and row["reason"] == "RuntimeError: decoder exploded"
    assert row["duration"] == pytest.approx(2.0)  # facts from a probe
    monkeypatch.setattr(ib, "preprocess_clip", real)
    s2 = score_clips(index, tmp_path, CFG, debug_weights=True, progress=False)
    assert (s2.skipped, s2.scored, s2.statuses) == (len(EXPECTED) - 1, 1, {"ok": 1})
    df = read_scores(tmp_path)
    assert len(df) == len(EXPECTED) and df.attrs["duplicates"] == 1  # the old error row is superseded
    pd.testing.assert_frame_equal(df.drop(columns="path"), reference.drop(columns="path"), check_like=True,
                                  check_exact=False, atol=1e-6)


def test_crashed_worker_blames_its_clip_and_the_job_goes_on(clips: dict[str, Path], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            reference: pd.DataFrame) -> None:
    import visualsound.imagebind as ib

    real = ib.preprocess_clip

    def segfaulting(path: str, silence_threshold: float | None = None):
        if "synth0001" in str(path) and torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGSEGV)  # what a decoder bug does to a worker
        return real(path, silence_threshold=silence_threshold)

    monkeypatch.setattr(ib, "preprocess_clip", segfaulting)  # inherited by the forked workers
    index = index_clips(clips["csv"], clips["videos"], "vggsound")
    s = score_clips(index, tmp_path, CFG.replace(workers=2, batch_size=2), debug_weights=True, progress=False)
    assert s.scored == len(EXPECTED) and s.statuses["error"] == 1 and not s.stopped_early
    df = read_scores(tmp_path).set_index("clip_id")
    assert df.attrs["duplicates"] == 0 and len(df) == len(EXPECTED)
    crashed = df.loc["synth0001_0_10000"]
    assert crashed["status"] == "error" and "worker crashed" in crashed["reason"]
    others = df.drop(index="synth0001_0_10000")
    ref = reference.set_index("clip_id").drop(index="synth0001_0_10000")
    pd.testing.assert_frame_equal(others, ref, check_exact=False, atol=1e-6)
    with pytest.raises(ScoringError, match="crashed 1 times"):  # a systematic crash stops the job
        score_clips(index, tmp_path / "again", CFG.replace(workers=1, max_worker_crashes=0), debug_weights=True,
                    progress=False)


def test_a_slow_file_does_not_hold_back_the_other_workers(clips: dict[str, Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import visualsound.imagebind as ib

    real = ib.preprocess_clip
    index = index_clips(clips["csv"], clips["videos"], "vggsound")
    first_id, first_path = index["clip_id"].iloc[0], index["path"].iloc[0]

    def slow_first(path: str, silence_threshold: float | None = None):
        if str(path) == first_path:
            time.sleep(3.0)
        return real(path, silence_threshold=silence_threshold)

    monkeypatch.setattr(ib, "preprocess_clip", slow_first)
    s = score_clips(index, tmp_path, CFG.replace(workers=2, batch_size=1), debug_weights=True, progress=False)
    assert s.scored == len(EXPECTED) and len(s.shards) == 1
    order = pq.read_table(s.shards[0]).column("clip_id").to_pylist()  # rows in the order batches were scored
    assert order.index(first_id) > 1, order


def test_resume_refuses_another_recipe(clips: dict[str, Path], tmp_path: Path) -> None:
    index = index_clips(clips["csv"], clips["videos"], "vggsound")
    old, young = tmp_path / ".scores-a.parquet.x1.tmp", tmp_path / ".scores-b.parquet.x2.tmp"  # killed writes
    for p in (old, young):
        p.write_bytes(b"PAR1 partial")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    s = score_clips(index, tmp_path, CFG, debug_weights=True, max_batches=1, progress=False)
    assert s.stopped_early and s.scored == CFG.batch_size and s.remaining == len(EXPECTED) - CFG.batch_size
    assert not old.exists() and young.exists()  # a young one may be a concurrent writer's
    for change in ({"dtype": "bf16"}, {"min_duration": 0.0}, {"silence_threshold": None}):
        with pytest.raises(ScoringError, match=next(iter(change))):
            score_clips(index, tmp_path, CFG.replace(**change), debug_weights=True, progress=False)
    assert len(read_scores(tmp_path)) == CFG.batch_size  # nothing was written by the refused run


def _run_cli(*args: str, env: dict[str, str] | None = None) -> str:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False, env=env)
    assert res.exit_code == 0, res.output
    return res.stdout


def test_cli_slurm_array_and_torchrun_ranks_share_one_folder(clips: dict[str, Path], tmp_path: Path,
                                                             reference: pd.DataFrame) -> None:
    """``--shard auto`` in 2 SLURM array tasks x 2 torchrun ranks, all writing into one OUT: every clip once,
    the scores of the unsharded run."""
    common = ["score", "--csv", str(clips["csv"]), "--videos", str(clips["videos"]), "--workers", "0",
              "--batch-size", "2", "--out", str(tmp_path / "shared"), "--shard", "auto", "--json", *CLI_FILTERS]
    seen = []
    for task in range(2):
        for rank in range(2):
            env = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": "2", "RANK": str(rank),
                   "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)}
            info = json.loads(_run_cli(*common, env=env))
            assert info["shard"] == f"{rank * 2 + task}/4" and info["skipped"] == 0
            seen.append(info["in_shard"])
    assert sum(seen) == len(EXPECTED)
    df = read_scores(tmp_path / "shared")
    pd.testing.assert_frame_equal(df, reference, check_exact=False, atol=1e-6)


def test_cli_shards_interrupt_resume_merge_build_report(clips: dict[str, Path], tmp_path: Path,
                                                         reference: pd.DataFrame) -> None:
    common = ["score", "--csv", str(clips["csv"]), "--videos", str(clips["videos"]), "--workers", "0",
              "--batch-size", "2", *CLI_FILTERS]
    a, b = tmp_path / "s0", tmp_path / "s1"
    first = json.loads(_run_cli(*common, "--out", str(a), "--shard", "0/2", "--max-batches", "1", "--json"))
    assert first["stopped_early"] and first["scored"] == 2 and first["remaining"] > 0
    resumed = json.loads(_run_cli(*common, "--out", str(a), "--shard", "0/2", "--json"))
    assert resumed["skipped"] == 2 and resumed["remaining"] == 0 and not resumed["stopped_early"]
    out = _run_cli(*common, "--out", str(b), "--shard", "1/2")
    assert out.startswith("DEBUG WEIGHTS") and "clips/s" in out
    again = json.loads(_run_cli(*common, "--out", str(b), "--shard", "1/2", "--json"))
    assert again["scored"] == 0 and again["skipped"] == again["in_shard"]
    for folder, i in ((a, 0), (b, 1)):
        raw = pd.concat([pq.read_table(p).to_pandas() for p in folder.glob("*.parquet")])
        assert not raw["clip_id"].duplicated().any()
        assert {shard_of(c, 2) for c in raw["clip_id"]} == {i}
    assert first["in_shard"] + again["in_shard"] == len(EXPECTED)

    merged = tmp_path / "merged"
    assert "14 clips" in _run_cli("merge", str(a), str(b), "--out", str(merged))
    df = read_scores(merged)
    assert len(df) == len(EXPECTED) and not df["clip_id"].duplicated().any()
    pd.testing.assert_frame_equal(df, reference, check_exact=False, atol=1e-6)

    vs = tmp_path / "vs"
    _run_cli("build", "--scores", str(merged), "--threshold", "-1", "--out", str(vs))
    summary = json.loads((vs / "summary.json").read_text())
    assert summary["debug_weights"] is True and summary["checkpoint_sha256"] == DEBUG_CHECKPOINT_TAG
    assert summary["scored_total"] == len(EXPECTED) and summary["total_kept"] == 6
    assert summary["rejected"]["missing"] == 1 and summary["rejected"]["corrupt"] == 2
    kept = set().union(*((vs / f"visualsound_{s}.txt").read_text().split() for s in ("train", "validation", "test")))
    assert kept == {c for c, s in EXPECTED.items() if s == "ok"}
    assert set((vs / "visualsound_test.txt").read_text().split()) == set(
        reference.loc[(reference["status"] == "ok") & (reference["split"] == "test"), "clip_id"])
    rep = tmp_path / "report"
    assert "DEBUG WEIGHTS" in _run_cli("report", "--scores", str(merged), "--out", str(rep))
    assert (rep / "report.md").is_file()

    # the missing clip gets downloaded later: --retry missing scores just that clip again
    videos = shutil.copytree(clips["videos"], tmp_path / "videos2")
    shutil.copy(videos / "synth0000_000000.mp4", videos / "gone_000000.mp4")
    folder, i = (a, 0) if shard_of("gone_0_10000", 2) == 0 else (b, 1)
    retried = json.loads(_run_cli(*common, "--videos", str(videos), "--out", str(folder), "--shard", f"{i}/2",
                                  "--retry", "missing", "--json"))
    assert (retried["scored"], retried["statuses"]) == (1, {"ok": 1})
    row = read_scores(folder).set_index("clip_id").loc["gone_0_10000"]
    assert row["status"] == "ok" and row["score"] == pytest.approx(reference.set_index("clip_id").loc[
        "synth0000_0_10000", "score"], abs=1e-6)


def test_cli_errors_are_clean(clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAURA_CACHE_DIR", str(tmp_path / "empty_cache"))
    base = ["score", "--csv", str(clips["csv"]), "--videos", str(clips["videos"]), "--out", str(tmp_path / "o"),
            "--workers", "0", "--no-progress"]
    junk = tmp_path / "junk.pth"  # a readable torch file without ImageBind's keys
    torch.save({"foreign.weight": torch.zeros(2)}, junk)
    cfg_file = tmp_path / "scoring.yaml"
    cfg_file.write_text("batch_size: 0\n")
    for extra, message in ((["--shard", "2/2", "--debug-weights"], "--shard"),
                           (["--config", str(cfg_file), "--debug-weights"], "batch_size (0)"),
                           (["--config", "nope", "--debug-weights"], "neither a preset"),
                           ([], "imagebind_huge"),  # no weights in the cache: WeightsNotFoundError
                           (["--checkpoint", str(junk)], "foreign.weight"),
                           (["--checkpoint", str(junk), "--debug-weights"], "not both"),
                           *([(["--device", "cuda", "--debug-weights"], "CUDA is not available")]
                             if not torch.cuda.is_available() else [])):
        res = CliRunner().invoke(main, base + extra)
        assert res.exit_code == 2, (extra, res.output)
        assert message in res.output and "Traceback" not in res.output, (extra, res.output)
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.parquet"))


def _spawn_score(clips: dict[str, Path], out: Path) -> subprocess.Popen:
    """`visualsound score` in its own session (process group), so that it can be killed with its workers."""
    cmd = [sys.executable, "-c", "from visualsound.cli import main; main()", "score", "--csv", str(clips["csv"]),
           "--videos", str(clips["videos"]), "--out", str(out), "--workers", "2", "--batch-size", "1",
           *CLI_FILTERS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


@pytest.mark.slow  # a fresh interpreter (torch import) + worker processes: ~10-20 s on a shared CPU
def test_sigkill_mid_run_then_resume_with_workers(clips: dict[str, Path], tmp_path: Path,
                                                  reference: pd.DataFrame) -> None:
    out = tmp_path / "scores"
    proc = _spawn_score(clips, out)
    deadline = time.monotonic() + 90
    while not list(out.glob("*.parquet")):
        if proc.poll() is not None:
            pytest.fail(f"score exited ({proc.returncode}) before writing a shard: {proc.stderr.read().decode()}")
        assert time.monotonic() < deadline, "no shard after 90 s"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the job and its DataLoader workers, at an arbitrary moment
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    partial = read_scores(out)
    assert 0 < len(partial) < len(EXPECTED), "the kill did not land mid-run"
    assert all(p.stat().st_size > 0 for p in out.glob("*.parquet"))

    index = index_clips(clips["csv"], clips["videos"], "vggsound")  # resume in-process, same worker count
    s = score_clips(index, out, CFG.replace(workers=2, batch_size=1), debug_weights=True, progress=False)
    assert (s.skipped, s.scored, s.remaining) == (len(partial), len(EXPECTED) - len(partial), 0)
    print(f"workers=2 scoring: {s.clips_per_second:.2f} clips/s over {s.scored} clips (debug model, CPU)")
    raw = pd.concat([pq.read_table(p).to_pandas() for p in out.glob("*.parquet")])
    assert len(raw) == len(EXPECTED) and not raw["clip_id"].duplicated().any()  # nothing lost, nothing twice
    df = read_scores(out)
    pd.testing.assert_frame_equal(df, reference, check_exact=False, atol=1e-6)
    assert all(math.isfinite(s) for s in df.loc[df["status"] == "ok", "score"])


def test_folder_mode_extensions_and_refusals(tmp_path: Path) -> None:
    """`score --videos DIR` without a csv: clip id = file stem, every video extension (.mpg, .ogv, ...), other
    files listed as not scored; duplicate stems refused; a re-run with another --silence-threshold on the
    finished folder refused with a message naming the setting."""
    from tests.odd_media import encode

    videos = tmp_path / "videos"
    videos.mkdir()
    encode(videos / "a.mpg", codec="mpeg1video", n=25, fps=25, audio="mp2", audio_seconds=1.0)
    encode(videos / "b.ogv", codec="libvpx", fmt="ogg", n=10, fps=10, audio="libopus", audio_seconds=1.0)
    encode(videos / "c.mkv", n=25, fps=25, audio="aac", audio_seconds=1.0)
    (videos / "notes.txt").write_text("not a video")
    out = tmp_path / "scores"
    args = ["score", "--videos", str(videos), "--out", str(out), "--workers", "0", "--debug-weights",
            "--no-progress"]
    res = CliRunner().invoke(main, [*args, "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["not_videos"] == 1 and info["statuses"] == {"ok": 3}, info
    df = read_scores(out)
    assert sorted(df["clip_id"]) == ["a", "b", "c"] and (df["bad_packets"] == 0).all()
    assert df.set_index("clip_id").loc["b", "video_fps"] == 10  # Ogg: no average rate, the guessed one
    res = CliRunner().invoke(main, [*args, "--silence-threshold", "0.01"])
    assert res.exit_code == 2 and "silence_threshold" in res.output and str(out) in res.output, res.output
    encode(videos / "c.webm", codec="libvpx-vp9", n=5, fps=25)
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "c.mkv" in res.output and "c.webm" in res.output, res.output


def test_missing_clips_name_the_path_and_pattern(clips: dict[str, Path], tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["score", "--csv", str(clips["csv"]), "--videos", str(clips["videos"]),
                                    "--pattern", "vaura", "--out", str(tmp_path), "--workers", "0",
                                    "--debug-weights", "--no-progress", "--max-batches", "1"])
    assert res.exit_code == 0, res.output
    assert "pattern 'vaura'" in res.stderr and "e.g. looked for" in res.stderr
    assert str(clips["videos"] / "synth0000_0_10000.mp4") in res.stderr


def test_shards_written_before_bad_packets_are_read_with_nulls(tmp_path: Path) -> None:
    import pyarrow as pa

    from visualsound.scores_io import SCHEMA, rows_to_table

    row = {"clip_id": "a_0_10000", "youtube_id": "a", "start_seconds": 0, "label": "x", "split": "train",
           "path": "a.mp4", "score": 0.5, "status": "ok", "reason": "", "video_fps": 25.0, "duration": 2.0,
           "audio_sample_rate": 16000, "audio_channels": 1, "num_frames": 50, "score_version": SCORE_VERSION,
           "debug_weights": True}
    table = rows_to_table([row])  # a row without bad_packets: null
    assert table.column("bad_packets").to_pylist() == [None]
    old = table.drop(["bad_packets"])
    assert old.schema != SCHEMA
    pq.write_table(old, tmp_path / "scores-old.parquet")
    df = read_scores(tmp_path)
    assert list(df.columns) == list(SCHEMA.names) and df["bad_packets"].isna().all()
    assert isinstance(pa.Table.from_pandas(df), pa.Table)
