"""The result JSON of ``vbench evaluate``: schema, validation, reading a results folder.

One result file holds one (model, dataset, protocol) evaluation::

    {"format": "vbench-result", "schema_version": 2,
     "protocol": {"name": "vaura-paper" | "av-benchmark", "version": 1, "description"},
     "dataset": {"name", "num_clips", "fingerprint", "manifest", "window_sec"},
     "model": {"name", "kind", "checkpoint", "checkpoint_sha256", "samples_per_clip", "seeds", ...},
     "metrics": {key: value},            # keys and units per protocol (`PROTOCOL_METRICS`); null = undefined
     "metric_notes": {key: why},         # required for every null metric (e.g. the original's NaN or -1)
     "metric_details": {...}, "extractors": {name: {"checkpoint", "sha256"}},
     "counts": {"clips", "samples", "missing", "missing_ids", "missing_reasons"},
     "excluded": {name: reason},         # every clip or file a metric left out, and why (av-benchmark)
     "warnings": [...],
     "timings": {"generate_s", "metrics_s": {metric: seconds}, "total_s"},
     "software": {"version", "python", "torch", "numpy"}, "device": "cpu", "created": ISO time,
     "debug_weights": false,
     # optional (issue 17; results without them stay valid):
     "per_clip": {"file": "<name>.clips.parquet", "rows", "sha256"},   # `benchmarks.per_clip`
     "metric_ci": {key: {"lo", "hi", "level": 0.95, "resamples", "method": "percentile" | "normal", ...}},
     "bootstrap": {"resamples", "set_resamples", "seed", "level", "unit": "clip", "seconds"}}

Units are the protocol's own: ``vaura-paper`` stores IB x100 and Sync in milliseconds (as the paper prints them);
``av-benchmark`` stores the original's ``output_metrics.json`` keys and units (IB-Score a plain cosine, DeSync in
seconds), and tables display IB x100 as its papers do (`MetricSpec.scale`, stated in the column header).
Schema version 1 files (before ``metric_notes``) are still read. `validate_result` raises `ResultError` listing
every problem; nothing is filled in silently.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visualsound.errors import ToolkitError

RESULT_FORMAT = "vbench-result"
SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)


class ResultError(ToolkitError):
    """A result file is malformed or inconsistent."""


@dataclass(frozen=True)
class MetricSpec:
    """How a metric is reported: key in ``metrics``, column label (with the displayed unit), whether lower is
    better, the stored unit, digits shown, the display `scale` (stored value x scale, e.g. IB x100) and whether it
    gets a column (`shown`; an IS standard deviation is stored but not tabulated)."""

    key: str
    label: str
    lower_is_better: bool
    unit: str
    digits: int
    scale: float = 1.0
    shown: bool = True

    def display(self, value: float) -> float:
        return value * self.scale


VAURA_PAPER_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("fad", "FAD", True, "", 2),
    MetricSpec("kld", "KLD", True, "", 2),
    MetricSpec("ib", "IB", False, "x100", 2),
    MetricSpec("sync_ms", "Sync (ms)", True, "ms", 0),
)
# av-benchmark: the original's output keys and units; labels as MMAudio's Table 1 prints them
AV_BENCHMARK_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("FD-PASST", "FD_PaSST", True, "", 2),
    MetricSpec("FD-PANN", "FD_PANNs", True, "", 2),
    MetricSpec("FD-VGG", "FD_VGG", True, "", 2),
    MetricSpec("KL-PANNS-softmax", "KL_PANNs", True, "", 2),
    MetricSpec("KL-PASST-softmax", "KL_PaSST", True, "", 2),
    MetricSpec("ISC-PANNS-mean", "IS_PANNs", False, "", 2),
    MetricSpec("ISC-PANNS-std", "IS_PANNs std", False, "", 2, shown=False),
    MetricSpec("ISC-PASST-mean", "IS_PaSST", False, "", 2),
    MetricSpec("ISC-PASST-std", "IS_PaSST std", False, "", 2, shown=False),
    MetricSpec("IB-Score", "IB-score (x100)", False, "cosine", 2, scale=100.0),
    MetricSpec("DeSync", "DeSync (s)", True, "s", 3),
)
PROTOCOL_METRICS: dict[str, tuple[MetricSpec, ...]] = {"vaura-paper": VAURA_PAPER_METRICS,
                                                       "av-benchmark": AV_BENCHMARK_METRICS}


def metric_specs(protocol: str) -> tuple[MetricSpec, ...]:
    """The metric specs of `protocol`; `ResultError` for an unknown protocol name."""
    if protocol not in PROTOCOL_METRICS:
        raise ResultError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOL_METRICS)}")
    return PROTOCOL_METRICS[protocol]


def metric_keys(protocol: str) -> tuple[str, ...]:
    return tuple(m.key for m in metric_specs(protocol))


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "format": str, "schema_version": int, "protocol": dict, "dataset": dict, "model": dict, "metrics": dict,
    "counts": dict, "timings": dict, "software": dict, "created": str, "debug_weights": bool,
    "extractors": dict,
}
_OPTIONAL: dict[str, type] = {"metric_notes": dict, "excluded": dict, "warnings": list, "per_clip": dict,
                              "metric_ci": dict, "bootstrap": dict}
CI_METHODS = ("percentile", "normal")
_SUB_REQUIRED: dict[str, dict[str, type | tuple[type, ...]]] = {
    "protocol": {"name": str, "version": int},
    "dataset": {"name": str, "num_clips": int, "fingerprint": str},
    "model": {"name": str, "kind": str, "samples_per_clip": int, "seeds": list},
    "counts": {"clips": int, "samples": int, "missing": int, "missing_ids": list},
    "software": {"version": str},
}


def validate_result(data: Any, where: str = "result") -> dict[str, Any]:
    """Return `data` if it is a well-formed result; otherwise raise `ResultError` naming every problem."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise ResultError(f"{where}: expected a JSON object, got {type(data).__name__}")
    for key, typ in _REQUIRED.items():
        if key not in data:
            problems.append(f"missing {key!r}")
        elif not isinstance(data[key], typ) or (typ is int and isinstance(data[key], bool)):
            problems.append(f"{key!r} must be {getattr(typ, '__name__', typ)}, got {type(data[key]).__name__}")
    if isinstance(data.get("format"), str) and data["format"] != RESULT_FORMAT:
        problems.append(f"format is {data.get('format')!r}, expected {RESULT_FORMAT!r}")
    if isinstance(data.get("schema_version"), int) and data["schema_version"] not in READABLE_SCHEMA_VERSIONS:
        problems.append(f"schema_version {data['schema_version']} is not one of {READABLE_SCHEMA_VERSIONS}")
    for key, typ in _OPTIONAL.items():
        if key in data and not isinstance(data[key], typ):
            problems.append(f"{key!r} must be {typ.__name__}, got {type(data[key]).__name__}")
    for sect, fields in _SUB_REQUIRED.items():
        sub = data.get(sect)
        if not isinstance(sub, dict):
            continue
        for key, typ in fields.items():
            if key not in sub:
                problems.append(f"missing {sect}.{key}")
            elif not isinstance(sub[key], typ) or (typ is int and isinstance(sub[key], bool)):
                problems.append(f"{sect}.{key} must be {typ.__name__}, got {type(sub[key]).__name__}")
    metrics = data.get("metrics")
    protocol = data["protocol"].get("name") if isinstance(data.get("protocol"), dict) else None
    notes = data.get("metric_notes") if isinstance(data.get("metric_notes"), dict) else {}
    if isinstance(metrics, dict) and isinstance(protocol, str):
        known = PROTOCOL_METRICS.get(protocol)
        if known is None:
            problems.append(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOL_METRICS)})")
        if not metrics:
            problems.append("metrics is empty")
        for key, value in metrics.items():
            if known is not None and key not in {m.key for m in known}:
                problems.append(f"unknown {protocol} metric {key!r} (known: {', '.join(m.key for m in known)})")
            elif value is None:
                if not notes.get(key):
                    problems.append(f"metric {key} is null without a note saying why (metric_notes)")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                problems.append(f"metric {key} must be a finite number or null, got {value!r}")
    if isinstance(data.get("metric_ci"), dict):
        problems += _ci_problems(data["metric_ci"], metrics if isinstance(metrics, dict) else {})
    if isinstance(data.get("per_clip"), dict):
        rec = data["per_clip"]
        if not isinstance(rec.get("file"), str) or not isinstance(rec.get("sha256"), str) or not isinstance(
                rec.get("rows"), int):
            problems.append("per_clip must have file (str), rows (int) and sha256 (str)")
    counts = data.get("counts")
    if isinstance(counts, dict) and isinstance(counts.get("missing"), int) and isinstance(
            counts.get("missing_ids"), list) and counts["missing"] != len(counts["missing_ids"]):
        problems.append(f"counts.missing = {counts['missing']} but {len(counts['missing_ids'])} missing_ids")
    model = data.get("model")
    if isinstance(model, dict) and isinstance(model.get("samples_per_clip"), int) and model["samples_per_clip"] < 1:
        problems.append("model.samples_per_clip must be >= 1")
    if problems:
        raise ResultError(f"{where}: invalid result: " + "; ".join(problems))
    return data


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _ci_problems(cis: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    out = []
    for key, ci in cis.items():
        if key not in metrics:
            out.append(f"metric_ci has {key!r}, which is not among the metrics")
            continue
        if not isinstance(ci, dict):
            out.append(f"metric_ci.{key} must be an object")
            continue
        if metrics[key] is None:
            out.append(f"metric_ci.{key}: the metric is null")
        if not (_finite(ci.get("lo")) and _finite(ci.get("hi")) and ci["lo"] <= ci["hi"]):
            out.append(f"metric_ci.{key}: lo / hi must be finite numbers with lo <= hi, got {ci.get('lo')!r}, "
                       f"{ci.get('hi')!r}")
        if not (_finite(ci.get("level")) and 0 < ci["level"] < 1):
            out.append(f"metric_ci.{key}: level must lie in (0, 1), got {ci.get('level')!r}")
        if not isinstance(ci.get("resamples"), int) or isinstance(ci.get("resamples"), bool) or ci["resamples"] < 1:
            out.append(f"metric_ci.{key}: resamples must be a positive integer, got {ci.get('resamples')!r}")
        if ci.get("method") not in CI_METHODS:
            out.append(f"metric_ci.{key}: method must be one of {CI_METHODS}, got {ci.get('method')!r}")
    return out


def load_result(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate one result file; the returned dict carries its path under ``_path``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ResultError(f"{path}: cannot read a result ({e})") from e
    validate_result(data, str(path))
    data["_path"] = str(path)
    return data


def is_result_file(path: Path) -> bool:
    """True when `path` is a JSON file whose ``format`` is a vbench result (other JSON files are ignored). A
    ``.json`` file that cannot be read or parsed raises `ResultError`: it may be a damaged result, which must not
    drop out of a leaderboard unnoticed."""
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ResultError(f"{path}: unreadable JSON in the results folder ({e}); fix or remove it") from e
    return isinstance(data, dict) and data.get("format") == RESULT_FORMAT


def load_results(directory: str | os.PathLike) -> list[dict[str, Any]]:
    """Every result file under `directory` (recursively), validated; a malformed result raises `ResultError`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ResultError(f"results folder not found: {directory}")
    return [load_result(p) for p in sorted(directory.rglob("*.json")) if is_result_file(p)]


def result_filename(model_name: str, dataset: str, protocol: str, debug: bool) -> str:
    """A file-system-safe name for a result: ``{dataset}__{protocol}__{model}[__debug].json``."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in model_name)
    return f"{dataset}__{protocol}__{safe}{'__debug' if debug else ''}.json"
