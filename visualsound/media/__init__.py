"""Media I/O on PyAV: `probe`, windowed `read_video` / `read_audio`, resize/crop helpers, `write_wav`,
`write_audio` (AAC .m4a), `write_video`, `write_preview`, `copy_window` and `mux_audio`, with typed `MediaError`
subclasses.

Conventions: video is uint8 ``[T, H, W, 3]`` RGB; audio is float32 ``[C, N]`` in [-1, 1] with its sample rate
carried next to it. The frame-selection rule, AAC priming/padding handling and rotation behaviour are documented in
`visualsound.media.video` and `visualsound.media.audio`.
"""

from visualsound.media.audio import read_audio, read_audio_with_rate, write_wav
from visualsound.media.errors import (
    AudioFormatChangeError,
    ChainedOggError,
    MediaError,
    MediaWindowError,
    MediaWriteError,
    MissingFileError,
    NoAudioStreamError,
    NotMediaError,
    NoVideoStreamError,
    TimestampJumpError,
    TruncatedMediaError,
)
from visualsound.media.fps_filter import FpsFilter, FpsFilterError, FpsFrames, read_fps_frames, read_fps_video
from visualsound.media.info import MediaInfo, open_media, probe
from visualsound.media.video import center_crop, iter_video_window, read_video, resize_short_side
from visualsound.media.write import NotCopyable, copy_window, mux_audio, write_audio, write_preview, write_video

__all__ = [
    "AudioFormatChangeError",
    "MediaError", "MediaInfo", "MediaWindowError", "MediaWriteError", "MissingFileError", "NoAudioStreamError",
    "NoVideoStreamError", "NotMediaError", "TruncatedMediaError", "center_crop", "mux_audio", "open_media", "probe",
    "iter_video_window", "read_audio", "read_audio_with_rate", "read_video", "resize_short_side", "write_audio",
    "write_preview", "write_video", "write_wav",
]
__all__ += ["NotCopyable", "copy_window"]  # write.py: the report's fast path
__all__ += ["TimestampJumpError"]  # errors.py: a stream whose timestamps go back mid-file
__all__ += ["ChainedOggError"]  # errors.py: Ogg streams one after another (a TimestampJumpError)
__all__ += ["FpsFilter", "FpsFilterError", "FpsFrames", "read_fps_frames", "read_fps_video"]  # fps_filter.py
