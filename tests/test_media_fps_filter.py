"""`visualsound.media.fps_filter`: FFmpeg's ``fps`` filter rule, computed (``method="select"``) and run through
FFmpeg's real filter (``method="graph"``), on generated clips whose frames carry their index as a barcode."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from visualsound.media import MissingFileError, NoVideoStreamError, write_wav
from visualsound.media.fps_filter import FpsFilter, as_rate, fps_filter_indices, fps_tick, read_fps_frames

H, W, BITS = 48, 80, 10  # 10 stripes of 8 px: frame indices up to 1023


def barcode(index: int) -> np.ndarray:
    """RGB frame whose 10 vertical stripes are the bits of `index` (white = 1, most significant first)."""
    f = np.zeros((H, W, 3), np.uint8)
    for b in range(BITS):
        if (index >> (BITS - 1 - b)) & 1:
            f[:, b * 8:(b + 1) * 8] = 255
    return f


def read_barcodes(frames: torch.Tensor) -> list[int]:
    lum = frames[..., 1].float().reshape(frames.shape[0], H, BITS, 8)[:, 8:-8, :, 2:-2].mean(dim=(1, 3))
    return ((lum > 128).long() * (2 ** torch.arange(BITS - 1, -1, -1))).sum(-1).tolist()


def write_clip(path, pts: list[int], time_base: Fraction, rate: Fraction = Fraction(25), pix_fmt: str = "yuv420p",
               first_index: int = 0):
    """Frame ``i`` at ``pts[i]`` shows the barcode of ``first_index + i``."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt, s.time_base = W, H, pix_fmt, time_base
        s.codec_context.time_base = time_base  # the encoder keeps the timestamps as given (VFR)
        for i, p in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(barcode(first_index + i), format="rgb24")
            frame.pts, frame.time_base = p, time_base
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


def cfr(n: int, fps: Fraction, time_base: Fraction, start: int = 0) -> list[int]:
    step = 1 / (fps * time_base)
    assert step.denominator == 1, (fps, time_base)
    return [start + i * int(step) for i in range(n)]


def vfr(n: int, seed: int) -> list[int]:
    """Millisecond timestamps with gaps of 15-90 ms."""
    gaps = np.random.default_rng(seed).integers(15, 90, size=n - 1)
    return [0] + np.cumsum(gaps).tolist()


CLIPS = {  # name: (file name, pts, time base, nominal rate, pix_fmt)
    "cfr24": ("cfr24.mp4", cfr(204, Fraction(24), Fraction(1, 12288)), Fraction(1, 12288), Fraction(24), "yuv420p"),
    "cfr25": ("cfr25.mp4", cfr(213, Fraction(25), Fraction(1, 12800)), Fraction(1, 12800), Fraction(25), "yuv420p"),
    "cfr29.97": ("cfr2997.mp4", cfr(90, Fraction(30000, 1001), Fraction(1, 30000)), Fraction(1, 30000),
                 Fraction(30000, 1001), "yuv420p"),
    "cfr30": ("cfr30.mp4", cfr(255, Fraction(30), Fraction(1, 15360)), Fraction(1, 15360), Fraction(30), "yuv420p"),
    "cfr50": ("cfr50.mp4", cfr(150, Fraction(50), Fraction(1, 12800)), Fraction(1, 12800), Fraction(50), "yuv420p"),
    "exact2s": ("exact2s.mp4", cfr(50, Fraction(25), Fraction(1, 12800)), Fraction(1, 12800), Fraction(25),
                "yuv420p"),
    "yuv444": ("yuv444.mp4", cfr(60, Fraction(25), Fraction(1, 12800)), Fraction(1, 12800), Fraction(25), "yuv444p"),
    "vfr_mkv": ("vfr.mkv", vfr(70, 1), Fraction(1, 1000), Fraction(25), "yuv420p"),
    "vfr_mp4": ("vfr.mp4", vfr(70, 2), Fraction(1, 1000), Fraction(25), "yuv420p"),
    "offset": ("offset.mkv", cfr(100, Fraction(25), Fraction(1, 1000), start=1300), Fraction(1, 1000), Fraction(25),
               "yuv420p"),
}
RATES = [Fraction(25), Fraction(1, 2), Fraction(8), Fraction(30000, 1001)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("fps_clips")
    return {name: write_clip(d / fn, pts, tb, rate, pix) for name, (fn, pts, tb, rate, pix) in CLIPS.items()}


def decoded_timestamps(path) -> tuple[list[int], int, Fraction]:
    """``(pts of every decoded frame, last frame's duration, time base)``."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [(f.pts, f.duration or 0) for f in c.decode(s)]
        return [p for p, _ in frames], frames[-1][1], Fraction(s.time_base)


# -- the rule as pure functions ------------------------------------------------------------------------------
def test_fps_tick_rounds_half_away_from_zero():
    tb, half = Fraction(1, 25), Fraction(1, 2)
    assert [fps_tick(p, tb, half) for p in (0, 24, 25, 74, 75, 124, 125)] == [0, 0, 1, 1, 2, 2, 3]
    assert [fps_tick(p, tb, half) for p in (-24, -25, -75)] == [0, -1, -2]
    assert fps_tick(1001, Fraction(1, 30000), Fraction(25)) == 1  # 0.834 ticks


def test_as_rate_parses_like_ffmpeg():
    assert as_rate(0.5) == Fraction(1, 2) and as_rate(25) == 25 and as_rate("30000/1001") == Fraction(30000, 1001)
    assert as_rate(29.97) == Fraction(2997, 100) and as_rate(Fraction(24000, 1001)) == Fraction(24000, 1001)
    for bad in (0, -1, "0/5"):
        with pytest.raises(ValueError):
            as_rate(bad)


@pytest.mark.parametrize("fps, tb, expected", [
    (25, Fraction(1, 12800), [24, 74, 124, 174]),
    (30, Fraction(1, 15360), [29, 89, 149, 209]),
    (24, Fraction(1, 12288), [23, 71, 119, 167]),
])
def test_half_fps_picks_the_last_frame_of_each_tick(fps, tb, expected):
    """README 2.8 / T10: at 0.5 fps the frames are the last ones rounding to 0, 2, 4, 6 s."""
    pts = cfr(int(8.5 * fps), Fraction(fps), tb)
    for flush in (True, False):
        assert fps_filter_indices(pts, tb, 0.5, flush=flush, max_frames=4) == expected


def test_25_fps_from_30_drops_and_from_24_repeats():
    from_30 = fps_filter_indices(cfr(60, Fraction(30), Fraction(1, 15360)), Fraction(1, 15360), 25)
    assert from_30[:12] == [0, 1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 13]
    from_24 = fps_filter_indices(cfr(48, Fraction(24), Fraction(1, 12288)), Fraction(1, 12288), 25)
    assert from_24[:14] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 11, 12]


def test_exactly_n_frames_lose_the_last_one_without_flush():
    tb = Fraction(1, 12800)
    pts = cfr(200, Fraction(25), tb)
    assert fps_filter_indices(pts, tb, 25, flush=True, end_pts=pts[-1] + 512) == list(range(200))
    assert fps_filter_indices(pts, tb, 25, flush=False) == list(range(199))
    five = cfr(125, Fraction(25), tb)  # the fixture's 5 s file: 124 sync frames, 2 IB frames
    assert len(fps_filter_indices(five, tb, 25, flush=False)) == 124
    assert fps_filter_indices(five, tb, 0.5, flush=False) == [24, 74]
    assert fps_filter_indices(five, tb, 0.5, flush=True, end_pts=five[-1] + 512) == [24, 74, 124]


def test_never_flushing_equals_eof_at_the_last_timestamp():
    """torio's lost frames: never closing the filter gives what closing it at the last frame's pts gives, and both
    are a prefix of the flushed output."""
    rng = np.random.default_rng(0)
    for case in range(200):
        n = int(rng.integers(1, 60))
        pts = np.cumsum(rng.integers(0, 120, size=n)).tolist()  # repeated timestamps included
        if case % 5 == 0:
            pts = rng.permutation(pts).tolist()  # out of order: the rule still defines an output
        rate, tb = as_rate(float(rng.choice([0.5, 8, 25, 29.97]))), Fraction(1, 1000)
        never = fps_filter_indices(pts, tb, rate, flush=False)
        filt, at_last = FpsFilter(), []
        for i, p in enumerate(pts):
            at_last += [k for _, k in filt.push(fps_tick(p, tb, rate), i)]
        at_last += [k for _, k in filt.close(fps_tick(pts[-1], tb, rate))]
        flushed = fps_filter_indices(pts, tb, rate, flush=True, end_pts=pts[-1] + 40)
        assert never == at_last, (case, pts, rate)
        assert flushed[:len(never)] == never, (case, pts, rate)


# -- decoding: the two methods on generated clips ------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CLIPS))
def test_select_and_graph_agree(clips, name):
    pts, last_dur, tb = decoded_timestamps(clips[name])
    for flush in (True, False):
        sel = read_fps_frames(clips[name], RATES, flush=flush, method="select")
        graph = read_fps_frames(clips[name], RATES, flush=flush, method="graph")
        for rate, a, b in zip(RATES, sel, graph):
            where = f"{name} at {rate} fps, flush={flush}"
            assert a.source_index.tolist() == b.source_index.tolist(), where
            assert torch.equal(a.frames, b.frames), f"{where}: pixels differ"  # to_ndarray vs the graph's rgb24
            assert a.lost_at_eof == b.lost_at_eof, where
            expected = fps_filter_indices(pts, tb, rate, flush=flush, end_pts=pts[-1] + last_dur)
            assert a.source_index.tolist() == expected, where
            assert read_barcodes(a.frames) == expected, f"{where}: the pixels are not the selected frames"
            assert a.frames.shape[1:] == (H, W, 3) and a.frames.dtype == torch.uint8


def test_exact_length_file_loses_its_last_frame(clips):
    for method in ("select", "graph"):
        torio = read_fps_frames(clips["exact2s"], [25, 0.5], flush=False, method=method)
        full = read_fps_frames(clips["exact2s"], [25, 0.5], flush=True, method=method)
        assert (len(torio[0]), torio[0].lost_at_eof, len(full[0]), full[0].lost_at_eof) == (49, 1, 50, 0)
        assert torio[1].source_index.tolist() == full[1].source_index.tolist() == [24]  # the 2.0 s tick is the end
        assert torio[0].duration_sec == pytest.approx(2.0)


def test_half_fps_indices_decoded(clips):
    for name, expected in (("cfr24", [23, 71, 119, 167]), ("cfr25", [24, 74, 124, 174]),
                           ("cfr30", [29, 89, 149, 209])):
        got = read_fps_frames(clips[name], [0.5], flush=False, max_frames=4)[0]
        assert got.source_index.tolist() == expected, name
        assert read_barcodes(got.frames) == expected, name


def test_variable_frame_rate_counts(clips):
    """Flushed VFR output spans the ticks from the first frame's to the end's (exclusive)."""
    for name in ("vfr_mkv", "vfr_mp4"):
        pts, last_dur, tb = decoded_timestamps(clips[name])
        assert len(set(np.diff(pts).tolist())) > 5, f"{name} is not variable frame rate"
        for rate in RATES:
            got = read_fps_frames(clips[name], [rate], flush=True)[0]
            n = fps_tick(pts[-1] + last_dur, tb, rate) - fps_tick(pts[0], tb, rate)
            assert len(got) == n, (name, rate)


def test_ticks_start_at_the_first_frame(clips):
    """A stream starting at 1.3 s: at 0.5 fps the first output is tick round(0.65) = 1 (2 s), the last frame
    rounding to it is frame 42 (2.98 s); no frame is invented for tick 0."""
    pts, _, tb = decoded_timestamps(clips["offset"])
    assert pts[0] * tb == Fraction(13, 10)
    for method in ("select", "graph"):
        half, sync = read_fps_frames(clips["offset"], [0.5, 25], flush=False, method=method)
        assert half.source_index.tolist() == [42, 92], method
        assert sync.source_index.tolist() == list(range(99)), method


def test_max_frames_is_a_prefix_and_stops_decoding(clips):
    full = read_fps_frames(clips["cfr30"], [0.5, 25], flush=False)
    for method in ("select", "graph"):
        capped = read_fps_frames(clips["cfr30"], [0.5, 25], flush=False, max_frames=[2, 40], method=method)
        for a, b, n in zip(capped, full, (2, 40)):
            assert a.source_index.tolist() == b.source_index.tolist()[:n], method
            assert torch.equal(a.frames, b.frames[:n]) and a.lost_at_eof == 0
        assert capped[0].duration_sec < 3.2 < full[0].duration_sec, "decoding did not stop at the cap"
    one = read_fps_frames(clips["cfr30"], [25], max_frames=0)[0]
    assert one.frames.shape == (0, H, W, 3)


@pytest.mark.parametrize("name,start", [("cfr30", 2.0), ("cfr25", 1.3), ("cfr29.97", 1.0), ("vfr_mp4", 0.517),
                                        ("offset", 2.02), ("offset", 0.5)])
def test_a_start_reads_the_stream_as_if_it_had_been_cut_there(clips, tmp_path, name, start):
    """`start_sec` gives the frames of a file holding only the frames from `start` on, their timestamps moved back
    by `start` (written here frame by frame), at every rate, flushed or not, by both methods. `start` counts from
    the file's start (the `offset` stream's first frame is at 1.3 s)."""
    pts, last_dur, tb = decoded_timestamps(clips[name])
    at = Fraction(pts[0]) * tb + Fraction(start)  # a video-only file starts with its first frame
    shift = round(at / tb)
    assert abs(at / tb - shift) < 1e-6, "pick starts on the time base: the cut file must be exact"
    k = next(i for i, p in enumerate(pts) if p >= shift)
    rate, pix = CLIPS[name][3:]
    cut = write_clip(tmp_path / f"cut{clips[name].suffix}", [int(p - shift) for p in pts[k:]], tb, rate, pix,
                     first_index=k)
    assert decoded_timestamps(cut)[0] == [int(p - shift) for p in pts[k:]], "the cut file is not what was meant"
    for flush in (True, False):
        want = read_fps_frames(cut, RATES, flush=flush)
        for method in ("select", "graph"):
            got = read_fps_frames(clips[name], RATES, flush=flush, method=method, start_sec=start)
            for rate, a, b in zip(RATES, got, want):
                where = f"{name} from {start} s at {rate} fps, flush={flush}, {method}"
                assert read_barcodes(a.frames) == read_barcodes(b.frames) == [k + i for i in b.source_index], where
                assert a.source_index.tolist() == [k + i for i in b.source_index.tolist()], where
                assert (a.lost_at_eof, a.duration_sec) == (b.lost_at_eof, b.duration_sec), where
    with pytest.raises(ValueError, match="start_sec"):
        read_fps_frames(clips[name], [25], start_sec=-1.0)


def test_bad_inputs(clips, tmp_path):
    with pytest.raises(MissingFileError):
        read_fps_frames(tmp_path / "nope.mp4", [25])
    wav = tmp_path / "audio.wav"
    write_wav(wav, np.zeros((1, 1600), np.float32), 16000)
    with pytest.raises(NoVideoStreamError, match="no video stream"):
        read_fps_frames(wav, [25])
    with pytest.raises(ValueError, match="method"):
        read_fps_frames(clips["cfr25"], [25], method="nearest")
    with pytest.raises(ValueError, match="max_frames"):
        read_fps_frames(clips["cfr25"], [25, 0.5], max_frames=[3])
