"""The result JSON of ``vbench evaluate``: schema, validation, reading a results folder.

One result file holds one (model, dataset, protocol) evaluation::

    {"format": "vbench-result", "schema_version": 1,
     "protocol": {"name": "vaura-paper", "version": 1, "description"},
     "dataset": {"name", "num_clips", "fingerprint", "manifest", "window_sec"},
     "model": {"name", "kind", "checkpoint", "checkpoint_sha256", "samples_per_clip", "seeds", ...},
     "metrics": {"fad": .., "kld": .., "ib": .., "sync_ms": ..},      # IB x100, Sync in milliseconds
     "metric_details": {...}, "extractors": {name: {"checkpoint", "sha256"}},
     "counts": {"clips", "samples", "missing", "missing_ids", "missing_reasons"},
     "timings": {"generate_s", "metrics_s": {metric: seconds}, "total_s"},
     "software": {"version", "python", "torch", "numpy"}, "device": "cpu", "created": ISO time,
     "debug_weights": false}

`validate_result` raises `ResultError` listing every problem; nothing is filled in silently.
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
SCHEMA_VERSION = 1


class ResultError(ToolkitError):
    """A result file is malformed or inconsistent."""


@dataclass(frozen=True)
class MetricSpec:
    """How a metric is reported: key in ``metrics``, column label, whether lower is better, unit, digits."""

    key: str
    label: str
    lower_is_better: bool
    unit: str
    digits: int


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("fad", "FAD", True, "", 2),
    MetricSpec("kld", "KLD", True, "", 2),
    MetricSpec("ib", "IB", False, "x100", 2),
    MetricSpec("sync_ms", "Sync (ms)", True, "ms", 0),
)
METRIC_KEYS = tuple(m.key for m in METRICS)

_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "format": str, "schema_version": int, "protocol": dict, "dataset": dict, "model": dict, "metrics": dict,
    "counts": dict, "timings": dict, "software": dict, "created": str, "debug_weights": bool,
    "extractors": dict,
}
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
    if isinstance(data.get("schema_version"), int) and data["schema_version"] != SCHEMA_VERSION:
        problems.append(f"schema_version {data['schema_version']} is not {SCHEMA_VERSION}")
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
    if isinstance(metrics, dict):
        if not metrics:
            problems.append("metrics is empty")
        for key, value in metrics.items():
            if key not in METRIC_KEYS:
                problems.append(f"unknown metric {key!r} (known: {', '.join(METRIC_KEYS)})")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                problems.append(f"metric {key} must be a finite number, got {value!r}")
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
