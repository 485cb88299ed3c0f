"""The per-clip results table (issue 17): ``<result>.clips.parquet`` next to each result JSON.

One row per **item** -- a generated sample paired with its clip (vaura-paper ``<clip id>#<sample>``, av-benchmark
the generated file's stem), a ground-truth clip without a generated partner (``gt:<clip id>``, status
``missing``) or a generated file that pairs with no clip (status ``unpaired``). The columns are fixed by
``/work/helpers/PER_CLIP_SCHEMA.md`` (`BASE_FIELDS`, one float64 column per per-item metric of the protocol
(`ITEM_METRICS`), `DETAIL_FIELDS`); every file has every base and detail column (a detail column of the other
protocol is all null) and the columns of its own protocol's per-item metrics (null where the metric was not run
or left the item out). A per-item metric's set-level value is the mean of its column over the non-null rows
(float rounding aside: av-benchmark's KL is summed in float32, per-pair values are float64).

Key-value metadata: ``protocol``, ``dataset``, ``dataset_fingerprint``, ``model``, ``debug_weights``
(``"true"``/``"false"``), ``result_file``, plus ``per_clip_version`` and ``item_metrics`` (JSON list of the
metric columns). The result JSON records the file as ``"per_clip": {"file", "rows", "sha256"}`` (file name
relative to the JSON's folder); `load_for_result` checks the checksum, so a table that no longer belongs to its
result is refused rather than read.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from visualsound.errors import ToolkitError
from visualsound.utils.atomic import atomic_write_bytes

PER_CLIP_VERSION = 1
SUFFIX = ".clips.parquet"
STATUSES = ("scored", "excluded", "missing", "unpaired")

BASE_FIELDS: tuple[pa.Field, ...] = (
    pa.field("item", pa.string(), nullable=False),
    pa.field("clip_id", pa.string()),
    pa.field("sample", pa.int64()),
    pa.field("label", pa.string()),
    pa.field("generated_path", pa.string()),
    pa.field("gt_audio_path", pa.string()),
    pa.field("video_path", pa.string()),
    pa.field("start_sec", pa.float64()),
    pa.field("window_sec", pa.float64()),
    pa.field("status", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
)
#: per-item metrics of each protocol (metric keys of `benchmarks.results`), one float64 column each
ITEM_METRICS: dict[str, tuple[str, ...]] = {
    "vaura-paper": ("kld", "ib", "sync_ms"),
    "av-benchmark": ("KL-PANNS-softmax", "KL-PASST-softmax", "IB-Score", "DeSync"),
}
DETAIL_FIELDS: tuple[pa.Field, ...] = (
    pa.field("desync_first_sec", pa.float64()),  # av-benchmark: |offset| of the first 4.8 s window
    pa.field("desync_last_sec", pa.float64()),  # av-benchmark: |offset| of the last 4.8 s window
    pa.field("sync_offset_sec", pa.float64()),  # vaura-paper: the signed predicted offset
)
META_KEYS = ("protocol", "dataset", "dataset_fingerprint", "model", "debug_weights", "result_file")


class PerClipError(ToolkitError):
    """A per-clip table is missing, malformed or does not belong to its result."""


def item_metrics(protocol: str) -> tuple[str, ...]:
    """The per-item metric columns of `protocol`."""
    if protocol not in ITEM_METRICS:
        raise PerClipError(f"no per-clip schema for protocol {protocol!r} (known: {', '.join(ITEM_METRICS)})")
    return ITEM_METRICS[protocol]


def schema(protocol: str) -> pa.Schema:
    """The Arrow schema of `protocol`'s per-clip table (without metadata)."""
    metrics = tuple(pa.field(m, pa.float64()) for m in item_metrics(protocol))
    return pa.schema(BASE_FIELDS + metrics + DETAIL_FIELDS)


def path_for(result_path: str | os.PathLike) -> Path:
    """``<folder>/<name>.clips.parquet`` for the result ``<folder>/<name>.json``."""
    p = Path(result_path)
    return p.with_name(p.name[:-len(".json")] + SUFFIX if p.name.endswith(".json") else p.name + SUFFIX)


def unit_of(row: Mapping[str, Any]) -> str:
    """The bootstrap unit of a row: its clip id, or ``item:<item>`` for an item paired with no clip."""
    return row["clip_id"] if row.get("clip_id") is not None else f"item:{row['item']}"


def status_of(reason: str) -> str:
    """``scored`` for an empty reason, else ``excluded`` (for paired items)."""
    return "excluded" if reason else "scored"


def join_reasons(parts: Sequence[str]) -> str:
    return "; ".join(p for p in parts if p)


# ------------------------------------------------------------------------------------------------ validation
def validate_table(table: pa.Table, where: str = "per-clip table") -> pa.Table:
    """Return `table` if it has the schema of its metadata's protocol, unique items and valid statuses; raise
    `PerClipError` naming every problem otherwise."""
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    problems = [f"metadata lacks {k!r}" for k in META_KEYS if k not in meta]
    protocol = meta.get("protocol")
    if protocol not in ITEM_METRICS:
        raise PerClipError(f"{where}: unknown or missing protocol {protocol!r} in its metadata; "
                           + "; ".join(problems))
    want = schema(protocol)
    for f in want:
        if f.name not in table.column_names:
            problems.append(f"missing column {f.name!r}")
        elif table.schema.field(f.name).type != f.type:
            problems.append(f"column {f.name!r} is {table.schema.field(f.name).type}, expected {f.type}")
    if not problems:
        for name in ("item", "status", "reason"):
            if table.column(name).null_count:
                problems.append(f"column {name!r} has {table.column(name).null_count} nulls")
        items = table.column("item").to_pylist()
        if len(set(items)) != len(items):
            dup = sorted({i for i in items if items.count(i) > 1})[:5]
            problems.append(f"duplicate items, e.g. {dup}")
        statuses = table.column("status").to_pylist()
        bad = sorted({s for s in statuses if s not in STATUSES})
        if bad:
            problems.append(f"unknown statuses {bad} (known: {', '.join(STATUSES)})")
        reasons = table.column("reason").to_pylist()
        unexplained = [i for i, s, r in zip(items, statuses, reasons) if s != "scored" and not r]
        if unexplained:
            problems.append(f"{len(unexplained)} rows not scored without a reason, e.g. {unexplained[:3]}")
    if problems:
        raise PerClipError(f"{where}: invalid per-clip table: " + "; ".join(problems))
    return table


def build_table(rows: Sequence[Mapping[str, Any]], protocol: str, meta: Mapping[str, Any]) -> pa.Table:
    """Rows (dicts keyed by column; absent columns are null) -> a validated table with metadata."""
    sch = schema(protocol)
    unknown = sorted({k for r in rows for k in r} - set(sch.names))
    if unknown:
        raise PerClipError(f"per-clip rows have columns outside the {protocol} schema: {unknown}")
    metadata = {str(k): str(v) for k, v in meta.items()}
    metadata.update({"per_clip_version": str(PER_CLIP_VERSION), "item_metrics": json.dumps(item_metrics(protocol)),
                     "protocol": protocol})
    table = pa.Table.from_pylist([{n: r.get(n) for n in sch.names} for r in rows], schema=sch)
    return validate_table(table.replace_schema_metadata(metadata), f"new {protocol} per-clip table")


def write_table(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], protocol: str,
                meta: Mapping[str, Any]) -> dict[str, Any]:
    """Write the per-clip table atomically; return the result JSON's ``per_clip`` record (``file`` relative to
    the folder, ``rows``, ``sha256``)."""
    table = build_table(rows, protocol, meta)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return {"file": Path(path).name, "rows": table.num_rows, "sha256": hashlib.sha256(data).hexdigest()}


def read_table(path: str | os.PathLike) -> pa.Table:
    """Read and validate one per-clip table."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise PerClipError(f"{path}: cannot read the per-clip table ({e})") from e
    return validate_table(table, str(path))


def table_path(result: Mapping[str, Any]) -> Path:
    """The per-clip table of a loaded result (``_path`` set by `benchmarks.results.load_result`)."""
    rec = result.get("per_clip")
    where = result.get("_path", "result")
    if not rec:
        raise PerClipError(f"{where} has no per-clip table (results written before per-clip tables existed, or "
                           f"by another tool); re-run vbench evaluate to get one")
    if "_path" not in result:
        raise PerClipError("the result has no file path, so its per-clip table cannot be found")
    return Path(result["_path"]).parent / rec["file"]


def load_for_result(result: Mapping[str, Any]) -> pa.Table:
    """The validated per-clip table of `result`, checked against its recorded sha256 and metadata."""
    path = table_path(result)
    if not path.is_file():
        raise PerClipError(f"{result.get('_path')}: its per-clip table {path} is missing")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != result["per_clip"]["sha256"]:
        raise PerClipError(f"{path} changed since {result.get('_path')} was written (sha256 {digest[:12]} != "
                           f"{result['per_clip']['sha256'][:12]}); re-run vbench evaluate")
    table = read_table(path)
    meta = metadata(table)
    if meta["protocol"] != result["protocol"]["name"] or meta["dataset_fingerprint"] != result["dataset"][
            "fingerprint"]:
        raise PerClipError(f"{path} belongs to another result (protocol {meta['protocol']}, dataset fingerprint "
                           f"{meta['dataset_fingerprint'][:12]})")
    return table


def metadata(table: pa.Table) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}


def rows_of(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist()


# ------------------------------------------------------------------------------------------------ statistics
def item_statistics(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> dict[str, Any]:
    """`benchmarks.bootstrap.MeanStatistic` of each metric column with at least one value (rows grouped by
    `unit_of`)."""
    from benchmarks.bootstrap import MeanStatistic

    out = {}
    for m in metrics:
        used = [r for r in rows if r.get(m) is not None]
        if used:
            out[m] = MeanStatistic(m, [float(r[m]) for r in used], [unit_of(r) for r in used])
    return out
