"""Sync metric of the V-AURA paper: the mean absolute audio-visual offset predicted by Synchformer, in ms.

Per generated sample: the conditioning video's evaluation window (25 fps) and the generated audio (16 kHz mono)
go through `vaura.synchformer.predict_offset` with the ``paper`` protocol -- both streams are trimmed to the
shorter one, looped to 5 s, and the 4.8 s window of 14 segments is classified into 21 offsets (-2.0 .. +2.0 s).
The metric is ``1000 * mean(|offset_sec|)`` over all samples; a perfectly synchronised set scores 0.

The Synchformer checkpoint is the AudioSet-trained one (registry name ``synchformer_audioset``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from visualsound.errors import ToolkitError

WEIGHTS_NAME = "synchformer_audioset"
PROTOCOL = "paper"
FPS = 25
SAMPLE_RATE = 16000


class SyncMetricError(ToolkitError, ValueError):
    """The Sync metric got no offsets or non-finite ones."""


@dataclass(frozen=True)
class SyncFeatures:
    """One sample's prediction: ``offset_sec`` (argmax class, seconds, audio relative to video), ``probs [21]``."""

    offset_sec: float
    probs: torch.Tensor

    def to_tensor(self) -> torch.Tensor:
        """``[22]``: the offset followed by the 21 probabilities (the cache stores this)."""
        return torch.cat([torch.tensor([self.offset_sec], dtype=torch.float32), self.probs.float().cpu()])

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> SyncFeatures:
        assert t.dim() == 1 and t.numel() >= 2, f"expected [1 + num_classes], got {tuple(t.shape)}"
        return cls(offset_sec=float(t[0]), probs=t[1:].clone())


def load_sync_metric_model(checkpoint: str | os.PathLike | None = None, debug_weights: bool = False,
                           device: str | torch.device = "cpu") -> torch.nn.Module:
    """The AudioSet Synchformer (registry ``synchformer_audioset``), or a seeded random tiny one for tests."""
    from vaura.synchformer import load_sync_model

    return load_sync_model(checkpoint=checkpoint, debug_weights=debug_weights, device=device,
                           weights_name=WEIGHTS_NAME)


def read_sync_inputs(video_path: str | os.PathLike, video_start: float, window_sec: float,
                     audio_path: str | os.PathLike, audio_start: float = 0.0,
                     audio_duration: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Video frames uint8 ``[T, H, W, 3]`` at 25 fps of the window and audio ``[N]`` at 16 kHz mono."""
    from visualsound.media import read_audio, read_video

    frames = read_video(video_path, start=video_start, duration=window_sec, fps=FPS)
    wave = read_audio(audio_path, start=audio_start, duration=audio_duration, sample_rate=SAMPLE_RATE, mono=True)
    return frames, wave[0]


def sync_features(model: torch.nn.Module, frames: torch.Tensor, wave_16k: torch.Tensor) -> SyncFeatures:
    """Paper-protocol prediction of one sample (frames ``[T, H, W, 3]`` uint8, audio ``[N]`` 16 kHz)."""
    from vaura.synchformer import predict_offset

    pred = predict_offset(model, frames, wave_16k, protocol=PROTOCOL)
    return SyncFeatures(offset_sec=float(pred.offset_sec), probs=pred.probs)


def sync_score_ms(offsets_sec: Sequence[float]) -> float:
    """``1000 * mean(|offset|)`` over the samples' predicted offsets (seconds)."""
    if len(offsets_sec) == 0:
        raise SyncMetricError("the Sync metric needs at least one offset")
    t = torch.tensor([float(o) for o in offsets_sec], dtype=torch.float64)
    if not torch.isfinite(t).all():
        raise SyncMetricError(f"non-finite offsets: {t.tolist()[:10]}")
    return float(t.abs().mean() * 1000.0)
