"""Frozen config of the ImageBind audio-visual towers (vision ViT on 2-frame clips, audio ViT on fbanks).

Presets: ``huge`` (= Meta's ``imagebind_huge``), ``tiny`` (= the parity fixture's ``tiny_config.json``) and
``debug`` (the same size as ``tiny``; the seeded random model behind ``--debug-weights``).
"""

from __future__ import annotations

from dataclasses import dataclass

from visualsound.errors import ConfigError
from visualsound.utils.config import FrozenConfig, register_preset


@dataclass(frozen=True)
class ImageBindConfig(FrozenConfig):
    """Sizes of the two towers. Derived sizes (token counts) are properties.

    Vision: Conv3d patch stem with kernel = stride = ``(video_frames, patch, patch)`` on ``[N, 3, 2, 224, 224]``
    clips; audio: Conv2d stem (kernel ``audio_kernel_size``, stride ``audio_stride``) on ``[N, 1, 128, 204]``
    fbanks followed by a LayerNorm.
    """

    out_embed_dim: int = 1024
    # vision tower
    image_size: int = 224
    video_frames: int = 2
    vision_patch_size: int = 14
    vision_embed_dim: int = 1280
    vision_num_blocks: int = 32
    vision_num_heads: int = 16
    # audio tower
    audio_num_mel_bins: int = 128
    audio_target_len: int = 204
    audio_kernel_size: int = 16
    audio_stride: int = 10
    audio_embed_dim: int = 768
    audio_num_blocks: int = 12
    audio_num_heads: int = 12
    # shared
    mlp_ratio: int = 4
    layer_norm_eps: float = 1e-6
    audio_logit_scale: float = 20.0

    def __post_init__(self) -> None:
        for tower, dim, heads in (("vision", self.vision_embed_dim, self.vision_num_heads),
                                  ("audio", self.audio_embed_dim, self.audio_num_heads)):
            if heads <= 0 or dim % heads:
                raise ConfigError(f"ImageBindConfig: {tower}_embed_dim={dim} is not divisible by "
                                  f"{tower}_num_heads={heads}")
        if self.image_size % self.vision_patch_size:
            raise ConfigError(f"ImageBindConfig: image_size={self.image_size} is not a multiple of "
                              f"vision_patch_size={self.vision_patch_size}")
        if min(self.audio_num_mel_bins, self.audio_target_len) < self.audio_kernel_size:
            raise ConfigError("ImageBindConfig: the audio patch kernel is larger than the fbank")

    @property
    def vision_grid(self) -> int:
        """Patches per side of a frame (16 for 224 / 14)."""
        return self.image_size // self.vision_patch_size

    @property
    def vision_num_tokens(self) -> int:
        """1 cls token + grid² patch tokens (the 2 frames are folded into one temporal patch)."""
        return 1 + self.vision_grid ** 2

    @property
    def audio_grid(self) -> tuple[int, int]:
        """(frequency, time) patch counts of the strided Conv2d stem: (12, 19) for 128 x 204."""
        f = (self.audio_num_mel_bins - self.audio_kernel_size) // self.audio_stride + 1
        t = (self.audio_target_len - self.audio_kernel_size) // self.audio_stride + 1
        return f, t

    @property
    def audio_num_tokens(self) -> int:
        """1 cls token + frequency x time patches (229 for the default fbank)."""
        f, t = self.audio_grid
        return 1 + f * t


HUGE = register_preset(ImageBindConfig, "huge", ImageBindConfig())
TINY = register_preset(ImageBindConfig, "tiny", ImageBindConfig(
    out_embed_dim=32, vision_embed_dim=32, vision_num_blocks=2, vision_num_heads=2,
    audio_embed_dim=32, audio_num_blocks=2, audio_num_heads=2))
DEBUG = register_preset(ImageBindConfig, "debug", TINY)
