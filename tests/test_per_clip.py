"""The per-clip table (`benchmarks.per_clip`: schema, writer, reader, validation, checksum) and `vbench compare`
on hand-made results: the clips only one side has, the paired difference, and every refusal."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from benchmarks import per_clip
from benchmarks.compare import SIGNIFICANCE, CompareError, compare_results, find_result, render
from benchmarks.results import load_result, result_filename, validate_result

FINGERPRINT = "f" * 64


def _rows(clips: list[str], samples: int, offset: float, missing: tuple[str, ...] = (), seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for c in clips:
        for k in range(samples):
            rows.append({"item": f"{c}#{k}", "clip_id": c, "sample": k, "label": "dog", "status": "scored",
                         "reason": "", "generated_path": f"/gen/{c}/{k}.wav", "start_sec": 0.0, "window_sec": 2.56,
                         "kld": float(rng.gamma(2.0)) + offset, "ib": float(rng.normal(30, 3)),
                         "sync_ms": None, "sync_offset_sec": None})
    rows += [{"item": f"gt:{c}", "clip_id": c, "status": "missing", "reason": "missing: no file"} for c in missing]
    return rows


def _avb(rows: list[dict]) -> list[dict]:
    """The rows as av-benchmark rows (a DeSync column instead of the vaura-paper ones)."""
    return [{k: v for k, v in r.items() if k not in ("kld", "ib", "sync_ms")} | {"DeSync": 0.1} for r in rows]


def _result(folder: Path, model: str, rows: list[dict], *, protocol: str = "vaura-paper", debug: bool = False,
            fingerprint: str = FINGERPRINT, extractors: dict | None = None, metrics: dict | None = None) -> dict:
    """A result JSON whose metrics are its per-clip table's column means, written with its table."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = per_clip.item_metrics(protocol)
    means = {k: float(np.mean([r[k] for r in rows if r.get(k) is not None])) for k in keys
             if any(r.get(k) is not None for r in rows)}
    missing = sorted(r["clip_id"] for r in rows if r["status"] == "missing")
    result = {"format": "vbench-result", "schema_version": 2, "protocol": {"name": protocol, "version": 1},
              "dataset": {"name": "vas", "num_clips": 12, "fingerprint": fingerprint},
              "model": {"name": model, "kind": "dir", "samples_per_clip": 2, "seeds": []},
              "metrics": metrics if metrics is not None else means, "metric_notes": {},
              "extractors": extractors or {"kld": {"sha256": "p" * 64}}, "metric_details": {},
              "counts": {"clips": 10, "samples": 20, "missing": len(missing), "missing_ids": missing},
              "timings": {}, "software": {"version": "0.1"}, "created": "2026-01-01T00:00:00+00:00",
              "debug_weights": debug}
    path = folder / result_filename(model, "vas", protocol, debug)
    result["per_clip"] = per_clip.write_table(
        per_clip.path_for(path), rows, protocol,
        {"protocol": protocol, "dataset": "vas", "dataset_fingerprint": fingerprint, "model": model,
         "debug_weights": str(debug).lower(), "result_file": path.name})
    path.write_text(json.dumps(validate_result(result)))
    return load_result(path)


# ------------------------------------------------------------------------------------------------ the table
def test_table_schema_round_trip_and_validation(tmp_path: Path) -> None:
    rows = _rows(["a", "b"], 2, 0.0, missing=("c",))
    res = _result(tmp_path, "m", rows)
    assert res["per_clip"]["file"] == "vas__vaura-paper__m.clips.parquet" and res["per_clip"]["rows"] == 5
    table = per_clip.load_for_result(res)
    names = table.column_names
    assert names[:11] == [f.name for f in per_clip.BASE_FIELDS]
    assert {"kld", "ib", "sync_ms", "desync_first_sec", "desync_last_sec", "sync_offset_sec"} <= set(names)
    assert "KL-PANNS-softmax" not in names  # only this protocol's metric columns
    assert table.schema.field("item").nullable is False and table.schema.field("sample").type == pa.int64()
    meta = per_clip.metadata(table)
    assert meta["protocol"] == "vaura-paper" and meta["debug_weights"] == "false"
    assert meta["result_file"] == Path(res["_path"]).name and json.loads(meta["item_metrics"])[0] == "kld"
    got = table.to_pylist()
    assert [r["status"] for r in got].count("missing") == 1 and got[-1]["item"] == "gt:c"
    assert per_clip.unit_of(got[0]) == "a" and per_clip.unit_of({"item": "x", "clip_id": None}) == "item:x"
    meta_in = {"protocol": "vaura-paper", "dataset": "vas", "dataset_fingerprint": FINGERPRINT, "model": "m",
               "debug_weights": "false", "result_file": "x.json"}
    with pytest.raises(per_clip.PerClipError, match="duplicate items"):
        per_clip.build_table(rows + rows[:1], "vaura-paper", meta_in)
    with pytest.raises(per_clip.PerClipError, match="unknown statuses"):
        per_clip.build_table([{**rows[0], "status": "fine"}], "vaura-paper", meta_in)
    with pytest.raises(per_clip.PerClipError, match="without a reason"):
        per_clip.build_table([{**rows[0], "status": "excluded"}], "vaura-paper", meta_in)
    with pytest.raises(per_clip.PerClipError, match="outside the vaura-paper schema"):
        per_clip.build_table([{**rows[0], "DeSync": 0.1}], "vaura-paper", meta_in)


def test_a_changed_or_missing_table_is_refused(tmp_path: Path) -> None:
    res = _result(tmp_path, "m", _rows(["a", "b"], 1, 0.0))
    path = per_clip.table_path(res)
    other = _rows(["a", "b"], 1, 5.0)
    per_clip.write_table(path, other, "vaura-paper", per_clip.metadata(per_clip.read_table(path)))
    with pytest.raises(per_clip.PerClipError, match="changed since"):
        per_clip.load_for_result(res)
    path.unlink()
    with pytest.raises(per_clip.PerClipError, match="is missing"):
        per_clip.load_for_result(res)
    del res["per_clip"]
    with pytest.raises(per_clip.PerClipError, match="re-run vbench evaluate"):
        per_clip.load_for_result(res)
    path.write_bytes(b"not parquet")
    with pytest.raises(per_clip.PerClipError, match="cannot read"):
        per_clip.read_table(path)


# ------------------------------------------------------------------------------------------------ compare
def test_compare_uses_the_common_clips_and_says_which_are_not(tmp_path: Path) -> None:
    clips = [f"c{i:02d}" for i in range(12)]
    a = _result(tmp_path / "a", "model-a", _rows(clips[:10], 2, 0.0, missing=(clips[10],), seed=1))
    b = _result(tmp_path / "b", "model-b", _rows(clips[1:11], 2, 0.5, seed=2))
    c = compare_results(a, b, resamples=500)
    assert len(c.common) == 9 and c.only_a == ["c00"] and c.only_b == ["c10"]
    kld = c.metrics["kld"]
    a_common = np.mean([r["kld"] for r in per_clip.load_for_result(a).to_pylist() if r["clip_id"] in c.common
                        and r["kld"] is not None])
    assert kld["a"] == pytest.approx(a_common) and kld["a"] != pytest.approx(a["metrics"]["kld"])
    assert kld["diff"] == pytest.approx(kld["b"] - kld["a"]) and kld["units"] == 9
    assert c.skipped == {} and set(c.metrics) == {"kld", "ib"}
    text = render(c, "text")
    assert "9 in common; 1 only in A (c00); 1 only in B (c10)" in text and "KLD ↓" in text
    assert "500 resamples" in text
    swapped = compare_results(b, a, resamples=500)
    assert swapped.metrics["kld"]["diff"] == pytest.approx(-kld["diff"])
    assert swapped.metrics["kld"]["p"] == kld["p"] and swapped.only_a == ["c10"]
    data = json.loads(render(c, "json"))
    assert data["clips"] == {"common": 9, "only_a": ["c00"], "only_b": ["c10"],
                             "also_compared": {"ground_truth_only": [], "unpaired_files": []}}
    assert data["metrics"]["kld"]["lo"] <= data["metrics"]["kld"]["diff"] <= data["metrics"]["kld"]["hi"]
    assert "| KLD ↓ |" in render(c, "markdown")


def test_compare_gives_no_verdict_on_too_few_clips(tmp_path: Path) -> None:
    """On 3 common clips (10 distinct resamples) a consistent difference printed "p <0.001 A better"; below
    MIN_VERDICT_CLIPS the verdict is "too few clips" and every format warns, with the intervals still shown and
    marked. 30 clips get a verdict again; a metric resting on fewer clips than the others is singled out."""
    from benchmarks.cli import main
    from benchmarks.compare import MIN_VERDICT_CLIPS

    assert MIN_VERDICT_CLIPS == 30
    clips = [f"c{i:02d}" for i in range(MIN_VERDICT_CLIPS)]
    a = _result(tmp_path / "a3", "model-a", _rows(clips[:3], 1, 0.0, seed=3))
    b = _result(tmp_path / "b3", "model-b", _rows(clips[:3], 1, 2.0, seed=3))  # KLD: A's + 2 on every clip
    c = compare_results(a, b, resamples=300)
    assert c.metrics["kld"]["p"] < SIGNIFICANCE and c.few == ["kld", "ib"]
    (warning,) = c.warnings
    assert warning.startswith("only 3 clips in common: a verdict needs at least 30 clips")
    text = render(c, "text")
    assert text.startswith(f"WARNING: {warning}\n") and "A better" not in text
    assert text.count("too few clips (< 30)") == 2 and "]*" in text
    md = render(c, "markdown")
    assert md.startswith(f"> **WARNING:** {warning}") and "A better" not in md and "too few clips" in md
    data = json.loads(render(c, "json"))
    assert data["warnings"] == [warning] and data["min_clips_for_verdict"] == 30
    assert data["metrics"]["kld"]["verdict"] == "too few clips (< 30)" and data["metrics"]["kld"]["reliable"] is False
    assert data["metrics"]["kld"]["lo"] is not None  # the interval is still there
    res = CliRunner().invoke(main, ["compare", a["_path"], b["_path"], "--bootstrap", "300", "--format", "json",
                                    "--out", str(tmp_path / "c.json")])
    assert res.exit_code == 0 and f"WARNING: {warning}" in res.output, res.output
    # 29 clips: still none; 30: a verdict; a metric that only some clips have is named
    a29 = _result(tmp_path / "a29", "model-a", _rows(clips[:29], 1, 0.0, seed=3))
    b29 = _result(tmp_path / "b29", "model-b", _rows(clips[:29], 1, 2.0, seed=3))
    assert "A better" not in render(compare_results(a29, b29, resamples=300), "text")
    rows_a, rows_b = _rows(clips, 1, 0.0, seed=3), _rows(clips, 1, 2.0, seed=3)
    for r in rows_a[5:] + rows_b[5:]:
        r["ib"] = None
    c30 = compare_results(_result(tmp_path / "a30", "model-a", rows_a), _result(tmp_path / "b30", "model-b", rows_b),
                          resamples=300)
    assert c30.few == ["ib"] and c30.warnings[0].startswith("ib rests on only 5 clips")
    text = render(c30, "text")
    assert "A better" in text and text.count("too few clips") == 1


def test_compare_refuses_what_is_not_comparable(tmp_path: Path) -> None:
    rows = _rows(["a", "b", "c"], 1, 0.0)
    base = _result(tmp_path / "base", "m1", rows)
    other_proto = _result(tmp_path / "p", "m2", _avb(rows), protocol="av-benchmark")
    with pytest.raises(CompareError, match="under protocol vaura-paper, B .* under av-benchmark"):
        compare_results(base, other_proto)
    other_set = _result(tmp_path / "d", "m2", rows, fingerprint="e" * 64)
    with pytest.raises(CompareError, match=r"different datasets: A on vas \[manifest ffffffff"):
        compare_results(base, other_set)
    debug = _result(tmp_path / "g", "m2", rows, debug=True)
    with pytest.raises(CompareError, match="DEBUG WEIGHTS .* real weights"):
        compare_results(base, debug)
    other_weights = _result(tmp_path / "w", "m2", rows, extractors={"kld": {"sha256": "q" * 64}})
    with pytest.raises(CompareError, match="different extractor weights for kld"):
        compare_results(base, other_weights)
    disjoint = _result(tmp_path / "x", "m2", _rows(["x", "y"], 1, 0.0))
    with pytest.raises(CompareError, match="no scored clip in common"):
        compare_results(base, disjoint)
    without = load_result(base["_path"])
    del without["per_clip"]
    with pytest.raises(per_clip.PerClipError, match="no per-clip table"):
        compare_results(without, base)


def test_cli_compare_files_and_model_names(tmp_path: Path) -> None:
    from benchmarks.cli import main

    clips = [f"c{i:02d}" for i in range(30)]  # MIN_VERDICT_CLIPS: fewer get no verdict
    a = _result(tmp_path / "res", "model-a", _rows(clips, 1, 0.0, seed=3))
    b = _result(tmp_path / "res", "model-b", _rows(clips, 1, 2.0, seed=3))  # KLD: A's + 2
    runner = CliRunner()
    res = runner.invoke(main, ["compare", a["_path"], b["_path"], "--bootstrap", "300"])
    assert res.exit_code == 0, res.output
    assert "30 in common; 0 only in A; 0 only in B" in res.output and "A better" in res.output
    assert "WARNING" not in res.output and "*" not in res.output
    res = runner.invoke(main, ["compare", "--results", str(tmp_path / "res"), "--dataset", "vas", "model-a",
                               "model-b", "--format", "json", "--out", str(tmp_path / "c.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "c.json").read_text())["a"]["model"] == "model-a"
    res = runner.invoke(main, ["compare", "--results", str(tmp_path / "res"), "--dataset", "vas", "model-a", "nope"])
    assert res.exit_code != 0 and "no result of model 'nope' on dataset 'vas'" in res.output
    res = runner.invoke(main, ["compare", "--results", str(tmp_path / "res"), "model-a", "model-b"])
    assert res.exit_code != 0 and "needs --dataset" in res.output
    _result(tmp_path / "res" / "again", "model-a", _avb(_rows(clips, 1, 0.0)), protocol="av-benchmark")
    with pytest.raises(CompareError, match=r"2 results of model 'model-a'.*\(vaura-paper, .*pass --protocol"):
        find_result(tmp_path / "res", "vas", "model-a")
    assert find_result(tmp_path / "res", "vas", "model-a", "vaura-paper")["_path"] == a["_path"]
    again = _result(tmp_path / "res" / "seed2", "model-a", _rows(clips, 1, 0.0, seed=4))  # one protocol, twice
    with pytest.raises(CompareError, match=rf"{re.escape(again['_path'])} \(vaura-paper, .*pass the two result files"):
        find_result(tmp_path / "res", "vas", "model-a", "vaura-paper")
