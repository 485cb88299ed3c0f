"""Generated mp4s of real-world inputs (issue #15): every input frame at its input time (barcode per frame) with
rotation and start time kept and the audio covering the video's span, for H.264 in Matroska (packets without a
DTS), VP9 with variable frame times, rotated and non-zero-start clips, odd frame sizes, Ogg and raw H.264; and the
batch-mode refusals (name collisions, empty folders) and the growing generation record."""

from __future__ import annotations

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from tests.odd_media import audio_with_cover, encode, frame_times
from visualsound.media import mux_audio, probe, read_audio

SR = 44100
VFR_TIMES = [0, 0.03, 0.1, 0.12, 0.3, 0.31, 0.5, 0.6, 0.61, 0.62, 0.9, 1.0, 1.05, 1.2, 1.4, 1.45, 1.5, 1.7, 1.9, 2.0]
CASES = {  # name -> (encode kwargs, expected mux mode)
    "h264_bframes.mkv": (dict(n=30, audio="aac"), "copy"),  # Matroska: no DTS on the first packets
    "h264_start.mkv": (dict(n=25, start=1.2, audio="aac", audio_seconds=1.6), "copy"),
    "h264_rot270.mp4": (dict(n=20, rotation=270), "copy"),
    "h264.ts": (dict(n=30, audio="aac"), "copy"),
    "vp9_vfr.webm": (dict(codec="libvpx-vp9", n=len(VFR_TIMES), times=VFR_TIMES, audio="libopus"), "re-encode"),
    "vp9_rot90.mkv": (dict(codec="libvpx-vp9", n=20, rotation=90), "re-encode"),
    "vp9_odd_71x41.webm": (dict(codec="libvpx-vp9", n=10, size=(71, 41)), "re-encode"),
    "vp8.ogv": (dict(codec="libvpx", fmt="ogg", n=20, fps=10), "re-encode"),
    "raw.h264": (dict(fmt="h264", n=30), "re-encode"),
    "mpeg1_start.mpg": (dict(codec="mpeg1video", n=30, audio="mp2"), "re-encode"),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("odd")
    for name, (kw, _) in CASES.items():
        encode(d / name, **kw)
    return {name: d / name for name in CASES}


def _expected_times(path: Path) -> list[tuple[float, int]]:
    got = frame_times(path)
    info = probe(path)
    if any(math.isnan(t) for t, _ in got):  # raw streams: frame i at i / fps
        return [(info.video_start + i / info.fps, idx) for i, (_, idx) in enumerate(got)]
    return got


@pytest.mark.parametrize("name", list(CASES))
def test_mux_keeps_every_frame_time_rotation_and_start(inputs, tmp_path, name):
    src = inputs[name]
    info = probe(src)
    out = tmp_path / "out.mp4"
    audio = np.zeros((1, 5 * SR), np.float32)
    k = int(0.2 * SR)  # a 10 ms burst 0.2 s after the first frame marks where the audio sits on the timeline
    audio[0, k:k + 441] = 0.8 * np.sin(2 * np.pi * 1000 * np.arange(441) / SR)
    mode = mux_audio(src, audio, SR, out)
    assert mode == CASES[name][1]
    want, got = _expected_times(src), frame_times(out)
    assert [i for _, i in got] == [i for _, i in want], name  # same frames (content), same order, none lost
    assert max(abs(a - b) for (a, _), (b, _) in zip(got, want)) < 1e-3, (name, got[:4], want[:4])
    o = probe(out)
    assert o.rotation == info.rotation
    assert (o.width, o.height) == (info.width + info.width % 2, info.height + info.height % 2)
    assert o.video_start == pytest.approx(info.video_start, abs=1e-3)
    assert o.video_duration == pytest.approx(info.video_duration, abs=1e-3)
    # the audio's first sample plays with the first frame, and the audio covers the video's span
    decoded = read_audio(out)[0].abs().numpy()
    onset = o.audio_start + int(np.argmax(decoded > 0.2)) / SR
    assert onset == pytest.approx(info.video_start + 0.2, abs=2e-3), (name, onset, info.video_start)
    end = o.audio_start + decoded.shape[0] / SR
    assert end == pytest.approx(info.video_start + info.video_duration, abs=2e-3)


@pytest.fixture(scope="module")
def pipe():
    from vaura.generate import load_pipeline

    return load_pipeline(debug_weights=True)


def test_generation_covers_the_video_span_from_its_first_frame(inputs, tmp_path, pipe, one_thread):
    """A video starting at 1.2 s whose audio lasts longer: the generated audio covers the video stream's own
    span, read from its first frame (it used to start at 0 and run to the container's end)."""
    from vaura.generate import generate_for_video, output_paths, write_outputs

    src = inputs["h264_start.mkv"]
    info = probe(src)
    assert info.duration > info.video_duration + 0.3  # the input's audio lasts longer than its video
    res = generate_for_video(src, pipe, seed=0)
    assert res.duration == pytest.approx(info.video_duration) and res.bad_packets == 0
    assert res.audio.shape[-1] == round(info.video_duration * SR)
    paths = output_paths(tmp_path / "gen.mp4", tmp_path, 1)
    write_outputs(src, res, paths)
    assert [i for _, i in frame_times(paths[0][1])] == list(range(25))
    assert probe(paths[0][0]).num_samples == res.audio.shape[-1]


def test_cli_odd_size_video_generates_and_muxes(inputs, tmp_path, one_thread):
    """720x405-style odd sizes: the mp4 is written (padded by one edge row / column), no stray wav on failure."""
    from vaura.cli import main

    out = tmp_path / "odd.mp4"
    res = CliRunner().invoke(main, ["generate", "--video", str(inputs["vp9_odd_71x41.webm"]), "--out", str(out),
                                    "--debug-weights", "--greedy"])
    assert res.exit_code == 0, res.output
    o = probe(out)
    assert (o.width, o.height) == (72, 42) and o.has_audio and out.with_suffix(".wav").exists()


def test_failed_mux_leaves_no_wav(tmp_path, pipe, one_thread, monkeypatch):
    from vaura import generate as g
    from visualsound.media import MediaError

    src = tmp_path / "v.mkv"
    encode(src, n=10)
    res = g.generate_for_video(src, pipe, seed=0)

    def broken(*a, **k):
        raise MediaError(f"{src}: muxing failed: invalid data")

    monkeypatch.setattr("visualsound.media.mux_audio", broken)
    paths = g.output_paths(tmp_path / "o.mp4", tmp_path, 1)
    with pytest.raises(MediaError, match="v.mkv"):
        g.write_outputs(src, res, paths)
    assert not paths[0][0].exists() and not paths[0][1].exists()


def test_batch_refuses_name_collisions_and_empty_folders(tmp_path):
    from vaura.cli import main

    src = tmp_path / "videos"
    src.mkdir()
    encode(src / "clip.mp4", n=5)
    encode(src / "clip.webm", codec="libvpx-vp9", n=5)
    res = CliRunner().invoke(main, ["generate", "--video", str(src), "--out", str(tmp_path / "out"),
                                    "--debug-weights"])
    assert res.exit_code == 2 and "clip.mp4" in res.output and "clip.webm" in res.output, res.output
    assert not (tmp_path / "out").exists()  # refused before anything was generated
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no videos here")
    res = CliRunner().invoke(main, ["generate", "--video", str(empty), "--out", str(tmp_path / "x.mp4"),
                                    "--debug-weights"])
    assert res.exit_code == 2 and "not the file name" in res.output, res.output
    res = CliRunner().invoke(main, ["generate", "--video", str(empty), "--out", str(tmp_path / "gen"),
                                    "--debug-weights"])
    assert res.exit_code == 2 and "holds no video files" in res.output and "readme.txt" in res.output, res.output
    assert not (tmp_path / "x.mp4").exists() and not (tmp_path / "gen").exists()


def test_generation_record_grows_and_survives_a_kill(tmp_path, monkeypatch, one_thread):
    """generation.json is rewritten after every item: a batch killed on its second video keeps the first."""
    from vaura import generate as g
    from vaura.cli import main

    src = tmp_path / "videos"
    src.mkdir()
    encode(src / "a.mkv", n=8)
    encode(src / "b.mpv", codec="mpeg1video", fmt="mpeg1video", n=8)  # .mpv: an extension folder mode used to skip
    (src / "notes.txt").write_text("x")
    real = g.read_clip

    def killed_on_b(request, device=None):
        if Path(request.video).name == "b.mpv":
            raise KeyboardInterrupt
        return real(request, device)

    monkeypatch.setattr(g, "read_clip", killed_on_b)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["generate", "--video", str(src), "--out", str(out), "--debug-weights"])
    assert res.exit_code != 0
    rec = json.loads((out / "generation.json").read_text())
    assert rec["finished"] is False and rec["total"] == 2 and [Path(i["video"]).name for i in rec["items"]] == [
        "a.mkv"]
    monkeypatch.setattr(g, "read_clip", real)
    res = CliRunner().invoke(main, ["generate", "--video", str(src), "--out", str(out), "--debug-weights"])
    assert res.exit_code == 0, res.output
    rec = json.loads((out / "generation.json").read_text())
    assert rec["finished"] is True and rec["counts"] == {"done": 1, "skipped": 1, "failed": 0}
    assert rec["not_videos"] == [str(src / "notes.txt")] and "1 files without a video extension" in res.output
    assert (out / "b.wav").exists() and (out / "b.mp4").exists()
    with av.open(str(out / "b.wav")) as c:
        assert c.streams.audio[0].codec_context.name == "pcm_s16le"  # lossless audio next to the mp4


def test_batch_layout_pairs_with_dir_model(tmp_path, pipe, one_thread):
    """Batch outputs are named by clip id (file stem): ``<stem>.wav`` next to ``<stem>.mp4``, and with several
    samples ``<stem>/<i>.wav`` -- the layout of ``vbench evaluate --model dir:OUT``."""
    from vaura.generate import generate_folder

    src = tmp_path / "videos"
    src.mkdir()
    encode(src / "c1.mkv", n=8)
    one = generate_folder([src / "c1.mkv"], tmp_path / "one", pipe, seed=0)
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["c1.mp4", "c1.wav"] and one[0].status == "done"
    generate_folder([src / "c1.mkv"], tmp_path / "two", pipe, num_samples=2, seed=0, mux=False)
    assert sorted(p.name for p in (tmp_path / "two" / "c1").iterdir()) == ["0.wav", "1.wav"]


def test_folder_mode_refuses_audio_with_cover_art_with_the_reason(tmp_path, pipe, one_thread):
    """An ``.ogg`` song with a cover picture is listed by folder mode (``.ogg`` may hold video) and used to fail
    with "no frames in [0.0, 1.1e-05) s" (the cover taken for an 11 us video); the record now says why, and the
    real video next to it is generated."""
    from vaura.generate import generate_folder

    src = tmp_path / "videos"
    src.mkdir()
    audio_with_cover(src / "song.ogg")
    encode(src / "clip.mkv", n=8)
    res = {Path(r.video).name: r for r in generate_folder([src / "clip.mkv", src / "song.ogg"], tmp_path / "out",
                                                          pipe, seed=0)}
    assert res["clip.mkv"].status == "done"
    assert res["song.ogg"].status == "failed"
    assert res["song.ogg"].reason.endswith("song.ogg: no video stream (only a cover picture)"), res["song.ogg"].reason
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.mp4", "clip.wav"]
