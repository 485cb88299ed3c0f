"""Protocol ``vaura-paper`` (version 1), per the V-AURA paper (arXiv 2409.13689):

* **FAD**: VGGish embeddings of every 0.96 s frame (no PCA, no final ReLU), ground truth = reference set,
  generated samples = the other set (all samples of all clips pooled); `benchmarks.metrics.fad`.
* **KLD**: KL(ground truth || generated) of PaSST AudioSet class distributions, mean over (clip, sample) pairs,
  with GMELab's reading / cropping rules (``KLDConfig`` preset ``paper``); `benchmarks.metrics.kld`.
* **IB**: 100 x ImageBind cosine between the conditioning video window and the generated audio, mean over
  samples; `benchmarks.metrics.ib`.
* **Sync**: Synchformer (AudioSet) ``paper`` protocol offset of the video window with the generated audio,
  1000 x mean |offset| in ms; `benchmarks.metrics.sync`.

Every clip is evaluated on its manifest window (``start_sec``, ``window_sec``, 2.56 s by default); samples are
paired with their clip by the manifest's clip id only.

Per-clip table (`benchmarks.per_clip`): one row per sample (``<clip id>#<k>``) with its ``kld`` (the pair's KL,
the paper's eps), ``ib`` (x100 cosine), ``sync_ms`` (1000 x |offset|) and ``sync_offset_sec``; each metric's value
is the plain mean of its column. A clip without output is a ``gt:<clip id>`` row (``missing``). A ground-truth
file that fails a metric is listed under ``excluded`` as ``ground truth <clip id>`` and in the reason of each of
the clip's samples. Bootstrap units are clips (a clip's samples move together); FAD's statistic takes each clip's
ground-truth VGGish frames and its samples' frames as one unit.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import torch

from benchmarks import per_clip
from benchmarks.bootstrap import SetInput
from benchmarks.cache import dataset_cache, file_fingerprint, read_cached_features, weights_checksum
from benchmarks.datasets import WINDOW_SEC as PAPER_WINDOW_SEC
from benchmarks.datasets import Dataset
from benchmarks.models import Sample
from benchmarks.protocols import EvaluationError, ProtocolRun
from benchmarks.results import metric_keys
from visualsound.errors import ToolkitError

log = logging.getLogger(__name__)

PAPER_SAMPLES_PER_CLIP = 10
PAPER_SAMPLES_PER_CLIP_BY_DATASET = {"vas": 3}
FAD_PARAMS = {"model": "vggish", "pooling": "frames"}  # the VGGish caches' extractor parameters
FAD_RULE = "every generated sample and the ground truth of every clip with a sample, once"  # FAD's rows


def paper_samples_per_clip(dataset_name: str) -> int:
    """Samples per clip the V-AURA paper generated: 3 on VAS, 10 on the other sets."""
    return PAPER_SAMPLES_PER_CLIP_BY_DATASET.get(dataset_name, PAPER_SAMPLES_PER_CLIP)


# ------------------------------------------------------------------------------------------------ sets
def _sample_source(sample: Sample, **extra: Any) -> dict[str, Any]:
    return file_fingerprint(sample.path, start=sample.start_sec, duration=sample.duration_sec, **extra)


def _gt_samples(dataset: Dataset, ids: Sequence[str]) -> list[Sample]:
    return [Sample(c.id, 0, c.video, c.start_sec, c.window_sec) for c in (dataset.clip(i) for i in ids)]


def gt_key(clip_id: str) -> str:
    """The ``excluded`` key of a clip's ground truth (its samples are keyed ``<clip id>#<k>``)."""
    return f"ground truth {clip_id}"


def _gt_failures(into: dict[str, str], gt: Sequence[Sample], failed_gt: dict[str, str]) -> None:
    """Move ground-truth failures (keyed by the GT sample's cache key) to `gt_key` keys."""
    by_key = {s.key: s.clip_id for s in gt}
    for key, why in failed_gt.items():
        into[gt_key(by_key[key])] = why


# ------------------------------------------------------------------------------------------------ metrics
def _run_fad(dataset, gt, gen, set_key, options, failed: dict[str, str], out: dict[str, Any]
             ) -> tuple[float, dict[str, Any]]:
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
    failed_gt: dict[str, str] = {}
    for name, samples, key in (("gt", gt, "ground-truth"), ("gen", gen, set_key)):
        cache = dataset_cache(options, dataset, key, "vggish", sha, 16000, FAD_PARAMS)
        by_key = {s.key: s for s in samples}
        feats[name] = cache.get_or_compute([(s.key, _sample_source(s)) for s in samples],
                                           lambda k, by_key=by_key: embed(by_key[k]), desc=f"VGGish ({key})",
                                           progress=options.progress, failures=failed_gt if name == "gt" else failed)
        caches[name] = cache.stats()
    _gt_failures(failed, gt, failed_gt)
    value = fad_from_embeddings([v.numpy() for v in feats["gt"].values()], [v.numpy() for v in feats["gen"].values()])
    out["set"] = SetInput("fd", ("fad",), [(s.clip_id, feats["gen"][s.key]) for s in gen if s.key in feats["gen"]],
                          [(s.clip_id, feats["gt"][s.key]) for s in gt if s.key in feats["gt"]], FAD_RULE)
    return value, {"extractor": {"checkpoint": ckpt, "sha256": sha}, "caches": caches,
                   "num_reference_clips": len(feats["gt"]), "num_generated_samples": len(feats["gen"])}


def _kld_rate(path: str, cfg: Any) -> int:
    """The rate `read_kld_clip` returns for `path` (video audio is extracted at ``cfg.video_audio_rate``)."""
    from visualsound.media import probe
    from visualsound.media.formats import is_video_path

    if is_video_path(path) and cfg.video_audio_rate is not None:
        return int(cfg.video_audio_rate)
    return int(probe(path).sample_rate)


def _run_kld(dataset, gt, gen, set_key, options, kld_config: str, failed: dict[str, str], out: dict[str, Any]
             ) -> tuple[float, dict[str, Any]]:
    from tqdm.auto import tqdm

    from benchmarks.metrics.kld import KLDConfig, kl_per_pair, prepare_pair, read_kld_clip
    from benchmarks.metrics.passt import load_passt, passt_probs_batch

    cfg = KLDConfig.resolve(kld_config)
    ckpt, sha = weights_checksum("passt", options.checkpoints.get("passt"), options.debug_weights)
    model = load_passt(options.checkpoints.get("passt"), debug_weights=options.debug_weights, device=options.device)
    gt_by_clip = {s.clip_id: s for s in gt}
    params = {"kld_config": cfg.to_dict()}
    gen_cache = dataset_cache(options, dataset, set_key, "passt", sha, 32000, params)
    gt_cache = dataset_cache(options, dataset, "ground-truth", "passt-gt", sha, 32000, params)
    p_gt, p_gen, keys = [], [], []
    for sample in tqdm(gen, desc=f"PaSST ({set_key})", unit="sample", disable=not options.progress):
        g = gt_by_clip[sample.clip_id]
        # the GT window PaSST sees depends on the generated clip's rate (the vaura-paper crop)
        gt_src = _sample_source(g, paired_rate=_kld_rate(sample.path, cfg))
        have_gt, prob_gt = gt_cache.lookup(g.key, gt_src)
        have_gen, prob_gen = gen_cache.lookup(sample.key, _sample_source(sample))
        if not (have_gt and have_gen):
            try:
                gt_audio, gt_sr = read_kld_clip(g.path, cfg)
                gen_audio, gen_sr = read_kld_clip(sample.path, cfg)
                gen_audio = gen_audio[:, int(sample.start_sec * gen_sr):]  # the ground-truth model's own window
                w_gt, w_gen = prepare_pair(gt_audio, gt_sr, gen_audio, gen_sr, g.start_sec, cfg)
                if not have_gt:
                    prob_gt = passt_probs_batch(model, [w_gt])[0]
                if not have_gen:
                    prob_gen = passt_probs_batch(model, [w_gen])[0]
            except ToolkitError as e:  # one clip never aborts the run: it is left out and listed
                failed[sample.key] = f"{type(e).__name__}: {e}"
                log.warning("KLD: %s left out: %s", sample.key, failed[sample.key])
                continue
            if not have_gt:
                gt_cache.store(g.key, gt_src, prob_gt)
            if not have_gen:
                gen_cache.store(sample.key, _sample_source(sample), prob_gen)
        p_gt.append(prob_gt)
        p_gen.append(prob_gen)
        keys.append(sample.key)
    gt_cache.flush()
    gen_cache.flush()
    if not p_gt:
        raise EvaluationError(f"KLD: no clip could be scored ({len(failed)} failed, e.g. {next(iter(failed.items()))})")
    pq = kl_per_pair(torch.stack(p_gt), torch.stack(p_gen), cfg.eps)
    out["per_item"] = dict(zip(keys, pq.double().tolist()))
    return float(pq.mean()), {"extractor": {"checkpoint": ckpt, "sha256": sha}, "config": cfg.to_dict(),
                              "caches": {"gt": gt_cache.stats(), "gen": gen_cache.stats()}, "num_pairs": len(p_gt)}


def _run_ib(dataset, gt, gen, set_key, options, failed: dict[str, str], out: dict[str, Any]
            ) -> tuple[float, dict[str, Any]]:
    from benchmarks.metrics import ib

    ckpt, sha = weights_checksum(ib.WEIGHTS_NAME, options.checkpoints.get("ib"), options.debug_weights)
    model = ib.load_ib_model(options.checkpoints.get("ib"), debug_weights=options.debug_weights,
                             device=options.device)
    vid_cache = dataset_cache(options, dataset, "ground-truth", "imagebind-video", sha, None)
    aud_cache = dataset_cache(options, dataset, set_key, "imagebind-audio", sha, 16000)
    gt_by_key = {s.key: s for s in gt}
    gen_by_key = {s.key: s for s in gen}
    failed_gt: dict[str, str] = {}
    v = vid_cache.get_or_compute(
        [(s.key, _sample_source(s)) for s in gt],
        lambda k: ib.embed_video(model, ib.video_input(gt_by_key[k].path, gt_by_key[k].start_sec,
                                                        gt_by_key[k].duration_sec)),
        desc="ImageBind video", progress=options.progress, failures=failed_gt)
    _gt_failures(failed, gt, failed_gt)
    a = aud_cache.get_or_compute(
        [(s.key, _sample_source(s)) for s in gen],
        lambda k: ib.embed_audio(model, ib.audio_input(gen_by_key[k].path, gen_by_key[k].start_sec,
                                                        gen_by_key[k].duration_sec)),
        desc=f"ImageBind audio ({set_key})", progress=options.progress, failures=failed)
    video_key = {s.clip_id: s.key for s in gt}
    usable = [s for s in gen if s.key in a and video_key[s.clip_id] in v]
    for s in gen:
        if s.key in a and video_key[s.clip_id] not in v:
            failed.setdefault(s.key, "its clip's video failed (see 'ground truth <clip id>')")
    if not usable:
        raise EvaluationError(f"IB: no clip could be scored ({len(failed)} failed)")
    scores = ib.ib_scores([v[video_key[s.clip_id]] for s in usable], [a[s.key] for s in usable])
    out["per_item"] = dict(zip((s.key for s in usable), scores.tolist()))
    return float(scores.mean()), {"extractor": {"checkpoint": ckpt, "sha256": sha}, "scale": ib.SCALE,
                                  "caches": {"video": vid_cache.stats(), "audio": aud_cache.stats()}}


def _run_sync(dataset, gt, gen, set_key, options, failed: dict[str, str], out: dict[str, Any]
              ) -> tuple[float, dict[str, Any]]:
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

    cache = dataset_cache(options, dataset, set_key, "synchformer", sha, sync.SAMPLE_RATE,
                          {"protocol": sync.PROTOCOL, "fps": sync.FPS})
    items = [(s.key, {**_sample_source(s), "video": _sample_source(gt_by_clip[s.clip_id])}) for s in gen]
    feats = cache.get_or_compute(items, predict, desc=f"Synchformer ({set_key})", progress=options.progress,
                                 failures=failed)
    offsets = {k: float(sync.SyncFeatures.from_tensor(t).offset_sec) for k, t in feats.items()}
    out["per_item"] = {k: 1000.0 * abs(o) for k, o in offsets.items()}
    out["offsets"] = offsets
    return sync.sync_score_ms(list(offsets.values())), {
        "extractor": {"checkpoint": ckpt, "sha256": sha}, "protocol": sync.PROTOCOL,
        "caches": {"gen": cache.stats()}, "offsets_sec": offsets}


# ------------------------------------------------------------------------------------------------ protocol
#: metric -> (``EvalOptions.checkpoints`` key, registry name of the weights it needs)
METRIC_WEIGHTS: dict[str, tuple[str, str]] = {
    "fad": ("vggish", "vggish"), "kld": ("passt", "passt"), "ib": ("ib", "imagebind_huge"),
    "sync_ms": ("sync", "synchformer_audioset")}


class VAuraPaperProtocol:
    """The V-AURA paper's protocol (see the module docstring)."""

    name = "vaura-paper"
    version = 1
    description = ("V-AURA paper (arXiv 2409.13689): FAD (VGGish), KLD (PaSST), IB (ImageBind x100), "
                   "Sync (Synchformer AudioSet, ms)")
    kld_config = "paper"
    sync_protocol = "paper"

    @property
    def metrics(self) -> tuple[str, ...]:
        return metric_keys(self.name)

    def default_samples_per_clip(self, dataset: Dataset) -> int:
        """V-AURA samples per clip when the user gives none: the paper's count for the dataset."""
        return paper_samples_per_clip(dataset.name)

    def required_weights(self, metrics: Sequence[str]) -> dict[str, str]:
        """``EvalOptions.checkpoints`` key -> registry name of the weights `metrics` need."""
        return dict(METRIC_WEIGHTS[m] for m in metrics)

    def check(self, dataset: Dataset, model: Any) -> None:
        no_video = [c.id for c in dataset.clips if not c.video]
        if no_video:
            raise EvaluationError(f"protocol {self.name} evaluates clips with a video (IB, Sync and generation need "
                                  f"one); {len(no_video)} clips of {dataset.name!r} have none, e.g. "
                                  f"{', '.join(no_video[:5])}")

    def missing(self, dataset: Dataset, outputs: Any) -> dict[str, str]:
        """Clips without a usable output (the model adapter's reasons)."""
        return dict(outputs.missing)

    def run(self, ctx: Any) -> ProtocolRun:
        dataset, options, outputs = ctx.dataset, ctx.options, ctx.outputs
        present = [cid for cid in dataset.ids if cid in outputs.samples]
        if not present:
            raise EvaluationError(f"no clip of {dataset.name!r} has a usable output")
        gen = [s for cid in present for s in outputs.samples[cid]]
        gt = _gt_samples(dataset, present)
        runners = {"fad": lambda f, o: _run_fad(dataset, gt, gen, ctx.set_key, options, f, o),
                   "kld": lambda f, o: _run_kld(dataset, gt, gen, ctx.set_key, options, self.kld_config, f, o),
                   "ib": lambda f, o: _run_ib(dataset, gt, gen, ctx.set_key, options, f, o),
                   "sync_ms": lambda f, o: _run_sync(dataset, gt, gen, ctx.set_key, options, f, o)}
        run = ProtocolRun(counts={"clips": len(present), "samples": len(gen)})
        windows = sorted({round(dataset.clip(cid).window_sec, 3) for cid in present})
        if windows != [PAPER_WINDOW_SEC]:
            from benchmarks.metrics.kld import KLDConfig

            shown = ", ".join(f"{w:g}" for w in windows[:3]) + (" ..." if len(windows) > 3 else "")
            run.warnings.append(
                f"windows of {shown} s (the manifest's): the V-AURA paper evaluates {PAPER_WINDOW_SEC:g} s windows; "
                f"here FAD, IB and Sync use the manifest's windows and KLD the first "
                f"{KLDConfig.resolve(self.kld_config).duration:g} s "
                "(GMELab's rule), so the numbers are not comparable with the paper's (build the dataset with "
                f"--window {PAPER_WINDOW_SEC:g})")
        per_item: dict[str, dict[str, float]] = {}
        offsets: dict[str, float] = {}
        for m in ctx.metrics:
            t0 = time.perf_counter()
            failed: dict[str, str] = {}  # sample key or gt_key(clip id) -> why this metric left it out
            out: dict[str, Any] = {}  # per-item values, bootstrap inputs
            run.values[m], run.details[m] = runners[m](failed, out)
            run.extractors[m] = run.details[m]["extractor"]
            run.seconds[m] = round(time.perf_counter() - t0, 3)
            if "per_item" in out:
                per_item[m] = out["per_item"]
            if "set" in out:
                run.set_statistics.append(out["set"])
            offsets.update(out.get("offsets", {}))
            for key, why in failed.items():
                run.excluded[key] = f"{run.excluded[key]}; {m}: {why}" if key in run.excluded else f"{m}: {why}"
            if failed:
                run.warnings.append(f"{m}: {len(failed)} clips or samples could not be read or scored and are "
                                    f"left out (listed under 'excluded')")
            log.info("%s = %.4f (%.1f s)", m, run.values[m], run.seconds[m])
        run.items = self._rows(dataset, outputs, run.excluded, per_item, offsets)
        return run

    @staticmethod
    def _rows(dataset: Dataset, outputs: Any, excluded: dict[str, str], per_item: dict[str, dict[str, float]],
              offsets: dict[str, float]) -> list[dict[str, Any]]:
        """The per-clip table's rows: every sample of every clip with output, then a ``gt:`` row per clip
        without (dataset order)."""
        rows: list[dict[str, Any]] = []
        missing_rows: list[dict[str, Any]] = []
        for clip in dataset.clips:
            video = os.path.abspath(clip.video)
            common = {"clip_id": clip.id, "label": clip.label, "gt_audio_path": video, "video_path": video,
                      "start_sec": clip.start_sec, "window_sec": clip.window_sec}
            gt_why = excluded.get(gt_key(clip.id), "")
            gt_reason = f"{gt_key(clip.id)}: {gt_why}" if gt_why else ""
            if clip.id not in outputs.samples:
                why = outputs.missing.get(clip.id, "no output")
                missing_rows.append({**common, "item": f"gt:{clip.id}", "sample": None, "status": "missing",
                                     "reason": per_clip.join_reasons([why, gt_reason])})
                continue
            for s in outputs.samples[clip.id]:
                reason = per_clip.join_reasons([excluded.get(s.key, ""), gt_reason])
                rows.append({**common, "item": s.key, "sample": s.index, "generated_path": os.path.abspath(s.path),
                             "status": per_clip.status_of(reason), "reason": reason,
                             **{m: values.get(s.key) for m, values in per_item.items()},
                             "sync_offset_sec": offsets.get(s.key)})
        return rows + missing_rows

    def cached_set_statistics(self, result: dict[str, Any], rows: list[dict[str, Any]]
                              ) -> tuple[dict[str, SetInput], dict[str, str]]:
        """FAD's `SetInput` over **all** the result's samples, read back from its VGGish caches as the run built
        it: every sample's frames (unit: its clip) and the ground-truth frames of every clip with a sample, once
        (a file that failed is not stored, so it is left out as in the run); checked against the numbers of
        files the result records (``num_generated_samples``, ``num_reference_clips``). ``{metric: why}`` where
        that is impossible. `vbench compare` restricts it to the clips both results share."""
        if result["metrics"].get("fad") is None:
            return {}, {}
        gen_keys = {r["item"]: r["clip_id"] for r in rows if r["status"] != "missing"}
        clips = sorted(set(gen_keys.values()))
        try:
            fad = result["metric_details"]["fad"]
            caches = fad["caches"]
            sha = result["extractors"]["fad"]["sha256"]
            used = (int(fad["num_generated_samples"]), int(fad["num_reference_clips"]))
            gen = read_cached_features(caches["gen"]["directory"], list(gen_keys), sha, FAD_PARAMS)
            gt = read_cached_features(caches["gt"]["directory"], [f"{c}#0" for c in clips], sha, FAD_PARAMS)
        except (KeyError, TypeError, ValueError) as e:
            return {}, {"fad": f"the result does not record its VGGish caches ({type(e).__name__}: {e})"}
        except ToolkitError as e:
            return {}, {"fad": str(e)}
        if (len(gen), len(gt)) != used:
            return {}, {"fad": f"the caches no longer hold the files its evaluation used: it took {used[0]} "
                               f"generated samples and {used[1]} ground-truth clips, the caches give {len(gen)} "
                               f"and {len(gt)}; re-run vbench evaluate"}
        return {"fad": SetInput("fd", ("fad",), [(gen_keys[k], v) for k, v in gen.items()],
                                [(k.rsplit("#", 1)[0], v) for k, v in gt.items()], FAD_RULE)}, {}
