"""Inputs for the listening-report tests without running `vbench evaluate`: result JSONs (schema v2) with a
``per_clip`` record and ``<name>.clips.parquet`` tables written by `benchmarks.per_clip.write_table` (the writer
`vbench evaluate` uses; a test that needs a malformed table passes its own Arrow schema and the table is written
raw), over real media: short synthetic clips from `visualsound.synth` and "generated" audio written with
`visualsound.media.write_wav` (the ground-truth audio delayed and with noise, so the spectrograms differ).

`make_report_inputs` gives a ready set (two models, odd rows: a missing item, an unpaired file, an item left out
of one metric); `write_per_clip` / `write_result` let a test break one thing at a time.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks import per_clip
from benchmarks.results import metric_keys, result_filename

PER_ITEM_METRICS = per_clip.ITEM_METRICS
EXTRA_COLUMNS = {"vaura-paper": ("sync_offset_sec",), "av-benchmark": ("desync_first_sec", "desync_last_sec")}
# plausible per-item ranges (stored units) for the random values
RANGES = {"kld": (0.5, 4.0), "ib": (5.0, 40.0), "sync_ms": (0.0, 800.0), "KL-PANNS-softmax": (0.5, 4.0),
          "KL-PASST-softmax": (0.5, 4.0), "IB-Score": (0.05, 0.4), "DeSync": (0.0, 1.6)}
schema = per_clip.schema  # the per-clip table's Arrow schema of a protocol


def synth_clips(root: Path, count: int = 4, duration: float = 2.0, width: int = 64, height: int = 48,
                seed: int = 0) -> list[dict[str, Any]]:
    """Synthetic clips under `root`: ``{"clip_id", "video", "label", "duration"}`` with absolute paths."""
    from visualsound.synth import SynthConfig, synthesize

    records = synthesize(root, SynthConfig(count=count, duration=duration, width=width, height=height, seed=seed,
                                           mismatched_fraction=0.0))
    return [{"clip_id": Path(r["file"]).stem, "video": str((root / r["file"]).resolve()), "label": r["label"],
             "duration": duration} for r in records]


def write_generated(folder: Path, clips: list[dict[str, Any]], delay_sec: float = 0.2, noise: float = 0.05,
                    seed: int = 0) -> dict[str, str]:
    """A "generated" wav per clip (the clip's audio delayed by `delay_sec`, plus noise); clip id -> path."""
    from visualsound.media import read_audio, write_wav

    rng = np.random.default_rng(seed)
    out = {}
    for c in clips:
        sr = 16000
        audio = read_audio(c["video"], sample_rate=sr, mono=True).numpy()
        shift = int(delay_sec * sr)
        gen = np.concatenate([np.zeros((audio.shape[0], shift), np.float32), audio[:, :audio.shape[1] - shift]], 1)
        gen = np.clip(gen + noise * rng.standard_normal(gen.shape).astype(np.float32), -1, 1)
        path = folder / f"{c['clip_id']}.wav"
        write_wav(path, gen, sr)
        out[c["clip_id"]] = str(path.resolve())
    return out


def clip_rows(protocol: str, clips: list[dict[str, Any]], generated: dict[str, str], seed: int = 0,
              samples: int = 1, missing: tuple[str, ...] = (), excluded: dict[str, str] | None = None,
              unpaired: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Per-item rows: each clip x sample scored with seeded random values, except the clips in `missing` (a
    `missing` row), metrics in `excluded` ({clip id: metric key}: that value null, status `excluded`) and the
    generated files in `unpaired` (rows with no clip)."""
    rng = np.random.default_rng(seed)
    excluded = excluded or {}
    metrics, extras = PER_ITEM_METRICS[protocol], EXTRA_COLUMNS[protocol]
    rows = []
    for c in clips:
        for s in range(samples if c["clip_id"] not in missing else 1):
            stem = Path(generated.get(c["clip_id"]) or c["clip_id"]).stem  # av-benchmark: the generated file's stem
            item = f"{c['clip_id']}#{s}" if protocol == "vaura-paper" else stem
            row = {"item": item, "clip_id": c["clip_id"], "sample": s, "label": c["label"],
                   "generated_path": generated.get(c["clip_id"]), "gt_audio_path": c["video"],
                   "video_path": c["video"], "start_sec": 0.0, "window_sec": c["duration"],
                   "status": "scored", "reason": ""}
            row.update({m: float(rng.uniform(*RANGES[m])) for m in metrics})
            row.update({e: float(rng.uniform(0, 1)) for e in extras})
            if c["clip_id"] in missing:
                row.update({m: None for m in metrics + extras}, item=f"gt:{c['clip_id']}", generated_path=None,
                           status="missing", reason="no generated file for this clip")
            elif c["clip_id"] in excluded:
                row.update({excluded[c["clip_id"]]: None}, status="excluded",
                           reason=f"{excluded[c['clip_id']]}: audio too short for the network")
            rows.append(row)
    for path in unpaired:
        row = {"item": Path(path).stem, "clip_id": None, "sample": 0, "label": "", "generated_path": path,
               "gt_audio_path": None, "video_path": None, "start_sec": None, "window_sec": None,
               "status": "unpaired", "reason": "no ground-truth clip of this name"}
        row.update({m: None for m in metrics + extras})
        rows.append(row)
    return rows


def write_per_clip(path: Path, protocol: str, rows: list[dict[str, Any]], metadata: dict[str, str],
                   table_schema: pa.Schema | None = None) -> str:
    """Write `rows` as a per-clip Parquet with `metadata`; returns its sha256. Without `table_schema` through
    `benchmarks.per_clip.write_table` (validated); with one, raw (to make a malformed table)."""
    if table_schema is None:
        return per_clip.write_table(path, rows, protocol, metadata)["sha256"]
    sch = table_schema.with_metadata({k.encode(): v.encode() for k, v in metadata.items()})
    pq.write_table(pa.Table.from_pylist(rows, schema=sch), path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def result_json(protocol: str, model: str, rows: list[dict[str, Any]], num_clips: int, debug: bool,
                dataset: str = "synthetic", fingerprint: str = "f" * 64, samples: int = 1) -> dict[str, Any]:
    """A valid schema-v2 result whose per-item metrics are the column means over the used rows (set-level
    metrics get a fixed value)."""
    metrics: dict[str, Any] = {}
    for key in metric_keys(protocol):
        if key in PER_ITEM_METRICS[protocol]:
            vals = [r[key] for r in rows if r.get(key) is not None and np.isfinite(r[key])]
            metrics[key] = float(np.mean(vals)) if vals else None
        elif key.startswith("ISC"):
            metrics[key] = 2.0
        else:
            metrics[key] = 3.5
    notes = {k: "no item could be scored" for k, v in metrics.items() if v is None}
    missing = sorted({r["clip_id"] for r in rows if r["status"] == "missing"})
    return {
        "format": "vbench-result", "schema_version": 2,
        "protocol": {"name": protocol, "version": 1, "description": "test"},
        "dataset": {"name": dataset, "num_clips": num_clips, "fingerprint": fingerprint, "missing_at_build": 0,
                    "official_clips": None},
        "model": {"name": model, "kind": "dir", "samples_per_clip": samples, "seeds": [0]},
        "metrics": metrics, "metric_notes": notes, "extractors": {}, "metric_details": {},
        "counts": {"clips": num_clips - len(missing), "samples": (num_clips - len(missing)) * samples,
                   "missing": len(missing), "missing_ids": missing},
        "timings": {}, "software": {"version": "0.1"}, "created": "2026-01-01T00:00:00+00:00",
        "debug_weights": debug,
    }


def write_result(out_dir: Path, protocol: str, model: str, rows: list[dict[str, Any]], num_clips: int,
                 debug: bool = True, dataset: str = "synthetic", fingerprint: str = "f" * 64, samples: int = 1,
                 metadata: dict[str, str] | None = None, table_schema: pa.Schema | None = None,
                 metric_ci: dict[str, Any] | None = None) -> Path:
    """Write ``<name>.json`` + ``<name>.clips.parquet`` into `out_dir`; `metadata` overrides Parquet metadata."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = result_filename(model, dataset, protocol, debug)
    json_path = out_dir / name
    table_path = out_dir / (json_path.stem + ".clips.parquet")
    meta = {"protocol": protocol, "dataset": dataset, "dataset_fingerprint": fingerprint, "model": model,
            "debug_weights": "true" if debug else "false", "result_file": name, **(metadata or {})}
    sha = write_per_clip(table_path, protocol, rows, meta, table_schema)
    data = result_json(protocol, model, rows, num_clips, debug, dataset, fingerprint, samples)
    data["per_clip"] = {"file": table_path.name, "rows": len(rows), "sha256": sha}
    if metric_ci is not None:
        data["metric_ci"] = metric_ci
    json_path.write_text(json.dumps(data, indent=1))
    return json_path


def make_report_inputs(root: Path, protocol: str = "av-benchmark", count: int = 4, debug: bool = True,
                       duration: float = 2.0, odd_rows: bool = True) -> list[Path]:
    """Two models on `count` synthetic clips: ``vaura`` (delayed + noisy audio; with `odd_rows`: its last clip
    missing, its first clip left out of one metric, one unpaired file) and ``ground-truth`` (the clips' own
    audio). Returns the two result JSON paths."""
    clips = synth_clips(root / "synth", count=count, duration=duration)
    gen = write_generated(root / "generated" / "vaura", clips)
    stray = root / "generated" / "vaura" / "stray_file.wav"
    if odd_rows:
        from visualsound.media import write_wav

        write_wav(stray, np.zeros((1, 16000), np.float32), 16000)
    metric = PER_ITEM_METRICS[protocol][-1]
    rows_v = clip_rows(protocol, clips, gen, seed=1,
                       missing=(clips[-1]["clip_id"],) if odd_rows else (),
                       excluded={clips[0]["clip_id"]: metric} if odd_rows else None,
                       unpaired=(str(stray.resolve()),) if odd_rows else ())
    rows_g = clip_rows(protocol, clips, {c["clip_id"]: c["video"] for c in clips}, seed=2)
    results = root / "results"
    return [write_result(results, protocol, "vaura", rows_v, count, debug),
            write_result(results, protocol, "ground-truth", rows_g, count, debug)]
