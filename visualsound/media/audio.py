"""Windowed audio decoding (PyAV) with torchaudio's sinc resampler, and 16-bit WAV writing.

Timeline: windows count from the file's start (`visualsound.media.info.file_start`, FFmpeg's start time: the
earliest first timestamp of the file's streams), as `read_video`'s do, so ``read_audio(p, start=s)`` is the sound
that plays with ``read_video(p, start=s)``: sample ``i`` of the result plays at stream time ``file_start + s + i /
sr``, and an audio stream that begins after the file does (an mp4 whose audio starts 0.5 s after its picture) is
preceded by zeros. Within the stream, the first decoded frame goes where its pts says (silence up to it); each later
frame follows the one before it directly, by sample count, unless its pts is further from there than the timestamps'
resolution (one tick of the stream's time base plus one sample: 45 samples for the milliseconds of Matroska / WebM /
FLV / ASF at 44.1 kHz, 2 in mp4): only then is it a real discontinuity and placed by its pts (a gap inserts zeros,
an overlap drops the repeated samples). So pts rounded to a millisecond are no gaps or overlaps (no clicks),
rounding errors never add up (the position follows the sample count), and a stream whose timestamps drift from its
sample count re-syncs by one gap or overlap each time the drift exceeds the resolution.

A window read after a seek starts from the pts of the first frame decoded there, which is exact on time bases
finer than a sample (mp4, MPEG-TS). On coarser ones it is moved onto the frame grid when it is within the
resolution of it: the end of the stream's first frame plus whole frames of the length of the frame decoded
there, where a decode from the start puts it. So a window equals the same samples of a full decode for codecs
whose frames after the first have one length (AAC, MP3, AC-3, Opus at one frame duration, WMA, PCM in equal
packets) when no discontinuity comes before it; otherwise (Vorbis's varying block sizes, after a gap off the
grid) it can be off by up to the resolution.

AAC priming and padding: FFmpeg's mp4 demuxer turns the edit list into "skip samples" on the first packet, so
the ~1024 encoder-delay (priming) samples are dropped by the decoder and the first frame has pts 0. The padding at
the end (up to the next 1024-sample frame) is *not* dropped by FFmpeg: a 10 s 44.1 kHz AAC track decodes to
441,344 samples. ``read_audio(trim_padding=True)`` (default) cuts the decode at the stream's edit-list duration
(441,000 samples, as `probe` reports in ``num_samples``); ``trim_padding=False`` keeps what FFmpeg decodes. Only
the mp4 / mov family states such a sample-exact duration (`edit_list_samples`); from any other container every
decoded sample is returned (an MPEG-TS stream's duration is FFmpeg's guess from timestamps or the bit rate and can
fall short of the audio by several frames; ASF states milliseconds; Matroska / WebM and FLV state none).

After a seek the AAC decoder's overlap state is empty, so the reader starts decoding at least
``_PREROLL`` samples before the window and discards them: the window's samples equal a full decode's (up to
~1e-5 from AAC's noise substitution; Opus's decoder takes ~0.25 s to converge, so the start of an Opus window can
differ more). A window starting within ``_PREROLL`` samples of the stream start is
decoded from the first packet without any seek (a seek to the start skips the AAC priming packet, so the first
1024 samples would decode cold, with ~450 zeros), so a read from the start equals a plain sequential decode
(`decode_audio_stream`, the FAD / KLD / ImageBind readers) exactly.

Format changes: one stream is one ``[C, N]`` signal at one rate, so a decoded frame whose channel count or sample
rate differs from the frame before it (MPEG-TS recordings of a 2.0 and a 5.1 broadcast joined with ``cat``), or
whose rate differs from the stream's stated one (`read_audio` places samples by it), raises
`AudioFormatChangeError` saying what changed and when (seconds from the file's start in `read_audio`, from the
stream's start in `decode_audio_stream`). Nothing is mixed or resampled within a stream; a `read_audio` window
that lies wholly within one part of a file whose channel count changes reads that part as it is (its rate is
the stream's).

Damaged packets: a packet the decoder rejects (one bad AC-3 frame in an AVI) is skipped, counted in the
`DecodeReport` passed as ``report`` and logged, as FFmpeg's own tools do; the samples around it keep their
timestamps (`read_audio` fills the hole with silence, `decode_audio_stream` appends what decodes, as libsndfile and
torchaudio do).

Resampling uses ``torchaudio.functional.resample`` (``sinc_interp_hann``, width 6, rolloff 0.99). The window is
decoded with a margin on both sides and its first sample aligned to the resampler's period, so a resampled window
equals the same slice of the whole file resampled at once (up to float rounding).
"""

from __future__ import annotations

import logging
import math
import wave

import av
import numpy as np
import torch
import torchaudio.functional as AF

from visualsound.media.errors import (
    AudioFormatChangeError,
    MediaError,
    MediaWindowError,
    MediaWriteError,
    NoAudioStreamError,
    TruncatedMediaError,
)
from visualsound.media.info import (
    TIMESTAMP_JUMP_SEC,
    DecodeReport,
    PathLike,
    audio_stream,
    check_window,
    decode_tolerant,
    edit_list_samples,
    file_start,
    media_error,
    open_media,
    stream_time,
    timestamp_jump_error,
)
from visualsound.utils.atomic import atomic_open

log = logging.getLogger(__name__)

_PREROLL = 4096  # source samples decoded and discarded after a seek (AAC needs 1 frame of 1024, MP3 ~ 1152)
_INT_SCALE = {"s16": 32768.0, "s32": 2147483648.0, "u8": 128.0}


def frame_to_float(frame: av.AudioFrame) -> np.ndarray:
    """Decoded audio frame -> float32 ``[C, n]`` in [-1, 1] (planar or packed, float or integer samples).

    Integer sample ``k`` becomes ``k / 2**(bits - 1)`` (``u8``: ``(k - 128) / 128``), bit-identical to
    libsndfile's / ``torchaudio.load``'s float32 view of PCM, so the metric readers that mimic those (FAD, KLD,
    ImageBind preprocessing) share this conversion. Raises `MediaError` for a sample format PyAV cannot export.
    """
    arr = frame.to_ndarray()
    fmt = frame.format
    channels = len(frame.layout.channels)
    if not fmt.is_planar:
        arr = arr.reshape(-1, channels).T
    base = fmt.name.rstrip("p")
    if base in ("flt", "dbl"):
        return arr.astype(np.float32, copy=False)
    if base == "u8":
        return ((arr.astype(np.float32) - 128.0) / 128.0)
    if base in _INT_SCALE:
        return (arr.astype(np.float32) / _INT_SCALE[base])
    raise MediaError(f"unsupported audio sample format {fmt.name}")


def _frame_format(frame: av.AudioFrame) -> tuple[int, int]:
    """``(channels, sample rate)`` of a decoded frame."""
    return len(frame.layout.channels), int(frame.sample_rate)


def _describe_change(before: tuple[int, int], after: tuple[int, int]) -> str:
    """"from 2 to 6 channels", "from 48000 Hz to 44100 Hz", or both joined by "and"."""
    parts = []
    if before[0] != after[0]:
        parts.append(f"from {before[0]} to {after[0]} channels")
    if before[1] != after[1]:
        parts.append(f"from {before[1]} Hz to {after[1]} Hz")
    return " and ".join(parts)


class _FormatCheck:
    """Raises `AudioFormatChangeError` for a decoded frame whose channel count or sample rate differs from the
    frame before it, or whose sample rate differs from `rate` (the rate a reader placed the samples by). Times in
    the message are seconds from `start` (`read_audio`: the file's start; `decode_audio_stream`: the stream's)."""

    def __init__(self, path: PathLike, start: float = 0.0, rate: int | None = None) -> None:
        self.path, self.start, self.rate = path, start, rate
        self.last: tuple[int, int] | None = None

    def _at(self, frame: av.AudioFrame) -> str:
        if frame.pts is None or frame.time_base is None:
            return "an unknown time"
        return f"{float(frame.pts * frame.time_base) - self.start:.3f} s"

    def __call__(self, frame: av.AudioFrame) -> None:
        fmt = _frame_format(frame)
        if self.last is not None and fmt != self.last:
            raise AudioFormatChangeError(
                f"{self.path}: the audio stream changes {_describe_change(self.last, fmt)} at {self._at(frame)}; "
                "it cannot be read as one signal (no channel mixing or resampling within a stream)")
        if self.rate is not None and fmt[1] != self.rate:
            raise AudioFormatChangeError(
                f"{self.path}: the audio at {self._at(frame)} is {fmt[1]} Hz, but the stream states {self.rate} Hz "
                "(the rate changes within the stream, or the header is wrong); no resampling within a stream")
        self.last = fmt


def audio_frames_to_array(frames: list[av.AudioFrame], path: PathLike = "?", start: float = 0.0) -> np.ndarray:
    """Decoded audio frames (all of one stream) -> float32 ``[C, N]``, their samples concatenated: the same values
    as concatenating `frame_to_float` of each frame. Planar float frames (AAC's ``fltp``) are copied plane by
    plane straight into one array; other formats go through `frame_to_float`. No frames -> ``[0, 0]``. Raises
    `AudioFormatChangeError` (naming `path` and the time from `start`, the stream's start in seconds) when the
    channel count or sample rate changes between frames."""
    if not frames:
        return np.zeros((0, 0), dtype=np.float32)
    check = _FormatCheck(path, start)
    for fr in frames:
        check(fr)
    channels = len(frames[0].layout.channels)
    if any(fr.format.name != "fltp" for fr in frames):
        return np.ascontiguousarray(np.concatenate([frame_to_float(fr) for fr in frames], axis=1))
    out = np.empty((channels, sum(fr.samples for fr in frames)), dtype=np.float32)
    pos = 0
    for fr in frames:
        n = fr.samples
        for c, plane in enumerate(fr.planes[:channels]):
            out[c, pos:pos + n] = np.frombuffer(plane, dtype=np.float32, count=n)
        pos += n
    return out


def decode_audio_stream(path: PathLike, resample_s16_to: int | None = None, report: DecodeReport | None = None
                        ) -> tuple[np.ndarray, int]:
    """Every decoded frame of the audio stream (`info.audio_stream`: the default one), appended as is: float32
    ``[C, N]`` and its sample rate.

    No timestamp placement and no padding trim (unlike `read_audio`): what libsndfile (``soundfile.read``) and
    ``torchaudio.load`` return for a whole file, which the FAD and KLD readers reproduce; the rate is the decoded
    frames' (the stream header's when nothing decodes). `resample_s16_to` first converts with libswresample to
    16-bit at that rate, as ``ffmpeg -ar RATE`` extraction to a wav does. Raises `NoAudioStreamError` (no audio
    stream, or one that decodes to no samples), `AudioFormatChangeError` (the channel count or sample rate changes
    within the stream), `TruncatedMediaError` (undecodable data) and the errors of `open_media`; rejected packets
    are skipped and counted in `report`.
    """
    with open_media(path) as container:
        stream = audio_stream(container)
        if stream is None:
            raise NoAudioStreamError(f"{path}: no audio stream")
        rate = int(stream.codec_context.sample_rate or stream.rate)
        start = stream_time(stream, stream.start_time)
        frames: list[av.AudioFrame] = []
        try:
            if resample_s16_to is None:
                frames.extend(decode_tolerant(container, stream, path, report))
                if frames:
                    rate = int(frames[0].sample_rate)
            else:
                rate = int(resample_s16_to)
                resampler = av.AudioResampler(format="s16", layout=stream.layout.name, rate=rate)
                check = _FormatCheck(path, start)
                for frame in decode_tolerant(container, stream, path, report):
                    check(frame)  # before the resampler, which would reject (or silently mix) another format
                    frames.extend(resampler.resample(frame))
                frames.extend(resampler.resample(None))
            audio = audio_frames_to_array(frames, path, start)
        except av.error.FFmpegError as e:
            raise media_error(path, "audio decoding failed", e, TruncatedMediaError) from e
    if not audio.size:
        raise NoAudioStreamError(f"{path}: the audio stream decodes to no samples")
    return audio, rate


def read_audio(path: PathLike, start: float = 0.0, duration: float | None = None, sample_rate: int | None = None,
               mono: bool = False, trim_padding: bool = True, report: DecodeReport | None = None) -> torch.Tensor:
    """Decode ``[start, start + duration)`` seconds of the audio stream (`info.audio_stream`: the one
    flagged default, else the first) as float32 ``[C, N]``.

    ``sample_rate=None`` keeps the source rate; otherwise the audio is resampled with torchaudio's sinc
    resampler. ``mono=True`` averages the channels (``C = 1``), otherwise channels are preserved. ``N`` is
    ``round(duration * sr)`` (fewer when the window runs past the end); ``duration=None`` reads to the end.
    ``trim_padding=True`` cuts the end at the mp4 / mov edit list (see the module docstring); other containers
    return every decoded sample either way. Raises `NoAudioStreamError`, `MediaWindowError`,
    `AudioFormatChangeError` (a decoded frame's channel count or sample rate differs from the frame before it or
    from the stream's stated rate), `TruncatedMediaError` and the errors of `open_media`; packets the decoder
    rejects are skipped (silence in their place) and counted in `report`.
    """
    return read_audio_with_rate(path, start, duration, sample_rate, mono, trim_padding, report)[0]


def read_audio_with_rate(path: PathLike, start: float = 0.0, duration: float | None = None,
                         sample_rate: int | None = None, mono: bool = False, trim_padding: bool = True,
                         report: DecodeReport | None = None) -> tuple[torch.Tensor, int]:
    """`read_audio` and the rate of what it returns (the source's when `sample_rate` is None), from one opening
    of the file."""
    check_window(start, duration)
    if sample_rate is not None and sample_rate <= 0:
        raise MediaWindowError(f"sample_rate must be > 0, got {sample_rate}")
    container = open_media(path)
    try:
        stream = audio_stream(container)
        if stream is None:
            raise NoAudioStreamError(f"{path}: no audio stream")
        src_sr = int(stream.codec_context.sample_rate)
        dst_sr = src_sr if sample_rate is None else int(sample_rate)
        t0 = file_start(container)  # windows count from the file's start, as `read_video`'s do
        total = edit_list_samples(container, stream) if trim_padding else None
        if total is not None:  # the edit list counts from the stream's own start
            total += int(round((stream_time(stream, stream.start_time) - t0) * src_sr))
        # output window in destination samples, relative to t0
        j0 = int(round(start * dst_sr))
        n_out = None if duration is None else int(round(duration * dst_sr))
        if dst_sr == src_sr:
            a, b, margin = j0, (None if n_out is None else j0 + n_out), 0
        else:
            period = src_sr // math.gcd(src_sr, dst_sr)  # source samples per resampler phase cycle
            margin = 16 * int(math.ceil(src_sr / min(src_sr, dst_sr))) + 64
            first_src = int(math.floor(j0 * src_sr / dst_sr)) - margin
            a = max(0, first_src // period * period)
            b = None if n_out is None else int(math.ceil((j0 + n_out) * src_sr / dst_sr)) + margin
        if total is not None and b is not None:
            b = min(b, total)
        elif total is not None:
            b = total
        if b is not None and a >= b:
            raise MediaWindowError(f"{path}: window start {start:.3f} s is at or after the end of the audio")
        x = _decode_range(container, stream, a, b, t0, src_sr, path, report)
    except av.error.FFmpegError as e:
        raise media_error(path, "audio decoding failed", e, TruncatedMediaError) from e
    finally:
        container.close()
    if x.shape[1] == 0:
        raise MediaWindowError(f"{path}: no audio samples in window start={start} duration={duration}")
    wav = torch.from_numpy(x)
    if mono:
        wav = wav.mean(dim=0, keepdim=True)
    if dst_sr != src_sr:
        wav = AF.resample(wav, src_sr, dst_sr)
        off = j0 - a * dst_sr // src_sr
        wav = wav[:, off:] if n_out is None else wav[:, off:off + n_out]
    return wav.contiguous(), dst_sr


class _Timeline:
    """Where decoded frames go on one stream's sample timeline (module docstring, "Timeline"): a frame's pts gives
    its sample index ``round((pts - t0) * sr)``, exact to `tol` samples (one time-base tick plus one sample); a
    frame within `tol` of the end of the frame before it follows it directly. On a time base coarser than a
    sample, a frame placed by its pts (the first after a seek, or after a real gap) is moved onto the frame grid
    when it is within `tol` of it: the end of the stream's first frame plus whole frames of its own length, where
    a decode from the start puts it when the stream's frames after the first have one length."""

    def __init__(self, stream: av.stream.Stream, t0: float, sr: int) -> None:
        self.stream, self.t0, self.sr = stream, t0, sr
        ticks = float(stream.time_base * sr)  # samples per time-base tick
        self.tol = int(math.floor(ticks)) + 1
        self.coarse = ticks > 1
        self.grid: int | None = None  # coarse time bases: where the stream's first frame ends

    def index(self, frame: av.AudioFrame) -> int | None:
        """The sample index (relative to `t0`) that `frame`'s pts states; None without a pts."""
        if frame.pts is None:
            return None
        return int(round((stream_time(self.stream, frame.pts) - self.t0) * self.sr))

    def snap(self, idx: int, n: int) -> int:
        """`idx` moved onto the frame grid of `n`-sample frames when it is within `tol` of it, else `idx`."""
        if not self.coarse or self.grid is None or n <= 0:
            return idx
        on_grid = self.grid + (idx - self.grid + n // 2) // n * n
        return on_grid if abs(on_grid - idx) <= self.tol else idx

    def place(self, idx: int | None, pos: int, n: int) -> int:
        """Where an `n`-sample frame whose pts states `idx` goes when the frame before it ended at `pos`: at `pos`
        unless the pts is further from it than `tol` (a real gap or overlap: then by its pts)."""
        if idx is None or abs(idx - pos) <= self.tol:
            return pos
        return self.snap(idx, n)

    def find_grid(self, container: av.container.InputContainer, path: PathLike,
                  report: DecodeReport | None) -> None:
        """Decode the stream's first frame (the container is at its start) to set the frame grid."""
        first = next(decode_tolerant(container, self.stream, path, report), None)
        if first is not None:
            self.grid = (self.index(first) or 0) + first.samples


def _decode_range(container: av.container.InputContainer, stream: av.stream.Stream, a: int, b: int | None,
                  t0: float, sr: int, path: PathLike = "?", report: DecodeReport | None = None) -> np.ndarray:
    """Source samples ``[a, b)`` (relative to `t0`; ``b=None`` = to the end) as float32 ``[C, b - a]``, placed on
    the timeline by `_Timeline`."""
    timeline = _Timeline(stream, t0, sr)
    seek_sample = a - _PREROLL
    at_start = True  # the demuxer is at the first packet: a window near the start is decoded without a seek
    if seek_sample > 0 and timeline.coarse:
        timeline.find_grid(container, path, report)
        at_start = False
    while True:
        from_start = seek_sample <= 0
        if not from_start:
            container.seek(int(math.floor((t0 + seek_sample / sr) / stream.time_base)), stream=stream, backward=True)
        elif not at_start:
            container.seek(stream.start_time or 0, stream=stream, backward=True)
        at_start = False
        check = _FormatCheck(path, t0, sr)
        chunks: list[np.ndarray] = []
        pos = None  # sample index (relative to t0) just after the last kept sample
        first_idx = None
        for frame in decode_tolerant(container, stream, path, report):
            check(frame)
            idx = timeline.index(frame)
            data = frame_to_float(frame)
            n = data.shape[1]
            if pos is None:
                first_idx = idx if idx is not None else 0
                if not from_start and first_idx > a - min(_PREROLL, a) // 2:
                    break  # landed too late to discard the decoder's warm-up frame: seek further back
                pos = timeline.snap(first_idx, n)
                if from_start and timeline.grid is None:
                    timeline.grid = pos + n
            else:
                at = timeline.place(idx, pos, n)
                if at > pos:  # a gap in the pts: fill with silence
                    chunks.append(np.zeros((data.shape[0], at - pos), np.float32))
                    pos = at
                elif at < pos - TIMESTAMP_JUMP_SEC * sr:  # not an overlap: the clock went back (joined files)
                    raise timestamp_jump_error(path, stream, (t0 + pos / sr, t0 + at / sr))
                elif at < pos:  # an overlap: drop the samples already placed
                    data = data[:, pos - at:]
            chunks.append(data)
            pos += data.shape[1]
            if b is not None and pos >= b:
                break
        else:
            break
        if b is not None and pos is not None and pos >= b:
            break
        log.debug("audio seek to sample %d landed at %s; seeking further back", seek_sample, first_idx)
        seek_sample -= max(sr, _PREROLL)
    if pos is None:
        return np.zeros((stream.codec_context.channels, 0), np.float32)
    x = np.concatenate(chunks, axis=1) if chunks else np.zeros((stream.codec_context.channels, 0), np.float32)
    start_idx = pos - x.shape[1]
    if start_idx > a:  # the stream starts after the requested sample: pad with zeros
        x = np.concatenate([np.zeros((x.shape[0], start_idx - a), np.float32), x], axis=1)
        start_idx = a
    lo = a - start_idx
    hi = x.shape[1] if b is None else b - start_idx
    return np.ascontiguousarray(x[:, lo:hi])


def write_wav(path: PathLike, audio: torch.Tensor | np.ndarray, sample_rate: int) -> None:
    """Write float ``[C, N]`` audio in [-1, 1] as a 16-bit PCM WAV file, atomically.

    Values outside [-1, 1] are clipped (with a warning). Raises `MediaWriteError` for a wrong shape.
    """
    x = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    if x.ndim != 2 or x.shape[0] > 64:
        raise MediaWriteError(f"audio must be [C, N] with C <= 64, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise MediaWriteError(f"audio for {path} contains NaN or inf")
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak > 1.0:
        log.warning("clipping audio written to %s (peak %.3f)", path, peak)
    pcm = np.clip(np.round(x.astype(np.float64) * 32767.0), -32768, 32767).astype("<i2")
    with atomic_open(path, "wb") as f, wave.open(f, "wb") as w:
        w.setnchannels(x.shape[0])
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.T.tobytes())
