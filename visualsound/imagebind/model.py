"""ImageBind's vision and audio towers, heads and post-processors (inference only), read top to bottom.

Vision tower (ViT-H/14 at ``huge`` size)::

    video [N, 3, 2, 224, 224] --Conv3d k=s=(2,14,14), no bias--> [N, D, 1, 16, 16] -> tokens [N, 256, D]
    -> prepend cls, add learned pos_embed [1, 257, D] -> LayerNorm (pre-transformer) -> blocks
    -> LayerNorm -> cls token -> Linear(D, E, no bias) -> L2 normalise               => [N, E], unit norm

Audio tower::

    fbank [N, 1, 128, 204] --Conv2d k=16 s=10, no bias--> [N, D, 12, 19] -> tokens [N, 228, D] -> LayerNorm
    -> prepend cls, add learned pos_embed [1, 229, D] -> blocks (attention with learned bias_k / bias_v)
    -> LayerNorm -> cls token -> Linear(D, E, no bias) -> L2 normalise -> x exp(log_logit_scale) (= 20)
                                                                                     => [N, E], norm 20

Blocks are pre-norm transformer blocks (LayerNorm eps 1e-6, exact-erf GELU MLP with ratio 4). Drop-path is
omitted: it only acts in training and this module is for scoring. ``ImageBindAV.embed_vision`` /
``embed_audio`` take ``[B, S, ...]`` stacks of clips (S = 15 views, 3 audio windows), embed each clip, apply
the post-processor per clip and average over S exactly as upstream ``ImageBindModel.forward`` does, so
neither output has unit norm. ``score`` is their cosine similarity, the quantity VisualSound thresholds.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from visualsound.imagebind.config import ImageBindConfig


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter layout, batch first.

    ``add_bias_kv`` appends one learned key and one learned value to every sequence (the audio tower uses it).
    """

    def __init__(self, dim: int, num_heads: int, add_bias_kv: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.zeros(1, 1, dim))
            self.bias_v = nn.Parameter(torch.zeros(1, 1, dim))
        else:
            self.bias_k = self.bias_v = None
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, L, D] -> [N, L, D]."""
        n, length, dim = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.expand(n, 1, dim)], dim=1)
            v = torch.cat([v, self.bias_v.expand(n, 1, dim)], dim=1)
        h = self.num_heads
        q, k, v = (t.reshape(n, t.shape[1], h, dim // h).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)  # [N, H, L, D/H]
        return self.out_proj(out.transpose(1, 2).reshape(n, length, dim))


class Mlp(nn.Module):
    """``fc2(gelu(fc1(x)))`` with exact-erf GELU: ``[N, L, D] -> [N, L, D]``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm_1(x))``, then ``x + mlp(norm_2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, eps: float, add_bias_kv: bool) -> None:
        super().__init__()
        self.norm_1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, num_heads, add_bias_kv)
        self.norm_2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm_1(x))
        return x + self.mlp(self.norm_2(x))


class VisionTower(nn.Module):
    """2-frame video clip ``[N, 3, T=2, 224, 224]`` (CLIP-normalised RGB) -> unit embedding ``[N, E]``."""

    def __init__(self, cfg: ImageBindConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, p = cfg.vision_embed_dim, cfg.vision_patch_size
        self.patch_embed = nn.Conv3d(3, d, kernel_size=(cfg.video_frames, p, p), stride=(cfg.video_frames, p, p),
                                     bias=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.vision_num_tokens, d))
        self.pre_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.blocks = nn.ModuleList(Block(d, cfg.vision_num_heads, cfg.mlp_ratio, cfg.layer_norm_eps, False)
                                    for _ in range(cfg.vision_num_blocks))
        self.head_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.head_proj = nn.Linear(d, cfg.out_embed_dim, bias=False)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """video ``[N, 3, 2, 224, 224]`` -> unit embeddings ``[N, E]``."""
        cfg = self.cfg
        expected = (3, cfg.video_frames, cfg.image_size, cfg.image_size)
        assert video.ndim == 5 and tuple(video.shape[1:]) == expected, \
            f"vision input must be [N, {', '.join(map(str, expected))}], got {tuple(video.shape)}"
        x = self.patch_embed(video).flatten(2).transpose(1, 2)  # [N, 256, D]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.pre_norm(x)
        for block in self.blocks:
            x = block(x)
        x = self.head_proj(self.head_norm(x)[:, 0])
        return F.normalize(x, dim=-1)


class AudioTower(nn.Module):
    """Normalised fbank clip ``[N, 1, 128, 204]`` -> embedding ``[N, E]`` of norm ``exp(log_logit_scale)``."""

    def __init__(self, cfg: ImageBindConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.audio_embed_dim
        self.patch_embed = nn.Conv2d(1, d, kernel_size=cfg.audio_kernel_size, stride=cfg.audio_stride, bias=False)
        self.patch_norm = nn.LayerNorm(d)  # upstream uses LayerNorm's default eps (1e-5) in the audio stem
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.audio_num_tokens, d))
        self.blocks = nn.ModuleList(Block(d, cfg.audio_num_heads, cfg.mlp_ratio, cfg.layer_norm_eps, True)
                                    for _ in range(cfg.audio_num_blocks))
        self.head_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.head_proj = nn.Linear(d, cfg.out_embed_dim, bias=False)
        # fixed (not learned) logit scale; stored in the checkpoint as a buffer
        self.register_buffer("log_logit_scale", torch.tensor(math.log(cfg.audio_logit_scale)))

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        """fbank ``[N, 1, 128, 204]`` -> embeddings ``[N, E]`` of norm 20."""
        cfg = self.cfg
        expected = (1, cfg.audio_num_mel_bins, cfg.audio_target_len)
        assert fbank.ndim == 4 and tuple(fbank.shape[1:]) == expected, \
            f"audio input must be [N, {', '.join(map(str, expected))}], got {tuple(fbank.shape)}"
        x = self.patch_norm(self.patch_embed(fbank).flatten(2).transpose(1, 2))  # [N, 228, D]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        x = self.head_proj(self.head_norm(x)[:, 0])
        return F.normalize(x, dim=-1) * self.log_logit_scale.exp().clamp(max=100.0)


class ImageBindAV(nn.Module):
    """ImageBind restricted to vision and audio, with upstream's per-clip post-processing and averaging."""

    def __init__(self, cfg: ImageBindConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision = VisionTower(cfg)
        self.audio = AudioTower(cfg)

    def embed_vision(self, video: torch.Tensor) -> torch.Tensor:
        """video: [B, S, 3, 2, 224, 224] (S = 15 views: 5 windows x 3 crops) -> float32 [B, E], the mean of S unit
        vectors. Inputs are cast to the model's dtype."""
        assert video.ndim == 6, f"embed_vision expects [B, S, 3, 2, H, W], got {tuple(video.shape)}"
        b, s = video.shape[:2]
        x = video.flatten(0, 1).to(self.vision.cls_token.dtype)
        return self.vision(x).reshape(b, s, -1).float().mean(dim=1)

    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """audio: [B, S, 1, 128, 204] (S = 3 windows) -> float32 [B, E], the mean of S vectors of norm 20. Inputs
        are cast to the model's dtype."""
        assert audio.ndim == 5, f"embed_audio expects [B, S, 1, 128, 204], got {tuple(audio.shape)}"
        b, s = audio.shape[:2]
        x = audio.flatten(0, 1).to(self.audio.cls_token.dtype)
        return self.audio(x).reshape(b, s, -1).float().mean(dim=1)

    def score(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of the averaged embeddings: video [B, 15, 3, 2, 224, 224], audio [B, 3, 1, 128, 204]
        -> [B]."""
        assert video.shape[0] == audio.shape[0], \
            f"batch sizes differ: video {tuple(video.shape)}, audio {tuple(audio.shape)}"
        return F.cosine_similarity(self.embed_vision(video), self.embed_audio(audio), dim=-1)

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Same as `score`: ``[B, 15, 3, 2, 224, 224]``, ``[B, 3, 1, 128, 204]`` -> ``[B]``."""
        return self.score(video, audio)

    @torch.no_grad()
    def init_random_(self, seed: int = 0) -> ImageBindAV:
        """Seeded random init for debug weights: truncated-normal tokens, Xavier projections, zero biases.

        Attention input projections are scaled x4 (as in the parity fixture's tiny model) so that the
        embeddings depend visibly on the input content. Returns self.
        """
        gen = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            if name.endswith(("cls_token", "pos_embed", "bias_k", "bias_v")):
                nn.init.trunc_normal_(p, std=0.02, generator=gen)
            elif p.ndim >= 2:
                nn.init.xavier_uniform_(p, generator=gen)
                if name.endswith("in_proj_weight"):
                    p.mul_(4.0)
            elif "norm" in name.rsplit(".", 2)[-2] and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
        self.audio.log_logit_scale.fill_(math.log(self.cfg.audio_logit_scale))
        return self
