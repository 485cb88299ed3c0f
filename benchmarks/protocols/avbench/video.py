"""av-benchmark's video side: frame selection, the rejection rule, and the ImageBind / Synchformer video inputs.

Everything here follows the parity fixture README (``shared/parity/avbench``, section 2.8):

* **Decoding** (`read_video_frames`): one pass over the file with two ``fps`` filter outputs, as
  ``torio.io.StreamingMediaDecoder`` gives them to the original (`visualsound.media.fps_filter`): ImageBind frames
  at 0.5 fps (the first ``int(0.5 * length)``), Synchformer frames at 25 fps (the first ``int(25 * length)``),
  uint8 RGB as stored. torio loses the output frames of the last source frame (``flush=False``), so an exactly
  8.0 s 25 fps file gives 199 Synchformer frames. The IB frames are the last source frames of each 2 s tick
  (24, 74, 124, 174 at 25 fps).
* **Rejection**: when either stream gives fewer frames than wanted the original drops the whole video (its
  dataset returns None), so it gets neither an IB-score nor a DeSync. `AVBenchFrames.rejection` says why.
* **Synchformer input** (`sync_video_input`): torchvision 0.23 ``v2.Resize(224, BICUBIC, antialias=True)`` on the
  uint8 frames (short side to 224, long side ``int(224 * long / short)``), ``CenterCrop(224)``,
  ``ToDtype(float32, scale=True)``, ``Normalize(0.5, 0.5)``; then 24 segments of 16 frames with hop 8
  (`sync_segments`), each encoded on its own (`sync_video_features`).
* **ImageBind input** (`ib_video_input`): the same uint8 resize without a crop, ``/255`` and CLIP mean/std,
  ImageBind's ``SpatialCrop(224, 3)`` (3 crops along the long side at ``0, ceil((L - 224) / 2), L - 224``), then
  clips of 2 consecutive frames ordered frame pair first: ``(pair 0: crops 0, 1, 2), (pair 1: ...), ...``; the
  embedding is the mean of the clips' unit vectors (`ib_video_embedding`).

The uint8 resize is torch's native uint8 bicubic antialias kernel (the one torchvision 0.23 calls for uint8 CPU
tensors); it rounds with fixed-point weights, so it differs from resizing in float and rounding (by up to 17
levels, 0.05-0.09 on average, on the fixture's frames). It runs on the CPU, where the original's DataLoader runs it
too (on a GPU torchvision would take the float path instead). With it, the fixture's Synchformer and ImageBind
inputs are bit-identical. The encoders (`sync_video_features`, `ib_video_embedding`) run batched on the model's
device.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F

from visualsound.imagebind.preprocess import CLIP_MEAN, CLIP_STD, crop_offsets
from visualsound.media import center_crop
from visualsound.media.fps_filter import FpsFrames, read_fps_frames

IB_FPS = Fraction(1, 2)
SYNC_FPS = 25
SIZE = 224
SYNC_SEGMENT_FRAMES = 16
SYNC_SEGMENT_HOP = 8
IB_CLIP_FRAMES = 2
IB_CROPS = 3


def wanted_frames(length_sec: float) -> tuple[int, int]:
    """``(ImageBind frames, Synchformer frames)`` the original asks for: ``int(0.5 * len)``, ``int(25 * len)``."""
    if length_sec is None or not length_sec > 0 or not math.isfinite(length_sec):
        raise ValueError(f"the av-benchmark video length must be a positive number of seconds, got {length_sec!r}")
    ib, sync = int(float(IB_FPS) * length_sec), int(SYNC_FPS * length_sec)
    if ib < IB_CLIP_FRAMES or sync < SYNC_SEGMENT_FRAMES:
        raise ValueError(f"a {length_sec} s length gives {ib} ImageBind frames and {sync} Synchformer frames; at "
                         f"least {IB_CLIP_FRAMES} and {SYNC_SEGMENT_FRAMES} are needed")
    return ib, sync


@dataclass(frozen=True)
class AVBenchFrames:
    """One video as the original decodes it. ``ib`` / ``sync`` hold uint8 ``[T, H, W, 3]`` frames and their source
    frame indices (`FpsFrames`); ``rejection`` is None when both streams have the wanted number of frames, else
    the reason the original drops the video."""

    path: str
    length_sec: float
    ib: FpsFrames
    sync: FpsFrames
    ib_wanted: int
    sync_wanted: int
    rejection: str | None

    @property
    def accepted(self) -> bool:
        return self.rejection is None


def _rate_text(rate: Fraction) -> str:
    return str(rate.numerator) if rate.denominator == 1 else f"{float(rate):g}"


def _shortfall(name: str, wanted: int, got: FpsFrames) -> str | None:
    if len(got) >= wanted:
        return None
    msg = f"{name} needs {wanted} frames at {_rate_text(got.rate)} fps, the decoder gives {len(got)}"
    if len(got) + got.lost_at_eof >= wanted:
        return msg + " (the original loses the last frame)"
    if got.duration_sec is not None:
        return msg + f" (the video is {got.duration_sec:.2f} s long)"
    return msg + " (no frame was decoded)"


def read_video_frames(path: str | os.PathLike, length_sec: float, start_sec: float = 0.0) -> AVBenchFrames:
    """Decode `path` once into the original's ImageBind (0.5 fps) and Synchformer (25 fps) frames for a
    `length_sec` protocol, with its rejection rule. The original reads files from their start (its clips are cut
    beforehand); a clip window starting at `start_sec` > 0 is read as if the file had been cut there
    (`read_fps_frames`'s `start_sec`), so that the frames line up with audio read from the same time. Media
    errors (`visualsound.media.MediaError`) propagate."""
    ib_wanted, sync_wanted = wanted_frames(length_sec)
    ib, sync = read_fps_frames(path, [IB_FPS, SYNC_FPS], flush=False, max_frames=[ib_wanted, sync_wanted],
                               start_sec=start_sec)
    reasons = [r for r in (_shortfall("ImageBind", ib_wanted, ib), _shortfall("Synchformer", sync_wanted, sync)) if r]
    if reasons and start_sec:
        reasons.append(f"read from {start_sec:g} s")
    return AVBenchFrames(str(path), float(length_sec), ib, sync, ib_wanted, sync_wanted,
                         "; ".join(reasons) if reasons else None)


# -- shared transforms ---------------------------------------------------------------------------------------
def resized_size(height: int, width: int, size: int = SIZE) -> tuple[int, int]:
    """torchvision's ``Resize(size)`` output size: short side `size`, long side ``int(size * long / short)``
    (a square frame counts as width-short)."""
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def resize_uint8(frames: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """torchvision 0.23 ``v2.Resize(size, BICUBIC, antialias=True)`` on uint8: RGB frames ``[T, H, W, 3]`` ->
    uint8 ``[T, 3, H', W']`` (`resized_size`), through torch's native uint8 kernel on the CPU."""
    assert frames.dtype == torch.uint8 and frames.ndim == 4 and frames.shape[-1] == 3, \
        f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}"
    x = frames.cpu().permute(0, 3, 1, 2)  # [T, 3, H, W] view
    h, w = x.shape[-2:]
    new = resized_size(h, w, size)
    if new == (h, w):
        return x
    return F.interpolate(x, size=new, mode="bicubic", align_corners=False, antialias=True)


# -- Synchformer ---------------------------------------------------------------------------------------------
def sync_video_input(frames: torch.Tensor) -> torch.Tensor:
    """25 fps frames uint8 ``[T, H, W, 3]`` -> Synchformer input float32 ``[T, 3, 224, 224]`` (CPU)."""
    x = center_crop(resize_uint8(frames), SIZE, channels_last=False)
    return x.to(torch.float32).mul_(1.0 / 255).sub_(0.5).div_(0.5)


def sync_segments(x: torch.Tensor) -> torch.Tensor:
    """``[T, 3, 224, 224]`` -> ``[S, 16, 3, 224, 224]``: ``S = (T - 16) // 8 + 1`` segments of 16 frames with hop 8
    (24 for 200 frames), a copy."""
    assert x.ndim == 4 and x.shape[0] >= SYNC_SEGMENT_FRAMES, \
        f"sync input must be [T >= {SYNC_SEGMENT_FRAMES}, 3, H, W], got {tuple(x.shape)}"
    return x.unfold(0, SYNC_SEGMENT_FRAMES, SYNC_SEGMENT_HOP).permute(0, 4, 1, 2, 3).contiguous()


@torch.no_grad()
def sync_video_features(model: torch.nn.Module, x: torch.Tensor, segments_per_call: int | None = None
                        ) -> torch.Tensor:
    """Synchformer visual features: segments ``[B, S, 16, 3, 224, 224]`` -> ``[B, S, 8, D]`` float32.

    `model` is a `vaura.synchformer.Synchformer`; every segment is encoded on its own, so `segments_per_call`
    (default: all ``B * S`` at once) only bounds memory. Inputs move to the model's device and dtype.
    """
    assert x.ndim == 6 and x.shape[2:4] == (SYNC_SEGMENT_FRAMES, 3), \
        f"segments must be [B, S, {SYNC_SEGMENT_FRAMES}, 3, H, W], got {tuple(x.shape)}"
    p = next(model.parameters())
    b, s = x.shape[:2]
    flat = x.reshape(b * s, 1, *x.shape[2:])
    step = b * s if segments_per_call is None else max(1, int(segments_per_call))
    out = [model.visual_features(flat[i:i + step].to(device=p.device, dtype=p.dtype)).float()
           for i in range(0, b * s, step)]
    feats = torch.cat(out, 0)  # [B*S, 1, 8, D]
    return feats.reshape(b, s, *feats.shape[2:])


# -- ImageBind -----------------------------------------------------------------------------------------------
def ib_video_crops(frames: torch.Tensor) -> torch.Tensor:
    """0.5 fps frames uint8 ``[T, H, W, 3]`` -> float32 ``[3, T, 3, 224, 224]``: resize, ``/255``, CLIP mean/std,
    then ``SpatialCrop(224, 3)`` (the original's stacked IB input, crop first)."""
    x = resize_uint8(frames).to(torch.float32).mul_(1.0 / 255)
    x.sub_(torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1))
    x.div_(torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1))
    h, w = x.shape[-2:]
    return torch.stack([x[:, :, y0:y0 + SIZE, x0:x0 + SIZE] for y0, x0 in crop_offsets(h, w, SIZE)])


def ib_clips(crops: torch.Tensor) -> torch.Tensor:
    """``[3, T, 3, 224, 224]`` -> ``[3 * (T - 1), 3, 2, 224, 224]``: clips of frames ``(i, i + 1)``, ordered frame
    pair first then crop (index ``3 * i + crop``). The fixture pins ``T = 4`` (9 clips); other ``T`` follow the same
    consecutive-pair rule."""
    assert crops.ndim == 5 and crops.shape[0] == IB_CROPS and crops.shape[1] >= IB_CLIP_FRAMES, \
        f"crops must be [{IB_CROPS}, T >= {IB_CLIP_FRAMES}, 3, H, W], got {tuple(crops.shape)}"
    clips = torch.cat([crops[:, i:i + IB_CLIP_FRAMES] for i in range(crops.shape[1] - 1)])  # [3(T-1), 2, 3, H, W]
    return clips.transpose(1, 2).contiguous()


def ib_video_input(frames: torch.Tensor) -> torch.Tensor:
    """0.5 fps frames uint8 ``[T, H, W, 3]`` (T = 4 for 8 s) -> ImageBind clips float32 ``[3 * (T - 1), 3, 2, 224,
    224]`` (``[9, 3, 2, 224, 224]``)."""
    return ib_clips(ib_video_crops(frames))


@torch.no_grad()
def ib_video_embedding(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ImageBind video embedding: clips ``[B, N, 3, 2, 224, 224]`` -> float32 ``[B, E]``, the mean of the N unit
    vectors (`visualsound.imagebind.ImageBindAV.embed_vision`). Inputs move to the model's device."""
    assert x.ndim == 6 and x.shape[2:4] == (3, IB_CLIP_FRAMES), \
        f"clips must be [B, N, 3, {IB_CLIP_FRAMES}, H, W], got {tuple(x.shape)}"
    return model.embed_vision(x.to(next(model.parameters()).device))
