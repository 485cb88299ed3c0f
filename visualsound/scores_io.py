"""Score shards: the Parquet files written by `visualsound score` and read by build / report / merge.

A scores folder holds any number of shard files ``*.parquet`` (one per scoring run, chunk or ``--shard i/n``
worker). Every shard has exactly this schema, one row per clip:

================== ========= ==================================================================================
column             type      meaning
================== ========= ==================================================================================
clip_id            string    V-AURA id ``{ytid}_{start*1000}_{start*1000+10000}`` (`visualsound.vggsound.clip_id`)
youtube_id         string    YouTube id
start_seconds      int64     clip start in the source video (whole seconds)
label              string    VGGSound class label
split              string    VGGSound split: ``train`` | ``test``
path               string    the media file that was scored
score              float64   ImageBind audio-visual score; NaN unless ``status == "ok"``
status             string    one of `STATUSES`
reason             string    human-readable detail for a non-ok status ("" when ok)
video_fps          float64   probed video frame rate (null when unknown)
duration           float64   probed duration in seconds (null when unknown)
audio_sample_rate  int64     probed audio sample rate (null when unknown)
audio_channels     int64     probed audio channel count (null when unknown)
num_frames         int64     probed video frame count (null when unknown)
bad_packets        int64     packets the decoders rejected and that were skipped, as FFmpeg's tools skip them
                             (0 for a clean file; null when unknown). Shards and rows without this column
                             (written before it existed) are read with nulls.
score_version      string    version tag of the scoring recipe (preprocessing + model)
debug_weights      bool      True when scored with seeded random debug weights
================== ========= ==================================================================================

Shard-level Parquet key-value metadata (optional, all strings): ``score_version``, ``checkpoint_sha256``,
``debug_weights``, ``software_version`` plus whatever the writer adds.

`write_shard` writes atomically under a unique name; `read_scores` concatenates all shards, checks every
schema (a mismatch raises `ScoresSchemaError`), and resolves duplicated clip ids deterministically: a row with
status ``ok`` wins over a non-ok one, then the row from the shard whose file name sorts last (shard names
start with a UTC timestamp, so the newest), then the later row in that shard. The number of dropped
duplicates is reported. `merge_scores` combines several folders (e.g. ``--shard i/n`` outputs) into one file;
`done_clip_ids` lists what a resumed run may skip.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from visualsound.errors import ToolkitError
from visualsound.utils.atomic import atomic_open

log = logging.getLogger(__name__)

STATUSES = ("ok", "missing", "corrupt", "truncated", "no_audio", "no_video", "silent", "too_short", "error")

SCHEMA = pa.schema([
    ("clip_id", pa.string()),
    ("youtube_id", pa.string()),
    ("start_seconds", pa.int64()),
    ("label", pa.string()),
    ("split", pa.string()),
    ("path", pa.string()),
    ("score", pa.float64()),
    ("status", pa.string()),
    ("reason", pa.string()),
    ("video_fps", pa.float64()),
    ("duration", pa.float64()),
    ("audio_sample_rate", pa.int64()),
    ("audio_channels", pa.int64()),
    ("num_frames", pa.int64()),
    ("bad_packets", pa.int64()),
    ("score_version", pa.string()),
    ("debug_weights", pa.bool_()),
])
COLUMNS = tuple(SCHEMA.names)
# columns added after the first release: older shards without them are read with nulls
_ADDED_COLUMNS = ("bad_packets",)
_OLD_SCHEMA = pa.schema([f for f in SCHEMA if f.name not in _ADDED_COLUMNS])
_REQUIRED_NON_NULL = ("clip_id", "youtube_id", "start_seconds", "label", "split", "path", "status", "reason",
                      "score_version", "debug_weights")
_INT_COLUMNS = tuple(f.name for f in SCHEMA if pa.types.is_integer(f.type))


class ScoresSchemaError(ToolkitError):
    """A score row or shard does not follow `SCHEMA` (missing / extra / mistyped columns, bad status)."""


@dataclass(frozen=True)
class ScoreSet:
    """All rows of a scores folder after de-duplication, plus how they were gathered."""

    frame: pd.DataFrame
    shards: tuple[Path, ...]
    duplicates: int
    meta: dict[str, Any] = field(default_factory=dict)


def _validate_frame(df: pd.DataFrame, where: str) -> None:
    missing = [c for c in COLUMNS if c not in df.columns]
    extra = [c for c in df.columns if c not in COLUMNS]
    if missing or extra:
        raise ScoresSchemaError(f"{where}: missing columns {missing}, unexpected columns {extra}")
    for c in _REQUIRED_NON_NULL:
        if df[c].isna().any():
            raise ScoresSchemaError(f"{where}: column {c!r} has nulls (row {int(df[c].isna().values.argmax())})")
    bad = ~df["status"].isin(STATUSES)
    if bad.any():
        raise ScoresSchemaError(f"{where}: unknown status {df.loc[bad, 'status'].iloc[0]!r}; allowed {STATUSES}")
    ok = df["status"] == "ok"
    score = pd.to_numeric(df["score"], errors="coerce")
    if (~np.isfinite(score[ok].to_numpy(dtype=float))).any():
        raise ScoresSchemaError(f"{where}: a row with status 'ok' has no finite score")
    if score[~ok].notna().any():
        raise ScoresSchemaError(f"{where}: a row with a non-ok status has a score (must be NaN)")


def rows_to_table(rows: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pa.Table:
    """Validate rows (dicts or a DataFrame) against `SCHEMA` and build an Arrow table in column order."""
    df = pd.DataFrame(list(rows)) if not isinstance(rows, pd.DataFrame) else rows
    if df.empty and not len(df.columns):
        df = pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    for name in _ADDED_COLUMNS:  # rows written for the first schema: the added columns are unknown (null)
        if name not in df.columns:
            df = df.assign(**{name: None})
    _validate_frame(df, "rows")
    df = df.loc[:, list(COLUMNS)].copy()
    df["score"] = pd.to_numeric(df["score"], errors="coerce").astype(float)
    cols = {}
    for f in SCHEMA:
        values = df[f.name].tolist()
        if f.name in _INT_COLUMNS or pa.types.is_floating(f.type):
            values = [None if pd.isna(v) else v for v in values]
            if f.name == "score":
                values = [math.nan if v is None else v for v in values]
        try:
            cols[f.name] = pa.array(values, type=f.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as e:
            raise ScoresSchemaError(f"column {f.name!r} cannot be stored as {f.type}: {e}") from e
    return pa.table(cols, schema=SCHEMA)


def shard_name(prefix: str = "scores") -> str:
    """A unique shard file name: ``{prefix}-{UTC timestamp}-{pid}-{random}.parquet`` (sorts by time)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return f"{prefix}-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"


def write_shard(rows: pd.DataFrame | Sequence[Mapping[str, Any]], directory: str | os.PathLike, *,
                meta: Mapping[str, Any] | None = None, prefix: str = "scores") -> Path:
    """Write `rows` as a new shard in `directory` (atomic, unique name); returns its path."""
    table = rows_to_table(rows)
    if meta:
        table = table.replace_schema_metadata({str(k): str(v) for k, v in meta.items()})
    path = Path(directory) / shard_name(prefix)
    with atomic_open(path, "wb") as f:
        pq.write_table(table, f)
    log.info("wrote %d score rows to %s", table.num_rows, path)
    return path


def list_shards(source: str | os.PathLike) -> list[Path]:
    """The shard files of a scores folder (sorted by name), or `[source]` for a single Parquet file."""
    p = Path(source)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise ScoresSchemaError(f"scores folder {p} does not exist")
    return sorted(q for q in p.glob("*.parquet") if not q.name.startswith("."))


def _read_shard(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise ScoresSchemaError(f"{path}: not a readable Parquet file: {e}") from e
    schema = pf.schema_arrow
    old = schema.remove_metadata() == _OLD_SCHEMA
    if schema.remove_metadata() != SCHEMA and not old:
        got = {f.name: str(f.type) for f in schema}
        want = {f.name: str(f.type) for f in SCHEMA}
        diff = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
        raise ScoresSchemaError(f"{path}: schema mismatch in columns {diff}: got "
                                f"{ {k: got.get(k) for k in diff} }, expected { {k: want.get(k) for k in diff} }")
    table = pf.read()
    meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items() if not k.startswith(b"ARROW")}
    df = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    if old:
        for name in _ADDED_COLUMNS:
            df[name] = pd.array([None] * len(df), dtype=pd.Int64Dtype())
        df = df.loc[:, list(COLUMNS)]
    return df, meta


def _dedupe(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    order = df.assign(_not_ok=(df["status"] != "ok").astype(int))
    order = order.sort_values(["clip_id", "_not_ok", "_shard", "_row"], ascending=[True, True, False, False],
                              kind="mergesort")
    kept = order.drop_duplicates("clip_id", keep="first")
    return kept.drop(columns=["_not_ok"]), len(df) - len(kept)


def load_scores(sources: str | os.PathLike | Iterable[str | os.PathLike]) -> ScoreSet:
    """Read every shard of one or more scores folders (or files); dedupe; return rows sorted by clip id."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    shards = [s for src in sources for s in list_shards(src)]
    frames, metas = [], {}
    for i, s in enumerate(shards):
        df, meta = _read_shard(s)
        frames.append(df.assign(_shard=f"{s.name}\0{i:06d}", _row=np.arange(len(df))))
        for k, v in meta.items():
            metas.setdefault(k, set()).add(v)
    if not frames:
        empty = rows_to_table([]).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
        return ScoreSet(empty, (), 0, {})
    full = pd.concat(frames, ignore_index=True)
    kept, dups = _dedupe(full)
    kept = kept.drop(columns=["_shard", "_row"]).sort_values("clip_id", kind="mergesort").reset_index(drop=True)
    if dups:
        log.info("resolved %d duplicated clip rows across %d shards", dups, len(shards))
    meta = {k: (next(iter(v)) if len(v) == 1 else sorted(v)) for k, v in metas.items()}
    for k, v in meta.items():
        if isinstance(v, list):
            log.warning("shards disagree on %s: %s", k, v)
    return ScoreSet(kept, tuple(shards), dups, meta)


def read_scores(sources: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """All de-duplicated rows (see `load_scores`); ``df.attrs`` holds ``duplicates``, ``shards`` and ``meta``."""
    s = load_scores(sources)
    df = s.frame
    df.attrs.update({"duplicates": s.duplicates, "shards": len(s.shards), "meta": s.meta})
    return df


def merge_scores(sources: Iterable[str | os.PathLike], out: str | os.PathLike) -> ScoreSet:
    """Combine the shards of several folders into one file ``out/scores-merged.parquet`` (atomic, replaced).

    `out` must not be one of the inputs (its old shards would be counted twice). Returns the merged set.
    """
    srcs = [Path(s) for s in sources]
    out = Path(out)
    if any(out.resolve() == s.resolve() for s in srcs):
        raise ScoresSchemaError(f"merge output {out} is also an input; choose a new folder")
    merged = load_scores(srcs)
    if not merged.shards:
        raise ScoresSchemaError(f"no score shards found in {', '.join(map(str, srcs))}")
    table = rows_to_table(merged.frame)
    meta = {k: v if isinstance(v, str) else ",".join(v) for k, v in merged.meta.items()}
    meta["merged_from"] = str(len(merged.shards))
    table = table.replace_schema_metadata(meta)
    path = out / "scores-merged.parquet"
    with atomic_open(path, "wb") as f:
        pq.write_table(table, f)
    log.info("merged %d shards (%d duplicates dropped) into %s", len(merged.shards), merged.duplicates, path)
    return merged


def done_clip_ids(directory: str | os.PathLike, retry_statuses: Iterable[str] = ("error",)) -> set[str]:
    """Clip ids already scored in `directory` (a resumed run skips them); `retry_statuses` are not done."""
    p = Path(directory)
    if not p.exists():
        return set()
    df = read_scores(p)
    retry = set(retry_statuses)
    return set(df.loc[~df["status"].isin(retry), "clip_id"])
