"""The fast paths of the ImageBind preprocessing give the same numbers as the plain upstream expressions:
windowed sinc resampling vs resampling the whole waveform, the in-place video transform vs the tensor expression,
plane-wise audio frame conversion vs `frame_to_float`, single-threaded RGB conversion vs PyAV's default."""

from __future__ import annotations

import math

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchaudio.functional

from visualsound.imagebind.preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGE_SIZE,
    audio_fbanks_from_source,
    audio_to_fbanks,
    audio_window_samples,
    crop_offsets,
    resample_span_to_16k,
    resample_to_16k,
    resampled_length,
    resized_size,
    transform_video,
)
from visualsound.media.audio import audio_frames_to_array, frame_to_float
from visualsound.media.video import frame_to_rgb

RATES = [44100, 48000, 22050, 32000, 11025, 8000, 16000, 24000]


def _wave(channels: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float32)
    return (0.3 * torch.sin(t[None] * 0.01 * torch.arange(1, channels + 1)[:, None])
            + 0.1 * torch.randn(channels, n, generator=g)).contiguous()


# ------------------------------------------------------------------------------------------- resampling
@pytest.mark.parametrize("rate", RATES)
def test_resample_to_16k_equals_torchaudio(rate: int):
    wav = _wave(2, rate * 3 + 77)
    ours = resample_to_16k(wav, rate)
    ref = torchaudio.functional.resample(wav, rate, 16000)
    assert ours.shape == ref.shape, (tuple(ours.shape), tuple(ref.shape))
    assert torch.equal(ours, ref), (ours - ref).abs().max()


@pytest.mark.parametrize("rate", [44100, 48000, 11025, 8000])
def test_resampled_length_matches_torchaudio(rate: int):
    # torchaudio takes ceil of a float32 tensor, which for long inputs can be one below the exact integer ceiling:
    # check torchaudio's real output length on such lengths and on ordinary ones
    g = math.gcd(rate, 16000)
    orig, new = rate // g, 16000 // g
    near = [n for n in range(rate * 10, rate * 10 + 3000)
            if -(-new * n // orig) != math.ceil(np.float32(new * n / orig))]
    if rate == 44100:
        assert near, "expected lengths where the float32 ceiling differs from the exact one"
    for n in near[:3] + [1, 2, 3, 401, 1024, rate * 10 + 344]:
        assert resampled_length(n, rate) == torchaudio.functional.resample(torch.zeros(1, n), rate, 16000).shape[1], n


@pytest.mark.parametrize("rate", RATES)
def test_windowed_resampling_equals_whole_waveform_resampling(rate: int):
    wav = _wave(2, int(rate * 10.0078))
    full = torchaudio.functional.resample(wav, rate, 16000)
    n16 = full.shape[1]
    spans = [(0, 32000), (n16 - 32000, n16), (0, n16), (1, 2), (n16 - 1, n16), (12345, 12346), (777, 40001),
             (5, 5)] + audio_window_samples(n16)
    for start, end in spans:
        part = resample_span_to_16k(wav, rate, start, end)
        assert part.shape == (2, end - start), (start, end, tuple(part.shape))
        assert torch.equal(part, full[:, start:end]), (start, end)  # the same kernel on the same samples
    for bad in [(-1, 10), (10, 5), (0, n16 + 1)]:
        with pytest.raises(ValueError):
            resample_span_to_16k(wav, rate, *bad)


def test_windowed_resampling_of_a_very_short_waveform():
    wav = _wave(1, 50)  # shorter than the kernel: zeros pad both sides as in torchaudio
    full = torchaudio.functional.resample(wav, 44100, 16000)
    assert torch.equal(resample_span_to_16k(wav, 44100, 0, full.shape[1]), full)
    assert torch.equal(resample_span_to_16k(wav, 44100, 3, 9), full[:, 3:9])


@pytest.mark.parametrize("rate,seconds", [(44100, 10.0078), (48000, 10.005), (16000, 10.0), (22050, 4.3),
                                          (44100, 1.5), (11025, 2.0), (48000, 6.1)])
def test_fbanks_from_source_equal_whole_waveform_path(rate: int, seconds: float):
    wav = _wave(2, int(rate * seconds), seed=3)
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):  # the window mean's summation order depends on threads and strides: equal at both
            torch.set_num_threads(n)
            ours, n16 = audio_fbanks_from_source(wav.clone(), rate)
            ref_wav16 = torchaudio.functional.resample(wav, rate, 16000)
            assert n16 == ref_wav16.shape[1]
            # also short audio: overlapping windows, in-place means
            assert torch.equal(ours, audio_to_fbanks(ref_wav16)), (n, (ours - audio_to_fbanks(ref_wav16)).abs().max())
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------- video transform
def _upstream_transform(frames: torch.Tensor) -> torch.Tensor:
    """The plain expression: RGB/255 -> bilinear short side 224 (colour as batch, time as channels) -> mean/std
    -> 3 crops, stacked as 3*window + crop."""
    n, t, h, w, _ = frames.shape
    x = frames.permute(0, 4, 1, 2, 3).to(torch.float32) / 255.0
    x = F.interpolate(x.reshape(n * 3, t, h, w), size=resized_size(h, w), mode="bilinear", align_corners=False)
    x = x.reshape(n, 3, t, *x.shape[-2:])
    x = (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1, 1)
    crops = [x[..., y:y + IMAGE_SIZE, x0:x0 + IMAGE_SIZE] for y, x0 in crop_offsets(*x.shape[-2:])]
    return torch.stack(crops, dim=1).flatten(0, 1)


@pytest.mark.parametrize("hw", [(36, 64), (64, 36), (50, 50), (240, 320), (361, 641)])
def test_transform_video_is_bit_identical_to_the_plain_expression(hw: tuple[int, int]):
    g = torch.Generator().manual_seed(hw[0] * 1000 + hw[1])
    frames = torch.randint(0, 256, (5, 2, *hw, 3), dtype=torch.uint8, generator=g)
    ours = transform_video(frames)
    assert ours.shape == (15, 3, 2, 224, 224) and ours.is_contiguous()
    assert torch.equal(ours, _upstream_transform(frames))


# ------------------------------------------------------------------------------------------- audio frames
def _frames(fmt: str, layout: str, sizes: list[int]) -> list[av.AudioFrame]:
    rng = np.random.default_rng(0)
    channels = len(av.AudioLayout(layout).channels)
    out = []
    for n in sizes:
        if fmt == "fltp":
            arr = rng.uniform(-1, 1, (channels, n)).astype(np.float32)
        else:  # packed s16
            arr = rng.integers(-32768, 32767, (1, n * channels), dtype=np.int16)
        fr = av.AudioFrame.from_ndarray(arr, format=fmt, layout=layout)
        fr.sample_rate = 44100
        out.append(fr)
    return out


@pytest.mark.parametrize("fmt,layout", [("fltp", "stereo"), ("fltp", "mono"), ("s16", "stereo")])
def test_audio_frames_to_array_equals_frame_to_float(fmt: str, layout: str):
    frames = _frames(fmt, layout, [1024, 1024, 333, 1024])
    ours = audio_frames_to_array(frames)
    ref = np.concatenate([frame_to_float(f) for f in frames], axis=1)
    assert ours.dtype == np.float32 and ours.shape == ref.shape == (len(av.AudioLayout(layout).channels), 3405)
    assert np.array_equal(ours, ref)
    assert audio_frames_to_array([]).shape == (0, 0)


# ------------------------------------------------------------------------------------------- RGB conversion
@pytest.mark.parametrize("hw", [(36, 64), (361, 641), (240, 320)])
def test_frame_to_rgb_equals_the_default_conversion(tmp_path, hw: tuple[int, int]):
    """One swscale thread gives the same pixels as PyAV's default (threaded) conversion, on decoded H.264
    frames of even and odd sizes and on a frame whose planes have random content."""
    h, w = hw
    rng = np.random.default_rng(h)
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25, options={"crf": "28", "preset": "ultrafast"})
        vs.width, vs.height, vs.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        for _ in range(3):
            img = rng.integers(0, 256, (vs.height, vs.width, 3), dtype=np.uint8)
            out.mux(vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(vs.encode(None))
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    raw = av.VideoFrame.from_ndarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), format="rgb24")
    frames.append(raw.reformat(format="yuv420p"))
    for fr in frames:
        ours = frame_to_rgb(fr)
        assert ours.dtype == np.uint8 and ours.shape == (fr.height, fr.width, 3)
        assert np.array_equal(ours, fr.to_ndarray(format="rgb24"))
