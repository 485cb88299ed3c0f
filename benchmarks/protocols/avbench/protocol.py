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

Per-clip table (`benchmarks.per_clip`): one row per generated file (its stem; ``clip_id`` the GT clip it pairs
with by ``clean_sample_name``, else by exact name, else null and status ``unpaired``) with its KL-PANNS-softmax and
KL-PASST-softmax (the pair's KL, float64; the metric sums float32 values, so the column mean equals it within
float32 rounding), IB-Score (the pair's cosine) and DeSync (the mean of its two windows' absolute offsets,
``desync_first_sec`` / ``desync_last_sec``; every pair has two windows, so the metric is the column mean), plus a
``gt:<clip id>`` row (``missing``) per GT clip no generated file pairs with. A row's reason joins the file's own
``excluded`` entry and those of its clip's GT audio and video. Bootstrap units: the GT clip (a clip's generated
and GT rows move together), ``item:<stem>`` for an unpaired file; FD-PANN, FD-VGG and IS-PANNS use every file as
the original does, so unpaired files and GT clips without a partner are units too (a generated file's unit is its
row's clip: by ``clean_sample_name``, else by exact name); FD-PASST and IS-PASST take the pairs by
``clean_sample_name`` only, each pair in its GT clip's unit, so a clip paired with several generated files has its
GT row once per file, as in the formula, and a clip paired by exact name only (a 20-, 21- or 30-character name
that ``clean_sample_name`` cuts) has no PaSST rows. `AVBenchmarkProtocol.cached_set_statistics` rebuilds exactly
these inputs from the caches for ``vbench compare`` (`SET_METRICS`), checked against the files the result records
per metric.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from benchmarks import per_clip
from benchmarks.bootstrap import SetInput
from benchmarks.cache import FeatureCache, dataset_cache, read_cached_features
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
from benchmarks.protocols.avbench.pairing import Pairing, clean_sample_name, pair
from benchmarks.results import metric_keys
from visualsound.errors import ToolkitError

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

    def required_weights(self, metrics: Sequence[str]) -> dict[str, str]:
        """``EvalOptions.checkpoints`` key -> registry name of the weights `metrics` need (through `NEEDS`)."""
        return {EXTRACTORS[e][1]: EXTRACTORS[e][0] for m in metrics for e in NEEDS[m]}

    def check(self, dataset: Dataset, model: Any) -> None:
        n = getattr(model, "samples_per_clip", 1)
        if n and n > 1:
            raise EvaluationError(f"the av-benchmark protocol evaluates one generated file per clip (as MMAudio); "
                                  f"this model has {n} samples per clip: use --samples-per-clip 1, or "
                                  f"--protocol vaura-paper for several samples per clip")

    # -- the generated set -------------------------------------------------------------------------------------
    @staticmethod
    def generated_files(outputs: ModelOutputs) -> dict[str, Item]:
        """Generated files by name in the original's order (sorted by stem): a ``dir:`` model's top-level ``*.wav``
        and ``*.flac`` files, as the original finds them (`ModelOutputs.files`, `DirModel.top_level_files`),
        else each clip's one sample named by its clip id."""
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
        video_items = [Item(c.id, c.video, c.start_sec) for c in dataset.clips if c.video]  # the audio's window
        gen_items = list(self.generated_files(ctx.outputs).values())
        run.warnings += [f"generated files: {note}" for note in ctx.outputs.file_notes]
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
        clip_of = clips_of([it.name for it in gen_items], dataset.ids)

        def unit(name: str) -> str:
            return clip_of[name] if clip_of[name] is not None else f"item:{name}"

        groups = [
            ("panns", lambda: _panns(run, gt, gen, gt_names, gen_names, wanted, unit)),
            ("vggish", lambda: _vggish(run, gt, gen, gt_names, gen_names, wanted, unit)),
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
        run.items = _rows(dataset, gen_items, clip_of, run, wanted, length, self.missing(dataset, ctx.outputs))
        return run

    def cached_set_statistics(self, result: dict[str, Any], rows: list[dict[str, Any]]
                              ) -> tuple[dict[str, SetInput], dict[str, str]]:
        """Each set-level metric's `SetInput` over **all** the result's files, read back from its caches and built
        as the run built it (`SET_METRICS`): the metric's own rows (FD-PANN, FD-VGG, ISC-PANNS: every generated
        file, paired or not, and every ground-truth clip; FD-PASST, ISC-PASST: the pairs by ``clean_sample_name``,
        a clip's ground truth once per generated file paired with it), in the run's order, each row with the
        run's bootstrap unit -- so the statistic on all its units is the metric's value; `vbench compare`
        restricts it to the units both results share. The per-clip table gives the files (every generated file
        by stem with its unit, every clip of the manifest); the caches give their features, and which were
        dropped or failed (not stored) as in the run. The rebuilt files are checked against those the result
        records per metric (``metric_details``: PANNs' row counts, VGGish's files and rows, PaSST's pairs);
        ``{metric: why}`` where the metric cannot be rebuilt so: not computed, caches gone or recomputed for
        other weights or settings, or holding other files than the run used."""
        unit_of = {r["item"]: per_clip.unit_of(r) for r in rows if r["status"] != "missing"}
        gen_names = sorted(unit_of)  # the run's order: generated files by stem
        gt_names = sorted({r["clip_id"] for r in rows if r["clip_id"] is not None})  # every clip has a row
        out: dict[str, SetInput] = {}
        problems: dict[str, str] = {}
        values = result["metrics"]
        details = result.get("metric_details") or {}
        for extractor, all_specs in SET_METRICS.items():
            specs = [s for s in all_specs if any(values.get(k) is not None for k in s.keys)]
            if not specs:
                continue
            try:
                caches = details["caches"]
                described = result["extractors"][extractor]
                params = {"length_sec": float(result["counts"]["length_sec"]), "code_version": CODE_VERSION,
                          **({"preset": described["preset"]} if "preset" in described else {})}
                args = (described["sha256"], params)
                gen_read = read_cached_features(caches["generated"][extractor]["directory"], gen_names, *args)
                gt_read = read_cached_features(caches["ground-truth"][extractor]["directory"], gt_names, *args)
            except (KeyError, TypeError) as e:
                problems.update({k: f"the result does not record its {extractor} caches ({e})"
                                 for s in specs for k in s.keys})
                continue
            except ToolkitError as e:
                problems.update({k: str(e) for s in specs for k in s.keys})
                continue
            # a file that failed is not stored, a dropped one is stored as such: both left out, as the run did
            gen = {n: gen_read[n] for n in gen_names if n in gen_read and not _dropped(gen_read[n])}
            gt = {c: gt_read[c] for c in gt_names if c in gt_read and not _dropped(gt_read[c])}
            for spec in specs:
                if spec.rule == "cleaned":
                    pairs = pair(list(gt), list(gen), "cleaned").pairs
                    gen_rows, gt_rows = [(c, n) for c, n in pairs], [(c, c) for c, _ in pairs]
                else:
                    gen_rows, gt_rows = [(unit_of[n], n) for n in gen], [(c, c) for c in gt]
                why = _unlike_record(extractor, spec, details, gen_rows, gt_rows, gen, gt)
                if why:
                    problems.update({k: why for k in spec.keys})
                    continue
                take: Callable[[Any], Any] = (lambda v: v) if spec.field is None else (lambda v, f=spec.field: v[f])
                out[spec.keys[0]] = SetInput(
                    spec.kind, spec.keys, [(u, take(gen[n])) for u, n in gen_rows],
                    [(u, take(gt[c])) for u, c in gt_rows] if spec.kind == "fd" else [], RULES[spec.rule, spec.kind])
        return out, problems


@dataclass(frozen=True)
class SetMetric:
    """A set-level metric computed from one extractor's cached features: ``kind`` (``"fd"`` / ``"is"``), its
    metric keys, the field of the cached value (None: the value itself) and the original's rows (``rule``):
    ``"all"`` (every file, paired or not) or ``"cleaned"`` (the pairs by ``clean_sample_name``)."""

    kind: str
    keys: tuple[str, ...]
    field: str | None
    rule: str


#: extractor -> the set-level metrics computed from its cached features
SET_METRICS: dict[str, tuple[SetMetric, ...]] = {
    "avb-panns": (SetMetric("fd", ("FD-PANN",), "embedding", "all"),
                  SetMetric("is", ("ISC-PANNS-mean", "ISC-PANNS-std"), "logits", "all")),
    "avb-passt": (SetMetric("fd", ("FD-PASST",), "features", "cleaned"),
                  SetMetric("is", ("ISC-PASST-mean", "ISC-PASST-std"), "logits", "cleaned")),
    "avb-vggish": (SetMetric("fd", ("FD-VGG",), None, "all"),),
}
#: the rows each (rule, kind) takes, in words (`SetInput.rule`, quoted by `vbench compare`)
RULES = {
    ("all", "fd"): "the original takes every file: every generated file, paired or not, and every ground-truth clip",
    ("all", "is"): "the original takes every generated file, paired or not",
    ("cleaned", "fd"): "the original takes only the generated files that pair with a ground-truth clip by "
                       "clean_sample_name, and a clip's ground truth once per file paired with it",
    ("cleaned", "is"): "the original takes only the generated files that pair with a ground-truth clip by "
                       "clean_sample_name",
}


def _unlike_record(extractor: str, spec: SetMetric, details: dict[str, Any], gen_rows: list[tuple[str, str]],
                   gt_rows: list[tuple[str, str]], gen: dict[str, Any], gt: dict[str, Any]) -> str:
    """Why the rebuilt rows of `spec` are not the files the run used (as the result records them), else ''."""
    metric = spec.keys[0]
    rebuilt_gen, rebuilt_gt = [n for _, n in gen_rows], [c for _, c in gt_rows]
    try:
        if extractor == "avb-passt":
            pairs = [tuple(p) for p in details["passt"]["pairing"]["pairs"]]
            used_gen, used_gt = [n for _, n in pairs], [g for g, _ in pairs]
        elif extractor == "avb-vggish":
            rec = details["vggish"]["rows"]
            used_gen, used_gt = list(rec["generated"]), list(rec["ground_truth"])
            shapes = {f"generated {n}": (int(v), int(gen[n].shape[0])) for n, v in rec["generated"].items()
                      if n in gen}
            shapes.update({f"ground truth {c}": (int(v), int(gt[c].shape[0]))
                           for c, v in rec["ground_truth"].items() if c in gt})
            changed = [k for k, (was, now) in shapes.items() if was != now]
            if changed:
                return (f"the caches no longer hold the features its evaluation used: {len(changed)} files have "
                        f"another number of VGGish rows now (e.g. {changed[0]}: {shapes[changed[0]][0]} then, "
                        f"{shapes[changed[0]][1]} now); re-run vbench evaluate")
        else:
            counts = details["panns"]["fd_rows"]
            used = (int(counts["generated"]), int(counts["ground_truth"]))
            got = (len(rebuilt_gen), len(rebuilt_gt))
            if spec.kind == "is":
                used, got = used[:1], got[:1]
            if used != got:
                return (f"the caches no longer hold the files its evaluation used: it took "
                        f"{' and '.join(map(str, used))} (generated{', ground-truth' if len(used) > 1 else ''}) "
                        f"files, the caches give {' and '.join(map(str, got))}; re-run vbench evaluate")
            return ""
    except (KeyError, TypeError, ValueError) as e:
        return f"the result does not record which files its {metric} used ({type(e).__name__}: {e})"
    for side, used, got in (("generated", used_gen, rebuilt_gen), ("ground-truth", used_gt, rebuilt_gt)):
        if spec.kind == "is" and side == "ground-truth":
            continue
        if sorted(used) != sorted(got) or (spec.kind == "is" and used != got):
            gone = sorted(set(used) - set(got))
            new = sorted(set(got) - set(used))
            example = (f"gone or dropped since: {', '.join(gone[:3])}" if gone else
                       f"not used then: {', '.join(new[:3])}" if new else "the same files in another order or number")
            return (f"the caches no longer hold the {side} files its evaluation used ({len(used)} then, {len(got)} "
                    f"now; {example}); re-run vbench evaluate")
    return ""


def _dropped(value: Any) -> bool:
    return isinstance(value, dict) and ("dropped" in value or "rejected" in value)


def clips_of(generated: list[str], clip_ids: list[str]) -> dict[str, str | None]:
    """The dataset clip each generated name pairs with: by ``clean_sample_name`` (the PaSST / IB / DeSync rule),
    else by exact name (KL-PANNS), else None."""
    ids = set(clip_ids)
    out: dict[str, str | None] = {}
    for name in generated:
        cleaned = clean_sample_name(name)
        out[name] = cleaned if cleaned in ids else name if name in ids else None
    return out


def _rows(dataset: Dataset, gen_items: list[Item], clip_of: dict[str, str | None], run: ProtocolRun,
          wanted: set[str], length: float, missing: dict[str, str]) -> list[dict[str, Any]]:
    """The per-clip table's rows (see the module docstring): generated files by stem, then missing GT clips."""
    details = run.details

    def per_pair(metric: str, group: str, name: str) -> dict[str, Any]:
        if metric not in wanted or run.values.get(metric) is None:
            return {}
        return details.get(group, {}).get(name, {})

    kl_panns = per_pair("KL-PANNS-softmax", "panns", "kl_per_pair")
    kl_passt = per_pair("KL-PASST-softmax", "passt", "kl_per_pair")
    ib = per_pair("IB-Score", "ib", "cosine_per_pair")
    desync = per_pair("DeSync", "desync", "abs_offset_sec_per_pair")

    def clip_fields(cid: str) -> dict[str, Any]:
        clip = dataset.clip(cid)
        return {"clip_id": cid, "label": clip.label, "gt_audio_path": os.path.abspath(clip.audio_source),
                "video_path": os.path.abspath(clip.video) if clip.video else None, "start_sec": clip.start_sec,
                "window_sec": length}

    def clip_reasons(cid: str) -> list[str]:
        keys = (f"ground-truth audio {cid}", f"ground truth {cid}", f"ground-truth video {cid}")
        return [f"{k}: {run.excluded[k]}" for k in keys if k in run.excluded]

    rows = []
    for it in gen_items:
        cid = clip_of[it.name]
        own = run.excluded.get(f"generated {it.name}", "")
        row: dict[str, Any] = {"item": it.name, "sample": 0, "generated_path": os.path.abspath(it.path)}
        if cid is None:
            row.update({"clip_id": None, "label": "", "status": "unpaired",
                        "reason": own or "pairs with no ground-truth clip"})
        else:
            reason = per_clip.join_reasons([own, *clip_reasons(cid)])
            row.update({**clip_fields(cid), "status": per_clip.status_of(reason), "reason": reason})
        row["KL-PANNS-softmax"] = kl_panns.get(it.name)
        row["KL-PASST-softmax"] = kl_passt.get(it.name)
        row["IB-Score"] = ib.get(it.name)
        if it.name in desync:
            first, last = (float(x) for x in desync[it.name])
            row.update({"DeSync": (first + last) / 2, "desync_first_sec": first, "desync_last_sec": last})
        rows.append(row)
    for cid in sorted(missing):
        rows.append({**clip_fields(cid), "item": f"gt:{cid}", "sample": None, "status": "missing",
                     "reason": per_clip.join_reasons([missing[cid], *clip_reasons(cid)])})
    return rows


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
        why = str(e).removeprefix(f"{key}: ")  # the note is shown after the metric's name
        run.values[key], run.notes[key] = None, why
        run.warnings.append(f"{key} is undefined: {why}")
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


def _panns(run, gt, gen, gt_names, gen_names, wanted, unit) -> bool:
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
    run.set_statistics += [
        SetInput("fd", ("FD-PANN",), [(unit(n), p[n]["embedding"]) for n in gen_ok],
                 [(n, g[n]["embedding"]) for n in gt_ok], RULES["all", "fd"]),
        SetInput("is", ("ISC-PANNS-mean", "ISC-PANNS-std"), [(unit(n), p[n]["logits"]) for n in gen_ok], [],
                 RULES["all", "is"])]
    run.details["panns"] = {"fd_rows": {"generated": len(gen_ok), "ground_truth": len(gt_ok)},
                            "kl_pairing": exact.to_dict(),
                            "kl_per_pair": dict(zip(exact.generated_names, kl.tolist())) if kl is not None else {}}
    return True


def _vggish(run, gt, gen, gt_names, gen_names, wanted, unit) -> bool:
    if "FD-VGG" not in wanted:
        return False
    g, p = gt.features["avb-vggish"], gen.features["avb-vggish"]
    gt_ok = _usable(run, g, gt_names, "ground truth", "FD-VGG (contributes no rows, as in the original)")
    gen_ok = _usable(run, p, gen_names, "generated", "FD-VGG (contributes no rows, as in the original)")
    _set_metric(run, "FD-VGG", lambda: fm.frechet_distance(torch.cat([p[n] for n in gen_ok]),
                                                           torch.cat([g[n] for n in gt_ok])), wanted)
    run.set_statistics.append(SetInput("fd", ("FD-VGG",), [(unit(n), p[n]) for n in gen_ok],
                                       [(n, g[n]) for n in gt_ok], RULES["all", "fd"]))
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
    units = cleaned.gt_names  # a pair moves with its GT clip
    run.set_statistics += [SetInput("fd", ("FD-PASST",), list(zip(units, pf)), list(zip(units, gf)),
                                    RULES["cleaned", "fd"]),
                           SetInput("is", ("ISC-PASST-mean", "ISC-PASST-std"), list(zip(units, pl)), [],
                                    RULES["cleaned", "is"])]
    run.details["passt"] = {"pairing": cleaned.to_dict(),
                            "kl_per_pair": dict(zip(cleaned.generated_names, fm.kl_per_pair(pl, gl).tolist()))}
    return True


def _no_pairs(what: str, rejected: dict[str, str] | None = None) -> float:
    if rejected:
        example = next(iter(rejected.items()))
        raise fm.UndefinedMetricError(f"{what}: no generated file pairs with an accepted ground-truth video; "
                                      f"{len(rejected)} ground-truth videos were rejected (e.g. {example[0]}: "
                                      f"{example[1]})")
    raise fm.UndefinedMetricError(f"{what}: no generated file pairs with a ground-truth clip")


def _video_features(vid, extractor: str, run: ProtocolRun) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Accepted videos' features, and the rejected ones' reasons (also recorded as excluded)."""
    out, rejected = {}, {}
    for name, value in vid.features[extractor].items():
        if isinstance(value, dict):
            rejected[name] = value["rejected"]
            _exclude(run, f"ground-truth video {name}", f"IB-Score and DeSync: {value['rejected']}")
        else:
            out[name] = value
    return out, rejected


def _say_rejected(p: Pairing, rejected: dict[str, str]) -> Pairing:
    """A generated file left unpaired because its ground-truth video was rejected says so (not "no video named")."""
    for name in list(p.unpaired_generated):
        key = clean_sample_name(name)
        if key in rejected:
            p.unpaired_generated[name] = f"its ground-truth video {key!r} was rejected: {rejected[key]}"
    return p


def _ib(run, gen, vid, gen_names, wanted) -> bool:
    if "IB-Score" not in wanted:
        return False
    videos, rejected = _video_features(vid, "avb-ib-video", run)
    audio = gen.features["avb-ib-audio"]
    p = _say_rejected(pair(list(videos), _usable(run, audio, gen_names, "generated", "IB-Score"), "cleaned",
                           gt_what="ground-truth video"), rejected)
    _record_pairing(run, p, "IB-Score (paired with GT videos by clean_sample_name)")
    if not p.pairs:
        _set_metric(run, "IB-Score", lambda: _no_pairs("IB-Score", rejected), wanted)
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
    videos, rejected = _video_features(vid, "avb-sync-video", run)
    feats = gen.features["avb-sync-audio"]
    audio = {n: feats[n] for n in _usable(run, feats, gen_names, "generated",
                                          "DeSync (the original drops such a clip silently)")}
    p = _say_rejected(pair(list(videos), list(audio), "cleaned", gt_what="ground-truth video"), rejected)
    _record_pairing(run, p, "DeSync (paired with GT videos by clean_sample_name)")
    if not p.pairs:
        _set_metric(run, "DeSync", lambda: _no_pairs("DeSync", rejected), wanted)
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
