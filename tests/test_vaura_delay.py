"""The delay pattern's build / revert against a plain-loop reference."""

from __future__ import annotations

import pytest
import torch

from vaura.delay import build_pattern, revert_pattern

S = 1024


def loop_build(codes: torch.Tensor, special: int, n_frames: int) -> torch.Tensor:
    b, k, t_have = codes.shape
    seq = torch.full((b, k, n_frames + k), special, dtype=codes.dtype)
    for bi in range(b):
        for q in range(k):
            for s in range(n_frames + k):
                t = s - 1 - q
                if 0 <= t < t_have:
                    seq[bi, q, s] = codes[bi, q, t]
    return seq


@pytest.mark.parametrize("k", [1, 4, 9])
@pytest.mark.parametrize("t", [0, 1, 3, 17, 221])
def test_build_and_revert_match_loop(k: int, t: int, rng: torch.Generator) -> None:
    codes = torch.randint(0, S, (2, k, t), generator=rng)
    seq = build_pattern(codes, S)
    assert seq.shape == (2, k, t + k)
    assert torch.equal(seq, loop_build(codes, S, t))
    assert torch.equal(revert_pattern(seq), codes)


@pytest.mark.parametrize("k", [1, 4, 9])
def test_teacher_forcing_drops_last_frame(k: int, rng: torch.Generator) -> None:
    codes = torch.randint(0, S, (1, k, 12), generator=rng)
    seq = build_pattern(codes[..., :-1], S, n_frames=12)
    assert torch.equal(seq, loop_build(codes[..., :-1], S, 12))
    # every cell of frame 11 is special
    for q in range(k):
        assert seq[0, q, 11 + q + 1] == S


def test_worked_example() -> None:
    codes = torch.tensor([[[0, 1, 2, 3], [10, 11, 12, 13], [20, 21, 22, 23]]])
    expect = torch.tensor([[[S, 0, 1, 2, 3, S, S], [S, S, 10, 11, 12, 13, S], [S, S, S, 20, 21, 22, 23]]])
    assert torch.equal(build_pattern(codes, S), expect)
    tf = build_pattern(codes[..., :-1], S, n_frames=4)
    assert torch.equal(tf, torch.tensor([[[S, 0, 1, 2, S, S, S], [S, S, 10, 11, 12, S, S],
                                          [S, S, S, 20, 21, 22, S]]]))


def test_revert_carries_vocab_axis(rng: torch.Generator) -> None:
    seq = torch.randn(2, 3, 9, 5, generator=rng)
    out = revert_pattern(seq)
    assert out.shape == (2, 3, 6, 5)
    assert torch.equal(out[1, 2, 4], seq[1, 2, 4 + 2 + 1])
