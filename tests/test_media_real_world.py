"""Real-world media classes (issue #15), each reproduced by a file the test writes (`tests.odd_media`): durations
of files whose container states none or a wrong one, files without timestamps, damaged packets FFmpeg skips,
Ogg video without an average frame rate, and the error messages of every reader (no raw errno, always a
`MediaError` naming the file)."""

from __future__ import annotations

import re

import pytest
import torch

from tests.odd_media import corrupt_packet, encode, read_barcode
from visualsound.media import MediaError, TruncatedMediaError, probe, read_audio, read_video
from visualsound.media.audio import decode_audio_stream
from visualsound.media.info import DecodeReport, ffmpeg_reason


def test_mpeg1_elementary_stream_duration_comes_from_packets(tmp_path):
    # the container's estimate of a 4 s MPEG-1 elementary stream is 0.0006 s: it must not be trusted
    p = tmp_path / "clip.m1v"
    encode(p, codec="mpeg1video", fmt="mpeg1video", n=100, fps=25)
    info = probe(p)
    assert info.duration_source == "packets"
    assert info.duration == pytest.approx(4.0, abs=0.05), info
    assert info.num_frames == 100 and info.fps == 25
    assert read_video(p, fps=None).shape[0] == 100


def test_raw_h264_without_timestamps_probes_and_reads(tmp_path):
    # raw H.264 has no timestamps: seeking fails inside FFmpeg with EPERM ("[Errno 1] Operation not permitted")
    p = tmp_path / "clip.h264"
    encode(p, fmt="h264", n=50, fps=25)
    info = probe(p)
    assert info.timestamps is False and info.duration == pytest.approx(2.0) and info.num_frames == 50
    full = read_video(p, fps=None)
    assert read_barcode(full) == list(range(50))
    window = read_video(p, start=1.0, duration=0.4, fps=25)  # frames 25..34, placed at i / fps
    assert read_barcode(window) == list(range(25, 35))


def test_packet_span_duration_for_containers_without_a_frame_count(tmp_path):
    for name, codec, audio in (("a.mkv", "libx264", "aac"), ("b.webm", "libvpx-vp9", "libopus"),
                               ("c.ts", "mpeg2video", "mp2"), ("d.mpg", "mpeg1video", "mp2")):
        p = tmp_path / name
        encode(p, codec=codec, n=50, fps=25, audio=audio, audio_seconds=2.0)
        info = probe(p)
        assert info.duration_source == "packets", name
        assert info.duration == pytest.approx(2.0, abs=0.1), (name, info)
        assert info.num_samples == pytest.approx(2.0 * 48000, abs=0.1 * 48000), (name, info)
    mp4 = tmp_path / "e.mp4"
    encode(mp4, n=50, fps=25)
    assert probe(mp4).duration_source == "header"


def test_ogg_video_without_average_rate_uses_the_guessed_rate(tmp_path):
    import av

    p = tmp_path / "clip.ogv"
    encode(p, codec="libvpx", fmt="ogg", n=30, fps=10)
    with av.open(str(p)) as c:
        assert c.streams.video[0].average_rate is None  # the class of input: no average rate in Ogg
    info = probe(p)
    assert info.fps == 10 and info.duration == pytest.approx(3.0, abs=0.11)
    assert read_barcode(read_video(p, fps=10)) == list(range(30))


@pytest.fixture(scope="module")
def bad_ac3_avi(tmp_path_factory):
    d = tmp_path_factory.mktemp("avi")
    good = d / "good.avi"
    encode(good, codec="mpeg4", n=50, fps=25, audio="ac3", audio_seconds=2.0)
    bad = d / "bad.avi"
    t = corrupt_packet(good, "audio", 20, bad)
    return good, bad, t


def test_one_bad_audio_packet_is_skipped_counted_and_reported(bad_ac3_avi, caplog):
    good, bad, t_bad = bad_ac3_avi
    ref = read_audio(good)
    report = DecodeReport()
    with caplog.at_level("WARNING"):
        x = read_audio(bad, report=report)
    assert report.bad_packets == {"audio": 1} and report.total == 1
    assert any("skipped an undecodable audio packet" in r.getMessage() and str(bad) in r.getMessage()
               for r in caplog.records)
    assert x.shape == ref.shape  # the samples around the hole keep their place (silence in the hole)
    n = int(round(t_bad * 48000))
    assert torch.allclose(x[:, :n - 2048], ref[:, :n - 2048], atol=1e-4)
    assert torch.allclose(x[:, n + 4096:], ref[:, n + 4096:], atol=1e-4)
    r2 = DecodeReport()
    y, _ = decode_audio_stream(bad, report=r2)
    # the rejected AC-3 frame (1536 samples) is missing; the decoder may drop the one after it too
    assert r2.total == 1 and ref.shape[1] - 2 * 1536 <= y.shape[1] < ref.shape[1]


def test_scoring_reader_tolerates_the_bad_packet_and_counts_it(bad_ac3_avi):
    from visualsound.imagebind.preprocess import read_clip

    _, bad, _ = bad_ac3_avi
    frames, wave, facts = read_clip(bad)
    assert facts["bad_packets"] == 1 and wave.shape[1] > 0 and frames.shape[:2] == (5, 2)


def test_every_packet_bad_is_still_an_error(tmp_path):
    good = tmp_path / "good.avi"
    encode(good, codec="mpeg4", n=10, fps=25, audio="ac3", audio_seconds=0.05)
    bad = tmp_path / "bad.avi"
    corrupt_packet(good, "audio", 0, tmp_path / "tmp.avi")
    corrupt_packet(tmp_path / "tmp.avi", "audio", 1, bad)
    with pytest.raises(TruncatedMediaError, match="no audio packet decodes"):
        decode_audio_stream(bad)


_RAW_ERRNO = re.compile(r"\[Errno|Errno \d|Error number")


def test_ffmpeg_errors_are_plain_words():
    import av

    assert ffmpeg_reason(av.error.PermissionError(1, "Operation not permitted")).startswith("the operation is not")
    assert "FFmpeg error code -16976906" in ffmpeg_reason(
        av.error.UndefinedError(16976906, "Error number -16976906 occurred"))
    assert ffmpeg_reason(av.error.InvalidDataError(1094995529, "Invalid data found when processing input")) == \
        "invalid data (corrupt or unsupported)"


def test_no_raw_errno_and_only_media_errors_from_readers(tmp_path):
    """A zoo of broken files: every reader raises a `MediaError` naming the file, never a raw errno."""
    good = tmp_path / "good.mkv"
    encode(good, n=30, fps=25, audio="aac", audio_seconds=1.2)
    data = good.read_bytes()
    files = {"cut.mkv": data[:len(data) // 3], "garbage_tail.mkv": data[:600] + bytes(range(256)) * 40,
             "header_only.mkv": data[:200]}
    for name, blob in files.items():
        (tmp_path / name).write_bytes(blob)
    for name in files:
        p = tmp_path / name
        for reader in (probe, read_video, read_audio, decode_audio_stream):
            try:
                reader(p)
            except MediaError as e:
                assert str(p) in str(e) and not _RAW_ERRNO.search(str(e)), (reader.__name__, str(e))
            except Exception as e:  # noqa: BLE001
                pytest.fail(f"{reader.__name__}({name}) raised {type(e).__name__}: {e}")


def test_unreadable_file_is_a_media_error(tmp_path, monkeypatch):
    from visualsound.media import info as info_module

    p = tmp_path / "locked.mp4"
    encode(p, n=5)

    def denied(*a, **k):  # what a file without read permission gives a non-root user
        raise PermissionError(13, "Permission denied", str(p))

    monkeypatch.setattr(info_module, "open", denied, raising=False)
    with pytest.raises(MediaError, match="locked.mp4: cannot read the file: Permission denied"):
        probe(p)
