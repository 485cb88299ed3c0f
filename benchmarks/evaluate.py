"""``vbench evaluate``: generate (if needed), run a protocol, write a result JSON.

One driver for every protocol (`benchmarks.protocols`): the model adapter (`benchmarks.models`) produces outputs
(clips without a usable output are listed by id with the reason; the run fails unless ``allow_missing``), the
protocol object extracts features through the caches and computes its metrics, and the result JSON
(`benchmarks.results`) records values, notes for undefined metrics, every excluded clip or file with its reason,
warnings, counts, timings, software and checksums. Next to it, ``<result>.clips.parquet`` (`benchmarks.per_clip`)
holds one row per item with its per-item metric values, status and reason; the result's ``metric_ci`` holds a
95 % bootstrap interval over clips for every metric (`benchmarks.bootstrap`; ``bootstrap=0`` turns it off).
Every weights file the metrics and the model need is checked first (`required_weights`, `check_weights`): a
missing one stops the run before any generation, and the error names all of them.
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

from benchmarks import bootstrap as bs
from benchmarks import per_clip
from benchmarks.datasets import Dataset
from benchmarks.models import ModelOutputs
from benchmarks.protocols import PROTOCOL_NAMES, EvaluationError, get_protocol, select_metrics
from benchmarks.results import RESULT_FORMAT, SCHEMA_VERSION, result_filename, validate_result
from visualsound.utils.atomic import atomic_write_json

log = logging.getLogger(__name__)


class MissingOutputsError(EvaluationError):
    """Some clips have no usable output; ``missing`` maps each clip id to the reason."""

    def __init__(self, missing: dict[str, str]) -> None:
        self.missing = dict(missing)
        lines = [f"{cid}: {why}" for cid, why in list(self.missing.items())[:20]]
        more = f" (and {len(self.missing) - 20} more)" if len(self.missing) > 20 else ""
        super().__init__(f"{len(self.missing)} clips have no usable output{more}; pass --allow-missing to score "
                         "the rest:\n  " + "\n  ".join(lines))


@dataclass
class EvalOptions:
    """Everything `evaluate` needs besides the dataset and the model adapter."""

    protocol: str = "vaura-paper"
    out_dir: str | os.PathLike = "results"
    cache_dir: str | os.PathLike | None = None  # default: <out_dir>/cache
    device: str = "cpu"
    debug_weights: bool = False
    checkpoints: dict[str, str] = field(default_factory=dict)  # extractor -> path (vggish/passt/panns/ib/sync)
    presets: dict[str, str] = field(default_factory=dict)  # extractor -> config preset of a non-standard checkpoint
    allow_missing: bool = False
    metrics: Sequence[str] | None = None  # default: all of the protocol's
    progress: bool = False
    batch_size: int = 16  # clips per extractor forward pass (av-benchmark)
    bootstrap: int = bs.DEFAULT_RESAMPLES  # resamples per metric (0: no intervals)
    bootstrap_set: int = bs.DEFAULT_SET_RESAMPLES  # resamples for set-level metrics (FAD, FD_*, IS)
    bootstrap_seed: int = 0
    shard: Any = None  # a sharded `visualsound.utils.shard.Shard`: generate this part only, no metrics

    @property
    def cache_root(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir is not None else Path(self.out_dir) / "cache"


# ------------------------------------------------------------------------------------------------ driver
def _software() -> dict[str, str]:
    from visualsound import __version__

    return {"version": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__}


@dataclass
class EvalContext:
    """What a protocol's ``run`` gets: the dataset, the model adapter and its outputs, the options, the metrics to
    compute and the model's cache key (the generated set's name in the feature caches)."""

    dataset: Dataset
    model: Any
    outputs: ModelOutputs
    options: EvalOptions
    metrics: tuple[str, ...]
    set_key: str


def _intervals(protocol: str, run: Any, values: dict[str, float | None], options: EvalOptions
               ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Bootstrap intervals of every metric (per-item metrics from the per-clip rows, set-level metrics from the
    protocol's in-memory features) and the ``bootstrap`` record (resample counts, seed, level, seconds)."""
    t0 = time.perf_counter()
    item_stats = per_clip.item_statistics(run.items, [m for m in per_clip.item_metrics(protocol) if m in values])
    ci = bs.confidence_intervals([*item_stats.values(), *run.set_statistics], values, options.bootstrap,
                                        options.bootstrap_set, options.bootstrap_seed, device=options.device)
    record = {"resamples": options.bootstrap, "set_resamples": options.bootstrap_set, "seed": options.bootstrap_seed,
              "level": bs.LEVEL, "unit": "clip", "seconds": round(time.perf_counter() - t0, 3)}
    return ci, record


def extractor_keys() -> dict[str, str]:
    """Registry name -> ``EvalOptions.checkpoints`` key of every metric extractor's weights, from the protocols'
    own ``required_weights`` (so a CLI keyed by registry name needs no second table)."""
    keys: dict[str, str] = {}
    for protocol_name in PROTOCOL_NAMES:
        protocol = get_protocol(protocol_name)
        for key, name in protocol.required_weights(protocol.metrics).items():
            if keys.setdefault(name, key) != key:
                raise EvaluationError(f"weights {name!r} have two checkpoint keys: {keys[name]!r} and {key!r}")
    return keys


def extractor_checkpoints(paths: dict[str, str | None]) -> dict[str, str]:
    """The paths given for metric extractors' weights (registry name -> path or None: the cache) as
    ``EvalOptions.checkpoints`` (key -> path; the cache ones left out). A name no protocol loads raises."""
    keys = extractor_keys()
    unknown = sorted(set(paths) - set(keys))
    if unknown:
        raise EvaluationError(f"no metric loads the weights {unknown}; metric weights: {', '.join(keys)}")
    return {keys[name]: path for name, path in paths.items() if path}


def required_weights(protocol: Any, metrics: Sequence[str], debug_weights: bool, checkpoints: dict[str, str],
                     sharded: bool = False, model_needs: dict[str, str | None] | None = None
                     ) -> dict[str, str | None]:
    """Every weights file a run loads: registry name -> the path given for it (None: the cache). The metrics'
    (``protocol.required_weights``; none with debug weights, none for a sharded run, which computes no metric)
    and the model's (`model_needs`)."""
    needs: dict[str, str | None] = dict(model_needs or {})
    if not debug_weights and not sharded:
        needs.update({name: checkpoints.get(key) for key, name in protocol.required_weights(metrics).items()})
    return needs


def check_weights(needs: dict[str, str | None]) -> None:
    """`visualsound.weights.require`: every missing file in one error (URL, path, how to get it), before any
    generation or feature extraction."""
    from visualsound.weights import require

    require(needs, "this evaluation needs")


def evaluate(dataset: Dataset, model: Any, options: EvalOptions) -> dict[str, Any]:
    """Run the whole evaluation of `model` (an adapter from `benchmarks.models.make_model`) on `dataset` under
    ``options.protocol``; write the result JSON into ``options.out_dir`` and return it (its path under
    ``"_path"``)."""
    protocol = get_protocol(options.protocol)
    metrics = select_metrics(protocol.name, options.metrics)
    protocol.check(dataset, model)
    sharded = options.shard is not None and options.shard.sharded
    check_weights(required_weights(protocol, metrics, options.debug_weights, options.checkpoints, sharded,
                                   getattr(model, "required_weights", dict)()))
    t_start = time.perf_counter()
    if sharded:  # metrics need every clip: generate this part only
        import dataclasses

        from visualsound.utils.shard import select_items

        part = dataclasses.replace(dataset, clips=tuple(select_items(dataset.clips, options.shard, lambda c: c.id)))
        outputs = model.outputs(part, progress=options.progress)
        return {"shard": str(options.shard), "clips": len(part.clips), "samples": len(outputs.all_samples()),
                "missing": dict(outputs.missing), "generate_s": round(time.perf_counter() - t_start, 3)}
    outputs: ModelOutputs = model.outputs(dataset, progress=options.progress)
    t_gen = time.perf_counter() - t_start
    missing = protocol.missing(dataset, outputs)
    if missing and not options.allow_missing:
        raise MissingOutputsError(missing)
    if missing:
        log.warning("%d clips have no usable output and are left out (--allow-missing)", len(missing))
    ctx = EvalContext(dataset, model, outputs, options, metrics, model.cache_key)
    run = protocol.run(ctx)
    for w in run.warnings:
        log.warning("%s", w)
    info = model.info()
    debug = bool(options.debug_weights or getattr(model, "debug_weights", False))
    result: dict[str, Any] = {
        "format": RESULT_FORMAT, "schema_version": SCHEMA_VERSION,
        "protocol": {"name": protocol.name, "version": protocol.version, "description": protocol.description},
        "dataset": dataset.identity(),
        "model": info,
        "metrics": {m: run.values[m] for m in metrics},
        "metric_notes": {m: run.notes[m] for m in metrics if m in run.notes},
        "metric_details": run.details,
        "extractors": run.extractors,
        "counts": {**run.counts, "missing": len(missing), "missing_ids": sorted(missing),
                   "missing_reasons": dict(sorted(missing.items()))},
        "excluded": dict(sorted(run.excluded.items())),
        "warnings": list(run.warnings),
        "timings": {"generate_s": round(outputs.generate_seconds or t_gen, 3), "metrics_s": run.seconds,
                    "total_s": round(time.perf_counter() - t_start, 3)},
        "software": _software(), "device": options.device,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "debug_weights": debug,
    }
    if options.bootstrap > 0:
        result["metric_ci"], result["bootstrap"] = _intervals(protocol.name, run, result["metrics"], options)
    # checkpoint, sampling, seeds and a metric subset make distinct files: a partial or other-seed run never
    # overwrites another run's result
    run_name = f"{model.cache_key}-n{info['samples_per_clip']}"
    if info["seeds"]:
        run_name += f"-seed{info['seeds'][0]}"
    if set(metrics) != set(protocol.metrics):
        run_name += "-" + "+".join(metrics)
    path = Path(options.out_dir) / result_filename(run_name, dataset.name, protocol.name, debug)
    result["per_clip"] = per_clip.write_table(
        per_clip.path_for(path), run.items, protocol.name,
        {"protocol": protocol.name, "dataset": dataset.name, "dataset_fingerprint": result["dataset"]["fingerprint"],
         "model": info["name"], "debug_weights": "true" if debug else "false", "result_file": path.name})
    validate_result(result, "new result")
    atomic_write_json(path, result)
    result["_path"] = str(path)
    return result
