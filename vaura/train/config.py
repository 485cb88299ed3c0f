"""Training configuration: one frozen dataclass (`TrainConfig`) with nested optimiser and data parts.

Presets: ``paper`` (the released V-AURA recipe: AdamW betas (0.9, 0.95), lr 1.08e-4, weight decay 1.08e-5 on
weights with >= 2 dims, cosine schedule with 1,000 warm-up steps to 200,000 steps and a floor at 0.1 x lr,
gradient clipping by value 1.0, fp16 autocast, batch 12 per GPU on 4 GPUs) and ``tiny`` (a CPU-sized run for
tests and the demo). Override anything with ``--set optim.lr=3e-4`` or a YAML file.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from visualsound.errors import ConfigError
from visualsound.utils.config import FrozenConfig, register_preset

PRECISIONS = ("fp32", "bf16", "fp16")


def _coerce_numbers(cfg: FrozenConfig) -> None:
    """YAML reads ``1e-4`` (no dot) as a string; turn such strings into the float / int their field declares."""
    for f in dataclasses.fields(cfg):  # type: ignore[arg-type]
        value = getattr(cfg, f.name)
        if isinstance(value, str) and f.type in ("float", "int"):
            try:
                object.__setattr__(cfg, f.name, float(value) if f.type == "float" else int(value))
            except ValueError as e:
                raise ConfigError(f"{type(cfg).__name__}.{f.name}: {value!r} is not a number") from e


@dataclass(frozen=True)
class OptimConfig(FrozenConfig):
    """AdamW + warm-up/cosine schedule + clipping (the released ``CosineLRScheduler`` semantics)."""

    lr: float = 1.08e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 1.08e-5          # applied only to parameters with >= 2 dims
    warmup_steps: int = 1000               # lr rises linearly from 0 to `lr`
    total_steps: int = 200_000             # cosine reaches `min_lr_ratio * lr` here and stays there
    min_lr_ratio: float = 0.1
    grad_clip_value: float = 1.0           # clip by value (0 disables)

    def __post_init__(self) -> None:
        _coerce_numbers(self)
        if self.lr <= 0 or self.warmup_steps < 0 or self.total_steps <= self.warmup_steps:
            raise ConfigError(f"optim: need lr > 0 and 0 <= warmup_steps < total_steps, got lr={self.lr} "
                              f"warmup_steps={self.warmup_steps} total_steps={self.total_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclass(frozen=True)
class DataConfig(FrozenConfig):
    """Clip windows, video transforms and loader settings (per process).

    Frames are normalised as Segment AVCLIP expects, ``(x / 255 - 0.5) / 0.5``, by the visual encoder's own
    preprocessing (`vaura.synchformer.preprocess_video_for_vaura`), so cached and generated features agree.
    """

    batch_size: int = 12                   # per process (the release: 12 per GPU x 4 GPUs)
    num_workers: int = 16
    clip_seconds: float = 2.56
    fps: float = 25.0
    sample_rate: int = 44100
    resize: int = 256                      # short side before the crop
    crop: int = 224
    flip_prob: float = 0.5                 # training only
    start_margin: float = 0.01             # random starts stay this far from the clip end (the release's EPS)
    start_grid: float = 0.64               # cached mode: window starts are multiples of this (16 frames)
    # a decode worker killed by a signal (segfault, OOM killer): the clip it was loading is a bad clip for the rest
    # of the run and the loader restarts; this many deaths in a row (no batch arriving in between) end the run
    max_worker_deaths: int = 5

    def __post_init__(self) -> None:
        _coerce_numbers(self)
        if self.batch_size < 1 or self.num_workers < 0:
            raise ConfigError(f"data: batch_size >= 1 and num_workers >= 0 needed, got {self.batch_size}, "
                              f"{self.num_workers}")
        if self.max_worker_deaths < 1:
            raise ConfigError(f"data.max_worker_deaths must be >= 1, got {self.max_worker_deaths}")
        if self.start_grid <= 0:
            raise ConfigError(f"data.start_grid must be > 0, got {self.start_grid}")

    @property
    def num_frames(self) -> int:
        """Video frames per window (64 for 2.56 s at 25 fps)."""
        return int(round(self.clip_seconds * self.fps))

    @property
    def num_samples(self) -> int:
        """Audio samples per window (112,896 for 2.56 s at 44.1 kHz, ceil as in the release)."""
        return int(math.ceil(round(self.clip_seconds * self.sample_rate, 6)))


@dataclass(frozen=True)
class TrainConfig(FrozenConfig):
    """Everything `vaura train` needs besides the data paths."""

    model: str = "paper"                   # a `VAuraConfig` preset name or a JSON/YAML file
    model_overrides: tuple[str, ...] = ()  # e.g. ("dropout=0.0",)
    optim: OptimConfig = OptimConfig()
    data: DataConfig = DataConfig()
    precision: str = "fp16"                # autocast dtype on CUDA: fp32 | bf16 | fp16 (fp16 adds a GradScaler)
    grad_accum: int = 1                    # micro-batches per optimiser step
    max_steps: int = 200_000               # optimiser steps of this run
    seed: int = 666
    log_every: int = 50
    val_every: int = 2000                  # 0 disables periodic validation
    val_batches: int = 0                   # 0 = the whole validation set
    ckpt_every: int = 2000                 # last.pt is rewritten every this many steps
    keep_every: int = 0                    # also keep step-XXXXXXXX.pt every this many steps (0 = none)
    keep_best: int = 3                     # best-k checkpoints by validation loss (plus last.pt)
    # non-finite guard: a step whose loss (or, without fp16's scaler, gradient) is not finite is skipped. The run
    # stops after `max_nonfinite` skipped steps IN A ROW (rare scattered spikes over a long run never add up to
    # it), or when the skipped steps exceed `max_nonfinite_fraction` of all steps tried so far (skipped + taken)
    # once there are more than `max_nonfinite` of them in total (so a few early skips cannot trip it)
    max_nonfinite: int = 20
    max_nonfinite_fraction: float = 0.01
    encoder_checkpoint: str | None = None  # Segment AVCLIP weights (None = the registry's cache path)
    codec_checkpoint: str | None = None    # DAC 44 kHz weights (None = the registry's cache path)
    debug_weights: bool = False            # seeded random tiny encoder/codec instead of pretrained weights

    def __post_init__(self) -> None:
        _coerce_numbers(self)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.grad_accum < 1 or self.max_steps < 1:
            raise ConfigError(f"grad_accum and max_steps must be >= 1, got {self.grad_accum}, {self.max_steps}")
        if self.log_every < 1 or self.ckpt_every < 1 or self.val_every < 0 or self.keep_best < 0 or \
                self.keep_every < 0:
            raise ConfigError("log_every, ckpt_every >= 1 and val_every, keep_every, keep_best >= 0 needed")
        if self.max_nonfinite < 0 or not 0.0 < self.max_nonfinite_fraction <= 1.0:
            raise ConfigError(f"max_nonfinite >= 0 and max_nonfinite_fraction in (0, 1] needed, got "
                              f"{self.max_nonfinite}, {self.max_nonfinite_fraction}")
        if self.debug_weights and (self.encoder_checkpoint or self.codec_checkpoint):
            raise ConfigError("encoder / codec checkpoints cannot be used with debug weights (the tiny preset sets "
                              "debug_weights=true; add --set debug_weights=false to use real weights)")


PAPER = register_preset(TrainConfig, "paper", TrainConfig())
TINY = register_preset(TrainConfig, "tiny", TrainConfig(
    model="tiny",                          # VAuraConfig tiny: 32-d visual features like the debug encoder
    optim=OptimConfig(lr=3e-3, warmup_steps=10, total_steps=400),
    data=DataConfig(batch_size=4, num_workers=0),
    precision="fp32",
    max_steps=200,
    seed=0,
    log_every=10,
    val_every=50,
    val_batches=2,
    ckpt_every=50,
    keep_best=2,
    debug_weights=True,
))
