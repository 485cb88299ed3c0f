"""VGGish audio embedder and its log-mel front-end, as the FAD protocol of the V-AURA paper uses it.

The V-AURA evaluation computes FAD with ``frechet_audio_distance`` (VGGish backend, ``use_pca=False``,
``use_activation=False``), which runs the torchvggish port of Google's VGGish. This module is a clean
reimplementation of that path, in reading order:

1. ``mixdown``: multi-channel audio ``[C, N]`` becomes mono ``[N]`` by a float32 mean over channels.
2. ``resample_to_16k``: resampy's ``kaiser_best`` filter (``resampy.resample`` with its defaults), output
   length ``int(N * 16000 / sr)``. Audio already at 16 kHz is passed through untouched.
3. ``log_mel_spectrogram``: 25 ms frames (400 samples) every 10 ms (160), no padding, periodic Hann window,
   |rfft| with 512 points, a 257x64 HTK-mel matrix (125..7500 Hz, no area normalisation, DC row zero),
   ``ln(mel + 0.01)``; all float64.
4. ``log_mel_examples``: non-overlapping 96-frame (0.96 s) blocks, the incomplete tail dropped, cast to
   float32 ``[F, 1, 96, 64]`` (time is dim 2, mel is dim 3).
5. ``VGGish``: the VGG network; the final ReLU of the hub model is removed and no PCA is applied, so the
   output is the raw 128-d layer ``[F, 128]``.

Weights: ``vggish-10086976.pth`` (the torchvggish release file; registry name ``vggish``), loaded strictly.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from visualsound.errors import CheckpointError, ConfigError, ToolkitError
from visualsound.utils.checkpoint import load_state_dict_strict, safe_torch_load
from visualsound.utils.config import FrozenConfig, register_preset

log = logging.getLogger(__name__)

WEIGHTS_NAME = "vggish"
DEBUG_SEED = 0


class AudioTooShortError(ToolkitError, ValueError):
    """A waveform is too short to give a single 0.96 s VGGish example (needs 15,600 samples at 16 kHz)."""


@dataclasses.dataclass(frozen=True)
class VGGishConfig(FrozenConfig):
    """VGGish network widths and the (fixed-protocol) log-mel front-end parameters.

    ``channels`` are the six conv widths (pooling after convs 1, 2, 4 and 6), ``hidden`` the width of the two
    fully connected layers and ``embed_dim`` the output size. The front-end fields are the VGGish protocol;
    changing them gives a different metric.
    """

    channels: tuple[int, ...] = (64, 128, 256, 256, 512, 512)
    hidden: int = 4096
    embed_dim: int = 128
    sample_rate: int = 16000
    window_samples: int = 400  # 25 ms
    hop_samples: int = 160  # 10 ms
    fft_size: int = 512
    num_mels: int = 64
    fmin: float = 125.0
    fmax: float = 7500.0
    log_offset: float = 0.01
    example_frames: int = 96  # 0.96 s of 10 ms frames; examples do not overlap

    def __post_init__(self) -> None:
        if len(self.channels) != 6:
            raise ConfigError(f"VGGishConfig.channels needs 6 conv widths, got {self.channels}")
        if self.example_frames % 16 or self.num_mels % 16:
            raise ConfigError(f"example_frames ({self.example_frames}) and num_mels ({self.num_mels}) must be "
                             "multiples of 16 (four 2x2 poolings)")

    @property
    def flat_dim(self) -> int:
        """Size of the flattened conv output: ``channels[-1] * (frames / 16) * (mels / 16)`` (12288)."""
        return self.channels[-1] * (self.example_frames // 16) * (self.num_mels // 16)

    @property
    def num_bins(self) -> int:
        """rfft bins per frame (257)."""
        return self.fft_size // 2 + 1

    @property
    def min_samples(self) -> int:
        """Fewest 16 kHz samples that give one example: ``window + (96 - 1) * hop`` = 15,600 (0.975 s)."""
        return self.window_samples + (self.example_frames - 1) * self.hop_samples


register_preset(VGGishConfig, "paper", VGGishConfig())
register_preset(VGGishConfig, "tiny", VGGishConfig(channels=(4, 8, 8, 8, 16, 16), hidden=32))


# ------------------------------------------------------------------------------------------------ front-end
def mixdown(audio: np.ndarray) -> np.ndarray:
    """Mono float32 ``[N]`` from ``[N]`` or ``[C, N]`` (float32 mean over channels, as the package does)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        return audio
    assert audio.ndim == 2, f"audio must be [N] or [C, N], got {audio.shape}"
    if audio.shape[0] == 1:
        return audio[0]
    return np.mean(audio.T, axis=1)  # [N, C] -> [N], float32 like np.mean over soundfile's [N, C]


def resample_to_16k(wave: np.ndarray, sample_rate: int, target_rate: int = 16000) -> np.ndarray:
    """``resampy.resample(wave, sample_rate, 16000)`` with its defaults (kaiser_best); float32 ``[N']``.

    ``N' = int(N * 16000 / sample_rate)``; the input is returned unchanged when it is already at 16 kHz.
    """
    assert wave.ndim == 1 and wave.dtype == np.float32, f"want float32 [N], got {wave.dtype} {wave.shape}"
    if int(sample_rate) == target_rate:
        return wave
    import resampy

    return resampy.resample(wave, int(sample_rate), target_rate)


def periodic_hann(length: int) -> np.ndarray:
    """Periodic Hann window ``0.5 - 0.5 cos(2 pi n / L)``, float64 ``[L]``."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi / length * np.arange(length))


def hz_to_mel(freq_hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale ``1127 ln(1 + f / 700)``."""
    return 1127.0 * np.log(1.0 + np.asarray(freq_hz, dtype=np.float64) / 700.0)


def mel_filterbank(cfg: VGGishConfig) -> np.ndarray:
    """Triangular HTK-mel weights, float64 ``[num_bins, num_mels]`` (257x64), DC row zero, no normalisation.

    Bin ``k`` sits at ``k * (sr / 2) / (num_bins - 1)`` Hz; band ``i`` rises linearly in mel from edge ``i`` to
    edge ``i + 1`` and falls to edge ``i + 2`` (edges evenly spaced in mel from ``fmin`` to ``fmax``).
    """
    nyquist = cfg.sample_rate / 2.0
    if not 0.0 <= cfg.fmin < cfg.fmax <= nyquist:
        raise ConfigError(f"need 0 <= fmin < fmax <= {nyquist}, got fmin={cfg.fmin} fmax={cfg.fmax}")
    bins_mel = hz_to_mel(np.linspace(0.0, nyquist, cfg.num_bins))
    edges = np.linspace(hz_to_mel(cfg.fmin), hz_to_mel(cfg.fmax), cfg.num_mels + 2)
    weights = np.empty((cfg.num_bins, cfg.num_mels), dtype=np.float64)
    for i in range(cfg.num_mels):
        lower, center, upper = edges[i], edges[i + 1], edges[i + 2]
        rising = (bins_mel - lower) / (center - lower)
        falling = (upper - bins_mel) / (upper - center)
        weights[:, i] = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights


@functools.lru_cache(maxsize=4)
def _front_end_tables(cfg: VGGishConfig) -> tuple[np.ndarray, np.ndarray]:
    window, mel = periodic_hann(cfg.window_samples), mel_filterbank(cfg)
    window.flags.writeable = False
    mel.flags.writeable = False
    return window, mel


def num_stft_frames(num_samples: int, cfg: VGGishConfig) -> int:
    """Frames of the unpadded 25 ms / 10 ms framing: ``1 + (N - 400) // 160`` (0 when N < 400)."""
    if num_samples < cfg.window_samples:
        return 0
    return 1 + (num_samples - cfg.window_samples) // cfg.hop_samples


def num_examples(num_samples: int, cfg: VGGishConfig) -> int:
    """0.96 s examples that ``num_samples`` 16 kHz samples give (the incomplete tail is dropped)."""
    frames = num_stft_frames(num_samples, cfg)
    return 0 if frames < cfg.example_frames else frames // cfg.example_frames


def log_mel_spectrogram(wave_16k: np.ndarray, cfg: VGGishConfig) -> np.ndarray:
    """Float64 ``[T, num_mels]`` log-mel of a 16 kHz waveform ``[N]``, ``T = 1 + (N - 400) // 160``.

    The float32 samples are multiplied by the float64 window, so everything from the window on is float64.
    """
    assert wave_16k.ndim == 1, f"want a mono waveform [N], got {wave_16k.shape}"
    frames = num_stft_frames(wave_16k.shape[0], cfg)
    if frames == 0:
        raise AudioTooShortError(f"{wave_16k.shape[0]} samples at {cfg.sample_rate} Hz is shorter than one "
                                 f"{cfg.window_samples}-sample STFT frame")
    window, mel = _front_end_tables(cfg)
    framed = np.lib.stride_tricks.as_strided(
        wave_16k, shape=(frames, cfg.window_samples),
        strides=(wave_16k.strides[0] * cfg.hop_samples, wave_16k.strides[0]), writeable=False)
    magnitude = np.abs(np.fft.rfft(framed * window, n=cfg.fft_size))  # [T, num_bins] float64
    return np.log(magnitude @ mel + cfg.log_offset)


def log_mel_examples(wave_16k: np.ndarray, cfg: VGGishConfig) -> np.ndarray:
    """Model input float32 ``[F, 1, 96, num_mels]`` from a 16 kHz waveform ``[N]``: non-overlapping 0.96 s blocks.

    Raises `AudioTooShortError` when ``N`` gives no complete example (``N < cfg.min_samples``).
    """
    n_ex = num_examples(wave_16k.shape[0], cfg)
    if n_ex == 0:
        raise AudioTooShortError(
            f"{wave_16k.shape[0]} samples at {cfg.sample_rate} Hz ({wave_16k.shape[0] / cfg.sample_rate:.3f} s) "
            f"give no {cfg.example_frames}-frame VGGish example; at least {cfg.min_samples} samples "
            f"({cfg.min_samples / cfg.sample_rate:.3f} s) are needed")
    spec = log_mel_spectrogram(wave_16k, cfg)[: n_ex * cfg.example_frames]
    return spec.reshape(n_ex, 1, cfg.example_frames, cfg.num_mels).astype(np.float32)


# ------------------------------------------------------------------------------------------------ network
class VGGish(nn.Module):
    """VGGish without PCA and without the final ReLU: log-mel examples ``[F, 1, 96, 64]`` -> embeddings ``[F, 128]``.

    Parameter names match ``vggish-10086976.pth``: ``features.{0,3,6,8,11,13}`` convs and
    ``embeddings.{0,2,4}`` linears.
    """

    def __init__(self, cfg: VGGishConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.debug_weights = False  # set by `load_vggish(debug_weights=True)`; reported next to every FAD
        c = cfg.channels
        pool = functools.partial(nn.MaxPool2d, kernel_size=2, stride=2)
        conv = functools.partial(nn.Conv2d, kernel_size=3, padding=1)
        self.features = nn.Sequential(
            conv(1, c[0]), nn.ReLU(), pool(),                                    # 0-2
            conv(c[0], c[1]), nn.ReLU(), pool(),                                 # 3-5
            conv(c[1], c[2]), nn.ReLU(), conv(c[2], c[3]), nn.ReLU(), pool(),    # 6-10
            conv(c[3], c[4]), nn.ReLU(), conv(c[4], c[5]), nn.ReLU(), pool(),    # 11-15
        )
        self.embeddings = nn.Sequential(
            nn.Linear(cfg.flat_dim, cfg.hidden), nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.embed_dim),  # the hub model's trailing ReLU is removed (use_activation=False)
        )

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        """``[F, 1, 96, 64]`` float32 -> ``[F, embed_dim]``."""
        cfg = self.cfg
        assert examples.ndim == 4 and tuple(examples.shape[1:]) == (1, cfg.example_frames, cfg.num_mels), \
            f"want [F, 1, {cfg.example_frames}, {cfg.num_mels}] log-mel examples, got {tuple(examples.shape)}"
        x = self.features(examples)  # [F, C, 6, 4]
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # TF (NHWC) flatten order: channel fastest
        return self.embeddings(x)


def init_random_(model: VGGish, seed: int) -> VGGish:
    """Seeded random weights: ``randn * sqrt(2 / fan_in)`` for weights and ``randn * 0.05`` for biases."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            std = 0.05 if name.endswith("bias") else math.sqrt(2.0 / math.prod(p.shape[1:]))
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) * std)
    return model


def load_vggish(checkpoint: str | os.PathLike | None = None, debug_weights: bool = False,
                device: str | torch.device = "cpu") -> VGGish:
    """The VGGish embedder in eval mode on `device`.

    ``debug_weights=True``: a seeded random `tiny` model (no file needed; its FAD values mean nothing; giving a
    `checkpoint` too raises `ConfigError`).
    Otherwise ``checkpoint`` (default: the registry's cache path for ``vggish``, i.e. ``vggish-10086976.pth``;
    a missing file raises ``WeightsNotFoundError``) is read with `safe_torch_load` and loaded strictly; any
    missing, unexpected or mis-shaped key raises `CheckpointError`.

    The paper numbers are CPU numbers: on CUDA, PyTorch lets cuDNN use TF32 convolutions by default, which
    moves embeddings by roughly 1e-3 relative unless ``torch.backends.cudnn.allow_tf32 = False``.
    """
    if debug_weights:
        if checkpoint is not None:
            raise ConfigError(f"load_vggish: pass either a checkpoint ({checkpoint}) or debug_weights=True, not both")
        log.warning("VGGish with DEBUG WEIGHTS (seeded random tiny model): FAD values are meaningless")
        model = init_random_(VGGish(VGGishConfig.preset("tiny")), DEBUG_SEED)
        model.debug_weights = True
        return model.eval().to(device)
    from visualsound.weights import resolve  # raises WeightsNotFoundError naming the URL, path and checksum

    path = Path(resolve(WEIGHTS_NAME, checkpoint))
    state = safe_torch_load(path)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a VGGish state dict (a mapping of tensors); got {type(state).__name__}")
    with torch.device("meta"):
        model = VGGish(VGGishConfig.preset("paper"))
    load_state_dict_strict(model, {k: v.to(torch.float32) for k, v in state.items()}, what=str(path))
    log.info("loaded VGGish weights from %s", path)
    return model.eval().to(device)


@functools.lru_cache(maxsize=1)
def _default_model() -> VGGish:
    return load_vggish()


@torch.inference_mode()
def embed_examples(model: VGGish, examples: np.ndarray | torch.Tensor) -> np.ndarray:
    """Embeddings float32 ``[F, embed_dim]`` of log-mel examples ``[F, 1, 96, 64]`` (one forward pass)."""
    param = next(model.parameters())
    x = torch.as_tensor(examples, dtype=torch.float32).to(param.device)
    return model(x).float().cpu().numpy()


def vggish_embeddings(audio: np.ndarray | torch.Tensor, sample_rate: int, model: VGGish | None = None) -> np.ndarray:
    """Embeddings float32 ``[F, 128]`` of every 0.96 s frame of one clip.

    ``audio``: float32 ``[N]`` or ``[C, N]`` in [-1, 1] at ``sample_rate``; it is mixed down, resampled to
    16 kHz with resampy ``kaiser_best`` and cut into ``F = floor((1 + (N16 - 400) // 160) / 96)`` examples.
    ``model`` defaults to `load_vggish()` (registry weights, loaded once). Raises `AudioTooShortError` when
    the clip is shorter than 0.975 s.
    """
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    model = _default_model() if model is None else model
    wave = resample_to_16k(mixdown(audio), sample_rate, model.cfg.sample_rate)
    return embed_examples(model, log_mel_examples(wave, model.cfg))
