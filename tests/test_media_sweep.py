"""Real-world media kinds of the second sweep, each written with PyAV: a file whose default audio track is not
its first, raw DV (whose demuxer states its time base as the average frame rate), full-range and colour-tagged
sources re-encoded by `mux_audio` / `write_preview`, and a still picture with sound (one video frame over a long
audio track)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from tests.odd_media import barcode_frame, read_barcode
from visualsound.media import mux_audio, probe, read_audio, read_video, write_preview

SR = 48000


def _tone(freq: float, seconds: float, channels: int = 2, sr: int = SR) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return np.repeat((0.3 * np.sin(2 * np.pi * freq * t))[None], channels, 0).astype(np.float32)


def _peak_hz(x: torch.Tensor, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x.mean(0).numpy()))
    return float(np.argmax(spec) * sr / x.shape[-1])


def _add_audio(c, codec: str, x: np.ndarray, sr: int = SR, default: bool | None = None):
    a = c.add_stream(codec, rate=sr)
    a.layout = "stereo" if x.shape[0] == 2 else "mono"
    if default is not None:
        a.disposition = av.stream.Disposition.default if default else 0
    return a, x


def _mux_audio_frames(c, a, x: np.ndarray, sr: int = SR) -> None:
    fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(x), format="fltp", layout=a.layout.name)
    fr.sample_rate, fr.pts = sr, 0
    for pkt in [*a.encode(fr), *a.encode(None)]:
        c.mux(pkt)


@pytest.mark.parametrize("fmt", ["mp4", "matroska"])
def test_the_default_audio_track_is_read_when_it_is_not_the_first(tmp_path, fmt):
    # a commentary (300 Hz) listed first but not default, the main track (1 kHz) second and default: players and
    # `ffmpeg -i` play the default one, so every reader must take it
    p = tmp_path / f"two.{'mp4' if fmt == 'mp4' else 'mkv'}"
    with av.open(str(p), "w", format=fmt) as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        tracks = [_add_audio(c, "aac", _tone(300, 2.0, 1), default=False),
                  _add_audio(c, "aac", _tone(1000, 2.0, 2), default=True)]
        for i in range(50):
            f = av.VideoFrame.from_ndarray(barcode_frame(i, 48, 64), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 25)
            for pkt in v.encode(f):
                c.mux(pkt)
        for pkt in v.encode(None):
            c.mux(pkt)
        for a, x in tracks:
            _mux_audio_frames(c, a, x)
    with av.open(str(p)) as c:  # the class of input: the default track is the second audio stream
        assert [bool(s.disposition & av.stream.Disposition.default) for s in c.streams.audio] == [False, True]
    info = probe(p)
    assert (info.channels, info.sample_rate) == (2, SR)
    assert _peak_hz(read_audio(p), SR) == pytest.approx(1000, abs=5)
    assert _peak_hz(read_audio(p, start=0.5, duration=1.0), SR) == pytest.approx(1000, abs=5)

    from visualsound.media.audio import decode_audio_stream

    x, sr = decode_audio_stream(p)
    assert x.shape[0] == 2 and _peak_hz(torch.from_numpy(x), sr) == pytest.approx(1000, abs=5)


def _barcode_clip(path, fmt: str, codec: str, size: tuple[int, int], n: int = 50, fps: int = 25,
                  pix_fmt: str = "yuv420p", audio: str | None = None, audio_seconds: float | None = None,
                  frame_options: dict | None = None, stream_options: dict | None = None,
                  options: dict | None = None) -> None:
    """`n` frames whose top half is the barcode of the frame index and whose bottom half is orange (200, 60, 30),
    with an optional stereo 440 Hz tone."""
    w, h = size
    with av.open(str(path), "w", format=fmt) as c:
        v = c.add_stream(codec, rate=fps)
        v.width, v.height, v.pix_fmt = w, h, pix_fmt
        v.options = {"x265-params": "log-level=error"} if codec == "libx265" else dict(options or {})
        for k, val in (stream_options or {}).items():
            setattr(v.codec_context, k, val)
        a = _add_audio(c, audio, _tone(440, audio_seconds or n / fps))[0] if audio else None
        for i in range(n):
            rgb = np.zeros((h, w, 3), np.uint8)
            rgb[: h // 2] = barcode_frame(i, h // 2, w)
            rgb[h // 2:] = (200, 60, 30)
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt, **(frame_options or {}))
            f.pts, f.time_base = i, Fraction(1, fps)
            for pkt in v.encode(f):
                c.mux(pkt)
        for pkt in v.encode(None):
            c.mux(pkt)
        if a is not None:
            _mux_audio_frames(c, a, _tone(440, audio_seconds or n / fps))


def _top_barcodes(frames: torch.Tensor) -> list[int]:
    return read_barcode(frames[:, : frames.shape[1] // 2])


def test_raw_dv_is_read_at_its_frame_rate_not_its_clock(tmp_path):
    # FFmpeg 8's dv demuxer states its 1/60000 s time base as the average rate: 60000 fps for PAL DV
    p = tmp_path / "camcorder.dv"
    _barcode_clip(p, "dv", "dvvideo", (720, 576), n=50, audio="pcm_s16le")
    with av.open(str(p)) as c:
        v = c.streams.video[0]
        assert v.average_rate == 1 / v.time_base != 25  # the class of input
    info = probe(p)
    assert info.fps == 25 and info.num_frames == 50 and info.duration == pytest.approx(2.0)
    assert _top_barcodes(read_video(p, start=1.0, duration=0.4)) == list(range(25, 35))
    out = tmp_path / "out.mp4"
    mux_audio(p, _tone(880, 2.0), SR, out)
    back = probe(out)
    assert back.fps == 25 and back.num_frames == 50 and back.video_duration == pytest.approx(2.0), back
    assert _top_barcodes(read_video(out, fps=None)) == list(range(50))


def _orange(frames: torch.Tensor) -> np.ndarray:
    """The mean colour of the bottom quarter (the orange half, away from the barcode's edge)."""
    return frames[:, 3 * frames.shape[1] // 4:].float().mean(dim=(0, 1, 2)).numpy()


@pytest.mark.parametrize("name,fmt,codec,pix_fmt,tags", [
    ("camera.avi", "avi", "mjpeg", "yuvj420p", None),  # full range (old cameras' MJPEG AVI)
    ("bt709.mp4", "mp4", "libx265", "yuv420p", (1, 1, 1)),  # BT.709 matrix, primaries, transfer
    ("hdr.mov", "mov", "libx265", "yuv420p10le", (9, 9, 16)),  # 10-bit BT.2020 PQ (iPhone-style HDR)
])
def test_reencoded_video_keeps_the_colours_of_its_source(tmp_path, name, fmt, codec, pix_fmt, tags):
    # a re-encode keeps the source's matrix in its pixels (only range and bit depth are converted), so it must
    # say which, and a full-range source must be converted to the standard range it is written in
    src = tmp_path / name
    stream_options = dict(zip(("colorspace", "color_primaries", "color_trc"), tags)) if tags else None
    frame_options = {"dst_colorspace": tags[0]} if tags else None
    _barcode_clip(src, fmt, codec, (64, 48), n=25, pix_fmt=pix_fmt, stream_options=stream_options,
                  frame_options=frame_options)
    source = read_video(src, fps=None)
    want = _orange(source)
    assert np.abs(want - (200, 60, 30)).max() < 8, want  # the source reads as written
    muxed = tmp_path / "muxed.mp4"
    assert mux_audio(src, _tone(440, 1.0), SR, muxed) == "re-encode"
    preview = tmp_path / "preview.mp4"
    write_preview(src, preview, duration=1.0)
    for out in (muxed, preview):
        back = read_video(out, fps=None)
        assert _top_barcodes(back) == list(range(25))
        assert np.abs(_orange(back) - want).max() < 3, (out.name, _orange(back), want)


@pytest.mark.parametrize("name,fmt,codec,audio", [("still.mp4", "mp4", "libx264", "aac"),
                                                  ("still.webm", "webm", "libvpx-vp9", "libopus")])
def test_a_still_picture_with_sound_is_shown_while_the_sound_plays(tmp_path, name, fmt, codec, audio):
    # one video frame over 3 s of sound (music uploads): players show the picture for the whole file, so the
    # readers, the report's preview and a muxed result must neither end the video after one frame nor cut the sound
    p = tmp_path / name
    _barcode_clip(p, fmt, codec, (64, 48), n=1, audio=audio, audio_seconds=3.0)
    info = probe(p)
    assert info.num_frames == 1 and info.video_duration == pytest.approx(info.duration, abs=0.03)
    assert info.duration == pytest.approx(3.0, abs=0.03)
    assert _top_barcodes(read_video(p, start=1.0, duration=1.0)) == [0] * 25
    assert read_video(p).shape[0] == pytest.approx(75, abs=1)
    preview = tmp_path / "preview.mp4"
    write_preview(p, preview, start=0.5, duration=2.0, audio=_tone(880, 2.0), sample_rate=SR)
    assert _top_barcodes(read_video(preview)) == [0] * 50
    assert read_audio(preview).shape[1] == pytest.approx(2.0 * SR, abs=0.03 * SR)
    out = tmp_path / "out.mp4"
    mux_audio(p, _tone(880, 3.0), SR, out)
    assert read_audio(out).shape[1] == pytest.approx(3.0 * SR, abs=0.03 * SR)
    assert probe(out).video_duration == pytest.approx(3.0, abs=0.03)
