"""``vbench evaluate --protocol av-benchmark``: the av-benchmark protocol over a dataset manifest and a model.

The sets, as the original forms them (fixture README 2.1):

* **ground-truth audio**: every clip of the manifest, by clip id, read from its audio file (or its video's track)
  from ``start_sec`` to the end of the file (av-benchmark's ``--gt_audio`` folder);
* **ground-truth video**: every clip with a video (``extract_video.py``'s folder);
* **generated audio**: every file the model produced, by file stem -- for a ``dir:`` model *every* audio file
  at the top of its folder, paired or not (unpaired files still count where the original uses all files).

Each metric then pairs the sets by the original's rules (`benchmarks.protocols.avbench.pairing`), computes its
formula (`benchmarks.protocols.avbench.formulas`) on features from `benchmarks.protocols.avbench.extract`, and
the result lists every file a metric left out, with the reason: unpaired names, names changed by
``clean_sample_name``, rejected videos, generated clips too short for DeSync, unreadable files. Where the original
gives NaN (IS below 10 clips) or -1 (an FD whose square root is complex) the metric is null with a note.

What is deliberately not copied (it only breaks): the endless loop without ``--audio_length`` (the length is the
dataset's window, 8 s by default), the silent substitution of the next file when one fails to load (the file is
listed as unreadable instead), the crash on a batch of only rejected videos, the weights-path bug, and scipy's
``disp`` argument.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import torch

from benchmarks.cache import FeatureCache, dataset_cache
from benchmarks.datasets import Dataset
from benchmarks.models import ModelOutputs
from benchmarks.protocols import EvaluationError, ProtocolRun
from benchmarks.protocols.avbench import formulas as fm
from benchmarks.protocols.avbench.extract import (
    AUDIO_EXTRACTORS,
    CODE_VERSION,
    EXTRACTORS,
    VIDEO_EXTRACTORS,
    Item,
    Models,
    extract_audio,
    extract_video,
)
from benchmarks.protocols.avbench.pairing import Pairing, pair
from benchmarks.results import metric_keys

log = logging.getLogger(__name__)

LENGTH_SEC = 8.0  # MMAudio's --audio_length
DESYNC_BATCH = 16  # pairs per compare_v_a call, as the original
WINDOW_SEGMENTS = 14

#: metric key -> the extractors it needs
NEEDS: dict[str, tuple[str, ...]] = {
    "FD-PASST": ("avb-passt",), "KL-PASST-softmax": ("avb-passt",), "ISC-PASST-mean": ("avb-passt",),
    "ISC-PASST-std": ("avb-passt",), "FD-PANN": ("avb-panns",), "KL-PANNS-softmax": ("avb-panns",),
    "ISC-PANNS-mean": ("avb-panns",), "ISC-PANNS-std": ("avb-panns",), "FD-VGG": ("avb-vggish",),
    "IB-Score": ("avb-ib-audio", "avb-ib-video"), "DeSync": ("avb-sync-audio", "avb-sync-video"),
}
GT_AUDIO_EXTRACTORS = ("avb-panns", "avb-vggish", "avb-passt")


class AVBenchmarkProtocol:
    """hkchengrex/av-benchmark's metrics (see the module docstring)."""

    name = "av-benchmark"
    version = 1
    description = ("av-benchmark (hkchengrex/av-benchmark @ 050a5cd, MMAudio's evaluator): FD_PaSST, FD_PANNs, "
                   "FD_VGG, KL_PANNs, KL_PaSST (softmax), IS (PANNs, PaSST), IB-score (cosine), DeSync (s)")

    @property
    def metrics(self) -> tuple[str, ...]:
        return metric_keys(self.name)

    def default_samples_per_clip(self, dataset: Dataset) -> int:
        """One sample per clip, as MMAudio evaluates."""
        return 1

    def check(self, dataset: Dataset, model: Any) -> None:
        n = getattr(model, "samples_per_clip", 1)
        if n and n > 1:
            raise EvaluationError(f"the av-benchmark protocol evaluates one generated file per clip (as MMAudio); "
                                  f"this model has {n} samples per clip: use --samples-per-clip 1, or "
                                  f"--protocol vaura-paper for several samples per clip")

    # -- the generated set -------------------------------------------------------------------------------------
    @staticmethod
    def generated_files(outputs: ModelOutputs) -> dict[str, Item]:
        """Generated files by name in the original's order (sorted by stem): a ``dir:`` model's every top-level
        audio file (`ModelOutputs.files`), else each clip's one sample named by its clip id."""
        if outputs.files:
            named = {n: Item(n, s.path, 0.0) for n, s in outputs.files.items()}
        else:
            named = {cid: Item(cid, samples[0].path, samples[0].start_sec)
                     for cid, samples in outputs.samples.items() if samples}
        return {n: named[n] for n in sorted(named)}

    def missing(self, dataset: Dataset, outputs: ModelOutputs) -> dict[str, str]:
        """GT clips that no generated file pairs with (by ``clean_sample_name``, the PaSST/IB/DeSync rule)."""
        generated = self.generated_files(outputs)
        paired = pair(dataset.ids, list(generated), "cleaned")
        return {cid: outputs.missing.get(cid, "no generated file pairs with it (by clean_sample_name)")
                for cid in paired.unpaired_gt}

    # -- the run ---------------------------------------------------------------------------------------------
    def run(self, ctx: Any) -> ProtocolRun:
        dataset, options = ctx.dataset, ctx.options
        length = float(dataset.window_sec)
        run = ProtocolRun()
        if abs(length - LENGTH_SEC) > 1e-9:
            run.warnings.append(f"audio length {length:g} s (the dataset's window); MMAudio's numbers use "
                                f"{LENGTH_SEC:g} s")
        wanted = set(ctx.metrics)
        extractors = {e for m in wanted for e in NEEDS[m]}
        models = Models(options)
        params = {"length_sec": length, "code_version": CODE_VERSION}

        def caches(set_key: str, names: tuple[str, ...]) -> dict[str, FeatureCache]:
            return {e: dataset_cache(options, dataset, set_key, e, models.checksum(e)[1], None,
                                     {**params, **({"preset": options.presets[EXTRACTORS[e][1]]}
                                                   if EXTRACTORS[e][1] in options.presets else {})})
                    for e in names if e in extractors}

        t0 = time.perf_counter()
        gt_items = [Item(c.id, c.audio_source, c.start_sec) for c in sorted(dataset.clips, key=lambda c: c.id)]
        video_items = [Item(c.id, c.video, 0.0) for c in dataset.clips if c.video]
        gen_items = list(self.generated_files(ctx.outputs).values())
        if not gen_items:
            raise EvaluationError("the model produced no generated files to evaluate")
        gt_c = caches("ground-truth", GT_AUDIO_EXTRACTORS)
        gt = extract_audio(gt_items, list(gt_c), gt_c, models, length, options.batch_size,
                           "GT audio", options.progress)
        gen_c = caches(ctx.set_key, AUDIO_EXTRACTORS)
        gen = extract_audio(gen_items, list(gen_c), gen_c, models, length, options.batch_size,
                            f"generated audio ({ctx.set_key})", options.progress)
        vid_c = caches("ground-truth", VIDEO_EXTRACTORS)
        vid = extract_video(video_items, list(vid_c), vid_c, models, length, options.batch_size,
                            options.progress) if vid_c else None
        extract_s = time.perf_counter() - t0
        for name, why in gt.failed.items():
            _exclude(run, f"ground-truth audio {name}", why)
        for name, why in gen.failed.items():
            _exclude(run, f"generated {name}", why)
        if vid is not None:
            for name, why in vid.failed.items():
                _exclude(run, f"ground-truth video {name}", why)

        gt_names = [it.name for it in gt_items if it.name not in gt.failed]
        gen_names = [it.name for it in gen_items if it.name not in gen.failed]
        run.counts = {"clips": len(gt_names), "samples": len(gen_names), "videos": len(video_items),
                      "length_sec": length}
        run.details["extract_seconds"] = round(extract_s, 3)
        run.details["caches"] = {"ground-truth": gt.caches, "generated": gen.caches,
                                 "video": vid.caches if vid is not None else {}}
        for e in sorted(extractors):
            run.extractors[e] = models.describe(e)
        groups = [
            ("panns", lambda: _panns(run, gt, gen, gt_names, gen_names, wanted)),
            ("vggish", lambda: _vggish(run, gt, gen, gt_names, gen_names, wanted)),
            ("passt", lambda: _passt(run, gt, gen, gt_names, gen_names, wanted)),
            ("ib", lambda: _ib(run, gen, vid, gen_names, wanted)),
            ("desync", lambda: _desync(run, gen, vid, gen_names, wanted, models)),
        ]
        for group, fn in groups:
            t1 = time.perf_counter()
            if fn():
                run.seconds[group] = round(time.perf_counter() - t1, 3)
        renamed = run.details.get("passt", {}).get("pairing", {}).get("renamed") or {}
        if renamed:
            run.warnings.append(f"clean_sample_name renamed {len(renamed)} generated files before pairing (e.g. "
                                f"{next(iter(renamed.items()))}); the original pairs 20-, 21- and 30-character "
                                f"names this way")
        n_excluded = len(run.excluded)
        if n_excluded:
            run.warnings.append(f"{n_excluded} files were left out of at least one metric; 'excluded' in the "
                                f"result says which and why")
        return run


# ------------------------------------------------------------------------------------------------ metric groups
def _exclude(run: ProtocolRun, key: str, why: str) -> None:
    run.excluded[key] = f"{run.excluded[key]}; {why}" if key in run.excluded else why


def _record_pairing(run: ProtocolRun, p: Pairing, metrics: str) -> None:
    for name, why in p.unpaired_generated.items():
        _exclude(run, f"generated {name}", f"{metrics}: {why}")
    for name, why in p.unpaired_gt.items():
        _exclude(run, f"ground truth {name}", f"{metrics}: {why}")


def _set_metric(run: ProtocolRun, key: str, fn: Any, wanted: set[str]) -> None:
    if key not in wanted:
        return
    try:
        value = fn()
    except fm.UndefinedMetricError as e:
        run.values[key], run.notes[key] = None, str(e)
        run.warnings.append(f"{key} is undefined: {e}")
        return
    run.values[key] = value


def _set_is(run: ProtocolRun, prefix: str, logits: torch.Tensor, wanted: set[str]) -> None:
    keys = (f"ISC-{prefix}-mean", f"ISC-{prefix}-std")
    if not wanted & set(keys):
        return
    mean, std = fm.inception_score(logits)
    why = fm.is_undefined_reason(logits.shape[0])
    for key, value in zip(keys, (mean, std)):
        if key not in wanted:
            continue
        if math.isnan(value):
            run.values[key], run.notes[key] = None, f"NaN as in the original: {why}"
        else:
            run.values[key] = value
    if why:
        run.warnings.append(f"ISC-{prefix}: {why}")


def _usable(run: ProtocolRun, feats: dict[str, Any], names: list[str], side: str, metrics: str) -> list[str]:
    """`names` whose features exist; a clip dropped by the network (too short) is recorded as excluded."""
    out = []
    for n in names:
        value = feats[n]
        if isinstance(value, dict) and "dropped" in value:
            _exclude(run, f"{side} {n}", f"{metrics}: {value['dropped']}")
        else:
            out.append(n)
    return out


def _panns(run, gt, gen, gt_names, gen_names, wanted) -> bool:
    if not wanted & {"FD-PANN", "KL-PANNS-softmax", "ISC-PANNS-mean", "ISC-PANNS-std"}:
        return False
    g, p = gt.features["avb-panns"], gen.features["avb-panns"]
    gt_ok = _usable(run, g, gt_names, "ground truth", "PANNs metrics")
    gen_ok = _usable(run, p, gen_names, "generated", "PANNs metrics")
    _set_metric(run, "FD-PANN", lambda: fm.frechet_distance(torch.stack([p[n]["embedding"] for n in gen_ok]),
                                                            torch.stack([g[n]["embedding"] for n in gt_ok])),
                wanted)
    exact = pair(gt_ok, gen_ok, "exact")
    _record_pairing(run, exact, "KL-PANNS (exact names)")
    kl = None
    if exact.pairs:
        pl = torch.stack([p[n]["logits"] for n in exact.generated_names])
        gl = torch.stack([g[n]["logits"] for n in exact.gt_names])
        kl = fm.kl_per_pair(pl, gl)
    _set_metric(run, "KL-PANNS-softmax", lambda: fm.kl_softmax(pl, gl) if exact.pairs else _no_pairs("KL-PANNS"),
                wanted)
    _set_is(run, "PANNS", torch.stack([p[n]["logits"] for n in gen_ok]), wanted)
    run.details["panns"] = {"fd_rows": {"generated": len(gen_ok), "ground_truth": len(gt_ok)},
                            "kl_pairing": exact.to_dict(),
                            "kl_per_pair": dict(zip(exact.generated_names, kl.tolist())) if kl is not None else {}}
    return True


def _vggish(run, gt, gen, gt_names, gen_names, wanted) -> bool:
    if "FD-VGG" not in wanted:
        return False
    g, p = gt.features["avb-vggish"], gen.features["avb-vggish"]
    gt_ok = _usable(run, g, gt_names, "ground truth", "FD-VGG (contributes no rows, as in the original)")
    gen_ok = _usable(run, p, gen_names, "generated", "FD-VGG (contributes no rows, as in the original)")
    _set_metric(run, "FD-VGG", lambda: fm.frechet_distance(torch.cat([p[n] for n in gen_ok]),
                                                           torch.cat([g[n] for n in gt_ok])), wanted)
    run.details["vggish"] = {"rows": {"generated": {n: int(p[n].shape[0]) for n in gen_ok},
                                      "ground_truth": {n: int(g[n].shape[0]) for n in gt_ok}}}
    return True


def _passt(run, gt, gen, gt_names, gen_names, wanted) -> bool:
    if not wanted & {"FD-PASST", "KL-PASST-softmax", "ISC-PASST-mean", "ISC-PASST-std"}:
        return False
    g, p = gt.features["avb-passt"], gen.features["avb-passt"]
    cleaned = pair(_usable(run, g, gt_names, "ground truth", "PaSST metrics"),
                   _usable(run, p, gen_names, "generated", "PaSST metrics"), "cleaned")
    _record_pairing(run, cleaned, "PaSST metrics (paired by clean_sample_name)")
    if not cleaned.pairs:
        for key in ("FD-PASST", "KL-PASST-softmax", "ISC-PASST-mean", "ISC-PASST-std"):
            _set_metric(run, key, lambda: _no_pairs("PaSST"), wanted)
        run.details["passt"] = {"pairing": cleaned.to_dict()}
        return True
    pf = torch.stack([p[n]["features"] for n in cleaned.generated_names])
    gf = torch.stack([g[n]["features"] for n in cleaned.gt_names])
    pl = torch.stack([p[n]["logits"] for n in cleaned.generated_names])
    gl = torch.stack([g[n]["logits"] for n in cleaned.gt_names])
    _set_metric(run, "FD-PASST", lambda: fm.frechet_distance(pf, gf), wanted)
    _set_metric(run, "KL-PASST-softmax", lambda: fm.kl_softmax(pl, gl), wanted)
    _set_is(run, "PASST", pl, wanted)
    run.details["passt"] = {"pairing": cleaned.to_dict(),
                            "kl_per_pair": dict(zip(cleaned.generated_names, fm.kl_per_pair(pl, gl).tolist()))}
    return True


def _no_pairs(what: str) -> float:
    raise fm.UndefinedMetricError(f"{what}: no generated file pairs with a ground-truth clip")


def _video_features(vid, extractor: str, run: ProtocolRun) -> dict[str, torch.Tensor]:
    """Accepted videos' features; rejected ones are recorded as excluded."""
    out = {}
    for name, value in vid.features[extractor].items():
        if isinstance(value, dict):
            _exclude(run, f"ground-truth video {name}", f"IB-Score and DeSync: {value['rejected']}")
        else:
            out[name] = value
    return out


def _ib(run, gen, vid, gen_names, wanted) -> bool:
    if "IB-Score" not in wanted:
        return False
    videos = _video_features(vid, "avb-ib-video", run)
    audio = gen.features["avb-ib-audio"]
    p = pair(list(videos), _usable(run, audio, gen_names, "generated", "IB-Score"), "cleaned",
             gt_what="ground-truth video")
    _record_pairing(run, p, "IB-Score (paired with GT videos by clean_sample_name)")
    if not p.pairs:
        _set_metric(run, "IB-Score", lambda: _no_pairs("IB-Score"), wanted)
        run.details["ib"] = {"pairing": p.to_dict()}
        return True
    v = torch.stack([videos[g] for g in p.gt_names])
    a = torch.stack([audio[n] for n in p.generated_names])
    _set_metric(run, "IB-Score", lambda: fm.ib_score(v, a), wanted)
    run.details["ib"] = {"pairing": p.to_dict(),
                         "cosine_per_pair": dict(zip(p.generated_names, fm.ib_cosines(v, a).tolist()))}
    return True


def _desync(run, gen, vid, gen_names, wanted, models: Models) -> bool:
    if "DeSync" not in wanted:
        return False
    videos = _video_features(vid, "avb-sync-video", run)
    feats = gen.features["avb-sync-audio"]
    audio = {n: feats[n] for n in _usable(run, feats, gen_names, "generated",
                                          "DeSync (the original drops such a clip silently)")}
    p = pair(list(videos), list(audio), "cleaned", gt_what="ground-truth video")
    _record_pairing(run, p, "DeSync (paired with GT videos by clean_sample_name)")
    if not p.pairs:
        _set_metric(run, "DeSync", lambda: _no_pairs("DeSync"), wanted)
        run.details["desync"] = {"pairing": p.to_dict()}
        return True
    model = models.get("sync")
    logits = []
    for i in range(0, len(p.pairs), DESYNC_BATCH):
        v = torch.stack([videos[g] for g in p.gt_names[i:i + DESYNC_BATCH]])
        a = torch.stack([audio[n] for n in p.generated_names[i:i + DESYNC_BATCH]])
        logits.append(window_logits(model, v, a))
    offsets = fm.desync_offsets(torch.cat(logits))  # logits [N, 2, 21] -> [N, 2]
    _set_metric(run, "DeSync", lambda: fm.desync(offsets), wanted)
    run.details["desync"] = {"pairing": p.to_dict(), "abs_offset_sec_per_pair": {
        n: offsets[i].tolist() for i, n in enumerate(p.generated_names)}}
    return True


# ------------------------------------------------------------------------------------------------ one clip
@torch.no_grad()
def window_logits(model: torch.nn.Module, video_feats: torch.Tensor, audio_feats: torch.Tensor) -> torch.Tensor:
    """The sync head on the first and the last 14 segments of each pair: features ``[B, S, 8, Dv]`` and
    ``[B, S, 6, Da]`` (S = 24 for 8 s) -> logits ``[B, 2, 21]`` (float32, CPU), as the original's two
    ``compare_v_a`` calls."""
    if video_feats.shape[1] < WINDOW_SEGMENTS or audio_feats.shape[1] < WINDOW_SEGMENTS:
        raise EvaluationError(f"DeSync needs {WINDOW_SEGMENTS} segments per window; got video "
                              f"{tuple(video_feats.shape)}, audio {tuple(audio_feats.shape)}")
    dev = next(model.parameters()).device
    v, a = video_feats.to(dev), audio_feats.to(dev)
    first = model.compare(v[:, :WINDOW_SEGMENTS], a[:, :WINDOW_SEGMENTS])[0]
    last = model.compare(v[:, -WINDOW_SEGMENTS:], a[:, -WINDOW_SEGMENTS:])[0]
    return torch.stack([first, last], dim=1).float().cpu()


@dataclass(frozen=True)
class ClipDesync:
    """One clip's DeSync as the protocol computes it: the two windows' logits ``[2, 21]`` (first 4.8 s, last
    4.8 s of the first `length_sec`), their signed offsets (s, audio relative to video) and the clip's DeSync
    (mean absolute offset, s)."""

    logits: torch.Tensor
    offsets_sec: tuple[float, float]
    desync_sec: float
    window_starts_sec: tuple[float, float]

    def top(self, k: int = 3) -> list[tuple[float, float]]:
        """The `k` most likely ``(offset_sec, probability)`` of the mean of the two windows' softmax."""
        probs = self.logits.softmax(-1).mean(0)
        p, i = probs.topk(min(k, probs.numel()))
        grid = fm.sync_grid()
        return [(float(grid[j]), float(q)) for q, j in zip(p, i)]


def clip_desync(model: torch.nn.Module, video: str | os.PathLike, audio: str | os.PathLike | None = None,
                length_sec: float = LENGTH_SEC) -> ClipDesync:
    """DeSync of one clip exactly as ``vbench evaluate --protocol av-benchmark`` computes it for a pair: the
    video's 25 fps frames (FFmpeg's ``fps`` rule, the lost last frame) and the audio of `audio` (default: the
    video's own track). Raises `EvaluationError` with the original's rejection reason for a video it would drop,
    and `AudioTooShortError` for audio shorter than `length_sec`."""
    from benchmarks.protocols.avbench import audio as A
    from benchmarks.protocols.avbench import video as V

    frames = V.read_video_frames(video, length_sec)
    if frames.rejection:
        raise EvaluationError(f"{video}: the av-benchmark protocol rejects this video: {frames.rejection}")
    wave, sr = A.read_audio(audio if audio is not None else video)
    a = A.sync_audio_features(model, A.sync_audio_input(A.sync_wave(wave, sr, length_sec)[None]))
    v = V.sync_video_features(model, V.sync_segments(V.sync_video_input(frames.sync.frames))[None])
    logits = window_logits(model, v, a)[0]
    grid = fm.sync_grid()
    offsets = (float(grid[logits[0].argmax()]), float(grid[logits[1].argmax()]))
    last_start = (a.shape[1] - WINDOW_SEGMENTS) * A.SYNC_SEGMENT_HOP / A.SYNC_SAMPLE_RATE  # 3.2 s for 8 s
    return ClipDesync(logits, offsets, fm.desync(fm.desync_offsets(logits[None])), (0.0, last_start))
