"""Model adapters for ``vbench evaluate``: where each clip's generated audio comes from.

* ``ground-truth``: the clip's own audio in its evaluation window (the upper bound; one sample per clip).
* ``dir:PATH``: another model's precomputed outputs, matched to clip ids exactly: ``PATH/<clip id>.<ext>`` (one
  sample) or ``PATH/<clip id>/<any name>.<ext>`` (several samples, in name order); ``ext`` is wav, flac, mp4 or
  m4a (the audio stream is used). When one clip or sample has several files of one stem (``vaura generate``
  writes ``<stem>.wav`` next to ``<stem>.mp4``), the lossless one is used: wav, then flac, then m4a, then mp4;
  a wav and a flac of one stem are ambiguous and refused. Nothing is matched by partial names. Each output is
  evaluated from its start for the clip's window length (longer outputs are cut, as the ground truth is). The
  adapter also lists the top-level audio files by stem (`ModelOutputs.files`), found as av-benchmark finds them
  (``*.wav`` and ``*.flac``, case-sensitive, hidden files left out): the av-benchmark protocol pairs those by its
  own rules; files the original would not read (``.WAV``, ``.m4a``, ``.mp4``) are left out with a note
  (`ModelOutputs.file_notes`), unless the folder has no wav or flac file at all (then they are used, noted).
* ``vaura``: V-AURA generation (see `VAuraModel`), resumable and cached on disk by (checkpoint checksum,
  sampling parameters, clip, window, seed).

Every adapter returns `ModelOutputs`: the samples per clip id, and the ids with no usable output with the
reason (missing file, unreadable file, failed generation).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.datasets import Dataset
from visualsound.errors import ToolkitError

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".m4a", ".mp4")  # in order of preference when one clip has several
LOSSLESS = (".wav", ".flac")


class ModelError(ToolkitError):
    """A model spec is unknown or its outputs cannot be produced."""


@dataclass(frozen=True)
class Sample:
    """One generated sample of a clip: the audio file and the part of it that is the sample.

    ``start_sec`` / ``duration_sec`` select the audio window (``duration_sec=None``: to the end of the file).
    """

    clip_id: str
    index: int
    path: str
    start_sec: float = 0.0
    duration_sec: float | None = None
    seed: int | None = None

    @property
    def key(self) -> str:
        """Cache key of the sample: ``<clip id>#<index>``."""
        return f"{self.clip_id}#{self.index}"


@dataclass
class ModelOutputs:
    """Samples per clip id (dataset order), ``missing``: clip id -> reason, and (``dir:`` models) ``files``:
    every top-level output file by stem, whether or not its stem is a clip id."""

    samples: dict[str, list[Sample]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    generate_seconds: float = 0.0
    files: dict[str, Sample] = field(default_factory=dict)
    file_notes: list[str] = field(default_factory=list)  # how `files` differs from the folder's audio files

    def all_samples(self) -> list[Sample]:
        return [s for group in self.samples.values() for s in group]


def _check_readable(path: Path) -> str:
    """'' when `path` has a decodable audio stream, else the reason."""
    from visualsound.media import MediaError, probe

    try:
        info = probe(path)
    except MediaError as e:
        return f"unreadable: {e}"
    if not info.has_audio or not info.num_samples:
        return f"unreadable: {path} has no audio samples"
    return ""


class GroundTruthModel:
    """The real audio of each clip's evaluation window, from the clip's ground-truth audio file (its separate GT
    audio where the dataset has one, else the video's own track)."""

    name = "ground-truth"
    kind = "ground-truth"
    samples_per_clip = 1
    cache_key = "ground-truth"
    debug_weights = False

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "checkpoint": None, "checkpoint_sha256": None,
                "samples_per_clip": 1, "seeds": []}

    def outputs(self, dataset: Dataset, progress: bool = False) -> ModelOutputs:
        out = ModelOutputs()
        for clip in dataset.clips:
            source = clip.audio_source
            reason = _check_readable(Path(source))
            if reason:
                out.missing[clip.id] = reason
                continue
            out.samples[clip.id] = [Sample(clip.id, 0, source, clip.start_sec, clip.window_sec)]
        return out


class DirModel:
    """Precomputed outputs in a folder, matched to clip ids exactly (see the module docstring)."""

    kind = "dir"
    debug_weights = False

    def __init__(self, directory: str | os.PathLike, samples_per_clip: int | None = None) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ModelError(f"dir model: {self.directory} is not a folder")
        self.name = f"dir:{self.directory.name}"
        self.samples_per_clip = samples_per_clip or 0  # 0 = whatever each clip has (set after `outputs`)
        digest = hashlib.sha1(str(self.directory.resolve()).encode()).hexdigest()[:10]
        self.cache_key = f"dir-{self.directory.name}-{digest}"

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "path": str(self.directory.resolve()), "checkpoint": None,
                "checkpoint_sha256": None, "samples_per_clip": max(self.samples_per_clip, 1), "seeds": []}

    @staticmethod
    def _pick(files: list[Path], what: str) -> Path:
        """One file of several with the same stem: the most lossless (`AUDIO_SUFFIXES` order)."""
        by_ext = {p.suffix.lower(): p for p in files}
        if len([e for e in LOSSLESS if e in by_ext]) > 1:
            raise ModelError(f"dir model: {what} has both {by_ext['.wav'].name} and {by_ext['.flac'].name}; "
                             "keep one of them")
        return next(by_ext[e] for e in AUDIO_SUFFIXES if e in by_ext)

    def _files(self, clip_id: str) -> list[Path]:
        single = [self.directory / f"{clip_id}{ext}" for ext in AUDIO_SUFFIXES]
        single = [p for p in single if p.is_file()]
        folder = self.directory / clip_id
        by_stem: dict[str, list[Path]] = {}
        if folder.is_dir():  # one sample per stem: `vaura generate` writes <i>.wav next to <i>.mp4
            for p in sorted(folder.iterdir()):
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in AUDIO_SUFFIXES:
                    by_stem.setdefault(p.stem, []).append(p)
        many = [self._pick(files, f"clip {clip_id} sample {stem!r}") for stem, files in sorted(by_stem.items())]
        if single and many:
            raise ModelError(f"dir model: clip {clip_id} has both {single[0].name} and a folder of samples")
        return [self._pick(single, f"clip {clip_id}")] if single else many

    def top_level_files(self) -> tuple[dict[str, Path], list[str]]:
        """The folder's top-level outputs by stem, sorted by stem, as av-benchmark finds them (``*.wav`` and
        ``*.flac``, case-sensitive; a wav and a flac of one stem are refused, `_pick`), and notes on the audio
        files left out: hidden files (the original would read ``._x.wav`` junk and fail), other extensions or
        cases (the original ignores them). A folder without any wav or flac file gives its ``.m4a`` / ``.mp4`` /
        other-case files instead (the original would find nothing), with a note."""
        found = [p for p in sorted(self.directory.iterdir()) if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES]
        hidden = [p.name for p in found if p.name.startswith(".")]
        found = [p for p in found if not p.name.startswith(".")]
        exact = [p for p in found if p.suffix in LOSSLESS]
        others = [p.name for p in found if p.suffix not in LOSSLESS]
        notes = []
        if hidden:
            notes.append(f"{len(hidden)} hidden file(s) left out (the original would read them): "
                         f"{', '.join(hidden[:5])}{' ...' if len(hidden) > 5 else ''}")
        if exact and others:
            notes.append(f"{len(others)} file(s) left out, as the original reads only *.wav and *.flac: "
                         f"{', '.join(others[:5])}{' ...' if len(others) > 5 else ''}")
        elif others:
            notes.append(f"no *.wav or *.flac file: evaluating the {len(others)} .m4a / .mp4 / upper-case file(s) "
                         "instead (the original would find no generated file)")
            exact = found
        stems: dict[str, list[Path]] = {}
        for p in exact:
            stems.setdefault(p.stem, []).append(p)
        return {stem: self._pick(files, f"output {stem!r}") for stem, files in sorted(stems.items())}, notes

    def outputs(self, dataset: Dataset, progress: bool = False) -> ModelOutputs:
        out = ModelOutputs()
        counts = set()
        for clip in dataset.clips:
            files = self._files(clip.id)
            if not files:
                out.missing[clip.id] = f"missing: no {clip.id}.wav/.flac/.mp4 or {clip.id}/ in {self.directory}"
                continue
            if self.samples_per_clip and len(files) < self.samples_per_clip:
                out.missing[clip.id] = f"missing: {len(files)} of {self.samples_per_clip} samples"
                continue
            files = files[:self.samples_per_clip] if self.samples_per_clip else files
            reasons = [r for r in (_check_readable(p) for p in files) if r]
            if reasons:
                out.missing[clip.id] = reasons[0]
                continue
            out.samples[clip.id] = [Sample(clip.id, k, str(p), 0.0, clip.window_sec) for k, p in enumerate(files)]
            counts.add(len(files))
        files, out.file_notes = self.top_level_files()
        out.files = {stem: Sample(stem, 0, str(p)) for stem, p in files.items()}
        if not self.samples_per_clip and counts:
            if len(counts) > 1:
                log.warning("dir model %s: clips have different sample counts %s", self.directory, sorted(counts))
            self.samples_per_clip = max(counts)
        return out


#: marks a V-AURA sample folder (one clip) whose samples were generated with windows counting from the file's
#: start (`VAuraModel._check_timeline`)
TIMELINE_MARK = ".timeline-file-start"


class VAuraModel:
    """V-AURA generation through `vaura.generate.generate_batch`, one file per (checkpoint, sampling, clip,
    window, seed), resumable, `batch_clips` clips per sampler batch.

    Sample ``k`` of every clip uses seed ``seed + k``, drawn from the random stream of (clip id, seed + k), and is
    written to ``<out_dir>/<dataset>/vaura-<weights id>-<sampling id>/<clip id>/seed<seed>_<start>s+<window>s.wav``
    (44.1 kHz); existing files are reused, so an interrupted run resumes, a second evaluation generates nothing,
    and runs over parts of the dataset (``vbench evaluate --shard``) fill one folder. A sample's audio does not
    depend on the other clips of its batch; on a GPU a different `batch_clips` may round floats differently (the
    files do not record it: reused files may come from another batch size). The generation window is the clip's
    evaluation window of the conditioning video, counted from the file's start as the ground truth's
    (`vaura.generate.ClipRequest`; samples cached before that are checked once per clip: `_check_timeline`).
    The weights id is the checkpoint's sha256 (prefixed ``debug-`` for one of our checkpoints trained on debug
    weights, which then counts as a debug-weights model), or ``debug`` for the seeded random tiny model
    (`debug_weights` without a checkpoint). `debug_weights` with a released checkpoint is refused, as
    `vaura.generate.load_pipeline` does.
    """

    kind = "vaura"
    name = "vaura"
    GENERATION_VERSION = 2  # 2: per-(clip, seed) random streams of generate_batch (1: one torch generator per seed)

    def __init__(self, checkpoint: str | None = None, debug_weights: bool = False, samples_per_clip: int = 1,
                 seed: int = 0, device: str = "cpu", out_dir: str | os.PathLike = "results/generated",
                 sampling: dict[str, Any] | None = None, batch_clips: int = 1, decode_workers: int = 0) -> None:
        from vaura.sampler import SamplingParams

        if samples_per_clip < 1:
            raise ModelError(f"samples per clip must be >= 1, got {samples_per_clip}")
        if batch_clips < 1:
            raise ModelError(f"clips per batch must be >= 1, got {batch_clips}")
        self.batch_clips = batch_clips
        self.decode_workers = decode_workers
        self.checkpoint = checkpoint
        self.debug_weights = debug_weights
        self.samples_per_clip = samples_per_clip
        self.seed = seed
        self.device = device
        self.out_dir = Path(out_dir)
        self.params = SamplingParams(**(sampling or {}))
        self.own = False  # one of our own checkpoints (it loads its visual encoder and codec from the registry)
        if debug_weights and checkpoint is None:
            self.checkpoint_path, self.checkpoint_sha = None, "debug:vaura"
            weights_id = "debug"
        else:
            from benchmarks.cache import weights_checksum
            from vaura.checkpoint import read_own_checkpoint

            self.checkpoint_path, self.checkpoint_sha = weights_checksum("vaura_release", checkpoint, False)
            header = read_own_checkpoint(checkpoint) if checkpoint is not None else None  # tensors left unread
            own = self.own = header is not None
            if debug_weights and not own:
                raise ModelError(f"--debug-weights cannot be combined with the released V-AURA checkpoint "
                                 f"{checkpoint}: give one of our own checkpoints (e.g. runs/NAME/last.pt) or none")
            if own and (header.get("metadata") or {}).get("debug_weights", False):
                self.debug_weights = True  # load_pipeline pairs it with the debug encoder and codec
            weights_id = ("debug-" if self.debug_weights else "") + self.checkpoint_sha[:12]
        recipe = sorted(vars(self.params).items()) + [("generation", self.GENERATION_VERSION)]
        params_id = hashlib.sha1(repr(recipe).encode()).hexdigest()[:8]
        self.cache_key = f"vaura-{weights_id}-{params_id}"
        self._pipe = None

    @property
    def seeds(self) -> list[int]:
        return [self.seed + k for k in range(self.samples_per_clip)]

    def required_weights(self) -> dict[str, str | None]:
        """Registry weights generation loads besides the checkpoint (resolved already): one of our own non-debug
        checkpoints pairs with the registry's visual encoder and codec."""
        return {"avclip_vggsound": None, "dac_44khz": None} if self.own and not self.debug_weights else {}

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "checkpoint": self.checkpoint_path,
                "checkpoint_sha256": self.checkpoint_sha, "samples_per_clip": self.samples_per_clip,
                "seeds": self.seeds, "sampling": dict(vars(self.params)), "batch_clips": self.batch_clips}

    def _pipeline(self) -> Any:
        if self._pipe is None:
            from vaura.generate import load_pipeline

            self._pipe = load_pipeline(self.checkpoint, debug_weights=self.debug_weights, device=self.device)
        return self._pipe

    def sample_path(self, folder: Path, clip: Any, seed: int) -> Path:
        return folder / clip.id / f"seed{seed}_{clip.start_sec:.3f}s+{clip.window_sec:.3f}s.wav"

    def _check_timeline(self, folder: Path, clip: Any) -> bool:
        """Drop a clip's samples generated before windows counted from the file's start.

        Until then generation windows counted from the video's first frame; they differ where the video starts
        after the file (an audio stream starting first, ~23 ms in some mkv). A clip folder holding samples but no
        `TIMELINE_MARK` is checked once: its samples are kept (and marked) when the video starts with the file,
        else removed so that they are generated again on the file's timeline; a video that cannot be probed
        keeps its samples unmarked and unused (its generation then fails with the reason). Returns whether the
        clip's cached samples may be used."""
        cdir = folder / clip.id
        if (cdir / TIMELINE_MARK).exists() or not cdir.is_dir() or clip.video is None:
            return True
        old = sorted(cdir.glob("seed*.wav"))
        if not old:
            return True
        from visualsound.media import MediaError, probe

        try:
            info = probe(clip.video, require_video=True)
        except MediaError as e:
            log.warning("V-AURA samples of %s not reused: its video cannot be probed (%s)", clip.id, e)
            return False
        offset = (info.video_start or 0.0) - info.start
        if abs(offset) > 1e-6:
            log.info("clip %s: its video starts %.3f s after the file; %d cached V-AURA sample(s) were generated "
                     "from the first frame and are made again from the file's start", clip.id, offset, len(old))
            for f in old:
                f.unlink(missing_ok=True)
        (cdir / TIMELINE_MARK).touch()
        return True

    def outputs(self, dataset: Dataset, progress: bool = False) -> ModelOutputs:
        import time

        from tqdm.auto import tqdm

        from vaura.generate import ClipRequest
        from visualsound.media import write_wav

        folder = self.out_dir / dataset.name / self.cache_key
        out = ModelOutputs()
        t0 = time.perf_counter()
        clip_of = {}  # the missing samples of each clip, as one request (features and frames shared)
        for clip in dataset.clips:
            reuse = self._check_timeline(folder, clip)
            todo = tuple(s for s in self.seeds if not (reuse and self.sample_path(folder, clip, s).is_file()))
            if todo:
                clip_of[ClipRequest(clip.video, todo, clip.start_sec, clip.window_sec, stream=clip.id)] = clip
        failed: dict[str, str] = {}
        if clip_of:
            from vaura import generate as G

            results = G.generate_batch(list(clip_of), self._pipeline(), self.params, batch_clips=self.batch_clips,
                                       samples_per_clip=self.samples_per_clip, decode_workers=self.decode_workers)
            for res in tqdm(results, total=len(clip_of), desc="V-AURA generation", unit="clip",
                            disable=not progress):
                clip = clip_of[res.request]
                if res.error is not None:
                    log.error("V-AURA generation failed for %s: %s", clip.id, res.error)
                    failed[clip.id] = f"generation failed: {type(res.error).__name__}: {res.error}"
                    continue
                for seed, audio in zip(res.request.seeds, res.output.audio):
                    write_wav(self.sample_path(folder, clip, seed), audio, res.output.sample_rate)
                (folder / clip.id / TIMELINE_MARK).touch()
        for clip in dataset.clips:
            if clip.id in failed:
                out.missing[clip.id] = failed[clip.id]
                continue
            out.samples[clip.id] = [Sample(clip.id, k, str(self.sample_path(folder, clip, seed)), 0.0, clip.window_sec,
                                           seed=seed) for k, seed in enumerate(self.seeds)]
        out.generate_seconds = time.perf_counter() - t0
        return out


def model_weights(spec: str, checkpoint: str | None = None, debug_weights: bool = False) -> dict[str, str | None]:
    """The registry weights model `spec` needs that can be checked before it is made (registry name -> None: the
    cache): the released V-AURA checkpoint for ``vaura`` without ``--checkpoint`` or debug weights."""
    return {"vaura_release": None} if spec == "vaura" and checkpoint is None and not debug_weights else {}


def make_model(spec: str, *, checkpoint: str | None = None, debug_weights: bool = False,
               samples_per_clip: int | None = None, seed: int | None = None, device: str = "cpu",
               out_dir: str | os.PathLike = "results") -> Any:
    """``ground-truth``, ``dir:PATH`` or ``vaura`` -> an adapter with ``outputs(dataset)`` and ``info()``.

    `checkpoint` and `seed` (default 0) belong to ``vaura``; giving them to another model raises `ModelError`
    instead of being ignored.
    """
    if spec != "vaura":
        given = [name for name, value in (("checkpoint", checkpoint), ("seed", seed)) if value is not None]
        if given:
            raise ModelError(f"{' and '.join(given)} only apply to the vaura model, not to {spec!r}")
    if spec == "ground-truth":
        if samples_per_clip not in (None, 1):
            raise ModelError("the ground-truth model has exactly one sample per clip")
        return GroundTruthModel()
    if spec.startswith("dir:"):
        return DirModel(spec[4:], samples_per_clip)
    if spec == "vaura":
        return VAuraModel(checkpoint=checkpoint, debug_weights=debug_weights,
                          samples_per_clip=samples_per_clip or 1, seed=0 if seed is None else seed, device=device,
                          out_dir=Path(out_dir) / "generated")
    raise ModelError(f"unknown model {spec!r}; use vaura, ground-truth or dir:PATH")
