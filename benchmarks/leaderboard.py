"""``vbench leaderboard``: every result of a results folder, one table per (dataset manifest, protocol).

Measured rows come from result JSON files and are grouped by the dataset's **identity** (its name and the
fingerprint of its clip list), so results on a 3-clip and an 8-clip manifest that share a name never share a
table. The built-in paper rows (`benchmarks.reported`) join only a table of their own dataset and protocol that has
measured rows on the **complete official set** (no clip missing at build or evaluation, and at least the official
number of clips where one is known); elsewhere a footnote says why they are hidden. Rows of a user's reported-rows
file join every table of their dataset and protocol. Rows made with debug weights say
``DEBUG WEIGHTS``. Columns follow the protocol's metrics (`benchmarks.results.PROTOCOL_METRICS`), shown in the
tables' conventional units (the column header says so, e.g. ``IB-score (x100)``); ``csv`` and ``json`` keep the
stored units. An undefined metric shows ``n/a`` with its note; a value that rounds to zero from below shows
``0.00`` with a footnote (the ground truth's KLD against itself is about -5e-4 from the KLD's 1e-6 epsilon, its
FAD / FD a tiny negative number from float rounding).
A measured value with a bootstrap interval (the result's ``metric_ci``, issue 17) shows as ``value ± half-width``
(half the interval's width, in the column's units; a footnote says so), ``csv`` adds ``<key>_lo`` / ``<key>_hi``
columns, ``json`` a ``metric_ci`` per row, and the HTML charts draw the interval as an error bar; reported rows
have none.
Formats: ``table`` (aligned text), ``markdown``, ``csv``, ``json`` and ``html`` (with one bar chart per metric, a
matplotlib PNG embedded as base64).
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
from benchmarks.results import PROTOCOL_METRICS, MetricSpec, load_results
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
    metrics: dict[str, float | None]
    debug_weights: bool = False
    samples_per_clip: int | None = None
    clips: int | None = None
    missing: int | None = None
    source: str = ""  # result file, or the paper
    variant: str = ""  # what sets this run apart from others of the same model (shown only when names clash)
    show_variant: bool = False
    notes: dict[str, str] = field(default_factory=dict)  # metric -> why it is undefined (null)
    ci: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric -> bootstrap interval (metric_ci)

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


def official_clip_count(dataset: dict[str, Any]) -> int | None:
    """The official list size of a result's dataset: recorded in the result, else the built-in's, else None."""
    if dataset.get("official_clips") is not None:
        return int(dataset["official_clips"])
    from benchmarks.datasets import BUILTINS

    spec = BUILTINS.get(dataset["name"])
    return spec.expected_clips if spec is not None else None


def incomplete_reason(result: dict[str, Any]) -> str:
    """Why a result is not on the complete official set ('' when it is): the condition for paper rows."""
    ds, counts = result["dataset"], result["counts"]
    official = official_clip_count(ds)
    evaluated = int(counts.get("clips", ds["num_clips"]))
    if counts.get("missing"):
        return f"{counts['missing']} clips had no usable output"
    if ds.get("missing_at_build"):
        return f"{ds['missing_at_build']} listed clips were not on disk when the manifest was built"
    if official is not None and evaluated < official:
        return f"{evaluated} of the official {official} clips"
    if official is None and "missing_at_build" not in ds:
        return "the result does not record whether its manifest is complete"
    return ""


@dataclass
class Table:
    """The rows of one (dataset manifest, protocol name, protocol version)."""

    dataset: str
    protocol: str
    version: int | None
    fingerprint: str | None = None
    rows: list[Row] = field(default_factory=list)
    num_clips: int | None = None
    show_identity: bool = False  # several manifests share the dataset name: say which one this is
    footnotes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        version = f" v{self.version}" if self.version is not None else ""
        ident = f" [manifest {self.fingerprint[:8]}, {self.num_clips} clips]" \
            if self.show_identity and self.fingerprint else ""
        return f"{self.dataset}{ident} -- protocol {self.protocol}{version}"

    def metrics(self) -> list[MetricSpec]:
        present = {k for r in self.rows for k in r.metrics}
        return [m for m in PROTOCOL_METRICS.get(self.protocol, ()) if m.key in present and m.shown]


def build_tables(results: Sequence[dict[str, Any]], reported: Sequence[ReportedRow] = (),
                 dataset: str | None = None) -> list[Table]:
    """Group measured results and reported rows into tables, sorted by dataset, protocol and manifest.

    A built-in paper row (``only_beside_measured``) joins the tables of its dataset and protocol name (every
    version) whose measured rows are on the complete official set (`incomplete_reason`; elsewhere a footnote says
    it is hidden and why); it never makes a table of its own. A user's reported row (``--reported`` file) joins
    every table of its dataset and protocol, or gets a table of its own.
    """
    tables: dict[tuple[str, str, int | None, str | None], Table] = {}
    incomplete: dict[tuple[str, str, int | None, str | None], str] = {}
    for r in results:
        ds, proto, ver = r["dataset"]["name"], r["protocol"]["name"], r["protocol"]["version"]
        if dataset is not None and ds != dataset:
            continue
        key = (ds, proto, ver, r["dataset"]["fingerprint"])
        table = tables.setdefault(key, Table(ds, proto, ver, r["dataset"]["fingerprint"],
                                             num_clips=r["dataset"]["num_clips"]))
        why = incomplete_reason(r)
        if why:
            incomplete.setdefault(key, why)
        table.rows.append(Row(model=r["model"]["name"], origin="measured", metrics=dict(r["metrics"]),
                              debug_weights=bool(r["debug_weights"]), samples_per_clip=r["model"]["samples_per_clip"],
                              clips=r["counts"]["clips"], missing=r["counts"]["missing"], source=r.get("_path", ""),
                              variant=_variant(r), notes=dict(r.get("metric_notes", {})),
                              ci=dict(r.get("metric_ci", {}))))
    hidden: dict[tuple, int] = {}
    for rep in reported:
        if dataset is not None and rep.dataset != dataset:
            continue
        same = [k for k in tables if k[0] == rep.dataset and k[1] == rep.protocol]
        if rep.only_beside_measured:  # built-in paper rows: beside measured rows on the complete official set
            measured = [k for k in same if any(r.origin == "measured" for r in tables[k].rows)]
            targets = [k for k in measured if k not in incomplete]
            for k in measured:
                if k in incomplete:
                    hidden[k] = hidden.get(k, 0) + 1
        else:  # a user's rows (--reported): wherever their dataset and protocol match, else a table of their own
            targets = same or [(rep.dataset, rep.protocol, None, None)]
            tables.setdefault(targets[0], Table(rep.dataset, rep.protocol, None))
        for k in targets:
            tables[k].rows.append(Row(model=rep.model, origin="reported", metrics=dict(rep.metrics),
                                      source=rep.source, samples_per_clip=rep.samples_per_clip))
    for k, n in hidden.items():
        tables[k].footnotes.append(f"{n} reported rows of {k[0]} are hidden: they are shown only next to the complete "
                                   f"official set, and this one is not ({incomplete[k]})")
    names = Counter((k[0], k[1]) for k in tables)
    for k, t in tables.items():
        t.show_identity = names[(k[0], k[1])] > 1
        counts = Counter((r.model, r.debug_weights) for r in t.rows if r.origin == "measured")
        for r in t.rows:  # runs of one model (other checkpoints, seeds, sample counts) get told apart
            r.show_variant = r.origin == "measured" and counts[(r.model, r.debug_weights)] > 1
        t.rows.sort(key=lambda r: (r.origin != "measured", r.debug_weights, r.model, r.variant))
    order = sorted(tables, key=lambda k: (k[0], k[1], -1 if k[2] is None else k[2], k[3] or ""))
    return [tables[k] for k in order]


# ------------------------------------------------------------------------------------------------ rendering
ROUNDED_ZERO_NOTE = ("0.00 marks a value that rounds to zero from below, as the ground truth scored against itself "
                     "gives: its KLD is about -5e-4 by construction (the KLD adds 1e-6 to the generated "
                     "probabilities inside the logarithm, so KL(p ‖ p) = -Σ p log(1 + 1e-6 / p), about -1e-6 per "
                     "class: -527e-6 over PaSST's 527 classes); its FAD / FD is float rounding of an exact zero (up "
                     "to about 1e-4 with fewer frames than dimensions)")


def _fmt(value: float | None, spec: MetricSpec) -> str:
    if value is None:
        return "n/a"
    text = f"{spec.display(value):.{spec.digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # -0.00 -> 0.00 (see the footnote)


def _fmt_ci(row: Row, spec: MetricSpec) -> str:
    """``value ± half-width`` where the row has an interval for the metric, else the plain value."""
    value, ci = row.metrics.get(spec.key), row.ci.get(spec.key)
    text = _fmt(value, spec)
    if value is None or ci is None:
        return text
    return f"{text} ± {abs(spec.display((ci['hi'] - ci['lo']) / 2)):.{spec.digits}f}"


def _ci_note(table: Table) -> str:
    """The footnote explaining ± (resample counts and methods of the table's intervals)."""
    cis = [ci for r in table.rows for k, ci in r.ci.items() if any(k == m.key for m in table.metrics())]
    levels = sorted({f"{100 * c['level']:g} %" for c in cis})
    counts = sorted({int(c["resamples"]) for c in cis})
    return (f"± is half the width of the {'/'.join(levels)} bootstrap interval over clips ("
            f"{'/'.join(str(n) for n in counts)} resamples; percentile for per-item metrics, normal -- centred on the "
            f"value -- for FAD / FD / IS); csv and json give each interval's lo and hi")


def _header(spec: MetricSpec) -> str:
    return f"{spec.label} {'↓' if spec.lower_is_better else '↑'}"


def _cells(table: Table, row: Row) -> list[str]:
    counts = "-" if row.clips is None else f"{row.clips}" + (f" ({row.missing} missing)" if row.missing else "")
    return ([row.label, row.origin, "-" if row.samples_per_clip is None else str(row.samples_per_clip), counts]
            + [_fmt_ci(row, m) if m.key in row.metrics else "-" for m in table.metrics()])


def _columns(table: Table) -> list[str]:
    return ["model", "origin", "samples/clip", "clips"] + [_header(m) for m in table.metrics()]


def _footnotes(table: Table) -> list[str]:
    """Notes under a table: hidden reported rows, undefined metrics, values shown as 0.00 from below."""
    notes = list(table.footnotes)
    for r in table.rows:
        notes += [f"{r.label}: {key} n/a: {why}" for key, why in r.notes.items()]
    specs = table.metrics()
    if any(v is not None and v < 0 and _fmt(v, m) == f"{0:.{m.digits}f}"
           for r in table.rows for m in specs for v in [r.metrics.get(m.key)]):
        notes.append(ROUNDED_ZERO_NOTE)
    if any(r.ci.get(m.key) and r.metrics.get(m.key) is not None for r in table.rows for m in specs):
        notes.append(_ci_note(table))
    return notes


def render_text(tables: Sequence[Table]) -> str:
    out = []
    for t in tables:
        cols, rows = _columns(t), [_cells(t, r) for r in t.rows]
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
        out.append(t.title)
        out.append("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
        out.append("  ".join("-" * w for w in widths))
        out.extend("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)
        out.extend(f"  note: {n}" for n in _footnotes(t))
        out.append("")
    return "\n".join(out)


def render_markdown(tables: Sequence[Table]) -> str:
    out = []
    for t in tables:
        cols = _columns(t)
        out += [f"### {t.title}", "", "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(t, r)) + " |" for r in t.rows]
        out += [""] + [f"- {n}" for n in _footnotes(t)] if _footnotes(t) else []
        out.append("")
    return "\n".join(out)


def _all_metric_keys(tables: Sequence[Table]) -> list[str]:
    keys: list[str] = []
    for t in tables:
        keys += [m.key for m in PROTOCOL_METRICS.get(t.protocol, ()) if m.key not in keys]
    return keys


def render_csv(tables: Sequence[Table]) -> str:
    """One line per row; metric columns are every protocol's keys in stored units (empty where not measured), then
    ``<key>_lo`` / ``<key>_hi`` of each bootstrap interval (empty without one)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    keys = _all_metric_keys(tables)
    writer.writerow(["dataset", "dataset_fingerprint", "protocol", "protocol_version", "model", "origin",
                     "debug_weights", "samples_per_clip", "clips", "missing", *keys,
                     *(f"{k}_{end}" for k in keys for end in ("lo", "hi")), "source"])
    for t in tables:
        for r in t.rows:
            writer.writerow([t.dataset, t.fingerprint or "", t.protocol, "" if t.version is None else t.version,
                             r.model, r.origin, r.debug_weights,
                             r.samples_per_clip if r.samples_per_clip is not None else "",
                             r.clips if r.clips is not None else "", r.missing if r.missing is not None else "",
                             *("" if r.metrics.get(k) is None else r.metrics[k] for k in keys),
                             *(r.ci[k][end] if k in r.ci else "" for k in keys for end in ("lo", "hi")), r.source])
    return buf.getvalue()


def render_json(tables: Sequence[Table]) -> str:
    return json.dumps([{"dataset": t.dataset, "dataset_fingerprint": t.fingerprint, "protocol": t.protocol,
                        "protocol_version": t.version, "notes": _footnotes(t),
                        "rows": [{"model": r.model, "origin": r.origin, "debug_weights": r.debug_weights,
                                  "samples_per_clip": r.samples_per_clip, "clips": r.clips, "missing": r.missing,
                                  "metrics": r.metrics, "metric_ci": r.ci, "metric_notes": r.notes,
                                  "source": r.source}
                                 for r in t.rows]}
                       for t in tables], indent=2)


def metric_chart_png(table: Table, spec: MetricSpec) -> bytes:
    """A horizontal bar chart (PNG bytes) of one metric over the table's rows; reported bars are hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table.rows if r.metrics.get(spec.key) is not None]
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(rows) + 1.2), dpi=80)
    try:
        values = [spec.display(r.metrics[spec.key]) for r in rows]
        err = [[max(0.0, v - spec.display(r.ci[spec.key]["lo"])) if spec.key in r.ci else 0.0
                for v, r in zip(values, rows)],
               [max(0.0, spec.display(r.ci[spec.key]["hi"]) - v) if spec.key in r.ci else 0.0
                for v, r in zip(values, rows)]]
        bars = ax.barh(range(len(rows)), values, color=["#bbbbbb" if r.origin == "reported" else "#3b75af"
                                                        for r in rows],
                       xerr=err if any(spec.key in r.ci for r in rows) else None, capsize=3)
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


def html_table(table: Table) -> str:
    """One table as an HTML fragment (``<h2>`` title, ``<table class='leaderboard'>``, footnotes), without charts:
    `render_html` adds its bar charts; `benchmarks.report` puts it in the listening report."""
    t = table
    parts = [f"<h2>{html.escape(t.title)}</h2><table class='leaderboard'><tr>"
             + "".join(f"<th>{html.escape(c)}</th>" for c in _columns(t)) + "</tr>"]
    for r in t.rows:
        cls = " ".join(c for c, on in (("reported", r.origin == "reported"), ("debug", r.debug_weights)) if on)
        parts.append(f"<tr class='{cls}'>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(t, r))
                     + "</tr>")
    parts.append("</table>")
    notes = _footnotes(t)
    if notes:
        parts.append("<ul class='notes'>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    return "\n".join(parts)


DEBUG_NOTE = f"{DEBUG_LABEL}: rows marked so were made with seeded random models; their numbers are meaningless."


def render_html(tables: Sequence[Table]) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>vbench leaderboard</title>",
             "<style>body{font-family:sans-serif} table{border-collapse:collapse;margin-bottom:1em}"
             "td,th{border:1px solid #ccc;padding:3px 8px} tr.reported{color:#555;font-style:italic}"
             "tr.debug td:first-child{color:#b00}</style></head><body><h1>vbench leaderboard</h1>"]
    if any(r.debug_weights for t in tables for r in t.rows):
        parts.append(f"<p><strong>{DEBUG_LABEL}</strong>{html.escape(DEBUG_NOTE[len(DEBUG_LABEL):])}</p>")
    for t in tables:
        parts.append(html_table(t))
        for spec in (m for m in t.metrics() if any(r.metrics.get(m.key) is not None for r in t.rows)):
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
