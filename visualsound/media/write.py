"""Writing H.264 (yuv420p) + AAC mp4 files: `write_video` (frames, optional audio) and `mux_audio` (replace the
audio of an existing video; an H.264 video stream is copied without re-encoding)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from visualsound.media.errors import MediaError, MediaWriteError, NoVideoStreamError
from visualsound.media.info import PathLike, open_media
from visualsound.utils.atomic import atomic_path

log = logging.getLogger(__name__)

_NTSC = (Fraction(24000, 1001), Fraction(30000, 1001), Fraction(60000, 1001))
_AAC_FRAME = 1024


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
        raise MediaError(f"{what} failed: {e}") from e


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


def _add_aac(container, sample_rate: int, channels: int, bit_rate: int | None):
    stream = container.add_stream("aac", rate=int(sample_rate))
    stream.layout = "stereo" if channels == 2 else "mono"
    stream.bit_rate = bit_rate or 96000 * channels
    return stream


def _encode_audio(container, stream, a: np.ndarray, sample_rate: int) -> None:
    layout = "stereo" if a.shape[0] == 2 else "mono"
    a = np.clip(a, -1.0, 1.0)
    for i in range(0, a.shape[1], _AAC_FRAME):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(a[:, i:i + _AAC_FRAME]), format="fltp", layout=layout)
        frame.sample_rate = int(sample_rate)
        frame.pts = i
        for pkt in stream.encode(frame):
            container.mux(pkt)
    for pkt in stream.encode(None):
        container.mux(pkt)


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
                preset: str = "veryfast", gop: int | None = None, audio_bitrate: int | None = None) -> None:
    """Write uint8 RGB ``[T, H, W, 3]`` frames as an H.264 yuv420p mp4 (``+faststart``), atomically.

    Optional `audio` float ``[C, N]`` (C = 1 or 2) at `sample_rate` is encoded as AAC. `gop` is the keyframe
    interval (default: 2 seconds of frames); `crf` / `preset` go to libx264. Raises `MediaWriteError` on bad input
    and `MediaError` when FFmpeg fails (nothing is left at `path` then).
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
            As = _add_aac(container, sample_rate, a.shape[0], audio_bitrate) if a is not None else None
            for i in range(v.shape[0]):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(v[i]), format="rgb24")
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
                bit_rate: int | None = None) -> None:
    """Write float ``[C, N]`` audio (C = 1 or 2) as AAC in an audio-only mp4 container (``.m4a``), atomically."""
    a = _check_audio(audio, sample_rate)
    with _atomic_media_path(path) as tmp, _ffmpeg_errors(f"writing {path}"):
        container = av.open(tmp, mode="w", format="mp4")
        try:
            _encode_audio(container, _add_aac(container, sample_rate, a.shape[0], bit_rate), a, sample_rate)
        finally:
            container.close()


def mux_audio(video_path: PathLike, audio: torch.Tensor | np.ndarray, sample_rate: int, out_path: PathLike, *,
              trim_audio: bool = True, crf: int = 18, preset: str = "veryfast") -> None:
    """Write `out_path`: the video of `video_path` plus `audio` (float ``[C, N]``) as AAC, in an mp4, atomically.

    An H.264 video stream is copied packet by packet (no quality loss); any other codec is re-encoded to H.264
    yuv420p at its average frame rate (frame ``i`` at ``i / fps``; 25 fps, with a warning, when it has none).
    The source's own audio is dropped. With `trim_audio`, audio longer than the video is cut to the video's
    duration. Raises `NoVideoStreamError` when `video_path` has no video, `MediaError` when FFmpeg fails.
    """
    a = _check_audio(audio, sample_rate)
    if Path(video_path).resolve() == Path(out_path).resolve():
        raise MediaWriteError(f"mux_audio cannot overwrite its input {video_path}; choose another out_path")
    src = open_media(video_path)
    try:
        if not src.streams.video:
            raise NoVideoStreamError(f"{video_path}: no video stream to mux audio onto")
        vin = src.streams.video[0]
        if trim_audio and vin.duration:
            max_n = int(round(float(vin.duration * vin.time_base) * sample_rate))
            a = a[:, :max_n]
        with _atomic_media_path(out_path) as tmp:
            out = av.open(tmp, mode="w", format="mp4", options={"movflags": "+faststart"})
            try:
                if vin.codec_context.name == "h264":
                    vout = out.add_stream_from_template(vin)
                    As = _add_aac(out, sample_rate, a.shape[0], None)
                    for pkt in src.demux(vin):
                        if pkt.dts is None:
                            continue
                        pkt.stream = vout
                        out.mux(pkt)
                else:
                    src_rate = vin.average_rate or vin.guessed_rate
                    if not src_rate:
                        log.warning("%s: the video stream has no frame rate; re-encoding at 25 fps", video_path)
                    rate = as_rate(src_rate or 25)
                    vout = _add_h264(out, rate, vin.codec_context.width, vin.codec_context.height, crf, preset, None)
                    As = _add_aac(out, sample_rate, a.shape[0], None)
                    for i, frame in enumerate(src.decode(vin)):
                        f = frame.reformat(format="yuv420p")
                        f.pts, f.time_base = i, 1 / rate  # frame-index timestamps
                        for pkt in vout.encode(f):
                            out.mux(pkt)
                    for pkt in vout.encode(None):
                        out.mux(pkt)
                _encode_audio(out, As, a, sample_rate)
            finally:
                out.close()
    except av.error.FFmpegError as e:
        raise MediaError(f"muxing audio onto {video_path} failed: {e}") from e
    finally:
        src.close()
