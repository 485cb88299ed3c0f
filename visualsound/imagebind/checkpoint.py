"""Loading Meta's ``imagebind_huge.pth`` (or any upstream ``ImageBindModel`` state dict) into `ImageBindAV`.

Only the vision and audio modalities are kept. Every other upstream key is dropped by an explicit `KeyMap`
ignore pattern (text / depth / thermal / imu preprocessors, trunks, heads, post-processors); any key that is
neither mapped nor ignored, and any missing key or shape mismatch, raises `CheckpointError`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch

from visualsound.errors import CheckpointError, ConfigError
from visualsound.imagebind.config import ImageBindConfig
from visualsound.imagebind.model import ImageBindAV
from visualsound.utils.checkpoint import KeyMap, load_state_dict_strict, safe_torch_load

log = logging.getLogger(__name__)

WEIGHTS_NAME = "imagebind_huge"
DEBUG_SEED = 0

_OTHER_MODALITIES = "(text|depth|thermal|imu)"

IMAGEBIND_KEYMAP = KeyMap(
    rules=(
        (r"modality_preprocessors\.(vision|audio)\.cls_token", r"\1.cls_token"),
        (r"modality_preprocessors\.(vision|audio)\.pos_embedding_helper\.pos_embed", r"\1.pos_embed"),
        # vision stem: Sequential(PadIm2Video (no weights), Conv3d)
        (r"modality_preprocessors\.vision\.rgbt_stem\.proj\.1\.weight", r"vision.patch_embed.weight"),
        # audio stem: Conv2d then LayerNorm
        (r"modality_preprocessors\.audio\.rgbt_stem\.proj\.weight", r"audio.patch_embed.weight"),
        (r"modality_preprocessors\.audio\.rgbt_stem\.norm_layer\.(weight|bias)", r"audio.patch_norm.\1"),
        # trunks: vision pre-transformer LayerNorm (the audio one is an Identity), then the blocks
        (r"modality_trunks\.vision\.pre_transformer_layer\.0\.(weight|bias)", r"vision.pre_norm.\1"),
        (r"modality_trunks\.(vision|audio)\.blocks\.(\d+)\.(.+)", r"\1.blocks.\2.\3"),
        # heads: Sequential(LayerNorm, SelectElement(0), Linear)
        (r"modality_heads\.(vision|audio)\.0\.(weight|bias)", r"\1.head_norm.\2"),
        (r"modality_heads\.(vision|audio)\.2\.weight", r"\1.head_proj.weight"),
        # audio post-processor: Sequential(Normalize, LearnableLogitScaling(20, learnable=False))
        (r"modality_postprocessors\.audio\.1\.log_logit_scale", r"audio.log_logit_scale"),
    ),
    ignore=(
        rf"modality_preprocessors\.{_OTHER_MODALITIES}\..+",
        rf"modality_trunks\.{_OTHER_MODALITIES}\..+",
        rf"modality_heads\.{_OTHER_MODALITIES}\..+",
        rf"modality_postprocessors\.{_OTHER_MODALITIES}\..+",
    ),
)


def convert_upstream_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Upstream ``ImageBindModel.state_dict()`` -> `ImageBindAV` keys (other modalities dropped explicitly)."""
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError("an ImageBind checkpoint must be a flat mapping of parameter names to tensors, "
                              f"got {type(state_dict).__name__}")
    return IMAGEBIND_KEYMAP.apply(state_dict)


def load_imagebind(checkpoint: str | os.PathLike | None = None, debug_weights: bool = False,
                   device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                   config: ImageBindConfig | str | None = None) -> ImageBindAV:
    """Build `ImageBindAV` in eval mode.

    ``debug_weights=True``: a seeded random model of the ``debug`` preset (no file needed). Otherwise the
    upstream state dict at `checkpoint` (None: the registry's cached ``imagebind_huge`` via
    ``visualsound.weights.resolve``) is loaded strictly into `config` (default ``huge``; a preset name or a
    config object).
    """
    if isinstance(config, str):
        config = ImageBindConfig.resolve(config)
    if debug_weights:
        if checkpoint is not None:
            raise ConfigError("load_imagebind: pass either a checkpoint or debug_weights=True, not both")
        model = ImageBindAV(config or ImageBindConfig.preset("debug")).init_random_(DEBUG_SEED)
        log.warning("ImageBind: using DEBUG WEIGHTS (seeded random model, scores are meaningless)")
        return model.to(device=device, dtype=dtype).eval()
    if checkpoint is None:
        from visualsound.weights import resolve  # lazy: the weights registry is optional for the rest

        checkpoint = resolve(WEIGHTS_NAME)
    cfg = config or ImageBindConfig.preset("huge")
    log.info("ImageBind: loading %s", checkpoint)
    state = convert_upstream_state_dict(safe_torch_load(checkpoint, map_location="cpu"))
    with torch.device("meta"):
        model = ImageBindAV(cfg)
    load_state_dict_strict(model, state, what=f"ImageBind checkpoint {checkpoint}")
    return model.to(device=device, dtype=dtype).eval()
