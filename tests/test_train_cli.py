"""End to end through the CLI with debug weights: synthetic clips -> `vaura extract` -> `vaura train` (cached and
on the fly) -> `--resume` -> `vaura generate --checkpoint runs/X/last.pt`."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from vaura.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def _ok(args: list[str]) -> str:
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.stdout


def _summary(output: str) -> dict:
    """The JSON summary line a command prints (stderr lines such as DEBUG WEIGHTS may follow it)."""
    return json.loads([line for line in output.splitlines() if line.startswith("{")][-1])


@pytest.mark.slow
def test_extract_train_resume_generate(tmp_path):
    from visualsound.synth import SynthConfig, synthesize

    synthesize(tmp_path / "synth", SynthConfig(count=4, duration=3.3, width=32, height=32, sample_rate=16000,
                                               mismatched_fraction=0.0, test_fraction=0.25, max_events=2))
    csv_path = str(tmp_path / "synth" / "synth.csv")
    common = ["--config", "tiny", "--debug-weights", "--set", "data.batch_size=1"]
    out = _ok(["extract", "--data", csv_path, "--out", str(tmp_path / "c_train"), *common])
    summary = _summary(out)
    assert summary == {"num_clips": 3, "windows": 6, "bad_clips": 0, "starts": "grid", "start_grid": 0.64,
                       "debug_weights": True, "out": str(tmp_path / "c_train"), "complete": True}
    starts = tmp_path / "starts.csv"
    val_clip = next(r[0] for r in csv.reader(open(csv_path)) if r[3] == "test")
    starts.write_text(f"file,start_sec\n{val_clip}_000000,0.5\n")
    out = _ok(["extract", "--data", csv_path, "--split", "test", "--fixed-starts", str(starts),
               "--out", str(tmp_path / "c_val"), *common])
    assert _summary(out)["starts"] == "fixed"
    manifest = json.loads((tmp_path / "c_val" / "manifest.json").read_text())
    windows = json.loads((tmp_path / "c_val" / "shards" / "000000" / "windows.json").read_text())["rows"]
    assert manifest["complete"] and windows == [{"clip": f"{val_clip}_000000", "start": 0.5}]

    run = tmp_path / "runs" / "x"
    train = ["train", "--data", str(tmp_path / "c_train"), "--val-data", str(tmp_path / "c_val"), "--out", str(run),
             *common, "--set", "val_every=2", "--set", "ckpt_every=2", "--set", "log_every=1"]
    out = _ok([*train, "--set", "max_steps=2"])
    res = _summary(out)
    assert res["step"] == 2 and res["debug_weights"] and res["val_loss"] is not None
    assert CliRunner().invoke(main, [*train, "--set", "max_steps=2"]).exit_code == 2  # refuses to overwrite
    out = _ok([*train, "--set", "max_steps=3", "--resume"])
    assert _summary(out)["step"] == 3
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["step"] for r in rows if r["kind"] == "train"] == ["1", "2", "3"]
    assert _ok(["train", "--out", str(run), "--plot-only"]).strip().endswith("loss_curve.png")

    # a run killed before its first checkpoint: its requeue (with --resume) starts again from step 0, where it
    # used to be a dead end (--resume: no last.pt; without --resume: the folder holds a run)
    early = tmp_path / "runs" / "early"
    early.mkdir()
    (early / "train_config.yaml").write_text("model: tiny\n")
    (early / "metrics.csv").write_text("kind,step\ntrain,1\n")
    early_args = ["train", "--data", str(tmp_path / "c_train"), "--out", str(early), *common, "--set", "val_every=0"]
    assert CliRunner().invoke(main, [*early_args, "--set", "max_steps=1"]).exit_code == 2
    assert _summary(_ok([*early_args, "--set", "max_steps=1", "--resume"]))["step"] == 1
    assert [r["step"] for r in csv.DictReader(open(early / "metrics.csv")) if r["kind"] == "train"] == ["1"]
    assert CliRunner().invoke(main, ["train", "--data", str(tmp_path / "c_train"), "--out",
                                     str(tmp_path / "runs" / "typo"), *common, "--resume"]).exit_code == 2
    assert CliRunner().invoke(main, ["train", "--out", str(run)]).exit_code == 2  # --data missing

    # on the fly: decode + frozen encoder + codec every step
    out = _ok(["train", "--data", csv_path, "--out", str(tmp_path / "runs" / "fly"), *common,
               "--set", "max_steps=1", "--set", "val_every=0"])
    assert _summary(out)["step"] == 1

    # the trained checkpoint is what `vaura generate` loads
    video = tmp_path / "synth" / "video" / f"{val_clip}_000000.mp4"
    _ok(["generate", "--video", str(video), "--out", str(tmp_path / "gen.mp4"), "--checkpoint",
         str(run / "last.pt"), "--greedy", "--no-mux"])
    assert (tmp_path / "gen.wav").exists()


def test_train_stopped_by_a_signal_exits_as_that_signal_would(tmp_path, monkeypatch):
    """After the trainer saved last.pt on SIGTERM, `vaura train` reports it and exits with 143 (what a SIGTERM
    death gives job scripts), so a requeue script can tell a stop from a finished run."""
    import vaura.train.run as run_mod

    def stopped(cfg, data, out, **kw):
        return {"out": str(out), "step": 7, "debug_weights": True, "train": {"loss": 1.0}, "val": None,
                "nonfinite_skips": 0, "bad_clips": 0, "stopped_by": "SIGTERM"}

    monkeypatch.setattr(run_mod, "run_training", stopped)
    res = CliRunner().invoke(main, ["train", "--config", "tiny", "--data", str(tmp_path), "--out", str(tmp_path / "r")])
    assert res.exit_code == 143, res.output
    assert _summary(res.stdout)["stopped_by"] == "SIGTERM" and "--resume" in res.stderr


def test_extract_shard_parts_share_one_cache(tmp_path):
    """`vaura extract --shard i/n`: each part says what is still missing; the last one prints the complete cache."""
    from visualsound.synth import SynthConfig, synthesize

    synthesize(tmp_path / "syn", SynthConfig(count=3, duration=2.8, width=32, height=32, sample_rate=16000,
                                             mismatched_fraction=0.0, test_fraction=0.0, max_events=1))
    common = ["--data", str(tmp_path / "syn" / "video"), "--out", str(tmp_path / "cache"), "--config", "tiny",
              "--debug-weights", "--shard-size", "1", "--device", "cpu", "--workers", "0"]
    part = _summary(_ok(["extract", *common, "--shard", "1/2"]))
    assert part["complete"] is False and part["shard"] == "1/2" and part["missing_shards"] == 2
    done = _summary(_ok(["extract", *common, "--shard", "0/2"]))
    assert done["complete"] is True and done["num_clips"] == 3 and done["windows"] >= 3
    res = CliRunner().invoke(main, ["extract", *common, "--shard", "2/2"])
    assert res.exit_code != 0 and "0 <= i < n" in res.output
