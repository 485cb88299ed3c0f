"""VisualSound/ImageBind preprocessing: sampling rules, parity with the upstream tensors, selective decoding,
error statuses."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tests.conftest import require_parity
from visualsound.imagebind import load_imagebind
from visualsound.imagebind.preprocess import (
    ClipError,
    audio_to_fbanks,
    audio_window_samples,
    clip_windows,
    crop_offsets,
    preprocess_clip,
    read_clip,
    resample_to_16k,
    resized_size,
    video_frame_indices,
)

CLIPS = ["clipA", "clipB"]


def _fixture(clip: str) -> tuple[Path, dict]:
    root = require_parity("imagebind", f"{clip}.mp4", f"expected_{clip}.pt")
    return root / f"{clip}.mp4", torch.load(root / f"expected_{clip}.pt", weights_only=True)


@pytest.fixture(scope="module")
def processed() -> dict:
    out = {}
    for clip in CLIPS:
        path, exp = _fixture(clip)
        out[clip] = (*preprocess_clip(path), exp)
    return out


# ------------------------------------------------------------------------------------------- sampling rules
def test_windows_reach_the_end_and_use_exact_fractions():
    assert clip_windows(10.0, 5) == [(Fraction(2 * k), Fraction(2 * k + 2)) for k in range(5)]
    # the PyPI pytorchvideo 0.1.5 sampler (span / n) would give 0, 1.6, 3.2, ...: that is not the reference
    assert clip_windows(10.0, 5)[1][0] != Fraction(8, 5)
    assert clip_windows(1.5, 3) == [(0, 2)] * 3
    # README trap: N16 = 150,005 -> starts 0 / 59002 / 118004 (plain float or integer maths give 118005)
    assert [s for s, _ in audio_window_samples(150005)] == [0, 59002, 118004]
    assert all(e - s == 32000 for s, e in audio_window_samples(150005))


@pytest.mark.parametrize("clip", CLIPS)
def test_sampling_metadata_matches_fixture(clip: str, processed: dict):
    path, exp = _fixture(clip)
    _, _, facts, _ = processed[clip]
    ranges, kept = video_frame_indices(facts["num_frames"], facts["video_fps"])
    assert ranges == [tuple(r) for r in exp["video_decoded_index_range"].tolist()]
    assert kept == [tuple(r) for r in exp["video_frame_indices"].tolist()]
    assert facts["video_frame_indices"] == exp["video_frame_indices"].tolist()
    assert facts["audio_window_samples"] == exp["audio_window_samples"].tolist()
    assert facts["audio_num_samples_16k"] == int(exp["audio_num_samples_16k"])
    assert facts["audio_num_samples"] == int(exp["audio_source_num_samples"])
    assert facts["audio_sample_rate"] == int(exp["audio_source_sample_rate"])
    h, w = facts["video_size_hw"]
    rh, rw = resized_size(h, w)
    assert [rh, rw] == exp["video_resized_hw"].tolist()
    assert crop_offsets(rh, rw) == [tuple(o) for o in exp["video_crop_offsets_yx"].tolist()]
    windows = [[float(s), float(e)] for s, e in clip_windows(facts["duration"], 5)]
    assert windows == exp["video_clip_windows_sec"].tolist()


# ------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("clip", CLIPS)
def test_decoded_frames_and_waveform_match_fixture(clip: str):
    path, exp = _fixture(clip)
    frames, waveform, facts = read_clip(path)
    ref = exp["debug_decoded_frames_uint8"]
    assert frames.shape == ref.shape, (tuple(frames.shape), tuple(ref.shape))
    assert (frames.int() - ref.int()).abs().max() <= 2  # README: bit-identical here, 1-2 levels on other FFmpegs
    wav16 = resample_to_16k(waveform, facts["audio_sample_rate"])
    assert wav16.shape[1] == int(exp["audio_num_samples_16k"])
    assert (wav16[0] - exp["debug_waveform_16k_ch0"]).abs().max() <= 1e-5
    # given the reference waveform, the fbank path alone reproduces the stored audio tensor closely
    ref_wav = torch.cat([exp["debug_waveform_16k_ch0"][None], wav16[1:]])
    assert (audio_to_fbanks(ref_wav) - exp["audio"]).abs().max() <= 2e-3


@pytest.mark.parametrize("clip", CLIPS)
def test_tensors_match_fixture(clip: str, processed: dict):
    video, audio, _, exp = processed[clip]
    assert video.shape == (15, 3, 2, 224, 224) and video.dtype == torch.float32
    assert audio.shape == (3, 1, 128, 204) and audio.dtype == torch.float32
    dv = (video - exp["video"].float()).abs()
    assert dv.max() <= 2e-3 and dv.mean() <= 2e-4, (dv.max(), dv.mean())
    da = (audio - exp["audio"]).abs()
    assert da.max() <= 2e-3 and da.mean() <= 2e-5, (da.max(), da.mean())
    # padded fbank columns (frames 198..203) sit at (0 + 4.268) / 9.138
    assert torch.allclose(audio[..., 198:], torch.tensor(4.268 / 9.138), atol=1e-6)


@torch.no_grad()
@pytest.mark.parametrize("clip", CLIPS)
def test_tiny_model_score_from_own_preprocessing(clip: str, processed: dict):
    root = require_parity("imagebind", "tiny_weights.pt")
    model = load_imagebind(root / "tiny_weights.pt", config="tiny")
    video, audio, _, exp = processed[clip]
    ev, ea = model.embed_vision(video[None])[0], model.embed_audio(audio[None])[0]
    assert (ev - exp["tiny_vision_emb"]).abs().max() <= 1e-4
    assert (ea - exp["tiny_audio_emb"]).abs().max() <= 2e-3
    assert abs(model.score(video[None], audio[None]).item() - exp["tiny_score"].item()) <= 1e-4


# ------------------------------------------------------------------------------------------- selective decode
def _write_clip(path: Path, seconds: float, fps: int, size: tuple[int, int], gop: int, bframes: int,
                audio: bool = True, video: bool = True, sample_rate: int = 22050, x264_params: str = "") -> None:
    """A small H.264 (+ AAC) clip whose frames all differ (moving gradient + frame-number bars)."""
    h, w = size
    with av.open(str(path), "w") as out:
        if video:
            options = {"g": str(gop), "bf": str(bframes), "crf": "30",
                       "preset": "ultrafast" if bframes == 0 else "fast"}
            if x264_params:
                options["x264-params"] = x264_params
            vs = out.add_stream("libx264", rate=fps, options=options)
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        if audio:
            aus = out.add_stream("aac", rate=sample_rate, layout="stereo")
        if video:
            yy, xx = np.mgrid[0:h, 0:w]
            for i in range(int(seconds * fps)):
                img = np.stack([(xx * 4 + i * 7) % 256, (yy * 4 + i * 3) % 256, (xx + yy + i * 11) % 256], -1)
                img[: h // 4, : (i % w)] = 255
                frame = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
                out.mux(vs.encode(frame))
            out.mux(vs.encode(None))
        if audio:
            n = int(seconds * sample_rate)
            t = np.arange(n) / sample_rate
            sig = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 97 * t)]).astype(np.float32)
            for s in range(0, n, 1024):
                chunk = np.ascontiguousarray(sig[:, s:s + 1024])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                frame.sample_rate = sample_rate
                out.mux(aus.encode(frame))
            out.mux(aus.encode(None))


def _decode_all_rgb(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        frames = sorted(((f.pts, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)), key=lambda x: x[0])
    return [f for _, f in frames]


@pytest.mark.parametrize("seconds,fps,gop,bframes,x264_params", [
    (7.3, 24, 12, 2, ""), (3.0, 30, 250, 3, ""), (1.5, 25, 5, 0, ""), (6.0, 25, 12, 3, "open-gop=1")])
def test_selective_decode_equals_whole_file_decode(tmp_path: Path, seconds, fps, gop, bframes, x264_params):
    path = tmp_path / "clip.mp4"
    _write_clip(path, seconds, fps, (48, 64), gop, bframes, x264_params=x264_params)
    frames, waveform, facts = read_clip(path)
    full = _decode_all_rgb(path)
    assert facts["num_frames"] == len(full)
    _, kept = video_frame_indices(len(full), float(fps))
    expected = np.stack([np.stack([full[i] for i in pair]) for pair in kept])
    assert np.array_equal(frames.numpy(), expected)
    assert waveform.shape[0] == 2 and facts["audio_sample_rate"] == 22050
    video, audio, _ = preprocess_clip(path)
    assert video.shape == (15, 3, 2, 224, 224) and audio.shape == (3, 1, 128, 204)
    assert torch.isfinite(video).all() and torch.isfinite(audio).all()


# ------------------------------------------------------------------------------------------- error statuses
def _status(path: Path, **kw) -> str:
    with pytest.raises(ClipError) as info:
        preprocess_clip(path, **kw)
    return info.value.status


def test_error_statuses(tmp_path: Path):
    assert _status(tmp_path / "nope.mp4") == "missing"
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 20)
    assert _status(tmp_path / "text.mp4") == "corrupt"
    good = tmp_path / "good.mp4"
    _write_clip(good, 1.0, 25, (48, 64), 10, 0)
    data = good.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) * 2 // 3])
    assert _status(tmp_path / "cut.mp4") == "truncated"  # open_media walks the mp4 boxes: any cut is caught
    _write_clip(tmp_path / "mute.mp4", 1.0, 25, (48, 64), 10, 0, audio=False)
    assert _status(tmp_path / "mute.mp4") == "no_audio"
    _write_clip(tmp_path / "blind.m4a", 1.0, 25, (48, 64), 10, 0, video=False)
    assert _status(tmp_path / "blind.m4a") == "no_video"
    assert _status(good, silence_threshold=1.0) == "silent"
    with pytest.raises(ValueError):
        ClipError("bogus", "x")


def _set_display_rotation_cw90(path: Path, width: int, height: int) -> None:
    """Patch the video track's tkhd matrix to a 90° clockwise display rotation (the ``rotate=90`` tag)."""
    data = bytearray(path.read_bytes())
    pos = data.find(b"tkhd")
    while pos >= 0:
        body = pos + 4
        version = data[body]
        matrix = body + 4 + (32 if version == 1 else 20) + 16  # times/ids/duration, reserved, layer..volume
        w, h = (int.from_bytes(data[matrix + 36 + 4 * i: matrix + 40 + 4 * i], "big") >> 16 for i in range(2))
        if (w, h) == (width, height):
            values = [0, 0x10000, 0, -0x10000 & 0xFFFFFFFF, 0, 0, 0, 0, 0x40000000]
            data[matrix:matrix + 36] = b"".join(v.to_bytes(4, "big") for v in values)
            path.write_bytes(bytes(data))
            return
        pos = data.find(b"tkhd", pos + 4)
    raise AssertionError("no video tkhd found")


def test_display_rotation_is_applied(tmp_path: Path):
    plain, rotated = tmp_path / "plain.mp4", tmp_path / "rotated.mp4"
    _write_clip(plain, 2.0, 25, (48, 64), 10, 0)
    rotated.write_bytes(plain.read_bytes())
    _set_display_rotation_cw90(rotated, 64, 48)
    frames, _, facts = read_clip(plain)
    rframes, _, rfacts = read_clip(rotated)
    assert facts["video_rotation"] == 0 and rfacts["video_rotation"] == 270  # counter-clockwise degrees
    assert rframes.shape == (5, 2, 64, 48, 3)
    assert np.array_equal(rframes.numpy(), np.rot90(frames.numpy(), k=-1, axes=(2, 3)))  # shown 90° clockwise
    video, _, _ = preprocess_clip(rotated)
    assert video.shape == (15, 3, 2, 224, 224)
