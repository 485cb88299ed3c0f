"""``vbench evaluate``: generate (if needed), extract features into caches, score, write a result JSON.

Protocol ``vaura-paper`` (version 1), per the V-AURA paper:

* **FAD**: VGGish embeddings of every 0.96 s frame (no PCA, no final ReLU), ground truth = reference set,
  generated samples = the other set (all samples of all clips pooled); `benchmarks.metrics.fad`.
* **KLD**: KL(ground truth || generated) of PaSST AudioSet class distributions, mean over (clip, sample) pairs,
  with GMELab's reading / cropping rules (``KLDConfig`` preset ``paper``); `benchmarks.metrics.kld`.
* **IB**: 100 x ImageBind cosine between the conditioning video window and the generated audio, mean over
  samples; `benchmarks.metrics.ib`.
* **Sync**: Synchformer (AudioSet) ``paper`` protocol offset of the video window with the generated audio,
  1000 x mean |offset| in ms; `benchmarks.metrics.sync`.

Pairing is by the dataset manifest's clip ids only. Clips without usable output are listed by id; the run
fails unless ``allow_missing`` (then the result records how many were missing and which).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.cache import FeatureCache, file_fingerprint, weights_checksum
from benchmarks.datasets import Dataset
from benchmarks.models import ModelOutputs, Sample
from benchmarks.results import METRIC_KEYS, RESULT_FORMAT, SCHEMA_VERSION, result_filename, validate_result
from visualsound.errors import ToolkitError
from visualsound.utils.atomic import atomic_write_json

log = logging.getLogger(__name__)


class EvaluationError(ToolkitError):
    """The evaluation cannot run or complete (missing outputs, unknown protocol or metric)."""


class MissingOutputsError(EvaluationError):
    """Some clips have no usable output; ``missing`` maps each clip id to the reason."""

    def __init__(self, missing: dict[str, str]) -> None:
        self.missing = dict(missing)
        lines = [f"{cid}: {why}" for cid, why in list(self.missing.items())[:20]]
        more = f" (and {len(self.missing) - 20} more)" if len(self.missing) > 20 else ""
        super().__init__(f"{len(self.missing)} clips have no usable output{more}; pass --allow-missing to score "
                         "the rest:\n  " + "\n  ".join(lines))


@dataclass(frozen=True)
class Protocol:
    """An evaluation protocol: its metrics and the settings that define them."""

    name: str
    version: int
    metrics: tuple[str, ...]
    kld_config: str
    sync_protocol: str
    description: str


PROTOCOLS: dict[str, Protocol] = {
    "vaura-paper": Protocol("vaura-paper", 1, METRIC_KEYS, kld_config="paper", sync_protocol="paper",
                            description="V-AURA paper (arXiv 2409.13689): FAD (VGGish), KLD (PaSST), "
                                        "IB (ImageBind x100), Sync (Synchformer AudioSet, ms)"),
}


PAPER_SAMPLES_PER_CLIP = 10
PAPER_SAMPLES_PER_CLIP_BY_DATASET = {"vas": 3}


def paper_samples_per_clip(dataset_name: str) -> int:
    """Samples per clip the V-AURA paper generated: 3 on VAS, 10 on the other sets."""
    return PAPER_SAMPLES_PER_CLIP_BY_DATASET.get(dataset_name, PAPER_SAMPLES_PER_CLIP)


@dataclass
class EvalOptions:
    """Everything `evaluate` needs besides the dataset and the model adapter."""

    protocol: str = "vaura-paper"
    out_dir: str | os.PathLike = "results"
    cache_dir: str | os.PathLike | None = None  # default: <out_dir>/cache
    device: str = "cpu"
    debug_weights: bool = False
    checkpoints: dict[str, str] = field(default_factory=dict)  # extractor name -> path (vggish/passt/ib/sync)
    allow_missing: bool = False
    metrics: Sequence[str] | None = None  # default: all of the protocol's
    progress: bool = False

    @property
    def cache_root(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir is not None else Path(self.out_dir) / "cache"


# ------------------------------------------------------------------------------------------------ sets
def _sample_source(sample: Sample, **extra: Any) -> dict[str, Any]:
    return file_fingerprint(sample.path, start=sample.start_sec, duration=sample.duration_sec, **extra)


def _gt_samples(dataset: Dataset, ids: Sequence[str]) -> list[Sample]:
    return [Sample(c.id, 0, c.video, c.start_sec, c.window_sec) for c in (dataset.clip(i) for i in ids)]


def _cache(options: EvalOptions, dataset: Dataset, set_key: str, extractor: str, weights_sha: str,
           sample_rate: int | None, params: dict[str, Any] | None = None) -> FeatureCache:
    return FeatureCache(options.cache_root / dataset.name / set_key / extractor, extractor=extractor,
                        weights_sha256=weights_sha, sample_rate=sample_rate, window_sec=dataset.window_sec,
                        params=params)


# ------------------------------------------------------------------------------------------------ metrics
def _run_fad(dataset, gt, gen, set_key, options) -> tuple[float, dict[str, Any]]:
    from benchmarks.metrics.fad import fad_from_embeddings
    from benchmarks.metrics.vggish import load_vggish, vggish_embeddings
    from visualsound.media import probe, read_audio

    ckpt, sha = weights_checksum("vggish", options.checkpoints.get("vggish"), options.debug_weights)
    model = load_vggish(options.checkpoints.get("vggish"), debug_weights=options.debug_weights,
                        device=options.device)

    def embed(sample: Sample) -> torch.Tensor:  # vggish_embeddings mixes down and resamples to 16 kHz itself
        sr = int(probe(sample.path).sample_rate)
        audio = read_audio(sample.path, start=sample.start_sec, duration=sample.duration_sec)
        return torch.from_numpy(vggish_embeddings(audio.numpy(), sr, model))

    caches = {}
    feats = {}
    for name, samples, key in (("gt", gt, "ground-truth"), ("gen", gen, set_key)):
        cache = _cache(options, dataset, key, "vggish", sha, 16000, {"model": "vggish", "pooling": "frames"})
        by_key = {s.key: s for s in samples}
        feats[name] = cache.get_or_compute([(s.key, _sample_source(s)) for s in samples],
                                           lambda k, by_key=by_key: embed(by_key[k]), desc=f"VGGish ({key})",
                                           progress=options.progress)
        caches[name] = cache.stats()
    value = fad_from_embeddings([v.numpy() for v in feats["gt"].values()], [v.numpy() for v in feats["gen"].values()])
    return value, {"extractor": {"checkpoint": ckpt, "sha256": sha}, "caches": caches,
                   "num_reference_clips": len(gt), "num_generated_samples": len(gen)}


def _kld_rate(path: str, cfg: Any) -> int:
    """The rate `read_kld_clip` returns for `path` (video audio is extracted at ``cfg.video_audio_rate``)."""
    from benchmarks.metrics.kld import VIDEO_SUFFIXES
    from visualsound.media import probe

    if Path(path).suffix.lower() in VIDEO_SUFFIXES and cfg.video_audio_rate is not None:
        return int(cfg.video_audio_rate)
    return int(probe(path).sample_rate)


def _run_kld(dataset, gt, gen, set_key, options, protocol) -> tuple[float, dict[str, Any]]:
    from tqdm.auto import tqdm

    from benchmarks.metrics.kld import KLDConfig, kl_per_pair, prepare_pair, read_kld_clip
    from benchmarks.metrics.passt import load_passt, passt_probs_batch

    cfg = KLDConfig.resolve(protocol.kld_config)
    ckpt, sha = weights_checksum("passt", options.checkpoints.get("passt"), options.debug_weights)
    model = load_passt(options.checkpoints.get("passt"), debug_weights=options.debug_weights, device=options.device)
    gt_by_clip = {s.clip_id: s for s in gt}
    params = {"kld_config": cfg.to_dict()}
    gen_cache = _cache(options, dataset, set_key, "passt", sha, 32000, params)
    gt_cache = _cache(options, dataset, "ground-truth", "passt-gt", sha, 32000, params)
    p_gt, p_gen = [], []
    for sample in tqdm(gen, desc=f"PaSST ({set_key})", unit="sample", disable=not options.progress):
        g = gt_by_clip[sample.clip_id]
        # the GT window PaSST sees depends on the generated clip's rate (the vaura-paper crop)
        gt_src = _sample_source(g, paired_rate=_kld_rate(sample.path, cfg))
        have_gt, prob_gt = gt_cache.lookup(g.key, gt_src)
        have_gen, prob_gen = gen_cache.lookup(sample.key, _sample_source(sample))
        if not (have_gt and have_gen):
            gt_audio, gt_sr = read_kld_clip(g.path, cfg)
            gen_audio, gen_sr = read_kld_clip(sample.path, cfg)
            gen_audio = gen_audio[:, int(sample.start_sec * gen_sr):]  # the ground-truth model's own window
            w_gt, w_gen = prepare_pair(gt_audio, gt_sr, gen_audio, gen_sr, g.start_sec, cfg)
            if not have_gt:
                prob_gt = passt_probs_batch(model, [w_gt])[0]
                gt_cache.store(g.key, gt_src, prob_gt)
            if not have_gen:
                prob_gen = passt_probs_batch(model, [w_gen])[0]
                gen_cache.store(sample.key, _sample_source(sample), prob_gen)
        p_gt.append(prob_gt)
        p_gen.append(prob_gen)
    gt_cache.flush()
    gen_cache.flush()
    pq = kl_per_pair(torch.stack(p_gt), torch.stack(p_gen), cfg.eps)
    return float(pq.mean()), {"extractor": {"checkpoint": ckpt, "sha256": sha}, "config": cfg.to_dict(),
                              "caches": {"gt": gt_cache.stats(), "gen": gen_cache.stats()}, "num_pairs": len(gen)}


def _run_ib(dataset, gt, gen, set_key, options) -> tuple[float, dict[str, Any]]:
    from benchmarks.metrics import ib

    ckpt, sha = weights_checksum(ib.WEIGHTS_NAME, options.checkpoints.get("ib"), options.debug_weights)
    model = ib.load_ib_model(options.checkpoints.get("ib"), debug_weights=options.debug_weights,
                             device=options.device)
    vid_cache = _cache(options, dataset, "ground-truth", "imagebind-video", sha, None)
    aud_cache = _cache(options, dataset, set_key, "imagebind-audio", sha, 16000)
    gt_by_key = {s.key: s for s in gt}
    gen_by_key = {s.key: s for s in gen}
    v = vid_cache.get_or_compute(
        [(s.key, _sample_source(s)) for s in gt],
        lambda k: ib.embed_video(model, ib.video_input(gt_by_key[k].path, gt_by_key[k].start_sec,
                                                        gt_by_key[k].duration_sec)),
        desc="ImageBind video", progress=options.progress)
    a = aud_cache.get_or_compute(
        [(s.key, _sample_source(s)) for s in gen],
        lambda k: ib.embed_audio(model, ib.audio_input(gen_by_key[k].path, gen_by_key[k].start_sec,
                                                        gen_by_key[k].duration_sec)),
        desc=f"ImageBind audio ({set_key})", progress=options.progress)
    gt_key = {s.clip_id: s.key for s in gt}
    scores = ib.ib_scores([v[gt_key[s.clip_id]] for s in gen], [a[s.key] for s in gen])
    return float(scores.mean()), {"extractor": {"checkpoint": ckpt, "sha256": sha}, "scale": ib.SCALE,
                                  "caches": {"video": vid_cache.stats(), "audio": aud_cache.stats()}}


def _run_sync(dataset, gt, gen, set_key, options) -> tuple[float, dict[str, Any]]:
    from benchmarks.metrics import sync

    ckpt, sha = weights_checksum(sync.WEIGHTS_NAME, options.checkpoints.get("sync"), options.debug_weights)
    model = sync.load_sync_metric_model(options.checkpoints.get("sync"), debug_weights=options.debug_weights,
                                        device=options.device)
    gt_by_clip = {s.clip_id: s for s in gt}
    gen_by_key = {s.key: s for s in gen}

    def predict(key: str) -> torch.Tensor:
        s = gen_by_key[key]
        g = gt_by_clip[s.clip_id]
        frames, wave = sync.read_sync_inputs(g.path, g.start_sec, g.duration_sec, s.path, s.start_sec,
                                             s.duration_sec)
        return sync.sync_features(model, frames, wave).to_tensor()

    cache = _cache(options, dataset, set_key, "synchformer", sha, sync.SAMPLE_RATE,
                   {"protocol": sync.PROTOCOL, "fps": sync.FPS})
    items = [(s.key, {**_sample_source(s), "video": _sample_source(gt_by_clip[s.clip_id])}) for s in gen]
    feats = cache.get_or_compute(items, predict, desc=f"Synchformer ({set_key})", progress=options.progress)
    offsets = {k: float(sync.SyncFeatures.from_tensor(t).offset_sec) for k, t in feats.items()}
    return sync.sync_score_ms(list(offsets.values())), {
        "extractor": {"checkpoint": ckpt, "sha256": sha}, "protocol": sync.PROTOCOL,
        "caches": {"gen": cache.stats()}, "offsets_sec": offsets}


# ------------------------------------------------------------------------------------------------ driver
def _software() -> dict[str, str]:
    from visualsound import __version__

    return {"version": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__}


def evaluate(dataset: Dataset, model: Any, options: EvalOptions) -> dict[str, Any]:
    """Run the whole evaluation of `model` (an adapter from `benchmarks.models.make_model`) on `dataset`;
    write the result JSON into ``options.out_dir`` and return it (its path under ``"_path"``)."""
    if options.protocol not in PROTOCOLS:
        raise EvaluationError(f"unknown protocol {options.protocol!r}; known: {', '.join(PROTOCOLS)}")
    protocol = PROTOCOLS[options.protocol]
    metrics = tuple(dict.fromkeys(options.metrics or protocol.metrics))  # repeated names run once
    unknown = [m for m in metrics if m not in protocol.metrics]
    if unknown:
        raise EvaluationError(f"protocol {protocol.name} has no metric(s) {unknown}; it has {protocol.metrics}")
    t_start = time.perf_counter()
    outputs: ModelOutputs = model.outputs(dataset, progress=options.progress)
    t_gen = time.perf_counter() - t_start
    if outputs.missing and not options.allow_missing:
        raise MissingOutputsError(outputs.missing)
    if outputs.missing:
        log.warning("%d clips have no usable output and are left out (--allow-missing)", len(outputs.missing))
    present = [cid for cid in dataset.ids if cid in outputs.samples]
    if not present:
        raise EvaluationError(f"no clip of {dataset.name!r} has a usable output")
    gen = [s for cid in present for s in outputs.samples[cid]]
    gt = _gt_samples(dataset, present)
    set_key = model.cache_key

    runners = {"fad": lambda: _run_fad(dataset, gt, gen, set_key, options),
               "kld": lambda: _run_kld(dataset, gt, gen, set_key, options, protocol),
               "ib": lambda: _run_ib(dataset, gt, gen, set_key, options),
               "sync_ms": lambda: _run_sync(dataset, gt, gen, set_key, options)}
    values: dict[str, float] = {}
    details: dict[str, Any] = {}
    metric_seconds: dict[str, float] = {}
    for m in metrics:
        t0 = time.perf_counter()
        values[m], details[m] = runners[m]()
        metric_seconds[m] = round(time.perf_counter() - t0, 3)
        log.info("%s = %.4f (%.1f s)", m, values[m], metric_seconds[m])
    info = model.info()
    debug = bool(options.debug_weights or getattr(model, "debug_weights", False))
    result: dict[str, Any] = {
        "format": RESULT_FORMAT, "schema_version": SCHEMA_VERSION,
        "protocol": {"name": protocol.name, "version": protocol.version, "description": protocol.description},
        "dataset": {"name": dataset.name, "num_clips": len(dataset.clips), "fingerprint": dataset.fingerprint(),
                    "manifest": dataset.path, "window_sec": dataset.window_sec},
        "model": info,
        "metrics": values,
        "metric_details": details,
        "extractors": {m: details[m]["extractor"] for m in metrics},
        "counts": {"clips": len(present), "samples": len(gen), "missing": len(outputs.missing),
                   "missing_ids": sorted(outputs.missing), "missing_reasons": dict(sorted(outputs.missing.items()))},
        "timings": {"generate_s": round(outputs.generate_seconds or t_gen, 3), "metrics_s": metric_seconds,
                    "total_s": round(time.perf_counter() - t_start, 3)},
        "software": _software(), "device": options.device,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "debug_weights": debug,
    }
    validate_result(result, "new result")
    # checkpoint, sampling, seeds and a metric subset make distinct files: a partial or other-seed run never
    # overwrites another run's result
    run_name = f"{model.cache_key}-n{info['samples_per_clip']}"
    if info["seeds"]:
        run_name += f"-seed{info['seeds'][0]}"
    if set(metrics) != set(protocol.metrics):
        run_name += "-" + "+".join(m for m in protocol.metrics if m in metrics)
    path = Path(options.out_dir) / result_filename(run_name, dataset.name, protocol.name, debug)
    atomic_write_json(path, result)
    result["_path"] = str(path)
    return result
