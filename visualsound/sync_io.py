"""The in-sync filter's result files: the Parquet shards `vaura sync-filter` writes and `visualsound build` reads.

The filter itself (Synchformer on 4.8 s windows) lives in `vaura.sync_filter`; this module holds only the file
format and the decision rule, so that `visualsound build` can apply a result without importing `vaura`. See
``docs/sync_filter.md`` for what the original V-AURA code does.

One row per clip (`SYNC_SCHEMA`):

===================== ============ ===========================================================================
column                type         meaning
===================== ============ ===========================================================================
clip_id               string       the clip id (V-AURA id with a VGGSound csv, the file stem for a folder)
path                  string       the media file
label                 string       VGGSound label (null in folder mode)
split                 string       VGGSound split of the csv (null in folder mode)
status                string       ``ok`` or why the clip could not be judged (`visualsound.scores_io.STATUSES`)
reason                string       detail of a non-ok status; for ok: "" or a note (judged on a first part only)
duration              float64      seconds of audio-visual content used (both streams trimmed to the shorter)
window_start_sec      list<double> start of each 4.8 s window (seconds from the clip start)
window_offset_sec     list<double> each window's predicted offset (argmax class; audio relative to video)
window_p_sync         list<double> each window's probability of offset 0
window_p_top          list<double> each window's top class probability
num_windows           int64        number of windows (null unless ok)
in_sync_windows       int64        windows whose argmax is offset 0 (the original's ``is_correct``; null unless ok)
in_sync_windows_tol1  int64        windows within one class (0.2 s) of offset 0 (``is_correct_within_1cls_tol``)
count_key             string       which count the decision uses: ``exact`` | ``tol1``
min_sync_windows      int64        the threshold the decision used
passed                bool         ``status == "ok"`` and the count >= `min_sync_windows`
sync_version          string       recipe tag of the filter (model input, windows, preprocessing)
debug_weights         bool         True when judged by a seeded random (debug) Synchformer
===================== ============ ===========================================================================

Shards live in a folder (any number of ``sync-*.parquet``) with the scores machinery of
`visualsound.scores_io` (atomic writes, duplicates resolved ok-first then newest).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from visualsound.errors import ToolkitError
from visualsound.scores_io import ScoresSchemaError, ShardFormat, load_scores

# The original's thresholds (V-AURA models/data/vggsound_dataset.py: 25 for train, 5 for any other split).
DEFAULT_MIN_SYNC_WINDOWS: dict[str, int] = {"train": 25, "validation": 5, "test": 5}
SPLIT_ALIASES = {"train": "train", "val": "validation", "valid": "validation", "validation": "validation",
                 "test": "test"}
# our count names -> the original's column names
COUNT_KEYS: dict[str, str] = {"exact": "is_correct", "tol1": "is_correct_within_1cls_tol"}
COUNT_COLUMNS: dict[str, str] = {"exact": "in_sync_windows", "tol1": "in_sync_windows_tol1"}
LIST_COLUMNS = ("window_start_sec", "window_offset_sec", "window_p_sync", "window_p_top")

SYNC_SCHEMA = pa.schema([
    ("clip_id", pa.string()),
    ("path", pa.string()),
    ("label", pa.string()),
    ("split", pa.string()),
    ("status", pa.string()),
    ("reason", pa.string()),
    ("duration", pa.float64()),
    *[(c, pa.list_(pa.float64())) for c in LIST_COLUMNS],
    ("num_windows", pa.int64()),
    ("in_sync_windows", pa.int64()),
    ("in_sync_windows_tol1", pa.int64()),
    ("count_key", pa.string()),
    ("min_sync_windows", pa.int64()),
    ("passed", pa.bool_()),
    ("sync_version", pa.string()),
    ("debug_weights", pa.bool_()),
])


class SyncFilterError(ToolkitError):
    """Bad in-sync filter input: an unknown split or count key, an impossible threshold, an unusable result."""


def canonical_split(split: str) -> str:
    """``train`` | ``validation`` | ``test`` for a split name or alias (``val``, ``valid``)."""
    s = SPLIT_ALIASES.get(str(split).strip().lower())
    if s is None:
        raise SyncFilterError(f"unknown split {split!r}; use one of train, validation (val), test")
    return s


def default_min_sync_windows(split: str) -> int:
    """The original's threshold for a split: 25 for train, 5 for validation and test."""
    return DEFAULT_MIN_SYNC_WINDOWS[canonical_split(split)]


def check_count_key(key: str) -> str:
    if key not in COUNT_KEYS:
        raise SyncFilterError(f"unknown count key {key!r}; use one of {sorted(COUNT_KEYS)}")
    return key


def decide(count: int | None, min_sync_windows: int, status: str = "ok") -> bool:
    """The filter's decision: a clip passes when it was judged (``status == "ok"``) and at least `min_sync_windows`
    of its windows are in sync."""
    if min_sync_windows < 0:
        raise SyncFilterError(f"min_sync_windows must be >= 0, got {min_sync_windows}")
    return status == "ok" and count is not None and int(count) >= int(min_sync_windows)


def _check_rows(df: pd.DataFrame, where: str) -> None:
    """Row invariants: ok rows have windows and consistent counts and decision; other rows are not judged."""
    bad_key = ~df["count_key"].isin(list(COUNT_KEYS))
    if bad_key.any():
        raise ScoresSchemaError(f"{where}: unknown count_key {df.loc[bad_key, 'count_key'].iloc[0]!r}")
    for r in df.itertuples(index=False):
        lists = [getattr(r, c) for c in LIST_COLUMNS]
        lengths = {0 if v is None else len(v) for v in lists}
        if r.status == "ok":
            n = r.num_windows
            if pd.isna(n) or n < 1 or lengths != {int(n)}:
                raise ScoresSchemaError(f"{where}: clip {r.clip_id}: an ok row needs num_windows >= 1 and that many "
                                        f"values in every window column (num_windows {n}, lengths {sorted(lengths)})")
            counts = [getattr(r, COUNT_COLUMNS[k]) for k in COUNT_KEYS]
            if any(pd.isna(c) or not 0 <= c <= n for c in counts):
                raise ScoresSchemaError(f"{where}: clip {r.clip_id}: in-sync counts {counts} outside [0, {n}]")
            if bool(r.passed) != decide(getattr(r, COUNT_COLUMNS[r.count_key]), int(r.min_sync_windows)):
                raise ScoresSchemaError(f"{where}: clip {r.clip_id}: passed={r.passed} contradicts its count and "
                                        f"min_sync_windows={r.min_sync_windows}")
        elif bool(r.passed) or lengths != {0}:
            raise ScoresSchemaError(f"{where}: clip {r.clip_id}: a row with status {r.status!r} cannot pass or "
                                    "have windows")


SYNC_FORMAT = ShardFormat(
    "sync", SYNC_SCHEMA,
    required_non_null=("clip_id", "path", "status", "reason", "count_key", "min_sync_windows", "passed",
                       "sync_version", "debug_weights"),
    check=_check_rows, prefix="sync")


def read_sync_results(sources: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """All de-duplicated rows of one or more result folders (or files) of `vaura sync-filter`, sorted by clip id;
    ``df.attrs`` holds ``duplicates``, ``shards`` and ``meta`` (shard metadata: recipe, checkpoint, debug flag)."""
    s = load_scores(sources, SYNC_FORMAT)
    if not s.shards:
        raise SyncFilterError(f"no sync-filter results (sync-*.parquet) found in {sources}")
    df = s.frame
    df.attrs.update({"duplicates": s.duplicates, "shards": len(s.shards), "meta": s.meta})
    return df


def parse_min_windows_spec(spec: str | int | Mapping[str, int]) -> dict[str, int] | None:
    """Per-split thresholds for `visualsound build`: ``"stored"`` (None: use each row's own decision), one number
    for every split (``"10"``), or ``"train=25,validation=5,test=5"`` (missing splits take the original's
    default)."""
    if isinstance(spec, Mapping):
        items: Iterable[tuple[str, Any]] = spec.items()
    else:
        text = str(spec).strip()
        if text == "stored":
            return None
        if text.isdigit():
            return {s: int(text) for s in DEFAULT_MIN_SYNC_WINDOWS}
        items = []
        for part in text.split(","):
            key, sep, value = part.partition("=")
            if not sep or not value.strip().isdigit():
                raise SyncFilterError(f"bad in-sync threshold spec {spec!r}: use 'stored', N, or "
                                      "'train=25,validation=5,test=5'")
            items.append((key, int(value)))
    out = dict(DEFAULT_MIN_SYNC_WINDOWS)
    for key, value in items:
        if int(value) < 0:
            raise SyncFilterError(f"in-sync threshold for {key} must be >= 0, got {value}")
        out[canonical_split(key)] = int(value)
    return out


def sync_keep_mask(clip_ids: pd.Series, splits: pd.Series, results: pd.DataFrame,
                   min_windows: Mapping[str, int] | None, missing: str = "keep") -> tuple[pd.Series, pd.Series]:
    """Which clips the in-sync filter keeps, and why the others go.

    `clip_ids` and `splits` (VisualSound split per clip: train / validation / test) share an index; `results` are
    `read_sync_results` rows. `min_windows` maps a split to its threshold, applied to each row's own count
    (``count_key``); None uses each row's stored ``passed``. Rows that could not be judged (non-ok status) fail.
    Clips without a row are kept (as in the original) or, with ``missing="drop"``, dropped.

    Returns ``(keep, why)``: bool per clip and the drop reason (``out_of_sync``, ``unjudged:<status>``,
    ``not_in_result``; "" when kept).
    """
    if missing not in ("keep", "drop"):
        raise SyncFilterError(f"missing must be 'keep' or 'drop', got {missing!r}")
    res = results.set_index("clip_id")
    why = pd.Series("", index=clip_ids.index, dtype=object)
    present = clip_ids.isin(res.index)
    if not present.all() and missing == "drop":
        why[~present] = "not_in_result"
    rows = res.reindex(clip_ids[present].to_numpy())
    status = rows["status"].astype(str).to_numpy()
    judged = status == "ok"
    if min_windows is None:
        passed = rows["passed"].astype(bool).to_numpy()
    else:
        count = np.zeros(len(rows), dtype=np.int64)
        for key, col in COUNT_COLUMNS.items():
            use = judged & (rows["count_key"] == key).to_numpy()
            count[use] = rows[col].to_numpy()[use].astype(np.int64)
        need = splits[present].map(lambda sp: min_windows[canonical_split(sp)]).to_numpy(dtype=np.int64)
        passed = judged & (count >= need)
    unjudged = np.array(["unjudged:" + st for st in status], dtype=object)
    why[present] = np.where(~judged, unjudged, np.where(passed, "", "out_of_sync"))
    return why == "", why


@dataclass(frozen=True)
class SyncFilterSpec:
    """How `visualsound.splits.build_visualsound` applies an in-sync filter result: its rows
    (`read_sync_results`), per-split thresholds (None: each row's stored decision), what happens to clips without a
    row (``keep`` as the original, or ``drop``) and where the rows came from (for the summary)."""

    results: pd.DataFrame
    min_windows: Mapping[str, int] | None = None
    missing: str = "keep"
    source: str = ""

    def __post_init__(self) -> None:
        if self.missing not in ("keep", "drop"):
            raise SyncFilterError(f"missing must be 'keep' or 'drop', got {self.missing!r}")

    @property
    def debug_weights(self) -> bool:
        meta = self.results.attrs.get("meta", {})
        return bool(self.results["debug_weights"].any()) or str(meta.get("debug_weights")).lower() == "true"

    def apply(self, clip_ids: pd.Series, splits: pd.Series, candidates: pd.Series) -> tuple[pd.Series, dict[str, Any]]:
        """``(keep, summary)``: the clips of `clip_ids` the filter keeps, and a JSON-ready account of what it did to
        the `candidates` (clips kept so far, e.g. by the ImageBind threshold): kept before, dropped per split and
        per reason, clips without a row, thresholds, recipe."""
        keep, why = sync_keep_mask(clip_ids, splits, self.results, self.min_windows, self.missing)
        dropped = candidates & ~keep
        meta = self.results.attrs.get("meta", {})
        summary = {
            "source": self.source,
            "min_sync_windows": dict(self.min_windows) if self.min_windows is not None else "stored decisions",
            "count_key": sorted(set(self.results["count_key"].astype(str))),
            "missing_policy": self.missing,
            "candidates": {s: int((candidates & (splits == s)).sum()) for s in DEFAULT_MIN_SYNC_WINDOWS},
            "dropped": {s: int((dropped & (splits == s)).sum()) for s in DEFAULT_MIN_SYNC_WINDOWS},
            "dropped_total": int(dropped.sum()),
            "dropped_by_reason": {str(k): int(v) for k, v in why[dropped].value_counts().sort_index().items()},
            "candidates_not_in_result": int((candidates & ~clip_ids.isin(set(self.results["clip_id"]))).sum()),
            "sync_version": sorted(set(self.results["sync_version"].astype(str))),
            "checkpoint_sha256": meta.get("checkpoint_sha256"),
            "debug_weights": self.debug_weights,
        }
        return keep, summary
