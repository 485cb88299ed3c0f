"""``vbench leaderboard``: every result of a results folder, one table per (dataset, protocol).

Measured rows come from result JSON files; reported rows (`benchmarks.reported`) are placed only in the table of
their own protocol and dataset and are marked ``reported``. Rows made with debug weights say ``DEBUG WEIGHTS``.
Formats: ``table`` (aligned text), ``markdown``, ``csv``, ``json`` and ``html`` (with one bar chart per metric,
a matplotlib PNG embedded as base64).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.reported import ReportedRow
from benchmarks.results import METRICS, MetricSpec, load_results
from visualsound.errors import ToolkitError

FORMATS = ("table", "markdown", "csv", "json", "html")
DEBUG_LABEL = "DEBUG WEIGHTS"


class LeaderboardError(ToolkitError):
    """Unknown format, or nothing to show."""


@dataclass
class Row:
    """One leaderboard row."""

    model: str
    origin: str  # "measured" or "reported"
    metrics: dict[str, float]
    debug_weights: bool = False
    samples_per_clip: int | None = None
    clips: int | None = None
    missing: int | None = None
    source: str = ""  # result file, or the paper
    variant: str = ""  # what sets this run apart from others of the same model (shown only when names clash)
    show_variant: bool = False

    @property
    def label(self) -> str:
        name = f"{self.model} ({self.variant})" if self.show_variant and self.variant else self.model
        tags = [t for t, on in ((DEBUG_LABEL, self.debug_weights), ("reported", self.origin == "reported")) if on]
        return f"{name} [{', '.join(tags)}]" if tags else name


def _variant(result: dict[str, Any]) -> str:
    """``ckpt <sha8>, seed <s>, n=<samples>`` of a result: what tells runs of one model apart."""
    model = result["model"]
    sha = model.get("checkpoint_sha256") or ""
    parts = [f"ckpt {sha[:8]}"] if sha and not sha.startswith("debug:") else []
    parts += [f"seed {model['seeds'][0]}"] if model.get("seeds") else []
    parts.append(f"n={model['samples_per_clip']}")
    return ", ".join(parts)


@dataclass
class Table:
    """The rows of one (dataset, protocol name, protocol version)."""

    dataset: str
    protocol: str
    version: int | None
    rows: list[Row] = field(default_factory=list)

    @property
    def title(self) -> str:
        version = f" v{self.version}" if self.version is not None else ""
        return f"{self.dataset} -- protocol {self.protocol}{version}"

    def metrics(self) -> list[MetricSpec]:
        present = {k for r in self.rows for k in r.metrics}
        return [m for m in METRICS if m.key in present]


def build_tables(results: Sequence[dict[str, Any]], reported: Sequence[ReportedRow] = (),
                 dataset: str | None = None) -> list[Table]:
    """Group measured results and reported rows into tables, sorted by dataset then protocol.

    A reported row joins the tables of its dataset whose protocol name equals its own (every version); when no
    measured table of that protocol exists for the dataset, it gets a table of its own, unless it is marked
    ``only_beside_measured`` (the built-in paper rows: context for measured numbers, not tables of their own).
    """
    tables: dict[tuple[str, str, int | None], Table] = {}
    for r in results:
        ds, proto, ver = r["dataset"]["name"], r["protocol"]["name"], r["protocol"]["version"]
        if dataset is not None and ds != dataset:
            continue
        table = tables.setdefault((ds, proto, ver), Table(ds, proto, ver))
        table.rows.append(Row(model=r["model"]["name"], origin="measured", metrics=dict(r["metrics"]),
                              debug_weights=bool(r["debug_weights"]), samples_per_clip=r["model"]["samples_per_clip"],
                              clips=r["counts"]["clips"], missing=r["counts"]["missing"], source=r.get("_path", ""),
                              variant=_variant(r)))
    for rep in reported:
        if dataset is not None and rep.dataset != dataset:
            continue
        targets = [t for (ds, proto, _), t in tables.items() if ds == rep.dataset and proto == rep.protocol]
        if rep.only_beside_measured:
            targets = [t for t in targets if any(r.origin == "measured" for r in t.rows)]
            if not targets:
                continue
        if not targets:
            targets = [tables.setdefault((rep.dataset, rep.protocol, None), Table(rep.dataset, rep.protocol, None))]
        for t in targets:
            t.rows.append(Row(model=rep.model, origin="reported", metrics=dict(rep.metrics), source=rep.source))
    for t in tables.values():
        names = Counter((r.model, r.debug_weights) for r in t.rows if r.origin == "measured")
        for r in t.rows:  # runs of one model (other checkpoints, seeds, sample counts) get told apart
            r.show_variant = r.origin == "measured" and names[(r.model, r.debug_weights)] > 1
        t.rows.sort(key=lambda r: (r.origin != "measured", r.debug_weights, r.model, r.variant))
    return [tables[k] for k in sorted(tables, key=lambda k: (k[0], k[1], -1 if k[2] is None else k[2]))]


# ------------------------------------------------------------------------------------------------ rendering
def _fmt(value: float | None, spec: MetricSpec) -> str:
    return "-" if value is None else f"{value:.{spec.digits}f}"


def _header(spec: MetricSpec) -> str:
    return f"{spec.label} {'↓' if spec.lower_is_better else '↑'}"


def _cells(table: Table, row: Row) -> list[str]:
    counts = "-" if row.clips is None else f"{row.clips}" + (f" ({row.missing} missing)" if row.missing else "")
    return ([row.label, row.origin, "-" if row.samples_per_clip is None else str(row.samples_per_clip), counts]
            + [_fmt(row.metrics.get(m.key), m) for m in table.metrics()])


def _columns(table: Table) -> list[str]:
    return ["model", "origin", "samples/clip", "clips"] + [_header(m) for m in table.metrics()]


def render_text(tables: Sequence[Table]) -> str:
    out = []
    for t in tables:
        cols, rows = _columns(t), [_cells(t, r) for r in t.rows]
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
        out.append(t.title)
        out.append("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
        out.append("  ".join("-" * w for w in widths))
        out.extend("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)
        out.append("")
    return "\n".join(out)


def render_markdown(tables: Sequence[Table]) -> str:
    out = []
    for t in tables:
        cols = _columns(t)
        out += [f"### {t.title}", "", "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(t, r)) + " |" for r in t.rows]
        out.append("")
    return "\n".join(out)


def render_csv(tables: Sequence[Table]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["dataset", "protocol", "protocol_version", "model", "origin", "debug_weights",
                     "samples_per_clip", "clips", "missing", *(m.key for m in METRICS), "source"])
    for t in tables:
        for r in t.rows:
            writer.writerow([t.dataset, t.protocol, "" if t.version is None else t.version, r.model, r.origin,
                             r.debug_weights, r.samples_per_clip if r.samples_per_clip is not None else "",
                             r.clips if r.clips is not None else "", r.missing if r.missing is not None else "",
                             *(r.metrics.get(m.key, "") for m in METRICS), r.source])
    return buf.getvalue()


def render_json(tables: Sequence[Table]) -> str:
    return json.dumps([{"dataset": t.dataset, "protocol": t.protocol, "protocol_version": t.version,
                        "rows": [{"model": r.model, "origin": r.origin, "debug_weights": r.debug_weights,
                                  "samples_per_clip": r.samples_per_clip, "clips": r.clips, "missing": r.missing,
                                  "metrics": r.metrics, "source": r.source} for r in t.rows]}
                       for t in tables], indent=2)


def metric_chart_png(table: Table, spec: MetricSpec) -> bytes:
    """A horizontal bar chart (PNG bytes) of one metric over the table's rows; reported bars are hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table.rows if spec.key in r.metrics]
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(rows) + 1.2), dpi=80)
    try:
        values = [r.metrics[spec.key] for r in rows]
        bars = ax.barh(range(len(rows)), values, color=["#bbbbbb" if r.origin == "reported" else "#3b75af"
                                                        for r in rows])
        for bar, r in zip(bars, rows):
            if r.origin == "reported":
                bar.set_hatch("//")
        ax.set_yticks(range(len(rows)), [r.label for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{table.dataset}: {_header(spec)}", fontsize=9)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return buf.getvalue()


def render_html(tables: Sequence[Table]) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>vbench leaderboard</title>",
             "<style>body{font-family:sans-serif} table{border-collapse:collapse;margin-bottom:1em}"
             "td,th{border:1px solid #ccc;padding:3px 8px} tr.reported{color:#555;font-style:italic}"
             "tr.debug td:first-child{color:#b00}</style></head><body><h1>vbench leaderboard</h1>"]
    if any(r.debug_weights for t in tables for r in t.rows):
        parts.append(f"<p><strong>{DEBUG_LABEL}</strong>: rows marked so were made with seeded random models; "
                     "their numbers are meaningless.</p>")
    for t in tables:
        parts.append(f"<h2>{html.escape(t.title)}</h2><table><tr>"
                     + "".join(f"<th>{html.escape(c)}</th>" for c in _columns(t)) + "</tr>")
        for r in t.rows:
            cls = " ".join(c for c, on in (("reported", r.origin == "reported"), ("debug", r.debug_weights)) if on)
            parts.append(f"<tr class='{cls}'>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(t, r))
                         + "</tr>")
        parts.append("</table>")
        for spec in t.metrics():
            png = base64.b64encode(metric_chart_png(t, spec)).decode("ascii")
            parts.append(f"<img alt='{html.escape(t.dataset)} {html.escape(spec.label)}' "
                         f"src='data:image/png;base64,{png}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


RENDERERS = {"table": render_text, "markdown": render_markdown, "csv": render_csv, "json": render_json,
             "html": render_html}


def leaderboard(results_dir: str | os.PathLike, fmt: str = "table", dataset: str | None = None,
                reported: Sequence[ReportedRow] = (), allow_no_results: bool = False) -> str:
    """Render every result under `results_dir` (plus `reported` rows) in format `fmt`.

    A missing `results_dir` is an error unless `allow_no_results` (then only reported rows can make tables)."""
    if fmt not in RENDERERS:
        raise LeaderboardError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    missing = allow_no_results and not Path(results_dir).is_dir()
    tables = build_tables([] if missing else load_results(results_dir), reported, dataset)
    if not tables:
        where = f" for dataset {dataset!r}" if dataset else ""
        raise LeaderboardError(f"no results in {results_dir}{where}")
    return RENDERERS[fmt](tables)
