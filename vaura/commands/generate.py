"""`vaura generate`: audio for a video (wav + mp4 with the audio muxed on), or for a directory / split file."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from vaura.sampler import SamplingParams
from visualsound.utils.cli import threads_option, weights_options
from visualsound.utils.shard import shard_option_help


@click.command("generate")
@click.option("--video", "video", required=True, type=click.Path(exists=True),
              help="Input video, a directory of videos, or a .txt split file (one path or id per line).")
@click.option("--out", "out", required=True, type=click.Path(),
              help="Output .mp4 for one video (the .wav is written next to it); an output folder otherwise.")
@weights_options({"vaura_release": ("--checkpoint", "Released Lightning .ckpt / experiment folder, or our own "
                                                   "checkpoint"),
                  "avclip_vggsound": ("--visual-checkpoint", "Segment AVCLIP checkpoint, only with our own "
                                                             "checkpoints"),
                  "dac_44khz": ("--codec-checkpoint", "DAC 44 kHz weights, only with our own checkpoints")})
@click.option("--cfg-scale", type=float, default=6.0, show_default=True, help="Classifier-free guidance scale.")
@click.option("--top-k", type=int, default=128, show_default=True, help="Top-k sampling (0: off).")
@click.option("--top-p", type=float, default=0.0, show_default=True, help="Top-p sampling (0: off; wins over top-k).")
@click.option("--temperature", type=float, default=1.0, show_default=True, help="Softmax temperature (0: greedy).")
@click.option("--greedy", is_flag=True, help="Argmax decoding instead of sampling.")
@click.option("--seed", type=int, default=None,
              help="Sampling seed; sample i uses seed + i (folder mode: seed + crc32 of each video's name + i, "
                   "recorded per item). Default: a random seed, recorded.")
@click.option("--num-samples", type=int, default=1, show_default=True, help="Soundtracks per video.")
@click.option("--stride", type=float, default=0.64, show_default=True,
              help="Window stride in seconds for videos longer than 2.56 s.")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Folder that relative entries of a split file are resolved against (default: its folder).")
@click.option("--no-mux", is_flag=True, help="Write only the wav files.")
@click.option("--overwrite", is_flag=True, help="Regenerate outputs that already exist (batch mode).")
@click.option("--device", default="cpu", show_default=True, help="torch device.")
@click.option("--debug-weights", is_flag=True, help="Seeded random tiny models instead of the checkpoints.")
@click.option("--compile", "compile_step", is_flag=True,
              help="torch.compile the sampler's decode step (CUDA: fewer, fused kernels; compiles once, worth it "
                   "for batch jobs).")
@click.option("--batch-clips", type=click.IntRange(min=1), default=1, show_default=True,
              help="Folder mode: videos per sampler batch (windows aligned, shorter videos' rows masked). A video's "
                   "audio depends on its name, seed and this setting only, not on the other videos of its batch.")
@click.option("--dtype", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="Precision of the transformer (and the visual encoder, under autocast); the codec stays fp32. "
                   "fp32 reproduces the release; bf16 / fp16 are for GPUs (see the README's fidelity numbers).")
@click.option("--decode-workers", type=click.IntRange(min=0), default=None,
              help="Threads reading videos ahead of the sampler (default: 0 on CPU, 4 on CUDA, capped at the cores).")
@click.option("--shard", "shard_spec", default=None, help=shard_option_help("videos", "file stem"))
@click.option("--cpu-linear", type=click.Choice(["auto", "thin", "packed", "off"]), default="auto",
              show_default=True,
              help="CPU: how the transformer's linear layers run. thin: an AVX2 kernel built on first use (a "
                   "paper-size generation ~2x faster than plain, equal up to float rounding; up to 32 rows a "
                   "step: 2 x samples x batch clips with CFG); packed: weights pre-packed for oneDNN (~1.5x; also "
                   "beyond 32 rows); off: plain torch. auto: thin from 16 "
                   "MB of linear weights, else packed from 256 MB (fp32, CPU, no --compile); thin/packed apply at "
                   "any size or say why they cannot.")
@threads_option
def generate(video: str, out: str, weights: dict[str, str | None], cfg_scale: float, top_k: int, top_p: float,
             temperature: float, greedy: bool, seed: int | None, num_samples: int, stride: float, root: str | None,
             no_mux: bool, overwrite: bool, device: str, debug_weights: bool, compile_step: bool, batch_clips: int,
             dtype: str, decode_workers: int | None, shard_spec: str | None, cpu_linear: str,
             threads: int | None) -> None:
    """Generate 44.1 kHz audio for VIDEO with V-AURA.

    Every input frame keeps its time in the mp4 (H.264 is copied; other codecs are re-encoded keeping each
    frame's time), with the display rotation and start time of the input; odd frame sizes are padded by one edge
    row / column. Folder outputs: OUT/<stem>.wav next to OUT/<stem>.mp4 (what `vbench evaluate --model dir:OUT`
    reads); OUT/generation.json is rewritten after every video (OUT/generation-shard-<i>-of-<n>.json per shard:
    several processes, GPUs or machines may share one OUT, see --shard).
    """
    from tqdm import tqdm

    from vaura.generate import check_unique_names, find_videos, generate_folder, load_pipeline
    from visualsound.media.formats import is_video_path
    from visualsound.utils.atomic import atomic_write_json
    from visualsound.utils.shard import rank_device, resolve_shard, select_items
    from visualsound.utils.threads import cap_default_workers, set_threads

    if num_samples < 1:
        raise click.BadParameter("must be >= 1", param_hint="--num-samples")
    set_threads(threads)
    params = SamplingParams(cfg_scale=cfg_scale, top_k=top_k, top_p=top_p, temperature=temperature,
                            use_sampling=not greedy)
    src = Path(video)
    single = src.is_file() and src.suffix.lower() != ".txt"
    if single and Path(out).suffix.lower() != ".mp4":
        raise click.BadParameter("for one video, --out must be an .mp4 path", param_hint="--out")
    listing = None
    if not single:
        if is_video_path(out) or Path(out).is_file():
            raise click.BadParameter(f"{video} is a {'folder' if src.is_dir() else 'split file'}: --out must be an "
                                     f"output folder, not the file name {out}", param_hint="--out")
        listing = find_videos(src, root)  # refuses an empty folder before any weights are loaded
        check_unique_names(listing.videos)
    shard = resolve_shard(shard_spec)
    if single and shard.sharded:
        raise click.BadParameter("one video cannot be sharded; give a folder or a split file",
                                 param_hint="--shard")
    if shard.sharded and seed is None:
        raise click.BadParameter(f"shard {shard} ({shard.source}) needs --seed: every process must use the same "
                                 "base seed for the shards to add up to one run", param_hint="--seed")
    device = rank_device(device)
    if dtype != "fp32" and cpu_linear in ("thin", "packed"):
        raise click.BadParameter(f"{cpu_linear} needs fp32 weights (got --dtype {dtype})", param_hint="--cpu-linear")
    if decode_workers is None:
        decode_workers = 0 if device.startswith("cpu") else cap_default_workers(4, "generate decode workers")
    rows = (2 if cfg_scale != 1.0 else 1) * num_samples * (1 if single else batch_clips)  # a step's product rows
    # explicit backends that cannot apply are refused before any weights are loaded
    if cpu_linear in ("thin", "packed") and (compile_step or not device.startswith("cpu")):
        raise click.BadParameter(f"{cpu_linear} is for CPU generation without --compile (got --device "
                                 f"{device}{' --compile' if compile_step else ''})", param_hint="--cpu-linear")
    if cpu_linear == "thin":
        from vaura.thin_linear import unavailable_reason

        why = unavailable_reason(rows)
        if why is not None:
            raise click.BadParameter(f"{why} ({num_samples} samples x {batch_clips} videos per batch)",
                                     param_hint="--cpu-linear thin")
    pipe = load_pipeline(weights["vaura_release"], debug_weights=debug_weights, device=device,
                         visual_checkpoint=weights["avclip_vggsound"], codec_checkpoint=weights["dac_44khz"])
    pipe.compile_step = compile_step
    backend = pipe.accelerate_cpu(cpu_linear if dtype == "fp32" else "off", rows=rows)
    pipe.set_dtype(dtype)
    tag = " [DEBUG WEIGHTS]" if pipe.debug_weights else ""
    settings = {"sampling": vars(params), "num_samples": num_samples, "seed": seed, "stride": stride,
                "checkpoint": pipe.source, "debug_weights": pipe.debug_weights, "device": device,
                "compile": compile_step, "cpu_linear": backend, "dtype": dtype, "batch_clips": batch_clips}
    t0 = time.perf_counter()
    if single:
        from vaura.generate import generate_for_video, output_paths, write_outputs

        out_path = Path(out)
        paths = output_paths(out_path, out_path.parent, num_samples)
        bar = tqdm(desc=f"vaura generate{tag}", unit="window")

        def windows(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            res = generate_for_video(src, pipe, params, num_samples, seed, stride, on_window=windows)
        finally:
            bar.close()
        bad = res.bad_packets + write_outputs(src, res, paths, mux=not no_mux)
        if bad:
            click.echo(f"warning: {src}: {bad} undecodable video packets were skipped", err=True)
        atomic_write_json(out_path.with_suffix(".json"), {
            **settings, "seed": res.seeds[0], "seeds": list(res.seeds), "seed_given": seed is not None,
            "video": str(src), "duration": res.duration, "windows": len(res.windows),
            "bad_packets": bad,
            "outputs": [str(p) for pair in paths for p in (pair if not no_mux else pair[:1])]})
        for wav, mp4 in paths:
            click.echo(f"V-AURA{tag}: {wav}" + ("" if no_mux else f" and {mp4}") +
                       f" ({res.duration:.2f} s, {len(res.windows)} windows, {time.perf_counter() - t0:.1f} s)")
        return
    videos = select_items(listing.videos, shard, key=lambda v: v.stem)
    if seed is None:  # a fresh base seed, recorded (sharded runs need --seed: every process must use one base)
        from vaura.generate import random_seed

        seed = random_seed()
        settings.update(seed=seed, seed_given=False)
    name = "generation.json" if not shard.sharded else f"generation-shard-{shard.index}-of-{shard.count}.json"

    def record(results: list, finished: bool = False) -> dict[str, int]:
        counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
        atomic_write_json(Path(out) / name, {
            **settings, "source": str(src), "shard": str(shard), "shard_source": shard.source,
            "listed": len(listing.videos), "finished": finished, "total": len(videos), "counts": counts,
            "bad_packets": sum(r.bad_packets for r in results), "not_videos": [str(p) for p in listing.skipped],
            "items": [r.to_dict() for r in results]})
        return counts

    results = generate_folder(videos, out, pipe, params, num_samples, seed, stride, mux=not no_mux,
                              skip_existing=not overwrite,
                              progress=lambda it, n: tqdm(it, total=n, desc=f"vaura generate{tag}", unit="video"),
                              on_item=record, batch_clips=batch_clips, decode_workers=decode_workers)
    counts = record(results, finished=True)
    extra = f", {len(listing.skipped)} files without a video extension ignored" if listing.skipped else ""
    part = f" (shard {shard}: {len(videos)} of {len(listing.videos)} videos)" if shard.sharded else ""
    click.echo(f"V-AURA{tag}: {counts['done']} generated, {counts['skipped']} skipped, {counts['failed']} failed"
               f"{extra}{part} -> {out} ({time.perf_counter() - t0:.1f} s)")
    for r in results:
        if r.status == "failed":
            click.echo(f"  failed {r.video}: {r.reason}", err=True)
    if counts["failed"]:  # every other video was still generated; the exit code tells scripts something failed
        sys.exit(2)
