"""Feature caches with manifests: extract once per (clip, extractor), score many times.

A cache is one folder per (audio set, extractor), e.g. ``<cache>/vas/ground-truth/vggish/``, holding

* ``manifest.json``: what the features depend on -- ``extractor``, ``weights_sha256``, ``sample_rate``,
  ``window_sec``, ``params`` (everything else the extractor's output depends on), ``code_version`` -- plus the
  ``clip_ids`` stored so far;
* ``features/<key>.pt``: one file per clip with the clip's ``source`` fingerprint (the input file's path, size
  and mtime, and any per-clip setting) and its feature tensor(s).

Opening a cache whose manifest differs from the requested one (other weights, window, rate, parameters or code
version) logs the differing fields and **wipes it**: the features are recomputed, never reused silently. A clip
whose stored source fingerprint differs (the input file was rewritten) is recomputed too. Writes are atomic, so a
killed run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from visualsound.errors import ToolkitError
from visualsound.utils.atomic import atomic_torch_save, atomic_write_json

if TYPE_CHECKING:
    from benchmarks.datasets import Dataset
    from benchmarks.evaluate import EvalOptions

log = logging.getLogger(__name__)

CACHE_CODE_VERSION = 1
MANIFEST_KEYS = ("extractor", "weights_sha256", "sample_rate", "window_sec", "params", "code_version")


class CacheError(ToolkitError):
    """A cache folder or entry is unusable (unreadable manifest, corrupt feature file)."""


def file_fingerprint(path: str | os.PathLike, **extra: Any) -> dict[str, Any]:
    """Identity of an input file for cache validity: resolved path, size, mtime (ns), plus `extra` settings."""
    p = Path(path)
    st = p.stat()
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, **extra}


_DIGESTS: dict[tuple[str, int, int], str] = {}


def weights_checksum(name: str, checkpoint: str | os.PathLike | None, debug_weights: bool) -> tuple[str, str]:
    """``(resolved path or 'debug', sha256 or 'debug:<name>')`` of an extractor's weights (memoised)."""
    if debug_weights:
        return "debug", f"debug:{name}"
    from visualsound.weights import file_digest, resolve

    path = Path(resolve(name, checkpoint))
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digests = []
    for f in files:
        st = f.stat()
        key = (str(f.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _DIGESTS:
            _DIGESTS[key] = file_digest(f)
        digests.append(_DIGESTS[key])
    if len(digests) == 1:
        return str(path), digests[0]
    return str(path), hashlib.sha256("".join(digests).encode()).hexdigest()


def _key(clip_id: str) -> str:
    """A file name for `clip_id`: readable when safe, with a short hash against collisions."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in clip_id)[:80]
    return f"{safe}-{hashlib.sha1(clip_id.encode()).hexdigest()[:10]}"


class FeatureCache:
    """Per-clip features of one audio set for one extractor (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike, *, extractor: str, weights_sha256: str,
                 sample_rate: int | None, window_sec: float | None, params: Mapping[str, Any] | None = None,
                 code_version: int = CACHE_CODE_VERSION) -> None:
        self.directory = Path(directory)
        self.manifest: dict[str, Any] = {
            "extractor": extractor, "weights_sha256": weights_sha256, "sample_rate": sample_rate,
            "window_sec": window_sec, "params": json.loads(json.dumps(dict(params or {}), default=str)),
            "code_version": code_version}
        self.hits = 0
        self.computed = 0
        self.invalidated: list[str] = []  # manifest fields that differed when the cache was opened
        self._ids: set[str] = set()
        self._open()

    # -- manifest ----------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.directory / "manifest.json"

    def _open(self) -> None:
        if self.manifest_path.is_file():
            try:
                stored = json.loads(self.manifest_path.read_text())
            except json.JSONDecodeError as e:
                log.warning("cache %s: unreadable manifest (%s); recomputing", self.directory, e)
                stored = {}
            diff = [k for k in MANIFEST_KEYS if stored.get(k) != self.manifest[k]]
            if diff:
                self.invalidated = diff
                log.warning("cache %s: manifest differs in %s (stored %s, wanted %s); recomputing every clip",
                            self.directory, ", ".join(diff), {k: stored.get(k) for k in diff},
                            {k: self.manifest[k] for k in diff})
                shutil.rmtree(self.directory)
            else:
                self._ids = set(stored.get("clip_ids", []))
        elif self.directory.exists() and any(self.directory.iterdir()):
            self.invalidated = ["manifest.json missing"]
            log.warning("cache %s has files but no manifest; recomputing", self.directory)
            shutil.rmtree(self.directory)
        (self.directory / "features").mkdir(parents=True, exist_ok=True)
        self._write_manifest()

    def _write_manifest(self) -> None:
        atomic_write_json(self.manifest_path, {**self.manifest, "clip_ids": sorted(self._ids)})

    # -- entries -----------------------------------------------------------------------------------
    def _path(self, clip_id: str) -> Path:
        return self.directory / "features" / f"{_key(clip_id)}.pt"

    def lookup(self, clip_id: str, source: Mapping[str, Any]) -> tuple[bool, Any]:
        """``(True, value)`` when a stored entry for `clip_id` has this `source` fingerprint, else
        ``(False, None)``."""
        path = self._path(clip_id)
        if clip_id not in self._ids or not path.is_file():
            return False, None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:  # a corrupt entry is recomputed
            log.warning("cache %s: entry of %s is unreadable (%s); recomputing it", self.directory, clip_id, e)
            return False, None
        if entry.get("clip_id") != clip_id or entry.get("source") != json.loads(json.dumps(dict(source))):
            log.info("cache %s: %s changed since it was cached; recomputing", self.directory, clip_id)
            return False, None
        self.hits += 1
        return True, entry["value"]

    def store(self, clip_id: str, source: Mapping[str, Any], value: Any) -> None:
        atomic_torch_save({"clip_id": clip_id, "source": json.loads(json.dumps(dict(source))), "value": value},
                          self._path(clip_id))
        self._ids.add(clip_id)
        self.computed += 1
        if self.computed % 50 == 0:
            self.flush()

    def flush(self) -> None:
        """Rewrite the manifest with the stored clip ids (done every 50 new entries and by `get_or_compute`)."""
        self._write_manifest()

    def get_or_compute(self, items: Sequence[tuple[str, Mapping[str, Any]]], compute: Callable[[str], Any],
                       desc: str = "features", progress: bool = False,
                       failures: dict[str, str] | None = None) -> dict[str, Any]:
        """Features of ``[(clip id, source fingerprint)]``: stored ones are read, the others computed with
        ``compute(clip_id)`` and stored; the manifest is flushed at the end. With a `failures` dict, a clip whose
        ``compute`` raises a `ToolkitError` (an unreadable or too short file) is recorded there with the message
        and left out of the result (nothing is stored for it, so a later run tries again); without one it
        raises."""
        out: dict[str, Any] = {}
        for clip_id, source in tqdm(items, desc=desc, unit="clip", disable=not progress):
            found, value = self.lookup(clip_id, source)
            if not found:
                try:
                    value = compute(clip_id)
                except ToolkitError as e:
                    if failures is None:
                        raise
                    failures[clip_id] = f"{type(e).__name__}: {e}"
                    log.warning("%s: %s left out: %s", desc, clip_id, failures[clip_id])
                    continue
                self.store(clip_id, source, value)
            out[clip_id] = value
        self.flush()
        return out

    def stats(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "hits": self.hits, "computed": self.computed,
                "invalidated": list(self.invalidated)}


def dataset_cache(options: EvalOptions, dataset: Dataset, set_key: str, extractor: str, weights_sha: str,
                  sample_rate: int | None, params: Mapping[str, Any] | None = None) -> FeatureCache:
    """The cache of one audio/video set (`set_key`: ``ground-truth`` or a model's cache key) of `dataset` for one
    extractor: ``<cache root>/<dataset>/<set_key>/<extractor>``."""
    return FeatureCache(options.cache_root / dataset.name / set_key / extractor, extractor=extractor,
                        weights_sha256=weights_sha, sample_rate=sample_rate, window_sec=dataset.window_sec,
                        params=params)


def read_cached_features(directory: str | os.PathLike, keys: Sequence[str], weights_sha256: str,
                         params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read back stored features of `keys` from a cache folder without opening it for writing (nothing is
    wiped or recomputed): ``{key: value}`` for the keys it holds. The folder's manifest must name the weights
    `weights_sha256` (and, when given, these extractor `params`), else `CacheError` says what differs -- the
    features were recomputed for other weights or settings since the result was written. Used by
    ``vbench compare`` to rebuild set-level statistics (FAD / FD / IS) of a result."""
    directory = Path(directory)
    manifest_path = directory / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CacheError(f"feature cache {directory} cannot be read ({e}); re-run vbench evaluate") from e
    if manifest.get("weights_sha256") != weights_sha256:
        raise CacheError(f"feature cache {directory} now holds features of other weights (sha256 "
                         f"{str(manifest.get('weights_sha256'))[:16]}, the result used {weights_sha256[:16]}); "
                         f"re-run vbench evaluate")
    if params is not None:
        wanted = json.loads(json.dumps(dict(params), default=str))
        if manifest.get("params") != wanted:
            raise CacheError(f"feature cache {directory} now holds features made with other settings "
                             f"({manifest.get('params')} != {wanted}); re-run vbench evaluate")
    stored = set(manifest.get("clip_ids", []))
    out: dict[str, Any] = {}
    for key in keys:
        path = directory / "features" / f"{_key(key)}.pt"
        if key not in stored or not path.is_file():
            continue
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
            raise CacheError(f"feature cache {directory}: the entry of {key} is unreadable ({e})") from e
        if entry.get("clip_id") == key:
            out[key] = entry["value"]
    return out
