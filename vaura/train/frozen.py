"""The frozen parts of training: the Segment AVCLIP visual encoder and the DAC codec (loaded from checkpoints or
seeded random debug weights), their identities for cache manifests, and the trainable transformer initialised
as the release does (original init + audio embeddings from DAC's quantizer)."""

from __future__ import annotations

import logging
from typing import Any

import torch

from vaura.config import VAuraConfig
from vaura.model import Transformer, build_model
from vaura.train.cache import FrozenModels, module_checksum
from vaura.train.config import TrainConfig
from visualsound.errors import ConfigError

log = logging.getLogger(__name__)


def model_config(cfg: TrainConfig) -> VAuraConfig:
    """The transformer config a training config names (preset or file, plus ``model_overrides``)."""
    return VAuraConfig.resolve(cfg.model).with_overrides(list(cfg.model_overrides))


def load_codec_for(cfg: TrainConfig, device: torch.device | str = "cpu") -> Any:
    """The DAC codec of this run (`vaura.codec.Codec`); the debug codec's latent width follows the model."""
    from vaura.codec import load_codec

    return load_codec(cfg.codec_checkpoint, debug_weights=cfg.debug_weights, device=device,
                      latent_dim=model_config(cfg).audio_width)


def identity(name: str, module: torch.nn.Module, checkpoint: str | None, debug_weights: bool) -> dict[str, Any]:
    """What a cache manifest records about a frozen model."""
    return {"name": name, "checkpoint": checkpoint, "debug_weights": debug_weights,
            "checksum": module_checksum(module)}


def load_frozen_models(cfg: TrainConfig, device: torch.device | str = "cpu") -> tuple[FrozenModels, Any]:
    """The visual encoder and the codec as a `FrozenModels` (plus the codec object, for model init)."""
    from vaura.synchformer import load_visual_encoder

    device = torch.device(device)
    enc = load_visual_encoder(cfg.encoder_checkpoint, debug_weights=cfg.debug_weights, device=device)
    enc.requires_grad_(False)
    codec = load_codec_for(cfg, device)
    codec.requires_grad_(False)

    def visual_fn(video: torch.Tensor) -> torch.Tensor:
        feats = enc.features(video.permute(0, 1, 3, 4, 2))  # [B, 64, 3, H, W] -> [B, 64, H, W, 3] -> [B, 4, 8, D]
        return feats.flatten(1, 2)

    frozen = FrozenModels(visual_fn=visual_fn, codes_fn=codec.encode,
                          encoder_id=identity("segment_avclip", enc, cfg.encoder_checkpoint, cfg.debug_weights),
                          codec_id=identity("dac_44khz", codec, cfg.codec_checkpoint, cfg.debug_weights),
                          device=device, visual_dim=int(enc.cls_token.shape[-1]))
    return frozen, codec


def build_training_model(cfg: TrainConfig, codec: Any | None = None, visual_dim: int | None = None) -> Transformer:
    """A fresh transformer with the original init (zero heads, N(0, 0.02)), seeded by ``cfg.seed``; with a
    `codec`, the audio embeddings are initialised from its quantizer (the release's ``initialize_embeddings``).

    `visual_dim`: the encoder's feature width, checked against the model config.
    """
    mcfg = model_config(cfg)
    if visual_dim is not None and visual_dim != mcfg.visual_dim:
        raise ConfigError(f"the visual encoder gives {visual_dim}-d features but the model expects "
                          f"{mcfg.visual_dim}; set model_overrides=[visual_dim={visual_dim}] (the debug encoder "
                          f"is narrow) or use the matching encoder")
    model = build_model(mcfg, debug_weights=False, seed=cfg.seed)
    if codec is not None:
        codebooks, bias = codec.quantizer_tensors()
        want = (mcfg.n_codebooks, mcfg.card, mcfg.codebook_dim)
        if tuple(codebooks.shape) != want or tuple(bias.shape) != (mcfg.n_codebooks, mcfg.audio_width):
            raise ConfigError(
                f"the codec has {codebooks.shape[0]} codebooks of {codebooks.shape[1]} codes x {codebooks.shape[2]} "
                f"dims and a {bias.shape[-1]}-d latent, the model config (model={cfg.model!r}, model_overrides="
                f"{list(cfg.model_overrides)}) expects n_codebooks={mcfg.n_codebooks}, card={mcfg.card}, "
                f"codebook_dim={mcfg.codebook_dim} and audio_width={mcfg.audio_width}; make them agree")
        model.init_audio_embeddings_from_dac(codebooks.cpu(), bias.cpu(),
                                             generator=torch.Generator().manual_seed(cfg.seed + 1))
    return model
