"""`visualsound synth`: deterministic synthetic audio-visual clips with known event times (plus the bad-input zoo)."""

from __future__ import annotations

import click

from visualsound.errors import ConfigError


def _size(value: str) -> tuple[int, int]:
    """``64`` or ``96x64`` (width x height)."""
    try:
        if "x" in value:
            w, h = value.lower().split("x")
            return int(w), int(h)
        return int(value), int(value)
    except ValueError as e:
        raise ConfigError(f"--size must be N or WxH, got {value!r}") from e


@click.command("synth")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: video/{ytid}_{start:06d}.mp4, synth.csv (VGGSound style), events.json.")
@click.option("--preset", default="default", show_default=True, help="SynthConfig preset: default, tiny, vggsound.")
@click.option("--count", type=int, default=None, help="Number of clips.")
@click.option("--fps", type=float, default=None, help="Frame rate (e.g. 25, 29.97, 50).")
@click.option("--size", default=None, help="Frame size: N (square) or WxH; even numbers.")
@click.option("--duration", type=float, default=None, help="Clip length in seconds.")
@click.option("--sample-rate", type=int, default=None, help="Audio sample rate in Hz.")
@click.option("--channels", type=click.IntRange(1, 2), default=None, help="Audio channels (1 or 2).")
@click.option("--seed", type=int, default=None, help="Seed; the same seed gives the same files.")
@click.option("--mismatched-fraction", type=click.FloatRange(0, 1), default=None,
              help="Share of clips whose audio does not match the video (unrelated audio, static frames, silence).")
@click.option("--test-fraction", type=click.FloatRange(0, 1), default=None, help="Share of clips in the test split.")
@click.option("--max-events", type=int, default=None, help="At most this many events per clip.")
@click.option("--bad-clips/--no-bad-clips", default=False, show_default=True,
              help="Also write the bad-input zoo (not media, truncated, video/audio only, ...) to OUT/bad.")
def synth(out_dir: str, preset: str, count: int | None, fps: float | None, size: str | None, duration: float | None,
          sample_rate: int | None, channels: int | None, seed: int | None, mismatched_fraction: float | None,
          test_fraction: float | None, max_events: int | None, bad_clips: bool) -> None:
    """Write synthetic clips whose visual events (ball impacts, flashes, drum hits) coincide with sounds."""
    from visualsound.synth import SynthConfig, make_bad_clips, synthesize

    changes = {"count": count, "fps": fps, "duration": duration, "sample_rate": sample_rate, "channels": channels,
               "seed": seed, "mismatched_fraction": mismatched_fraction, "test_fraction": test_fraction,
               "max_events": max_events}
    if size is not None:
        changes["width"], changes["height"] = _size(size)
    cfg = SynthConfig.preset(preset).replace(**{k: v for k, v in changes.items() if v is not None}).validate()
    records = synthesize(out_dir, cfg)
    matched = sum(r["matched"] for r in records)
    click.echo(f"wrote {len(records)} clips ({matched} matched, {len(records) - matched} mismatched; "
               f"{cfg.width}x{cfg.height} @ {cfg.fps:g} fps, {cfg.duration:g} s, {cfg.sample_rate} Hz x{cfg.channels}, "
               f"seed {cfg.seed}) -> {out_dir}/video, {out_dir}/synth.csv, {out_dir}/events.json")
    if bad_clips:
        zoo = make_bad_clips(f"{out_dir}/bad", sample_rate=cfg.sample_rate)
        click.echo(f"wrote {len(zoo)} bad-input files -> {out_dir}/bad: {', '.join(zoo)}")
