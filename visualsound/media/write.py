"""Writing H.264 (yuv420p) + AAC mp4 files: `write_video` (frames, optional audio), `write_preview` (a window of
a video re-encoded small, scaled while decoding: report media) and `mux_audio` (replace the audio of an existing
video, keeping every frame at its time).

`mux_audio` rules (what a generated mp4 shows is what the input showed, with the new audio under it):

* **Frames and times.** An H.264 stream whose packets carry timestamps is copied packet by packet (no quality
  loss), whatever the container (mp4, mov, MKV, WebM, MPEG-TS, ...). Packets without a DTS (Matroska stores only
  presentation times; FFmpeg's mp4 muxer drops such packets, which used to lose the whole first GOP) get one
  synthesised from the presentation times: the sorted pts shifted by the stream's largest reordering delay, so
  every DTS is <= its pts and strictly increasing. Every other input (VP8/VP9, MPEG-1/2/4, Theora, ..., or
  H.264 without timestamps) is decoded and re-encoded to H.264 yuv420p with **each frame keeping its own
  presentation time** (variable frame rates stay variable; frames without a timestamp are placed
  ``1 / fps`` apart). Packets the decoder rejects are skipped and counted (`DecodeReport`).
* **Start time.** A video that starts at ``t0 > 0`` keeps ``t0``; the audio is placed at ``t0`` too, so its first
  sample plays with the first frame (to within 1 ms; the mp4 then keeps the AAC encoder's 1024-sample priming
  frame just before ``t0``, which decodes to near-silence).
* **Rotation.** The display rotation (display matrix) is written to the output, so players turn the picture as
  they turned the input.
* **Odd sizes.** H.264 4:2:0 needs even sizes: a re-encoded frame of odd width or height (e.g. 720x405) gets
  one column / row repeating its edge (720x406); the picture is kept whole, nothing is cropped or scaled.
  A copied H.264 stream keeps its own size (H.264 codes odd sizes by cropping).
* **Pixel aspect ratio.** The source's sample aspect ratio (`info.sample_aspect`: the container's, else the
  bitstream's) is kept: a re-encoded stream states a non-square one in its bitstream (the SPS's VUI) and in the
  mp4 (``pasp``), a copied one keeps its SPS and the mp4 states the guessed ratio (a container-only ratio
  survives the copy), so a PAL DVD 720x576 at 64:45 is still shown 16:9. (The mp4's track header keeps the
  coded width: PyAV cannot set the muxer's stream ratio; players read ``pasp``.) `write_preview` instead scales
  to square pixels at the display aspect (see there), and `copy_window` refuses non-square pixels.
* **Colours.** A re-encoded frame keeps its source's colour matrix in its pixels (only the range and bit depth
  are converted: a full-range source such as MJPEG's ``yuvj420p`` to the standard range, 10-bit to 8-bit), and
  the output states the source's matrix, primaries and transfer (`tag_colours`), so a player decodes it with the
  source's coefficients (a BT.709 or BT.2020 source written untagged was decoded with a player's default: other
  colours). No tone mapping: an HDR (PQ / HLG) source keeps its transfer tag. `write_preview` does the same.
* **Cropping.** Frames are decoded cropped exactly to the picture `probe` reports (`info.exact_crop`): a Theora
  picture 300 wide at x = 2 is 300 wide, not the 302 FFmpeg's aligned crop gives.
* **Audio span.** With ``trim_audio`` the audio is cut to the video's span (first frame to the end of the last).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import ColorRange, Colorspace

from visualsound.media.errors import MediaError, MediaWriteError
from visualsound.media.info import (
    DecodeReport,
    PathLike,
    audio_stream,
    check_window,
    decode_tolerant,
    display_rotation,
    exact_crop,
    ffmpeg_reason,
    file_start,
    media_error,
    open_media,
    sample_aspect,
    stream_time,
    video_stream,
)
from visualsound.media.video import convert_frame, iter_video_window, preview_size, stream_rate
from visualsound.utils.atomic import atomic_path

log = logging.getLogger(__name__)

_NTSC = (Fraction(24000, 1001), Fraction(30000, 1001), Fraction(60000, 1001))


def as_rate(fps: float | Fraction) -> Fraction:
    """`fps` as an exact Fraction; 23.976 / 29.97 / 59.94 (within 1e-3) become 24000/1001, 30000/1001, 60000/1001."""
    if isinstance(fps, Fraction):
        return fps
    for r in _NTSC:
        if abs(float(fps) - float(r)) < 1e-3:
            return r
    return Fraction(fps).limit_denominator(1000)


def _atomic_media_path(path: PathLike) -> contextlib.AbstractContextManager[str]:
    """A temporary path next to `path` (same suffix, so FFmpeg picks the muxer and can reopen it for
    ``+faststart``) that replaces `path` on success and is removed on failure (`atomic_path`)."""
    return atomic_path(path, suffix=Path(path).suffix or ".mp4")


@contextlib.contextmanager
def _ffmpeg_errors(what: str) -> Iterator[None]:
    """Turn an FFmpeg failure (encoder, muxer, file system) into a `MediaError` naming `what`."""
    try:
        yield
    except av.error.FFmpegError as e:
        raise MediaError(f"{what} failed: {ffmpeg_reason(e)}") from e


def _to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _check_audio(audio: torch.Tensor | np.ndarray, sample_rate: int | None) -> np.ndarray:
    a = _to_numpy(audio).astype(np.float32, copy=False)
    if a.ndim != 2 or a.shape[0] not in (1, 2):
        raise MediaWriteError(f"audio must be float [C, N] with C in (1, 2), got shape {a.shape}")
    if not sample_rate or sample_rate <= 0:
        raise MediaWriteError(f"a positive sample_rate is required with audio, got {sample_rate}")
    if not np.all(np.isfinite(a)):
        raise MediaWriteError("audio contains NaN or inf")
    return a


def _add_aac(container, sample_rate: int, channels: int, bit_rate: int | None, coder: str | None = None):
    stream = container.add_stream("aac", rate=int(sample_rate))
    stream.layout = "stereo" if channels == 2 else "mono"
    stream.bit_rate = bit_rate or 96000 * channels
    if coder:  # FFmpeg's AAC coder: 'twoloop' (its default, best) or 'fast' (about 2.5x faster, for previews)
        stream.codec_context.options = {"aac_coder": coder}
    return stream


def _encode_audio(container, stream, a: np.ndarray, sample_rate: int, start: int = 0) -> None:
    """Encode `a` ``[C, N]`` into `stream`, its first sample at sample `start` of the timeline. One frame in:
    PyAV cuts it into the encoder's 1024-sample frames in C (the same bytes as feeding those frames one by one,
    with less time holding the GIL, which matters when clips are encoded on parallel threads)."""
    if a.shape[1] == 0:
        container.mux(stream.encode(None))
        return
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(np.clip(a, -1.0, 1.0)), format="fltp",
                                       layout="stereo" if a.shape[0] == 2 else "mono")
    frame.sample_rate = int(sample_rate)
    frame.pts = start
    container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def _add_h264(container, rate: Fraction, width: int, height: int, crf: int, preset: str, gop: int | None):
    if width % 2 or height % 2:
        raise MediaWriteError(f"H.264 yuv420p needs an even width and height, got {width}x{height}")
    stream = container.add_stream("libx264", rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.options = {"crf": str(crf), "preset": preset}
    stream.codec_context.gop_size = gop if gop else max(1, int(round(2 * float(rate))))
    return stream


def write_video(path: PathLike, frames: torch.Tensor | np.ndarray, fps: float | Fraction,
                audio: torch.Tensor | np.ndarray | None = None, sample_rate: int | None = None, *, crf: int = 18,
                preset: str = "veryfast", gop: int | None = None, audio_bitrate: int | None = None,
                aac_coder: str | None = None, reproducible: bool = False) -> None:
    """Write uint8 RGB ``[T, H, W, 3]`` frames as an H.264 yuv420p mp4 (``+faststart``), atomically.

    Optional `audio` float ``[C, N]`` (C = 1 or 2) at `sample_rate` is encoded as AAC (`aac_coder`: FFmpeg's AAC
    coder, None = its default 'twoloop'; 'fast' for previews). `gop` is the keyframe interval (default: 2 seconds
    of frames); `crf` / `preset` go to libx264. `reproducible` turns off libx264's macroblock-tree rate control,
    whose optimised code gave a static 64x64 clip different bytes in 3 of 40 writes of the same frames (with one
    thread too: it depends on the process's memory, not on timing); files are then a little larger. Raises
    `MediaWriteError` on bad input and `MediaError` when FFmpeg fails (nothing is left at `path` then).
    """
    v = _to_numpy(frames)
    if v.dtype != np.uint8 or v.ndim != 4 or v.shape[-1] != 3 or v.shape[0] == 0:
        raise MediaWriteError(f"frames must be uint8 [T, H, W, 3] with T > 0, got {v.dtype} {v.shape}")
    a = _check_audio(audio, sample_rate) if audio is not None else None
    rate = as_rate(fps)
    with _atomic_media_path(path) as tmp, _ffmpeg_errors(f"writing {path}"):
        container = av.open(tmp, mode="w", format="mp4", options={"movflags": "+faststart"})
        try:
            vs = _add_h264(container, rate, v.shape[2], v.shape[1], crf, preset, gop)
            if reproducible:
                vs.options = {**vs.options, "x264-params": "no-mbtree=1"}
            As = _add_aac(container, sample_rate, a.shape[0], audio_bitrate, aac_coder) if a is not None else None
            for i in range(v.shape[0]):
                frame = convert_frame(av.VideoFrame.from_ndarray(np.ascontiguousarray(v[i]), format="rgb24"),
                                      format="yuv420p")
                frame.pts = i
                for pkt in vs.encode(frame):
                    container.mux(pkt)
            for pkt in vs.encode(None):
                container.mux(pkt)
            if As is not None:
                _encode_audio(container, As, a, sample_rate)
        finally:
            container.close()


def write_audio(path: PathLike, audio: torch.Tensor | np.ndarray, sample_rate: int, *,
                bit_rate: int | None = None, aac_coder: str | None = None) -> None:
    """Write float ``[C, N]`` audio (C = 1 or 2) as AAC in an audio-only mp4 container (``.m4a``), atomically
    (`aac_coder` as in `write_video`)."""
    a = _check_audio(audio, sample_rate)
    with _atomic_media_path(path) as tmp, _ffmpeg_errors(f"writing {path}"):
        container = av.open(tmp, mode="w", format="mp4")
        try:
            _encode_audio(container, _add_aac(container, sample_rate, a.shape[0], bit_rate, aac_coder), a,
                          sample_rate)
        finally:
            container.close()


def _preview_yuv(frame: av.VideoFrame, width: int, height: int) -> av.VideoFrame:
    """`frame` scaled to ``width`` x ``height`` (swscale's area filter) as standard-range yuv420p: a preview frame.
    PyAV takes the source range from the frame; the output is tagged and coded in the standard range (left unset,
    a full-range source would keep its levels and be shown as standard range: washed out)."""
    return convert_frame(frame, width=width, height=height, format="yuv420p", interpolation="AREA",
                         dst_color_range="MPEG")


_UNSET_COLOUR = (0, 2)  # AVCOL_*: reserved / RGB (0) and unspecified (2): nothing to state


def tag_colours(ctx: av.video.codeccontext.VideoCodecContext, frame: av.VideoFrame) -> None:
    """State on an encoder `ctx` (before it opens) the colour matrix, primaries and transfer of the YUV `frame` it
    will encode and the standard range: libx264 writes them into the stream's VUI (and the mp4 muxer into
    ``colr``), so a player decodes re-encoded pixels, which keep the source's matrix (the scaler converts range
    and bit depth, not matrices), with the source's coefficients. Untagged, a BT.709 or BT.2020 source's pixels
    were decoded with a player's default (BT.601 in FFmpeg, BT.709 in browsers): visibly other colours. An
    unspecified (or RGB) value stays unspecified, as in the source. No tone mapping: a PQ / HLG source keeps its
    transfer tag, for players that map it."""
    for name in ("colorspace", "color_primaries", "color_trc"):
        value = int(getattr(frame, name))
        if value not in _UNSET_COLOUR:
            setattr(ctx, name, value)
    ctx.color_range = int(ColorRange.MPEG)


def _shown_rgb(frame: av.VideoFrame, rotation: int) -> np.ndarray:
    """`frame` as uint8 ``[H, W, 3]`` RGB turned by its display `rotation` (counter-clockwise degrees): a poster."""
    rgb = convert_frame(frame, format="rgb24").to_ndarray()
    return np.rot90(rgb, k=rotation // 90).copy() if rotation else rgb


def write_preview(src: PathLike, out_path: PathLike, *, start: float = 0.0, duration: float | None = None,
                  fps: float = 25.0, max_width: int = 320, audio: torch.Tensor | np.ndarray | None = None,
                  sample_rate: int | None = None, crf: int = 28, preset: str = "superfast",
                  aac_coder: str | None = None, encoder_threads: int = 0, decoder_threads: int = 0,
                  report: DecodeReport | None = None) -> np.ndarray:
    """Re-encode the window ``[start, start + duration)`` of `src`'s video as a small H.264 yuv420p mp4
    (``+faststart``) at `out_path`, atomically, and return its first frame as displayed: uint8 ``[H, W, 3]`` RGB
    (a poster).

    Frames are chosen as `read_video` chooses them at `fps`, and scaled while decoding, without an RGB
    round trip, to at most `max_width` pixels wide as displayed (aspect kept, both sides even:
    `even_size_within`; swscale's area filter; full-range sources are converted to the standard range). The
    output has square pixels: an anamorphic source (a sample aspect ratio other than 1:1, `info.sample_aspect`)
    is scaled at its display aspect (a PAL DVD 720x576 at 64:45 becomes 320x180, a 176x144 clip at 128:117
    192x144), so every browser shows it right and the poster has the same shape (browsers honour an H.264 ratio,
    but square pixels leave no player room to differ). The source's colour matrix, primaries and transfer are
    stated as `mux_audio` states them (`tag_colours`: a 10-bit BT.2020 source becomes 8-bit H.264 tagged
    BT.2020, not tone-mapped). The size and display rotation of the first frame hold
    for the whole file (a later size change is scaled to it); the rotation is written as the display matrix, as
    `mux_audio` keeps it. Optional `audio` float ``[C, N]`` at `sample_rate` is encoded as AAC, cut to the
    frames' span (``T / fps`` seconds). `crf` / `preset` / `encoder_threads` go to libx264 and `decoder_threads`
    to the decoder (0: their own choice; 1 each when clips are encoded in parallel). Raises what `read_video`
    raises for the source (naming it), `MediaWriteError` on bad arguments and `MediaError` when FFmpeg fails to
    write (nothing is left at `out_path` then).
    """
    a = _check_audio(audio, sample_rate) if audio is not None else None
    if max_width < 2:
        raise MediaWriteError(f"max_width must be >= 2 pixels, got {max_width}")
    rate = as_rate(fps)
    shape: dict[str, object] = {}  # the first frame's coded output size and display rotation
    sar: list[Fraction | None] = [None]  # the source stream's sample aspect ratio

    def convert(frame: av.VideoFrame, rotation: int) -> av.VideoFrame:
        if not shape:
            shape["size"], shape["rotation"] = preview_size(frame, rotation, max_width, sar[0]), rotation
        w, h = shape["size"]
        return _preview_yuv(frame, w, h)

    def on_stream(stream: av.video.stream.VideoStream) -> None:
        sar[0] = sample_aspect(stream)

    frames = iter_video_window(src, start, duration, float(rate), convert=convert, threads=decoder_threads,
                               report=report, on_stream=on_stream)
    try:
        first = next(frames)  # the source's errors (missing, no video, bad window) before anything is written
        (w, h), rotation = shape["size"], int(shape["rotation"])
        poster = _shown_rgb(first, rotation)
        with _atomic_media_path(out_path) as tmp, _ffmpeg_errors(f"writing {out_path}"):
            container = av.open(tmp, mode="w", format="mp4", options={"movflags": "+faststart"})
            try:
                vs = _add_h264(container, rate, w, h, crf, preset, None)
                tag_colours(vs.codec_context, first)  # the frames keep the source's matrix: say which
                if encoder_threads:
                    vs.options = {**vs.options, "threads": str(int(encoder_threads))}
                if rotation:
                    vs.set_display_rotation(rotation)
                As = _add_aac(container, sample_rate, a.shape[0], None, aac_coder) if a is not None else None
                time_base = Fraction(1) / rate
                n = 0
                for frame in itertools.chain([first], frames):
                    frame.pts, frame.time_base = n, time_base  # a decoded frame brings its source's time base
                    for pkt in vs.encode(frame):
                        container.mux(pkt)
                    n += 1
                for pkt in vs.encode(None):
                    container.mux(pkt)
                if As is not None:
                    _encode_audio(container, As, a[:, :int(round(n / float(rate) * sample_rate))], sample_rate)
            finally:
                container.close()
    finally:
        frames.close()
    return poster


class NotCopyable(Exception):
    """`copy_window` cannot copy this window (`reason` says why); re-encode it (`write_preview`) instead. Not a
    `MediaError`: the file is fine, it is only not a candidate for a copy."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_COPY_PIX_FMTS = ("yuv420p", "yuvj420p")  # 8-bit 4:2:0: what every browser's H.264 decoder plays
_KEY_TOLERANCE = 5e-4  # seconds: a keyframe this close to the window's start starts it
_EPS_TIME = 1e-6  # seconds: float rounding of packet times


def copy_window(src: PathLike, out_path: PathLike, *, start: float = 0.0, duration: float | None = None,
                max_kbps: float = 800.0, max_width: int = 320, audio: torch.Tensor | np.ndarray | None = None,
                sample_rate: int | None = None, aac_coder: str | None = None,
                audio_from_source: bool = False) -> tuple[np.ndarray, str | None]:
    """Copy the window ``[start, start + duration)`` (seconds from the file's start, as `read_video` counts) of
    `src`'s H.264 video packet by packet (no decoding, no
    re-encoding, the source's size and frame rate) into an mp4 (``+faststart``) at `out_path`, atomically, with
    optional `audio` float ``[C, N]`` at `sample_rate` encoded as AAC from the window's start. With
    `audio_from_source` the source's own audio is copied instead when it is AAC in one or two channels (the
    window's packets, one before it for the decoder's overlap, and an edit list that starts playback at the
    window's first sample: it decodes to the samples `read_audio` gives for the window, exactly from a file's
    start and to within float rounding (~2e-6) after it); `audio` is encoded otherwise. Returns the first frame
    as displayed, scaled as `write_preview` scales it (at most `max_width` wide): uint8 ``[H, W, 3]`` RGB (a
    poster), and how the audio was written: ``"copy"``, ``"encode"`` or None (no audio). The cheap twin of
    `write_preview` for sources that are already small.

    The copy is exact in time: the window must start on a keyframe (within 0.5 ms; the first frame of a file
    usually is one), and the output's first frame and the audio's first sample both sit at 0. A copy holds every
    frame shown before ``start + duration`` and may end with up to the stream's reordering depth of frames
    after it (1-2 with B-frames: frames later in display order that come earlier in decode order), silent.
    The display rotation is kept. Raises `NotCopyable` (with the reason) when the video is not 8-bit 4:2:0
    H.264 with square pixels (`write_preview` scales anamorphic video to square pixels), packets lack
    timestamps (or decode timestamps, as in Matroska), the window starts between keyframes or before the first
    frame, the GOP is open (pictures that need the previous GOP), the file cannot be sought in, or the window's
    video is more than `max_kbps` kbit/s; `MediaWriteError` on bad arguments, what `open_media` raises for the
    source, and `MediaError` when FFmpeg fails to write (nothing is left at `out_path` then).
    """
    check_window(start, duration)
    a = _check_audio(audio, sample_rate) if audio is not None else None
    if max_width < 2:
        raise MediaWriteError(f"max_width must be >= 2 pixels, got {max_width}")
    container = open_media(src)
    audio_src = None
    try:
        origin = file_start(container)  # the window counts from the file's start, as the readers' windows do
        start += origin
        end = math.inf if duration is None else start + duration
        vin = video_stream(container, src)
        ctx = vin.codec_context
        if ctx.name != "h264":
            raise NotCopyable(f"the video is {ctx.name}, not H.264")
        if ctx.pix_fmt not in _COPY_PIX_FMTS:
            raise NotCopyable(f"the video's pixels are {ctx.pix_fmt}, not 8-bit 4:2:0")
        sar = sample_aspect(vin)
        if sar is not None and sar != 1:
            raise NotCopyable(f"the video's pixels are not square (sample aspect ratio {sar.numerator}:"
                              f"{sar.denominator}); a preview has square pixels")
        tb = vin.time_base
        first_time = stream_time(vin, vin.start_time)
        if start < first_time - _KEY_TOLERANCE:
            raise NotCopyable(f"the video starts at {first_time - origin:.3f} s, after the window's start "
                              f"{start - origin:.3f} s")
        try:
            if start > first_time + _KEY_TOLERANCE:  # to the keyframe at or before the start
                container.seek(int(math.floor((start + _KEY_TOLERANCE) / tb)), stream=vin, backward=True)
            packets = _window_packets(container, vin, start, end, max_kbps)
        except av.error.FFmpegError as e:
            raise NotCopyable(f"cannot read the window's packets ({ffmpeg_reason(e)})") from e
        key = packets[0]
        shown = [p for p in packets if float(p.pts * tb) < end - _EPS_TIME]
        span_end = min(end, max(float((p.pts + (p.duration or 0)) * tb) for p in shown))
        kbps = sum(p.size for p in packets) * 8 / 1000 / max(span_end - start, 1e-3)
        if kbps > max_kbps:
            raise NotCopyable(f"the window's video is {kbps:.0f} kbit/s, above the copy limit {max_kbps:g}")
        poster, rotation = _poster(vin, packets, max_width)
        default_dur = int(round(1 / (stream_rate(vin) or 25) / tb))
        audio_packets: list = []
        if audio_from_source:
            audio_src = open_media(src)
            audio_packets = _audio_window_packets(audio_src, start, span_end)
        with _atomic_media_path(out_path) as tmp, _ffmpeg_errors(f"writing {out_path}"):
            out = av.open(tmp, mode="w", format="mp4", options={"movflags": "+faststart"})
            try:
                vout = out.add_stream_from_template(vin)
                if rotation:
                    vout.set_display_rotation(rotation)
                As = (_add_aac(out, sample_rate, a.shape[0], None, aac_coder)
                      if a is not None and not audio_packets else None)
                aout = out.add_stream_from_template(audio_packets[0].stream) if audio_packets else None
                shift = key.pts
                for p in packets:
                    p.pts, p.dts = p.pts - shift, p.dts - shift
                    if not p.duration:
                        p.duration = default_dur
                    p.stream = vout
                    out.mux(p)
                audio_mode = None
                if aout is not None:
                    for p in audio_packets:
                        p.stream = aout
                        out.mux(p)
                    audio_mode = "copy"
                elif As is not None:
                    _encode_audio(out, As, a[:, :int(round((span_end - start) * sample_rate))], sample_rate)
                    audio_mode = "encode"
            finally:
                out.close()
    finally:
        container.close()
        if audio_src is not None:
            audio_src.close()
    return poster, audio_mode


def _window_packets(container, vin, start: float, end: float, max_kbps: float) -> list:
    """The packets of `vin` from the keyframe at `start` (the demuxer's next packet) in decode order, through the
    last one shown before `end`; raises `NotCopyable` where the window cannot be copied exactly, and as soon as
    they pass twice `max_kbps` over the whole window (a heavy stream is not read to its end only to be refused;
    `copy_window` checks the rate of what it keeps)."""
    tb = vin.time_base
    packets: list = []
    budget, total = (2 * max_kbps * 1000 / 8 * (end - start) if math.isfinite(end) else math.inf), 0
    for p in container.demux(vin):
        if not p.size:
            continue
        if p.pts is None:
            raise NotCopyable("video packets without timestamps")
        if p.dts is None:
            raise NotCopyable("video packets without decode timestamps (as Matroska stores them)")
        if not packets:
            t = float(p.pts * tb)
            if not p.is_keyframe or abs(t - start) > _KEY_TOLERANCE:
                raise NotCopyable(f"the window starts at {start:.3f} s, between keyframes (the demuxer gives a "
                                  f"{'key' if p.is_keyframe else 'non-key'}frame at {t:.3f} s)")
        elif p.pts < packets[0].pts:
            raise NotCopyable("an open GOP: pictures after the keyframe need the previous GOP")
        if float(p.dts * tb) >= end - _EPS_TIME:  # every frame shown before `end` is decoded before it
            break
        total += p.size
        if total > budget:
            raise NotCopyable(f"the window's video is more than twice the copy limit {max_kbps:g} kbit/s (over "
                              f"{total * 8 / 1000 / (end - start):.0f} kbit/s)")
        packets.append(p)
    if not packets:
        raise NotCopyable(f"no video packets from {start:.3f} s")
    last = max(i for i, p in enumerate(packets) if float(p.pts * tb) < end - _EPS_TIME)
    return packets[:last + 1]


def _audio_window_packets(container, start: float, end: float) -> list:
    """The AAC packets of `container`'s audio stream (`info.audio_stream`) for ``[start, end)`` seconds, timed
    from `start`: the packet holding `start` and the one before it (whose overlap the decoder needs) start before
    0, so the mp4 muxer writes an edit list that starts playback at `start`; the last one ends at `end`. Empty
    when the audio cannot be copied (none, not AAC, more than two channels, packets without timestamps, no seek)."""
    ain = audio_stream(container)
    if ain is None:
        return []
    ctx = ain.codec_context
    if ctx.name != "aac" or not 1 <= ctx.channels <= 2 or not ctx.sample_rate:
        log.debug("audio %s with %s channels: encoding it instead of copying", ctx.name, ctx.channels)
        return []
    tb = ain.time_base
    first, stop = int(round(start / tb)), int(round(end / tb)) if math.isfinite(end) else None
    try:
        if start > 0.5:  # well past the priming packet
            container.seek(int(math.floor((start - 0.5) / tb)), stream=ain, backward=True)
        kept: list = []
        for p in container.demux(ain):
            if not p.size:
                continue
            if p.pts is None or not p.duration:
                return []
            if stop is not None and p.pts >= stop:
                break
            if p.pts + p.duration <= first:
                kept = [p]  # the packet before the window: the decoder's overlap
                continue
            kept.append(p)
    except av.error.FFmpegError as e:
        log.debug("cannot read the audio packets (%s): encoding it instead of copying", ffmpeg_reason(e))
        return []
    if not kept or kept[0].pts > first:
        return []
    for p in kept:
        p.pts -= first
        p.dts = p.pts
    if stop is not None and kept[-1].pts + kept[-1].duration > stop - first:
        kept[-1].duration = stop - first - kept[-1].pts
    return kept


def _poster(vin, packets: list, max_width: int) -> tuple[np.ndarray, int]:
    """The first frame of `packets` (decoded on one thread) as `write_preview`'s poster, and its display
    rotation."""
    ctx = vin.codec_context
    ctx.thread_count = 1
    exact_crop(vin)  # the picture a player shows (it crops exactly)
    frame = None
    for p in packets:
        frames = ctx.decode(p)
        if frames:
            frame = frames[0]
            break
    if frame is None:
        frames = ctx.decode(None)
        if not frames:
            raise NotCopyable("the keyframe does not decode")
        frame = frames[0]
    rotation = display_rotation(frame)
    w, h = preview_size(frame, rotation, max_width)
    return _shown_rgb(_preview_yuv(frame, w, h), rotation), rotation


_COPY_CODECS = ("h264",)  # copied into mp4 as they are; everything else is re-encoded to H.264
_ENCODE_TIME_BASE = Fraction(1, 90000)  # re-encoded frame times are kept to 1/90000 s


def synthesize_dts(pts: list[int]) -> list[int]:
    """Decode timestamps for packets (in decode order) that have presentation times `pts` but no DTS: the sorted
    pts shifted back by the largest reordering delay, so that ``dts[i] <= pts[i]`` and the DTS strictly
    increase (the presentation times must be distinct)."""
    order = sorted(pts)
    delay = max(0, max(o - p for o, p in zip(order, pts)))
    return [o - delay for o in order]


def _copy_plan(container, vin, path: PathLike) -> list | None:
    """The packets of `vin` (all read) with a DTS everywhere, or None when the stream cannot be copied (not
    H.264, packets without presentation times, repeated presentation times)."""
    if vin.codec_context.name not in _COPY_CODECS:
        return None
    packets = [p for p in container.demux(vin) if p.size]
    if not packets or any(p.pts is None for p in packets):
        log.info("%s: video packets without timestamps; re-encoding", path)
        return None
    pts = [p.pts for p in packets]
    if len(set(pts)) != len(pts):
        log.info("%s: repeated video timestamps; re-encoding", path)
        return None
    dts = [p.dts for p in packets]
    if any(d is None for d in dts) or any(b <= a for a, b in zip(dts, dts[1:])) or any(
            d > q for d, q in zip(dts, pts)):
        log.info("%s: %d of %d video packets lack a usable DTS (as Matroska stores them); synthesising them from "
                 "the presentation times", path, sum(d is None for d in dts), len(dts))
        for p, d in zip(packets, synthesize_dts(pts)):
            p.dts = d
    return packets


def _even_frame(frame: av.VideoFrame) -> av.VideoFrame:
    """`frame` as standard-range yuv420p in its own colour matrix (a full-range source, MJPEG's ``yuvj420p``, is
    converted to the standard range: written as it was, it would be shown as standard range, with crushed blacks
    and whites); an odd width / height gets one column / row repeating its edge (picture kept whole)."""
    w, h = frame.width, frame.height
    if w % 2 == 0 and h % 2 == 0:
        return convert_frame(frame, format="yuv420p", dst_color_range="MPEG")
    rgb = convert_frame(frame, format="rgb24").to_ndarray()
    rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    matrix = int(frame.colorspace)  # back into the source's matrix, which `tag_colours` states
    return convert_frame(av.VideoFrame.from_ndarray(rgb, format="rgb24"), format="yuv420p", dst_color_range="MPEG",
                         dst_colorspace=matrix if matrix in _SWS_MATRICES else None)


_SWS_MATRICES = {int(c) for c in Colorspace} | {6, 10}  # swscale's: BT.709, FCC, BT.601 (both), SMPTE 240M, BT.2020


def _encode_one(out, vout, pts: int, frame: av.VideoFrame, duration: int) -> None:
    """Encode `frame` at `pts` lasting `duration` (both in `_ENCODE_TIME_BASE`) and mux what comes out; the
    first frame's colour tags are stated on the encoder (`tag_colours`)."""
    if not vout.codec_context.is_open:
        tag_colours(vout.codec_context, frame)
    f = _even_frame(frame)
    f.pts, f.time_base, f.duration = pts, _ENCODE_TIME_BASE, duration
    for pkt in vout.encode(f):
        out.mux(pkt)


def mux_audio(video_path: PathLike, audio: torch.Tensor | np.ndarray, sample_rate: int, out_path: PathLike, *,
              trim_audio: bool = True, crf: int = 18, preset: str = "veryfast",
              report: DecodeReport | None = None, aac_coder: str | None = None) -> str:
    """Write `out_path`: the video of `video_path` plus `audio` (float ``[C, N]``) as AAC, in an mp4, atomically.

    Frames keep their times, start time, rotation and pixel aspect ratio (see the module docstring: H.264 with
    timestamps is copied, DTS synthesised where missing; anything else is re-encoded to H.264 keeping each
    frame's time, cropped exactly; odd sizes are padded by one edge row / column). The audio starts with the
    first frame; with `trim_audio` audio longer than the video's span is cut (`aac_coder` as in `write_video`).
    The source's own audio is dropped.
    Returns ``"copy"`` or ``"re-encode"``. Raises `NoVideoStreamError` when `video_path` has no video (a cover
    picture is not video: an mp3 or m4a with cover art is refused), `MediaWriteError` when no audio sample would
    be written (empty `audio`; a file is never written without the audio it was given), `MediaError` (naming
    the file) when FFmpeg fails; re-encoded packets the decoder rejects are skipped and counted in `report`.
    """
    from visualsound.media.info import probe
    from visualsound.media.video import timed_frames

    a = _check_audio(audio, sample_rate)
    if Path(video_path).resolve() == Path(out_path).resolve():
        raise MediaWriteError(f"mux_audio cannot overwrite its input {video_path}; choose another out_path")
    info = probe(video_path, require_video=True)
    t0 = float(info.video_start or 0.0)
    span = info.video_duration or info.duration
    if trim_audio and span:
        a = a[:, :int(round(span * sample_rate))]
    if not a.shape[1]:
        raise MediaWriteError(f"{video_path}: no audio samples to mux into {out_path} (given {audio.shape[-1]} at "
                              f"{sample_rate} Hz, the video spans {span:.6f} s): an mp4 without the audio is not "
                              "written")
    src = open_media(video_path)
    mode = "copy"
    try:
        vin = video_stream(src, video_path)
        packets = _copy_plan(src, vin, video_path)
        if packets is None:
            src.close()
            src = open_media(video_path)  # reopen rather than seek back: some files cannot seek
            vin = video_stream(src, video_path)
            mode = "re-encode"
        with _atomic_media_path(out_path) as tmp:
            out = av.open(tmp, mode="w", format="mp4", options={"movflags": "+faststart"})
            try:
                if packets is not None:
                    vout = out.add_stream_from_template(vin)
                    if info.rotation:
                        vout.set_display_rotation(info.rotation)
                    sar = sample_aspect(vin)
                    if sar is not None:  # the template has the bitstream's; a container's ratio wins
                        vout.codec_context.sample_aspect_ratio = sar
                    As = _add_aac(out, sample_rate, a.shape[0], None, aac_coder)
                    default_dur = int(round(1 / (stream_rate(vin) or 25) / vin.time_base))
                    for pkt in packets:
                        if not pkt.duration:
                            pkt.duration = default_dur
                        pkt.stream = vout
                        out.mux(pkt)
                else:
                    rate = stream_rate(vin)
                    if not rate:
                        log.warning("%s: the video stream has no frame rate; timing frames without timestamps "
                                    "at 25 fps", video_path)
                    rate = as_rate(rate or 25)
                    w, h = vin.codec_context.width, vin.codec_context.height
                    if w % 2 or h % 2:
                        log.info("%s: %dx%d frames are padded to %dx%d (one edge column / row repeated) for "
                                 "H.264 4:2:0", video_path, w, h, w + w % 2, h + h % 2)
                    vout = _add_h264(out, rate, w + w % 2, h + h % 2, crf, preset, None)
                    # no B-frames: decode order = presentation order, so the mp4's sample durations (DTS deltas)
                    # are the frames' own durations and a variable-rate track ends where its last frame ends
                    vout.options = {**vout.options, "bf": "0"}
                    vout.codec_context.time_base = _ENCODE_TIME_BASE
                    if info.rotation:
                        vout.set_display_rotation(info.rotation)
                    sar = sample_aspect(vin)
                    if sar is not None and sar != 1:  # libx264 writes it into the VUI, the mp4 muxer into `pasp`
                        vout.codec_context.sample_aspect_ratio = sar
                    As = _add_aac(out, sample_rate, a.shape[0], None, aac_coder)
                    exact_crop(vin)  # frames `w` x `h` as probed, not an aligned crop a few columns wider
                    frames = decode_tolerant(src, vin, video_path, report)
                    held = None  # (pts, frame): encoded once the next frame's time gives its duration
                    for t, frame in timed_frames(frames, vin, t0, 1.0 / float(rate)):
                        pts = int(round(t / _ENCODE_TIME_BASE))
                        if held is not None and pts <= held[0]:
                            log.debug("%s: dropping a frame with a repeated time %.6f s", video_path, t)
                            continue
                        if held is not None:
                            _encode_one(out, vout, *held, pts - held[0])
                        held = (pts, frame)
                    if held is not None:
                        last = held[1]
                        dur = (float(last.duration * vin.time_base) if last.duration else 1.0 / float(rate))
                        _encode_one(out, vout, *held, max(1, int(round(dur / _ENCODE_TIME_BASE))))
                    for pkt in vout.encode(None):
                        out.mux(pkt)
                _encode_audio(out, As, a, sample_rate, start=int(round(t0 * sample_rate)))
            finally:
                out.close()
    except av.error.FFmpegError as e:
        raise media_error(video_path, f"muxing audio into {out_path} failed", e) from e
    finally:
        src.close()
    return mode
