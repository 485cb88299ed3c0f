"""Numbers reported in papers, shown next to measured results and always marked as reported.

Built-in rows (`BUILTIN_ROWS`), each with its source, in our result units for its protocol:

* **V-AURA** (Viertola, Iashin, Rahtu, ICASSP 2025; arXiv 2409.13689), protocol ``vaura-paper`` (IB x100, Sync in
  ms), transcribed from the published paper's tables:
  - Table I: SpecVQGAN, Diff-Foley, Frieren and V-AURA on ``vggsound``, ``vas`` (3 samples per clip, as its caption
    states; no Frieren row), ``vggsound-sparse`` and ``visualsound``; each method's type (AR, DM, RFM) is in
    ``extra["type"]``;
  - Tables II-IV, the ablations on ``vggsound-sparse``: the ImageBind threshold of the training set (with its
    training-sample count and GPU hours), the conditioning method, and the CFG scale (3 samples per clip). Their
    rows are named by the setting (``V-AURA (threshold 0.2)``) and carry ``extra["table"]``, so a user re-running
    an ablation sees the paper's row next to theirs.
* **MMAudio** (Cheng et al., CVPR 2025; arXiv 2412.15322) Table 1, VGGSound test (``vggsound-test``), protocol
  ``av-benchmark``: the original's metric keys and units (IB-Score a cosine: the printed 33.22 is stored as
  0.3322; DeSync in seconds; IS is PANNs' inception score). The paper's PDF was not readable here: the rows are
  taken from public re-quotations of the table (`MMAUDIO_SOURCE`), cross-checked between them; see `MMAUDIO_NOTE`.

Reported rows appear only beside measured rows of the same dataset and protocol (they never make tables of their
own: `ReportedRow.only_beside_measured`), and `benchmarks.leaderboard` shows them only next to a measured set that
is the complete official list. More rows go in a reported-rows file::

    [{"model": "V-AURA", "dataset": "vggsound-sparse", "protocol": "vaura-paper",
      "metrics": {"fad": ..., "kld": ..., "ib": ..., "sync_ms": ...},
      "source": "where the numbers are printed"}]

passed to ``vbench leaderboard --reported FILE``. Rows are validated when created (the protocol's metric keys,
finite numbers, a source), so a bad built-in row fails at import.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.results import PROTOCOL_METRICS, ResultError
from visualsound.report import PAPER_TABLE_II_TRAIN

PAPER = ("Viertola, Iashin, Rahtu, Temporally Aligned Audio for Video with Autoregression, ICASSP 2025 "
         "(arXiv 2409.13689)")
PAPER_PROTOCOL = "vaura-paper"
PAPER_NOTE = ("transcribed from the published paper; Table I's caption states 3 samples per clip on VAS only; VAS "
              "excludes the fireworks class")

MMAUDIO = ("Cheng et al., MMAudio: Taming Multimodal Joint Training for High-Quality Video-to-Audio Synthesis, "
           "CVPR 2025 (arXiv 2412.15322), Table 1")
MMAUDIO_SOURCE = (f"{MMAUDIO}, as re-quoted in github.com/BAN-43-32532/BiTCAM-demo docs/index.md @07f1645 "
                  "(cross-checked with GiantAILab/DeepSound-V1 README.md and the WavFlow paper's quotation)")
MMAUDIO_NOTE = ("not verified against the paper's own text (its PDF was not readable offline); IB-score is "
                "printed x100 and stored as a cosine; IS is PANNs' inception score; 8 s clips, 1 sample per clip")
AV_BENCHMARK = "av-benchmark"


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
    samples_per_clip: int | None = None

    def __post_init__(self) -> None:
        problems = []
        known = PROTOCOL_METRICS.get(self.protocol)
        if known is None:
            problems.append(f"unknown protocol {self.protocol!r} (known: {', '.join(PROTOCOL_METRICS)})")
        else:
            keys = {m.key for m in known}
            problems += [f"unknown metric {k!r} for protocol {self.protocol}" for k in self.metrics if k not in keys]
        problems += [f"{k} = {v!r} is not a finite number" for k, v in self.metrics.items()
                     if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)]
        if not self.source.strip():
            problems.append("no source")
        if not self.model or not self.dataset or not self.protocol:
            problems.append("model, dataset and protocol are required")
        if problems:
            raise ResultError(f"reported row {self.model!r} on {self.dataset!r}: " + "; ".join(problems))


# ------------------------------------------------------------------------------------------------ V-AURA paper
# Table I: dataset -> (method, type, KLD, FAD, IB x100, Sync ms) in the paper's row order.
_TABLE_I: dict[str, tuple[tuple[str, str, float, float, float, float], ...]] = {
    "vggsound": (("SpecVQGAN", "AR", 3.16, 6.41, 10.09, 409),
                 ("Diff-Foley", "DM", 3.23, 5.62, 16.88, 321),
                 ("Frieren", "RFM", 2.95, 1.43, 19.56, 277),
                 ("V-AURA", "AR", 2.31, 1.92, 25.01, 155)),
    "vas": (("SpecVQGAN", "AR", 3.13, 7.77, 11.18, 536),
            ("Diff-Foley", "DM", 3.27, 8.35, 15.71, 263),
            ("V-AURA", "AR", 1.98, 1.98, 29.00, 120)),
    "vggsound-sparse": (("SpecVQGAN", "AR", 3.56, 12.93, 11.01, 411),
                        ("Diff-Foley", "DM", 2.87, 8.92, 22.08, 302),
                        ("Frieren", "RFM", 2.70, 2.79, 22.72, 236),
                        ("V-AURA", "AR", 1.93, 3.55, 28.92, 49)),
    "visualsound": (("SpecVQGAN", "AR", 3.41, 9.02, 10.87, 423),
                    ("Diff-Foley", "DM", 2.84, 7.24, 19.79, 338),
                    ("Frieren", "RFM", 2.45, 2.03, 23.39, 285),
                    ("V-AURA", "AR", 1.76, 3.27, 29.50, 138)),
}
TABLE_I_SAMPLES_PER_CLIP = {"vas": 3}

# Table II (VGGSound-Sparse): ImageBind threshold -> (train GPU hours, KLD, FAD, IB, Sync); its training-sample
# counts live with the curation code (`visualsound.report.PAPER_TABLE_II_TRAIN`), which shows them in its sweep
_TABLE_II: tuple[tuple[float, int, float, float, float, float], ...] = (
    (0.0, 708, 1.94, 3.16, 28.51, 60),
    (0.2, 662, 1.94, 3.49, 28.66, 59),
    (0.3, 278, 1.93, 3.55, 28.92, 49),
    (0.4, 168, 1.97, 4.11, 27.31, 71),
)
TABLE_II_CHOSEN = 0.3
# Table III (VGGSound-Sparse): conditioning -> (KLD, FAD, IB, Sync)
_TABLE_III: tuple[tuple[str, float, float, float, float], ...] = (
    ("prepend", 1.94, 4.11, 26.44, 105),
    ("fusion", 1.93, 3.55, 28.92, 49),
)
TABLE_III_CHOSEN = "fusion"
# Table IV (VGGSound-Sparse, 3 samples per clip): CFG scale -> (KLD, FAD, IB, Sync)
_TABLE_IV: tuple[tuple[float, float, float, float, float], ...] = (
    (1, 2.48, 11.44, 16.94, 155),
    (3, 2.04, 5.30, 26.71, 80),
    (5, 1.94, 3.75, 28.52, 52),
    (6, 1.91, 3.50, 28.97, 50),
    (7, 1.91, 3.74, 29.16, 55),
    (9, 1.91, 4.08, 29.66, 53),
)
TABLE_IV_CHOSEN = 6


def _paper_metrics(kld: float, fad: float, ib: float, sync: float) -> dict[str, float]:
    return {"kld": kld, "fad": fad, "ib": ib, "sync_ms": float(sync)}


def _chosen(value: Any, chosen: Any) -> str:
    return ", the paper's choice" if value == chosen else ""


_PAPER_ROWS: tuple[ReportedRow, ...] = (
    *(ReportedRow(model=method, dataset=dataset, protocol=PAPER_PROTOCOL,
                  metrics=_paper_metrics(kld, fad, ib, sync), source=f"{PAPER}, Table I", note=PAPER_NOTE,
                  extra={"type": kind, "table": "I"}, only_beside_measured=True,
                  samples_per_clip=TABLE_I_SAMPLES_PER_CLIP.get(dataset))
      for dataset, rows in _TABLE_I.items() for method, kind, kld, fad, ib, sync in rows),
    *(ReportedRow(model=f"V-AURA (threshold {thr}{_chosen(thr, TABLE_II_CHOSEN)})", dataset="vggsound-sparse",
                  protocol=PAPER_PROTOCOL, metrics=_paper_metrics(kld, fad, ib, sync), source=f"{PAPER}, Table II",
                  note="ImageBind threshold of the training set", only_beside_measured=True,
                  extra={"table": "II", "threshold": thr, "training_samples": PAPER_TABLE_II_TRAIN[thr],
                         "train_gpu_hours": gpu_h})
      for thr, gpu_h, kld, fad, ib, sync in _TABLE_II),
    *(ReportedRow(model=f"V-AURA ({how} conditioning{_chosen(how, TABLE_III_CHOSEN)})", dataset="vggsound-sparse",
                  protocol=PAPER_PROTOCOL, metrics=_paper_metrics(kld, fad, ib, sync), source=f"{PAPER}, Table III",
                  note="visual conditioning method", only_beside_measured=True,
                  extra={"table": "III", "conditioning": how})
      for how, kld, fad, ib, sync in _TABLE_III),
    *(ReportedRow(model=f"V-AURA (CFG {cfg}{_chosen(cfg, TABLE_IV_CHOSEN)})", dataset="vggsound-sparse",
                  protocol=PAPER_PROTOCOL, metrics=_paper_metrics(kld, fad, ib, sync), source=f"{PAPER}, Table IV",
                  note="classifier-free guidance scale", only_beside_measured=True, samples_per_clip=3,
                  extra={"table": "IV", "cfg": cfg})
      for cfg, kld, fad, ib, sync in _TABLE_IV),
)

# ------------------------------------------------------------------------------------------------ MMAudio Table 1
# method -> (params, FD_PaSST, FD_PANNs, FD_VGG, KL_PANNs, KL_PaSST, IS, IB-score x100, DeSync s, time s or None)
_MMAUDIO_TABLE_1: tuple[tuple[str, str, float, float, float, float, float, float, float, float, float | None], ...] = (
    ("ReWaS", "619M", 141.38, 17.54, 1.79, 2.87, 2.82, 8.51, 14.82, 1.062, 15.97),
    ("Seeing&Hearing", "415M", 219.01, 24.58, 5.40, 2.26, 2.30, 8.58, 33.99, 1.204, 14.55),
    ("V-AURA", "695M", 218.50, 14.80, 2.88, 2.42, 2.07, 10.08, 27.64, 0.654, 16.55),
    ("VATT", "-", 131.88, 10.63, 2.77, 1.48, 1.41, 11.90, 25.00, 1.195, None),
    ("Frieren", "159M", 106.10, 11.45, 1.34, 2.73, 2.86, 12.25, 22.78, 0.851, None),
    ("FoleyCrafter", "1.22B", 140.09, 16.24, 2.51, 2.30, 2.23, 15.68, 25.68, 1.225, 1.67),
    ("V2A-Mapper", "229M", 84.57, 8.40, 0.84, 2.69, 2.56, 12.47, 22.58, 1.225, None),
    ("MMAudio-S-16kHz", "157M", 70.19, 5.22, 0.79, 1.65, 1.59, 14.44, 29.13, 0.483, 1.23),
    ("MMAudio-L-44.1kHz", "1.03B", 60.60, 4.72, 0.97, 1.65, 1.40, 17.40, 33.22, 0.442, 1.96),
)
_MMAUDIO_ROW_NOTES = {
    "FoleyCrafter": "DeepSound-V1's README quotes FD_PANNs 19.67 and IS 15.58 for this row; which one the paper "
                    "prints is not verified",
}

_MMAUDIO_ROWS: tuple[ReportedRow, ...] = tuple(
    ReportedRow(model=method, dataset="vggsound-test", protocol=AV_BENCHMARK,
                metrics={"FD-PASST": fd_passt, "FD-PANN": fd_panns, "FD-VGG": fd_vgg, "KL-PANNS-softmax": kl_panns,
                         "KL-PASST-softmax": kl_passt, "ISC-PANNS-mean": inception, "IB-Score": round(ib / 100, 6),
                         "DeSync": desync},
                source=MMAUDIO_SOURCE,
                note="; ".join(n for n in (MMAUDIO_NOTE, _MMAUDIO_ROW_NOTES.get(method, "")) if n),
                extra={"table": "MMAudio 1", "params": params, "seconds_per_8s_clip": seconds},
                only_beside_measured=True, samples_per_clip=1)
    for method, params, fd_passt, fd_panns, fd_vgg, kl_panns, kl_passt, inception, ib, desync, seconds
    in _MMAUDIO_TABLE_1)

BUILTIN_ROWS: tuple[ReportedRow, ...] = _PAPER_ROWS + _MMAUDIO_ROWS
TABLES = ("I", "II", "III", "IV", "MMAudio 1")


def load_reported(path: str | os.PathLike) -> list[ReportedRow]:
    """Reported rows from a JSON list of objects with ``model, dataset, protocol, metrics, source[, note,
    samples_per_clip]`` (``protocol`` defaults to ``vaura-paper``)."""
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
        unknown = set(item) - {"model", "dataset", "protocol", "metrics", "source", "note", "samples_per_clip"}
        if unknown:
            raise ResultError(f"{path}: row {i} has unknown keys {sorted(unknown)}")
        try:
            rows.append(ReportedRow(model=str(item["model"]), dataset=str(item["dataset"]),
                                    protocol=str(item.get("protocol", PAPER_PROTOCOL)),
                                    metrics=dict(item["metrics"]), source=str(item["source"]),
                                    note=str(item.get("note", "")), samples_per_clip=item.get("samples_per_clip")))
        except KeyError as e:
            raise ResultError(f"{path}: row {i} lacks {e}") from e
    return rows


def reported_rows(extra_files: list[str | os.PathLike] | tuple = (), builtin: bool = True,
                  tables: tuple[str, ...] | list[str] = TABLES) -> list[ReportedRow]:
    """The built-in rows of `tables` (default: all; see `TABLES`) unless `builtin` is false, plus those of
    `extra_files`."""
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise ResultError(f"unknown reported table(s) {unknown}; known: {', '.join(TABLES)}")
    rows = [r for r in BUILTIN_ROWS if r.extra.get("table") in tables] if builtin else []
    for f in extra_files:
        rows.extend(load_reported(f))
    return rows
