"""Numbers reported in papers, shown next to measured results and always marked as reported.

`BUILTIN_ROWS` holds the V-AURA paper's Table I (arXiv 2409.13689): SpecVQGAN, Diff-Foley, Frieren and V-AURA on
VGGSound (test, ``vggsound``), VGGSound-Sparse (``vggsound-sparse``) and VisualSound (test, ``visualsound``), under
protocol ``vaura-paper``, in our result units (IB x100, Sync in milliseconds), with each method's type (AR, DM, RFM)
in ``extra["type"]``. ``vbench leaderboard`` shows them by default (``--no-paper-rows`` leaves them out), in every
format, but only beside measured rows of the same dataset and protocol: they are context for measured numbers,
so they never make tables of their own (`ReportedRow.only_beside_measured`).

Where the numbers come from, and the caveats:

* transcribed from the first author's results image of Table I, committed to his website repository
  (`SOURCE_URL`: ilpoviertola/ilpoviertola.github.io, commit 72987e5, 2024-09-10, ``main_results.png``), ten
  days before arXiv v1. It is a pre-publication image: the same commit's Table II image matches the arXiv HTML's
  Table II, but the camera-ready Table I could differ;
* VAS is not in this table, so there are no built-in VAS rows (the issue's list of Table I datasets names VAS);
* the image does not say how many samples per clip were generated, so reported rows carry no samples/clip.

More rows (another paper, a corrected table) go in a reported-rows file::

    [{"model": "V-AURA", "dataset": "vggsound-sparse", "protocol": "vaura-paper",
      "metrics": {"fad": ..., "kld": ..., "ib": ..., "sync_ms": ...},
      "source": "where the numbers are printed"}]

passed to ``vbench leaderboard --reported FILE``. Rows are validated when created (known metrics, finite numbers,
a source), so a bad built-in row fails at import, and are only ever placed in the table of their own dataset and
protocol.
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
PAPER_PROTOCOL = "vaura-paper"
SOURCE_URL = ("https://github.com/ilpoviertola/ilpoviertola.github.io/blob/72987e576a92b145017ed138369b0e685358081c/"
              "_media/vaura/images/main_results.png")
SOURCE = f"{PAPER}, as in the first author's pre-publication results image {SOURCE_URL}"
NOTE = ("transcribed from the author's image of Table I committed 2024-09-10, ten days before arXiv v1; the same "
        "commit's Table II image matches the arXiv HTML, but the camera-ready table could differ; samples per clip "
        "not stated; the table has no VAS rows")


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
    only_beside_measured: bool = False  # shown only in a table with measured rows of its dataset and protocol

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


# Table I as printed: dataset -> (method, type, KLD, FAD, IB x100, Sync ms) in the image's row order.
_TABLE_I: dict[str, tuple[tuple[str, str, float, float, float, float], ...]] = {
    "vggsound": (("SpecVQGAN", "AR", 3.16, 6.41, 10.09, 409),
                 ("Diff-Foley", "DM", 3.23, 5.62, 16.88, 321),
                 ("Frieren", "RFM", 2.95, 1.43, 19.56, 277),
                 ("V-AURA", "AR", 2.31, 1.92, 25.01, 155)),
    "vggsound-sparse": (("SpecVQGAN", "AR", 3.56, 12.93, 11.01, 411),
                        ("Diff-Foley", "DM", 2.87, 8.92, 22.08, 302),
                        ("Frieren", "RFM", 2.70, 2.79, 22.72, 236),
                        ("V-AURA", "AR", 1.93, 3.55, 28.92, 49)),
    "visualsound": (("SpecVQGAN", "AR", 3.41, 9.02, 10.87, 423),
                    ("Diff-Foley", "DM", 2.84, 7.24, 19.79, 338),
                    ("Frieren", "RFM", 2.45, 2.03, 23.39, 285),
                    ("V-AURA", "AR", 1.76, 3.27, 29.50, 138)),
}

BUILTIN_ROWS: tuple[ReportedRow, ...] = tuple(
    ReportedRow(model=method, dataset=dataset, protocol=PAPER_PROTOCOL,
                metrics={"kld": kld, "fad": fad, "ib": ib, "sync_ms": float(sync)}, source=SOURCE, note=NOTE,
                extra={"type": kind}, only_beside_measured=True)
    for dataset, rows in _TABLE_I.items() for method, kind, kld, fad, ib, sync in rows)


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
                                    protocol=str(item.get("protocol", PAPER_PROTOCOL)),
                                    metrics=dict(item["metrics"]), source=str(item["source"]),
                                    note=str(item.get("note", ""))))
        except KeyError as e:
            raise ResultError(f"{path}: row {i} lacks {e}") from e
    return rows


def reported_rows(extra_files: list[str | os.PathLike] | tuple = (), builtin: bool = True) -> list[ReportedRow]:
    """The built-in Table I rows (unless `builtin` is false) plus those of `extra_files`."""
    rows = list(BUILTIN_ROWS) if builtin else []
    for f in extra_files:
        rows.extend(load_reported(f))
    return rows
