"""Opening media files with typed errors, and `probe` (stream facts without decoding the file)."""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av

from visualsound.media.errors import (
    MediaError,
    MediaWindowError,
    MissingFileError,
    NoAudioStreamError,
    NotMediaError,
    NoVideoStreamError,
    TruncatedMediaError,
)

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

# ISO base media (mp4/mov/m4a) top-level box types; a file whose first box is one of these is "media".
_ISO_TOP_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp", b"sidx",
                  b"moof", b"mfra", b"meta", b"pdin", b"prft", b"emsg"}
# Magic numbers of other containers: used only to tell "truncated media" from "not media" when FFmpeg fails.
_MAGICS = (b"RIFF", b"\x1aE\xdf\xa3", b"OggS", b"fLaC", b"ID3", b"FLV", b"\xff\xf1", b"\xff\xf9", b"\xff\xfb")


@dataclass(frozen=True)
class MediaInfo:
    """What `probe` reports about a file. Fields of a missing stream are ``None``.

    `rotation` is the display rotation stored in the container (display matrix), in degrees counter-clockwise,
    one of 0/90/180/270 (FFmpeg/PyAV convention; a phone portrait clip usually reports 270). `duration` is the
    container duration in seconds (else the video stream's, else the audio stream's). `num_samples` excludes the
    AAC priming samples and the end padding: where the stream stores its duration (mp4 / m4a / mov edit lists,
    WAV), ``read_audio(..., trim_padding=True)`` returns exactly this many samples; where it does not (Matroska /
    WebM, MPEG-TS) it is only estimated from the container duration (it can differ from the decoded count by
    a codec frame or more), and `read_audio` returns every decoded sample.
    """

    path: str
    format: str
    duration: float
    has_video: bool
    has_audio: bool
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    rotation: int | None = None
    video_codec: str | None = None
    video_start: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    num_samples: int | None = None
    audio_codec: str | None = None
    audio_start: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Every field as a JSON-ready dict."""
        return asdict(self)


def _check_iso_boxes(path: Path, size: int) -> None:
    """Walk the top-level boxes of an mp4/mov file; a box running past the end of the file means truncation."""
    with open(path, "rb") as f:
        pos = 0
        while pos + 8 <= size:
            f.seek(pos)
            hdr = f.read(16)
            box_size, box_type = struct.unpack(">I4s", hdr[:8])
            if box_size == 1:
                if len(hdr) < 16:
                    raise TruncatedMediaError(f"{path}: truncated mp4 box header at byte {pos}")
                box_size = struct.unpack(">Q", hdr[8:16])[0]
            elif box_size == 0:  # box extends to the end of the file
                return
            if box_size < 8:
                raise TruncatedMediaError(f"{path}: corrupt mp4 box {box_type!r} of size {box_size} at byte {pos}")
            if pos + box_size > size:
                raise TruncatedMediaError(
                    f"{path}: truncated mp4: box {box_type.decode('latin-1')!r} at byte {pos} needs "
                    f"{box_size} bytes but the file ends at {size}")
            pos += box_size


def open_media(path: PathLike) -> av.container.InputContainer:
    """Open `path` for reading with PyAV, turning every failure into a specific `MediaError`.

    Raises `MissingFileError` (no such file), `NotMediaError` (empty, not a media file, or no audio/video stream)
    and `TruncatedMediaError` (mp4 boxes past the end of the file, or FFmpeg fails on a file with a media magic).
    """
    p = Path(path)
    if not p.exists():
        raise MissingFileError(f"no such file: {p}")
    if not p.is_file():
        raise MissingFileError(f"not a regular file: {p}")
    size = p.stat().st_size
    if size == 0:
        raise NotMediaError(f"{p}: empty file")
    with open(p, "rb") as f:
        head = f.read(16)
    is_iso = len(head) >= 8 and head[4:8] in _ISO_TOP_BOXES
    if is_iso:
        _check_iso_boxes(p, size)
    try:
        container = av.open(str(p), mode="r")
    except av.error.FFmpegError as e:
        if is_iso or head.startswith(_MAGICS):
            raise TruncatedMediaError(f"{p}: looks like media but FFmpeg cannot open it (truncated?): {e}") from e
        raise NotMediaError(f"{p}: not a media file FFmpeg can read: {e}") from e
    if not container.streams.video and not container.streams.audio:
        container.close()
        raise NotMediaError(f"{p}: no audio or video stream (format {container.format.name})")
    return container


def check_window(start: float, duration: float | None) -> None:
    """Raise `MediaWindowError` unless ``start >= 0`` and `duration` is None or > 0 (seconds)."""
    if start < 0:
        raise MediaWindowError(f"start must be >= 0, got {start}")
    if duration is not None and duration <= 0:
        raise MediaWindowError(f"duration must be > 0 or None, got {duration}")


def stream_time(stream: av.stream.Stream, pts: int | None) -> float:
    """Seconds of a pts in `stream`'s time base (``None`` pts counts as 0)."""
    return float((pts or 0) * stream.time_base)


def display_rotation(frame: av.VideoFrame) -> int:
    """The frame's display rotation in degrees counter-clockwise, normalised to 0/90/180/270."""
    return int(round(frame.rotation / 90.0)) % 4 * 90


def probe(path: PathLike, require_video: bool = False, require_audio: bool = False) -> MediaInfo:
    """Report container, video and audio facts of `path` (decodes one video frame to read the rotation).

    Raises `NoVideoStreamError` / `NoAudioStreamError` when `require_video` / `require_audio` and the stream is
    missing, and the errors of `open_media`.
    """
    container = open_media(path)
    try:
        info: dict[str, Any] = {"path": str(path), "format": container.format.name,
                                "has_video": bool(container.streams.video),
                                "has_audio": bool(container.streams.audio)}
        durations = []
        if container.duration is not None:
            durations.append(container.duration / av.time_base)
        if container.streams.video:
            v = container.streams.video[0]
            rate = v.average_rate or v.guessed_rate or v.base_rate
            vdur = stream_time(v, v.duration) if v.duration else None
            num_frames = v.frames
            if not num_frames:  # container without a frame count (mkv, webm, ts): count packets, no decoding
                num_frames = sum(1 for pkt in container.demux(v) if pkt.size)
                container.seek(0)
            try:
                first = next(container.decode(v), None)
            except av.error.FFmpegError as e:
                raise TruncatedMediaError(f"{path}: cannot decode the first video frame: {e}") from e
            if first is None:
                raise TruncatedMediaError(f"{path}: video stream has no decodable frame")
            info.update(fps=float(rate) if rate else None, width=v.codec_context.width,
                        height=v.codec_context.height, num_frames=int(num_frames),
                        rotation=display_rotation(first), video_codec=v.codec_context.name,
                        video_start=stream_time(v, v.start_time))
            if vdur:
                durations.append(vdur)
        if container.streams.audio:
            a = container.streams.audio[0]
            sr = a.codec_context.sample_rate
            if a.duration:
                num_samples = int(round(stream_time(a, a.duration) * sr))
                durations.append(stream_time(a, a.duration))
            else:
                num_samples = int(round(max(durations, default=0.0) * sr))
            info.update(sample_rate=int(sr), channels=int(a.codec_context.channels), num_samples=num_samples,
                        audio_codec=a.codec_context.name, audio_start=stream_time(a, a.start_time))
        info["duration"] = float(durations[0] if durations else 0.0)
    except av.error.FFmpegError as e:
        raise MediaError(f"{path}: probing failed: {e}") from e
    finally:
        container.close()
    result = MediaInfo(**info)
    if require_video and not result.has_video:
        raise NoVideoStreamError(f"{path}: no video stream")
    if require_audio and not result.has_audio:
        raise NoAudioStreamError(f"{path}: no audio stream")
    return result
