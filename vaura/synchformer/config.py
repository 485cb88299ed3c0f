"""Synchformer sizes (v-iashin/Synchformer @ b66668a): one frozen config for the visual encoder (MotionFormer),
the audio encoder (AST) and the synchronisation head.

Presets: ``paper`` (the released 768-wide models), ``reduced`` (the parity fixture: D=96, depths 2/2/1),
``reduced-avbench`` (the av-benchmark fixture: the same with a 3-layer sync head) and
``tiny`` (seeded random debug weights for demos and CLI tests). Geometry (224 px frames, 16-frame segments,
2x16x16 tubelets, 128x66 log-mels, AST stride 10, 21 offset classes) is fixed by the released checkpoints and
kept as fields only so the derived sizes are spelled out once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from visualsound.errors import ConfigError
from visualsound.utils.config import FrozenConfig, register_preset


@dataclass(frozen=True)
class SynchformerConfig(FrozenConfig):
    # visual encoder: divided space-time ViT (MotionFormer) + spatial aggregation layer
    vis_dim: int = 768
    vis_depth: int = 12
    vis_heads: int = 12
    vis_mlp_ratio: int = 4
    vis_eps: float = 1e-6
    img_size: int = 224
    patch_size: int = 16
    tubelet_frames: int = 2
    segment_frames: int = 16
    # audio encoder: AST + frequency aggregation layer
    aud_dim: int = 768
    aud_depth: int = 12
    aud_heads: int = 12
    aud_mlp_dim: int = 3072
    aud_eps: float = 1e-12
    n_mels: int = 128
    spec_frames: int = 66
    aud_patch: int = 16
    aud_stride: int = 10
    agg_eps: float = 1e-6  # both aggregation layers (spatial / frequency)
    # synchronisation head
    sync_dim: int = 768
    sync_depth: int = 3
    sync_heads: int = 8
    sync_eps: float = 1e-5
    n_segments: int = 14
    num_classes: int = 21
    max_offset_sec: float = 2.0

    def __post_init__(self) -> None:
        for name, dim, heads in (("vis", self.vis_dim, self.vis_heads), ("aud", self.aud_dim, self.aud_heads),
                                 ("sync", self.sync_dim, self.sync_heads)):
            if dim % heads:
                raise ConfigError(f"SynchformerConfig: {name}_dim={dim} is not divisible by {name}_heads={heads}")
        if self.segment_frames % self.tubelet_frames or self.img_size % self.patch_size:
            raise ConfigError("SynchformerConfig: segment_frames / img_size must be multiples of the tubelet size")
        if self.num_classes < 2:
            raise ConfigError("SynchformerConfig: num_classes must be >= 2")

    # -- derived sizes -------------------------------------------------------------------------------
    @property
    def temporal_tokens(self) -> int:
        """Visual tokens per segment along time (8 for 16 frames / tubelet 2)."""
        return self.segment_frames // self.tubelet_frames

    @property
    def spatial_tokens(self) -> int:
        """Visual patches per frame (14 x 14 = 196)."""
        return (self.img_size // self.patch_size) ** 2

    @property
    def freq_tokens(self) -> int:
        """AST patch rows along frequency (12 for 128 mels)."""
        return (self.n_mels - self.aud_patch) // self.aud_stride + 1

    @property
    def time_tokens(self) -> int:
        """AST patch columns along time (6 for 66 frames)."""
        return (self.spec_frames - self.aud_patch) // self.aud_stride + 1

    @property
    def ast_positions(self) -> int:
        """AST position table rows: patches + CLS + distillation token (74)."""
        return self.freq_tokens * self.time_tokens + 2

    @property
    def seq_len(self) -> int:
        """Sync-head sequence: OFF + visual tokens + MOD + audio tokens (198)."""
        return 2 + self.n_segments * (self.temporal_tokens + self.time_tokens)

    @property
    def offset_grid(self) -> list[float]:
        """Offset in seconds of every class (numpy.linspace(-2, 2, 21) in float64): class i -> -2 + 0.2 i."""
        step = 2 * self.max_offset_sec / (self.num_classes - 1)
        return [-self.max_offset_sec + i * step for i in range(self.num_classes)]


PAPER = register_preset(SynchformerConfig, "paper", SynchformerConfig())
REDUCED = register_preset(SynchformerConfig, "reduced", SynchformerConfig(
    vis_dim=96, vis_depth=2, aud_dim=96, aud_depth=2, aud_mlp_dim=384, sync_dim=96, sync_depth=1))
# the av-benchmark fixture's reduced model: as ``reduced`` with the 3-layer global transformer
REDUCED_AVBENCH = register_preset(SynchformerConfig, "reduced-avbench", dataclasses.replace(REDUCED, sync_depth=3))
TINY = register_preset(SynchformerConfig, "tiny", SynchformerConfig(
    vis_dim=32, vis_depth=1, vis_heads=4, aud_dim=32, aud_depth=1, aud_heads=4, aud_mlp_dim=128,
    sync_dim=32, sync_depth=1, sync_heads=4))
