"""The V-AURA transformer (the release's ``sampler``), top to bottom in one file.

Data flow for a pattern sequence ``seq [B, K, S]`` (K = 9 codebooks, ids 0..1024, 1024 = special) and visual
features ``visual [B, N, 768]`` (N = 32 Segment-AVCLIP tokens per 2.56 s):

1. audio: per codebook ``k`` an ``Embedding(1025, 8)`` and a weight-normed 1x1 conv ``8 -> A`` (A = DAC latent),
   summed over k in order -> ``[B, S, A]``;
2. visual: ``fc2(gelu_tanh(fc1(features)))`` (768 -> V -> V, no bias, V = d_model // 3) -> ``[B, N, V]``;
   step ``p`` gets visual token ``p // 7`` while ``p // 7 < N`` and ``empty_video_emb`` afterwards;
3. fusion: ``concat([visual V, audio A], -1)`` (visual first) -> ``[B, S, d_model]``;
4. ``n_layer`` pre-norm blocks (RMSNorm, causal attention with RoPE on adjacent pairs, SwiGLU);
5. final RMSNorm and K bias-free heads -> logits ``[B, K, S, card]``: position ``p``, head ``q`` predicts the
   pattern cell ``(q, p + 1)``.

The null (CFG) condition replaces the 768-d input features by the stored ``uncond_embedding`` buffer before the
MLP. Module and parameter names equal the release's ``sampler.*`` checkpoint keys.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vaura.config import VAuraConfig
from vaura.delay import build_pattern
from visualsound.errors import ToolkitError

log = logging.getLogger(__name__)


class SequenceTooLongError(ToolkitError, ValueError):
    """A pattern sequence (or KV cache) longer than the RoPE table (256 steps = one 2.56 s window)."""


# ---------------------------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    """``x * rsqrt(mean(x^2) + eps) * weight``, normalised in fp32. x: ``[..., D]``."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)  # one fused kernel where PyTorch has one
        return out.type_as(x) * self.weight


def rope_table(length: int, head_dim: int, base: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """RoPE angles' cos/sin: ``[length, head_dim // 2, 2]`` (fp32), angle ``p * base^(-2i / head_dim)``."""
    freqs = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device)[: head_dim // 2].float() / head_dim))
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), freqs)
    return torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs ``(x[2i], x[2i+1])`` of x ``[B, L, H, hd]`` by the table ``[L, hd // 2, 2]``:
    ``(x0 cos - x1 sin, x1 cos + x0 sin)``, computed in fp32 as one complex product ``(x0 + i x1)(cos + i sin)``."""
    b, seq, h, hd = x.shape
    assert table.shape == (seq, hd // 2, 2), f"rope table {tuple(table.shape)} vs x {tuple(x.shape)}"
    if torch.compiler.is_compiling():  # Inductor fuses the real form (it does not generate complex kernels)
        return _apply_rope_real(x, table)
    xs = torch.view_as_complex(x.float().reshape(b, seq, h, hd // 2, 2))
    # the table is a buffer, so model.to(bfloat16) converts it; view_as_complex has no bfloat16 form
    rot = torch.view_as_complex(table.float().contiguous())[None, :, None, :]
    return torch.view_as_real(xs * rot).flatten(3).type_as(x)


def _apply_rope_real(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """`apply_rope` in real arithmetic (the same products and sums; used under ``torch.compile``)."""
    b, seq, h, hd = x.shape
    xs = x.float().reshape(b, seq, h, hd // 2, 2)
    cos, sin = table[None, :, None, :, 0], table[None, :, None, :, 1]
    x0, x1 = xs[..., 0], xs[..., 1]
    return torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], dim=-1).flatten(3).type_as(x)


class KVCache:
    """Per-layer key/value buffers ``[B, H, max_len, hd]`` for incremental decoding.

    ``length`` counts the positions already written; `Transformer.forward_tokens` appends at ``length``.
    The buffers start at zero, and must: `Transformer.decode_step` attends over the whole buffer with the unwritten
    positions masked, and a masked NaN (from uninitialised memory) would still poison the softmax-weighted sum.
    """

    def __init__(self, cfg: VAuraConfig, batch: int, max_len: int, device: torch.device | str,
                 dtype: torch.dtype) -> None:
        if max_len > cfg.rope_len:
            raise SequenceTooLongError(f"KV cache of {max_len} positions exceeds the RoPE table ({cfg.rope_len})")
        shape = (batch, cfg.n_head, max_len, cfg.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.max_len = max_len
        self.length = 0


class Attention(nn.Module):
    """Causal multi-head self-attention with a fused ``wqkv`` (rows ``[q | k | v]``) and RoPE."""

    def __init__(self, cfg: VAuraConfig) -> None:
        super().__init__()
        self.n_head, self.head_dim, self.d_model = cfg.n_head, cfg.head_dim, cfg.d_model
        self.wqkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.wo = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.attn_dropout = cfg.attn_dropout

    def forward(self, x: torch.Tensor, rope: torch.Tensor, cache: KVCache | None = None,
                layer: int = 0, pos: torch.Tensor | None = None, visible: torch.Tensor | None = None
                ) -> torch.Tensor:
        """x: ``[B, L, D]`` at positions ``start .. start+L-1`` (``start = cache.length`` or 0) -> ``[B, L, D]``.

        With ``pos`` (int64 ``[1]``, a tensor so that the step has static shapes for CUDA graphs) x is the single
        position ``pos``: its key/value are written into the cache at ``pos`` and the query attends to the whole
        cache buffer through ``visible`` (bool ``[1, max_len]``, true up to ``pos``).
        """
        b, seq, _ = x.shape
        qkv = self.wqkv(x)
        # q and k rotated together: [B, L, 2H, hd] -> [B, 2H, L, hd] -> q [B, H, L, hd], k [B, H, L, hd]
        qk = apply_rope(qkv[..., : 2 * self.d_model].view(b, seq, 2 * self.n_head, self.head_dim), rope)
        q, k = qk.transpose(1, 2).split(self.n_head, dim=1)
        v = qkv[..., 2 * self.d_model:].view(b, seq, self.n_head, self.head_dim).transpose(1, 2)
        if pos is not None:
            assert cache is not None and seq == 1 and pos.shape == (1,) and visible is not None, (
                f"static decoding takes one position, a cache and a mask: x {tuple(x.shape)}, pos {tuple(pos.shape)}")
            # index_copy_ does not cast (the dynamic path's slice assignment does): k, v are bf16 under autocast
            cache.keys[layer].index_copy_(2, pos, k.to(cache.keys[layer].dtype))
            cache.values[layer].index_copy_(2, pos, v.to(cache.values[layer].dtype))
            out = F.scaled_dot_product_attention(q, cache.keys[layer], cache.values[layer], attn_mask=visible)
            return self.wo(out.transpose(1, 2).reshape(b, seq, self.d_model))
        start = 0
        if cache is not None:
            start = cache.length
            cache.keys[layer][:, :, start:start + seq] = k
            cache.values[layer][:, :, start:start + seq] = v
            k = cache.keys[layer][:, :, :start + seq]
            v = cache.values[layer][:, :, :start + seq]
        p = self.attn_dropout if self.training else 0.0
        if start == 0:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        elif seq == 1:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        else:
            key_pos = torch.arange(start + seq, device=x.device)
            mask = key_pos[None, :] <= (start + torch.arange(seq, device=x.device))[:, None]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.wo(out.transpose(1, 2).reshape(b, seq, self.d_model))


class FeedForward(nn.Module):
    """SwiGLU: ``w2(silu(w1 x) * w3 x)``, no biases. x: ``[B, L, D]``."""

    def __init__(self, cfg: VAuraConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(cfg.d_model, cfg.ffn_hidden, bias=False)
        self.w3 = nn.Linear(cfg.d_model, cfg.ffn_hidden, bias=False)
        self.w2 = nn.Linear(cfg.ffn_hidden, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    """Pre-norm block: ``h = x + Attn(norm(x))``; ``out = h + FFN(norm(h))``."""

    def __init__(self, cfg: VAuraConfig) -> None:
        super().__init__()
        self.attention = Attention(cfg)
        self.feed_forward = FeedForward(cfg)
        self.attention_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, rope: torch.Tensor, cache: KVCache | None, layer: int,
                pos: torch.Tensor | None = None, visible: torch.Tensor | None = None) -> torch.Tensor:
        h = x + self.drop(self.attention(self.attention_norm(x), rope, cache, layer, pos, visible))
        return h + self.drop(self.feed_forward(self.ffn_norm(h)))


class WeightNormConv1x1(nn.Module):
    """A weight-normed 1x1 Conv1d ``in -> out`` stored like ``torch.nn.utils.weight_norm``: ``bias [out]``,
    ``weight_g [out, 1, 1]``, ``weight_v [out, in, 1]``; ``W = g * v / ||v||`` (norm per output channel).
    Applied to x ``[B, L, in]`` -> ``[B, L, out]``."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        conv = nn.Conv1d(d_in, d_out, 1)  # PyTorch's default init for v and bias, as the original
        self.bias = nn.Parameter(conv.bias.detach().clone())
        self.weight_g = nn.Parameter(conv.weight.detach().norm(dim=(1, 2), keepdim=True))
        self.weight_v = nn.Parameter(conv.weight.detach().clone())

    def weight(self) -> torch.Tensor:
        """``[out, in]``."""
        v = self.weight_v
        return (self.weight_g * v / v.norm(dim=(1, 2), keepdim=True))[:, :, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.bias)


class AudioEmbedding(nn.Module):
    """One codebook's input embedding: ``Embedding(card + 1, 8)`` then `WeightNormConv1x1` ``8 -> A``.
    ids ``[B, L]`` -> ``[B, L, A]``."""

    def __init__(self, cfg: VAuraConfig) -> None:
        super().__init__()
        self.emb = nn.Embedding(cfg.vocab_in, cfg.codebook_dim)
        self.out_proj = WeightNormConv1x1(cfg.codebook_dim, cfg.audio_width)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.emb(ids))


class VisualProjection(nn.Module):
    """``fc2(gelu_tanh(fc1(x)))``: ``[B, N, 768] -> [B, N, V]``, no biases."""

    def __init__(self, cfg: VAuraConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.visual_dim, cfg.visual_hidden, bias=False)
        self.fc2 = nn.Linear(cfg.visual_hidden, cfg.visual_hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class VisualEmbedder(nn.Module):
    """The visual condition: the projection MLP and the stored null condition ``uncond_embedding [N, 768]``."""

    def __init__(self, cfg: VAuraConfig) -> None:
        super().__init__()
        self.register_buffer("uncond_embedding", torch.randn(cfg.visual_tokens, cfg.visual_dim)
                             / math.sqrt(cfg.visual_dim))
        self.projection = VisualProjection(cfg)

    def forward(self, features: torch.Tensor, null: torch.Tensor | None = None) -> torch.Tensor:
        """features ``[B, N, 768]``; null ``[B]`` bool (rows that get the null condition) -> ``[B, N, V]``."""
        if null is not None:
            assert null.shape == features.shape[:1], f"null {tuple(null.shape)} vs features {tuple(features.shape)}"
            assert features.shape[1:] == self.uncond_embedding.shape, (
                f"null condition needs features {tuple(self.uncond_embedding.shape)}, got {tuple(features.shape)}")
            uncond = self.uncond_embedding.to(features.dtype).expand_as(features)
            features = torch.where(null[:, None, None], uncond, features)
        return self.projection(features)


# ---------------------------------------------------------------------------------------------------------------
# the transformer
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class LossOutput:
    """``loss`` (scalar): mean of ``per_codebook [K]`` cross-entropies."""

    loss: torch.Tensor
    per_codebook: torch.Tensor


class Transformer(nn.Module):
    """V-AURA's autoregressive transformer over the delayed DAC-code pattern, conditioned on visual tokens."""

    def __init__(self, cfg: VAuraConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.empty_video_emb = nn.Parameter(torch.zeros(1, 1, cfg.visual_hidden))
        self.cls_embeddings = VisualEmbedder(cfg)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_heads = nn.ModuleList(nn.Linear(cfg.d_model, cfg.card, bias=False) for _ in range(cfg.n_codebooks))
        self.tok_embeddings = nn.ModuleList(AudioEmbedding(cfg) for _ in range(cfg.n_codebooks))
        self.drop = nn.Dropout(cfg.dropout)
        self.register_buffer("rope", rope_table(cfg.rope_len, cfg.head_dim, cfg.rope_base), persistent=False)

    def reset_rope(self) -> None:
        """Recompute the (non-persistent) RoPE table on the CPU, e.g. after building on the meta device."""
        cfg = self.cfg
        self.rope = rope_table(cfg.rope_len, cfg.head_dim, cfg.rope_base)

    def cast(self, dtype: torch.dtype) -> Transformer:
        """Cast parameters and buffers to `dtype` (inference in bf16 / fp16) but keep the RoPE table fp32 (its
        cos / sin rounded to bf16 would move every rotation; `apply_rope` rotates in fp32). Returns self."""
        self.to(dtype)
        cfg = self.cfg
        self.rope = rope_table(cfg.rope_len, cfg.head_dim, cfg.rope_base, device=self.empty_video_emb.device)
        return self

    # -- initialisation ------------------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None, std: float = 0.02) -> None:
        """The original init: every Linear / Embedding N(0, std), zero heads, unit norms, ``g = ||v||``.

        ``empty_video_emb`` is N(0, std) (the original leaves it uninitialised).
        """
        for mod in self.modules():
            if isinstance(mod, (nn.Linear, nn.Embedding)):
                mod.weight.normal_(0.0, std, generator=generator)
            elif isinstance(mod, RMSNorm):
                mod.weight.fill_(1.0)
            elif isinstance(mod, WeightNormConv1x1):
                bound = 1.0 / math.sqrt(mod.weight_v.shape[1])
                mod.weight_v.uniform_(-bound, bound, generator=generator)
                mod.bias.uniform_(-bound, bound, generator=generator)
                mod.weight_g.copy_(mod.weight_v.norm(dim=(1, 2), keepdim=True))
        for head in self.lm_heads:
            head.weight.zero_()
        self.empty_video_emb.normal_(0.0, std, generator=generator)
        self.cls_embeddings.uncond_embedding.copy_(
            torch.randn(self.cls_embeddings.uncond_embedding.shape, generator=generator)
            / math.sqrt(self.cfg.visual_dim))

    @torch.no_grad()
    def init_debug_weights(self, generator: torch.Generator | None = None) -> None:
        """A random model with informative outputs (debug weights, tests): the original init, then heads and
        projections N(0, 1/fan_in), norms 1 + 0.1 N(0, 1), ``empty_video_emb`` N(0, 1)."""
        self.init_weights(generator)
        for name, p in self.named_parameters():
            if name.endswith(("wqkv.weight", "wo.weight", "w1.weight", "w2.weight", "w3.weight", "fc1.weight",
                              "fc2.weight")) or name.startswith("lm_heads."):
                p.normal_(0.0, 1.0 / math.sqrt(p.shape[1]), generator=generator)
            elif name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=generator))
        self.empty_video_emb.normal_(0.0, 1.0, generator=generator)

    @torch.no_grad()
    def init_audio_embeddings_from_dac(self, codebooks: torch.Tensor, out_proj_bias: torch.Tensor,
                                       generator: torch.Generator | None = None) -> None:
        """The original ``initialize_embeddings``: rows ``0..card-1`` of each table = the DAC codebook, row
        ``card`` = N(0, 0.02); the 1x1 conv gets DAC's ``out_proj.bias`` and a fresh default-init ``v`` with
        ``g = ||v||`` (copying DAC's ``out_proj.weight`` has no effect in the original, see the parity README).

        codebooks: ``[K, card, 8]``; out_proj_bias: ``[K, A]``.
        """
        k, a = self.cfg.n_codebooks, self.cfg.audio_width
        assert codebooks.shape == (k, self.cfg.card, self.cfg.codebook_dim), f"codebooks {tuple(codebooks.shape)}"
        assert out_proj_bias.shape == (k, a), f"out_proj_bias {tuple(out_proj_bias.shape)} vs ({k}, {a})"
        for i, tok in enumerate(self.tok_embeddings):
            tok.emb.weight[: self.cfg.card] = codebooks[i].to(tok.emb.weight)
            tok.emb.weight[self.cfg.card].normal_(0.0, 0.02, generator=generator)
            bound = 1.0 / math.sqrt(self.cfg.codebook_dim)
            tok.out_proj.weight_v.uniform_(-bound, bound, generator=generator)
            tok.out_proj.weight_g.copy_(tok.out_proj.weight_v.norm(dim=(1, 2), keepdim=True))
            tok.out_proj.bias.copy_(out_proj_bias[i])

    # -- forward pieces ------------------------------------------------------------------------------
    def embed_visual(self, features: torch.Tensor, null: torch.Tensor | None = None) -> torch.Tensor:
        """features ``[B, N, 768]`` (+ optional null mask ``[B]``) -> projected visual tokens ``[B, N, V]``."""
        assert features.dim() == 3 and features.shape[-1] == self.cfg.visual_dim, (
            f"visual features must be [B, N, {self.cfg.visual_dim}], got {tuple(features.shape)}")
        return self.cls_embeddings(features, null)

    def visual_table(self, vis: torch.Tensor) -> torch.Tensor:
        """The visual tokens followed by ``empty_video_emb``: vis ``[B, N, V]`` -> ``[B, N + 1, V]``."""
        b, _, v = vis.shape
        return torch.cat([vis, self.empty_video_emb.to(vis.dtype).expand(b, 1, v)], dim=1)

    def visual_at(self, vis: torch.Tensor, start: int | torch.Tensor, length: int) -> torch.Tensor:
        """Visual channel of steps ``start .. start+length-1``: token ``p // 7`` or ``empty_video_emb``.
        vis ``[B, N, V]`` -> ``[B, length, V]``. ``start`` may be an int64 tensor ``[1]`` (static decoding)."""
        n = vis.shape[1]
        pos = start + torch.arange(length, device=vis.device)
        idx = torch.div(pos, self.cfg.steps_per_visual_token, rounding_mode="floor").clamp(max=n)
        return self.visual_table(vis).index_select(1, idx)

    def embed_audio(self, seq: torch.Tensor) -> torch.Tensor:
        """seq ``[B, K, L]`` ids in ``[0, card]`` -> summed codebook embeddings ``[B, L, A]``."""
        assert seq.dim() == 3 and seq.shape[1] == self.cfg.n_codebooks, f"seq must be [B, K, L], got {seq.shape}"
        out = self.tok_embeddings[0](seq[:, 0])
        for k in range(1, self.cfg.n_codebooks):
            out = out + self.tok_embeddings[k](seq[:, k])
        return out

    def fuse(self, seq: torch.Tensor, vis: torch.Tensor, start: int | torch.Tensor = 0) -> torch.Tensor:
        """Block-0 input ``[B, L, D] = concat([visual V, audio A])`` for steps ``start .. start+L-1``."""
        audio = self.embed_audio(seq)
        visual = self.visual_at(vis, start, seq.shape[-1])
        return torch.cat([visual.to(audio.dtype), audio], dim=-1)

    def forward_tokens(self, seq: torch.Tensor, vis: torch.Tensor, cache: KVCache | None = None,
                       last_only: bool = False) -> torch.Tensor:
        """Logits for pattern steps ``seq [B, K, L]`` given projected visual tokens ``vis [B, N, V]``.

        With a `KVCache`, the steps are positions ``cache.length ..`` and the cache is advanced; without, they
        start at 0. Returns ``[B, K, L, card]``: ``[b, q, p]`` predicts the pattern cell ``(q, start + p + 1)``;
        with `last_only` only the last position's ``[B, K, 1, card]`` (a prompt's prefill needs no other).
        """
        x = self.hidden(seq, vis, cache, last_only)
        return torch.stack([head(x) for head in self.lm_heads], dim=1)

    def hidden(self, seq: torch.Tensor, vis: torch.Tensor, cache: KVCache | None = None,
               last_only: bool = False) -> torch.Tensor:
        """`forward_tokens` before the heads: the final-norm states ``[B, L, D]`` (``[B, 1, D]`` with
        `last_only`)."""
        start = 0 if cache is None else cache.length
        length = seq.shape[-1]
        if start + length > self.cfg.rope_len:
            raise SequenceTooLongError(f"sequence of {start + length} steps exceeds the RoPE table "
                                       f"({self.cfg.rope_len})")
        x = self.drop(self.fuse(seq, vis, start))
        rope = self.rope[start:start + length]
        for i, layer in enumerate(self.layers):
            x = layer(x, rope, cache, i)
        if cache is not None:
            cache.length = start + length
        return self.norm(x[:, -1:] if last_only else x)

    def decode_step(self, tokens: torch.Tensor, vis: torch.Tensor, cache: KVCache, pos: torch.Tensor
                    ) -> torch.Tensor:
        """One position with static shapes (every tensor's shape and address is the same at every step, so the
        step can be captured once in a CUDA graph and replayed): the pattern step ``tokens [B, K, 1]`` at
        position ``pos`` (int64 ``[1]`` on the model's device; ``cache.length`` is not read or advanced).
        Returns ``[B, K, 1, card]``, the same logits as ``forward_tokens(tokens, vis, cache)`` at that position.
        """
        assert tokens.shape[1:] == (self.cfg.n_codebooks, 1), f"tokens must be [B, K, 1], got {tuple(tokens.shape)}"
        assert not self.training, "decode_step is for inference (eval mode)"
        x = self.fuse(tokens, vis, pos)
        rope = self.rope.index_select(0, pos)
        visible = torch.arange(cache.max_len, device=tokens.device)[None, :] <= pos  # [1, max_len]
        for i, layer in enumerate(self.layers):
            x = layer(x, rope, cache, i, pos, visible)
        x = self.norm(x)
        return torch.stack([head(x) for head in self.lm_heads], dim=1)

    def teacher_forcing_input(self, codes: torch.Tensor) -> torch.Tensor:
        """The original training input: the pattern for T frames built from ``codes[..., :-1]``.
        codes ``[B, K, T]`` -> ``[B, K, T + K]``."""
        return build_pattern(codes[..., :-1], self.cfg.special_token, n_frames=codes.shape[-1])

    def forward(self, codes: torch.Tensor, visual: torch.Tensor, null: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits: codes ``[B, K, T]``, visual features ``[B, N, 768]`` -> ``[B, K, T, card]``
        where ``[b, q, t]`` predicts ``codes[b, q, t]``.

        In training mode each sample's condition is dropped (replaced by the null condition) with probability
        ``cfg.cond_drop`` unless `null` ``[B]`` is given explicitly.
        """
        assert codes.dim() == 3 and codes.shape[1] == self.cfg.n_codebooks, f"codes must be [B, K, T]: {codes.shape}"
        assert visual.shape[0] == codes.shape[0], f"batch of codes {codes.shape} vs visual {visual.shape}"
        b, k, t = codes.shape
        if null is None and self.training and self.cfg.cond_drop > 0:
            null = torch.rand(b, device=codes.device) < self.cfg.cond_drop
        seq = self.teacher_forcing_input(codes)
        x = self.hidden(seq, self.embed_visual(visual, null))  # [B, T + K, D]
        # codebook q's code at frame t sits at pattern step t + q + 1, predicted from position t + q: head q on
        # positions q .. q + T - 1 only (no logits for the other K positions, no gather over [B, K, T, card])
        return torch.stack([head(x[:, q:q + t]) for q, head in enumerate(self.lm_heads)], dim=1)

    @staticmethod
    def loss(logits: torch.Tensor, codes: torch.Tensor) -> LossOutput:
        """Mean over codebooks of per-codebook cross-entropy (mean over ``B * T``).
        logits ``[B, K, T, card]``, codes ``[B, K, T]`` (every code in ``[0, card)``)."""
        assert logits.shape[:3] == codes.shape, f"logits {tuple(logits.shape)} vs codes {tuple(codes.shape)}"
        b, k, t, card = logits.shape
        # one cross-entropy over all codebooks, then the per-codebook means: slicing the logits per codebook
        # instead makes the backward pass write a zero-filled full-size [B, K, T, card] gradient for each of
        # the K slices (K x the memory traffic; half of a tiny model's CPU step)
        ce = F.cross_entropy(logits.float().reshape(-1, card), codes.reshape(-1), reduction="none")
        per = ce.view(b, k, t).mean(dim=(0, 2))
        return LossOutput(loss=per.mean(), per_codebook=per)


def build_model(cfg: VAuraConfig, debug_weights: bool = False, seed: int = 0,
                device: torch.device | str = "cpu") -> Transformer:
    """A fresh `Transformer`: the original init, or the seeded informative random init for debug weights."""
    model = Transformer(cfg)
    gen = torch.Generator().manual_seed(seed)
    if debug_weights:
        model.init_debug_weights(gen)
    else:
        model.init_weights(gen)
    return model.to(device)
