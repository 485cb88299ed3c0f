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

import logging
import math
import os
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vaura.codec import Codec
from vaura.config import VAuraConfig
from vaura.model import Transformer
from vaura.sampler import SamplingParams, generate
from visualsound.errors import CheckpointError, ConfigError, ToolkitError

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
    from vaura.checkpoint import is_own_checkpoint, load_checkpoint, read_release
    from vaura.codec import load_codec
    from vaura.model import build_model
    from vaura.synchformer import load_visual_encoder

    own = checkpoint is not None and is_own_checkpoint(checkpoint)
    if not own and (visual_checkpoint is not None or codec_checkpoint is not None):
        raise ConfigError("a visual encoder / codec checkpoint goes with one of our own V-AURA checkpoints only: "
                          "the released checkpoint carries both, the debug model uses random ones")
    if debug_weights and checkpoint is None:
        cfg = VAuraConfig.preset("tiny")
        codec = load_codec(debug_weights=True, latent_dim=cfg.audio_width, seed=seed)
        transformer = build_model(cfg, debug_weights=True, seed=seed)
        transformer.init_audio_embeddings_from_dac(*codec.quantizer_tensors(), torch.Generator().manual_seed(seed))
        visual = load_visual_encoder(debug_weights=True)
        log.warning("V-AURA with DEBUG WEIGHTS (seeded random tiny models)")
        return VAuraPipeline(transformer.to(device).eval(), visual.to(device).eval(), codec.to(device), True,
                             "debug weights")
    if own:
        transformer, meta = load_checkpoint(checkpoint, device)
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
                report: Any = None) -> torch.Tensor:
    """The 25 fps frames of ``[start, start + duration)`` as the visual encoder sees them: uint8
    ``[T, 224, 224, 3]``.

    The video is decoded in chunks of `chunk_frames` frames (on the same 25 fps time grid as one read) and each
    chunk is resized / centre-cropped with the encoder's own rule (short side 256, antialiased bilinear, crop 224,
    skipped for 224 x 224 input) right away, so long or high-resolution videos never sit in memory at native size;
    the encoder's preprocessing then leaves the frames unchanged. `start` is a time of the video stream (its
    first frame may be later than 0); undecodable packets are skipped and counted in `report` (a
    `visualsound.media.info.DecodeReport`).
    """
    from vaura.synchformer.preprocess import center_crop, resize_short_side
    from visualsound.media import MediaWindowError, read_video

    n_total = round(duration * VIDEO_FPS)
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
            chunk = center_crop(resize_short_side(chunk, 256, mode="bilinear"), CROP)[0]
        parts.append(chunk)
        have += chunk.shape[0]
        if chunk.shape[0] < n:  # the video ended inside this chunk
            break
    if not parts:
        raise GenerationError(f"{video}: no frames in [{start}, {start + duration}) s")
    return torch.cat(parts)


# -- one video -----------------------------------------------------------------------------------------------
@dataclass
class GeneratedAudio:
    """``audio [S, 1, N]`` float32 in [-1, 1] at ``sample_rate``, trimmed to ``duration``; ``codes [S, K, T]``."""

    audio: torch.Tensor
    codes: torch.Tensor
    sample_rate: int
    duration: float
    windows: list[Window]
    debug_weights: bool
    bad_packets: int = 0  # undecodable video packets skipped while reading the frames


@torch.no_grad()
def generate_codes_for_frames(pipe: VAuraPipeline, frames: torch.Tensor, duration: float,
                              params: SamplingParams = SamplingParams(), num_samples: int = 1,
                              stride: float = 0.64, generator: torch.Generator | None = None
                              ) -> tuple[torch.Tensor, list[Window]]:
    """Codes ``[S, K, int(duration * 86)]`` for 25 fps frames ``[T, H, W, 3]`` uint8 of a clip."""
    plan = plan_windows(duration, stride)
    total = total_frames(duration)
    device = pipe.device
    chunks: list[torch.Tensor] = []
    prompt: torch.Tensor | None = None
    for w in plan:
        clip = window_frames(frames, w.start).to(device)[None]  # [1, 64, H, W, 3]
        feats = pipe.visual.features(clip).flatten(1, 2).float()  # [1, 32, D]
        feats = feats.expand(num_samples, -1, -1).contiguous()
        out = generate(pipe.transformer, feats, w.n_frames, params, prompt=prompt, generator=generator,
                       compile_step=pipe.compile_step)
        chunks.append(out.codes[..., w.prompt:])
        stride_codes = int(CODE_RATE * stride)
        prompt = out.codes[..., stride_codes:]
        log.debug("window at %.2f s: %d frames (%d prompt)", w.start, w.n_frames, w.prompt)
    codes = torch.cat(chunks, dim=-1)[..., :total]
    assert codes.shape[-1] == total, f"generated {codes.shape[-1]} frames, expected {total}"
    return codes, plan


def generate_for_video(video: str | os.PathLike, pipe: VAuraPipeline, params: SamplingParams = SamplingParams(),
                       num_samples: int = 1, seed: int | None = None, stride: float = 0.64,
                       start: float = 0.0, duration: float | None = None) -> GeneratedAudio:
    """Generate `num_samples` soundtracks for a video file (any fps / duration; ``[start, start + duration)``
    seconds after the video's first frame, default the whole video stream: its own span, not the container's,
    so the audio covers exactly what the video shows; a stream starting at ``t0 > 0`` is read from ``t0``).
    Undecodable video packets are skipped and counted in ``bad_packets``. The Python API that benchmarks call."""
    from visualsound.media import probe
    from visualsound.media.info import DecodeReport

    info = probe(video, require_video=True)
    span = info.video_duration or info.duration
    avail = span - start
    dur = avail if duration is None else min(duration, avail)
    if dur <= 0:
        raise GenerationError(f"{video}: nothing to generate from {start} s (video lasts {span:.2f} s)")
    report = DecodeReport()
    frames = read_frames(video, (info.video_start or 0.0) + start, dur, report=report)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=pipe.device).manual_seed(seed)
    codes, plan = generate_codes_for_frames(pipe, frames, dur, params, num_samples, stride, generator)
    audio = pipe.codec.decode(codes).clamp(-1.0, 1.0)  # [S, 1, T * 512]
    n = int(round(dur * pipe.codec.sample_rate))
    if audio.shape[-1] < n:
        audio = torch.nn.functional.pad(audio, (0, n - audio.shape[-1]))
    return GeneratedAudio(audio[..., :n].cpu(), codes.cpu(), pipe.codec.sample_rate, dur, plan, pipe.debug_weights,
                          report.total)


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


def generate_batch(videos: Iterable[Path], out_dir: str | os.PathLike, pipe: VAuraPipeline,
                   params: SamplingParams = SamplingParams(), num_samples: int = 1, seed: int | None = None,
                   stride: float = 0.64, mux: bool = True, skip_existing: bool = True,
                   progress: Callable[[Iterable[Path]], Iterable[Path]] | None = None,
                   on_item: Callable[[list[ItemResult]], None] | None = None) -> list[ItemResult]:
    """Generate for every video into `out_dir` (``<stem>.wav`` lossless 16-bit PCM next to ``<stem>.mp4``; with
    several samples ``<stem>/<i>.wav`` and ``.mp4``: see `output_paths`, the layout ``vbench evaluate --model
    dir:OUT`` pairs by clip id); resumable (outputs that exist are skipped); a failing video is
    recorded with its reason (`ToolkitError`s only; other exceptions propagate) and the batch goes on. With a
    `seed`, each video uses `video_seed` (keyed by its name, not its position in the list). Videos whose names
    would give the same outputs are refused up front (`check_unique_names`). `on_item` is called with the
    results so far after every video (`vaura generate` rewrites ``generation.json`` there, so a killed batch
    keeps the record of what it finished)."""
    out = Path(out_dir)
    videos = list(videos)
    check_unique_names(videos)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for video in progress(videos) if progress is not None else videos:
        item_seed = None if seed is None else video_seed(seed, video)
        paths = output_paths(video, out, num_samples, folder_per_video=True)
        wanted = [p for pair in paths for p in (pair if mux else pair[:1])]
        if skip_existing and all(p.exists() for p in wanted):
            results.append(ItemResult(str(video), "skipped", "outputs exist", [str(p) for p in wanted], item_seed))
        else:
            try:
                res = generate_for_video(video, pipe, params, num_samples, item_seed, stride)
                bad = res.bad_packets + write_outputs(video, res, paths, mux)
            except ToolkitError as e:
                log.error("%s: %s", video, e)
                results.append(ItemResult(str(video), "failed", f"{type(e).__name__}: {e}", [], item_seed))
            else:
                note = f"; {bad} undecodable video packets skipped" if bad else ""
                if bad:
                    log.warning("%s: %d undecodable video packets were skipped", video, bad)
                results.append(ItemResult(str(video), "done", f"{len(res.windows)} windows, {res.duration:.2f} s"
                                          f"{note}", [str(p) for p in wanted], item_seed, bad))
        if on_item is not None:
            on_item(results)
    return results
