"""VGGSound index: csv parsing (quoted labels), V-AURA clip ids, file-name patterns, missing-clip counts."""

from __future__ import annotations

import pytest

from visualsound.vggsound import (
    VGGSoundIndexError,
    clip_filename,
    clip_id,
    index_clips,
    parse_clip_id,
    read_vggsound_csv,
    resolve_pattern,
    summarize_index,
)

CSV = """---g-f_I2yQ,1,"people marching",test
--0PQM4-hqg,30,waterfall burbling,train
--56QUhyDQM,185,playing tennis,train
-_Lj4Y_96f0,120,"bee, wasp, etc. buzzing",train
--9O4XZOge4,30,"female speech, woman speaking",test
"""


@pytest.fixture
def csv_path(tmp_path):
    p = tmp_path / "vggsound.csv"
    p.write_text(CSV)
    return p


def test_clip_id_format_and_roundtrip():
    assert clip_id("--56QUhyDQM", 185) == "--56QUhyDQM_185000_195000"
    assert clip_id("abc", 0) == "abc_0_10000"
    for ytid, start in [("-_Lj4Y_96f0", 120), ("a_b_c", 7), ("--0PQM4-hqg", 30)]:
        assert parse_clip_id(clip_id(ytid, start)) == (ytid, start)
    assert parse_clip_id("x_1000_11000.mp4") == ("x", 1)
    for bad in ("nounderscore", "x_1000_12000", "x_abc_10000", "_1000_11000"):
        with pytest.raises(VGGSoundIndexError):
            parse_clip_id(bad)


def test_read_csv_quoted_labels(csv_path):
    df = read_vggsound_csv(csv_path)
    assert list(df.columns) == ["clip_id", "youtube_id", "start_seconds", "label", "split"]
    assert len(df) == 5
    row = df.set_index("youtube_id").loc["-_Lj4Y_96f0"]
    assert row["label"] == "bee, wasp, etc. buzzing" and row["start_seconds"] == 120 and row["split"] == "train"
    assert row["clip_id"] == "-_Lj4Y_96f0_120000_130000"
    assert df["start_seconds"].dtype == "int64"


@pytest.mark.parametrize("text,match", [
    ("a,1,label\n", "columns"),
    ("a,1.5,label,train\n", "whole seconds"),
    ("a,1,label,val\n", "split"),
    ("a,1,x,train\na,1,x,train\n", "duplicated"),
    ("", "empty"),
])
def test_read_csv_rejects_malformed(tmp_path, text, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(VGGSoundIndexError, match=match):
        read_vggsound_csv(p)
    with pytest.raises(VGGSoundIndexError, match="not found"):
        read_vggsound_csv(tmp_path / "absent.csv")


def test_patterns():
    assert clip_filename("vggsound", "abc", 7) == "abc_000007.mp4"
    assert clip_filename("vaura", "abc", 7) == "abc_7000_17000.mp4"
    assert clip_filename("{split}/{clip_id}.mp4", "abc", 7, split="test") == "test/abc_7000_17000.mp4"
    with pytest.raises(VGGSoundIndexError, match="bad file-name pattern"):
        resolve_pattern("{nope}.mp4")


@pytest.mark.parametrize("pattern", ["vggsound", "vaura", "{split}/{ytid}_{start:06d}.mp4"])
def test_index_finds_clips_and_counts_missing(tmp_path, csv_path, pattern):
    root = tmp_path / "clips"
    df = read_vggsound_csv(csv_path)
    present = df.iloc[[0, 2, 3]]
    for r in present.itertuples():
        f = root / clip_filename(pattern, r.youtube_id, r.start_seconds, r.label, r.split)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"")
    (root / "unrelated.mp4").write_bytes(b"")
    idx = index_clips(csv_path, root, pattern)
    assert set(idx.loc[idx["exists"], "clip_id"]) == set(present["clip_id"])
    s = summarize_index(idx)
    assert (s.total, s.found, s.missing) == (5, 3, 2)
    assert s.per_split["test"] == {"total": 2, "found": 1, "missing": 1}
    assert s.per_split["train"] == {"total": 3, "found": 2, "missing": 1}
    assert "3/5 clips found" in s.text()
    assert all(p.startswith(str(root)) for p in idx["path"])


def test_index_root_must_exist(tmp_path, csv_path):
    with pytest.raises(VGGSoundIndexError, match="not a folder"):
        index_clips(csv_path, tmp_path / "nothing")
