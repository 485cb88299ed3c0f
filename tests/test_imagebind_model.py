"""ImageBind towers: parity with the upstream tiny model, strict loading of the huge manifest, key map."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import require_parity
from visualsound.errors import CheckpointError, ConfigError
from visualsound.imagebind import ImageBindAV, ImageBindConfig, convert_upstream_state_dict, load_imagebind
from visualsound.utils.checkpoint import load_state_dict_strict


@pytest.fixture(scope="module")
def tiny_model() -> ImageBindAV:
    root = require_parity("imagebind", "tiny_weights.pt")
    return load_imagebind(root / "tiny_weights.pt", config="tiny")


def _expected(clip: str) -> dict:
    root = require_parity("imagebind", f"expected_{clip}.pt")
    return torch.load(root / f"expected_{clip}.pt", weights_only=True)


def test_tiny_preset_matches_fixture_config():
    root = require_parity("imagebind", "tiny_config.json")
    kw = json.loads((root / "tiny_config.json").read_text())["constructor_kwargs"]
    cfg = ImageBindConfig.preset("tiny")
    assert cfg.out_embed_dim == kw["out_embed_dim"]
    assert (cfg.video_frames, cfg.vision_patch_size, cfg.vision_patch_size) == tuple(kw["kernel_size"])
    for tower in ("vision", "audio"):
        for what in ("embed_dim", "num_blocks", "num_heads"):
            assert getattr(cfg, f"{tower}_{what}") == kw[f"{tower}_{what}"], (tower, what)
    assert (cfg.audio_kernel_size, cfg.audio_stride) == (kw["audio_kernel_size"], kw["audio_stride"])
    assert (cfg.audio_num_mel_bins, cfg.audio_target_len) == (kw["audio_num_mel_bins"], kw["audio_target_len"])


@pytest.mark.parametrize("clip", ["clipA", "clipB"])
@torch.no_grad()
def test_tiny_model_reproduces_fixture_embeddings(tiny_model: ImageBindAV, clip: str):
    exp = _expected(clip)
    video = exp["video"].float()[None]  # stored fp16 -> compare with the *_from_stored_fp16_video values
    audio = exp["audio"][None]
    ev = tiny_model.embed_vision(video)[0]
    ea = tiny_model.embed_audio(audio)[0]
    assert (ev - exp["tiny_vision_emb_from_stored_fp16_video"]).abs().max() <= 1e-4
    assert (ea - exp["tiny_audio_emb"]).abs().max() <= 2e-3
    # per-clip audio embeddings after the post-processor (norm 20), before averaging
    assert (tiny_model.audio(audio[0]) - exp["tiny_audio_clip_emb"]).abs().max() <= 2e-3
    assert torch.allclose(tiny_model.audio(audio[0]).norm(dim=-1), torch.full((3,), 20.0), atol=1e-3)
    score = tiny_model.score(video, audio)
    assert score.shape == (1,)
    assert abs(score.item() - exp["tiny_score_from_stored_fp16_video"].item()) <= 1e-4


@torch.no_grad()
def test_score_is_batched_and_order_invariant(tiny_model: ImageBindAV):
    a, b = _expected("clipA"), _expected("clipB")
    video = torch.stack([a["video"].float(), b["video"].float()])
    audio = torch.stack([a["audio"], b["audio"]])
    both = tiny_model.score(video, audio)
    assert both.shape == (2,)
    single = tiny_model.score(video[1:], audio[1:])
    assert torch.allclose(both[1:], single, atol=1e-6)
    perm = torch.randperm(15, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(tiny_model.embed_vision(video[:, perm]), tiny_model.embed_vision(video), atol=1e-6)


def test_huge_manifest_loads_strictly_on_meta():
    root = require_parity("imagebind", "manifest_imagebind_huge.json")
    manifest = json.loads((root / "manifest_imagebind_huge.json").read_text())
    with torch.device("meta"):
        model = ImageBindAV(ImageBindConfig.preset("huge"))
        state = {k: torch.empty(shape, dtype=getattr(torch, dt)) for k, shape, dt in manifest["entries"]}
    assert len(state) == manifest["num_keys"]
    mapped = convert_upstream_state_dict(state)
    load_state_dict_strict(model, mapped, what="imagebind_huge manifest")
    assert all(p.is_meta for p in model.parameters())
    # every vision/audio upstream key is used; every other modality's key is dropped
    av_keys = [k for k in state if ".vision." in k or ".audio." in k]
    assert len(mapped) == len(av_keys) == len(model.state_dict())


def test_keymap_rejects_unknown_and_missing_keys():
    root = require_parity("imagebind", "tiny_weights.pt")
    state = torch.load(root / "tiny_weights.pt", weights_only=True)
    with pytest.raises(CheckpointError, match="match no rule"):
        convert_upstream_state_dict({**state, "modality_trunks.video.blocks.0.x": torch.zeros(1)})
    broken = dict(state)
    del broken["modality_heads.audio.2.weight"]
    model = ImageBindAV(ImageBindConfig.preset("tiny"))
    with pytest.raises(CheckpointError, match="missing"):
        load_state_dict_strict(model, convert_upstream_state_dict(broken))
    with pytest.raises(CheckpointError, match="does not fit"):  # tiny weights into the huge config
        with torch.device("meta"):
            huge = ImageBindAV(ImageBindConfig.preset("huge"))
        load_state_dict_strict(huge, convert_upstream_state_dict(state))


@torch.no_grad()
def test_debug_weights_are_seeded_and_input_dependent():
    m1 = load_imagebind(debug_weights=True)
    m2 = load_imagebind(debug_weights=True)
    gen = torch.Generator().manual_seed(0)
    video = torch.randn(2, 15, 3, 2, 224, 224, generator=gen)
    audio = torch.randn(2, 3, 1, 128, 204, generator=gen)
    s1, s2 = m1.score(video, audio), m2.score(video, audio)
    assert torch.equal(s1, s2)
    assert (s1[0] - s1[1]).abs() > 1e-4
    with pytest.raises(ConfigError):
        load_imagebind("weights.pth", debug_weights=True)


def test_shape_asserts_name_the_shape():
    model = ImageBindAV(ImageBindConfig.preset("tiny"))
    with pytest.raises(AssertionError, match=r"\(2, 3, 2, 112, 112\)"):
        model.vision(torch.zeros(2, 3, 2, 112, 112))
    with pytest.raises(AssertionError, match="B, S"):
        model.embed_audio(torch.zeros(3, 1, 128, 204))


@torch.no_grad()
def test_low_precision_model_takes_fp32_inputs():
    model = load_imagebind(debug_weights=True, dtype=torch.bfloat16)
    gen = torch.Generator().manual_seed(0)
    video = torch.randn(1, 15, 3, 2, 224, 224, generator=gen)
    audio = torch.randn(1, 3, 1, 128, 204, generator=gen)
    ref = load_imagebind(debug_weights=True).score(video, audio)
    out = model.score(video, audio)
    assert out.dtype == torch.float32 and abs(out.item() - ref.item()) < 0.05


def test_default_checkpoint_comes_from_the_registry(tmp_path, monkeypatch):
    from visualsound.weights import WeightsNotFoundError

    monkeypatch.setenv("VAURA_CACHE_DIR", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="imagebind_huge"):
        load_imagebind()


def test_config_presets_and_validation(tmp_path):
    huge = ImageBindConfig.preset("huge")
    assert huge.vision_num_tokens == 257 and huge.audio_grid == (12, 19) and huge.audio_num_tokens == 229
    assert ImageBindConfig.preset("debug") == ImageBindConfig.preset("tiny")
    huge.save(tmp_path / "ib.json")
    assert ImageBindConfig.load(tmp_path / "ib.json") == huge
    with pytest.raises(ConfigError, match="divisible"):
        huge.replace(vision_num_heads=7)
