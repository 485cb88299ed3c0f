"""`copy_window`: a window of an H.264 video copied packet by packet (the listening report's fast path for small
sources), exact in frames, times and audio samples, and refused with a reason wherever a copy would not be
exact or small."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from tests.odd_media import encode, read_barcode
from visualsound.media import (
    MediaWriteError,
    NotCopyable,
    NoVideoStreamError,
    copy_window,
    mux_audio,
    probe,
    read_audio_with_rate,
    read_video,
    write_preview,
    write_wav,
)

SR = 48000


def _decoded(path) -> tuple[list[float], torch.Tensor]:
    """Every frame's time and pixels (``[T, H, W, 3]``) as stored, straight from PyAV."""
    with av.open(str(path)) as c:
        frames = [(float(f.time), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    return [t for t, _ in frames], torch.from_numpy(np.stack([f for _, f in frames]))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """2.4 s at 25 fps, B-frames, a keyframe every 12 frames (0, 0.48, 0.96, ... s), stereo AAC at 48 kHz."""
    path = tmp_path_factory.mktemp("copy") / "src.mp4"
    encode(path, n=60, fps=25, size=(128, 96), audio="aac", sample_rate=SR, audio_seconds=2.4)
    return path


@pytest.mark.parametrize("start", [0.0, 0.48, 0.96])
def test_a_copied_window_holds_the_windows_frames_times_and_audio_samples(source, tmp_path, start):
    out = tmp_path / "copy.mp4"
    poster, audio_mode = copy_window(source, out, start=start, duration=0.8, audio_from_source=True)
    assert audio_mode == "copy"
    times, frames = _decoded(out)
    first = int(round(start * 25))
    shown = read_barcode(frames[:, :, :64])  # the barcode's 64 px
    # every frame of the window, each at its time from 0 s; then at most the reordering depth (2 B-frames) of
    # later frames that the window's B-frames need (decoded before them), at their own times
    assert shown[:20] == list(range(first, first + 20)) and len(shown) <= 22, shown
    assert shown[20:] == sorted(shown[20:]) and all(i >= first + 20 for i in shown[20:])
    assert times == pytest.approx([(i - first) / 25 for i in shown], abs=1e-6)
    assert torch.equal(frames[:20], read_video(source, start=start, duration=0.8, fps=None))  # the same pictures
    got, rate = read_audio_with_rate(out)
    want, _ = read_audio_with_rate(source, start=start, duration=0.8)
    # the window's samples: bit for bit from a file's start; from a seek point the AAC decoder's state before the
    # window differs by float rounding (~2e-6, a sixteenth of a 16-bit step), as a seeked `read_audio` also does
    assert rate == SR and got.shape == want.shape, (got.shape, want.shape)
    assert (got - want).abs().max() <= (0 if start == 0 else 1e-5)
    info = probe(out)
    assert info.video_start == 0 and info.audio_start == 0 and (info.width, info.height) == (128, 96)
    assert poster.shape == (96, 128, 3) and read_barcode(torch.from_numpy(poster[None, :, :64])) == [first]
    # a model's track muxed under the copy: its audio starts with the first frame, the frames are the copy's
    track = tmp_path / "track.mp4"
    assert mux_audio(out, torch.zeros(1, SR // 2), SR, track) == "copy"
    assert probe(track).audio_start == 0 and torch.equal(_decoded(track)[1], frames)


def test_a_window_running_past_the_end_holds_what_there_is(source, tmp_path):
    out = tmp_path / "copy.mp4"
    assert copy_window(source, out, start=1.92, duration=5.0, audio_from_source=True)[1] == "copy"
    times, frames = _decoded(out)
    assert read_barcode(frames[:, :, :64]) == list(range(48, 60)) and times[-1] == pytest.approx(11 / 25)
    got, _ = read_audio_with_rate(out)
    want, _ = read_audio_with_rate(source, start=1.92, duration=0.48)  # to the video's end (the audio runs on)
    assert got.shape == want.shape == (2, int(round(0.48 * SR))) and (got - want).abs().max() <= 1e-5


def test_the_audio_is_encoded_when_not_copied(source, tmp_path):
    out = tmp_path / "copy.mp4"
    tone = torch.sin(torch.arange(SR * 2) / SR * 2 * torch.pi * 300)[None] * 0.3  # 2 s: longer than the window
    _, mode = copy_window(source, out, start=0.48, duration=0.8, audio=tone, sample_rate=SR, aac_coder="fast")
    assert mode == "encode"
    got, _ = read_audio_with_rate(out)
    assert got.shape == (1, int(0.8 * SR)), got.shape  # cut to the window
    assert copy_window(source, out, duration=0.8)[1] is None and not probe(out).has_audio
    # a source whose audio is not AAC: its own audio cannot be copied, the given audio is encoded
    mp3 = tmp_path / "mp3.mp4"
    encode(mp3, n=25, fps=25, audio="libmp3lame", sample_rate=44100)
    assert copy_window(mp3, out, duration=0.8, audio=tone, sample_rate=SR, audio_from_source=True)[1] == "encode"


def test_rotation_is_kept_and_the_poster_is_write_previews(tmp_path):
    src = tmp_path / "rot.mp4"
    encode(src, n=10, fps=25, size=(128, 64), rotation=90)
    out = tmp_path / "copy.mp4"
    poster, _ = copy_window(src, out, max_width=32)
    assert probe(out).rotation == 90 and (probe(out).width, probe(out).height) == (128, 64)
    assert np.array_equal(poster, write_preview(src, tmp_path / "p.mp4", max_width=32))  # shown 32 wide x 64 high


def _x264(path, pix_fmt: str) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, pix_fmt
        for i in range(10):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * i, np.uint8), format="rgb24").reformat(
                format=pix_fmt)
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def test_windows_that_cannot_be_copied_exactly_or_small_are_refused_with_the_reason(source, tmp_path):
    out = tmp_path / "copy.mp4"
    with pytest.raises(NotCopyable, match="between keyframes"):
        copy_window(source, out, start=0.2, duration=0.8)
    with pytest.raises(NotCopyable, match=r"more than twice the copy limit 1 kbit/s \(over \d+ kbit/s\)"):
        copy_window(source, out, duration=0.8, max_kbps=1)  # known before the window is read to its end
    copy_window(source, out, duration=0.8, max_kbps=1e6)
    with av.open(str(out)) as c:  # the window's rate: its video bytes over its 0.8 s
        rate = sum(p.size for p in c.demux(video=0)) * 8 / 1000 / 0.8
    copy_window(source, out, duration=0.8, max_kbps=rate * 1.01)
    with pytest.raises(NotCopyable, match=r"kbit/s, above the copy limit"):
        copy_window(source, out, duration=0.8, max_kbps=rate * 0.99)
    mpeg4 = tmp_path / "mpeg4.mp4"
    encode(mpeg4, codec="mpeg4", n=10)
    with pytest.raises(NotCopyable, match="the video is mpeg4, not H.264"):
        copy_window(mpeg4, out)
    yuv444 = tmp_path / "yuv444.mp4"
    _x264(yuv444, "yuv444p")
    with pytest.raises(NotCopyable, match="yuv444p, not 8-bit 4:2:0"):
        copy_window(yuv444, out)
    mkv = tmp_path / "src.mkv"  # Matroska stores no decode timestamps
    encode(mkv, n=10)
    with pytest.raises(NotCopyable, match="without decode timestamps"):
        copy_window(mkv, out)
    late = tmp_path / "late.mp4"  # the picture starts 0.2 s after the sound (windows count from the file's start)
    encode(late, n=10, start=0.2, audio="aac", audio_start=0.0)
    with pytest.raises(NotCopyable, match="starts at 0.200 s, after the window's start 0.000 s"):
        copy_window(late, out)
    copy_window(late, out, start=0.2)  # from its first frame it copies
    assert not out.with_suffix(".mp4.tmp").exists() and probe(out).video_start == 0
    wav = tmp_path / "a.wav"
    write_wav(wav, np.zeros((1, 1600), np.float32), 16000)
    with pytest.raises(NoVideoStreamError):
        copy_window(wav, out)
    with pytest.raises(MediaWriteError):
        copy_window(source, out, max_width=1)


def test_a_refused_copy_leaves_an_earlier_file_alone(source, tmp_path):
    out = tmp_path / "copy.mp4"
    copy_window(source, out, duration=0.8)
    before = out.read_bytes()
    with pytest.raises(NotCopyable):
        copy_window(source, out, start=0.2, duration=0.8)
    assert out.read_bytes() == before
