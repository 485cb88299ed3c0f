"""`write_preview` (a window of a video re-encoded small, scaled while decoding: the report's media), the quick
PCM WAV open of `open_media`, `read_audio_with_rate`, and frame-size changes in the middle of a stream."""

from __future__ import annotations

import struct

import av
import numpy as np
import pytest
import torch

from tests.odd_media import encode, read_barcode
from visualsound.media import (
    MediaWindowError,
    MediaWriteError,
    MissingFileError,
    NoVideoStreamError,
    probe,
    read_audio,
    read_audio_with_rate,
    read_video,
    write_preview,
    write_wav,
)
from visualsound.media import info as media_info


def _decoded(path) -> tuple[list[float], torch.Tensor]:
    """Every frame's time and pixels (``[T, H, W, 3]``) as stored, straight from PyAV."""
    with av.open(str(path)) as c:
        frames = [(float(f.time), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    return [t for t, _ in frames], torch.from_numpy(np.stack([f for _, f in frames]))


def test_preview_selects_frames_like_read_video_at_fps_with_exact_times(tmp_path):
    """30 fps source with B-frames and a 1/30 s time base: the preview holds read_video's frames of the window at
    25 fps, scaled to `max_width`, each at k / 25 s (a decoded frame's own time base must not leak into the
    encoder), with the gt audio cut to the frames' span."""
    src = tmp_path / "src.mp4"
    encode(src, n=60, fps=30, size=(128, 96), audio="aac", sample_rate=48000, audio_seconds=2.0)
    out = tmp_path / "preview.mp4"
    tone = torch.sin(torch.arange(48000 * 3) / 48000 * 2 * torch.pi * 440)[None] * 0.3  # 3 s: longer than the window
    poster = write_preview(src, out, start=0.5, duration=1.0, fps=25, max_width=64, audio=tone, sample_rate=48000,
                           aac_coder="fast")
    want = read_barcode(read_video(src, start=0.5, duration=1.0, fps=25)[:, :, :64])  # the barcode's 64 px
    assert want == [int((0.5 + k / 25) * 30) for k in range(25)]
    times, frames = _decoded(out)
    assert frames.shape == (25, 48, 64, 3), frames.shape
    assert read_barcode(frames[:, :, :32]) == want  # scaled by half: the barcode is 32 px wide
    assert times == pytest.approx([k / 25 for k in range(25)], abs=1e-6)
    assert poster.shape == (48, 64, 3) and read_barcode(torch.from_numpy(poster[None, :, :32])) == want[:1]
    info = probe(out)
    assert info.fps == 25 and (info.width, info.height) == (64, 48) and info.rotation == 0
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    audio = read_audio(out)
    assert abs(audio.shape[1] - 48000) <= 1024, audio.shape  # the frames' 1.0 s, to within one AAC frame


def test_preview_scaling_is_close_to_an_area_mean(tmp_path):
    """Scaled while decoding, the preview is at most `max_width` wide (aspect kept, sides even) and close to an
    area-mean downscale of the full-size frames (libx264 lossless here: only the scaling and 4:2:0 remain)."""
    from tests.test_media import _encode_frames
    from visualsound.media.video import even_size_within

    assert even_size_within(640, 360, 320) == (320, 180)
    assert even_size_within(636, 360, 320) == (320, 182)  # 181.1 -> the nearest even height
    assert even_size_within(200, 99, 320) == (200, 100)  # never up; odd sizes made even
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, size=(3, 9, 16, 3)).astype(np.uint8)
    frames = blocks.repeat(40, axis=1).repeat(40, axis=2)  # [3, 360, 640, 3]: 40x40 flat blocks
    src = tmp_path / "wide.mp4"
    _encode_frames(src, "libx264", frames)
    full = read_video(src).float()
    out = tmp_path / "p.mp4"
    write_preview(src, out, max_width=160, crf=0, preset="ultrafast")
    _, small = _decoded(out)
    assert small.shape == (3, 90, 160, 3), small.shape
    area = full.reshape(3, 90, 4, 160, 4, 3).mean(dim=(2, 4))  # the same picture averaged over 4x4 pixels
    diff = (small.float() - area).abs()
    inner = diff.reshape(3, 9, 10, 16, 10, 3)[:, :, 3:7, :, 3:7]  # block centres: no chroma-edge blending
    # the mean includes the block edges, where 4:2:0 chroma at 160x90 (80x45) blends neighbouring colours
    assert diff.mean() < 4.0 and inner.max() <= 4, (diff.mean(), inner.max())


def test_preview_of_a_narrow_video_keeps_its_size_and_of_a_short_one_its_frames(tmp_path):
    src = tmp_path / "src.mkv"
    encode(src, n=20, fps=25, size=(64, 48))
    out = tmp_path / "p.mp4"
    write_preview(src, out, duration=None, max_width=320)
    times, frames = _decoded(out)
    assert frames.shape == (20, 48, 64, 3) and read_barcode(frames) == list(range(20))
    write_preview(src, out, start=0.4, duration=5.0, max_width=320)  # runs past the end: what there is
    assert read_barcode(_decoded(out)[1]) == list(range(10, 20))


def test_preview_keeps_rotation_as_display_matrix_and_poster_is_shown_upright(tmp_path):
    src = tmp_path / "rot.mp4"
    encode(src, n=10, fps=25, size=(128, 64), rotation=90)
    out = tmp_path / "p.mp4"
    poster = write_preview(src, out, max_width=32)  # shown 64 wide x 128 high -> 32 x 64
    info = probe(out)
    assert info.rotation == 90 and (info.width, info.height) == (64, 32), info
    assert poster.shape == (64, 32, 3), poster.shape
    shown = read_video(out, apply_rotation=True)
    assert shown.shape == (10, 64, 32, 3)
    assert np.abs(shown[0].float().numpy() - poster.astype(np.float32)).mean() < 6


def _spliced_h264(tmp_path):
    """A raw H.264 stream whose frame size changes mid-way (two elementary streams spliced, as cut-and-paste
    tools leave them): 10 frames at 128x96, then 10 at 64x48 (barcodes 0-9 twice)."""
    a, b = tmp_path / "a.h264", tmp_path / "b.h264"
    encode(a, fmt="h264", n=10, fps=25, size=(128, 96), bframes=False)
    encode(b, fmt="h264", n=10, fps=25, size=(64, 48), bframes=False)
    spliced = tmp_path / "spliced.h264"
    spliced.write_bytes(a.read_bytes() + b.read_bytes())
    return spliced


def test_a_mid_stream_size_change_is_scaled_to_the_first_size(tmp_path, caplog):
    spliced = _spliced_h264(tmp_path)
    with caplog.at_level("INFO", logger="visualsound.media.video"):
        frames = read_video(spliced, fps=None)
    assert frames.shape == (20, 96, 128, 3), frames.shape  # was: np.stack failing on mixed sizes
    assert read_barcode(frames[:10, :, :64]) == list(range(10))
    assert read_barcode(frames[10:]) == list(range(10))  # the 64 px barcode stretched over 128 px
    assert caplog.text.count("changes mid-stream (128x96 -> 64x48)") == 1
    out = tmp_path / "p.mp4"
    write_preview(spliced, out, duration=None, max_width=64)
    _, shown = _decoded(out)
    assert shown.shape == (20, 48, 64, 3), shown.shape
    assert read_barcode(shown[:10, :, :32]) == list(range(10))  # 128 px halved: the barcode is 32 px wide
    assert read_barcode(shown[10:]) == list(range(10))  # the second part kept its 64 px


@pytest.mark.parametrize("codec,container", [("mjpeg", "avi"), ("libvpx-vp9", "webm")])
def test_preview_converts_full_range_sources_to_the_same_levels(tmp_path, codec, container):
    """A full-range source (MJPEG's yuvj420p; VP9 tagged full range, which decodes as yuv420p + a range flag)
    shows the same grey levels in the preview: mid greys 64 and 192 would read about 56 and 205 if the range
    were taken as the standard one."""
    src = tmp_path / f"full.{container}"
    c = av.open(str(src), "w")
    s = c.add_stream(codec, rate=25)
    s.width, s.height = 64, 48
    if codec == "mjpeg":
        s.pix_fmt = "yuvj420p"
    else:
        s.pix_fmt = "yuv420p"
        s.codec_context.color_range = 2
        s.options = {"deadline": "realtime", "cpu-used": "8", "crf": "4", "b": "0"}
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, :32], img[:, 32:] = 64, 192
    for i in range(5):
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.color_range = 2
        f = f.reformat(format=s.pix_fmt, dst_color_range=2)
        f.pts = i
        for p in s.encode(f):
            c.mux(p)
    for p in s.encode(None):
        c.mux(p)
    c.close()
    with av.open(str(src)) as c:
        first = next(c.decode(video=0))
        assert first.color_range == 2, (first.format.name, first.color_range)
    out = tmp_path / "p.mp4"
    poster = write_preview(src, out, max_width=64)
    _, frames = _decoded(out)
    for picture in (frames[0].numpy(), poster):
        left, right = picture[8:40, 4:28].mean(), picture[8:40, 36:60].mean()
        assert abs(left - 64) < 4 and abs(right - 192) < 4, (codec, left, right)


def test_preview_errors_name_the_source_and_leave_nothing(tmp_path):
    out = tmp_path / "p.mp4"
    with pytest.raises(MissingFileError):
        write_preview(tmp_path / "absent.mp4", out)
    wav = tmp_path / "a.wav"
    write_wav(wav, np.zeros((1, 4800), np.float32), 48000)
    with pytest.raises(NoVideoStreamError):
        write_preview(wav, out)
    src = tmp_path / "src.mp4"
    encode(src, n=10, fps=25)
    with pytest.raises(MediaWindowError, match="after the end"):
        write_preview(src, out, start=5.0, duration=1.0)
    with pytest.raises(MediaWriteError, match="max_width"):
        write_preview(src, out, max_width=1)
    assert list(tmp_path.glob("p*")) == []


# ------------------------------------------------------------------------------------------------ WAV open
def _wav_via_pyav(path, codec: str, x: np.ndarray, sr: int) -> None:
    c = av.open(str(path), "w", format="wav")
    s = c.add_stream(codec, rate=sr)
    s.layout = "stereo" if x.shape[0] == 2 else "mono"
    fmt = s.codec_context.format.name
    fs = s.codec_context.frame_size or 1024
    for i in range(0, x.shape[1], fs):
        chunk = np.ascontiguousarray(x[:, i:i + fs])
        if chunk.shape[1] < fs and s.codec_context.frame_size:
            chunk = np.pad(chunk, ((0, 0), (0, fs - chunk.shape[1])))
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=s.layout.name)
        frame.sample_rate = sr
        frame.pts = i
        frame = av.AudioResampler(format=fmt, layout=s.layout.name, rate=sr).resample(frame)[0] \
            if fmt != "fltp" else frame
        for p in s.encode(frame):
            c.mux(p)
    for p in s.encode(None):
        c.mux(p)
    c.close()


def _signal(channels: int, n: int = 12345) -> np.ndarray:
    t = np.arange(n) / 16000
    return np.stack([0.4 * np.sin(2 * np.pi * (300 + 200 * k) * t) for k in range(channels)]).astype(np.float32)


def _full_probe(monkeypatch) -> None:
    monkeypatch.setattr(media_info, "_open_pcm_wav", lambda path: None)


@pytest.mark.parametrize("codec,channels", [("pcm_s16le", 1), ("pcm_s16le", 2), ("pcm_f32le", 1), ("pcm_s24le", 2),
                                            ("pcm_u8", 1)])
def test_quick_wav_open_equals_full_probing(tmp_path, monkeypatch, codec, channels):
    p = tmp_path / "a.wav"
    _wav_via_pyav(p, codec, _signal(channels), 16000)
    opened = media_info._open_pcm_wav(p)
    assert opened is not None  # the quick path is taken for PCM
    opened.close()
    quick_info, quick = probe(p), read_audio_with_rate(p, start=0.1, duration=0.5)
    _full_probe(monkeypatch)
    full_info, full = probe(p), read_audio_with_rate(p, start=0.1, duration=0.5)
    assert quick_info == full_info
    assert quick[1] == full[1] == 16000 and torch.equal(quick[0], full[0])
    assert quick_info.num_samples == 12345


def test_quick_wav_open_with_a_streaming_header_and_a_compressed_wav(tmp_path, monkeypatch):
    """A WAV whose RIFF and data sizes say 0xFFFFFFFF (a writer that never went back to fill them in) reads the
    same both ways; a compressed WAV (IMA ADPCM) is left to the full probe."""
    p = tmp_path / "stream.wav"
    write_wav(p, _signal(1), 16000)
    data = bytearray(p.read_bytes())
    pos = data.index(b"data")
    data[4:8] = struct.pack("<I", 0xFFFFFFFF)
    data[pos + 4:pos + 8] = struct.pack("<I", 0xFFFFFFFF)
    p.write_bytes(bytes(data))
    quick = read_audio(p)
    adpcm = tmp_path / "adpcm.wav"
    _wav_via_pyav(adpcm, "adpcm_ima_wav", _signal(1, 16000), 16000)
    assert media_info._open_pcm_wav(adpcm) is None
    quick_adpcm = read_audio(adpcm)
    _full_probe(monkeypatch)
    assert torch.equal(quick, read_audio(p)) and quick.shape == (1, 12345)
    assert torch.equal(quick_adpcm, read_audio(adpcm))
    assert quick_adpcm.shape[1] >= 16000  # frames padded to the codec frame size
    assert (quick_adpcm[:, :16000] - torch.from_numpy(_signal(1, 16000))).abs().mean() < 0.05


def test_read_audio_with_rate_gives_the_rate_of_what_it_returns(tmp_path):
    p = tmp_path / "a.wav"
    write_wav(p, _signal(2), 16000)
    x, sr = read_audio_with_rate(p)
    assert sr == 16000 and torch.equal(x, read_audio(p))
    y, sr2 = read_audio_with_rate(p, sample_rate=8000, duration=0.5)
    assert sr2 == 8000 and y.shape == (2, 4000) and torch.equal(y, read_audio(p, sample_rate=8000, duration=0.5))


def test_writing_the_same_frames_gives_the_same_bytes(tmp_path):
    """libx264's macroblock tree gave a static 64x64 clip different bytes (3 in 40 writes of the same frames,
    depending on the process's memory, not on threads); `reproducible=True` (what `visualsound synth` uses)
    turns it off."""
    import hashlib

    from visualsound.media import write_video
    from visualsound.synth import SynthConfig, plan_clips, render_audio, render_video

    cfg = SynthConfig(count=6, duration=2.0, width=64, height=64, sample_rate=16000, seed=3,
                      mismatched_fraction=0.5, test_fraction=0.5)
    spec = plan_clips(cfg)[3]  # the clip that came out different
    v, a = render_video(spec, cfg), render_audio(spec, cfg)
    digests = set()
    for i in range(40):
        p = tmp_path / f"{i}.mp4"
        write_video(p, v, cfg.fps, a, cfg.sample_rate, reproducible=True)
        digests.add(hashlib.sha256(p.read_bytes()).hexdigest())
    assert len(digests) == 1, len(digests)
