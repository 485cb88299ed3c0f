"""Synchformer entry points: build / load models, cut windows from clips of any length, predict offsets.

Protocols for a clip (video uint8 ``[T, H, W, 3]`` at 25 fps, audio float ``[N]`` or ``[C, N]`` at 16 kHz):

* ``paper``: frames resized to short side 256 and centre-cropped to 224 (the ffmpeg re-encode of the paper's
  pipeline, here antialiased bicubic), both streams trimmed to the shorter one, looped to 5 s when shorter, and
  the 4.8 s window of the 5 s crop that upstream's test transforms use: frames 2..121, samples 1280..78079.

av-benchmark's DeSync (MMAudio's evaluator: its own frame selection, resize and windows) lives with that protocol,
`benchmarks.protocols.avbench.protocol.clip_desync`, built on `Synchformer.visual_features` / `audio_features` /
`compare`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch
from torch import nn

from vaura.synchformer import preprocess as P
from vaura.synchformer.checkpoint import load_sync_weights, load_visual_weights
from vaura.synchformer.config import SynchformerConfig
from vaura.synchformer.model import Synchformer
from vaura.synchformer.visual import MotionFormer
from visualsound.errors import ConfigError

log = logging.getLogger(__name__)

PROTOCOLS = ("paper",)
DEBUG_SEED = 0
CLIP_SECONDS = 5.0  # the paper's test crop
CLIP_FRAMES = int(CLIP_SECONDS * P.FPS)  # 125
WINDOW_START_FRAME = (CLIP_FRAMES - P.WINDOW_FRAMES) // 2  # 2


# -- building and loading ----------------------------------------------------------------------------------
@torch.no_grad()
def init_random_weights(module: nn.Module, seed: int = DEBUG_SEED) -> nn.Module:
    """Seeded random init, tensors filled in state-dict order from one generator: matrices and kernels
    ``N(0, 1) / sqrt(fan_in)``, biases ``0.02 N``, LayerNorm weights ``1 + 0.1 N`` / biases ``0.05 N``, tokens and
    position tables ``0.5 N`` (the parity fixture's recipe, so random models give non-degenerate outputs)."""
    gen = torch.Generator().manual_seed(seed)
    state = module.state_dict()
    for name, t in state.items():
        noise = torch.randn(t.shape, generator=gen, dtype=torch.float32)
        leaf = name.rsplit(".", 1)[-1]
        if leaf.endswith("bias"):
            weight = state.get(name[:-len("bias")] + "weight")
            value = noise * (0.05 if weight is not None and weight.dim() == 1 else 0.02)
        elif leaf == "weight" and t.dim() == 1:
            value = 1 + 0.1 * noise
        elif leaf.endswith("weight") and t.dim() >= 2:
            value = noise / (t[0].numel() ** 0.5)
        else:
            value = 0.5 * noise
        t.copy_(value.to(t.dtype))
    return module


def _resolve(name: str, checkpoint: str | os.PathLike | None) -> str:
    from visualsound.weights import resolve

    return str(resolve(name, checkpoint))


def _check_source(what: str, checkpoint: str | os.PathLike | None, debug_weights: bool) -> None:
    """A given checkpoint is never silently replaced by debug weights."""
    if debug_weights and checkpoint is not None:
        raise ConfigError(f"{what}: pass either a checkpoint ({checkpoint}) or debug_weights=True, not both")


def _config(config: SynchformerConfig | str | None, debug_weights: bool) -> SynchformerConfig:
    if isinstance(config, SynchformerConfig):
        return config
    return SynchformerConfig.resolve(config or ("tiny" if debug_weights else "paper"))


def load_sync_model(checkpoint: str | os.PathLike | None = None, debug_weights: bool = False,
                    device: str | torch.device = "cpu", config: SynchformerConfig | str | None = None,
                    weights_name: str = "synchformer_audioset") -> Synchformer:
    """A `Synchformer` in eval mode: from `checkpoint` (``<ID>.pt`` or a bare state dict; None = the registry's
    cached `weights_name`), or, with `debug_weights`, seeded random weights (``tiny`` config unless given).
    Both a checkpoint and `debug_weights` raise `ConfigError`."""
    _check_source("load_sync_model", checkpoint, debug_weights)
    cfg = _config(config, debug_weights)
    model = Synchformer(cfg)
    if debug_weights:
        init_random_weights(model)
        log.warning("Synchformer with DEBUG WEIGHTS (seeded random %s model)", "custom" if config else "tiny")
    else:
        path = _resolve(weights_name, checkpoint)
        layout = load_sync_weights(model, path)
        log.info("loaded Synchformer from %s (%s)", path, layout)
    return model.to(device).eval()


def load_visual_encoder(checkpoint: str | os.PathLike | None = None, debug_weights: bool = False,
                        device: str | torch.device = "cpu", config: SynchformerConfig | str | None = None,
                        weights_name: str = "avclip_vggsound") -> MotionFormer:
    """V-AURA's visual encoder (Segment AVCLIP's MotionFormer) in eval mode, from a stage-I ``epoch_best.pt``
    (None = the registry's cached `weights_name`), a stage-II sync checkpoint, or a bare MotionFormer state dict;
    with `debug_weights`, seeded random weights (``tiny`` config unless given); both raise `ConfigError`. Use
    ``.features(frames)``."""
    _check_source("load_visual_encoder", checkpoint, debug_weights)
    cfg = _config(config, debug_weights)
    model = MotionFormer(cfg)
    if debug_weights:
        init_random_weights(model)
        log.warning("MotionFormer with DEBUG WEIGHTS (seeded random model)")
    else:
        path = _resolve(weights_name, checkpoint)
        layout = load_visual_weights(model, path)
        log.info("loaded visual encoder from %s (%s)", path, layout)
    return model.to(device).eval()


# -- windows -----------------------------------------------------------------------------------------------
def _mono(audio: torch.Tensor) -> torch.Tensor:
    if audio.dim() == 2:
        audio = audio.mean(0)
    if audio.dim() != 1:
        raise P.PreprocessError(f"audio must be [N] or [C, N], got {tuple(audio.shape)}")
    return audio.float()


def _equalize(frames: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Trim both streams to the shorter duration (whole frames, 640 samples per frame)."""
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
        raise P.PreprocessError(f"expected one clip of uint8 RGB frames [T, H, W, 3], got {frames.dtype} "
                                f"{tuple(frames.shape)}")
    n_frames = min(frames.shape[0], audio.shape[0] // P.SAMPLES_PER_FRAME)
    if n_frames < 1:
        raise P.PreprocessError(f"clip too short: {frames.shape[0]} frames and {audio.shape[0]} samples give no "
                                f"whole frame of audio-visual content")
    return frames[:n_frames], audio[:n_frames * P.SAMPLES_PER_FRAME]


def paper_window(frames: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Paper protocol window: ``[T, H, W, 3]`` uint8 (25 fps, any size) + ``[N]``/``[C, N]`` 16 kHz ->
    ``([1, 120, 224, 224, 3] uint8, [1, 76800] float32)``; clips shorter than 5 s are looped."""
    frames, audio = _equalize(frames, _mono(audio))
    frames, audio = frames[:CLIP_FRAMES], audio[:CLIP_FRAMES * P.SAMPLES_PER_FRAME]
    if frames.shape[0] < CLIP_FRAMES:
        reps = -(-CLIP_FRAMES // frames.shape[0])
        log.info("looping a %.2f s clip %d times to reach %.1f s", frames.shape[0] / P.FPS, reps, CLIP_SECONDS)
        frames, audio = frames.repeat(reps, 1, 1, 1), audio.repeat(reps)
    start = WINDOW_START_FRAME
    v = frames[start:start + P.WINDOW_FRAMES]
    a = audio[start * P.SAMPLES_PER_FRAME:start * P.SAMPLES_PER_FRAME + P.WINDOW_SAMPLES]
    return P.center_crop(P.resize_short_side(v, 256)), a.unsqueeze(0)


# -- prediction --------------------------------------------------------------------------------------------
@dataclass
class OffsetPrediction:
    """Offset estimate of one clip. ``probs`` ``[21]`` over ``offsets`` ``[21]`` (seconds, audio vs video)."""

    protocol: str
    probs: torch.Tensor
    offsets: torch.Tensor
    offset_sec: float
    window_starts_sec: list[float] = field(default_factory=list)
    window_offsets_sec: list[float] = field(default_factory=list)

    @property
    def desync_sec(self) -> float:
        """Mean absolute offset over the windows (av-benchmark's DeSync for one clip)."""
        return sum(abs(o) for o in self.window_offsets_sec) / len(self.window_offsets_sec)

    def top(self, k: int = 3) -> list[tuple[float, float]]:
        """The `k` most likely ``(offset_sec, probability)`` pairs, most likely first."""
        p, i = self.probs.topk(min(k, self.probs.numel()))
        return [(float(self.offsets[j]), float(q)) for q, j in zip(p, i)]


@torch.no_grad()
def predict_windows(model: Synchformer, video: torch.Tensor, audio: torch.Tensor,
                    normalisation: str = "fp16") -> torch.Tensor:
    """Windows ``[B, 120, H, W, 3]`` uint8 + ``[B, 76800]`` float -> probabilities ``[B, 21]`` (float32).
    `normalisation`: pixel scaling of `vaura.synchformer.preprocess.video_for_sync`."""
    param = next(model.parameters())
    v = P.video_for_sync(video.to(param.device), dtype=param.dtype, normalisation=normalisation)
    a = P.audio_for_sync(audio.to(param.device)).to(param.dtype)
    probs, _ = model.predict(v, a)
    return probs


def predict_offset(model: Synchformer, video: torch.Tensor, audio: torch.Tensor,
                   protocol: str = "paper") -> OffsetPrediction:
    """Offset of a clip: video uint8 ``[T, H, W, 3]`` at 25 fps, audio ``[N]`` or ``[C, N]`` at 16 kHz."""
    if protocol != "paper":
        raise P.PreprocessError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS} (av-benchmark's DeSync: "
                                "benchmarks.protocols.avbench.protocol.clip_desync)")
    windows = [(WINDOW_START_FRAME / P.FPS, *paper_window(video, audio))]
    probs = predict_windows(model, torch.cat([w[1] for w in windows]), torch.cat([w[2] for w in windows]),
                            normalisation="fp16").cpu()
    offsets = model.offsets()
    window_offsets = [float(offsets[i]) for i in probs.argmax(-1)]
    return OffsetPrediction(protocol=protocol, probs=probs.mean(0), offsets=offsets,
                            offset_sec=sum(window_offsets) / len(window_offsets),
                            window_starts_sec=[w[0] for w in windows], window_offsets_sec=window_offsets)
