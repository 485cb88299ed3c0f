"""Batched generation across clips (`vaura.generate.generate_batch`): a clip's codes and audio do not depend on the
other clips of its batch; shared segment features; sharded folder runs add up to the unsharded run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tests.odd_media import noise_clip
from vaura.generate import (
    ClipRequest,
    clip_features,
    generate_batch,
    generate_for_video,
    load_pipeline,
    plan_windows,
    window_frames,
)
from vaura.sampler import SamplingParams

PARAMS = SamplingParams(cfg_scale=3.0, top_k=8, temperature=0.9)


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline(debug_weights=True)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    """Clips of different lengths and frame rates: one window (short), two and three windows."""
    d = tmp_path_factory.mktemp("clips")
    return [noise_clip(d / "a.mp4", 3.1, 25.0, seed=1), noise_clip(d / "b.mp4", 0.7, 30.0, seed=2),
            noise_clip(d / "c.mp4", 3.5, 12.0, seed=3), noise_clip(d / "d.mp4", 1.6, 24.0, seed=4)]


def _run(pipe, requests, batch_clips, **kw):
    out = list(generate_batch(requests, pipe, PARAMS, batch_clips=batch_clips, samples_per_clip=2, **kw))
    assert [r.request for r in out] == list(requests)  # one result per request, in order
    return out


def test_a_clip_gives_the_same_audio_alone_or_in_any_batch(pipe, clips, one_thread) -> None:
    """Bit-identical codes and audio for each (clip, seeds): alone (a padded batch), with the other clips of
    different lengths and fps in one batch, in reverse order, and in a partial last batch."""
    requests = [ClipRequest(v, seeds=(10 * i, 10 * i + 1), stream=v.stem) for i, v in enumerate(clips)]
    together = _run(pipe, requests, batch_clips=4)
    assert all(r.error is None for r in together)
    assert [len(r.output.windows) for r in together] == [2, 1, 3, 1]
    reverse = _run(pipe, requests[::-1], batch_clips=4)[::-1]
    for i, req in enumerate(requests):
        alone = _run(pipe, [req], batch_clips=4)[0].output
        for other in (together[i].output, reverse[i].output):
            assert torch.equal(alone.codes, other.codes), req.video
            assert torch.equal(alone.audio, other.audio), req.video
        assert alone.codes.shape == (2, 9, int(alone.duration * 86)) and alone.seeds == req.seeds
        assert not torch.equal(alone.codes[0], alone.codes[1])  # the two samples draw from their own streams
    # three clips per batch: the last batch holds one clip (padding rows), the same audio again
    partial = _run(pipe, requests, batch_clips=3)
    assert all(torch.equal(p.output.audio, t.output.audio) for p, t in zip(partial, together))
    # the stream name is part of each row's key: the same seeds under another name draw other tokens
    renamed = _run(pipe, [ClipRequest(clips[1], seeds=(10, 11), stream="other")], batch_clips=4)[0].output
    assert not torch.equal(renamed.codes, together[1].output.codes)


def test_generate_for_video_is_a_batch_of_one(pipe, clips, one_thread) -> None:
    got = generate_for_video(clips[1], pipe, PARAMS, num_samples=2, seed=5)
    ref = next(generate_batch([ClipRequest(clips[1], seeds=(5, 6))], pipe, PARAMS, batch_clips=1)).output
    assert got.seeds == (5, 6) and torch.equal(got.audio, ref.audio) and torch.equal(got.codes, ref.codes)
    drawn = generate_for_video(clips[1], pipe, PARAMS)  # no seed: a fresh one, returned for the record
    assert len(drawn.seeds) == 1 and isinstance(drawn.seeds[0], int)


def test_a_broken_clip_fails_alone_and_decode_workers_change_nothing(pipe, clips, tmp_path, one_thread) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    requests = [ClipRequest(clips[1], seeds=(1,)), ClipRequest(broken, seeds=(2,)), ClipRequest(clips[3], seeds=(3,))]
    inline = _run(pipe, requests, batch_clips=2)
    threaded = _run(pipe, requests, batch_clips=2, decode_workers=2)
    assert inline[1].output is None and "broken.mp4" in str(inline[1].error)
    for i in (0, 2):
        assert torch.equal(inline[i].output.audio, threaded[i].output.audio)
        assert torch.equal(inline[i].output.audio, _run(pipe, [requests[i]], batch_clips=2)[0].output.audio)


def test_shared_segment_features_equal_per_window_features(pipe, one_thread) -> None:
    """Each 16-frame segment is encoded once for all windows that hold it; every window's features equal the
    visual encoder's on that window's 64 frames (frames past the end repeat the last one)."""
    frames = torch.randint(0, 255, (93, 224, 224, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    plan = plan_windows(93 / 25)
    feats = clip_features(pipe, frames, plan)
    assert feats.shape == (len(plan), 32, pipe.transformer.cfg.visual_dim)
    for w, win in enumerate(plan):
        ref = pipe.visual.features(window_frames(frames, win.start)[None]).flatten(1, 2)[0]
        torch.testing.assert_close(feats[w], ref, atol=1e-5, rtol=1e-5)


def _cli(*args: str, env: dict[str, str] | None = None) -> str:
    from vaura.cli import main

    res = CliRunner().invoke(main, list(args), catch_exceptions=False, env=env)
    assert res.exit_code == 0, res.output
    return res.output


def test_cli_shards_add_up_to_the_unsharded_run(clips, tmp_path, one_thread) -> None:
    """``--shard 0/3, 1/3, 2/3`` (and SLURM array tasks with ``--shard auto``) into one folder give, file for
    file, the unsharded run's wavs: no video twice, none missing, each one's audio independent of the split."""
    from visualsound.media import read_audio

    src = tmp_path / "videos"
    src.mkdir()
    for i, c in enumerate(clips + clips[:2]):
        (src / f"v{i}{c.suffix}").write_bytes(c.read_bytes())
    base = ["generate", "--video", str(src), "--debug-weights", "--no-mux", "--seed", "3", "--batch-clips", "2",
            "--top-k", "8"]
    _cli(*base, "--out", str(tmp_path / "whole"))
    for i in range(3):
        out = _cli(*base, "--out", str(tmp_path / "sharded"), "--shard", f"{i}/3")
        assert f"shard {i}/3" in out
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"}
    _cli(*base, "--out", str(tmp_path / "slurm"), "--shard", "auto", env=env)
    _cli(*base, "--out", str(tmp_path / "slurm"), "--shard", "auto", env={**env, "SLURM_ARRAY_TASK_ID": "0"})
    whole = sorted(p.name for p in (tmp_path / "whole").glob("*.wav"))
    assert len(whole) == 6
    for folder in ("sharded", "slurm"):
        assert sorted(p.name for p in (tmp_path / folder).glob("*.wav")) == whole
        for name in whole:
            assert torch.equal(read_audio(tmp_path / folder / name), read_audio(tmp_path / "whole" / name)), name
    records = [json.loads((tmp_path / "sharded" / f"generation-shard-{i}-of-3.json").read_text()) for i in range(3)]
    items = sorted(Path(it["video"]).name for r in records for it in r["items"])
    assert items == sorted(p.name for p in src.iterdir()) and all(r["finished"] and r["listed"] == 6 for r in records)
    from vaura.cli import main

    res = CliRunner().invoke(main, ["generate", "--video", str(src), "--debug-weights", "--out", str(tmp_path / "x"),
                                    "--shard", "0/2"])
    assert res.exit_code == 2 and "needs --seed" in res.output and not (tmp_path / "x").exists()


def test_cli_dtype_is_applied_and_recorded(clips, tmp_path, one_thread) -> None:
    out = tmp_path / "bf16.mp4"
    _cli("generate", "--video", str(clips[1]), "--out", str(out), "--debug-weights", "--no-mux", "--dtype", "bf16",
         "--seed", "1")
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["dtype"] == "bf16" and meta["seeds"] == [1] and meta["cpu_linear"] == "off"
    from vaura.generate import GenerationError

    with pytest.raises(GenerationError, match="batch_clips"):
        next(generate_batch([ClipRequest(clips[1])], load_pipeline(debug_weights=True), batch_clips=0))
