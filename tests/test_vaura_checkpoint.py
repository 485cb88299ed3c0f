"""V-AURA checkpoints: release layout (manifest, strict key map, hparams), own checkpoints, codec wrapper."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from tests.conftest import require_parity
from vaura.checkpoint import (
    config_from_hparams,
    load_checkpoint,
    load_transformer_state,
    read_release,
    save_checkpoint,
    split_release_state_dict,
)
from vaura.config import VAuraConfig
from vaura.model import Transformer, build_model
from visualsound.errors import CheckpointError, ConfigError
from visualsound.utils.checkpoint import load_state_dict_strict

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def manifest() -> dict:
    root = require_parity("vaura", "manifest_full.json")
    return json.loads((root / "manifest_full.json").read_text())


def test_paper_model_loads_release_manifest_strictly_on_meta(manifest) -> None:
    from vaura.codec import build_dac
    from vaura.synchformer import MotionFormer, SynchformerConfig

    sd = {k: torch.empty(shape, dtype=getattr(torch, dt), device="meta") for k, shape, dt in manifest["entries"]}
    parts = split_release_state_dict(sd)
    cfg = config_from_hparams(yaml.safe_load(manifest["hparams_yaml_as_lightning_would_write_it"]))
    assert cfg == VAuraConfig.preset("paper")
    with torch.device("meta"):
        transformer = Transformer(cfg)
        visual = MotionFormer(SynchformerConfig.preset("paper"))
        dac = build_dac().half()
    load_transformer_state(transformer, parts["transformer"])
    load_state_dict_strict(visual, parts["visual"])
    load_state_dict_strict(dac, parts["codec"])
    own_dac = dac.state_dict()
    assert all(own_dac[k].dtype == v.dtype == torch.float16 for k, v in parts["codec"].items())
    counts = {name: sum(t.numel() for t in p.values()) for name, p in parts.items()}
    assert counts == {"transformer": manifest["num_elements"]["sampler"],
                      "visual": manifest["num_elements"]["visual_feature_extractor"],
                      "codec": manifest["num_elements"]["audio_encoder"]}


def test_key_map_rejects_unmapped_and_missing(manifest) -> None:
    sd = {k: torch.empty(shape, device="meta") for k, shape, _ in manifest["entries"]}
    with pytest.raises(CheckpointError, match="match no rule"):
        split_release_state_dict({**sd, "model_ema.decay": torch.empty(1)})
    with pytest.raises(CheckpointError, match="lacks the parts"):
        split_release_state_dict({k: v for k, v in sd.items() if not k.startswith("audio_encoder.")})
    parts = split_release_state_dict(sd)
    del parts["transformer"]["norm.weight"]
    with torch.device("meta"):
        model = Transformer(VAuraConfig.preset("paper"))
    with pytest.raises(CheckpointError, match="missing"):
        load_transformer_state(model, parts["transformer"])


def test_hparams_rejects_other_variants(manifest) -> None:
    hp = yaml.safe_load(manifest["hparams_yaml_as_lightning_would_write_it"])
    with pytest.raises(ConfigError, match="unknown keys"):
        config_from_hparams({**hp, "new_knob": 1})
    bad = json.loads(json.dumps(hp))
    bad["sampler_config"]["params"]["activation"] = "relu"
    with pytest.raises(ConfigError, match="activation"):
        config_from_hparams(bad)
    bad = json.loads(json.dumps(hp))
    bad["audio_encoder_config"]["params"]["model_sr"] = 24000
    with pytest.raises(ConfigError, match="model_sr"):
        config_from_hparams(bad)
    bad = json.loads(json.dumps(hp))
    bad["sampler_config"]["target"] = "models.modules.sampler.gpt.Transformer"
    with pytest.raises(ConfigError, match="target"):
        config_from_hparams(bad)
    small = json.loads(json.dumps(hp))
    small["sampler_config"]["params"].update(num_layers=2, d_model=96, nhead=4, dropout=0.0)
    assert config_from_hparams(small) == VAuraConfig.preset("reduced")


def test_read_fake_release_folder(tmp_path, manifest) -> None:
    """A Lightning-style experiment folder with tiny parts goes through the same strict path."""
    from vaura.codec import build_dac

    hp = yaml.safe_load(manifest["hparams_yaml_as_lightning_would_write_it"])
    hp["sampler_config"]["params"].update(num_layers=2, d_model=48, nhead=4, dropout=0.0)
    model = build_model(VAuraConfig(n_layer=2, d_model=48, n_head=4, dropout=0.0), debug_weights=True)
    dac = build_dac(latent_dim=32, tiny=True).half()
    sd = {f"sampler.{k}": v for k, v in model.state_dict().items()}
    sd.update({"visual_feature_extractor.cls_token": torch.zeros(1, 1, 768)})
    sd.update({f"audio_encoder.model.{k}": v for k, v in dac.state_dict().items()})
    (tmp_path / "exp" / "checkpoints").mkdir(parents=True)
    (tmp_path / "exp" / "tb").mkdir()
    (tmp_path / "exp" / "tb" / "hparams.yaml").write_text(yaml.safe_dump(hp))
    # a foreign pickled object (as Lightning's AttributeDict) forces the restricted unpickler
    import argparse
    import pickle

    torch.save({"state_dict": sd, "epoch": 3, "hyper_parameters": argparse.Namespace(**hp)},
               tmp_path / "exp/checkpoints/epoch=3.ckpt")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "exp/checkpoints/epoch=3.ckpt", weights_only=True)
    parts = read_release(tmp_path / "exp")
    assert parts.config.d_model == 48
    fresh = Transformer(parts.config)
    load_transformer_state(fresh, parts.transformer)
    assert torch.equal(fresh.lm_heads[0].weight, model.lm_heads[0].weight)
    assert set(parts.visual) == {"cls_token"} and parts.codec["quantizer.quantizers.0.codebook.weight"].dtype == \
        torch.float16
    (tmp_path / "exp" / "checkpoints" / "epoch=4.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="one .ckpt"):
        read_release(tmp_path / "exp")


def test_own_checkpoint_round_trip(tmp_path) -> None:
    model = build_model(VAuraConfig.preset("tiny"), debug_weights=True, seed=5).eval()
    path = save_checkpoint(tmp_path / "ck" / "model.pt", model, {"step": 12, "debug_weights": True})
    assert not list((tmp_path / "ck").glob(".*.tmp"))
    loaded, meta = load_checkpoint(path)
    assert meta == {"step": 12, "debug_weights": True}
    assert loaded.cfg == model.cfg
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    codes = torch.randint(0, 1024, (1, 9, 12))
    feats = torch.randn(1, 32, model.cfg.visual_dim)
    with torch.no_grad():
        torch.testing.assert_close(loaded(codes, feats), model(codes, feats), atol=0, rtol=0)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a V-AURA checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_codec_round_trip_shapes_and_embedding_init() -> None:
    from vaura.codec import load_codec

    codec = load_codec(debug_weights=True, latent_dim=32)
    assert (codec.sample_rate, codec.hop_length, codec.n_codebooks) == (44100, 512, 9)
    audio = torch.randn(1, 1, 4 * 512 + 100) * 0.1
    codes = codec.encode(audio)
    assert codes.shape == (1, 9, 5) and codes.dtype == torch.int64
    assert codec.frames_for(112896) == 221
    wav = codec.decode(codes)
    assert wav.shape == (1, 1, 5 * 512) and wav.dtype == torch.float32
    model = Transformer(VAuraConfig.preset("tiny"))
    books, bias = codec.quantizer_tensors()
    model.init_audio_embeddings_from_dac(books, bias)
    assert torch.equal(model.tok_embeddings[3].emb.weight[:1024], codec.model.quantizer.quantizers[3].codebook.weight)


def test_codec_encodes_2_56_s_to_221_frames() -> None:
    from vaura.codec import load_codec

    codec = load_codec(debug_weights=True, latent_dim=32)
    t = torch.arange(112896) / 44100
    codes = codec.encode(torch.sin(2 * torch.pi * 440 * t)[None] * 0.5)
    assert codes.shape == (1, 9, 221)
    assert int(codes.min()) >= 0 and int(codes.max()) < 1024


def test_load_codec_reads_dac_files_as_plain_weights(tmp_path) -> None:
    """A DAC weights file (``{"metadata": {"kwargs"}, "state_dict"}``) is read through safe_torch_load and loaded
    strictly; ``dac.DAC.load`` (torch.package first, errors swallowed) is not used."""
    from vaura.codec import TINY_DAC_KWARGS, build_dac, load_codec

    model = build_dac(latent_dim=32, tiny=True)
    path = tmp_path / "weights_44khz.pth"
    torch.save({"metadata": {"kwargs": dict(TINY_DAC_KWARGS, latent_dim=32)}, "state_dict": model.state_dict()},
               path)
    codec = load_codec(path)
    assert not codec.debug_weights and codec.latent_dim == 32
    for (name, a), b in zip(model.state_dict().items(), codec.model.state_dict().values()):
        assert torch.equal(a.float(), b), name
    torch.save({"weights": model.state_dict()}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a DAC 44 kHz checkpoint"):
        load_codec(tmp_path / "other.pth")
    partial = {k: v for k, v in model.state_dict().items() if not k.startswith("decoder.model.1")}
    torch.save({"state_dict": partial}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="missing"):
        load_codec(tmp_path / "partial.pth")
