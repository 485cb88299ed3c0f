"""The in-sync filter (`vaura sync-filter`): keep clips whose audio and video Synchformer judges in sync.

V-AURA's data code drops a clip when fewer than N of its windows were judged in sync (N = 25 for train, 5 for
validation and test); it reads those judgements from a precomputed file whose producer is not public (see
``docs/sync_filter.md``). This job computes them on our Synchformer:

    clip --decode (25 fps, 16 kHz mono; DataLoader workers)--> both streams trimmed to the shorter one
         --short side 256, centre crop 224--> ClipWindows (frames [T, 224, 224, 3] uint8, audio [T * 640])
         --4.8 s windows every `stride_sec`--> predictor --> probabilities [W, 21] over offsets -2.0 .. +2.0 s
         --> per window: argmax offset, p(offset 0), top probability; counts of windows at offset 0 (exact) and
             within one class (tol1) --> decision: count >= min_sync_windows --> one Parquet row
             (`visualsound.sync_io.SYNC_SCHEMA`)

The predictor is anything with ``offsets`` (``[21]`` seconds) that maps a `ClipWindows` to ``[W, 21]``
probabilities; `SynchformerWindows` is the real one (each 16-frame segment is encoded once and shared by the
windows that contain it). Tests inject their own at this interface.

The job is resumable and sharded like `visualsound score`: ``--shard i/n`` by clip-id hash, a re-run skips clips
already in OUT (``error`` rows are retried), shards are written atomically every `clips_per_shard` clips and
compacted at the end, a bad file becomes a row with a status and reason, a crashed decoding worker costs one
``error`` row. A folder never mixes recipes (model checkpoint, windows, dtype); a re-run with another threshold
or count key re-decides the finished clips from their stored counts without running the model.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch

from vaura.synchformer import preprocess as P
from visualsound.errors import ConfigError
from visualsound.scores_io import (
    STATUSES,
    compact_shards,
    done_clip_ids,
    media_status,
    recipe_conflicts,
    remove_stale_temps,
    write_shard,
)
from visualsound.sync_io import (
    COUNT_COLUMNS,
    COUNT_KEYS,
    SYNC_FORMAT,
    SyncFilterError,
    canonical_split,
    decide,
    default_min_sync_windows,
    read_sync_results,
)
from visualsound.utils.config import FrozenConfig, register_preset
from visualsound.utils.dtypes import DTYPES
from visualsound.weights import DEBUG_WEIGHTS_TAG, checkpoint_digest

log = logging.getLogger(__name__)

# Tag of the recipe (model input, windowing, preprocessing, counting); bump it whenever a change could move a
# prediction, so that old and new judgements never mix in one folder.
SYNC_VERSION = "synchformer-insync-v1"
WEIGHTS_NAMES = ("synchformer_vggsound", "synchformer_audioset", "synchformer_lrs3")
DEBUG_CHECKPOINT_TAG = DEBUG_WEIGHTS_TAG
# shard metadata that must agree between a run and the shards already in its folder (the threshold and count key
# do not: a clip's decision is re-derived from its stored counts)
RECIPE_KEYS = ("sync_version", "checkpoint_sha256", "debug_weights", "stride_frames", "max_seconds", "dtype")
INDEX_COLUMNS = ("clip_id", "path", "label", "split")
# video containers a plain folder is searched for (the shared list of visualsound.media replaces this once it lands)
RESIZE_CHUNK = 32  # frames resized / normalised at once (bounds the temporary buffers)
DECODE_CHUNK_SECONDS = 8.0  # full-size frames decoded at once


class SyncFilterJobError(SyncFilterError):
    """The job cannot run: no threshold for a folder without splits, an output folder of another recipe, a bad
    index, duplicated clip ids."""


@dataclass(frozen=True)
class SyncFilterConfig(FrozenConfig):
    """Knobs of one in-sync filter run.

    ``stride_sec``: step between window starts (a whole number of 25 fps frames; multiples of 0.16 s let windows
    share every segment encoding). ``count_key``: ``exact`` (argmax == offset 0) or ``tol1`` (within one class).
    ``min_sync_windows``: the threshold for every clip; None takes ``split``'s default, or each clip's VGGSound
    split (train 25, validation / test 5). ``clips_per_batch``: clips a loader batch carries;
    ``segment_batch``: 16-frame segments per encoder call; ``window_batch``: windows per sync-head call.
    ``max_seconds``: judge at most this much of a clip (memory stays bounded on long videos; None: everything).
    """

    stride_sec: float = 0.16
    max_seconds: float | None = 60.0
    count_key: str = "exact"
    min_sync_windows: int | None = None
    split: str | None = None
    device: str = "cpu"
    dtype: str = "fp32"
    workers: int = 2
    clips_per_batch: int = 2
    segment_batch: int = 32
    window_batch: int = 64
    clips_per_shard: int = 64
    prefetch_factor: int = 2
    retry_statuses: tuple[str, ...] = ("error",)
    compact: bool = True
    max_worker_crashes: int = 50

    def __post_init__(self) -> None:
        frames = self.stride_sec * P.FPS
        if not (frames >= 1 and abs(frames - round(frames)) < 1e-6):
            raise ConfigError(f"SyncFilterConfig: stride_sec must be a positive multiple of 1/{P.FPS} s (whole "
                              f"frames), got {self.stride_sec}")
        if self.max_seconds is not None and self.max_seconds < P.WINDOW_FRAMES / P.FPS:
            raise ConfigError(f"SyncFilterConfig: max_seconds must be >= {P.WINDOW_FRAMES / P.FPS} s (one window) or "
                              f"None, got {self.max_seconds}")
        if self.count_key not in COUNT_KEYS:
            raise ConfigError(f"SyncFilterConfig: count_key must be one of {sorted(COUNT_KEYS)}, got "
                              f"{self.count_key!r}")
        if self.min_sync_windows is not None and self.min_sync_windows < 0:
            raise ConfigError(f"SyncFilterConfig: min_sync_windows must be >= 0, got {self.min_sync_windows}")
        if self.split is not None:
            try:
                canonical_split(self.split)
            except SyncFilterError as e:
                raise ConfigError(f"SyncFilterConfig: {e}") from e
        if self.dtype not in DTYPES:
            raise ConfigError(f"SyncFilterConfig: dtype {self.dtype!r} is not one of {sorted(DTYPES)}")
        if min(self.clips_per_batch, self.segment_batch, self.window_batch, self.clips_per_shard,
               self.prefetch_factor) < 1 or self.workers < 0 or self.max_worker_crashes < 0:
            raise ConfigError(f"SyncFilterConfig: batch sizes and clips_per_shard must be >= 1, workers and "
                              f"max_worker_crashes >= 0 (got {self})")
        unknown = [s for s in self.retry_statuses if s not in STATUSES]
        if unknown:
            raise ConfigError(f"SyncFilterConfig: unknown retry statuses {unknown}; known {STATUSES}")

    @property
    def stride_frames(self) -> int:
        return int(round(self.stride_sec * P.FPS))

    def threshold_for(self, clip_split: Any) -> int | None:
        """The threshold of a clip: `min_sync_windows`, else `split`'s default, else its own VGGSound split's
        default (None when it has none)."""
        if self.min_sync_windows is not None:
            return self.min_sync_windows
        split = self.split if self.split is not None else clip_split
        if split is None or (isinstance(split, float) and math.isnan(split)) or split == "":
            return None
        return default_min_sync_windows(split)


DEFAULT = register_preset(SyncFilterConfig, "default", SyncFilterConfig())
GPU = register_preset(SyncFilterConfig, "gpu", SyncFilterConfig(device="cuda", workers=8, clips_per_batch=4,
                                                                segment_batch=128, window_batch=128))
TINY = register_preset(SyncFilterConfig, "tiny", SyncFilterConfig(workers=0, clips_per_batch=1, segment_batch=8,
                                                                  clips_per_shard=2))


# ------------------------------------------------------------------------------------------------ windows
@dataclass
class ClipWindows:
    """One clip ready for Synchformer: ``frames`` uint8 ``[T, 224, 224, 3]`` at 25 fps (short side 256, centre crop
    224), ``audio`` float32 ``[T * 640]`` at 16 kHz mono (the same span), windows of 120 frames / 76,800 samples
    starting at frame 0 and every `stride_frames`; `clip_id` names the clip (for logs and test predictors)."""

    frames: torch.Tensor
    audio: torch.Tensor
    stride_frames: int
    clip_id: str = ""

    def __post_init__(self) -> None:
        t = self.frames.shape[0]
        assert self.frames.dim() == 4 and self.frames.shape[1:] == (P.CROP, P.CROP, 3) and \
            self.frames.dtype == torch.uint8, f"frames must be uint8 [T, {P.CROP}, {P.CROP}, 3], got " \
                                              f"{self.frames.dtype} {tuple(self.frames.shape)}"
        assert self.audio.shape == (t * P.SAMPLES_PER_FRAME,), \
            f"audio must be [{t * P.SAMPLES_PER_FRAME}] for {t} frames, got {tuple(self.audio.shape)}"
        assert t >= P.WINDOW_FRAMES, f"{t} frames hold no {P.WINDOW_FRAMES}-frame window"

    @property
    def num_windows(self) -> int:
        return (self.frames.shape[0] - P.WINDOW_FRAMES) // self.stride_frames + 1

    @property
    def starts(self) -> torch.Tensor:
        """``[W]`` int64 first frame of each window."""
        return torch.arange(self.num_windows) * self.stride_frames

    @property
    def start_seconds(self) -> list[float]:
        return [float(s) / P.FPS for s in self.starts]

    def windows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All windows as views (no copy): video uint8 ``[W, 120, 224, 224, 3]``, audio ``[W, 76800]``."""
        w = self.num_windows
        video = self.frames.unfold(0, P.WINDOW_FRAMES, self.stride_frames)[:w].permute(0, 4, 1, 2, 3)
        audio = self.audio.unfold(0, P.WINDOW_SAMPLES, self.stride_frames * P.SAMPLES_PER_FRAME)[:w]
        return video, audio

    def segment_starts(self) -> torch.Tensor:
        """``[W, 14]`` int64 first frame of every 16-frame segment of every window (segments stride 8)."""
        return self.starts[:, None] + (P.SEGMENT_FRAMES // 2) * torch.arange(P.N_SEGMENTS)[None]


class WindowPredictor(Protocol):
    """What the job needs from a model: the class grid and per-window probabilities."""

    offsets: torch.Tensor  # [K] seconds of each class, audio relative to video

    def __call__(self, clip: ClipWindows) -> torch.Tensor:  # [W, K] probabilities
        ...


class SynchformerWindows:
    """`WindowPredictor` on a `vaura.synchformer.Synchformer`: the unique 16-frame segments of all windows are
    encoded once (visual and audio), then each window's 14 segment features go through the sync head. Equals
    `vaura.synchformer.predict_windows` on ``clip.windows()`` with ``normalisation="fp16"`` (the paper protocol's
    pixel values), up to float rounding."""

    def __init__(self, model: torch.nn.Module, segment_batch: int = 32, window_batch: int = 64) -> None:
        self.model = model
        self.segment_batch, self.window_batch = segment_batch, window_batch
        self.offsets = model.offsets()

    @torch.inference_mode()
    def __call__(self, clip: ClipWindows) -> torch.Tensor:
        param = next(self.model.parameters())
        device, dtype = param.device, param.dtype
        seg = clip.segment_starts()  # [W, 14]
        uniq, inverse = torch.unique(seg, return_inverse=True)  # [U], [W, 14]
        lut = P.video_norm_lut().to(device=device, dtype=dtype)
        frames = clip.frames.to(device)
        audio = clip.audio.to(device)
        vis, aud = [], []
        for chunk in uniq.split(self.segment_batch):  # sorted starts: each chunk spans one short range of frames
            lo, hi = int(chunk[0]), int(chunk[-1]) + P.SEGMENT_FRAMES
            span = lut[frames[lo:hi].permute(0, 3, 1, 2).int()]  # [hi - lo, 3, 224, 224], each frame once
            idx = (chunk[:, None] - lo + torch.arange(P.SEGMENT_FRAMES)[None]).to(device)  # [n, 16]
            v = span[idx]  # [n, 16, 3, 224, 224]
            vis.append(self.model.visual_features(v.unsqueeze(0))[0])  # [n, 8, Dv]
            sidx = (chunk[:, None] * P.SAMPLES_PER_FRAME + torch.arange(P.SEGMENT_SAMPLES)[None]).to(device)
            mel = P.log_mel_for_ast(audio[sidx].float()).unsqueeze(1).to(dtype)  # [n, 1, 128, 66]
            aud.append(self.model.audio_features(mel.unsqueeze(0))[0])  # [n, 6, Da]
        vis_all, aud_all = torch.cat(vis), torch.cat(aud)
        probs = []
        for rows in inverse.split(self.window_batch):
            logits = self.model.compare(vis_all[rows.to(device)], aud_all[rows.to(device)])[0]
            probs.append(torch.softmax(logits.float(), dim=-1))
        return torch.cat(probs).cpu()


# ------------------------------------------------------------------------------------------------ decoding
def _failure(row: dict[str, Any], status: str, reason: str) -> dict[str, Any]:
    row.update(status=status, reason=reason)
    return {"row": row, "frames": None, "audio": None}


def _prepared(frames: torch.Tensor) -> torch.Tensor:
    """``[T, H, W, 3]`` uint8 -> ``[T, 224, 224, 3]``: short side 256 (antialiased bicubic), centre crop 224, in
    chunks of `RESIZE_CHUNK` frames."""
    return torch.cat([P.center_crop(P.resize_short_side(frames[i:i + RESIZE_CHUNK], 256))[0]
                      for i in range(0, frames.shape[0], RESIZE_CHUNK)])


def read_prepared_frames(path: str, max_seconds: float | None) -> tuple[torch.Tensor, bool]:
    """The clip's frames at 25 fps (display rotation applied), prepared (`_prepared`), decoded `DECODE_CHUNK_SECONDS`
    at a time so that only one chunk of full-size frames is in memory; at most `max_seconds` (None: all). Returns
    ``(frames [T, 224, 224, 3], longer)``; `longer` says the video goes on past `max_seconds`."""
    from visualsound.media import MediaWindowError, read_video

    limit = math.inf if max_seconds is None else max_seconds
    parts: list[torch.Tensor] = []
    start = 0.0
    while start < limit:
        duration = min(DECODE_CHUNK_SECONDS, limit - start)
        try:
            frames = read_video(path, start=start, duration=duration, fps=P.FPS, apply_rotation=True)
        except MediaWindowError:
            if not parts:
                raise
            return torch.cat(parts), False  # the previous chunk ended exactly at the end of the video
        parts.append(_prepared(frames))
        if frames.shape[0] < round(duration * P.FPS):
            return torch.cat(parts), False
        start += duration
    try:
        read_video(path, start=limit, duration=1 / P.FPS, fps=P.FPS)
    except MediaWindowError:
        return torch.cat(parts), False
    return torch.cat(parts), True


def load_clip(record: Mapping[str, Any], max_seconds: float | None = None) -> dict[str, Any]:
    """Decode + prepare one clip (runs in a DataLoader worker): ``{"row", "frames" [T, 224, 224, 3] uint8 | None,
    "audio" [T * 640] | None}`` with both streams trimmed to the shorter one, at most `max_seconds` long (a note in
    ``reason`` says when the clip is longer). Never raises for a bad clip: the row carries the status and reason."""
    from visualsound.media import MediaError, read_audio

    row: dict[str, Any] = {c: record.get(c) for c in INDEX_COLUMNS}
    row.update(status="ok", reason="", duration=None)
    path = str(record["path"])
    if not record.get("exists", True):
        return _failure(row, "missing", f"{path}: file not found")
    try:
        frames, longer = read_prepared_frames(path, max_seconds)
        audio = read_audio(path, duration=max_seconds, sample_rate=P.SAMPLE_RATE, mono=True)[0]
        n = min(frames.shape[0], audio.shape[0] // P.SAMPLES_PER_FRAME)
        row["duration"] = n / P.FPS
        if n < P.WINDOW_FRAMES:
            return _failure(row, "too_short", f"{path}: video {frames.shape[0] / P.FPS:.2f} s, audio "
                                              f"{audio.shape[0] / P.SAMPLE_RATE:.2f} s; a Synchformer window needs "
                                              f"{P.WINDOW_FRAMES / P.FPS:.1f} s of both")
        if longer:
            row["reason"] = f"judged on the first {max_seconds:g} s only (max_seconds)"
        frames = frames[:n].contiguous()
        audio = audio[:n * P.SAMPLES_PER_FRAME].contiguous()
    except MediaError as e:
        return _failure(row, media_status(e), str(e))
    except Exception as e:  # noqa: BLE001 - a bad file must never stop the job: it becomes an "error" row
        log.warning("unexpected failure on %s: %s: %s", path, type(e).__name__, e)
        return _failure(row, "error", f"{type(e).__name__}: {e}")
    return {"row": row, "frames": frames, "audio": audio}


def crashed_clip(record: Mapping[str, Any], message: str) -> dict[str, Any]:
    """The `load_clip` output for a clip whose decoding worker died: status ``error`` (retried on resume)."""
    row: dict[str, Any] = {c: record.get(c) for c in INDEX_COLUMNS}
    row.update(duration=None)
    return _failure(row, "error", f"the decoding worker crashed on this clip: {message}")


# ------------------------------------------------------------------------------------------------ rows
def _unjudged(row: dict[str, Any]) -> dict[str, Any]:
    row.update({"window_start_sec": [], "window_offset_sec": [], "window_p_sync": [], "window_p_top": [],
                "num_windows": None, "in_sync_windows": None, "in_sync_windows_tol1": None})
    return row


def judge(row: dict[str, Any], clip: ClipWindows, probs: torch.Tensor, offsets: torch.Tensor) -> dict[str, Any]:
    """Fill `row` with the per-window predictions of `probs` ``[W, K]`` over `offsets` ``[K]`` and the counts of
    windows at offset 0 (exact) and within one class of it. A malformed or non-finite output becomes ``error``."""
    w = clip.num_windows
    zero = int(offsets.abs().argmin())
    if probs.shape != (w, offsets.numel()):
        row.update(status="error", reason=f"predictor returned {tuple(probs.shape)} for {w} windows and "
                                          f"{offsets.numel()} classes")
        return _unjudged(row)
    if not torch.isfinite(probs).all():
        row.update(status="error", reason="non-finite offset probabilities")
        return _unjudged(row)
    top_p, top = probs.max(dim=-1)
    row.update({"window_start_sec": clip.start_seconds,
                "window_offset_sec": [float(offsets[i]) for i in top],
                "window_p_sync": probs[:, zero].double().tolist(),
                "window_p_top": top_p.double().tolist(),
                "num_windows": w,
                "in_sync_windows": int((top == zero).sum()),
                "in_sync_windows_tol1": int(((top - zero).abs() <= 1).sum())})
    return row


def _finish(row: dict[str, Any], cfg: SyncFilterConfig, debug_weights: bool) -> dict[str, Any]:
    """Threshold, count key, decision and recipe fields of a row."""
    threshold = cfg.threshold_for(row.get("split"))
    assert threshold is not None, f"no threshold for {row['clip_id']} (checked before the run)"
    count = row.get(COUNT_COLUMNS[cfg.count_key])
    row.update(count_key=cfg.count_key, min_sync_windows=threshold,
               passed=decide(count, threshold, row["status"]), sync_version=SYNC_VERSION,
               debug_weights=debug_weights)
    return row


# ------------------------------------------------------------------------------------------------ inputs
# ------------------------------------------------------------------------------------------------ the job
@dataclass
class SyncFilterSummary:
    """What a run did: clips in its shard, skipped as done, judged now, re-decided, statuses, decisions, shards."""

    shard: tuple[int, int]
    in_shard: int
    skipped: int
    judged: int = 0
    redecided: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    passed: int = 0
    shards: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False
    debug_weights: bool = False

    @property
    def remaining(self) -> int:
        return self.in_shard - self.skipped - self.judged


def _redecide(out: Path, part: pd.DataFrame, cfg: SyncFilterConfig, meta: Mapping[str, str]) -> tuple[int, Path | None]:
    """Re-derive the decision of this shard's finished clips whose stored threshold or count key differs from this
    run's (their counts are stored, so no model runs); the updated rows go into a new shard."""
    if not out.is_dir() or not any(out.glob("sync-*.parquet")):
        return 0, None
    df = read_sync_results(out)
    df = df.loc[df["clip_id"].isin(set(part["clip_id"])) & ~df["status"].isin(cfg.retry_statuses)]
    rows = []
    for r in df.to_dict("records"):
        threshold = cfg.threshold_for(r["split"])
        if int(r["min_sync_windows"]) == threshold and r["count_key"] == cfg.count_key:
            continue
        count = r[COUNT_COLUMNS[cfg.count_key]]
        r.update(count_key=cfg.count_key, min_sync_windows=threshold,
                 passed=decide(None if pd.isna(count) else int(count), threshold, r["status"]))
        rows.append(r)
    if not rows:
        return 0, None
    path = write_shard(rows, out, meta=meta, fmt=SYNC_FORMAT)
    log.info("re-decided %d finished clips with min_sync_windows / count_key of this run", len(rows))
    return len(rows), path


def filter_clips(index: pd.DataFrame, out_dir: str | os.PathLike, config: SyncFilterConfig | None = None, *,
                 checkpoint: str | os.PathLike | None = None, debug_weights: bool = False,
                 weights_name: str = "synchformer_vggsound", shard: tuple[int, int] = (0, 1),
                 max_batches: int | None = None, progress: bool = True,
                 predictor: WindowPredictor | None = None,
                 predictor_tag: str | None = None) -> SyncFilterSummary:
    """Judge the clips of `index` that belong to `shard` and are not yet in `out_dir`; write result shards there.

    `index`: one row per clip with ``clip_id`` and ``path`` (optional ``label``, ``split``, ``exists``), e.g.
    `visualsound.vggsound.index_clips` or `visualsound.vggsound.index_folder`. `predictor` replaces the
    Synchformer (tests; then
    `predictor_tag` names it in the shards' ``checkpoint_sha256`` so that its rows never mix with a model's).
    `max_batches` stops after that many loader batches (an interrupted run).
    """
    from visualsound.utils.shard import select_shard

    cfg = config or DEFAULT
    t0 = time.perf_counter()
    missing = [c for c in ("clip_id", "path") if c not in index.columns]
    if missing:
        raise SyncFilterJobError(f"clip index lacks columns {missing}")
    dup = index["clip_id"][index["clip_id"].duplicated()]
    if len(dup):
        raise SyncFilterJobError(f"clip index has duplicated clip ids, e.g. {dup.iloc[0]!r}")
    index = index.assign(**{c: index[c] if c in index.columns else None for c in ("label", "split")})
    unknown = [c for c, s in zip(index["clip_id"], index["split"]) if cfg.threshold_for(s) is None]
    if unknown:
        raise SyncFilterJobError(f"no in-sync threshold for {len(unknown)} clips without a split (e.g. "
                                 f"{unknown[0]}): pass --split train|validation|test or --min-sync-windows N")
    if weights_name not in WEIGHTS_NAMES:
        raise SyncFilterJobError(f"weights {weights_name!r} is not a Synchformer sync model; use one of "
                                 f"{WEIGHTS_NAMES}")
    out = Path(out_dir)
    part = select_shard(index, shard)

    if predictor is not None:
        if checkpoint is not None or debug_weights:
            raise ConfigError("pass a predictor, or a checkpoint / debug weights, not both")
        ckpt_path, digest = None, f"predictor:{predictor_tag or type(predictor).__name__}"
    else:
        ckpt_path, digest = checkpoint_digest(weights_name, checkpoint, debug_weights)
    meta = {"sync_version": SYNC_VERSION, "checkpoint_sha256": digest, "debug_weights": str(debug_weights).lower(),
            "stride_frames": str(cfg.stride_frames), "max_seconds": str(cfg.max_seconds), "dtype": cfg.dtype,
            "weights_name": weights_name}
    conflicts = recipe_conflicts(out, meta, RECIPE_KEYS)
    if conflicts:
        raise SyncFilterJobError("; ".join(conflicts) + "; use another --out folder (judgements of different "
                                 "recipes must not be mixed)")
    remove_stale_temps(out, prefix=SYNC_FORMAT.prefix)
    from visualsound import __version__

    meta["software_version"] = __version__
    redecided, redecided_shard = _redecide(out, part, cfg, meta)
    done = done_clip_ids(out, retry_statuses=cfg.retry_statuses, fmt=SYNC_FORMAT)
    todo = part.loc[~part["clip_id"].isin(done)]
    summary = SyncFilterSummary(shard=shard, in_shard=len(part), skipped=len(part) - len(todo),
                                redecided=redecided, debug_weights=debug_weights)
    if redecided_shard is not None:
        summary.shards.append(redecided_shard)
    log.info("shard %d/%d: %d clips, %d already judged (%d re-decided), %d to do", shard[0], shard[1], len(part),
             summary.skipped, redecided, len(todo))
    if todo.empty:
        summary.seconds = time.perf_counter() - t0
        return summary

    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SyncFilterJobError(f"device {cfg.device!r} requested but CUDA is not available here (use --device cpu)")
    if predictor is None:
        from vaura.synchformer import load_sync_model

        model = load_sync_model(ckpt_path, debug_weights=debug_weights, device=device)
        if cfg.dtype != "fp32":
            model = model.to(DTYPES[cfg.dtype])
        predictor = SynchformerWindows(model, cfg.segment_batch, cfg.window_batch)
    offsets = predictor.offsets.float().cpu()
    if float(offsets.abs().min()) > 1e-6:
        raise SyncFilterJobError(f"the predictor's class grid has no offset 0: {offsets.tolist()}")

    cols = [c for c in (*INDEX_COLUMNS, "exists") if c in todo.columns]
    records = todo.loc[:, cols].to_dict("records")
    run = _Run(out, meta, cfg, debug_weights, predictor, offsets)
    from tqdm import tqdm

    from visualsound.utils.loader import tolerant_batches

    bar = tqdm(total=len(records), unit="clip", disable=not progress, dynamic_ncols=True, smoothing=0.05,
               desc=f"sync-filter {shard[0]}/{shard[1]}")
    batches = tolerant_batches(records, functools.partial(load_clip, max_seconds=cfg.max_seconds), crashed_clip,
                               batch_size=cfg.clips_per_batch, workers=cfg.workers,
                               prefetch_factor=cfg.prefetch_factor, max_crashes=cfg.max_worker_crashes)
    try:
        for n, batch in enumerate(batches, start=1):
            run.process(batch)
            bar.set_postfix(passed=run.passed, failed=run.judged - run.passed, refresh=False)
            bar.update(len(batch))
            if max_batches is not None and n >= max_batches:
                summary.stopped_early = run.judged < len(records)
                break
    finally:
        run.flush()  # rows of finished clips are whole: keep them even when interrupted
        bar.close()
    shards = run.shards
    if cfg.compact and len(shards) > 1:
        shards = [compact_shards(shards, out, meta, SYNC_FORMAT)]
    summary.shards.extend(shards)
    summary.judged, summary.passed = run.judged, run.passed
    summary.statuses = dict(sorted(run.counts.items()))
    summary.seconds = time.perf_counter() - t0
    log.info("shard %d/%d: judged %d clips in %.1f s, %d passed, statuses %s", shard[0], shard[1], summary.judged,
             summary.seconds, summary.passed, summary.statuses)
    return summary


class _Run:
    """One pass: rows not yet written, shards written, counts."""

    def __init__(self, out: Path, meta: Mapping[str, str], cfg: SyncFilterConfig, debug_weights: bool,
                 predictor: Callable[[ClipWindows], torch.Tensor], offsets: torch.Tensor) -> None:
        self.out, self.meta, self.cfg, self.debug_weights = out, dict(meta), cfg, debug_weights
        self.predictor, self.offsets = predictor, offsets
        self.pending: list[dict[str, Any]] = []
        self.shards: list[Path] = []
        self.counts: Counter[str] = Counter()
        self.judged = self.passed = 0

    def flush(self) -> None:
        if self.pending:
            self.shards.append(write_shard(self.pending, self.out, meta=self.meta, fmt=SYNC_FORMAT))
            self.pending = []

    def judge_item(self, item: Mapping[str, Any]) -> dict[str, Any]:
        row = dict(item["row"])
        if item["frames"] is None:
            return _unjudged(row)
        try:
            clip = ClipWindows(item["frames"], item["audio"], self.cfg.stride_frames, str(row["clip_id"]))
            return judge(row, clip, self.predictor(clip), self.offsets)
        except Exception as e:  # noqa: BLE001 - one clip's failure is its row, never the job's end
            log.warning("prediction failed on %s: %s: %s", row["path"], type(e).__name__, e)
            row.update(status="error", reason=f"{type(e).__name__}: {e}")
            return _unjudged(row)

    def process(self, items: Sequence[Mapping[str, Any]]) -> None:
        for item in items:
            row = _finish(self.judge_item(item), self.cfg, self.debug_weights)
            self.pending.append(row)
            self.counts[row["status"]] += 1
            self.judged += 1
            self.passed += int(row["passed"])
            if len(self.pending) >= self.cfg.clips_per_shard:
                self.flush()
