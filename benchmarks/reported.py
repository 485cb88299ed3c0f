"""Numbers reported in papers, shown next to measured results and always marked as reported.

`BUILTIN_ROWS` holds the rows of the V-AURA paper's Table I (arXiv 2409.13689: SpecVQGAN, Diff-Foley, Frieren and
V-AURA on VGGSound, VAS, VGGSound-Sparse and VisualSound) **that could be confirmed against the paper**. While
this toolkit was written, the table itself could not be read from any source available to its authors (only
third-party tables that re-measured V-AURA under other protocols were found), so no Table I number is built in:
a reported row is never typed from memory. Add the rows from the paper with a reported-rows file instead::

    [{"model": "V-AURA", "dataset": "vggsound-sparse", "protocol": "vaura-paper",
      "metrics": {"fad": ..., "kld": ..., "ib": ..., "sync_ms": ...},
      "source": "arXiv 2409.13689 Table I"}]

and pass it to ``vbench leaderboard --reported FILE``. Rows are validated (known metrics, finite numbers, a
source) and are only ever placed in the table of their own protocol.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.results import METRIC_KEYS, ResultError

PAPER = "arXiv 2409.13689 (V-AURA), Table I"


@dataclass(frozen=True)
class ReportedRow:
    """One reported row: a model's metrics on a dataset under a protocol, with where the numbers come from."""

    model: str
    dataset: str
    protocol: str
    metrics: dict[str, float]
    source: str
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = [f"unknown metric {k!r}" for k in self.metrics if k not in METRIC_KEYS]
        problems += [f"{k} = {v!r} is not a finite number" for k, v in self.metrics.items()
                     if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)]
        if not self.source.strip():
            problems.append("no source")
        if not self.model or not self.dataset or not self.protocol:
            problems.append("model, dataset and protocol are required")
        if problems:
            raise ResultError(f"reported row {self.model!r} on {self.dataset!r}: " + "; ".join(problems))


BUILTIN_ROWS: tuple[ReportedRow, ...] = ()


def load_reported(path: str | os.PathLike) -> list[ReportedRow]:
    """Reported rows from a JSON list of objects with ``model, dataset, protocol, metrics, source[, note]``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ResultError(f"{path}: cannot read reported rows ({e})") from e
    if not isinstance(data, list):
        raise ResultError(f"{path}: expected a JSON list of reported rows")
    rows = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise ResultError(f"{path}: row {i} is not an object")
        unknown = set(item) - {"model", "dataset", "protocol", "metrics", "source", "note"}
        if unknown:
            raise ResultError(f"{path}: row {i} has unknown keys {sorted(unknown)}")
        try:
            rows.append(ReportedRow(model=str(item["model"]), dataset=str(item["dataset"]),
                                    protocol=str(item.get("protocol", "vaura-paper")),
                                    metrics=dict(item["metrics"]), source=str(item["source"]),
                                    note=str(item.get("note", ""))))
        except KeyError as e:
            raise ResultError(f"{path}: row {i} lacks {e}") from e
    return rows


def reported_rows(extra_files: list[str | os.PathLike] | tuple = ()) -> list[ReportedRow]:
    """The built-in rows plus those of `extra_files`."""
    rows = list(BUILTIN_ROWS)
    for f in extra_files:
        rows.extend(load_reported(f))
    return rows
