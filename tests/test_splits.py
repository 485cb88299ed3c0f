"""Score shards (schema, duplicates, merge, resume), `visualsound build` splits, reports and compare, all on
synthetic score tables (no ImageBind model needed)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from visualsound import scores_io as S
from visualsound.report import compare_ids, read_split_lists, threshold_sweep, write_report
from visualsound.splits import VAL_RATIO, assign_splits, build_visualsound, carve_validation
from visualsound.vggsound import clip_id

LABELS = ["dog barking", "playing tennis", "bee, wasp, etc. buzzing", "rare label"]


def make_rows(n: int = 400, seed: int = 0, debug: bool = False) -> list[dict]:
    """Synthetic scored clips: 3 common labels, one label with a single train clip, ~10 % test, a few
    failures of every kind."""
    rng = np.random.default_rng(seed)
    rows = []
    bad_statuses = [s for s in S.STATUSES if s != "ok"]
    for i in range(n):
        label = LABELS[i % 3] if i else LABELS[3]
        split = "test" if i % 10 == 5 else "train"
        status = bad_statuses[i % len(bad_statuses)] if i % 17 == 3 else "ok"
        ok = status == "ok"
        yt = f"vid{i:05d}_x"
        rows.append(dict(
            clip_id=clip_id(yt, i % 50), youtube_id=yt, start_seconds=i % 50, label=label, split=split,
            path=f"/clips/{yt}.mp4", score=float(rng.uniform(0.0, 0.5)) if ok else math.nan, status=status,
            reason="" if ok else f"synthetic {status}", video_fps=25.0 if ok else None,
            duration=10.0 if ok else None, audio_sample_rate=16000 if ok else None,
            audio_channels=1 if ok else None, num_frames=250 if ok else None, score_version="ib-v1",
            debug_weights=debug))
    return rows


@pytest.fixture
def scores_dir(tmp_path):
    rows = make_rows()
    d = tmp_path / "scores"
    S.write_shard(rows[:200], d, meta={"checkpoint_sha256": "ab" * 32, "score_version": "ib-v1"})
    S.write_shard(rows[200:], d, meta={"checkpoint_sha256": "ab" * 32, "score_version": "ib-v1"})
    return d


# -- scores_io ------------------------------------------------------------------------------------------------
def test_shard_roundtrip_schema_and_meta(scores_dir):
    s = S.load_scores(scores_dir)
    assert len(s.shards) == 2 and s.duplicates == 0 and len(s.frame) == 400
    assert list(s.frame.columns) == list(S.COLUMNS)
    assert s.meta["checkpoint_sha256"] == "ab" * 32
    assert s.frame["clip_id"].is_monotonic_increasing
    ok = s.frame["status"] == "ok"
    assert s.frame.loc[ok, "score"].notna().all() and s.frame.loc[~ok, "score"].isna().all()
    assert s.frame.loc[~ok, "audio_sample_rate"].isna().all()
    assert (s.frame.loc[ok, "audio_sample_rate"] == 16000).all()


def test_write_shard_validates_rows(tmp_path):
    row = make_rows(2)[1]
    for bad, match in [({**row, "status": "weird"}, "unknown status"),
                       ({**row, "status": "ok", "score": math.nan}, "finite score"),
                       ({**row, "status": "missing", "score": 0.2}, "must be NaN"),
                       ({k: v for k, v in row.items() if k != "label"}, "missing columns"),
                       ({**row, "extra": 1}, "unexpected columns")]:
        with pytest.raises(S.ScoresSchemaError, match=match):
            S.write_shard([bad], tmp_path / "s")
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").iterdir())


def test_score_statuses_are_the_clip_statuses_plus_ok_and_error():
    """The shard schema's statuses and ImageBind's ClipError statuses are two lists; keep them in step."""
    from visualsound.imagebind.preprocess import STATUSES as CLIP_STATUSES

    assert S.STATUSES == ("ok", *CLIP_STATUSES, "error")


def test_unique_shard_names(tmp_path):
    rows = make_rows(3)
    paths = {S.write_shard(rows, tmp_path) for _ in range(5)}
    assert len(paths) == 5


def test_schema_mismatch_raises(tmp_path, scores_dir):
    df = S.read_scores(scores_dir).drop(columns=["reason"])
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), scores_dir / "zz-bad.parquet")
    with pytest.raises(S.ScoresSchemaError, match="schema mismatch"):
        S.read_scores(scores_dir)


def test_duplicates_resolved_deterministically(tmp_path):
    base = make_rows(4)
    ok = dict(base[1])
    err = {**ok, "status": "error", "score": math.nan, "reason": "boom"}
    newer_ok = {**ok, "score": 0.49}
    d = tmp_path / "s"
    (d).mkdir()
    for name, rows in [("scores-20260101T000000-1-a.parquet", [ok, base[2]]),
                       ("scores-20260102T000000-1-b.parquet", [err]),
                       ("scores-20260103T000000-1-c.parquet", [newer_ok, base[2]])]:
        pq.write_table(S.rows_to_table(rows), d / name)
    s = S.load_scores(d)
    assert s.duplicates == 3 and len(s.frame) == 2
    row = s.frame.set_index("clip_id").loc[ok["clip_id"]]
    assert row["status"] == "ok" and row["score"] == pytest.approx(0.49)  # ok beats error; newest ok wins
    # order of the files on disk / listing does not matter
    assert S.load_scores(d).frame.equals(s.frame)


def test_merge_and_done_ids(tmp_path):
    rows = make_rows(60)
    a, b = tmp_path / "shard0", tmp_path / "shard1"
    S.write_shard(rows[:40], a)
    S.write_shard(rows[30:], b)  # 10 overlapping clips
    merged = S.merge_scores([a, b], tmp_path / "merged")
    assert merged.duplicates == 10 and len(merged.frame) == 60
    again = S.load_scores(tmp_path / "merged")
    assert again.frame.equals(merged.frame) and again.meta["merged_from"] == "2"
    with pytest.raises(S.ScoresSchemaError, match="also an input"):
        S.merge_scores([a], a)
    done = S.done_clip_ids(a)
    errors = {r["clip_id"] for r in rows[:40] if r["status"] == "error"}
    assert done == {r["clip_id"] for r in rows[:40]} - errors
    assert S.done_clip_ids(tmp_path / "not-yet") == set()


# -- splits ---------------------------------------------------------------------------------------------------
def test_carve_is_stratified_deterministic_and_order_free():
    df = pd.DataFrame(make_rows(2000))
    train = df[df["split"] == "train"]
    val = carve_validation(train, seed=7)
    assert val == carve_validation(train.sample(frac=1.0, random_state=3), seed=7)
    assert val != carve_validation(train, seed=8)
    assert abs(len(val) - VAL_RATIO * len(train)) <= 1
    assert clip_id("vid00000_x", 0) not in val  # the single-clip label stays in train
    by_label = train[train["clip_id"].isin(val)]["label"].value_counts(normalize=True)
    expected = train[train["label"] != "rare label"]["label"].value_counts(normalize=True)
    for lab in expected.index:
        assert by_label[lab] == pytest.approx(expected[lab], abs=0.02)


def test_build_outputs_and_idempotency(tmp_path, scores_dir):
    s = S.load_scores(scores_dir)
    out = tmp_path / "vs"
    summary = build_visualsound(s.frame, 0.3, out, meta=s.meta)
    df = s.frame
    kept = df[(df["status"] == "ok") & (df["score"] >= 0.3)]
    assert summary["total_kept"] == len(kept)
    assert summary["counts"]["test"] == int((kept["split"] == "test").sum())
    assert summary["counts"]["train"] + summary["counts"]["validation"] == int((kept["split"] == "train").sum())
    assert summary["rejected"]["below_threshold"] == int(((df["status"] == "ok") & (df["score"] < 0.3)).sum())
    assert sum(v for k, v in summary["rejected"].items() if k != "below_threshold") == int((df["status"] != "ok")
                                                                                          .sum())
    assert summary["checkpoint_sha256"] == "ab" * 32 and summary["debug_weights"] is False
    rate = summary["per_class"]["playing tennis"]
    assert rate["keep_rate"] == pytest.approx(rate["kept"] / rate["total"])

    ids = {sp: (out / f"visualsound_{sp}.txt").read_text().split() for sp in ("train", "validation", "test")}
    assert sorted(ids["test"]) == ids["test"] and set(ids["test"]) == set(kept.loc[kept["split"] == "test",
                                                                                  "clip_id"])
    assert not set(ids["train"]) & set(ids["validation"])
    table = pd.read_parquet(out / "visualsound.parquet")
    assert len(table) == len(kept) and {"score", "status", "visualsound_split"} <= set(table.columns)
    csv = pd.read_csv(out / "visualsound.csv", keep_default_na=False)
    assert list(csv.columns) == ["filename", "start", "desc", "split"] and len(csv) == len(kept)
    assert "bee, wasp, etc. buzzing" in set(csv["desc"])  # quoted label survives
    assert set(csv["split"]) <= {"train", "test"}

    before = {p.name: p.read_bytes() for p in out.iterdir()}
    build_visualsound(s.frame.sample(frac=1.0, random_state=1), 0.3, out, meta=s.meta)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_build_with_val_list_and_stable_split_across_thresholds(tmp_path, scores_dir):
    df = S.read_scores(scores_dir)
    train_ok = df[(df["split"] == "train") & (df["status"] == "ok")]["clip_id"].tolist()
    listed = train_ok[:25] + ["unknown_0_10000"]
    (tmp_path / "val.txt").write_text("\n".join(listed) + "\n\n")
    summary = build_visualsound(df, 0.0, tmp_path / "vs", val_ids=listed)
    assert (tmp_path / "vs" / "visualsound_validation.txt").read_text().split() == sorted(train_ok[:25])
    assert summary["validation"]["listed_ids_not_in_train_scores"] == 1
    # a clip's split does not depend on the threshold
    split = assign_splits(df)
    lo = build_visualsound(df, 0.1, tmp_path / "lo")
    hi = build_visualsound(df, 0.4, tmp_path / "hi")
    val_hi = set((tmp_path / "hi" / "visualsound_validation.txt").read_text().split())
    val_lo = set((tmp_path / "lo" / "visualsound_validation.txt").read_text().split())
    assert val_hi <= val_lo and val_lo <= set(df.loc[split == "validation", "clip_id"])
    assert hi["total_kept"] < lo["total_kept"]


# -- reports --------------------------------------------------------------------------------------------------
def test_threshold_sweep_counts():
    df = pd.DataFrame(make_rows(300))
    sweep = threshold_sweep(df, (0.0, 0.25, 0.6))
    ok = df["status"] == "ok"
    assert sweep.loc[0, "total"] == int(ok.sum())
    assert sweep.loc[1, "total"] == int((ok & (df["score"] >= 0.25)).sum())
    assert sweep.loc[2, "total"] == 0
    assert (sweep[["train", "validation", "test"]].sum(axis=1) == sweep["total"]).all()
    assert sweep.loc[0, "test"] == int((ok & (df["split"] == "test")).sum())
    assert sweep.loc[0, "paper_train"] == 155_591 and pd.isna(sweep.loc[1, "paper_train"])  # Table II beside ours


def test_report_files_and_debug_label(tmp_path):
    df = pd.DataFrame(make_rows(200, debug=True))
    files = write_report(df, tmp_path / "rep", 0.3)
    for k in ("histogram", "class_keep_rate"):
        assert files[k].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = files["markdown"].read_text()
    assert "DEBUG WEIGHTS" in md and "| threshold |" in md and "playing tennis" in md
    sweep = pd.read_csv(files["sweep"])
    assert list(sweep["threshold"]) == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert sweep["paper_train"].fillna(-1).tolist() == [155591, -1, 119469, 77265, 33225]
    # rows without the flag: the label follows the shard metadata, as `visualsound build`'s summary does
    clean = pd.DataFrame(make_rows(200))
    assert "DEBUG WEIGHTS" not in write_report(clean, tmp_path / "clean", 0.3)["markdown"].read_text()
    md = write_report(clean, tmp_path / "meta", 0.3, meta={"debug_weights": "true"})["markdown"].read_text()
    assert "DEBUG WEIGHTS" in md
    assert build_visualsound(clean, 0.3, tmp_path / "vs", meta={"debug_weights": "True"})["debug_weights"] is True


def test_compare_metrics(tmp_path):
    ours = {"train": {"a", "b", "c", "d"}, "validation": set(), "test": {"x"}}
    rel = {"train": {"b", "c", "e"}, "validation": {"v"}, "test": {"x"}}
    t = compare_ids(ours, rel).set_index("split")
    assert t.loc["train", "precision"] == pytest.approx(2 / 4)
    assert t.loc["train", "recall"] == pytest.approx(2 / 3)
    assert t.loc["train", "jaccard"] == pytest.approx(2 / 5)
    assert math.isnan(t.loc["validation", "precision"]) and t.loc["validation", "recall"] == 0
    assert t.loc["all", "common"] == 3 and t.loc["all", "jaccard"] == pytest.approx(3 / 7)
    for name, sets in (("ours", ours), ("rel", rel)):
        for sp, ids in sets.items():
            (tmp_path / name).mkdir(exist_ok=True)
            (tmp_path / name / f"visualsound_{sp}.txt").write_text("".join(f"{i}\n" for i in sorted(ids)))
    assert read_split_lists(tmp_path / "rel") == rel
    (tmp_path / "ours" / "visualsound_validation.txt").write_text("\n")  # blank with a newline: still empty
    assert read_split_lists(tmp_path / "ours")["validation"] == set()


def test_impossible_threshold_is_refused_and_empty_splits_warn(tmp_path, scores_dir):
    """Scores are cosines in [-1, 1]: a threshold of 30 (vbench shows IB x100) kept nothing and exited 0; it is
    refused with the likely meaning. A split that keeps no clip gets a warning (summary.json and the CLI)."""
    from visualsound.cli import main
    from visualsound.splits import SplitError

    df = S.read_scores(scores_dir)
    for bad in (30.0, -1.5, math.nan, math.inf):
        with pytest.raises(SplitError, match=r"outside \[-1, 1\]"):
            build_visualsound(df, bad, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    assert build_visualsound(df, -1.0, tmp_path / "all")["total_kept"] == int((df["status"] == "ok").sum())
    assert "warnings" not in build_visualsound(df, 0.3, tmp_path / "some")
    r = CliRunner()
    res = r.invoke(main, ["build", "--scores", str(scores_dir), "--threshold", "30", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "did you mean 0.30?" in res.output and "outside [-1, 1]" in res.output
    assert not (tmp_path / "x").exists()
    res = r.invoke(main, ["build", "--scores", str(scores_dir), "--threshold", "0.9", "--out", str(tmp_path / "y")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "y" / "summary.json").read_text())
    assert summary["counts"] == {"train": 0, "validation": 0, "test": 0} and len(summary["warnings"]) == 3
    assert summary["warnings"][0].startswith("the train split is empty: the threshold 0.9 rejected all")
    assert res.output.count("WARNING: the ") == 3 and "test split is empty" in res.output


# -- commands -------------------------------------------------------------------------------------------------
def test_cli_merge_build_report_compare(tmp_path, scores_dir):
    from visualsound.cli import main

    r = CliRunner()
    res = r.invoke(main, ["merge", str(scores_dir), "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "m" / "scores-merged.parquet").exists()
    res = r.invoke(main, ["build", "--scores", str(tmp_path / "m"), "--threshold", "0.3", "--out",
                          str(tmp_path / "vs")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "vs" / "summary.json").read_text())
    assert summary["threshold"] == 0.3 and "DEBUG" not in res.output
    res = r.invoke(main, ["report", "--scores", str(scores_dir), "--out", str(tmp_path / "rep"), "--sweep",
                          "0,0.3"])
    assert res.exit_code == 0, res.output
    assert "| threshold |" in res.output and (tmp_path / "rep" / "report.md").exists()
    res = r.invoke(main, ["compare", "--ours", str(tmp_path / "vs"), "--released", str(tmp_path / "vs"),
                          "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert all(row["jaccard"] == 1.0 for row in rows if row["ours"])
    res = r.invoke(main, ["compare", "--ours", str(tmp_path / "vs"), "--released", str(tmp_path)])
    assert res.exit_code == 2 and "missing visualsound_train.txt" in res.output
