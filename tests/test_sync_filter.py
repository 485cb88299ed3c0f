"""The in-sync filter: `vaura sync-filter` (windows, counting, thresholds, resume, shards, crash tolerance) and
`visualsound build --sync-filter`.

Two kinds of judge:

- the debug (seeded random tiny) Synchformer, end to end through the CLI on `visualsound synth` clips: it cannot
  judge sync, so these tests check plumbing (rows, statuses, windows, resume, shards) and that the shared-segment
  computation equals Synchformer's own per-window prediction;
- `EnvelopePredictor`, injected at the job's model interface (`filter_clips(predictor=...)`): it estimates each
  window's offset from the window signals the job hands it (cross-correlating the audio energy onsets with the
  frames' brightness onsets of synthetic flashes / drum hits) and maps it to the nearest of the 21 classes. On
  clips whose audio is shifted by a known amount it must find exactly that shift in every window, so a window cut
  from the wrong frames or samples, or a wrong sign, fails the test; shifted clips must be rejected.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from vaura.sync_filter import (
    ClipWindows,
    SyncFilterConfig,
    SyncFilterJobError,
    SynchformerWindows,
    filter_clips,
    load_clip,
)
from vaura.synchformer import preprocess as P
from visualsound.errors import ConfigError
from visualsound.scores_io import ScoresSchemaError, write_shard
from visualsound.sync_io import (
    SYNC_FORMAT,
    SyncFilterError,
    SyncFilterSpec,
    decide,
    default_min_sync_windows,
    parse_min_windows_spec,
    read_sync_results,
    sync_keep_mask,
)
from visualsound.vggsound import VGGSoundIndexError, index_folder

FPS = 25
DURATION = 7.2  # 180 frames: 16 windows at the default stride of 4 frames
SHIFTS = (0, 2, 15, -25)  # audio delay in frames: in sync, 0.08 s (under half a class), 0.6 s late, 1.0 s early


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------ the test judge
class EnvelopePredictor:
    """A deterministic judge of synthetic flash / drum clips (see the module docstring). ``lags[clip_id]``: the
    audio delay in frames it found in each window (positive: the sound comes after the picture). Offsets follow
    Synchformer's convention: audio delayed by d seconds is offset -d (its crop of the audio starts at
    ``vstart + offset``)."""

    MAX_LAG = 50  # frames = 2.0 s, the class grid's range

    def __init__(self) -> None:
        self.offsets = torch.tensor([-2.0 + 0.2 * i for i in range(21)])
        self.lags: dict[str, list[int]] = {}

    @staticmethod
    def _onsets(x: torch.Tensor) -> torch.Tensor:
        d = torch.zeros_like(x)
        d[1:] = (x[1:] - x[:-1]).clamp(min=0)
        return d / d.max().clamp(min=1e-12)

    def __call__(self, clip: ClipWindows) -> torch.Tensor:
        video, audio = clip.windows()  # [W, 120, 224, 224, 3] uint8, [W, 76800]
        probs, lags = [], []
        for v, a in zip(video, audio):
            bright = v[:, ::8, ::8].sum(dim=(1, 2, 3), dtype=torch.int64).double()  # [120]
            energy = a.double().reshape(v.shape[0], P.SAMPLES_PER_FRAME).pow(2).sum(-1)  # [120]
            vo, ao = self._onsets(bright), self._onsets(energy)
            t = vo.numel()
            corr = torch.stack([(vo[max(0, -lag):t - max(0, lag)] * ao[max(0, lag):t - max(0, -lag)]).sum()
                                for lag in range(-self.MAX_LAG, self.MAX_LAG + 1)])
            lag = int(corr.argmax()) - self.MAX_LAG
            cls = min(max(int(round((-lag / FPS + 2.0) / 0.2)), 0), 20)
            p = torch.full((21,), 0.2 / 20)
            p[cls] = 0.8
            lags.append(lag)
            probs.append(p)
        self.lags[clip.clip_id] = lags
        return torch.stack(probs)


def _sidon_frames(lo: int, hi: int, gap: int) -> list[int]:
    """Event frames at least `gap` apart whose pairwise differences are all distinct: a wrong lag can line up at
    most one pair of events, the true lag all of them."""
    chosen: list[int] = []
    diffs: set[int] = set()
    for c in range(lo, hi):
        new = {c - x for x in chosen}
        if all(d >= gap for d in new) and not new & diffs:
            chosen.append(c)
            diffs |= new
    return chosen


@pytest.fixture(scope="module")
def shifted_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Flash and drum clips (7.2 s, 64 x 64, 16 kHz) whose audio is delayed by each of `SHIFTS` frames; file
    ``{kind}_{shift}.mp4``."""
    from visualsound.media import write_video
    from visualsound.synth import LABELS, ClipSpec, SynthConfig, render_audio, render_video

    root = tmp_path_factory.mktemp("shifted")
    cfg = SynthConfig(count=1, duration=DURATION, width=64, height=64, sample_rate=16000, mismatched_fraction=0.0)
    n = int(DURATION * FPS)
    events = _sidon_frames(3, n - 2, 8)
    assert len(events) >= 10, events
    for kind in ("flash", "drum"):
        for shift in SHIFTS:
            spec = ClipSpec(index=0, ytid=f"{kind}{shift}", event_type=kind, label=LABELS[kind], split="train",
                            matched=shift == 0, mismatch=None, visual_events=tuple(k / FPS for k in events),
                            audio_events=tuple((k + shift) / FPS for k in events if 0 <= k + shift < n - 3))
            write_video(root / f"{kind}_{shift}.mp4", render_video(spec, cfg), cfg.fps, render_audio(spec, cfg),
                        cfg.sample_rate)
    return root


# ------------------------------------------------------------------------------------------------ the logic test
def test_known_offsets_are_found_in_every_window_and_shifted_audio_is_rejected(shifted_clips: Path,
                                                                                tmp_path: Path) -> None:
    judge = EnvelopePredictor()
    cfg = SyncFilterConfig(workers=0, split="validation")  # threshold 5 of 16 windows
    s = filter_clips(index_folder(shifted_clips)[0], tmp_path, cfg, predictor=judge, progress=False)
    assert s.judged == 8 and s.statuses == {"ok": 8} and s.passed == 4
    df = read_sync_results(tmp_path).set_index("clip_id")
    for kind in ("flash", "drum"):
        for shift in SHIFTS:
            cid = f"{kind}_{shift}"
            row = df.loc[cid]
            windows = (int(DURATION * FPS) - P.WINDOW_FRAMES) // 4 + 1
            assert row["num_windows"] == windows == 16
            np.testing.assert_allclose(row["window_start_sec"], np.arange(windows) * 0.16, atol=1e-9)
            # the judge saw the true delay, to the frame, in every window: windows are cut where they claim
            assert judge.lags[cid] == [shift] * windows, (cid, judge.lags[cid])
            expected_offset = round(-shift / FPS / 0.2) * 0.2  # nearest class, Synchformer's sign
            np.testing.assert_allclose(row["window_offset_sec"], expected_offset, atol=1e-6)
            in_sync = abs(shift) / FPS < 0.1
            assert row["in_sync_windows"] == (windows if in_sync else 0), cid
            assert bool(row["passed"]) is in_sync, cid
            assert row["min_sync_windows"] == 5 and row["count_key"] == "exact"
            np.testing.assert_allclose(row["window_p_sync"], 0.8 if in_sync else 0.01, atol=1e-6)
            np.testing.assert_allclose(row["window_p_top"], 0.8, atol=1e-6)


def test_the_judge_detects_misaligned_windows(shifted_clips: Path) -> None:
    """The test judge is sensitive to a misalignment of a few frames (what a windowing bug would introduce)."""
    item = load_clip({"clip_id": "flash_0", "path": str(shifted_clips / "flash_0.mp4")})
    audio = torch.roll(item["audio"], 3 * P.SAMPLES_PER_FRAME)  # the sound 3 frames late
    judge = EnvelopePredictor()
    judge(ClipWindows(item["frames"], audio, 4, "late"))
    assert set(judge.lags["late"][1:]) == {3}  # (window 0 sees the wrapped-around tail)


def test_tolerance_count_and_thresholds_on_known_offsets(shifted_clips: Path, tmp_path: Path) -> None:
    """tol1 counts windows within one class (0.2 s) of offset 0; a 0.6 s shift is still out."""
    index = index_folder(shifted_clips)[0]
    index = index[index["clip_id"].str.startswith("flash")]
    cfg = SyncFilterConfig(workers=0, count_key="tol1", min_sync_windows=16)
    filter_clips(index, tmp_path, cfg, predictor=EnvelopePredictor(), progress=False)
    df = read_sync_results(tmp_path).set_index("clip_id")
    assert df["in_sync_windows_tol1"].to_dict() == {"flash_-25": 0, "flash_0": 16, "flash_15": 0, "flash_2": 16}
    assert df["passed"].to_dict() == {"flash_-25": False, "flash_0": True, "flash_15": False, "flash_2": True}


# ------------------------------------------------------------------------------------------------ windows
def test_clip_windows_cut_the_right_frames_and_samples() -> None:
    t = 130
    frames = torch.arange(t, dtype=torch.uint8)[:, None, None, None].expand(t, 224, 224, 3).contiguous()
    audio = torch.arange(t * P.SAMPLES_PER_FRAME, dtype=torch.float32)
    clip = ClipWindows(frames, audio, stride_frames=4)
    assert clip.num_windows == 3 and clip.starts.tolist() == [0, 4, 8]
    v, a = clip.windows()
    assert v.shape == (3, 120, 224, 224, 3) and a.shape == (3, P.WINDOW_SAMPLES)
    assert v.data_ptr() == frames.data_ptr()  # views, no copy
    for w, s in enumerate(clip.starts.tolist()):
        assert v[w, :, 0, 0, 0].tolist() == list(range(s, s + 120))
        assert a[w, 0] == s * P.SAMPLES_PER_FRAME and a[w, -1] == (s + 120) * P.SAMPLES_PER_FRAME - 1
    assert clip.segment_starts()[1].tolist() == [4 + 8 * i for i in range(14)]
    with pytest.raises(AssertionError, match="audio must be"):
        ClipWindows(frames, audio[:-1], 4)


def test_chunked_decoding_equals_one_read_and_max_seconds(shifted_clips: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import vaura.sync_filter as SF
    from visualsound.media import read_video

    path = str(shifted_clips / "drum_0.mp4")
    whole = SF._prepared(read_video(path, fps=FPS, apply_rotation=True))
    monkeypatch.setattr(SF, "DECODE_CHUNK_SECONDS", 1.2)  # 180 frames in 6 chunks (the last one exact)
    chunked, longer = SF.read_prepared_frames(path, None)
    assert not longer and torch.equal(chunked, whole) and whole.shape == (180, 224, 224, 3)
    part, longer = SF.read_prepared_frames(path, 5.0)
    assert longer and torch.equal(part, whole[:125])
    item = load_clip({"clip_id": "d", "path": path}, max_seconds=5.0)
    assert item["row"]["duration"] == 5.0 and "first 5 s" in item["row"]["reason"]
    assert item["audio"].shape == (125 * P.SAMPLES_PER_FRAME,)


def test_shared_segments_equal_per_window_synchformer() -> None:
    """`SynchformerWindows` (each segment encoded once) == `predict_windows` on every window (paper pixels)."""
    from vaura.synchformer import load_sync_model, predict_windows

    g = torch.Generator().manual_seed(0)
    t = 132
    clip = ClipWindows(torch.randint(0, 256, (t, 224, 224, 3), dtype=torch.uint8, generator=g),
                       0.1 * torch.randn(t * P.SAMPLES_PER_FRAME, generator=g), stride_frames=6)
    model = load_sync_model(debug_weights=True)
    shared = SynchformerWindows(model, segment_batch=5, window_batch=2)(clip)
    v, a = clip.windows()
    ref = predict_windows(model, v.contiguous(), a.contiguous(), normalisation="fp16")
    assert shared.shape == ref.shape == (3, 21)
    torch.testing.assert_close(shared, ref, rtol=0, atol=1e-6)
    assert (ref - ref[0]).abs().max() > 1e-4  # windows differ, so a wrongly gathered segment would show


# ------------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def synth_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`visualsound synth` clips (3 x 6 s) + a short and a broken file, a VGGSound csv listing one absent clip."""
    from visualsound.cli import main as vs_main
    from visualsound.synth import make_bad_clips

    root = tmp_path_factory.mktemp("synth")
    res = CliRunner().invoke(vs_main, ["synth", "--out", str(root), "--count", "3", "--duration", "6", "--size",
                                       "64", "--mismatched-fraction", "0"])
    assert res.exit_code == 0, res.output
    zoo = make_bad_clips(root / "bad")
    for name in ("short", "not_media", "video_only"):
        os.replace(zoo[name].path, root / "video" / f"bad{name}_000000.mp4")
    rows = (root / "synth.csv").read_text().splitlines()
    rows += ["badshort,0,short,train", "badnot_media,0,broken,train", "badvideo_only,0,silent film,test",
             "gone,0,never downloaded,test"]
    (root / "all.csv").write_text("\n".join(rows) + "\n")
    return {"csv": root / "all.csv", "videos": root / "video"}


EXPECTED_STATUS = {"synth0000_0_10000": "ok", "synth0001_0_10000": "ok", "synth0002_0_10000": "ok",
                   "badshort_0_10000": "too_short", "badnot_media_0_10000": "corrupt",
                   "badvideo_only_0_10000": "no_audio", "gone_0_10000": "missing"}


def _vaura(*args: str) -> str:
    from vaura.cli import main

    res = CliRunner().invoke(main, ["sync-filter", *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.stdout


def test_cli_debug_weights_shards_interrupt_resume(synth_set: dict[str, Path], tmp_path: Path) -> None:
    from visualsound.utils.shard import shard_of

    out = tmp_path / "sync"
    base = ["--videos", str(synth_set["videos"]), "--csv", str(synth_set["csv"]), "--out", str(out),
            "--debug-weights", "--workers", "0", "--no-progress", "--json"]
    first = json.loads(_vaura(*base, "--shard", "0/2"))
    part = json.loads(_vaura(*base, "--shard", "1/2", "--max-batches", "1", "--config", "tiny"))
    assert part["stopped_early"] and part["judged"] == 1 and part["remaining"] >= 1
    rest = json.loads(_vaura(*base, "--shard", "1/2"))
    assert rest["skipped"] == 1 and rest["remaining"] == 0 and first["debug_weights"]
    assert first["in_shard"] + rest["in_shard"] == len(EXPECTED_STATUS)
    df = read_sync_results(out).set_index("clip_id")
    assert df.attrs["duplicates"] == 0 and df.attrs["meta"]["debug_weights"] == "true"
    assert df["status"].to_dict() == EXPECTED_STATUS
    assert bool(df["debug_weights"].all())
    first_ids = {c for p in first["shards"] for c in pq.read_table(p).column("clip_id").to_pylist()}
    assert first_ids and all(shard_of(c, 2) == (0 if c in first_ids else 1) for c in df.index)  # own partitions
    ok = df[df["status"] == "ok"]
    assert (ok["num_windows"] == 8).all()  # 6 s: (150 - 120) / 4 + 1
    assert ok["duration"].tolist() == [6.0] * 3
    thresholds = {"train": 25, "test": 5}
    for _, r in df.iterrows():
        assert r["min_sync_windows"] == thresholds[r["split"]]  # each clip's VGGSound split, V-AURA's defaults
        assert bool(r["passed"]) == decide(r["in_sync_windows"], r["min_sync_windows"], r["status"])
    bad = df.loc["badshort_0_10000"]
    assert "needs 4.8 s" in bad["reason"] and len(bad["window_p_sync"]) == 0 and pd.isna(bad["num_windows"])
    assert "gone_000000.mp4: file not found" in df.loc["gone_0_10000", "reason"]
    again = json.loads(_vaura(*base))  # resume: everything is done
    assert (again["judged"], again["skipped"]) == (0, len(EXPECTED_STATUS))

    # the stored predictions are Synchformer's on the clip's windows
    from vaura.synchformer import load_sync_model

    cid = ok.index[0]
    item = load_clip({"clip_id": cid, "path": ok.loc[cid, "path"]})
    probs = SynchformerWindows(load_sync_model(debug_weights=True))(ClipWindows(item["frames"], item["audio"], 4))
    np.testing.assert_allclose(ok.loc[cid, "window_p_sync"], probs[:, 10].double().numpy(), atol=1e-6)
    np.testing.assert_allclose(ok.loc[cid, "window_p_top"], probs.max(-1).values.double().numpy(), atol=1e-6)
    assert ok.loc[cid, "in_sync_windows"] == int((probs.argmax(-1) == 10).sum())


def test_cli_plain_folder_needs_a_threshold(synth_set: dict[str, Path], tmp_path: Path) -> None:
    from vaura.cli import main

    args = ["sync-filter", "--videos", str(synth_set["videos"]), "--out", str(tmp_path), "--debug-weights",
            "--no-progress"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "--split train|validation|test or --min-sync-windows" in res.output
    assert not list(tmp_path.glob("*.parquet"))
    (tmp_path / "v").mkdir()
    for name in ("a.mp4", "a.webm"):
        (tmp_path / "v" / name).write_bytes(b"")
    with pytest.raises(VGGSoundIndexError, match="shared by several files"):
        index_folder(tmp_path / "v")


# ------------------------------------------------------------------------------------------------ robustness
def test_prediction_failure_is_the_clips_row_and_crashed_worker_is_blamed(shifted_clips: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import vaura.sync_filter as SF

    real = SF.load_clip

    def segfaulting(record, max_seconds=None):
        if record["clip_id"] == "drum_2" and torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGSEGV)  # what a decoder bug does to a worker
        return real(record, max_seconds)

    class Flaky(EnvelopePredictor):
        def __call__(self, clip):
            if clip.clip_id == "flash_15":
                raise RuntimeError("model exploded")
            return super().__call__(clip)

    monkeypatch.setattr(SF, "load_clip", segfaulting)
    cfg = SyncFilterConfig(workers=2, clips_per_batch=2, min_sync_windows=5)
    s = filter_clips(index_folder(shifted_clips)[0], tmp_path, cfg, predictor=Flaky(), predictor_tag="envelope",
                     progress=False)
    assert s.judged == 8 and s.statuses == {"error": 2, "ok": 6}
    df = read_sync_results(tmp_path).set_index("clip_id")
    assert "worker crashed" in df.loc["drum_2", "reason"]
    assert df.loc["flash_15", "reason"] == "RuntimeError: model exploded" and not df.loc["flash_15", "passed"]
    monkeypatch.setattr(SF, "load_clip", real)
    s2 = filter_clips(index_folder(shifted_clips)[0], tmp_path, cfg.replace(workers=0), predictor=EnvelopePredictor(),
                      predictor_tag="envelope", progress=False)
    assert (s2.skipped, s2.judged, s2.statuses) == (6, 2, {"ok": 2})  # error rows are retried
    df = read_sync_results(tmp_path).set_index("clip_id")
    assert df.attrs["duplicates"] == 2 and (df["status"] == "ok").all()
    assert df.loc["drum_2", "passed"] and not df.loc["flash_15", "passed"]


def test_new_threshold_redecides_without_the_model_and_recipes_do_not_mix(shifted_clips: Path,
                                                                          tmp_path: Path) -> None:
    index = index_folder(shifted_clips)[0]
    cfg = SyncFilterConfig(workers=0, min_sync_windows=5)
    filter_clips(index, tmp_path, cfg, predictor=EnvelopePredictor(), predictor_tag="envelope", progress=False)

    class NoModel(EnvelopePredictor):
        def __call__(self, clip):
            raise AssertionError("a re-decision must not run the model")

    s = filter_clips(index, tmp_path, cfg.replace(min_sync_windows=17), predictor=NoModel(),
                     predictor_tag="envelope", progress=False)
    assert (s.judged, s.redecided, s.skipped) == (0, 8, 8)
    df = read_sync_results(tmp_path)
    assert (df["min_sync_windows"] == 17).all() and not df["passed"].any()  # 16 windows < 17
    s = filter_clips(index, tmp_path, cfg.replace(split="train", min_sync_windows=None), predictor=NoModel(),
                     predictor_tag="envelope", progress=False)
    assert s.redecided == 8 and (read_sync_results(tmp_path)["min_sync_windows"] == 25).all()
    with pytest.raises(SyncFilterJobError, match="stride_frames"):
        filter_clips(index, tmp_path, cfg.replace(stride_sec=0.2), predictor=NoModel(), predictor_tag="envelope",
                     progress=False)
    with pytest.raises(SyncFilterJobError, match="checkpoint_sha256"):
        filter_clips(index, tmp_path, cfg, predictor=NoModel(), predictor_tag="another", progress=False)


# ------------------------------------------------------------------------------------------------ thresholds
def test_thresholds_follow_the_original() -> None:
    assert [default_min_sync_windows(s) for s in ("train", "validation", "val", "valid", "test")] == [25, 5, 5, 5, 5]
    cfg = SyncFilterConfig()
    assert (cfg.threshold_for("train"), cfg.threshold_for("test"), cfg.threshold_for(None)) == (25, 5, None)
    assert SyncFilterConfig(split="val").threshold_for("train") == 5
    assert SyncFilterConfig(split="val", min_sync_windows=9).threshold_for("train") == 9
    assert decide(25, 25) and not decide(24, 25) and not decide(30, 25, "too_short") and not decide(None, 0)
    assert parse_min_windows_spec("train=25,validation=5,test=5") == {"train": 25, "validation": 5, "test": 5}
    assert parse_min_windows_spec("val=7") == {"train": 25, "validation": 7, "test": 5}
    assert parse_min_windows_spec("3") == {"train": 3, "validation": 3, "test": 3}
    assert parse_min_windows_spec("stored") is None
    for bad in ("train", "train=x", "dev=3"):
        with pytest.raises(SyncFilterError):
            parse_min_windows_spec(bad)
    for bad in ({"stride_sec": 0.15}, {"stride_sec": 0}, {"count_key": "fuzzy"}, {"split": "dev"},
                {"min_sync_windows": -1}, {"dtype": "int8"}, {"max_seconds": 4.0}):
        with pytest.raises(ConfigError):
            SyncFilterConfig(**bad)


def _sync_row(cid: str, split: str | None, count: int, windows: int = 33, status: str = "ok",
              min_windows: int = 25, key: str = "exact") -> dict:
    ok = status == "ok"
    return dict(clip_id=cid, path=f"/v/{cid}.mp4", label="x", split=split, status=status,
                reason="" if ok else f"synthetic {status}", duration=10.0 if ok else None,
                window_start_sec=[0.16 * i for i in range(windows)] if ok else [],
                window_offset_sec=[0.0] * count + [0.4] * (windows - count) if ok else [],
                window_p_sync=[0.9] * count + [0.05] * (windows - count) if ok else [],
                window_p_top=[0.9] * windows if ok else [], num_windows=windows if ok else None,
                in_sync_windows=count if ok else None, in_sync_windows_tol1=count if ok else None, count_key=key,
                min_sync_windows=min_windows, passed=decide(count, min_windows, status),
                sync_version="synchformer-insync-v1", debug_weights=False)


def test_shard_names_made_in_a_row_sort_in_creation_order() -> None:
    """The newest shard wins a tie between two ok rows (a re-decision), also within one second."""
    from visualsound.scores_io import shard_name

    names = [shard_name("sync") for _ in range(200)]
    assert names == sorted(names) and len(set(names)) == len(names)


def test_result_rows_are_validated(tmp_path: Path) -> None:
    write_shard([_sync_row("a", "train", 30)], tmp_path, fmt=SYNC_FORMAT)
    bad = [_sync_row("b", "train", 30) | {"passed": False},  # contradicts its count
           _sync_row("c", "train", 30) | {"num_windows": 31},  # lists of 33
           _sync_row("d", "train", 0, status="corrupt") | {"passed": True},
           _sync_row("e", "train", 40, windows=33)]  # more in sync than windows
    for row in bad:
        with pytest.raises(ScoresSchemaError):
            write_shard([row], tmp_path, fmt=SYNC_FORMAT)
    assert read_sync_results(tmp_path)["clip_id"].tolist() == ["a"]


def test_keep_mask_per_split_thresholds_and_missing_clips() -> None:
    results = pd.DataFrame([_sync_row("t_hi", "train", 26), _sync_row("t_lo", "train", 6),
                            _sync_row("v_lo", "train", 6, key="tol1"), _sync_row("short", "train", 0,
                                                                                     status="too_short")])
    ids = pd.Series(["t_hi", "t_lo", "v_lo", "short", "absent"])
    splits = pd.Series(["train", "train", "validation", "test", "train"])
    keep, why = sync_keep_mask(ids, splits, results, parse_min_windows_spec("train=25,validation=5,test=5"))
    assert keep.tolist() == [True, False, True, False, True]
    assert why.tolist() == ["", "out_of_sync", "", "unjudged:too_short", ""]
    keep, why = sync_keep_mask(ids, splits, results, None, missing="drop")  # the stored decisions (all at 25)
    assert keep.tolist() == [True, False, False, False, False] and why.iloc[-1] == "not_in_result"


def test_build_applies_the_filter_and_reports_what_it_dropped(tmp_path: Path) -> None:
    from visualsound.cli import main as vs_main
    from visualsound.scores_io import SCORES
    from visualsound.vggsound import clip_id

    scores, sync = [], []
    for i in range(40):
        cid = clip_id(f"vid{i:03d}", 0)
        split = "test" if i % 4 == 0 else "train"
        score = 0.1 if i % 10 == 9 else 0.5  # 4 clips under the ImageBind threshold
        scores.append(dict(clip_id=cid, youtube_id=f"vid{i:03d}", start_seconds=0, label=f"l{i % 2}", split=split,
                           path=f"/v/{cid}.mp4", score=score, status="ok", reason="", video_fps=25.0, duration=10.0,
                           audio_sample_rate=16000, audio_channels=1, num_frames=250, score_version="ib-v1",
                           debug_weights=False))
        if i == 37:
            continue  # not in the sync result (an ImageBind-kept train clip)
        status = "too_short" if i == 38 else "ok"
        sync.append(_sync_row(cid, split, count=[30, 10, 3][i % 3], status=status,
                              min_windows=25 if split == "train" else 5))
    write_shard(scores, tmp_path / "scores", fmt=SCORES)
    write_shard(sync, tmp_path / "sync", fmt=SYNC_FORMAT, meta={"checkpoint_sha256": "cd" * 32})
    val = [s["clip_id"] for s in scores if s["split"] == "train"][::5]
    (tmp_path / "val.txt").write_text("\n".join(val) + "\n")
    base = ["build", "--scores", str(tmp_path / "scores"), "--threshold", "0.3", "--val-list",
            str(tmp_path / "val.txt")]

    res = CliRunner().invoke(vs_main, [*base, "--out", str(tmp_path / "plain")])
    assert res.exit_code == 0, res.output
    plain = json.loads((tmp_path / "plain" / "summary.json").read_text())
    assert "sync_filter" not in plain
    res = CliRunner().invoke(vs_main, [*base, "--out", str(tmp_path / "vs"), "--sync-filter",
                                       str(tmp_path / "sync")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "vs" / "summary.json").read_text())
    sf = summary["sync_filter"]

    # expected, from the rules: ImageBind first, then the per-split threshold on the stored count
    by_id = {r["clip_id"]: r for r in sync}
    vs_split = {s["clip_id"]: ("test" if s["split"] == "test" else "validation" if s["clip_id"] in val else "train")
                for s in scores}
    need = {"train": 25, "validation": 5, "test": 5}
    kept_ib = [s["clip_id"] for s in scores if s["score"] >= 0.3]
    expect_drop = {c: ("out_of_sync" if by_id[c]["status"] == "ok" else "unjudged:too_short")
                   for c in kept_ib if c in by_id and not decide(by_id[c]["in_sync_windows"], need[vs_split[c]],
                                                                 by_id[c]["status"])}
    assert sf["dropped_total"] == len(expect_drop) > 0
    assert sf["dropped"] == {s: sum(vs_split[c] == s for c in expect_drop) for s in need}
    assert sf["dropped_by_reason"] == dict(pd.Series(expect_drop).value_counts().sort_index())
    assert sf["candidates"] == plain["counts"] and sf["candidates_not_in_result"] == 1
    assert sf["min_sync_windows"] == need and sf["missing_policy"] == "keep"
    assert sf["checkpoint_sha256"] == "cd" * 32 and summary["debug_weights"] is False
    assert summary["total_kept"] == plain["total_kept"] - len(expect_drop)
    kept = {line for s in need for line in (tmp_path / "vs" / f"visualsound_{s}.txt").read_text().split()}
    assert kept == set(kept_ib) - set(expect_drop)
    # a validation clip with 10 windows in sync stays although its stored (train, 25) decision failed
    assert any(vs_split[c] == "validation" and by_id[c]["in_sync_windows"] == 10 for c in kept)

    res = CliRunner().invoke(vs_main, [*base, "--out", str(tmp_path / "strict"), "--sync-filter",
                                       str(tmp_path / "sync"), "--sync-min-windows", "stored", "--sync-missing",
                                       "drop"])
    assert res.exit_code == 0, res.output
    strict = json.loads((tmp_path / "strict" / "summary.json").read_text())["sync_filter"]
    assert strict["min_sync_windows"] == "stored decisions" and strict["dropped_by_reason"]["not_in_result"] == 1
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(vs_main, [*base, "--out", str(tmp_path / "x"), "--sync-filter", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "no sync-filter results" in res.output


def test_spec_marks_debug_results() -> None:
    df = pd.DataFrame([_sync_row("a", "train", 30) | {"debug_weights": True}])
    assert SyncFilterSpec(df).debug_weights
    with pytest.raises(SyncFilterError):
        SyncFilterSpec(df, missing="maybe")
