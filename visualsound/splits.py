"""`visualsound build`: turn ImageBind score shards into the VisualSound train / validation / test splits.

Rules:

- a clip is kept when ``status == "ok"`` and ``score >= threshold``; scores are ImageBind cosines, so a threshold
  outside [-1, 1] (e.g. 30 for 0.30) is refused (`check_threshold`), and a split that keeps no clip gets a
  warning (``summary.json`` ``warnings``, printed by the CLI);
- test = kept clips of the VGGSound test split;
- validation is carved from the VGGSound train split, either from a given id list (V-AURA's own
  ``visualsound_validation.txt``) or, without one, by a deterministic label-stratified split
  (`sklearn.model_selection.train_test_split`, fixed seed, ids sorted first) at V-AURA's ratio
  19,055 / 175,542. The carve runs over *every* scored train clip before thresholding, so a clip's split does
  not change with the threshold (the threshold sweep in reports stays comparable). Labels with a single train
  clip cannot be stratified and stay in train;
- everything else kept from the train split is train;
- with an in-sync filter result (`visualsound.sync_io.SyncFilterSpec`, from `vaura sync-filter`), a kept clip must
  also pass it: at least the split's number of windows in sync (V-AURA's defaults: train 25, validation and test
  5, applied to the stored counts per VisualSound split) -- clips the filter could not judge go, clips absent
  from the result stay (as in V-AURA) unless the spec says ``missing="drop"``. ``summary.json`` gets a
  ``sync_filter`` section with what it dropped, per split and per reason.

`build_visualsound` writes, atomically and byte-identically on re-runs: ``visualsound.parquet`` (kept clips, all
score columns + ``visualsound_split``), ``visualsound_{train,validation,test}.txt`` (sorted V-AURA ids),
``visualsound.csv`` (V-AURA's columns ``filename,start,desc,split`` with the VGGSound split, as V-AURA's own
file) and ``summary.json`` (threshold, counts, per-class keep rates, rejections by reason, versions, checkpoint
checksum, debug flag).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from visualsound.errors import ToolkitError
from visualsound.utils.atomic import atomic_open, atomic_write_text

if TYPE_CHECKING:
    from visualsound.sync_io import SyncFilterSpec

log = logging.getLogger(__name__)

VAL_RATIO = 19055 / 175542
DEFAULT_SEED = 1234
VS_SPLITS = ("train", "validation", "test")


class SplitError(ToolkitError):
    """Bad split inputs: empty scores, an unreadable id list, an impossible threshold (outside [-1, 1])."""


def check_threshold(threshold: float) -> None:
    """Refuse a threshold no cosine can reach: scores are ImageBind cosine similarities in [-1, 1] (vbench's IB
    metric shows the same cosine x100, so 30 is a likely slip for 0.30, and would keep no clip)."""
    t = float(threshold)
    if math.isfinite(t) and -1.0 <= t <= 1.0:
        return
    hint = f"; did you mean {t / 100:.2f}?" if math.isfinite(t) and 1.0 < abs(t) <= 100.0 else ""
    raise SplitError(f"threshold {t:g} is outside [-1, 1]: scores are ImageBind cosine similarities in [-1, 1] "
                     f"(V-AURA used 0.30; vbench's IB shows the cosine x100){hint}")


def read_id_list(path: str | os.PathLike) -> list[str]:
    """Clip ids from a text file, one per line (blank lines ignored, a trailing ``.mp4`` stripped)."""
    p = Path(path)
    if not p.is_file():
        raise SplitError(f"id list not found: {p}")
    ids = []
    for line in p.read_text().splitlines():
        s = line.strip()
        if s:
            ids.append(s[:-4] if s.endswith(".mp4") else s)
    if not ids:
        raise SplitError(f"id list {p} is empty")
    return ids


def carve_validation(train: pd.DataFrame, ratio: float = VAL_RATIO, seed: int = DEFAULT_SEED) -> set[str]:
    """Deterministic label-stratified validation ids from the rows of `train` (columns clip_id, label).

    Input order does not matter (rows are sorted by clip id first). Labels with one clip stay in train; if
    stratification is impossible (fewer validation or remaining train slots than labels) it falls back to a plain
    seeded split (with a warning). Too few clips for one validation clip give an empty set (with a warning).
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < ratio < 1.0:
        raise SplitError(f"validation ratio must be in (0, 1), got {ratio}")
    df = train.loc[:, ["clip_id", "label"]].drop_duplicates("clip_id").sort_values("clip_id", kind="mergesort")
    counts = df["label"].map(df["label"].value_counts())
    pool = df[counts >= 2]
    n_val = int(round(ratio * len(df)))
    if n_val == 0 or len(pool) < 2:
        log.warning("validation carve: %d train clips (%d in labels with >= 2 clips) give no validation clip at "
                    "ratio %.4f", len(df), len(pool), ratio)
        return set()
    test_size = min(n_val, len(pool) - 1)
    n_labels = pool["label"].nunique()
    stratify = pool["label"].to_numpy()
    if test_size < n_labels or len(pool) - test_size < n_labels:
        log.warning("validation carve: %d slots for %d labels; falling back to an unstratified split",
                    test_size, n_labels)
        stratify = None
    _, val = train_test_split(pool["clip_id"].to_numpy(), test_size=test_size, random_state=seed, shuffle=True,
                              stratify=stratify)
    return set(val.tolist())


def assign_splits(scores: pd.DataFrame, val_ids: Iterable[str] | None = None, *, ratio: float = VAL_RATIO,
                  seed: int = DEFAULT_SEED) -> pd.Series:
    """VisualSound split (train / validation / test) of every scored row, before any thresholding."""
    split = pd.Series(np.where(scores["split"] == "test", "test", "train"), index=scores.index, dtype=object)
    is_train = scores["split"] == "train"
    if val_ids is not None:
        val = set(val_ids)
    else:
        val = carve_validation(scores.loc[is_train], ratio=ratio, seed=seed)
    split[is_train & scores["clip_id"].isin(val)] = "validation"
    bad = ~scores["split"].isin(["train", "test"])
    if bad.any():
        raise SplitError(f"unknown VGGSound split {scores.loc[bad, 'split'].iloc[0]!r} (expected train/test)")
    return split


def keep_mask(scores: pd.DataFrame, threshold: float) -> pd.Series:
    """Rows kept at `threshold`: status ok and score >= threshold."""
    return (scores["status"] == "ok") & (scores["score"].astype(float) >= threshold)


def rejection_counts(scores: pd.DataFrame, threshold: float) -> dict[str, int]:
    """Rejected rows by reason: each non-ok status, plus ``below_threshold`` for ok clips under it."""
    out = {str(k): int(v) for k, v in scores.loc[scores["status"] != "ok", "status"].value_counts().sort_index()
           .items()}
    ok = scores["status"] == "ok"
    out["below_threshold"] = int((ok & ~keep_mask(scores, threshold)).sum())
    return out


def class_keep_rates(scores: pd.DataFrame, kept: pd.Series) -> pd.DataFrame:
    """Per label: scored clips, ok clips, kept clips, and keep rate (kept / scored), sorted by label."""
    g = pd.DataFrame({"label": scores["label"], "ok": scores["status"] == "ok", "kept": kept})
    agg = g.groupby("label", sort=True).agg(total=("ok", "size"), ok=("ok", "sum"), kept=("kept", "sum"))
    agg["keep_rate"] = agg["kept"] / agg["total"]
    return agg.reset_index()


def uses_debug_weights(scores: pd.DataFrame, meta: Mapping[str, Any] | None = None) -> bool:
    """True when any row, or the shards' metadata (``debug_weights == "true"``), says debug weights were used."""
    return bool(scores["debug_weights"].any()) or str((meta or {}).get("debug_weights")).lower() == "true"


def empty_split_warnings(counts: Mapping[str, int], pool: Mapping[str, int], threshold: float,
                         sync: bool = False) -> list[str]:
    """One warning per VisualSound split that keeps no clip, saying whether it had no scored clip at all or
    every one of them was rejected."""
    out = []
    for s in VS_SPLITS:
        if counts[s]:
            continue
        if not pool[s]:
            out.append(f"the {s} split is empty: no scored clip belongs to it")
        else:
            by = f"the threshold {threshold:g}" + (" and the in-sync filter" if sync else "")
            out.append(f"the {s} split is empty: {by} rejected all {pool[s]} of its scored clips")
    return out


def build_visualsound(scores: pd.DataFrame, threshold: float, out_dir: str | os.PathLike, *,
                      val_ids: Iterable[str] | None = None, val_source: str | None = None,
                      ratio: float = VAL_RATIO, seed: int = DEFAULT_SEED,
                      meta: dict[str, Any] | None = None, sync: SyncFilterSpec | None = None) -> dict[str, Any]:
    """Build the VisualSound splits from de-duplicated `scores` (see `visualsound.scores_io.read_scores`), keeping
    only clips that also pass the in-sync filter result `sync` when one is given.

    Writes the files listed in the module docstring into `out_dir` and returns the summary dict.
    """
    from visualsound import __version__

    check_threshold(threshold)
    if scores.empty:
        raise SplitError("no scored clips: the scores table is empty")
    if scores["clip_id"].duplicated().any():
        raise SplitError("scores contain duplicated clip ids; read them with scores_io.read_scores")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    val_list = list(val_ids) if val_ids is not None else None
    vs_split = assign_splits(scores, val_list, ratio=ratio, seed=seed)
    kept = keep_mask(scores, threshold)
    sync_summary = None
    if sync is not None:
        sync_keep, sync_summary = sync.apply(scores["clip_id"], vs_split, kept)
        kept = kept & sync_keep
    table = scores.loc[kept].assign(visualsound_split=vs_split[kept]).sort_values("clip_id", kind="mergesort")
    table = table.reset_index(drop=True)

    with atomic_open(out / "visualsound.parquet", "wb") as f:
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), f)
    for s in VS_SPLITS:
        ids = table.loc[table["visualsound_split"] == s, "clip_id"].tolist()
        atomic_write_text(out / f"visualsound_{s}.txt", "".join(f"{i}\n" for i in ids))
    csv = table.loc[:, ["youtube_id", "start_seconds", "label", "split"]].rename(
        columns={"youtube_id": "filename", "start_seconds": "start", "label": "desc"})
    csv = csv.sort_values(["filename", "start"], kind="mergesort")
    buf = io.StringIO()
    csv.to_csv(buf, index=False, lineterminator="\n")
    atomic_write_text(out / "visualsound.csv", buf.getvalue())

    rates = class_keep_rates(scores, kept)
    debug = uses_debug_weights(scores, meta) or (sync is not None and sync.debug_weights)
    pool = {s: int((vs_split == s).sum()) for s in VS_SPLITS}
    counts = {s: int((table["visualsound_split"] == s).sum()) for s in VS_SPLITS}
    summary: dict[str, Any] = {
        "threshold": float(threshold),
        "counts": counts,
        "total_kept": int(len(table)),
        "scored_per_split": pool,
        "scored_total": int(len(scores)),
        "rejected": rejection_counts(scores, threshold),
        "validation": {
            "source": val_source or ("id list" if val_list is not None else f"stratified carve, seed {seed}"),
            "ratio": ratio if val_list is None else None,
            "listed_ids": len(set(val_list)) if val_list is not None else None,
            "listed_ids_not_in_train_scores": (len(set(val_list) - set(scores.loc[scores["split"] == "train",
                                                                                  "clip_id"]))
                                               if val_list is not None else None),
        },
        "per_class": {r.label: {"total": int(r.total), "ok": int(r.ok), "kept": int(r.kept),
                                "keep_rate": round(float(r.keep_rate), 6)} for r in rates.itertuples()},
        "score_version": sorted(set(scores["score_version"].astype(str))),
        "software_version": __version__,
        "checkpoint_sha256": (meta or {}).get("checkpoint_sha256"),
        "debug_weights": debug,
    }
    if sync_summary is not None:
        summary["sync_filter"] = sync_summary
    warnings = empty_split_warnings(counts, pool, threshold, sync is not None)
    if warnings:
        summary["warnings"] = warnings
    for w in warnings:
        log.warning("%s", w)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=False) + "\n")
    log.info("VisualSound at threshold %.3f: %s (written to %s)", threshold, counts, out)
    return summary
