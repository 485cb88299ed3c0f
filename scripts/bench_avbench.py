"""Throughput of the av-benchmark protocol's extraction, per stage and per network, with paper-size random weights.

Usage::

    .venv/bin/python scripts/bench_avbench.py                        # CPU, 1 thread, batch 4, 3 clips per stage
    .venv/bin/python scripts/bench_avbench.py --threads 2 --batch 2 --clips 2 --heavy-clips 1   # what the README quotes
    .venv/bin/python scripts/bench_avbench.py --device cuda --batch 16 --clips 64 --threads 8
    .venv/bin/python scripts/bench_avbench.py --skip avb-ib-video --skip avb-sync-video   # audio side only

It times the protocol's own code (`benchmarks.protocols.avbench.extract`): decoding a 10 s 25 fps video and its
audio, then each extractor on batches of `--batch` clips (the first batch is a warm-up and is not timed): PANNs
Cnn14, VGGish, PaSST (10 s padded input), ImageBind-Huge audio and video (9 clips of 2 frames), Synchformer AST
audio and MotionFormer video (24 segments of 16 frames). The networks are the paper-size architectures with
random weights (no download), so the numbers measure speed only.

The output JSON (printed, and written to ``--out``; default ``docs/measurements/<date>-<device>-bench_avbench.json``)
has seconds per clip for every stage and extrapolates a full ``vggsound-test`` evaluation (15,220 clips: ground-
truth audio through PANNs + VGGish + PaSST, generated audio through those plus ImageBind and Synchformer, and
every video through ImageBind and Synchformer) for one process on this device.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.evaluate import EvalOptions  # noqa: E402
from benchmarks.protocols.avbench import audio as A  # noqa: E402
from benchmarks.protocols.avbench import video as V  # noqa: E402
from benchmarks.protocols.avbench.extract import (  # noqa: E402
    AUDIO_EXTRACTORS,
    EXTRACTORS,
    Extracted,
    Models,
    _audio_batch,
)

VGGSOUND_TEST_CLIPS = 15220
LENGTH = 8.0
GT_AUDIO = ("avb-panns", "avb-vggish", "avb-passt")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


HEAVY = ("avb-ib-audio", "avb-ib-video", "avb-sync-video")  # full-size transformers: tens of seconds a clip on a CPU


def paper_models(options: EvalOptions, keys: set[str]) -> Models:
    """`Models` holding the paper-size architectures (only `keys`) with random weights."""
    from benchmarks.metrics.panns import load_panns
    from benchmarks.metrics.passt import load_passt
    from benchmarks.metrics.vggish import VGGish, VGGishConfig, init_random_
    from vaura.synchformer import load_sync_model
    from visualsound.imagebind import load_imagebind

    dev = options.device
    builders = {
        "panns": lambda: load_panns(debug_weights=True, config="paper", device=dev),
        "vggish": lambda: init_random_(VGGish(VGGishConfig.preset("paper")), seed=0).eval().to(dev),
        "passt": lambda: load_passt(debug_weights=True, config="paper", device=dev),
        "ib": lambda: load_imagebind(debug_weights=True, config="huge", device=dev),
        "sync": lambda: load_sync_model(debug_weights=True, config="paper", device=dev),
    }
    models = Models(options)
    models._loaded.update({k: builders[k]() for k in sorted(keys)})
    return models


def make_media(folder: Path) -> tuple[Path, Path]:
    """A 10 s 320x240 25 fps video with 44.1 kHz audio, and an 8 s 44.1 kHz generated wav."""
    from visualsound.media import write_video, write_wav

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (250, 240, 320, 3), dtype=np.uint8)
    audio = (rng.standard_normal((1, 441000)) * 0.1).astype(np.float32)
    video = folder / "clip.mp4"
    write_video(video, torch.from_numpy(frames), 25.0, torch.from_numpy(audio), 44100)
    wav = folder / "gen.wav"
    write_wav(wav, torch.from_numpy(audio[:, :352800]), 44100)
    return video, wav


def time_stage(fn, clips: int, batch: int, device: str, warmup: bool = True) -> dict[str, Any]:
    """``fn(n)`` processes `n` clips; one warm-up batch (unless `warmup` is false), then `clips` clips timed in
    batches of `batch`."""
    if warmup:
        fn(min(batch, clips))
    _sync(device)
    done, start = 0, time.perf_counter()
    while done < clips:
        n = min(batch, clips - done)
        fn(n)
        done += n
    _sync(device)
    seconds = time.perf_counter() - start
    return {"clips": clips, "seconds": round(seconds, 3), "s_per_clip": round(seconds / clips, 4),
            "clips_per_s": round(clips / seconds, 3), "warmup": warmup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--batch", type=int, default=4, help="clips per forward pass")
    parser.add_argument("--clips", type=int, default=3, help="timed clips per stage (after one warm-up batch)")
    parser.add_argument("--heavy-clips", type=int, default=1,
                        help="timed clips of the ImageBind-Huge and Synchformer-video stages, without a warm-up "
                             "(tens of seconds a clip on a CPU; the first call's overhead is small next to that)")
    parser.add_argument("--skip", action="append", default=[], help="extractor to skip (repeatable)")
    parser.add_argument("--out", default=None, help="JSON path (default: docs/measurements/...)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = EvalOptions(protocol="av-benchmark", device=args.device, debug_weights=True)
    stages_wanted = [e for e in (*AUDIO_EXTRACTORS, "avb-ib-video", "avb-sync-video") if e not in args.skip]
    keys = {EXTRACTORS[e][1] for e in stages_wanted}
    models = paper_models(options, keys)
    stages: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        video, wav = make_media(Path(tmp))
        stages["decode-audio"] = time_stage(lambda n: [A.read_audio(wav) for _ in range(n)], args.clips,
                                            args.batch, "cpu")
        stages["decode-video"] = time_stage(lambda n: [V.read_video_frames(video, LENGTH) for _ in range(n)],
                                            args.clips, args.batch, "cpu")
        waves = A.read_audio(wav)
        for e in AUDIO_EXTRACTORS:
            if e in args.skip:
                continue

            def run(n: int, e: str = e) -> None:
                batch = {f"c{i}": waves for i in range(n)}
                _audio_batch(batch, {e: list(batch)}, Extracted(features={e: {}}), models, LENGTH)

            heavy = e in HEAVY
            stages[e] = time_stage(run, args.heavy_clips if heavy else args.clips, args.batch, args.device,
                                   warmup=not heavy)
        frames = V.read_video_frames(video, LENGTH)
        if "avb-ib-video" not in args.skip:
            x = V.ib_video_input(frames.ib.frames)
            stages["avb-ib-video"] = time_stage(
                lambda n: V.ib_video_embedding(models.get("ib"), torch.stack([x] * n).to(args.device)),
                args.heavy_clips, args.batch, args.device, warmup=False)
        if "avb-sync-video" not in args.skip:
            seg = V.sync_segments(V.sync_video_input(frames.sync.frames))[None]
            stages["avb-sync-video"] = time_stage(
                lambda n: [V.sync_video_features(models.get("sync"), seg) for _ in range(n)],
                args.heavy_clips, args.batch, args.device, warmup=False)
    per_clip = {k: v["s_per_clip"] for k, v in stages.items()}
    gt = per_clip["decode-audio"] + sum(per_clip.get(e, 0.0) for e in GT_AUDIO)
    gen = per_clip["decode-audio"] + sum(per_clip.get(e, 0.0) for e in AUDIO_EXTRACTORS)
    vid = per_clip["decode-video"] + per_clip.get("avb-ib-video", 0.0) + per_clip.get("avb-sync-video", 0.0)
    total_s = VGGSOUND_TEST_CLIPS * (gt + gen + vid)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    result = {
        "script": "scripts/bench_avbench.py", "command": " ".join(sys.argv), "commit": commit,
        "date": dt.date.today().isoformat(), "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else
        (platform.processor() or platform.machine()),
        "threads": args.threads, "batch": args.batch, "torch": torch.__version__, "random_weights": True,
        "stages": stages, "skipped": args.skip,
        "s_per_clip": {"ground_truth_audio": round(gt, 4), "generated_audio": round(gen, 4), "video": round(vid, 4)},
        "vggsound_test_extrapolated": {"clips": VGGSOUND_TEST_CLIPS, "hours": round(total_s / 3600, 2),
                                       "complete": not args.skip,
                                       "note": "one process, features computed once (the caches then serve any "
                                               "further model: only its generated audio is new)"
                                               + (f"; WITHOUT the skipped stages {args.skip}" if args.skip else "")},
    }
    text = json.dumps(result, indent=2)
    print(text)
    out = Path(args.out) if args.out else REPO / "docs" / "measurements" / (
        f"{result['date']}-{'cpu' if args.device == 'cpu' else args.device.replace(':', '')}-bench_avbench.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
