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

from tests.odd_media import barcode_frame
from visualsound.media import probe, read_audio

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
