"""IB metric: ImageBind similarity between the conditioning video and the generated audio, x100 in reports.

Inputs are preprocessed exactly as `visualsound.imagebind.preprocess` does for whole clips, applied to the
evaluation window: the window's native video frames give 5 windows x 2 frames x 3 crops ``[15, 3, 2, 224, 224]``
(`video_frame_indices` on the window's frame count and fps), and the generated audio (all channels, torchaudio
resampling to 16 kHz) gives 3 normalised fbank windows ``[3, 1, 128, 204]``. Each side is embedded once and
cached (video per clip, audio per sample); the score is ``100 * cos(mean vision embedding, mean audio
embedding)``, the mean over samples is the metric.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from visualsound.errors import ToolkitError

WEIGHTS_NAME = "imagebind_huge"
SCALE = 100.0


class IBMetricError(ToolkitError, ValueError):
    """The IB metric cannot be computed (no pairs, mismatched embedding sizes)."""


def load_ib_model(checkpoint: str | os.PathLike | None = None, debug_weights: bool = False,
                  device: str | torch.device = "cpu") -> torch.nn.Module:
    """ImageBind's audio-visual towers (registry ``imagebind_huge``), or the seeded random debug model."""
    from visualsound.imagebind import load_imagebind

    return load_imagebind(checkpoint=checkpoint, debug_weights=debug_weights, device=device)


def video_input(video_path: str | os.PathLike, start: float, window_sec: float) -> torch.Tensor:
    """The window's frames as ImageBind's video input ``[15, 3, 2, 224, 224]`` (float32)."""
    from visualsound.imagebind.preprocess import VIDEO_CLIPS, transform_video, video_frame_indices
    from visualsound.media import probe, read_video

    info = probe(video_path, require_video=True)
    frames = read_video(video_path, start=start, duration=window_sec, fps=None, apply_rotation=True)
    _, kept = video_frame_indices(frames.shape[0], float(info.fps))
    index = torch.tensor([i for pair in kept for i in pair])
    sel = frames[index].reshape(VIDEO_CLIPS, len(kept[0]), *frames.shape[1:])
    return transform_video(sel)


def audio_input(audio_path: str | os.PathLike, start: float = 0.0, duration: float | None = None) -> torch.Tensor:
    """The audio as ImageBind's input ``[3, 1, 128, 204]`` (all channels read, resampled to 16 kHz)."""
    from visualsound.imagebind.preprocess import audio_to_fbanks, resample_to_16k
    from visualsound.media import probe, read_audio

    info = probe(audio_path, require_audio=True)
    wave = read_audio(audio_path, start=start, duration=duration)
    return audio_to_fbanks(resample_to_16k(wave, int(info.sample_rate)))


@torch.no_grad()
def embed_video(model: torch.nn.Module, video: torch.Tensor) -> torch.Tensor:
    """``[15, 3, 2, 224, 224]`` -> the averaged vision embedding ``[E]`` (float32, CPU)."""
    param = next(model.parameters())
    return model.embed_vision(video[None].to(param.device, param.dtype))[0].float().cpu()


@torch.no_grad()
def embed_audio(model: torch.nn.Module, audio: torch.Tensor) -> torch.Tensor:
    """``[3, 1, 128, 204]`` -> the averaged audio embedding ``[E]`` (float32, CPU)."""
    param = next(model.parameters())
    return model.embed_audio(audio[None].to(param.device, param.dtype))[0].float().cpu()


def ib_scores(video_embs: Sequence[torch.Tensor], audio_embs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-pair ``100 * cosine`` ``[P]`` of paired embeddings ``[E]``."""
    if len(video_embs) == 0 or len(video_embs) != len(audio_embs):
        raise IBMetricError(f"IB needs equal, non-zero numbers of pairs; got {len(video_embs)} video and "
                            f"{len(audio_embs)} audio embeddings")
    v, a = torch.stack(list(video_embs)), torch.stack(list(audio_embs))
    if v.shape != a.shape:
        raise IBMetricError(f"embedding shapes differ: video {tuple(v.shape)}, audio {tuple(a.shape)}")
    return F.cosine_similarity(v.double(), a.double(), dim=-1) * SCALE
