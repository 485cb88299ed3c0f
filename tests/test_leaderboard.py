"""Leaderboard rendering (every format), result validation, reported rows kept to their own protocol."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmarks.leaderboard import DEBUG_LABEL, LeaderboardError, build_tables, leaderboard
from benchmarks.reported import BUILTIN_ROWS, ReportedRow, load_reported
from benchmarks.results import ResultError, load_results, result_filename, validate_result


def make_result(model: str, dataset: str, metrics: dict[str, float], protocol: str = "vaura-paper",
                version: int = 1, debug: bool = False, missing: list[str] | None = None) -> dict:
    missing = missing or []
    return {
        "format": "vbench-result", "schema_version": 1,
        "protocol": {"name": protocol, "version": version},
        "dataset": {"name": dataset, "num_clips": 10, "fingerprint": "f" * 64},
        "model": {"name": model, "kind": "dir", "samples_per_clip": 1, "seeds": []},
        "metrics": metrics, "extractors": {}, "metric_details": {},
        "counts": {"clips": 10 - len(missing), "samples": 10 - len(missing), "missing": len(missing),
                   "missing_ids": missing},
        "timings": {}, "software": {"version": "0.1"}, "created": "2026-01-01T00:00:00+00:00",
        "debug_weights": debug,
    }


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    rows = [make_result("vaura", "vas", {"fad": 1.5, "kld": 2.25, "ib": 30.0, "sync_ms": 40.0}, debug=True),
            make_result("dir:frieren", "vas", {"fad": 1.0, "kld": 2.5, "ib": 25.0, "sync_ms": 80.0},
                        missing=["a", "b"]),
            make_result("ground-truth", "vggsound", {"fad": 0.0, "kld": 0.0, "ib": 33.0, "sync_ms": 12.0}),
            make_result("vaura", "vas", {"fad": 9.0}, protocol="other-protocol")]
    for r in rows:
        name = result_filename(r["model"]["name"], r["dataset"]["name"], r["protocol"]["name"], r["debug_weights"])
        (tmp_path / name).write_text(json.dumps(r))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "manifest.json").write_text(json.dumps({"extractor": "vggish"}))  # not a result
    return tmp_path


REPORTED = [ReportedRow(model="Paper model", dataset="vas", protocol="vaura-paper",
                        metrics={"fad": 2.0, "sync_ms": 50.0}, source="test source")]


def test_runs_of_one_model_are_told_apart() -> None:
    """Two V-AURA checkpoints / seeds on one table used to give two identical 'vaura' rows."""
    a = make_result("vaura", "vas", {"fad": 1.0})
    b = make_result("vaura", "vas", {"fad": 2.0})
    a["model"].update(kind="vaura", checkpoint_sha256="a" * 64, seeds=[0])
    b["model"].update(kind="vaura", checkpoint_sha256="b" * 64, seeds=[5])
    other = make_result("dir:x", "vas", {"fad": 3.0})
    (table,) = build_tables([a, b, other])
    labels = [r.label for r in table.rows]
    assert labels == ["dir:x", "vaura (ckpt aaaaaaaa, seed 0, n=1)", "vaura (ckpt bbbbbbbb, seed 5, n=1)"]


def test_tables_group_by_dataset_and_protocol(results_dir: Path) -> None:
    results = load_results(results_dir)
    assert len(results) == 4  # the cache manifest is not taken for a result
    tables = build_tables(results, REPORTED)
    assert [(t.dataset, t.protocol) for t in tables] == [("vas", "other-protocol"), ("vas", "vaura-paper"),
                                                         ("vggsound", "vaura-paper")]
    other, paper, vgg = tables
    assert [r.origin for r in other.rows] == ["measured"]  # reported rows never join another protocol
    assert [(r.model, r.origin) for r in paper.rows] == [("dir:frieren", "measured"), ("vaura", "measured"),
                                                         ("Paper model", "reported")]
    assert [m.key for m in other.metrics()] == ["fad"]
    assert build_tables(results, REPORTED, dataset="vggsound")[0].rows[0].model == "ground-truth"


def test_reported_row_without_measured_table_gets_its_own(results_dir: Path) -> None:
    row = ReportedRow(model="X", dataset="vggsound-sparse", protocol="vaura-paper", metrics={"ib": 1.0}, source="s")
    tables = build_tables(load_results(results_dir), [row])
    own = [t for t in tables if t.dataset == "vggsound-sparse"]
    assert len(own) == 1 and own[0].version is None and own[0].rows[0].origin == "reported"


@pytest.mark.parametrize("fmt", ["table", "markdown"])
def test_text_formats(results_dir: Path, fmt: str) -> None:
    text = leaderboard(results_dir, fmt, reported=REPORTED)
    assert "vas -- protocol vaura-paper v1" in text and "vggsound -- protocol vaura-paper v1" in text
    assert f"vaura [{DEBUG_LABEL}]" in text and "Paper model [reported]" in text
    assert "8 (2 missing)" in text and "1.50" in text and "Sync (ms) ↓" in text
    if fmt == "markdown":
        assert "### vas" in text and "|---|" in text


def test_csv_and_json(results_dir: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(leaderboard(results_dir, "csv", reported=REPORTED))))
    assert len(rows) == 5
    vaura = next(r for r in rows if r["model"] == "vaura" and r["protocol"] == "vaura-paper")
    assert vaura["debug_weights"] == "True" and float(vaura["kld"]) == 2.25 and vaura["origin"] == "measured"
    reported = next(r for r in rows if r["origin"] == "reported")
    assert reported["source"] == "test source" and reported["ib"] == ""
    data = json.loads(leaderboard(results_dir, "json", dataset="vggsound"))
    assert len(data) == 1 and data[0]["rows"][0]["metrics"]["ib"] == 33.0


def test_html_has_a_chart_per_metric(results_dir: Path) -> None:
    page = leaderboard(results_dir, "html", reported=REPORTED)
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 1 + 4 + 4  # other-protocol: FAD only; the two vaura-paper tables: 4 metrics each
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert DEBUG_LABEL in page and "class='reported'" in page


def test_invalid_inputs(results_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(LeaderboardError, match="unknown format"):
        leaderboard(results_dir, "pdf")
    with pytest.raises(LeaderboardError, match="no results"):
        leaderboard(results_dir, "table", dataset="nope")
    bad = make_result("m", "vas", {"fad": float("nan"), "bleu": 1.0})
    bad["counts"]["missing"] = 3
    with pytest.raises(ResultError) as err:
        validate_result(bad)
    assert "metric fad must be a finite number" in str(err.value) and "unknown metric 'bleu'" in str(err.value)
    assert "counts.missing = 3 but 0 missing_ids" in str(err.value)
    (results_dir / "broken.json").write_text(json.dumps({**make_result("m", "vas", {"fad": 1.0}), "model": {}}))
    with pytest.raises(ResultError, match="missing model.name"):
        load_results(results_dir)
    (results_dir / "broken.json").write_text('{"format": "vbench-result", "metrics": {"fad": 1.')  # cut short
    with pytest.raises(ResultError, match="unreadable JSON"):  # was skipped silently: a row vanished
        load_results(results_dir)
    rep = tmp_path / "rep.json"
    rep.write_text(json.dumps([{"model": "A", "dataset": "vas", "metrics": {"fad": 1.0}, "source": ""}]))
    with pytest.raises(ResultError, match="no source"):
        load_reported(rep)


def test_builtin_reported_rows_are_valid() -> None:
    for row in BUILTIN_ROWS:  # every built-in row names its source and uses known metrics (checked on creation)
        assert row.source and row.protocol == "vaura-paper"


def test_cli_leaderboard_every_format(results_dir: Path, tmp_path: Path) -> None:
    from benchmarks.cli import main

    rep = tmp_path / "reported.json"
    rep.write_text(json.dumps([{"model": "P", "dataset": "vas", "protocol": "vaura-paper",
                                "metrics": {"fad": 3.0}, "source": "paper"}]))
    runner = CliRunner()
    for fmt in ("table", "markdown", "csv", "json", "html"):
        out = tmp_path / f"board.{fmt}"
        res = runner.invoke(main, ["leaderboard", "--results", str(results_dir), "--format", fmt,
                                   "--reported", str(rep), "--out", str(out)])
        assert res.exit_code == 0, res.output
        assert "P" in out.read_text()
    res = runner.invoke(main, ["leaderboard", "--results", str(results_dir), "--dataset", "vggsound"])
    assert res.exit_code == 0 and "ground-truth" in res.output and "vas" not in res.output
