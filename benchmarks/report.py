"""``vbench report``: the listening report of result files, one self-contained folder that opens from disk.

``vbench report RESULTS... --out report/`` reads result JSONs (files or folders) and the per-clip table each one
records under ``per_clip`` (``<name>.clips.parquet``, one row per item; `benchmarks.per_clip`, checked by
`read_per_clip`) and writes ``report/index.html`` with, per (dataset manifest, protocol) -- the grouping of
`benchmarks.leaderboard.build_tables`, whose HTML tables it reuses:

* the **leaderboard** table of the given results (and their 95 % intervals where a result has ``metric_ci``);
* one **distribution plot** per per-item metric (``plots/*.png``, every model overlaid; all items, not only the
  gallery's clips; drawn on a thread while the media are made, and named by a digest of what they show, so a
  re-run on the same results draws none);
* the **gallery**: one row per selected clip with the ground-truth video, each model's generated audio muxed
  under the same video (or an ``.m4a`` for audio-only clips), a spectrogram per track and the clip's per-item
  metrics per model. Click a column header to sort (metrics: worst first, again: best first); a text filter
  (clip id, class, selection, status) and one checkbox per model (hides its columns) filter it.

**Which item plays.** A clip with several samples per model shows sample ``--sample`` (default 0) of each model,
and its metric cells are that item's values, so what is heard is what is scored. **Selection** (`parse_select`,
repeatable, their union in order): ``ids:a,b``; ``worst:METRIC:N[:MODEL]`` / ``best:METRIC:N[:MODEL]`` (the N
clips with the worst / best value of a per-item metric: the mean over the models' played items, or one model's);
``random:N`` (seeded by ``--seed``). Without ``--select`` a group of at most 50 clips shows them all; a larger
one shows the worst and best few per metric plus a seeded random sample, 50 clips in all.

Debug-weights results are labelled ``DEBUG WEIGHTS`` in the page title, in a banner at the top and in every model
label. Media are referenced, never inlined (``media/<clip>/``; see `benchmarks.report_media`): each file is
encoded once per (clip, source) and a re-run reuses it; files of an earlier build that this one does not reference
are removed. With a media store (``--media-cache``, the CLI's default) a file made for any earlier report is
hard-linked in instead of being encoded again. The page needs no server and no network (inline CSS and JS, no
external fonts or scripts). ``report.json`` records what was built (and marks the folder as a report: any other
non-empty ``--out`` is refused).
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks import per_clip
from benchmarks.leaderboard import DEBUG_LABEL, DEBUG_NOTE, Table, build_tables, html_table
from benchmarks.report_media import ClipEncoder, ClipSources, MediaSettings, MediaStore, TrackMedia, encode_clips
from benchmarks.results import MetricSpec, load_result, load_results, metric_specs
from visualsound.errors import ToolkitError
from visualsound.utils.atomic import atomic_write_json, atomic_write_text
from visualsound.utils.threads import available_cores

log = logging.getLogger(__name__)

REPORT_FORMAT = "vbench-report"
REPORT_VERSION = 1
DEFAULT_MAX_CLIPS = 50


class ReportError(ToolkitError):
    """A result or per-clip table the report cannot use, a bad selection, or an output folder it must not touch."""


# ------------------------------------------------------------------------------------------------ reading
def read_per_clip(result: dict[str, Any]) -> pd.DataFrame:
    """The per-clip table of `result` (loaded by `benchmarks.results.load_result`), checked for the report.

    `benchmarks.per_clip.load_for_result` checks that the file exists, matches the result's sha256, has the
    schema of its protocol (columns and types), unique items, known statuses and a reason for every row not
    scored, and that its protocol and manifest fingerprint are the result's (`PerClipError`). The report further
    checks (`ReportError`, naming the file and every problem) that the metadata names the result's dataset, model,
    debug flag and file, that the row count is the recorded one, that a clip's sample appears once and that
    metric values are finite or null. Strings come back as Python ``str`` or ``None``, numbers as float64 with
    NaN for null (``sample``: Int64)."""
    import pyarrow as pa

    where = result.get("_path", "result")
    table = per_clip.load_for_result(result)
    path = per_clip.table_path(result)
    meta = per_clip.metadata(table)
    expected = {"dataset": result["dataset"]["name"], "model": result["model"]["name"],
                "debug_weights": "true" if result["debug_weights"] else "false", "result_file": Path(where).name}
    problems = [f"metadata {key}={meta.get(key)!r} but the result says {value!r}"
                for key, value in expected.items() if meta.get(key) != value]
    if result["per_clip"]["rows"] != table.num_rows:
        problems.append(f"{table.num_rows} rows but the result records {result['per_clip']['rows']}")
    sch = per_clip.schema(result["protocol"]["name"])
    df = pd.DataFrame({f.name: (table.column(f.name).to_numpy(zero_copy_only=False).astype(np.float64)
                                if pa.types.is_float64(f.type) else
                                pd.array(table.column(f.name).to_pylist(), dtype="Int64")
                                if pa.types.is_int64(f.type) else table.column(f.name).to_pylist())
                       for f in sch})
    paired = df[df["clip_id"].notna()]
    dup = paired[paired.duplicated(["clip_id", "sample"])]
    if len(dup):
        problems.append(f"{len(dup)} repeated (clip_id, sample) pairs, e.g. "
                        f"{list(zip(dup['clip_id'][:3], dup['sample'][:3]))}")
    problems += [f"column {f.name!r} holds inf" for f in sch
                 if pa.types.is_float64(f.type) and np.isinf(df[f.name].to_numpy()).any()]
    if problems:
        raise ReportError(f"{path}: not a valid per-clip table of {where}: " + "; ".join(problems))
    return df


# ------------------------------------------------------------------------------------------------ loading
@dataclass
class ModelRun:
    """One result with its per-clip table: `key` names its media and HTML columns (``m0``, ``m1``, ...), `label`
    is its leaderboard label (with ``[DEBUG WEIGHTS]``)."""

    result: dict[str, Any]
    rows: pd.DataFrame
    key: str
    label: str
    name: str = ""  # the label without tags (column sub-headers)

    @property
    def path(self) -> str:
        return self.result["_path"]

    @property
    def debug(self) -> bool:
        return bool(self.result["debug_weights"])


@dataclass
class Group:
    """One (dataset manifest, protocol) of the report: its leaderboard table and its runs."""

    index: int
    table: Table
    runs: list[ModelRun]
    metrics: list[MetricSpec]       # the protocol's per-item metrics, in table order
    clips: pd.DataFrame             # index clip_id: label, video_path, gt_audio_path, start_sec, window_sec
    notes: list[str] = field(default_factory=list)

    @property
    def protocol(self) -> str:
        return self.table.protocol

    @property
    def debug(self) -> bool:
        return any(r.debug for r in self.runs)

    def played(self, run: ModelRun, sample: int) -> pd.DataFrame:
        """`run`'s items of sample `sample`, indexed by clip id."""
        rows = run.rows
        rows = rows[rows["clip_id"].notna() & (rows["sample"] == sample)]
        return rows.set_index("clip_id")


def load_inputs(paths: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """The results named by `paths` (result JSON files, or folders searched recursively), each once."""
    results, seen = [], set()
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = load_results(p)
            if not found:
                raise ReportError(f"{p}: no result files in this folder")
        elif p.is_file():
            found = [load_result(p)]
        else:
            raise ReportError(f"{p}: no such result file or folder")
        for r in found:
            key = Path(r["_path"]).resolve()
            if key not in seen:
                seen.add(key)
                results.append(r)
    if not results:
        raise ReportError("no results given")
    return results


def build_groups(results: Sequence[dict[str, Any]]) -> list[Group]:
    """Read every result's per-clip table and group the runs as the leaderboard groups its rows."""
    tables = build_tables(results)
    by_path = {r["_path"]: r for r in results}
    groups, counter = [], 0
    for gi, t in enumerate(tables):
        runs = []
        for row in t.rows:
            r = by_path[row.source]
            name = f"{row.model} ({row.variant})" if row.show_variant and row.variant else row.model
            runs.append(ModelRun(r, read_per_clip(r), f"m{counter}", row.label, name))
            counter += 1
        keys = per_clip.item_metrics(t.protocol)
        metrics = [m for m in metric_specs(t.protocol) if m.key in keys]
        frames = [run.rows[run.rows["clip_id"].notna()] for run in runs]
        info = pd.concat([f[["clip_id", "label", "video_path", "gt_audio_path", "start_sec", "window_sec"]]
                          for f in frames]).drop_duplicates("clip_id").set_index("clip_id").sort_index()
        group = Group(gi, t, runs, metrics, info)
        for run in runs:
            n = int((run.rows["status"] == "unpaired").sum())
            if n:
                group.notes.append(f"{run.label}: {n} generated files pair with no clip (status 'unpaired') and "
                                   "are not in the gallery")
        groups.append(group)
    return groups


# ------------------------------------------------------------------------------------------------ selection
@dataclass(frozen=True)
class Selector:
    """One ``--select`` term (see the module docstring)."""

    kind: str                      # "ids", "worst", "best", "random"
    text: str
    ids: tuple[str, ...] = ()
    metric: str = ""
    n: int = 0
    model: str | None = None


def parse_select(text: str) -> Selector:
    """Parse ``ids:a,b`` / ``worst:METRIC:N[:MODEL]`` / ``best:METRIC:N[:MODEL]`` / ``random:N``."""
    kind, _, rest = text.partition(":")
    usage = "use ids:A,B | worst:METRIC:N[:MODEL] | best:METRIC:N[:MODEL] | random:N"

    def count(s: str) -> int:
        try:
            n = int(s)
        except ValueError:
            raise ReportError(f"--select {text!r}: {s!r} is not a number of clips; {usage}") from None
        if n < 1:
            raise ReportError(f"--select {text!r}: the number of clips must be >= 1")
        return n

    if kind == "ids":
        ids = tuple(i.strip() for i in rest.split(",") if i.strip())
        if not ids:
            raise ReportError(f"--select {text!r}: no clip ids; {usage}")
        return Selector("ids", text, ids=ids)
    if kind in ("worst", "best"):
        parts = rest.split(":", 2)
        if len(parts) < 2 or not parts[0]:
            raise ReportError(f"--select {text!r}: {usage}")
        return Selector(kind, text, metric=parts[0], n=count(parts[1]),
                        model=parts[2] if len(parts) == 3 and parts[2] else None)
    if kind == "random":
        return Selector("random", text, n=count(rest))
    raise ReportError(f"--select {text!r}: unknown kind {kind!r}; {usage}")


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def resolve_metric(query: str, group: Group) -> MetricSpec | None:
    """The per-item metric of `group` that `query` names (its key or label, case and punctuation ignored, or a
    unique prefix of one: ``ib`` -> ``IB-Score``); None when the protocol has none; `ReportError` when ambiguous
    or when it names a set-level metric."""
    q = _norm(query)
    names = {m.key: {_norm(m.key), _norm(m.label.split(" (")[0])} for m in group.metrics}
    exact = [m for m in group.metrics if q in names[m.key]]
    if exact:
        return exact[0]
    prefix = [m for m in group.metrics if any(n.startswith(q) for n in names[m.key])]
    if len(prefix) > 1:
        raise ReportError(f"--select metric {query!r} is ambiguous in {group.table.title}: "
                          f"{', '.join(m.key for m in prefix)}")
    if prefix:
        return prefix[0]
    if any(q in (_norm(m.key), _norm(m.label.split(' (')[0])) for m in metric_specs(group.protocol)):
        raise ReportError(f"--select metric {query!r} is a set-level metric of {group.protocol} (no per-clip value); "
                          f"per-clip metrics: {', '.join(m.key for m in group.metrics)}")
    return None


def _runs_named(group: Group, model: str) -> list[ModelRun]:
    return [r for r in group.runs if model in (r.result["model"]["name"], r.label)]


def clip_scores(group: Group, spec: MetricSpec, sample: int, model: str | None = None) -> pd.Series:
    """Per clip id: the metric's value (stored units) of the played item, averaged over the models (or of
    `model` only); clips without a value are left out."""
    runs = _runs_named(group, model) if model else group.runs
    cols = [group.played(r, sample)[spec.key] for r in runs]
    if not cols:
        return pd.Series(dtype=float)
    return pd.concat(cols, axis=1).mean(axis=1, skipna=True).dropna()


def select_clips(group: Group, selectors: Sequence[Selector], seed: int = 0, sample: int = 0,
                 max_default: int = DEFAULT_MAX_CLIPS) -> list[tuple[str, list[str]]]:
    """The gallery's clips of `group`, in order, each with why it was selected (``worst DeSync #1``, ...).

    Terms that do not apply to this group (a metric its protocol lacks, a model it does not have, ids of other
    datasets) select nothing here and leave a note in ``group.notes``; `select` checks that every term applied
    somewhere."""
    chosen: dict[str, list[str]] = {}

    def add(clip: str, why: str) -> None:
        chosen.setdefault(clip, []).append(why)

    all_ids = sorted(group.clips.index)
    if not selectors:
        if len(all_ids) <= max_default:
            for c in all_ids:
                add(c, "all")
            return list(chosen.items())
        per = max(1, max_default // (4 * max(1, len(group.metrics))))
        selectors = [Selector(k, f"{k}:{m.key}:{per}", metric=m.key, n=per) for m in group.metrics
                     for k in ("worst", "best")]
        for s in selectors:
            _apply(group, s, seed, sample, add)
        rest = [c for c in all_ids if c not in chosen]
        rng = np.random.default_rng(seed)
        for c in rng.permutation(rest)[:max(0, max_default - len(chosen))]:
            add(str(c), "random")
        return list(chosen.items())
    for s in selectors:
        _apply(group, s, seed, sample, add)
    return list(chosen.items())


def _apply(group: Group, s: Selector, seed: int, sample: int, add: Callable[[str, str], None]) -> bool:
    """Add the clips `s` selects in `group`; False (with a note) when it does not apply here."""
    if s.kind == "ids":
        found = [i for i in s.ids if i in group.clips.index]
        for i in found:
            add(i, "ids")
        return bool(found)
    if s.kind == "random":
        ids = sorted(group.clips.index)
        for c in np.random.default_rng(seed).permutation(ids)[:s.n]:
            add(str(c), "random")
        return True
    spec = resolve_metric(s.metric, group)
    if spec is None:
        group.notes.append(f"--select {s.text}: {group.protocol} has no per-clip metric {s.metric!r}")
        return False
    if s.model and not _runs_named(group, s.model):
        group.notes.append(f"--select {s.text}: no model {s.model!r} here")
        return False
    scores = clip_scores(group, spec, sample, s.model)
    worst_high = spec.lower_is_better == (s.kind == "worst")
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1] if worst_high else kv[1], kv[0]))
    for rank, (clip, _) in enumerate(ranked[:s.n], 1):
        add(clip, f"{s.kind} {spec.label.split(' (')[0]}{' of ' + s.model if s.model else ''} #{rank}")
    return True


def select(groups: Sequence[Group], selectors: Sequence[Selector], seed: int = 0, sample: int = 0,
           max_default: int = DEFAULT_MAX_CLIPS) -> list[list[tuple[str, list[str]]]]:
    """`select_clips` for every group; `ReportError` when a term selects nothing in any group (an unknown
    metric, model or clip id)."""
    out = [select_clips(g, selectors, seed, sample, max_default) for g in groups]
    for s in selectors:
        if s.kind == "ids":
            unknown = [i for i in s.ids if not any(i in g.clips.index for g in groups)]
            if unknown:
                raise ReportError(f"--select {s.text}: no clip {', '.join(unknown)} in any of the results")
        elif s.kind in ("worst", "best"):
            specs = [resolve_metric(s.metric, g) for g in groups]
            if not any(specs):
                known = sorted({m.key for g in groups for m in g.metrics})
                raise ReportError(f"--select {s.text}: no per-clip metric {s.metric!r} in these results; "
                                  f"known: {', '.join(known)}")
            if s.model and not any(_runs_named(g, s.model) for g in groups):
                known = sorted({r.result['model']['name'] for g in groups for r in g.runs})
                raise ReportError(f"--select {s.text}: no model {s.model!r}; models: {', '.join(known)}")
    return out


# ------------------------------------------------------------------------------------------------ plots
PLOT_VERSION = 1  # bump when the drawing changes: plot files are named by a digest of what they show


def _plot_series(group: Group, spec: MetricSpec) -> list[tuple[str, np.ndarray]]:
    """``(model label, per-item values in display units)`` of every run of `group` with a value of `spec`."""
    series = [(r.label, spec.display(r.rows[spec.key].dropna().to_numpy(dtype=np.float64))) for r in group.runs]
    return [(label, v) for label, v in series if len(v)]


def plot_file(group: Group, spec: MetricSpec) -> str | None:
    """The report-relative name of `spec`'s distribution plot for `group` (``plots/group<i>-<metric>-<digest>.png``,
    the digest of everything the picture shows, the matplotlib version and `PLOT_VERSION`, so that a re-run whose
    data are unchanged reuses the file without starting matplotlib); None when no item has a value."""
    series = _plot_series(group, spec)
    if not series:
        return None
    from importlib.metadata import version

    h = hashlib.sha256(repr((PLOT_VERSION, version("matplotlib"), group.table.dataset, group.debug, spec.key,
                             spec.label, spec.digits, spec.lower_is_better, [s[0] for s in series])).encode())
    for _, v in series:
        h.update(np.ascontiguousarray(v).tobytes())
        h.update(b"|")
    return f"plots/group{group.index}-{_norm(spec.key)}-{h.hexdigest()[:16]}.png"


def distribution_png(group: Group, spec: MetricSpec, path: Path) -> bool:
    """Overlaid histograms of `spec`'s per-item values (display units) for every run of `group`, with each run's
    mean as a dashed line; False (nothing written) when no item has a value."""
    series = _plot_series(group, spec)
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.histogram_bin_edges(np.concatenate([v for _, v in series]), bins=30)
    fig, ax = plt.subplots(figsize=(5.2, 2.8), dpi=80)
    try:
        for i, (label, v) in enumerate(series):
            color = f"C{i % 10}"
            ax.hist(v, bins=edges, histtype="step", linewidth=1.6, color=color,
                    label=f"{label} (n={len(v)}, mean {v.mean():.{spec.digits}f})")
            ax.axvline(v.mean(), color=color, linestyle="--", linewidth=1)
        arrow = "lower is better" if spec.lower_is_better else "higher is better"
        title = f"{group.table.dataset}: {spec.label} per item ({arrow})"
        ax.set_title(f"{title} [{DEBUG_LABEL}]" if group.debug else title, fontsize=8,
                     color="#b00000" if group.debug else "black")
        ax.set_xlabel(spec.label, fontsize=8)
        ax.set_ylabel("items", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="best")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        from visualsound.utils.atomic import atomic_open

        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png")
    finally:
        plt.close(fig)
    return True


def make_plots(groups: Sequence[Group], out: Path) -> tuple[dict[int, list[str]], int]:
    """Every group's distribution plots under `out` (`plot_file` names; a file already there is kept):
    ``({group index: [relative names]}, plots drawn)``. `build_report` runs it on a thread while the clips'
    media are made (matplotlib is used by that thread alone)."""
    plots: dict[int, list[str]] = {}
    drawn = 0
    for g in groups:
        for m in g.metrics:
            rel = plot_file(g, m)
            if rel is None:
                continue
            if not (out / rel).is_file():
                distribution_png(g, m, out / rel)
                drawn += 1
            plots.setdefault(g.index, []).append(rel)
    return plots, drawn


# ------------------------------------------------------------------------------------------------ html
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 1.2em 2em;color:#222}
h1{font-size:1.4em;margin:.6em 0 .2em} h2{font-size:1.15em;margin:1.2em 0 .4em} h3{font-size:1em}
.debug-banner{position:sticky;top:0;z-index:5;background:#b00000;color:#fff;padding:.45em .8em;font-weight:600}
.meta{color:#555;font-size:.85em}
table{border-collapse:collapse;margin-bottom:.8em;font-size:.85em}
td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}
th{background:#f3f3f3}
tr.debug td:first-child{color:#b00000}
ul.notes{font-size:.8em;color:#555}
.plots img{margin:0 .6em .6em 0;border:1px solid #ddd}
.controls{margin:.4em 0 .6em;display:flex;gap:1.2em;flex-wrap:wrap;align-items:center;font-size:.9em}
.controls input[type=search]{width:22em;padding:3px 6px}
table.gallery th[data-sort]{cursor:pointer;user-select:none}
table.gallery th[data-sort]:hover{background:#e4ecf7}
table.gallery th[aria-sort=ascending]::after{content:" \\25B2"}
table.gallery th[aria-sort=descending]::after{content:" \\25BC"}
table.gallery td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.gallery td.media{width:244px}
table.gallery video,table.gallery audio{width:240px;display:block}
table.gallery img.spec{width:240px;height:72px;display:block;margin-top:2px;image-rendering:auto}
.model{font-weight:400;color:#444;font-size:.85em}
.status{font-size:.8em;color:#8a4b00}
.error{font-size:.8em;color:#b00000}
.why{font-size:.8em;color:#555}
"""

_JS = """
(function () {
  "use strict";
  function value(td) {
    var v = td.getAttribute("data-v");
    return v === null || v === "" ? null : parseFloat(v);
  }
  function sortBy(table, th) {
    var idx = th.cellIndex, kind = th.getAttribute("data-sort");
    var first = th.getAttribute("data-first") || "ascending";
    var current = th.getAttribute("aria-sort");
    var order = current ? (current === "ascending" ? "descending" : "ascending") : first;
    var dir = order === "ascending" ? 1 : -1;
    table.querySelectorAll("th[data-sort]").forEach(function (o) { o.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", order);
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[idx], y = b.cells[idx];
      if (kind === "num") {
        var p = value(x), q = value(y);
        if (p === null || q === null) { return p === null ? (q === null ? 0 : 1) : -1; }
        return dir * (p - q);
      }
      return dir * x.textContent.localeCompare(y.textContent);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  function applyFilter(section) {
    var table = section.querySelector("table.gallery");
    var terms = section.querySelector("input.filter").value.toLowerCase().split(/\\s+/).filter(Boolean);
    var shown = 0;
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      var text = row.getAttribute("data-text");
      var ok = terms.every(function (t) { return text.indexOf(t) >= 0; });
      row.hidden = !ok;
      if (ok) { shown += 1; }
    });
    section.querySelector(".count").textContent = shown + " of " + table.tBodies[0].rows.length + " clips";
  }
  document.querySelectorAll("section.gallery-section").forEach(function (section) {
    var table = section.querySelector("table.gallery");
    table.querySelectorAll("th[data-sort]").forEach(function (th) {
      th.addEventListener("click", function () { sortBy(table, th); });
    });
    section.querySelector("input.filter").addEventListener("input", function () { applyFilter(section); });
    section.querySelectorAll("input.model-toggle").forEach(function (box) {
      box.addEventListener("change", function () {
        table.classList.toggle("hide-" + box.value, !box.checked);
      });
    });
    applyFilter(section);
  });
})();
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt_display(spec: MetricSpec, stored: float) -> str:
    """A stored value in display units and digits; a value that rounds to zero from below shows 0.00, not -0.00
    (the leaderboard's rule: the ground truth's KLD against itself is about -5e-4 from the KLD's 1e-6 epsilon)."""
    text = f"{spec.display(stored):.{spec.digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _fmt_value(spec: MetricSpec, v: float | None) -> tuple[str, str]:
    """(data-v, text) of a per-item value in display units."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "", "–"
    return repr(round(spec.display(float(v)), 6)), _fmt_display(spec, float(v))


def _ci_bounds(ci: Any, where: str, key: str) -> tuple[float, float, float | None]:
    """``(lo, hi, level)`` of one ``metric_ci`` entry (``{"lo", "hi", "level", ...}``, stored units)."""
    ok = isinstance(ci, dict) and all(isinstance(ci.get(k), (int, float)) and not isinstance(ci.get(k), bool)
                                      and math.isfinite(ci[k]) for k in ("lo", "hi"))
    if not ok:
        raise ReportError(f"{where}: metric_ci[{key!r}] must be an object with finite 'lo' and 'hi', got {ci!r}")
    level = ci.get("level")
    return float(ci["lo"]), float(ci["hi"]), float(level) if isinstance(level, (int, float)) else None


def interval_table(group: Group) -> str:
    """The bootstrap intervals of the group's results that carry ``metric_ci`` (``{key: {"lo", "hi", "level",
    ...}}``, stored units) as ``[lo, hi]`` in display units (the leaderboard shows value ± half-width; a percentile
    interval need not be symmetric); '' when no result has one."""
    runs = [r for r in group.runs if r.result.get("metric_ci")]
    if not runs:
        return ""
    for r in runs:
        if not isinstance(r.result["metric_ci"], dict):
            raise ReportError(f"{r.path}: metric_ci must be an object, got {type(r.result['metric_ci']).__name__}")
    specs = [m for m in group.table.metrics() if any(m.key in r.result["metric_ci"] for r in runs)]
    bounds = {(r.key, m.key): _ci_bounds(r.result["metric_ci"][m.key], r.path, m.key)
              for r in runs for m in specs if r.result["metric_ci"].get(m.key) is not None}
    levels = sorted({f"{100 * b[2]:g}%" for b in bounds.values() if b[2] is not None})
    out = ["<table class='intervals'><tr><th>model</th>"
           + "".join(f"<th>{_e(m.label)} [lo, hi]</th>" for m in specs) + "</tr>"]
    for r in runs:
        cells = []
        for m in specs:
            b = bounds.get((r.key, m.key))
            cells.append("-" if b is None else f"[{_fmt_display(m, b[0])}, {_fmt_display(m, b[1])}]")
        out.append(f"<tr><td>{_e(r.label)}</td>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    title = f"{'/'.join(levels) or 'Bootstrap'} intervals"
    return f"<h3>{_e(title)}</h3>\n" + "\n".join(out)


def _media_html(t: TrackMedia, preload: str, alt: str) -> str:
    parts = []
    if t.media and t.kind == "video":
        poster = f" poster='{_e(t.poster)}'" if t.poster else ""
        parts.append(f"<video controls preload='{preload}'{poster} src='{_e(t.media)}'></video>")
    elif t.media:
        parts.append(f"<audio controls preload='{preload}' src='{_e(t.media)}'></audio>")
    if t.spectrogram:
        parts.append(f"<img class='spec' loading='lazy' alt='spectrogram: {_e(alt)}' src='{_e(t.spectrogram)}'>")
    if t.error:
        parts.append(f"<div class='error'>{_e(t.error)}</div>")
    return "".join(parts)


@dataclass
class GalleryClip:
    """One gallery row: the clip, why it was selected, its media and each run's played item (None: no item)."""

    clip_id: str
    why: list[str]
    info: dict[str, Any]
    gt: TrackMedia
    tracks: dict[str, TrackMedia]
    items: dict[str, dict[str, Any] | None]


def gallery_html(group: Group, clips: Sequence[GalleryClip], sample: int, preload: str) -> str:
    """The gallery section of `group`: controls (text filter, model checkboxes), the sortable table."""
    runs, metrics = group.runs, group.metrics
    out = [f"<section class='gallery-section' id='gallery-{group.index}'><h3>Gallery: {len(clips)} clips</h3>",
           "<div class='controls'><label>filter <input type='search' class='filter' "
           "placeholder='clip id, class, selection, status'></label><span>models:"]
    out += [f" <label><input type='checkbox' class='model-toggle' value='{r.key}' checked> {_e(r.label)}</label>"
            for r in runs]
    out.append("</span><span class='count'></span></div>")
    out.append("<p class='meta'>Each model's column plays its generated audio under the ground-truth video; its "
               f"metric cells are that item's values (sample {sample}). Click a column header to sort (metrics: "
               "worst first, click again for best first); the filter matches clip id, class, selection and status."
               "</p>")
    out.append(f"<table class='gallery' data-group='{group.index}'><thead><tr>"
               "<th data-sort='num'>#</th><th data-sort='text'>clip</th><th data-sort='text'>class</th>"
               "<th data-sort='text'>selected as</th><th>ground truth</th>")
    out += [f"<th class='m-{r.key}'>{_e(r.label)}</th>" for r in runs]
    for m in metrics:
        first = "descending" if m.lower_is_better else "ascending"  # first click: worst first
        arrow = "↓" if m.lower_is_better else "↑"
        out += [f"<th class='m-{r.key}' data-sort='num' data-first='{first}' data-metric='{_e(m.key)}' "
                f"data-model='{r.key}'>{_e(m.label)} {arrow}<br><span class='model'>{_e(r.name)}</span></th>"
                for r in runs]
    out.append("</tr></thead><tbody>")
    for n, c in enumerate(clips, 1):
        statuses = " ".join(str(it["status"]) for it in c.items.values() if it is not None)
        text = " ".join([c.clip_id, str(c.info.get("label") or ""), *c.why, statuses]).lower()
        cells = [f"<td class='num' data-v='{n}'>{n}</td>", f"<td>{_e(c.clip_id)}</td>",
                 f"<td>{_e(c.info.get('label') or '')}</td>",
                 f"<td class='why'>{'<br>'.join(_e(w) for w in c.why)}</td>",
                 f"<td class='media'>{_media_html(c.gt, preload, 'ground truth')}</td>"]
        for r in runs:
            it = c.items[r.key]
            track = c.tracks.get(r.key, TrackMedia())
            if it is None:
                media, note = "", f"<div class='status'>no item of sample {sample} for this clip</div>"
            elif it["status"] == "missing":
                media, note = "", f"<div class='status'>missing: {_e(it['reason'])}</div>"
            else:
                media = _media_html(track, preload, r.label)
                note = f"<div class='status'>{_e(it['status'])}: {_e(it['reason'])}</div>" \
                    if it["status"] != "scored" else ""
            cells.append(f"<td class='media m-{r.key}'>{media}{note}</td>")
        for m in metrics:
            for r in runs:
                it = c.items[r.key]
                v, txt = _fmt_value(m, None if it is None else it.get(m.key))
                title = f" title='{_e(it['reason'])}'" if it is not None and not v and it["reason"] else ""
                cells.append(f"<td class='num m-{r.key}' data-v='{v}'{title}>{txt}</td>")
        out.append(f"<tr data-clip='{_e(c.clip_id)}' data-text='{_e(text)}'>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></section>")
    return "\n".join(out)


def page_html(groups: Sequence[Group], galleries: Sequence[Sequence[GalleryClip]], plots: dict[int, list[str]],
              sample: int, meta: str) -> str:
    """The whole ``index.html``."""
    debug = any(g.debug for g in groups)
    title = f"vbench listening report{' [' + DEBUG_LABEL + ']' if debug else ''}"
    n_media = sum(len(c.tracks) + 1 for gal in galleries for c in gal)
    preload = "metadata" if n_media <= 150 else "none"
    hide = "".join(f"table.gallery.hide-{r.key} .m-{r.key}{{display:none}}" for g in groups for r in g.runs)
    out = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
           "<meta name='viewport' content='width=device-width, initial-scale=1'>",
           f"<title>{_e(title)}</title><style>{_CSS}{hide}</style></head><body>"]
    if debug:
        out.append(f"<div class='debug-banner' id='debug-banner'>{_e(DEBUG_NOTE)}</div>")
    out.append(f"<h1>{_e(title)}</h1><p class='meta'>{_e(meta)}</p>")
    if len(groups) > 1:
        out.append("<ul>" + "".join(f"<li><a href='#group-{g.index}'>{_e(g.table.title)}</a></li>" for g in groups)
                   + "</ul>")
    for g, gal in zip(groups, galleries):
        out.append(f"<section class='group' id='group-{g.index}'>")
        out.append(html_table(g.table))
        out.append(interval_table(g))
        if plots.get(g.index):
            out.append("<h3>Per-item distributions</h3><div class='plots'>"
                       + "".join(f"<img alt='distribution' src='{_e(p)}'>" for p in plots[g.index]) + "</div>")
        if g.notes:
            out.append("<ul class='notes'>" + "".join(f"<li>{_e(n)}</li>" for n in g.notes) + "</ul>")
        out.append(gallery_html(g, gal, sample, preload))
        out.append("</section>")
    out.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ build
def _clip_folder(clip_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", clip_id).strip("._")[:60] or "clip"
    return f"{safe}-{hashlib.sha1(clip_id.encode()).hexdigest()[:6]}"


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _float(v: Any, default: float | None) -> float | None:
    return default if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def check_out(out: Path) -> bool:
    """Refuse a non-empty `out` that is not a previous report (no ``report.json`` of this format); writes nothing.
    True when `out` is a previous report."""
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        marker = out / "report.json"
        try:
            ok = json.loads(marker.read_text()).get("format") == REPORT_FORMAT
        except (OSError, ValueError, AttributeError):
            ok = False
        if not ok:
            raise ReportError(f"--out {out} is not empty and holds no report.json of a vbench report; refusing to "
                              "write into it (give a new or empty folder, or a previous report's)")
        return True
    return False


def prepare_out(out: Path) -> None:
    """`check_out`, then a new or empty `out` gets a provisional ``report.json`` (``"complete": false``) before any
    media, so that a build stopped half-way (Ctrl-C, a crash) is resumed by the next one, which replaces it with
    the full record. `build_report` calls it only once its inputs and selection are valid: a build that fails on
    them leaves no folder behind."""
    if check_out(out):
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "report.json", {"format": REPORT_FORMAT, "version": REPORT_VERSION, "complete": False,
                                            "created": datetime.now(timezone.utc).isoformat()})


@dataclass
class ReportSummary:
    """What `build_report` made."""

    index: Path
    clips: int
    encoded: int
    errors: list[str]
    seconds: float
    removed: int
    from_store: int = 0
    copied: int = 0  # ground-truth videos copied from their source this build (the rest of those made: re-encoded)
    reencoded: int = 0
    plots_drawn: int = 0  # distribution plots drawn this build (the others were already there: same data)


def build_report(result_paths: Sequence[str | os.PathLike], out: str | os.PathLike,
                 select_terms: Sequence[str] = (), seed: int = 0, sample: int = 0,
                 settings: MediaSettings = MediaSettings(), progress: bool = False,
                 max_default: int = DEFAULT_MAX_CLIPS, jobs: int | None = None,
                 media_store: str | os.PathLike | None = None) -> ReportSummary:
    """Write the listening report of `result_paths` into `out` (see the module docstring); clips are encoded by
    `jobs` threads (default: one per available core). `media_store`: a folder of media shared between reports
    (`MediaStore`; None: this report's folder only)."""
    t0 = time.perf_counter()
    out = Path(out)
    selectors = [parse_select(s) for s in select_terms]
    if sample < 0:
        raise ReportError(f"--sample must be >= 0, got {sample}")
    check_out(out)  # a foreign folder is refused before the inputs are read
    results = load_inputs(result_paths)
    groups = build_groups(results)
    selections = select(groups, selectors, seed, sample, max_default)
    prepare_out(out)  # only now: a failed build (no results, a bad --select) leaves no half-made folder behind
    tasks = []
    for gi, (g, chosen) in enumerate(zip(groups, selections)):
        played = {r.key: g.played(r, sample) for r in g.runs}
        for clip_id, why in chosen:
            info = g.clips.loc[clip_id].to_dict()
            items = {k: (p.loc[clip_id].to_dict() if clip_id in p.index else None) for k, p in played.items()}
            gen = {k: None if it["status"] == "missing" else _str(it["generated_path"])
                   for k, it in items.items() if it is not None}
            src = ClipSources(clip_id, _str(info["video_path"]), _str(info["gt_audio_path"]),
                              _float(info["start_sec"], 0.0), _float(info["window_sec"], None), gen)
            tasks.append((gi, clip_id, why, info, items, src))
    galleries: list[list[GalleryClip]] = [[] for _ in groups]
    errors: list[str] = []
    encoded = from_store = copied = reencoded = 0
    total = len(tasks)
    workers = max(1, min(jobs or available_cores(), total))
    store = MediaStore(Path(media_store)) if media_store is not None else None
    encoder = ClipEncoder(out, settings, threads=1 if workers > 1 else 0, store=store)  # parallel clips, not threads
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="report media", unit="clip")

    # the plots are drawn while the clips are made (in worker processes this thread would wait idle)
    with ThreadPoolExecutor(1, thread_name_prefix="report-plots") as plotter:
        drawing = plotter.submit(make_plots, groups, out)
        made = encode_clips(encoder, [(_clip_folder(t[1]), t[5]) for t in tasks], workers,
                            (lambda: bar.update(1)) if bar is not None else None)
        if bar is not None:
            bar.close()
        plots, plots_drawn = drawing.result()
    for (gi, clip_id, why, info, items, _), (gt, tracks) in zip(tasks, made):
        encoded += gt.encoded + sum(t.encoded for t in tracks.values())
        from_store += gt.from_store + sum(t.from_store for t in tracks.values())
        copied += gt.video == "copy"
        reencoded += gt.video == "re-encode"
        for who, t in [("ground truth", gt), *tracks.items()]:
            if t.error and not (who != "ground truth" and items[who]["status"] == "missing"):
                errors.append(f"{clip_id} ({who}): {t.error}")
        galleries[gi].append(GalleryClip(clip_id, why, info, gt, tracks, items))
    for msg in errors:
        log.warning("report media: %s", msg)
    meta = (f"made {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by vbench report from "
            f"{len(results)} result files; selection: {', '.join(select_terms) or 'default'}; seed {seed}; "
            f"played sample {sample}")
    index = out / "index.html"
    atomic_write_text(index, page_html(groups, galleries, plots, sample, meta))
    referenced = {"index.html", "report.json", *(p for ps in plots.values() for p in ps)}
    for gal in galleries:
        for c in gal:
            for t in [c.gt, *c.tracks.values()]:
                referenced.update(x for x in (t.media, t.poster, t.spectrogram) if x)
    removed = _remove_unreferenced(out, referenced)
    seconds = time.perf_counter() - t0
    atomic_write_json(out / "report.json", {
        "format": REPORT_FORMAT, "version": REPORT_VERSION, "complete": True,
        "created": datetime.now(timezone.utc).isoformat(),
        "results": [r["_path"] for r in results], "select": list(select_terms), "seed": seed, "sample": sample,
        "debug_weights": any(g.debug for g in groups), "media_settings": settings.key(),
        "groups": [{"title": g.table.title, "models": {r.key: r.label for r in g.runs},
                    "clips": [{"clip_id": c.clip_id, "why": c.why} for c in gal], "notes": g.notes}
                   for g, gal in zip(groups, galleries)],
        "files": sorted(referenced - {"report.json"}), "encoded": encoded, "from_store": from_store,
        "videos": {"copied": copied, "re-encoded": reencoded},
        "media_store": str(media_store) if media_store is not None else None, "errors": errors,
        "seconds": round(seconds, 2)})
    return ReportSummary(index, total, encoded, errors, seconds, removed, from_store, copied, reencoded, plots_drawn)


def _remove_unreferenced(out: Path, referenced: set[str]) -> int:
    """Delete files under ``media/`` and ``plots/`` that this build does not reference (an earlier selection,
    changed sources, temporary files of a killed run) and the folders left empty; returns the count."""
    removed = 0
    for sub in ("media", "plots"):
        root = out / sub
        if not root.is_dir():
            continue
        for p in sorted(root.rglob("*"), reverse=True):
            if p.is_file() and p.relative_to(out).as_posix() not in referenced:
                p.unlink()
                removed += 1
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()
    return removed
