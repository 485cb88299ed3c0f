"""Media of the listening report (`benchmarks.report`): web-sized videos, posters and spectrograms, encoded once.

For one clip the gallery shows the ground truth and one track per model:

* **ground truth** ``gt.mp4``: the clip's evaluation window of its video with the clip's ground-truth audio
  (from ``gt_audio_path``, which may be a separate audio file), a JPEG poster (the first frame, at most
  `MediaSettings.width` pixels wide) and a spectrogram PNG of the audio. A window that is already small and easy
  to cut is **copied** (`visualsound.media.write.copy_window`: H.264 8-bit 4:2:0 with square pixels starting on a
  keyframe, as the first frame of a file does, at most `MediaSettings.copy_kbps` kbit/s; no decoding, the
  source's size and frame rate; the audio's AAC packets are copied too when it comes from the same file, else it
  is encoded). Any other is **re-encoded** at 25 fps in square pixels at the display aspect (an anamorphic DVD
  720x576 at 64:45 becomes 320x180), scaled to `MediaSettings.width` pixels wide (never above its display size;
  swscale's area filter while decoding, no RGB round trip: `visualsound.media.write_preview`), H.264 + AAC.
  Both start the audio's first sample with the first frame (a copy to within 0.5 ms). An audio-only clip gets an
  AAC ``.m4a`` instead of the video.
* **model track**: the generated audio (its first ``window_sec`` seconds) muxed under the ground-truth video
  with `visualsound.media.mux_audio` (the H.264 packets are copied, only the audio is encoded), or an
  ``.m4a`` when the clip has no video (or its video cannot be read); a spectrogram PNG.

Every output file is named by a hash of what it is made from (source paths with their size and modification
time, the window, the settings and `MEDIA_VERSION`), so a re-run finds and reuses what it already wrote (a
killed run resumes; a changed input gets a new name), and writes are atomic. A `MediaStore` shares the files
between reports: another report folder, selection or model set links what was made before and encodes only what
is new. A file that cannot be read becomes a `TrackMedia.error` with the reason; the build goes on.
`encode_clips` makes a report's clips in parallel: worker processes when many clips need making (see there).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from visualsound.errors import ToolkitError
from visualsound.media.errors import NoVideoStreamError
from visualsound.utils.atomic import atomic_link_or_copy, atomic_open

log = logging.getLogger(__name__)

MEDIA_VERSION = 7  # bump when the encoding or the images change: every cached file is then made again
# 6: pictures cropped on their left (Theora pic_x) cropped exactly, not 2 columns wider; anamorphic sources
# re-encoded to square pixels at their display aspect (never copied)
# 7: re-encoded video states its source's colour matrix, primaries and transfer (BT.709 / BT.2020 sources were
# shown with a default matrix: other colours); the audio is the track flagged default


@dataclass(frozen=True)
class MediaSettings:
    """Sizes of the report's media: video width (px, even; smaller videos keep their size), frame rate, H.264
    quality (`crf`) and speed (`preset`), spectrogram size (px) and dynamic range (dB below the track's peak), and
    the largest video rate (kbit/s) of a source window that is copied as it is rather than re-encoded
    (`copy_kbps`; see the module docstring)."""

    width: int = 320
    fps: float = 25.0
    crf: int = 28
    preset: str = "superfast"  # libx264: ~1.5x faster than veryfast at 320 px; the audio dominates the bytes
    aac_coder: str = "fast"  # FFmpeg's fast AAC coder: ~2.5x faster than its default, fine for a listening page
    spec_width: int = 320
    spec_height: int = 96
    spec_range_db: float = 80.0
    copy_kbps: float = 800.0  # a window of H.264 at most this rate that starts on a keyframe is copied (0: never)

    def key(self) -> str:
        return f"v{MEDIA_VERSION}-w{self.width}-f{self.fps}-c{self.crf}-p{self.preset}-a{self.aac_coder}" \
               f"-s{self.spec_width}x{self.spec_height}-r{self.spec_range_db}-k{self.copy_kbps:g}"


@dataclass
class TrackMedia:
    """One track's files, relative to the report folder (``None`` where not made), and why not (`error`)."""

    media: str | None = None  # mp4 (video + this track's audio) or m4a (audio only)
    kind: str = "video"       # "video" or "audio"
    poster: str | None = None
    spectrogram: str | None = None
    error: str = ""
    encoded: int = 0          # files written by this call (0: everything was reused)
    from_store: int = 0       # files this call linked (or copied) in from the shared `MediaStore`
    video: str = ""           # how this call made the ground-truth video: "copy" or "re-encode" ("" made none)


@dataclass
class ClipSources:
    """What one clip's media are made from (paths as the per-clip table states them)."""

    clip_id: str
    video_path: str | None
    gt_audio_path: str | None
    start_sec: float
    window_sec: float | None
    generated: dict[str, str | None] = field(default_factory=dict)  # track key -> generated audio path


def _stat_key(path: str | None) -> str:
    if not path:
        return "-"
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}|absent"
    return f"{path}|{st.st_size}|{st.st_mtime_ns}"


def _digest(*parts: object) -> str:
    return hashlib.sha1("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:16]


_LUT: np.ndarray | None = None


def _colormap() -> np.ndarray:
    """matplotlib's 'magma' as a uint8 ``[256, 3]`` lookup table."""
    global _LUT
    if _LUT is None:
        from matplotlib import colormaps

        _LUT = (colormaps["magma"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    return _LUT


_MEL: dict[tuple[int, int, int], torch.Tensor] = {}


def _mel_matrix(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """torchaudio's HTK mel filter bank ``[M, F]`` (cached per size)."""
    key = (sample_rate, n_fft, n_mels)
    if key not in _MEL:
        import torchaudio.functional as AF

        _MEL[key] = AF.melscale_fbanks(n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate).T.contiguous()
    return _MEL[key]


@functools.lru_cache(maxsize=4)
def _hann(n: int) -> np.ndarray:
    return np.hanning(n).astype(np.float32)


def spectrogram_image(audio: torch.Tensor | np.ndarray, sample_rate: int, settings: MediaSettings) -> np.ndarray:
    """A mel spectrogram of `audio` (float ``[C, N]``, channels averaged) as uint8 levels ``[H, W]``
    (`spec_height` x `spec_width`; low frequencies at the bottom; 0 = `spec_range_db` or more below the track's
    peak, 255 = the peak; silence is 0). `save_spectrogram` colours it. 64 mel bands of Hann-windowed frames of 512
    samples (2048 above 24 kHz: no empty low bands), about one frame per output column. FFT and mel product in
    torch (the FFT about 4x numpy's on these sizes; torch's threads are the report's to set, where numpy's BLAS
    threads spin on other cores after a small product)."""
    from PIL import Image

    x = np.asarray(audio, dtype=np.float32).mean(axis=0)
    n_fft = 2048 if sample_rate > 24000 else 512
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    hop = max(n_fft // 8, int(math.ceil((x.size - n_fft + 1) / settings.spec_width)))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]  # [frames, n_fft]
    spec = torch.fft.rfft(torch.from_numpy(frames * _hann(n_fft)), dim=1)  # [frames, F]
    mel = _mel_matrix(sample_rate, n_fft, 64) @ (spec.real.square() + spec.imag.square()).T  # [M, frames]
    db = 10 * np.log10(np.maximum(mel.numpy(), 1e-12))
    top = float(db.max())
    if top <= -110.0:  # digital silence
        level = np.zeros_like(db)
    else:
        level = np.clip((db - (top - settings.spec_range_db)) / settings.spec_range_db, 0, 1)
    img = Image.fromarray((level[::-1] * 255).round().astype(np.uint8))
    return np.asarray(img.resize((settings.spec_width, settings.spec_height), Image.BILINEAR))


def save_spectrogram(path: Path, levels: np.ndarray) -> None:
    """Write uint8 levels ``[H, W]`` as a palette PNG coloured with matplotlib's 'magma' (one byte per pixel:
    about a third of an RGB PNG's size), atomically."""
    from PIL import Image

    levels = np.ascontiguousarray(levels, dtype=np.uint8)
    img = Image.frombytes("P", (levels.shape[1], levels.shape[0]), levels.tobytes())
    img.putpalette(_colormap().reshape(-1).tolist())
    with atomic_open(path, "wb") as f:
        img.save(f, format="PNG", optimize=True)


def _save_jpeg(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    with atomic_open(path, "wb") as f:
        Image.fromarray(rgb).save(f, format="JPEG", quality=80)


def _read_window(path: str, start: float, window: float | None) -> tuple[torch.Tensor, int]:
    """Audio ``[C, N]`` (C <= 2: more channels are averaged) of ``[start, start + window)`` and its rate."""
    from visualsound.media import read_audio_with_rate

    audio, rate = read_audio_with_rate(path, start=start, duration=window)
    return (audio.mean(dim=0, keepdim=True) if audio.shape[0] > 2 else audio), rate


class MediaStore:
    """Report media shared by every report: a folder (by default ``<cache>/report-media``, see `vbench report
    --media-cache`) holding each file made for any report under its content-keyed name, so that another report
    (a new folder, another selection, one more model) links the files it needs instead of encoding them again.
    Files are hard links where the report and the store share a file system (no extra space), else copies; a
    report folder never depends on the store (deleting either leaves the other whole). A store that cannot be
    written is used for reading only, after one warning."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.writable = True
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:  # for the worker processes of `encode_clips` (a lock does not pickle)
        return {"root": self.root, "writable": self.writable}

    def __setstate__(self, state: dict) -> None:
        self.root, self.writable, self._lock = state["root"], state["writable"], threading.Lock()

    def path(self, name: str) -> Path:
        """Where a media file named `name` (``<kind>-<key>.<ext>``) lives in the store."""
        key = name.split("-", 1)[-1]
        return self.root / key[:2] / name

    def fetch(self, dst: Path) -> bool:
        """Place the stored file of `dst`'s name at `dst`; False when the store has none (or it cannot be read)."""
        src = self.path(dst.name)
        if not src.is_file():
            return False
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            atomic_link_or_copy(src, dst)
        except OSError as e:
            log.warning("report media store: cannot take %s (%s); making the file again", src, e)
            return False
        return True

    def add(self, made: Path) -> None:
        """Keep a file just made for a report (nothing when the store has it or cannot be written)."""
        dst = self.path(made.name)
        if not self.writable or dst.is_file():
            return
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            atomic_link_or_copy(made, dst)
        except OSError as e:
            self._unwritable(e)

    def check_writable(self) -> bool:
        """Try the store once (its folder and a file in it), as before its use is spread over worker processes,
        which would each warn; False, after the one warning, when it cannot be written."""
        if self.writable:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile(dir=self.root, prefix=".write-check-"):
                    pass
            except OSError as e:
                self._unwritable(e)
        return self.writable

    def _unwritable(self, e: OSError) -> None:
        with self._lock:
            if self.writable:
                self.writable = False
                log.warning("report media store %s cannot be written (%s): this report's media are not shared "
                            "with later reports", self.root, e)


class ClipEncoder:
    """Makes (or finds) the media of clips under ``<root>/media/<clip folder>/``; see the module docstring."""

    def __init__(self, root: Path, settings: MediaSettings = MediaSettings(), threads: int = 0,
                 store: MediaStore | None = None) -> None:
        self.root = Path(root)
        self.settings = settings
        self.threads = threads  # the video decoder's and libx264's threads per clip (0: their own choice; 1 when
        # clips run in parallel, one per core)
        self.store = store

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _have(self, track: TrackMedia, *paths: Path, dry: bool = False) -> bool:
        """Every one of `paths` is in the report folder, those missing taken from the store when it has them all
        (else they are made again, together). `dry`: only look (nothing is linked), and raise `_MustMake` where
        something would be made."""
        if dry:
            if not all(self._there(p, dry) for p in paths):
                raise _MustMake()
            return True
        missing = [p for p in paths if not p.is_file()]
        if not missing:
            return True
        if self.store is None or not all(self.store.path(p.name).is_file() for p in missing):
            return False
        for p in missing:
            if not self.store.fetch(p):
                return False
            track.from_store += 1
        return True

    def _made(self, track: TrackMedia, *paths: Path) -> None:
        track.encoded += len(paths)
        if self.store is not None:
            for p in paths:
                self.store.add(p)

    def _there(self, path: Path, dry: bool) -> bool:
        """`path` is in the report folder (or, looking `dry`, in the store, from where it would be linked)."""
        return path.is_file() or (dry and self.store is not None and self.store.path(path.name).is_file())

    def encode(self, folder: str, src: ClipSources) -> tuple[TrackMedia, dict[str, TrackMedia]]:
        """The ground-truth track and one track per `src.generated` key for the clip in ``media/<folder>/``."""
        return self._encode(folder, src, dry=False)

    def complete(self, folder: str, src: ClipSources) -> bool:
        """Whether every file of the clip exists, in the report folder or in the store (then `encode` only
        links them in): nothing is written or linked."""
        try:
            self._encode(folder, src, dry=True)
        except _MustMake:
            return False
        return True

    def _encode(self, folder: str, src: ClipSources, dry: bool) -> tuple[TrackMedia, dict[str, TrackMedia]]:
        from visualsound.media import write_audio

        s = self.settings
        out = self.root / "media" / folder
        gt_key = _digest("gt", _stat_key(src.video_path), _stat_key(src.gt_audio_path), src.start_sec,
                         src.window_sec, s.key())
        gt = TrackMedia()
        gt_mp4 = out / f"gt-{gt_key}.mp4"
        gt_audio: tuple[torch.Tensor, int] | None = None
        window = src.window_sec
        if src.video_path:
            gt_poster = out / f"gt-{gt_key}.jpg"
            if not self._have(gt, gt_mp4, gt_poster, dry=dry):
                try:
                    gt_audio, gt.error = self._gt_audio(src)
                    gt.video = self._gt_video(src, gt_mp4, gt_poster, gt_audio)
                    self._made(gt, gt_mp4, gt_poster)
                except NoVideoStreamError as e:  # an audio file among the videos (cover art is not video)
                    log.info("%s: shown as an audio-only clip (%s)", src.clip_id, e)
                    gt.kind, gt.error = "audio", ""
                except ToolkitError as e:
                    gt.error = f"cannot read the video {src.video_path}: {e}"
            if self._there(gt_mp4, dry):
                gt.media, gt.poster = self._rel(gt_mp4), self._rel(gt_poster)
                if window is None:  # the whole video: generated audio is cut to its length
                    from visualsound.media import probe

                    try:
                        window = probe(gt_mp4 if gt_mp4.is_file() else self.store.path(gt_mp4.name)
                                       ).video_duration
                    except ToolkitError as e:
                        gt.error = f"cannot read back {gt_mp4}: {e}"
        else:
            gt.kind = "audio"
        if src.gt_audio_path:
            gt_spec = out / f"gt-{gt_key}.png"
            gt_m4a = out / f"gt-{gt_key}.m4a"
            need_m4a = gt.media is None
            if not self._have(gt, gt_spec, *([gt_m4a] if need_m4a else []), dry=dry):
                try:
                    if gt_audio is None:
                        gt_audio, err = self._gt_audio(src)
                        if err:
                            raise ToolkitError(err)
                    if need_m4a:
                        write_audio(gt_m4a, *gt_audio, aac_coder=s.aac_coder)
                        self._made(gt, gt_m4a)
                    save_spectrogram(gt_spec, spectrogram_image(*gt_audio, s))
                    self._made(gt, gt_spec)
                except ToolkitError as e:
                    gt.error = gt.error or str(e)
            if self._there(gt_spec, dry):
                gt.spectrogram = self._rel(gt_spec)
            if need_m4a and self._there(gt_m4a, dry):
                gt.media, gt.kind = self._rel(gt_m4a), "audio"
        elif not gt.error:
            gt.error = "the clip has no ground-truth audio file"
        video = gt_mp4 if gt.kind == "video" and gt.media else None
        tracks = {k: self._track(out, gt_key, path, video, window, dry) for k, path in src.generated.items()}
        for t in tracks.values():
            if t.kind == "video" and t.media:
                t.poster = gt.poster  # the same picture
        return gt, tracks

    def _gt_audio(self, src: ClipSources) -> tuple[tuple[torch.Tensor, int] | None, str]:
        if not src.gt_audio_path:
            return None, "the clip has no ground-truth audio file"
        try:
            return _read_window(src.gt_audio_path, src.start_sec, src.window_sec), ""
        except ToolkitError as e:
            return None, f"cannot read the ground-truth audio {src.gt_audio_path}: {e}"

    def _gt_video(self, src: ClipSources, mp4: Path, poster: Path, audio: tuple[torch.Tensor, int] | None) -> str:
        """Make the ground-truth video and its poster; returns "copy" or "re-encode"."""
        from visualsound.media import NotCopyable, copy_window, write_preview

        s = self.settings
        a, sr = audio if audio is not None else (None, None)
        if s.copy_kbps > 0:
            same_file = audio is not None and src.gt_audio_path is not None and \
                os.path.realpath(src.gt_audio_path) == os.path.realpath(src.video_path)
            try:
                first, _ = copy_window(src.video_path, mp4, start=src.start_sec, duration=src.window_sec,
                                       max_kbps=s.copy_kbps, max_width=s.width, audio=a, sample_rate=sr,
                                       aac_coder=s.aac_coder, audio_from_source=same_file)
                _save_jpeg(poster, first)
                return "copy"
            except NotCopyable as e:
                log.debug("%s: re-encoding the window (%s)", src.video_path, e.reason)
            except ToolkitError as e:  # a copy FFmpeg cannot write; re-encoding reads the source afresh (and a
                # broken source fails there with its own error)
                log.info("%s: copying the window failed (%s); re-encoding it", src.video_path, e)
        first = write_preview(src.video_path, mp4, start=src.start_sec, duration=src.window_sec, fps=s.fps,
                              max_width=s.width, audio=a, sample_rate=sr, crf=s.crf, preset=s.preset,
                              aac_coder=s.aac_coder, encoder_threads=self.threads, decoder_threads=self.threads)
        _save_jpeg(poster, first)
        return "re-encode"

    def _track(self, out: Path, gt_key: str, path: str | None, gt_mp4: Path | None, window: float | None,
               dry: bool = False) -> TrackMedia:
        """The generated audio at `path` (its first `window` seconds) under the video `gt_mp4`, or as m4a."""
        from visualsound.media import mux_audio, write_audio

        t = TrackMedia(kind="video" if gt_mp4 is not None else "audio")
        if not path:
            t.error = "no generated audio for this clip"
            return t
        tkey = _digest("track", gt_key if gt_mp4 is not None else "-", _stat_key(path), window, self.settings.key())
        media = out / f"gen-{tkey}.{'mp4' if gt_mp4 is not None else 'm4a'}"
        spec = out / f"gen-{tkey}.png"
        if not self._have(t, media, spec, dry=dry):
            try:
                audio, sr = _read_window(path, 0.0, None)
                if window:
                    audio = audio[:, :int(round(window * sr))]
                if gt_mp4 is not None:
                    mux_audio(gt_mp4, audio, sr, media, aac_coder=self.settings.aac_coder)
                else:
                    write_audio(media, audio, sr, aac_coder=self.settings.aac_coder)
                save_spectrogram(spec, spectrogram_image(audio, sr, self.settings))
                self._made(t, media, spec)
            except ToolkitError as e:
                t.error = f"cannot read the generated audio {path}: {e}"
                return t
        t.media, t.spectrogram = self._rel(media), self._rel(spec)
        return t


class _MustMake(Exception):
    """`ClipEncoder.complete` met a file that has to be made."""


PROCESS_MIN_CLIPS = 12  # fewer clips to make are made on threads (a process pool takes ~2 s to start)
_WORKER: ClipEncoder | None = None  # a worker process's encoder (`_init_worker`)


def encode_clips(encoder: ClipEncoder, items: list[tuple[str, ClipSources]], workers: int,
                 done: Callable[[], None] | None = None) -> list[tuple[TrackMedia, dict[str, TrackMedia]]]:
    """`encoder.encode` of every ``(folder, sources)`` in `items`, in their order, on `workers` at once; `done` is
    called as each clip is finished (a progress bar).

    Clips whose files all exist (in the folder, or in the store) are taken on threads in this process. The others
    are made in `workers` worker processes when there are at least `PROCESS_MIN_CLIPS` of them, else on threads:
    making a clip is many short calls into FFmpeg between Python steps, and threads queue for the interpreter
    lock between them (two threads made clips barely faster than one, 1.1x on 2 cores; two processes 1.5x).
    Workers log through this process's loggers; each runs torch on one thread. A worker that dies (a crash in
    FFmpeg, the OOM killer) costs only the clip it was making: that clip gets a `TrackMedia.error`."""
    from visualsound.utils.threads import torch_threads

    tick = done or (lambda: None)

    def on_thread(it: tuple[str, ClipSources]) -> tuple[TrackMedia, dict[str, TrackMedia]]:
        r = encoder.encode(*it)
        tick()
        return r

    results: list = [None] * len(items)
    with torch_threads(1) if workers > 1 else contextlib.nullcontext(), ThreadPoolExecutor(workers) as pool:
        complete = list(pool.map(lambda it: encoder.complete(*it), items))
        todo = [i for i, c in enumerate(complete) if not c]
        if workers > 1 and len(todo) >= PROCESS_MIN_CLIPS:
            for i, r in zip(todo, _in_processes(encoder, [items[i] for i in todo], workers, tick)):
                results[i] = r
        rest = [i for i, r in enumerate(results) if r is None]
        for i, r in zip(rest, pool.map(on_thread, [items[i] for i in rest])):
            results[i] = r
    return results


def _in_processes(encoder: ClipEncoder, items: list[tuple[str, ClipSources]], workers: int,
                  tick: Callable[[], None]) -> list:
    import multiprocessing as mp
    from logging.handlers import QueueListener

    methods = mp.get_all_start_methods()
    ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")  # no fork: torch's threads
    if ctx.get_start_method() == "forkserver":
        # imported once, in the server (torch, PyAV, the spectrogram's colour map and mel filters); workers fork
        # from it
        ctx.set_forkserver_preload([__name__, "matplotlib.cm", "torchaudio.functional", "PIL.PngImagePlugin"])
    if encoder.store is not None:
        encoder.store.check_writable()  # here, once, rather than a warning from each worker
    queue = ctx.Queue()
    listener = QueueListener(queue, _Redispatch())
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in ("benchmarks", "visualsound")]
    level = min(logging.getLogger(n).getEffectiveLevel() for n in ["benchmarks", "visualsound", *names])
    listener.start()

    def pool(n: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(n, mp_context=ctx, initializer=_init_worker, initargs=(encoder, queue, level))

    done: dict[int, tuple[TrackMedia, dict[str, TrackMedia]]] = {}
    try:
        with _stopping(pool(min(workers, len(items)))) as p:
            futures = {p.submit(_encode_in_worker, it): i for i, it in enumerate(items)}
            for f in as_completed(futures):
                try:
                    done[futures[f]] = f.result()  # another exception surfaces here, with the worker's traceback
                except BrokenProcessPool:
                    break
                tick()
        # a worker died (FFmpeg crashing on a file, the kernel's OOM killer): the pool is gone with every clip
        # it still held; each of those is made alone, so that only the clip that kills its worker is lost
        for i in (i for i in range(len(items)) if i not in done):
            with _stopping(pool(1)) as p:
                try:
                    done[i] = p.submit(_encode_in_worker, items[i]).result()
                except BrokenProcessPool:
                    log.warning("report media: making clip %s stopped its worker process", items[i][1].clip_id)
                    done[i] = _lost(items[i][1])
            tick()
    finally:
        listener.stop()
    return [done[i] for i in range(len(items))]


@contextlib.contextmanager
def _stopping(pool: ProcessPoolExecutor) -> Iterator[ProcessPoolExecutor]:
    """`pool`, shut down when the block ends. On an exception (Ctrl-C included) its queued clips are cancelled and
    its workers stopped at once instead of being waited for (a worker stopped mid-file leaves a temporary file,
    which the next build removes; every finished file is whole)."""
    try:
        yield pool
    except BaseException:
        workers = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in workers:
            proc.terminate()
        raise
    pool.shutdown(wait=True)


def _lost(src: ClipSources) -> tuple[TrackMedia, dict[str, TrackMedia]]:
    why = "making this clip's media stopped its worker process (FFmpeg crashed on a file, or memory ran out)"
    return TrackMedia(error=why), {k: TrackMedia(error=why) for k in src.generated}


class _Redispatch(logging.Handler):
    """Hands a worker's log record to this process's logger of the same name, at that logger's level."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


def _init_worker(encoder: ClipEncoder, queue, level: int) -> None:
    from logging.handlers import QueueHandler

    global _WORKER
    torch.set_num_threads(1)
    root = logging.getLogger()
    root.handlers[:] = [QueueHandler(queue)]
    root.setLevel(level)
    _WORKER = encoder


def _encode_in_worker(item: tuple[str, ClipSources]) -> tuple[TrackMedia, dict[str, TrackMedia]]:
    assert _WORKER is not None, "the worker was not initialised"
    return _WORKER.encode(*item)
