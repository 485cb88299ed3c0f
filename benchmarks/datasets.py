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

Evaluation windows are fixed: ``window_sec`` (2.56 s, V-AURA's generation length) starting at the clip's
``start_sec`` from a ``file,start_sec`` csv when one is given, else at 0. A clip shorter than its window keeps a
shorter window (recorded per clip).
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
from visualsound.utils.atomic import atomic_write_json

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "vbench-dataset"
MANIFEST_VERSION = 1
WINDOW_SEC = 2.56
DEFAULT_DIR_ENV = "VBENCH_DATASETS"
VAS_DROPPED_CLASSES = ("fireworks",)
VGGSOUND_SPARSE_SIZE = 444


class DatasetError(ToolkitError):
    """A dataset cannot be built or read: unknown name, bad list file, missing clips, bad manifest."""


@dataclass(frozen=True)
class DatasetClip:
    """One evaluation clip: its video file and the window ``[start_sec, start_sec + window_sec)`` inside it."""

    id: str
    video: str
    start_sec: float
    window_sec: float
    label: str = ""
    events: tuple[float, ...] | None = None  # visual event times (s, from the file start), synthetic only

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["events"] = list(self.events) if self.events is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetClip:
        try:
            events = d.get("events")
            return cls(id=str(d["id"]), video=str(d["video"]), start_sec=float(d["start_sec"]),
                       window_sec=float(d["window_sec"]), label=str(d.get("label", "")),
                       events=tuple(float(t) for t in events) if events is not None else None)
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"bad clip entry {d!r}: {e}") from e


@dataclass(frozen=True)
class Dataset:
    """A built dataset manifest. ``sources`` lists the list files used and their sha256."""

    name: str
    window_sec: float
    clips: tuple[DatasetClip, ...]
    root: str = ""
    sources: tuple[dict[str, str], ...] = ()
    missing: tuple[str, ...] = ()
    notes: str = ""
    path: str = field(default="", compare=False)

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
        """sha256 of the clip list (ids, videos, windows): changes whenever the evaluated set changes."""
        rows = [[c.id, c.video, c.start_sec, c.window_sec] for c in self.clips]
        return hashlib.sha256(json.dumps(rows).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "name": self.name,
                "window_sec": self.window_sec, "root": self.root, "sources": list(self.sources),
                "num_clips": len(self.clips), "missing": list(self.missing), "notes": self.notes,
                "clips": [c.to_dict() for c in self.clips]}

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
    return Dataset(name=str(data["name"]), window_sec=float(data["window_sec"]), clips=clips,
                   root=str(data.get("root", "")), sources=tuple(data.get("sources", [])),
                   missing=tuple(data.get("missing", [])), notes=str(data.get("notes", "")), path=str(path))


def datasets_dir() -> Path:
    """Where built manifests live by default: ``$VBENCH_DATASETS`` or ``./vbench-datasets``."""
    return Path(os.environ.get(DEFAULT_DIR_ENV, "vbench-datasets"))


def resolve_dataset(spec: str, directory: str | os.PathLike | None = None) -> Dataset:
    """A manifest path, or the name of a manifest built into `directory` (default `datasets_dir`)."""
    p = Path(spec)
    if p.suffix == ".json" or p.is_file():
        return load_manifest(p)
    directory = Path(directory) if directory is not None else datasets_dir()
    candidate = directory / f"{spec}.json"
    if candidate.is_file():
        return load_manifest(candidate)
    hint = f"`vbench datasets build {spec} --root DIR`" if spec in BUILTINS else "a manifest path"
    raise DatasetError(f"dataset {spec!r} is not built: no {candidate}; build it with {hint} (known built-ins: "
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


def _window(video: Path, start: float, window_sec: float) -> float:
    """The clip's window: `window_sec`, shortened when the video ends earlier."""
    from visualsound.media import probe

    duration = probe(video).duration
    if start >= duration:
        raise DatasetError(f"{video}: start {start:.3f} s is at or after the end ({duration:.3f} s)")
    return round(min(window_sec, duration - start), 6)


def _finish(name: str, root: Path, rows: Sequence[tuple[str, Path, float, str, tuple[float, ...] | None]],
            window_sec: float, sources: list[dict[str, str]], allow_missing: bool, probe_windows: bool,
            notes: str = "") -> Dataset:
    clips, missing = [], []
    for cid, video, start, label, events in rows:
        if not video.is_file():
            missing.append(cid)
            continue
        win = _window(video, start, window_sec) if probe_windows else window_sec
        clips.append(DatasetClip(id=cid, video=str(video.resolve()), start_sec=float(start), window_sec=win,
                                 label=label, events=events))
    if missing:
        msg = (f"dataset {name!r}: {len(missing)} of {len(rows)} listed clips are missing under {root} "
               f"(e.g. {', '.join(missing[:5])})")
        if not allow_missing:
            raise DatasetError(msg + "; pass --allow-missing to build without them (the manifest records them)")
        log.warning(msg)
    if not clips:
        raise DatasetError(f"dataset {name!r}: no clip found under {root}")
    return Dataset(name=name, window_sec=window_sec, clips=tuple(clips), root=str(root.resolve()),
                   sources=tuple(sources), missing=tuple(missing), notes=notes)


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
    return _finish(name, root, rows, window_sec, sources, allow_missing, True)


@dataclass(frozen=True)
class BuiltinDataset:
    """Description of a built-in dataset and the list file it needs."""

    name: str
    description: str
    list_file: str  # what --list expects ("" = none needed)
    default_pattern: str
    expected_clips: int | None = None


BUILTINS: dict[str, BuiltinDataset] = {b.name: b for b in (
    BuiltinDataset("vas", "VAS test split as in SpecVQGAN (fireworks dropped)",
                   "SpecVQGAN's data/vas_valid.txt (class/video_NNNNN lines)", "{label}/{name}.mp4"),
    BuiltinDataset("vggsound", "VGGSound test split",
                   "the official vggsound.csv, V-AURA's data/test_sets/vggsound_test.csv or an id list",
                   "{clip_id}.mp4"),
    BuiltinDataset("vggsound-sparse", "VGGSound-Sparse test set (444 clips)",
                   "V-AURA's data/test_sets/vggsound_sparse.csv (file,start_sec)", "{clip_id}.mp4",
                   VGGSOUND_SPARSE_SIZE),
    BuiltinDataset("visualsound", "VisualSound test split",
                   "visualsound_test.txt from `visualsound build` or V-AURA's data/test_sets/visualsound.csv",
                   "{clip_id}.mp4"),
    BuiltinDataset("synthetic", "clips from `visualsound synth` (known event times)", "", ""),
)}


def build_dataset(name: str, root: str | os.PathLike, list_file: str | os.PathLike | None = None,
                  pattern: str | None = None, starts: str | os.PathLike | None = None,
                  window_sec: float = WINDOW_SEC, allow_missing: bool = False, split: str = "test") -> Dataset:
    """Build built-in dataset `name` from a local copy under `root` (see `BUILTINS` for the list files).

    `split` applies to ``synthetic`` only (the others are test sets); `list_file`, `pattern` and `starts` to the
    others only. An option that does not apply raises `DatasetError` instead of being ignored.
    """
    if name not in BUILTINS:
        raise DatasetError(f"unknown dataset {name!r}; built-ins: {', '.join(BUILTINS)}")
    if window_sec <= 0:
        raise DatasetError(f"window must be > 0 s, got {window_sec}")
    if name == "synthetic":
        given = [opt for opt, value in (("--list", list_file), ("--pattern", pattern), ("--starts", starts))
                 if value is not None]
        if given:
            raise DatasetError(f"the synthetic dataset takes no {', '.join(given)}: its clips, windows and events "
                               "come from the synth folder's events.json")
    elif split != "test":
        raise DatasetError(f"dataset {name!r} is a test set; --split {split!r} applies to synthetic only")
    if name == "synthetic":
        return build_synthetic(root, split=split, window_sec=window_sec, allow_missing=allow_missing)
    if list_file is None:
        raise DatasetError(f"dataset {name!r} needs --list: {BUILTINS[name].list_file}")
    spec = BUILTINS[name]
    if name == "vas":
        return build_vas(root, list_file, pattern or spec.default_pattern, starts, window_sec, allow_missing)
    return build_vggsound_like(name, root, list_file, pattern or spec.default_pattern, starts, window_sec,
                               allow_missing, spec.expected_clips)
