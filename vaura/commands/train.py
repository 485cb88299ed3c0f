"""`vaura train`: train V-AURA on cached features or on clips decoded on the fly (single process or torchrun)."""

from __future__ import annotations

import json
import os
import signal
import sys

import click

from visualsound.utils.cli import weights_options


@click.command("train")
@click.option("--config", "config", default="paper", show_default=True,
              help="TrainConfig preset (paper | tiny) or a YAML/JSON file.")
@click.option("--data", default=None,
              help="Training data: a `vaura extract` cache directory, or clips decoded on the fly (a .parquet, a "
                   "VGGSound-style .csv, a V-AURA split dir / id list, a clip directory, a YAML/JSON spec, or "
                   "key=value,...). Required except with --plot-only.")
@click.option("--val-data", default=None, help="Validation data (same forms; split defaults to validation).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory, e.g. runs/NAME.")
@click.option("--set", "overrides", multiple=True, help="Config override key=value, e.g. optim.lr=3e-4 (repeatable).")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its last.pt, exactly (a run stopped before its first checkpoint "
                   "starts again from step 0).")
@weights_options({"avclip_vggsound": ("--checkpoint", "Segment AVCLIP visual encoder weights"),
                  "dac_44khz": ("--codec-checkpoint", "DAC 44 kHz weights")})
@click.option("--debug-weights", is_flag=True, help="Seeded random tiny encoder and codec.")
@click.option("--device", default=None, help="cpu | cuda (default: cuda if available; torchrun picks LOCAL_RANK).")
@click.option("--plot-only", is_flag=True, help="Only (re)write OUT/loss_curve.png from OUT/metrics.csv.")
def train(config: str, data: str | None, val_data: str | None, out: str, overrides: tuple[str, ...], resume: bool,
          weights: dict[str, str | None], debug_weights: bool, device: str | None,
          plot_only: bool) -> None:
    """Train V-AURA; writes OUT/metrics.csv, OUT/last.pt, OUT/best-*.pt and OUT/loss_curve.png.

    Multi-GPU: torchrun --nproc-per-node 4 "$(which vaura)" train ...

    SIGTERM or SIGUSR1 (preemption; e.g. #SBATCH --signal=USR1@120) stops after the current step with
    OUT/last.pt saved and exits with 128 + the signal's number; --resume continues exactly.
    """
    from vaura.train.config import TrainConfig
    from vaura.train.loop import plot_loss_curve
    from vaura.train.run import run_training

    if plot_only:
        click.echo(str(plot_loss_curve(out)))
        return
    if data is None:
        raise click.UsageError("--data is required (except with --plot-only)")
    from visualsound.utils.threads import cap_default_workers

    cfg = TrainConfig.resolve(config).with_overrides(list(overrides))
    if not any(o.split("=", 1)[0].strip() == "data.num_workers" for o in overrides):
        cfg = cfg.replace(data=cfg.data.replace(num_workers=cap_default_workers(cfg.data.num_workers,
                                                                                "train decode workers")))
    cfg = cfg.replace(encoder_checkpoint=weights["avclip_vggsound"] or cfg.encoder_checkpoint,
                      codec_checkpoint=weights["dac_44khz"] or cfg.codec_checkpoint,
                      debug_weights=debug_weights or cfg.debug_weights)
    result = run_training(cfg, data, out, val_data=val_data, resume=resume, device=device)
    stopped = result.get("stopped_by")
    # stopped by a signal, after saving last.pt: exit as that signal's death would (128 + number), on every rank
    status = 128 + getattr(signal, stopped, signal.SIGTERM).value if stopped else 0
    if int(os.environ.get("RANK", "0")) == 0:  # torchrun: only rank 0 reports
        summary = {"out": result["out"], "step": result["step"], "debug_weights": result["debug_weights"],
                   "train_loss": result["train"]["loss"] if result["train"] else None,
                   "val_loss": result["val"]["loss"] if result["val"] else None,
                   "nonfinite_skips": result["nonfinite_skips"], "bad_clips": result["bad_clips"],
                   "stopped_by": stopped}
        click.echo(json.dumps(summary))
        if result["debug_weights"]:
            click.echo("DEBUG WEIGHTS: the encoder and codec were random models", err=True)
        if stopped:
            click.echo(f"stopped by {stopped} at step {result['step']} with {out}/last.pt saved; run the same "
                       f"command with --resume to continue", err=True)
    if status:
        sys.exit(status)
