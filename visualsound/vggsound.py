"""VGGSound index: read the official ``vggsound.csv``, name clips, and find them on disk.

``vggsound.csv`` has no header and four columns: ``youtube_id, start_seconds, label, split`` (``train`` /
``test``); labels may contain commas inside double quotes (``"bee, wasp, etc. buzzing"``).

Clip ids everywhere in the toolkit use V-AURA's format ``{ytid}_{start*1000}_{start*1000+10000}``
(`clip_id`), e.g. ``--56QUhyDQM_185000_195000``. YouTube ids may contain ``_`` and ``-``, so ids are parsed
from the right (`parse_clip_id`).

Files are found under a root folder with a file-name pattern: a Python format string over the fields
``ytid``, ``start`` (int seconds), ``start_ms``, ``end_ms``, ``label``, ``split`` and ``clip_id``; sub-folders
are allowed (``{split}/{ytid}_{start:06d}.mp4``). Named presets:

- ``vggsound``: ``{ytid}_{start:06d}.mp4`` (the layout of the public VGGSound download)
- ``vaura``: ``{ytid}_{start_ms}_{end_ms}.mp4`` (V-AURA / Synchformer re-encoded clips)

Without a csv, `index_folder` indexes a plain folder of videos: clip id = file stem (duplicate stems are
refused), every file with a `visualsound.media.formats.VIDEO_EXTENSIONS` extension, the others logged as skipped.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from visualsound.errors import ToolkitError

log = logging.getLogger(__name__)

CLIP_SECONDS = 10
SPLITS = ("train", "test")
CSV_COLUMNS = ("youtube_id", "start_seconds", "label", "split")
PATTERN_PRESETS: dict[str, str] = {
    "vggsound": "{ytid}_{start:06d}.mp4",
    "vaura": "{ytid}_{start_ms}_{end_ms}.mp4",
}


class VGGSoundIndexError(ToolkitError):
    """The VGGSound csv, a clip id or a file-name pattern is malformed."""


def clip_id(youtube_id: str, start_seconds: int | float) -> str:
    """V-AURA clip id ``{ytid}_{start*1000}_{start*1000+10000}`` (milliseconds, 10 s clips)."""
    start_ms = int(round(float(start_seconds) * 1000))
    return f"{youtube_id}_{start_ms}_{start_ms + CLIP_SECONDS * 1000}"


def parse_clip_id(cid: str) -> tuple[str, int]:
    """Inverse of `clip_id`: ``(youtube_id, start_seconds)``; accepts a trailing ``.mp4``."""
    stem = cid[:-4] if cid.endswith(".mp4") else cid
    parts = stem.rsplit("_", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2].isdigit():
        raise VGGSoundIndexError(f"{cid!r} is not a clip id of the form ytid_startms_endms")
    start_ms, end_ms = int(parts[1]), int(parts[2])
    if end_ms - start_ms != CLIP_SECONDS * 1000 or start_ms % 1000:
        raise VGGSoundIndexError(f"{cid!r}: expected whole-second start and a {CLIP_SECONDS} s window")
    return parts[0], start_ms // 1000


def read_vggsound_csv(path: str | os.PathLike) -> pd.DataFrame:
    """The official csv as a DataFrame with columns ``clip_id, youtube_id, start_seconds, label, split``.

    Raises `VGGSoundIndexError` for a missing or empty file, a wrong column count, a non-integer start, an
    unknown split or duplicates.
    """
    path = Path(path)
    if not path.is_file():
        raise VGGSoundIndexError(f"VGGSound csv not found: {path}")
    try:
        df = pd.read_csv(path, header=None, dtype=str, keep_default_na=False, skipinitialspace=False)
    except pd.errors.EmptyDataError as e:
        raise VGGSoundIndexError(f"{path}: the csv is empty") from e
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise VGGSoundIndexError(f"{path}: cannot parse as CSV: {e}") from e
    if df.shape[1] != len(CSV_COLUMNS):
        raise VGGSoundIndexError(f"{path}: expected {len(CSV_COLUMNS)} columns {CSV_COLUMNS}, found {df.shape[1]}"
                                 " (is there a header row or an unquoted comma in a label?)")
    df.columns = list(CSV_COLUMNS)
    bad_start = ~df["start_seconds"].str.fullmatch(r"\d+")
    if bad_start.any():
        i = int(bad_start.idxmax())
        raise VGGSoundIndexError(f"{path}: line {i + 1}: start {df.at[i, 'start_seconds']!r} is not whole seconds")
    df["start_seconds"] = df["start_seconds"].astype("int64")
    bad_split = ~df["split"].isin(SPLITS)
    if bad_split.any():
        i = int(bad_split.idxmax())
        raise VGGSoundIndexError(f"{path}: line {i + 1}: split {df.at[i, 'split']!r} is not one of {SPLITS}")
    df.insert(0, "clip_id", [clip_id(y, s) for y, s in zip(df["youtube_id"], df["start_seconds"])])
    dup = df["clip_id"].duplicated()
    if dup.any():
        raise VGGSoundIndexError(f"{path}: {int(dup.sum())} duplicated clips, e.g. {df.loc[dup, 'clip_id'].iloc[0]}")
    return df


def resolve_pattern(pattern: str) -> str:
    """A preset name (``vggsound``, ``vaura``) or a format string; checks the fields it uses."""
    fmt = PATTERN_PRESETS.get(pattern, pattern)
    try:
        fmt.format(ytid="x", start=0, start_ms=0, end_ms=10000, label="l", split="train", clip_id="x_0_10000")
    except (KeyError, IndexError, ValueError) as e:
        raise VGGSoundIndexError(
            f"bad file-name pattern {pattern!r} ({e}); use a preset {sorted(PATTERN_PRESETS)} or a format string "
            "over ytid, start, start_ms, end_ms, label, split, clip_id") from e
    return fmt


def clip_filename(pattern: str, youtube_id: str, start_seconds: int, label: str = "", split: str = "") -> str:
    """The relative path of a clip under the root for `pattern` (preset or format string)."""
    fmt = resolve_pattern(pattern)
    start_ms = int(start_seconds) * 1000
    return fmt.format(ytid=youtube_id, start=int(start_seconds), start_ms=start_ms,
                      end_ms=start_ms + CLIP_SECONDS * 1000, label=label, split=split,
                      clip_id=clip_id(youtube_id, start_seconds))


@dataclass(frozen=True)
class IndexSummary:
    """Counts of an index: listed clips and how many were found / are missing, per VGGSound split."""

    total: int
    found: int
    missing: int
    per_split: dict[str, dict[str, int]]
    example_missing: str | None = None  # one path that was looked for and not found

    def text(self) -> str:
        """One line: ``found/total clips found, N missing (split: found/total; ...)``, plus an example of a path
        that was looked for when clips are missing."""
        parts = [f"{s}: {c['found']}/{c['total']} found" for s, c in self.per_split.items()]
        line = f"{self.found}/{self.total} clips found, {self.missing} missing ({'; '.join(parts)})"
        if self.example_missing:
            line += f"; e.g. looked for {self.example_missing}"
        return line


def index_clips(csv: str | os.PathLike | pd.DataFrame, root: str | os.PathLike,
                pattern: str = "vaura") -> pd.DataFrame:
    """Every csv row with its expected ``path`` under `root` and ``exists`` (bool).

    Existence is checked against one walk of `root` (fast for ~200k clips on network file systems).
    """
    df = read_vggsound_csv(csv) if not isinstance(csv, pd.DataFrame) else csv.copy()
    root = Path(root)
    if not root.is_dir():
        raise VGGSoundIndexError(f"clip root {root} is not a folder")
    resolve_pattern(pattern)
    rel = [clip_filename(pattern, y, s, lab, sp)
           for y, s, lab, sp in zip(df["youtube_id"], df["start_seconds"], df["label"], df["split"])]
    present: set[str] = set()
    for dirpath, _dirs, files in os.walk(root):
        base = os.path.relpath(dirpath, root)
        for f in files:
            present.add(os.path.normpath(os.path.join(base, f)) if base != "." else f)
    df["path"] = [str(root / r) for r in rel]
    df["exists"] = [os.path.normpath(r) in present for r in rel]
    s = summarize_index(df)
    if s.missing:
        log.warning("VGGSound index under %s (pattern %s = %r): %s", root, pattern, resolve_pattern(pattern),
                    s.text())
    else:
        log.info("VGGSound index under %s (%s): %s", root, pattern, s.text())
    return df


def index_folder(root: str | os.PathLike) -> tuple[pd.DataFrame, list[Path]]:
    """Index a plain folder of videos (no VGGSound csv): one row per file with a video extension
    (`visualsound.media.formats.VIDEO_EXTENSIONS`), ``clip_id`` = ``youtube_id`` = the file stem,
    ``start_seconds`` 0, empty ``label`` and ``split``, ``exists`` True. Returns the index and the files skipped
    for their extension (also logged). Raises `VGGSoundIndexError` when two files share a stem (their clip ids
    would collide) or the folder holds no video."""
    from visualsound.media.formats import VIDEO_EXTENSIONS, list_video_files

    root = Path(root)
    if not root.is_dir():
        raise VGGSoundIndexError(f"clip root {root} is not a folder")
    listing = list_video_files(root)
    listing.log_skipped(root, log)
    by_stem: dict[str, list[str]] = {}
    for p in listing.videos:
        by_stem.setdefault(p.stem, []).append(p.name)
    dups = {k: v for k, v in by_stem.items() if len(v) > 1}
    if dups:
        shown = "; ".join(f"{', '.join(v)}" for v in list(dups.values())[:10])
        raise VGGSoundIndexError(f"{root}: {len(dups)} clip ids are shared by several files (the clip id is the file "
                                 f"stem): {shown}; rename or move the extra files")
    if not listing.videos:
        raise VGGSoundIndexError(f"{root} holds no video files ({len(listing.skipped)} other files skipped; known "
                                 f"extensions: {' '.join(VIDEO_EXTENSIONS)})")
    df = pd.DataFrame({"youtube_id": [p.stem for p in listing.videos], "start_seconds": 0, "label": "",
                       "split": "", "clip_id": [p.stem for p in listing.videos],
                       "path": [str(p) for p in listing.videos], "exists": True})
    log.info("folder index of %s: %d videos, %d other files skipped", root, len(df), len(listing.skipped))
    return df, listing.skipped


def summarize_index(df: pd.DataFrame) -> IndexSummary:
    """Found / missing counts of an `index_clips` frame."""
    per = {}
    for split, g in df.groupby("split", sort=True):
        per[str(split)] = {"total": len(g), "found": int(g["exists"].sum()), "missing": int((~g["exists"]).sum())}
    found = int(df["exists"].sum())
    example = str(df.loc[~df["exists"], "path"].iloc[0]) if found < len(df) and "path" in df.columns else None
    return IndexSummary(total=len(df), found=found, missing=len(df) - found, per_split=per, example_missing=example)
