"""Audio streams whose timestamps or header are not those of a clean mp4, written with PyAV (no ffmpeg binary):
MPEG-TS and ASF audio read to its end (no trim at a guessed duration)."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from visualsound.media import probe, read_audio
from visualsound.media.audio import decode_audio_stream

SR = 44100
LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


def noise(seconds: float, sr: int = SR, channels: int = 2, seed: int = 0) -> np.ndarray:
    """Seeded noise at amplitude 0.3 (every sample differs, so a shifted read shows), float32 ``[C, N]``."""
    rng = np.random.default_rng(seed)
    return (0.3 * rng.uniform(-1, 1, (channels, int(round(seconds * sr))))).astype(np.float32)


def write_audio(path: Path, codec: str, audio: np.ndarray, sr: int, *, fmt: str | None = None,
                frame_size: int | None = None, frame_pts: Callable[[int], int] | None = None,
                start: int = 0, options: dict[str, str] | None = None, video: bool = False) -> None:
    """Encode float ``[C, N]`` `audio` with `codec` into `path` (container `fmt`, default from the suffix).

    Frames hold `frame_size` samples (default: the encoder's, else 1000); frame ``k`` starting at sample ``i``
    gets the pts ``start + frame_pts(i)`` in ``1 / sr`` (default ``start + i``), which the muxer rounds to its own
    time base. `options` go to the muxer; `video` adds a small MPEG-2 video track (for readers that need one)."""
    c = av.open(str(path), "w", format=fmt, options=options or {})
    try:
        vs = None
        if video:
            vs = c.add_stream("mpeg2video", rate=25)
            vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        s = c.add_stream(codec, rate=sr)
        s.layout = LAYOUTS[audio.shape[0]]
        if codec in ("wmav2", "mp2", "ac3"):
            s.bit_rate = 192000
        if codec == "vorbis":
            s.codec_context.options = {"strict": "experimental"}  # FFmpeg's own Vorbis encoder
        n = frame_size or s.codec_context.frame_size or 1000
        sample_fmt = s.codec_context.format.name if s.codec_context.format is not None else "fltp"
        if vs is not None:
            seconds = audio.shape[1] / sr
            for i in range(int(seconds * 25)):
                vf = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 8 * (i % 30), np.uint8), format="rgb24")
                vf.pts, vf.time_base = int(round(start / sr * 25)) + i, Fraction(1, 25)
                for pkt in vs.encode(vf):
                    c.mux(pkt)
            for pkt in vs.encode(None):
                c.mux(pkt)
        for i in range(0, audio.shape[1], n):
            chunk = audio[:, i:i + n]
            if codec != "pcm_s16le" and chunk.shape[1] < n:  # fixed-size encoders: pad the last frame
                chunk = np.pad(chunk, ((0, 0), (0, n - chunk.shape[1])))
            if sample_fmt.rstrip("p") in ("s16", "s32"):
                bits = 16 if sample_fmt.startswith("s16") else 32
                chunk = np.round(chunk.astype(np.float64) * 2 ** (bits - 1)).astype(f"int{bits}")
            arr = np.ascontiguousarray(chunk if sample_fmt.endswith("p") else chunk.T.reshape(1, -1))
            fr = av.AudioFrame.from_ndarray(arr, format=sample_fmt, layout=s.layout.name)
            fr.sample_rate, fr.time_base = sr, Fraction(1, sr)
            fr.pts = start + (frame_pts(i) if frame_pts is not None else i)
            for pkt in s.encode(fr):
                c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    finally:
        c.close()


# --------------------------------------------------------------------- 2. no trim at a guessed duration
@pytest.mark.parametrize("video", [False, True], ids=["audio-only", "with-video"])
def test_mpegts_audio_is_read_to_its_end(tmp_path, video):
    """MPEG-TS states no exact duration (FFmpeg estimates one from timestamps, which falls short when several AAC
    frames share a PES packet, as ffmpeg's default muxing delay makes them): `read_audio` keeps every decoded
    sample, and `probe` counts the same."""
    p = tmp_path / "a.ts"
    write_audio(p, "aac", noise(4.0, 48000), 48000, options={"max_delay": "700000"}, video=video)
    decoded = decode_audio_stream(p)[0]
    with av.open(str(p)) as c:  # the premise: the container's guess is short of what decodes
        s = c.streams.audio[0]
        assert s.duration and s.duration * s.time_base * 48000 < decoded.shape[1] - 1024
    full = read_audio(p)
    assert torch.equal(full, torch.from_numpy(decoded))
    assert probe(p).num_samples == full.shape[1]


def test_asf_audio_is_read_to_its_end(tmp_path):
    """ASF's header duration is not sample-exact: nothing is cut from the end of a WMA track."""
    p = tmp_path / "a.wma"
    write_audio(p, "wmav2", noise(3.0), SR, fmt="asf")
    decoded = torch.from_numpy(decode_audio_stream(p)[0])
    full = read_audio(p)
    assert torch.equal(full, read_audio(p, trim_padding=False))
    assert torch.equal(full[:, -2048:], decoded[:, -2048:])  # the last WMA frame, whole, at the end
