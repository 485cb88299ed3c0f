"""Synchformer's audio encoder: AST (Audio Spectrogram Transformer, HF layout) + frequency pooling.

Per segment the normalised log-mel ``[128 mel, 66 time]`` is cut into 16x16 patches with stride 10 by a
Conv2d (12 frequency x 6 time = 72 patches, flattened frequency-major: index = f*6 + t). CLS and distillation
tokens are prepended and a learned table of 74 positions is added. Post-attention ViT layers (HF
``ASTLayer``: ``layernorm_before`` -> self-attention -> residual -> ``layernorm_after`` -> MLP -> residual)
and a final LayerNorm follow. The two special tokens are dropped and a pre-norm `AggregationLayer` with its
own CLS pools the 12 frequency rows of every time column: ``[B, S, 128, 66] -> [B, S, 6, D]``.

State-dict keys equal the upstream ``afeat_extractor.*`` suffixes (``ast.*`` and ``freq_attn_agg.*``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vaura.synchformer.config import SynchformerConfig
from vaura.synchformer.visual import AggregationLayer


class _ASTSelfAttention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)


class _Dense(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)


class _ASTAttention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attention = _ASTSelfAttention(dim)
        self.output = _Dense(dim, dim)


class ASTLayer(nn.Module):
    """One AST encoder layer: ``[N, L, D] -> [N, L, D]``."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.attention = _ASTAttention(dim)
        self.intermediate = _Dense(dim, mlp_dim)
        self.output = _Dense(mlp_dim, dim)
        self.layernorm_before = nn.LayerNorm(dim, eps=eps)
        self.layernorm_after = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        hd = dim // self.heads
        h = self.layernorm_before(x)
        sa = self.attention.attention
        q, k, v = (lin(h).reshape(n, length, self.heads, hd).transpose(1, 2) for lin in (sa.query, sa.key, sa.value))
        out = F.scaled_dot_product_attention(q, k, v, scale=hd ** -0.5)  # softmax(q k^T / sqrt(hd)) v, fused
        out = out.transpose(1, 2).reshape(n, length, dim)
        x = x + self.attention.output.dense(out)
        return x + self.output.dense(F.gelu(self.intermediate.dense(self.layernorm_after(x))))


class _PatchEmbeddings(nn.Module):
    def __init__(self, dim: int, patch: int, stride: int) -> None:
        super().__init__()
        self.projection = nn.Conv2d(1, dim, patch, stride=stride)


class ASTEmbeddings(nn.Module):
    """``[N, 128 mel, 66 time] -> [N, 2 + 72, D]`` (CLS, distillation, frequency-major patches) + positions."""

    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        d = cfg.aud_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.distillation_token = nn.Parameter(torch.zeros(1, 1, d))
        self.position_embeddings = nn.Parameter(torch.zeros(1, cfg.ast_positions, d))
        self.patch_embeddings = _PatchEmbeddings(d, cfg.aud_patch, cfg.aud_stride)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embeddings.projection(spec.unsqueeze(1)).flatten(2).transpose(1, 2)
        n = patches.shape[0]
        x = torch.cat([self.cls_token.expand(n, -1, -1), self.distillation_token.expand(n, -1, -1), patches], 1)
        assert x.shape[1] == self.position_embeddings.shape[1], \
            f"spectrogram {tuple(spec.shape)} gives {x.shape[1]} positions, table has " \
            f"{self.position_embeddings.shape[1]}"
        return x + self.position_embeddings


class _ASTEncoder(nn.Module):
    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(ASTLayer(cfg.aud_dim, cfg.aud_heads, cfg.aud_mlp_dim, cfg.aud_eps)
                                   for _ in range(cfg.aud_depth))


class ASTModel(nn.Module):
    """``[N, 128, 66] -> [N, 74, D]`` (final LayerNorm output, special tokens included)."""

    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        self.embeddings = ASTEmbeddings(cfg)
        self.encoder = _ASTEncoder(cfg)
        self.layernorm = nn.LayerNorm(cfg.aud_dim, eps=cfg.aud_eps)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(spec)
        for layer in self.encoder.layer:
            x = layer(x)
        return self.layernorm(x)


class AudioEncoder(nn.Module):
    """Audio encoder: ``forward(spec [B, S, 128 mel, 66 time]) -> [B, S, 6, D]``."""

    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.ast = ASTModel(cfg)
        self.freq_attn_agg = AggregationLayer(cfg.aud_dim, cfg.aud_heads, cfg.agg_eps)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        assert spec.dim() == 4 and spec.shape[2:] == (cfg.n_mels, cfg.spec_frames), \
            f"expected [B, S, {cfg.n_mels}, {cfg.spec_frames}], got {tuple(spec.shape)}"
        b, s = spec.shape[:2]
        f, t, d = cfg.freq_tokens, cfg.time_tokens, cfg.aud_dim
        x = self.ast(spec.flatten(0, 1))[:, 2:]  # [B*S, f*t, D], frequency-major
        x = x.reshape(b * s, f, t, d).transpose(1, 2).reshape(b * s * t, f, d)
        return self.freq_attn_agg(x).reshape(b, s, t, d)
