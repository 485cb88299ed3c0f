"""`vbench plot`: Figure-2-like plot of one clip (frames strip, ground-truth and generated waveforms, events)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("plot")
@click.option("--dataset", required=True, help="A built dataset name or a manifest path.")
@click.option("--datasets-dir", type=click.Path(file_okay=False), default=None)
@click.option("--clip", "clip_id", required=True, help="Clip id from the dataset manifest.")
@click.option("--generated", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="A generated audio file for this clip (repeatable; labelled by its folder/name).")
@click.option("--model", "models", multiple=True,
              help="dir:PATH model(s): their outputs for --clip are plotted (matched by clip id).")
@click.option("--events", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A `visualsound synth` events.json (default: the events stored in the manifest).")
@click.option("--frames", "num_frames", type=int, default=8, show_default=True)
@click.option("--debug-weights", is_flag=True, help="Label the figure DEBUG WEIGHTS (outputs of random models).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output image (.png, .pdf, .svg).")
def plot(dataset: str, datasets_dir: str | None, clip_id: str, generated: tuple[str, ...], models: tuple[str, ...],
         events: str | None, num_frames: int, debug_weights: bool, out: str) -> None:
    """Plot clip CLIP of DATASET with the given generated audio."""
    from benchmarks.datasets import Dataset, resolve_dataset
    from benchmarks.models import ModelError, make_model
    from benchmarks.plot import events_from_json, plot_clip

    ds = resolve_dataset(dataset, datasets_dir)
    clip = ds.clip(clip_id)
    items = [(f"{Path(p).parent.name}/{Path(p).stem}", p) for p in generated]
    one = Dataset(name=ds.name, window_sec=ds.window_sec, clips=(clip,))
    for spec in models:
        if not spec.startswith("dir:"):
            raise ModelError(f"--model takes dir:PATH models only, got {spec!r}")
        outputs = make_model(spec).outputs(one)
        if clip_id in outputs.missing:
            raise ModelError(f"{spec}: {outputs.missing[clip_id]}")
        items += [(f"{spec[4:].rstrip('/').split('/')[-1]} #{s.index}", s.path) for s in outputs.samples[clip_id]]
    times = events_from_json(events, clip_id) if events else None
    path = plot_clip(clip, items, out, num_frames=num_frames, events=times, debug_weights=debug_weights)
    click.echo(f"figure -> {path}")
