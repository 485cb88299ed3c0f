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
start with a UTC timestamp to the microsecond, so the newest), then the later row in that shard. The number of dropped
duplicates is reported. `merge_scores` combines several folders (e.g. ``--shard i/n`` outputs) into one file;
`done_clip_ids` lists what a resumed run may skip.

The same machinery serves other per-clip jobs with their own schema (e.g. `visualsound.sync_io`, the in-sync
filter's rows): a `ShardFormat` names the schema, the columns that may not be null, extra row checks and the
shard-name prefix; every function here takes ``fmt=`` (default `SCORES`). `shard_recipes` / `recipe_conflicts`,
`remove_stale_temps` and `compact_shards` are the resumable-job helpers; `media_status` maps a
`visualsound.media.MediaError` to its status.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
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
_REQUIRED_NON_NULL = ("clip_id", "youtube_id", "start_seconds", "label", "split", "path", "status", "reason",
                      "score_version", "debug_weights")
STALE_TEMP_SECONDS = 3600  # temp files of killed shard writes older than this may be removed


class ScoresSchemaError(ToolkitError):
    """A score row or shard does not follow its schema (missing / extra / mistyped columns, bad status)."""


@dataclass(frozen=True)
class ShardFormat:
    """One kind of shard folder: Arrow `schema` (must have ``clip_id``, ``status`` and ``reason``), the columns that
    may not be null, an optional extra row check ``check(frame, where)`` (raises `ScoresSchemaError`), and the
    shard file-name `prefix`."""

    name: str
    schema: pa.Schema
    required_non_null: tuple[str, ...]
    check: Callable[[pd.DataFrame, str], None] | None = None
    prefix: str = "scores"
    added_columns: tuple[str, ...] = ()  # columns added later: older shards and rows without them read as nulls

    def __post_init__(self) -> None:
        missing = [c for c in ("clip_id", "status", "reason") if c not in self.schema.names]
        if missing:
            raise ValueError(f"ShardFormat {self.name!r}: schema lacks {missing}")

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.schema.names)

    @property
    def old_schema(self) -> pa.Schema:
        """The schema before `added_columns` existed."""
        return pa.schema([f for f in self.schema if f.name not in self.added_columns])


@dataclass(frozen=True)
class ScoreSet:
    """All rows of a scores folder after de-duplication, plus how they were gathered."""

    frame: pd.DataFrame
    shards: tuple[Path, ...]
    duplicates: int
    meta: dict[str, Any] = field(default_factory=dict)


def _check_scores(df: pd.DataFrame, where: str) -> None:
    """Score rows: a finite score exactly when the status is ok."""
    ok = df["status"] == "ok"
    score = pd.to_numeric(df["score"], errors="coerce")
    if (~np.isfinite(score[ok].to_numpy(dtype=float))).any():
        raise ScoresSchemaError(f"{where}: a row with status 'ok' has no finite score")
    if score[~ok].notna().any():
        raise ScoresSchemaError(f"{where}: a row with a non-ok status has a score (must be NaN)")


SCORES = ShardFormat("scores", SCHEMA, _REQUIRED_NON_NULL, _check_scores, "scores", added_columns=("bad_packets",))


def _validate_frame(df: pd.DataFrame, where: str, fmt: ShardFormat = SCORES) -> None:
    missing = [c for c in fmt.columns if c not in df.columns]
    extra = [c for c in df.columns if c not in fmt.columns]
    if missing or extra:
        raise ScoresSchemaError(f"{where}: missing columns {missing}, unexpected columns {extra}")
    for c in fmt.required_non_null:
        if df[c].isna().any():
            raise ScoresSchemaError(f"{where}: column {c!r} has nulls (row {int(df[c].isna().values.argmax())})")
    bad = ~df["status"].isin(STATUSES)
    if bad.any():
        raise ScoresSchemaError(f"{where}: unknown status {df.loc[bad, 'status'].iloc[0]!r}; allowed {STATUSES}")
    if fmt.check is not None:
        fmt.check(df, where)


def _is_null(v: Any) -> bool:
    """A scalar missing value (None, NaN, pd.NA); lists and arrays are never null here."""
    return not isinstance(v, (list, tuple, np.ndarray)) and bool(pd.isna(v))


def rows_to_table(rows: pd.DataFrame | Sequence[Mapping[str, Any]], fmt: ShardFormat = SCORES) -> pa.Table:
    """Validate rows (dicts or a DataFrame) against ``fmt.schema`` and build an Arrow table in column order."""
    df = pd.DataFrame(list(rows)) if not isinstance(rows, pd.DataFrame) else rows
    if df.empty and not len(df.columns):
        df = pd.DataFrame({c: pd.Series(dtype=object) for c in fmt.columns})
    for name in fmt.added_columns:  # rows written for the older schema: the added columns are unknown (null)
        if name not in df.columns:
            df = df.assign(**{name: None})
    _validate_frame(df, "rows", fmt)
    df = df.loc[:, list(fmt.columns)].copy()
    if fmt is SCORES:
        df["score"] = pd.to_numeric(df["score"], errors="coerce").astype(float)
    cols = {}
    for f in fmt.schema:
        values = df[f.name].tolist()
        if pa.types.is_list(f.type):
            values = [None if v is None else list(v) for v in values]
        else:  # NaN / pd.NA from pandas are nulls (strings included: a null label reads back as NaN)
            values = [None if _is_null(v) else v for v in values]
            if fmt is SCORES and f.name == "score":
                values = [math.nan if v is None else v for v in values]
        try:
            cols[f.name] = pa.array(values, type=f.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as e:
            raise ScoresSchemaError(f"column {f.name!r} cannot be stored as {f.type}: {e}") from e
    return pa.table(cols, schema=fmt.schema)


_last_stamp_us = 0


def shard_name(prefix: str = "scores") -> str:
    """A unique shard file name: ``{prefix}-{UTC timestamp to the microsecond}-{pid}-{random}.parquet``. Names sort
    by time, and two names made by one process never share a timestamp (the later one sorts last), so "the newest
    shard wins" holds even for shards written within one second (a re-decision right after a run)."""
    global _last_stamp_us
    now_us = max(time.time_ns() // 1000, _last_stamp_us + 1)
    _last_stamp_us = now_us
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_us // 1_000_000)) + f".{now_us % 1_000_000:06d}"
    return f"{prefix}-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"


def write_shard(rows: pd.DataFrame | Sequence[Mapping[str, Any]], directory: str | os.PathLike, *,
                meta: Mapping[str, Any] | None = None, prefix: str | None = None,
                fmt: ShardFormat = SCORES) -> Path:
    """Write `rows` as a new shard in `directory` (atomic, unique name, ``prefix`` default ``fmt.prefix``);
    returns its path."""
    table = rows_to_table(rows, fmt)
    if meta:
        table = table.replace_schema_metadata({str(k): str(v) for k, v in meta.items()})
    path = Path(directory) / shard_name(prefix or fmt.prefix)
    with atomic_open(path, "wb") as f:
        pq.write_table(table, f)
    log.info("wrote %d %s rows to %s", table.num_rows, fmt.name, path)
    return path


def list_shards(source: str | os.PathLike) -> list[Path]:
    """The shard files of a scores folder (sorted by name), or `[source]` for a single Parquet file."""
    p = Path(source)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise ScoresSchemaError(f"scores folder {p} does not exist")
    return sorted(q for q in p.glob("*.parquet") if not q.name.startswith("."))


def _read_shard(path: Path, fmt: ShardFormat = SCORES) -> tuple[pd.DataFrame, dict[str, str]]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise ScoresSchemaError(f"{path}: not a readable Parquet file: {e}") from e
    schema = pf.schema_arrow
    old = bool(fmt.added_columns) and schema.remove_metadata() == fmt.old_schema
    if schema.remove_metadata() != fmt.schema and not old:
        got = {f.name: str(f.type) for f in schema}
        want = {f.name: str(f.type) for f in fmt.schema}
        diff = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
        raise ScoresSchemaError(f"{path}: schema mismatch in columns {diff}: got "
                                f"{ {k: got.get(k) for k in diff} }, expected { {k: want.get(k) for k in diff} }")
    table = pf.read()
    meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items() if not k.startswith(b"ARROW")}
    df = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    if old:
        for f in fmt.schema:
            if f.name in fmt.added_columns:
                df[f.name] = pd.array([None] * len(df), dtype=pd.Int64Dtype() if pa.types.is_integer(f.type)
                                      else object)
        df = df.loc[:, list(fmt.columns)]
    return df, meta


def _dedupe(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    order = df.assign(_not_ok=(df["status"] != "ok").astype(int))
    order = order.sort_values(["clip_id", "_not_ok", "_shard", "_row"], ascending=[True, True, False, False],
                              kind="mergesort")
    kept = order.drop_duplicates("clip_id", keep="first")
    return kept.drop(columns=["_not_ok"]), len(df) - len(kept)


def load_scores(sources: str | os.PathLike | Iterable[str | os.PathLike], fmt: ShardFormat = SCORES) -> ScoreSet:
    """Read every shard of one or more scores folders (or files); dedupe; return rows sorted by clip id."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    shards = [s for src in sources for s in list_shards(src)]
    frames, metas = [], {}
    for i, s in enumerate(shards):
        df, meta = _read_shard(s, fmt)
        frames.append(df.assign(_shard=f"{s.name}\0{i:06d}", _row=np.arange(len(df))))
        for k, v in meta.items():
            metas.setdefault(k, set()).add(v)
    if not frames:
        empty = rows_to_table([], fmt).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
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


def read_scores(sources: str | os.PathLike | Iterable[str | os.PathLike], fmt: ShardFormat = SCORES) -> pd.DataFrame:
    """All de-duplicated rows (see `load_scores`); ``df.attrs`` holds ``duplicates``, ``shards`` and ``meta``."""
    s = load_scores(sources, fmt)
    df = s.frame
    df.attrs.update({"duplicates": s.duplicates, "shards": len(s.shards), "meta": s.meta})
    return df


def merge_scores(sources: Iterable[str | os.PathLike], out: str | os.PathLike,
                 fmt: ShardFormat = SCORES) -> ScoreSet:
    """Combine the shards of several folders into one file ``out/{fmt.prefix}-merged.parquet`` (atomic, replaced).

    `out` must not be one of the inputs (its old shards would be counted twice). Returns the merged set.
    """
    srcs = [Path(s) for s in sources]
    out = Path(out)
    if any(out.resolve() == s.resolve() for s in srcs):
        raise ScoresSchemaError(f"merge output {out} is also an input; choose a new folder")
    merged = load_scores(srcs, fmt)
    if not merged.shards:
        raise ScoresSchemaError(f"no {fmt.name} shards found in {', '.join(map(str, srcs))}")
    table = rows_to_table(merged.frame, fmt)
    meta = {k: v if isinstance(v, str) else ",".join(v) for k, v in merged.meta.items()}
    meta["merged_from"] = str(len(merged.shards))
    table = table.replace_schema_metadata(meta)
    path = out / f"{fmt.prefix}-merged.parquet"
    with atomic_open(path, "wb") as f:
        pq.write_table(table, f)
    log.info("merged %d shards (%d duplicates dropped) into %s", len(merged.shards), merged.duplicates, path)
    return merged


def done_clip_ids(directory: str | os.PathLike, retry_statuses: Iterable[str] = ("error",),
                  fmt: ShardFormat = SCORES) -> set[str]:
    """Clip ids already scored in `directory` (a resumed run skips them); `retry_statuses` are not done."""
    p = Path(directory)
    if not p.exists():
        return set()
    df = read_scores(p, fmt)
    retry = set(retry_statuses)
    return set(df.loc[~df["status"].isin(retry), "clip_id"])


# ------------------------------------------------------------------------------------------ resumable jobs
def shard_recipes(directory: str | os.PathLike, keys: Iterable[str]) -> dict[str, set[str]]:
    """The values of the metadata `keys` found in the footers of the shards already in `directory`."""
    found: dict[str, set[str]] = {}
    p = Path(directory)
    if not p.is_dir():
        return found
    keys = tuple(keys)
    for shard in list_shards(p):
        meta = pq.read_schema(shard).metadata or {}
        for k in keys:
            v = meta.get(k.encode())
            if v is not None:
                found.setdefault(k, set()).add(v.decode())
    return found


def recipe_conflicts(directory: str | os.PathLike, meta: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    """One message per metadata key whose value in `directory`'s shards differs from ``meta[key]`` (a job must not
    mix results of different recipes in one folder); empty when all agree."""
    return [f"{directory} holds results with {k}={sorted(values)}, this run has {k}={meta[k]}"
            for k, values in shard_recipes(directory, keys).items() if values != {str(meta[k])}]


def remove_stale_temps(directory: str | os.PathLike, prefix: str = "scores",
                       max_age: float = STALE_TEMP_SECONDS) -> None:
    """Delete temp files that killed shard writes left (``.{prefix}-*.parquet.*.tmp``, see `atomic_open`) once they
    are older than `max_age` seconds (younger ones may belong to a concurrent ``--shard`` run writing now)."""
    p = Path(directory)
    now = time.time()
    for t in p.glob(f".{prefix}-*.parquet.*.tmp") if p.is_dir() else ():
        with contextlib.suppress(FileNotFoundError):  # renamed into place by a concurrent writer meanwhile
            if now - t.stat().st_mtime > max_age:
                log.info("removing stale temp file %s", t)
                t.unlink()


def compact_shards(paths: Sequence[Path], directory: str | os.PathLike, meta: Mapping[str, Any],
                   fmt: ShardFormat = SCORES) -> Path:
    """Rewrite one run's shards as one shard (atomic), then delete them. A kill in between leaves identical
    duplicate rows, which `load_scores` resolves."""
    frame = pa.concat_tables([pq.read_table(p) for p in paths]).to_pandas(
        types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    combined = write_shard(frame, directory, meta=meta, fmt=fmt)
    for p in paths:
        p.unlink()
    log.info("compacted %d shards (%d rows) into %s", len(paths), len(frame), combined)
    return combined


def media_status(error: Exception) -> str:
    """The clip status of a media read failure: ``missing`` / ``truncated`` / ``no_video`` / ``no_audio`` for those
    `visualsound.media` errors, ``corrupt`` for any other `MediaError` (what `visualsound score` records)."""
    from visualsound.media.errors import (
        MissingFileError,
        NoAudioStreamError,
        NoVideoStreamError,
        TruncatedMediaError,
    )

    for cls, status in ((MissingFileError, "missing"), (TruncatedMediaError, "truncated"),
                        (NoVideoStreamError, "no_video"), (NoAudioStreamError, "no_audio")):
        if isinstance(error, cls):
            return status
    return "corrupt"
