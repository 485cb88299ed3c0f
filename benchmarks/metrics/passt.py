"""PaSST-S (``passt-s-f128-p16-s10-ap.476-swa``), the AudioSet tagger behind the KLD metric, read top to bottom.

Pipeline for one clip (eval mode, float32, as hear21passt 0.0.18 runs it inside GMELab's KLD):

    audio [C, N] @ sr --mono, julius resample--> wav [T] @ 32 kHz --split into 10 s chunks (drop <= 0.15 s)-->
    mel [1, 1, 128, F] --Conv2d 16x16 / stride 10--> [1, D, 12, Tp] (+ time pos-embed sliced to the first Tp
    columns, + freq pos-embed) --flatten freq-major--> [1, 12*Tp, D] --prepend cls/dist tokens--> depth x
    pre-norm ViT block --LayerNorm--> (cls + dist) / 2 --LayerNorm(eps 1e-5) + Linear--> logits [1, 527]

A 2.56 s clip is fed at its own length (81920 samples, 256 frames, 12 x 25 patches, 302 tokens); it is never
padded to 10 s. ``head_dist`` of the checkpoint is never used by the forward pass and is dropped on loading.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.metrics.passt_frontend import PASST_SAMPLE_RATE, PasstMel, PasstMelConfig, resample_frac
from visualsound.errors import CheckpointError, ConfigError, ToolkitError
from visualsound.utils.checkpoint import KeyMap, load_state_dict_strict, safe_torch_load
from visualsound.utils.config import FrozenConfig, register_preset

log = logging.getLogger(__name__)

WEIGHTS_NAME = "passt"
CHUNK_SAMPLES = 320000  # the model's 10 s at 32 kHz
MIN_CHUNK_SAMPLES = 4800  # chunks of <= 0.15 s are dropped by the original wrapper


class PasstInputError(ToolkitError, ValueError):
    """Audio that PaSST cannot score (empty, too short, wrong shape)."""


@dataclass(frozen=True)
class PasstConfig(FrozenConfig):
    """PaSST-S transformer sizes; ``paper`` is the released AudioSet model."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    num_classes: int = 527
    patch_size: int = 16
    patch_stride: int = 10
    n_mels: int = 128
    max_frames: int = 998  # img_size (128, 998): the time positional grid covers 99 patches
    block_eps: float = 1e-6
    head_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.num_heads <= 0 or self.embed_dim % self.num_heads:
            raise ConfigError(f"PasstConfig: embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}")
        if min(self.n_mels, self.max_frames) < self.patch_size or self.patch_stride <= 0:
            raise ConfigError(f"PasstConfig: patches of {self.patch_size} (stride {self.patch_stride}) do not fit "
                              f"{self.n_mels} mels x {self.max_frames} frames")

    @property
    def freq_patches(self) -> int:
        """Patch rows over the mel axis: ``(n_mels - 16) // 10 + 1`` (12)."""
        return (self.n_mels - self.patch_size) // self.patch_stride + 1

    @property
    def max_time_patches(self) -> int:
        """Patch columns of the time positional grid (99 for 998 frames, 10 s)."""
        return (self.max_frames - self.patch_size) // self.patch_stride + 1

    @property
    def mlp_hidden(self) -> int:
        """Hidden width of the block MLPs."""
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.embed_dim // self.num_heads

    def time_patches(self, frames: int) -> int:
        """Patch columns of a mel with `frames` frames (25 for 256 frames, a 2.56 s clip)."""
        return (frames - self.patch_size) // self.patch_stride + 1


register_preset(PasstConfig, "paper", PasstConfig())
register_preset(PasstConfig, "reduced", PasstConfig(depth=2, mlp_ratio=1.0))  # the parity fixture's model
register_preset(PasstConfig, "tiny", PasstConfig(embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0))


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------
class Attention(nn.Module):
    """Multi-head self-attention ``[B, N, D] -> [B, N, D]`` (qkv with bias, scale ``head_dim ** -0.5``)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, H, N, hd]
        # softmax(q k^T * scale) v as one fused kernel (no [B, H, N, N] matrix: 0.5 GB at 8 x 10 s; on the CPU the
        # attention is 4-5x faster, PaSST 1.7-1.85x), within ~1e-6 of the explicit product upstream writes
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """``fc2(gelu(fc1(x)))``: ``[B, N, D] -> [B, N, D]``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU


class Block(nn.Module):
    """Pre-norm ViT block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``."""

    def __init__(self, cfg: PasstConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.block_eps)
        self.attn = Attention(cfg.embed_dim, cfg.num_heads)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.block_eps)
        self.mlp = Mlp(cfg.embed_dim, cfg.mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Overlapping 16x16 patches, stride 10: mel ``[B, 1, n_mels, F]`` -> grid ``[B, D, F', T']``."""

    def __init__(self, cfg: PasstConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_stride)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.proj(mel)


class PaSST(nn.Module):
    """Distilled PaSST transformer: normalised log-mel ``[B, 1, n_mels, F]`` -> logits ``[B, num_classes]``.

    Parameter names follow the released checkpoint (``cls_token``, ``time_new_pos_embed``, ``blocks.i.*``,
    ``head.0`` LayerNorm, ``head.1`` Linear) so it loads with a key map that only unwraps containers.
    """

    def __init__(self, config: PasstConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or PasstConfig()
        d = cfg.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, d))
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, d, cfg.freq_patches, 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, d, 1, cfg.max_time_patches))
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(d, eps=cfg.block_eps)
        self.head = nn.Sequential(nn.LayerNorm(d, eps=cfg.head_eps), nn.Linear(d, cfg.num_classes))

    def embed(self, mel: torch.Tensor) -> torch.Tensor:
        """Patch grid with positional embeddings ``[B, D, F', T']`` (before flattening)."""
        cfg = self.config
        assert mel.dim() == 4 and mel.shape[1] == 1 and mel.shape[2] == cfg.n_mels, \
            f"PaSST expects mel [B, 1, {cfg.n_mels}, F], got {tuple(mel.shape)}"
        grid = self.patch_embed(mel)  # [B, D, F', T']
        t = grid.shape[-1]
        if t > cfg.max_time_patches:
            raise PasstInputError(f"{mel.shape[-1]} mel frames give {t} time patches; the positional grid holds "
                                  f"{cfg.max_time_patches} (10 s). Split longer audio into chunks first.")
        grid = grid + self.time_new_pos_embed[..., :t]  # first T' columns, no interpolation
        return grid + self.freq_new_pos_embed

    def forward_tokens(self, mel: torch.Tensor) -> torch.Tensor:
        """Final-norm token outputs ``[B, 2 + F'*T', D]`` (index 0 = cls, 1 = dist)."""
        grid = self.embed(mel)
        b = grid.shape[0]
        x = grid.flatten(2).transpose(1, 2)  # [B, F'*T', D], frequency-major
        cls = (self.cls_token + self.new_pos_embed[:, :1]).expand(b, -1, -1)
        dist = (self.dist_token + self.new_pos_embed[:, 1:]).expand(b, -1, -1)
        x = torch.cat([cls, dist, x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        """mel ``[B, 1, n_mels, F]`` -> ``[B, D]``: the mean of the cls and dist outputs after the final norm (what
        hear21passt's ``mode="all"`` returns next to the logits)."""
        tokens = self.forward_tokens(mel)
        return (tokens[:, 0] + tokens[:, 1]) / 2

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel ``[B, 1, n_mels, F]`` -> logits ``[B, num_classes]`` (the head on `features`)."""
        return self.head(self.features(mel))


class PasstTagger(nn.Module):
    """Front-end + transformer: 32 kHz waveform ``[B, T]`` (T <= 10 s) -> logits ``[B, 527]``."""

    def __init__(self, config: PasstConfig | None = None, mel_config: PasstMelConfig | None = None,
                 debug_weights: bool = False) -> None:
        super().__init__()
        self.mel = PasstMel(mel_config)
        self.net = PaSST(config)
        self.debug_weights = debug_weights

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """32 kHz waveform ``[B, T]`` -> logits ``[B, 527]``."""
        return self.net(self.mel(wav).unsqueeze(1))

    def features_and_logits(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """32 kHz waveform ``[B, T]`` -> ``(features [B, 768], logits [B, 527])`` from one pass."""
        features = self.net.features(self.mel(wav).unsqueeze(1))
        return features, self.net.head(features)


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------
#: Released checkpoint -> `PaSST`. Keys are already ours; ``net.`` (hear21passt wrapper) and ``module.``
#: (DataParallel) prefixes are stripped; the unused distillation head and the wrapper's proxy are dropped.
PASST_KEYMAP = KeyMap(
    rules=((r"(?:module\.)?(?:net\.)?((?:cls_token|dist_token|new_pos_embed|freq_new_pos_embed|time_new_pos_embed"
            r"|patch_embed\.|blocks\.|norm\.|head\.).*)", r"\1"),),
    ignore=(r"(?:module\.)?(?:net\.)?head_dist\..+", r"(?:module\.)?device_proxy"),
)


def _unwrap(obj: object, path: str) -> dict[str, torch.Tensor]:
    """Unwrap timm-style containers (``state_dict`` / ``model`` / ``state_dict_ema``) to a flat tensor dict."""
    for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a PaSST state dict of tensors, got {type(obj).__name__}")
    return obj


def passt_state_dict(raw: dict[str, torch.Tensor], config: PasstConfig) -> dict[str, torch.Tensor]:
    """Map a released-layout state dict onto `PaSST` keys (flat patch conv weights are reshaped to 4-D)."""
    sd = PASST_KEYMAP.apply(raw)
    w = sd.get("patch_embed.proj.weight")
    if w is not None and w.dim() == 2:
        sd["patch_embed.proj.weight"] = w.reshape(config.embed_dim, 1, config.patch_size, config.patch_size)
    return sd


def load_passt(checkpoint: str | os.PathLike | None = None, debug_weights: bool = False,
               device: str | torch.device = "cpu", config: PasstConfig | str | None = None) -> PasstTagger:
    """PaSST tagger in eval mode.

    `checkpoint` None -> ``visualsound.weights.resolve("passt")`` (the released AudioSet file). `debug_weights`
    -> a seeded random ``tiny`` model (no file needed; giving a `checkpoint` too raises `ConfigError`). `config`
    defaults to ``paper`` (``tiny`` with debug weights); pass ``"reduced"`` for the parity fixture's depth-2
    model. Loading is strict.
    """
    if isinstance(config, str):
        config = PasstConfig.resolve(config)
    if debug_weights:
        if checkpoint is not None:
            raise ConfigError(f"load_passt: pass either a checkpoint ({checkpoint}) or debug_weights=True, not both")
        cfg = config or PasstConfig.preset("tiny")
        gen = torch.Generator().manual_seed(0)
        tagger = PasstTagger(cfg, debug_weights=True)
        with torch.no_grad():
            for name, p in tagger.net.named_parameters():
                if p.dim() > 1:
                    p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(max(p[0].numel(), 1)))
                elif name.endswith("weight"):
                    p.fill_(1.0)
                else:
                    p.zero_()  # biases: deterministic, independent of the global RNG
        log.warning("PaSST with DEBUG WEIGHTS (seeded random model, depth %d, width %d): scores are meaningless",
                    cfg.depth, cfg.embed_dim)
        return tagger.eval().to(device)
    cfg = config or PasstConfig.preset("paper")
    from visualsound.weights import resolve

    checkpoint = resolve(WEIGHTS_NAME, checkpoint)  # raises WeightsNotFoundError with URL / cache path
    raw = _unwrap(safe_torch_load(checkpoint), str(checkpoint))
    tagger = PasstTagger(cfg)
    load_state_dict_strict(tagger.net, passt_state_dict(raw, cfg), what=f"PaSST checkpoint {checkpoint}")
    log.info("loaded PaSST (%d blocks) from %s", cfg.depth, checkpoint)
    return tagger.eval().to(device)


# --------------------------------------------------------------------------------------------------
# Scoring helpers
# --------------------------------------------------------------------------------------------------
def to_passt_input(audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """float32 audio ``[N]`` or ``[C, N]`` at `sample_rate` -> mono 32 kHz ``[T]`` (mean over channels, then the
    julius resampler)."""
    audio = torch.as_tensor(audio)
    if audio.dim() == 2:
        audio = audio.mean(dim=0)
    if audio.dim() != 1 or audio.numel() == 0:
        raise PasstInputError(f"expected non-empty audio [N] or [C, N], got {tuple(audio.shape)}")
    return resample_frac(audio.float(), int(sample_rate), PASST_SAMPLE_RATE)


def split_chunks(wav_32k: torch.Tensor) -> list[torch.Tensor]:
    """``[T]`` -> 10 s chunks ``[<= 320000]``; a trailing chunk of <= 4800 samples (0.15 s) is dropped."""
    chunks = [c for c in wav_32k.split(CHUNK_SAMPLES) if c.numel() > MIN_CHUNK_SAMPLES]
    if not chunks:
        raise PasstInputError(f"{wav_32k.numel()} samples at 32 kHz is too short for PaSST "
                              f"(needs more than {MIN_CHUNK_SAMPLES}, 0.15 s)")
    return chunks


@torch.no_grad()
def passt_logits_32k(model: PasstTagger, wav_32k: torch.Tensor) -> torch.Tensor:
    """32 kHz mono ``[T]`` -> one logits row per 10 s chunk ``[K, 527]`` (each chunk at its own length)."""
    assert wav_32k.dim() == 1, f"expected mono [T], got {tuple(wav_32k.shape)}"
    device = next(model.parameters()).device
    rows = [model(c.to(device)[None]) for c in split_chunks(wav_32k)]
    return torch.cat(rows).float().cpu()


def passt_probs(model: PasstTagger, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Softmax class probabilities ``[527]`` of one clip of at most ~10 s (float32 ``[N]`` or ``[C, N]``).

    Softmax (not sigmoid) over the 527 AudioSet classes, as the KLD metric uses them. Longer audio gives
    several chunks; score those with `passt_logits_32k` instead (raises `PasstInputError` here).
    """
    logits = passt_logits_32k(model, to_passt_input(audio, sample_rate))
    if logits.shape[0] != 1:
        raise PasstInputError(f"audio of {audio.shape[-1] / sample_rate:.2f} s gives {logits.shape[0]} PaSST "
                              "chunks; passt_probs scores one clip of at most 10 s")
    return logits[0].softmax(dim=-1)


@torch.no_grad()
def passt_probs_batch(model: PasstTagger, wavs_32k: Sequence[torch.Tensor], batch_size: int = 1) -> torch.Tensor:
    """Softmax probabilities ``[N, 527]`` of N mono 32 kHz clips ``[T_i]``, each one chunk (0.15 s < T_i <= 10 s).

    Consecutive clips of equal length run together, up to `batch_size` at a time. ``batch_size=1`` is the
    original's execution (one clip per forward pass); larger batches agree to float32 rounding.
    """
    if batch_size < 1:
        raise PasstInputError(f"batch_size must be at least 1, got {batch_size}")
    for i, w in enumerate(wavs_32k):
        if w.dim() != 1 or not MIN_CHUNK_SAMPLES < w.numel() <= CHUNK_SAMPLES:
            raise PasstInputError(f"clip {i}: expected mono [T] with {MIN_CHUNK_SAMPLES} < T <= {CHUNK_SAMPLES} "
                                  f"(one 10 s chunk at 32 kHz), got {tuple(w.shape)}")
    device = next(model.parameters()).device
    rows: list[torch.Tensor] = []
    start = 0
    while start < len(wavs_32k):
        stop = start + 1
        while (stop < len(wavs_32k) and stop - start < batch_size
               and wavs_32k[stop].shape == wavs_32k[start].shape):
            stop += 1
        batch = torch.stack(list(wavs_32k[start:stop])).to(device)
        rows.extend(model(batch).float().cpu().softmax(dim=-1))
        start = stop
    if not rows:
        raise PasstInputError("no clips to score")
    return torch.stack(rows)
