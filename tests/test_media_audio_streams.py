"""Audio streams whose timestamps or format are not those of a clean mp4, written with PyAV (no ffmpeg binary):
millisecond timestamps (Matroska / WebM / FLV / ASF) read as contiguous audio, real gaps and clock drift still
placed by their timestamps, MPEG-TS and ASF audio read to its end (no trim at a guessed duration), and a channel
count or sample rate that changes within the stream raised as `AudioFormatChangeError`."""

from __future__ import annotations

import re
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from visualsound.media import probe, read_audio
from visualsound.media.audio import decode_audio_stream
from visualsound.media.errors import AudioFormatChangeError, MediaError

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


def chirp(seconds: float, sr: int = SR, channels: int = 2) -> np.ndarray:
    """A 300 -> 2100 Hz chirp over 3 s at amplitude 0.3 in every channel, float32 ``[C, N]``: tonal (lossy encoders
    code it without noise substitution, whose decoder noise depends on the decoding history, so windows decoded
    after a seek match a full decode) and never repeating (so a shifted read shows)."""
    t = np.arange(int(round(seconds * sr))) / sr
    return np.repeat((0.3 * np.sin(2 * np.pi * (300 * t + 300 * t * t)))[None], channels, 0).astype(np.float32)


def pcm16(x: np.ndarray) -> torch.Tensor:
    """What a 16-bit PCM track of `x` decodes to."""
    return torch.from_numpy(np.round(x * 32768).astype(np.int16).astype(np.float32) / 32768)


# ------------------------------------------------------------------------- 1. millisecond timestamps
@pytest.mark.parametrize("suffix", ["mkv", "flv"])
def test_ms_timestamps_pcm_reads_contiguous_and_windows_line_up(tmp_path, suffix):
    """1000-sample frames at 44.1 kHz are 22.676 ms apart: their pts are rounded to 1 ms (up to 22 samples off).
    That jitter is no gap or overlap: the read is the written signal exactly, and windows (after seeks) are
    its slices, resampled or not."""
    x = noise(3.0)
    p = tmp_path / f"pcm.{suffix}"
    write_audio(p, "pcm_s16le", x, SR, frame_size=1000)
    full = read_audio(p)
    assert torch.equal(full, pcm16(x))
    for start in (0.5, 1.2345, 2.0):
        s = int(round(start * SR))
        assert torch.equal(read_audio(p, start=start, duration=0.5), full[:, s:s + SR // 2]), start
    full16 = read_audio(p, sample_rate=16000)  # resampled windows: slices of the whole file resampled
    for start in (0.5, 1.2345):
        s = int(round(start * 16000))
        torch.testing.assert_close(read_audio(p, start=start, duration=0.5, sample_rate=16000),
                                   full16[:, s:s + 8000], atol=1e-4, rtol=0)


LOSSY = [("mkv", "aac", None), ("flv", "aac", None), ("mkv", "libmp3lame", None), ("webm", "libopus", None),
         ("webm", "vorbis", None), ("wma", "wmav2", "asf")]


@pytest.mark.parametrize("suffix,codec,fmt", LOSSY, ids=[f"{s}-{c}" for s, c, _ in LOSSY])
def test_ms_timestamps_lossy_reads_every_decoded_sample_in_order(tmp_path, suffix, codec, fmt):
    """AAC / MP3 / Opus / Vorbis / WMA with millisecond timestamps: `read_audio` is the sequential decode (after
    the silence before the first frame's timestamp), with no zero runs or dropped samples between frames; windows
    after a seek are slices of it (codecs with one frame size; Vorbis' frames vary, see the module docstring)."""
    sr = 48000 if codec == "libopus" else SR
    p = tmp_path / f"a.{suffix}"
    write_audio(p, codec, chirp(3.0, sr), sr, fmt=fmt)
    full = read_audio(p)
    decoded = torch.from_numpy(decode_audio_stream(p)[0])
    lead = full.shape[1] - decoded.shape[1]
    assert 0 <= lead < 0.1 * sr
    assert torch.equal(full[:, lead:], decoded)
    assert not full[:, :lead].any()
    assert torch.equal(read_audio(p, trim_padding=False), full)  # nothing to trim outside mp4 / mov
    if codec == "vorbis":
        return
    # Opus' decoder state takes ~0.2 s to converge after a seek (longer than the reader's pre-roll): compare the
    # windows' second halves there (a misplaced window differs in both halves)
    settled = sr // 4 if codec == "libopus" else 0
    for start in (0.5, 1.2345, 2.0):
        s = int(round(start * sr))
        win = read_audio(p, start=start, duration=0.5)
        assert win.shape == (2, sr // 2)
        torch.testing.assert_close(win[:, settled:], full[:, s + settled:s + sr // 2], atol=1e-4, rtol=0,
                                   msg=f"window at {start} s")


def test_ms_timestamps_real_gap_is_still_silence(tmp_path):
    """A 0.2 s hole in a millisecond-timestamped PCM track (far beyond the 1 ms resolution) is zeros, in full and
    windowed reads, and the samples after it are where their timestamps put them."""
    x = noise(2.0)
    hole = (40_000, 49_000)  # frames 40..48 missing
    p = tmp_path / "gap.mkv"
    c = av.open(str(p), "w")
    s = c.add_stream("pcm_s16le", rate=SR)
    s.layout = "stereo"
    for i in range(0, x.shape[1], 1000):
        if hole[0] <= i < hole[1]:
            continue
        fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(np.round(x[:, i:i + 1000] * 32768).astype(np.int16)
                                                             .T.reshape(1, -1)), format="s16", layout="stereo")
        fr.sample_rate, fr.pts, fr.time_base = SR, i, Fraction(1, SR)
        for pkt in s.encode(fr):
            c.mux(pkt)
    for pkt in s.encode(None):
        c.mux(pkt)
    c.close()
    expected = pcm16(x)
    expected[:, hole[0]:hole[1]] = 0
    full = read_audio(p)
    assert torch.equal(full, expected)
    assert torch.equal(read_audio(p, start=0.8, duration=0.5), expected[:, 35280:35280 + SR // 2])
    assert torch.equal(read_audio(p, start=1.5, duration=0.3), expected[:, 66150:66150 + 13230])


def test_timestamp_drift_resyncs_only_past_the_tolerance(tmp_path):
    """Frames of 1000 samples stamped 1001 samples apart (a clock 0.1 % off): the reader keeps them contiguous
    while the timestamps stay within the time base's resolution, then re-syncs with one gap: every frame lands
    within the tolerance of its timestamp, and there are few gaps, not one per frame."""
    frames = 200
    x = np.repeat(np.arange(1, frames + 1, dtype=np.float32)[None] / 32768, 1000, axis=1)  # frame k holds k + 1
    p = tmp_path / "drift.mkv"
    write_audio(p, "pcm_s16le", x, SR, frame_size=1000, frame_pts=lambda i: i // 1000 * 1001)
    y = read_audio(p)[0].numpy()
    starts = np.array([int(np.argmax(y == (k + 1) / 32768)) for k in range(frames)])
    tol = SR // 1000 + 1
    assert np.all(np.abs(starts - np.arange(frames) * 1001) <= tol)
    gaps = np.diff(starts) - 1000
    assert gaps.min() >= 0 and np.count_nonzero(gaps) <= frames // (tol - 1) + 1
    assert np.all(gaps[gaps > 0] > tol - 1)  # a re-sync closes the whole deviation, never 1 sample per frame


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


# -------------------------------------------------------------------- 3. format changes within a stream
def concat_ts(tmp_path: Path, name: str, parts: list[tuple[str, int, int]], video: bool = False) -> Path:
    """MPEG-TS segments ``(codec, rate, channels)`` of 1 s each (segment ``k`` stamped from ``k`` s) joined byte
    for byte, like ``cat seg1.ts seg2.ts`` of two broadcast recordings."""
    data = b""
    for k, (codec, rate, channels) in enumerate(parts):
        seg = tmp_path / f"{name}{k}.ts"
        write_audio(seg, codec, noise(1.0, rate, channels, seed=k), rate, start=k * rate, video=video)
        data += seg.read_bytes()
    out = tmp_path / f"{name}.ts"
    out.write_bytes(data)
    return out


def test_channel_count_change_is_a_typed_error(tmp_path):
    p = concat_ts(tmp_path, "ch", [("ac3", 48000, 2), ("ac3", 48000, 6)])
    what = re.compile(r"changes from 2 to 6 channels at (0\.99\d|1\.0[0-2]\d) s")  # (AC-3's encoder delay: 5 ms)
    for read in (read_audio, lambda q: decode_audio_stream(q), lambda q: decode_audio_stream(q, 16000)):
        with pytest.raises(AudioFormatChangeError, match=what) as e:
            read(p)
        assert str(p) in str(e.value) and isinstance(e.value, MediaError)


def test_sample_rate_change_is_a_typed_error(tmp_path):
    p = concat_ts(tmp_path, "sr", [("mp2", 48000, 2), ("mp2", 44100, 2)])
    what = re.compile(r"changes from 48000 Hz to 44100 Hz at (0\.99\d|1\.0[0-2]\d) s")
    for read in (lambda q: decode_audio_stream(q), lambda q: decode_audio_stream(q, 16000)):
        with pytest.raises(AudioFormatChangeError, match=what):
            read(p)
    with av.open(str(p)) as c:
        stated = c.streams.audio[0].codec_context.sample_rate
    # read_audio places samples at the stream's stated rate: a frame at another rate is never returned
    with pytest.raises(AudioFormatChangeError, match=r"Hz"):
        read_audio(p)
    with pytest.raises(AudioFormatChangeError, match=r"Hz"):
        read_audio(p, start=0.0 if stated == 44100 else 1.2, duration=0.5)


def test_format_change_is_a_clip_status_not_a_crash(tmp_path):
    """The ImageBind reader (`visualsound score`) records the clip as corrupt with the reason; `vbench sync`
    prints one line and exits 2 (a ToolkitError), not a numpy traceback."""
    from click.testing import CliRunner

    from benchmarks.cli import main
    from visualsound.imagebind.preprocess import ClipError, read_clip

    p = concat_ts(tmp_path, "chv", [("ac3", 48000, 2), ("ac3", 48000, 6)], video=True)
    with pytest.raises(ClipError, match=f"^{re.escape(str(p))}: the audio stream changes from 2 to 6 channels at") as e:
        read_clip(p)
    assert e.value.status == "corrupt"
    res = CliRunner().invoke(main, ["sync", str(p), "--debug-weights"])
    assert res.exit_code == 2, res.output
    assert "changes from 2 to 6 channels" in res.output and "Traceback" not in res.output
