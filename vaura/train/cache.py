"""The feature cache: DAC codes and Segment AVCLIP features precomputed once (`vaura extract`), with a manifest
that training checks.

Layout of a cache directory::

    manifest.json            format, version, encoder/codec identities (checksums), window grid, source, totals
    clips.txt                the planned clip ids (one per line, shard order)
    shards/000000/           one directory per `shard_size` clips, written atomically (tmp dir + rename)
        codes.npy            uint16 [W, K, T]   DAC codes of every window
        visual.npy           float16|float32 [W, 32, 768]  visual features of every window
        windows.json         [{"clip": id, "start": seconds}] per row, plus "bad": [[id, reason]]

Approximation (documented in the manifest as ``"starts": "grid"``): training draws a random start per step, but
a cache cannot hold every start, so a training cache holds the windows starting at every multiple of
``start_grid`` (0.64 s = 16 frames by default) and training picks one of them at random; the frames are centre
cropped without flips (the random crop and flip of on-the-fly training are not reproduced). Evaluation caches
(``"starts": "fixed"``) hold exactly the one window per clip at its fixed start, so validation is exact.

Extraction splits over jobs (``vaura extract --shard i/n``, ``auto`` for a SLURM array, torchrun ranks): job
``i`` of ``n`` extracts the cache shards ``s`` with ``s % n == i`` (shard ``s`` holds clips ``s * shard_size`` ..
of the planned clip list, ``clips.txt``, which every job plans alike from the same data). Each shard directory is
written by one job, atomically, into the one cache directory: there is nothing to merge. Every job writes the same
manifest; the job that finds every shard present when it ends marks the cache complete (`finalize`), so training
reads the union of all parts once the last one finishes (or after any rerun, sharded or not, that finds them all).

Extraction is resumable: finished shards are kept, the manifest of a rerun must equal the stored one (same
encoder, codec, grid and clip list), temp directories of shard writes a killed run left are removed, and bad
clips (any exception while decoding one, or its decoding worker dying: `visualsound.utils.loader`) are recorded
per shard with the reason and counted, never fatal.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaura.train.config import DataConfig
from vaura.train.data import (
    BadClipError,
    ClipRef,
    clip_duration,
    decode_audio,
    decode_frames,
    grid_starts,
    spatial_transform,
)
from visualsound.errors import ToolkitError
from visualsound.utils.atomic import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

CACHE_FORMAT = "vaura-train-cache"
CACHE_VERSION = 1


class CacheError(ToolkitError):
    """A cache is missing, incomplete, stale, or does not match the models / window settings of this run."""


def module_checksum(module: torch.nn.Module) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a module's state dict (parameters and buffers)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass
class FrozenModels:
    """The frozen visual encoder and audio codec with their identities (name, checksum, debug flag).

    ``visual_fn(video uint8 [B, 64, 3, 224, 224]) -> [B, 32, 768]`` (normalising as the encoder expects) and
    ``codes_fn(audio [B, 1, N]) -> int64 [B, K, T]`` run without gradients on the models' device.
    """

    visual_fn: Callable[[torch.Tensor], torch.Tensor]
    codes_fn: Callable[[torch.Tensor], torch.Tensor]
    encoder_id: dict[str, Any]
    codec_id: dict[str, Any]
    device: torch.device
    visual_dim: int = 768

    @torch.no_grad()
    def visual(self, video: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, 64, 3, 224, 224]`` -> float32 features ``[B, 32, 768]``."""
        assert video.dtype == torch.uint8 and video.dim() == 5, f"video must be uint8 [B, T, 3, H, W]: {video.shape}"
        return self.visual_fn(video.to(self.device)).float()

    @torch.no_grad()
    def codes(self, audio: torch.Tensor) -> torch.Tensor:
        """``[B, 1, N]`` -> int64 codes ``[B, K, T]``."""
        return self.codes_fn(audio.to(self.device)).long()


def window_grid(cfg: DataConfig) -> dict[str, Any]:
    """The frame/sample grid a cache was built for; training refuses a cache with a different one."""
    return {"clip_seconds": cfg.clip_seconds, "fps": cfg.fps, "num_frames": cfg.num_frames,
            "sample_rate": cfg.sample_rate, "num_samples": cfg.num_samples, "resize": cfg.resize, "crop": cfg.crop,
            "start_margin": cfg.start_margin}


def _manifest_core(models: FrozenModels, cfg: DataConfig, clips: Sequence[ClipRef], starts: str,
                   shard_size: int, feature_dtype: str, source: dict[str, Any]) -> dict[str, Any]:
    ids = "\n".join(c.clip_id for c in clips)
    return {
        "format": CACHE_FORMAT, "version": CACHE_VERSION,
        "encoder": models.encoder_id, "codec": models.codec_id,
        "debug_weights": bool(models.encoder_id.get("debug_weights") or models.codec_id.get("debug_weights")),
        "grid": window_grid(cfg),
        "starts": starts, "start_grid": cfg.start_grid if starts == "grid" else None,
        "num_clips": len(clips), "clips_sha256": hashlib.sha256(ids.encode()).hexdigest(),
        "fixed_starts_sha256": hashlib.sha256(json.dumps([c.start for c in clips]).encode()).hexdigest(),
        "shard_size": shard_size, "feature_dtype": feature_dtype, "source": source,
    }


# -- extraction --------------------------------------------------------------------------------------------------
STALE_TEMP_SECONDS = 3600  # shard temp dirs of killed runs older than this are removed by the next run


def _load_span(record: dict[str, Any], cfg: DataConfig, grid: bool) -> dict[str, Any]:
    """Worker-side decoding of every window of one clip: one video decode of the span the windows cover (centre
    crop), and each window's audio decoded at its start exactly as on-the-fly training does.

    `record`: ``{"index", "clip_id", "path", "start"}``. Returns ``{"index", "clip_id", "video": uint8
    [F, 3, crop, crop], "audio": [W, 1, N], "starts": [...]}``, or ``{"index", "clip_id", "bad": reason}``: never
    raises for a clip (any exception is the clip's reason; a dying worker is `_crashed_span`'s).
    """
    i, clip_id, path = record["index"], record["clip_id"], record["path"]
    try:
        if grid:
            starts = grid_starts(clip_duration(path), cfg)
        else:
            starts = [record["start"] if record["start"] is not None else 0.0]
        first = starts[0]
        span = round((starts[-1] - first) * cfg.fps) + cfg.num_frames
        video = spatial_transform(decode_frames(path, first, cfg, frame_count=span), cfg, train=False)
        audio = torch.stack([decode_audio(path, s, cfg) for s in starts])  # as on the fly
    except BadClipError as e:
        log.warning("skipping clip %s: %s", clip_id, e)
        return {"index": i, "clip_id": clip_id, "bad": str(e)}
    except Exception as e:  # noqa: BLE001 - one file must never end the job (a rerun would meet it again)
        log.warning("skipping clip %s (%s): unexpected error", clip_id, path, exc_info=True)
        return {"index": i, "clip_id": clip_id, "bad": f"{type(e).__name__}: {e}"}
    return {"index": i, "clip_id": clip_id, "video": video, "audio": audio, "starts": starts}


def _crashed_span(record: dict[str, Any], message: str) -> dict[str, Any]:
    """The bad item of a clip whose decoding worker died (a decoder crash, the OOM killer)."""
    return {"index": record["index"], "clip_id": record["clip_id"], "bad": f"decoding worker died: {message}"}


def _windows(item: dict[str, Any], cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Slice a decoded span into windows: (uint8 ``[W, 64, 3, crop, crop]``, ``[W, 1, N]``)."""
    first = item["starts"][0]
    vids = []
    for s in item["starts"]:
        f0 = round((s - first) * cfg.fps)
        vids.append(item["video"][f0:f0 + cfg.num_frames])
    assert all(v.shape[0] == cfg.num_frames for v in vids), f"short video window in {item['clip_id']}"
    return torch.stack(vids), item["audio"]


def remove_stale_shard_temps(shards: Path, max_age: float = STALE_TEMP_SECONDS) -> None:
    """Delete the temp directories (``.000012.xxxx``) of shard writes a killed run left, once older than
    `max_age` seconds."""
    now = time.time()
    for t in shards.glob(".[0-9][0-9][0-9][0-9][0-9][0-9].*"):
        with contextlib.suppress(FileNotFoundError):
            if t.is_dir() and now - t.stat().st_mtime > max_age:
                log.info("removing the temp directory %s of a killed shard write", t)
                shutil.rmtree(t, ignore_errors=True)


def extract(clips: Sequence[ClipRef], out: str | os.PathLike, models: FrozenModels, cfg: DataConfig, *,
            grid: bool, source: dict[str, Any] | None = None, shard_size: int = 256, window_batch: int = 16,
            num_workers: int = 0, feature_dtype: str = "float16", max_worker_crashes: int = 50,
            progress: Callable[[int, int], None] | None = None, part: tuple[int, int] = (0, 1)) -> dict[str, Any]:
    """Precompute codes and visual features of every window of `clips` into the cache directory `out`.

    ``grid=True`` (training) stores every ``start_grid`` multiple; ``grid=False`` (evaluation) the clip's fixed
    start. Resumes an interrupted run (finished shards are kept); refuses a directory holding a different cache.
    A clip that cannot be used (any exception while decoding it, or its decoding worker dying) is recorded in its
    shard with the reason; past `max_worker_crashes` dead workers the job stops (`LoaderCrashError`).
    ``progress(done, total)`` counts every clip handled, bad ones included.
    ``part=(i, n)``: extract only the cache shards ``s % n == i`` (the module docstring).
    Returns the final manifest (with ``windows``, ``bad`` counts and ``complete: true``), or, when shards of other
    parts are still missing, the manifest with ``complete: false`` and ``missing_shards`` (their indices).
    """
    i_part, n_parts = part
    if n_parts < 1 or not 0 <= i_part < n_parts:
        raise CacheError(f"part {i_part}/{n_parts}: need 0 <= i < n")
    from visualsound.utils.loader import tolerant_batches

    if feature_dtype not in ("float16", "float32"):
        raise CacheError(f"feature_dtype must be float16 or float32, got {feature_dtype!r}")
    out = Path(out)
    core = _manifest_core(models, cfg, clips, "grid" if grid else "fixed", shard_size, feature_dtype,
                          source or {})
    mpath = out / "manifest.json"
    if mpath.exists():
        old = json.loads(mpath.read_text())
        diff = sorted(k for k in core if old.get(k) != core[k])
        if diff:
            raise CacheError(f"{out} holds a different cache (differs in {diff}); use a new --out directory")
        log.info("resuming extraction into %s", out)
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "clips.txt", "\n".join(c.clip_id for c in clips) + "\n")
        atomic_write_json(mpath, {**core, "complete": False})
    (out / "shards").mkdir(exist_ok=True)
    remove_stale_shard_temps(out / "shards")
    n_shards = math.ceil(len(clips) / shard_size)
    mine = [s for s in range(n_shards) if s % n_parts == i_part]
    todo = [s for s in mine if not (out / "shards" / f"{s:06d}").is_dir()]
    log.info("%d of %d shards to extract%s", len(todo), len(mine),
             f" (part {i_part}/{n_parts} of {n_shards} shards)" if n_parts > 1 else "")
    pending = [i for s in todo for i in range(s * shard_size, min((s + 1) * shard_size, len(clips)))]
    records = [{"index": i, "clip_id": clips[i].clip_id, "path": clips[i].path, "start": clips[i].start}
               for i in pending]
    # workers hand clips back out of order: each shard collects its clips' results and is written once complete
    size = {s: min((s + 1) * shard_size, len(clips)) - s * shard_size for s in todo}
    results: dict[int, dict[int, dict[str, Any]]] = {s: {} for s in todo}
    done = 0
    for batch in tolerant_batches(records, functools.partial(_load_span, cfg=cfg, grid=grid), _crashed_span,
                                  batch_size=1, workers=num_workers, max_crashes=max_worker_crashes):
        for item in batch:
            s = item["index"] // shard_size
            if "bad" in item:
                results[s][item["index"]] = {"bad": [item["clip_id"], item["bad"]]}
            else:
                video, audio = _windows(item, cfg)
                feats, codes = [], []
                for j in range(0, video.shape[0], window_batch):
                    feats.append(models.visual(video[j:j + window_batch]).cpu())
                    codes.append(models.codes(audio[j:j + window_batch]).cpu())
                results[s][item["index"]] = {"codes": codes, "feats": feats,
                                             "rows": [{"clip": item["clip_id"], "start": st} for st in item["starts"]]}
            done += 1
            if progress is not None:
                progress(done, len(pending))
            if len(results[s]) == size[s]:
                shard = results.pop(s)
                got = [shard[i] for i in sorted(shard)]  # clip order within the shard
                _write_shard(out / "shards" / f"{s:06d}", [c for r in got for c in r.get("codes", [])],
                             [f for r in got for f in r.get("feats", [])], [x for r in got for x in r.get("rows", [])],
                             [r["bad"] for r in got if "bad" in r], feature_dtype)
    missing = missing_shards(out)
    if n_parts > 1 and missing:
        log.info("part %d/%d of %s is done; %d shards of other parts are missing (the part that writes the last "
                 "one marks the cache complete)", i_part, n_parts, out, len(missing))
        manifest = json.loads(mpath.read_text())
        if manifest.get("complete"):  # shards were deleted after it was finished: it is not complete any more
            manifest["complete"] = False
            atomic_write_json(mpath, manifest)
        return {**manifest, "missing_shards": missing}
    return finalize(out)


def missing_shards(out: str | os.PathLike) -> list[int]:
    """The indices of the shards a cache's manifest plans that are not written yet."""
    out = Path(out)
    manifest = json.loads((out / "manifest.json").read_text())
    n_shards = math.ceil(manifest["num_clips"] / manifest["shard_size"])
    return [s for s in range(n_shards) if not (out / "shards" / f"{s:06d}").is_dir()]


def _write_shard(path: Path, codes: list[torch.Tensor], feats: list[torch.Tensor], rows: list[dict[str, Any]],
                 bad: list[list[str]], feature_dtype: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        c = torch.cat(codes).numpy() if codes else np.zeros((0, 0, 0), dtype=np.int64)
        if c.size and (c.min() < 0 or c.max() > np.iinfo(np.uint16).max):
            raise CacheError(f"codes out of uint16 range [{c.min()}, {c.max()}]")
        f = torch.cat(feats).numpy() if feats else np.zeros((0, 0, 0), dtype=np.float32)
        np.save(tmp / "codes.npy", c.astype(np.uint16))
        np.save(tmp / "visual.npy", f.astype(feature_dtype))
        (tmp / "windows.json").write_text(json.dumps({"rows": rows, "bad": bad}))
        for p in tmp.iterdir():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def finalize(out: str | os.PathLike) -> dict[str, Any]:
    """Mark a cache complete once every shard exists; record totals and per-shard row counts and sizes."""
    out = Path(out)
    manifest = json.loads((out / "manifest.json").read_text())
    n_shards = math.ceil(manifest["num_clips"] / manifest["shard_size"])
    shards, windows, bad = [], 0, []
    for s in range(n_shards):
        d = out / "shards" / f"{s:06d}"
        if not d.is_dir():
            raise CacheError(f"{out}: shard {s} is missing; rerun `vaura extract` to finish")
        meta = json.loads((d / "windows.json").read_text())
        windows += len(meta["rows"])
        bad += meta["bad"]
        shards.append({"rows": len(meta["rows"]), "codes_bytes": (d / "codes.npy").stat().st_size,
                       "visual_bytes": (d / "visual.npy").stat().st_size})
    manifest.update(complete=True, windows=windows, bad_clips=len(bad), shards=shards)
    atomic_write_json(out / "manifest.json", manifest)
    if bad:
        log.warning("%s: %d of %d clips were skipped as unusable (see shards/*/windows.json)", out, len(bad),
                    manifest["num_clips"])
    return manifest


# -- loading ------------------------------------------------------------------------------------------------------
def is_cache(path: str | os.PathLike) -> bool:
    return (Path(path) / "manifest.json").is_file()


def check_manifest(manifest: dict[str, Any], cfg: DataConfig, encoder_id: dict[str, Any] | None = None,
                   codec_id: dict[str, Any] | None = None, where: str = "cache") -> None:
    """Refuse a cache that is incomplete, of another format/version, another window grid, or another encoder or
    codec (compared by checksum) than this run uses."""
    if manifest.get("format") != CACHE_FORMAT or manifest.get("version") != CACHE_VERSION:
        raise CacheError(f"{where}: format {manifest.get('format')!r} v{manifest.get('version')} is not "
                         f"{CACHE_FORMAT!r} v{CACHE_VERSION}; re-extract it")
    if not manifest.get("complete"):
        raise CacheError(f"{where}: extraction is not finished; rerun `vaura extract` with the same arguments (for "
                         f"an extraction split with --shard i/n: the parts not yet finished)")
    grid = window_grid(cfg)
    diff = {k: (manifest["grid"].get(k), v) for k, v in grid.items() if manifest["grid"].get(k) != v}
    if diff:
        raise CacheError(f"{where}: built for another window grid (cache vs run): {diff}")
    for what, expected in (("encoder", encoder_id), ("codec", codec_id)):
        if expected is not None and manifest[what].get("checksum") != expected.get("checksum"):
            raise CacheError(f"{where}: stale cache, its {what} checksum {manifest[what].get('checksum', '')[:12]} "
                             f"differs from this run's {expected.get('checksum', '')[:12]} "
                             f"({manifest[what].get('name')} vs {expected.get('name')}); re-extract it")


class CachedWindows(torch.utils.data.Dataset):
    """Cached windows, one item per clip: training picks one of the clip's grid windows with a generator seeded by
    ``(seed, epoch, index)``; evaluation caches hold one window per clip.

    Item: ``{"index", "clip_id", "start", "codes": int64 [K, T], "visual": float32 [32, 768]}``.
    """

    def __init__(self, root: str | os.PathLike, cfg: DataConfig, train: bool, seed: int = 0,
                 encoder_id: dict[str, Any] | None = None, codec_id: dict[str, Any] | None = None) -> None:
        self.root = Path(root)
        if not is_cache(self.root):
            raise CacheError(f"{self.root} is not a feature cache (no manifest.json); run `vaura extract`")
        self.manifest = json.loads((self.root / "manifest.json").read_text())
        check_manifest(self.manifest, cfg, encoder_id, codec_id, where=str(self.root))
        if not train and self.manifest["starts"] != "fixed":
            log.warning("%s: a grid cache used for evaluation; every clip's first grid window is used", self.root)
        self.train, self.seed, self.epoch = train, seed, 0
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.clip_ids: list[str] = []
        self.windows: list[list[tuple[int, int, float]]] = []  # per clip: (shard, row, start)
        for s, info in enumerate(self.manifest["shards"]):
            d = self.root / "shards" / f"{s:06d}"
            if (d / "codes.npy").stat().st_size != info["codes_bytes"] or \
                    (d / "visual.npy").stat().st_size != info["visual_bytes"]:
                raise CacheError(f"{d}: files changed since extraction; re-extract the cache")
            rows = json.loads((d / "windows.json").read_text())["rows"]
            for r, row in enumerate(rows):
                if not self.clip_ids or self.clip_ids[-1] != row["clip"] or self.windows[-1][0][0] != s:
                    self.clip_ids.append(row["clip"])
                    self.windows.append([])
                self.windows[-1].append((s, r, float(row["start"])))
        if not self.clip_ids:
            raise CacheError(f"{self.root}: the cache holds no windows")
        self.debug_weights = bool(self.manifest.get("debug_weights"))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def fingerprint(self) -> str:
        """sha256 of what the cache holds (clips, windows, encoder / codec checksums, grid, dtype), not of where
        it lies: a copy on node-local scratch has the same fingerprint, a re-extraction of other clips another."""
        m = self.manifest
        keys = ("format", "version", "grid", "starts", "start_grid", "num_clips", "clips_sha256",
                "fixed_starts_sha256", "shard_size", "feature_dtype", "windows", "bad_clips", "shards")
        ident = {k: m.get(k) for k in keys}
        ident["encoder"], ident["codec"] = m["encoder"].get("checksum"), m["codec"].get("checksum")
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    def __len__(self) -> int:
        return len(self.clip_ids)

    def _shard(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        if s not in self._arrays:  # opened lazily per worker process
            d = self.root / "shards" / f"{s:06d}"
            self._arrays[s] = (np.load(d / "codes.npy", mmap_mode="r"), np.load(d / "visual.npy", mmap_mode="r"))
        return self._arrays[s]

    def __getitem__(self, index: int) -> dict[str, Any]:
        wins = self.windows[index]
        if self.train and len(wins) > 1:
            k = int(np.random.default_rng([self.seed, self.epoch, index]).integers(0, len(wins)))
        else:
            k = 0
        s, r, start = wins[k]
        codes, visual = self._shard(s)
        return {"index": index, "clip_id": self.clip_ids[index], "start": start,
                "codes": torch.from_numpy(codes[r].astype(np.int64)),
                "visual": torch.from_numpy(visual[r].astype(np.float32))}


__all__ = ["CacheError", "CachedWindows", "FrozenModels", "check_manifest", "extract",
           "finalize", "is_cache", "module_checksum", "window_grid"]
