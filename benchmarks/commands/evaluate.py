"""`vbench evaluate`: generate if needed, extract features into caches, score, write a result JSON."""

from __future__ import annotations

import json

import click

METRIC_CHOICES = ("fad", "kld", "ib", "sync_ms")


@click.command("evaluate")
@click.option("--model", "model_spec", required=True, help="vaura, ground-truth or dir:PATH.")
@click.option("--dataset", required=True, help="A built dataset name or a manifest path.")
@click.option("--datasets-dir", type=click.Path(file_okay=False), default=None,
              help="Folder of built manifests (default: $VBENCH_DATASETS or ./vbench-datasets).")
@click.option("--protocol", default="vaura-paper", show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="results", show_default=True,
              help="Results folder (also holds generated audio and feature caches).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Default: <out>/cache.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--debug-weights", is_flag=True, help="Seeded random tiny models everywhere (tests/demo).")
@click.option("--checkpoint", default=None, help="V-AURA checkpoint (default: the registry's vaura_release).")
@click.option("--vggish-checkpoint", default=None)
@click.option("--passt-checkpoint", default=None)
@click.option("--imagebind-checkpoint", default=None)
@click.option("--sync-checkpoint", default=None, help="Synchformer AudioSet checkpoint.")
@click.option("--samples-per-clip", type=int, default=None,
              help="V-AURA samples per clip (default as in the paper: 3 on vas, 10 elsewhere); dir: models use "
                   "what they have.")
@click.option("--seed", type=int, default=None,
              help="V-AURA only: sample k of a clip uses seed + k (default 0).")
@click.option("--metrics", "metrics", multiple=True, type=click.Choice(METRIC_CHOICES),
              help="Only these metrics (repeatable; default: all of the protocol's).")
@click.option("--allow-missing", is_flag=True, help="Score the clips that have outputs; record the missing ones.")
@click.option("--no-progress", is_flag=True)
def evaluate(model_spec: str, dataset: str, datasets_dir: str | None, protocol: str, out_dir: str,
             cache_dir: str | None, device: str, debug_weights: bool, checkpoint: str | None,
             vggish_checkpoint: str | None, passt_checkpoint: str | None, imagebind_checkpoint: str | None,
             sync_checkpoint: str | None, samples_per_clip: int | None, seed: int | None, metrics: tuple[str, ...],
             allow_missing: bool, no_progress: bool) -> None:
    """Evaluate a model on a dataset under a protocol and write the result JSON into --out."""
    from benchmarks.datasets import resolve_dataset
    from benchmarks.evaluate import EvalOptions, paper_samples_per_clip
    from benchmarks.evaluate import evaluate as run
    from benchmarks.models import make_model

    ds = resolve_dataset(dataset, datasets_dir)
    if model_spec == "vaura" and samples_per_clip is None:
        samples_per_clip = paper_samples_per_clip(ds.name)
        click.echo(f"V-AURA: {samples_per_clip} samples per clip (the paper's setting for {ds.name})")
    model = make_model(model_spec, checkpoint=checkpoint, debug_weights=debug_weights,
                       samples_per_clip=samples_per_clip, seed=seed, device=device, out_dir=out_dir)
    ckpts = {k: v for k, v in (("vggish", vggish_checkpoint), ("passt", passt_checkpoint),
                               ("ib", imagebind_checkpoint), ("sync", sync_checkpoint)) if v}
    options = EvalOptions(protocol=protocol, out_dir=out_dir, cache_dir=cache_dir, device=device,
                          debug_weights=debug_weights, checkpoints=ckpts, allow_missing=allow_missing,
                          metrics=list(metrics) or None, progress=not no_progress)
    result = run(ds, model, options)
    if result["debug_weights"]:
        click.echo("DEBUG WEIGHTS: seeded random models, the numbers below are meaningless")
    counts = result["counts"]
    click.echo(f"{result['model']['name']} on {ds.name} ({result['protocol']['name']}): {counts['clips']} clips, "
               f"{counts['samples']} samples, {counts['missing']} missing")
    click.echo(json.dumps(result["metrics"], indent=2))
    click.echo(f"result: {result['_path']}")
