"""The av-benchmark metric formulas, step for step as ``av_bench/metrics`` computes them (fixture README 2.6).

* `frechet_distance` (FD-PASST, FD-PANN, FD-VGG): pytorch-fid's formula on ``(generated, ground truth)`` rows:
  float32 means, float64 ``np.cov`` (ddof 1), ``scipy.linalg.sqrtm`` of the **real** product (no cast to
  complex, unlike `benchmarks.metrics.fad`), one retry with ``1e-6 I`` added to both covariances when the root is
  not finite, and the imaginary-diagonal check (> 1e-3): where the original then reports ``-1``, this raises
  `UndefinedMetricError` with the reason, and the driver records the metric as undefined.
* `kl_softmax` (KL-PANNS-softmax, KL-PASST-softmax): ``KL(GT || generated)`` of softmax distributions over the 527
  AudioSet logits, no epsilon, summed over pairs in float32 and divided by the pair count.
* `inception_score` (ISC-*): 10 splits after a ``RandomState(2020)`` shuffle, in float64; ``N < 10`` gives empty
  splits and the original's NaN, returned here as NaN with `is_undefined_reason` saying why.
* `ib_score` (IB-Score): mean float32 cosine of paired (video, audio) embeddings; not multiplied by 100.
* `desync_offsets` / `desync` (DeSync): the absolute offset (seconds, the float32 class grid) of the argmax class
  of each pair's first and last window, averaged in float64 over all windows.

Every function takes the rows in the order the driver gives; the driver reproduces the original's orders
(`benchmarks.protocols.avbench.pairing`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.metrics.fad import _scipy_sqrtm
from visualsound.errors import ToolkitError

log = logging.getLogger(__name__)

SQRTM_EPS = 1e-6
IMAG_ATOL = 1e-3
IS_SPLITS = 10
IS_SEED = 2020
SYNC_GRID_SEC = tuple(float(x) for x in np.linspace(-2, 2, 21))  # the float64 grid; stored as float32 upstream


class UndefinedMetricError(ToolkitError, ValueError):
    """The metric is undefined for these inputs (the original reports -1 or NaN); the message says why."""


def _rows(x: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise UndefinedMetricError(f"{what}: expected non-empty rows [N, D], got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise UndefinedMetricError(f"{what}: {int((~np.isfinite(arr)).sum())} non-finite values")
    return arr


def frechet_distance(generated: np.ndarray | torch.Tensor, ground_truth: np.ndarray | torch.Tensor) -> float:
    """``FD`` between generated rows ``[N1, D]`` and ground-truth rows ``[N2, D]`` (av-benchmark's
    ``compute_fd(pred, gt)``). Raises `UndefinedMetricError` where the original returns -1 or crashes."""
    pred, gt = _rows(generated, "FD generated"), _rows(ground_truth, "FD ground truth")
    if pred.shape[1] != gt.shape[1]:
        raise UndefinedMetricError(f"FD: feature sizes differ, generated {pred.shape}, ground truth {gt.shape}")
    if min(pred.shape[0], gt.shape[0]) < 2:
        raise UndefinedMetricError(f"FD needs at least 2 rows per set for a covariance; got {pred.shape[0]} "
                                   f"generated and {gt.shape[0]} ground-truth rows")
    mu1, sigma1 = np.mean(pred, axis=0), np.cov(pred, rowvar=False)
    mu2, sigma2 = np.mean(gt, axis=0), np.cov(gt, rowvar=False)
    diff = mu1 - mu2
    covmean = _scipy_sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        log.warning("FD: sqrtm of the covariance product is not finite; adding %g to both diagonals (as the "
                    "original does)", SQRTM_EPS)
        offset = np.eye(sigma1.shape[0]) * SQRTM_EPS
        covmean = _scipy_sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag)
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAG_ATOL):
            raise UndefinedMetricError(f"FD: sqrtm has an imaginary diagonal component up to {imag.max():.3g} "
                                       f"(> {IMAG_ATOL}); the original reports -1 for this metric")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _pair_tables(generated: torch.Tensor, ground_truth: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if generated.dim() != 2 or generated.shape != ground_truth.shape or generated.shape[0] == 0:
        raise UndefinedMetricError(f"{what}: expected paired logits [N, C] of equal shapes with N > 0; got "
                                   f"generated {tuple(generated.shape)}, ground truth {tuple(ground_truth.shape)}")
    return generated.float(), ground_truth.float()


def kl_per_pair(generated_logits: torch.Tensor, gt_logits: torch.Tensor) -> torch.Tensor:
    """``[N]`` float64: ``KL(softmax(gt) || softmax(generated))`` of each pair (for per-clip records)."""
    pred, gt = _pair_tables(generated_logits, gt_logits, "KL")
    lp, lg = F.log_softmax(pred.double(), dim=-1), F.log_softmax(gt.double(), dim=-1)
    return (lg.exp() * (lg - lp)).sum(-1)


def kl_softmax(generated_logits: torch.Tensor, gt_logits: torch.Tensor) -> float:
    """Mean over pairs of ``KL(softmax(gt) || softmax(generated))``: ``F.kl_div(log_softmax(pred),
    log_softmax(gt), reduction="sum", log_target=True) / N`` in float32, as the original."""
    pred, gt = _pair_tables(generated_logits, gt_logits, "KL")
    total = F.kl_div(F.log_softmax(pred, dim=-1), F.log_softmax(gt, dim=-1), reduction="sum", log_target=True)
    return float(total / pred.shape[0])


def kl_sigmoid(generated_logits: torch.Tensor, gt_logits: torch.Tensor) -> float:
    """The original's unreported sigmoid variant, for details: ``F.kl_div(logsigmoid(pred), logsigmoid(gt),
    reduction="sum", log_target=True) / N`` in float32, as the original (``logsigmoid``, not ``sigmoid().log()``,
    which gives NaN where a logit is below about -104)."""
    pred, gt = _pair_tables(generated_logits, gt_logits, "KL")
    total = F.kl_div(F.logsigmoid(pred), F.logsigmoid(gt), reduction="sum", log_target=True)
    return float(total / pred.shape[0])


def is_undefined_reason(n: int, splits: int = IS_SPLITS) -> str:
    """Why the inception score is NaN (``n < splits``) or trivially 1.0 (``n == splits``); '' otherwise."""
    if n < splits:
        return (f"{n} generated clips < {splits} splits: the original's splits are empty and it reports NaN "
                f"(needs at least {splits + 1} clips to be informative)")
    if n == splits:
        return f"exactly {splits} generated clips: every split holds one clip, so the score is 1.0 by construction"
    return ""


def inception_score(logits: torch.Tensor | np.ndarray, splits: int = IS_SPLITS) -> tuple[float, float]:
    """``(mean, std)`` over `splits` of ``exp(mean_rows KL(p || mean p))`` after the ``RandomState(2020)``
    shuffle, float64 (av-benchmark's ``compute_isc``). NaN for fewer rows than splits, as the original."""
    x = logits.detach().cpu().numpy() if isinstance(logits, torch.Tensor) else np.asarray(logits)
    if x.ndim != 2:
        raise UndefinedMetricError(f"IS: expected logits [N, C], got shape {x.shape}")
    n = x.shape[0]
    x = x[np.random.RandomState(IS_SEED).permutation(n)].astype(np.float64)
    t = torch.from_numpy(x)
    p, log_p = F.softmax(t, dim=1).numpy(), F.log_softmax(t, dim=1).numpy()
    scores = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in range(splits):
            part, log_part = p[k * n // splits:(k + 1) * n // splits], log_p[k * n // splits:(k + 1) * n // splits]
            if part.shape[0] == 0:
                scores.append(np.nan)
                continue
            q = np.log(np.mean(part, axis=0, keepdims=True))
            scores.append(np.exp(np.mean(np.sum(part * (log_part - q), axis=1))))
    return float(np.mean(scores)), float(np.std(scores))


def ib_cosines(video_embs: torch.Tensor, audio_embs: torch.Tensor) -> torch.Tensor:
    """``[N]`` float32 cosine similarities of paired embeddings ``[N, E]``."""
    if video_embs.dim() != 2 or video_embs.shape != audio_embs.shape or video_embs.shape[0] == 0:
        raise UndefinedMetricError(f"IB: expected paired embeddings [N, E] with N > 0; got video "
                                   f"{tuple(video_embs.shape)}, audio {tuple(audio_embs.shape)}")
    return torch.cosine_similarity(video_embs.float(), audio_embs.float(), dim=-1)


def ib_score(video_embs: torch.Tensor, audio_embs: torch.Tensor) -> float:
    """Mean cosine (float32) of paired ImageBind embeddings: the original's IB-Score (not x100)."""
    return float(ib_cosines(video_embs, audio_embs).mean())


def sync_grid() -> torch.Tensor:
    """``[21]`` float32 offsets (s) of the Synchformer classes: ``torch.from_numpy(np.linspace(-2, 2, 21)).float()``."""
    return torch.tensor(SYNC_GRID_SEC, dtype=torch.float64).float()


def desync_offsets(window_logits: torch.Tensor) -> torch.Tensor:
    """Logits ``[N, W, 21]`` (W windows per pair) -> absolute offsets ``[N, W]`` (float32 seconds)."""
    if window_logits.dim() != 3 or window_logits.shape[-1] != len(SYNC_GRID_SEC) or window_logits.shape[0] == 0:
        raise UndefinedMetricError(f"DeSync: expected logits [N, W, {len(SYNC_GRID_SEC)}] with N > 0, got "
                                   f"{tuple(window_logits.shape)}")
    return sync_grid()[window_logits.argmax(-1).cpu()].abs()


def desync(abs_offsets: torch.Tensor | Sequence[float]) -> float:
    """Mean absolute offset (seconds) over every window of every pair: the float32 grid values averaged in
    float64 (the original's ``np.mean`` over a list of Python floats), so 1.8 counts as 1.79999995."""
    arr = np.asarray(abs_offsets.cpu().numpy() if isinstance(abs_offsets, torch.Tensor) else abs_offsets,
                     dtype=np.float32).astype(np.float64)
    if arr.size == 0:
        raise UndefinedMetricError("DeSync: no windows")
    return float(np.mean(arr))
