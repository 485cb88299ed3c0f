"""PANNs Cnn14 (``Cnn14_16k_mAP=0.438.pth``), the AudioSet tagger behind av-benchmark's FD/KL/IS-PANNs, top to bottom.

av-benchmark (hkchengrex/av-benchmark, MMAudio's evaluator) builds ``Cnn14(sample_rate=16000, window_size=512,
hop_size=160, mel_bins=64, fmin=50, fmax=8000, classes_num=527)`` and loads the release file's ``'model'`` state
dict strictly. One batch of 16 kHz waveforms goes through (eval mode, float32, dropout off):

    wave [B, N] --reflect-pad 256 each side (center=True)--> [B, 1, N + 512]
      --conv1d with the DFT kernels conv_real / conv_imag [257, 1, 512], stride 160--> re, im [B, 257, T]
      --re^2 + im^2, transposed--> power [B, T, 257] --@ melW [257, 64]--> mel [B, T, 64]
      --10 log10(max(mel, 1e-10))--> log-mel [B, T, 64]                       (T = 1 + N // 160)
      --bn0 over the 64 mel bins--> [B, 1, T, 64]
      --6 ConvBlocks: (conv3x3 no bias -> BN -> ReLU) x 2, avg-pool 2x2 (the last block pools 1x1)-->
        [B, 2048, T', 2] --mean over frequency--> [B, 2048, T'] --max over time + mean over time--> [B, 2048]
      --fc1, ReLU--> embedding '2048' [B, 2048] --fc_audioset--> logits [B, 527]  (sigmoid: clipwise_output)

T is 801 for 8 s and 501 for 5 s; T' = T // 32 (25 for 8 s). The front end (torchlibrosa 0.1.0's conv STFT and
``librosa.filters.mel``) is made of **parameters** stored in the checkpoint, so a loaded file's values win.
A freshly built `Cnn14` (and the debug weights) gets the values torchlibrosa computes, built here without
librosa: `stft_kernels` (periodic-Hann windowed DFT, the DFT matrix as powers of ``exp(-2 pi i / n_fft)`` in
complex128) and `slaney_mel_filterbank` (librosa's Slaney mel scale and area norm, with its float32 rounding of
the triangles before the norm). Both reproduce the fixture's ``panns_frontend.pt`` bit for bit.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.metrics.vggish import periodic_hann
from visualsound.errors import CheckpointError, ConfigError, ToolkitError
from visualsound.utils.checkpoint import KeyMap, load_state_dict_strict, safe_torch_load
from visualsound.utils.config import FrozenConfig, register_preset

log = logging.getLogger(__name__)

WEIGHTS_NAME = "panns_cnn14_16k"
DEBUG_SEED = 0


class PannsInputError(ToolkitError, ValueError):
    """A waveform Cnn14 cannot score (wrong shape or dtype, too short)."""


@dataclass(frozen=True)
class Cnn14Config(FrozenConfig):
    """Cnn14 front-end parameters and widths; ``paper`` is the 16 kHz AudioSet release.

    ``channels`` are the six ConvBlock widths, ``embed_dim`` the width of fc1 (the ``'2048'`` embedding). The
    front-end fields (rate, window, hop, mels, fmin/fmax, amin) are the protocol; changing them gives another
    metric.
    """

    sample_rate: int = 16000
    window_size: int = 512
    hop_size: int = 160
    mel_bins: int = 64
    fmin: float = 50.0
    fmax: float = 8000.0
    amin: float = 1e-10
    classes_num: int = 527
    channels: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    embed_dim: int = 2048

    def __post_init__(self) -> None:
        if len(self.channels) != 6 or min(self.channels) <= 0:
            raise ConfigError(f"Cnn14Config.channels needs 6 positive conv widths, got {self.channels}")
        if self.window_size % 2 or self.hop_size <= 0:
            raise ConfigError(f"Cnn14Config: window_size must be even and hop_size positive, got "
                              f"{self.window_size} / {self.hop_size}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ConfigError(f"Cnn14Config: need 0 <= fmin < fmax <= sample_rate / 2, got fmin={self.fmin}, "
                              f"fmax={self.fmax}, sample_rate={self.sample_rate}")
        if self.mel_bins < self.pool_factor:
            raise ConfigError(f"Cnn14Config: {self.mel_bins} mel bins do not survive {len(self.channels) - 1} "
                              f"2x2 poolings (need at least {self.pool_factor})")

    @property
    def freq_bins(self) -> int:
        """STFT bins per frame: ``window_size // 2 + 1`` (257)."""
        return self.window_size // 2 + 1

    @property
    def pool_factor(self) -> int:
        """Total pooling of the time and mel axes: ``2 ** 5`` (the last block pools 1x1)."""
        return 2 ** (len(self.channels) - 1)

    def num_frames(self, num_samples: int) -> int:
        """Log-mel frames of a waveform of `num_samples`: ``1 + N // hop`` (801 for 8 s at 16 kHz)."""
        return 1 + num_samples // self.hop_size

    @property
    def min_samples(self) -> int:
        """Fewest samples the network accepts: the frames must survive the poolings (4960, 0.31 s)."""
        return max((self.pool_factor - 1) * self.hop_size, self.window_size // 2 + 1)


register_preset(Cnn14Config, "paper", Cnn14Config())
register_preset(Cnn14Config, "tiny", Cnn14Config(channels=(8, 16, 16, 32, 32, 64), embed_dim=64))


# --------------------------------------------------------------------------------------------------
# Front-end constants (what torchlibrosa 0.1.0 builds with librosa; the checkpoint stores its own copy)
# --------------------------------------------------------------------------------------------------
def stft_kernels(n_fft: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windowed DFT kernels ``(real, imag)``, each float32 ``[n_fft // 2 + 1, 1, n_fft]``.

    ``kernel[k, 0, n] = w[n] exp(-2 pi i k n / n_fft)`` with the periodic Hann window ``w`` (window = n_fft);
    the DFT matrix is taken as integer powers of ``exp(-2 pi i / n_fft)`` in complex128 and then cast, which
    gives torchlibrosa's float32 values exactly.
    """
    n = np.arange(n_fft)
    dft = np.power(np.exp(-2j * np.pi / n_fft), n[:, None] * n[None, :])  # [n, k], complex128
    windowed = (dft[:, : n_fft // 2 + 1] * periodic_hann(n_fft)[:, None]).T  # [k, n]
    return (torch.from_numpy(np.ascontiguousarray(windowed.real, dtype=np.float32))[:, None, :],
            torch.from_numpy(np.ascontiguousarray(windowed.imag, dtype=np.float32))[:, None, :])


_SLANEY_F_SP = 200.0 / 3.0  # Hz per mel below 1 kHz
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP  # 15
_SLANEY_LOGSTEP = math.log(6.4) / 27.0


def slaney_hz_to_mel(freq_hz: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale (librosa's default, ``htk=False``): linear below 1 kHz, logarithmic above; float64."""
    f = np.asarray(freq_hz, dtype=np.float64)
    log_part = _SLANEY_MIN_LOG_MEL + np.log(np.maximum(f, _SLANEY_MIN_LOG_HZ) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP
    return np.where(f >= _SLANEY_MIN_LOG_HZ, log_part, f / _SLANEY_F_SP)


def slaney_mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of `slaney_hz_to_mel`; float64."""
    m = np.asarray(mel, dtype=np.float64)
    log_part = _SLANEY_MIN_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (np.maximum(m, _SLANEY_MIN_LOG_MEL) - _SLANEY_MIN_LOG_MEL))
    return np.where(m >= _SLANEY_MIN_LOG_MEL, log_part, m * _SLANEY_F_SP)


def slaney_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    """``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax)`` transposed: float32 ``[n_fft // 2 + 1, n_mels]``.

    Triangles on ``n_mels + 2`` points equally spaced on the Slaney mel scale between `fmin` and `fmax`,
    evaluated at the rfft bin frequencies, then scaled by ``2 / (f[i + 2] - f[i])`` (Slaney area norm). Like
    librosa (float32 output), the triangles are rounded to float32 before the norm is applied in float64.
    """
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)  # [F]
    mel_points = np.linspace(slaney_hz_to_mel(fmin), slaney_hz_to_mel(fmax), n_mels + 2)
    hz_points = slaney_mel_to_hz(mel_points)  # [M + 2]
    widths = np.diff(hz_points)  # [M + 1]
    ramps = hz_points[:, None] - fft_freqs[None, :]  # [M + 2, F]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    triangles = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)  # [M, F]
    enorm = 2.0 / (hz_points[2:] - hz_points[:-2])  # [M]
    weights = (triangles * enorm[:, None]).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(weights.T))


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------
class ConvStft(nn.Module):
    """STFT as two strided conv1d (``conv_real`` / ``conv_imag`` [F, 1, n_fft]) over the reflect-padded wave."""

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        self.pad = n_fft // 2
        self.conv_real = nn.Conv1d(1, n_fft // 2 + 1, n_fft, stride=hop, bias=False)
        self.conv_imag = nn.Conv1d(1, n_fft // 2 + 1, n_fft, stride=hop, bias=False)

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """wave ``[B, N]`` -> ``(real, imag)``, each ``[B, F, T]`` with ``T = 1 + N // hop``."""
        x = F.pad(wave[:, None, :], (self.pad, self.pad), mode="reflect")
        return self.conv_real(x), self.conv_imag(x)


class Spectrogram(nn.Module):
    """Power spectrogram ``re^2 + im^2``: wave ``[B, N]`` -> ``[B, T, F]``."""

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        self.stft = ConvStft(n_fft, hop)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        real, imag = self.stft(wave)
        return (real ** 2 + imag ** 2).transpose(1, 2)


class LogMel(nn.Module):
    """``10 log10(max(power @ melW, amin))`` (ref 1, no top_db): ``[B, T, F]`` -> ``[B, T, M]``."""

    def __init__(self, freq_bins: int, mel_bins: int, amin: float) -> None:
        super().__init__()
        self.amin = amin
        self.melW = nn.Parameter(torch.empty(freq_bins, mel_bins), requires_grad=False)  # noqa: N815 (checkpoint)

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10(torch.clamp(torch.matmul(power, self.melW), min=self.amin))


class ConvBlock(nn.Module):
    """``(conv3x3 no bias -> BN -> ReLU) x 2`` then 2x2 average pooling (``pool=False``: none, i.e. 1x1)."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool = True) -> None:
        super().__init__()
        self.pool = pool
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, T, M]`` -> ``[B, C_out, T // 2, M // 2]`` (unchanged sizes without pooling)."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, kernel_size=2) if self.pool else x


@dataclass
class Cnn14Output:
    """Outputs of one batch: ``embedding`` ``[B, embed_dim]`` (av-benchmark's ``'2048'``, ReLU(fc1)) and
    ``logits`` ``[B, classes_num]`` (pre-sigmoid)."""

    embedding: torch.Tensor
    logits: torch.Tensor

    @property
    def clipwise_output(self) -> torch.Tensor:
        """``sigmoid(logits)`` ``[B, classes_num]`` (the original's ``clipwise_output``)."""
        return torch.sigmoid(self.logits)


class Cnn14(nn.Module):
    """PANNs Cnn14 with its torchlibrosa front end: 16 kHz waveform ``[B, N]`` -> `Cnn14Output`.

    Parameter and buffer names are the release checkpoint's (``spectrogram_extractor.stft.conv_real.weight``,
    ``logmel_extractor.melW``, ``bn0.*``, ``conv_block{1..6}.{conv1,conv2,bn1,bn2}.*``, ``fc1.*``,
    ``fc_audioset.*``: 84 tensors with the BN ``num_batches_tracked`` counters). The front-end parameters are
    frozen (``requires_grad=False``) and start as `stft_kernels` / `slaney_mel_filterbank`.
    """

    def __init__(self, config: Cnn14Config | None = None) -> None:
        super().__init__()
        self.config = cfg = config or Cnn14Config()
        self.spectrogram_extractor = Spectrogram(cfg.window_size, cfg.hop_size)
        self.logmel_extractor = LogMel(cfg.freq_bins, cfg.mel_bins, cfg.amin)
        self.bn0 = nn.BatchNorm2d(cfg.mel_bins)
        widths = (1, *cfg.channels)
        for i in range(len(cfg.channels)):
            self.add_module(f"conv_block{i + 1}",
                            ConvBlock(widths[i], widths[i + 1], pool=i < len(cfg.channels) - 1))
        self.fc1 = nn.Linear(cfg.channels[-1], cfg.embed_dim)
        self.fc_audioset = nn.Linear(cfg.embed_dim, cfg.classes_num)
        for p in self.spectrogram_extractor.parameters():
            p.requires_grad_(False)
        self.reset_frontend()
        self.debug_weights = False

    @torch.no_grad()
    def reset_frontend(self) -> None:
        """Set the STFT kernels and ``melW`` to the values torchlibrosa builds (no-op on the meta device)."""
        cfg = self.config
        real, imag = stft_kernels(cfg.window_size)
        stft = self.spectrogram_extractor.stft
        stft.conv_real.weight.copy_(real)
        stft.conv_imag.weight.copy_(imag)
        self.logmel_extractor.melW.copy_(slaney_mel_filterbank(cfg.sample_rate, cfg.window_size, cfg.mel_bins,
                                                               cfg.fmin, cfg.fmax))

    @property
    def blocks(self) -> list[ConvBlock]:
        """The six ConvBlocks in order."""
        return [getattr(self, f"conv_block{i + 1}") for i in range(len(self.config.channels))]

    def _check_wave(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() != 2 or not torch.is_floating_point(wave):
            raise PannsInputError(f"Cnn14 expects a float waveform batch [B, N], got {tuple(wave.shape)} "
                                  f"{wave.dtype}")
        if wave.shape[1] < self.config.min_samples:
            cfg = self.config
            raise PannsInputError(f"{wave.shape[1]} samples are too short for Cnn14: it needs at least "
                                  f"{cfg.min_samples} ({cfg.min_samples / cfg.sample_rate:.2f} s at "
                                  f"{cfg.sample_rate} Hz) so that {cfg.pool_factor} frames survive the poolings")
        return wave.to(self.logmel_extractor.melW.dtype)

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """16 kHz waveform ``[B, N]`` -> log-mel in dB ``[B, T, mel_bins]``, ``T = 1 + N // hop``."""
        return self.logmel_extractor(self.spectrogram_extractor(self._check_wave(wave)))

    def from_log_mel(self, log_mel: torch.Tensor) -> Cnn14Output:
        """Log-mel ``[B, T, mel_bins]`` (from `log_mel`) -> `Cnn14Output` (the network without the front end)."""
        cfg = self.config
        assert log_mel.dim() == 3 and log_mel.shape[2] == cfg.mel_bins, \
            f"Cnn14 expects log-mel [B, T, {cfg.mel_bins}], got {tuple(log_mel.shape)}"
        if log_mel.shape[1] < cfg.pool_factor:
            raise PannsInputError(f"{log_mel.shape[1]} log-mel frames are too few for Cnn14 (needs "
                                  f"{cfg.pool_factor})")
        x = self.bn0(log_mel[:, None].transpose(1, 3)).transpose(1, 3)  # BN over mel: [B, 1, T, M]
        for block in self.blocks:
            x = block(x)  # dropout (p 0.2) between blocks is off in eval mode
        x = x.mean(dim=3)  # [B, C, T']
        x = x.max(dim=2).values + x.mean(dim=2)  # [B, C]
        embedding = F.relu(self.fc1(x))
        return Cnn14Output(embedding=embedding, logits=self.fc_audioset(embedding))

    def forward(self, wave: torch.Tensor) -> Cnn14Output:
        """16 kHz waveform ``[B, N]`` -> `Cnn14Output` (embedding ``[B, embed_dim]``, logits ``[B, classes]``)."""
        return self.from_log_mel(self.log_mel(wave))


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------
#: Release checkpoint -> `Cnn14`: the keys are already ours; a DataParallel ``module.`` prefix is stripped.
PANNS_KEYMAP = KeyMap(
    rules=((r"(?:module\.)?((?:spectrogram_extractor\.stft\.conv_(?:real|imag)\.weight|logmel_extractor\.melW"
            r"|(?:bn0|conv_block[1-6]\.(?:conv[12]|bn[12])|fc1|fc_audioset)\.[a-z_]+))", r"\1"),),
)


def panns_state_dict(obj: object, path: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The `Cnn14` state dict in a release file's contents: ``{'model': state_dict, ...}`` (other keys such as
    ``'iteration'`` / ``'sampler'`` are not read) or a bare state dict, mapped through `PANNS_KEYMAP`.
    Floating tensors are cast to float32."""
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a PANNs checkpoint ({{'model': state dict}} or a state dict of "
                              f"tensors), got {type(obj).__name__}"
                              + (f" with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping) else ""))
    sd = PANNS_KEYMAP.apply(obj)
    return {k: v.to(torch.float32) if torch.is_floating_point(v) else v for k, v in sd.items()}


def init_random_(model: Cnn14, seed: int = DEBUG_SEED) -> Cnn14:
    """Seeded random network weights (the front end keeps its constructed values): conv / linear weights
    ``randn * sqrt(2 / fan_in)``, linear biases ``randn * 0.05``, BN weight 1, bias 0, running mean 0, var 1;
    except ``bn0``, whose running statistics (mean -40 dB, variance 400) bring the log-mel near unit scale."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                w = module.weight
                w.copy_(torch.randn(w.shape, generator=g) * math.sqrt(2.0 / math.prod(w.shape[1:])))
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.05)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()  # weight 1, bias 0, mean 0, var 1, counter 0
                if name == "bn0":
                    module.running_mean.fill_(-40.0)
                    module.running_var.fill_(400.0)
    return model


def load_panns(checkpoint: str | os.PathLike | None = None, debug_weights: bool = False,
               device: str | torch.device = "cpu", config: Cnn14Config | str | None = None) -> Cnn14:
    """Cnn14 in eval mode on `device`.

    `checkpoint` None -> ``visualsound.weights.resolve("panns_cnn14_16k")`` (``Cnn14_16k_mAP=0.438.pth``; a
    missing file raises ``WeightsNotFoundError`` naming the URL and cache path). The file is read with
    `safe_torch_load` (weights_only, else the restricted unpickler: nothing in it is executed), ``'model'`` is
    unwrapped, and the state dict is loaded strictly: unknown, missing or mis-shaped keys raise
    `CheckpointError`. `debug_weights` -> a seeded random ``tiny`` network with the real front-end constants (no
    file; giving a `checkpoint` too raises `ConfigError`). `config` defaults to ``paper`` (``tiny`` with debug
    weights).
    """
    if isinstance(config, str):
        config = Cnn14Config.resolve(config)
    if debug_weights:
        if checkpoint is not None:
            raise ConfigError(f"load_panns: pass either a checkpoint ({checkpoint}) or debug_weights=True, not both")
        cfg = config or Cnn14Config.preset("tiny")
        model = init_random_(Cnn14(cfg), DEBUG_SEED)
        model.debug_weights = True
        log.warning("PANNs Cnn14 with DEBUG WEIGHTS (seeded random network, widths %s): scores are meaningless",
                    cfg.channels)
        return model.eval().to(device)
    cfg = config or Cnn14Config.preset("paper")
    from visualsound.weights import resolve

    path = Path(resolve(WEIGHTS_NAME, checkpoint))
    state = panns_state_dict(safe_torch_load(path), str(path))
    with torch.device("meta"):
        model = Cnn14(cfg)
    load_state_dict_strict(model, state, what=f"PANNs checkpoint {path}")
    log.info("loaded PANNs Cnn14 (%d classes) from %s", cfg.classes_num, path)
    return model.eval().to(device)
