"""Streams that are not what they seem, made with PyAV (`tests.odd_media`):

* an mp4 cut between keyframes with ``-c copy`` (an edit list; the leading packets are flagged discard and
  decoders drop their frames): `probe` counts and the ImageBind preprocessing samples only the frames that play;
* audio files with cover art (mp3 ID3 picture, m4a ``covr``, Ogg ``METADATA_BLOCK_PICTURE``: a video stream with
  the ``attached_pic`` disposition): not video for `probe`, and every reader and writer that needs video refuses
  them with "no video stream (only a cover picture)"; `mux_audio` never writes a file without its audio;
* an mp4 whose first video stream is its cover: every reader takes the real video stream.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from tests.odd_media import audio_with_cover, cover_stream_first, cut_with_edit_list, read_barcode
from visualsound.cli import main
from visualsound.imagebind.preprocess import ClipError, preprocess_clip, read_clip
from visualsound.media import (
    MediaWriteError,
    NoVideoStreamError,
    copy_window,
    iter_video_window,
    mux_audio,
    probe,
    read_audio,
    read_fps_frames,
    read_video,
    write_preview,
)
from visualsound.media.info import is_cover_picture, video_stream

COVER = "no video stream \\(only a cover picture\\)"
CUT = 8  # frames the edit list skips
N = 75


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("odd_streams")
    files = {"cut.mp4": cut_with_edit_list(d / "cut.mp4", n=N, cut=CUT),
             "cut_bframes.mp4": cut_with_edit_list(d / "cut_bframes.mp4", n=N, cut=CUT, bframes=True),
             "cover_first.mp4": cover_stream_first(d / "cover_first.mp4", n=25)}
    for name in ("music.mp3", "music.m4a", "song.ogg"):
        files[name] = audio_with_cover(d / name)
    return files


def _discarded(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(p.is_discard for p in c.demux(c.streams.video[0]) if p.size)


# ------------------------------------------------------------------------------ edit lists: discarded packets
@pytest.mark.parametrize("name", ["cut.mp4", "cut_bframes.mp4"])
def test_probe_counts_the_frames_an_edit_list_plays(media, name):
    path = media[name]
    assert _discarded(path) == CUT  # the class of input: leading packets flagged discard
    info = probe(path)
    assert info.num_frames == N - CUT == read_video(path, fps=None).shape[0] and not info.cover_picture
    assert info.video_start == 0.0 and info.fps == 25.0


@pytest.mark.parametrize("name", ["cut.mp4", "cut_bframes.mp4"])
def test_imagebind_reads_a_clip_cut_between_keyframes(media, name):
    """`visualsound score` used to record such a clip as corrupt ("the decoder returned no frame for pts
    [-4096, ...]"): the discarded packets were counted as frames."""
    frames, waveform, facts = read_clip(media[name])
    shown = N - CUT
    assert facts["num_frames"] == shown and facts["duration"] == pytest.approx(shown / 25)
    for w, pair in enumerate(facts["video_frame_indices"]):
        # frame i of the clip is the i-th frame that plays: barcode CUT + i
        assert read_barcode(frames[w]) == [CUT + i for i in pair]
    assert waveform.shape[1] > 0
    video, audio, _ = preprocess_clip(media[name])
    assert tuple(video.shape) == (15, 3, 2, 224, 224) and tuple(audio.shape) == (3, 1, 128, 204)


# ------------------------------------------------------------------------------------- cover art is not video
@pytest.mark.parametrize("name", ["music.mp3", "music.m4a", "song.ogg"])
def test_audio_with_cover_art_is_not_video(media, name):
    path = media[name]
    with av.open(str(path)) as c:  # the class of input: FFmpeg shows the picture as a video stream
        assert [is_cover_picture(s) for s in c.streams.video] == [True]
        with pytest.raises(NoVideoStreamError, match=COVER):
            video_stream(c, path)
    info = probe(path)
    assert not info.has_video and info.has_audio and info.cover_picture
    assert info.fps is None and info.video_duration is None and info.num_frames is None
    assert info.duration == pytest.approx(1.0, abs=0.06)
    with pytest.raises(NoVideoStreamError, match=COVER):
        probe(path, require_video=True)
    audio, sr = read_audio(path, sample_rate=None), info.sample_rate
    assert audio.shape[0] == 2 and audio.shape[1] == pytest.approx(sr, rel=0.06)
    res = CliRunner().invoke(main, ["probe", str(path)])
    assert res.exit_code == 0 and "no video (only a cover picture)" in res.output, res.output
    res = CliRunner().invoke(main, ["probe", "--require-video", str(path)])
    assert res.exit_code == 2 and "NoVideoStreamError: " in res.output and "only a cover picture" in res.output


@pytest.mark.parametrize("name", ["music.mp3", "music.m4a", "song.ogg"])
def test_every_video_reader_refuses_cover_art_with_the_reason(media, name, tmp_path):
    path = media[name]
    with pytest.raises(NoVideoStreamError, match=COVER):
        read_video(path)
    with pytest.raises(NoVideoStreamError, match=COVER):
        list(iter_video_window(path, convert=lambda f, r: f))
    with pytest.raises(NoVideoStreamError, match=COVER):
        read_fps_frames(path, [25])
    with pytest.raises(ClipError, match=COVER) as e:
        read_clip(path)
    assert e.value.status == "no_video"
    out = tmp_path / "out.mp4"
    with pytest.raises(NoVideoStreamError, match=COVER):
        write_preview(path, out)
    with pytest.raises(NoVideoStreamError, match=COVER):
        copy_window(path, out)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["music.mp3", "music.m4a", "song.ogg"])
def test_mux_audio_refuses_cover_art(media, name, tmp_path):
    """It used to write an mp4 whose "video" was the cover and whose audio was trimmed to the cover's 11 us: no
    audio stream at all."""
    out = tmp_path / "out.mp4"
    with pytest.raises(NoVideoStreamError, match=COVER):
        mux_audio(media[name], np.zeros((1, 44100), np.float32), 44100, out)
    assert not list(tmp_path.iterdir())


def test_mux_audio_never_writes_a_file_without_its_audio(media, tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(MediaWriteError, match="no audio samples"):
        mux_audio(media["cover_first.mp4"], np.zeros((2, 0), np.float32), 44100, out)
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------- a cover listed before the real video
def test_readers_take_the_real_video_after_a_cover_stream(media, tmp_path):
    path = media["cover_first.mp4"]
    with av.open(str(path)) as c:  # the class of input: the first video stream is the cover
        assert is_cover_picture(c.streams.video[0]) and video_stream(c, path).codec_context.name == "h264"
    info = probe(path)
    assert info.has_video and info.cover_picture and info.video_codec == "h264"
    assert info.fps == 25.0 and info.num_frames == 25 and info.width == 64 and info.video_duration == pytest.approx(1.0)
    assert read_barcode(read_video(path)) == list(range(25))
    assert read_barcode(read_fps_frames(path, [25])[0].frames) == list(range(25))
    frames, _, facts = read_clip(path)
    assert facts["num_frames"] == 25
    assert read_barcode(frames.flatten(0, 1)) == [i for pair in facts["video_frame_indices"] for i in pair]
    out = tmp_path / "muxed.mp4"
    assert mux_audio(path, np.zeros((1, 44100), np.float32), 44100, out) == "copy"
    got = probe(out)
    assert got.has_video and got.has_audio and got.video_codec == "h264" and got.num_frames == 25
    assert read_barcode(read_video(out)) == list(range(25))
    copy_window(path, tmp_path / "copy.mp4", duration=0.6)  # may end with a B-frame's worth of frames more
    assert read_barcode(read_video(tmp_path / "copy.mp4"))[:15] == list(range(15))
    write_preview(path, tmp_path / "preview.mp4", duration=0.6, max_width=64)
    assert read_barcode(read_video(tmp_path / "preview.mp4")) == list(range(15))
