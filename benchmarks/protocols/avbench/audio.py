"""The audio side of the av-benchmark protocol: every per-network audio input as the original computes it, and the
audio-side network calls (parity fixture ``avbench``, README sections 2.2-2.5, 2.7, 2.9).

Reading (`read_audio`) gives what ``torchaudio.load`` gives: float32 ``[C, N]``, 16-bit PCM as ``k / 32768``, all
channels. From there, per network:

* PANNs / VGGish / PaSST (`network_wave`): mono = float32 mean over channels, minus its own mean (whole-file DC
  removal, before resampling), ``torchaudio.transforms.Resample(sr, target)`` with its defaults (kernel designed
  in float64, stored as float32), the first ``int(target * length_sec)`` samples, no padding. VGGish examples
  (`vggish_examples`) come from the 16 kHz wave (not resampy); PaSST's input (`passt_wave`) is the 32 kHz wave
  zero-padded at the end (or cut) to 320,000 samples = 10 s.
* Synchformer (`sync_wave`, `sync_audio_input`): mono mean, **no** DC removal, the same 16 kHz resampler, exactly
  ``int(16000 * length_sec)`` samples (shorter audio raises `AudioTooShortError`; the original silently
  substitutes the next file), then 0.64 s segments with a 0.32 s hop -> torchaudio ``MelSpectrogram`` ->
  ``log(x + 1e-6)`` -> zero column to 66 frames -> ``(x + 4.2677393) / (2 * 4.5689974)``.
* ImageBind (`ib_audio_input`): the **whole** file (not cut), all channels, ``torchaudio.functional.resample``
  (float32 kernel) to 16 kHz, 3 windows of 2 s, in-place mean removal per window, Kaldi fbank of channel 0
  -> ``[3, 1, 128, 204]``.

One deliberate difference: the DC offset is the float64 mean of the mono wave rounded to float32, not torch's
float32 ``mean()``. torch's multithreaded float32 reduction rounds differently with the number of threads (the
fixture ran with 2 threads; with 1 or 4 threads, 1-2 of its 16 clips get a DC offset one float32 ulp away), so
the original's waves depend on the machine. Ours do not; they equal the fixture's bit for bit on 14 of its 16
files (16 and 32 kHz) and differ by at most one float32 ulp per sample (<= 3e-8) on the other two.

Shapes: ``[C, N]`` audio, ``[N]`` mono waves, ``[B, ...]`` batches. Network calls take batches on any device and
return float32 CPU tensors.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from typing import TYPE_CHECKING

import numpy as np
import torch

from visualsound.errors import ToolkitError

if TYPE_CHECKING:
    from benchmarks.metrics.passt import PasstTagger
    from benchmarks.metrics.vggish import VGGish
    from vaura.synchformer.model import Synchformer
    from visualsound.imagebind.model import ImageBindAV

log = logging.getLogger(__name__)

SYNC_SAMPLE_RATE = 16000
PANNS_VGGISH_SAMPLE_RATE = 16000
PASST_SAMPLE_RATE = 32000
PASST_SAMPLES = 320000  # 10 s at 32 kHz: every PaSST input is padded (or cut) to this
SYNC_SEGMENT_SAMPLES = 10240  # 0.64 s
SYNC_SEGMENT_HOP = 5120  # 0.32 s
IB_SAMPLE_RATE = 16000
IB_MIN_SAMPLES = 400  # one 25 ms Kaldi frame at 16 kHz


class AvbenchAudioError(ToolkitError, ValueError):
    """Audio that the av-benchmark protocol cannot use (the message names the file or the reason)."""


class AudioTooShortError(AvbenchAudioError):
    """A clip is too short for one network's input. ``network`` (``synchformer``, ``imagebind``, ``vggish``),
    ``seconds`` (the length that was measured) and ``required_seconds`` say why; the driver records the clip as
    dropped from that metric with ``str(error)`` as the reason."""

    def __init__(self, network: str, seconds: float, required_seconds: float, what: str = "") -> None:
        self.network, self.seconds, self.required_seconds = network, float(seconds), float(required_seconds)
        prefix = f"{what}: " if what else ""
        super().__init__(f"{prefix}{network} input needs {required_seconds:.3f} s of audio, got {seconds:.3f} s")


# ----------------------------------------------------------------------------------------------------- reading
def read_audio(path: str | os.PathLike, start_sec: float = 0.0,
               duration_sec: float | None = None) -> tuple[torch.Tensor, int]:
    """``(audio float32 [C, N], sample_rate)`` of the first audio stream, as ``torchaudio.load`` returns it.

    The whole file (the default) is every decoded sample appended as is (`decode_audio_stream`: 16-bit PCM
    becomes ``k / 32768``, bit-identical to ``torchaudio.load``). A window ``[start_sec, start_sec +
    duration_sec)`` uses the windowed reader (`visualsound.media.read_audio`, source rate kept). Raises the
    `visualsound.media` errors (`MediaError` subclasses naming the file: missing, not media, truncated, no audio)
    and `AvbenchAudioError` for NaN or infinite samples (float WAV files).
    """
    from visualsound.media import probe
    from visualsound.media import read_audio as read_window
    from visualsound.media.audio import decode_audio_stream

    if start_sec == 0.0 and duration_sec is None:
        array, sample_rate = decode_audio_stream(path)
        audio = torch.from_numpy(array)
    else:
        sample_rate = int(probe(path, require_audio=True).sample_rate)
        audio = read_window(path, start=start_sec, duration=duration_sec)
    if not bool(torch.isfinite(audio).all()):
        raise AvbenchAudioError(f"{path}: the audio contains NaN or infinite samples")
    return audio, int(sample_rate)


# ----------------------------------------------------------------------------------------------------- waves
@functools.lru_cache(maxsize=16)
def _resampler(orig_sr: int, new_sr: int) -> torch.nn.Module:
    import torchaudio.transforms

    return torchaudio.transforms.Resample(orig_sr, new_sr)


def resample(wave: torch.Tensor, sample_rate: int, target_sr: int) -> torch.Tensor:
    """``torchaudio.transforms.Resample(sample_rate, target_sr)`` with its defaults (sinc-Hann, width 6, rolloff
    0.99, kernel designed in float64 and stored as float32; one cached transform per rate pair) applied to float32
    ``[..., N]``; `wave` itself when the rates are equal."""
    _check_rate(sample_rate)
    _check_rate(target_sr)
    assert wave.dtype == torch.float32, f"resample expects float32 audio, got {wave.dtype} {tuple(wave.shape)}"
    if int(sample_rate) == int(target_sr):
        return wave
    return _resampler(int(sample_rate), int(target_sr))(wave)


def _check_rate(sample_rate: int) -> None:
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise AvbenchAudioError(f"sample rate must be a positive integer, got {sample_rate!r}")


def _check_audio(audio: torch.Tensor) -> None:
    if not isinstance(audio, torch.Tensor) or audio.dim() != 2 or audio.dtype != torch.float32:
        raise AvbenchAudioError(f"expected float32 audio [C, N], got "
                                f"{getattr(audio, 'dtype', type(audio).__name__)} {tuple(getattr(audio, 'shape', ()))}")
    if audio.shape[0] == 0 or audio.shape[1] == 0:
        raise AvbenchAudioError(f"expected non-empty audio [C, N], got {tuple(audio.shape)}")


def _keep_samples(target_sr: int, length_sec: float | None) -> int:
    """``int(target_sr * length_sec)``; a missing or non-positive length is refused (the original's
    ``--audio_length`` has no default and loops forever without one, README trap T1)."""
    if length_sec is None or not math.isfinite(length_sec) or length_sec <= 0:
        raise AvbenchAudioError(f"the av-benchmark protocol needs a positive audio length in seconds (MMAudio uses "
                                f"8.0), got {length_sec!r}")
    return int(target_sr * length_sec)


def dc_offset(mono: torch.Tensor) -> torch.Tensor:
    """The mean of a mono wave ``[N]`` as a float32 scalar, accumulated in float64 (numpy's pairwise sum,
    single-threaded) and rounded once, so it does not depend on the thread count (see the module docstring for how
    this differs from the original's float32 ``mean()``)."""
    assert mono.dim() == 1 and mono.shape[0] > 0, f"dc_offset expects a non-empty wave [N], got {tuple(mono.shape)}"
    dc = np.sum(mono.detach().cpu().numpy(), dtype=np.float64) / mono.shape[0]
    return torch.tensor(np.float32(dc), dtype=torch.float32, device=mono.device)


def dc_removed_mono(audio: torch.Tensor) -> torch.Tensor:
    """float32 ``[C, N]`` -> ``[N]``: the float32 mean over channels minus its `dc_offset`."""
    _check_audio(audio)
    mono = audio.mean(dim=0)
    return mono - dc_offset(mono)


def network_wave(audio: torch.Tensor, sample_rate: int, target_sr: int, length_sec: float) -> torch.Tensor:
    """The PANNs / VGGish (``target_sr`` 16000) or PaSST (32000) waveform ``[N']`` of one file (README 2.2).

    `dc_removed_mono`, then `resample`, then the first ``int(target_sr * length_sec)`` samples. Nothing is padded:
    a shorter file gives a shorter wave (a 5 s file gives 80,000 samples at 16 kHz).
    """
    keep = _keep_samples(target_sr, length_sec)
    return resample(dc_removed_mono(audio), sample_rate, target_sr)[:keep]


def passt_wave(wav32k: torch.Tensor) -> torch.Tensor:
    """32 kHz wave ``[N]`` -> PaSST's input ``[320000]``: zero-padded at the end, or cut (README 2.5)."""
    assert wav32k.dim() == 1, f"passt_wave expects a mono wave [N], got {tuple(wav32k.shape)}"
    if wav32k.shape[0] >= PASST_SAMPLES:
        return wav32k[:PASST_SAMPLES]
    return torch.nn.functional.pad(wav32k, (0, PASST_SAMPLES - wav32k.shape[0]))


def vggish_examples(wav16k: torch.Tensor) -> torch.Tensor:
    """16 kHz wave ``[N]`` -> VGGish log-mel examples float32 ``[F, 1, 96, 64]`` (non-overlapping 0.96 s blocks,
    the tail dropped; `benchmarks.metrics.vggish.log_mel_examples`, README 2.4). Raises `AudioTooShortError`
    (network ``vggish``) below 15,600 samples."""
    from benchmarks.metrics import vggish

    assert wav16k.dim() == 1 and wav16k.dtype == torch.float32, \
        f"vggish_examples expects a float32 wave [N], got {wav16k.dtype} {tuple(wav16k.shape)}"
    cfg = vggish.VGGishConfig.preset("paper")
    if wav16k.shape[0] < cfg.min_samples:
        raise AudioTooShortError("vggish", wav16k.shape[0] / cfg.sample_rate, cfg.min_samples / cfg.sample_rate)
    return torch.from_numpy(vggish.log_mel_examples(wav16k.detach().cpu().numpy(), cfg))


def sync_wave(audio: torch.Tensor, sample_rate: int, length_sec: float) -> torch.Tensor:
    """Synchformer's 16 kHz wave ``[int(16000 * length_sec)]`` of one file (README 2.7 steps 1-2).

    Mono mean (no DC removal), `resample` to 16 kHz, cut. Raises `AudioTooShortError` (network ``synchformer``,
    ``seconds`` = the resampled length) when the file gives fewer samples: the original drops such a clip from
    DeSync (by silently loading the next file instead); the driver records it as dropped with this reason.
    """
    keep = _keep_samples(SYNC_SAMPLE_RATE, length_sec)
    _check_audio(audio)
    wave = resample(audio.mean(dim=0), sample_rate, SYNC_SAMPLE_RATE)[:keep]
    if wave.shape[0] != keep:
        raise AudioTooShortError("synchformer", wave.shape[0] / SYNC_SAMPLE_RATE, keep / SYNC_SAMPLE_RATE)
    return wave


def sync_audio_input(wav16k: torch.Tensor) -> torch.Tensor:
    """16 kHz waves ``[B, N]`` -> Synchformer AST input ``[B, S, 1, 128, 66]``, ``S = (N - 10240) // 5120 + 1``
    (24 for 8 s).

    Per 10,240-sample segment (hop 5,120): torchaudio ``MelSpectrogram(16000, n_fft=1024, win_length=400,
    hop_length=160, n_mels=128)`` (periodic Hann, centred, reflect, power 2, HTK mels, no norm; 65 frames) ->
    ``log(x + 1e-6)`` -> a zero column to 66 frames -> ``(x + 4.2677393) / (2 * 4.5689974)``. This is
    `vaura.synchformer.preprocess.log_mel_for_ast`, whose `mel_power` equals the torchaudio transform bit for bit
    (a test checks it).
    """
    from vaura.synchformer.preprocess import log_mel_for_ast

    assert wav16k.dim() == 2 and wav16k.shape[1] >= SYNC_SEGMENT_SAMPLES, \
        f"sync_audio_input expects waves [B, N] with N >= {SYNC_SEGMENT_SAMPLES}, got {tuple(wav16k.shape)}"
    segments = wav16k.float().unfold(-1, SYNC_SEGMENT_SAMPLES, SYNC_SEGMENT_HOP)  # [B, S, 10240]
    assert segments.shape[1] == (wav16k.shape[1] - SYNC_SEGMENT_SAMPLES) // SYNC_SEGMENT_HOP + 1, \
        f"{tuple(wav16k.shape)} -> {tuple(segments.shape)}"
    return log_mel_for_ast(segments).unsqueeze(2)


def ib_audio_input(audio: torch.Tensor, sample_rate: int, what: str = "") -> torch.Tensor:
    """ImageBind's audio input ``[3, 1, 128, 204]`` of one **whole** file ``[C, N]`` (README 2.9).

    All channels, ``torchaudio.functional.resample`` to 16 kHz (float32 kernel), ``ConstantClipsPerVideoSampler(2,
    3)`` windows on ``D = N16 / 16000`` with exact `Fraction` arithmetic, per-window in-place mean removal on
    views of the shared wave (overlapping windows, under ~6 s, see the earlier windows' shifts), Kaldi fbank of
    channel 0, zero-pad or cut to 204 frames, ``(x + 4.268) / 9.138``. This is VisualSound's ImageBind audio
    preprocessing (`visualsound.imagebind.preprocess.audio_fbanks_from_source`, parity-tested against upstream
    ImageBind; its cached float32 kernel equals ``functional.resample``'s bit for bit). Raises
    `AudioTooShortError` (network ``imagebind``) below one 25 ms Kaldi frame; `what` names the clip in it.
    """
    from visualsound.imagebind.preprocess import audio_fbanks_from_source, resampled_length

    _check_audio(audio)
    _check_rate(sample_rate)
    n16 = resampled_length(audio.shape[1], int(sample_rate))
    if n16 < IB_MIN_SAMPLES:
        raise AudioTooShortError("imagebind", n16 / IB_SAMPLE_RATE, IB_MIN_SAMPLES / IB_SAMPLE_RATE, what)
    fbanks, _ = audio_fbanks_from_source(audio, int(sample_rate))
    return fbanks


# ----------------------------------------------------------------------------------------------------- networks
def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def vggish_rows(model: VGGish, examples: torch.Tensor) -> torch.Tensor:
    """VGGish (no PCA, no final ReLU) on examples ``[n, 1, 96, 64]`` -> ``[n, 128]`` rows (one file's examples, or
    several files' concatenated: each example is embedded on its own)."""
    assert examples.dim() == 4 and tuple(examples.shape[1:]) == (1, 96, 64), \
        f"vggish_rows expects [n, 1, 96, 64], got {tuple(examples.shape)}"
    rows = model(examples.to(_device(model), torch.float32)).float().cpu()
    assert rows.shape == (examples.shape[0], model.cfg.embed_dim), f"{tuple(examples.shape)} -> {tuple(rows.shape)}"
    return rows


@torch.inference_mode()
def passt_outputs(model: PasstTagger, wav32k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PaSST on padded 10 s inputs ``[B, 320000]`` -> ``(features [B, 768], logits [B, 527])``: features are
    ``(cls + dist) / 2`` after the final norm (FD-PaSST), logits ``head(features)`` (KL-PaSST, IS-PaSST)."""
    assert wav32k.dim() == 2 and wav32k.shape[1] == PASST_SAMPLES, \
        f"passt_outputs expects [B, {PASST_SAMPLES}] (use passt_wave), got {tuple(wav32k.shape)}"
    features, logits = model.features_and_logits(wav32k.to(_device(model), torch.float32))
    b, cfg = wav32k.shape[0], model.net.config
    assert features.shape == (b, cfg.embed_dim) and logits.shape == (b, cfg.num_classes), \
        f"{tuple(wav32k.shape)} -> features {tuple(features.shape)}, logits {tuple(logits.shape)}"
    return features.float().cpu(), logits.float().cpu()


@torch.inference_mode()
def ib_audio_embedding(model: ImageBindAV, x: torch.Tensor) -> torch.Tensor:
    """ImageBind audio ``[B, 3, 1, 128, 204]`` -> ``[B, E]``: the mean over the 3 windows of L2-normalised
    vectors scaled by 20 (upstream ImageBind's audio post-processing; `ImageBindAV.embed_audio`)."""
    cfg = model.cfg
    assert x.dim() == 5 and tuple(x.shape[2:]) == (1, cfg.audio_num_mel_bins, cfg.audio_target_len), \
        f"ib_audio_embedding expects [B, 3, 1, {cfg.audio_num_mel_bins}, {cfg.audio_target_len}], got {tuple(x.shape)}"
    emb = model.embed_audio(x.to(_device(model))).float().cpu()
    assert emb.shape == (x.shape[0], cfg.out_embed_dim), f"{tuple(x.shape)} -> {tuple(emb.shape)}"
    return emb


@torch.inference_mode()
def sync_audio_features(model: Synchformer, x: torch.Tensor) -> torch.Tensor:
    """Synchformer AST features: ``[B, S, 1, 128, 66]`` -> ``[B, S, 6, D]`` (each segment encoded on its own;
    `Synchformer.audio_features`, the original's ``extract_afeats``)."""
    assert x.dim() == 5, f"sync_audio_features expects [B, S, 1, 128, 66], got {tuple(x.shape)}"
    feats = model.audio_features(x.to(_device(model), torch.float32)).float().cpu()
    assert feats.shape[:3] == (*x.shape[:2], 6), f"{tuple(x.shape)} -> {tuple(feats.shape)}"
    return feats
