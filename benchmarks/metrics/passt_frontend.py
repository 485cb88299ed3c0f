"""PaSST's audio front-end: julius-style fractional resampling to 32 kHz and the eval-mode log-mel.

Both pieces reproduce what the original KLD evaluation fed to PaSST (GMELab @ d8b53b1 with hear21passt 0.0.18,
julius 0.2.7), as described in the ``passt_kld`` parity fixture README:

* `resample_frac` -- windowed-sinc polyphase resampler (``zeros=24``, ``rolloff=0.945``), with the kernel
  designed in float32 so that the 32 kHz waveform matches the original bit for bit. ``torchaudio``'s resampler
  is a different filter and moves the mel by ~0.25, so it is not used.
* `PasstMel` -- pre-emphasis (valid conv, length ``T - 1``), STFT (n_fft 1024, hop 320, symmetric Hann of 800
  zero-padded to 1024, centred with reflect padding), power, Kaldi mel banks (128 bands, 0..15000 Hz, plus a
  zero column for the Nyquist bin), ``log(mel + 1e-5)`` and ``(x + 4.5) / 5``. No augmentation (eval mode).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from visualsound.utils.config import FrozenConfig, register_preset

PASST_SAMPLE_RATE = 32000


# --------------------------------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------------------------------
def _sinc(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t == 0, torch.ones((), dtype=t.dtype), torch.sin(t) / t)


def resample_kernels(old_sr: int, new_sr: int, zeros: int = 24, rolloff: float = 0.945) -> tuple[torch.Tensor, int,
                                                                                                  int, int]:
    """Polyphase windowed-sinc kernels for resampling `old_sr` -> `new_sr`.

    Returns ``(kernels [M, 1, 2*width + L], L, M, width)`` with ``L = old_sr / gcd``, ``M = new_sr / gcd``.
    Every intermediate is float32 (the time axis ``idx`` is a float32 tensor), as in julius 0.2.7.
    """
    g = math.gcd(int(old_sr), int(new_sr))
    big_l, big_m = int(old_sr) // g, int(new_sr) // g
    cut = min(big_l, big_m)
    cut *= rolloff
    width = math.ceil(zeros * big_l / cut)
    idx = torch.arange(-width, width + big_l).float()
    kernels = []
    for i in range(big_m):
        t = (-i / big_m + idx / big_l) * cut
        t = t.clamp(-zeros, zeros) * math.pi
        kernel = _sinc(t) * torch.cos(t / zeros / 2) ** 2
        kernels.append(kernel / kernel.sum())
    return torch.stack(kernels).view(big_m, 1, -1), big_l, big_m, width


def resample_frac(x: torch.Tensor, old_sr: int, new_sr: int = PASST_SAMPLE_RATE, zeros: int = 24,
                  rolloff: float = 0.945) -> torch.Tensor:
    """Resample float32 audio ``[..., T]`` from `old_sr` to `new_sr` -> ``[..., floor(M * T / L)]``.

    Edge-replication padding of ``width`` samples left and ``width + L`` right, one strided ``conv1d`` per
    output phase, phases interleaved; equal rates return `x` unchanged.
    """
    assert x.dtype == torch.float32, f"resample_frac expects float32 audio, got {x.dtype} {tuple(x.shape)}"
    if int(old_sr) == int(new_sr):
        return x
    kernels, big_l, big_m, width = resample_kernels(old_sr, new_sr, zeros, rolloff)
    shape = x.shape
    length = shape[-1]
    flat = x.reshape(-1, length)[:, None]
    flat = F.pad(flat, (width, width + big_l), mode="replicate")
    ys = F.conv1d(flat, kernels.to(x.device), stride=big_l)  # [B, M, frames]
    y = ys.transpose(1, 2).reshape(list(shape[:-1]) + [-1])
    out_len = int(big_m * length / big_l)
    return y[..., :out_len]


# --------------------------------------------------------------------------------------------------
# Mel front-end
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PasstMelConfig(FrozenConfig):
    """Eval-mode ``AugmentMelSTFT`` settings of PaSST-S (f128, 32 kHz)."""

    sample_rate: int = PASST_SAMPLE_RATE
    n_mels: int = 128
    n_fft: int = 1024
    win_length: int = 800
    hop: int = 320
    preemphasis: float = 0.97
    fmin: float = 0.0
    fmax_aug_range: int = 2000
    log_offset: float = 1e-5
    norm_shift: float = 4.5
    norm_scale: float = 5.0

    @property
    def fmax(self) -> float:
        """``fmax=None`` in hear21passt becomes ``sr // 2 - fmax_aug_range // 2`` (15000 Hz at 32 kHz)."""
        return float(self.sample_rate // 2 - self.fmax_aug_range // 2)

    def num_frames(self, num_samples: int) -> int:
        """Mel frames for a waveform of `num_samples` (pre-emphasis removes one sample, STFT is centred)."""
        return 1 + (num_samples - 1) // self.hop


register_preset(PasstMelConfig, "paper", PasstMelConfig())


def _kaldi_mel(freq: torch.Tensor | float) -> torch.Tensor | float:
    if isinstance(freq, torch.Tensor):
        return 1127.0 * (1.0 + freq / 700.0).log()
    return 1127.0 * math.log(1.0 + freq / 700.0)


def kaldi_mel_banks(n_mels: int, n_fft: int, sample_rate: float, fmin: float, fmax: float) -> torch.Tensor:
    """Kaldi triangular mel filters (no VTLN warp, no area normalisation) -> float32 ``[n_mels, n_fft // 2]``.

    ``n_mels + 2`` equally spaced points on ``1127 ln(1 + f / 700)`` between `fmin` and `fmax`; triangles
    are evaluated at bin frequencies ``k * sample_rate / n_fft`` for ``k = 0 .. n_fft/2 - 1`` (float32 math,
    like ``torchaudio.compliance.kaldi.get_mel_banks``).
    """
    assert n_mels > 3 and n_fft % 2 == 0, f"bad mel bank request n_mels={n_mels} n_fft={n_fft}"
    bin_width = sample_rate / n_fft
    mel_lo, mel_hi = _kaldi_mel(fmin), _kaldi_mel(fmax)
    delta = (mel_hi - mel_lo) / (n_mels + 1)
    band = torch.arange(n_mels).unsqueeze(1)
    left = mel_lo + band * delta
    center = mel_lo + (band + 1.0) * delta
    right = mel_lo + (band + 2.0) * delta
    mel = _kaldi_mel(bin_width * torch.arange(n_fft / 2)).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    return torch.max(torch.zeros(1), torch.min(up, down))


class PasstMel(torch.nn.Module):
    """Waveform at 32 kHz ``[B, T]`` -> normalised log-mel ``[B, n_mels, 1 + (T - 1) // hop]``."""

    def __init__(self, config: PasstMelConfig | None = None) -> None:
        super().__init__()
        self.config = config or PasstMelConfig()
        c = self.config
        self.register_buffer("window", torch.hann_window(c.win_length, periodic=False), persistent=False)
        self.register_buffer("preemphasis_kernel", torch.tensor([[[-c.preemphasis, 1.0]]]), persistent=False)
        banks = kaldi_mel_banks(c.n_mels, c.n_fft, c.sample_rate, c.fmin, c.fmax)
        self.register_buffer("mel_basis", F.pad(banks, (0, 1)), persistent=False)  # [n_mels, n_fft // 2 + 1]

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        assert wav.dim() == 2 and wav.shape[-1] > 1, f"PasstMel expects [B, T] audio, got {tuple(wav.shape)}"
        c = self.config
        x = F.conv1d(wav.unsqueeze(1), self.preemphasis_kernel).squeeze(1)  # [B, T - 1]
        spec = torch.stft(x, c.n_fft, hop_length=c.hop, win_length=c.win_length, window=self.window,
                          center=True, pad_mode="reflect", normalized=False, return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2  # [B, n_fft // 2 + 1, frames]
        mel = torch.matmul(self.mel_basis, power)
        mel = (mel + c.log_offset).log()
        return (mel + c.norm_shift) / c.norm_scale
