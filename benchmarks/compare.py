"""``vbench compare``: a paired comparison of two results on the clips both have.

Two results are comparable only under the same protocol (name and version), on the same dataset manifest (its
fingerprint: the same clips, files and windows), with the same kind of weights (debug vs real) and the same
extractor weights; anything else is refused with a message saying what differs.

The comparison uses only the clips both results scored (by clip id; a clip that one side is missing is not
compared) and lists the clips only one side has. Per metric:

* **per-item metrics** (KL per pair, IB, Sync / DeSync): the mean of each side's per-item values over the common
  clips (from the per-clip tables, `benchmarks.per_clip`), a clip's samples grouped;
* **set-level metrics** (FAD / FD_*, IS): recomputed from the features in the results' caches with each metric's
  own rows, as the evaluation took them: the protocol's ``cached_set_statistics`` rebuilds the run's input of the
  statistic over all of a result's files (av-benchmark: every file for FD-PANN / FD-VGG / ISC-PANNS, the pairs by
  ``clean_sample_name`` for FD-PASST / ISC-PASST with a clip's ground truth once per file paired with it), checked
  against the files the result records per metric, and `compare_results` restricts it to the units both sides
  have among the common clips and the **other units both results share** that the metric counts: ground-truth
  clips that neither side generated and generated files that pair with no clip, by name (av-benchmark's
  every-file metrics take them, as the original). So on all of a result's files the compared value is the
  result's own (`_recorded_check`: a note when it is not, i.e. the caches hold other features now); a metric whose
  rows cannot be rebuilt as the run took them (a cache gone, recomputed for other weights or settings, or holding
  other files than the run used) is not compared, with the reason. Where a metric's units are not simply the
  common clips (a common clip without rows in it under its pairing rule, the shared other units, files pairing
  with no clip that only one side has), a note says which, in every format (text / markdown: ``note:`` lines;
  json: per metric ``notes``, and ``clips.also_compared``); the ``clips`` column counts the metric's units;

then the **paired bootstrap** (`benchmarks.bootstrap.paired_differences`): each resample draws the metric's units
(the common clips it has rows of, plus the shared other units above) with replacement and evaluates both sides on
the same draw; the difference ``B - A`` gets a 95 % interval
(percentile for per-item metrics, normal for set-level ones) and a two-sided p-value from the same
replicates. Values are those on the common clips, so they can differ from each result's own numbers when the clip
sets differ.

**No verdict below `MIN_VERDICT_CLIPS` (30) clips.** A verdict (``A better`` / ``B better`` at p < 0.05) needs
intervals and p-values that mean what they say, and the bootstrap's do not on a handful of clips: with ``n`` clips
there are only ``C(2n - 1, n)`` distinct resamples (3 clips: 10, so p is the floor ``2 / (B + 1)`` whenever
the three differences share a sign), and a percentile interval of a mean is too narrow on small samples (the
bootstrap takes the ``n`` clips for the population). In a seeded simulation (``scripts/sim_compare_min_clips.py``:
1000 data sets per size of normal and of skewed per-clip differences with a true difference of zero, the paired
percentile bootstrap with 1000 resamples) the nominal 95 % interval covered the true difference 69-74 % of the time
at 3 clips, 80-85 % at 5, 88-89 % at 10, 90-93 % at 20, 92-94 % at 30 and 93-95 % at 50, and the verdict called
one of two equal models better 26-31 %, 15-20 %, 11-12 %, 7-10 %, 6-9 % and 5-7 % of the time (nominal: 5 %). From
30 clips the verdict errs about as rarely as it claims, give or take a few points; below, up to several times as
often. Below 30 clips the verdict column says ``too few clips``, every format carries a warning (text / markdown:
first lines; json: ``warnings``, and per metric ``verdict`` and ``reliable``), and the intervals and p-values are
still shown, marked ``*`` as unreliable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import bootstrap as bs
from benchmarks import per_clip
from benchmarks.results import load_result, load_results, metric_specs
from visualsound.errors import ToolkitError

FORMATS = ("text", "markdown", "json")
SIGNIFICANCE = 0.05
MIN_VERDICT_CLIPS = 30  # fewer common clips: no verdict (see the module docstring)
_LISTED = 20  # clip ids listed in text / markdown (json lists all)


class CompareError(ToolkitError):
    """Two results cannot be compared, or a result / model cannot be found."""


@dataclass
class Comparison:
    """The outcome of `compare_results` (see the module docstring)."""

    a: dict[str, Any]
    b: dict[str, Any]
    common: list[str]
    only_a: list[str]
    only_b: list[str]
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[tuple[tuple[str, ...], list[str]]] = field(default_factory=list)  # (metric keys, notes)
    other_units: dict[str, str] = field(default_factory=dict)  # compared units beyond the common clips -> kind
    resamples: int = bs.DEFAULT_RESAMPLES
    set_resamples: int = bs.DEFAULT_SET_RESAMPLES
    seed: int = 0
    level: float = bs.LEVEL

    @property
    def protocol(self) -> str:
        return self.a["protocol"]["name"]

    @property
    def few(self) -> list[str]:
        """The compared metrics with fewer than `MIN_VERDICT_CLIPS` clips (no verdict)."""
        return [k for k, e in self.metrics.items() if too_few(e)]

    @property
    def warnings(self) -> list[str]:
        """What the reader must know before reading the table (every format shows these)."""
        few = self.few
        if not few:
            return []
        if len(self.common) < MIN_VERDICT_CLIPS:
            what = f"only {len(self.common)} clips in common"
        else:
            what = "; ".join(f"{k} rests on only {self.metrics[k]['units']} clips" for k in few)
        return [f"{what}: a verdict needs at least {MIN_VERDICT_CLIPS} clips, so there is none ({', '.join(few)}) "
                f"and the intervals and p-values marked * are unreliable (on 5-10 clips a 95 % interval covers the "
                f"true difference only 80-90 % of the time); compare on more clips"]


def _who(result: dict[str, Any]) -> str:
    return f"{result['model']['name']} ({Path(result.get('_path', '?')).name})"


def check_comparable(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Raise `CompareError` saying what differs when `a` and `b` are not comparable."""
    pa, pb = a["protocol"], b["protocol"]
    if pa["name"] != pb["name"]:
        raise CompareError(f"A {_who(a)} was evaluated under protocol {pa['name']}, B {_who(b)} under "
                           f"{pb['name']}: their metrics measure different things and cannot be compared; "
                           f"evaluate both under one protocol")
    if pa.get("version") != pb.get("version"):
        raise CompareError(f"A and B were evaluated under different versions of protocol {pa['name']} "
                           f"({pa.get('version')} vs {pb.get('version')}); re-evaluate the older one")
    da, db = a["dataset"], b["dataset"]
    if da["fingerprint"] != db["fingerprint"]:
        raise CompareError(f"A and B were evaluated on different datasets: A on {da['name']} [manifest "
                           f"{da['fingerprint'][:8]}, {da['num_clips']} clips], B on {db['name']} [manifest "
                           f"{db['fingerprint'][:8]}, {db['num_clips']} clips]; compare results of one manifest")
    if bool(a["debug_weights"]) != bool(b["debug_weights"]):
        debug, real = (a, b) if a["debug_weights"] else (b, a)
        raise CompareError(f"{_who(debug)} was made with DEBUG WEIGHTS (seeded random models), {_who(real)} with "
                           f"real weights: a difference between them means nothing")
    ea, eb = a.get("extractors", {}), b.get("extractors", {})
    differ = sorted(k for k in set(ea) & set(eb) if ea[k].get("sha256") != eb[k].get("sha256"))
    if differ:
        raise CompareError(f"A and B used different extractor weights for {', '.join(differ)} (e.g. {differ[0]}: "
                           f"{str(ea[differ[0]].get('sha256'))[:12]} vs {str(eb[differ[0]].get('sha256'))[:12]}); "
                           f"their numbers are not on one scale")


def _scored_clips(rows: Sequence[dict[str, Any]]) -> set[str]:
    return {r["clip_id"] for r in rows if r["clip_id"] is not None and r["status"] in ("scored", "excluded")}


def compare_results(a: dict[str, Any], b: dict[str, Any], resamples: int = bs.DEFAULT_RESAMPLES,
                    set_resamples: int = bs.DEFAULT_SET_RESAMPLES, seed: int = 0, level: float = bs.LEVEL,
                    device: str = "cpu") -> Comparison:
    """Compare result `b` with result `a` (both loaded with ``_path``) on their common clips (Fréchet distances
    computed on `device`)."""
    from benchmarks.protocols import get_protocol

    check_comparable(a, b)
    rows_a = per_clip.load_for_result(a).to_pylist()
    rows_b = per_clip.load_for_result(b).to_pylist()
    clips_a, clips_b = _scored_clips(rows_a), _scored_clips(rows_b)
    common = sorted(clips_a & clips_b)
    out = Comparison(a, b, common, sorted(clips_a - clips_b), sorted(clips_b - clips_a), resamples=resamples,
                     set_resamples=set_resamples, seed=seed, level=level)
    if not common:
        raise CompareError(f"A {_who(a)} and B {_who(b)} have no scored clip in common ({len(clips_a)} and "
                           f"{len(clips_b)} clips)")
    units = set(common)
    va, vb = a["metrics"], b["metrics"]
    both = [k for k in (m.key for m in metric_specs(out.protocol)) if k in va and k in vb]
    for k in both:
        if va[k] is None or vb[k] is None:
            out.skipped[k] = "undefined (null) in " + " and ".join(s for s, v in (("A", va[k]), ("B", vb[k]))
                                                                   if v is None)
    for k in sorted(set(va) ^ set(vb)):
        out.skipped[k] = f"computed only in {'A' if k in va else 'B'}"
    pairs: list[tuple[Any, Any]] = []
    item_metrics = [k for k in per_clip.item_metrics(out.protocol) if k in both and k not in out.skipped]
    for k in item_metrics:
        sa = per_clip.item_statistics([r for r in rows_a if r["clip_id"] in units], [k]).get(k)
        sb = per_clip.item_statistics([r for r in rows_b if r["clip_id"] in units], [k]).get(k)
        shared = set(sa.units if sa else ()) & set(sb.units if sb else ())
        if not shared:
            out.skipped[k] = "no common clip has a value on both sides"
            continue
        pairs.append((sa.restrict(shared), sb.restrict(shared)))
    protocol = get_protocol(out.protocol)
    set_keys = [k for k in both if k not in item_metrics and k not in out.skipped]
    scopes: list[tuple[bs.SetInput, bs.SetInput, set[str], Any, Any]] = []  # inputs, units, statistics
    other_a: dict[str, str] = {}
    other_b: dict[str, str] = {}
    if set_keys:
        inputs_a, problems_a = protocol.cached_set_statistics(a, rows_a)
        inputs_b, problems_b = protocol.cached_set_statistics(b, rows_b)
        other_a, other_b = _other_units(rows_a, clips_a), _other_units(rows_b, clips_b)
        shared_other = {u: kind for u, kind in other_a.items() if other_b.get(u) == kind}
        allowed = units | set(shared_other)
        for name in [n for n in inputs_a if n in inputs_b and set(inputs_a[n].keys) & set(set_keys)]:
            ia, ib = inputs_a[name], inputs_b[name]
            shared = ia.units() & ib.units() & allowed
            if not shared:
                out.skipped.update({k: "no common clip has features on both sides" for k in ia.keys})
                continue
            sa, sb = ia.restrict(shared).statistic(device), ib.restrict(shared).statistic(device)
            pairs.append((sa, sb))
            scopes.append((ia, ib, shared, sa, sb))
        out.other_units = {u: shared_other[u] for u in sorted({u for s in scopes for u in s[2]} - units)}
        done = {k for pair in pairs for k in pair[0].keys}
        for k in set_keys:
            if k not in done and k not in out.skipped:
                why = problems_a.get(k) or problems_b.get(k) or "its features could not be read back"
                side = "A" if k in problems_a else "B" if k in problems_b else "A/B"
                out.skipped[k] = f"{side}: {why}"
    diffs = bs.paired_differences(pairs, resamples, set_resamples, seed, level)
    order = [m.key for m in metric_specs(out.protocol)]
    out.metrics = {k: diffs[k] for k in order if k in diffs and k in both}
    for ia, ib, shared, sa, sb in scopes:
        notes = _scope_notes(out, ia, ib, shared, units, other_a, other_b)
        notes += [n for side, inp, stat, res in (("A", ia, sa, a), ("B", ib, sb, b)) if inp.units() <= shared
                  for n in [_recorded_check(out, side, stat, res)] if n]
        if notes:
            out.notes.append((ia.keys, notes))
    out.skipped = {k: out.skipped[k] for k in sorted(out.skipped, key=lambda k: order.index(k) if k in order else 99)}
    return out


def _other_units(rows: Sequence[dict[str, Any]], scored: set[str]) -> dict[str, str]:
    """A result's units beyond its scored clips, with their kind: ``file`` (a generated file that pairs with no
    clip, unit ``item:<name>``) or ``clip`` (a ground-truth clip that no generated file pairs with). A set-level
    metric that uses every file (av-benchmark's FD-PANN, FD-VGG, ISC-PANNS) takes their rows."""
    out: dict[str, str] = {}
    for r in rows:
        if r["clip_id"] is None:
            out[per_clip.unit_of(r)] = "file"
        elif r["clip_id"] not in scored:
            out[r["clip_id"]] = "clip"
    return out


def _file_name(unit: str) -> str:
    return unit.removeprefix("item:")


def _n(count: int, what: str) -> str:
    return f"{count} {what}" if count == 1 else f"{count} {what.replace('clip', 'clips').replace('file', 'files')}"


def _scope_notes(c: Comparison, ia: bs.SetInput, ib: bs.SetInput, shared: set[str], common: set[str],
                 other_a: dict[str, str], other_b: dict[str, str]) -> list[str]:
    """What a set-level statistic was computed on, where that is not simply the common clips: common clips
    without rows in it (its own pairing rule), units beyond the common clips that both sides have and the metric
    counts, and files pairing with no clip that count in one side's own value but are left out here."""
    notes = []
    rule = ia.rule or ib.rule
    ua, ub = ia.units(), ib.units()
    left = sorted(common - shared)
    if left:
        by_side: dict[str, list[str]] = {}
        for clip in left:
            side = " and ".join(s for s, own in (("A", ua), ("B", ub)) if clip not in own)
            by_side.setdefault(side, []).append(clip)
        why = "; ".join(f"{_n(len(ids), 'clip')} on {side} ({_ids(ids)})" for side, ids in by_side.items())
        notes.append(f"on {len(shared & common)} of the {len(common)} common clips" + (f" ({rule})" if rule else "")
                     + f"; no rows in it for {why}")
    extra = sorted(shared - common)
    if extra:
        clips = [u for u in extra if c.other_units.get(u) == "clip"]
        files = [_file_name(u) for u in extra if c.other_units.get(u) == "file"]
        parts = ([f"{_n(len(clips), 'ground-truth clip')} that neither side generated ({_ids(clips)})"]
                 if clips else []) + ([f"{_n(len(files), 'generated file')} pairing with no clip on both sides "
                                       f"({_ids(files)})"] if files else [])
        notes.append(f"also on {' and '.join(parts)}" + (f" ({rule})" if rule else ""))
    for side, own, other in (("A", ua, other_a), ("B", ub, other_b)):
        lonely = sorted(_file_name(u) for u in own - shared if other.get(u) == "file")
        if lonely:
            notes.append(f"{side}'s own value also counts {_n(len(lonely), 'generated file')} pairing with no clip "
                         f"that the other side lacks ({_ids(lonely)}); left out here")
    return notes


def _recorded_check(c: Comparison, side: str, stat: Any, result: dict[str, Any]) -> str:
    """A note when a side's compared value, its statistic `stat` on all its units, is not the value its
    evaluation recorded (the caches hold other features than the run used); '' when it is, to floating-point
    tolerance (FD: 1e-4 of the value plus both covariance traces, above the rounding of the original's scipy
    ``sqrtm`` of a rank-deficient product, README; IS: 1e-6 relative)."""
    bad = []
    for k in stat.keys:
        entry, recorded = c.metrics.get(k), result["metrics"].get(k)
        if entry is None or recorded is None:
            continue
        got = entry["a" if side == "A" else "b"]
        fd = isinstance(stat, bs.FrechetStatistic)
        tol = 1e-4 * (abs(recorded) + stat.spread()) if fd else 1e-6 * abs(recorded) + 1e-12
        if not abs(got - recorded) <= tol:  # NaN fails too
            bad.append(f"{k} {got:.6g} here, {recorded:.6g} recorded")
    if not bad:
        return ""
    return (f"{side}'s value is computed here on all its files, yet it is not the one its evaluation recorded "
            f"({'; '.join(bad)}): its caches hold other features now (files evaluated again since?); re-run "
            f"vbench evaluate")


# ------------------------------------------------------------------------------------------------ lookup
def find_result(results_dir: str | os.PathLike, dataset: str, model: str, protocol: str | None = None
                ) -> dict[str, Any]:
    """The one result of `model` on `dataset` (optionally under `protocol`) in a results folder; `CompareError`
    when there is none or several (listing them)."""
    found = [r for r in load_results(results_dir) if r["dataset"]["name"] == dataset and r["model"]["name"] == model
             and (protocol is None or r["protocol"]["name"] == protocol)]
    if not found:
        raise CompareError(f"no result of model {model!r} on dataset {dataset!r}"
                           f"{f' under protocol {protocol}' if protocol else ''} in {results_dir}")
    if len(found) > 1:
        from benchmarks.leaderboard import _variant

        files = "; ".join(f"{r['_path']} ({r['protocol']['name']}, {_variant(r)})" for r in found)
        several = len({r["protocol"]["name"] for r in found}) > 1 and protocol is None
        hint = "pass --protocol, or two result files" if several else "pass the two result files instead"
        raise CompareError(f"{len(found)} results of model {model!r} on dataset {dataset!r} in {results_dir}: "
                           f"{files}; {hint}")
    return found[0]


def load_pair(a: str, b: str, results_dir: str | None = None, dataset: str | None = None,
              protocol: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two result files, or (with `results_dir` and `dataset`) two model names' results."""
    if results_dir is None:
        if dataset is not None:
            raise CompareError("--dataset selects models from a --results folder; with two result files leave "
                               "it out")
        return load_result(a), load_result(b)
    if dataset is None:
        raise CompareError("comparing two models of a --results folder needs --dataset NAME")
    return (find_result(results_dir, dataset, a, protocol), find_result(results_dir, dataset, b, protocol))


# ------------------------------------------------------------------------------------------------ rendering
def _spec(protocol: str, key: str) -> Any:
    return next(m for m in metric_specs(protocol) if m.key == key)


def _num(value: float | None, spec: Any, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    digits = spec.digits + 1
    return f"{spec.display(value):+.{digits}f}" if signed else f"{spec.display(value):.{digits}f}"


def _p(p: float | None) -> str:
    return "n/a" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def too_few(entry: dict[str, Any]) -> bool:
    """Whether a compared metric rests on fewer than `MIN_VERDICT_CLIPS` clips."""
    return int(entry.get("units") or 0) < MIN_VERDICT_CLIPS


def verdict(entry: dict[str, Any], lower_is_better: bool) -> str:
    """``B better`` / ``A better`` when p < 0.05, else ``no significant difference``; ``too few clips`` below
    `MIN_VERDICT_CLIPS` clips, whatever p is."""
    if entry.get("p") is None:
        return "n/a"
    if too_few(entry):
        return f"too few clips (< {MIN_VERDICT_CLIPS})"
    if entry["p"] >= SIGNIFICANCE:
        return "no significant difference"
    b_lower = entry["diff"] < 0
    return "B better" if b_lower == lower_is_better else "A better"


def _table_rows(c: Comparison) -> list[list[str]]:
    rows = []
    for key, e in c.metrics.items():
        spec = _spec(c.protocol, key)
        mark = "*" if too_few(e) else ""
        ci = "n/a" if e["lo"] is None else f"[{_num(e['lo'], spec, True)}, {_num(e['hi'], spec, True)}]{mark}"
        p = _p(e["p"]) + (mark if e["p"] is not None else "")
        rows.append([f"{spec.label} {'↓' if spec.lower_is_better else '↑'}", _num(e["a"], spec), _num(e["b"], spec),
                     _num(e["diff"], spec, True), ci, p, str(e["units"]), e["method"],
                     verdict(e, spec.lower_is_better)])
    return rows


COLUMNS = ["metric", "A", "B", "B - A", "95% interval", "p", "clips", "method", "verdict"]


def _ids(ids: list[str]) -> str:
    more = f", ... ({len(ids) - _LISTED} more)" if len(ids) > _LISTED else ""
    return ", ".join(ids[:_LISTED]) + more


def _header_lines(c: Comparison) -> list[str]:
    a, b = c.a, c.b
    ds = a["dataset"]
    lines = [f"A: {_who(a)}", f"B: {_who(b)}",
             f"dataset {ds['name']} [manifest {ds['fingerprint'][:8]}, {ds['num_clips']} clips], protocol "
             f"{c.protocol} v{a['protocol']['version']}"]
    if a["debug_weights"]:
        lines.append("DEBUG WEIGHTS: both results were made with seeded random models; the numbers are meaningless")
    lines.append(f"clips compared: {len(c.common)} in common; {len(c.only_a)} only in A"
                 + (f" ({_ids(c.only_a)})" if c.only_a else "") + f"; {len(c.only_b)} only in B"
                 + (f" ({_ids(c.only_b)})" if c.only_b else ""))
    clips = [u for u, kind in c.other_units.items() if kind == "clip"]
    files = [_file_name(u) for u, kind in c.other_units.items() if kind == "file"]
    if clips or files:
        lines.append("also compared where a set-level metric counts them (as the original, see the notes): "
                     + "; ".join(([f"{_n(len(clips), 'ground-truth clip')} that neither side generated "
                                   f"({_ids(clips)})"] if clips else [])
                                 + ([f"{_n(len(files), 'generated file')} pairing with no clip on both sides "
                                     f"({_ids(files)})"] if files else [])))
    lines.append(f"paired bootstrap over the common clips: {c.resamples} resamples ({c.set_resamples} for the "
                 f"set-level metrics), seed {c.seed}, {100 * c.level:g}% intervals of B - A; values are on the common "
                 f"clips (a set-level metric on its own rows of them, as the original takes them)")
    return lines


def _note_lines(c: Comparison) -> list[str]:
    return [f"note: {', '.join(keys)}: {note}" for keys, notes in c.notes for note in notes]


def render_text(c: Comparison) -> str:
    rows = _table_rows(c)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(COLUMNS)]
    out = [f"WARNING: {w}" for w in c.warnings] + _header_lines(c) + [""]
    out.append("  ".join(h.ljust(w) for h, w in zip(COLUMNS, widths)).rstrip())
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    out += [f"  {line}" for line in _note_lines(c)]
    out += [f"  not compared: {k}: {why}" for k, why in c.skipped.items()]
    return "\n".join(out) + "\n"


def render_markdown(c: Comparison) -> str:
    out = [f"> **WARNING:** {w}\n" for w in c.warnings] + [f"- {line}" for line in _header_lines(c)] + [""]
    out += ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    out += ["| " + " | ".join(v.replace("|", "\\|") for v in r) + " |" for r in _table_rows(c)]
    if c.notes or c.skipped:
        out += [""] + [f"- {line}" for line in _note_lines(c)]
        out += [f"- not compared: {k}: {why}" for k, why in c.skipped.items()]
    return "\n".join(out) + "\n"


def to_dict(c: Comparison) -> dict[str, Any]:
    def side(r: dict[str, Any]) -> dict[str, Any]:
        return {"model": r["model"]["name"], "result": r.get("_path"), "metrics": r["metrics"]}

    metrics = {k: {**e, "verdict": verdict(e, _spec(c.protocol, k).lower_is_better), "reliable": not too_few(e),
                   "notes": [n for keys, notes in c.notes if k in keys for n in notes]}
               for k, e in c.metrics.items()}
    return {"format": "vbench-compare", "warnings": c.warnings, "protocol": c.a["protocol"],
            "dataset": c.a["dataset"], "debug_weights": bool(c.a["debug_weights"]), "a": side(c.a), "b": side(c.b),
            "clips": {"common": len(c.common), "only_a": c.only_a, "only_b": c.only_b,
                      "also_compared": {"ground_truth_only": [u for u, k in c.other_units.items() if k == "clip"],
                                        "unpaired_files": [_file_name(u) for u, k in c.other_units.items()
                                                           if k == "file"]}},
            "bootstrap": {"resamples": c.resamples, "set_resamples": c.set_resamples, "seed": c.seed,
                          "level": c.level, "unit": "clip"},
            "min_clips_for_verdict": MIN_VERDICT_CLIPS, "metrics": metrics, "not_compared": c.skipped}


def render_json(c: Comparison) -> str:
    return json.dumps(to_dict(c), indent=2) + "\n"


RENDERERS = {"text": render_text, "markdown": render_markdown, "json": render_json}


def render(c: Comparison, fmt: str) -> str:
    if fmt not in RENDERERS:
        raise CompareError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return RENDERERS[fmt](c)
