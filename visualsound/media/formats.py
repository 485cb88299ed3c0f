"""The one list of video file extensions every folder walk of the toolkit uses (`VIDEO_EXTENSIONS`), and
`list_video_files`, which also returns the files it skipped so that callers can log and count them.

An extension only decides which files a folder walk picks up; whether a file is readable is decided by opening it
(`visualsound.media.probe`), so a listed file that turns out not to be media gets a recorded reason downstream.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

# Containers FFmpeg reads that people keep video in (lower case, with the dot). ``.ogg`` may hold audio only (with
# cover art, which is not video); such a file is listed and then refused with a reason ("no video stream", "no
# video stream (only a cover picture)") by whoever needs video.
VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4", ".m4v", ".mov", ".qt", ".3gp", ".3g2",  # ISO base media
    ".mkv", ".webm",  # Matroska
    ".avi", ".divx",
    ".mpg", ".mpeg", ".mpe", ".vob", ".mpv", ".m1v", ".m2v",  # MPEG program / elementary streams
    ".ts", ".m2ts", ".mts",  # MPEG transport streams
    ".ogv", ".ogg",
    ".flv", ".f4v",
    ".wmv", ".asf",
    ".mxf", ".dv", ".nut", ".y4m",
    ".h264", ".264", ".h265", ".265", ".hevc",  # raw elementary streams
)


def is_video_path(path: str | os.PathLike) -> bool:
    """True when `path`'s extension (case-insensitive) is one of `VIDEO_EXTENSIONS`."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass
class VideoListing:
    """What `list_video_files` found: `videos` (sorted) and `skipped` (files without a video extension, hidden
    files included, sorted)."""

    videos: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)

    def log_skipped(self, where: str | os.PathLike, logger: logging.Logger = log) -> None:
        """Log the skipped files (a warning with the count and the first few names)."""
        if self.skipped:
            names = ", ".join(p.name for p in self.skipped[:8])
            more = f", ... (+{len(self.skipped) - 8} more)" if len(self.skipped) > 8 else ""
            logger.warning("%s: skipped %d files without a video extension: %s%s (known extensions: %s)", where,
                           len(self.skipped), names, more, " ".join(VIDEO_EXTENSIONS))


def list_video_files(folder: str | os.PathLike, recursive: bool = False) -> VideoListing:
    """The video files of `folder` (sub-folders too with `recursive`) by `VIDEO_EXTENSIONS`, plus every other
    file as skipped. Folders are never listed as skipped."""
    root = Path(folder)
    out = VideoListing()
    paths = root.rglob("*") if recursive else root.iterdir()
    for p in sorted(paths):
        if not p.is_file():
            continue
        (out.videos if is_video_path(p) and not p.name.startswith(".") else out.skipped).append(p)
    return out
