"""Typed media errors: every failure to read or write a media file raises one of these (all are `ToolkitError`s,
so the CLIs print them as a one-line error)."""

from __future__ import annotations

from visualsound.errors import ToolkitError


class MediaError(ToolkitError):
    """A media file cannot be read or written."""


class MissingFileError(MediaError, FileNotFoundError):
    """The path does not exist or is not a regular file."""


class NotMediaError(MediaError):
    """The file is not a media file FFmpeg can open (e.g. a text file renamed ``.mp4``, an empty file)."""


class TruncatedMediaError(MediaError):
    """The file looks like media but is cut short or corrupt (missing ``moov`` box, box sizes past the end of the
    file, undecodable packets)."""


class NoVideoStreamError(MediaError):
    """Video was required but the file has no video stream."""


class NoAudioStreamError(MediaError):
    """Audio was required but the file has no audio stream."""


class MediaWindowError(MediaError, ValueError):
    """A requested time window is invalid (negative start or duration, or it starts after the stream ends)."""


class MediaWriteError(MediaError, ValueError):
    """Data handed to a writer has the wrong shape, dtype or size (e.g. odd frame size for H.264 yuv420p)."""


class TimestampJumpError(MediaError):
    """A stream's timestamps jump back mid-file (MPEG-TS recordings joined with ``cat``, a camera's clock reset):
    the file's timeline is ambiguous, so reading it would silently lose or misplace its later part."""


class ChainedOggError(TimestampJumpError):
    """A chained Ogg file: several Ogg streams ("links") one after another, as ``cat a.opus b.opus > c.opus`` or an
    Internet radio dump writes them. Each link's clock starts again at 0, and a link may bring other streams or
    another sample rate or channel count, on which FFmpeg's decoding fails: the file has no single timeline, so
    it is refused as a whole, by `visualsound.media.info.open_media` (every reader and `probe`)."""


class AudioFormatChangeError(MediaError):
    """The audio stream's channel count or sample rate changes within the stream (e.g. MPEG-TS recordings of a
    2.0 and a 5.1 broadcast joined into one file): the readers neither mix channels nor resample within a stream,
    so such a file cannot be read as one ``[C, N]`` signal."""
