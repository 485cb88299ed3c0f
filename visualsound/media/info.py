"""Opening media files with typed errors, the one choice of a file's video stream (`video_stream`: the first video
stream that is not a cover picture) and of its audio stream (`audio_stream`: the first one flagged default, as
players choose, else the first), and `probe` (stream facts without decoding the file)."""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from visualsound.media.errors import (
    ChainedOggError,
    MediaError,
    MediaWindowError,
    MissingFileError,
    NoAudioStreamError,
    NotMediaError,
    NoVideoStreamError,
    TimestampJumpError,
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
    one of 0/90/180/270 (FFmpeg/PyAV convention; a phone portrait clip usually reports 270).

    `duration` (seconds) follows one rule (`duration_source` says which branch applied):

    * ``"header"``: the file's header states the video's frame count and a positive duration (mp4, mov, m4a, avi,
      asf, ...; an audio-only file: a positive container and audio duration, except in MPEG program / transport
      streams, whose durations FFmpeg guesses): the container's duration (else the video stream's, else the audio
      stream's) is used as is;
    * ``"packets"``: otherwise (Matroska / WebM, Ogg, MPEG program / transport streams, FLV, elementary streams,
      a header without a frame count or with a missing or zero duration) every packet is read (not decoded) and
      the duration is the span of the packet timestamps across streams: the earliest pts to the latest
      ``pts + duration``. A stream whose packets carry no timestamps (raw H.264, some elementary streams)
      counts ``1 / fps`` per video packet. The container's own estimate (a bit-rate guess in MPEG streams; an
      MPEG-1 elementary stream of 4 s reports 0.0006 s) is not used then; it is logged when it differs.

    `num_frames` is the number of frames that play: the header's frame count, else the number of video packets, less
    the packets flagged discard (an mp4 edit list that starts after the first keyframe, as ``ffmpeg -ss T -c copy``
    writes: decoders decode those packets for reference and drop their frames). `num_samples`: in mp4 / m4a / mov
    the edit list's duration (`edit_list_samples`: the AAC priming samples and end padding excluded), exactly what
    ``read_audio(..., trim_padding=True)`` returns when the audio starts with the file (a later start adds that
    many samples of silence first); elsewhere `read_audio` returns every decoded sample and
    `num_samples` estimates their count without decoding: the audio packets' span times the sample rate where the
    packets were read (Matroska / WebM, FLV, MPEG-TS: the decoded count there, or a codec frame or so off when the
    decoder drops or delays samples), else the header's audio duration (WAV, AVI, ASF, MP3, Ogg; exact for PCM).
    `timestamps` is False for a video stream without packet timestamps (such files cannot be sought in; readers
    decode them from the start). `video_start` / `video_duration` are the video stream's own span (first frame time;
    first frame to the end of the last frame, by the same rule as `duration`), which can differ from the container's
    when the audio starts earlier or lasts longer; a video stream of one frame (a still picture with sound) lasts
    to the end of the file, as players show it and `read_video` reads it. `cover_picture` says the file holds
    cover art (FFmpeg's ``attached_pic`` streams: an mp3 / m4a / Ogg picture), which is never counted as video: an
    audio file with cover art has ``has_video=False`` and ``cover_picture=True``.

    The audio fields describe the stream `audio_stream` picks (the one flagged default, else the first), which
    every reader reads.

    `sample_aspect_ratio` is the video's pixel aspect ratio as ``"num:den"`` (`sample_aspect`: the container's,
    else the bitstream's; ``"1:1"`` when neither states one): a pixel is shown ``num / den`` times as wide as it
    is tall, so the picture is shown ``width * num / den`` wide and `height` tall (before `rotation`); a PAL DVD
    720x576 at ``"64:45"`` is shown 16:9.

    Times: `video_start` and `audio_start` are stream times (seconds of the streams' own timestamps). `start` is
    the file's start (`file_start`: the earliest first timestamp of its streams, FFmpeg's start time), the 0 of
    every window the readers take (``read_video(path, start=s)`` and ``read_audio(path, start=s)`` both begin at
    stream time ``start + s``): an MPEG-TS recording whose streams begin at 1.4 s, or an mp4 whose audio begins
    0.5 s after its video, is read with picture and sound where they play together.
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
    duration_source: str = "header"
    timestamps: bool = True
    video_duration: float | None = None
    start: float = 0.0
    cover_picture: bool = False
    sample_aspect_ratio: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Every field as a JSON-ready dict."""
        return asdict(self)


# ---------------------------------------------------------------------------------------------- FFmpeg errors
_RAW_ERRNO = re.compile(r"^\[Errno -?\d+\]\s*")
_UNDEFINED = re.compile(r"Error number (-?\d+) occurred")
_ERRNO_WORDS = {
    errno.EPERM: "the operation is not possible on this file (FFmpeg cannot seek in a stream without timestamps "
                 "or an index)",
    errno.ENOSYS: "the operation is not supported by this container",
    errno.EACCES: "permission denied",
    errno.ENOENT: "no such file",
    errno.ENOMEM: "out of memory",
    errno.EIO: "input/output error",
    errno.ENOSPC: "no space left on the device",
    errno.EINVAL: "invalid argument (a codec or container setting FFmpeg refuses)",
}


def ffmpeg_reason(e: BaseException) -> str:
    """Plain words for an FFmpeg (PyAV) failure, never a raw errno: ``InvalidDataError`` -> "invalid data
    (corrupt or unsupported)", ``EOFError`` -> "unexpected end of file", an undefined code (e.g. a decoder's own
    error) -> "undecodable data (FFmpeg error code N)", an OS errno -> its meaning in media terms
    (``EPERM`` from a seek: no timestamps to seek by)."""
    if isinstance(e, av.error.InvalidDataError):
        return "invalid data (corrupt or unsupported)"
    if isinstance(e, av.error.EOFError):
        return "unexpected end of file"
    code = getattr(e, "errno", None)
    if isinstance(code, int) and code in _ERRNO_WORDS:
        return _ERRNO_WORDS[code]
    text = getattr(e, "strerror", None) or str(e)
    text = _RAW_ERRNO.sub("", str(text)).strip()
    m = _UNDEFINED.search(text)
    if m:
        return f"undecodable data (FFmpeg error code {m.group(1)})"
    return text or type(e).__name__


def media_error(path: PathLike, what: str, e: BaseException, cls: type[MediaError] = MediaError) -> MediaError:
    """A `cls` (default `MediaError`) saying ``"{path}: {what}: {plain reason}"`` for an FFmpeg failure `e`
    (see `ffmpeg_reason`); chain it with ``raise ... from e``."""
    return cls(f"{path}: {what}: {ffmpeg_reason(e)}")


# ------------------------------------------------------------------------------------ tolerant decoding
@dataclass
class DecodeReport:
    """Packets a reader skipped because the decoder rejected them, as FFmpeg's own tools skip them (one bad AC-3
    packet in an AVI must not lose the other 11 s). Pass one to a reader to learn what it skipped; every skip is
    also logged as a warning. `bad_packets` counts per stream type (``"video"`` / ``"audio"``); `examples` keeps
    the first few reasons."""

    bad_packets: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    _seen: set = field(default_factory=set, repr=False)  # (kind, pts): a packet decoded twice counts once

    @property
    def total(self) -> int:
        """Bad packets of every stream."""
        return sum(self.bad_packets.values())

    def add(self, path: PathLike, kind: str, pts_seconds: float | None, e: BaseException) -> None:
        """Count one skipped packet of stream type `kind` and log it (once per packet timestamp)."""
        if pts_seconds is not None:
            if (kind, pts_seconds) in self._seen:
                return
            self._seen.add((kind, pts_seconds))
        self.bad_packets[kind] = self.bad_packets.get(kind, 0) + 1
        where = "?" if pts_seconds is None else f"{pts_seconds:.3f} s"
        msg = f"{kind} packet at {where}: {ffmpeg_reason(e)}"
        if len(self.examples) < 5:
            self.examples.append(msg)
        log.warning("%s: skipped an undecodable %s", path, msg)

    def merge(self, other: DecodeReport) -> None:
        """Add `other`'s counts and examples to this report."""
        for k, n in other.bad_packets.items():
            self.bad_packets[k] = self.bad_packets.get(k, 0) + n
        self._seen |= other._seen
        self.examples.extend(other.examples[:max(0, 5 - len(self.examples))])

    def to_dict(self) -> dict[str, Any]:
        """``{"bad_packets": {...}, "examples": [...]}``."""
        return {"bad_packets": dict(self.bad_packets), "examples": list(self.examples)}


def decode_tolerant(container: av.container.InputContainer, stream: av.stream.Stream, path: PathLike,
                    report: DecodeReport | None = None, packets: Iterable[av.Packet] | None = None
                    ) -> Iterator[Any]:
    """Decoded frames of `stream`, like ``container.decode(stream)``, except that a packet the decoder rejects
    is skipped, counted in `report` and logged (FFmpeg's command-line tools do the same). `packets` (default
    ``container.demux(stream)``) lets a caller look at the packets on their way. Demuxing errors propagate (the
    container itself is damaged there). Raises `TruncatedMediaError` when packets were rejected and not a
    single frame decoded."""
    report = report if report is not None else DecodeReport()
    kind = stream.type
    bad = 0
    good = False
    for pkt in container.demux(stream) if packets is None else packets:
        try:
            frames = pkt.decode()
        except (av.error.EOFError, av.error.ExitError):
            raise
        except av.error.FFmpegError as e:
            bad += 1
            report.add(path, kind, None if pkt.pts is None else float(pkt.pts * stream.time_base), e)
            continue
        for frame in frames:
            good = True
            yield frame
    if bad and not good:
        raise TruncatedMediaError(f"{path}: no {kind} packet decodes ({bad} rejected by the decoder; first: "
                                  f"{report.examples[0] if report.examples else '?'})")


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


_OGG_PAGE = struct.Struct("<4sBBqIIIB")  # "OggS", version, flags, granule, serial, sequence, CRC, segment count
_OGG_BOS = 0x02  # a page flag: the first page of a logical stream


def ogg_links(path: PathLike) -> list[int]:
    """Where the links of an Ogg file begin (byte offsets): ``[0]`` for a plain Ogg file, one more for each further
    link of a chained one (several Ogg streams one after another, as ``cat a.opus b.opus`` writes). Every logical
    stream begins with a page flagged "beginning of stream", and all of a link's begin before its first data page
    (RFC 3533), so such a page after a data page starts a new link. Only the page headers are read; a stretch
    that is not a page (damage) is skipped to the next ``OggS``, as demuxers resynchronise."""
    links: list[int] = []
    after_data = True  # the file's first "beginning of stream" page starts its first link
    with open(path, "rb") as f:
        pos = 0
        while True:
            f.seek(pos)
            hdr = f.read(_OGG_PAGE.size)
            if len(hdr) < _OGG_PAGE.size:
                break
            magic, version, flags, _, _, _, _, segments = _OGG_PAGE.unpack(hdr)
            if magic != b"OggS" or version != 0:
                f.seek(pos + 1)
                found = _find_bytes(f, b"OggS")
                if found is None:
                    break
                pos = found
                continue
            lacing = f.read(segments)
            if len(lacing) < segments:
                break
            if flags & _OGG_BOS:
                if after_data:
                    links.append(pos)
                after_data = False
            else:
                after_data = True
            pos += _OGG_PAGE.size + segments + sum(lacing)
    return links


def _find_bytes(f: Any, needle: bytes, chunk: int = 1 << 16) -> int | None:
    """The offset of the next `needle` in file `f` from its current position, else None."""
    pos = f.tell()
    tail = b""
    while True:
        data = f.read(chunk)
        if not data:
            return None
        i = (tail + data).find(needle)
        if i >= 0:
            return pos - len(tail) + i
        pos += len(data)
        tail = (tail + data)[-(len(needle) - 1):]


def chained_ogg_error(path: PathLike, links: list[int]) -> ChainedOggError:
    """The refusal of a chained Ogg file whose links begin at the byte offsets `links` (`ogg_links`)."""
    at = ", ".join(map(str, links[:6])) + (", ..." if len(links) > 6 else "")
    return ChainedOggError(
        f"{path}: a chained Ogg file: {len(links)} Ogg streams one after another (files joined with `cat`), "
        f"beginning at bytes {at}; each starts its clock again at 0 and may bring other streams or another audio "
        "format, so the file has no single timeline. Re-encode it as one stream: `ffmpeg -i IN -c:a libopus "
        "OUT.opus` (audio parts of one format), or cut it into its parts at those bytes (the first: `head -c "
        f"{links[1]} IN > PART1{Path(path).suffix or '.ogg'}`) and use them")


def _open_pcm_wav(path: Path) -> av.container.InputContainer | None:
    """A PCM WAV opened without FFmpeg's default probing (which reads about 2 MB of it: ~20 ms a file, most of a
    short clip's reading time; the WAV header states everything PCM needs); None for anything else (compressed
    WAV, a header FFmpeg rejects), which `open_media` then opens the usual way."""
    try:
        container = av.open(str(path), mode="r", format="wav", options={"probesize": "4096", "analyzeduration": "0"})
    except av.error.FFmpegError as e:
        log.debug("%s: the quick WAV open failed (%s); probing it fully", path, ffmpeg_reason(e))
        return None
    a = container.streams.audio
    if len(container.streams) == 1 and a and a[0].codec_context.name.startswith("pcm_") and a[0].rate:
        return container
    container.close()
    return None


def open_media(path: PathLike) -> av.container.InputContainer:
    """Open `path` for reading with PyAV, turning every failure into a specific `MediaError`.

    Raises `MissingFileError` (no such file), `NotMediaError` (empty, not a media file, or no audio/video stream:
    a cover picture alone is not video, see `is_cover_picture`), `TruncatedMediaError` (mp4 boxes past the end
    of the file, or FFmpeg fails on a file with a media magic) and `ChainedOggError` (a chained Ogg file:
    `ogg_links`), so every reader and `probe` refuse such a file alike.
    """
    p = Path(path)
    if not p.exists():
        raise MissingFileError(f"no such file: {p}")
    if not p.is_file():
        raise MissingFileError(f"not a regular file: {p}")
    try:
        size = p.stat().st_size
        if size == 0:
            raise NotMediaError(f"{p}: empty file")
        with open(p, "rb") as f:
            head = f.read(16)
        is_iso = len(head) >= 8 and head[4:8] in _ISO_TOP_BOXES
        if is_iso:
            _check_iso_boxes(p, size)
        links = ogg_links(p) if head[:4] == b"OggS" else []  # FFmpeg detects Ogg by this magic at byte 0
    except OSError as e:  # permission denied, I/O error, ...: still a file-level MediaError
        raise MediaError(f"{p}: cannot read the file: {e.strerror or e}") from e
    if len(links) > 1:
        raise chained_ogg_error(p, links)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        container = _open_pcm_wav(p)
        if container is not None:
            return container
    try:
        container = av.open(str(p), mode="r")
    except av.error.FFmpegError as e:
        if is_iso or head.startswith(_MAGICS):
            raise TruncatedMediaError(f"{p}: looks like media but FFmpeg cannot open it (truncated?): "
                                      f"{ffmpeg_reason(e)}") from e
        raise NotMediaError(f"{p}: not a media file FFmpeg can read: {ffmpeg_reason(e)}") from e
    if container.format.name == "tty":  # FFmpeg renders a .txt / .nfo / .ans file as ANSI art "video"
        container.close()
        raise NotMediaError(f"{p}: a text file (FFmpeg would draw its characters as a picture), not media")
    if not video_streams(container) and not container.streams.audio:
        cover = ", only a cover picture" if container.streams.video else ""
        container.close()
        raise NotMediaError(f"{p}: no audio or video stream (format {container.format.name}{cover})")
    return container


# ------------------------------------------------------------------------------------ choosing the video stream
def is_cover_picture(stream: av.stream.Stream) -> bool:
    """True for a stream with FFmpeg's ``attached_pic`` disposition: cover art (an mp3's ID3 picture, an m4a's
    ``covr``, an Ogg / FLAC ``METADATA_BLOCK_PICTURE``, a Matroska image attachment), which FFmpeg lists as a
    video stream of one still picture, not video."""
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def video_streams(container: av.container.InputContainer) -> list[av.video.stream.VideoStream]:
    """The container's video streams that are video: cover pictures (`is_cover_picture`) left out, file order."""
    return [s for s in container.streams.video if not is_cover_picture(s)]


def no_video_error(container: av.container.InputContainer, path: PathLike) -> NoVideoStreamError:
    """The `NoVideoStreamError` for a file without a video stream: ``"{path}: no video stream"``, plus
    ``" (only a cover picture)"`` when its only video streams are cover art."""
    cover = " (only a cover picture)" if container.streams.video else ""
    return NoVideoStreamError(f"{path}: no video stream{cover}")


def video_stream(container: av.container.InputContainer, path: PathLike) -> av.video.stream.VideoStream:
    """The video stream every reader and writer of the toolkit uses: the first one that is not a cover picture
    (`video_streams`; a cover may be listed before the video). Raises `NoVideoStreamError` (`no_video_error`)."""
    streams = video_streams(container)
    if not streams:
        raise no_video_error(container, path)
    return streams[0]


def audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream | None:
    """The audio stream every reader of the toolkit uses, the one a player plays: the first audio stream flagged
    default (FFmpeg's ``default`` disposition: the mp4 track that is enabled, Matroska's FlagDefault), else the
    first one; None without audio. A file with a commentary or second-language track listed before the main one
    (flagged default) is read from the main one, as players and ``ffmpeg -i`` pick it."""
    streams = list(container.streams.audio)
    if not streams:
        return None
    return next((s for s in streams if s.disposition & av.stream.Disposition.default), streams[0])


def check_window(start: float, duration: float | None) -> None:
    """Raise `MediaWindowError` unless ``start >= 0`` and `duration` is None or > 0 (seconds)."""
    if start < 0:
        raise MediaWindowError(f"start must be >= 0, got {start}")
    if duration is not None and duration <= 0:
        raise MediaWindowError(f"duration must be > 0 or None, got {duration}")


def file_start(container: av.container.InputContainer) -> float:
    """The stream time (seconds) that windows count from: the file's start time as FFmpeg states it (the earliest
    first timestamp of its streams; what ``ffmpeg -ss`` and players count from), 0 when it is unknown."""
    start = container.start_time
    return float(start) / av.time_base if start is not None else 0.0


def stream_time(stream: av.stream.Stream, pts: int | None) -> float:
    """Seconds of a pts in `stream`'s time base (``None`` pts counts as 0)."""
    return float((pts or 0) * stream.time_base)


def display_rotation(frame: av.VideoFrame) -> int:
    """The frame's display rotation in degrees counter-clockwise, normalised to 0/90/180/270."""
    return int(round(frame.rotation / 90.0)) % 4 * 90


def frame_rate(stream: av.video.stream.VideoStream) -> Fraction | None:
    """Frames per second of a video stream: its average rate, else FFmpeg's guessed rate, else its base rate (None
    when none is stated). An average rate that is only the inverse of the stream's time base, where the guessed
    rate differs, is a clock, not a frame rate, and is passed over: FFmpeg 8's raw DV demuxer states its 1/60000 s
    ticks as 60000 fps for 25 fps PAL DV."""
    avg, guessed = stream.average_rate, stream.guessed_rate
    if avg and guessed and stream.time_base and avg == 1 / stream.time_base and avg != guessed:
        log.debug("the average rate %s of a %s stream is its clock; using the guessed rate %s", avg,
                  stream.codec_context.name, guessed)
        avg = None
    return avg or guessed or stream.base_rate or None


def sample_aspect(stream: av.video.stream.VideoStream) -> Fraction | None:
    """The sample (pixel) aspect ratio of a video stream as FFmpeg guesses it: the container's (mp4 ``pasp``,
    Matroska display size, ...), else the bitstream's (H.264 VUI, MPEG-2 aspect code, ...); None when neither
    states one (square pixels). Older PyAV, whose stream ratio is the codec's, gives only the bitstream's."""
    for sar in (stream.sample_aspect_ratio, stream.codec_context.sample_aspect_ratio):
        if sar is not None and sar > 0:
            return Fraction(sar)
    return None


def exact_crop(stream: av.video.stream.VideoStream) -> None:
    """Make `stream`'s decoder (not yet opened) crop frames exactly to the picture. A picture cropped on its left
    (Theora's ``pic_x``, H.264's ``frame_crop_left_offset``) is otherwise cropped only to an aligned offset: a
    300-wide Theora picture at x = 2 decodes 302 wide, two columns of its coded border first."""
    ctx = stream.codec_context
    ctx.options = {**ctx.options, "flags": "+unaligned"}


# Containers whose durations FFmpeg estimates from a few timestamps or the bit rate (no header states them).
_GUESSED_DURATION_FORMATS = {"mpegts", "mpeg", "mpegtsraw"}


def _header_is_complete(container: av.container.InputContainer, v: av.video.stream.VideoStream | None,
                        a: av.audio.stream.AudioStream | None) -> bool:
    """True when the header states the frame count of the video stream `v` and a positive duration (mp4, mov,
    avi, ...; for an audio-only file: a positive duration and a duration of the audio stream `a`, outside MPEG
    program / transport streams)."""
    if container.duration is None or container.duration <= 0:
        return False
    if v is not None:
        return bool(v.frames)
    if _GUESSED_DURATION_FORMATS & set(container.format.name.split(",")):
        return False
    return a is not None and bool(a.duration)


TIMESTAMP_JUMP_SEC = 0.5  # a stream's times going back by more than this: `TimestampJumpError`


class ClockCheck:
    """The one test for recordings joined end to end: call it with a stream's times (seconds) in an order in
    which they never go back (decode times of packets, presentation times of decoded frames); it raises
    `TimestampJumpError` naming the jump and the remedy when one goes back by more than `TIMESTAMP_JUMP_SEC`."""

    def __init__(self, path: PathLike, stream: av.stream.Stream) -> None:
        self.path, self.stream, self.latest = path, stream, -math.inf

    def __call__(self, t: float) -> None:
        if t < self.latest - TIMESTAMP_JUMP_SEC:
            raise timestamp_jump_error(self.path, self.stream, (self.latest, t))
        self.latest = max(self.latest, t)


def timestamp_jump_error(path: PathLike, stream: av.stream.Stream, jump: tuple[float, float]
                         ) -> TimestampJumpError:
    """The refusal of a file whose `stream` goes back in time from ``jump[0]`` to ``jump[1]`` seconds."""
    return TimestampJumpError(
        f"{path}: the {stream.type} timestamps jump back from {jump[0]:.3f} s to {jump[1]:.3f} s (recordings "
        "joined end to end, or a clock reset), so the file has no single timeline; FFmpeg re-times such a stream "
        "when it copies it: `ffmpeg -i IN -c copy OUT.mp4`, then use OUT.mp4")


def edit_list_samples(container: av.container.InputContainer, stream: av.stream.Stream) -> int | None:
    """The number of samples an mp4 / m4a / mov header states for audio `stream` (its duration: the edit list's,
    which excludes the AAC priming samples and the end padding), else None. Other containers state no
    sample-exact audio duration (MPEG-TS: a guess from timestamps or the bit rate; ASF: milliseconds; Matroska,
    FLV: none), so nothing is trimmed by one."""
    sr = stream.codec_context.sample_rate
    if not stream.duration or not sr or "mov" not in container.format.name.split(","):
        return None
    return int(round(stream_time(stream, stream.duration) * sr))


def _packet_spans(container: av.container.InputContainer, streams: list, rate: float | None,
                  path: PathLike) -> dict[int, dict[str, Any]]:
    """Read every packet of `streams` (no decoding): per stream index ``{"count", "start", "end", "timed"}`` in
    seconds (``start`` / ``end`` None when no packet has a timestamp; ``count`` counts non-empty packets).
    Packets flagged discard (decoded for reference, never shown: those an mp4 edit list skips) are left out.
    Decode times that go back raise `TimestampJumpError` (`ClockCheck`)."""
    spans = {s.index: {"count": 0, "start": None, "end": None, "timed": 0} for s in streams}
    clocks = {s.index: ClockCheck(path, s) for s in streams}
    for pkt in container.demux(*streams):
        if not pkt.size or pkt.is_discard:
            continue
        sp = spans[pkt.stream.index]
        sp["count"] += 1
        ts = pkt.pts if pkt.pts is not None else pkt.dts
        if ts is None:
            continue
        tb = pkt.time_base or pkt.stream.time_base
        if pkt.dts is not None:  # decode times never go back (presentation times do, by B-frame reordering)
            clocks[pkt.stream.index](float(pkt.dts * tb))
        t0 = float(ts * tb)
        dur = float(pkt.duration * tb) if pkt.duration else (1.0 / rate if pkt.stream.type == "video" and rate
                                                            else 0.0)
        sp["timed"] += 1
        sp["start"] = t0 if sp["start"] is None else min(sp["start"], t0)
        sp["end"] = t0 + dur if sp["end"] is None else max(sp["end"], t0 + dur)
    return spans


def _first_frame(container: av.container.InputContainer, stream: av.stream.Stream, path: PathLike
                 ) -> tuple[Any, int]:
    """The first decodable frame of `stream` (undecodable packets before it are skipped and logged), and the
    number of packets flagged discard before it: the frames an mp4 edit list skips at the start (a file cut with
    ``-c copy`` between keyframes keeps the packets from the keyframe before the cut; decoders decode them for
    reference and drop their frames, which come before the first shown frame in presentation order)."""
    discarded = 0

    def counted() -> Iterator[av.Packet]:
        nonlocal discarded
        for pkt in container.demux(stream):
            discarded += bool(pkt.size and pkt.is_discard)
            yield pkt

    try:
        first = next(decode_tolerant(container, stream, path, packets=counted()), None)
    except av.error.FFmpegError as e:
        raise media_error(path, "cannot decode the first video frame", e, TruncatedMediaError) from e
    if first is None:
        raise TruncatedMediaError(f"{path}: video stream has no decodable frame")
    return first, discarded


def probe(path: PathLike, require_video: bool = False, require_audio: bool = False) -> MediaInfo:
    """Report container, video and audio facts of `path` (decodes one video frame to read the rotation; reads
    every packet, without decoding, when the header lacks a frame count or duration: see `MediaInfo`).

    The video is the stream `video_stream` picks: cover art (an mp3 / m4a / Ogg picture, FFmpeg's
    ``attached_pic`` streams) is not video, so such a file reports ``has_video=False``. Raises
    `NoVideoStreamError` / `NoAudioStreamError` when `require_video` / `require_audio` and the stream is missing
    (``"no video stream (only a cover picture)"`` for cover art alone), and the errors of `open_media`; every
    FFmpeg failure is a `MediaError` naming the file.
    """
    container = open_media(path)
    no_video = None
    try:
        videos = video_streams(container)
        if not videos:
            no_video = no_video_error(container, path)
        info: dict[str, Any] = {"path": str(path), "format": container.format.name,
                                "has_video": bool(videos), "has_audio": bool(container.streams.audio),
                                "cover_picture": any(is_cover_picture(s) for s in container.streams.video),
                                "start": file_start(container)}
        v = videos[0] if videos else None
        a = audio_stream(container)
        rate = frame_rate(v) if v is not None else None
        container_dur = container.duration / av.time_base if container.duration is not None else None
        spans = None
        if not _header_is_complete(container, v, a):
            spans = _packet_spans(container, [s for s in (v, a) if s is not None], float(rate) if rate else None,
                                  path)
            container.close()  # reopen instead of seeking back: files without timestamps cannot seek
            container = open_media(path)
            v = video_stream(container, path) if v is not None else None
            a = audio_stream(container) if a is not None else None
        timestamps = True
        ends, starts = [], []
        if v is not None:
            vdur = stream_time(v, v.duration) if v.duration else None
            video_span = vdur
            num_frames = v.frames
            video_start = stream_time(v, v.start_time) if v.start_time is not None else 0.0
            if spans is not None:
                sp = spans[v.index]
                num_frames = sp["count"] if not num_frames else num_frames
                timestamps = sp["timed"] > 0
                if timestamps:
                    starts.append(sp["start"])
                    ends.append(sp["end"])
                    video_start = sp["start"] if v.start_time is None else video_start
                    video_span = sp["end"] - sp["start"]
                elif rate:
                    starts.append(0.0)
                    ends.append(sp["count"] / float(rate))
                    video_span = sp["count"] / float(rate)
            first, discarded = _first_frame(container, v, path)
            if v.frames:  # the header counts the samples an edit list skips; the packet count leaves them out
                num_frames -= discarded
            info.update(fps=float(rate) if rate else None, width=v.codec_context.width,
                        height=v.codec_context.height, num_frames=int(num_frames),
                        rotation=display_rotation(first), video_codec=v.codec_context.name,
                        video_start=video_start, timestamps=timestamps, video_duration=video_span)
            sar = sample_aspect(v) or Fraction(1)
            info["sample_aspect_ratio"] = f"{sar.numerator}:{sar.denominator}"
        audio_span = None
        if a is not None:
            if spans is not None and spans[a.index]["timed"]:
                sp = spans[a.index]
                starts.append(sp["start"])
                ends.append(sp["end"])
                audio_span = sp["end"] - sp["start"]
            info.update(sample_rate=int(a.codec_context.sample_rate), channels=int(a.codec_context.channels),
                        audio_codec=a.codec_context.name,
                        audio_start=stream_time(a, a.start_time) if a.start_time is not None
                        else (spans[a.index]["start"] or 0.0) if spans is not None else 0.0)
        if spans is None:
            durations = [d for d in (container_dur, vdur if v is not None else None,
                                     stream_time(a, a.duration) if a is not None and a.duration else None) if d]
            duration = float(durations[0]) if durations else 0.0
            info["duration_source"] = "header"
        else:
            duration = max(ends) - min(starts) if ends else float(container_dur or 0.0)
            info["duration_source"] = "packets" if ends else "header"
            if container_dur is not None and ends and abs(container_dur - duration) > 0.1:
                log.info("%s: container states %.3f s, the packets span %.3f s: using the packets", path,
                         container_dur, duration)
        if a is not None:
            sr = info["sample_rate"]
            stated = edit_list_samples(container, a)
            if stated is not None:
                info["num_samples"] = stated
            else:
                if audio_span is not None:
                    n = audio_span
                elif a.duration and spans is None:
                    n = stream_time(a, a.duration)
                else:
                    n = duration
                info["num_samples"] = int(round(n * sr))
        info["duration"] = float(duration)
        if v is not None and not info.get("video_duration"):
            info["video_duration"] = float(duration)
        if v is not None and info["num_frames"] == 1:  # a still picture is shown while the file plays
            file_end = (min(starts) if starts else info["start"]) + duration
            info["video_duration"] = max(info["video_duration"], file_end - info["video_start"])
    except av.error.FFmpegError as e:
        raise media_error(path, "probing failed", e) from e
    finally:
        container.close()
    result = MediaInfo(**info)
    if require_video and no_video is not None:
        raise no_video
    if require_audio and not result.has_audio:
        raise NoAudioStreamError(f"{path}: no audio stream")
    return result
