"""Leaderboard rendering (every format), result validation, reported rows kept to their own protocol, dataset
identity and the complete official set."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmarks.leaderboard import DEBUG_LABEL, ROUNDED_ZERO_NOTE, LeaderboardError, build_tables, leaderboard
from benchmarks.reported import BUILTIN_ROWS, TABLES, ReportedRow, load_reported, reported_rows
from benchmarks.results import ResultError, load_results, result_filename, validate_result
from tests.conftest import parity_root

AVB = {"FD-PASST": 70.19, "FD-PANN": 5.22, "FD-VGG": 0.79, "KL-PANNS-softmax": 1.65, "KL-PASST-softmax": 1.59,
       "ISC-PANNS-mean": 14.44, "ISC-PANNS-std": 0.5, "ISC-PASST-mean": 12.0, "ISC-PASST-std": 0.4,
       "IB-Score": 0.2913, "DeSync": 0.483}


def make_result(model: str, dataset: str, metrics: dict, protocol: str = "vaura-paper", version: int = 1,
                debug: bool = False, missing: list[str] | None = None, num_clips: int = 10,
                fingerprint: str = "f" * 64, complete: bool = True, notes: dict | None = None) -> dict:
    missing = missing or []
    return {
        "format": "vbench-result", "schema_version": 2,
        "protocol": {"name": protocol, "version": version},
        "dataset": {"name": dataset, "num_clips": num_clips, "fingerprint": fingerprint,
                    "missing_at_build": 0 if complete else 3, "official_clips": None},
        "model": {"name": model, "kind": "dir", "samples_per_clip": 1, "seeds": []},
        "metrics": metrics, "metric_notes": notes or {}, "extractors": {}, "metric_details": {},
        "counts": {"clips": num_clips - len(missing), "samples": num_clips - len(missing), "missing": len(missing),
                   "missing_ids": missing},
        "timings": {}, "software": {"version": "0.1"}, "created": "2026-01-01T00:00:00+00:00",
        "debug_weights": debug,
    }


def _write(folder: Path, *results: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(results):
        name = result_filename(f"{r['model']['name']}-{i}", r["dataset"]["name"], r["protocol"]["name"],
                               r["debug_weights"])
        (folder / name).write_text(json.dumps(r))
    return folder


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    folder = _write(tmp_path / "results",
                    make_result("vaura", "vas", {"fad": 1.5, "kld": 2.25, "ib": 30.0, "sync_ms": 40.0}, debug=True),
                    make_result("dir:frieren", "vas", {"fad": 1.0, "kld": 2.5, "ib": 25.0, "sync_ms": 80.0},
                                missing=["a", "b"]),
                    make_result("ground-truth", "vggsound", {"fad": -0.0001, "kld": 0.0, "ib": 33.0, "sync_ms": 12.0}),
                    make_result("mmaudio", "vas", AVB, protocol="av-benchmark"))
    (folder / "cache").mkdir()
    (folder / "cache" / "manifest.json").write_text(json.dumps({"extractor": "vggish"}))  # not a result
    return folder


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


def test_tables_group_by_dataset_protocol_and_manifest(results_dir: Path) -> None:
    results = load_results(results_dir)
    assert len(results) == 4  # the cache manifest is not taken for a result
    tables = build_tables(results, REPORTED)
    assert [(t.dataset, t.protocol) for t in tables] == [("vas", "av-benchmark"), ("vas", "vaura-paper"),
                                                         ("vggsound", "vaura-paper")]
    avb, paper, vgg = tables
    assert [r.origin for r in avb.rows] == ["measured"]  # reported rows never join another protocol
    assert [(r.model, r.origin) for r in paper.rows] == [("dir:frieren", "measured"), ("vaura", "measured"),
                                                         ("Paper model", "reported")]
    assert [m.key for m in avb.metrics()] == ["FD-PASST", "FD-PANN", "FD-VGG", "KL-PANNS-softmax",
                                              "KL-PASST-softmax", "ISC-PANNS-mean", "ISC-PASST-mean", "IB-Score",
                                              "DeSync"]  # the IS standard deviations are stored, not tabulated
    assert build_tables(results, REPORTED, dataset="vggsound")[0].rows[0].model == "ground-truth"


def test_manifests_sharing_a_name_never_share_a_table() -> None:
    """A 3-clip and an 8-clip manifest both named vggsound-sparse: two tables, each saying which it is, and the
    paper's rows beside neither (neither is the complete official set of 444 clips)."""
    small = make_result("vaura", "vggsound-sparse", {"fad": 1.0}, num_clips=3, fingerprint="a" * 64)
    big = make_result("vaura", "vggsound-sparse", {"fad": 2.0}, num_clips=8, fingerprint="b" * 64)
    tables = build_tables([small, big], reported_rows())
    assert len(tables) == 2 and {t.num_clips for t in tables} == {3, 8}
    assert all(t.show_identity for t in tables)
    assert [t.title for t in tables] == ["vggsound-sparse [manifest aaaaaaaa, 3 clips] -- protocol vaura-paper v1",
                                         "vggsound-sparse [manifest bbbbbbbb, 8 clips] -- protocol vaura-paper v1"]
    for t in tables:
        assert [r.origin for r in t.rows] == ["measured"]
        assert any("3 of the official 444" in n or "8 of the official 444" in n for n in t.footnotes), t.footnotes
    full = make_result("vaura", "vggsound-sparse", {"fad": 2.0}, num_clips=444, fingerprint="c" * 64)
    (t,) = build_tables([full], reported_rows(tables=["I"]))
    assert [r.model for r in t.rows if r.origin == "reported"] == ["Diff-Foley", "Frieren", "SpecVQGAN", "V-AURA"]
    gaps = make_result("vaura", "vggsound-sparse", {"fad": 2.0}, num_clips=444, missing=["x"])
    (t,) = build_tables([gaps], reported_rows(tables=["I"]))
    assert [r.origin for r in t.rows] == ["measured"] and "1 clips had no usable output" in t.footnotes[0]


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
    assert "IB-score (x100) ↑" in text and "DeSync (s) ↓" in text and "FD_PaSST ↓" in text
    assert "29.13" in text and "0.483" in text  # IB-Score 0.2913 shown x100; DeSync in seconds
    assert "-0.00" not in text and ROUNDED_ZERO_NOTE in text  # the ground truth's FAD of -1e-4
    if fmt == "markdown":
        assert "### vas" in text and "|---|" in text


def test_undefined_metric_shows_na_with_its_note() -> None:
    r = make_result("m", "vas", {**AVB, "ISC-PANNS-mean": None}, protocol="av-benchmark",
                    notes={"ISC-PANNS-mean": "NaN as in the original: 8 generated clips < 10 splits"})
    text = leaderboard_from([r], "table")
    assert "n/a" in text and "ISC-PANNS-mean n/a: NaN as in the original" in text
    data = json.loads(leaderboard_from([r], "json"))
    assert data[0]["rows"][0]["metrics"]["ISC-PANNS-mean"] is None
    del r["metric_notes"]["ISC-PANNS-mean"]
    with pytest.raises(ResultError, match="null without a note"):
        validate_result(r)


def leaderboard_from(results: list[dict], fmt: str) -> str:
    from benchmarks.leaderboard import RENDERERS

    return RENDERERS[fmt](build_tables(results))


def test_csv_and_json(results_dir: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(leaderboard(results_dir, "csv", reported=REPORTED))))
    assert len(rows) == 5
    vaura = next(r for r in rows if r["model"] == "vaura" and r["protocol"] == "vaura-paper")
    assert vaura["debug_weights"] == "True" and float(vaura["kld"]) == 2.25 and vaura["origin"] == "measured"
    assert vaura["FD-PASST"] == "" and vaura["dataset_fingerprint"] == "f" * 64
    mm = next(r for r in rows if r["protocol"] == "av-benchmark")
    assert float(mm["IB-Score"]) == 0.2913 and float(mm["DeSync"]) == 0.483 and mm["fad"] == ""  # stored units
    reported = next(r for r in rows if r["origin"] == "reported")
    assert reported["source"] == "test source" and reported["ib"] == ""
    data = json.loads(leaderboard(results_dir, "json", dataset="vggsound"))
    assert len(data) == 1 and data[0]["rows"][0]["metrics"]["ib"] == 33.0


def test_html_has_a_chart_per_metric(results_dir: Path) -> None:
    page = leaderboard(results_dir, "html", reported=REPORTED)
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 9 + 4 + 4  # av-benchmark: 9 shown metrics; the two vaura-paper tables: 4 each
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
    assert "metric fad must be a finite number" in str(err.value) and "unknown vaura-paper metric 'bleu'" in str(
        err.value)
    assert "counts.missing = 3 but 0 missing_ids" in str(err.value)
    with pytest.raises(ResultError, match="unknown protocol 'other'"):
        validate_result(make_result("m", "vas", {"fad": 1.0}, protocol="other"))
    with pytest.raises(ResultError, match="unknown av-benchmark metric 'fad'"):
        validate_result(make_result("m", "vas", {"fad": 1.0}, protocol="av-benchmark"))
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
    with pytest.raises(ResultError, match="unknown reported table"):
        reported_rows(tables=["V"])


def test_schema_version_1_results_are_still_read() -> None:
    old = make_result("vaura", "vas", {"fad": 1.0})
    old["schema_version"] = 1
    del old["metric_notes"]
    validate_result(old)
    old["schema_version"] = 3
    with pytest.raises(ResultError, match="schema_version 3"):
        validate_result(old)


# ------------------------------------------------------------------------------------------------ built-in rows
def _paper_tables() -> dict[str, list[list[str]]]:
    """The published tables from ``<shared>/paper/tables.md`` (an independent transcription of the paper), by
    their heading, as rows of cells; missing file: skip, or fail under CI=true."""
    path = parity_root().parent / "paper" / "tables.md"
    if not path.is_file():
        msg = f"shared paper tables missing: {path}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    tables: dict[str, list[list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        if line.startswith("## Table "):
            current = line.split(":")[0][3:]
            tables[current] = []
        elif current and line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if cells[0] not in ("dataset", "threshold", "method", "CFG"):
                tables[current].append(cells)
    return tables


DATASETS = {"VGGSound": "vggsound", "VAS": "vas", "VGGSound-Sparse": "vggsound-sparse", "VisualSound": "visualsound"}


def test_builtin_rows_are_the_published_tables() -> None:
    tables = _paper_tables()
    by_table = {t: [r for r in BUILTIN_ROWS if r.extra.get("table") == t] for t in TABLES}
    table_i = {(r.dataset, r.model): r for r in by_table["I"]}
    assert len(table_i) == len(tables["Table I"]) == 15  # with VAS (no Frieren row there)
    for ds, method, kind, kld, fad, ib, sync in tables["Table I"]:
        row = table_i[DATASETS[ds], method]
        assert row.metrics == {"kld": float(kld), "fad": float(fad), "ib": float(ib), "sync_ms": float(sync)}
        assert row.extra["type"] == kind and row.protocol == "vaura-paper" and "ICASSP 2025" in row.source
        assert row.samples_per_clip == (3 if ds == "VAS" else None)
    for name, rows, key in (("Table II", by_table["II"], "threshold"), ("Table III", by_table["III"], "conditioning"),
                            ("Table IV", by_table["IV"], "cfg")):
        assert len(rows) == len(tables[name])
        for cells, row in zip(tables[name], rows):
            setting = cells[0].split(" ")[0]
            assert str(row.extra[key]) == setting or float(row.extra[key]) == float(setting), (cells, row.extra)
            assert [row.metrics[k] for k in ("kld", "fad", "ib", "sync_ms")] == [float(c) for c in cells[-4:]]
            assert row.dataset == "vggsound-sparse" and ("chosen" in cells[0]) == ("paper's choice" in row.model)
    for cells, row in zip(tables["Table II"], by_table["II"]):
        assert row.extra["training_samples"] == int(cells[1].replace(",", "")) and row.extra["train_gpu_hours"] == int(
            cells[2])
    assert all(r.samples_per_clip == 3 for r in by_table["IV"])


def test_mmaudio_rows_use_the_av_benchmark_units() -> None:
    rows = {r.model: r for r in BUILTIN_ROWS if r.extra.get("table") == "MMAudio 1"}
    assert {"V-AURA", "MMAudio-S-16kHz", "MMAudio-L-44.1kHz", "Frieren", "FoleyCrafter"} <= set(rows)
    for r in rows.values():
        assert r.protocol == "av-benchmark" and r.dataset == "vggsound-test" and r.samples_per_clip == 1
        assert 0 < r.metrics["IB-Score"] < 1 and 0 < r.metrics["DeSync"] < 2  # a cosine; seconds
        assert "2412.15322" in r.source and "not verified" in r.note
    assert rows["V-AURA"].metrics["IB-Score"] == 0.2764 and rows["V-AURA"].extra["seconds_per_8s_clip"] == 16.55
    assert rows["MMAudio-S-16kHz"].extra["seconds_per_8s_clip"] == 1.23
    with pytest.raises(ResultError, match="unknown metric 'ib' for protocol av-benchmark"):
        ReportedRow(model="m", dataset="vggsound-test", protocol="av-benchmark", metrics={"ib": 1.0}, source="s")
    assert reported_rows(builtin=False) == [] and reported_rows() == list(BUILTIN_ROWS)


@pytest.fixture
def sparse_dir(tmp_path: Path) -> Path:
    """Measured results on the complete vggsound-sparse (444 clips) under both protocols."""
    return _write(tmp_path / "results",
                  make_result("vaura", "vggsound-sparse", {"fad": 7.25, "kld": 2.5, "ib": 20.0, "sync_ms": 90.0},
                              num_clips=444),
                  make_result("vaura", "vggsound-sparse", AVB, protocol="av-benchmark", num_clips=444))


def test_builtin_rows_only_in_tables_of_their_dataset_and_protocol(sparse_dir: Path) -> None:
    tables = build_tables(load_results(sparse_dir), reported_rows(tables=["I"]))
    by_key = {(t.dataset, t.protocol): t for t in tables}  # no tables of paper rows alone (vggsound, visualsound)
    assert sorted(by_key) == [("vggsound-sparse", "av-benchmark"), ("vggsound-sparse", "vaura-paper")]
    assert [r.origin for r in by_key["vggsound-sparse", "av-benchmark"].rows] == ["measured"]
    paper = by_key["vggsound-sparse", "vaura-paper"]
    assert [(r.label, r.metrics.get("fad")) for r in paper.rows] == [
        ("vaura", 7.25), ("Diff-Foley [reported]", 8.92), ("Frieren [reported]", 2.79),
        ("SpecVQGAN [reported]", 12.93), ("V-AURA [reported]", 3.55)]
    assert build_tables(load_results(sparse_dir), reported_rows(), dataset="vas") == []
    vas = make_result("vaura", "vas", {"fad": 1.0})  # complete VAS: its published rows join
    assert [r.model for t in build_tables([vas], reported_rows(tables=["I"])) for r in t.rows] == [
        "vaura", "Diff-Foley", "SpecVQGAN", "V-AURA"]
    mine = ReportedRow(model="Mine", dataset="vggsound", protocol="vaura-paper", metrics={"fad": 1.0}, source="s")
    (alone,) = build_tables([], [mine, *BUILTIN_ROWS])  # a user's row still gets a table; paper rows do not join it
    assert [r.model for r in alone.rows] == ["Mine"]
    (empty := sparse_dir.parent / "empty").mkdir()
    with pytest.raises(LeaderboardError, match="no results"):  # paper rows alone do not hide an empty folder
        leaderboard(empty, "table", reported=reported_rows())


def test_mmaudio_rows_beside_a_complete_vggsound_test(tmp_path: Path) -> None:
    ours = make_result("vaura", "vggsound-test", AVB, protocol="av-benchmark", num_clips=15220)
    (t,) = build_tables([ours], reported_rows())
    assert {r.model for r in t.rows if r.origin == "reported"} >= {"MMAudio-L-44.1kHz", "V-AURA"}
    partial = make_result("vaura", "vggsound-test", AVB, protocol="av-benchmark", num_clips=14000)
    (t,) = build_tables([partial], reported_rows())
    assert [r.origin for r in t.rows] == ["measured"] and "14000 of the official 15220" in t.footnotes[0]


def test_cli_tables_and_paper_flags(sparse_dir: Path, tmp_path: Path) -> None:
    from benchmarks.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["leaderboard", "--results", str(sparse_dir), "--format", "csv"])
    assert res.exit_code == 0, res.output
    rep = [r for r in csv.DictReader(io.StringIO(res.output)) if r["origin"] == "reported"]
    assert len(rep) == 4 + 4 + 2 + 6  # Tables I-IV on vggsound-sparse; MMAudio's rows are on vggsound-test
    res = runner.invoke(main, ["leaderboard", "--results", str(sparse_dir), "--format", "csv", "--tables", "II"])
    rep = [r for r in csv.DictReader(io.StringIO(res.output)) if r["origin"] == "reported"]
    assert [r["model"] for r in rep] == ["V-AURA (threshold 0.0)", "V-AURA (threshold 0.2)",
                                        "V-AURA (threshold 0.3, the paper's choice)", "V-AURA (threshold 0.4)"]
    res = runner.invoke(main, ["leaderboard", "--results", str(sparse_dir), "--no-paper-rows"])
    assert res.exit_code == 0 and "reported" not in res.output, res.output
    mine = tmp_path / "mine.json"  # a --reported file is still shown without the built-in rows
    mine.write_text(json.dumps([{"model": "Mine", "dataset": "vggsound-sparse", "metrics": {"fad": 4.0},
                                 "source": "my paper"}]))
    res = runner.invoke(main, ["leaderboard", "--results", str(sparse_dir), "--no-paper-rows", "--reported", str(mine)])
    assert res.exit_code == 0 and "Mine [reported]" in res.output and "V-AURA" not in res.output, res.output
    missing = tmp_path / "none"
    res = runner.invoke(main, ["leaderboard", "--results", str(missing), "--paper", "--format", "csv"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.output)))
    assert len(rows) == len(BUILTIN_ROWS) and {r["origin"] for r in rows} == {"reported"}
    (vis,) = [r for r in rows if r["model"] == "V-AURA" and r["dataset"] == "visualsound"]
    assert float(vis["ib"]) == 29.50 and float(vis["kld"]) == 1.76
    res = runner.invoke(main, ["leaderboard", "--results", str(missing), "--paper", "--dataset", "vas"])
    assert res.exit_code == 0 and "V-AURA [reported]" in res.output  # the published table has VAS rows
    res = runner.invoke(main, ["leaderboard", "--results", str(missing)])
    assert res.exit_code != 0 and "not found" in res.output
    res = runner.invoke(main, ["leaderboard", "--results", str(missing), "--paper", "--no-paper-rows"])
    assert res.exit_code != 0 and "contradict" in res.output


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


def test_rounded_zero_note_gives_the_kld_epsilon_as_the_cause() -> None:
    """The ground truth's KLD against itself (-0.000527 in a real run) is not float rounding: the KLD adds 1e-6 to
    the generated probabilities inside the logarithm, so KL(p || p) is about -1e-6 per class, -527e-6 over PaSST's
    527 classes. The footnote says so (it used to call it float rounding of an exact zero)."""
    import torch

    from benchmarks.metrics.kld import kl_per_pair

    p = torch.softmax(torch.randn(8, 527, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert kl_per_pair(p, p).tolist() == pytest.approx([-527e-6] * 8, rel=0.05)
    assert kl_per_pair(p, p, eps=0.0).abs().max() < 1e-5  # without the epsilon: zero up to float rounding
    assert "1e-6" in ROUNDED_ZERO_NOTE and "-527e-6" in ROUNDED_ZERO_NOTE and "KLD" in ROUNDED_ZERO_NOTE
    assert not re.search(r"KLD[^;]*float rounding", ROUNDED_ZERO_NOTE)
