"""Video-to-audio generation for whole videos: loading the pipeline, windows over long / short / odd videos, and
resumable batch mode.

A video of any fps is read at 25 fps. Its audio length is ``int(duration * 86)`` DAC frames (the release's
``scripts/generate.py`` rule; 220 frames for 2.56 s). Videos up to 2.56 s are one window. Longer ones are
generated as the original's chunked generation: windows of 2.56 s every `stride` seconds (default 0.64 s); each
window continues the previous window's codes after the first ``int(86 * stride)`` frames as its prompt and adds
the rest (``ceil(86 * window) - prompt`` new frames). Every window's visual tokens come from its own 2.56 s of
frames, starting on the 16-frame segment grid as the original; frames past the end of the video repeat the last
frame (short videos are padded the same way, and the
audio is trimmed to the video's duration).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import math
import os
import secrets
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vaura.codec import Codec
from vaura.config import VAuraConfig
from vaura.model import Transformer
from vaura.sampler import RowStreams, SamplingParams, StepperPool, generate
from visualsound.errors import CheckpointError, ConfigError, ToolkitError
from visualsound.utils.dtypes import DTYPES

if TYPE_CHECKING:
    from visualsound.media.formats import VideoListing

log = logging.getLogger(__name__)

CODE_RATE = 86  # the release's COMPRESSION_MODEL_FRAME_RATE (44100 / 512 = 86.13)
VIDEO_FPS = 25.0
WINDOW_SECONDS = 2.56
WINDOW_FRAMES = 64  # 2.56 s at 25 fps
SEGMENT_FRAMES = 16  # Segment AVCLIP segment (0.64 s)
CROP = 224  # the visual encoder's input size
# CPU linear backends of `VAuraPipeline.accelerate_cpu` ("auto": thin, else packed, each from its size threshold in
# bytes of linear weights). scripts/bench_sampler.py, 1 thread, whole 2.56 s generation against plain weights
# (docs/measurements/*-thin*.json): thin-linear kernel: paper size (2.7 GB) 2.10x / 1.96x, the 57 MB `mid` preset
# 1.03x / 1.06x, the 2.1 MB tiny debug model 0.88x (per-call overhead); oneDNN packing: paper 1.52x / 1.38x,
# mid 1.08x / 0.98x, tiny 0.91x.
CPU_LINEAR_MODES = ("auto", "thin", "packed", "off")
THIN_MIN_BYTES = 16 * 2 ** 20
PACK_MIN_BYTES = 256 * 2 ** 20


class GenerationError(ToolkitError):
    """A video cannot be turned into audio (bad stride, empty video, ...)."""


@dataclass
class VAuraPipeline:
    """Everything generation needs: the transformer, the visual encoder (``.features(frames)``) and the codec."""

    transformer: Transformer
    visual: torch.nn.Module
    codec: Codec
    debug_weights: bool
    source: str
    compile_step: bool = False  # torch.compile the sampler's static decode step (worth it for long batch jobs)
    dtype: str = "fp32"  # the transformer's weights; the visual encoder runs under autocast to it; the codec fp32

    def set_dtype(self, name: str) -> None:
        """Run generation in `name` (``fp32``, ``bf16`` or ``fp16``, `visualsound.utils.dtypes.DTYPES`): the
        transformer's weights are cast to it and the visual encoder runs under autocast to it; the DAC codec stays
        fp32. fp32 (the default) gives the parity fixture's codes; the others trade accuracy for speed (README,
        "Fidelity of --dtype"). A transformer with a CPU linear backend must stay fp32."""
        if name not in DTYPES:
            raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}")
        if name != "fp32" and self.cpu_linear() != "off":
            raise ConfigError(f"the transformer uses the {self.cpu_linear()} CPU linear backend (fp32 only); "
                              f"load it again for {name}")
        self.transformer.cast(DTYPES[name])
        self.dtype = name

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def cpu_linear(self) -> str:
        """The transformer's linear backend: ``"thin"``, ``"packed"`` or ``"off"`` (plain ``F.linear``)."""
        from vaura.packed import is_packed
        from vaura.thin_linear import uses_thin_linears

        return "packed" if is_packed(self.transformer) else "thin" if uses_thin_linears(self.transformer) else "off"

    def accelerate_cpu(self, mode: str = "auto", rows: int = 2) -> str:
        """Speed up the transformer's linear layers for CPU decoding (the visual encoder and codec stay plain):

        * ``"thin"``: the thin-linear AVX2 kernel (`vaura.thin_linear`; plain weights, no copy), used for products
          of at most `vaura.thin_linear.MAX_ROWS` rows;
        * ``"packed"``: weights pre-packed for oneDNN (`vaura.packed`; frees the plain weights);
        * ``"auto"`` (``vaura generate``'s default): thin where it applies, the model has at least
          `THIN_MIN_BYTES` of linear weights and a decode step's `rows` (2 per sample with CFG) fit the kernel
          (and, with several torch threads, the kernel was built with OpenMP); else packed from `PACK_MIN_BYTES`;
          else nothing;
        * ``"off"``: nothing.

        Both need an fp32 transformer on the CPU and no ``compile_step``; outputs equal the plain model's up to
        float rounding. ``"thin"`` and ``"packed"`` apply at any size or raise `ConfigError` saying why they cannot;
        ``"auto"`` logs why it chose what it did. Returns the backend now in use (see `cpu_linear`). A transformer
        that already uses a backend keeps it for ``"auto"`` or that backend; asking for another raises."""
        from vaura import thin_linear
        from vaura.packed import pack_linears, packing_available

        if mode not in CPU_LINEAR_MODES:
            raise ConfigError(f"CPU linear mode must be one of {CPU_LINEAR_MODES}, got {mode!r}")
        current = self.cpu_linear()
        if current != "off":
            if mode not in ("auto", current):
                raise ConfigError(f"the transformer already uses the {current} CPU linear backend; load it again "
                                  f"for {mode!r}")
            return current
        if mode == "off":
            return "off"
        linears = [m.weight for m in self.transformer.modules() if type(m) is torch.nn.Linear]
        size = sum(w.numel() * w.element_size() for w in linears)
        common = ("the transformer is not on the CPU" if self.device.type != "cpu"
                  else "compile_step is set (torch.compile takes plain weights)" if self.compile_step
                  else f"its linear weights are {sorted({str(w.dtype) for w in linears})}, not fp32"
                  if any(w.dtype != torch.float32 for w in linears) else None)
        del linears  # pack_linears frees each plain weight as it goes: hold no references here
        why: dict[str, str] = {}
        for backend, minimum in (("thin", THIN_MIN_BYTES), ("packed", PACK_MIN_BYTES)):
            if mode not in ("auto", backend):
                continue
            reason = common
            if reason is None and mode == "auto" and size < minimum:  # checked first: building costs a compile
                reason = f"{size / 2 ** 20:.1f} MB of linear weights, under its {minimum // 2 ** 20} MB threshold"
            if reason is None and backend == "thin":
                reason = thin_linear.unavailable_reason(rows)
                if reason is None and mode == "auto" and thin_linear.kernel_threads() < torch.get_num_threads():
                    reason = (f"the kernel was built without OpenMP (one thread) and torch uses "
                              f"{torch.get_num_threads()}")
            if reason is None and backend == "packed" and not packing_available():
                reason = "this torch build has no oneDNN (mkldnn) linear packing"
            if reason is not None:
                if mode == backend:
                    raise ConfigError(f"cannot use the {backend} CPU linear backend: {reason}")
                why[backend] = reason
                continue
            if backend == "thin":
                thin_linear.use_thin_linears(self.transformer)
            else:
                pack_linears(self.transformer, rows=2)  # the layout hint; other hints: no consistent difference
            log.info("CPU linear backend: %s%s", backend, "".join(f" (not {b}: {r})" for b, r in why.items()))
            return backend
        log.info("CPU linear backend: plain F.linear (%s)", "; ".join(f"not {b}: {r}" for b, r in why.items()))
        return "off"


def load_pipeline(checkpoint: str | os.PathLike | None = None, debug_weights: bool = False,
                  device: torch.device | str = "cpu", visual_checkpoint: str | os.PathLike | None = None,
                  codec_checkpoint: str | os.PathLike | None = None, seed: int = 0,
                  visual_config: Any = "paper") -> VAuraPipeline:
    """Load V-AURA for generation.

    * ``debug_weights`` without `checkpoint`: seeded random tiny transformer, tiny MotionFormer and tiny DAC
      (no files read); with one of our own checkpoints: that transformer with the debug encoder and codec;
    * `checkpoint` = a released Lightning ``.ckpt`` or its experiment folder (None = the registry's
      ``vaura_release``): all three parts come from it (the MotionFormer built with `visual_config`, a
      `vaura.synchformer.SynchformerConfig` or its preset name);
    * `checkpoint` = our own `vaura.checkpoint.save_checkpoint` file: the transformer from it, the visual
      encoder from `visual_checkpoint` (None = registry ``avclip_vggsound``), the codec from `codec_checkpoint`
      (None = registry ``dac_44khz``); a checkpoint trained with debug weights gets the debug encoder and codec.

    `visual_checkpoint` / `codec_checkpoint` without one of our own checkpoints, or with one trained on debug
    weights, raise `ConfigError` (they would be ignored).
    """
    from vaura.checkpoint import load_checkpoint, read_own_checkpoint, read_release
    from vaura.codec import load_codec
    from vaura.synchformer import load_visual_encoder

    blob = read_own_checkpoint(checkpoint) if checkpoint is not None else None  # the one read of the file
    own = blob is not None
    if not own and (visual_checkpoint is not None or codec_checkpoint is not None):
        raise ConfigError("a visual encoder / codec checkpoint goes with one of our own V-AURA checkpoints only: "
                          "the released checkpoint carries both, the debug model uses random ones")
    if debug_weights and checkpoint is None:
        log.warning("V-AURA with DEBUG WEIGHTS (seeded random tiny models)")
        return random_pipeline("tiny", device, seed)
    if own:
        transformer, meta = load_checkpoint(checkpoint, device, blob=blob)
        del blob  # a training checkpoint's optimiser state stays unread
        trained_on_debug = debug_weights or bool(meta.get("debug_weights", False))
        if trained_on_debug and (visual_checkpoint is not None or codec_checkpoint is not None):
            raise ConfigError(f"{checkpoint} runs with the debug visual encoder and codec (debug weights); a visual "
                              "encoder / codec checkpoint cannot be used with it")
        if trained_on_debug:  # trained on debug features / codes: pair it with the same debug encoder and codec
            log.warning("%s was trained with DEBUG WEIGHTS; using the debug visual encoder and codec", checkpoint)
        visual = load_visual_encoder(visual_checkpoint, debug_weights=trained_on_debug, device=device)
        codec = load_codec(codec_checkpoint, debug_weights=trained_on_debug, device=device,
                           latent_dim=transformer.cfg.audio_width)
        return _checked(VAuraPipeline(transformer, visual, codec, trained_on_debug, str(checkpoint)))
    if debug_weights:
        raise ConfigError(f"--debug-weights cannot be combined with the released V-AURA checkpoint {checkpoint}: "
                          "give one of our own checkpoints (e.g. runs/NAME/last.pt) or no checkpoint")
    from visualsound.weights import resolve

    path = resolve("vaura_release", checkpoint)
    return pipeline_from_release(read_release(path), device, visual_config, str(path))


def random_pipeline(size: str = "tiny", device: torch.device | str = "cpu", seed: int = 0) -> VAuraPipeline:
    """Seeded random models (``debug_weights``): ``tiny`` = the debug pipeline (tiny transformer, MotionFormer and
    DAC; what ``--debug-weights`` loads); another `VAuraConfig` preset (``mid``, ``paper``) = that transformer with
    the paper MotionFormer and the DAC 44 kHz architecture, for timing and GPU checks at the release's sizes."""
    from vaura.codec import Codec, build_dac, load_codec
    from vaura.model import build_model
    from vaura.synchformer import load_visual_encoder

    cfg = VAuraConfig.preset(size)
    if size == "tiny":
        codec = load_codec(debug_weights=True, latent_dim=cfg.audio_width, seed=seed)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            codec = Codec(build_dac(latent_dim=cfg.audio_width), debug_weights=True)
    transformer = build_model(cfg, debug_weights=True, seed=seed)
    transformer.init_audio_embeddings_from_dac(*codec.quantizer_tensors(), torch.Generator().manual_seed(seed))
    visual = load_visual_encoder(debug_weights=True, config=None if size == "tiny" else "paper")
    source = "debug weights" if size == "tiny" else f"debug weights ({size} size)"
    return _checked(VAuraPipeline(transformer.to(device).eval(), visual.to(device).eval(), codec.to(device), True,
                                  source))


def pipeline_from_release(parts: Any, device: torch.device | str = "cpu", visual_config: Any = "paper",
                          source: str = "release") -> VAuraPipeline:
    """Build the pipeline from `vaura.checkpoint.ReleaseParts` (all loads strict; built on the meta device)."""
    from vaura.checkpoint import load_transformer_state
    from vaura.codec import codec_from_state_dict
    from vaura.synchformer import MotionFormer, SynchformerConfig
    from visualsound.utils.checkpoint import load_state_dict_strict

    with torch.device("meta"):
        transformer = Transformer(parts.config)
        visual = MotionFormer(visual_config if isinstance(visual_config, SynchformerConfig)
                              else SynchformerConfig.preset(visual_config))
    load_transformer_state(transformer, parts.transformer)
    transformer.reset_rope()
    load_state_dict_strict(visual, {k: v.float() for k, v in parts.visual.items()}, what="visual_feature_extractor")
    codec = codec_from_state_dict(parts.codec, device)
    return _checked(VAuraPipeline(transformer.to(device).eval(), visual.to(device).eval(), codec, False, source))


def _checked(pipe: VAuraPipeline) -> VAuraPipeline:
    cfg = pipe.transformer.cfg
    width = int(pipe.visual.cls_token.shape[-1])
    if width != cfg.visual_dim:
        raise CheckpointError(f"{pipe.source}: the model expects {cfg.visual_dim}-d visual features, the visual "
                              f"encoder gives {width}-d")
    if pipe.codec.latent_dim != cfg.audio_width or pipe.codec.n_codebooks != cfg.n_codebooks:
        raise CheckpointError(f"{pipe.source}: the codec (latent {pipe.codec.latent_dim}, {pipe.codec.n_codebooks} "
                              f"codebooks) does not fit the model (audio width {cfg.audio_width}, "
                              f"{cfg.n_codebooks} codebooks)")
    return pipe


# -- windows -------------------------------------------------------------------------------------------------
def total_frames(duration: float) -> int:
    """DAC frames generated for `duration` seconds: ``int(duration * 86)`` (at least 1)."""
    return max(int(duration * CODE_RATE), 1)


@dataclass(frozen=True)
class Window:
    """One generation window: visual frames from ``start`` seconds, ``n_frames`` codes of which the first
    ``prompt`` continue the previous window."""

    start: float
    n_frames: int
    prompt: int


def plan_windows(duration: float, stride: float = 0.64, window: float = WINDOW_SECONDS) -> list[Window]:
    """The original's chunked-generation schedule for a clip of `duration` seconds."""
    if duration <= 0:
        raise GenerationError(f"duration must be > 0, got {duration}")
    total = total_frames(duration)
    if duration <= window:
        return [Window(0.0, total, 0)]
    stride_codes = int(CODE_RATE * stride)
    window_codes = math.ceil(window * CODE_RATE)
    if not 0 < stride_codes < window_codes:
        raise GenerationError(f"stride {stride} s must be > 0 and shorter than the {window} s window")
    plan, offset, prompt = [], 0, 0
    while offset + prompt < total:
        start = offset / CODE_RATE
        n = math.ceil(min(duration - start, window) * CODE_RATE)
        if n <= prompt:
            break
        plan.append(Window(start, n, prompt))
        prompt = n - stride_codes
        offset += stride_codes
    return plan


def window_frames(frames: torch.Tensor, start: float) -> torch.Tensor:
    """The 64 frames (2.56 s at 25 fps) of the window at `start` seconds of frames ``[T, H, W, 3]``; frames past
    the end repeat the last frame. Returns ``[64, H, W, 3]``.

    As the original, the window starts on the 16-frame segment grid: at segment ``ceil(start * 25) // 16``.
    """
    if frames.shape[0] == 0:
        raise GenerationError("the video has no frames")
    first = SEGMENT_FRAMES * (math.ceil(start * VIDEO_FPS - 1e-9) // SEGMENT_FRAMES)
    idx = torch.arange(first, first + WINDOW_FRAMES).clamp(max=frames.shape[0] - 1)
    return frames[idx]


def read_frames(video: str | os.PathLike, start: float, duration: float, chunk_frames: int = 256,
                report: Any = None, device: torch.device | str | None = None) -> torch.Tensor:
    """The 25 fps frames of ``[start, start + duration)`` as the visual encoder sees them: uint8
    ``[T, 224, 224, 3]``.

    The video is decoded in chunks of `chunk_frames` frames (on the same 25 fps time grid as one read) and each
    chunk is resized / centre-cropped with the encoder's own rule (short side 256, antialiased bilinear, crop 224,
    skipped for 224 x 224 input) right away, so long or high-resolution videos never sit in memory at native size;
    the encoder's preprocessing then leaves the frames unchanged. `start` counts from the file's start (as
    `visualsound.media.read_video`'s; the video's first frame may be later); undecodable packets are skipped and
    counted in `report` (a `visualsound.media.info.DecodeReport`). With a CUDA `device` the resize runs there
    (the float resize is most of the CPU time of reading a clip; results may differ from the CPU's by one level in
    rare pixels); the frames are returned on the CPU either way.
    """
    from vaura.synchformer.preprocess import center_crop, resize_short_side
    from visualsound.media import MediaWindowError, read_video

    n_total = round(duration * VIDEO_FPS)
    on_gpu = device is not None and torch.device(device).type == "cuda"
    # a decode thread resizes on its own CUDA stream (the main thread may be capturing or replaying a graph)
    stream = torch.cuda.stream(torch.cuda.Stream(device)) if on_gpu else contextlib.nullcontext()
    parts: list[torch.Tensor] = []
    have = 0
    while have < n_total:
        n = min(chunk_frames, n_total - have)
        try:
            chunk = read_video(video, start=start + have / VIDEO_FPS, duration=n / VIDEO_FPS, fps=VIDEO_FPS,
                               report=report)
        except MediaWindowError:
            if not parts:
                raise
            break  # the video stream ended exactly at a chunk boundary (container duration longer than video)
        if chunk.shape[0] == 0:
            break
        if chunk.shape[1:3] != (CROP, CROP):
            with stream:
                on = chunk.to(device) if on_gpu else chunk
                chunk = center_crop(resize_short_side(on, 256, mode="bilinear"), CROP)[0].cpu()
        parts.append(chunk)
        have += chunk.shape[0]
        if chunk.shape[0] < n:  # the video ended inside this chunk
            break
    if not parts:
        raise GenerationError(f"{video}: no frames in [{start}, {start + duration}) s")
    return torch.cat(parts)


# -- clips in one sampler batch ------------------------------------------------------------------------------
@dataclass
class GeneratedAudio:
    """``audio [S, 1, N]`` float32 in [-1, 1] at ``sample_rate``, trimmed to ``duration``; ``codes [S, K, T]``;
    ``seeds``: sample i's seed."""

    audio: torch.Tensor
    codes: torch.Tensor
    sample_rate: int
    duration: float
    windows: list[Window]
    debug_weights: bool
    bad_packets: int = 0  # undecodable video packets skipped while reading the frames
    seeds: tuple[int, ...] = ()


@dataclass(frozen=True)
class ClipRequest:
    """One clip to generate for: ``[start, start + duration)`` seconds of `video`, one sample per seed.

    ``start=None`` (default): from the video's first frame, the video stream's own span (what ``vaura generate``
    muxes under the picture); a number counts from the file's start, the toolkit's one timeline
    (`visualsound.media.info.file_start`, as `visualsound.media.read_video` / ``read_audio`` and every
    evaluation window count), so the audio lines up with the ground truth read for the same window even where
    the video starts after the file (an audio stream starting first); times before the first frame show the first
    frame. ``duration=None``: to the end of the video stream.

    Sample i draws its random numbers from the stream keyed by ``(stream, seeds[i], window index)`` (see
    `vaura.sampler.RowStreams`): the same request gives the same codes whatever else is generated with it.
    `stream` names the clip in that key (e.g. its dataset id) so that clips sharing a seed get independent draws;
    the empty default keys by the seed alone."""

    video: str | os.PathLike
    seeds: tuple[int, ...] = (0,)
    start: float | None = None
    duration: float | None = None
    stream: str = ""

    @property
    def num_samples(self) -> int:
        return len(self.seeds)


@dataclass
class ClipResult:
    """The outcome of one `ClipRequest`: ``output`` or the `ToolkitError` that stopped it (``error``)."""

    request: ClipRequest
    output: GeneratedAudio | None = None
    error: ToolkitError | None = None


class StageTimes:
    """Seconds per generation stage, summed over clips: ``decode`` (reading and resizing frames, in the decode
    workers), ``decode_wait`` (the main thread waiting for them), ``features`` (Segment AVCLIP), ``sampling``,
    ``codec`` (DAC decode), and what callers add (``mux``). With `sync`, CUDA is synchronised at every stage
    boundary so that GPU work is counted in its own stage."""

    def __init__(self, sync: bool = False) -> None:
        self.seconds: dict[str, float] = {}
        self.sync = sync

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextlib.contextmanager
    def stage(self, name: str, device: torch.device | None = None) -> Iterator[None]:
        self._sync(device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync(device)
            self.add(name, time.perf_counter() - t0)

    def _sync(self, device: torch.device | None) -> None:
        if self.sync and device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)


def _stage(times: StageTimes | None, name: str, device: torch.device | None = None) -> Any:
    return times.stage(name, device) if times is not None else contextlib.nullcontext()


@dataclass
class _Frames:
    frames: torch.Tensor  # [T, 224, 224, 3] uint8
    duration: float
    bad_packets: int
    seconds: float


def read_clip(request: ClipRequest, device: torch.device | None = None) -> _Frames:
    """The 25 fps frames of a request's span (see `read_frames`; resized on `device` if it is a GPU), its
    duration and the undecodable packets skipped. Raises `GenerationError` for an empty span,
    `visualsound.media.MediaError` for unreadable input."""
    from visualsound.media import probe
    from visualsound.media.info import DecodeReport

    t0 = time.perf_counter()
    video = request.video
    info = probe(video, require_video=True)
    first = (info.video_start or 0.0) - info.start  # the first frame on the file's timeline
    end = first + (info.video_duration or info.duration)
    start = first if request.start is None else request.start
    dur = end - start if request.duration is None else min(request.duration, end - start)
    if dur <= 0:
        raise GenerationError(f"{video}: nothing to generate from {start} s of the file (its video ends at "
                              f"{end:.2f} s)")
    report = DecodeReport()
    frames = read_frames(video, start, dur, report=report,
                         device=device if device is not None and device.type == "cuda" else None)
    return _Frames(frames, dur, report.total, time.perf_counter() - t0)


def _decoded(requests: list[ClipRequest], workers: int, lookahead: int, device: torch.device | None = None
             ) -> Iterator[tuple[ClipRequest, _Frames | ToolkitError]]:
    """`read_clip` of every request, in order; with `workers` threads decoding up to `lookahead` clips ahead
    (while the caller samples on the device). `ToolkitError`s are returned, other exceptions raised."""
    def safe(req: ClipRequest) -> _Frames | ToolkitError:
        try:
            return read_clip(req, device)
        except ToolkitError as e:
            return e

    if workers <= 0:
        for req in requests:
            yield req, safe(req)
        return
    from concurrent.futures import ThreadPoolExecutor

    pending: collections.deque = collections.deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vaura-decode") as pool:
        try:
            it = iter(requests)
            for req in itertools.islice(it, lookahead):
                pending.append((req, pool.submit(safe, req)))
            while pending:
                req, fut = pending.popleft()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(safe, nxt)))
                yield req, fut.result()
        finally:
            for _, fut in pending:
                fut.cancel()


def segment_index(start: float) -> int:
    """The first 16-frame segment of the window at `start` seconds (`window_frames`' grid)."""
    return math.ceil(start * VIDEO_FPS - 1e-9) // SEGMENT_FRAMES


def clip_features(pipe: VAuraPipeline, frames: torch.Tensor, plan: list[Window], chunk: int = 16) -> torch.Tensor:
    """Visual features ``[W, 32, D]`` (float32, on the pipeline's device) of every window of `plan` from 25 fps
    frames ``[T, H, W, 3]`` uint8.

    A window's 32 tokens are its four 16-frame segments' 8 each, and Segment AVCLIP encodes segments
    independently, so each segment that windows share (a 0.64 s stride makes four windows share it) is encoded
    once, `chunk` segments per forward pass; the result equals ``visual.features(window_frames(...))`` window by
    window up to float rounding. Frames past the end repeat the last frame, as in `window_frames`."""
    if frames.shape[0] == 0:
        raise GenerationError("the video has no frames")
    firsts = [segment_index(w.start) for w in plan]
    needed = sorted({s + j for s in firsts for j in range(WINDOW_FRAMES // SEGMENT_FRAMES)})
    seg = torch.tensor(needed)[:, None] * SEGMENT_FRAMES + torch.arange(SEGMENT_FRAMES)[None]  # [U, 16]
    seg = seg.clamp(max=frames.shape[0] - 1)
    device = pipe.device
    autocast = (torch.autocast(device.type, dtype=DTYPES[pipe.dtype]) if pipe.dtype != "fp32"
                else contextlib.nullcontext())
    parts = []
    with torch.no_grad(), autocast:
        for i in range(0, len(needed), chunk):
            parts.append(pipe.visual.segment_features(frames[seg[i:i + chunk]].to(device)).float())
    table = torch.cat(parts)  # [U, 8, D]
    row = {s: i for i, s in enumerate(needed)}
    per_window = WINDOW_FRAMES // SEGMENT_FRAMES
    return torch.stack([table[row[s]:row[s] + per_window].flatten(0, 1) for s in firsts])  # [W, 32, D]


@dataclass
class _Clip:
    """A clip ready to sample: its windows' features ``[W, 32, D]``, window plan, seeds and stream name."""

    feats: torch.Tensor
    plan: list[Window]
    seeds: tuple[int, ...]
    stream: str
    duration: float


@torch.no_grad()
def sample_clips(pipe: VAuraPipeline, clips: list[_Clip], params: SamplingParams, stride: float = 0.64,
                 capacity: int | None = None, pool: StepperPool | None = None,
                 on_window: Callable[[int, int], None] | None = None) -> list[torch.Tensor]:
    """Codes ``[S_c, K, int(duration_c * 86)]`` for every clip, all clips' samples in one sampler batch.

    Window ``w`` of every clip is generated in one `vaura.sampler.generate` call (windows aligned): a clip
    without a window ``w`` (shorter) leaves its rows as padding, a clip whose window is shorter finishes early.
    The batch always has `capacity` rows (default: the clips' samples), padding rows filled with zeros, and every
    row draws from its own stream, so a clip's codes do not depend on the other clips of the batch: on a given
    device and batch shape they are the same alone (padded) or with any other clips. ``on_window(done, total)``
    is called after each window (a progress bar)."""
    model, cfg = pipe.transformer, pipe.transformer.cfg
    k, device = cfg.n_codebooks, pipe.device
    dtype = next(model.parameters()).dtype
    rows = [(ci, si) for ci, c in enumerate(clips) for si in range(len(c.seeds))]
    capacity = len(rows) if capacity is None else capacity
    if len(rows) > capacity:
        raise GenerationError(f"{len(rows)} samples do not fit a batch of {capacity} rows")
    stride_codes = int(CODE_RATE * stride)
    prev: list[torch.Tensor | None] = [None] * len(rows)
    chunks: list[list[torch.Tensor]] = [[] for _ in rows]
    visual_dim = clips[0].feats.shape[-1]
    n_windows = max(len(c.plan) for c in clips)
    for w in range(n_windows):
        feats = torch.zeros(capacity, clips[0].feats.shape[1], visual_dim, device=device, dtype=dtype)
        n = [0] * capacity
        keys: list[tuple] = [("padding", i) for i in range(capacity)]
        prompts = {clips[ci].plan[w].prompt for ci, _ in rows if w < len(clips[ci].plan)}
        if len(prompts) != 1:  # plan_windows gives every window after the first the same prompt for one stride
            raise GenerationError(f"window {w}: clips have prompts of {sorted(prompts)} frames; a batch needs one")
        p = prompts.pop()
        prompt = torch.full((capacity, k, p), cfg.special_token, dtype=torch.long, device=device) if p else None
        for r, (ci, si) in enumerate(rows):
            c = clips[ci]
            if w >= len(c.plan):
                continue
            feats[r] = c.feats[w]
            n[r] = c.plan[w].n_frames
            keys[r] = (c.stream, c.seeds[si], w)
            if prompt is not None:
                prompt[r] = prev[r][:, stride_codes:stride_codes + p]
        out = generate(model, feats, n, params, prompt=prompt, streams=RowStreams(keys, device),
                       compile_step=pipe.compile_step, cache_len=cfg.rope_len, pool=pool)
        for r, (ci, _) in enumerate(rows):
            if n[r]:
                codes = out.codes[r, :, :n[r]]
                chunks[r].append(codes[:, clips[ci].plan[w].prompt:])
                prev[r] = codes
                log.debug("clip %d window %d at %.2f s: %d frames (%d prompt)", ci, w, clips[ci].plan[w].start,
                          n[r], p)
        if on_window is not None:
            on_window(w + 1, n_windows)
    result = []
    for ci, c in enumerate(clips):
        total = total_frames(c.duration)
        mine = [torch.cat(chunks[r], dim=-1)[:, :total] for r, (cj, _) in enumerate(rows) if cj == ci]
        codes = torch.stack(mine)
        assert codes.shape[-1] == total, f"generated {tuple(codes.shape)} frames, expected {total}"
        result.append(codes)
    return result


def decode_audio(pipe: VAuraPipeline, codes: torch.Tensor, duration: float) -> torch.Tensor:
    """DAC-decode codes ``[S, K, T]`` one sample at a time (a sample's audio never depends on the others) and
    trim / pad to `duration`: ``[S, 1, round(duration * sr)]`` float32 in [-1, 1] on the CPU."""
    n = int(round(duration * pipe.codec.sample_rate))
    out = []
    with torch.no_grad():
        for s in range(codes.shape[0]):
            audio = pipe.codec.decode(codes[s:s + 1].to(pipe.device)).clamp(-1.0, 1.0)  # [1, 1, T * 512]
            if audio.shape[-1] < n:
                audio = torch.nn.functional.pad(audio, (0, n - audio.shape[-1]))
            out.append(audio[..., :n].float().cpu())
    return torch.cat(out)


def generate_batch(requests: Iterable[ClipRequest], pipe: VAuraPipeline, params: SamplingParams = SamplingParams(),
                   batch_clips: int = 1, samples_per_clip: int | None = None, stride: float = 0.64,
                   decode_workers: int = 0, times: StageTimes | None = None,
                   on_window: Callable[[int, int], None] | None = None) -> Iterator[ClipResult]:
    """Generate for every request, `batch_clips` clips per sampler batch; yields one `ClipResult` per request,
    in request order, as each batch finishes.

    Clips of any lengths and frame rates share a batch (`sample_clips`: windows aligned, finished rows
    masked). Every batch has ``batch_clips * samples_per_clip`` rows (default: the most samples any request asks
    for), padded when fewer clips are left, and every sample draws from its own stream (`ClipRequest`); features
    and audio are computed per clip. So a request's codes and audio depend only on the request, the pipeline,
    the sampling parameters, `batch_clips` and `samples_per_clip` -- not on which other clips share its batch
    or in which slot (`tests/test_vaura_batch.py` checks this bit for bit). Other batch shapes may round floats
    differently, which can change a sampled token: results are reproducible for one ``--batch-clips`` setting.

    Frames are read by `decode_workers` threads up to two batches ahead (0: in this thread). A clip whose video
    cannot be read gets its `ToolkitError` in ``ClipResult.error``; other exceptions propagate. `on_window` goes
    to `sample_clips` (each batch's windows)."""
    if batch_clips < 1:
        raise GenerationError(f"batch_clips must be >= 1, got {batch_clips}")
    requests = list(requests)
    if not requests:
        return
    bad = [r for r in requests if r.num_samples < 1]
    if bad:
        raise GenerationError(f"{bad[0].video}: a request needs at least one seed")
    per_clip = samples_per_clip or max(r.num_samples for r in requests)
    over = [r for r in requests if r.num_samples > per_clip]
    if over:
        raise GenerationError(f"{over[0].video}: {over[0].num_samples} samples, more than samples_per_clip "
                              f"{per_clip}")
    capacity = batch_clips * per_clip
    device = pipe.device
    pool = StepperPool()
    waiting: list[tuple[ClipRequest, _Clip | None, _Frames | ToolkitError]] = []

    def flush() -> Iterator[ClipResult]:
        ready = [clip for _, clip, _ in waiting if clip is not None]
        codes: list[torch.Tensor | ToolkitError] = []
        if ready:
            try:
                with _stage(times, "sampling", device):
                    codes = list(sample_clips(pipe, ready, params, stride, capacity, pool, on_window))
            except ToolkitError as e:  # e.g. non-finite logits: every clip of the batch failed the same way
                log.error("a batch of %d clips failed: %s", len(ready), e)
                codes = [e] * len(ready)
        sampled = iter(codes)  # in the order of `ready`, i.e. of `waiting`
        for req, clip, fr in waiting:
            if clip is None:
                yield ClipResult(req, None, fr)
                continue
            got = next(sampled)
            if isinstance(got, ToolkitError):
                yield ClipResult(req, None, got)
                continue
            with _stage(times, "codec", device):
                audio = decode_audio(pipe, got, clip.duration)
            yield ClipResult(req, GeneratedAudio(audio, got.cpu(), pipe.codec.sample_rate, clip.duration, clip.plan,
                                                 pipe.debug_weights, fr.bad_packets, req.seeds))
        waiting.clear()

    t_wait = time.perf_counter()
    for req, fr in _decoded(requests, decode_workers, 2 * batch_clips, device):
        if times is not None:
            times.add("decode_wait", time.perf_counter() - t_wait)
        clip = None
        if isinstance(fr, _Frames):
            if times is not None:
                times.add("decode", fr.seconds)
            try:
                plan = plan_windows(fr.duration, stride)
                with _stage(times, "features", device):
                    feats = clip_features(pipe, fr.frames, plan).to(next(pipe.transformer.parameters()).dtype)
                clip = _Clip(feats, plan, req.seeds, req.stream, fr.duration)
            except ToolkitError as e:
                fr = e
            else:
                fr = _Frames(torch.empty(0), fr.duration, fr.bad_packets, fr.seconds)  # frames no longer needed
        waiting.append((req, clip, fr))
        if sum(c is not None for _, c, _ in waiting) == batch_clips:
            yield from flush()
        t_wait = time.perf_counter()
    yield from flush()


def random_seed() -> int:
    """A fresh seed for a run without ``--seed`` (recorded with the outputs, so the run can be repeated)."""
    return secrets.randbelow(2 ** 31)


# -- one video -----------------------------------------------------------------------------------------------
def generate_codes_for_frames(pipe: VAuraPipeline, frames: torch.Tensor, duration: float,
                              params: SamplingParams = SamplingParams(), seeds: tuple[int, ...] = (0,),
                              stride: float = 0.64, stream: str = "") -> tuple[torch.Tensor, list[Window]]:
    """Codes ``[S, K, int(duration * 86)]`` (one sample per seed) for 25 fps frames ``[T, H, W, 3]`` uint8 of a
    clip: `clip_features` and `sample_clips` for one clip."""
    plan = plan_windows(duration, stride)
    feats = clip_features(pipe, frames, plan).to(next(pipe.transformer.parameters()).dtype)
    codes = sample_clips(pipe, [_Clip(feats, plan, tuple(seeds), stream, duration)], params, stride)[0]
    return codes, plan


def generate_for_video(video: str | os.PathLike, pipe: VAuraPipeline, params: SamplingParams = SamplingParams(),
                       num_samples: int = 1, seed: int | None = None, stride: float = 0.64,
                       start: float | None = None, duration: float | None = None,
                       on_window: Callable[[int, int], None] | None = None) -> GeneratedAudio:
    """Generate `num_samples` soundtracks for a video file (any fps / duration; ``[start, start + duration)``
    as `ClipRequest`'s: by default the whole video stream from its first frame, its own span, not the
    container's, so the audio covers exactly what the video shows; a number counts from the file's start).
    Sample i uses seed ``seed + i`` (`seed=None`: a fresh random seed, returned in ``seeds``). Undecodable video
    packets are skipped and counted in ``bad_packets``. The same as `generate_batch` of this one clip with
    ``batch_clips=1``; ``on_window(done, total)`` is called after each window is sampled."""
    if num_samples < 1:
        raise GenerationError(f"num_samples must be >= 1, got {num_samples}")
    base = random_seed() if seed is None else seed
    request = ClipRequest(video, tuple(base + i for i in range(num_samples)), start, duration)
    result = next(generate_batch([request], pipe, params, batch_clips=1, stride=stride, on_window=on_window))
    if result.error is not None:
        raise result.error
    assert result.output is not None
    return result.output


# -- batch mode ----------------------------------------------------------------------------------------------
def find_videos(source: str | os.PathLike, root: str | os.PathLike | None = None) -> VideoListing:
    """Videos of `source`: one video file, a directory (its files with one of
    `visualsound.media.formats.VIDEO_EXTENSIONS`, sorted; other files are returned as ``skipped`` and logged), or
    a split file (``.txt``, one path or id per line; relative entries resolved against `root`, default the split
    file's folder; entries without a suffix get ``.mp4``). Raises `GenerationError` for a source that is none
    of these and for a directory or split file without a single video."""
    from visualsound.media.formats import VideoListing, list_video_files

    src = Path(source)
    if src.is_dir():
        listing = list_video_files(src)
        listing.log_skipped(src, log)
        if not listing.videos:
            raise GenerationError(f"{src} holds no video files ({len(listing.skipped)} other files skipped"
                                  + (f", e.g. {listing.skipped[0].name}" if listing.skipped else "") + ")")
        return listing
    if src.suffix.lower() == ".txt":
        base = Path(root) if root is not None else src.parent
        out = []
        for line in src.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p = Path(line)
            p = p if p.suffix else p.with_suffix(".mp4")
            out.append(p if p.is_absolute() else base / p)
        if not out:
            raise GenerationError(f"{src} lists no videos")
        return VideoListing(out, [])
    if src.is_file():
        return VideoListing([src], [])
    raise GenerationError(f"{src} is neither a video, a directory nor a .txt split file")


def list_videos(source: str | os.PathLike, root: str | os.PathLike | None = None) -> list[Path]:
    """The videos of `find_videos` (skipped files are logged there)."""
    return find_videos(source, root).videos


def check_unique_names(videos: Iterable[Path]) -> None:
    """Raise `GenerationError` listing every output-name collision: outputs are named after the file stem, so
    ``clip.mp4`` and ``clip.webm`` (or ``a/clip.mp4`` and ``b/clip.mp4``) would write the same files."""
    by_stem: dict[str, list[str]] = {}
    for v in videos:
        by_stem.setdefault(Path(v).stem, []).append(str(v))
    clashes = {s: ps for s, ps in by_stem.items() if len(ps) > 1}
    if clashes:
        shown = "; ".join(f"{s}: {', '.join(ps)}" for s, ps in list(clashes.items())[:10])
        more = f" (+{len(clashes) - 10} more)" if len(clashes) > 10 else ""
        raise GenerationError(f"{len(clashes)} output names would collide (outputs are named after the file stem): "
                              f"{shown}{more}; rename or move the extra files, or list the ones to use in a .txt "
                              "split file")


def output_paths(video: Path, out_dir: Path, num_samples: int, folder_per_video: bool = False
                 ) -> list[tuple[Path, Path]]:
    """``(wav, mp4)`` output paths of each sample of `video` in `out_dir`: ``<stem>.wav`` / ``<stem>.mp4`` for
    one sample; for several, ``<stem>/<i>.wav`` / ``<stem>/<i>.mp4`` with `folder_per_video` (batch mode: the
    layout ``vbench evaluate --model dir:OUT`` reads, clip id = file stem) else ``<stem>_<i>.wav`` / ``.mp4``."""
    if num_samples == 1:
        return [(out_dir / f"{video.stem}.wav", out_dir / f"{video.stem}.mp4")]
    if folder_per_video:
        return [(out_dir / video.stem / f"{i}.wav", out_dir / video.stem / f"{i}.mp4") for i in range(num_samples)]
    return [(out_dir / f"{video.stem}_{i}.wav", out_dir / f"{video.stem}_{i}.mp4") for i in range(num_samples)]


@dataclass
class ItemResult:
    video: str
    status: str  # "done" | "skipped" | "failed"
    reason: str
    outputs: list[str]
    seed: int | None = None
    bad_packets: int = 0  # undecodable video packets skipped (reading the frames and muxing)

    def to_dict(self) -> dict[str, Any]:
        return {"video": self.video, "status": self.status, "reason": self.reason, "outputs": self.outputs,
                "seed": self.seed, "bad_packets": self.bad_packets}


def video_seed(seed: int, video: Path) -> int:
    """Batch-mode seed of `video`: ``seed + crc32(file stem)``, so a video gets the same audio whatever else the
    folder or split file lists (a position-based seed changed when videos were added or reordered)."""
    return seed + zlib.crc32(video.stem.encode())


def write_outputs(video: Path, result: GeneratedAudio, paths: list[tuple[Path, Path]], mux: bool = True) -> int:
    """Write each sample as a 44.1 kHz wav and (with `mux`) an mp4 of the input video with that audio
    (`visualsound.media.mux_audio`: every frame at its input time, rotation and start kept). The mp4 is written
    first, so a video that cannot be muxed leaves no wav behind. Returns the undecodable video packets the muxer
    skipped."""
    from visualsound.media import mux_audio, write_wav
    from visualsound.media.info import DecodeReport

    report = DecodeReport()
    for (wav, mp4), audio in zip(paths, result.audio):
        if mux:
            mux_audio(video, audio, result.sample_rate, mp4, report=report)
        write_wav(wav, audio, result.sample_rate)
    return report.total


def generate_folder(videos: Iterable[Path], out_dir: str | os.PathLike, pipe: VAuraPipeline,
                    params: SamplingParams = SamplingParams(), num_samples: int = 1, seed: int | None = None,
                    stride: float = 0.64, mux: bool = True, skip_existing: bool = True,
                    progress: Callable[[Iterable[ClipResult], int], Iterable[ClipResult]] | None = None,
                    on_item: Callable[[list[ItemResult]], None] | None = None, batch_clips: int = 1,
                    decode_workers: int = 0, times: StageTimes | None = None) -> list[ItemResult]:
    """Generate for every video into `out_dir` (``<stem>.wav`` lossless 16-bit PCM next to ``<stem>.mp4``; with
    several samples ``<stem>/<i>.wav`` and ``.mp4``: see `output_paths`, the layout ``vbench evaluate --model
    dir:OUT`` pairs by clip id), `batch_clips` videos per sampler batch (`generate_batch`); resumable (videos
    whose outputs exist are skipped, and recorded first); a failing video is recorded with its reason
    (`ToolkitError`s only; other exceptions propagate) and the batch goes on. Video ``v`` uses
    ``video_seed(seed, v)`` for sample 0 and that plus ``i`` for sample i (keyed by its name, not its position in
    the list; `seed=None`: a random base seed, recorded per item). Videos whose names would give the same
    outputs are refused up front (`check_unique_names`). `on_item` is called with the results so far after every
    video (`vaura generate` rewrites ``generation.json`` there, so a killed batch keeps the record of what it
    finished). `progress(iterable, total)` may wrap the iteration over generated videos (e.g. tqdm)."""
    out = Path(out_dir)
    videos = list(videos)
    check_unique_names(videos)
    out.mkdir(parents=True, exist_ok=True)
    base = random_seed() if seed is None else seed
    results: list[ItemResult] = []
    requests, paths_of = [], {}
    for video in videos:
        item_seed = video_seed(base, video)
        paths = output_paths(video, out, num_samples, folder_per_video=True)
        wanted = [p for pair in paths for p in (pair if mux else pair[:1])]
        if skip_existing and all(p.exists() for p in wanted):
            results.append(ItemResult(str(video), "skipped", "outputs exist", [str(p) for p in wanted], item_seed))
            if on_item is not None:
                on_item(results)
            continue
        req = ClipRequest(video, tuple(item_seed + i for i in range(num_samples)))
        requests.append(req)
        paths_of[id(req)] = (paths, wanted)
    stream: Iterable[ClipResult] = generate_batch(requests, pipe, params, batch_clips, num_samples, stride,
                                                  decode_workers, times)
    if progress is not None:
        stream = progress(stream, len(requests))
    for res in stream:
        video, item_seed = Path(res.request.video), res.request.seeds[0]
        paths, wanted = paths_of[id(res.request)]
        try:
            if res.error is not None:
                raise res.error
            with _stage(times, "mux"):
                bad = res.output.bad_packets + write_outputs(video, res.output, paths, mux)
        except ToolkitError as e:
            log.error("%s", e if str(e).startswith(str(video)) else f"{video}: {e}")  # media errors name the file
            results.append(ItemResult(str(video), "failed", f"{type(e).__name__}: {e}", [], item_seed))
        else:
            note = f"; {bad} undecodable video packets skipped" if bad else ""
            if bad:
                log.warning("%s: %d undecodable video packets were skipped", video, bad)
            results.append(ItemResult(str(video), "done", f"{len(res.output.windows)} windows, "
                                      f"{res.output.duration:.2f} s{note}", [str(p) for p in wanted], item_seed, bad))
        if on_item is not None:
            on_item(results)
    return results
