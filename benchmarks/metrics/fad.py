"""Fréchet Audio Distance with VGGish, computed as the paper's evaluation computes it.

V-AURA reports ``frechet_audio_distance.FrechetAudioDistance(model_name="vggish", sample_rate=16000,
use_pca=False, use_activation=False).score(ground_truth_dir, generated_dir)``. This module reproduces it:

* every file is decoded the way libsndfile's ``soundfile.read(dtype="float32")`` does (integer PCM sample
  ``k`` becomes ``k / 2**(bits-1)`` in float32) -- here with PyAV -- mixed down by a float32 mean,
  resampled to 16 kHz with resampy ``kaiser_best`` and embedded with `benchmarks.metrics.vggish`;
* the embeddings of **all 0.96 s frames of all clips** of a set are pooled (longer clips weigh more);
  ``mu`` is the float32 mean, ``sigma`` the float64 ``np.cov`` (ddof 1);
* `frechet_distance` is the pytorch-fid formula with ``scipy.linalg.sqrtm`` on the complex product,
  including the package's ``1e-6`` diagonal retry for a non-finite square root and its rule of dropping an
  imaginary part whose diagonal stays within 1e-3. The result is not clipped at 0 (rank-deficient
  covariances leave a numerical floor of about 1e-4).

Where the package silently drops files (clips under 0.975 s, and every file after them) or returns -1, this
module raises: `ClipsTooShortError` names every short clip, `FrechetDistanceError` explains the rest.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.metrics.vggish import (
    VGGish,
    embed_examples,
    load_vggish,
    log_mel_examples,
    mixdown,
    num_examples,
    resample_to_16k,
)
from visualsound.errors import ToolkitError

log = logging.getLogger(__name__)

SQRTM_EPS = 1e-6
IMAG_ATOL = 1e-3


class FADError(ToolkitError):
    """FAD cannot be computed for these inputs."""


class ClipsTooShortError(FADError, ValueError):
    """Clips shorter than one 0.96 s VGGish example (0.975 s at 16 kHz); ``clip_ids`` lists all of them."""

    def __init__(self, short: Sequence[tuple[str, str]]) -> None:
        self.clip_ids = [clip for clip, _ in short]
        details = [detail for _, detail in short]
        super().__init__(f"{len(self.clip_ids)} clips are too short for VGGish (need >= 0.975 s at 16 kHz, "
                         f"i.e. one 0.96 s example); the original package would silently drop them and every "
                         f"later file: {', '.join(details)}")


class AudioDecodeError(FADError):
    """An audio file cannot be opened or decoded."""


class FrechetDistanceError(FADError, ValueError):
    """The Fréchet distance is undefined: too few frames, mismatched shapes, non-finite or complex results."""


# ------------------------------------------------------------------------------------------------ decoding
def read_audio_soundfile_style(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of `path` to float32 ``[C, N]`` and its sample rate, with PyAV.

    Every decoded frame is appended as is (no timestamp placement, no padding trim), as libsndfile reads a file
    (`visualsound.media.audio.decode_audio_stream`). Values equal ``soundfile.read(path, dtype="float32")`` for
    PCM WAV/FLAC: a 16-bit sample ``k`` becomes exactly ``k / 32768`` (24-bit PCM arrives left-aligned in s32, so
    it is ``k24 / 2**23``). Other codecs decode with FFmpeg (libsndfile may differ for lossy formats).
    Raises `AudioDecodeError` for a missing, unreadable or audio-less file.
    """
    from visualsound.media import MediaError
    from visualsound.media.audio import decode_audio_stream

    path = Path(path)
    if not path.is_file():
        raise AudioDecodeError(f"{path}: no such file")
    try:
        return decode_audio_stream(path)
    except MediaError as e:
        raise AudioDecodeError(f"cannot read audio: {e}") from e


def load_wave_16k(path: str | os.PathLike) -> np.ndarray:
    """Decode, mix down and resample one file to the mono 16 kHz float32 waveform ``[N16]`` VGGish reads."""
    audio, sample_rate = read_audio_soundfile_style(path)
    return resample_to_16k(mixdown(audio), sample_rate)


# ------------------------------------------------------------------------------------------------ math
def set_statistics(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of pooled embeddings ``[N, D]``: float32 mean ``[D]`` and float64 covariance ``[D, D]``."""
    emb = np.asarray(embeddings)
    if emb.ndim != 2:
        raise FrechetDistanceError(f"embeddings must be [N, D], got shape {emb.shape}")
    if emb.shape[0] < 2:
        raise FrechetDistanceError(f"a covariance needs at least 2 frames, got {emb.shape[0]}")
    if not np.isfinite(emb).all():
        raise FrechetDistanceError(f"{int((~np.isfinite(emb)).sum())} non-finite embedding values")
    if emb.shape[0] <= emb.shape[1]:
        log.warning("only %d frames for %d dimensions: the covariance is singular and FAD has a numerical "
                    "floor of about 1e-4", emb.shape[0], emb.shape[1])
    return np.mean(emb, axis=0), np.cov(emb, rowvar=False)


def _scipy_sqrtm(matrix: np.ndarray) -> np.ndarray:
    """``scipy.linalg.sqrtm(matrix, disp=False)[0]`` on every scipy version (``disp`` goes away in 1.18)."""
    import scipy
    import scipy.linalg

    major, minor = (int(p) for p in scipy.__version__.split(".")[:2])
    if (major, minor) >= (1, 16):
        return np.asarray(scipy.linalg.sqrtm(matrix))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return np.asarray(scipy.linalg.sqrtm(matrix, disp=False)[0])


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 sigma2))`` for ``mu [D]``, ``sigma [D, D]``.

    As the package computes it: the square root is scipy's on the complex128 product; if it is not finite,
    ``1e-6 I`` is added to both covariances and it is recomputed; an imaginary part is dropped when every
    diagonal entry is within 1e-3 of real, otherwise `FrechetDistanceError` is raised. Not clipped at 0.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise FrechetDistanceError(f"mean vectors must both be [D]; got {mu1.shape} and {mu2.shape}")
    dim = mu1.shape[0]
    if sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise FrechetDistanceError(f"covariances must be [{dim}, {dim}]; got {sigma1.shape} and {sigma2.shape}")
    for name, x in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.isfinite(x).all():
            raise FrechetDistanceError(f"{name} has non-finite values")
    diff = mu1 - mu2
    covmean = _scipy_sqrtm(sigma1.dot(sigma2).astype(complex))
    if not np.isfinite(covmean).all():
        log.warning("FAD: singular covariance product; adding %g to the diagonal of both covariances", SQRTM_EPS)
        offset = np.eye(dim) * SQRTM_EPS
        covmean = _scipy_sqrtm((sigma1 + offset).dot(sigma2 + offset).astype(complex))
        if not np.isfinite(covmean).all():
            raise FrechetDistanceError("sqrtm(sigma1 sigma2) is not finite even with 1e-6 added to the diagonals")
    if np.iscomplexobj(covmean):
        imag_diag = np.abs(np.diagonal(covmean).imag)
        if imag_diag.max() > IMAG_ATOL:
            raise FrechetDistanceError(f"sqrtm(sigma1 sigma2) has an imaginary diagonal component up to "
                                       f"{imag_diag.max():.3g} (> {IMAG_ATOL}); the covariances are not valid")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _pool(embeddings: np.ndarray | Sequence[np.ndarray], what: str) -> np.ndarray:
    if isinstance(embeddings, np.ndarray):
        pooled = embeddings
    else:
        if len(embeddings) == 0:
            raise FrechetDistanceError(f"the {what} set has no clips")
        pooled = np.concatenate([np.asarray(e) for e in embeddings], axis=0)
    return pooled


def fad_from_embeddings(reference: np.ndarray | Sequence[np.ndarray],
                        generated: np.ndarray | Sequence[np.ndarray]) -> float:
    """FAD between two sets of embeddings: each a pooled ``[N, D]`` array or a list of per-clip ``[F_i, D]``.

    All frames of all clips are pooled (``np.concatenate``), so a longer clip weighs more.
    """
    ref, gen = _pool(reference, "reference"), _pool(generated, "generated")
    if ref.ndim != 2 or gen.ndim != 2 or ref.shape[1] != gen.shape[1]:
        raise FrechetDistanceError(f"embedding sets must be [N, D] with the same D; got {ref.shape} and {gen.shape}")
    mu_r, sigma_r = set_statistics(ref)
    mu_g, sigma_g = set_statistics(gen)
    return frechet_distance(mu_r, sigma_r, mu_g, sigma_g)


# ------------------------------------------------------------------------------------------------ files
def clip_id(path: str | os.PathLike) -> str:
    """The id reported for a file: its name without the extension."""
    return Path(path).stem


def _embed_checked(paths: Sequence[str | os.PathLike], model: VGGish, short: list[tuple[str, str]],
                   what: str = "") -> list[np.ndarray]:
    """Embed `paths` in order; append ``(clip id, detail)`` of each too-short clip to `short` (no model runs
    once `short` is non-empty, since the caller will raise). `what` names the set in the details."""
    out: list[np.ndarray] = []
    for i, path in enumerate(paths):
        wave = load_wave_16k(path)
        if num_examples(wave.shape[0], model.cfg) == 0:
            seconds = wave.shape[0] / model.cfg.sample_rate
            short.append((clip_id(path), f"{what}{clip_id(path)} ({path}: {seconds:.3f} s at 16 kHz)"))
        elif not short:
            out.append(embed_examples(model, log_mel_examples(wave, model.cfg)))
        if (i + 1) % 100 == 0:
            log.info("VGGish: %d / %d files", i + 1, len(paths))
    return out


def embed_files(paths: Sequence[str | os.PathLike], model: VGGish) -> list[np.ndarray]:
    """Per-clip VGGish embeddings ``[F_i, 128]`` of audio files, in order.

    Every file is checked; if any is shorter than one example, `ClipsTooShortError` names all such clips.
    """
    short: list[tuple[str, str]] = []
    out = _embed_checked(paths, model, short)
    if short:
        raise ClipsTooShortError(short)
    return out


@dataclasses.dataclass(frozen=True)
class FADResult:
    """One FAD value with the sizes of the two pooled sets; ``debug_weights`` marks a random tiny model."""

    fad: float
    num_reference_clips: int
    num_generated_clips: int
    num_reference_frames: int
    num_generated_frames: int
    debug_weights: bool

    def to_dict(self) -> dict:
        """Every field as a JSON-ready dict."""
        return dataclasses.asdict(self)


def fad_from_files(reference_paths: Sequence[str | os.PathLike], generated_paths: Sequence[str | os.PathLike],
                   model: VGGish | None = None) -> FADResult:
    """FAD between ground-truth (reference) audio files and generated ones, end to end as the paper's package.

    ``model`` defaults to `load_vggish()` (registry weights). Raises `ClipsTooShortError` naming every clip
    under 0.975 s of either set, `FrechetDistanceError` for sets with fewer than 2 frames.
    """
    if not reference_paths or not generated_paths:
        raise FADError(f"FAD needs files in both sets; got {len(reference_paths)} reference and "
                       f"{len(generated_paths)} generated")
    model = load_vggish() if model is None else model
    short: list[tuple[str, str]] = []
    ref = _embed_checked(reference_paths, model, short, "reference clip ")
    gen = _embed_checked(generated_paths, model, short, "generated clip ")
    if short:
        raise ClipsTooShortError(short)
    return FADResult(
        fad=fad_from_embeddings(ref, gen),
        num_reference_clips=len(ref), num_generated_clips=len(gen),
        num_reference_frames=sum(e.shape[0] for e in ref), num_generated_frames=sum(e.shape[0] for e in gen),
        debug_weights=model.debug_weights)


def list_audio_dir(directory: str | os.PathLike) -> list[Path]:
    """Every regular, non-hidden file of `directory`, sorted by name (the package takes all entries, unsorted)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FADError(f"{directory} is not a directory")
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise FADError(f"{directory} has no files")
    return files


def fad_from_dirs(reference_dir: str | os.PathLike, generated_dir: str | os.PathLike,
                  model: VGGish | None = None) -> FADResult:
    """`fad_from_files` over all files of two directories (ground truth first), like the package's ``score``."""
    return fad_from_files(list_audio_dir(reference_dir), list_audio_dir(generated_dir), model)
