"""V-AURA checkpoints: the released Lightning ``.ckpt`` + ``hparams.yaml``, and our own self-describing files.

Release layout (``state_dict`` of ``VAURAModel``, see the parity ``manifest_full.json``)::

    sampler.*                      the transformer (fp32)         -> `Transformer` (same names)
    visual_feature_extractor.*     Segment AVCLIP MotionFormer    -> `vaura.synchformer.MotionFormer`
    audio_encoder.model.*          DAC 44 kHz (float16)           -> ``dac.DAC``

`RELEASE_KEY_MAP` sends each prefix to one part; any other key (and any missing key) raises `CheckpointError`.
The hparams (18 ``VAURAModel.__init__`` arguments) are read with ``yaml.safe_load`` and mapped to `VAuraConfig`
by `config_from_hparams`, which rejects values this implementation does not reproduce.

Our own format is one ``torch.save`` dict ``{"format": "vaura", "version": 1, "config": {...}, "state_dict":
{...}, "metadata": {...}}`` written atomically and read with ``weights_only=True``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vaura.config import VAuraConfig
from vaura.model import Transformer
from visualsound.errors import CheckpointError, ConfigError
from visualsound.utils.atomic import atomic_torch_save
from visualsound.utils.checkpoint import KeyMap, load_state_dict_strict, safe_torch_load

log = logging.getLogger(__name__)

FORMAT = "vaura"
VERSION = 1

RELEASE_KEY_MAP = KeyMap(rules=(
    (r"sampler\.(.+)", r"transformer.\1"),
    (r"visual_feature_extractor\.(.+)", r"visual.\1"),
    (r"audio_encoder\.model\.(.+)", r"codec.\1"),
))

# hparams of the release that must hold these values (the implementation reproduces only this variant)
_EXPECTED_HPARAMS: dict[str, Any] = {
    "use_visual_conditioning": True,
    "flatten_vis_feats": True,
    "apply_per_video_frame_mask": False,
}
_EXPECTED_TARGETS = {
    "sampler_config": "models.modules.sampler.llama.Transformer",
    "audio_encoder_config": "models.modules.dac.model.DacModelWrapper",
    "pattern_provider_config": "models.modules.misc.codebook_patterns.DelayedPatternProvider",
    "visual_bridge_config": "torch.nn.Identity",
    "feature_extractor_config": "models.modules.feature_extractors.avclip.motionformer.MotionFormer",
}
# training-only hparams: recorded, not used
_TRAINING_HPARAMS = {"learning_rate", "lr_scheduler", "weight_decay", "betas", "batch_size", "predict_at_val_start",
                     "return_attention_weights", "plot_distr_of_pred_indices", "freeze_feature_extractor",
                     "files_to_track_during_training"}
_SAMPLER_PARAMS = {"num_layers", "d_model", "d_codebook", "nhead", "dim_feedforward", "dropout", "activation",
                   "layer_norm_eps", "batch_first", "norm_first", "num_codebooks", "block_size_audio",
                   "block_size_video", "positional_embedder", "cond_feature_channel_scaler",
                   "use_visual_conditioning"}


def config_from_hparams(hparams: Mapping[str, Any]) -> VAuraConfig:
    """Map the release's hparams (``hparams.yaml`` as a dict) to a `VAuraConfig`; raise `ConfigError` on unknown
    keys or values that select a different architecture than the released one."""
    known = set(_EXPECTED_HPARAMS) | set(_EXPECTED_TARGETS) | _TRAINING_HPARAMS
    unknown = sorted(set(hparams) - known)
    if unknown:
        raise ConfigError(f"hparams: unknown keys {unknown}")
    for key, want in _EXPECTED_HPARAMS.items():
        if key in hparams and hparams[key] != want:
            raise ConfigError(f"hparams: {key}={hparams[key]!r} is not supported (only {want!r})")
    for key, target in _EXPECTED_TARGETS.items():
        got = (hparams.get(key) or {}).get("target")
        if key in hparams and got != target:
            raise ConfigError(f"hparams: {key}.target={got!r} is not supported (only {target!r})")
    if "sampler_config" not in hparams:
        raise ConfigError("hparams: sampler_config is missing")
    p = dict(hparams["sampler_config"].get("params") or {})
    bad = sorted(set(p) - _SAMPLER_PARAMS)
    if bad:
        raise ConfigError(f"hparams: unknown sampler_config.params {bad}")
    for key, want in (("activation", "gelu"), ("batch_first", True), ("norm_first", True),
                      ("positional_embedder", "learned"), ("use_visual_conditioning", True)):
        if key in p and p[key] != want:
            raise ConfigError(f"hparams: sampler_config.params.{key}={p[key]!r} is not supported (only {want!r})")
    sr = ((hparams.get("audio_encoder_config") or {}).get("params") or {}).get("model_sr", 44100)
    if sr != 44100:
        raise ConfigError(f"hparams: audio_encoder_config.params.model_sr={sr} is not supported (only 44100)")
    n_q = ((hparams.get("pattern_provider_config") or {}).get("params") or {}).get("n_q")
    default = VAuraConfig()
    k = int(p.get("num_codebooks", default.n_codebooks))
    if n_q is not None and n_q != k:
        raise ConfigError(f"hparams: pattern n_q={n_q} differs from sampler num_codebooks={k}")
    return VAuraConfig(
        n_layer=int(p.get("num_layers", default.n_layer)),
        d_model=int(p.get("d_model", default.d_model)),
        n_head=int(p.get("nhead", default.n_head)),
        norm_eps=float(p.get("layer_norm_eps", default.norm_eps)),
        rope_len=max(int(p.get("block_size_audio", 256)), int(p.get("block_size_video", 64))),
        n_codebooks=k,
        card=int(p.get("d_codebook", default.card)),
        visual_channel_scaler=int(p.get("cond_feature_channel_scaler", default.visual_channel_scaler)),
        dropout=float(p.get("dropout", default.dropout)),
    )


def read_hparams(path: str | os.PathLike) -> dict[str, Any]:
    """``hparams.yaml`` via ``yaml.safe_load`` (a mapping is required)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: hparams must be a mapping, got {type(data).__name__}")
    return data


def find_release_files(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(ckpt, hparams.yaml)`` from a ``.ckpt`` file (hparams searched next to it and in its experiment folder)
    or an experiment folder (exactly one ``.ckpt`` in it)."""
    p = Path(path)
    if p.is_dir():
        ckpts = sorted(p.rglob("*.ckpt"))
        if len(ckpts) != 1:
            raise CheckpointError(f"{p}: expected one .ckpt in the experiment folder, found {len(ckpts)}: "
                                  f"{[str(c) for c in ckpts[:5]]}; pass the .ckpt path")
        ckpt, root = ckpts[0], p
    elif p.is_file():
        ckpt, root = p, p.parent.parent if p.parent.name == "checkpoints" else p.parent
    else:
        raise CheckpointError(f"{p} does not exist")
    candidates = [ckpt.parent / "hparams.yaml", *sorted(root.rglob("hparams.yaml"))]
    for c in candidates:
        if c.is_file():
            return ckpt, c
    raise CheckpointError(f"no hparams.yaml next to {ckpt} or under {root}")


@dataclass
class ReleaseParts:
    """The released checkpoint split per part: transformer, MotionFormer and DAC state dicts plus the config."""

    config: VAuraConfig
    transformer: dict[str, torch.Tensor]
    visual: dict[str, torch.Tensor]
    codec: dict[str, torch.Tensor]
    hparams: dict[str, Any] = field(default_factory=dict)


def split_release_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Apply `RELEASE_KEY_MAP` and group by part: ``{"transformer": ..., "visual": ..., "codec": ...}``."""
    mapped = RELEASE_KEY_MAP.apply(state_dict)
    parts: dict[str, dict[str, torch.Tensor]] = {"transformer": {}, "visual": {}, "codec": {}}
    for key, value in mapped.items():
        part, rest = key.split(".", 1)
        parts[part][rest] = value
    empty = [name for name, sd in parts.items() if not sd]
    if empty:
        raise CheckpointError(f"checkpoint lacks the parts {empty} (keys 'sampler.*', "
                              f"'visual_feature_extractor.*', 'audio_encoder.model.*' expected)")
    return parts


def read_release(path: str | os.PathLike) -> ReleaseParts:
    """Read the released Lightning checkpoint (file or experiment folder) and its hparams."""
    ckpt_path, hparams_path = find_release_files(path)
    hparams = read_hparams(hparams_path)
    cfg = config_from_hparams(hparams)
    blob = safe_torch_load(ckpt_path)
    if not isinstance(blob, dict) or "state_dict" not in blob:
        raise CheckpointError(f"{ckpt_path} is not a Lightning checkpoint (no 'state_dict')")
    parts = split_release_state_dict(blob["state_dict"])
    log.info("read V-AURA release %s (%d transformer, %d visual, %d codec tensors)", ckpt_path,
             len(parts["transformer"]), len(parts["visual"]), len(parts["codec"]))
    return ReleaseParts(cfg, parts["transformer"], parts["visual"], parts["codec"], hparams)


def load_transformer_state(model: Transformer, state_dict: Mapping[str, torch.Tensor]) -> Transformer:
    """Strictly load a transformer state dict (missing / unexpected / mis-shaped keys raise)."""
    load_state_dict_strict(model, {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()},
                           what="V-AURA transformer state dict")
    return model


# -- own checkpoints -----------------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike, model: Transformer, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``{format, version, config, state_dict, metadata}`` atomically; returns the path."""
    path = Path(path)
    blob = {"format": FORMAT, "version": VERSION, "config": model.cfg.to_dict(),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "metadata": dict(metadata or {})}
    atomic_torch_save(blob, path)
    log.info("saved V-AURA checkpoint %s", path)
    return path


def read_own_checkpoint(path: str | os.PathLike) -> dict[str, Any] | None:
    """One read of a `save_checkpoint` file (or a `vaura train` checkpoint, which adds ``training``): its blob,
    tensors memory-mapped (only those used are read from disk: a training checkpoint's optimiser state never is);
    None for a folder, a released ``.ckpt`` or a file of another format."""
    p = Path(path)
    if not p.is_file() or p.suffix == ".ckpt":
        return None
    blob = safe_torch_load(p, mmap=True)
    return blob if isinstance(blob, dict) and blob.get("format") == FORMAT else None


def is_own_checkpoint(path: str | os.PathLike) -> bool:
    """True for a file written by `save_checkpoint` (reads its header; tensors are mapped, not read)."""
    return read_own_checkpoint(path) is not None


def own_checkpoint_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``metadata`` dict of a `save_checkpoint` file (reads its header); `CheckpointError` for any other
    file."""
    blob = read_own_checkpoint(path)
    if blob is None:
        raise CheckpointError(f"{path} is not a V-AURA checkpoint written by this toolkit (format {FORMAT!r})")
    return dict(blob.get("metadata") or {})


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu",
                    blob: Mapping[str, Any] | None = None) -> tuple[Transformer, dict[str, Any]]:
    """Read a `save_checkpoint` file: ``(model in eval mode, metadata)``; `blob`: what `read_own_checkpoint`
    already read from `path` (the file is then not read again)."""
    if blob is None:
        blob = safe_torch_load(path)
    if not isinstance(blob, Mapping) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a V-AURA checkpoint written by this toolkit (format {FORMAT!r})")
    if blob.get("version") != VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint version {blob.get('version')!r} (expected {VERSION})")
    cfg = VAuraConfig.from_dict(blob["config"])
    with torch.device("meta"):
        model = Transformer(cfg)
    # own memory for every tensor: mapped ones (`read_own_checkpoint`) would stay backed by the file
    load_transformer_state(model, {k: v.clone() for k, v in blob["state_dict"].items()})
    model.reset_rope()
    return model.to(device).eval(), dict(blob.get("metadata") or {})
