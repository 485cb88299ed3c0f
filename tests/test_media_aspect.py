"""Exact cropping: a picture cropped on its left (Theora's ``pic_x``, H.264's ``frame_crop_left_offset``) is
decoded and written exactly as wide as `probe` says. Inputs are written with PyAV only."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from visualsound.media import mux_audio, probe, read_video, write_preview

_SILENCE = np.zeros((1, 8000), np.float32)  # 0.5 s at 16 kHz


def _left_cropped_h264(path: Path) -> Path:
    """H.264 coded 304 wide with 2 columns cropped on each side (a picture 300 wide starting at x = 2, like a
    Theora ``pic_x``): the cropped-away columns are white, the picture grey. FFmpeg crops the left edge only to
    an aligned offset unless asked for exact cropping, giving 302 columns, the first two white."""
    c = av.open(str(path), "w", format="h264" if path.suffix == ".h264" else None)
    try:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 304, 64, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "10", "x264-params": "crop-rect=2,0,2,0"}
        for i in range(5):
            rgb = np.full((64, 304, 3), 100, np.uint8)
            rgb[:, :2] = rgb[:, -2:] = 255
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts = i
            for pkt in s.encode(f):
                c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    finally:
        c.close()
    return path


def _first_frame(path: Path) -> np.ndarray:
    return read_video(path, duration=0.04)[0].numpy()


def test_a_left_cropped_picture_is_read_and_written_exactly_as_wide_as_probed(tmp_path):
    """`read_video`, `write_preview` and `mux_audio` (re-encoding: an elementary stream has no timestamps) all
    give the 300 columns `probe` reports, without the two cropped-away ones (mux_audio used to squeeze 302
    decoded columns into 300, write_preview wrote 302)."""
    for src in (_left_cropped_h264(tmp_path / "crop.mp4"), _left_cropped_h264(tmp_path / "crop.h264")):
        assert probe(src).width == 300
        frame = _first_frame(src)
        assert frame.shape == (64, 300, 3) and frame.max() < 150  # no white column
        preview = tmp_path / "preview.mp4"
        poster = write_preview(src, preview, max_width=640)
        assert poster.shape == (64, 300, 3) and poster.max() < 150
        assert probe(preview).width == 300 and _first_frame(preview).max() < 150
    out = tmp_path / "out.mp4"
    assert mux_audio(tmp_path / "crop.h264", _SILENCE, 16000, out) == "re-encode"
    assert probe(out).width == 300 and _first_frame(out).max() < 150
