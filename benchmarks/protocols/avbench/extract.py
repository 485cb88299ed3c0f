"""Feature extraction for the av-benchmark protocol: every network's features of every file, through the caches.

What is extracted (the original's cache files, one `benchmarks.cache.FeatureCache` per set and extractor):

| extractor | sets | value per name |
|---|---|---|
| ``avb-panns`` | GT audio, generated | ``{"embedding": [2048], "logits": [527]}`` (Cnn14 16 kHz) |
| ``avb-vggish`` | GT audio, generated | ``[n, 128]`` VGGish rows (one per 0.96 s) |
| ``avb-passt`` | GT audio, generated | ``{"features": [768], "logits": [527]}`` (10 s zero-padded 32 kHz input) |
| ``avb-ib-audio`` | generated | ``[E]`` ImageBind audio embedding of the whole file |
| ``avb-sync-audio`` | generated | ``[24, 6, D]`` Synchformer AST features |
| ``avb-ib-video`` / ``avb-sync-video`` | GT video | ``[E]`` / ``[24, 8, D]``, or ``{"rejected": reason}`` |

A clip too short for a network (Synchformer needs exactly the protocol length; VGGish one 0.96 s example; PANNs
0.31 s; ImageBind one 25 ms frame) gets ``{"dropped": reason}`` instead, and a rejected video ``{"rejected":
reason}``. Files are read once per batch for all the extractors that miss them; each network then runs on the
whole batch (inputs of one shape at a time), so a GPU sees batches of `batch_size` clips. A file that cannot be read is
returned in ``failed`` with the reason (it is never replaced by another file, as the original does), and a
too-short clip is recorded as dropped / rejected in the cache itself, so a second run does not decode it again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from benchmarks.cache import FeatureCache, file_fingerprint, weights_checksum
from benchmarks.metrics.panns import PannsInputError
from benchmarks.protocols.avbench import audio as A
from benchmarks.protocols.avbench import video as V
from visualsound.errors import ToolkitError

log = logging.getLogger(__name__)

CODE_VERSION = 1  # bump when an extractor's output changes for the same input and weights

#: extractor name -> (registry name of its weights, EvalOptions.checkpoints / presets key)
EXTRACTORS: dict[str, tuple[str, str]] = {
    "avb-panns": ("panns_cnn14_16k", "panns"),
    "avb-vggish": ("vggish", "vggish"),
    "avb-passt": ("passt", "passt"),
    "avb-ib-audio": ("imagebind_huge", "ib"),
    "avb-ib-video": ("imagebind_huge", "ib"),
    "avb-sync-audio": ("synchformer_audioset", "sync"),
    "avb-sync-video": ("synchformer_audioset", "sync"),
}
AUDIO_EXTRACTORS = ("avb-panns", "avb-vggish", "avb-passt", "avb-ib-audio", "avb-sync-audio")
VIDEO_EXTRACTORS = ("avb-ib-video", "avb-sync-video")


@dataclass(frozen=True)
class Item:
    """One file of a set: its name (the stem the original pairs by), path, and where its window starts (audio and
    video are read from there)."""

    name: str
    path: str
    start_sec: float = 0.0

    def source(self, **extra: Any) -> dict[str, Any]:
        return file_fingerprint(self.path, start=self.start_sec, **extra)


@dataclass
class Extracted:
    """Features per extractor per name, names that could not be read (with the reason), and cache statistics."""

    features: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    caches: dict[str, dict[str, Any]] = field(default_factory=dict)


class Models:
    """The networks, loaded on first use; `checksum` gives each extractor's weights identity for the caches."""

    def __init__(self, options: Any) -> None:
        self.options = options
        self._loaded: dict[str, torch.nn.Module] = {}

    def checksum(self, extractor: str) -> tuple[str, str]:
        registry, key = EXTRACTORS[extractor]
        return weights_checksum(registry, self.options.checkpoints.get(key), self.options.debug_weights)

    def describe(self, extractor: str) -> dict[str, str]:
        path, sha = self.checksum(extractor)
        _, key = EXTRACTORS[extractor]
        out = {"checkpoint": path, "sha256": sha}
        if key in self.options.presets:
            out["preset"] = self.options.presets[key]
        return out

    def get(self, key: str) -> torch.nn.Module:
        if key not in self._loaded:
            self._loaded[key] = self._load(key)
        return self._loaded[key]

    def _load(self, key: str) -> torch.nn.Module:
        o = self.options
        ckpt, debug, device, preset = o.checkpoints.get(key), o.debug_weights, o.device, o.presets.get(key)
        if key == "panns":
            from benchmarks.metrics.panns import load_panns

            return load_panns(ckpt, debug_weights=debug, device=device, config=preset)
        if key == "vggish":
            from benchmarks.metrics.vggish import load_vggish

            if preset:
                raise ToolkitError("VGGish has no config presets to choose from (its checkpoint fixes the size)")
            return load_vggish(ckpt, debug_weights=debug, device=device)
        if key == "passt":
            from benchmarks.metrics.passt import load_passt

            return load_passt(ckpt, debug_weights=debug, device=device, config=preset)
        if key == "ib":
            from visualsound.imagebind import load_imagebind

            return load_imagebind(ckpt, debug_weights=debug, device=device, config=preset)
        if key == "sync":
            from vaura.synchformer import load_sync_model

            return load_sync_model(ckpt, debug_weights=debug, device=device, config=preset)
        raise KeyError(key)


def _chunks(seq: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [seq[i:i + size] for i in range(0, len(seq), max(1, size))]


def _by_shape(tensors: dict[str, torch.Tensor]) -> list[list[str]]:
    """Names grouped by input shape (one forward pass per group), in the given order within a group."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for name, t in tensors.items():
        groups.setdefault(tuple(t.shape), []).append(name)
    return list(groups.values())


def _run_grouped(inputs: dict[str, torch.Tensor], fn: Callable[[torch.Tensor], Any]) -> dict[str, Any]:
    """``fn`` on stacked inputs of equal shape; results split back per name (a tensor or a tuple of tensors)."""
    out: dict[str, Any] = {}
    for names in _by_shape(inputs):
        res = fn(torch.stack([inputs[n] for n in names]))
        for i, n in enumerate(names):
            out[n] = tuple(r[i] for r in res) if isinstance(res, tuple) else res[i]
    return out


def _lookup(items: Sequence[Item], extractors: Sequence[str], caches: dict[str, FeatureCache]
            ) -> tuple[Extracted, dict[str, dict[str, Any]], dict[str, set[str]], list[Item]]:
    """Cached features of `items`: the partly filled `Extracted`, each item's source fingerprint, the names each
    extractor still needs, and the items with anything to compute."""
    out = Extracted(features={e: {} for e in extractors})
    sources = {it.name: it.source() for it in items}
    need: dict[str, set[str]] = {e: set() for e in extractors}
    for it in items:
        for e in extractors:
            found, value = caches[e].lookup(it.name, sources[it.name])
            if found:
                out.features[e][it.name] = value
            else:
                need[e].add(it.name)
    return out, sources, need, [it for it in items if any(it.name in need[e] for e in extractors)]


def _store(names: Sequence[str], out: Extracted, sources: dict[str, dict[str, Any]], need: dict[str, set[str]],
           caches: dict[str, FeatureCache]) -> None:
    """Write what was computed for `names` (an unreadable file has nothing to store and is retried next time)."""
    for e, cache in caches.items():
        for n in names:
            if n in need[e] and n in out.features[e] and n not in out.failed:
                cache.store(n, sources[n], out.features[e][n])


def _finish(out: Extracted, caches: dict[str, FeatureCache]) -> Extracted:
    for e, cache in caches.items():
        cache.flush()
        out.caches[e] = cache.stats()
    return out


def extract_audio(items: Sequence[Item], extractors: Sequence[str], caches: dict[str, FeatureCache],
                  models: Models, length_sec: float, batch_size: int, desc: str, progress: bool) -> Extracted:
    """Audio-side features of `items` for `extractors` (a subset of `AUDIO_EXTRACTORS`; `caches` has one cache
    per extractor)."""
    out, sources, need, todo = _lookup(items, extractors, caches)
    bar = tqdm(total=len(todo), desc=desc, unit="file", disable=not progress or not todo)
    for chunk in _chunks(todo, batch_size):
        waves: dict[str, tuple[torch.Tensor, int]] = {}
        for it in chunk:
            try:
                waves[it.name] = A.read_audio(it.path, start_sec=it.start_sec)
            except ToolkitError as e:
                out.failed[it.name] = f"unreadable: {e}"
                log.warning("av-benchmark: %s", out.failed[it.name])
        _audio_batch(waves, {e: [n for n in waves if n in need[e]] for e in extractors}, out, models, length_sec)
        _store([it.name for it in chunk], out, sources, need, caches)
        bar.update(len(chunk))
    bar.close()
    return _finish(out, caches)


def _inputs(names: Sequence[str], build: Callable[[str], torch.Tensor], dropped: dict[str, Any]
            ) -> dict[str, torch.Tensor]:
    """``{name: build(name)}``; a clip too short (or otherwise unusable) for this network is put in `dropped` as
    ``{"dropped": reason}`` instead (it is cached that way and reported by the driver)."""
    out = {}
    for n in names:
        try:
            out[n] = build(n)
        except (A.AvbenchAudioError, PannsInputError) as e:
            dropped[n] = {"dropped": str(e)}
    return out


@torch.no_grad()
def _audio_batch(waves: dict[str, tuple[torch.Tensor, int]], need: dict[str, list[str]], out: Extracted,
                 models: Models, length_sec: float) -> None:
    dev = models.options.device
    feats = out.features
    if need.get("avb-panns"):
        x = _inputs(need["avb-panns"], lambda n: A.network_wave(*waves[n], 16000, length_sec), feats["avb-panns"])
        if x:
            panns = models.get("panns")
            for n, (emb, logits) in _run_grouped(x, lambda b: (lambda o: (o.embedding, o.logits))(
                    panns(b.to(dev)))).items():
                feats["avb-panns"][n] = {"embedding": emb.float().cpu(), "logits": logits.float().cpu()}
    if need.get("avb-vggish"):
        x = _inputs(need["avb-vggish"], lambda n: A.vggish_examples(A.network_wave(*waves[n], 16000, length_sec)),
                    feats["avb-vggish"])
        if x:  # every file's examples in one batch (each example is embedded on its own), split back per file
            rows = A.vggish_rows(models.get("vggish"), torch.cat(list(x.values())))
            for n, part in zip(x, rows.split([t.shape[0] for t in x.values()])):
                feats["avb-vggish"][n] = part.clone()
    if need.get("avb-passt"):
        x = _inputs(need["avb-passt"], lambda n: A.passt_wave(A.network_wave(*waves[n], 32000, length_sec)),
                    feats["avb-passt"])
        if x:
            passt = models.get("passt")
            for n, (feat, logits) in _run_grouped(x, lambda b: A.passt_outputs(passt, b)).items():
                feats["avb-passt"][n] = {"features": feat.float().cpu(), "logits": logits.float().cpu()}
    if need.get("avb-ib-audio"):
        x = _inputs(need["avb-ib-audio"], lambda n: A.ib_audio_input(*waves[n], what=n), feats["avb-ib-audio"])
        if x:
            ib = models.get("ib")
            for n, emb in _run_grouped(x, lambda b: A.ib_audio_embedding(ib, b)).items():
                feats["avb-ib-audio"][n] = emb.float().cpu()
    if need.get("avb-sync-audio"):
        x = _inputs(need["avb-sync-audio"], lambda n: A.sync_audio_input(A.sync_wave(*waves[n], length_sec)[None])[0],
                    feats["avb-sync-audio"])
        if x:
            sync = models.get("sync")
            for n, f in _run_grouped(x, lambda b: A.sync_audio_features(sync, b)).items():
                feats["avb-sync-audio"][n] = f.float().cpu()


def extract_video(items: Sequence[Item], extractors: Sequence[str], caches: dict[str, FeatureCache],
                  models: Models, length_sec: float, batch_size: int, progress: bool) -> Extracted:
    """GT-video features of `items` for `extractors` (a subset of `VIDEO_EXTRACTORS`); a rejected video is
    stored as ``{"rejected": reason}`` in each cache. Synchformer runs one video at a time (its 24 segments of 16
    frames are one batch of 24: about 230 MB of float32 input), ImageBind on `batch_size` videos at once."""
    out, sources, need, todo = _lookup(items, extractors, caches)
    dev = models.options.device
    bar = tqdm(total=len(todo), desc="GT videos", unit="video", disable=not progress or not todo)
    for chunk in _chunks(todo, batch_size):
        ib_in: dict[str, torch.Tensor] = {}
        for it in chunk:
            try:
                frames = V.read_video_frames(it.path, length_sec, it.start_sec)
            except ToolkitError as e:
                out.failed[it.name] = f"unreadable: {e}"
                log.warning("av-benchmark: GT video %s", out.failed[it.name])
                continue
            if frames.rejection:
                for e in extractors:
                    out.features[e][it.name] = {"rejected": frames.rejection}
                continue
            if it.name in need.get("avb-ib-video", ()):
                ib_in[it.name] = V.ib_video_input(frames.ib.frames)
            if it.name in need.get("avb-sync-video", ()):
                segments = V.sync_segments(V.sync_video_input(frames.sync.frames))[None]
                out.features["avb-sync-video"][it.name] = V.sync_video_features(models.get("sync"),
                                                                                segments)[0].cpu()
        if ib_in:
            ib = models.get("ib")
            for n, emb in _run_grouped(ib_in, lambda b, m=ib: V.ib_video_embedding(m, b.to(dev))).items():
                out.features["avb-ib-video"][n] = emb.float().cpu()
        _store([it.name for it in chunk], out, sources, need, caches)
        bar.update(len(chunk))
    bar.close()
    return _finish(out, caches)
