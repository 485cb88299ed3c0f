"""Reading Synchformer checkpoints strictly (unknown or missing keys raise, listing them).

Layouts understood (see the parity README, section 1):

* ``sync_full``: stage-II ``<ID>.pt``, a dict whose ``model`` entry is the sync model state dict and whose
  ``args`` is a pickled OmegaConf object. Read with `safe_torch_load`: the OmegaConf classes become inert
  opaque objects, nothing is executed and omegaconf is not needed.
* ``sync_bare``: the same state dict on its own (MMAudio's ``synchformer_state_dict.pth``).
* ``stage1``: stage-I Segment AVCLIP ``epoch_best.pt``: ``state_dict`` with ``[module.]logit_scale``,
  ``[module.]v_encoder.*`` and ``[module.]a_encoder.*``. Only the visual encoder is taken from it.
* ``motionformer``: a bare visual-encoder state dict (keys as `MotionFormer`'s, e.g. ``cls_token``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from visualsound.errors import CheckpointError
from visualsound.utils.checkpoint import KeyMap, load_state_dict_strict, safe_torch_load

log = logging.getLogger(__name__)

SYNC_PREFIXES = ("vfeat_extractor.", "afeat_extractor.", "vproj.", "aproj.", "transformer.")

# stage-II sync model -> the visual encoder alone
SYNC_TO_VISUAL = KeyMap(rules=((r"vfeat_extractor\.(.+)", r"\1"),),
                        ignore=(r"afeat_extractor\..+", r"vproj\..+", r"aproj\..+", r"transformer\..+"))
# stage-I Segment AVCLIP (with or without DDP's "module.") -> the visual encoder alone
STAGE1_TO_VISUAL = KeyMap(rules=((r"(?:module\.)?v_encoder\.(.+)", r"\1"),),
                          ignore=(r"(?:module\.)?logit_scale", r"(?:module\.)?a_encoder\..+"))
# stage-I Segment AVCLIP -> the two feature extractors of a sync model (the head stays untouched)
STAGE1_TO_SYNC = KeyMap(rules=((r"(?:module\.)?v_encoder\.(.+)", r"vfeat_extractor.\1"),
                               (r"(?:module\.)?a_encoder\.(.+)", r"afeat_extractor.\1")),
                        ignore=(r"(?:module\.)?logit_scale",))


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def read_checkpoint(path: str | os.PathLike) -> tuple[str, dict[str, torch.Tensor]]:
    """Read `path` safely and return ``(layout, state_dict)`` with layout one of the module docstring's."""
    obj = safe_torch_load(path, map_location="cpu")
    if isinstance(obj, Mapping) and "model" in obj and _is_state_dict(obj["model"]):
        layout, sd = "sync_full", dict(obj["model"])
    elif isinstance(obj, Mapping) and "state_dict" in obj and _is_state_dict(obj["state_dict"]):
        layout, sd = "stage1", dict(obj["state_dict"])
    elif _is_state_dict(obj):
        sd = dict(obj)
        if any(k.startswith(SYNC_PREFIXES) for k in sd):
            layout = "sync_bare"
        elif any(k.startswith(("v_encoder.", "module.v_encoder.")) for k in sd):
            layout = "stage1"
        else:
            layout = "motionformer"
    else:
        keys = sorted(map(str, obj))[:12] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{path}: not a Synchformer checkpoint (no 'model' / 'state_dict' entry and not a "
                              f"state dict of tensors; top level: {keys})")
    if layout == "stage1" and not any(".v_encoder." in f".{k}" for k in sd):
        raise CheckpointError(f"{path}: 'state_dict' has no v_encoder.* keys; not a Segment AVCLIP checkpoint")
    log.info("%s: %s layout, %d tensors", path, layout, len(sd))
    return layout, sd


def load_sync_weights(model: nn.Module, path: str | os.PathLike) -> str:
    """Load a ``sync_full`` or ``sync_bare`` checkpoint into a `Synchformer` strictly; return the layout."""
    layout, sd = read_checkpoint(path)
    if layout not in ("sync_full", "sync_bare"):
        raise CheckpointError(f"{path}: a {layout} checkpoint has no offset head; the sync model needs a stage-II "
                              f"<ID>.pt or its bare state dict")
    load_state_dict_strict(model, sd, what=f"Synchformer checkpoint {path}")
    return layout


def visual_state_dict(layout: str, sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The `MotionFormer` state dict inside a checkpoint of any supported layout."""
    if layout in ("sync_full", "sync_bare"):
        return SYNC_TO_VISUAL.apply(sd)
    if layout == "stage1":
        return STAGE1_TO_VISUAL.apply(sd)
    if layout == "motionformer":
        return dict(sd)
    raise CheckpointError(f"unknown checkpoint layout {layout!r}")


def load_visual_weights(model: nn.Module, path: str | os.PathLike) -> str:
    """Load the visual encoder of any supported checkpoint into a `MotionFormer` strictly; return the layout."""
    layout, sd = read_checkpoint(path)
    load_state_dict_strict(model, visual_state_dict(layout, sd), what=f"visual encoder from {path} ({layout})")
    return layout
