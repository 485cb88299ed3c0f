"""VisualSound reports: threshold sweep (the paper's Table II layout), score histogram, per-class keep rates,
a markdown summary, and the comparison of our split lists with released ones.

Plots use matplotlib's Agg backend and carry a visible "DEBUG WEIGHTS" label when the scores came from debug
weights. Everything here reads the de-duplicated score table of `visualsound.scores_io.read_scores`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from visualsound.errors import ToolkitError
from visualsound.splits import (
    VS_SPLITS,
    assign_splits,
    class_keep_rates,
    keep_mask,
    rejection_counts,
    uses_debug_weights,
)
from visualsound.utils.atomic import atomic_open, atomic_write_text

log = logging.getLogger(__name__)

SWEEP_THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4)
DEBUG_LABEL = "DEBUG WEIGHTS"
#: The V-AURA paper's Table II (ICASSP 2025): ImageBind threshold -> VisualSound training samples it reports
PAPER_TABLE_II_TRAIN = {0.0: 155_591, 0.2: 119_469, 0.3: 77_265, 0.4: 33_225}


class ReportError(ToolkitError):
    """A report cannot be produced (no scores, missing split lists)."""


def threshold_sweep(scores: pd.DataFrame, thresholds: Sequence[float] = SWEEP_THRESHOLDS,
                    vs_split: pd.Series | None = None) -> pd.DataFrame:
    """Kept clip counts per VisualSound split for each threshold: columns threshold, train, validation, test,
    total, and ``paper_train``: the training-sample count the paper's Table II reports for that threshold (empty
    where it has none). `vs_split` defaults to `assign_splits(scores)` (the carve is threshold-independent)."""
    if vs_split is None:
        vs_split = assign_splits(scores)
    rows = []
    for t in thresholds:
        kept = keep_mask(scores, t)
        row: dict[str, Any] = {"threshold": float(t)}
        for s in VS_SPLITS:
            row[s] = int((kept & (vs_split == s)).sum())
        row["total"] = int(kept.sum())
        row["paper_train"] = PAPER_TABLE_II_TRAIN.get(round(float(t), 6), pd.NA)
        rows.append(row)
    return pd.DataFrame(rows).astype({"paper_train": "Int64"})


def markdown_table(df: pd.DataFrame, floatfmt: str = "{:.3f}") -> str:
    """A GitHub markdown table of `df` (no external dependency)."""
    def fmt(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return floatfmt.format(v)
        return str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def _pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (reports are written by headless jobs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish_figure(fig: Any, path: str | os.PathLike, debug: bool) -> Path:
    """Watermark a debug-weights figure, lay it out, write it as PNG atomically (no timestamp), close it."""
    if debug:
        fig.text(0.5, 0.5, DEBUG_LABEL, ha="center", va="center", fontsize=40, color="red", alpha=0.25,
                 rotation=20, transform=fig.transFigure)
    fig.tight_layout()
    out = Path(path)
    with atomic_open(out, "wb") as f:
        fig.savefig(f, format="png", dpi=100, metadata={"Software": None})
    _pyplot().close(fig)
    return out


def plot_histogram(scores: pd.DataFrame, threshold: float, path: str | os.PathLike, *, debug: bool = False,
                   bins: int = 50) -> Path:
    """Histogram of the scores of ok clips with a vertical line at `threshold` (PNG)."""
    plt = _pyplot()
    ok = scores.loc[scores["status"] == "ok", "score"].astype(float).to_numpy()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.hist(ok, bins=bins, color="#4477aa")
    ax.axvline(threshold, color="#cc3311", linestyle="--", label=f"threshold {threshold:g}")
    kept = int((ok >= threshold).sum())
    title = f"ImageBind scores of {len(ok)} clips; {kept} kept at >= {threshold:g}"
    ax.set_title((f"[{DEBUG_LABEL}] " if debug else "") + title)
    ax.set_xlabel("ImageBind audio-visual score")
    ax.set_ylabel("clips")
    ax.legend()
    return _finish_figure(fig, path, debug)


def plot_class_keep_rates(rates: pd.DataFrame, path: str | os.PathLike, *, debug: bool = False,
                          max_each_side: int = 30) -> Path:
    """Horizontal bars of per-class keep rates; with many classes only the lowest and highest
    `max_each_side` are drawn (the full table is in the markdown / summary.json)."""
    plt = _pyplot()
    r = rates.sort_values(["keep_rate", "label"], kind="mergesort")
    shown = r if len(r) <= 2 * max_each_side else pd.concat([r.head(max_each_side), r.tail(max_each_side)])
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.18 * len(shown) + 1.2)))
    ax.barh(np.arange(len(shown)), shown["keep_rate"].to_numpy(), color="#228833")
    ax.set_yticks(np.arange(len(shown)), shown["label"].tolist(), fontsize=6)
    ax.set_xlim(0, 1)
    ax.set_xlabel("keep rate (kept / scored)")
    note = "" if len(shown) == len(r) else f" (lowest and highest {max_each_side} of {len(r)})"
    if note:
        ax.axhline(max_each_side - 0.5, color="grey", linestyle=":")
    ax.set_title((f"[{DEBUG_LABEL}] " if debug else "") + "Per-class keep rate" + note)
    return _finish_figure(fig, path, debug)


def write_report(scores: pd.DataFrame, out_dir: str | os.PathLike, threshold: float = 0.3, *,
                 val_ids: Iterable[str] | None = None, thresholds: Sequence[float] = SWEEP_THRESHOLDS,
                 meta: Mapping[str, Any] | None = None, duplicates: int = 0) -> dict[str, Path]:
    """Write ``scores_hist.png``, ``class_keep_rate.png``, ``threshold_sweep.csv`` and ``report.md`` into
    `out_dir`; returns their paths under the keys ``histogram``, ``class_keep_rate``, ``sweep``, ``markdown``.

    Everything carries the "DEBUG WEIGHTS" label when a row or the shard metadata (`meta`) says debug weights.
    """
    if scores.empty:
        raise ReportError("no scored clips to report on")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    debug = uses_debug_weights(scores, meta)
    vs_split = assign_splits(scores, list(val_ids) if val_ids is not None else None)
    sweep = threshold_sweep(scores, thresholds, vs_split)
    kept = keep_mask(scores, threshold)
    rates = class_keep_rates(scores, kept)
    files = {
        "histogram": plot_histogram(scores, threshold, out / "scores_hist.png", debug=debug),
        "class_keep_rate": plot_class_keep_rates(rates, out / "class_keep_rate.png", debug=debug),
    }
    sweep_path = out / "threshold_sweep.csv"
    atomic_write_text(sweep_path, sweep.to_csv(index=False, lineterminator="\n"))
    files["sweep"] = sweep_path

    status = scores["status"].value_counts().rename_axis("status").reset_index(name="clips")
    ok = scores.loc[scores["status"] == "ok", "score"].astype(float)
    lines = ["# VisualSound curation report", ""]
    if debug:
        lines += [f"**{DEBUG_LABEL}**: these scores come from seeded random debug weights, not ImageBind.", ""]
    lines += [f"- scored clips: {len(scores)} (duplicates resolved: {duplicates})",
              f"- ok clips: {len(ok)}; score mean {ok.mean():.4f}, median {ok.median():.4f}" if len(ok) else
              "- ok clips: 0",
              f"- threshold: {threshold:g} -> kept {int(kept.sum())}",
              f"- score_version: {', '.join(sorted(set(scores['score_version'].astype(str))))}",
              f"- checkpoint sha256: {(meta or {}).get('checkpoint_sha256', 'not recorded')}",
              "", "## Threshold sweep (kept clips per split, as in the paper's Table II)", "",
              "`paper_train` is the training-sample count the paper's Table II reports for the threshold, to put "
              "next to `train` (ours, from the scores of this run).", "",
              markdown_table(sweep), "", "## Status of scored clips", "", markdown_table(status), "",
              "## Rejections at the threshold", "",
              markdown_table(pd.DataFrame(list(rejection_counts(scores, threshold).items()),
                                          columns=["reason", "clips"])), "",
              "## Plots", "", "![score histogram](scores_hist.png)", "",
              "![per-class keep rate](class_keep_rate.png)", "",
              "## Per-class keep rate", "", markdown_table(rates), ""]
    md = out / "report.md"
    atomic_write_text(md, "\n".join(lines))
    files["markdown"] = md
    log.info("report written to %s", out)
    return files


# -- comparison with released lists ---------------------------------------------------------------------------
def read_split_lists(directory: str | os.PathLike, splits: Sequence[str] = VS_SPLITS) -> dict[str, set[str]]:
    """``visualsound_{split}.txt`` id sets from a folder (a build output or V-AURA's data/splits/visualsound); a
    blank file is an empty split, a missing one raises `ReportError`."""
    from visualsound.splits import read_id_list

    d = Path(directory)
    out = {}
    for s in splits:
        p = d / f"visualsound_{s}.txt"
        if not p.is_file():
            raise ReportError(f"{d}: missing {p.name} (expected visualsound_{{{','.join(splits)}}}.txt)")
        out[s] = set(read_id_list(p)) if p.read_text().strip() else set()  # an empty split may be "" or "\n"
    return out


def compare_ids(ours: Mapping[str, set[str]], released: Mapping[str, set[str]]) -> pd.DataFrame:
    """Precision / recall / Jaccard of our ids against released ids, per split and over all splits.

    precision = |ours & released| / |ours|, recall = |ours & released| / |released|, Jaccard = |&| / ||.
    An empty denominator gives NaN.
    """
    rows = []
    keys = [k for k in VS_SPLITS if k in ours or k in released] + sorted((set(ours) | set(released)) - set(VS_SPLITS))
    all_o: set[str] = set()
    all_r: set[str] = set()
    for k in [*keys, "all"]:
        if k == "all":
            o, r = all_o, all_r
        else:
            o, r = set(ours.get(k, set())), set(released.get(k, set()))
            all_o |= o
            all_r |= r
        inter, union = len(o & r), len(o | r)
        rows.append({"split": k, "ours": len(o), "released": len(r), "common": inter,
                     "precision": inter / len(o) if o else float("nan"),
                     "recall": inter / len(r) if r else float("nan"),
                     "jaccard": inter / union if union else float("nan")})
    return pd.DataFrame(rows)
