"""Synchformer (Iashin et al., 2024): audio-visual offset classifier, read top to bottom.

    video [B, S, 16, 3, 224, 224] --MotionFormer--> [B, S, 8, Dv] --vproj--> [B, S*8, D]
    audio [B, S, 1, 128, 66]      --AST + pool----> [B, S, 6, Da] --aproj--> [B, S*6, D]
    [OFF, LN(visual), MOD, LN(audio)] + positions (198 x D) -> 3 GPT blocks -> LN -> off_head(OFF) -> [B, 21]

Class i of the 21 logits is the offset ``-2.0 + 0.2 i`` seconds (audio relative to video). State-dict keys
equal upstream's (``vfeat_extractor.*``, ``afeat_extractor.*``, ``vproj.*``, ``aproj.*``, ``transformer.*``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vaura.synchformer.audio import AudioEncoder
from vaura.synchformer.config import SynchformerConfig
from vaura.synchformer.visual import MotionFormer


class SelfAttention(nn.Module):
    """Full (non-causal) multi-head attention with separate key / query / value: ``[B, L, D] -> [B, L, D]``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.key = nn.Linear(dim, dim)
        self.query = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, dim = x.shape
        hd = dim // self.heads
        k, q, v = (lin(x).reshape(b, length, self.heads, hd).transpose(1, 2)
                   for lin in (self.key, self.query, self.value))
        out = F.scaled_dot_product_attention(q, k, v, scale=hd ** -0.5)  # softmax(q k^T / sqrt(hd)) v, fused
        return self.proj(out.transpose(1, 2).reshape(b, length, dim))


class Block(nn.Module):
    """GPT block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))`` with ``mlp = Linear, GELU, Linear``."""

    def __init__(self, dim: int, heads: int, eps: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim, eps=eps)
        self.ln2 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class _PosEmb(nn.Module):
    def __init__(self, length: int, dim: int) -> None:
        super().__init__()
        self.pos_emb = nn.Parameter(torch.zeros(1, length, dim))


class SyncTransformer(nn.Module):
    """Offset head: ``forward(v [B, Sv, D], a [B, Sa, D]) -> (logits [B, classes], hidden [B, 2+Sv+Sa, D])``."""

    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        d = cfg.sync_dim
        self.OFF_tok = nn.Parameter(torch.zeros(1, 1, d))
        self.MOD_tok = nn.Parameter(torch.zeros(1, 1, d))
        self.vis_in_lnorm = nn.LayerNorm(d, eps=cfg.sync_eps)
        self.aud_in_lnorm = nn.LayerNorm(d, eps=cfg.sync_eps)
        self.pos_emb_cfg = _PosEmb(cfg.seq_len, d)
        self.blocks = nn.Sequential(*(Block(d, cfg.sync_heads, cfg.sync_eps) for _ in range(cfg.sync_depth)))
        self.ln_f = nn.LayerNorm(d, eps=cfg.sync_eps)
        self.off_head = nn.Linear(d, cfg.num_classes)

    def forward(self, v: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = v.shape[0]
        x = torch.cat([self.OFF_tok.expand(b, -1, -1), self.vis_in_lnorm(v),
                       self.MOD_tok.expand(b, -1, -1), self.aud_in_lnorm(a)], dim=1)
        assert x.shape[1] == self.pos_emb_cfg.pos_emb.shape[1], \
            f"sequence of {x.shape[1]} tokens (v {tuple(v.shape)}, a {tuple(a.shape)}) vs position table " \
            f"{tuple(self.pos_emb_cfg.pos_emb.shape)}"
        hidden = self.ln_f(self.blocks(x + self.pos_emb_cfg.pos_emb))
        return self.off_head(hidden[:, 0]), hidden


@dataclass
class SyncOutput:
    """Everything one forward pass computes (features kept for parity checks and debugging)."""

    vis_feats: torch.Tensor  # [B, S, 8, Dv]
    aud_feats: torch.Tensor  # [B, S, 6, Da]
    vproj: torch.Tensor  # [B, S, 8, D]
    aproj: torch.Tensor  # [B, S, 6, D]
    hidden: torch.Tensor  # [B, 198, D] after ln_f
    logits: torch.Tensor  # [B, classes]


class Synchformer(nn.Module):
    """Full sync model. ``forward(video [B, S, 16, 3, 224, 224], audio [B, S, 1, 128, 66]) -> SyncOutput``."""

    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vfeat_extractor = MotionFormer(cfg)
        self.afeat_extractor = AudioEncoder(cfg)
        self.vproj = nn.Linear(cfg.vis_dim, cfg.sync_dim)
        self.aproj = nn.Linear(cfg.aud_dim, cfg.sync_dim)
        self.transformer = SyncTransformer(cfg)

    def offsets(self) -> torch.Tensor:
        """``[classes]`` float32 offset (seconds) of each class, from the float64 grid as upstream."""
        return torch.tensor(self.cfg.offset_grid, dtype=torch.float64).float()

    def visual_features(self, video: torch.Tensor) -> torch.Tensor:
        """Segments ``[B, S, 16, 3, H, W]`` (any S; each segment is encoded on its own) -> ``[B, S, 8, Dv]``."""
        cfg = self.cfg
        assert video.dim() == 6 and video.shape[2:4] == (cfg.segment_frames, 3), \
            f"video must be [B, S, {cfg.segment_frames}, 3, H, W], got {tuple(video.shape)}"
        return self.vfeat_extractor(video.transpose(2, 3))  # [B, S, 3, 16, H, W] -> [B, S, 8, Dv]

    def audio_features(self, audio: torch.Tensor) -> torch.Tensor:
        """Segments ``[B, S, 1, 128, 66]`` (any S; each segment is encoded on its own) -> ``[B, S, 6, Da]``."""
        cfg = self.cfg
        assert audio.dim() == 5 and audio.shape[2:] == (1, cfg.n_mels, cfg.spec_frames), \
            f"audio must be [B, S, 1, {cfg.n_mels}, {cfg.spec_frames}], got {tuple(audio.shape)}"
        return self.afeat_extractor(audio.squeeze(2))  # [B, S, 128, 66] -> [B, S, 6, Da]

    def compare(self, vis: torch.Tensor, aud: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                      torch.Tensor]:
        """Offset head on one window of features: ``vis [B, S, 8, Dv]``, ``aud [B, S, 6, Da]`` (S = 14) ->
        ``(logits [B, classes], hidden [B, 198, D], vproj [B, S, 8, D], aproj [B, S, 6, D])``; upstream's
        ``compare_v_a``."""
        assert vis.shape[:2] == aud.shape[:2], f"visual {tuple(vis.shape)} vs audio {tuple(aud.shape)} features"
        vp, ap = self.vproj(vis), self.aproj(aud)
        logits, hidden = self.transformer(vp.flatten(1, 2), ap.flatten(1, 2))
        return logits, hidden, vp, ap

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> SyncOutput:
        assert video.shape[:2] == audio.shape[:2], f"video {tuple(video.shape)} vs audio {tuple(audio.shape)}"
        vis, aud = self.visual_features(video), self.audio_features(audio)
        logits, hidden, vp, ap = self.compare(vis, aud)
        return SyncOutput(vis, aud, vp, ap, hidden, logits)

    @torch.no_grad()
    def predict(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(probs [B, classes], offset_sec [B])`` for preprocessed windows (see `forward`)."""
        logits = self.forward(video, audio).logits.float()
        probs = F.softmax(logits, dim=-1)
        return probs, self.offsets().to(probs.device)[probs.argmax(-1)]
