"""Deterministic synthetic audio-visual clips with known event times, and a zoo of bad inputs for tests.

Each clip shows one event type and plays its sound at the same instants:

- ``ball``: a ball bouncing on a floor; each touch-down is an impact (a damped low thump plus a noise burst);
- ``flash``: the frame flashes white and fades over a few frames; each flash is a click (2 ms broadband burst);
- ``drum``: a drum skin that swells and brightens on each hit; each hit is a drum sound (pitch-dropping tone).

Event times are multiples of the frame period (``k / fps``): frame ``k`` shows the impact / flash / hit and the
sound starts at sample ``round(k / fps * sample_rate)``. A share of clips is *mismatched*, cycling through
``unrelated_audio`` (audio events at independent times), ``static_frames`` (the first frame repeated, sound
unchanged) and ``silence`` (all-zero audio). Everything is a function of ``(seed, clip index)``.

`synthesize` writes ``<out>/video/{ytid}_{start:06d}.mp4`` (VGGSound file-name convention, ``start`` = 0,
``ytid`` = ``synth0003``), ``<out>/synth.csv`` (VGGSound style, no header: ``youtube_id, start_seconds, label,
split``) and ``<out>/events.json`` (per clip: event times, matched flag, mismatch kind, media parameters).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from visualsound.errors import ConfigError
from visualsound.utils.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from visualsound.utils.config import FrozenConfig, register_preset

log = logging.getLogger(__name__)

EVENT_TYPES = ("ball", "flash", "drum")
LABELS = {"ball": "ball bouncing", "flash": "camera flash clicking", "drum": "playing drum"}
MISMATCH_KINDS = ("unrelated_audio", "static_frames", "silence")
NOISE_FLOOR = 0.002  # background noise amplitude of matched audio (so "silence" is distinguishable)


@dataclass(frozen=True)
class SynthConfig(FrozenConfig):
    """Parameters of a synthetic clip set (all clips share them)."""

    count: int = 16
    fps: float = 25.0
    width: int = 64
    height: int = 64
    duration: float = 2.0
    sample_rate: int = 16000
    channels: int = 1
    seed: int = 0
    mismatched_fraction: float = 0.25
    test_fraction: float = 0.25
    max_events: int = 3
    prefix: str = "synth"

    def __post_init__(self) -> None:
        self.validate()  # an invalid config cannot be built (as the other configs of the toolkit)

    def validate(self) -> SynthConfig:
        """Return self, or raise `ConfigError` naming the bad field."""
        checks = [
            (self.count >= 1, "count must be >= 1"),
            (self.fps > 0, "fps must be > 0"),
            (self.width >= 16 and self.height >= 16 and self.width % 2 == 0 and self.height % 2 == 0,
             "width and height must be even and >= 16 (H.264 yuv420p)"),
            (self.duration >= 0.4, "duration must be >= 0.4 s"),
            (self.sample_rate >= 8000, "sample_rate must be >= 8000"),
            (self.channels in (1, 2), "channels must be 1 or 2"),
            (0.0 <= self.mismatched_fraction <= 1.0, "mismatched_fraction must be in [0, 1]"),
            (0.0 <= self.test_fraction <= 1.0, "test_fraction must be in [0, 1]"),
            (self.max_events >= 1, "max_events must be >= 1"),
            (self.prefix.replace("-", "").replace("_", "").isalnum(), "prefix must be alphanumeric (or - _)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"SynthConfig: {msg} (got {self})")
        return self


register_preset(SynthConfig, "default", SynthConfig())
register_preset(SynthConfig, "tiny", SynthConfig(count=4, duration=1.0, width=32, height=32, max_events=2))
register_preset(SynthConfig, "vggsound", SynthConfig(count=16, duration=10.0, width=224, height=224,
                                                     sample_rate=44100, channels=2, max_events=8))


@dataclass(frozen=True)
class ClipSpec:
    """One clip's plan: what it shows, what it plays and where it goes."""

    index: int
    ytid: str
    event_type: str
    label: str
    split: str
    matched: bool
    mismatch: str | None
    visual_events: tuple[float, ...]
    audio_events: tuple[float, ...]

    @property
    def filename(self) -> str:
        """VGGSound-style file name ``{ytid}_000000.mp4`` (every synthetic clip starts at 0 s)."""
        return f"{self.ytid}_{0:06d}.mp4"


def _event_frames(rng: np.random.Generator, cfg: SynthConfig, n_frames: int, avoid: tuple[int, ...] = ()) -> list[int]:
    """Sorted event frame indices, >= 0.2 s from the clip edges, >= 0.3 s apart and >= 0.2 s from `avoid`.

    Never empty: when no frame satisfies the distances, the frame farthest from `avoid` is used.
    """
    edge, gap = int(np.ceil(0.2 * cfg.fps)), max(1, int(np.ceil(0.3 * cfg.fps)))
    cands = np.arange(min(edge, n_frames // 2), max(n_frames - edge, n_frames // 2 + 1))

    def dist(k: int) -> int:
        return min((abs(k - a) for a in avoid), default=n_frames)

    n = int(rng.integers(1, cfg.max_events + 1))
    chosen: list[int] = []
    for cand in rng.permutation(cands):
        if dist(int(cand)) >= edge and all(abs(int(cand) - c) >= gap for c in chosen):
            chosen.append(int(cand))
        if len(chosen) == n:
            break
    if not chosen:
        chosen = [max(range(n_frames), key=dist)]
    return sorted(chosen)


def plan_clips(cfg: SynthConfig) -> list[ClipSpec]:
    """The deterministic plan of every clip of `cfg` (no media written)."""
    cfg.validate()
    n_frames = int(round(cfg.duration * cfg.fps))
    order = np.random.default_rng([cfg.seed, 1]).permutation(cfg.count)
    n_mis = int(round(cfg.count * cfg.mismatched_fraction))
    mismatch_of = {int(i): MISMATCH_KINDS[j % len(MISMATCH_KINDS)] for j, i in enumerate(order[:n_mis])}
    test = {int(i) for i in np.random.default_rng([cfg.seed, 2]).permutation(cfg.count)[
        :int(round(cfg.count * cfg.test_fraction))]}
    specs = []
    for i in range(cfg.count):
        rng = np.random.default_rng([cfg.seed, 100 + i])
        etype = EVENT_TYPES[i % len(EVENT_TYPES)]
        frames = _event_frames(rng, cfg, n_frames)
        times = tuple(round(k / cfg.fps, 6) for k in frames)
        kind = mismatch_of.get(i)
        if kind == "unrelated_audio":
            other = _event_frames(rng, cfg, n_frames, avoid=tuple(frames))
            vis, aud = times, tuple(round(k / cfg.fps, 6) for k in other)
        elif kind == "static_frames":
            vis, aud = (), times
        elif kind == "silence":
            vis, aud = times, ()
        else:
            vis, aud = times, times
        specs.append(ClipSpec(index=i, ytid=f"{cfg.prefix}{i:04d}", event_type=etype, label=LABELS[etype],
                              split="test" if i in test else "train", matched=kind is None, mismatch=kind,
                              visual_events=vis, audio_events=aud))
    return specs


# ------------------------------------------------------------------------------------------------ rendering
def render_video(spec: ClipSpec, cfg: SynthConfig) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` frames of `spec` (T = round(duration * fps))."""
    T, H, W = int(round(cfg.duration * cfg.fps)), cfg.height, cfg.width
    t = np.arange(T) / cfg.fps
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    events = np.asarray(spec.visual_events if spec.visual_events else spec.audio_events, np.float64)
    frames = np.empty((T, H, W, 3), np.uint8)
    if spec.event_type == "ball":
        floor = H - max(2, H // 10)
        radius = max(2.0, W / 12)
        bounds = _arc_bounds(events, cfg.duration)
        for k in range(T):
            img = np.full((H, W, 3), (40, 50, 90), np.float32)
            img[floor:] = (90, 70, 40)
            h = _arc_height(t[k], bounds) * (floor - 2 * radius - 1)
            cy, cx = floor - radius - h, W / 2
            img[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = (250, 200, 40)
            frames[k] = img.astype(np.uint8)
    elif spec.event_type == "flash":
        for k in range(T):
            since = t[k] - events[events <= t[k] + 1e-9]
            glow = float(np.exp(-since.min() * cfg.fps / 1.5)) if since.size else 0.0
            frames[k] = np.uint8(np.clip(30 + 225 * glow, 0, 255))
    else:  # drum
        r0 = min(H, W) / 4
        for k in range(T):
            since = t[k] - events[events <= t[k] + 1e-9]
            hit = float(np.exp(-since.min() * cfg.fps / 2.0)) if since.size else 0.0
            img = np.full((H, W, 3), (20, 20, 20), np.float32)
            r = r0 * (1 + 0.4 * hit)
            img[(yy - H / 2) ** 2 + (xx - W / 2) ** 2 <= r ** 2] = (120 + 135 * hit, 60 + 100 * hit, 60)
            frames[k] = img.astype(np.uint8)
    if spec.mismatch == "static_frames":
        frames[:] = frames[0]
    return frames


def _arc_bounds(events: np.ndarray, duration: float) -> list[tuple[float, float]]:
    """Consecutive touch-down times, with virtual touch-downs before the first and after the last event."""
    if events.size == 0:
        return [(-duration, 2 * duration)]
    gap = float(np.diff(events).mean()) if events.size > 1 else 0.8
    pts = [events[0] - max(gap, events[0] + 0.2)] + events.tolist() + [events[-1] + max(gap, 0.6)]
    return list(zip(pts[:-1], pts[1:]))


def _arc_height(t: float, bounds: list[tuple[float, float]]) -> float:
    """Normalised ball height in [0, 1]: a parabola between touch-downs, 0 at each event."""
    for a, b in bounds:
        if a <= t <= b:
            return 4 * (t - a) * (b - t) / (b - a) ** 2
    return 0.0


def render_audio(spec: ClipSpec, cfg: SynthConfig) -> np.ndarray:
    """float32 ``[C, N]`` audio of `spec` (N = round(duration * sample_rate)), clipped to [-0.9, 0.9]."""
    sr, N = cfg.sample_rate, int(round(cfg.duration * cfg.sample_rate))
    if spec.mismatch == "silence":
        return np.zeros((cfg.channels, N), np.float32)
    rng = np.random.default_rng([cfg.seed, 10_000 + spec.index])
    x = NOISE_FLOOR * rng.standard_normal(N)
    for te in spec.audio_events:
        s = int(round(te * sr))
        snd = _event_sound(spec.event_type, sr, rng)[: N - s]
        x[s:s + snd.size] += snd
    x = np.clip(x, -0.9, 0.9)
    if cfg.channels == 2:
        return np.stack([x, 0.8 * x]).astype(np.float32)
    return x[None].astype(np.float32)


def _event_sound(kind: str, sr: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "ball":  # impact: damped 150 Hz thump + short noise burst
        t = np.arange(int(0.25 * sr)) / sr
        return 0.6 * np.sin(2 * np.pi * 150 * t) * np.exp(-t / 0.04) + 0.3 * rng.standard_normal(t.size) * np.exp(
            -t / 0.005)
    if kind == "flash":  # click: 2 ms broadband burst
        t = np.arange(int(0.02 * sr)) / sr
        return 0.7 * rng.standard_normal(t.size) * np.exp(-t / 0.002)
    t = np.arange(int(0.4 * sr)) / sr  # drum: pitch drop 220 -> 110 Hz, plus a stick noise
    phase = 2 * np.pi * (110 * t + 110 * 0.05 * (1 - np.exp(-t / 0.05)))
    return 0.6 * np.sin(phase) * np.exp(-t / 0.08) + 0.2 * rng.standard_normal(t.size) * np.exp(-t / 0.004)


# ------------------------------------------------------------------------------------------------ writing
def synthesize(out_dir: str | os.PathLike, cfg: SynthConfig) -> list[dict[str, Any]]:
    """Write the clips, ``synth.csv`` and ``events.json`` of `cfg` under `out_dir`; return the JSON records.

    Existing clips are overwritten (writes are atomic); the same config always gives the same files' content.
    """
    from visualsound.media import write_video

    out = Path(out_dir)
    specs = plan_clips(cfg)
    records = []
    for spec in specs:
        path = out / "video" / spec.filename
        write_video(path, render_video(spec, cfg), cfg.fps, render_audio(spec, cfg), cfg.sample_rate,
                    reproducible=True)
        records.append({"ytid": spec.ytid, "start_seconds": 0, "file": f"video/{spec.filename}",
                        "label": spec.label, "event_type": spec.event_type, "split": spec.split,
                        "matched": spec.matched, "mismatch": spec.mismatch,
                        "visual_events": list(spec.visual_events), "audio_events": list(spec.audio_events)})
        log.info("wrote %s (%s, %s)", path, spec.event_type, spec.mismatch or "matched")
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([r["ytid"], 0, r["label"], r["split"]] for r in records)
    atomic_write_text(out / "synth.csv", buf.getvalue())
    atomic_write_json(out / "events.json", {"config": cfg.to_dict(), "clips": records})
    return records


@dataclass(frozen=True)
class BadClip:
    """One member of the bad-input zoo: its path, what it is, and the error `probe` raises (None = probes fine)."""

    path: Path
    description: str
    probe_error: str | None


def make_bad_clips(out_dir: str | os.PathLike, sample_rate: int = 16000, size: int = 64) -> dict[str, BadClip]:
    """Write the bad-input zoo used by tests across the toolkit; returns ``name -> BadClip``.

    Names: ``not_media`` (text renamed .mp4), ``empty`` (0 bytes), ``truncated`` (an mp4 cut in half),
    ``video_only``, ``audio_only`` (AAC in .m4a), ``silent`` (all-zero audio), ``short`` (0.5 s),
    ``fps_29_97`` and ``fps_50`` (2 s clips at odd rates). The good-but-odd files carry a ball clip.
    """
    from visualsound.media import write_audio, write_video

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = SynthConfig(count=1, width=size, height=size, sample_rate=sample_rate, duration=2.0,
                       mismatched_fraction=0.0, max_events=2)
    spec = plan_clips(base)[0]

    def clip(cfg: SynthConfig, s: ClipSpec = spec) -> tuple[np.ndarray, np.ndarray]:
        return render_video(s, cfg), render_audio(s, cfg)

    zoo: dict[str, BadClip] = {}
    p = out / "not_media.mp4"
    atomic_write_text(p, "This is a text file, not a video.\n" * 20)
    zoo["not_media"] = BadClip(p, "text file renamed .mp4", "NotMediaError")
    p = out / "empty.mp4"
    atomic_write_text(p, "")
    zoo["empty"] = BadClip(p, "zero-byte file", "NotMediaError")
    v, a = clip(base)
    full = out / ".full_for_truncation.mp4"
    write_video(full, v, base.fps, a, base.sample_rate)
    data = full.read_bytes()
    full.unlink()
    p = out / "truncated.mp4"
    atomic_write_bytes(p, data[: len(data) // 2])
    zoo["truncated"] = BadClip(p, "mp4 cut to half its size", "TruncatedMediaError")
    p = out / "video_only.mp4"
    write_video(p, v, base.fps)
    zoo["video_only"] = BadClip(p, "H.264 without an audio stream", None)
    p = out / "audio_only.m4a"
    write_audio(p, a, base.sample_rate)
    zoo["audio_only"] = BadClip(p, "AAC audio without a video stream", None)
    p = out / "silent.mp4"
    write_video(p, v, base.fps, np.zeros_like(a), base.sample_rate)
    zoo["silent"] = BadClip(p, "video with all-zero audio", None)
    short = base.replace(duration=0.5, max_events=1)
    v_s, a_s = clip(short, plan_clips(short)[0])
    p = out / "short.mp4"
    write_video(p, v_s, short.fps, a_s, short.sample_rate)
    zoo["short"] = BadClip(p, "0.5 s clip", None)
    for name, fps in (("fps_29_97", 30000 / 1001), ("fps_50", 50.0)):
        c = base.replace(fps=fps)
        v_f, a_f = clip(c, plan_clips(c)[0])
        p = out / f"{name}.mp4"
        write_video(p, v_f, fps, a_f, c.sample_rate)
        zoo[name] = BadClip(p, f"2 s clip at {fps:.5g} fps", None)
    return zoo
