"""Synchformer's visual encoder: MotionFormer (ViT-B/16 with divided space-time attention) + spatial pooling.

Per 16-frame segment of 224 px frames: a 2x16x16 Conv3d tubelet embedding gives 8 x 14 x 14 = 1568 tokens
(flattened time-major: index = t*196 + h*14 + w), a CLS token is prepended, and position = spatial table
(``pos_embed``, 1 + 196 rows) + temporal table (``temp_embed``, 8 rows). Each block runs

    x = x + TimeAttn(norm3(x))      # every spatial location attends over its 8 time steps (+ CLS)
    x = x + SpaceAttn(norm1(x))     # every time step attends over its 196 locations (+ CLS)
    x = x + MLP(norm2(x))

where CLS attends to all tokens and its key/value is prepended to every time / space group. After the final
LayerNorm the CLS is dropped and a pre-norm `AggregationLayer` with its own CLS pools the 196 locations of each
time step: ``[B, S, C, 16, 224, 224] -> [B, S, 8, D]``.

State-dict keys equal the upstream ``vfeat_extractor.*`` suffixes (and V-AURA's ``visual_feature_extractor.*``),
including the unused 2-D ``patch_embed.proj`` that upstream keeps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vaura.synchformer.config import SynchformerConfig


class AggregationLayer(nn.TransformerEncoderLayer):
    """Pre-norm transformer encoder layer with a learned CLS; returns the CLS output per group.

    ``forward``: tokens ``[N, L, D]`` -> ``[N, D]``. Used for the spatial (visual) and frequency (audio) pooling
    (upstream ``SpatialTransformerEncoderLayer`` / ``FrequencyTransformerEncoderLayer``).
    """

    def __init__(self, dim: int, heads: int, eps: float) -> None:
        super().__init__(d_model=dim, nhead=heads, dim_feedforward=4 * dim, dropout=0.0, activation="gelu",
                         layer_norm_eps=eps, batch_first=True, norm_first=True)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        assert x.dim() == 3 and x.shape[-1] == self.cls_token.shape[-1], f"expected [N, L, D], got {x.shape}"
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return super().forward(x)[:, 0]


class DividedAttention(nn.Module):
    """Multi-head attention within groups (time or space) plus a global CLS.

    ``forward(x [N, 1 + G*L, D], grouping)``: ``grouping="time"`` groups the ``T*P`` patch tokens (time-major)
    by spatial location (sequences of length T), ``"space"`` by time step (sequences of length P).
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, grouping: str, frames: int) -> torch.Tensor:
        n, length, dim = x.shape
        patches = (length - 1) // frames
        assert 1 + frames * patches == length, f"{x.shape} is not CLS + {frames} frames x patches"
        hd = dim // self.heads
        q, k, v = (t.reshape(n, length, self.heads, hd).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1))
        q = q * hd ** -0.5  # [N, h, L, hd]
        # softmax(q k^T) v as fused kernels (q is scaled already, as upstream scales it)
        cls_out = F.scaled_dot_product_attention(q[:, :, :1], k, v, scale=1.0)  # CLS attends to everything

        def group(t: torch.Tensor) -> torch.Tensor:  # [N, h, T*P, hd] -> [N*h*G, len, hd]
            t = t[:, :, 1:].reshape(n, self.heads, frames, patches, hd)
            if grouping == "time":
                t = t.transpose(2, 3)  # [N, h, P, T, hd]
            return t.reshape(-1, t.shape[-2], hd)

        groups = patches if grouping == "time" else frames
        qg, kg, vg = group(q), group(k), group(v)
        cls_k = k[:, :, :1].unsqueeze(2).expand(n, self.heads, groups, 1, hd).reshape(-1, 1, hd)
        cls_v = v[:, :, :1].unsqueeze(2).expand(n, self.heads, groups, 1, hd).reshape(-1, 1, hd)
        kg, vg = torch.cat([cls_k, kg], dim=1), torch.cat([cls_v, vg], dim=1)
        out = F.scaled_dot_product_attention(qg, kg, vg, scale=1.0)  # [N*h*G, len, hd]
        if grouping == "time":
            out = out.reshape(n, self.heads, patches, frames, hd).transpose(2, 3)
        out = out.reshape(n, self.heads, frames * patches, hd)
        out = torch.cat([cls_out, out], dim=2).transpose(1, 2).reshape(n, length, dim)
        return self.proj(out)


class Mlp(nn.Module):
    """``fc1 -> GELU -> fc2``: ``[..., D] -> [..., D]``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class DividedBlock(nn.Module):
    """Time attention, then space attention, then MLP (pre-norm residuals): ``[N, 1 + T*P, D]`` -> same."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = DividedAttention(dim, heads)
        self.timeattn = DividedAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_ratio * dim)
        self.norm3 = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        x = x + self.timeattn(self.norm3(x), "time", frames)
        x = x + self.attn(self.norm1(x), "space", frames)
        return x + self.mlp(self.norm2(x))


class _Patch(nn.Module):
    def __init__(self, proj: nn.Module) -> None:
        super().__init__()
        self.proj = proj


class MotionFormer(nn.Module):
    """Visual encoder: ``forward(x [B, S, C=3, T=16, H=224, W=224] float) -> [B, S, 8, D]``.

    ``x`` holds normalised frames (see `vaura.synchformer.preprocess`). `backbone` exposes the per-token output
    before spatial pooling for debugging / parity checks.
    """

    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, p, tf = cfg.vis_dim, cfg.patch_size, cfg.tubelet_frames
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.spatial_tokens + 1, d))
        self.temp_embed = nn.Parameter(torch.zeros(1, cfg.temporal_tokens, d))
        self.patch_embed = _Patch(nn.Conv2d(3, d, p, stride=p))  # unused, kept for the checkpoint layout
        self.patch_embed_3d = _Patch(nn.Conv3d(3, d, (tf, p, p), stride=(tf, p, p)))
        self.blocks = nn.ModuleList(DividedBlock(d, cfg.vis_heads, cfg.vis_mlp_ratio, cfg.vis_eps)
                                    for _ in range(cfg.vis_depth))
        self.norm = nn.LayerNorm(d, eps=cfg.vis_eps)
        self.spatial_attn_agg = AggregationLayer(d, cfg.vis_heads, cfg.agg_eps)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, T, H, W] -> [N, T'*P, D]`` tubelet embeddings, time-major."""
        return self.patch_embed_3d.proj(x).flatten(2).transpose(1, 2)

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, T, H, W] -> [N, T'*P, D]``: divided blocks and final norm, CLS dropped."""
        tokens = self.patchify(x)
        n = tokens.shape[0]
        t, p = self.cfg.temporal_tokens, self.cfg.spatial_tokens
        assert tokens.shape[1] == t * p, f"{tuple(x.shape)} gives {tokens.shape[1]} tokens, expected {t}x{p}"
        pos = self.pos_embed[:, 1:].repeat(1, t, 1) + self.temp_embed.repeat_interleave(p, dim=1)
        pos = torch.cat([self.pos_embed[:, :1], pos], dim=1)
        tokens = torch.cat([self.cls_token.expand(n, -1, -1), tokens], dim=1) + pos
        for blk in self.blocks:
            tokens = blk(tokens, t)
        return self.norm(tokens[:, 1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        assert x.dim() == 6 and x.shape[2] == 3 and x.shape[3] == cfg.segment_frames, \
            f"expected [B, S, 3, {cfg.segment_frames}, H, W], got {tuple(x.shape)}"
        b, s = x.shape[:2]
        tokens = self.backbone(x.flatten(0, 1))  # [B*S, t*P, D]
        t, p, d = cfg.temporal_tokens, cfg.spatial_tokens, cfg.vis_dim
        pooled = self.spatial_attn_agg(tokens.reshape(b * s * t, p, d))  # [B*S*t, D]
        return pooled.reshape(b, s, t, d)

    @torch.no_grad()
    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """V-AURA visual features: uint8 ``[B, 64, H, W, 3]`` (or ``[64, H, W, 3]``) frames of a 2.56 s clip at
        25 fps -> ``[B, 4, 8, D]`` (flatten to V-AURA's ``[B, 32, D]``). Runs in the model's dtype and device."""
        from vaura.synchformer.preprocess import preprocess_video_for_vaura

        param = self.cls_token
        x = preprocess_video_for_vaura(frames.to(param.device)).to(param.dtype)
        return self.forward(x)

    @torch.no_grad()
    def segment_features(self, segments: torch.Tensor) -> torch.Tensor:
        """Features of 16-frame segments: uint8 ``[N, 16, H, W, 3]`` -> ``[N, 8, D]``. Segments are encoded
        independently, so a window's `features` are its 4 segments' (up to float rounding of the batch size)."""
        from vaura.synchformer.preprocess import preprocess_segments_for_vaura

        param = self.cls_token
        x = preprocess_segments_for_vaura(segments.to(param.device)).to(param.dtype)
        return self.forward(x)[0]
