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
from benchmarks.reported import BUILTIN_ROWS, ReportedRow, load_reported, reported_rows
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


# An independent transcription of Table I (the author's image, see benchmarks/reported.py): KLD, FAD, IB x100, Sync ms.
TABLE_I = {
    "vggsound": {"SpecVQGAN": (3.16, 6.41, 10.09, 409), "Diff-Foley": (3.23, 5.62, 16.88, 321),
                 "Frieren": (2.95, 1.43, 19.56, 277), "V-AURA": (2.31, 1.92, 25.01, 155)},
    "vggsound-sparse": {"SpecVQGAN": (3.56, 12.93, 11.01, 411), "Diff-Foley": (2.87, 8.92, 22.08, 302),
                        "Frieren": (2.70, 2.79, 22.72, 236), "V-AURA": (1.93, 3.55, 28.92, 49)},
    "visualsound": {"SpecVQGAN": (3.41, 9.02, 10.87, 423), "Diff-Foley": (2.84, 7.24, 19.79, 338),
                    "Frieren": (2.45, 2.03, 23.39, 285), "V-AURA": (1.76, 3.27, 29.50, 138)},
}
TYPES = {"SpecVQGAN": "AR", "Diff-Foley": "DM", "Frieren": "RFM", "V-AURA": "AR"}


def test_builtin_rows_are_table_i() -> None:
    from benchmarks.datasets import BUILTINS

    got = {(r.dataset, r.model): r for r in BUILTIN_ROWS}
    assert len(BUILTIN_ROWS) == len(got) == 12  # no duplicates; VAS is not in the table, so no VAS rows
    assert sorted(got) == sorted((ds, m) for ds, rows in TABLE_I.items() for m in rows)
    for (ds, model), row in got.items():
        kld, fad, ib, sync = TABLE_I[ds][model]
        assert row.metrics == {"kld": kld, "fad": fad, "ib": ib, "sync_ms": sync}, (ds, model, row.metrics)
        assert row.protocol == "vaura-paper" and ds in BUILTINS and row.extra["type"] == TYPES[model]
        assert "2409.13689" in row.source and "72987e576a92b145017ed138369b0e685358081c" in row.source
        assert "pre-publication" in row.source and "camera-ready" in row.note


def test_builtin_rows_use_our_protocol_and_units() -> None:
    from benchmarks.evaluate import PROTOCOLS

    assert {r.protocol for r in BUILTIN_ROWS} <= set(PROTOCOLS)
    for r in BUILTIN_ROWS:  # our results store IB x100 (tens, not fractions) and Sync in ms (not seconds)
        assert 1 < r.metrics["ib"] < 100 and r.metrics["sync_ms"] > 10, r
    with pytest.raises(ResultError, match="unknown metric 'ib_x100'"):  # validation runs on every row, built-ins too
        ReportedRow(model="m", dataset="vggsound", protocol="vaura-paper", metrics={"ib_x100": 1.0}, source="s")
    assert reported_rows(builtin=False) == [] and reported_rows() == list(BUILTIN_ROWS)


@pytest.fixture
def sparse_dir(tmp_path: Path) -> Path:
    """A measured vaura-paper result on vggsound-sparse, and one of another protocol on the same dataset."""
    folder = tmp_path / "results"
    folder.mkdir()
    for r in (make_result("vaura", "vggsound-sparse", {"fad": 7.25, "kld": 2.5, "ib": 20.0, "sync_ms": 90.0}),
              make_result("vaura", "vggsound-sparse", {"fad": 8.5}, protocol="other-protocol")):
        (folder / result_filename("vaura", "vggsound-sparse", r["protocol"]["name"], False)).write_text(json.dumps(r))
    return folder


def test_builtin_rows_only_in_tables_of_their_dataset_and_protocol(sparse_dir: Path) -> None:
    tables = build_tables(load_results(sparse_dir), reported_rows())
    by_key = {(t.dataset, t.protocol): t for t in tables}  # no tables of paper rows alone (vggsound, visualsound)
    assert sorted(by_key) == [("vggsound-sparse", "other-protocol"), ("vggsound-sparse", "vaura-paper")]
    assert [r.origin for r in by_key["vggsound-sparse", "other-protocol"].rows] == ["measured"]
    paper = by_key["vggsound-sparse", "vaura-paper"]
    assert [(r.label, r.metrics.get("fad")) for r in paper.rows] == [
        ("vaura", 7.25), ("Diff-Foley [reported]", 8.92), ("Frieren [reported]", 2.79),
        ("SpecVQGAN [reported]", 12.93), ("V-AURA [reported]", 3.55)]
    for (ds, _), t in by_key.items():  # every reported row sits in the table of its own dataset
        assert all(TABLE_I[ds][r.model][1] == r.metrics["fad"] for r in t.rows if r.origin == "reported")
    assert build_tables(load_results(sparse_dir), reported_rows(), dataset="vas") == []  # Table I has no VAS
    vas = make_result("vaura", "vas", {"fad": 1.0})
    assert [r.origin for t in build_tables([vas], reported_rows()) for r in t.rows] == ["measured"]
    mine = ReportedRow(model="Mine", dataset="vggsound", protocol="vaura-paper", metrics={"fad": 1.0}, source="s")
    (alone,) = build_tables([], [mine, *BUILTIN_ROWS])  # a user's row still gets a table; paper rows do not join it
    assert [r.model for r in alone.rows] == ["Mine"]
    (empty := sparse_dir.parent / "empty").mkdir()
    with pytest.raises(LeaderboardError, match="no results"):  # paper rows alone do not hide an empty folder
        leaderboard(empty, "table", reported=reported_rows())


def _sparse_vaura_line(text: str, fmt: str) -> str:
    """The reported V-AURA row of the vggsound-sparse vaura-paper table in a text/markdown/html rendering."""
    if fmt == "html":
        section = text.split("<h2>vggsound-sparse -- protocol vaura-paper v1</h2>")[1].split("</table>")[0]
        return next(line for line in section.splitlines() if "V-AURA" in line)
    section = text.split("vggsound-sparse -- protocol vaura-paper v1")[1].split(" -- protocol ")[0]
    return next(line for line in section.splitlines() if "V-AURA" in line)


def test_cli_shows_builtin_rows_in_every_format_unless_told_not_to(sparse_dir: Path, tmp_path: Path) -> None:
    from benchmarks.cli import main

    runner = CliRunner()
    for fmt in ("table", "markdown", "csv", "json", "html"):
        res = runner.invoke(main, ["leaderboard", "--results", str(sparse_dir), "--format", fmt])
        assert res.exit_code == 0, res.output
        text = res.output
        if fmt == "csv":
            rows = list(csv.DictReader(io.StringIO(text)))
            rep = [r for r in rows if r["origin"] == "reported"]
            assert len(rep) == 4  # only the paper rows of the measured dataset and protocol
            assert {(r["dataset"], r["protocol"]) for r in rep} == {("vggsound-sparse", "vaura-paper")}
            (vaura,) = [r for r in rep if r["model"] == "V-AURA" and r["dataset"] == "vggsound-sparse"]
            assert float(vaura["fad"]) == 3.55 and float(vaura["sync_ms"]) == 49 and "72987e5" in vaura["source"]
        elif fmt == "json":
            data = {(t["dataset"], t["protocol"]): t["rows"] for t in json.loads(text)}
            assert all(r["origin"] == "measured" for r in data["vggsound-sparse", "other-protocol"])
            (vaura,) = [r for r in data["vggsound-sparse", "vaura-paper"] if r["model"] == "V-AURA"]
            assert vaura["origin"] == "reported" and vaura["metrics"]["fad"] == 3.55
        else:
            line = _sparse_vaura_line(text, fmt)
            assert "V-AURA [reported]" in line and "3.55" in line and "28.92" in line, line
            other = text.split("vggsound-sparse -- protocol other-protocol")[1].split("protocol vaura-paper")[0]
            assert "reported" not in other and "V-AURA" not in other
            if fmt == "html":
                assert line.startswith("<tr class='reported'>")
                images = re.findall(r"src='data:image/png;base64,", text)
                assert len(images) == 1 + 4  # other-protocol: FAD only; the vaura-paper table: 4 metrics
    res = runner.invoke(main, ["leaderboard", "--results", str(sparse_dir), "--format", "csv", "--no-paper-rows"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.output)))
    assert [(r["dataset"], r["origin"]) for r in rows] == [("vggsound-sparse", "measured")] * 2
    rep = tmp_path / "mine.json"  # a --reported file is still shown without the built-in rows
    rep.write_text(json.dumps([{"model": "Mine", "dataset": "vggsound-sparse", "metrics": {"fad": 4.0},
                                "source": "my paper"}]))
    res = runner.invoke(main, ["leaderboard", "--results", str(sparse_dir), "--no-paper-rows", "--reported", str(rep)])
    assert res.exit_code == 0 and "Mine [reported]" in res.output and "V-AURA" not in res.output, res.output


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


def test_cli_paper_shows_table_i_without_results(tmp_path: Path) -> None:
    """``--paper`` renders the built-in Table I for its three datasets even with no results folder; without it a
    missing folder is an error, and ``--paper`` with ``--no-paper-rows`` is refused."""
    from benchmarks.cli import main

    runner = CliRunner()
    missing = tmp_path / "none"
    res = runner.invoke(main, ["leaderboard", "--results", str(missing), "--paper", "--format", "csv"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.output)))
    assert len(rows) == 12 and {r["origin"] for r in rows} == {"reported"}
    assert {r["dataset"] for r in rows} == {"vggsound", "vggsound-sparse", "visualsound"}
    (vis,) = [r for r in rows if r["model"] == "V-AURA" and r["dataset"] == "visualsound"]
    assert float(vis["ib"]) == 29.50 and float(vis["kld"]) == 1.76
    res = runner.invoke(main, ["leaderboard", "--results", str(missing), "--paper", "--dataset", "vas"])
    assert res.exit_code != 0 and "no results" in res.output  # VAS is not in Table I
    res = runner.invoke(main, ["leaderboard", "--results", str(missing)])
    assert res.exit_code != 0 and "not found" in res.output
    res = runner.invoke(main, ["leaderboard", "--results", str(missing), "--paper", "--no-paper-rows"])
    assert res.exit_code != 0 and "contradict" in res.output
