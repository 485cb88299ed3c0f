"""Pixel aspect ratio (SAR) and exact cropping through the writers: `mux_audio` keeps a source's sample aspect
ratio on a re-encoded or copied stream (bitstream and container), `write_preview` scales anamorphic video to
square pixels at its display aspect, `copy_window` refuses non-square pixels (its output must look like
`write_preview`'s), `probe` reports the ratio, and a picture cropped on its left (Theora's ``pic_x``, H.264's
``frame_crop_left_offset``) is decoded exactly as wide as `probe` says. Inputs are written with PyAV only."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from visualsound.cli import main
from visualsound.media import NotCopyable, copy_window, mux_audio, probe, read_video, write_preview

_SILENCE = np.zeros((1, 8000), np.float32)  # 0.5 s at 16 kHz


def _encode(path: Path, codec: str, size: tuple[int, int], sar: Fraction | None, *, n: int = 5,
            options: dict[str, str] | None = None, rotation: int | None = None) -> Path:
    """`n` frames (a grey box on black) of ``size = (width, height)`` with the encoder's sample aspect ratio
    `sar` (None: unset), container from the suffix."""
    w, h = size
    c = av.open(str(path), "w")
    try:
        s = c.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if sar is not None:
            s.codec_context.sample_aspect_ratio = sar
        if options:
            s.options = options
        if rotation is not None:
            s.set_display_rotation(rotation)
        for i in range(n):
            rgb = np.zeros((h, w, 3), np.uint8)
            rgb[h // 4:3 * h // 4, w // 4:3 * w // 4] = 200
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts = i
            for pkt in s.encode(f):
                c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    finally:
        c.close()
    return path


def _sar(text: str | None) -> Fraction:
    assert text is not None
    num, den = text.split(":")
    return Fraction(int(num), int(den))


def _stream_sars(path: Path) -> tuple[Fraction | None, Fraction | None]:
    """The video's (container-first guess, bitstream) sample aspect ratios as FFmpeg reads them."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        return v.sample_aspect_ratio, v.codec_context.sample_aspect_ratio


def _assert_display_aspect(path: Path, want: Fraction) -> None:
    """`path`'s display width (width x SAR) is the width `want` gives its height, to within one pixel."""
    info = probe(path)
    shown = info.width * _sar(info.sample_aspect_ratio)
    assert abs(shown - want * info.height) <= 1, (info.width, info.height, info.sample_aspect_ratio, want)


ANAMORPHIC = [
    ("dvd.mpg", "mpeg2video", Fraction(64, 45), Fraction(16, 9)),  # PAL DVD 16:9
    ("dv.avi", "mpeg4", Fraction(16, 15), Fraction(4, 3)),  # PAL DV 4:3
]


def test_probe_reports_the_sample_aspect_ratio(tmp_path):
    dvd = _encode(tmp_path / "dvd.mpg", "mpeg2video", (720, 576), Fraction(64, 45))
    square = _encode(tmp_path / "sq.mp4", "libx264", (176, 144), None, options={"preset": "ultrafast"})
    assert probe(dvd).sample_aspect_ratio == "64:45"
    assert probe(dvd).to_dict()["sample_aspect_ratio"] == "64:45"
    assert probe(square).sample_aspect_ratio == "1:1"  # unstated: square pixels, as players assume
    res = CliRunner().invoke(main, ["probe", str(dvd), str(square)])
    assert res.exit_code == 0 and "720x576 SAR 64:45 " in res.output and "176x144 25" in res.output, res.output


@pytest.mark.parametrize("name,codec,sar,dar", ANAMORPHIC)
def test_a_reencoded_stream_keeps_the_sample_aspect_ratio(tmp_path, name, codec, sar, dar):
    """`vaura generate` on a DVD / DV file: the full-size H.264 keeps 720x576 and its SAR, in the bitstream (the
    SPS's VUI) and in the container (mp4 ``pasp``), so it is shown 16:9 / 4:3, not 5:4."""
    src = _encode(tmp_path / name, codec, (720, 576), sar)
    out = tmp_path / "out.mp4"
    assert mux_audio(src, _SILENCE, 16000, out) == "re-encode"
    info = probe(out)
    assert (info.width, info.height, info.sample_aspect_ratio) == (720, 576, f"{sar.numerator}:{sar.denominator}")
    assert _stream_sars(out) == (sar, sar)
    _assert_display_aspect(out, dar)


@pytest.mark.parametrize("name,codec,sar,dar", ANAMORPHIC)
def test_a_preview_of_anamorphic_video_has_square_pixels_at_its_display_aspect(tmp_path, name, codec, sar, dar):
    src = _encode(tmp_path / name, codec, (720, 576), sar)
    out = tmp_path / "preview.mp4"
    poster = write_preview(src, out, max_width=320)
    info = probe(out)
    assert info.sample_aspect_ratio == "1:1" and _stream_sars(out) == (None, None)
    assert info.width == 320 and poster.shape == (info.height, 320, 3)
    assert (info.width, info.height) == ((320, 180) if dar == Fraction(16, 9) else (320, 240))
    _assert_display_aspect(out, dar)


def test_a_small_anamorphic_preview_is_widened_and_a_turned_one_keeps_its_shape(tmp_path):
    """Square pixels at the display size: 128x96 coded at SAR 2:1 shows 256x96 (never narrowed below its
    display size); turned a quarter, the coded frame is 256x96 and is shown 96 wide, 256 tall."""
    src = _encode(tmp_path / "wide.mp4", "libx264", (128, 96), Fraction(2, 1), options={"preset": "ultrafast"})
    out = tmp_path / "p.mp4"
    poster = write_preview(src, out, max_width=320)
    assert (probe(out).width, probe(out).height, poster.shape) == (256, 96, (96, 256, 3))
    turned = _encode(tmp_path / "turned.mp4", "libx264", (128, 96), Fraction(2, 1), rotation=90,
                     options={"preset": "ultrafast"})
    poster = write_preview(turned, out, max_width=320)
    info = probe(out)
    assert (info.width, info.height, info.rotation, info.sample_aspect_ratio) == (256, 96, 90, "1:1")
    assert poster.shape == (256, 96, 3)
    poster = write_preview(turned, out, max_width=48)  # shown 48 wide: the coded height
    assert (probe(out).width, probe(out).height, poster.shape) == (128, 48, (128, 48, 3))


def test_copies_keep_the_sample_aspect_ratio_and_copy_window_refuses_it(tmp_path):
    """H.264 copied by `mux_audio` keeps its SAR (the SPS is copied as it is, the container states it too);
    `copy_window` (the report's cheap twin of `write_preview`, whose output has square pixels) refuses."""
    src = _encode(tmp_path / "cif.mp4", "libx264", (176, 144), Fraction(128, 117), options={"preset": "ultrafast"})
    out = tmp_path / "out.mp4"
    assert mux_audio(src, _SILENCE, 16000, out) == "copy"
    assert probe(out).sample_aspect_ratio == "128:117" and _stream_sars(out) == (Fraction(128, 117),) * 2
    with pytest.raises(NotCopyable, match="square"):
        copy_window(src, tmp_path / "copy.mp4", start=0.0, duration=0.2)
    assert not (tmp_path / "copy.mp4").exists()


def test_a_container_only_sample_aspect_ratio_survives_a_copy(tmp_path):
    """An mp4 whose SAR is only in its container (``pasp``; the SPS states none): FFmpeg shows it 4:3 wider, and
    so does the copy (the container's ratio wins, as in FFmpeg's own guess)."""
    plain = _encode(tmp_path / "plain.mp4", "libx264", (176, 144), None, options={"preset": "ultrafast"})
    src = tmp_path / "pasp.mp4"
    with av.open(str(plain)) as c, av.open(str(src), "w") as o:
        vin = c.streams.video[0]
        vo = o.add_stream_from_template(vin)
        vo.codec_context.sample_aspect_ratio = Fraction(4, 3)
        for pkt in c.demux(vin):
            if pkt.size:
                pkt.stream = vo
                o.mux(pkt)
    assert _stream_sars(src) == (Fraction(4, 3), None) and probe(src).sample_aspect_ratio == "4:3"
    out = tmp_path / "out.mp4"
    assert mux_audio(src, _SILENCE, 16000, out) == "copy"
    assert probe(out).sample_aspect_ratio == "4:3"
    _assert_display_aspect(out, Fraction(176 * 4, 144 * 3))


def test_square_pixel_sources_are_written_as_before(tmp_path):
    """Square pixels (MPEG-2 always states its ratio: 1:1 here): no ratio is added (no ``pasp`` box, no VUI
    ratio) by either writer, and the preview keeps the picture's own aspect."""
    src = _encode(tmp_path / "sq.mpg", "mpeg2video", (320, 240), None)
    assert probe(src).sample_aspect_ratio == "1:1" and _stream_sars(src) == (1, 1)
    out = tmp_path / "out.mp4"
    assert mux_audio(src, _SILENCE, 16000, out) == "re-encode"
    assert _stream_sars(out) == (None, None) and probe(out).sample_aspect_ratio == "1:1"
    write_preview(src, out, max_width=160)
    assert _stream_sars(out) == (None, None) and (probe(out).width, probe(out).height) == (160, 120)


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
