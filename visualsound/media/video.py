"""Windowed video decoding at a target frame rate, and the resize / crop helpers (torch).

Frame selection rule (`read_video`): output frame ``k`` shows the time ``t_k = start + k / fps``, counted from the
file's start (`visualsound.media.info.file_start`: FFmpeg's start time, the earliest first timestamp of the file's
streams, so that `read_audio` with the same window gives the sound that plays with these frames; an MPEG-TS
recording whose streams begin at 1.4 s is read from its first frame at ``start=0``), and is the
**last source frame whose presentation time is <= t_k** (with a 1 microsecond tolerance for float rounding). This
is a sample-and-hold resampler: going 50 -> 25 fps keeps every second frame (0, 2, 4, ...), 24 -> 25 repeats one
frame per second, 29.97 / 30 -> 25 drops about one frame in six. Times before the first frame use the first
frame. Output times at or after the end of the video (last frame's time + its duration) are not produced, so a
window running past the end returns fewer than ``round(duration * fps)`` frames. A video stream of a single frame
(a still picture with sound, as music uploads are) ends with the file (`still_end`), as players show it while the
sound plays: every window of the file gets that picture.

Only the window is decoded: the reader seeks to the keyframe at or before ``start`` (re-seeking further back if
B-frame reordering put the first decoded frame after ``t_0``) and stops after the first frame past the window.
Pixels are converted to RGB24 by FFmpeg's swscale in the calling thread (`frame_to_rgb`), with one swscale
context per thread reused from frame to frame (a new context per frame, PyAV's ``to_ndarray``, costs about six
times as much and gives the same pixels).

Damaged and timestamp-less input: a packet the decoder rejects is skipped, counted and logged (`DecodeReport`),
as FFmpeg's own tools do; a stream whose frames carry no timestamps (raw H.264, some elementary streams) gets
``start_time + i / fps`` for its ``i``-th frame and is decoded from the start (such files cannot be sought in).
The frame rate is the stream's average rate, else FFmpeg's guessed rate (Ogg streams have no average rate).

The video is the stream `visualsound.media.info.video_stream` picks (cover art is not video: a file with only a
cover picture raises `NoVideoStreamError` "no video stream (only a cover picture)").

Cropping: frames are cropped exactly to the picture `probe` reports (`info.exact_crop`), also where the picture
starts at an odd or unaligned column (Theora's ``pic_x``): FFmpeg's default keeps a few coded border columns there.

Rotation: `read_video` returns frames as stored (coded orientation) unless ``apply_rotation=True``, which rotates
each frame by the display rotation that `probe` reports (counter-clockwise degrees from the display matrix).

Pixels as coded: RGB comes from the frame's own colour matrix and range (BT.601 / BT.709 / BT.2020 tags honoured;
10-bit scaled to 8; HDR transfers are not tone-mapped), an alpha plane (VP9 ``yuva420p``, ProRes 4444) is
dropped (the colour as stored, not composited), and interlaced video (broadcast MPEG-2, DV) is returned as its
decoder gives it, both fields woven into each frame at the frame rate (no deinterlacing).
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

import av
import numpy as np
import torch
import torch.nn.functional as F
from av.video.reformatter import VideoReformatter

from visualsound.media.errors import MediaWindowError, TruncatedMediaError
from visualsound.media.info import (
    ClockCheck,
    DecodeReport,
    PathLike,
    check_window,
    decode_tolerant,
    display_rotation,
    exact_crop,
    file_start,
    frame_rate,
    media_error,
    open_media,
    stream_time,
    video_stream,
)

log = logging.getLogger(__name__)

_EPS = 1e-6  # seconds; tolerance of the "pts <= t" comparison


@functools.lru_cache(maxsize=1)
def _one_thread() -> dict[str, int]:
    """``{"threads": 1}`` where PyAV's reformatter takes a thread count, else ``{}``. Probed once on a tiny
    frame."""
    probe = av.VideoFrame(16, 16, "yuv420p")
    try:
        probe.to_ndarray(format="rgb24", threads=1)
    except TypeError:
        log.debug("this PyAV's reformat takes no thread count: conversions use its default")
        return {}
    return {"threads": 1}


_THREAD = threading.local()


def thread_reformatter() -> VideoReformatter:
    """This thread's swscale converter (a reformatter keeps its context while sizes and formats repeat; not
    thread-safe, hence one per thread). Convert with `convert_frame`, which also keeps swscale on one thread."""
    r = getattr(_THREAD, "reformatter", None)
    if r is None:
        r = _THREAD.reformatter = VideoReformatter()
    return r


def convert_frame(frame: av.VideoFrame, **kwargs: Any) -> av.VideoFrame:
    """`frame` converted (`kwargs` of PyAV's ``VideoReformatter.reformat``: size, format, interpolation, colour
    range) by this thread's reused swscale context, on the calling thread only (PyAV's default, one swscale
    slice thread per CPU, costs several times the conversion itself on small frames; the pixels are the
    same)."""
    return thread_reformatter().reformat(frame, **kwargs, **_one_thread())


def frame_to_rgb(frame: av.VideoFrame, size: tuple[int, int] | None = None) -> np.ndarray:
    """``av.VideoFrame`` -> uint8 ``[H, W, 3]`` RGB24 by swscale with PyAV's default conversion (what decord
    returns), in the calling thread only (the same pixels as a threaded conversion). Display rotation is NOT
    applied. `size` ``(width, height)`` scales the coded picture with swscale's area-averaging filter (`read_video`:
    a frame whose size differs from the stream's first; None or the frame's own size keeps the default
    conversion's pixels)."""
    if size is None or size == (frame.width, frame.height):
        return convert_frame(frame, format="rgb24").to_ndarray()
    return convert_frame(frame, width=size[0], height=size[1], format="rgb24", interpolation="AREA").to_ndarray()


def even_size_within(width: float, height: float, max_width: int) -> tuple[int, int]:
    """``(w, h)`` at most `max_width` wide keeping the aspect ratio (smaller pictures keep their size), both
    rounded to even numbers (H.264 4:2:0). The sizes may be fractional (a display size: width x pixel aspect)."""
    if width > max_width:
        height = height * max_width / width
        width = max_width
    return max(2, int(round(width / 2)) * 2), max(2, int(round(height / 2)) * 2)


def read_video(path: PathLike, start: float = 0.0, duration: float | None = None, fps: float | None = 25.0,
               apply_rotation: bool = False, report: DecodeReport | None = None) -> torch.Tensor:
    """Decode the frames of ``[start, start + duration)`` resampled to `fps` (see the module docstring rule).

    ``duration=None`` reads to the end of the video; ``fps=None`` returns the native frames whose presentation
    time lies in the window. Returns uint8 ``[T, H, W, 3]`` RGB with ``T = round(duration * fps)`` (fewer when
    the window runs past the end). Raises `NoVideoStreamError`, `MediaWindowError` (bad window, or ``start`` at
    or after the end of the video) and `TruncatedMediaError` (undecodable data). Packets the decoder rejects are
    skipped and counted in `report` (see the module docstring). The first frame's size holds for all: a stream
    that changes size mid-way (spliced elementary streams) has its later frames scaled to it (scaled previews:
    `visualsound.media.write_preview`).
    """
    state: dict[str, Any] = {"size": None, "noted": False}  # the output size, fixed by the first frame

    def convert(frame: av.VideoFrame, rotation: int) -> tuple[np.ndarray, int]:
        if state["size"] is None:
            state["size"] = (frame.width, frame.height)
        size = state["size"]
        if size != (frame.width, frame.height) and not state["noted"]:
            state["noted"] = True
            log.info("%s: the frame size changes mid-stream (%dx%d -> %dx%d); scaling to the first size", path,
                     *size, frame.width, frame.height)
        return frame_to_rgb(frame, size), rotation

    frames = list(iter_video_window(path, start, duration, fps, convert=convert, report=report))
    if apply_rotation:
        return torch.from_numpy(np.stack([np.rot90(f, k=rot // 90).copy() if rot else f for f, rot in frames]))
    return torch.from_numpy(np.stack([f for f, _ in frames]))


def stream_rate(stream: av.video.stream.VideoStream) -> float | None:
    """Frames per second of a video stream (`info.frame_rate`: its average rate, else FFmpeg's guessed rate, else
    its base rate; an average rate that is only the stream's clock is passed over)."""
    rate = frame_rate(stream)
    return float(rate) if rate else None


def timed_frames(frames, stream, first_time: float, default_dur: float):
    """Yield ``(seconds, frame)``; a frame without a timestamp is placed one frame duration after the previous
    one (the first at `first_time`)."""
    t_prev, d_prev = None, default_dur
    for frame in frames:
        if frame.time is not None:
            t = float(frame.time)
        else:
            t = first_time if t_prev is None else t_prev + d_prev
        d_prev = float(frame.duration * stream.time_base) if frame.duration else default_dur
        t_prev = t
        yield t, frame


class _Unseekable(Exception):
    """Reopen and decode from the start: the demuxer refused the first seek (no timestamps or index), or seeking
    back never landed early enough (a seek to the first timestamp of an MPEG-TS stream lands after its first
    keyframe, whose decode time is earlier)."""


def _seek_decoder(container, stream, target: float, first_time: float, path, report, seekable: bool = True):
    """Yield ``(time, frame)`` in presentation order from a keyframe at or before `target` seconds (from the
    first packet when `target` is at the start or not `seekable`). Raises `_Unseekable`, before yielding anything,
    when the first seek fails or when the decoding has to start over from the beginning of the file."""
    rate = stream_rate(stream)
    default_dur = 1.0 / rate if rate else 0.04
    back = 0.0
    fresh = True  # nothing read yet: decoding from the start needs no seek
    while True:
        seek_to = target - back
        if not seekable:
            seek_to = first_time
        try:
            if seek_to > first_time + _EPS:
                container.seek(int(math.floor(seek_to / stream.time_base)), stream=stream, backward=True)
            elif not fresh:
                raise _Unseekable()  # from the start: a fresh opening, not a seek (see `_Unseekable`)
        except av.error.FFmpegError as e:
            if not fresh:
                raise
            log.debug("%s: cannot seek (%s); decoding from the start", path, e)
            raise _Unseekable() from e
        fresh = False
        gen = timed_frames(decode_tolerant(container, stream, path, report), stream, first_time, default_dur)
        first = next(gen, None)
        sought = seek_to > first_time + _EPS
        if first is None:
            if not sought:
                return
            # nothing decodes after the landing point (a demuxer that seeks by bytes, e.g. MPEG-TS, can land past
            # the last keyframe before the target): seek further back, in the end from the start
            log.debug("seek to %.3f s decoded no frame; seeking further back", seek_to)
            back = max(1.0, 2 * back)
            continue
        t = first[0]
        if t <= target + _EPS or not sought:
            yield first
            yield from gen
            return
        log.debug("seek to %.3f s landed at %.3f s > %.3f s; seeking further back", seek_to, t, target)
        back = max(1.0, 2 * back)


def preview_size(frame: av.VideoFrame, rotation: int, max_width: int,
                 sample_aspect: Fraction | None = None) -> tuple[int, int]:
    """The coded ``(width, height)`` a frame is scaled to so that, displayed (rotated by `rotation`), it is at
    most `max_width` wide, in square pixels: a frame whose pixels are `sample_aspect` (its stream's
    `info.sample_aspect`; None = square) times as wide as tall is scaled at its display aspect (720x576 at 64:45
    is shown 1024x576: 320x180 at most 320 wide; 176x144 at 128:117 becomes 192x144)."""
    w, h = frame.width, frame.height
    if sample_aspect is not None and sample_aspect != 1:
        w = float(w * sample_aspect)  # the width in square pixels; square frames keep their integer arithmetic
    if rotation % 180:  # shown turned a quarter: the displayed width is the coded height
        shown_w, shown_h = even_size_within(h, w, max_width)
        return shown_h, shown_w
    return even_size_within(w, h, max_width)


def _window_frames(container, stream, start, duration, fps, path, report, seekable: bool,
                   convert: Callable[[av.VideoFrame, int], Any]) -> Iterator[Any]:
    """Yield ``convert(frame, rotation)`` for each output frame of the window (see the module docstring rule); a
    source frame held for several output frames is converted once and yielded again (the same object). Raises
    `_Unseekable` before yielding anything when the first seek fails, and `MediaWindowError` at the end when
    ``start`` is at or after the end of the video."""
    first_time = stream_time(stream, stream.start_time)
    rate = stream_rate(stream)
    default_frame_dur = 1.0 / rate if rate else 0.04
    asked = start
    start += file_start(container)  # the window in stream time (module docstring: times count from the file start)
    end = math.inf if duration is None else start + duration
    if fps is not None and duration is not None:
        n_out = int(round(duration * fps))
        targets = [start + k / fps for k in range(n_out)]
    else:
        targets = None  # generated on the fly
    cache: list = [None, None]  # [frame, converted]: a held frame is converted once however often it repeats

    def take(frame) -> Any:
        if cache[0] is not frame:
            cache[0], cache[1] = frame, convert(frame, display_rotation(frame))
        return cache[1]

    def target(k: int) -> float:
        return targets[k] if targets is not None else start + k / fps

    def has_target(k: int) -> bool:
        return k < len(targets) if targets is not None else start + k / fps < end - _EPS

    k = 0
    produced = 0
    prev = None
    prev_time = None
    last_dur = default_frame_dur
    decoded, first_decoded = 0, None
    clock = ClockCheck(path, stream)  # frames come in presentation order: a time going back is a joined file
    for t, frame in _seek_decoder(container, stream, start, first_time, path, report, seekable):
        decoded += 1
        if first_decoded is None:
            first_decoded = t
        clock(t)
        if frame.duration:
            last_dur = float(frame.duration * stream.time_base)
        if fps is None:  # native frames inside the window
            if t >= end - _EPS:
                break
            if t >= start - _EPS:
                produced += 1
                yield take(frame)
            continue
        while has_target(k) and t > target(k) + _EPS:
            produced += 1
            yield take(prev if prev is not None else frame)  # before the first frame: clamp to it
            k += 1
        if not has_target(k):
            break
        prev, prev_time = frame, t
    else:
        if fps is not None and prev is not None:  # end of stream: hold the last frame until it ends
            video_end = prev_time + last_dur
            if decoded == 1 and abs(prev_time - first_time) <= _EPS:  # the stream's only frame: a still picture
                video_end = max(video_end, still_end(container))
            while has_target(k) and target(k) < video_end - _EPS:
                produced += 1
                yield take(prev)
                k += 1
    log.debug("decoded %d frames from %s s for %d output frames (window start %.3f s)", decoded, first_decoded,
              produced, start)
    if not produced and prev_time is not None and start >= prev_time:
        raise MediaWindowError(f"{path}: start {asked:.3f} s is at or after the end of the video")


def still_end(container: av.container.InputContainer) -> float:
    """Where a video stream of one frame (a still picture with sound, as music uploads are) ends: at the end of
    the file (its start plus its duration), as players show the picture while the sound plays; -inf when the
    file states no duration."""
    if not container.duration:
        return -math.inf
    return file_start(container) + float(container.duration) / av.time_base


def iter_video_window(path: PathLike, start: float = 0.0, duration: float | None = None, fps: float | None = 25.0,
                      *, convert: Callable[[av.VideoFrame, int], Any], threads: int = 0,
                      report: DecodeReport | None = None,
                      on_stream: Callable[[av.video.stream.VideoStream], None] | None = None) -> Iterator[Any]:
    """Stream the window's output frames as `read_video` selects them, each as ``convert(frame, rotation)``
    (`rotation`: the display rotation, counter-clockwise degrees; a held frame is converted once and yielded
    again as the same object), decoding with `threads` decoder threads (0: FFmpeg's choice). `on_stream` is
    called with the video stream read (e.g. for its `info.sample_aspect`) before the first frame is converted
    (again if the file is reopened to decode it from the start). For consumers that never need the RGB frames
    together (encoders). Raises what `read_video` raises."""
    check_window(start, duration)
    if fps is not None and fps <= 0:
        raise MediaWindowError(f"fps must be > 0 or None, got {fps}")
    container = open_media(path)
    try:
        stream = _video_stream(container, path, threads)
        if on_stream is not None:
            on_stream(stream)
        try:
            gen = _window_frames(container, stream, start, duration, fps, path, report, True, convert)
            first = next(gen, _END)
        except _Unseekable:  # nothing was yielded yet: reopen and decode from the start
            container.close()
            container = open_media(path)
            stream = _video_stream(container, path, threads)
            if on_stream is not None:
                on_stream(stream)
            gen = _window_frames(container, stream, start, duration, fps, path, report, False, convert)
            first = next(gen, _END)
        if first is _END:
            raise MediaWindowError(f"{path}: no video frames in window start={start} duration={duration}")
        yield first
        yield from gen
    except av.error.FFmpegError as e:
        raise media_error(path, "video decoding failed", e, TruncatedMediaError) from e
    finally:
        container.close()


_END = object()


def _video_stream(container, path: PathLike, threads: int = 0) -> av.video.stream.VideoStream:
    """`video_stream` with `threads` decoder threads (0: FFmpeg's choice); raises `NoVideoStreamError`."""
    stream = video_stream(container, path)
    if threads:
        stream.codec_context.thread_count = int(threads)
    else:
        stream.thread_type = "AUTO"
    exact_crop(stream)  # frames exactly as wide as `probe` says
    return stream


def resize_short_side(video: torch.Tensor, size: int, *, mode: str, antialias: bool) -> torch.Tensor:
    """Resize so the short side is `size`; the long side becomes ``int(long * size / short)`` (truncated).

    `mode` and `antialias` have no defaults on purpose: libraries disagree (torchvision's tensor resize
    antialiases, pytorchvideo / OpenCV-style pipelines do not), and the choice changes pixels.

    `video` is either uint8 ``[T, H, W, 3]`` (returned as uint8 ``[T, H', W', 3]``, rounded and clamped) or float
    ``[T, C, H, W]`` / ``[C, H, W]`` (returned as float in the same layout). `mode` is ``"bilinear"`` or
    ``"bicubic"`` (``align_corners=False``); `antialias` is passed to `torch.nn.functional.interpolate` and only
    matters when downscaling.
    """
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"mode must be 'bilinear' or 'bicubic', got {mode!r}")
    is_uint8 = video.dtype == torch.uint8
    if is_uint8:
        assert video.ndim == 4 and video.shape[-1] == 3, f"uint8 video must be [T, H, W, 3], got {tuple(video.shape)}"
        x = video.permute(0, 3, 1, 2).float()
    else:
        assert video.ndim in (3, 4), f"float video must be [T, C, H, W] or [C, H, W], got {tuple(video.shape)}"
        x = video if video.ndim == 4 else video[None]
    h, w = x.shape[-2:]
    if h <= w:
        new_h, new_w = size, int(w * size / h)
    else:
        new_h, new_w = int(h * size / w), size
    y = F.interpolate(x, size=(new_h, new_w), mode=mode, align_corners=False, antialias=antialias)
    if is_uint8:
        return y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    return y if video.ndim == 4 else y[0]


def center_crop(video: torch.Tensor, size: int | tuple[int, int], channels_last: bool | None = None) -> torch.Tensor:
    """Crop the centre ``size`` (int or ``(h, w)``) region; the offset is ``int(round((H - h) / 2))`` per axis.

    Works on ``[..., H, W, 3]`` (uint8 default, `channels_last`) or ``[..., C, H, W]`` (float default).
    """
    h, w = (size, size) if isinstance(size, int) else size
    if channels_last is None:
        channels_last = video.dtype == torch.uint8
    H, W = (video.shape[-3], video.shape[-2]) if channels_last else (video.shape[-2], video.shape[-1])
    if h > H or w > W:
        raise ValueError(f"crop {h}x{w} larger than the frame {H}x{W} (shape {tuple(video.shape)})")
    top, left = int(round((H - h) / 2.0)), int(round((W - w) / 2.0))
    if channels_last:
        return video[..., top:top + h, left:left + w, :]
    return video[..., top:top + h, left:left + w]
