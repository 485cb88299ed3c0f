"""Synchformer windows, offset prediction, V-AURA features and the `vbench sync` command (tiny random model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from vaura.synchformer import (
    PreprocessError,
    load_sync_model,
    load_visual_encoder,
    paper_window,
    predict_offset,
    predict_windows,
    preprocess_video_for_vaura,
)
from vaura.synchformer import preprocess as P

pytestmark = pytest.mark.usefixtures("one_thread")


def _indexed_clip(n_frames: int, size: int = 256, n_samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame k is filled with k % 256; audio sample j is j (so windows can be read back exactly)."""
    frames = (torch.arange(n_frames) % 256).to(torch.uint8)[:, None, None, None].expand(n_frames, size, size, 3)
    audio = torch.arange(n_samples if n_samples is not None else n_frames * 640, dtype=torch.float64)
    return frames.contiguous(), audio


def test_paper_window_is_frames_2_to_121() -> None:
    frames, audio = _indexed_clip(200)
    v, a = paper_window(frames, audio)
    assert v.shape == (1, 120, 224, 224, 3) and a.shape == (1, 76800)
    assert torch.equal(v[0, :, 0, 0, 0], torch.arange(2, 122).to(torch.uint8))
    assert a[0, 0] == 1280 and a[0, -1] == 78079


def test_paper_window_loops_short_clips_and_equalises() -> None:
    frames, audio = _indexed_clip(50, n_samples=40 * 640 + 100)  # audio shorter: video trimmed to 40 frames
    v, a = paper_window(frames, audio.unsqueeze(0).repeat(2, 1))  # [C, N] input is averaged
    expect = (torch.arange(2, 122) % 40).to(torch.uint8)
    assert torch.equal(v[0, :, 0, 0, 0], expect)
    assert torch.equal(a[0, :: 640], (expect.double() * 640).float())
    with pytest.raises(PreprocessError, match="too short"):
        paper_window(frames[:1], audio[:100])


@pytest.fixture(scope="module")
def tiny_model():
    return load_sync_model(debug_weights=True)


@pytest.mark.slow
def test_predict_offset_paper_and_batching(tiny_model) -> None:
    gen = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (130, 256, 256, 3), dtype=torch.uint8, generator=gen)  # no resize needed
    audio = 0.1 * torch.randn(130 * 640, generator=gen)
    pred = predict_offset(tiny_model, frames, audio)
    v, a = paper_window(frames, audio)
    # a batch of two windows gives each window its own result (the first is the clip's window)
    both = predict_windows(tiny_model, torch.cat([v, v.flip(1)]), torch.cat([a, a.flip(1)]))
    torch.testing.assert_close(pred.probs, both[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(both[0], both[1])
    assert pred.offset_sec == pytest.approx(float(tiny_model.offsets()[both[0].argmax()]))
    top = pred.top(3)
    assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1] and top[0][0] == pytest.approx(pred.offset_sec)
    with pytest.raises(PreprocessError, match="unknown protocol"):
        predict_offset(tiny_model, frames, audio, protocol="nope")
    with pytest.raises(PreprocessError, match="clip_desync"):  # av-benchmark's DeSync lives with its protocol
        predict_offset(tiny_model, frames, audio, protocol="av-benchmark")


def test_vaura_features_shapes() -> None:
    enc = load_visual_encoder(debug_weights=True)
    gen = torch.Generator().manual_seed(3)
    clip = torch.randint(0, 256, (2, 64, 224, 224, 3), dtype=torch.uint8, generator=gen)
    feats = enc.features(clip)
    assert feats.shape == (2, 4, 8, enc.cfg.vis_dim)
    torch.testing.assert_close(feats[1:], enc.features(clip[1]), atol=1e-5, rtol=1e-5)
    other = torch.randint(0, 256, (64, 120, 160, 3), dtype=torch.uint8, generator=gen)  # resized + cropped
    assert preprocess_video_for_vaura(other).shape == (1, 4, 3, 16, 224, 224)
    with pytest.raises(PreprocessError, match="64 frames"):
        preprocess_video_for_vaura(clip[:, :60])


def test_video_for_sync_normalisations() -> None:
    gen = torch.Generator().manual_seed(4)
    window = torch.randint(0, 256, (1, 120, 224, 224, 3), dtype=torch.uint8, generator=gen)
    fp16 = P.video_for_sync(window)
    fp32 = P.video_for_sync(window, normalisation="fp32")
    ref = (window[:, 8:24].permute(0, 1, 4, 2, 3).float() * (1 / 255) - 0.5) / 0.5  # segment 1: frames 8..23
    torch.testing.assert_close(fp32[0, 1], ref[0], atol=0, rtol=0)
    assert torch.equal(fp16.half().float(), fp16) and 0 < (fp16 - fp32).abs().max() < 1e-3
    with pytest.raises(PreprocessError, match="normalisation"):
        P.video_for_sync(window, normalisation="int8")


def test_video_for_sync_rejects_bad_input() -> None:
    with pytest.raises(PreprocessError):
        P.video_for_sync(torch.zeros(1, 120, 224, 224, 3))  # float, not uint8
    with pytest.raises(PreprocessError, match="120 frames"):
        P.video_for_sync(torch.zeros(1, 100, 224, 224, 3, dtype=torch.uint8))
    with pytest.raises(PreprocessError, match="76800"):
        P.audio_for_sync(torch.zeros(1, 1000))


# -- vbench sync -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip_path(tmp_path_factory) -> str:
    from visualsound.media import write_video

    path = tmp_path_factory.mktemp("sync") / "clip.mp4"
    t = np.arange(40)
    frames = np.zeros((40, 64, 64, 3), np.uint8)
    frames[:, 16:48, 16:48, 1] = (t[:, None, None] * 6 % 255).astype(np.uint8)
    audio = (0.2 * np.sin(2 * np.pi * 330 * np.arange(40 * 640) / 16000)).astype(np.float32)[None]
    write_video(path, frames, 25, audio=audio, sample_rate=16000)
    return str(path)


def test_vbench_sync_debug_weights(clip_path: str) -> None:
    from benchmarks.cli import main

    res = CliRunner().invoke(main, ["sync", clip_path, "--debug-weights"])
    assert res.exit_code == 0, res.output
    assert "DEBUG WEIGHTS" in res.output and "predicted offset:" in res.output
    assert res.output.count(" p=") == 3
    res = CliRunner().invoke(main, ["sync", clip_path, "--debug-weights", "--json", "--audio", clip_path])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["debug_weights"] is True and len(out["top3"]) == 3 and out["protocol"] == "paper"
    assert out["window_starts_sec"] == [0.08] and out["desync_sec"] == abs(out["window_offsets_sec"][0])


def test_vbench_sync_errors(clip_path: str, tmp_path) -> None:
    from benchmarks.cli import main

    res = CliRunner().invoke(main, ["sync", clip_path, "--debug-weights", "--protocol", "av-benchmark"])
    assert res.exit_code == 2 and "rejects this video" in res.output and "200 frames" in res.output
    res = CliRunner().invoke(main, ["sync", clip_path, "--checkpoint", str(tmp_path / "missing.pt")])
    assert res.exit_code == 2 and "not found" in res.output
