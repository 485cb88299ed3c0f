"""Synchformer preprocessing, numerically as the original transforms (see the parity README).

Video (sync model): 25 fps RGB uint8 frames, centre crop 224, value = ``video_norm_lut()[uint8]`` (upstream
converts to float16, divides by 255, subtracts 0.5 and divides by 0.5, each step rounded to half), 14 segments
of 16 frames with stride 8 -> ``[B, 14, 16, 3, 224, 224]``.

Audio (sync model): 16 kHz mono, 14 segments of 10,240 samples with stride 5,120; per segment a power
mel spectrogram (n_fft 1024, Hann window 400, hop 160, centred with reflect padding, 128 HTK mels up to 8 kHz)
-> ``log(x + 1e-6)`` -> zero-pad to 66 frames -> ``(x + 4.2677393) / (2 * 4.5689974)`` -> ``[B, 14, 1, 128, 66]``.

V-AURA's visual input (2.56 s = 64 frames): short side 256 + centre crop 224 when the frames are not
already 224 x 224, fp32 ``(x / 255 - 0.5) / 0.5``, 4 segments of 16 frames with stride 16
-> ``[B, 4, 3, 16, 224, 224]``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from visualsound.errors import ToolkitError

FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
SEGMENT_FRAMES = 16
SEGMENT_SAMPLES = SEGMENT_FRAMES * SAMPLES_PER_FRAME  # 10240
N_SEGMENTS = 14
WINDOW_FRAMES = (N_SEGMENTS + 1) * SEGMENT_FRAMES // 2  # 120 frames = 4.8 s
WINDOW_SAMPLES = WINDOW_FRAMES * SAMPLES_PER_FRAME  # 76800
CROP = 224
N_FFT, WIN_LENGTH, HOP_LENGTH, N_MELS, F_MAX = 1024, 400, 160, 128, 8000.0
SPEC_FRAMES = 66
AST_MEAN, AST_STD = -4.2677393, 4.5689974
VAURA_FRAMES, VAURA_SEGMENTS = 64, 4


class PreprocessError(ToolkitError, ValueError):
    """Input frames or waveform have the wrong dtype, layout or length for the requested window."""


# -- video -------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def video_norm_lut() -> torch.Tensor:
    """``[256]`` float32: uint8 -> sync-model input value, computed in IEEE half precision step by step."""
    h = torch.arange(256, dtype=torch.float16)
    h = h / torch.tensor(255.0, dtype=torch.float16)
    h = h - torch.tensor(0.5, dtype=torch.float16)
    h = h / torch.tensor(0.5, dtype=torch.float16)
    return h.float()


@functools.lru_cache(maxsize=1)
def vaura_norm_lut() -> torch.Tensor:
    """``[256]`` float32: uint8 -> V-AURA visual input value, ``(x * (1/255) - 0.5) / 0.5`` in float32."""
    x = torch.arange(256, dtype=torch.float32) * (1.0 / 255.0)
    return (x - 0.5) / 0.5


def _check_frames(frames: torch.Tensor) -> torch.Tensor:
    """Accept ``[T, H, W, 3]`` or ``[B, T, H, W, 3]`` uint8; return the batched form."""
    if frames.dtype != torch.uint8 or frames.dim() not in (4, 5) or frames.shape[-1] != 3:
        raise PreprocessError(f"expected uint8 RGB frames [B, T, H, W, 3] or [T, H, W, 3], got "
                              f"{frames.dtype} {tuple(frames.shape)}")
    return frames if frames.dim() == 5 else frames.unsqueeze(0)


def resize_short_side(frames: torch.Tensor, size: int, mode: str = "bicubic") -> torch.Tensor:
    """Resize ``[..., T, H, W, 3]`` uint8 so the short side is `size` (antialiased, rounded to uint8)."""
    frames = _check_frames(frames)
    b, t, h, w, _ = frames.shape
    if min(h, w) == size:
        return frames
    scale = size / min(h, w)
    new_h, new_w = (size, int(w * scale)) if h <= w else (int(h * scale), size)
    x = frames.reshape(b * t, h, w, 3).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(new_h, new_w), mode=mode, align_corners=False, antialias=True)
    x = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return x.reshape(b, t, new_h, new_w, 3)


def center_crop(frames: torch.Tensor, size: int = CROP) -> torch.Tensor:
    """Centre crop ``[B, T, H, W, 3]`` to ``size x size`` with offsets ``int(round((H - size) / 2))``."""
    frames = _check_frames(frames)
    h, w = frames.shape[2:4]
    if h < size or w < size:
        raise PreprocessError(f"frames {h}x{w} are smaller than the {size} px crop")
    top, left = int(round((h - size) / 2)), int(round((w - size) / 2))
    return frames[:, :, top:top + size, left:left + size]


def segment_frame_index(n_segments: int = N_SEGMENTS, stride: int = SEGMENT_FRAMES // 2,
                        start: int = 0) -> torch.Tensor:
    """``[n_segments, 16]`` int64 frame index of segment s, frame t: ``start + stride*s + t``."""
    return start + stride * torch.arange(n_segments)[:, None] + torch.arange(SEGMENT_FRAMES)[None]


def video_for_sync(frames: torch.Tensor, dtype: torch.dtype = torch.float32, normalisation: str = "fp16"
                   ) -> torch.Tensor:
    """4.8 s window ``[B, 120, H, W, 3]`` uint8 (already 25 fps, short side resized) -> ``[B, 14, 16, 3, 224,
    224]`` in `dtype`.

    ``normalisation="fp16"``: upstream Synchformer's half-precision steps (`video_norm_lut`; float16 holds the
    values exactly). ``"fp32"``: torchvision ``ToDtype(float32, scale=True)`` + ``Normalize(0.5, 0.5)`` as in
    MMAudio / av-benchmark (`vaura_norm_lut`)."""
    frames = center_crop(_check_frames(frames))
    if frames.shape[1] != WINDOW_FRAMES:
        raise PreprocessError(f"a sync window needs {WINDOW_FRAMES} frames, got {frames.shape[1]}")
    if normalisation not in ("fp16", "fp32"):
        raise PreprocessError(f"normalisation must be 'fp16' or 'fp32', got {normalisation!r}")
    lut = (video_norm_lut() if normalisation == "fp16" else vaura_norm_lut()).to(device=frames.device, dtype=dtype)
    values = lut[frames.permute(0, 1, 4, 2, 3).int()]  # [B, 120, 3, H, W]
    return values[:, segment_frame_index().to(frames.device)].contiguous()  # [B, 14, 16, 3, H, W]


def preprocess_video_for_vaura(frames: torch.Tensor) -> torch.Tensor:
    """V-AURA clip ``[B, 64, H, W, 3]`` or ``[64, H, W, 3]`` uint8 -> ``[B, 4, 3, 16, 224, 224]`` float32.

    Frames not already 224 x 224 are resized (short side 256, antialiased bilinear) and centre-cropped. The
    layout is `MotionFormer.forward`'s; its output ``[B, 4, 8, 768]`` flattens to V-AURA's 32 visual tokens.
    """
    frames = _check_frames(frames)
    if frames.shape[1] != VAURA_FRAMES:
        raise PreprocessError(f"V-AURA clips are {VAURA_FRAMES} frames (2.56 s at 25 fps), got {frames.shape[1]}")
    if frames.shape[2:4] != (CROP, CROP):
        frames = center_crop(resize_short_side(frames, 256, mode="bilinear"))
    idx = segment_frame_index(VAURA_SEGMENTS, stride=SEGMENT_FRAMES)
    values = vaura_norm_lut().to(frames.device)[frames.permute(0, 4, 1, 2, 3).int()]  # [B, 3, 64, H, W]
    return values[:, :, idx].transpose(1, 2).contiguous()  # [B, 4, 3, 16, H, W]


def preprocess_segments_for_vaura(frames: torch.Tensor) -> torch.Tensor:
    """16-frame segments ``[N, 16, H, W, 3]`` uint8 -> ``[1, N, 3, 16, 224, 224]`` float32: the values
    `preprocess_video_for_vaura` gives each segment of a window (a window is 4 such segments), so that segments
    shared by overlapping windows are encoded once."""
    frames = _check_frames(frames)
    if frames.shape[1] != SEGMENT_FRAMES:
        raise PreprocessError(f"segments are {SEGMENT_FRAMES} frames, got {tuple(frames.shape)}")
    if frames.shape[2:4] != (CROP, CROP):
        frames = center_crop(resize_short_side(frames, 256, mode="bilinear"))
    values = vaura_norm_lut().to(frames.device)[frames.permute(0, 4, 1, 2, 3).int()]  # [N, 3, 16, H, W]
    return values.unsqueeze(0)


# -- audio -------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def mel_filterbank() -> torch.Tensor:
    """``[513, 128]`` HTK mel filterbank (no normalisation, 0 - 8 kHz), as ``torchaudio`` builds it."""
    import torchaudio.functional as AF

    return AF.melscale_fbanks(n_freqs=N_FFT // 2 + 1, f_min=0.0, f_max=F_MAX, n_mels=N_MELS,
                              sample_rate=SAMPLE_RATE, norm=None, mel_scale="htk")


def mel_power(segments: torch.Tensor) -> torch.Tensor:
    """``[..., N]`` waveform -> ``[..., 128, N // 160 + 1]`` mel power spectrogram (float32)."""
    shape = segments.shape
    x = segments.reshape(-1, shape[-1]).float()
    window = torch.hann_window(WIN_LENGTH, device=x.device)
    spec = torch.stft(x, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH, window=window,
                      center=True, pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    power = spec.abs().pow(2.0)  # [N, 513, frames]
    mel = torch.matmul(power.transpose(-1, -2), mel_filterbank().to(x.device)).transpose(-1, -2)
    return mel.reshape(*shape[:-1], N_MELS, mel.shape[-1])


def log_mel_for_ast(segments: torch.Tensor) -> torch.Tensor:
    """``[..., 10240]`` segments -> ``[..., 128, 66]`` normalised log-mels (padding column added in log domain)."""
    logmel = torch.log(mel_power(segments) + 1e-6)
    if logmel.shape[-1] > SPEC_FRAMES:
        logmel = logmel[..., :SPEC_FRAMES]
    logmel = F.pad(logmel, (0, SPEC_FRAMES - logmel.shape[-1]), value=0.0)
    return (logmel - AST_MEAN) / (AST_STD * 2)


def audio_for_sync(wave: torch.Tensor) -> torch.Tensor:
    """4.8 s window ``[B, 76800]`` or ``[76800]`` float 16 kHz mono -> ``[B, 14, 1, 128, 66]`` float32."""
    if wave.dim() == 1:
        wave = wave.unsqueeze(0)
    if wave.dim() != 2 or wave.shape[-1] != WINDOW_SAMPLES:
        raise PreprocessError(f"a sync window needs mono audio [B, {WINDOW_SAMPLES}] at {SAMPLE_RATE} Hz, got "
                              f"{tuple(wave.shape)}")
    segs = wave.unfold(-1, SEGMENT_SAMPLES, SEGMENT_SAMPLES // 2)  # [B, 14, 10240]
    assert segs.shape[1] == N_SEGMENTS, f"{tuple(segs.shape)}"
    return log_mel_for_ast(segs).unsqueeze(2)
