"""Whole-video generation: window schedule, short / long / odd-fps videos, the CLI and resumable batch mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tests.odd_media import noise_clip
from vaura.generate import (
    CODE_RATE,
    GenerationError,
    generate_codes_for_frames,
    list_videos,
    load_pipeline,
    plan_windows,
    total_frames,
    window_frames,
)
from vaura.sampler import SamplingParams

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline(debug_weights=True)


@pytest.mark.parametrize("duration", [0.3, 1.0, 2.56, 2.6, 3.1, 5.0, 10.0, 17.3])
def test_plan_covers_every_frame(duration: float) -> None:
    plan = plan_windows(duration)
    total = total_frames(duration)
    assert plan[0].start == 0.0 and plan[0].prompt == 0
    assert sum(w.n_frames - w.prompt for w in plan) >= total
    assert sum(w.n_frames - w.prompt for w in plan[:-1]) < total
    for w in plan:
        assert w.prompt < w.n_frames <= 221
    if duration <= 2.56:
        assert len(plan) == 1 and plan[0].n_frames == total
    else:
        assert all(b.start - a.start == pytest.approx(55 / CODE_RATE) for a, b in zip(plan, plan[1:]))
        assert all(w.prompt == 221 - 55 for w in plan[1:])


def test_plan_rejects_bad_stride_and_duration() -> None:
    with pytest.raises(GenerationError):
        plan_windows(5.0, stride=3.0)
    with pytest.raises(GenerationError):
        plan_windows(5.0, stride=0.0)
    with pytest.raises(GenerationError):
        plan_windows(0.0)
    assert total_frames(2.56) == 220


def test_window_frames_pads_with_last_frame() -> None:
    frames = torch.arange(30).view(30, 1, 1, 1).expand(30, 2, 2, 3).to(torch.uint8)
    w = window_frames(frames, 55 / CODE_RATE)  # 15.99 frames -> segment 1 = frame 16 onwards
    assert w.shape == (64, 2, 2, 3)
    assert w[0, 0, 0, 0] == 16 and w[13, 0, 0, 0] == 29 and (w[14:, 0, 0, 0] == 29).all()
    assert window_frames(frames, 0.0)[0, 0, 0, 0] == 0
    for k in range(1, 40):  # stride 0.64 s keeps windows on whole segments
        assert window_frames(torch.arange(2000).view(-1, 1, 1, 1), k * 55 / CODE_RATE)[0, 0, 0, 0] == 16 * k


def test_chunked_frame_reading_equals_one_read(tmp_path: Path) -> None:
    from vaura.generate import read_frames
    from vaura.synchformer.preprocess import center_crop, preprocess_video_for_vaura, resize_short_side
    from visualsound.media import read_video

    clip = noise_clip(tmp_path / "long.mp4", 4.3, 30.0, size=(48, 80))
    whole = read_video(clip, start=0.3, duration=3.9, fps=25.0)
    got = read_frames(clip, 0.3, 3.9, chunk_frames=16)
    assert got.shape == (whole.shape[0], 224, 224, 3)
    assert torch.equal(got, center_crop(resize_short_side(whole, 256, mode="bilinear"), 224)[0])
    assert torch.equal(preprocess_video_for_vaura(got[:64]), preprocess_video_for_vaura(whole[:64]))
    assert read_frames(clip, 0.0, 10.0, chunk_frames=32).shape[0] == read_video(clip, fps=25.0).shape[0]


def test_long_video_windows_continue_the_prompt(pipe) -> None:
    """Chunked generation: each window's prompt is the previous window's codes after the stride."""
    frames = torch.randint(0, 255, (80, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    calls = []
    import vaura.generate as G

    real = G.generate

    def spy(model, feats, n, params, prompt=None, **kw):
        out = real(model, feats, n, params, prompt=prompt, **kw)
        calls.append((n, None if prompt is None else prompt.clone(), out.codes.clone()))
        return out

    G.generate = spy
    try:
        codes, plan = generate_codes_for_frames(pipe, frames, 3.1, SamplingParams(cfg_scale=3.0, top_k=4),
                                                seeds=(1, 2))
    finally:
        G.generate = real
    assert codes.shape == (2, 9, total_frames(3.1)) and len(plan) == len(calls) == 2
    assert torch.equal(calls[1][1], calls[0][2][..., 55:])
    assert torch.equal(calls[1][2][..., :166], calls[0][2][..., 55:])
    assert torch.equal(codes[..., :221], calls[0][2])
    assert torch.equal(codes[..., 221:], calls[1][2][..., 166:166 + total_frames(3.1) - 221])


def test_cli_single_short_video_and_seed(tmp_path: Path) -> None:
    from vaura.cli import main
    from visualsound.media import probe

    clip = noise_clip(tmp_path / "short.mp4", 0.8, 30.0)
    outs = []
    for name in ("a", "b"):
        res = CliRunner().invoke(main, ["generate", "--video", str(clip), "--out", str(tmp_path / f"{name}.mp4"),
                                        "--debug-weights", "--seed", "3", "--top-k", "16"])
        assert res.exit_code == 0, res.output
        assert "DEBUG WEIGHTS" in res.output
        outs.append(tmp_path / f"{name}.wav")
    info = probe(tmp_path / "a.mp4")
    assert info.has_audio and info.sample_rate == 44100
    assert abs(info.num_samples / 44100 - 0.8) < 0.03
    from visualsound.media import read_audio

    assert torch.equal(read_audio(outs[0]), read_audio(outs[1]))
    meta = json.loads((tmp_path / "a.json").read_text())
    assert meta["debug_weights"] is True and meta["sampling"]["top_k"] == 16


def test_cli_compile_flag_uses_the_compiled_step(tmp_path: Path, monkeypatch) -> None:
    """``--compile`` runs the sampler's static step through `compiled_decode_step` (here with the eager backend:
    the same traced program without Inductor's minutes of CPU compilation) and records it; the audio equals the
    uncompiled run's."""
    import vaura.sampler as sampler
    from vaura.cli import main
    from visualsound.media import read_audio

    real, calls = sampler.compiled_decode_step, []
    monkeypatch.setattr(sampler, "compiled_decode_step",
                        lambda model: calls.append(model) or real(model, backend="eager"))
    clip = noise_clip(tmp_path / "c.mp4", 0.5, 25.0)
    for name, extra in (("plain", []), ("compiled", ["--compile"])):
        res = CliRunner().invoke(main, ["generate", "--video", str(clip), "--out", str(tmp_path / f"{name}.mp4"),
                                        "--debug-weights", "--greedy", "--no-mux", *extra])
        assert res.exit_code == 0, res.output
        assert json.loads((tmp_path / f"{name}.json").read_text())["compile"] is bool(extra)
    assert len(calls) == 1
    torch.testing.assert_close(read_audio(tmp_path / "compiled.wav"), read_audio(tmp_path / "plain.wav"))


def test_cli_batch_resumable_with_failures(tmp_path: Path) -> None:
    from vaura.cli import main

    src = tmp_path / "videos"
    src.mkdir()
    noise_clip(src / "one.mp4", 0.5, 25.0)
    (src / "broken.mp4").write_bytes(b"not a video at all")
    out = tmp_path / "out"
    args = ["generate", "--video", str(src), "--out", str(out), "--debug-weights", "--no-mux", "--greedy"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output  # the batch finishes, and the exit code reports the failure
    assert "1 generated, 0 skipped, 1 failed" in res.output
    summary = json.loads((out / "generation.json").read_text())
    status = {Path(i["video"]).name: i["status"] for i in summary["items"]}
    assert status == {"one.mp4": "done", "broken.mp4": "failed"}
    assert summary["debug_weights"] is True and (out / "one.wav").exists()
    res = CliRunner().invoke(main, args)
    summary = json.loads((out / "generation.json").read_text())
    status = {Path(i["video"]).name: i["status"] for i in summary["items"]}
    assert status == {"one.mp4": "skipped", "broken.mp4": "failed"}


def test_batch_seed_follows_the_video_not_its_position(tmp_path: Path, pipe) -> None:
    """A video's batch-mode audio does not depend on which other videos are listed before it (the seed was
    ``seed + index``, so adding a video to the folder changed every later video's audio)."""
    from vaura.generate import generate_folder, video_seed

    src = tmp_path / "videos"
    src.mkdir()
    noise_clip(src / "b.mp4", 0.3, 25.0, seed=1)
    params = SamplingParams(top_k=16)
    alone = generate_folder([src / "b.mp4"], tmp_path / "alone", pipe, params, seed=7, mux=False)
    noise_clip(src / "a.mp4", 0.3, 25.0, seed=2)
    both = generate_folder(list_videos(src), tmp_path / "both", pipe, params, seed=7, mux=False)
    assert [Path(r.video).name for r in both] == ["a.mp4", "b.mp4"]
    assert alone[0].seed == both[1].seed == video_seed(7, src / "b.mp4") != both[0].seed
    from visualsound.media import read_audio

    assert torch.equal(read_audio(tmp_path / "alone" / "b.wav"), read_audio(tmp_path / "both" / "b.wav"))


def test_list_videos_split_file(tmp_path: Path) -> None:
    (tmp_path / "split.txt").write_text("a\n# comment\n\nsub/b.mkv\n")
    assert list_videos(tmp_path / "split.txt") == [tmp_path / "a.mp4", tmp_path / "sub/b.mkv"]
    assert list_videos(tmp_path / "split.txt", root="/data") == [Path("/data/a.mp4"), Path("/data/sub/b.mkv")]
    with pytest.raises(GenerationError):
        list_videos(tmp_path / "missing.mp4")


def test_end_to_end_3_1_s_at_30_fps(tmp_path: Path, pipe) -> None:
    from vaura.generate import generate_for_video, output_paths, write_outputs
    from visualsound.media import probe

    clip = noise_clip(tmp_path / "clip.mp4", 3.1, 30.0)
    seen = []
    res = generate_for_video(clip, pipe, seed=0, on_window=lambda done, total: seen.append((done, total)))
    assert res.audio.shape == (1, 1, round(3.1 * 44100)) and len(res.windows) == 2
    assert seen == [(1, 2), (2, 2)]  # the CLI's progress bar over windows
    paths = output_paths(tmp_path / "gen.mp4", tmp_path, 1)
    write_outputs(clip, res, paths)
    video, audio = probe(paths[0][1]), probe(paths[0][0])
    assert video.has_video and video.has_audio and video.num_frames == 93
    assert abs(video.num_samples / video.sample_rate - video.duration) < 0.05
    assert audio.num_samples == round(3.1 * 44100)


def test_own_checkpoint_trained_on_debug_features(tmp_path: Path) -> None:
    """A checkpoint saved by training with debug weights generates with the matching debug encoder and codec."""
    from vaura.checkpoint import save_checkpoint
    from vaura.config import VAuraConfig
    from vaura.generate import generate_for_video
    from vaura.model import build_model

    model = build_model(VAuraConfig.preset("tiny"), debug_weights=True, seed=4)
    ck = save_checkpoint(tmp_path / "last.pt", model, {"debug_weights": True, "step": 1})
    pipe = load_pipeline(ck)
    assert pipe.debug_weights and pipe.source == str(ck)
    assert torch.equal(pipe.transformer.lm_heads[0].weight, model.lm_heads[0].weight)
    clip = noise_clip(tmp_path / "c.mp4", 0.4, 25.0)
    res = generate_for_video(clip, pipe, SamplingParams(use_sampling=False))
    assert res.codes.shape == (1, 9, total_frames(0.4)) and res.debug_weights


def test_release_checkpoint_pipeline(tmp_path: Path) -> None:
    """A Lightning-layout release (small widths) loads through the strict release path, including the float16
    DAC and the MotionFormer, and matches the parts it was made from."""
    import yaml

    from tests.conftest import require_parity
    from vaura.checkpoint import config_from_hparams
    from vaura.codec import build_dac
    from vaura.model import build_model
    from vaura.synchformer import MotionFormer, SynchformerConfig

    root = require_parity("vaura", "manifest_full.json")
    hp = yaml.safe_load(json.loads((root / "manifest_full.json").read_text())[
        "hparams_yaml_as_lightning_would_write_it"])
    hp["sampler_config"]["params"].update(num_layers=1, d_model=48, nhead=4, dropout=0.0)
    cfg = config_from_hparams(hp)
    model = build_model(cfg, debug_weights=True, seed=2)
    vcfg = SynchformerConfig.preset("tiny").replace(vis_dim=cfg.visual_dim, vis_heads=12)
    visual = MotionFormer(vcfg)
    torch.manual_seed(0)
    dac = build_dac(latent_dim=cfg.audio_width, tiny=True).half()
    sd = {f"sampler.{k}": v for k, v in model.state_dict().items()}
    sd.update({f"visual_feature_extractor.{k}": v for k, v in visual.state_dict().items()})
    sd.update({f"audio_encoder.model.{k}": v for k, v in dac.state_dict().items()})
    (tmp_path / "exp" / "checkpoints").mkdir(parents=True)
    (tmp_path / "exp" / "hparams.yaml").write_text(yaml.safe_dump(hp))
    torch.save({"state_dict": sd}, tmp_path / "exp" / "checkpoints" / "last.ckpt")
    pipe = load_pipeline(tmp_path / "exp", visual_config=vcfg)
    assert not pipe.debug_weights and pipe.transformer.cfg == cfg
    assert torch.equal(pipe.transformer.lm_heads[0].weight, model.lm_heads[0].weight)
    assert torch.equal(pipe.visual.cls_token, visual.cls_token)
    q = pipe.codec.model.quantizer.quantizers[1].codebook.weight
    assert q.dtype == torch.float32 and torch.equal(q, dac.quantizer.quantizers[1].codebook.weight.float())
    codes = torch.randint(0, 1024, (1, 9, 3))
    with torch.no_grad():
        torch.testing.assert_close(pipe.codec.decode(codes), dac.float().eval().decode(
            dac.quantizer.from_codes(codes)[0]), atol=1e-5, rtol=1e-4)
    feats = torch.randn(1, 32, cfg.visual_dim)
    from vaura.sampler import generate

    out = generate(pipe.transformer, feats, 6, SamplingParams(use_sampling=False))
    assert out.codes.shape == (1, 9, 6)


def test_debug_weights_with_own_checkpoint_uses_the_checkpoint(tmp_path):
    """`--debug-weights --checkpoint OWN.pt` loads that transformer (with the debug encoder/codec), it does not
    silently fall back to a fresh random model; with a release checkpoint the combination is refused."""
    from vaura.checkpoint import save_checkpoint
    from vaura.config import VAuraConfig
    from vaura.generate import load_pipeline
    from vaura.model import build_model
    from visualsound.errors import ConfigError

    model = build_model(VAuraConfig.preset("tiny"), debug_weights=True, seed=123)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    path = tmp_path / "own.pt"
    save_checkpoint(path, model)
    pipe = load_pipeline(path, debug_weights=True)
    assert pipe.debug_weights
    for (name, a), b in zip(model.state_dict().items(), pipe.transformer.state_dict().values()):
        assert torch.equal(a, b), name
    (tmp_path / "release").mkdir()
    with pytest.raises(ConfigError, match="cannot be combined"):
        load_pipeline(tmp_path / "release", debug_weights=True)


def test_encoder_and_codec_checkpoints_are_never_ignored(tmp_path):
    """--visual-checkpoint / --codec-checkpoint used to be dropped silently with the debug model, a release
    checkpoint, or one of our checkpoints trained on debug weights; every such combination is refused."""
    from vaura.checkpoint import save_checkpoint
    from vaura.codec import load_codec
    from vaura.config import VAuraConfig
    from vaura.generate import load_pipeline
    from vaura.model import build_model
    from vaura.synchformer import load_sync_model, load_visual_encoder
    from visualsound.errors import ConfigError

    enc = tmp_path / "enc.pt"
    enc.write_bytes(b"never read")
    with pytest.raises(ConfigError, match="own V-AURA checkpoints only"):
        load_pipeline(debug_weights=True, visual_checkpoint=enc)
    (tmp_path / "release").mkdir()
    with pytest.raises(ConfigError, match="own V-AURA checkpoints only"):
        load_pipeline(tmp_path / "release", codec_checkpoint=enc)
    debug_trained = save_checkpoint(tmp_path / "own.pt", build_model(VAuraConfig.preset("tiny"), debug_weights=True),
                                    {"debug_weights": True})
    with pytest.raises(ConfigError, match="debug visual encoder and codec"):
        load_pipeline(debug_trained, visual_checkpoint=enc)
    for loader in (load_codec, load_visual_encoder, load_sync_model):
        with pytest.raises(ConfigError, match="not both"):
            loader(enc, debug_weights=True)


def test_generation_reads_a_training_checkpoint_once(tmp_path, monkeypatch):
    """`vaura generate --checkpoint runs/X/last.pt` read the file twice (a format check, then the model: at paper
    size with the optimiser state, gigabytes twice). One `torch.load` now (tensors mapped, so the training state is
    never read); `vbench evaluate`'s model setup reads only its header, once."""
    from benchmarks.models import VAuraModel
    from vaura.checkpoint import save_checkpoint
    from vaura.config import VAuraConfig
    from vaura.model import build_model

    model = build_model(VAuraConfig.preset("tiny"), debug_weights=True, seed=5)
    path = save_checkpoint(tmp_path / "last.pt", model, {"debug_weights": True, "step": 3})
    blob = torch.load(path, weights_only=True)
    blob["training"] = {"optimizer": {"exp_avg": [torch.zeros_like(v) for v in blob["state_dict"].values()]}}
    torch.save(blob, path)
    loads = []
    real_load = torch.load

    def counting_load(f, *args, **kwargs):
        loads.append((str(f), kwargs.get("mmap")))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    pipe = load_pipeline(path)
    assert [f for f, _ in loads] == [str(path)] and loads[0][1] is True
    assert pipe.debug_weights and all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                                        pipe.transformer.state_dict().values()))
    loads.clear()
    VAuraModel(checkpoint=str(path), out_dir=tmp_path / "gen")
    assert [f for f, _ in loads] == [str(path)]
