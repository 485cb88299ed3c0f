"""The VisualSound scoring job: ImageBind audio-visual scores for every clip of a VGGSound index.

Pipeline (one process per GPU or machine; ``--shard i/n`` splits the work)::

    index (csv rows + expected paths)  --shard i/n (hash of clip id)-->  minus clips already scored in OUT
      -> ClipDataset: DataLoader workers decode + preprocess one clip each (`preprocess_clip`) and return either
         tensors (video [15, 3, 2, 224, 224], audio [3, 1, 128, 204]) or a failure row (status + reason)
      -> collate: ok clips stacked to video [B, 15, 3, 2, 224, 224], audio [B, 3, 1, 128, 204]; failures ride along
      -> ImageBindAV.score on the device (fp32 by default; bf16 / fp16 under autocast)  -> scores [B]
      -> a Parquet shard (`visualsound.scores_io.write_shard`: atomic, unique name) every `batches_per_shard`
         batches; at the end of a run its shards are compacted into one.

Guarantees:

- every clip of the shard gets exactly one row (score, decode facts, status, reason); a bad file never stops the
  job: a `ClipError` becomes its status (missing, corrupt, truncated, no_audio, no_video, silent, too_short),
  any other worker exception becomes status ``error`` with the exception text as reason;
- resumable: a re-run skips clip ids already in OUT (``error`` rows are retried); a job killed at any moment
  (even SIGKILL) loses at most the batches not yet written (one batch with the default `batches_per_shard=1`)
  and never leaves a partial shard. Duplicates that a retry or a killed compaction may leave in the raw shards
  are resolved by `visualsound.scores_io.read_scores` (ok first, then the newest shard);
- a crashed decoding worker (a decoder segfault, the OOM killer) costs the job one loader restart: the clip that
  worker was decoding gets an ``error`` row naming the crash (see `_Run`); past ``max_worker_crashes`` the job
  stops with `ScoringError`;
- a scores folder never mixes recipes: a run refuses an OUT whose shards name another ``score_version``,
  ``checkpoint_sha256``, ``debug_weights``, ``dtype``, ``silence_threshold`` or ``min_duration``;
- the partition of ``--shard i/n`` depends only on the clip id (`visualsound.utils.shard.shard_of`), so any set
  of machines computes the same split and `visualsound merge` recombines their folders (or every process writes
  into one OUT: shard names are unique). ``--shard auto`` takes the SLURM array task, and torchrun ranks split
  a shard further (`visualsound.utils.shard.resolve_shard`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing as mp
import os
import re
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset

from visualsound.errors import ConfigError, ToolkitError
from visualsound.scores_io import STATUSES, done_clip_ids, list_shards, write_shard
from visualsound.utils.config import FrozenConfig, register_preset
from visualsound.utils.dtypes import DTYPES
from visualsound.utils.shard import select_shard
from visualsound.weights import DEBUG_WEIGHTS_TAG, checkpoint_digest

log = logging.getLogger(__name__)

# Tag of the scoring recipe (exact VisualSound preprocessing + ImageBind-huge cosine score); bump it whenever a
# change could move a score, so that old and new scores are never mixed in one folder.
SCORE_VERSION = "imagebind-visualsound-v1"
DEBUG_CHECKPOINT_TAG = DEBUG_WEIGHTS_TAG
# Shard metadata keys that must agree between a run and the shards already in its output folder.
RECIPE_KEYS = ("score_version", "checkpoint_sha256", "debug_weights", "dtype", "silence_threshold", "min_duration")
STALE_TEMP_SECONDS = 3600  # temp files of killed shard writes older than this are removed when a run starts
FACT_COLUMNS = ("video_fps", "duration", "audio_sample_rate", "audio_channels", "num_frames", "bad_packets")
# torch's messages for a dead DataLoader worker: "DataLoader worker (pid 12) is killed by signal: ..." and
# "DataLoader worker (pid(s) 12, 34) exited unexpectedly".
_CRASH_PIDS = re.compile(r"DataLoader worker \(pid(?:\(s\))? ([\d, ]+)\)")
INDEX_COLUMNS = ("clip_id", "youtube_id", "start_seconds", "label", "split", "path")


class ScoringError(ToolkitError):
    """The scoring job cannot run: a bad ``--shard``, an index without the needed columns, or an output folder
    holding scores of another recipe."""


@dataclass(frozen=True)
class ScoringConfig(FrozenConfig):
    """Knobs of one scoring run (the model and preprocessing are fixed by `SCORE_VERSION`).

    ``silence_threshold``: mark clips whose audio peak is at or below it ``silent`` (None: score them, as
    VisualSound did). ``min_duration``: mark clips whose video or audio is shorter (seconds) ``too_short``
    (0: score every decodable clip, as VisualSound did). ``retry_statuses``: statuses a resumed run scores again.
    """

    batch_size: int = 16
    workers: int = 4
    device: str = "cpu"
    dtype: str = "fp32"
    batches_per_shard: int = 1
    prefetch_factor: int = 2
    silence_threshold: float | None = None
    min_duration: float = 0.0
    retry_statuses: tuple[str, ...] = ("error",)
    compact: bool = True
    max_worker_crashes: int = 50

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.batches_per_shard < 1 or self.prefetch_factor < 1:
            raise ConfigError(f"ScoringConfig: batch_size ({self.batch_size}), batches_per_shard "
                              f"({self.batches_per_shard}) and prefetch_factor ({self.prefetch_factor}) must be >= 1")
        if self.workers < 0 or self.max_worker_crashes < 0:
            raise ConfigError(f"ScoringConfig: workers ({self.workers}) and max_worker_crashes "
                              f"({self.max_worker_crashes}) must be >= 0")
        if self.dtype not in DTYPES:
            raise ConfigError(f"ScoringConfig: dtype {self.dtype!r} is not one of {sorted(DTYPES)}")
        if self.min_duration < 0:
            raise ConfigError(f"ScoringConfig: min_duration must be >= 0, got {self.min_duration}")
        unknown = [s for s in self.retry_statuses if s not in STATUSES]
        if unknown:
            raise ConfigError(f"ScoringConfig: unknown retry statuses {unknown}; known {STATUSES}")


DEFAULT = register_preset(ScoringConfig, "default", ScoringConfig())
GPU = register_preset(ScoringConfig, "gpu", ScoringConfig(batch_size=32, workers=12, device="cuda"))
TINY = register_preset(ScoringConfig, "tiny", ScoringConfig(batch_size=2, workers=0))


# ------------------------------------------------------------------------------------------------ workers
def _empty_facts() -> dict[str, Any]:
    return {c: None for c in FACT_COLUMNS}


def _probe_facts(path: str) -> dict[str, Any]:
    """Decode facts of a clip that failed preprocessing, from `media.probe` (nulls where probing fails too)."""
    from visualsound.media import MediaError, probe

    try:
        info = probe(path)
    except MediaError as e:  # the clip's status is already recorded; only the facts stay unknown
        log.debug("no decode facts for %s: %s", path, e)
        return _empty_facts()
    return {"video_fps": info.fps, "duration": info.duration, "audio_sample_rate": info.sample_rate,
            "audio_channels": info.channels, "num_frames": info.num_frames, "bad_packets": None}


def load_item(record: Mapping[str, Any], silence_threshold: float | None = None,
              min_duration: float = 0.0) -> dict[str, Any]:
    """Decode + preprocess one clip (runs in a DataLoader worker).

    Returns ``{"row": dict, "video": [15, 3, 2, 224, 224] | None, "audio": [3, 1, 128, 204] | None}``; the row
    holds the index fields, the decode facts, ``status`` ("ok" until scored, else the failure) and ``reason``.
    Never raises for a bad clip: every exception becomes a failure row.
    """
    from visualsound.imagebind import ClipError, preprocess_clip

    row: dict[str, Any] = {c: record[c] for c in INDEX_COLUMNS}
    row.update(_empty_facts(), score=math.nan, status="ok", reason="")
    path = str(record["path"])
    if not record.get("exists", True):
        row.update(status="missing", reason=f"{path}: file not found")
        return {"row": row, "video": None, "audio": None}
    try:
        video, audio, facts = preprocess_clip(path, silence_threshold=silence_threshold)
    except ClipError as e:
        row.update(status=e.status, reason=str(e))
        if e.status != "missing":
            row.update(_probe_facts(path))
        return {"row": row, "video": None, "audio": None}
    except Exception as e:  # noqa: BLE001 - a bad file must never stop the job: it becomes an "error" row
        log.warning("unexpected failure on %s: %s: %s", path, type(e).__name__, e)
        row.update(status="error", reason=f"{type(e).__name__}: {e}")
        row.update(_probe_facts(path))
        return {"row": row, "video": None, "audio": None}
    row.update({c: facts[c] for c in FACT_COLUMNS})
    audio_seconds = facts["audio_num_samples"] / facts["audio_sample_rate"]
    if min(facts["duration"], audio_seconds) < min_duration:
        row.update(status="too_short", reason=f"{path}: video {facts['duration']:.3f} s, audio {audio_seconds:.3f} s;"
                                              f" minimum {min_duration:g} s")
        return {"row": row, "video": None, "audio": None}
    return {"row": row, "video": video, "audio": audio}


class ClipDataset(Dataset):
    """Index records -> `load_item` outputs (decoding happens in whichever process calls ``__getitem__``).

    With ``track_workers=W`` each DataLoader worker writes ``(pid, index)`` of the clip it is decoding into a
    shared array, so that `in_progress` can name the clip a crashed worker died on.
    """

    def __init__(self, records: Sequence[Mapping[str, Any]], silence_threshold: float | None = None,
                 min_duration: float = 0.0, track_workers: int = 0) -> None:
        self.records = list(records)
        self.silence_threshold = silence_threshold
        self.min_duration = min_duration
        self._slots = mp.Array("q", [-1] * (2 * track_workers), lock=False) if track_workers else None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        info = torch.utils.data.get_worker_info()
        if self._slots is None or info is None:
            return load_item(self.records[i], self.silence_threshold, self.min_duration)
        slot = 2 * info.id
        self._slots[slot], self._slots[slot + 1] = os.getpid(), i
        item = load_item(self.records[i], self.silence_threshold, self.min_duration)
        self._slots[slot + 1] = -1
        return item

    def in_progress(self, pids: set[int]) -> list[dict[str, Any]]:
        """Records being decoded by the workers with these pids."""
        if self._slots is None:
            return []
        pairs = [(self._slots[k], self._slots[k + 1]) for k in range(0, len(self._slots), 2)]
        return [self.records[i] for pid, i in pairs if pid in pids and i >= 0]


def crashed_item(record: Mapping[str, Any], message: str) -> dict[str, Any]:
    """The `load_item` output for a clip whose decoding worker died: status ``error`` (retried on resume)."""
    row: dict[str, Any] = {c: record[c] for c in INDEX_COLUMNS}
    row.update(_empty_facts(), score=math.nan, status="error",
               reason=f"the decoding worker crashed on this clip: {message}")
    return {"row": row, "video": None, "audio": None}


def collate_items(items: list[dict[str, Any]]) -> dict[str, Any]:
    """`load_item` outputs -> ``{"rows": [B] dicts, "ok": indices of rows with tensors, "video": [B_ok, 15, 3, 2,
    224, 224] | None, "audio": [B_ok, 3, 1, 128, 204] | None}``."""
    ok = [i for i, it in enumerate(items) if it["video"] is not None]
    return {"rows": [it["row"] for it in items], "ok": ok,
            "video": torch.stack([items[i]["video"] for i in ok]) if ok else None,
            "audio": torch.stack([items[i]["audio"] for i in ok]) if ok else None}


def _preload_decoders() -> None:
    """Import the decoding stack (PyAV, torchaudio's Kaldi fbank, media) in the parent, so that forked DataLoader
    workers inherit it instead of each paying the imports on its first clip."""
    import av  # noqa: F401
    import torchaudio.compliance.kaldi  # noqa: F401
    import torchaudio.functional  # noqa: F401

    import visualsound.media  # noqa: F401


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # parallelism comes from the workers; avoid N workers x M threads oversubscription


# ------------------------------------------------------------------------------------------------ the job
class _Run:
    """One pass over the clips to score: the model, rows not yet written, shards written, counts, progress.

    Worker crashes (a decoder segfault, a worker killed by the OOM killer) do not stop the pass: every worker
    records the index of the clip it is decoding (and its pid) in shared memory, so the clip that was being
    decoded by a dead worker gets an ``error`` row naming the crash, and a new loader resumes with the clips
    not yet seen.
    """

    def __init__(self, model: torch.nn.Module, out: Path, meta: Mapping[str, str], cfg: ScoringConfig,
                 device: torch.device, debug_weights: bool, bar: Any, max_batches: int | None) -> None:
        self.model, self.out, self.meta, self.cfg, self.device = model, out, dict(meta), cfg, device
        self.debug_weights, self.bar, self.max_batches = debug_weights, bar, max_batches
        self.pending: list[dict[str, Any]] = []
        self.written_ids: set[str] = set()
        self.shards: list[Path] = []
        self.counts: Counter[str] = Counter()
        self.batches = 0
        self.crashes = 0

    def seen(self) -> set[str]:
        """Clip ids whose rows are written or pending (the order of `flush` keeps every row in one of them)."""
        return self.written_ids | {r["clip_id"] for r in self.pending}

    def flush(self) -> None:
        if self.pending:
            rows = list(self.pending)
            self.shards.append(write_shard(rows, self.out, meta=self.meta))
            self.written_ids.update(r["clip_id"] for r in rows)
            self.pending.clear()

    def process(self, batch: dict[str, Any]) -> bool:
        """Score a collated batch and queue its rows; True once `max_batches` batches are done."""
        rows = batch["rows"]
        if batch["ok"]:
            scores = score_batch(self.model, batch["video"], batch["audio"], self.device, self.cfg.dtype).tolist()
            for i, s in zip(batch["ok"], scores):
                if math.isfinite(s):
                    rows[i]["score"] = s
                else:
                    rows[i].update(status="error", reason=f"non-finite score {s} (dtype {self.cfg.dtype})")
        for r in rows:
            r.update(score_version=SCORE_VERSION, debug_weights=self.debug_weights)
        self.pending.extend(rows)
        self.counts.update(r["status"] for r in rows)
        self.batches += 1
        if self.batches % self.cfg.batches_per_shard == 0:
            self.flush()
        failed = sum(self.counts.values()) - self.counts["ok"]
        self.bar.set_postfix(ok=self.counts["ok"], failed=failed, refresh=False)
        self.bar.update(len(rows))
        return self.max_batches is not None and self.batches >= self.max_batches

    def run(self, records: list[dict[str, Any]]) -> bool:
        """Score all `records`; returns True when stopped early by `max_batches`."""
        cfg = self.cfg
        remaining = records
        while remaining:
            dataset = ClipDataset(remaining, cfg.silence_threshold, cfg.min_duration, track_workers=cfg.workers)
            kw: dict[str, Any] = {"batch_size": cfg.batch_size, "shuffle": False, "num_workers": cfg.workers,
                                  "collate_fn": collate_items, "pin_memory": self.device.type == "cuda"}
            if cfg.workers > 0:  # out of order: a slow file delays only its own batch, never the ones behind it
                kw.update(prefetch_factor=cfg.prefetch_factor, in_order=False, worker_init_fn=_worker_init)
            try:
                for batch in DataLoader(dataset, **kw):
                    if self.process(batch):
                        return len(self.seen()) < len(records)
                return False
            except RuntimeError as e:
                if cfg.workers == 0 or not str(e).startswith("DataLoader worker"):
                    raise
                culprits, message = self._on_crash(e, dataset), str(e)
            seen = self.seen()
            blamed = [r for r in culprits if r["clip_id"] not in seen]
            blamed_ids = {r["clip_id"] for r in blamed}
            remaining = [r for r in remaining if r["clip_id"] not in seen and r["clip_id"] not in blamed_ids]
            if blamed and self.process(collate_items([crashed_item(r, message) for r in blamed])):
                return bool(remaining)
        return False

    def _on_crash(self, error: RuntimeError, dataset: ClipDataset) -> list[dict[str, Any]]:
        """Count a worker crash (raise `ScoringError` past ``max_worker_crashes``) and return the records the dead
        workers were decoding (parsed from torch's message: ``DataLoader worker (pid(s) 12, 34) ...``)."""
        self.crashes += 1
        if self.crashes > self.cfg.max_worker_crashes:
            raise ScoringError(f"decoding workers crashed {self.crashes} times (max_worker_crashes="
                               f"{self.cfg.max_worker_crashes}); last: {error}") from error
        m = _CRASH_PIDS.match(str(error))
        dead = {int(p) for p in re.findall(r"\d+", m.group(1))} if m else set()
        culprits = dataset.in_progress(dead)
        log.warning("%s; blaming %s, restarting the loader (crash %d of at most %d)", error,
                    [r["path"] for r in culprits] or "no clip", self.crashes, self.cfg.max_worker_crashes)
        return culprits


def score_batch(model: torch.nn.Module, video: torch.Tensor, audio: torch.Tensor, device: torch.device,
                dtype: str = "fp32") -> torch.Tensor:
    """ImageBind scores of a batch: video [B, 15, 3, 2, 224, 224], audio [B, 3, 1, 128, 204] -> float32 [B] on
    the CPU.

    fp32 is exactly `ImageBindAV.score`. bf16 / fp16 run the towers under `torch.autocast` (fp32 weights;
    matmuls in half precision, normalisations and softmax in fp32) and take the cosine of the fp32-cast
    embeddings.
    """
    assert video.shape[0] == audio.shape[0], f"batch sizes differ: {tuple(video.shape)} vs {tuple(audio.shape)}"
    video = video.to(device, non_blocking=True)
    audio = audio.to(device, non_blocking=True)
    if dtype == "fp32":
        return model.score(video, audio).cpu()
    with torch.autocast(device.type, dtype=DTYPES[dtype]):
        v, a = model.embed_vision(video), model.embed_audio(audio)
    return torch.nn.functional.cosine_similarity(v.float(), a.float(), dim=-1).cpu()


@dataclass
class ScoringSummary:
    """What a run did: clips in its shard, skipped as already done, scored now, status counts, shard files."""

    shard: tuple[int, int]
    in_shard: int
    skipped: int
    scored: int
    statuses: dict[str, int] = field(default_factory=dict)
    shards: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    loop_seconds: float = 0.0
    stopped_early: bool = False
    debug_weights: bool = False

    @property
    def clips_per_second(self) -> float:
        """Throughput of the decode + score loop (model loading and checkpoint hashing excluded)."""
        return self.scored / self.loop_seconds if self.loop_seconds > 0 else 0.0

    @property
    def remaining(self) -> int:
        return self.in_shard - self.skipped - self.scored


def _existing_recipes(out_dir: Path) -> dict[str, set[str]]:
    """Recipe metadata (`RECIPE_KEYS`) of the shards already in `out_dir`, read from their Parquet footers."""
    found: dict[str, set[str]] = {}
    if not out_dir.is_dir():
        return found
    for p in list_shards(out_dir):
        meta = pq.read_schema(p).metadata or {}
        for k in RECIPE_KEYS:
            v = meta.get(k.encode())
            if v is not None:
                found.setdefault(k, set()).add(v.decode())
    return found


def check_recipe(out_dir: str | os.PathLike, meta: Mapping[str, str]) -> None:
    """Raise `ScoringError` if shards in `out_dir` were scored with another recipe than `meta`."""
    for k, values in _existing_recipes(Path(out_dir)).items():
        if values != {str(meta[k])}:
            raise ScoringError(f"{out_dir} holds scores made with {k}={', '.join(sorted(values))}, this run asks for "
                               f"{k}={meta[k]}; the setting would not apply to the clips already scored there. Use "
                               "another --out folder (scores of different recipes are never mixed), or the same "
                               "settings to resume")


@contextlib.contextmanager
def _no_tf32(enabled: bool) -> Iterator[None]:
    """fp32 scoring means true fp32 on GPUs too: TF32 off for matmuls and cuDNN convolutions (the patch stems),
    the previous global settings restored afterwards."""
    if not enabled:
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _remove_stale_temps(out_dir: Path, max_age: float = STALE_TEMP_SECONDS) -> None:
    """Delete temp files that killed shard writes left (``.scores-*.parquet.*.tmp``, see `atomic_open`) once they
    are older than `max_age` seconds (younger ones may belong to a concurrent ``--shard`` run writing now)."""
    now = time.time()
    for p in out_dir.glob(".scores-*.parquet.*.tmp") if out_dir.is_dir() else ():
        with contextlib.suppress(FileNotFoundError):  # renamed into place by a concurrent writer meanwhile
            if now - p.stat().st_mtime > max_age:
                log.info("removing stale temp file %s", p)
                p.unlink()


def _compact(paths: list[Path], out_dir: Path, meta: Mapping[str, str]) -> Path:
    """Rewrite this run's shards as one shard (atomic), then delete them. A kill in between leaves identical
    duplicate rows, which `read_scores` resolves."""
    tables = [pq.read_table(p) for p in paths]
    frame = pa.concat_tables(tables).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    combined = write_shard(frame, out_dir, meta=meta)
    for p in paths:
        p.unlink()
    log.info("compacted %d shards (%d rows) into %s", len(paths), len(frame), combined)
    return combined


def score_clips(index: pd.DataFrame, out_dir: str | os.PathLike, config: ScoringConfig | None = None, *,
                checkpoint: str | os.PathLike | None = None, debug_weights: bool = False,
                shard: tuple[int, int] = (0, 1), max_batches: int | None = None,
                progress: bool = True) -> ScoringSummary:
    """Score the clips of `index` that belong to `shard` and are not yet in `out_dir`; write shards there.

    `index`: one row per clip with columns ``clip_id, youtube_id, start_seconds, label, split, path`` and
    optionally ``exists`` (`visualsound.vggsound.index_clips`). `max_batches` stops after that many batches
    (an interrupted run, for tests and smoke runs). Returns a `ScoringSummary`.
    """
    cfg = config or DEFAULT
    t0 = time.perf_counter()
    missing_cols = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing_cols:
        raise ScoringError(f"clip index lacks columns {missing_cols}; build it with vggsound.index_clips")
    out = Path(out_dir)
    # the recipe is checked before anything else: a re-run with other settings on a finished folder must not
    # report "nothing to do" as if its settings had been applied
    from visualsound.imagebind.checkpoint import WEIGHTS_NAME

    ckpt_path, digest = checkpoint_digest(WEIGHTS_NAME, checkpoint, debug_weights)
    meta = {"score_version": SCORE_VERSION, "checkpoint_sha256": digest, "debug_weights": str(debug_weights).lower(),
            "dtype": cfg.dtype, "silence_threshold": str(cfg.silence_threshold),
            "min_duration": f"{cfg.min_duration:g}"}
    check_recipe(out, meta)
    part = select_shard(index, shard)
    done = done_clip_ids(out, retry_statuses=cfg.retry_statuses)
    todo = part.loc[~part["clip_id"].isin(done)]
    summary = ScoringSummary(shard=shard, in_shard=len(part), skipped=len(part) - len(todo), scored=0,
                             debug_weights=debug_weights)
    log.info("shard %d/%d: %d clips, %d already scored, %d to do", shard[0], shard[1], len(part), summary.skipped,
             len(todo))
    if todo.empty:
        summary.seconds = time.perf_counter() - t0
        return summary

    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ScoringError(f"device {cfg.device!r} requested but CUDA is not available here (use --device cpu)")
    _remove_stale_temps(out)
    from visualsound import __version__
    from visualsound.imagebind import load_imagebind

    meta["software_version"] = __version__
    model = load_imagebind(ckpt_path, debug_weights=debug_weights, device=device)

    cols = [c for c in (*INDEX_COLUMNS, "exists") if c in todo.columns]
    records = todo.loc[:, cols].to_dict("records")
    _preload_decoders()
    from tqdm import tqdm

    bar = tqdm(total=len(records), unit="clip", disable=not progress, dynamic_ncols=True, smoothing=0.05,
               desc=f"score {shard[0]}/{shard[1]}")
    run = _Run(model, out, meta, cfg, device, debug_weights, bar, max_batches)
    t_loop = time.perf_counter()
    try:
        with torch.inference_mode(), _no_tf32(cfg.dtype == "fp32"):
            summary.stopped_early = run.run(records)
    finally:
        run.flush()  # rows of completed batches are whole: keep them even when interrupted
        bar.close()
        summary.loop_seconds = time.perf_counter() - t_loop
    summary.scored = sum(run.counts.values())
    run_shards = run.shards
    if cfg.compact and len(run_shards) > 1:
        run_shards = [_compact(run_shards, out, meta)]
    summary.statuses = dict(sorted(run.counts.items()))
    summary.shards = run_shards
    summary.seconds = time.perf_counter() - t0
    log.info("shard %d/%d: scored %d clips in %.1f s (%.2f clips/s), statuses %s", shard[0], shard[1],
             summary.scored, summary.seconds, summary.clips_per_second, summary.statuses)
    return summary
