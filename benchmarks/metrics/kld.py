"""KLD metric of the V-AURA paper: KL(ground truth || generated) between PaSST AudioSet class distributions.

Protocol (GMELab @ d8b53b1 ``calculate_kld`` with ``KLDCfg(duration=2.56)`` and hear21passt 0.0.18):

1. read each file as float32 ``int16 / 32768`` ``[C, N]`` at its own rate; cut the GT at ``int(start_sec * sr)``
   (metadata, default 0; generated clips are never offset);
2. zero-pad or truncate each clip to ``int(2.56 * sr)`` samples at its own rate; average the channels;
3. ``crop="vaura-paper"`` (default, the original's quirk): truncate **both** clips to the generated clip's sample
   count, which is measured at the *generated* rate -- a 48 kHz GT next to a 44.1 kHz generated clip keeps only
   2.352 s. ``crop="corrected"`` skips this step, so each clip keeps 2.56 s at its own rate;
4. julius-resample to 32 kHz, run PaSST on the window at its own length, softmax over 527 classes;
5. ``KL_i = sum_c p_gt[c] * (log p_gt[c] - log(p_gen[c] + 1e-6))``; the metric is the mean over pairs.

Pairs are given explicitly as ``(id, gt_path, gen_path)``; nothing is matched by file name here.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from benchmarks.metrics.passt import PasstTagger, load_passt, passt_probs_batch, to_passt_input
from visualsound.errors import ConfigError, ToolkitError
from visualsound.media.formats import is_video_path
from visualsound.utils.config import FrozenConfig, register_preset

log = logging.getLogger(__name__)

CROP_MODES = ("vaura-paper", "corrected")


class KLDInputError(ToolkitError, ValueError):
    """Bad KLD input: unreadable or missing audio, duplicate pair ids, mismatched probability tables."""


@dataclass(frozen=True)
class KLDConfig(FrozenConfig):
    """KLD protocol settings; the ``paper`` preset is GMELab's ``KLDCfg`` as used for V-AURA.

    ``duration``: window length in seconds (at most PaSST's 10 s). ``crop``: ``"vaura-paper"`` (the original's
    GT-to-generated sample-count cut) or ``"corrected"``. ``eps``: added to the generated probabilities inside
    the log. ``video_audio_rate``: audio of video files (.mp4 ...) is first converted to 16-bit at this rate, as
    GMELab's ffmpeg extraction does (24 kHz); ``None`` reads it at its own rate. Wav files are always read as is.
    """

    duration: float = 2.56
    crop: str = "vaura-paper"
    eps: float = 1e-6
    video_audio_rate: int | None = 24000

    def __post_init__(self) -> None:
        if self.crop not in CROP_MODES:
            raise ConfigError(f"KLDConfig: unknown crop mode {self.crop!r}; choose one of {CROP_MODES}")
        if not 0 < self.duration <= 10.0:
            raise ConfigError(f"KLDConfig: duration must be in (0, 10] s (one PaSST window), got {self.duration}")


register_preset(KLDConfig, "paper", KLDConfig())
register_preset(KLDConfig, "corrected", KLDConfig(crop="corrected", video_audio_rate=None))


# --------------------------------------------------------------------------------------------------
# Pure math
# --------------------------------------------------------------------------------------------------
def _check_tables(p_gt: torch.Tensor, p_gen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    p_gt, p_gen = torch.as_tensor(p_gt), torch.as_tensor(p_gen)
    p_gt = p_gt[None] if p_gt.dim() == 1 else p_gt
    p_gen = p_gen[None] if p_gen.dim() == 1 else p_gen
    if p_gt.shape != p_gen.shape or p_gt.dim() != 2 or p_gt.shape[0] == 0:
        raise KLDInputError(f"expected two [N, C] probability tables of one shape, got {tuple(p_gt.shape)} and "
                            f"{tuple(p_gen.shape)}")
    return p_gt.float(), p_gen.float()


def kl_per_pair(p_gt: torch.Tensor, p_gen: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``KL(p_gt || p_gen)`` per row ``[N]`` from probabilities ``[N, C]`` (float32).

    ``sum_c p_gt * (log p_gt - log(p_gen + eps))``; the epsilon sits on the generated side only and classes
    with ``p_gt == 0`` contribute 0.
    """
    p_gt, p_gen = _check_tables(p_gt, p_gen)
    return (torch.xlogy(p_gt, p_gt) - p_gt * torch.log(p_gen + eps)).sum(dim=-1)


def kl_divergence(p_gt: torch.Tensor, p_gen: torch.Tensor, eps: float = 1e-6) -> float:
    """Mean over pairs of `kl_per_pair` (the KLD metric): float32 sum over rows, divided by ``N``."""
    per_pair = kl_per_pair(p_gt, p_gen, eps)
    return float(per_pair.sum()) / per_pair.shape[0]


# --------------------------------------------------------------------------------------------------
# Audio reading and cropping
# --------------------------------------------------------------------------------------------------
def read_audio_file(path: str | os.PathLike, resample_to: int | None = None) -> tuple[torch.Tensor, int]:
    """Decode the first audio stream -> (float32 ``[C, N]``, sample rate), ``int16 / 32768`` for 16-bit PCM
    (what ``torchaudio.load`` returns; `visualsound.media.audio.decode_audio_stream` appends every decoded frame
    as is). `resample_to` converts with libswresample to 16-bit at that rate first, as ``ffmpeg -ar <rate>``
    extraction to wav does. Raises `KLDInputError` for a missing, unreadable or audio-less file."""
    from visualsound.media import MediaError
    from visualsound.media.audio import decode_audio_stream

    path = Path(path)
    if not path.is_file():
        raise KLDInputError(f"audio file not found: {path}")
    try:
        audio, rate = decode_audio_stream(path, resample_s16_to=resample_to)
    except MediaError as e:
        raise KLDInputError(f"cannot read audio: {e}") from e
    return torch.from_numpy(audio), rate


def fit_length(audio: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Zero-pad at the end or truncate ``[C, N]`` to ``[C, num_samples]``."""
    if audio.shape[-1] >= num_samples:
        return audio[..., :num_samples]
    return torch.nn.functional.pad(audio, (0, num_samples - audio.shape[-1]))


def prepare_pair(gt: torch.Tensor, gt_sr: int, gen: torch.Tensor, gen_sr: int, start_sec: float = 0.0,
                 config: KLDConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """GT and generated float32 ``[C, N]`` -> the two mono 32 kHz waveforms PaSST scores ``([T_gt], [T_gen])``.

    Applies the GT start offset, the ``int(duration * sr)`` pad/truncate, the channel average and, with
    ``crop="vaura-paper"``, the original's cut of both clips to the generated clip's sample count.
    """
    cfg = config or KLDConfig()
    assert gt.dim() == 2 and gen.dim() == 2, f"expected [C, N] audio, got {tuple(gt.shape)} / {tuple(gen.shape)}"
    gt = gt[:, int(start_sec * gt_sr):]
    gt = fit_length(gt, int(cfg.duration * gt_sr)).mean(dim=0)
    gen = fit_length(gen, int(cfg.duration * gen_sr)).mean(dim=0)
    if cfg.crop == "vaura-paper":
        size = gen.shape[-1]  # samples at the *generated* rate, applied to both clips
        if gt_sr != gen_sr:
            log.debug("vaura-paper crop: GT at %d Hz cut to %d samples (%.3f s)", gt_sr, size, size / gt_sr)
        gt, gen = gt[..., :size], gen[..., :size]
    return to_passt_input(gt, gt_sr), to_passt_input(gen, gen_sr)


def load_start_secs(csv_path: str | os.PathLike) -> dict[str, float]:
    """Metadata CSV with columns ``file,start_sec`` -> ``{file stem: start_sec}`` (GMELab's GT offsets)."""
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"file", "start_sec"} <= set(reader.fieldnames):
            raise KLDInputError(f"{csv_path}: expected columns file,start_sec, got {reader.fieldnames}")
        return {Path(row["file"]).stem: float(row["start_sec"]) for row in reader}


# --------------------------------------------------------------------------------------------------
# File-level pipeline
# --------------------------------------------------------------------------------------------------
@dataclass
class KLDResult:
    """Outcome of `compute_kld`: ``kld`` (= ``kld_pq``, KL(GT || gen) mean) is the reported metric."""

    kld: float
    kld_qp: float
    pair_ids: list[str]
    kl_gt_gen: list[float]
    kl_gen_gt: list[float]
    config: KLDConfig
    debug_weights: bool = False
    probs: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def kld_pq(self) -> float:
        """KL(GT || generated), the reported metric (= ``kld``)."""
        return self.kld

    @property
    def kld_both(self) -> float:
        """Symmetric sum ``kld_pq + kld_qp``."""
        return self.kld + self.kld_qp

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no probability tables)."""
        return {"metric": "kld_passt", "kld": self.kld, "kld_pq": self.kld_pq, "kld_qp": self.kld_qp,
                "kld_both": self.kld_both, "num_pairs": len(self.pair_ids), "pair_order": list(self.pair_ids),
                "per_pair": {i: {"kl_gt_gen": a, "kl_gen_gt": b}
                             for i, a, b in zip(self.pair_ids, self.kl_gt_gen, self.kl_gen_gt)},
                "config": self.config.to_dict(), "debug_weights": self.debug_weights}


def read_kld_clip(path: str | os.PathLike, cfg: KLDConfig) -> tuple[torch.Tensor, int]:
    """One KLD input file -> (float32 ``[C, N]``, rate); video files go through the 24 kHz extraction rule."""
    video = is_video_path(path)
    return read_audio_file(path, resample_to=cfg.video_audio_rate if video else None)


def compute_kld(pairs: Sequence[tuple[str, str | os.PathLike, str | os.PathLike]], model: PasstTagger | None = None,
                config: KLDConfig | str | None = None, start_secs: Mapping[str, float] | None = None,
                checkpoint: str | os.PathLike | None = None, debug_weights: bool = False,
                device: str | torch.device = "cpu", batch_size: int = 1, keep_probs: bool = False,
                progress: bool = False) -> KLDResult:
    """KLD over explicit ``(id, gt_path, gen_path)`` pairs, in the given order.

    `model` defaults to ``load_passt(checkpoint, debug_weights, device)``. `start_secs` maps a pair id to the GT
    start offset in seconds (missing ids start at 0). Each clip must give exactly one PaSST chunk (``duration``
    at most 10 s). `batch_size` pairs are read and scored together (1 = the original's one clip per forward).
    With `keep_probs` the result holds the ``[2, 527]`` (gt, gen) probabilities per id.
    """
    cfg = KLDConfig.resolve(config) if isinstance(config, str) else (config or KLDConfig())
    if not pairs:
        raise KLDInputError("no pairs to score")
    ids = [str(p[0]) for p in pairs]
    dupes = sorted(i for i, n in Counter(ids).items() if n > 1)  # (ids.count per id was quadratic)
    if dupes:
        raise KLDInputError(f"duplicate pair ids: {dupes[:10]}")
    if model is None:
        model = load_passt(checkpoint, debug_weights=debug_weights, device=device)
    starts = dict(start_secs or {})
    p_gt_rows, p_gen_rows = [], []
    bar = tqdm(total=len(pairs), desc="KLD (PaSST)", unit="pair", disable=not progress)
    for first in range(0, len(pairs), max(1, batch_size)):
        group = pairs[first:first + max(1, batch_size)]
        wavs: list[torch.Tensor] = []
        for pair_id, gt_path, gen_path in group:
            gt, gt_sr = read_kld_clip(Path(gt_path), cfg)
            gen, gen_sr = read_kld_clip(Path(gen_path), cfg)
            wavs.extend(prepare_pair(gt, gt_sr, gen, gen_sr, float(starts.get(str(pair_id), 0.0)), cfg))
        # wavs alternate gt, gen; each side is scored on its own so that its equal-length clips batch together
        p_gt_rows.extend(passt_probs_batch(model, wavs[0::2], batch_size))
        p_gen_rows.extend(passt_probs_batch(model, wavs[1::2], batch_size))
        bar.update(len(group))
    bar.close()
    p_gt, p_gen = torch.stack(p_gt_rows), torch.stack(p_gen_rows)
    pq = kl_per_pair(p_gt, p_gen, cfg.eps)
    qp = kl_per_pair(p_gen, p_gt, cfg.eps)
    kept = {i: torch.stack([p_gt[n], p_gen[n]]) for n, i in enumerate(ids)} if keep_probs else {}
    debug = bool(getattr(model, "debug_weights", False))
    return KLDResult(kld=float(pq.sum()) / len(ids), kld_qp=float(qp.sum()) / len(ids), pair_ids=ids,
                     kl_gt_gen=pq.tolist(), kl_gen_gt=qp.tolist(), config=cfg, debug_weights=debug, probs=kept)
