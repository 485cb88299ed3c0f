"""Media I/O: round trips with a per-frame barcode and known tones, the frame-selection rule across source frame
rates, windowed decoding equal to a full decode, rotation, writers, and every bad-input case."""

from __future__ import annotations

import wave
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from visualsound.media import (
    MediaError,
    MediaWindowError,
    MediaWriteError,
    MissingFileError,
    NoAudioStreamError,
    NotMediaError,
    NoVideoStreamError,
    TruncatedMediaError,
    center_crop,
    mux_audio,
    probe,
    read_audio,
    read_video,
    resize_short_side,
    write_video,
    write_wav,
)
from visualsound.media.write import as_rate

SR = 44100


def barcode_frame(index: int, h: int = 64, w: int = 64) -> np.ndarray:
    """A frame whose 8 vertical stripes are the bits of `index` (white = 1, most significant first)."""
    f = np.zeros((h, w, 3), np.uint8)
    for b in range(8):
        if (index >> (7 - b)) & 1:
            f[:, b * (w // 8):(b + 1) * (w // 8)] = 255
    return f


def read_barcode(frames: torch.Tensor) -> list[int]:
    """Decode `barcode_frame` indices from uint8 ``[T, H, W, 3]`` frames despite compression."""
    T, H, W, _ = frames.shape
    lum = frames[..., 1].float().reshape(T, H, 8, W // 8).mean(dim=(1, 3))
    bits = (lum > 128).long()
    return (bits * (2 ** torch.arange(7, -1, -1))).sum(-1).tolist()


def tones(seconds: float, sr: int = SR) -> np.ndarray:
    """Stereo: 440 Hz at amplitude 0.5 (left), 1000 Hz at 0.25 (right); float32 ``[2, N]``."""
    t = np.arange(int(round(seconds * sr))) / sr
    return np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 1000 * t)]).astype(np.float32)


def make_clip(path, fps, seconds=4.0, audio=True, gop=None):
    n = int(round(seconds * float(as_rate(fps))))
    frames = np.stack([barcode_frame(i) for i in range(n)])
    write_video(path, frames, fps, tones(seconds) if audio else None, SR if audio else None, gop=gop)
    return n


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    out = {}
    for fps in (24, 29.97, 30, 50, 25):
        p = d / f"clip_{fps}.mp4"
        out[fps] = (p, make_clip(p, fps, gop=12))
    return out


def expected_indices(start: float, n: int, src_fps: float) -> list[int]:
    """The documented rule: output k shows the last source frame with pts <= start + k / 25 (exact arithmetic)."""
    r = as_rate(src_fps)
    s = Fraction(start).limit_denominator(1000)
    return [int((s + Fraction(k, 25)) * r) for k in range(n)]


def test_probe_reports_streams(clips):
    p, n = clips[25]
    info = probe(p, require_video=True, require_audio=True)
    assert (info.has_video, info.has_audio) == (True, True)
    assert (info.width, info.height, info.num_frames, info.rotation) == (64, 64, n, 0)
    assert info.fps == pytest.approx(25.0) and info.duration == pytest.approx(4.0, abs=0.03)
    assert (info.sample_rate, info.channels, info.num_samples) == (SR, 2, 4 * SR)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    p2997, _ = clips[29.97]
    assert probe(p2997).fps == pytest.approx(30000 / 1001)


@pytest.mark.parametrize("src_fps", [24, 29.97, 30, 50, 25])
def test_frame_selection_rule_across_fps(clips, src_fps):
    p, n = clips[src_fps]
    assert read_barcode(read_video(p, fps=None)) == list(range(n))  # native decode is lossless in indices
    for start in (0.0, 1.3):
        v = read_video(p, start=start, duration=2.0, fps=25.0)
        assert v.shape == (50, 64, 64, 3) and v.dtype == torch.uint8
        assert read_barcode(v) == expected_indices(start, 50, src_fps), f"src {src_fps} start {start}"


@pytest.mark.parametrize("src_fps", [29.97, 50])
def test_window_decode_equals_full_decode(clips, src_fps):
    p, n = clips[src_fps]
    full = read_video(p, fps=25.0)
    assert full.shape[0] == sum(1 for k in range(200) if Fraction(k, 25) < n / as_rate(src_fps))  # 101 for 29.97
    for start in (0.0, 0.96, 1.52, 2.4):  # 1.52 s sits between keyframes (gop 12)
        win = read_video(p, start=start, duration=1.28, fps=25.0)
        k0 = int(round(start * 25))
        assert torch.equal(win, full[k0:k0 + 32]), f"start {start}"


def test_window_decodes_only_the_window(clips, caplog):
    p, n = clips[25]  # 100 frames, keyframe every 12 frames
    with caplog.at_level("DEBUG", logger="visualsound.media.video"):
        read_video(p, start=2.0, duration=0.4)
    (rec,) = [r for r in caplog.records if r.getMessage().startswith("decoded")]
    decoded, first_time, n_out = rec.args[:3]
    assert n_out == 10
    assert 1.5 <= first_time <= 2.0  # started at the keyframe before the window (frame 48 = 1.92 s)
    assert decoded < 30  # 2.0 s .. 2.4 s plus the keyframe lead-in and B-frame look-ahead, not 100


def test_window_past_end_and_bad_windows(clips):
    p, _ = clips[25]
    assert read_video(p, start=3.5, duration=2.0).shape[0] == 13  # 3.50 .. 3.98 -> frames 87..99
    with pytest.raises(MediaWindowError):
        read_video(p, start=4.5, duration=1.0)
    with pytest.raises(MediaWindowError):
        read_video(p, start=-1.0)
    with pytest.raises(MediaWindowError):
        read_audio(p, start=0.0, duration=0.0)
    with pytest.raises(MediaWindowError):
        read_audio(p, start=4.5, duration=1.0)


def test_tone_frequency_and_level(clips):
    p, _ = clips[25]
    a = read_audio(p, start=1.0, duration=2.0)
    assert a.shape == (2, 2 * SR) and a.dtype == torch.float32
    for ch, (freq, amp) in enumerate([(440, 0.5), (1000, 0.25)]):
        spec = np.abs(np.fft.rfft(a[ch].numpy()))
        assert np.argmax(spec) * SR / a.shape[1] == pytest.approx(freq, abs=1.0)
        assert float(a[ch].pow(2).mean().sqrt()) == pytest.approx(amp / np.sqrt(2), rel=0.05)
    m = read_audio(p, start=1.0, duration=2.0, mono=True)
    assert m.shape == (1, 2 * SR)
    torch.testing.assert_close(m[0], a.mean(0))


def test_aac_priming_and_padding(clips):
    p, _ = clips[25]
    trimmed = read_audio(p)
    padded = read_audio(p, trim_padding=False)
    assert trimmed.shape[1] == probe(p).num_samples == 4 * SR
    assert padded.shape[1] % 1024 == 0 and 0 < padded.shape[1] - trimmed.shape[1] < 1024
    torch.testing.assert_close(padded[:, :trimmed.shape[1]], trimmed)
    # priming dropped: the 440 Hz sine starts at phase 0 at t = 0 (AAC is lossy, so compare loosely)
    ref = torch.from_numpy(tones(0.5)[0])
    assert float((trimmed[0, 2048:SR // 2] - ref[2048:]).abs().mean()) < 0.02


def test_audio_window_equals_full_decode(clips, tmp_path):
    p, _ = clips[25]
    full = read_audio(p)
    for start in (0.0, 0.5, 1.2345, 2.9):
        win = read_audio(p, start=start, duration=1.0)
        s = int(round(start * SR))
        # AAC decoding restarts after the seek; PNS noise state may differ by ~1e-5 (lossless formats: exact)
        torch.testing.assert_close(win, full[:, s:s + SR], atol=1e-4, rtol=0)
    wav = tmp_path / "t.wav"
    write_wav(wav, full, SR)
    full_wav = read_audio(wav)
    for start in (0.7, 2.5):
        s = int(round(start * SR))
        assert torch.equal(read_audio(wav, start=start, duration=1.0), full_wav[:, s:s + SR])


def test_resampled_window_equals_resampled_full(clips):
    p, _ = clips[25]
    full16 = read_audio(p, sample_rate=16000)
    assert full16.shape == (2, 64000)
    for start in (0.0, 1.0, 1.2345):
        win = read_audio(p, start=start, duration=1.0, sample_rate=16000)
        s = int(round(start * 16000))
        assert win.shape == (2, 16000)
        torch.testing.assert_close(win, full16[:, s:s + 16000], atol=1e-4, rtol=0)


def test_write_wav_roundtrip(tmp_path):
    x = tones(0.25)
    write_wav(tmp_path / "a.wav", x, SR)
    with wave.open(str(tmp_path / "a.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (2, 2, SR, x.shape[1])
    y = read_audio(tmp_path / "a.wav")
    torch.testing.assert_close(y, torch.from_numpy(x), atol=1.0 / 32767, rtol=0)
    with pytest.raises(MediaWriteError):
        write_wav(tmp_path / "b.wav", x[0], SR)


def _encode_frames(path, codec, frames, fps=25, rotation=None):
    """Encode uint8 ``[T, H, W, 3]`` frames with `codec` straight through PyAV (frame i at pts i)."""
    c = av.open(str(path), "w")
    s = c.add_stream(codec, rate=fps)
    s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    if rotation is not None:
        s.set_display_rotation(rotation)
    for i, f in enumerate(frames):
        vf = av.VideoFrame.from_ndarray(f, format="rgb24")
        vf.pts = i
        for pkt in s.encode(vf):
            c.mux(pkt)
    for pkt in s.encode(None):
        c.mux(pkt)
    c.close()


def test_rotation_reported_and_applied(tmp_path):
    p = tmp_path / "rot.mp4"
    frame = np.zeros((32, 64, 3), np.uint8)
    frame[:8, :8] = 255  # marker in the stored top-left corner
    _encode_frames(p, "libx264", np.stack([frame] * 3), rotation=90)
    assert probe(p).rotation == 90
    stored = read_video(p)
    assert stored.shape == (3, 32, 64, 3)
    shown = read_video(p, apply_rotation=True)
    assert shown.shape == (3, 64, 32, 3)
    # 90 degrees counter-clockwise: the stored top-left corner is shown bottom-left
    assert shown[0, -8:, :8, 0].float().mean() > 200 and shown[0, :8, :8, 0].float().mean() < 50


def test_frame_to_rgb_reused_context_matches_fresh_conversion_in_threads(clips):
    """One swscale context per thread, reused across frames and sizes, gives the pixels of PyAV's own per-frame
    conversion, with several threads converting at once."""
    from concurrent.futures import ThreadPoolExecutor

    from visualsound.media.video import frame_to_rgb

    with av.open(str(clips[25][0])) as c:
        decoded = list(c.decode(video=0))
    sized = [f.reformat(width=w, height=h) for f in decoded[:6] for w, h in ((64, 64), (48, 32))]

    def convert(frames):
        return [frame_to_rgb(f) for f in frames]

    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(convert, [decoded, sized, decoded[::-1]]))
    for frames, out in zip([decoded, sized, decoded[::-1]], got):
        for f, rgb in zip(frames, out):
            assert np.array_equal(rgb, f.to_ndarray(format="rgb24"))


def test_mux_audio_copies_h264_and_adds_aac(clips, tmp_path):
    p, n = clips[25]
    out = tmp_path / "muxed.mp4"
    mux_audio(p, tones(5.0)[:1] * 0.5, 16000, out)
    info = probe(out, require_video=True, require_audio=True)
    assert (info.video_codec, info.audio_codec, info.channels, info.sample_rate) == ("h264", "aac", 1, 16000)
    assert info.num_frames == n
    assert info.num_samples == 4 * 16000  # trimmed to the video
    assert torch.equal(read_video(out, fps=None), read_video(p, fps=None))  # copied, not re-encoded
    with pytest.raises(MediaWriteError):
        mux_audio(p, tones(1.0), 16000, p)


@pytest.mark.parametrize("channels,samples", [(1, 44100 * 2 + 300), (2, 1000)])
def test_aac_from_one_frame_is_the_same_bytes_as_frame_by_frame(tmp_path, channels, samples):
    """`_encode_audio` hands PyAV the whole signal at once; a plain loop of 1024-sample frames gives the same
    file."""
    import io

    from visualsound.media.write import _add_aac, _encode_audio

    a = (np.random.default_rng(channels).standard_normal((channels, samples)) * 0.2).astype(np.float32)

    def encode(loop: bool) -> bytes:
        buf = io.BytesIO()
        with av.open(buf, "w", format="mp4") as c:
            s = _add_aac(c, 44100, channels, None, "fast")
            if not loop:
                _encode_audio(c, s, a, 44100, start=512)
            else:
                for i in range(0, samples, 1024):  # the reference: the encoder's frames one by one
                    f = av.AudioFrame.from_ndarray(np.ascontiguousarray(np.clip(a[:, i:i + 1024], -1, 1)),
                                                   format="fltp", layout="stereo" if channels == 2 else "mono")
                    f.sample_rate, f.pts = 44100, 512 + i
                    for p in s.encode(f):
                        c.mux(p)
                for p in s.encode(None):
                    c.mux(p)
        return buf.getvalue()

    assert encode(loop=False) == encode(loop=True)


def test_write_video_rejects_bad_input(tmp_path):
    with pytest.raises(MediaWriteError):
        write_video(tmp_path / "a.mp4", np.zeros((2, 63, 64, 3), np.uint8), 25)
    with pytest.raises(MediaWriteError):
        write_video(tmp_path / "a.mp4", np.zeros((2, 64, 64, 3), np.float32), 25)
    with pytest.raises(MediaWriteError):
        write_video(tmp_path / "a.mp4", np.zeros((2, 64, 64, 3), np.uint8), 25, tones(0.1), None)
    with pytest.raises(MediaError, match="a.mp4 failed"):  # an encoder failure is a typed error, not av's
        write_video(tmp_path / "a.mp4", np.zeros((2, 64, 64, 3), np.uint8), 25, preset="no-such-preset")
    assert list(tmp_path.iterdir()) == []  # nothing partial left behind


def test_resize_and_crop():
    v = torch.arange(2 * 40 * 80 * 3, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(2, 40, 80, 3)
    r = resize_short_side(v, 20, mode="bilinear", antialias=True)
    with pytest.raises(ValueError):
        resize_short_side(v, 20, mode="nearest", antialias=False)
    assert r.shape == (2, 20, 40, 3) and r.dtype == torch.uint8
    f = v.permute(0, 3, 1, 2).float()
    for mode in ("bilinear", "bicubic"):
        for aa in (True, False):
            rf = resize_short_side(f, 24, mode=mode, antialias=aa)
            ref = torch.nn.functional.interpolate(f, size=(24, 48), mode=mode, align_corners=False, antialias=aa)
            assert torch.equal(rf, ref)
    assert resize_short_side(torch.zeros(3, 100, 30), 15, mode="bicubic", antialias=False).shape == (3, 50, 15)
    assert resize_short_side(torch.zeros(3, 30, 100), 16, mode="bilinear", antialias=False).shape == (3, 16, 53)
    c = center_crop(v, 16)
    assert torch.equal(c, v[:, 12:28, 32:48, :])
    assert torch.equal(center_crop(f, (10, 21)), f[..., 15:25, 30:51])  # round(59 / 2) = 30 (banker's)
    with pytest.raises(ValueError):
        center_crop(v, 50)


def test_missing_and_not_media(tmp_path):
    with pytest.raises(MissingFileError):
        probe(tmp_path / "nope.mp4")
    with pytest.raises(MissingFileError):
        read_video(tmp_path)
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 10)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("AAAAAwAAAAlpbWFnZS9wbmcAAAAAAAAAQAAAAEAAAAAYAAAAAAAAAiiJUE5H\n" * 40)
    for name in ("text.mp4", "empty.mp4", "notes.txt"):  # FFmpeg opens notes.txt as "tty" (ANSI art) video
        for fn in (probe, read_video, read_audio):
            with pytest.raises(NotMediaError):
                fn(tmp_path / name)


@pytest.mark.parametrize("faststart", [True, False])
def test_truncated(tmp_path, faststart):
    p = tmp_path / "full.mp4"
    make_clip(p, 25, seconds=2.0)
    data = p.read_bytes()
    if not faststart:  # move the moov box to the end as plain ffmpeg writes it
        c_in = av.open(str(p))
        c_out = av.open(str(tmp_path / "moov_end.mp4"), "w")
        for s in c_in.streams:
            c_out.add_stream_from_template(s)
        for pkt in c_in.demux():
            if pkt.dts is not None:
                pkt.stream = c_out.streams[pkt.stream.index]
                c_out.mux(pkt)
        c_out.close()
        c_in.close()
        data = (tmp_path / "moov_end.mp4").read_bytes()
        assert data.find(b"moov") > data.find(b"mdat")
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    for fn in (probe, read_video, read_audio):
        with pytest.raises(TruncatedMediaError):
            fn(tmp_path / "cut.mp4")


def test_missing_streams(clips, tmp_path):
    p_video_only = tmp_path / "v.mp4"
    make_clip(p_video_only, 25, seconds=1.0, audio=False)
    info = probe(p_video_only)
    assert info.has_video and not info.has_audio and info.sample_rate is None
    with pytest.raises(NoAudioStreamError):
        read_audio(p_video_only)
    with pytest.raises(NoAudioStreamError):
        probe(p_video_only, require_audio=True)
    p_audio_only = tmp_path / "a.wav"
    write_wav(p_audio_only, tones(0.5), SR)
    info = probe(p_audio_only)
    assert info.has_audio and not info.has_video and info.num_samples == SR // 2
    with pytest.raises(NoVideoStreamError):
        read_video(p_audio_only)
    with pytest.raises(NoVideoStreamError):
        probe(p_audio_only, require_video=True)
    with pytest.raises(NoVideoStreamError):
        mux_audio(p_audio_only, tones(0.5), SR, tmp_path / "o.mp4")


def test_mux_audio_reencodes_other_codecs(tmp_path):
    src = tmp_path / "mpeg4.mp4"
    _encode_frames(src, "mpeg4", np.stack([barcode_frame(i) for i in range(30)]))
    assert probe(src).video_codec == "mpeg4"
    out = tmp_path / "out.mp4"
    mux_audio(src, tones(1.2), SR, out)
    info = probe(out)
    assert (info.video_codec, info.fps, info.num_frames, info.channels) == ("h264", 25.0, 30, 2)
    assert read_barcode(read_video(out, fps=None)) == list(range(30))


def test_audio_pts_gap_is_filled_with_silence(tmp_path):
    """Frames are placed by pts: a 0.3 s hole in a Matroska PCM track becomes zeros, in full and windowed reads."""
    p = tmp_path / "gap.mkv"
    sr = 8000
    c = av.open(str(p), "w")
    s = c.add_stream("pcm_s16le", rate=sr)
    s.layout = "mono"
    for pts in (0, 800, 1600, 4000, 4800):  # samples 2400..4000 missing
        f = av.AudioFrame.from_ndarray(np.full((1, 800), 16384, np.int16), format="s16", layout="mono")
        f.sample_rate, f.pts, f.time_base = sr, pts, Fraction(1, sr)
        for pkt in s.encode(f):
            c.mux(pkt)
    for pkt in s.encode(None):
        c.mux(pkt)
    c.close()
    full = read_audio(p)
    expected = torch.full((1, 5600), 0.5)
    expected[:, 2400:4000] = 0
    assert torch.equal(full, expected)
    assert torch.equal(read_audio(p, start=0.25, duration=0.3), expected[:, 2000:4400])


@pytest.mark.parametrize("fmt", ["s16", "s16p", "s32", "s32p", "u8", "u8p", "flt", "fltp", "dbl", "dblp"])
def test_frame_to_float_is_the_libsndfile_scaling(fmt):
    """The one sample converter behind read_audio and the FAD / KLD / ImageBind readers: integer ``k`` becomes
    exactly ``k / 2**(bits-1)`` (u8: ``(k - 128) / 128``), packed frames are de-interleaved to ``[C, n]``."""
    from visualsound.media.audio import frame_to_float

    planar, base = fmt.endswith("p"), fmt.rstrip("p")
    dtype = {"s16": np.int16, "s32": np.int32, "u8": np.uint8, "flt": np.float32, "dbl": np.float64}[base]
    rng = np.random.default_rng(0)
    if base in ("flt", "dbl"):
        chans = rng.uniform(-1, 1, (2, 777)).astype(dtype)
        expected = chans.astype(np.float32)
    else:
        info = np.iinfo(dtype)
        chans = rng.integers(info.min, info.max, (2, 777), dtype=dtype, endpoint=True)
        chans[:, :2] = [[info.min, info.max], [info.max, info.min]]
        offset, scale = (128.0, 128.0) if base == "u8" else (0.0, float(-int(info.min)))
        expected = ((chans.astype(np.float64) - offset) / scale).astype(np.float32)  # exact: scale is 2**k
    arr = chans if planar else np.ascontiguousarray(chans.T).reshape(1, -1)  # packed: interleaved [1, n * C]
    out = frame_to_float(av.AudioFrame.from_ndarray(arr, format=fmt, layout="stereo"))
    assert out.dtype == np.float32 and out.shape == (2, 777)
    assert np.array_equal(out, expected)
    if base in ("s16", "u8"):  # (s32's largest value rounds to 1.0 in float32, as in libsndfile)
        assert out.min() == -1.0 and out.max() < 1.0


def test_decode_audio_stream_keeps_every_decoded_sample(clips, tmp_path):
    """The whole-file reader behind FAD / KLD: a plain sequential decode with the AAC end padding kept (as
    libsndfile / torchaudio.load), PCM equal to `read_audio`; the s16 extraction quantises at the new rate."""
    from visualsound.media.audio import decode_audio_stream

    p, _ = clips[25]
    x, sr = decode_audio_stream(p)
    assert sr == SR and x.dtype == np.float32
    # a read from the start is not seeked, so it is the same decode (a seek to 0 skipped the AAC priming packet
    # and decoded the first frame cold: 448 zero samples, then up to 0.5 off)
    assert torch.equal(read_audio(p, trim_padding=False), torch.from_numpy(x))
    assert torch.equal(read_audio(p, duration=0.5), torch.from_numpy(x[:, :SR // 2]))
    assert x.shape[1] > probe(p).num_samples
    wav = tmp_path / "t.wav"
    write_wav(wav, x, SR)
    assert torch.equal(torch.from_numpy(decode_audio_stream(wav)[0]), read_audio(wav))
    y, sr24 = decode_audio_stream(p, resample_s16_to=24000)
    assert sr24 == 24000 and abs(y.shape[1] - x.shape[1] * 24000 / SR) <= 64
    assert np.array_equal(np.round(y * 32768), y * 32768)
    make_clip(tmp_path / "v.mp4", 25, seconds=0.5, audio=False)
    with pytest.raises(NoAudioStreamError):
        decode_audio_stream(tmp_path / "v.mp4")
