"""The exact VisualSound/ImageBind clip preprocessing, on PyAV + torch (no decord, no pytorchvideo).

Reproduces upstream ``load_and_transform_video_data`` / ``load_and_transform_audio_data`` as run with the pinned
pytorchvideo commit (see the parity fixture README of ``imagebind``):

* **Windows** (`clip_windows`): ``D`` is a Python float; arithmetic is exact on ``Fraction(D)``:
  ``step = max(D - 2, 0) / max(n - 1, 1)``, window k = ``[k*step, k*step + 2)``. NOT the PyPI
  pytorchvideo 0.1.5 sampler, which divides by ``n`` and never reaches the end of the clip.
* **Video**, 5 windows: frames are the demuxed packets in pts order (decord's indexing), less the packets
  flagged discard (the frames an mp4 edit list skips: decoded for reference, never shown), ``D = frames /
  avg_fps``; window ``[s, e)`` covers indices ``ceil(fps*s) .. min(ceil(fps*e), frames)`` (float products) and
  keeps its first and last frame. RGB24 / 255 -> bilinear resize of the short side to 224 (long side
  ``floor(long/short*224)``, no antialias) -> CLIP mean/std -> 3 crops of 224 along the long axis at
  ``0, ceil((L-224)/2), L-224`` -> ``[15, 3, 2, 224, 224]`` ordered ``3*window + crop``.
* **Audio**, 3 windows: all channels decoded (AAC priming dropped, end padding kept), torchaudio sinc
  resampling to 16 kHz, ``D = N16 / 16000``, sample bounds ``int(bound * 16000)``; per window subtract one
  mean over all channels (in place, as upstream), Kaldi fbank of channel 0 (128 mel bins, 25 ms / 10 ms, Hann,
  no dither), zero-pad to 204 frames, then ``(x + 4.268) / 9.138`` -> ``[3, 1, 128, 204]``.

Decoding reads every packet once (demuxing is cheap) but decodes video only from the keyframe before each
selected frame up to that frame, skips non-reference frames that are not selected, and converts only the 10
selected frames to RGB (one swscale thread: `frame_to_rgb`). Display rotation (90/180/270) is applied, as
decord does. Audio is decoded whole (the sample count fixes the windows), but only the 16 kHz samples inside
the 3 windows are resampled (`resample_span_to_16k`: the same sinc kernel on the source samples those outputs
read, bit-identical to slicing the whole resampled waveform). The H.264 reference frames up to the last
selected frame must still all be decoded (a 10 s clip often has a single keyframe): that is most of the time.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from fractions import Fraction
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from visualsound.errors import ToolkitError
from visualsound.media.audio import audio_frames_to_array
from visualsound.media.video import frame_to_rgb

log = logging.getLogger(__name__)

CLIP_DURATION = 2
VIDEO_CLIPS = 5
AUDIO_CLIPS = 3
FRAMES_PER_CLIP = 2
IMAGE_SIZE = 224
NUM_CROPS = 3
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
AUDIO_SAMPLE_RATE = 16000
NUM_MEL_BINS = 128
TARGET_LEN = 204
FBANK_MEAN = -4.268
FBANK_STD = 9.138
KALDI_WINDOW_SAMPLES = 400  # 25 ms at 16 kHz: shorter audio yields no fbank frame at all

STATUSES = ("missing", "corrupt", "truncated", "no_audio", "no_video", "silent", "too_short")


class ClipError(ToolkitError):
    """A clip cannot be preprocessed. ``status`` is one of `STATUSES` (what the scoring job records)."""

    def __init__(self, status: str, message: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown clip status {status!r}; known: {STATUSES}")
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------- sampling rules
def clip_windows(duration: float, num_clips: int,
                 clip_duration: int = CLIP_DURATION) -> list[tuple[Fraction, Fraction]]:
    """``[start, end)`` of `num_clips` windows, exact rationals on the float `duration` (pinned pytorchvideo
    ``ConstantClipsPerVideoSampler``): the first starts at 0, the last ends at `duration` (all are
    ``[0, clip_duration)`` when ``duration <= clip_duration``)."""
    d = Fraction(duration)
    step = max(d - clip_duration, 0) / max(num_clips - 1, 1)
    return [(step * k, step * k + clip_duration) for k in range(num_clips)]


def video_frame_indices(num_frames: int, fps: float) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Decoded index ranges ``[start, end)`` and the kept (first, last) frame of each of the 5 video windows."""
    if num_frames <= 0 or not fps > 0:
        raise ValueError(f"video_frame_indices needs frames > 0 and fps > 0, got {num_frames}, {fps}")
    ranges, kept = [], []
    for start, end in clip_windows(num_frames / fps, VIDEO_CLIPS):
        lo = math.ceil(fps * start)  # float * Fraction -> float product, as upstream
        hi = min(math.ceil(fps * end), num_frames)
        if hi <= lo:
            raise ValueError(f"empty frame range [{lo}, {hi}) for window [{start}, {end}) of {num_frames} frames")
        positions = torch.linspace(0, hi - lo - 1, FRAMES_PER_CLIP).long().tolist()  # UniformTemporalSubsample
        ranges.append((lo, hi))
        kept.append(tuple(lo + p for p in positions))
    return ranges, kept


def audio_window_samples(num_samples_16k: int) -> list[tuple[int, int]]:
    """``[start, end)`` sample bounds of the 3 audio windows in the 16 kHz signal of `num_samples_16k` samples."""
    return [(int(s * AUDIO_SAMPLE_RATE), int(e * AUDIO_SAMPLE_RATE))
            for s, e in clip_windows(num_samples_16k / AUDIO_SAMPLE_RATE, AUDIO_CLIPS)]


# ---------------------------------------------------------------------------------------------- transforms
def crop_offsets(height: int, width: int, size: int = IMAGE_SIZE) -> list[tuple[int, int]]:
    """Top-left ``(y, x)`` of the 3 crops: along the long axis (height if portrait, else width) at
    ``0, ceil((L - size) / 2), L - size``; the short axis is centred (0 after the short-side resize)."""
    y_mid, x_mid = math.ceil((height - size) / 2), math.ceil((width - size) / 2)
    if height > width:
        return [(0, x_mid), (y_mid, x_mid), (height - size, x_mid)]
    return [(y_mid, 0), (y_mid, x_mid), (y_mid, width - size)]


def resized_size(height: int, width: int, size: int = IMAGE_SIZE) -> tuple[int, int]:
    """Short side to `size`, long side ``floor(long / short * size)`` (pytorchvideo ``short_side_scale``)."""
    if width < height:
        return int(math.floor(float(height) / width * size)), size
    return size, int(math.floor(float(width) / height * size))


def transform_video(frames: torch.Tensor) -> torch.Tensor:
    """frames uint8 ``[W, 2, H, W_px, 3]`` (W windows of 2 RGB frames) -> float32 ``[W*3, 3, 2, 224, 224]``.

    The same float32 operations in the same order as upstream (``/255``, bilinear resize with colour as batch and
    time as channels, ``(x - mean) / std``, crops), done in place on one buffer and with the crops copied straight
    into the output, so the values are bit-identical to the plain tensor expression.
    """
    assert frames.ndim == 5 and frames.shape[1] == FRAMES_PER_CLIP and frames.shape[-1] == 3, \
        f"transform_video expects uint8 [W, 2, H, W, 3], got {tuple(frames.shape)}"
    n, _, h, w, _ = frames.shape
    x = torch.empty((n, 3, FRAMES_PER_CLIP, h, w), dtype=torch.float32)  # [W, 3, 2, H, W]
    x.copy_(frames.permute(0, 4, 1, 2, 3)).div_(255.0)
    rh, rw = resized_size(h, w)
    y = F.interpolate(x.view(n * 3, FRAMES_PER_CLIP, h, w), size=(rh, rw), mode="bilinear", align_corners=False)
    del x
    y = y.view(n, 3, FRAMES_PER_CLIP, rh, rw)
    y.sub_(torch.tensor(CLIP_MEAN, dtype=y.dtype).view(1, 3, 1, 1, 1))
    y.div_(torch.tensor(CLIP_STD, dtype=y.dtype).view(1, 3, 1, 1, 1))
    out = torch.empty((n, NUM_CROPS, 3, FRAMES_PER_CLIP, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.float32)
    for i, (y0, x0) in enumerate(crop_offsets(rh, rw)):
        out[:, i].copy_(y[..., y0:y0 + IMAGE_SIZE, x0:x0 + IMAGE_SIZE])
    return out.view(n * NUM_CROPS, 3, FRAMES_PER_CLIP, IMAGE_SIZE, IMAGE_SIZE)  # index 3*window + crop


@functools.lru_cache(maxsize=8)
def _sinc_kernel(sample_rate: int) -> tuple[torch.Tensor, int, int, int]:
    """torchaudio's float32 sinc kernel ``[new, 1, 2*width + orig]`` for `sample_rate` -> 16 kHz, with ``width``
    and the gcd-reduced rates ``orig``, ``new`` (the kernel `torchaudio.functional.resample` builds for a float32
    waveform on every call; computed once per rate here)."""
    import torchaudio.transforms

    resampler = torchaudio.transforms.Resample(sample_rate, AUDIO_SAMPLE_RATE, dtype=torch.float32)
    g = math.gcd(sample_rate, AUDIO_SAMPLE_RATE)
    return resampler.kernel, resampler.width, sample_rate // g, AUDIO_SAMPLE_RATE // g


def resampled_length(num_samples: int, sample_rate: int) -> int:
    """Length of `num_samples` resampled to 16 kHz, exactly as torchaudio computes it (``ceil`` of the ratio as a
    float32 tensor, which can differ from the exact integer ceiling)."""
    if sample_rate == AUDIO_SAMPLE_RATE:
        return num_samples
    _, _, orig, new = _sinc_kernel(sample_rate)
    return int(torch.ceil(torch.as_tensor(new * num_samples / orig)).long())


def resample_to_16k(waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """float32 ``[C, N]`` at `sample_rate` -> ``[C, resampled_length(N)]`` (about ``16000 * N / sample_rate``),
    bit-identical to ``torchaudio.functional.resample`` with its defaults (sinc_interp_hann, width 6, rolloff
    0.99, kernel in float32, here cached per rate); unchanged if already 16 kHz."""
    return resample_span_to_16k(waveform, sample_rate, 0, resampled_length(waveform.shape[1], sample_rate))


def resample_span_to_16k(waveform: torch.Tensor, sample_rate: int, start: int, end: int) -> torch.Tensor:
    """Samples ``[start, end)`` of `waveform` (float32 ``[C, N]``) resampled to 16 kHz -> ``[C, end - start]``,
    bit-identical to ``resample_to_16k(waveform, sample_rate)[:, start:end]`` but convolving only the source
    samples those outputs need (torchaudio's sinc kernel with its ``width`` context on both sides, zeros past the
    ends as torchaudio pads). Returns a new tensor (a copy of the slice if already 16 kHz)."""
    assert waveform.ndim == 2 and waveform.dtype == torch.float32, \
        f"resample_span_to_16k expects float32 [C, N], got {waveform.dtype} {tuple(waveform.shape)}"
    length = resampled_length(waveform.shape[1], sample_rate)
    if not 0 <= start <= end <= length:
        raise ValueError(f"span [{start}, {end}) outside the {length} samples at 16 kHz")
    if sample_rate == AUDIO_SAMPLE_RATE:
        return waveform[:, start:end].clone()
    if end == start:
        return waveform.new_zeros((waveform.shape[0], 0))
    kernel, width, orig, new = _sinc_kernel(sample_rate)
    # output j is phase j % new of conv position j // new, which reads padded samples [pos*orig, pos*orig + K),
    # i.e. source samples [pos*orig - width, pos*orig - width + K)
    first, last = start // new, (end - 1) // new
    lo, hi = first * orig - width, last * orig - width + kernel.shape[-1]
    n = waveform.shape[1]
    seg = F.pad(waveform[:, max(lo, 0):min(hi, n)], (max(-lo, 0), max(hi - n, 0)))
    out = F.conv1d(seg[:, None], kernel, stride=orig)  # [C, new, last - first + 1]
    return out.transpose(1, 2).reshape(waveform.shape[0], -1)[:, start - first * new:end - first * new]


def _window_fbanks(segments: list[torch.Tensor]) -> torch.Tensor:
    """The 3 window tensors ``[C, n]`` (views; their means are subtracted IN PLACE, in order, as upstream does on
    its shared waveform) -> normalised fbanks ``[3, 1, 128, 204]``."""
    import torchaudio.compliance.kaldi as kaldi

    out = []
    for seg in segments:
        seg -= seg.mean()
        fb = kaldi.fbank(seg, htk_compat=True, sample_frequency=AUDIO_SAMPLE_RATE, use_energy=False,
                         window_type="hanning", num_mel_bins=NUM_MEL_BINS, dither=0.0, frame_length=25,
                         frame_shift=10).transpose(0, 1)  # [128, frames], channel 0 only
        fb = F.pad(fb, (0, TARGET_LEN - fb.shape[1])) if fb.shape[1] < TARGET_LEN else fb[:, :TARGET_LEN]
        out.append(((fb - FBANK_MEAN) / FBANK_STD)[None])
    return torch.stack(out)


def audio_to_fbanks(waveform_16k: torch.Tensor) -> torch.Tensor:
    """float32 ``[C, N16]`` -> normalised fbanks ``[3, 1, 128, 204]`` (see the module docstring)."""
    assert waveform_16k.ndim == 2, f"audio_to_fbanks expects [C, N16], got {tuple(waveform_16k.shape)}"
    wav = waveform_16k.clone()  # upstream subtracts each window's mean in place on the shared waveform
    return _window_fbanks([wav[:, start:end] for start, end in audio_window_samples(wav.shape[1])])


def audio_fbanks_from_source(waveform: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, int]:
    """float32 ``[C, N]`` at `sample_rate` -> (fbanks ``[3, 1, 128, 204]``, ``N16``), bit-identical to
    ``audio_to_fbanks(resample_to_16k(waveform, sample_rate))`` but resampling only the 16 kHz samples inside
    the 3 windows. They are written at their own offsets into an (otherwise unfilled) ``[C, N16]`` buffer, so
    the window views have upstream's strides (the mean's summation order depends on them) and overlapping
    windows (audio under ~6 s) share samples: an earlier window's in-place mean removal shows in a later one."""
    n16 = resampled_length(waveform.shape[1], sample_rate)
    windows = [(s, min(e, n16)) for s, e in audio_window_samples(n16)]
    if sample_rate == AUDIO_SAMPLE_RATE:
        wav = waveform.clone()
    else:
        wav = waveform.new_empty((waveform.shape[0], n16))
        for s, e in windows:
            wav[:, s:e] = resample_span_to_16k(waveform, sample_rate, s, e)
    return _window_fbanks([wav[:, s:e] for s, e in windows]), n16


# ---------------------------------------------------------------------------------------------- decoding
def _rotate(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display rotation of 0/90/180/270 degrees counter-clockwise (`display_rotation` of the frame)."""
    k = rotation // 90 % 4
    return np.ascontiguousarray(np.rot90(rgb, k=k, axes=(0, 1))) if k else rgb


def _decode_selected(stream: Any, packets: list, wanted: set[int], path: str, report: Any = None
                     ) -> dict[int, Any]:
    """Decode the frames whose pts are in `wanted` from `packets` (decode order) -> {pts: av.VideoFrame}.

    For every wanted frame, decoding starts at the last keyframe at or before its packet (decode order) and
    stops at its packet, then drains; consecutive targets that share a run are decoded in one pass. Packets
    that are not wanted are sent with ``skip_frame=NONREF`` so that unneeded non-reference frames are skipped.
    A packet the decoder rejects is skipped and counted in `report` (a `visualsound.media.info.DecodeReport`);
    a wanted frame that never decodes is a ``corrupt`` `ClipError`.
    """
    import av

    def decode(pk: Any) -> list:
        try:
            return cc.decode(pk)
        except av.error.FFmpegError as e:
            if report is None or pk is None:
                raise
            report.add(path, "video", None if pk.pts is None else float(pk.pts * stream.time_base), e)
            return []

    cc = stream.codec_context
    position = {pk.pts: i for i, pk in enumerate(packets)}
    keyframes = [(i, pk.pts) for i, pk in enumerate(packets) if pk.is_keyframe]
    runs: list[list[int]] = []
    for d in sorted(position[p] for p in wanted):
        # the last keyframe before the target in decode order that is not displayed after it (an open-GOP
        # leading frame needs the previous GOP); the stream start if there is none
        k = max((i for i, pts in keyframes if i <= d and pts <= packets[d].pts), default=0)
        if runs and k <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], d)
        else:
            runs.append([k, d])
    found: dict[int, Any] = {}
    for first, last in runs:
        for pk in packets[first:last + 1]:
            cc.skip_frame = "DEFAULT" if pk.pts in wanted else "NONREF"
            found.update((fr.pts, fr) for fr in decode(pk) if fr.pts in wanted)
        cc.skip_frame = "DEFAULT"
        found.update((fr.pts, fr) for fr in decode(None) if fr.pts in wanted)
        cc.flush_buffers()
    missing = sorted(wanted - found.keys())
    if missing:
        raise ClipError("corrupt", f"{path}: the decoder returned no frame for pts {missing[:5]}")
    return found


def read_clip(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Decode what the preprocessing needs: the 10 selected RGB frames uint8 ``[5, 2, H, W, 3]`` (display
    rotation applied) of the video stream (`visualsound.media.info.video_stream`: a cover picture is not video),
    the whole audio float32 ``[C, N]`` at its own rate, and ``facts`` (see `preprocess_clip`).

    Raises `ClipError` (missing / corrupt / truncated / no_video / no_audio).
    """
    import av

    from visualsound.media import MediaError, open_media
    from visualsound.media.errors import (
        AudioFormatChangeError,
        MissingFileError,
        NoAudioStreamError,
        NoVideoStreamError,
        TimestampJumpError,
        TruncatedMediaError,
    )
    from visualsound.media.info import (
        ClockCheck,
        DecodeReport,
        audio_stream,
        display_rotation,
        frame_rate,
        stream_time,
        video_stream,
    )

    path = str(path)
    report = DecodeReport()
    statuses = ((MissingFileError, "missing"), (TruncatedMediaError, "truncated"),
                (NoVideoStreamError, "no_video"), (NoAudioStreamError, "no_audio"))
    try:
        container = open_media(path)
    except MediaError as e:
        status = next((s for cls, s in statuses if isinstance(e, cls)), "corrupt")
        raise ClipError(status, str(e)) from e
    try:
        try:
            vs = video_stream(container, path)  # cover art is not video
        except NoVideoStreamError as e:
            raise ClipError("no_video", str(e)) from e
        aus = audio_stream(container)  # the default audio stream, as every media reader takes it
        if aus is None:
            raise ClipError("no_audio", f"{path}: no audio stream")
        vs.thread_count = 1
        packets, audio_frames = [], []
        try:
            for pk in container.demux(vs, aus):  # one pass: decode audio now, keep compressed video packets
                if pk.stream.index == aus.index:
                    try:
                        audio_frames.extend(pk.decode())
                    except (av.error.EOFError, av.error.ExitError):
                        raise
                    except av.error.FFmpegError as e:  # FFmpeg's tools skip such a packet: so do we (counted)
                        report.add(path, "audio", None if pk.pts is None else float(pk.pts * aus.time_base), e)
                elif pk.size:
                    packets.append(pk)
            if any(pk.pts is None for pk in packets):
                raise ClipError("corrupt", f"{path}: video packets without timestamps")
            clock = ClockCheck(path, vs)  # decode times never go back, except in recordings joined end to end
            try:
                for pk in packets:
                    if pk.dts is not None:
                        clock(float(pk.dts * vs.time_base))
            except TimestampJumpError as e:
                raise ClipError("corrupt", str(e)) from e
            # the frames that play: packets flagged discard (those an mp4 edit list skips, as in a file cut with
            # `-c copy` between keyframes) are decoded for reference only, and the decoder drops their frames
            shown = [pk for pk in packets if not pk.is_discard]
            if not shown:
                raise ClipError("no_video", f"{path}: the video stream has no packets"
                                + (f" that play ({len(packets)} discarded)" if packets else ""))
            # the average rate (decord's), else FFmpeg's guessed rate (Ogg streams state no average rate); an
            # average that is only the stream's clock (raw DV in FFmpeg 8: 60000) is passed over (`frame_rate`)
            fps = float(frame_rate(vs) or 0)
            if not fps > 0:
                raise ClipError("corrupt", f"{path}: the video stream has neither an average nor a guessed frame "
                                           "rate")
            pts_sorted = sorted(pk.pts for pk in shown)
            _, kept = video_frame_indices(len(shown), fps)
            wanted = {pts_sorted[i] for pair in kept for i in pair}
            decoded = _decode_selected(vs, packets, wanted, path, report)
            rotation = display_rotation(next(iter(decoded.values())))
            frames = None
            for w, pair in enumerate(kept):  # RGB straight into one [5, 2, H, W, 3] array
                for t, i in enumerate(pair):
                    fr = decoded[pts_sorted[i]]
                    rgb = _rotate(frame_to_rgb(fr), display_rotation(fr))
                    if frames is None:
                        frames = np.empty((len(kept), FRAMES_PER_CLIP, *rgb.shape), dtype=np.uint8)
                    if rgb.shape != frames.shape[2:]:
                        raise ClipError("corrupt", f"{path}: frame size changes within the stream "
                                                   f"({rgb.shape[:2]} vs {frames.shape[2:4]})")
                    frames[w, t] = rgb
            waveform = torch.from_numpy(audio_frames_to_array(audio_frames, path, stream_time(aus, aus.start_time)))
        except av.error.FFmpegError as e:
            from visualsound.media.info import ffmpeg_reason

            raise ClipError("corrupt", f"{path}: decoding failed: {ffmpeg_reason(e)}") from e
        except AudioFormatChangeError as e:  # names the file and the time already
            raise ClipError("corrupt", str(e)) from e
        except MediaError as e:
            raise ClipError("corrupt", f"{path}: decoding failed: {e}") from e
        # the decoded frames' rate and channels (one of each, or AudioFormatChangeError above)
        sample_rate = int(audio_frames[0].sample_rate) if audio_frames else int(aus.codec_context.sample_rate)
        channels = int(waveform.shape[0]) if waveform.numel() else int(aus.codec_context.channels)
    finally:
        container.close()
    if not waveform.numel():
        if report.bad_packets.get("audio"):
            raise ClipError("corrupt", f"{path}: no audio packet decodes ({report.bad_packets['audio']} rejected; "
                                       f"first: {report.examples[0]})")
        raise ClipError("no_audio", f"{path}: the audio stream decoded to no samples")
    frames = torch.from_numpy(frames)
    facts = {
        "video_fps": fps, "duration": len(shown) / fps, "num_frames": len(shown),
        "audio_sample_rate": sample_rate, "audio_channels": channels,
        "video_frame_indices": [list(p) for p in kept], "video_size_hw": list(frames.shape[2:4]),
        "video_rotation": rotation, "audio_num_samples": int(waveform.shape[1]),
        "audio_peak": float(max(waveform.max(), -waveform.min())),
        "bad_packets": report.total,
    }
    return frames, waveform, facts


def preprocess_clip(path: str | os.PathLike, silence_threshold: float | None = None,
                    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Decode and transform one clip exactly as upstream ImageBind did for VisualSound.

    Returns ``video`` float32 ``[15, 3, 2, 224, 224]``, ``audio`` float32 ``[3, 1, 128, 204]`` and ``facts``
    (``video_fps``, ``duration`` (= frames / fps, what the sampler used), ``audio_sample_rate``,
    ``audio_channels``, ``num_frames``, plus the sampling details: ``video_frame_indices`` [5][2],
    ``video_size_hw`` (decoded, rotated), ``video_rotation``, ``audio_num_samples``, ``audio_num_samples_16k``,
    ``audio_window_samples`` [3][2], ``audio_peak``, ``bad_packets``: packets the decoders rejected and that were
    skipped, as FFmpeg's tools skip them).

    Raises `ClipError` with ``status`` missing / corrupt / truncated / no_video / no_audio / too_short (fewer
    than 400 samples at 16 kHz) / silent (only if `silence_threshold` is given and the peak is at or below it).
    """
    frames, waveform, facts = read_clip(path)
    if silence_threshold is not None and facts["audio_peak"] <= silence_threshold:
        raise ClipError("silent", f"{path}: audio peak {facts['audio_peak']:.3g} <= silence threshold "
                                  f"{silence_threshold}")
    n16 = resampled_length(facts["audio_num_samples"], facts["audio_sample_rate"])
    if n16 < KALDI_WINDOW_SAMPLES:
        raise ClipError("too_short", f"{path}: {n16} audio samples at 16 kHz, need at least "
                                     f"{KALDI_WINDOW_SAMPLES} for one fbank frame")
    audio, _ = audio_fbanks_from_source(waveform, facts["audio_sample_rate"])
    facts["audio_num_samples_16k"] = n16
    facts["audio_window_samples"] = [list(w) for w in audio_window_samples(n16)]
    return transform_video(frames), audio, facts
