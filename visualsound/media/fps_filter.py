"""Decoding at a frame rate with FFmpeg's ``fps`` filter semantics, tracking the source frame of every output frame.

This is the frame selection of torio's ``StreamingMediaDecoder.add_basic_video_stream(frame_rate=...)`` (and so of
every tool that decodes through an ``fps=R`` filter). It differs from `visualsound.media.read_video`'s
sample-and-hold rule in three ways, all of which change which source frames are picked:

* **Round to nearest.** Every source frame gets the output tick ``round(pts * time_base * R)`` (halves away from
  zero, exact integer arithmetic: FFmpeg's ``av_rescale_q_rnd(..., AV_ROUND_NEAR_INF)``).
* **The last frame of a tick wins.** Output tick ``n`` shows the *last* source frame whose tick is ``<= n``. Output
  ticks run from the first frame's tick, one by one. At 0.5 fps a 25 fps source gives frames 24, 74, 124, 174
  (frame 25 at 1.0 s already rounds to tick 1), not the frames at 0, 2, 4, 6 s. A 30 fps source at 25 fps drops
  frames (0, 1, 2, 4, 5, ...); a 24 fps source repeats one.
* **End of stream.** With ``flush=True`` (FFmpeg 8's filter when end of stream is signalled) the last source
  frame fills the ticks up to ``round((last pts + last duration) * time_base * R)`` (exclusive), so an 8.0 s 25 fps
  file gives 200 frames at 25 fps. ``flush=False`` reproduces torio as av-benchmark ran it (FFmpeg 5.1): the
  output frames of the last source frame never arrive -- exactly what a filter that is never told about the end
  of the stream produces -- so the same file gives 199 frames, and a 5 s file gives 124 frames at 25 fps and 2 at
  0.5 fps.

`FpsFilter` is the rule as a small streaming state machine (it mirrors libavfilter's ``vf_fps.c``: a two-frame
buffer, ``round=near``, ``eof_action=round``, no ``start_time``); `fps_filter_indices` applies it to a list of
timestamps. `read_fps_frames` decodes a file once for any number of rates:

* ``method="select"`` (the default) runs `FpsFilter` on the decoded frames' timestamps and converts only the
  selected frames to RGB (`visualsound.media.video.frame_to_rgb`, swscale's default ``rgb24`` conversion);
* ``method="graph"`` drives FFmpeg's real filter through ``av.filter.Graph`` (``buffer -> fps -> format=rgb24 ->
  buffersink``, torio's chain) and recovers the source frame of each output frame from ``frame.opaque``. With
  ``flush=False`` it never pushes end of stream.

The two give the same frames and pixels (``tests/test_media_fps_filter.py``). Frames are returned as stored
(display rotation is not applied, as torio does not apply it). The source index of a frame is its position in
the decoder's output (presentation) order, counting from 0.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
import torch

from visualsound.media.errors import MediaError, TruncatedMediaError
from visualsound.media.info import ClockCheck, PathLike, file_start, open_media, video_stream
from visualsound.media.video import frame_to_rgb

log = logging.getLogger(__name__)

RateLike = int | float | str | Fraction
METHODS = ("select", "graph")
_D2Q_MAX = 1001000  # FFmpeg's av_parse_video_rate: av_d2q(value, 1001000)


class FpsFilterError(MediaError):
    """A video cannot be resampled with the ``fps`` filter rule (a decoded frame without a timestamp, or a frame
    size that changes inside the stream)."""


def as_rate(fps: RateLike) -> Fraction:
    """A frame rate as an exact fraction, as FFmpeg parses the ``fps`` option: ``"30000/1001"`` and `Fraction`
    are exact; a float is approximated like ``av_d2q(value, 1001000)`` (``0.5 -> 1/2``, ``29.97 -> 2997/100``)."""
    if isinstance(fps, Fraction):
        rate = fps
    elif isinstance(fps, int):
        rate = Fraction(fps)
    elif isinstance(fps, str):
        rate = Fraction(fps.strip().replace(":", "/"))
    else:
        rate = Fraction(float(fps)).limit_denominator(_D2Q_MAX)
    if rate <= 0:
        raise ValueError(f"frame rate must be > 0, got {fps!r}")
    return rate


def fps_tick(pts: int, time_base: Fraction, rate: Fraction) -> int:
    """Output tick of a timestamp: ``pts * time_base * rate`` rounded to the nearest integer, halves away from
    zero (FFmpeg's ``av_rescale_q_rnd(pts, time_base, 1/rate, AV_ROUND_NEAR_INF)``, exact)."""
    x = Fraction(pts) * time_base * rate
    n, d = abs(x.numerator), x.denominator
    r = (2 * n + d) // (2 * d)
    return r if x >= 0 else -r


class FpsFilter:
    """FFmpeg's ``fps`` filter as a streaming state machine over ``(tick, item)`` pairs.

    `push` a source frame's tick (`fps_tick`) with any `item`; it returns the ``(output_tick, item)`` pairs the
    filter emits now. `close` signals end of stream with the end tick (the rounded end timestamp): the frames still
    buffered fill the ticks before it. Never calling `close` is torio's behaviour (the last frame's outputs are
    lost). With `max_frames`, nothing is emitted past that count and `done` becomes true.
    """

    def __init__(self, max_frames: int | None = None) -> None:
        if max_frames is not None and max_frames < 0:
            raise ValueError(f"max_frames must be >= 0 or None, got {max_frames}")
        self.max_frames = max_frames
        self.next_tick: int | None = None
        self.emitted = 0
        self._buf: list[tuple[int, Any]] = []
        self._end: int | None = None

    @property
    def done(self) -> bool:
        """True once `max_frames` frames were emitted."""
        return self.max_frames is not None and self.emitted >= self.max_frames

    def push(self, tick: int, item: Any) -> list[tuple[int, Any]]:
        if self._end is not None:
            raise RuntimeError("FpsFilter.push after close")
        self._buf.append((tick, item))
        return self._run()

    def close(self, end_tick: int) -> list[tuple[int, Any]]:
        self._end = end_tick
        return self._run()

    def _run(self) -> list[tuple[int, Any]]:
        out: list[tuple[int, Any]] = []
        while len(self._buf) == 2 or (self._end is not None and self._buf):
            if self.next_tick is None:
                self.next_tick = self._buf[0][0]
            if (len(self._buf) == 2 and self._buf[1][0] <= self.next_tick) or \
                    (self._end is not None and self._end <= self.next_tick):
                self._buf.pop(0)  # the next buffered frame (or the end) already covers this tick
            elif self.done:
                self._buf.pop(0)
            else:
                out.append((self.next_tick, self._buf[0][1]))
                self.next_tick += 1
                self.emitted += 1
        return out


def fps_filter_indices(pts: Sequence[int], time_base: Fraction, fps: RateLike, *, flush: bool = True,
                       end_pts: int | None = None, max_frames: int | None = None) -> list[int]:
    """Source indices (positions in `pts`, presentation order) of the output frames at `fps`.

    `end_pts` (in `time_base`) is where the stream ends when ``flush=True``: usually the last frame's pts plus
    its duration; None uses the last pts (the last frame then gives no output, as with ``flush=False``).
    """
    rate = as_rate(fps)
    filt = FpsFilter(max_frames)
    out: list[int] = []
    for i, p in enumerate(pts):
        out += [k for _, k in filt.push(fps_tick(int(p), time_base, rate), i)]
        if filt.done:
            return out
    if flush and pts:
        end = int(pts[-1]) if end_pts is None else int(end_pts)
        out += [k for _, k in filt.close(fps_tick(end, time_base, rate))]
    return out


@dataclass(frozen=True)
class FpsFrames:
    """Frames of one rate: ``frames`` uint8 ``[T, H, W, 3]`` RGB and ``source_index`` int64 ``[T]`` (decoder
    output order). ``lost_at_eof`` counts the output frames that ``flush=False`` dropped at the end of the stream
    (0 with ``flush=True`` or when `max_frames` stopped decoding first); ``duration_sec`` is the decoded span, from
    the first frame's timestamp to the last decoded frame's timestamp plus its duration (the whole stream unless
    `max_frames` stopped decoding early; None if no frame was decoded)."""

    rate: Fraction
    frames: torch.Tensor
    source_index: torch.Tensor
    lost_at_eof: int
    duration_sec: float | None

    def __len__(self) -> int:
        return int(self.frames.shape[0])


def _as_list(max_frames: int | None | Sequence[int | None], n: int) -> list[int | None]:
    if max_frames is None or isinstance(max_frames, int):
        return [max_frames] * n
    values = list(max_frames)
    if len(values) != n:
        raise ValueError(f"max_frames has {len(values)} entries for {n} rates")
    return values


def read_fps_frames(path: PathLike, fps: Sequence[RateLike], *, flush: bool = True,
                    max_frames: int | None | Sequence[int | None] = None, method: str = "select",
                    start_sec: float = 0.0) -> list[FpsFrames]:
    """Decode the video stream of `path` (`visualsound.media.info.video_stream`: cover pictures are not video) once
    and return its frames at each rate in `fps`.

    ``flush=False`` reproduces torio's lost output frames at the end of the stream (module docstring);
    `max_frames` (one value, or one per rate) keeps the first frames only, and decoding stops once every rate
    has its count. ``method`` is ``"select"`` or ``"graph"`` (module docstring). `start_sec` > 0 reads the
    stream as if it had been cut there (FFmpeg's exact input seek, ``ffmpeg -ss START -i ...``): frames before
    `start_sec` (seconds from the file's start, `visualsound.media.info.file_start`, as ``-ss`` and the toolkit's
    other readers count; to the nearest tick of the stream's time base) are decoded and dropped, and the others'
    times are counted from there; a source index still counts every decoded frame. ``start_sec=0`` reads the
    timestamps as they are (torio). Raises `NoVideoStreamError`, `TruncatedMediaError` (undecodable data) and
    `FpsFilterError`.
    """
    if not start_sec >= 0:
        raise ValueError(f"start_sec must be >= 0, got {start_sec!r}")
    rates = [as_rate(r) for r in fps]
    caps = _as_list(max_frames, len(rates))
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    container = open_media(path)
    try:
        stream = video_stream(container, path)
        stream.thread_type = "AUTO"
        run = _read_select if method == "select" else _read_graph
        shift = (round((Fraction(file_start(container)) + Fraction(start_sec)) / Fraction(stream.time_base))
                 if start_sec else None)
        selected, lost, span = run(container, stream, rates, caps, flush, path, shift)
    except av.error.FFmpegError as e:
        raise TruncatedMediaError(f"{path}: video decoding failed: {e}") from e
    finally:
        container.close()
    height, width = stream.codec_context.height, stream.codec_context.width
    out = []
    for rate, pairs, n_lost in zip(rates, selected, lost):
        arrays = [a for _, a in pairs]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise FpsFilterError(f"{path}: the frame size changes inside the stream ({sorted(shapes)})")
        frames = torch.from_numpy(np.stack(arrays)) if arrays else torch.empty((0, height, width, 3), dtype=torch.uint8)
        index = torch.tensor([i for i, _ in pairs], dtype=torch.int64)
        out.append(FpsFrames(rate, frames, index, n_lost, span))
        log.debug("%s at %s fps: %d frames (%d lost at end of stream)", path, rate, len(pairs), n_lost)
    return out


def read_fps_video(path: PathLike, fps: RateLike, *, flush: bool = True, max_frames: int | None = None,
                   method: str = "select", start_sec: float = 0.0) -> FpsFrames:
    """`read_fps_frames` for one rate."""
    return read_fps_frames(path, [fps], flush=flush, max_frames=max_frames, method=method, start_sec=start_sec)[0]


def _frame_pts(frame: av.VideoFrame, index: int, path: PathLike) -> int:
    if frame.pts is None:
        raise FpsFilterError(f"{path}: decoded frame {index} has no timestamp; the fps filter rule needs one")
    return int(frame.pts)


def _span(first_pts: int | None, last_pts: int | None, last_dur: int, time_base: Fraction) -> float | None:
    if first_pts is None or last_pts is None:
        return None
    return float((last_pts + last_dur - first_pts) * time_base)


def _decoded(container, stream, path: PathLike, shift: int | None) -> Iterable[tuple[int, av.VideoFrame, int]]:
    """``(source_index, frame, pts)`` in decoder output order; with a `shift` (`read_fps_frames`'s `start_sec` in
    the stream's time base) only the frames at or after it, as ``pts - shift``."""
    clock = ClockCheck(path, stream)  # presentation order: a time going back is a joined file
    for i, frame in enumerate(container.decode(stream)):
        pts = _frame_pts(frame, i, path)
        clock(float(pts * stream.time_base))
        if shift is None:
            yield i, frame, pts
        elif pts >= shift:
            yield i, frame, pts - shift


def _read_select(container, stream, rates, caps, flush, path, shift):
    tb = Fraction(stream.time_base)
    filters = [FpsFilter(cap) for cap in caps]
    selected: list[list[tuple[int, np.ndarray]]] = [[] for _ in rates]
    cache: dict[int, np.ndarray] = {}  # RGB of the frames still buffered by some filter (converted once)

    def take(emitted: list[tuple[int, Any]], k: int) -> None:
        for _, (i, frame) in emitted:
            if i not in cache:
                cache[i] = frame_to_rgb(frame)
            selected[k].append((i, cache[i]))

    first = last = None
    last_dur = 0
    eof = True
    for i, frame, pts in _decoded(container, stream, path, shift):
        first = pts if first is None else first
        last, last_dur = pts, int(frame.duration or 0)
        for k, (rate, filt) in enumerate(zip(rates, filters)):
            if not filt.done:
                take(filt.push(fps_tick(pts, tb, rate), (i, frame)), k)
        for j in [j for j in cache if j < i - 1]:
            del cache[j]  # a filter buffers at most the previous and the current frame
        if all(f.done for f in filters):
            eof = False
            break
    lost = [0] * len(rates)
    if eof and last is not None:
        for k, (rate, filt) in enumerate(zip(rates, filters)):
            emitted = filt.close(fps_tick(last + last_dur, tb, rate))
            if flush:
                take(emitted, k)
            else:
                lost[k] = len(emitted)
    return selected, lost, _span(first, last, last_dur, tb)


def _read_graph(container, stream, rates, caps, flush, path, shift):
    tb = Fraction(stream.time_base)
    graphs = []
    for rate in rates:
        graph = av.filter.Graph()
        src = graph.add_buffer(template=stream)
        fps = graph.add("fps", f"fps={rate.numerator}/{rate.denominator}")
        fmt = graph.add("format", "pix_fmts=rgb24")
        sink = graph.add("buffersink")
        src.link_to(fps)
        fps.link_to(fmt)
        fmt.link_to(sink)
        graph.configure()
        graphs.append(graph)
    selected: list[list[tuple[int, np.ndarray]]] = [[] for _ in rates]

    def pull(graph) -> list[tuple[int, np.ndarray]]:
        out = []
        while True:
            try:
                frame = graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return out
            out.append((int(frame.opaque), frame.to_ndarray()))

    def full(k: int) -> bool:
        return caps[k] is not None and len(selected[k]) >= caps[k]

    first = last = None
    last_dur = 0
    eof = True
    for i, frame, pts in _decoded(container, stream, path, shift):
        first = pts if first is None else first
        last, last_dur = pts, int(frame.duration or 0)
        frame.opaque = i
        frame.pts = pts  # counted from the start (the graph's buffer source takes the stream's time base)
        for k, graph in enumerate(graphs):
            if not full(k):
                graph.push(frame)
                selected[k] += pull(graph)[:None if caps[k] is None else caps[k] - len(selected[k])]
        if all(full(k) for k in range(len(rates))):
            eof = False
            break
    lost = [0] * len(rates)
    if eof and last is not None:
        for k, graph in enumerate(graphs):
            if full(k):
                continue
            graph.push(None)
            tail = pull(graph)
            tail = tail[:None if caps[k] is None else caps[k] - len(selected[k])]
            if flush:
                selected[k] += tail
            else:
                lost[k] = len(tail)
    return selected, lost, _span(first, last, last_dur, tb)
