"""`make demo`: the whole paper workflow on generated data with seeded random (debug) weights, on a CPU.

Every step is a real call of the console scripts installed next to this Python (``visualsound``, ``vaura``,
``vbench``); each command is printed as ``$ visualsound synth ...`` before it runs, so it can be copied:

1. ``visualsound synth``: ~16 matched / mismatched 4 s clips at 96 px (train + test) plus the bad-input zoo;
2. ``visualsound score`` (the clips, then the bad inputs as a second csv into the same scores folder),
   ``visualsound build --threshold T`` and ``visualsound report`` (histogram, keep rates, markdown);
3. ``vaura extract`` + ``vaura train --config tiny --debug-weights`` on the VisualSound train split
   (checkpoint + loss curve);
4. ``vaura generate`` on the VisualSound test clips (mp4s with generated audio);
5. ``vbench datasets build synthetic``, ``vbench evaluate`` of ``vaura`` and ``ground-truth``;
6. ``vbench leaderboard`` (table on stdout, HTML file);
7. ``vbench plot`` of one test clip (frames, ground-truth and generated waveforms, true event times);
8. ``vbench report``: the listening report (``report/index.html``: leaderboard, per-item distributions, every
   test clip with each model's audio under its video, spectrograms, sortable per-clip metrics).

Everything lands in ``--out``; ``DEBUG_WEIGHTS_README.txt`` at its top says that all outputs come from random
weights. Re-running starts clean: an existing ``--out`` is deleted and rebuilt only when it holds this script's
marker file (``.vaura-demo.json``); any other non-empty folder is refused.

    .venv/bin/python scripts/demo.py --out demo_out [--small] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = ".vaura-demo.json"
README = "DEBUG_WEIGHTS_README.txt"
DEFAULT_THRESHOLD = -0.1
MIN_DURATION = 2.56        # training / evaluation windows are 2.56 s: shorter inputs are rejected as too_short
SILENCE_THRESHOLD = 1e-3   # peak at or below this: 'silent'

README_TEXT = """ALL OUTPUTS IN THIS FOLDER COME FROM RANDOM (DEBUG) WEIGHTS.

Made by scripts/demo.py (`make demo`): the V-AURA workflow on synthetic clips with seeded random
ImageBind, Segment AVCLIP / Synchformer, DAC, VGGish and PaSST models, and a V-AURA model trained for a
few hundred CPU steps. Scores, generated audio and metrics show that the pipeline runs end to end; their
values are meaningless. Every JSON written here carries "debug_weights": true and every table / figure
a DEBUG WEIGHTS label.

Layout:
  synth/                   generated clips (video/, synth.csv, events.json) and the bad-input zoo (bad/)
  bad_inputs/              the bad inputs renamed as VGGSound clips + bad_inputs.csv (scored with the clips)
  visualsound/scores/      `visualsound score` shards (one row per clip, failures with status and reason)
  visualsound/build/       `visualsound build`: splits, csv, Parquet, summary.json
  visualsound/report/      `visualsound report`: scores_hist.png, class_keep_rate.png, report.md
  vaura/cache/             `vaura extract`: cached codes and visual features of the train split
  vaura/run/               `vaura train`: last.pt, metrics.csv, loss_curve.png
  vaura/generated/         `vaura generate`: mp4 + wav per VisualSound test clip
  vbench/datasets/         `vbench datasets build synthetic` manifest
  vbench/results/          `vbench evaluate` result JSONs (+ generated audio and feature caches)
  vbench/report-media/     `vbench report --media-cache`: report media shared between reports (hard links)
  leaderboard.html         `vbench leaderboard --format html`
  clip_plot.png            `vbench plot` of one test clip
  report/index.html        `vbench report`: the listening report (open it in a browser; media in report/media/)

Re-running scripts/demo.py with the same --out deletes this folder and starts clean.
"""


class DemoError(Exception):
    """A demo step failed or the output folder cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    """Sizes of one demo run (``--small`` for the test)."""

    count: int
    duration: float
    test_fraction: float
    steps: int
    min_train: int          # the threshold is lowered until at least this many train clips are kept
    batch_size: int         # V-AURA training batch (the tiny preset's 4 needs >= 4 train clips)
    max_generate: int       # `vaura generate` on at most this many test clips


FULL = Settings(count=16, duration=4.0, test_fraction=0.25, steps=200, min_train=8, batch_size=4, max_generate=4)
SMALL = Settings(count=8, duration=3.0, test_fraction=0.125, steps=20, min_train=3, batch_size=2, max_generate=1)


# ------------------------------------------------------------------------------------------------ the folder
def prepare_out(out: Path) -> None:
    """Make `out` an empty demo folder with the marker; delete a previous demo folder; refuse anything else."""
    if out.exists() and not out.is_dir():
        raise DemoError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise DemoError(f"--out {out} is not empty and has no {MARKER}: not a previous demo folder, refusing "
                            "to overwrite it (give a new or empty folder)")
        print(f"demo: {out} holds a previous demo run; deleting it and starting clean", flush=True)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, {"status": "running"})
    (out / README).write_text(README_TEXT)


def write_marker(out: Path, info: dict[str, Any]) -> None:
    """The marker ``.vaura-demo.json`` (also tells a re-run that this folder may be deleted)."""
    data = {"created_by": "scripts/demo.py", "debug_weights": True, **info}
    (out / MARKER).write_text(json.dumps(data, indent=2) + "\n")


# ------------------------------------------------------------------------------------------------ commands
class Runner:
    """Runs console scripts next to `sys.executable`, printing each command first and timing each step."""

    def __init__(self, out: Path) -> None:
        self.bin = Path(sys.executable).parent
        self.out = out
        self.timings: list[tuple[str, float]] = []
        # torch's deprecation notices (jit.script, weight_norm) are noise here; logged warnings still show
        self.env = {**os.environ, "PYTHONWARNINGS": "ignore::FutureWarning"}
        for tool in ("visualsound", "vaura", "vbench"):
            if not (self.bin / tool).is_file():
                raise DemoError(f"console script {self.bin / tool} not found: install the toolkit into this "
                                "Python first (make install)")

    def __call__(self, tool: str, *args: Any) -> None:
        argv = [tool, *(str(a) for a in args)]
        print(f"\n$ {shlex.join(argv)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([str(self.bin / tool), *argv[1:]], env=self.env)
        seconds = time.perf_counter() - t0
        self.timings.append((f"{tool} {argv[1]}" + (f" {argv[2]}" if tool == "vbench" and argv[1] == "datasets"
                                                    else ""), seconds))
        if rc != 0:
            raise DemoError(f"`{tool} {argv[1]}` failed with exit code {rc} after {seconds:.1f} s (its output is "
                            f"above); the command was:\n  {shlex.join(argv)}")


def note(text: str) -> None:
    """A line of the demo's own narration."""
    print(f"demo: {text}", flush=True)


# ------------------------------------------------------------------------------------------------ decisions
def choose_threshold(scores: list[tuple[str, float]], min_train: int, default: float = DEFAULT_THRESHOLD) -> float:
    """The ImageBind threshold of the debug run: `default` unless it keeps fewer than `min_train` train clips
    or no test clip; then the largest 0.05 step below the score that keeps them.

    scores: ``(split, score)`` of the clips with status ok. Debug ImageBind scores are random around 0, so the
    paper's 0.3 would reject most clips; the demo needs a majority to train on.
    """
    train = sorted((s for split, s in scores if split == "train"), reverse=True)
    test = sorted((s for split, s in scores if split == "test"), reverse=True)
    if len(train) < min_train or not test:
        raise DemoError(f"only {len(train)} train / {len(test)} test clips scored ok; the demo needs at least "
                        f"{min_train} train and 1 test clip")
    need = min(train[min_train - 1], test[0])
    if need >= default:
        return default
    step = 0.05
    return round(step * int(need // step), 2)


def build_splits(run: Runner, scores: Path, build_dir: Path, min_train: int) -> float:
    """`visualsound build` at the demo's threshold; if the validation carve leaves fewer than `min_train` train
    clips (or no test clip), lower the threshold to keep one more clip and build again. Returns the threshold."""
    ok = _ok_scores(scores)
    tried: set[float] = set()
    for extra in range(len(ok) + 1):
        threshold = choose_threshold(ok, min_train + extra)
        if threshold in tried:
            continue
        tried.add(threshold)
        note(f"threshold {threshold}: debug ImageBind scores are random around 0 (the paper's 0.3 would drop "
             f"almost every clip), so the demo keeps clips scoring >= {threshold} (at least {min_train} train "
             "clips after the validation carve and one test clip)")
        run("visualsound", "build", "--scores", scores, "--threshold", threshold, "--out", build_dir)
        summary = json.loads((build_dir / "summary.json").read_text())
        counts = summary["counts"]
        if counts["train"] >= min_train and counts["test"] >= 1:
            note(f"kept {summary['total_kept']} of the {len(ok)} clips that scored ok at threshold {threshold}")
            return threshold
        note(f"only {counts['train']} train / {counts['test']} test clips kept at {threshold} after the "
             "validation carve; lowering the threshold")
    raise DemoError(f"no threshold keeps {min_train} train clips and a test clip in {build_dir}")


def _ok_scores(scores_dir: Path) -> list[tuple[str, float]]:
    from visualsound.scores_io import read_scores

    df = read_scores(scores_dir)
    ok = df[df["status"] == "ok"]
    return [(str(sp), float(s)) for sp, s in zip(ok["split"], ok["score"])]


def stage_bad_inputs(synth_bad: Path, dest: Path) -> Path:
    """Copy the bad-input zoo as VGGSound-named clips ``bad-NAME_000000.mp4`` and list them (plus one clip with
    no file, which scores 'missing') in ``bad_inputs.csv``; returns the csv."""
    dest.mkdir(parents=True, exist_ok=True)
    rows = []
    files = sorted(p for p in synth_bad.iterdir() if p.is_file())
    if not files:
        raise DemoError(f"{synth_bad} holds no bad-input files")
    for src in files:
        ytid = "bad-" + src.stem.replace("_", "-")
        shutil.copyfile(src, dest / f"{ytid}_000000.mp4")
        rows.append(f"{ytid},0,bad input,train")
    rows.append("bad-missing-file,0,bad input,train")
    csv = dest / "bad_inputs.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def write_test_list(build_dir: Path, out: Path, limit: int) -> list[Path]:
    """The video paths of the VisualSound test split (at most `limit`) into `out` (a `vaura generate` list)."""
    import pandas as pd

    df = pd.read_parquet(build_dir / "visualsound.parquet")
    test = df[df["visualsound_split"] == "test"].sort_values("clip_id")
    paths = [Path(p) for p in test["path"]][:limit]
    if not paths:
        raise DemoError(f"the VisualSound test split in {build_dir} is empty")
    out.write_text("".join(f"{p}\n" for p in paths))
    return paths


def pick_plot_clip(manifest: Path, generated: Path, results: Path) -> tuple[str, Path]:
    """A manifest clip with generated audio, preferring one with visual events: ``(clip id, wav)``. The audio is
    `vaura generate`'s output for the clip, else the sample `vbench evaluate` generated for it."""
    clips = json.loads(manifest.read_text())["clips"]
    candidates = []
    for clip in sorted(clips, key=lambda c: not c.get("events")):  # clips with events first, order kept
        wavs = [generated / f"{Path(clip['video']).stem}.wav",
                *sorted((results / "generated").glob(f"*/*/{clip['id']}/*.wav"))]
        candidates += [(clip["id"], wav) for wav in wavs if wav.is_file()]
    if not candidates:
        raise DemoError(f"no clip of {manifest} has generated audio in {generated} or {results / 'generated'}")
    return candidates[0]


# ------------------------------------------------------------------------------------------------ the workflow
def run_demo(out: Path, cfg: Settings) -> list[Path]:
    """All steps; returns the main artefacts."""
    run = Runner(out)
    note(f"console scripts from {run.bin}; every output below comes from seeded random (DEBUG) weights")
    synth, vs = out / "synth", out / "visualsound"
    scores = vs / "scores"

    note("1. synthetic clips (matched and mismatched audio, train/test) plus the bad-input zoo")
    run("visualsound", "synth", "--out", synth, "--count", cfg.count, "--size", 96, "--duration", cfg.duration,
        "--seed", 0, "--mismatched-fraction", 0.25, "--test-fraction", cfg.test_fraction, "--bad-clips")

    note(f"2. ImageBind scores (debug weights); inputs shorter than the {MIN_DURATION} s training window are "
         "'too_short', near-silent ones 'silent'; the bad inputs are scored into the same folder")
    score_opts = ["--out", scores, "--debug-weights", "--workers", 0, "--min-duration", MIN_DURATION,
                  "--silence-threshold", SILENCE_THRESHOLD, "--no-progress"]
    run("visualsound", "score", "--csv", synth / "synth.csv", "--videos", synth / "video", *score_opts)
    bad_csv = stage_bad_inputs(synth / "bad", out / "bad_inputs")
    run("visualsound", "score", "--csv", bad_csv, "--videos", out / "bad_inputs", *score_opts)
    threshold = build_splits(run, scores, vs / "build", cfg.min_train)
    run("visualsound", "report", "--scores", scores, "--threshold", threshold, "--out", vs / "report",
        "--sweep", "-0.3,-0.2,-0.1,0,0.1,0.2,0.3")

    note(f"3. V-AURA (tiny config) trained for {cfg.steps} steps on the VisualSound train split")
    cache, run_dir = out / "vaura" / "cache", out / "vaura" / "run"
    run("vaura", "extract", "--data", vs / "build" / "visualsound.parquet", "--split", "train", "--out", cache,
        "--config", "tiny", "--debug-weights", "--device", "cpu")
    run("vaura", "train", "--config", "tiny", "--data", cache, "--out", run_dir, "--debug-weights",
        "--device", "cpu", "--set", f"max_steps={cfg.steps}", "--set", f"data.batch_size={cfg.batch_size}")

    note("4. generation on the VisualSound test clips")
    generated = out / "vaura" / "generated"
    test_list = out / "vaura" / "test_videos.txt"
    videos = write_test_list(vs / "build", test_list, cfg.max_generate)
    run("vaura", "generate", "--video", test_list, "--out", generated, "--checkpoint", run_dir / "last.pt",
        "--debug-weights", "--seed", 0)
    mp4s = [generated / f"{v.stem}.mp4" for v in videos]
    missing = [p for p in mp4s if not p.is_file()]
    if missing:
        raise DemoError(f"`vaura generate` wrote no output for {[str(p) for p in missing]} "
                        f"(see {generated / 'generation.json'})")

    note("5. benchmark: the synthetic test split, V-AURA (this run's checkpoint) and the ground truth")
    manifest = out / "vbench" / "datasets" / "synthetic.json"
    results = out / "vbench" / "results"
    run("vbench", "datasets", "build", "synthetic", "--root", synth, "--split", "test", "--out", manifest)
    run("vbench", "evaluate", "--model", "vaura", "--dataset", manifest, "--checkpoint", run_dir / "last.pt",
        "--debug-weights", "--samples-per-clip", 1, "--out", results, "--no-progress")
    run("vbench", "evaluate", "--model", "ground-truth", "--dataset", manifest, "--debug-weights",
        "--out", results, "--no-progress")

    note("6. leaderboard")
    run("vbench", "leaderboard", "--results", results)
    run("vbench", "leaderboard", "--results", results, "--format", "html", "--out", out / "leaderboard.html")

    note("7. one clip: frames, ground-truth and generated waveforms, true event times")
    clip, wav = pick_plot_clip(manifest, generated, results)
    run("vbench", "plot", "--dataset", manifest, "--clip", clip, "--generated", wav, "--debug-weights",
        "--out", out / "clip_plot.png")

    note("8. listening report: the leaderboard, per-item distributions and every test clip with each model's audio")
    run("vbench", "report", results, "--out", out / "report", "--no-progress", "--media-cache",
        out / "vbench" / "report-media")  # debug-weight media stay with the demo, not in the user's cache

    artefacts = [out / README, vs / "report" / "report.md", vs / "report" / "scores_hist.png",
                 vs / "build" / "summary.json", run_dir / "last.pt", run_dir / "loss_curve.png", *mp4s,
                 *sorted(results.glob("*.json")), out / "leaderboard.html", out / "clip_plot.png",
                 out / "report" / "index.html"]
    print("\ndemo: step timings", flush=True)
    for name, seconds in run.timings:
        print(f"  {seconds:7.1f} s  {name}")
    return artefacts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Output folder (a previous demo folder is replaced).")
    parser.add_argument("--small", action="store_true", help="Fewer clips and ~20 train steps (the test).")
    parser.add_argument("--steps", type=int, default=None, help="V-AURA training steps (default 200; 20 small).")
    args = parser.parse_args(argv)
    cfg = SMALL if args.small else FULL
    if args.steps is not None:
        if args.steps < 1:
            parser.error("--steps must be >= 1")
        cfg = Settings(**{**vars(cfg), "steps": args.steps})
    out = args.out.resolve()
    t0 = time.perf_counter()
    try:
        prepare_out(out)
        artefacts = run_demo(out, cfg)
    except DemoError as e:
        print(f"\ndemo: FAILED: {e}", file=sys.stderr, flush=True)
        if (out / MARKER).is_file():
            write_marker(out, {"status": "failed", "error": str(e), "small": args.small, "steps": cfg.steps})
        return 1
    seconds = time.perf_counter() - t0
    write_marker(out, {"status": "complete", "small": args.small, "steps": cfg.steps, "seconds": round(seconds, 1),
                       "artefacts": [str(p.relative_to(out)) for p in artefacts]})
    print(f"\ndemo: done in {seconds:.0f} s; everything is in {out} (DEBUG WEIGHTS: all outputs come from random "
          f"models, see {README}); open {out / 'report' / 'index.html'} in a browser to listen")
    for p in artefacts:
        print(f"  {p.relative_to(out)}  ({p.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
