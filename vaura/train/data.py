"""Training data: clip lists from the supported dataset layouts, 2.56 s clip windows, video transforms, and the
on-the-fly dataset whose workers decode clips.

Dataset layouts (`DataSource.kind`):

* ``parquet``  -- a `visualsound build` table (one row per clip: ``clip_id``, ``path`` (relative ones against
  ``video_dir`` or the table's folder), ``visualsound_split`` or ``split``; optional ``start_sec``);
* ``lists``    -- the V-AURA id lists: ``<split dir>/<prefix>_<split>.txt`` with ids ``<ytid>_<ms>_<ms>`` (or the
  ``.txt`` itself), optionally restricted to the ids of a meta csv (``filename,start,desc,split``);
* ``vggsound`` -- a VGGSound-style csv (``ytid,start,label,split``, with or without a header), also what
  `visualsound synth` writes next to its synthetic clips;
* ``list``     -- a directory plus a list of file names or ids (VAS);
* ``dir``      -- every media file of a directory (synthetic clips, ad-hoc folders).

Windows: 2.56 s = 64 frames at 25 fps and 112,896 samples at 44.1 kHz mono. Training draws a random start in
``[0, duration - 2.56 - margin]``; evaluation uses fixed starts from a ``file,start_sec`` csv (0.0 for clips the
csv does not list, as in the release). Every random draw comes from a generator seeded with
``(seed, epoch, index)``, so a sample is a pure function of its position and a resumed run sees the same data.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vaura.train.config import DataConfig
from visualsound.errors import ConfigError, ToolkitError
from visualsound.media.formats import VIDEO_EXTENSIONS, list_video_files
from visualsound.utils.config import FrozenConfig

log = logging.getLogger(__name__)

MEDIA_SUFFIXES = VIDEO_EXTENSIONS  # the toolkit's one list (visualsound.media.formats)
KINDS = ("auto", "parquet", "lists", "vggsound", "list", "dir")


class DataError(ToolkitError):
    """A dataset description is invalid or names no usable clips."""


class BadClipError(ToolkitError):
    """One clip cannot be used (too short, undecodable); the loaders skip it and count it."""


@dataclass(frozen=True)
class ClipRef:
    """One clip: its id (file stem), media path and, for evaluation, a fixed window start in seconds."""

    clip_id: str
    path: str
    start: float | None = None


@dataclass(frozen=True)
class DataSource(FrozenConfig):
    """Where the clips of one split come from. Build it with `DataSource.parse` from a CLI string."""

    kind: str = "auto"
    path: str = ""              # parquet file | split dir or .txt | csv | list file | directory
    video_dir: str = ""         # media directory (default: next to `path`)
    split: str = "train"        # train | validation | test (| predict)
    meta: str = ""              # ``lists``: optional V-AURA meta csv restricting the ids
    fixed_starts: str = ""      # evaluation: csv ``file,start_sec``
    limit: int = 0              # keep only the first `limit` clips (0 = all)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"data kind must be one of {KINDS}, got {self.kind!r}")

    @classmethod
    def parse(cls, spec: str, **defaults: Any) -> DataSource:
        """``PATH`` (kind auto-detected), a JSON/YAML file of fields, or ``key=value,key=value``.

        `defaults` (e.g. ``split="validation"``) fill fields the spec does not set.
        """
        spec = str(spec).strip()
        if not spec:
            raise ConfigError("empty data spec")
        if spec.endswith((".yaml", ".yml", ".json")) and Path(spec).is_file():
            fields = cls.load(spec).to_dict()
            fields = {k: v for k, v in fields.items() if v != getattr(cls(), k)}
        elif "=" in spec.split(",")[0] and not Path(spec).exists():
            fields = {}
            for item in spec.split(","):
                if "=" not in item:
                    raise ConfigError(f"data spec item {item!r} is not key=value (in {spec!r})")
                key, value = item.split("=", 1)
                fields[key.strip()] = value.strip()
            if "limit" in fields:
                fields["limit"] = int(fields["limit"])
        else:
            fields = {"path": spec}
        merged = {**defaults, **fields}
        return cls.from_dict(merged)

    @property
    def is_train(self) -> bool:
        return self.split == "train"

    def resolved_kind(self) -> str:
        """The layout, detecting ``auto`` from the path."""
        if self.kind != "auto":
            return self.kind
        p = Path(self.path)
        if p.is_dir():
            return "lists" if any(p.glob(f"*_{self.split}.txt")) else "dir"
        if p.suffix == ".parquet":
            return "parquet"
        if p.suffix == ".csv":
            return "vggsound"
        if p.suffix == ".txt":
            return "list"
        raise DataError(f"cannot tell the dataset layout of {self.path!r}; give kind=parquet|lists|vggsound|list|dir")

    def clips(self) -> list[ClipRef]:
        """The clips of this split, sorted by id; missing media files are logged with a count and dropped."""
        if not self.path:
            raise DataError("data spec has no path")
        if not Path(self.path).exists():
            raise DataError(f"data path {self.path!r} does not exist")
        if self.fixed_starts and self.is_train:
            raise DataError(f"fixed_starts ({self.fixed_starts}) applies to evaluation splits; the train split "
                            "draws random starts (use split=validation or split=test for fixed windows)")
        kind = self.resolved_kind()
        video_dir = Path(self.video_dir) if self.video_dir else _default_video_dir(Path(self.path))
        raw = {"parquet": _from_parquet, "lists": _from_lists, "vggsound": _from_vggsound,
               "list": _from_list, "dir": _from_dir}[kind](self, video_dir)
        starts = read_fixed_starts(self.fixed_starts) if self.fixed_starts else {}
        clips, missing, unlisted = [], 0, 0
        for clip_id, path, start in sorted(raw):
            if not Path(path).is_file():
                missing += 1
                log.debug("missing media file %s", path)
                continue
            if not self.is_train:
                if clip_id in starts:
                    start = starts[clip_id]
                elif start is None:
                    unlisted += 1
                    start = 0.0
            else:
                start = None
            clips.append(ClipRef(clip_id, str(path), start))
        if missing:
            log.warning("%s: %d of %d clips have no media file under %s and are skipped", self.path, missing,
                        len(raw), video_dir)
        if unlisted and self.fixed_starts:
            log.warning("%d %s clips are not in %s; they start at 0.0 s", unlisted, self.split, self.fixed_starts)
        if self.limit:
            clips = clips[: self.limit]
        if not clips:
            raise DataError(f"no usable clips for split {self.split!r} in {self.path!r} (media dir {video_dir})")
        return clips


def _default_video_dir(path: Path) -> Path:
    """A directory itself; for an index file its folder, or that folder's ``video/`` (the `visualsound synth`
    layout) when it has one."""
    if path.is_dir():
        return path
    return path.parent / "video" if (path.parent / "video").is_dir() else path.parent


def _find_media(video_dir: Path, name: str) -> Path:
    """``video_dir/name`` if it exists (name with extension), else the first ``name + suffix`` that exists."""
    direct = video_dir / name
    if direct.suffix.lower() in MEDIA_SUFFIXES:
        return direct
    for suffix in MEDIA_SUFFIXES:
        cand = video_dir / f"{name}{suffix}"
        if cand.is_file():
            return cand
    return video_dir / f"{name}.mp4"


def _from_parquet(src: DataSource, video_dir: Path) -> list[tuple[str, str, float | None]]:
    import pandas as pd

    df = pd.read_parquet(src.path)
    id_col = next((c for c in ("clip_id", "id", "video_id", "filename", "file") if c in df.columns), None)
    path_col = next((c for c in ("path", "video_path", "media_path") if c in df.columns), None)
    if id_col is None and path_col is None:
        raise DataError(f"{src.path}: needs a clip id column (clip_id/id/video_id) or a path column; "
                        f"has {list(df.columns)}")
    split_col = next((c for c in ("visualsound_split", "split") if c in df.columns), None)
    if split_col is not None:  # `visualsound build` tables: visualsound_split (split = the VGGSound split)
        df = df[df[split_col] == src.split]
    base = Path(src.video_dir) if src.video_dir else Path(src.path).parent
    start_col = next((c for c in ("start_sec", "start") if c in df.columns), None)
    out = []
    for row in df.to_dict("records"):
        if path_col is not None:
            p = Path(str(row[path_col]))
            p = p if p.is_absolute() else base / p
        else:
            p = _find_media(video_dir, str(row[id_col]))
        clip_id = str(row[id_col]) if id_col is not None else p.stem
        start = float(row[start_col]) if start_col is not None and not src.is_train else None
        out.append((clip_id, str(p), start))
    return out


def vggsound_clip_id(ytid: str, start: int) -> str:
    """The V-AURA/VGGSound file stem ``<ytid>_<start ms>_<end ms>`` of a 10 s clip."""
    return f"{ytid}_{start * 1000}_{(start + 10) * 1000}"


def _from_lists(src: DataSource, video_dir: Path) -> list[tuple[str, str, float | None]]:
    p = Path(src.path)
    if p.is_dir():
        lists = sorted(p.glob(f"*_{src.split}.txt"))
        if len(lists) != 1:
            raise DataError(f"{p}: expected exactly one '*_{src.split}.txt' id list, found {[x.name for x in lists]}")
        p = lists[0]
        if not src.video_dir:
            raise DataError("kind=lists with a split directory needs video_dir=<media dir>")
    ids = [line.strip() for line in p.read_text().splitlines() if line.strip()]
    if src.meta:
        with open(src.meta, newline="") as f:
            rows = list(csv.reader(f))
        known = {vggsound_clip_id(r[0], int(float(r[1]))) for r in rows[1:] if len(r) >= 2}
        dropped = len([i for i in ids if i not in known])
        if dropped:
            log.warning("%s: %d ids are not in the meta file %s and are skipped", p, dropped, src.meta)
        ids = [i for i in ids if i in known]
    return [(i, str(_find_media(video_dir, i)), None) for i in ids]


def _from_vggsound(src: DataSource, video_dir: Path) -> list[tuple[str, str, float | None]]:
    with open(src.path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    if rows and not _is_number(rows[0][1] if len(rows[0]) > 1 else ""):
        rows = rows[1:]  # header
    out = []
    for r in rows:
        if len(r) < 4:
            raise DataError(f"{src.path}: rows must be ytid,start,label,split; got {r}")
        if r[3].strip() != src.split:
            continue
        ytid, start = r[0].strip(), int(float(r[1]))
        cands = [vggsound_clip_id(ytid, start), f"{ytid}_{start:06d}", ytid]
        path = next((p for p in (_find_media(video_dir, c) for c in cands) if p.is_file()),
                    _find_media(video_dir, cands[0]))
        out.append((path.stem, str(path), None))
    return out


def _from_list(src: DataSource, video_dir: Path) -> list[tuple[str, str, float | None]]:
    names = [line.strip() for line in Path(src.path).read_text().splitlines() if line.strip()]
    out = []
    for name in names:
        p = _find_media(video_dir, name)
        out.append((p.stem, str(p), None))
    return out


def _from_dir(src: DataSource, video_dir: Path) -> list[tuple[str, str, float | None]]:
    listing = list_video_files(src.path)
    listing.log_skipped(src.path, log)
    stems = [p.stem for p in listing.videos]
    dups = sorted({s for s in stems if stems.count(s) > 1})
    if dups:
        raise DataError(f"{src.path}: several videos share the names {dups[:5]} (clip ids are file stems); rename "
                        "or remove the extra files")
    return [(p.stem, str(p), None) for p in listing.videos]


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def read_fixed_starts(path: str | os.PathLike) -> dict[str, float]:
    """Read a ``file,start_sec`` csv (header required) into ``{clip id: start seconds}``."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or len(header) < 2:
            raise DataError(f"{path}: expected a 'file,start_sec' header")
        return {Path(r[0]).stem: float(r[1]) for r in reader if len(r) >= 2}


# -- windows ---------------------------------------------------------------------------------------------------
def random_start(duration: float, cfg: DataConfig, rng: np.random.Generator) -> float:
    """A uniform start in ``[0, duration - clip_seconds - margin]`` (the release's training sampling)."""
    hi = duration - cfg.clip_seconds - cfg.start_margin
    if hi < 0:
        raise BadClipError(f"clip of {duration:.3f} s is shorter than a {cfg.clip_seconds} s window")
    return float(rng.uniform(0.0, hi)) if hi > 0 else 0.0


def grid_starts(duration: float, cfg: DataConfig) -> list[float]:
    """Cached-mode starts: every multiple of ``start_grid`` whose window fits (with the margin) in the clip."""
    n = math.floor((duration - cfg.clip_seconds - cfg.start_margin) / cfg.start_grid + 1e-9) + 1
    if n < 1:
        raise BadClipError(f"clip of {duration:.3f} s is shorter than a {cfg.clip_seconds} s window")
    return [round(i * cfg.start_grid, 6) for i in range(n)]


# -- transforms -------------------------------------------------------------------------------------------------
def resize_short_side(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> uint8 ``[T, 3, H', W']`` with ``min(H', W') = size`` (bilinear, antialiased)."""
    assert frames.dim() == 4 and frames.shape[-1] == 3, f"frames must be [T, H, W, 3], got {tuple(frames.shape)}"
    t, h, w, _ = frames.shape
    x = frames.permute(0, 3, 1, 2)
    if min(h, w) == size:
        return x.contiguous()
    nh, nw = (size, max(size, round(w * size / h))) if h <= w else (max(size, round(h * size / w)), size)
    y = F.interpolate(x.float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    return y.round_().clamp_(0, 255).to(torch.uint8)


def crop_frames(x: torch.Tensor, crop: int, top: int, left: int, flip: bool) -> torch.Tensor:
    """``[T, 3, H, W]`` -> ``[T, 3, crop, crop]`` at (top, left), optionally flipped left-right."""
    _, _, h, w = x.shape
    assert h >= crop and w >= crop, f"cannot crop {crop} from {h}x{w}"
    out = x[:, :, top:top + crop, left:left + crop]
    return out.flip(-1).contiguous() if flip else out.contiguous()


def spatial_transform(frames: torch.Tensor, cfg: DataConfig, train: bool,
                      rng: np.random.Generator | None = None) -> torch.Tensor:
    """Resize the short side to ``cfg.resize`` then random crop + flip (train) or centre crop (eval).

    frames uint8 ``[T, H, W, 3]`` -> uint8 ``[T, 3, crop, crop]`` (the encoder's preprocessing normalises).
    """
    x = resize_short_side(frames, cfg.resize)
    _, _, h, w = x.shape
    if train:
        assert rng is not None, "training transforms need a generator"
        top = int(rng.integers(0, h - cfg.crop + 1))
        left = int(rng.integers(0, w - cfg.crop + 1))
        flip = bool(rng.random() < cfg.flip_prob)
    else:
        top, left, flip = (h - cfg.crop) // 2, (w - cfg.crop) // 2, False
    return crop_frames(x, cfg.crop, top, left, flip)


def fit_length(x: torch.Tensor, n: int, what: str, tolerance: int) -> torch.Tensor:
    """Cut the last axis to `n`; a shortfall of at most `tolerance` is padded by repeating the last element,
    a larger one raises `BadClipError`."""
    have = x.shape[-1] if what == "audio" else x.shape[0]
    if have < n - tolerance or have == 0:
        raise BadClipError(f"decoded {have} {what} {'samples' if what == 'audio' else 'frames'}, need {n}")
    if what == "audio":
        return F.pad(x, (0, max(0, n - have)), mode="replicate")[..., :n] if have < n else x[..., :n]
    if have < n:
        x = torch.cat([x, x[-1:].expand(n - have, *x.shape[1:])])
    return x[:n]


def decode_audio(path: str, start: float, cfg: DataConfig) -> torch.Tensor:
    """One window of mono audio at ``cfg.sample_rate``: float32 ``[1, num_samples]`` (`BadClipError` if short)."""
    from visualsound import media

    try:
        audio = torch.as_tensor(media.read_audio(path, start=start, duration=cfg.clip_seconds + cfg.start_margin,
                                                 sample_rate=cfg.sample_rate, mono=True))
    except media.MediaError as e:
        raise BadClipError(str(e)) from e
    return fit_length(audio.reshape(1, -1).float(), cfg.num_samples, "audio", tolerance=cfg.sample_rate // 100)


def decode_frames(path: str, start: float, cfg: DataConfig, frame_count: int | None = None) -> torch.Tensor:
    """``frame_count`` frames (default one window) at ``cfg.fps`` from `start`: uint8 ``[T, H, W, 3]``."""
    from visualsound import media

    n_frames = cfg.num_frames if frame_count is None else frame_count
    try:
        frames = torch.as_tensor(media.read_video(path, start=start, duration=n_frames / cfg.fps + cfg.start_margin,
                                                  fps=cfg.fps))
    except media.MediaError as e:
        raise BadClipError(str(e)) from e
    return fit_length(frames, n_frames, "video", tolerance=1)


def decode_window(path: str, start: float, cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One 2.56 s window: (uint8 frames ``[64, H, W, 3]``, float32 mono audio ``[1, 112896]``); a short or
    undecodable clip raises `BadClipError`."""
    return decode_frames(path, start, cfg), decode_audio(path, start, cfg)


def clip_duration(path: str) -> float:
    """Usable duration of a clip: the shorter of its video and audio streams."""
    from visualsound import media

    try:  # a missing stream (or cover art alone, which is not video) raises with the reason
        info = media.probe(path, require_video=True, require_audio=True)
    except media.MediaError as e:
        raise BadClipError(str(e)) from e
    dur = float(info.duration)
    if info.sample_rate and info.num_samples:
        dur = min(dur, info.num_samples / info.sample_rate)
    if info.fps and info.num_frames:
        dur = min(dur, info.num_frames / info.fps)
    return dur


# -- the on-the-fly dataset ------------------------------------------------------------------------------------
class ClipDataset(torch.utils.data.Dataset):
    """Decodes one 2.56 s window per item in a DataLoader worker.

    Item: ``{"index", "clip_id", "start", "video": uint8 [64, 3, 224, 224], "audio": float32 [1, 112896]}``, or
    ``{"index", "clip_id", "bad": reason}`` for an unusable clip (the collate function drops and counts it); any
    exception while decoding a clip makes it such an item.
    """

    def __init__(self, clips: Sequence[ClipRef], cfg: DataConfig, train: bool, seed: int = 0) -> None:
        self.clips = list(clips)
        self.cfg = cfg
        self.train = train
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def fingerprint(self) -> str:
        """sha256 of the clip ids and fixed starts in order (not the paths: the same clips staged elsewhere match)."""
        import hashlib
        import json

        return hashlib.sha256(json.dumps([[c.clip_id, c.start] for c in self.clips]).encode()).hexdigest()

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        clip = self.clips[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        try:
            if self.train:
                start = random_start(clip_duration(clip.path), self.cfg, rng)
            else:
                start = clip.start if clip.start is not None else 0.0
            frames, audio = decode_window(clip.path, start, self.cfg)
            video = spatial_transform(frames, self.cfg, self.train, rng)
        except BadClipError as e:
            return {"index": index, "clip_id": clip.clip_id, "bad": str(e)}
        except Exception as e:  # noqa: BLE001 - one file must never end a days-long run (a resume would meet it again)
            log.warning("clip %s (%s) failed unexpectedly", clip.clip_id, clip.path, exc_info=True)
            return {"index": index, "clip_id": clip.clip_id, "bad": f"{type(e).__name__}: {e}"}
        return {"index": index, "clip_id": clip.clip_id, "start": start, "video": video, "audio": audio}


def collate_clips(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the good items of a batch; bad ones go to ``batch["bad"]`` as ``(clip_id, reason)`` pairs.

    Tensors are stacked along a new batch axis (``video [B, 64, 3, 224, 224]``, ``audio [B, 1, N]`` or the
    cached ``codes [B, K, T]``, ``visual [B, 32, 768]``); other fields become lists.
    """
    good = [it for it in items if "bad" not in it]
    out: dict[str, Any] = {"bad": [(it["clip_id"], it["bad"]) for it in items if "bad" in it], "size": len(good)}
    if good:
        for key in good[0]:
            vals = [it[key] for it in good]
            out[key] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    return out


def clip_name(dataset: torch.utils.data.Dataset, index: int) -> str:
    """The clip id of item `index` of a `ClipDataset` / `CachedWindows` without loading it (else ``item N``)."""
    with contextlib.suppress(AttributeError, IndexError):
        return dataset.clips[index].clip_id  # type: ignore[attr-defined]
    with contextlib.suppress(AttributeError, IndexError):
        return dataset.clip_ids[index]  # type: ignore[attr-defined]
    return f"item {index}"


class WorkerTracked(torch.utils.data.Dataset):
    """`dataset` as the DataLoader workers load it: each worker records the index it is loading
    (`visualsound.utils.loader.WorkerSlots`, so a dead worker's clip can be named), and the indices in `excluded`
    (clips that killed a worker) are bad items ``{"index", "clip_id", "bad": reason}`` without being loaded."""

    def __init__(self, dataset: torch.utils.data.Dataset, excluded: dict[int, str], workers: int) -> None:
        from visualsound.utils.loader import WorkerSlots

        self.dataset, self.excluded = dataset, dict(excluded)
        self.slots = WorkerSlots(workers)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index in self.excluded:
            return {"index": index, "clip_id": clip_name(self.dataset, index), "bad": self.excluded[index]}
        self.slots.enter(index)
        item = self.dataset[index]
        self.slots.leave()
        return item


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Deterministic, resumable batches of one epoch for rank `rank` of `world`.

    Training: a permutation seeded by ``(seed, epoch)`` is cut into global batches of ``batch_size * world``
    indices (the incomplete tail is dropped) and rank ``r`` takes slice ``r`` of each, so a 2-process run sees
    exactly the global batches of a 1-process run with twice the batch size. Evaluation: indices in order, rank
    ``r`` takes ``r::world``, nothing dropped. ``start`` skips the first batches (resume).
    """

    def __init__(self, n: int, batch_size: int, train: bool, seed: int = 0, epoch: int = 0, rank: int = 0,
                 world: int = 1, start: int = 0) -> None:
        self.n, self.batch_size, self.train = n, batch_size, train
        self.seed, self.epoch, self.rank, self.world, self.start = seed, epoch, rank, world, start
        if train and n < batch_size * world:
            raise DataError(f"{n} training clips cannot fill one global batch of {batch_size} x {world} processes")

    def _batches(self) -> list[list[int]]:
        if self.train:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            perm = torch.randperm(self.n, generator=g).tolist()
            gb = self.batch_size * self.world
            return [perm[i + self.rank * self.batch_size: i + (self.rank + 1) * self.batch_size]
                    for i in range(0, self.n - gb + 1, gb)]
        mine = list(range(self.rank, self.n, self.world))
        return [mine[i:i + self.batch_size] for i in range(0, len(mine), self.batch_size)]

    def __iter__(self):
        yield from self._batches()[self.start:]

    def __len__(self) -> int:
        return max(0, len(self._batches()) - self.start)
