"""Evaluation datasets as explicit manifests: clip id, video path, start second, window length, label.

A manifest is a JSON file written by ``vbench datasets build NAME --root DIR`` and read by ``vbench evaluate``.
Everything downstream pairs clips through the manifest's ids, never through file names.

Built-in datasets (the user points at a local copy and, where the paper used one, at the official list file):

* ``vas``: the VAS test split as in SpecVQGAN (its ``vas_valid.txt``, lines ``class/video_NNNNN``), fireworks
  dropped; clip id ``{class}-{video_NNNNN}``; window from second 0 unless ``--starts`` gives one.
* ``vggsound``: the VGGSound test split: the official ``vggsound.csv`` (test rows), a V-AURA test-set csv
  (``file,start_sec``) or an id list; clip ids are V-AURA's ``{ytid}_{start_ms}_{end_ms}``.
* ``vggsound-sparse``: the 444 clips of V-AURA's ``data/test_sets/vggsound_sparse.csv`` (``file,start_sec``).
* ``visualsound``: the test split written by ``visualsound build`` (``visualsound_test.txt``) or V-AURA's csv.
* ``synthetic``: a folder written by ``visualsound synth`` (``events.json``); visual event times are kept so
  that ``vbench plot`` can mark them.

For the ``av-benchmark`` protocol (MMAudio's evaluator; 8 s clips by default):

* ``vggsound-test``: MMAudio's VGGSound test list ``sets/vgg-test.tsv`` (``id<TAB>label``, 15,221 rows; ids
  ``{ytid}_{start:06d}``; MMAudio could download 15,220 of them); the videos are the 10 s VGGSound clips.
* ``greatest-hits``: V-AURA's ``data/splits/greatesthit/greatesthit_test.txt`` (one Greatest Hits video name per
  line, 243 videos); 8 s from the start of each video.
* ``moviegen-audio-bench``: Movie Gen Audio Bench's ``MovieGenAudioBenchSfx.jsonl`` (facebookresearch/MovieGenBench;
  527 lines ``{"id", "video_prompt", "audio_prompt"}``); clip id = ``str(id)``; the videos come from the benchmark's
  tarball (the file names inside it are not verified here: ``--pattern`` sets them).
* ``kling-audio-eval``: Kling-Foley's benchmark (Hugging Face ``klingfoley/Kling-Audio-Eval``); its list format is
  not published in a form verified here, so it is built from a folder of its videos (``--videos DIR``).

Any folder of videos is a dataset too: ``vbench datasets build NAME --videos DIR [--gt-audio DIR]`` (clip id = file
stem; ``--gt-audio`` holds ground-truth audio files of the same stems when they are not the videos' own tracks,
as av-benchmark's ``--gt_audio`` folder; stems with audio but no video become audio-only clips).

Evaluation windows are fixed: ``window_sec`` (2.56 s, V-AURA's generation length, for the V-AURA paper's sets; 8 s
for the av-benchmark sets) starting at the clip's ``start_sec`` from a ``file,start_sec`` csv when one is given,
else at 0. A clip shorter than its window keeps a shorter window (recorded per clip). A file that cannot be probed,
or a clip shorter than `MIN_CLIP_SEC`, never aborts a build: it is left out and listed in the manifest's
``rejected`` with the reason.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from visualsound.errors import ToolkitError
from visualsound.media.formats import VIDEO_EXTENSIONS
from visualsound.utils.atomic import atomic_write_json

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "vbench-dataset"
MANIFEST_VERSION = 1
WINDOW_SEC = 2.56
DEFAULT_DIR_ENV = "VBENCH_DATASETS"
VAS_DROPPED_CLASSES = ("fireworks",)
VGGSOUND_SPARSE_SIZE = 444
AV_BENCHMARK_WINDOW_SEC = 8.0
MIN_CLIP_SEC = 1.0  # VGGish needs one 0.975 s example; shorter clips are rejected at build time
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".opus", ".m4a", ".aac")  # GT audio files (videos count too)


class DatasetError(ToolkitError):
    """A dataset cannot be built or read: unknown name, bad list file, missing clips, bad manifest."""


@dataclass(frozen=True)
class DatasetClip:
    """One evaluation clip: its video file and the window ``[start_sec, start_sec + window_sec)`` inside it.

    ``audio`` is the ground-truth audio file when it is not the video's own track (a separate GT audio folder);
    ``video`` is None for an audio-only clip (av-benchmark GT audio without a video)."""

    id: str
    video: str | None
    start_sec: float
    window_sec: float
    label: str = ""
    events: tuple[float, ...] | None = None  # visual event times (s, from the file start), synthetic only
    audio: str | None = None

    @property
    def audio_source(self) -> str:
        """The file holding the clip's ground-truth audio: `audio`, else the video."""
        source = self.audio or self.video
        if source is None:
            raise DatasetError(f"clip {self.id} has neither a video nor an audio file")
        return source

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["events"] = list(self.events) if self.events is not None else None
        if self.audio is None:
            del d["audio"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetClip:
        try:
            events = d.get("events")
            video, audio = d.get("video"), d.get("audio")
            if video is None and audio is None:
                raise ValueError("neither video nor audio")
            return cls(id=str(d["id"]), video=None if video is None else str(video), start_sec=float(d["start_sec"]),
                       window_sec=float(d["window_sec"]), label=str(d.get("label", "")),
                       events=tuple(float(t) for t in events) if events is not None else None,
                       audio=None if audio is None else str(audio))
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"bad clip entry {d!r}: {e}") from e


@dataclass(frozen=True)
class Dataset:
    """A built dataset manifest. ``sources`` lists the list files used and their sha256; ``missing`` the listed
    clips not found on disk; ``rejected`` the clips left out with the reason (unreadable, too short);
    ``official_clips`` the size of the official list the set is compared with, where one is known."""

    name: str
    window_sec: float
    clips: tuple[DatasetClip, ...]
    root: str = ""
    sources: tuple[dict[str, str], ...] = ()
    missing: tuple[str, ...] = ()
    notes: str = ""
    path: str = field(default="", compare=False)
    rejected: tuple[tuple[str, str], ...] = ()
    official_clips: int | None = None

    def __post_init__(self) -> None:
        ids = [c.id for c in self.clips]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise DatasetError(f"dataset {self.name!r}: duplicate clip ids {dup[:5]}")

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.clips]

    @functools.cached_property
    def _by_id(self) -> dict[str, DatasetClip]:
        return {c.id: c for c in self.clips}

    def clip(self, clip_id: str) -> DatasetClip:
        if clip_id not in self._by_id:
            raise DatasetError(f"dataset {self.name!r} has no clip {clip_id!r}")
        return self._by_id[clip_id]

    def fingerprint(self) -> str:
        """sha256 of the clip list (ids, videos, windows, separate audio files): changes whenever the evaluated set
        changes."""
        rows = [[c.id, c.video, c.start_sec, c.window_sec] + ([c.audio] if c.audio else []) for c in self.clips]
        return hashlib.sha256(json.dumps(rows).encode()).hexdigest()

    def identity(self) -> dict[str, Any]:
        """What a result records about the set: name, size, fingerprint, manifest, window, completeness."""
        return {"name": self.name, "num_clips": len(self.clips), "fingerprint": self.fingerprint(),
                "manifest": self.path, "window_sec": self.window_sec, "missing_at_build": len(self.missing),
                "rejected_at_build": len(self.rejected), "official_clips": self.official_clips}

    def to_dict(self) -> dict[str, Any]:
        return {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "name": self.name,
                "window_sec": self.window_sec, "root": self.root, "sources": list(self.sources),
                "num_clips": len(self.clips), "official_clips": self.official_clips, "missing": list(self.missing),
                "rejected": dict(self.rejected), "notes": self.notes, "clips": [c.to_dict() for c in self.clips]}

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        atomic_write_json(path, self.to_dict())
        return path


def load_manifest(path: str | os.PathLike) -> Dataset:
    """Read a manifest written by `Dataset.save`; a wrong format or version raises `DatasetError`."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset manifest not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise DatasetError(f"{path}: not a vbench dataset manifest (format {data.get('format')!r})")
    if data.get("version") != MANIFEST_VERSION:
        raise DatasetError(f"{path}: manifest version {data.get('version')} is not {MANIFEST_VERSION}")
    clips = tuple(DatasetClip.from_dict(c) for c in data.get("clips", []))
    if not clips:
        raise DatasetError(f"{path}: the manifest lists no clips")
    official = data.get("official_clips")
    return Dataset(name=str(data["name"]), window_sec=float(data["window_sec"]), clips=clips,
                   root=str(data.get("root", "")), sources=tuple(data.get("sources", [])),
                   missing=tuple(data.get("missing", [])), notes=str(data.get("notes", "")), path=str(path),
                   rejected=tuple(dict(data.get("rejected", {})).items()),
                   official_clips=None if official is None else int(official))


def datasets_dir() -> Path:
    """Where built manifests live by default: ``$VBENCH_DATASETS`` or ``./vbench-datasets``."""
    return Path(os.environ.get(DEFAULT_DIR_ENV, "vbench-datasets"))


def resolve_dataset(spec: str, directory: str | os.PathLike | None = None) -> Dataset:
    """A manifest path, or the name of a manifest built into `directory` (default `datasets_dir`)."""
    p = Path(spec)
    if p.suffix == ".json" or p.is_file():
        return load_manifest(p)
    given = directory is not None
    directory = Path(directory) if given else datasets_dir()
    candidate = directory / f"{spec}.json"
    if candidate.is_file():
        return load_manifest(candidate)
    where = f"a dataset name is looked up as NAME.json in {directory}" + (
        "" if given else f" (the default folder: ${DEFAULT_DIR_ENV}, else ./vbench-datasets)")
    out = f" --out {candidate}" if given else ""  # `datasets build` writes to the default folder otherwise
    if spec in BUILTINS:
        how = f"build it with `vbench datasets build {spec} --root DIR{out}` (see `vbench datasets list`)"
    elif p.is_dir():
        name = p.resolve().name or "NAME"
        how = (f"{spec} is a folder, not a dataset: make a manifest of its videos with `vbench datasets build "
               f"{name} --videos {spec}{out}`, then pass --dataset {name}")
    else:
        how = (f"for a folder of your own videos, build one with `vbench datasets build {spec} --videos DIR{out}`, "
               f"or pass a manifest's .json path")
    raise DatasetError(f"dataset {spec!r} is not built: no {candidate}; {where}. To fix: {how} (built-ins: "
                       f"{', '.join(BUILTINS)})")


# ------------------------------------------------------------------------------------------------ list files
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _source(path: Path, role: str) -> dict[str, str]:
    return {"role": role, "path": str(path.resolve()), "sha256": _sha256(path)}


def read_start_csv(path: str | os.PathLike) -> dict[str, float]:
    """A ``file,start_sec`` csv (V-AURA's test sets) -> ``{clip id: start second}`` (a ``.mp4`` suffix dropped)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"start-time csv not found: {path}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"file", "start_sec"} <= set(reader.fieldnames):
            raise DatasetError(f"{path}: expected a header with columns file,start_sec; got {reader.fieldnames}")
        out: dict[str, float] = {}
        for n, row in enumerate(reader, start=2):
            cid = row["file"].strip()
            cid = cid[:-4] if cid.endswith(".mp4") else cid
            if cid in out:
                raise DatasetError(f"{path}: line {n}: clip {cid} listed twice")
            try:
                out[cid] = float(row["start_sec"])
            except ValueError as e:
                raise DatasetError(f"{path}: line {n}: start_sec {row['start_sec']!r} is not a number") from e
    if not out:
        raise DatasetError(f"{path}: no rows")
    return out


def _read_id_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"list file not found: {path}")
    ids = [s.strip() for s in path.read_text().splitlines() if s.strip()]
    if not ids:
        raise DatasetError(f"list file {path} is empty")
    return [i[:-4] if i.endswith(".mp4") else i for i in ids]


def read_vggsound_list(path: str | os.PathLike) -> list[tuple[str, float | None, str]]:
    """VGGSound-based list file -> ``[(clip id, start or None, label)]``. Accepted forms: a ``file,start_sec``
    csv, a ``filename,start,desc,split`` csv (V-AURA's ``visualsound.csv``; its test rows), the official
    4-column ``vggsound.csv`` (its test rows) or a text file of clip ids."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"list file not found: {path}")
    first = path.read_text().split("\n", 1)[0].strip()
    if first.replace(" ", "").startswith("file,start_sec"):
        return [(cid, start, "") for cid, start in read_start_csv(path).items()]
    if first.replace(" ", "").startswith("filename,start,desc,split"):  # V-AURA's / `visualsound build`'s csv
        import pandas as pd

        from visualsound.vggsound import clip_id

        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        test = df[df["split"] == "test"]
        if test.empty:
            raise DatasetError(f"{path}: no test rows")
        return [(clip_id(f, int(st)), None, d) for f, st, d in zip(test["filename"], test["start"], test["desc"])]
    if first.count(",") >= 3:
        from visualsound.vggsound import read_vggsound_csv

        df = read_vggsound_csv(path)
        test = df[df["split"] == "test"]
        if test.empty:
            raise DatasetError(f"{path}: the official csv has no test rows")
        return [(cid, None, label) for cid, label in zip(test["clip_id"], test["label"])]
    return [(cid, None, "") for cid in _read_id_lines(path)]


def _video_path(root: Path, pattern: str, fields: dict[str, Any]) -> Path:
    try:
        return root / pattern.format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise DatasetError(f"bad file-name pattern {pattern!r} ({e}); fields: {sorted(fields)}") from e


def _window(media: Path, start: float, window_sec: float) -> float:
    """The clip's window: `window_sec`, shortened when the file ends earlier. Raises `ClipRejected` (with the
    reason) for a file that cannot be probed, a start at or after its end, or a window under `MIN_CLIP_SEC`."""
    from visualsound.media import MediaError, probe

    try:
        duration = probe(media).duration
    except MediaError as e:
        raise ClipRejected(f"unreadable: {e}") from e
    if not duration or duration <= 0:
        raise ClipRejected(f"{media}: no duration could be determined")
    if start >= duration:
        raise ClipRejected(f"{media}: start {start:.3f} s is at or after the end ({duration:.3f} s)")
    window = round(min(window_sec, duration - start), 6)
    if window < MIN_CLIP_SEC:
        raise ClipRejected(f"{media}: too short: {window:.3f} s from {start:.3f} s; every protocol needs at least "
                           f"{MIN_CLIP_SEC:g} s (one 0.975 s VGGish example)")
    return window


class ClipRejected(DatasetError):
    """One clip cannot be part of the dataset; the build records the reason and goes on."""


Row = tuple[str, Path | None, float, str, "tuple[float, ...] | None"]


def _finish(name: str, root: Path, rows: Sequence[Row], window_sec: float, sources: list[dict[str, str]],
            allow_missing: bool, probe_windows: bool, notes: str = "", official_clips: int | None = None,
            audio: dict[str, Path] | None = None) -> Dataset:
    """Check every listed clip: missing files are counted (an error unless `allow_missing`), unreadable or too
    short ones are rejected with the reason; `audio` maps clip ids to separate ground-truth audio files."""
    audio = audio or {}
    clips, missing, rejected = [], [], {}
    for cid, video, start, label, events in rows:
        if video is not None and not video.is_file():
            missing.append(cid)
            continue
        media = audio.get(cid) or video
        assert media is not None, f"clip {cid} has neither a video nor an audio file"
        try:
            win = _window(media, start, window_sec) if probe_windows else window_sec
            if video is not None and cid in audio and probe_windows:
                _window(video, start, window_sec)  # the video must be readable too
        except ClipRejected as e:
            rejected[cid] = str(e)
            log.warning("dataset %s: clip %s left out: %s", name, cid, e)
            continue
        clips.append(DatasetClip(id=cid, video=str(video.resolve()) if video is not None else None,
                                 start_sec=float(start), window_sec=win, label=label, events=events,
                                 audio=str(audio[cid].resolve()) if cid in audio else None))
    if missing:
        msg = (f"dataset {name!r}: {len(missing)} of {len(rows)} listed clips are missing under {root} "
               f"(e.g. {', '.join(missing[:5])})")
        if not allow_missing:
            raise DatasetError(msg + "; pass --allow-missing to build without them (the manifest records them)")
        log.warning(msg)
    if not clips:
        why = f" ({len(rejected)} rejected, e.g. {next(iter(rejected.items()))})" if rejected else ""
        raise DatasetError(f"dataset {name!r}: no usable clip found under {root}{why}")
    return Dataset(name=name, window_sec=window_sec, clips=tuple(clips), root=str(root.resolve()),
                   sources=tuple(sources), missing=tuple(missing), notes=notes,
                   rejected=tuple(sorted(rejected.items())), official_clips=official_clips)


# ------------------------------------------------------------------------------------------------ builders
def build_synthetic(root: str | os.PathLike, split: str = "test", window_sec: float = WINDOW_SEC,
                    allow_missing: bool = False) -> Dataset:
    """Clips of a ``visualsound synth`` folder (``events.json``); `split` ``test``, ``train`` or ``all``."""
    root = Path(root)
    events_path = root / "events.json"
    if not events_path.is_file():
        raise DatasetError(f"{root} is not a `visualsound synth` folder: no events.json")
    records = json.loads(events_path.read_text()).get("clips", [])
    rows = [(r["ytid"], root / r["file"], float(r.get("start_seconds", 0)), str(r["label"]),
             tuple(float(t) for t in r["visual_events"]))
            for r in records if split == "all" or r["split"] == split]
    if not rows:
        raise DatasetError(f"{events_path}: no clips in split {split!r}")
    return _finish("synthetic", root, rows, window_sec, [_source(events_path, "events")], allow_missing, True,
                   notes=f"visualsound synth clips, split {split}")


def build_vas(root: str | os.PathLike, list_file: str | os.PathLike, pattern: str = "{label}/{name}.mp4",
              starts: str | os.PathLike | None = None, window_sec: float = WINDOW_SEC,
              allow_missing: bool = False) -> Dataset:
    """VAS test split from SpecVQGAN's list (``class/video_NNNNN`` lines), fireworks dropped."""
    root, list_file = Path(root), Path(list_file)
    start_of = read_start_csv(starts) if starts else {}
    rows, dropped = [], 0
    for line in _read_id_lines(list_file):
        if "/" not in line:
            raise DatasetError(f"{list_file}: line {line!r} is not of the form class/video_NNNNN")
        label, name = line.split("/", 1)
        if label in VAS_DROPPED_CLASSES:
            dropped += 1
            continue
        cid = f"{label}-{name}"
        video = _video_path(root, pattern, {"label": label, "name": name, "clip_id": cid})
        rows.append((cid, video, start_of.get(cid, 0.0), label, None))
    sources = [_source(list_file, "list")] + ([_source(Path(starts), "starts")] if starts else [])
    return _finish("vas", root, rows, window_sec, sources, allow_missing, True,
                   notes=f"SpecVQGAN VAS test split, {dropped} fireworks clips dropped")


def build_vggsound_like(name: str, root: str | os.PathLike, list_file: str | os.PathLike,
                        pattern: str = "{clip_id}.mp4", starts: str | os.PathLike | None = None,
                        window_sec: float = WINDOW_SEC, allow_missing: bool = False,
                        expected: int | None = None) -> Dataset:
    """A VGGSound-based set (``vggsound``, ``vggsound-sparse``, ``visualsound``) from a list file.

    `pattern` is a format string over ``clip_id``, ``ytid``, ``start`` (s), ``start_ms``, ``end_ms``, ``label``.
    Start seconds come from `starts` or from the list itself when it is a ``file,start_sec`` csv, else 0.
    """
    from visualsound.vggsound import VGGSoundIndexError, parse_clip_id

    root, list_file = Path(root), Path(list_file)
    listed = read_vggsound_list(list_file)
    if expected is not None and len(listed) != expected:
        log.warning("%s: %s lists %d clips; the paper's set has %d", name, list_file, len(listed), expected)
    start_of = read_start_csv(starts) if starts else {}
    rows = []
    for cid, start, label in listed:
        try:
            ytid, start_s = parse_clip_id(cid)
        except VGGSoundIndexError as e:
            raise DatasetError(f"{list_file}: {e}") from e
        fields = {"clip_id": cid, "ytid": ytid, "start": start_s, "start_ms": start_s * 1000,
                  "end_ms": start_s * 1000 + 10000, "label": label}
        win_start = start_of.get(cid, start if start is not None else 0.0)
        rows.append((cid, _video_path(root, pattern, fields), float(win_start), label, None))
    sources = [_source(list_file, "list")] + ([_source(Path(starts), "starts")] if starts else [])
    return _finish(name, root, rows, window_sec, sources, allow_missing, True, official_clips=expected)


def read_vggsound_test_tsv(path: str | os.PathLike) -> list[tuple[str, str]]:
    """MMAudio's ``sets/vgg-test.tsv`` (header ``id<TAB>label``) -> ``[(clip id, label)]``; ids are
    ``{ytid}_{start:06d}``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"list file not found: {path}")
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if not lines or lines[0].split("\t")[0].strip() != "id":
        raise DatasetError(f"{path}: expected MMAudio's tsv with the header 'id<TAB>label', got "
                           f"{lines[0][:60] if lines else 'an empty file'!r}")
    out, seen = [], set()
    for n, line in enumerate(lines[1:], start=2):
        cid, _, label = line.partition("\t")
        cid = cid.strip()
        if cid in seen:
            raise DatasetError(f"{path}: line {n}: clip {cid} listed twice")
        seen.add(cid)
        out.append((cid, label.strip()))
    if not out:
        raise DatasetError(f"{path}: no rows")
    return out


def build_vggsound_test(root: str | os.PathLike, list_file: str | os.PathLike, pattern: str = "{clip_id}.mp4",
                        window_sec: float = AV_BENCHMARK_WINDOW_SEC, allow_missing: bool = False) -> Dataset:
    """MMAudio's VGGSound test set from its tsv; every clip from second 0 of its 10 s video (as MMAudio)."""
    root, list_file = Path(root), Path(list_file)
    rows: list[Row] = []
    for cid, label in read_vggsound_test_tsv(list_file):
        ytid, _, start = cid.rpartition("_")
        fields = {"clip_id": cid, "ytid": ytid, "start": int(start) if start.isdigit() else start, "label": label}
        rows.append((cid, _video_path(root, pattern, fields), 0.0, label, None))
    return _finish("vggsound-test", root, rows, window_sec, [_source(list_file, "list")], allow_missing, True,
                   notes="MMAudio's sets/vgg-test.tsv (hkchengrex/MMAudio); MMAudio evaluated the 15,220 clips it "
                         "could download", official_clips=BUILTINS["vggsound-test"].expected_clips)


def build_id_list(name: str, root: str | os.PathLike, list_file: str | os.PathLike, pattern: str,
                  window_sec: float, allow_missing: bool = False, notes: str = "") -> Dataset:
    """A set listed by clip ids (a text file, one id per line, or Movie Gen's jsonl with an ``id`` field), each
    clip from second 0 of ``root / pattern.format(clip_id=...)``."""
    root, list_file = Path(root), Path(list_file)
    if list_file.suffix == ".jsonl":
        ids, labels = [], {}
        for n, line in enumerate(list_file.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                cid = str(item["id"])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise DatasetError(f"{list_file}: line {n}: expected a JSON object with an 'id' ({e})") from e
            ids.append(cid)
            labels[cid] = str(item.get("audio_prompt", ""))
        if len(set(ids)) != len(ids):
            raise DatasetError(f"{list_file}: duplicate ids")
    else:
        ids, labels = _read_id_lines(list_file), {}
    rows: list[Row] = [(cid, _video_path(root, pattern, {"clip_id": cid}), 0.0, labels.get(cid, ""), None)
                       for cid in ids]
    return _finish(name, root, rows, window_sec, [_source(list_file, "list")], allow_missing, True, notes=notes,
                   official_clips=BUILTINS[name].expected_clips if name in BUILTINS else None)


def _files_by_stem(folder: Path, extensions: Sequence[str], what: str) -> tuple[dict[str, Path], list[str]]:
    """``{stem: path}`` of the files of `folder` with `extensions`, and the names of the files skipped; two files
    with one stem raise (their clip ids would collide)."""
    if not folder.is_dir():
        raise DatasetError(f"{what} folder not found: {folder}")
    found: dict[str, Path] = {}
    skipped = []
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.suffix.lower() not in extensions:
            skipped.append(p.name)
            continue
        if p.stem in found:
            raise DatasetError(f"{what} folder {folder}: {found[p.stem].name} and {p.name} share the clip id "
                               f"{p.stem!r}; rename one of them")
        found[p.stem] = p
    return found, skipped


def build_folder(name: str, videos: str | os.PathLike | None, gt_audio: str | os.PathLike | None = None,
                 window_sec: float = AV_BENCHMARK_WINDOW_SEC, notes: str = "") -> Dataset:
    """Every video of `videos` (clip id = file stem, window from second 0) and, from `gt_audio`, ground-truth
    audio files of the same stems (audio-only clips where no video has the stem). Files with other extensions
    are listed in the log and the manifest notes."""
    if videos is None and gt_audio is None:
        raise DatasetError("a folder dataset needs --videos DIR and/or --gt-audio DIR")
    vids, skipped_v = _files_by_stem(Path(videos), VIDEO_EXTENSIONS, "videos") if videos else ({}, [])
    auds, skipped_a = _files_by_stem(Path(gt_audio), AUDIO_EXTENSIONS + VIDEO_EXTENSIONS,
                                     "ground-truth audio") if gt_audio else ({}, [])
    skipped = [*skipped_v, *skipped_a]
    if skipped:
        log.warning("dataset %s: %d files are not media by extension and are skipped: %s", name, len(skipped),
                    ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else ""))
    stems = sorted(set(vids) | set(auds))
    rows: list[Row] = [(stem, vids.get(stem), 0.0, "", None) for stem in stems]
    root = Path(videos or gt_audio)  # type: ignore[arg-type]
    sources = [{"role": role, "path": str(Path(d).resolve())} for role, d in (("videos", videos),
                                                                              ("gt_audio", gt_audio)) if d]
    extra = f"; skipped (not media): {', '.join(skipped)}" if skipped else ""
    return _finish(name, root, rows, window_sec, sources, False, True, notes=(notes or "a folder of files") + extra,
                   audio=auds)


@dataclass(frozen=True)
class BuiltinDataset:
    """Description of a built-in dataset and the list file it needs."""

    name: str
    description: str
    list_file: str  # what --list expects ("" = none needed)
    default_pattern: str
    expected_clips: int | None = None  # size of the official list (V-AURA's csv, MMAudio's usable clips, ...)
    window_sec: float = WINDOW_SEC
    protocol: str = "vaura-paper"  # the protocol the set is usually evaluated with


BUILTINS: dict[str, BuiltinDataset] = {b.name: b for b in (
    BuiltinDataset("vas", "VAS test split as in SpecVQGAN (fireworks dropped)",
                   "SpecVQGAN's data/vas_valid.txt (class/video_NNNNN lines)", "{label}/{name}.mp4"),
    BuiltinDataset("vggsound", "VGGSound test split",
                   "the official vggsound.csv, V-AURA's data/test_sets/vggsound_test.csv or an id list",
                   "{clip_id}.mp4", 14511),
    BuiltinDataset("vggsound-sparse", "VGGSound-Sparse test set (444 clips)",
                   "V-AURA's data/test_sets/vggsound_sparse.csv (file,start_sec)", "{clip_id}.mp4",
                   VGGSOUND_SPARSE_SIZE),
    BuiltinDataset("visualsound", "VisualSound test split",
                   "visualsound_test.txt from `visualsound build` or V-AURA's data/test_sets/visualsound.csv",
                   "{clip_id}.mp4", 5425),
    BuiltinDataset("synthetic", "clips from `visualsound synth` (known event times)", "", ""),
    BuiltinDataset("vggsound-test", "VGGSound test as MMAudio evaluates it (av-benchmark, 8 s)",
                   "MMAudio's sets/vgg-test.tsv (id<TAB>label)", "{clip_id}.mp4", 15220, AV_BENCHMARK_WINDOW_SEC,
                   "av-benchmark"),
    BuiltinDataset("greatest-hits", "Greatest Hits test videos (8 s from the start)",
                   "V-AURA's data/splits/greatesthit/greatesthit_test.txt (one video name per line)",
                   "{clip_id}.mp4", None, AV_BENCHMARK_WINDOW_SEC, "av-benchmark"),
    BuiltinDataset("moviegen-audio-bench", "Movie Gen Audio Bench (sound effects; 8 s)",
                   "MovieGenBench's benchmark/MovieGenAudioBenchSfx.jsonl", "{clip_id}.mp4", 527,
                   AV_BENCHMARK_WINDOW_SEC, "av-benchmark"),
    BuiltinDataset("kling-audio-eval", "Kling-Audio-Eval (Kling-Foley), from a folder of its videos (--videos)",
                   "", "", None, AV_BENCHMARK_WINDOW_SEC, "av-benchmark"),
)}


def build_dataset(name: str, root: str | os.PathLike | None = None, list_file: str | os.PathLike | None = None,
                  pattern: str | None = None, starts: str | os.PathLike | None = None,
                  window_sec: float | None = None, allow_missing: bool = False, split: str = "test",
                  videos: str | os.PathLike | None = None, gt_audio: str | os.PathLike | None = None) -> Dataset:
    """Build dataset `name`: a built-in from a local copy under `root` (see `BUILTINS` for the list files), or
    any name from a folder of videos (`videos`, optionally `gt_audio`). `window_sec` defaults to the built-in's
    (2.56 s for the V-AURA paper's sets, 8 s for the av-benchmark ones and for folders).

    `split` applies to ``synthetic`` only (the others are test sets); `list_file`, `pattern` and `starts` to the
    list-based built-ins only. An option that does not apply raises `DatasetError` instead of being ignored.
    """
    spec = BUILTINS.get(name)
    window = window_sec if window_sec is not None else (spec.window_sec if spec else AV_BENCHMARK_WINDOW_SEC)
    if window <= 0:
        raise DatasetError(f"window must be > 0 s, got {window}")
    if split != "test" and name != "synthetic":
        raise DatasetError(f"dataset {name!r} is a test set; --split {split!r} applies to synthetic only")
    if spec is None and videos is None and gt_audio is None:
        raise DatasetError(f"unknown dataset {name!r}; built-ins: {', '.join(BUILTINS)}; any other name is built "
                           "from a folder of videos (--videos DIR)")
    if videos is not None or gt_audio is not None or spec is None or name == "kling-audio-eval":
        if videos is None and gt_audio is None:
            raise DatasetError(f"dataset {name!r} is built from a folder of its videos: --videos DIR")
        given = [opt for opt, value in (("--root", root), ("--list", list_file), ("--pattern", pattern),
                                        ("--starts", starts)) if value is not None]
        if given:
            raise DatasetError(f"a folder dataset ({name!r} from --videos/--gt-audio) takes no {', '.join(given)}")
        return build_folder(name, videos, gt_audio, window, notes=spec.description if spec else "")
    if root is None:
        raise DatasetError(f"dataset {name!r} needs --root DIR (the local copy of its videos)")
    if name == "synthetic":
        given = [opt for opt, value in (("--list", list_file), ("--pattern", pattern), ("--starts", starts))
                 if value is not None]
        if given:
            raise DatasetError(f"the synthetic dataset takes no {', '.join(given)}: its clips, windows and events "
                               "come from the synth folder's events.json")
        return build_synthetic(root, split=split, window_sec=window, allow_missing=allow_missing)
    if list_file is None:
        raise DatasetError(f"dataset {name!r} needs --list: {spec.list_file}")
    if name == "vas":
        return build_vas(root, list_file, pattern or spec.default_pattern, starts, window, allow_missing)
    if spec.protocol == "av-benchmark":
        if starts is not None:
            raise DatasetError(f"dataset {name!r} takes no --starts: its clips start at second 0")
        if name == "vggsound-test":
            return build_vggsound_test(root, list_file, pattern or spec.default_pattern, window, allow_missing)
        return build_id_list(name, root, list_file, pattern or spec.default_pattern, window, allow_missing,
                             notes=spec.description)
    return build_vggsound_like(name, root, list_file, pattern or spec.default_pattern, starts, window,
                               allow_missing, spec.expected_clips)
