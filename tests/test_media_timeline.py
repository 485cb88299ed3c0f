"""One timeline for picture and sound: `read_video` and `read_audio` windows both count from the file's start
(FFmpeg's start time), so the sound they return plays with the frames they return, in files whose streams do
not start at 0 (an MPEG-TS recording starting at 1.4 s) or not together (audio starting 0.5 s after the video)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from visualsound.media import probe, read_audio, read_video

SR, FPS, N, FLASH = 16000, 25, 100, 50  # 4 s; frame 50 (2.0 s of the picture) is white, the sound starts with it


def flash_clip(path, fmt: str, video_at: float = 0.0, audio_at: float = 0.0):
    """A 4 s clip whose picture starts at stream time `video_at` and sound at `audio_at`; the white frame and a
    1 kHz burst are both at 2.0 s of their own stream."""
    with av.open(str(path), "w", format=fmt) as c:
        v = c.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = c.add_stream("aac", rate=SR, layout="mono")
        for i in range(N):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 255 if i == FLASH else 0, np.uint8), "rgb24")
            frame.pts, frame.time_base = i + round(video_at * FPS), Fraction(1, FPS)
            for p in v.encode(frame):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        x = np.zeros((1, N * SR // FPS), np.float32)
        s0 = FLASH * SR // FPS
        x[0, s0:s0 + 1600] = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(1600) / SR)
        frame = av.AudioFrame.from_ndarray(x, format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = SR, round(audio_at * SR), Fraction(1, SR)
        for p in a.encode(frame):
            c.mux(p)
        for p in a.encode(None):
            c.mux(p)
    return path


def flash_and_sound(path, start: float = 0.0, duration: float = 3.0) -> tuple[float, float, int, int]:
    """(time of the white frame, time of the sound's onset, frames, samples), seconds into the window."""
    frames = read_video(path, start, duration, FPS)
    sound = read_audio(path, start, duration, SR, mono=True)[0].numpy()
    return (int(frames.float().mean(dim=(1, 2, 3)).argmax()) / FPS, int(np.argmax(np.abs(sound) > 0.2)) / SR,
            frames.shape[0], sound.shape[0])


@pytest.mark.parametrize("fmt,suffix", [("mpegts", "ts"), ("mp4", "mp4"), ("matroska", "mkv")])
def test_streams_starting_late_are_read_from_the_file_start(tmp_path, fmt, suffix):
    """Both streams start at 1.4 s (as FFmpeg's MPEG-TS muxer writes them): ``start=0`` is the first frame and the
    first sample, and the flash and the burst come out together (within a frame: MPEG-TS keeps AAC's priming)."""
    path = flash_clip(tmp_path / f"late.{suffix}", fmt, video_at=1.4, audio_at=1.4)
    info = probe(path)
    assert info.start == pytest.approx(1.4, abs=0.1) and info.video_start >= 1.4 - 1e-3, info
    flash, sound, frames, samples = flash_and_sound(path, 1.0)
    assert flash == pytest.approx(1.0, abs=0.1) and abs(flash - sound) < 1 / FPS, (flash, sound)
    assert (frames, samples) == (3 * FPS, 3 * SR)


@pytest.mark.parametrize("fmt,suffix", [("mp4", "mp4"), ("matroska", "mkv")])
def test_audio_starting_after_the_video_keeps_its_delay(tmp_path, fmt, suffix):
    """The sound starts 0.5 s after the picture: the burst is heard 0.5 s after the flash, as players play it,
    and the window's first half second is silence (the full window's samples, not 0.5 s fewer)."""
    path = flash_clip(tmp_path / f"delayed.{suffix}", fmt, audio_at=0.5)
    for start in (0.0, 1.0):
        flash, sound, frames, samples = flash_and_sound(path, start)
        assert sound - flash == pytest.approx(0.5, abs=2e-3), (start, flash, sound)
        assert (frames, samples) == (3 * FPS, 3 * SR)
    head = read_audio(path, 0.0, 0.4, SR)
    assert head.shape == (1, int(0.4 * SR)) and float(head.abs().max()) == 0.0


def test_recordings_joined_end_to_end_are_refused_with_the_reason(tmp_path):
    """Two MPEG-TS recordings joined with ``cat``: the timestamps start again at the join, so the file has no
    single timeline (the readers returned the first half and a frozen frame, without a word). `probe`, every read
    that crosses the join, av-benchmark's video reader and ImageBind scoring refuse it, naming the jump and the
    remedy (a window wholly on one side of the join cannot tell: the jobs `probe` first, or read the whole file)."""
    from visualsound.media import TimestampJumpError

    part = flash_clip(tmp_path / "part.ts", "mpegts", video_at=1.4, audio_at=1.4)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(part.read_bytes() * 2)
    with pytest.raises(TimestampJumpError, match=r"jump back from 5\.\d+ s to 1\.\d+ s .*ffmpeg -i IN -c copy"):
        probe(joined)
    with pytest.raises(TimestampJumpError, match="jump back"):
        read_video(joined, 0.0, None, FPS)
    with pytest.raises(TimestampJumpError, match="audio timestamps jump back"):
        read_audio(joined)
    from visualsound.imagebind.preprocess import ClipError, read_clip
    from visualsound.media.fps_filter import read_fps_frames

    with pytest.raises(TimestampJumpError, match="video timestamps jump back"):  # av-benchmark's video reader
        read_fps_frames(joined, [25, 0.5], flush=False)
    with pytest.raises(ClipError, match="video timestamps jump back"):  # `visualsound score` (no probe first)
        read_clip(joined)
    assert probe(part).duration == pytest.approx(4.0, abs=0.1)  # one recording alone is fine


def test_generation_windows_count_from_the_file_start(tmp_path):
    """V-AURA's frames for an evaluation window (`ClipRequest(start=s)`) are those `read_video` gives for it, so
    the generated sound lines up with the ground truth also where the video starts after the file (here 0.5 s
    after its audio); the default request (`start=None`, what ``vaura generate`` muxes) starts at the first
    frame."""
    from vaura.generate import ClipRequest, read_clip

    path = flash_clip(tmp_path / "video_late.mkv", "matroska", video_at=0.5)
    info = probe(path)
    late = info.video_start - info.start  # 0.48 s: the encoder's first frame is at 0.48
    assert late > 0.4, info

    def flash_at(frames) -> float:
        return int(frames.float().mean(dim=(1, 2, 3)).argmax()) / FPS

    window = read_clip(ClipRequest(path, start=0.0, duration=3.0))
    flash, _, frames, _ = flash_and_sound(path, 0.0)
    assert window.frames.shape[0] == frames == 3 * FPS and window.duration == 3.0
    assert flash_at(window.frames) == flash == pytest.approx(late + FLASH / FPS, abs=1e-6)
    whole = read_clip(ClipRequest(path))
    assert whole.duration == pytest.approx(N / FPS, abs=1e-3) and flash_at(whole.frames) == FLASH / FPS
    to_end = read_clip(ClipRequest(path, start=0.0))
    assert to_end.duration == pytest.approx(late + N / FPS, abs=1e-3), to_end.duration


def test_cached_vaura_samples_from_the_first_frame_are_made_again(tmp_path):
    """Samples cached before generation windows counted from the file's start are kept where the video starts
    with the file, made again where it starts later, and not used (but kept) where the video cannot be
    probed."""
    from types import SimpleNamespace

    from benchmarks.models import TIMELINE_MARK, VAuraModel

    model = VAuraModel(debug_weights=True, out_dir=tmp_path / "gen")
    folder = tmp_path / "gen" / "set" / model.cache_key
    clips = {"same": flash_clip(tmp_path / "same.mkv", "matroska"),
             "late": flash_clip(tmp_path / "late.mkv", "matroska", video_at=0.5),
             "gone": tmp_path / "gone.mkv"}
    clips["gone"].write_text("not a video")
    for cid in clips:
        (folder / cid).mkdir(parents=True)
        (folder / cid / "seed0_0.000s+2.560s.wav").write_bytes(b"old")
    reuse = {cid: model._check_timeline(folder, SimpleNamespace(id=cid, video=str(v))) for cid, v in clips.items()}
    assert reuse == {"same": True, "late": True, "gone": False}
    left = {cid: sorted(p.name for p in (folder / cid).iterdir()) for cid in clips}
    assert left == {"same": [TIMELINE_MARK, "seed0_0.000s+2.560s.wav"], "late": [TIMELINE_MARK],
                    "gone": ["seed0_0.000s+2.560s.wav"]}
    assert model._check_timeline(folder, SimpleNamespace(id="late", video=str(clips["late"])))  # checked once


def ogg_tone(path, codec: str, sample_rate: int, seconds: float, freq: float):
    """An Ogg audio file of a stereo `freq` tone: Opus (``libopus``) or FFmpeg's own Vorbis (``vorbis``)."""
    with av.open(str(path), "w", format="ogg") as c:
        a = c.add_stream(codec, rate=sample_rate, layout="stereo")
        if codec == "vorbis":
            a.codec_context.options = {"strict": "experimental"}
        k = np.arange(int(round(seconds * sample_rate))) / sample_rate
        tone = (0.3 * np.sin(2 * np.pi * freq * k)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = sample_rate, 0
        for p in [*a.encode(frame), *a.encode(None)]:
            c.mux(p)
    return path


def ogg_parts(tmp_path, kind: str):
    """Two Ogg files to join with ``cat``: `kind` ``opus`` (one format: FFmpeg decoded both, its timestamps
    starting again at 0 at the join), ``vorbis`` (44.1 then 22.05 kHz: FFmpeg's decoding failed at the join) or
    ``ogv`` (VP8 + Opus: FFmpeg's demuxing failed at the join)."""
    from tests.odd_media import encode

    if kind == "ogv":
        parts = tmp_path / "a.ogv", tmp_path / "b.ogv"
        for p, n in zip(parts, (12, 15)):
            encode(p, codec="libvpx", fmt="ogg", n=n, fps=10, audio="libopus", audio_seconds=n / 10)
        return parts
    codec, suffix, rates = {"opus": ("libopus", "opus", (48000, 48000)),
                            "vorbis": ("vorbis", "ogg", (44100, 22050))}[kind]
    return (ogg_tone(tmp_path / f"a.{suffix}", codec, rates[0], 1.2, 440),
            ogg_tone(tmp_path / f"b.{suffix}", codec, rates[1], 1.5, 880))


@pytest.mark.parametrize("kind", ["opus", "vorbis", "ogv"])
def test_chained_ogg_is_refused_alike_by_probe_and_every_reader(tmp_path, kind):
    """Ogg files joined with ``cat`` (a chained Ogg file: Ogg streams one after another): each link's clock starts
    again at 0 and a link may bring another format or other streams, so the file has no single timeline. `probe`
    accepted joined audio files (taking the duration FFmpeg states: about the last link's), which `read_audio`
    then refused (timestamps jumping back) or failed on ("Not yet implemented in FFmpeg" at the rate change); a
    video link failed `probe` that way too. Now `open_media` refuses every chained Ogg file, so `probe` and every
    reader give the same reason and remedy."""
    from visualsound.imagebind.preprocess import ClipError, read_clip
    from visualsound.media import ChainedOggError, TimestampJumpError
    from visualsound.media.audio import decode_audio_stream
    from visualsound.media.fps_filter import read_fps_frames
    from visualsound.media.info import ogg_links

    first, second = ogg_parts(tmp_path, kind)
    for part in (first, second):  # each part alone is one Ogg stream, read as usual
        assert ogg_links(part) == [0]
        info = probe(part)
        assert read_audio(part).shape[1] / info.sample_rate == pytest.approx(info.duration, abs=0.05), info
    joined = tmp_path / f"joined{first.suffix}"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    cut = first.stat().st_size
    assert ogg_links(joined) == [0, cut]
    reason = (rf"joined{first.suffix}: a chained Ogg file: 2 Ogg streams one after another .* at bytes 0, {cut}; .*"
              rf"no single timeline\. Re-encode it as one stream: `ffmpeg -i IN -c:a libopus OUT\.opus` .*"
              rf"`head -c {cut} IN > PART1{first.suffix}`")
    readers = [probe, read_audio, decode_audio_stream]
    if kind == "ogv":
        readers += [lambda p: read_video(p, 0.0, None, FPS), lambda p: read_fps_frames(p, [25, 0.5], flush=False)]
    for read in readers:
        with pytest.raises(ChainedOggError, match=reason):
            read(joined)
    with pytest.raises(ClipError, match=reason) as e:  # `visualsound score` (no probe first)
        read_clip(joined)
    assert e.value.status == "corrupt" and issubclass(ChainedOggError, TimestampJumpError)


def test_chained_ogg_is_rejected_at_dataset_build_with_the_reason(tmp_path):
    """`vbench datasets build --videos DIR` probes every file: a chained Ogg video is rejected, its reason
    recorded, the other videos kept."""
    from benchmarks.datasets import build_dataset

    folder = tmp_path / "videos"
    folder.mkdir()
    first, second = ogg_parts(tmp_path, "ogv")
    (folder / "plain.ogv").write_bytes(first.read_bytes())
    (folder / "joined.ogv").write_bytes(first.read_bytes() + second.read_bytes())
    ds = build_dataset("folder", videos=folder)
    rejected = dict(ds.rejected)
    assert ds.ids == ["plain"] and set(rejected) == {"joined"}, (ds.ids, rejected)
    assert "joined.ogv: a chained Ogg file: 2 Ogg streams" in rejected["joined"], rejected


def test_ogg_links_resynchronise_after_damage(tmp_path):
    """`ogg_links` walks page headers; a stretch that is not a page is skipped to the next ``OggS`` as demuxers
    skip it: junk between two joined files still shows two links, damage inside one file no second link."""
    from visualsound.media.info import ogg_links

    data = ogg_tone(tmp_path / "a.opus", "libopus", 48000, 1.2, 440).read_bytes()
    junk = tmp_path / "junk.opus"
    junk.write_bytes(data + b"junk" * 100 + data)
    assert ogg_links(junk) == [0, len(data) + 400]
    damaged = tmp_path / "damaged.opus"
    damaged.write_bytes(data[:200] + bytes(50) + data[250:])
    assert ogg_links(damaged) == [0]
