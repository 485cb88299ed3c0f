"""Benchmark: `vbench report` on a VGGSound-test-sized result set (15,220 clips) with a 200-clip gallery.

Writes `--sources` synthetic 10 s clips (640x360, 25 fps, textured moving picture, 44.1 kHz stereo chirp in
noise: web-video sized) and a "generated" 10 s mono wav per clip and model, then result JSONs + per-clip tables
(the issue-17 schema, written by tests/report_fixture.py) of `--models` models over 15,220 clip ids that reuse the
sources in turn (so every gallery clip is encoded on its own, as distinct clips would be). CPU seconds are the
machine's (``/proc/stat``: worker processes included), so run it on a quiet machine. Times, in one process:

- reading and checking the per-clip tables (`load_inputs` + `build_groups`);
- ranking the clips (`select` of ``worst:DeSync:200``);
- the first build of a 200-clip gallery (``random:200``, the first 8 s of each clip: each clip's media made once;
  a small H.264 window is copied, a large one decoded, scaled to 320 px and re-encoded), and with
  ``--reencode-too`` the same build with every window re-encoded (``copy_kbps=0``) and with ``--threads-too``
  with the clips made on threads instead of worker processes, for the ratios;
- a re-run of the same report (every media file and plot reused: what a changed selection of known clips or a
  new page costs), in this process and as the command in a new process, and its page size;
- with the media store (`vbench report --media-cache`): the same gallery in a new folder, and the gallery with one
  more model's results (only that model's tracks are encoded).

    .venv/bin/python scripts/bench_report.py [--clips 200] [--rows 15220] [--sources 20] [--source-crf 32]
        [--reencode-too] [--threads-too] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.report_fixture writes the per-clip tables

from benchmarks.report import build_groups, build_report, load_inputs, parse_select, select  # noqa: E402
from benchmarks.report_media import MediaSettings  # noqa: E402
from tests.report_fixture import clip_rows, write_result  # noqa: E402
from visualsound.media import write_video, write_wav  # noqa: E402
from visualsound.utils.threads import available_cores  # noqa: E402


def make_sources(folder: Path, count: int, seconds: float = 10.0, width: int = 640, height: int = 360,
                 fps: int = 25, sr: int = 44100, crf: int = 18) -> list[Path]:
    """`count` textured, moving 10 s clips with a stereo chirp in noise (each one different; broadband like real
    recordings: a pure chirp costs FFmpeg's fast AAC coder several times more than real sound does), H.264 at
    `crf` (18: about 7.5 Mbit/s, a worst case for decoding; 32: about 0.3 Mbit/s on this picture)."""
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = np.arange(int(seconds * sr)) / sr
    paths = []
    for i in range(count):
        path = folder / f"src{i:03d}-crf{crf}-noisy.mp4"
        paths.append(path)
        if path.is_file():  # a previous run's (the content is a function of i)
            continue
        rng = np.random.default_rng(i)
        texture = rng.integers(0, 40, size=(height, width, 3)).astype(np.float32)
        frames = np.empty((int(seconds * fps), height, width, 3), np.uint8)
        for k in range(frames.shape[0]):
            wave = np.sin((xx + (3 + i) * k) / 23.0) * np.cos((yy - 2 * k) / (17.0 + i))
            base = 100 + 80 * wave[..., None]
            frames[k] = np.clip(base + np.roll(texture, k, axis=1), 0, 255).astype(np.uint8)
        chirp = 0.3 * np.sin(2 * np.pi * ((200 + 20 * i) * t + 40 * t ** 2))
        noise = 0.03 * rng.standard_normal((2, t.size))
        write_video(path, frames, fps, (np.stack([chirp, 0.5 * chirp]) + noise).astype(np.float32), sr, gop=2 * fps,
                    crf=crf)
    return paths


def make_generated(folder: Path, count: int, seed: int, seconds: float = 10.0, sr: int = 44100) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    out = []
    for i in range(count):
        tone = 0.2 * np.sin(2 * np.pi * (300 + 37 * i) * t) * (np.sin(2 * np.pi * (0.5 + i / 10) * t) > 0)
        wav = (tone + 0.02 * rng.standard_normal(t.size)).astype(np.float32)[None]
        path = folder / f"gen{i:03d}.wav"
        write_wav(path, wav, sr)
        out.append(path)
    return out


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (``/proc/stat``: user + nice + system + irq + softirq), so that
    worker processes count too (those of a forkserver are not this process's children); this process's own CPU
    time where there is no ``/proc/stat``. Read it on an otherwise quiet machine."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return time.process_time()
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def timed(fn, *a, **k):
    """``(result, wall seconds, busy CPU seconds of the machine)``."""
    t0, c0 = time.perf_counter(), busy_cpu_s()
    out = fn(*a, **k)
    return out, time.perf_counter() - t0, busy_cpu_s() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=15220, help="clips in the result set (VGGSound test: 15,220)")
    ap.add_argument("--clips", type=int, default=200, help="clips in the gallery")
    ap.add_argument("--sources", type=int, default=20, help="distinct source videos (reused in turn)")
    ap.add_argument("--models", type=int, default=2, help="models in the first report (one more is added later)")
    ap.add_argument("--source-crf", type=int, default=18,
                    help="H.264 quality of the sources (18: ~7.5 Mbit/s, heavy to decode; 32: ~0.3 Mbit/s)")
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--threads-too", action="store_true",
                    help="also time the cold first build with its clips made on threads, not worker processes "
                         "(`report_media.PROCESS_MIN_CLIPS` out of reach), in this process, for the ratio")
    ap.add_argument("--reencode-too", action="store_true",
                    help="also time a cold first build that re-encodes every ground-truth window (copy_kbps=0), "
                         "in this process, for the ratio")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None, help="write the measurements here")
    args = ap.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_report-"))
    t0 = time.perf_counter()
    sources = make_sources(work / "sources", args.sources, crf=args.source_crf)
    bitrate = sum(p.stat().st_size for p in sources) * 8 / (10.0 * len(sources)) / 1e6  # Mbit/s, audio included
    gens = [make_generated(work / f"model{m}", args.sources, seed=m) for m in range(args.models + 1)]
    # every clip id gets its own video file (a hard link to a source, reused in turn), so that every gallery clip
    # is made on its own, as distinct clips would be (the media store rightly shares the files of clips made from
    # the same files)
    links = work / "clips"
    links.mkdir(exist_ok=True)
    clips = []
    for i in range(args.rows):
        video = links / f"clip{i:05d}.mp4"
        if not video.exists():
            video.hardlink_to(sources[i % len(sources)])
        clips.append({"clip_id": f"clip{i:05d}", "video": str(video), "label": f"class {i % 309}", "duration": 10.0})
    paths = []
    for m in range(args.models + 1):
        gen = {c["clip_id"]: str(gens[m][i % len(sources)]) for i, c in enumerate(clips)}
        rows = clip_rows("av-benchmark", clips, gen, seed=m)
        for r in rows:
            r["item"] = r["clip_id"]  # generated files are shared between clip ids: their stems would repeat
            r["start_sec"], r["window_sec"] = 0.0, 8.0  # av-benchmark's window: the first 8 s
        paths.append(write_result(work / "results", "av-benchmark", f"model-{m}", rows, args.rows, debug=False))
    more, paths = paths, paths[:args.models]
    setup_s = time.perf_counter() - t0
    print(f"inputs: {args.sources} sources ({bitrate:.2f} Mbit/s), {args.models} (+1) models x {args.rows} rows "
          f"({setup_s:.1f} s) in {work}")

    t0 = time.perf_counter()
    groups = build_groups(load_inputs(paths))
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    select(groups, [parse_select(f"worst:DeSync:{args.clips}")])
    select_s = time.perf_counter() - t0
    print(f"read + check {args.models} x {args.rows} rows: {load_s:.2f} s; rank clips: {select_s:.2f} s")

    out, store = work / "report", work / "media-store"
    for old in (out, store, work / "report-new-folder", work / "report-one-more-model", work / "report-reencoded",
                work / "media-store-reencoded", work / "report-threads", work / "media-store-threads"):
        shutil.rmtree(old, ignore_errors=True)  # cold builds
    terms = [f"random:{args.clips}"]
    first, first_s, first_cpu = timed(build_report, paths, out, terms, jobs=args.jobs, media_store=store)
    reenc = None
    if args.reencode_too:  # the same cold build after it (warm caches favour it), every window re-encoded
        reenc, reenc_s, reenc_cpu = timed(build_report, paths, work / "report-reencoded", terms, jobs=args.jobs,
                                          media_store=work / "media-store-reencoded",
                                          settings=MediaSettings(copy_kbps=0))
        reenc_mb = sum(p.stat().st_size for p in (work / "report-reencoded" / "media").rglob("*")
                       if p.is_file()) / 1e6
        print(f"first build, every window re-encoded: {reenc_s:.1f} s ({reenc_cpu / args.clips:.2f} CPU-s per "
              f"clip, {reenc_mb / args.clips:.2f} MB per clip)")
    thr = None
    if args.threads_too:  # the same cold build on threads (after it: warm caches favour it)
        import benchmarks.report_media as report_media

        saved, report_media.PROCESS_MIN_CLIPS = report_media.PROCESS_MIN_CLIPS, 10 ** 9
        try:
            thr, thr_s, thr_cpu = timed(build_report, paths, work / "report-threads", terms, jobs=args.jobs,
                                        media_store=work / "media-store-threads")
        finally:
            report_media.PROCESS_MIN_CLIPS = saved
        print(f"first build, clips made on threads: {thr_s:.1f} s ({thr_cpu / args.clips:.2f} CPU-s per clip)")
    again, again_s, _ = timed(build_report, paths, out, terms, jobs=args.jobs, media_store=store)
    # the same re-run as a user types it: a new process (imports included)
    t0 = time.perf_counter()
    cli = subprocess.run([sys.executable, "-m", "benchmarks.cli", "report", *map(str, paths), "--out", str(out),
                          "--media-cache", str(store), "--no-progress", *(f"--select={t}" for t in terms)],
                         capture_output=True, text=True, cwd=REPO)
    cli_s = time.perf_counter() - t0
    if cli.returncode != 0:
        raise SystemExit(f"vbench report failed: {cli.stderr[-2000:]}")
    print(f"re-run as a command (new process): {cli_s:.1f} s")
    media = [p for p in (out / "media").rglob("*") if p.is_file()]
    media_mb = sum(p.stat().st_size for p in media) / 1e6
    html_kb = (out / "index.html").stat().st_size / 1e3
    # what the store saves: the same gallery in a new folder, then with one more model's results
    fresh, fresh_s, _ = timed(build_report, paths, work / "report-new-folder", terms, jobs=args.jobs,
                              media_store=store)
    plus, plus_s, plus_cpu = timed(build_report, more, work / "report-one-more-model", terms, jobs=args.jobs,
                                   media_store=store)
    print(f"first build, {args.clips}-clip gallery: {first_s:.1f} s ({first.encoded} files written, "
          f"{first_s / args.clips:.2f} s per clip, {first_cpu / args.clips:.2f} CPU-s per clip, "
          f"{len(first.errors)} errors; ground-truth windows {first.copied} copied, {first.reencoded} re-encoded)")
    print(f"re-run (media reused): {again_s:.1f} s ({again.encoded} files written, {again.plots_drawn} of "
          f"{first.plots_drawn} plots drawn again)")
    print(f"the same gallery in a new folder (media store): {fresh_s:.1f} s ({fresh.encoded} files written, "
          f"{fresh.from_store} linked)")
    print(f"with one more model: {plus_s:.1f} s ({plus.encoded} files written, {plus.from_store} linked, "
          f"{plus_cpu / args.clips:.2f} CPU-s per clip)")
    print(f"index.html {html_kb:.0f} kB; media {len(media)} files, {media_mb:.1f} MB "
          f"({media_mb / args.clips:.2f} MB per clip)")
    if args.json:
        args.json.write_text(json.dumps({
            "command": "scripts/bench_report.py " + " ".join(sys.argv[1:]), "machine": platform.platform(),
            "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True).stdout.strip(), "date": time.strftime("%Y-%m-%d"),
            "cpus": available_cores(), "rows": args.rows, "models": args.models,
            "gallery_clips": args.clips, "window_s": 8.0,
            "sources": "640x360 25 fps 10 s H.264 + 44.1 kHz stereo AAC (chirp in noise)",
            "source_crf": args.source_crf, "source_bitrate_mbit_s": round(bitrate, 2), "jobs": args.jobs,
            "read_check_s": round(load_s, 3), "rank_s": round(select_s, 3), "first_build_s": round(first_s, 2),
            "first_build_cpu_s_per_clip": round(first_cpu / args.clips, 3),
            "rerun_s": round(again_s, 2), "files_written_first": first.encoded, "files_written_rerun": again.encoded,
            "plots_drawn_first": first.plots_drawn, "plots_drawn_rerun": again.plots_drawn,
            "cli_rerun_s": round(cli_s, 2),
            "new_folder_s": round(fresh_s, 2), "new_folder_files_written": fresh.encoded,
            "new_folder_from_store": fresh.from_store, "one_more_model_s": round(plus_s, 2),
            "one_more_model_files_written": plus.encoded, "one_more_model_from_store": plus.from_store,
            "one_more_model_cpu_s_per_clip": round(plus_cpu / args.clips, 3),
            "index_html_kb": round(html_kb, 1), "media_mb": round(media_mb, 2),
            "first_build_windows": {"copied": first.copied, "re-encoded": first.reencoded},
            **({"reencoded_first_build_s": round(reenc_s, 2),
                "reencoded_first_build_cpu_s_per_clip": round(reenc_cpu / args.clips, 3),
                "reencoded_media_mb": round(reenc_mb, 2),
                "first_build_speedup_vs_reencoded": round(reenc_s / first_s, 2)} if reenc is not None else {}),
            **({"threads_first_build_s": round(thr_s, 2),
                "threads_first_build_cpu_s_per_clip": round(thr_cpu / args.clips, 3),
                "first_build_speedup_vs_threads": round(thr_s / first_s, 2)} if thr is not None else {})},
            indent=2) + "\n")


if __name__ == "__main__":
    main()
