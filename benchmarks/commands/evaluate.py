"""`vbench evaluate`: generate if needed, extract features into caches, score, write a result JSON."""

from __future__ import annotations

import json

import click

from benchmarks.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SET_RESAMPLES
from visualsound.utils.cli import weights_options
from visualsound.utils.shard import shard_option_help


def _bootstrap_counts(n: int | None, n_set: int | None) -> dict[str, int]:
    """``--bootstrap`` / ``--bootstrap-set`` -> EvalOptions fields: set-level resamples default to the smaller of
    their default and ``--bootstrap`` (so ``--bootstrap 0`` turns every interval off)."""
    n = DEFAULT_RESAMPLES if n is None else n
    n_set = min(DEFAULT_SET_RESAMPLES, n) if n_set is None else n_set
    return {"bootstrap": n, "bootstrap_set": n_set if n > 0 else 0}


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for v in values:
        name, sep, value = v.partition("=")
        if not sep or not name or not value:
            raise click.BadParameter(f"expected NAME=VALUE, got {v!r}", param_hint=what)
        out[name] = value
    return out


@click.command("evaluate")
@click.option("--model", "model_spec", required=True, help="vaura, ground-truth or dir:PATH.")
@click.option("--dataset", required=True, help="A built dataset name or a manifest path.")
@click.option("--datasets-dir", type=click.Path(file_okay=False), default=None,
              help="Folder of built manifests (default: $VBENCH_DATASETS or ./vbench-datasets).")
@click.option("--protocol", type=click.Choice(["vaura-paper", "av-benchmark"]), default="vaura-paper",
              show_default=True,
              help="vaura-paper: the V-AURA paper's FAD/KLD/IB/Sync on the manifest's windows (the paper's 2.56 s "
                   "for its sets; other windows are warned about); av-benchmark: MMAudio's evaluator (FD_PaSST, "
                   "FD_PANNs, FD_VGG, KL, IS, IB-score, DeSync) on 8 s clips.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="results", show_default=True,
              help="Results folder (also holds generated audio and feature caches).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Default: <out>/cache.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--debug-weights", is_flag=True, help="Seeded random tiny models everywhere (tests/demo).")
@weights_options({"vaura_release": ("--checkpoint", "V-AURA checkpoint"),
                  "vggish": ("--vggish-checkpoint", "VGGish weights (vaura-paper fad, av-benchmark FD-VGG)"),
                  "passt": ("--passt-checkpoint", "PaSST weights (vaura-paper kld, av-benchmark's PaSST "
                                                      "metrics)"),
                  "panns_cnn14_16k": ("--panns-checkpoint", "PANNs Cnn14 16 kHz (av-benchmark)"),
                  "imagebind_huge": ("--imagebind-checkpoint", "ImageBind-Huge weights (vaura-paper ib, av-benchmark "
                                                              "IB-Score)"),
                  "synchformer_audioset": ("--sync-checkpoint", "Synchformer AudioSet checkpoint (either the original "
                                           "24-01-04T16-39-21.pt or MMAudio's synchformer_state_dict.pth)")},
                 exists=False)  # a path that does not exist is named with every other missing file (check_weights)
@click.option("--extractor-preset", "presets", multiple=True, metavar="NAME=PRESET",
              help="Config preset of a non-standard extractor checkpoint, e.g. sync=reduced-avbench (parity "
                   "fixtures); NAME is one of vggish, passt, panns, ib, sync.")
@click.option("--samples-per-clip", type=int, default=None,
              help="V-AURA samples per clip (default: the protocol's -- vaura-paper as in the paper, 3 on vas and "
                   "10 elsewhere; av-benchmark 1); dir: models use what they have.")
@click.option("--seed", type=int, default=None,
              help="V-AURA only: sample k of a clip uses seed + k (default 0).")
@click.option("--metrics", "metrics", multiple=True,
              help="Only these metrics (repeatable; default: all of the protocol's). vaura-paper: fad, kld, ib, "
                   "sync_ms; av-benchmark: FD-PASST, FD-PANN, FD-VGG, KL-PANNS-softmax, KL-PASST-softmax, "
                   "ISC-PANNS-mean, ISC-PASST-mean, IB-Score, DeSync.")
@click.option("--batch-size", type=int, default=16, show_default=True,
              help="av-benchmark: clips per extractor forward pass.")
@click.option("--bootstrap", "bootstrap_n", type=click.IntRange(min=0), default=None,
              help="Bootstrap resamples over clips for the per-item metrics' 95 % intervals (default "
                   f"{DEFAULT_RESAMPLES}; 0: no intervals).")
@click.option("--bootstrap-set", "bootstrap_set", type=click.IntRange(min=0), default=None,
              help=f"Resamples for the set-level metrics: FAD / FD_* (a DxD eigenvalue problem each) and IS "
                   f"(default {DEFAULT_SET_RESAMPLES}, at most --bootstrap).")
@click.option("--bootstrap-seed", type=int, default=0, show_default=True)
@click.option("--batch-clips", type=click.IntRange(min=1), default=1, show_default=True,
              help="V-AURA: clips per sampler batch (a sample's audio does not depend on the other clips).")
@click.option("--shard", "shard_spec", default=None,
              help=shard_option_help("clips", "clip id") + " A sharded run generates its part only and computes "
                   "no metrics; a final run without --shard reuses every generated file and scores.")
@click.option("--allow-missing", is_flag=True, help="Score the clips that have outputs; record the missing ones.")
@click.option("--no-progress", is_flag=True)
def evaluate(model_spec: str, dataset: str, datasets_dir: str | None, protocol: str, out_dir: str,
             cache_dir: str | None, device: str, debug_weights: bool, weights: dict[str, str | None],
             presets: tuple[str, ...], samples_per_clip: int | None, seed: int | None, metrics: tuple[str, ...],
             batch_size: int,
             bootstrap_n: int | None, bootstrap_set: int | None, bootstrap_seed: int, batch_clips: int,
             shard_spec: str | None, allow_missing: bool, no_progress: bool) -> None:
    """Evaluate a model on a dataset under a protocol and write the result JSON into --out."""
    from benchmarks.datasets import resolve_dataset
    from benchmarks.evaluate import EvalOptions, check_weights, extractor_checkpoints, required_weights
    from benchmarks.evaluate import evaluate as run
    from benchmarks.models import make_model, model_weights
    from benchmarks.protocols import get_protocol, select_metrics
    from visualsound.utils.shard import rank_device, resolve_shard

    shard = resolve_shard(shard_spec)
    device = rank_device(device)
    proto = get_protocol(protocol)
    chosen = select_metrics(protocol, list(metrics) or None)  # a misspelt metric fails before anything loads
    ds = resolve_dataset(dataset, datasets_dir)
    checkpoint = weights["vaura_release"]  # the model's; every other entry is a metric extractor's
    ckpts = extractor_checkpoints({name: path for name, path in weights.items() if name != "vaura_release"})
    # every missing weights file in one error, before the model is made or anything is generated
    check_weights(required_weights(proto, chosen, debug_weights, ckpts, shard.sharded,
                                   model_weights(model_spec, checkpoint, debug_weights)))
    if model_spec == "vaura" and samples_per_clip is None:
        samples_per_clip = proto.default_samples_per_clip(ds)
        click.echo(f"V-AURA: {samples_per_clip} samples per clip (the {protocol} protocol's setting for {ds.name})")
    model = make_model(model_spec, checkpoint=checkpoint, debug_weights=debug_weights,
                       samples_per_clip=samples_per_clip, seed=seed, device=device, out_dir=out_dir)
    if model_spec == "vaura":  # set here: make_model keeps its signature
        from visualsound.utils.threads import cap_default_workers

        model.batch_clips = batch_clips
        model.decode_workers = 0 if device.startswith("cpu") else cap_default_workers(4, "generation decode workers")
    elif batch_clips != 1:
        raise click.BadParameter("only the vaura model generates", param_hint="--batch-clips")
    options = EvalOptions(protocol=protocol, out_dir=out_dir, cache_dir=cache_dir, device=device,
                          debug_weights=debug_weights, checkpoints=ckpts,
                          presets=_pairs(presets, "--extractor-preset"), allow_missing=allow_missing,
                          metrics=list(metrics) or None, progress=not no_progress, batch_size=batch_size,
                          **_bootstrap_counts(bootstrap_n, bootstrap_set), bootstrap_seed=bootstrap_seed,
                          shard=shard)
    result = run(ds, model, options)
    if shard.sharded:
        click.echo(f"shard {shard} ({shard.source}): {result['clips']} of {len(ds.clips)} clips, "
                   f"{result['samples']} samples, {len(result['missing'])} missing, {result['generate_s']} s. "
                   "No metrics: they need every shard. Run the same command without --shard when all shards are "
                   "done; it reuses every generated file.")
        for cid, why in list(result["missing"].items())[:20]:
            click.echo(f"  missing {cid}: {why}", err=True)
        return
    if result["debug_weights"]:
        click.echo("DEBUG WEIGHTS: seeded random models, the numbers below are meaningless")
    counts = result["counts"]
    click.echo(f"{result['model']['name']} on {ds.name} ({result['protocol']['name']}): {counts['clips']} clips, "
               f"{counts['samples']} samples, {counts['missing']} missing")
    for warning in result["warnings"]:
        click.echo(f"WARNING: {warning}", err=True)
    if result["excluded"]:
        click.echo(f"WARNING: {len(result['excluded'])} clips or files were left out of some metric (the result "
                   f"lists each with its reason under 'excluded')", err=True)
    click.echo(json.dumps(result["metrics"], indent=2))
    for key, ci in result.get("metric_ci", {}).items():
        click.echo(f"{key}: {result['metrics'][key]:.6g}, {100 * ci['level']:g}% interval [{ci['lo']:.6g}, "
                   f"{ci['hi']:.6g}] ({ci['method']} bootstrap over clips, {ci['resamples']} resamples)")
    for key, note in result["metric_notes"].items():
        click.echo(f"note: {key}: {note}")
    click.echo(f"result: {result['_path']}")
