"""``vbench plot``: a Figure-2-like picture of one clip -- a strip of video frames, the ground-truth waveform and
each generated waveform on a shared time axis, with the true visual event times marked (synthetic clips carry
them in the dataset manifest, from ``visualsound synth``'s ``events.json``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.datasets import DatasetClip
from visualsound.errors import ToolkitError


class PlotError(ToolkitError):
    """The figure cannot be drawn (no frames, unreadable audio, bad events file)."""


def window_events(clip: DatasetClip, events: Sequence[float] | None = None) -> list[float]:
    """Event times relative to the window start, inside ``[0, window)``: `events` (seconds from the file start)
    or the clip's own."""
    times = clip.events if events is None else tuple(events)
    if times is None:
        return []
    return [t - clip.start_sec for t in times if clip.start_sec <= t < clip.start_sec + clip.window_sec]


def events_from_json(path: str | os.PathLike, clip_id: str) -> list[float]:
    """Visual event times of `clip_id` from a ``visualsound synth`` ``events.json``."""
    try:
        records = json.loads(Path(path).read_text())["clips"]
    except (OSError, KeyError, json.JSONDecodeError) as e:
        raise PlotError(f"{path}: not a synth events.json ({e})") from e
    for r in records:
        if r.get("ytid") == clip_id:
            return [float(t) for t in r["visual_events"]]
    raise PlotError(f"{path}: no clip {clip_id!r}")


def plot_clip(clip: DatasetClip, generated: Sequence[tuple[str, str | os.PathLike]], out_path: str | os.PathLike,
              num_frames: int = 8, events: Sequence[float] | None = None, debug_weights: bool = False,
              dpi: int = 100) -> Path:
    """Draw the figure of `clip` with ``generated = [(label, audio path), ...]`` into `out_path` (PNG/PDF/SVG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from visualsound.media import probe, read_audio, read_video
    from visualsound.utils.atomic import atomic_open

    if num_frames < 1:
        raise PlotError(f"num_frames must be >= 1, got {num_frames}")
    frames = read_video(clip.video, start=clip.start_sec, duration=clip.window_sec, fps=25.0)
    picks = np.linspace(0, frames.shape[0] - 1, num_frames).round().astype(int)
    strip = np.concatenate([frames[i].numpy() for i in picks], axis=1)  # [H, num_frames * W, 3]
    sources = [("ground truth", clip.video, clip.start_sec)] + [(label, path, 0.0) for label, path in generated]
    waves = [(label, read_audio(path, start=start, duration=clip.window_sec, mono=True)[0].numpy(),
              int(probe(path).sample_rate)) for label, path, start in sources]
    marks = window_events(clip, events)

    fig, axes = plt.subplots(1 + len(waves), 1, figsize=(10, 1.6 + 1.3 * len(waves)), dpi=dpi,
                             gridspec_kw={"height_ratios": [1.4] + [1.0] * len(waves)})
    try:
        axes[0].imshow(strip, extent=(0, clip.window_sec, 0, 1), aspect="auto")
        axes[0].set_yticks([])
        axes[0].set_xticks(picks / 25.0)
        title = f"{clip.id} ({clip.label})" if clip.label else clip.id
        axes[0].set_title(title + ("  -- DEBUG WEIGHTS" if debug_weights else ""), fontsize=10)
        for ax, (label, wave, rate) in zip(axes[1:], waves):
            ax.plot(np.arange(wave.shape[0]) / rate, wave, linewidth=0.5, color="#3b75af")
            ax.set_xlim(0, clip.window_sec)
            ax.set_ylim(-1, 1)
            ax.set_ylabel(label, fontsize=8)
            for m in marks:
                ax.axvline(m, color="#d62728", linewidth=1.0, linestyle="--")
        for m in marks:
            axes[0].axvline(m, color="#d62728", linewidth=1.0, linestyle="--")
        axes[-1].set_xlabel("time in the window (s); dashed: true visual events")
        fig.tight_layout()
        out_path = Path(out_path)
        fmt = out_path.suffix.lstrip(".") or "png"
        with atomic_open(out_path, "wb") as f:
            fig.savefig(f, format=fmt)
    finally:
        plt.close(fig)
    return out_path
