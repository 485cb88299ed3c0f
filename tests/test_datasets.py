"""Dataset manifests: built-in builders on synthetic and fake list files, strict reading, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmarks.datasets import (
    BUILTINS,
    DatasetError,
    build_dataset,
    load_manifest,
    read_start_csv,
    read_vggsound_list,
    resolve_dataset,
)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    from visualsound.synth import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("synth")
    synthesize(root, SynthConfig.preset("tiny").replace(count=3, duration=1.2, test_fraction=0.67))
    return root


def _copy_as(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())


def test_synthetic_manifest_round_trip(synth_root: Path, tmp_path: Path) -> None:
    ds = build_dataset("synthetic", synth_root)
    events = json.loads((synth_root / "events.json").read_text())["clips"]
    test_ids = [r["ytid"] for r in events if r["split"] == "test"]
    assert ds.ids == test_ids and len(ds.ids) == 2
    for clip in ds.clips:  # 1.2 s clips keep a shortened window, events come from events.json
        assert clip.window_sec == pytest.approx(1.2, abs=0.05) and clip.window_sec < ds.window_sec
        rec = next(r for r in events if r["ytid"] == clip.id)
        assert list(clip.events) == rec["visual_events"] and clip.label == rec["label"]
    path = ds.save(tmp_path / "synthetic.json")
    again = load_manifest(path)
    assert again.clips == ds.clips and again.fingerprint() == ds.fingerprint()
    assert resolve_dataset("synthetic", tmp_path).ids == ds.ids
    all_clips = build_dataset("synthetic", synth_root, split="all")
    assert len(all_clips.clips) == 3 and all_clips.fingerprint() != ds.fingerprint()


def test_vggsound_sparse_from_start_csv(synth_root: Path, tmp_path: Path) -> None:
    video = next((synth_root / "video").iterdir())
    root = tmp_path / "clips"
    _copy_as(video, root / "abc_def_30000_40000.mp4")
    _copy_as(video, root / "x-y_0_10000.mp4")
    lst = tmp_path / "sparse.csv"
    lst.write_text("file,start_sec\nabc_def_30000_40000,0.2\nx-y_0_10000.mp4,0.0\nmissing1_0_10000,1.0\n")
    with pytest.raises(DatasetError, match="1 of 3 listed clips are missing.*missing1_0_10000"):
        build_dataset("vggsound-sparse", root, list_file=lst)
    ds = build_dataset("vggsound-sparse", root, list_file=lst, allow_missing=True)
    assert ds.ids == ["abc_def_30000_40000", "x-y_0_10000"] and ds.missing == ("missing1_0_10000",)
    assert [c.start_sec for c in ds.clips] == [0.2, 0.0]
    assert ds.clips[0].window_sec == pytest.approx(1.0, abs=0.05)  # 1.2 s file, window from 0.2 s
    assert ds.sources[0]["role"] == "list" and len(ds.sources[0]["sha256"]) == 64


def test_vggsound_official_csv_and_id_list(synth_root: Path, tmp_path: Path) -> None:
    video = next((synth_root / "video").iterdir())
    _copy_as(video, tmp_path / "clips" / "aaa_000010.mp4")
    csv = tmp_path / "vggsound.csv"
    csv.write_text('aaa,10,"dog, barking",test\nbbb,0,cat,train\n')
    assert read_vggsound_list(csv) == [("aaa_10000_20000", None, "dog, barking")]
    ds = build_dataset("vggsound", tmp_path / "clips", list_file=csv, pattern="{ytid}_{start:06d}.mp4")
    assert ds.ids == ["aaa_10000_20000"] and ds.clips[0].label == "dog, barking"
    starts = tmp_path / "starts.csv"
    starts.write_text("file,start_sec\naaa_10000_20000,0.1\n")
    ids = tmp_path / "visualsound_test.txt"
    ids.write_text("aaa_10000_20000\n\n")
    vs = build_dataset("visualsound", tmp_path / "clips", list_file=ids, pattern="{ytid}_{start:06d}.mp4",
                       starts=starts)
    assert vs.clips[0].start_sec == 0.1 and [s["role"] for s in vs.sources] == ["list", "starts"]
    vs_csv = tmp_path / "visualsound.csv"
    vs_csv.write_text("filename,start,desc,split\naaa,10,\"dog, barking\",test\nbbb,0,cat,train\n")
    assert read_vggsound_list(vs_csv) == [("aaa_10000_20000", None, "dog, barking")]


def test_vas_drops_fireworks(synth_root: Path, tmp_path: Path) -> None:
    video = next((synth_root / "video").iterdir())
    root = tmp_path / "vas"
    for line in ("dog/video_00001", "fireworks/video_00002"):
        _copy_as(video, root / f"{line}.mp4")
    lst = tmp_path / "vas_valid.txt"
    lst.write_text("dog/video_00001\nfireworks/video_00002\n")
    ds = build_dataset("vas", root, list_file=lst)
    assert ds.ids == ["dog-video_00001"] and ds.clips[0].label == "dog" and "1 fireworks" in ds.notes


def test_bad_inputs_raise(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("file,start_sec\na_0_10000,1\na_0_10000,2\n")
    with pytest.raises(DatasetError, match="listed twice"):
        read_start_csv(bad)
    with pytest.raises(DatasetError, match="unknown dataset"):
        build_dataset("audiocaps", tmp_path)
    with pytest.raises(DatasetError, match="needs --list"):
        build_dataset("vas", tmp_path)
    # options that do not apply are refused, not ignored (a vggsound --split train built the test split)
    with pytest.raises(DatasetError, match="applies to synthetic only"):
        build_dataset("vggsound", tmp_path, list_file=bad, split="train")
    with pytest.raises(DatasetError, match="takes no --starts"):
        build_dataset("synthetic", tmp_path, starts=bad)
    with pytest.raises(DatasetError, match="not built"):
        resolve_dataset("vas", tmp_path)
    not_manifest = tmp_path / "x.json"
    not_manifest.write_text(json.dumps({"format": "something"}))
    with pytest.raises(DatasetError, match="not a vbench dataset manifest"):
        load_manifest(not_manifest)


def test_an_unknown_dataset_name_says_how_to_build_it(tmp_path: Path, monkeypatch) -> None:
    """`vbench evaluate --dataset emptydir` (neither a built-in nor a manifest) said "build it with a manifest path";
    it names `vbench datasets build NAME --videos DIR` and where names are looked up."""
    from benchmarks.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VBENCH_DATASETS", raising=False)
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(DatasetError) as err:
        resolve_dataset("emptydir")
    msg = str(err.value)
    assert "`vbench datasets build emptydir --videos emptydir`, then pass --dataset emptydir" in msg
    assert "looked up as NAME.json in vbench-datasets" in msg and "$VBENCH_DATASETS" in msg
    assert "build it with a manifest path" not in msg
    with pytest.raises(DatasetError) as err:
        resolve_dataset("myset", tmp_path / "mine")
    msg = str(err.value)
    assert f"`vbench datasets build myset --videos DIR --out {tmp_path / 'mine' / 'myset.json'}`" in msg
    assert f"looked up as NAME.json in {tmp_path / 'mine'}" in msg and "manifest's .json path" in msg
    with pytest.raises(DatasetError, match=r"`vbench datasets build vas --root DIR`"):
        resolve_dataset("vas")
    res = CliRunner().invoke(main, ["evaluate", "--model", "ground-truth", "--dataset", "emptydir",
                                    "--debug-weights"])
    assert res.exit_code == 2 and "vbench datasets build emptydir --videos emptydir" in res.output, res.output


def test_cli_list_build_show(synth_root: Path, tmp_path: Path) -> None:
    from benchmarks.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["datasets", "list", "--dir", str(tmp_path)])
    assert res.exit_code == 0 and all(name in res.output for name in BUILTINS)
    out = tmp_path / "synthetic.json"
    res = runner.invoke(main, ["datasets", "build", "synthetic", "--root", str(synth_root), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "2 clips" in res.output and out.is_file()
    res = runner.invoke(main, ["datasets", "show", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["clips"] == 2
    res = runner.invoke(main, ["datasets", "show", "vas", "--dir", str(tmp_path)])
    assert res.exit_code == 2 and "not built" in res.output


def test_av_benchmark_lists(synth_root: Path, tmp_path: Path) -> None:
    """MMAudio's vgg-test.tsv, Movie Gen's jsonl and a Greatest Hits id list: 8 s windows from second 0, the
    official size recorded, missing clips reported (an error unless allowed)."""
    video = next((synth_root / "video").iterdir())
    for name in ("zxpo56cpUBU_000007", "---g-f_I2yQ_000001"):
        _copy_as(video, tmp_path / "vgg" / f"{name}.mp4")
    tsv = tmp_path / "vgg-test.tsv"
    tsv.write_text("id\tlabel\nzxpo56cpUBU_000007\tdog barking\n---g-f_I2yQ_000001\tengine\nmissing_000003\tcat\n")
    with pytest.raises(DatasetError, match="1 of 3 listed clips are missing.*missing_000003"):
        build_dataset("vggsound-test", tmp_path / "vgg", list_file=tsv)
    ds = build_dataset("vggsound-test", tmp_path / "vgg", list_file=tsv, allow_missing=True)
    assert ds.ids == ["zxpo56cpUBU_000007", "---g-f_I2yQ_000001"] and ds.missing == ("missing_000003",)
    assert ds.window_sec == 8.0 and ds.official_clips == 15220 and all(c.start_sec == 0 for c in ds.clips)
    assert ds.clips[0].label == "dog barking" and ds.identity()["missing_at_build"] == 1
    bad = tmp_path / "bad.tsv"
    bad.write_text("ytid,start\n")
    with pytest.raises(DatasetError, match="id<TAB>label"):
        build_dataset("vggsound-test", tmp_path / "vgg", list_file=bad)
    _copy_as(video, tmp_path / "mg" / "0.mp4")
    jsonl = tmp_path / "MovieGenAudioBenchSfx.jsonl"
    jsonl.write_text('{"id": 0, "video_prompt": "v", "audio_prompt": "a dog"}\n')
    mg = build_dataset("moviegen-audio-bench", tmp_path / "mg", list_file=jsonl)
    assert mg.ids == ["0"] and mg.clips[0].label == "a dog" and mg.official_clips == 527
    ids = tmp_path / "greatesthit_test.txt"
    ids.write_text("2015-02-16-17-08-51\n")
    _copy_as(video, tmp_path / "gh" / "2015-02-16-17-08-51.mp4")
    gh = build_dataset("greatest-hits", tmp_path / "gh", list_file=ids)
    assert gh.ids == ["2015-02-16-17-08-51"] and gh.window_sec == 8.0
    with pytest.raises(DatasetError, match="takes no --starts"):
        build_dataset("greatest-hits", tmp_path / "gh", list_file=ids, starts=tsv)
    with pytest.raises(DatasetError, match="--videos DIR"):
        build_dataset("kling-audio-eval", tmp_path / "gh")


def test_folder_dataset_with_separate_gt_audio(synth_root: Path, tmp_path: Path) -> None:
    """av-benchmark's --gt_audio layout: GT audio files by stem, videos by stem, an audio-only stem."""
    from visualsound.media import read_audio, write_wav

    videos, audio = tmp_path / "videos", tmp_path / "gt"
    clips = sorted((synth_root / "video").iterdir())[:2]
    for p in clips:
        _copy_as(p, videos / p.name)
        write_wav(audio / f"{p.stem}.wav", read_audio(p), 16000)
    write_wav(audio / "audio_only.wav", read_audio(clips[0]), 16000)
    (videos / "notes.txt").write_text("not a video")
    ds = build_dataset("pairs", videos=videos, gt_audio=audio)
    assert ds.ids == sorted([p.stem for p in clips] + ["audio_only"])
    only = ds.clip("audio_only")
    assert only.video is None and only.audio_source.endswith("audio_only.wav")
    assert all(ds.clip(p.stem).audio.endswith(".wav") and ds.clip(p.stem).video for p in clips)
    assert "notes.txt" in ds.notes  # skipped files are listed
    # the ground-truth model plays the GT audio files (not the videos' own tracks), audio-only clips included
    from benchmarks.models import make_model

    gt = make_model("ground-truth").outputs(ds)
    assert not gt.missing and {c: [s.path for s in ss] for c, ss in gt.samples.items()} == {
        c.id: [c.audio] for c in ds.clips}
    again = load_manifest(ds.save(tmp_path / "pairs.json"))
    assert again.clips == ds.clips and again.fingerprint() == ds.fingerprint()
    _copy_as(clips[0], videos / f"{clips[0].stem}.mkv")
    with pytest.raises(DatasetError, match="share the clip id"):
        build_dataset("pairs", videos=videos)
