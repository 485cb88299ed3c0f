"""Synthetic clips: determinism, the plan (mismatch / split shares, labels), events that are really visible and
audible at the recorded times, the bad-input zoo, and the `visualsound synth` / `probe` CLIs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from visualsound.cli import main
from visualsound.errors import ConfigError
from visualsound.media import (
    NoAudioStreamError,
    NotMediaError,
    NoVideoStreamError,
    TruncatedMediaError,
    probe,
    read_audio,
    read_video,
)
from visualsound.synth import LABELS, MISMATCH_KINDS, SynthConfig, make_bad_clips, plan_clips, synthesize
from visualsound.vggsound import index_clips, read_vggsound_csv

CFG = SynthConfig(count=6, duration=2.0, width=64, height=64, sample_rate=16000, seed=3, mismatched_fraction=0.5,
                  test_fraction=0.5)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    records = synthesize(d, CFG)
    return d, records


def test_outputs_follow_vggsound_conventions(synth_dir):
    d, records = synth_dir
    assert [p.name for p in sorted((d / "video").iterdir())] == [f"synth{i:04d}_000000.mp4" for i in range(6)]
    df = read_vggsound_csv(d / "synth.csv")
    assert list(df["youtube_id"]) == [r["ytid"] for r in records]
    assert set(df["label"]) <= set(LABELS.values()) and set(df["start_seconds"]) == {0}
    idx = index_clips(d / "synth.csv", d / "video", pattern="vggsound")
    assert bool(idx["exists"].all())
    meta = json.loads((d / "events.json").read_text())
    assert meta["config"] == CFG.to_dict() and meta["clips"] == records
    info = probe(d / "video" / "synth0000_000000.mp4", require_video=True, require_audio=True)
    assert (info.width, info.height, info.num_frames, info.sample_rate, info.channels) == (64, 64, 50, 16000, 1)


def test_plan_shares_and_kinds():
    cfg = CFG.replace(count=40, mismatched_fraction=0.3, test_fraction=0.25)
    specs = plan_clips(cfg)
    assert sum(not s.matched for s in specs) == 12 and sum(s.split == "test" for s in specs) == 10
    assert {s.mismatch for s in specs if not s.matched} == set(MISMATCH_KINDS)
    assert {s.event_type for s in specs} == set(LABELS)
    for s in specs:
        assert all(0.2 - 1e-9 <= t <= cfg.duration - 0.2 + 1e-9 for t in s.visual_events + s.audio_events)
        if s.matched:
            assert s.visual_events == s.audio_events and len(s.visual_events) >= 1
        elif s.mismatch == "unrelated_audio":
            assert s.audio_events and min(abs(a - v) for a in s.audio_events for v in s.visual_events) >= 0.2 - 1e-9
        elif s.mismatch == "static_frames":
            assert s.visual_events == () and s.audio_events
        else:
            assert s.audio_events == () and s.visual_events
    assert plan_clips(cfg) == specs
    assert plan_clips(cfg.replace(seed=4)) != specs
    with pytest.raises(ConfigError, match="even"):
        cfg.replace(width=63)  # rejected when built, not only when planned
    with pytest.raises(ConfigError, match="mismatched_fraction"):
        SynthConfig(mismatched_fraction=1.5)


def test_same_seed_same_files(synth_dir, tmp_path):
    d, records = synth_dir
    again = synthesize(tmp_path, CFG)
    assert again == records
    assert (tmp_path / "synth.csv").read_bytes() == (d / "synth.csv").read_bytes()
    assert (tmp_path / "events.json").read_bytes() == (d / "events.json").read_bytes()
    for name in ("synth0000_000000.mp4", "synth0004_000000.mp4"):
        assert torch.equal(read_video(tmp_path / "video" / name), read_video(d / "video" / name))
        assert torch.equal(read_audio(tmp_path / "video" / name), read_audio(d / "video" / name))
    # the docstring's promise: the same config gives the same file content (x264 and FFmpeg's AAC are
    # deterministic, and nothing time-dependent is written)
    for p in sorted((d / "video").iterdir()):
        assert (tmp_path / "video" / p.name).read_bytes() == p.read_bytes(), p.name
    other = synthesize(tmp_path / "other", CFG.replace(seed=4))
    assert other != records


def _onsets(env: np.ndarray, thresh: float, refractory: int) -> list[int]:
    """Envelope indices where it first rises above `thresh`, ignoring rises within `refractory` of the last."""
    above = env > thresh
    out: list[int] = []
    for i in np.flatnonzero(above[1:] & ~above[:-1]) + 1:
        if not out or i - out[-1] >= refractory:
            out.append(int(i))
    return out


def test_events_are_visible_and_audible(synth_dir):
    d, records = synth_dir
    sr, fps = CFG.sample_rate, CFG.fps
    for r in records:
        v = read_video(d / r["file"]).float()
        a = read_audio(d / r["file"])[0].numpy()
        # audio: onsets of the 2 ms energy envelope sit at the recorded audio events (within 4 ms)
        hop = int(0.002 * sr)
        env = np.sqrt((a[: len(a) // hop * hop].reshape(-1, hop) ** 2).mean(1))
        if r["mismatch"] == "silence":
            assert np.abs(a).max() < 1e-3
        else:
            found = [k * hop / sr for k in _onsets(env, 0.05, refractory=int(0.25 * sr / hop))]
            assert len(found) == len(r["audio_events"]), (r, found)
            assert np.allclose(found, r["audio_events"], atol=0.004), (r, found)
        # video
        if r["mismatch"] == "static_frames":
            assert float((v[1:] - v[:-1]).abs().mean(dim=(1, 2, 3)).max()) < 0.5  # only x264 refinement
            continue
        ev = [int(round(t * fps)) for t in r["visual_events"]]
        if r["event_type"] == "flash":  # the brightest frames are the flashes
            bright = v.mean(dim=(1, 2, 3))
            assert sorted(torch.topk(bright, len(ev)).indices.tolist()) == ev
        elif r["event_type"] == "drum":  # the skin swells on the hit frames: most lit pixels
            lit = (v[..., 0] > 80).float().sum(dim=(1, 2))
            assert sorted(torch.topk(lit, len(ev)).indices.tolist()) == ev
        else:  # ball: its lowest point (largest row of yellow pixels) on the impact frames
            yellow = (v[..., 0] > 180) & (v[..., 1] > 140) & (v[..., 2] < 120)
            rows = torch.arange(v.shape[1])[None, :, None].expand_as(yellow)
            bottom = torch.where(yellow, rows, torch.zeros_like(rows)).amax(dim=(1, 2))
            assert all(int(bottom[k]) == int(bottom.max()) for k in ev), (r, bottom.tolist())


def test_bad_clip_zoo(tmp_path):
    zoo = make_bad_clips(tmp_path)
    assert set(zoo) == {"not_media", "empty", "truncated", "video_only", "audio_only", "silent", "short",
                        "fps_29_97", "fps_50"}
    errors = {"NotMediaError": NotMediaError, "TruncatedMediaError": TruncatedMediaError}
    for bad in zoo.values():
        if bad.probe_error:
            with pytest.raises(errors[bad.probe_error]):
                probe(bad.path)
        else:
            probe(bad.path)
    with pytest.raises(NoAudioStreamError):
        read_audio(zoo["video_only"].path)
    with pytest.raises(NoVideoStreamError):
        read_video(zoo["audio_only"].path)
    assert read_audio(zoo["audio_only"].path).shape == (1, 32000)
    assert read_audio(zoo["silent"].path).abs().max() < 1e-4
    assert read_video(zoo["short"].path, duration=2.56).shape[0] == 12  # window past the end: fewer frames
    assert probe(zoo["fps_29_97"].path).fps == pytest.approx(30000 / 1001)
    assert probe(zoo["fps_50"].path).num_frames == 100
    for name in ("fps_29_97", "fps_50"):
        assert read_video(zoo[name].path, start=0.0, duration=1.0, fps=25.0).shape == (25, 64, 64, 3)


def test_cli_synth_and_probe(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["synth", "--help"])
    assert res.exit_code == 0 and "--mismatched-fraction" in res.output and "--seed" in res.output
    res = runner.invoke(main, ["synth", "--out", str(tmp_path), "--preset", "tiny", "--count", "3", "--size", "48x32",
                               "--fps", "30", "--channels", "2", "--sample-rate", "22050", "--seed", "7",
                               "--bad-clips"])
    assert res.exit_code == 0, res.output
    assert "wrote 3 clips" in res.output and (tmp_path / "bad" / "truncated.mp4").exists()
    rows = pd.read_csv(tmp_path / "synth.csv", header=None)
    assert len(rows) == 3
    info = probe(tmp_path / "video" / "synth0002_000000.mp4")
    assert (info.width, info.height, info.fps, info.channels, info.sample_rate) == (48, 32, 30.0, 2, 22050)
    res = runner.invoke(main, ["probe", "--json", str(tmp_path / "video" / "synth0000_000000.mp4")])
    assert res.exit_code == 0 and json.loads(res.output)["num_frames"] == 30
    res = runner.invoke(main, ["probe", str(tmp_path / "video" / "synth0000_000000.mp4"),
                               str(tmp_path / "bad" / "not_media.mp4")])
    assert res.exit_code == 2 and "NotMediaError" in res.output and "30 frames" in res.output
    res = runner.invoke(main, ["probe", "--require-audio", str(tmp_path / "bad" / "video_only.mp4")])
    assert res.exit_code == 2 and "NoAudioStreamError" in res.output
    res = runner.invoke(main, ["synth", "--out", str(tmp_path / "x"), "--size", "63"])
    assert res.exit_code == 2 and "even" in res.output
