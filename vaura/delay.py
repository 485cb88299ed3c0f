"""The delayed codebook pattern (AudioCraft ``DelayedPatternProvider`` with delays 0..K-1) as pure functions.

Step 0 is all special; step ``s`` holds frame ``t = s - 1 - q`` of codebook ``q`` when ``0 <= t < T`` and the
special token otherwise; the sequence has ``T + K`` steps (= 1 + T + max delay K-1)::

    codes [K=3, T=4]       pattern [3, 7]
    a0 a1 a2 a3            S  a0 a1 a2 a3 S  S
    b0 b1 b2 b3    -->     S  S  b0 b1 b2 b3 S
    c0 c1 c2 c3            S  S  S  c0 c1 c2 c3

`revert_pattern` maps back with ``codes[q, t] = seq[q, t + q + 1]``.
"""

from __future__ import annotations

import torch


def pattern_index(n_codebooks: int, n_frames: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor,
                                                                                                 torch.Tensor]:
    """Frame index and validity of every pattern cell.

    Returns ``(frame [K, T+K] int64, valid [K, T+K] bool)``: cell ``(q, s)`` holds frame ``s - 1 - q`` if valid.
    """
    steps = torch.arange(n_frames + n_codebooks, device=device)
    q = torch.arange(n_codebooks, device=device)
    frame = steps[None, :] - 1 - q[:, None]
    valid = (frame >= 0) & (frame < n_frames)
    return frame, valid


def build_pattern(codes: torch.Tensor, special: int, n_frames: int | None = None) -> torch.Tensor:
    """Interleave `codes` into the delayed pattern.

    codes: ``[B, K, T']`` with ``T' <= T``; the pattern is built for ``T = n_frames`` (default ``T'``) frames and
    cells whose frame is ``>= T'`` are `special` too (the original's teacher forcing builds the pattern for 221
    frames from ``codes[..., :-1]``). Returns ``[B, K, T + K]``.
    """
    assert codes.dim() == 3, f"codes must be [B, K, T], got {tuple(codes.shape)}"
    b, k, t_have = codes.shape
    t = t_have if n_frames is None else n_frames
    assert t_have <= t, f"codes have {t_have} frames but the pattern is for {t}"
    frame, valid = pattern_index(k, t, codes.device)
    valid = valid & (frame < t_have)
    seq = torch.full((b, k, t + k), special, dtype=codes.dtype, device=codes.device)
    idx = frame.clamp(0, max(t_have - 1, 0)).expand(b, k, t + k)
    if t_have > 0:
        gathered = torch.gather(codes, 2, idx)
        seq = torch.where(valid.expand(b, k, t + k), gathered, seq)
    return seq


def revert_pattern(seq: torch.Tensor) -> torch.Tensor:
    """Inverse of `build_pattern`: ``[B, K, T + K] -> [B, K, T]`` with ``codes[q, t] = seq[q, t + q + 1]``.

    Also works on logits ``[B, K, T + K, V]`` (the vocabulary axis is carried along).
    """
    assert seq.dim() in (3, 4), f"pattern must be [B, K, S] or [B, K, S, V], got {tuple(seq.shape)}"
    b, k, s = seq.shape[:3]
    t = s - k
    assert t >= 0, f"pattern of {s} steps is shorter than K={k}"
    idx = (torch.arange(t, device=seq.device)[None, :] + 1 + torch.arange(k, device=seq.device)[:, None])
    if seq.dim() == 3:
        return torch.gather(seq, 2, idx.expand(b, k, t))
    v = seq.shape[3]
    return torch.gather(seq, 2, idx[None, :, :, None].expand(b, k, t, v))
