"""`vbench datasets`: list the built-in datasets, show one, build a manifest from a local copy."""

from __future__ import annotations

import collections
import json

import click


@click.group("datasets")
def datasets() -> None:
    """Evaluation datasets: manifests of clip id, video, start second, window and label."""


@datasets.command("list")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Folder of built manifests (default: $VBENCH_DATASETS or ./vbench-datasets).")
def list_cmd(directory: str | None) -> None:
    """Built-in datasets, what each needs, and whether its manifest is built."""
    from pathlib import Path

    from benchmarks.datasets import BUILTINS, datasets_dir

    folder = Path(directory) if directory else datasets_dir()
    for b in BUILTINS.values():
        built = (folder / f"{b.name}.json").is_file()
        click.echo(f"{b.name:21s} {'built' if built else '-':6s} {b.description} [{b.protocol}]")
        if b.list_file:
            click.echo(f"{'':28s} --list: {b.list_file}")
    others = sorted(p.stem for p in folder.glob("*.json") if p.stem not in BUILTINS) if folder.is_dir() else []
    if others:
        click.echo(f"other manifests in {folder}: {', '.join(others)}")


@datasets.command("show")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest summary as JSON.")
def show(name: str, directory: str | None, as_json: bool) -> None:
    """Summary of a built manifest NAME (or a manifest path): clips, window, sources, labels."""
    from benchmarks.datasets import resolve_dataset

    ds = resolve_dataset(name, directory)
    labels = collections.Counter(c.label for c in ds.clips)
    summary = {"name": ds.name, "manifest": ds.path, "clips": len(ds.clips), "window_sec": ds.window_sec,
               "shortened_windows": sum(c.window_sec < ds.window_sec for c in ds.clips),
               "missing_at_build": len(ds.missing), "rejected_at_build": len(ds.rejected),
               "official_clips": ds.official_clips, "root": ds.root, "sources": list(ds.sources),
               "labels": dict(labels.most_common()), "notes": ds.notes, "fingerprint": ds.fingerprint()}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for key in ("name", "manifest", "clips", "window_sec", "shortened_windows", "missing_at_build",
                "rejected_at_build", "official_clips", "root", "notes", "fingerprint"):
        click.echo(f"{key}: {summary[key]}")
    for s in ds.sources:
        click.echo(f"source ({s['role']}): {s['path']}" + (f" sha256 {s['sha256'][:16]}..." if "sha256" in s else ""))
    click.echo(f"labels ({len(labels)}): " + ", ".join(f"{k or '(none)'} {v}" for k, v in labels.most_common(10))
               + (" ..." if len(labels) > 10 else ""))


@datasets.command("build")
@click.argument("name")
@click.option("--root", type=click.Path(exists=True, file_okay=False), default=None,
              help="Local copy of a built-in's videos (or the `visualsound synth` folder).")
@click.option("--list", "list_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The official list file (see `vbench datasets list`).")
@click.option("--videos", type=click.Path(exists=True, file_okay=False), default=None,
              help="A plain folder of videos: every video is a clip (id = file stem), no list file needed.")
@click.option("--gt-audio", type=click.Path(exists=True, file_okay=False), default=None,
              help="With --videos: ground-truth audio files of the same stems, when they are not the videos' own "
                   "tracks (av-benchmark's --gt_audio folder).")
@click.option("--pattern", default=None, help="Video path under --root as a format string (dataset default).")
@click.option("--starts", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A file,start_sec csv giving each clip's window start.")
@click.option("--window", type=float, default=None,
              help="Evaluation window in seconds (default: 2.56 for the V-AURA paper's sets, 8 for the "
                   "av-benchmark sets and folders).")
@click.option("--split", default="test", show_default=True, help="synthetic only: test, train or all.")
@click.option("--allow-missing", is_flag=True, help="Build without listed clips that are not found.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Manifest path (default: <datasets dir>/NAME.json).")
def build(name: str, root: str | None, list_file: str | None, videos: str | None, gt_audio: str | None,
          pattern: str | None, starts: str | None, window: float | None, split: str, allow_missing: bool,
          out: str | None) -> None:
    """Build the manifest of built-in dataset NAME from a local copy, or of any NAME from a folder of videos.

    Unreadable and too-short files (under 1 s) are left out and listed with the reason; they never stop the
    build."""
    from benchmarks.datasets import build_dataset, datasets_dir

    ds = build_dataset(name, root, list_file=list_file, pattern=pattern, starts=starts, window_sec=window,
                       allow_missing=allow_missing, split=split, videos=videos, gt_audio=gt_audio)
    path = ds.save(out or datasets_dir() / f"{name}.json")
    for cid, why in ds.rejected:
        click.echo(f"left out {cid}: {why}", err=True)
    click.echo(f"{name}: {len(ds.clips)} clips ({len(ds.missing)} missing, {len(ds.rejected)} left out), "
               f"{ds.window_sec:g} s windows -> {path}")
