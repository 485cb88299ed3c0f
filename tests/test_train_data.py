"""Tests of the training data layer: dataset layouts, windows, transforms, batch sampling, the feature cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vaura.train.cache import CachedWindows, CacheError, FrozenModels, check_manifest, extract, module_checksum
from vaura.train.config import DataConfig, TrainConfig
from vaura.train.data import (
    BadClipError,
    ClipDataset,
    DataError,
    DataSource,
    GlobalBatchSampler,
    collate_clips,
    grid_starts,
    random_start,
    spatial_transform,
)
from visualsound.errors import ConfigError

CFG = DataConfig(batch_size=2, num_workers=0)


pytestmark = pytest.mark.usefixtures("one_thread")


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_layouts_resolve_clips_and_fixed_starts(tmp_path, caplog):
    vid = tmp_path / "video"
    for name in ("aaa_0_10000", "bbb_20000_30000", "ccc_000000"):
        _touch(vid / f"{name}.mp4")
    # VGGSound-style csv (no header) with the synth layout's video/ folder; one row has no media file
    csv_path = tmp_path / "vgg.csv"
    csv_path.write_text("aaa,0,dog,train\nbbb,20,cat,test\nccc,0,cow,train\nzzz,5,owl,train\n")
    train = DataSource.parse(str(csv_path)).clips()
    assert [c.clip_id for c in train] == ["aaa_0_10000", "ccc_000000"] and all(c.start is None for c in train)
    assert "1 of 3 clips have no media file" in caplog.text
    starts = tmp_path / "starts.csv"
    starts.write_text("file,start_sec\nbbb_20000_30000,4.77\n")
    test = DataSource.parse(f"path={csv_path},split=test,fixed_starts={starts}").clips()
    assert [(c.clip_id, c.start) for c in test] == [("bbb_20000_30000", 4.77)]
    with pytest.raises(DataError, match="applies to evaluation splits"):  # was ignored: windows started at 0
        DataSource.parse(f"path={csv_path},fixed_starts={starts}").clips()
    from vaura.train.config import TrainConfig
    from vaura.train.run import run_extract

    with pytest.raises(DataError, match="contradicts the data spec's split=test"):  # --split was dropped
        run_extract(TrainConfig.preset("tiny"), f"path={csv_path},split=test", tmp_path / "cache", split="train")
    # V-AURA id lists (split dir + meta csv restricting the ids)
    split_dir = tmp_path / "splits"
    split_dir.mkdir()
    (split_dir / "visualsound_train.txt").write_text("aaa_0_10000\nbbb_20000_30000\n")
    meta = tmp_path / "meta.csv"
    meta.write_text("filename,start,desc,split\naaa,0,dog,train\n")
    lists = DataSource(kind="lists", path=str(split_dir), video_dir=str(vid), meta=str(meta)).clips()
    assert [c.clip_id for c in lists] == ["aaa_0_10000"]
    # VAS: directory + list; a directory of clips; a parquet table with a split column
    lst = tmp_path / "vas.txt"
    lst.write_text("ccc_000000\nbbb_20000_30000.mp4\n")
    assert [c.clip_id for c in DataSource.parse(f"kind=list,path={lst},video_dir={vid}").clips()] == [
        "bbb_20000_30000", "ccc_000000"]
    assert len(DataSource.parse(str(vid)).clips()) == 3
    import pandas as pd

    pq = tmp_path / "build.parquet"
    pd.DataFrame({"clip_id": ["aaa_0_10000", "ccc_000000"], "path": ["video/aaa_0_10000.mp4", "video/ccc_000000.mp4"],
                  "split": ["train", "train"], "visualsound_split": ["train", "validation"]}).to_parquet(pq)
    assert [c.clip_id for c in DataSource.parse(str(pq)).clips()] == ["aaa_0_10000"]
    val = DataSource.parse(str(pq), split="validation").clips()
    assert [(c.clip_id, c.start) for c in val] == [("ccc_000000", 0.0)]
    # specs from YAML files and errors
    spec = tmp_path / "spec.yaml"
    DataSource(kind="dir", path=str(vid), limit=2).save(spec)
    assert len(DataSource.parse(str(spec)).clips()) == 2
    with pytest.raises(DataError, match="no usable clips"):
        DataSource.parse(str(csv_path), split="validation").clips()
    with pytest.raises(ConfigError, match="data kind"):
        DataSource.parse("kind=zip,path=x")
    with pytest.raises(DataError, match="does not exist"):
        DataSource.parse(str(tmp_path / "nope.csv")).clips()


def test_windows_and_transforms():
    assert CFG.num_frames == 64 and CFG.num_samples == 112_896
    assert grid_starts(10.0, CFG) == pytest.approx([0.64 * i for i in range(12)])  # 7.04 + 2.56 + 0.01 <= 10
    assert grid_starts(2.58, CFG) == [0.0]
    with pytest.raises(BadClipError, match="shorter"):
        grid_starts(2.5, CFG)
    rng = np.random.default_rng(0)
    starts = [random_start(10.0, CFG, rng) for _ in range(200)]
    assert min(starts) >= 0 and max(starts) <= 10.0 - 2.56 - 0.01 and max(starts) > 6.5
    frames = torch.randint(0, 256, (3, 120, 160, 3), dtype=torch.uint8)
    ev = spatial_transform(frames, CFG, train=False)
    assert ev.shape == (3, 3, 224, 224) and ev.dtype == torch.uint8
    assert torch.equal(ev, spatial_transform(frames, CFG, train=False))
    a = spatial_transform(frames, CFG, True, np.random.default_rng([1, 2, 3]))
    b = spatial_transform(frames, CFG, True, np.random.default_rng([1, 2, 3]))
    assert torch.equal(a, b)  # a pure function of the seed
    crops = {spatial_transform(frames, CFG, True, np.random.default_rng(i)).float().mean().item() for i in range(6)}
    assert len(crops) > 1


def test_global_batches_shard_across_ranks_and_resume():
    one = list(GlobalBatchSampler(10, 4, True, seed=1, epoch=2, world=1))
    two = [list(GlobalBatchSampler(10, 2, True, seed=1, epoch=2, rank=r, world=2)) for r in range(2)]
    assert len(one) == 2 and [two[0][i] + two[1][i] for i in range(2)] == one  # same global batches
    assert list(GlobalBatchSampler(10, 4, True, seed=1, epoch=2, start=1)) == one[1:]
    assert list(GlobalBatchSampler(10, 4, True, seed=1, epoch=3)) != one
    ev = [list(GlobalBatchSampler(5, 2, False, rank=r, world=2)) for r in range(2)]
    assert sorted(i for r in ev for b in r for i in b) == list(range(5))
    with pytest.raises(DataError, match="global batch"):
        GlobalBatchSampler(3, 2, True, world=2)
    batch = collate_clips([{"clip_id": "a", "bad": "broken"}, {"index": 1, "clip_id": "b", "codes": torch.ones(2)}])
    assert batch["bad"] == [("a", "broken")] and batch["size"] == 1 and batch["codes"].shape == (1, 2)


# -- the cache, with cheap stand-in feature functions (the real encoder/codec run in the slow CLI test) ----------
def _cheap_models(tag: float = 1.0) -> FrozenModels:
    lin = torch.nn.Linear(2, 3)
    torch.nn.init.constant_(lin.weight, tag)

    def visual(video: torch.Tensor) -> torch.Tensor:  # uint8 [B, 64, 3, 224, 224] -> [B, 32, 32]
        return (video.float().mean((2, 3, 4)).view(-1, 32, 2) / 255.0 * tag).repeat(1, 1, 16)

    def codes(audio: torch.Tensor) -> torch.Tensor:  # [B, 1, N] -> [B, 9, 221]
        x = audio[:, :, ::512][..., :221]
        return ((x + 1) * 500).round().long().clamp(0, 1023).expand(-1, 9, -1)

    ident = {"name": "cheap", "checksum": module_checksum(lin), "debug_weights": True}
    return FrozenModels(visual, codes, ident, dict(ident), torch.device("cpu"), visual_dim=32)


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory):
    from visualsound.synth import SynthConfig, make_bad_clips, synthesize

    root = tmp_path_factory.mktemp("synth")
    synthesize(root, SynthConfig(count=3, duration=3.3, width=32, height=32, sample_rate=16000,
                                 mismatched_fraction=0.0, test_fraction=0.0, max_events=2))
    zoo = make_bad_clips(root / "bad", size=32)
    for name in ("not_media", "short"):  # two bad clips next to the good ones
        zoo[name].path.rename(root / "video" / f"{name}.mp4")
    return root


def test_extract_cache_resume_and_refusals(clips_dir, tmp_path, caplog):
    clips = DataSource.parse(str(clips_dir / "video")).clips()
    assert len(clips) == 5
    models = _cheap_models()
    out = tmp_path / "cache"
    manifest = extract(clips, out, models, CFG, grid=True, shard_size=2, feature_dtype="float32")
    assert manifest["complete"] and manifest["bad_clips"] == 2 and manifest["num_clips"] == 5
    assert manifest["windows"] == 6 and len(manifest["shards"]) == 3  # 3 good clips x starts 0.0, 0.64
    assert "not_media" in caplog.text and "short" in caplog.text
    ds = CachedWindows(out, CFG, train=True, encoder_id=models.encoder_id, codec_id=models.codec_id)
    assert len(ds) == 3
    item = ds[0]
    assert item["codes"].shape == (9, 221) and item["codes"].dtype == torch.int64
    assert item["visual"].shape == (32, 32) and item["start"] in (0.0, 0.64)
    # every window matches a direct decode of the clip at its start (centre crop, same features)
    from vaura.train.data import decode_window

    first = next(c for c in clips if c.clip_id == ds.clip_ids[0])
    frames, audio = decode_window(first.path, 0.64, CFG)
    direct = models.visual(spatial_transform(frames, CFG, train=False)[None])
    row = [w for w in ds.windows[0] if w[2] == pytest.approx(0.64)][0]
    cached = np.load(out / "shards" / f"{row[0]:06d}" / "visual.npy")[row[1]]
    codes = np.load(out / "shards" / f"{row[0]:06d}" / "codes.npy")
    assert codes.dtype == np.uint16
    assert torch.allclose(torch.from_numpy(cached), direct[0], atol=1e-6)
    assert torch.equal(torch.from_numpy(codes[row[1]].astype(np.int64)), models.codes(audio[None])[0])
    # training picks among the grid windows with a seeded generator: deterministic per (seed, epoch, index)
    picks = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        picks.add(ds[0]["start"])
        assert ds[0]["start"] == ds[0]["start"]
    assert picks == {0.0, 0.64}
    # resume: a rerun keeps finished shards; after deleting one, only that one is recomputed
    mtime = (out / "shards" / "000000" / "codes.npy").stat().st_mtime_ns
    import shutil

    shutil.rmtree(out / "shards" / "000001")
    again = extract(clips, out, models, CFG, grid=True, shard_size=2, feature_dtype="float32")
    assert again["windows"] == 6 and (out / "shards" / "000000" / "codes.npy").stat().st_mtime_ns == mtime
    # refusals: other models (stale), another window grid, a different cache in the same dir, edited files
    other = _cheap_models(tag=2.0)
    with pytest.raises(CacheError, match="stale cache, its encoder checksum"):
        CachedWindows(out, CFG, train=True, encoder_id=other.encoder_id)
    with pytest.raises(CacheError, match="another window grid"):
        CachedWindows(out, CFG.replace(clip_seconds=5.12), train=True)
    with pytest.raises(CacheError, match="holds a different cache"):
        extract(clips, out, other, CFG, grid=True, shard_size=2, feature_dtype="float32")
    with open(out / "shards" / "000000" / "codes.npy", "ab") as f:
        f.write(b"x")
    with pytest.raises(CacheError, match="changed since extraction"):
        CachedWindows(out, CFG, train=True)
    m = json.loads((out / "manifest.json").read_text())
    with pytest.raises(CacheError, match="not finished"):
        check_manifest({**m, "complete": False}, CFG)


def test_on_the_fly_dataset_skips_bad_clips(clips_dir):
    clips = DataSource.parse(str(clips_dir / "video")).clips()
    ds = ClipDataset(clips, CFG, train=True, seed=5)
    ds.set_epoch(1)
    items = [ds[i] for i in range(len(ds))]
    bad = [it for it in items if "bad" in it]
    assert sorted(it["clip_id"] for it in bad) == ["not_media", "short"]
    good = [it for it in items if "bad" not in it]
    assert good[0]["video"].shape == (64, 3, 224, 224) and good[0]["audio"].shape == (1, 112_896)
    assert 0.0 <= good[0]["start"] <= 3.3 - 2.57
    again = ds[clips.index(next(c for c in clips if c.clip_id == good[0]["clip_id"]))]
    assert again["start"] == good[0]["start"] and torch.equal(again["video"], good[0]["video"])
    batch = collate_clips(items)
    assert batch["size"] == 3 and len(batch["bad"]) == 2 and batch["video"].shape[0] == 3


def test_train_config_presets_and_overrides(tmp_path):
    tiny = TrainConfig.preset("tiny")
    assert tiny.debug_weights and tiny.precision == "fp32"
    cfg = tiny.with_overrides(["optim.lr=3e-4", "data.batch_size=3"])  # YAML reads 3e-4 as a string
    assert cfg.optim.lr == 3e-4 and cfg.data.batch_size == 3
    cfg.save(tmp_path / "c.yaml")
    assert TrainConfig.resolve(tmp_path / "c.yaml") == cfg
    with pytest.raises(ConfigError, match="precision"):
        tiny.replace(precision="fp8")
    with pytest.raises(ConfigError, match="not a number"):
        tiny.with_overrides(["optim.lr=fast"])
    with pytest.raises(ConfigError, match="debug_weights=false"):  # `--config tiny --checkpoint X`: say how
        tiny.replace(encoder_checkpoint="enc.pt")
    assert tiny.replace(encoder_checkpoint="enc.pt", debug_weights=False).encoder_checkpoint == "enc.pt"


def test_on_the_fly_dataset_turns_any_decoding_failure_into_a_bad_clip(clips_dir, monkeypatch):
    """An unexpected exception while decoding one clip makes it a bad item with the reason, instead of ending the
    run (a resumed run would meet the same clip again and die again)."""
    import vaura.train.data as data_mod

    clips = DataSource.parse(str(clips_dir / "video")).clips()
    good = next(c for c in clips if c.clip_id.startswith("synth"))
    real = data_mod.decode_window

    def flaky(path, start, cfg):
        if path == good.path:
            raise RuntimeError("decoder exploded")
        return real(path, start, cfg)

    monkeypatch.setattr(data_mod, "decode_window", flaky)
    item = ClipDataset(clips, CFG, train=False)[clips.index(good)]
    assert item["bad"] == "RuntimeError: decoder exploded" and item["clip_id"] == good.clip_id


def _explode_or_die(real, boom: str, crash: str):
    """A `decode_frames` stand-in: raises for the clip `boom`, kills its DataLoader worker for the clip `crash`."""
    import os
    import signal

    def decode(path, start, cfg, frame_count=None):
        if path.endswith(f"{boom}.mp4"):
            raise RuntimeError("decoder exploded")
        if path.endswith(f"{crash}.mp4") and torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)  # a decoder segfault / the OOM killer
        return real(path, start, cfg, frame_count=frame_count)

    return decode


@pytest.mark.parametrize("workers", [0, 1])
def test_extract_records_unexpected_failures_and_dead_workers(clips_dir, tmp_path, monkeypatch, workers):
    """`vaura extract` never dies for one clip: an unexpected exception while decoding it, or its decoding worker
    being killed, is recorded in its shard with the reason; the other clips are extracted, the shards complete, and
    the progress callback reaches the total (it counted only the good clips). Both used to end the job, and a rerun
    met the same clip again."""
    import vaura.train.cache as cache_mod

    clips = DataSource.parse(str(clips_dir / "video")).clips()
    ids = [c.clip_id for c in clips if c.clip_id.startswith("synth")]
    monkeypatch.setattr(cache_mod, "decode_frames", _explode_or_die(cache_mod.decode_frames, ids[0], ids[1]))
    seen = []
    manifest = extract(clips, tmp_path / "c", _cheap_models(), CFG, grid=True, shard_size=2, num_workers=workers,
                       feature_dtype="float32", progress=lambda d, t: seen.append((d, t)))
    bad = {}
    for d in sorted((tmp_path / "c" / "shards").iterdir()):
        bad.update(dict(json.loads((d / "windows.json").read_text())["bad"]))
    assert bad[ids[0]] == "RuntimeError: decoder exploded" and {"not_media", "short"} < set(bad)
    if workers:
        assert bad[ids[1]].startswith("decoding worker died")
        assert manifest["complete"] and manifest["windows"] == 2 and manifest["bad_clips"] == 4
    else:  # inline decoding: the stand-in only kills workers
        assert manifest["complete"] and manifest["windows"] == 4 and manifest["bad_clips"] == 3
    assert seen[-1] == (5, 5)
    ds = CachedWindows(tmp_path / "c", CFG, train=False)
    assert [w[0][2] for w in ds.windows] == [0.0] * len(ds)


def test_extract_removes_temp_dirs_of_killed_shard_writes(clips_dir, tmp_path):
    """A run killed while writing a shard leaves its temp directory; the next run removes it (once old enough to
    be no concurrent write's) and never reads it as a shard."""
    import os

    clips = [c for c in DataSource.parse(str(clips_dir / "video")).clips() if c.clip_id.startswith("synth")][:2]
    out = tmp_path / "c"
    (out / "shards").mkdir(parents=True)
    stale, fresh = out / "shards" / ".000000.ab12cd", out / "shards" / ".000001.ef34gh"
    for t in (stale, fresh):
        t.mkdir()
        (t / "codes.npy").write_bytes(b"partial")
    os.utime(stale, (1, 1))
    manifest = extract(clips, out, _cheap_models(), CFG, grid=True, shard_size=1, feature_dtype="float32")
    assert manifest["complete"] and manifest["windows"] == 4
    assert not stale.exists() and fresh.exists()


def test_resume_compares_what_the_cache_holds_not_its_path(clips_dir, tmp_path):
    """A preempted job whose cache was staged to another path (node-local scratch) resumes; a cache of other clips
    at the run's old path is refused. Before, the data specs were compared as paths: the first was refused and the
    second accepted."""
    import shutil

    from vaura.train.loop import Trainer
    from vaura.train.run import input_metadata

    clips = DataSource.parse(str(clips_dir / "video")).clips()
    models = _cheap_models()
    extract(clips, tmp_path / "cache", models, CFG, grid=True, shard_size=2, feature_dtype="float32")
    cfg = TrainConfig.preset("tiny").with_overrides(["data.batch_size=1", "max_steps=1", "val_every=0",
                                                     "model_overrides=[visual_dim=32]"])

    def trainer(path: str, steps: int) -> Trainer:
        from vaura.train.frozen import build_training_model

        ds = CachedWindows(path, cfg.data, train=True, encoder_id=models.encoder_id, codec_id=models.codec_id)
        return Trainer(cfg.replace(max_steps=steps), tmp_path / "run", build_training_model(cfg), ds,
                       metadata=input_metadata(models, path, None, ds, None))

    trainer(str(tmp_path / "cache"), 1).fit()
    shutil.copytree(tmp_path / "cache", tmp_path / "scratch" / "cache")
    moved = trainer(str(tmp_path / "scratch" / "cache"), 2)
    moved.resume(tmp_path / "run" / "last.pt")
    assert moved.step == 1
    shutil.rmtree(tmp_path / "cache")  # re-extracted with fewer clips at the same path
    extract([c for c in clips if c.clip_id != "synth0001_000000"], tmp_path / "cache", models, CFG, grid=True,
            shard_size=2, feature_dtype="float32")
    with pytest.raises(ConfigError, match="holds other clips or windows"):
        trainer(str(tmp_path / "cache"), 2).resume(tmp_path / "run" / "last.pt")


def test_extract_in_two_parts_fills_one_cache(clips_dir, tmp_path):
    """`vaura extract --shard i/n`: part i writes the cache shards s with s % n == i into the one cache; the part
    that ends with every shard present marks it complete, and the cache equals an extraction in one job (no merge
    step). Each part resumes on its own shards only."""
    import shutil

    clips = DataSource.parse(str(clips_dir / "video")).clips()
    models = _cheap_models()
    whole = extract(clips, tmp_path / "whole", models, CFG, grid=True, shard_size=2, feature_dtype="float32")
    out = tmp_path / "parts"
    first = extract(clips, out, models, CFG, grid=True, shard_size=2, feature_dtype="float32", part=(1, 2))
    assert not first["complete"] and first["missing_shards"] == [0, 2]
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["000001"]
    with pytest.raises(CacheError, match="not finished.*--shard"):
        CachedWindows(out, CFG, train=True)
    done = extract(clips, out, models, CFG, grid=True, shard_size=2, feature_dtype="float32", part=(0, 2))
    assert done["complete"] and "missing_shards" not in done
    keys = ("num_clips", "windows", "bad_clips", "shards", "clips_sha256")
    assert {k: done[k] for k in keys} == {k: whole[k] for k in keys}
    for s in ("000000", "000001", "000002"):
        for f in ("codes.npy", "visual.npy", "windows.json"):
            assert (out / "shards" / s / f).read_bytes() == (tmp_path / "whole" / "shards" / s / f).read_bytes()
    ds = CachedWindows(out, CFG, train=True, encoder_id=models.encoder_id, codec_id=models.codec_id)
    assert len(ds) == 3
    # resume per part: part 1 has nothing to redo for a deleted shard of part 0 (the cache is incomplete again);
    # part 0 rewrites only that one
    mtime = (out / "shards" / "000000" / "codes.npy").stat().st_mtime_ns
    shutil.rmtree(out / "shards" / "000002")
    again = extract(clips, out, models, CFG, grid=True, shard_size=2, feature_dtype="float32", part=(1, 2))
    assert again["missing_shards"] == [2] and not json.loads((out / "manifest.json").read_text())["complete"]
    again = extract(clips, out, models, CFG, grid=True, shard_size=2, feature_dtype="float32", part=(0, 2))
    assert again["complete"] and again["windows"] == whole["windows"]
    assert (out / "shards" / "000000" / "codes.npy").stat().st_mtime_ns == mtime
    with pytest.raises(CacheError, match="part 2/2"):
        extract(clips, out, models, CFG, grid=True, shard_size=2, part=(2, 2))
