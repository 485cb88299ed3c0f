"""The V-AURA trainer: AdamW + warm-up/cosine schedule, autocast, gradient accumulation and clipping by value,
non-finite guard, CSV metrics, periodic validation, atomic last/best-k checkpoints and exact resume, DDP, and a
checkpoint before stopping on SIGTERM / SIGUSR1 (preemption).

One optimiser step: ``grad_accum`` micro-batches (codes ``[B, K, T]``, visual features ``[B, 32, 768]``, either
read from a feature cache or computed from decoded clips by the frozen encoder and codec) -> teacher-forced
logits ``[B, K, T, card]`` -> mean of per-codebook cross-entropies -> backward (DDP averages gradients) ->
unscale, grad norm, clip by value, step, schedule. The step's loss is the mean over every sample of the global
batch: a micro-batch that bad clips made smaller weighs by its size, on every rank.

Exact resume: a sample is a pure function of ``(seed, epoch, index)`` and the batch order of ``(seed, epoch)``,
so the checkpoint stores, next to the model/optimiser/scheduler/scaler states, every rank's RNG states and data
position ``(epoch, batches consumed)``; a resumed run continues exactly: bit-identically where the kernels are
deterministic (CPU; on CUDA, atomics in e.g. ``index_select``'s backward make any two runs differ in the last
bits).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from vaura.train.cache import FrozenModels
from vaura.train.config import TrainConfig
from vaura.train.data import DataError, GlobalBatchSampler, WorkerTracked, clip_name, collate_clips
from vaura.train.ddp import DistInfo, all_gather_objects, all_reduce_sum, barrier
from visualsound.errors import CheckpointError, ConfigError, ToolkitError
from visualsound.utils.atomic import atomic_link_or_copy, atomic_open, atomic_torch_save, atomic_write_text
from visualsound.utils.checkpoint import safe_torch_load
from visualsound.utils.loader import WORKER_DEATH_GATE, crashed_worker_pids

log = logging.getLogger(__name__)

# the model engineer's self-describing format (`vaura.checkpoint`): `vaura generate --checkpoint runs/X/last.pt`
# reads format/version/config/state_dict/metadata; the extra "training" entry holds the resumable state
CHECKPOINT_FORMAT = "vaura"
CHECKPOINT_VERSION = 1
# config fields a resumed run may change (they do not alter the computation)
RESUMABLE_CHANGES = {"max_steps", "log_every", "val_every", "val_batches", "ckpt_every", "keep_every", "keep_best",
                     "max_nonfinite", "max_nonfinite_fraction", "data.num_workers", "data.max_worker_deaths",
                     # weights staged at another path: their checksums are compared instead (`_inputs_diff`)
                     "encoder_checkpoint", "codec_checkpoint"}


# signals that end `Trainer.fit` after the current step with a checkpoint (SLURM preemption sends SIGTERM;
# ``#SBATCH --signal=USR1@120`` warns 120 s ahead; torchrun forwards SIGTERM to every rank)
STOP_SIGNALS = ("SIGTERM", "SIGUSR1")


class NonFiniteLossError(ToolkitError):
    """Too many optimiser steps had a non-finite loss or gradient."""


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """The release's ``CosineLRScheduler``: ``step / warmup`` during warm-up, then cosine from 1 to `min_ratio`
    at `total_steps`, and `min_ratio` after that. `step` counts optimiser steps taken so far."""
    if step < warmup_steps:
        return step / warmup_steps
    if step <= total_steps:
        s = (step - warmup_steps) / (total_steps - warmup_steps)
        return min_ratio + 0.5 * (1.0 - min_ratio) * (1.0 + math.cos(math.pi * s))
    return min_ratio


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay only on parameters with >= 2 dims (matrices, embeddings)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    o = cfg.optim
    return torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=o.lr, betas=o.betas, eps=o.eps)


def autocast_dtype(precision: str) -> torch.dtype | None:
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _rng_state(device: torch.device) -> dict[str, Any]:
    key, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"key": key, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)}}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["key"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Trains `model` (a `vaura.model.Transformer`) on `train_set` (`CachedWindows` or, with `frozen`, a
    `ClipDataset`); writes ``metrics.csv``, ``last.pt`` (every ``ckpt_every`` steps), ``step-*.pt`` (kept every
    ``keep_every`` steps), ``best-*.pt`` and ``loss_curve.png`` under `out_dir`."""

    def __init__(self, cfg: TrainConfig, out_dir: str | os.PathLike, model: torch.nn.Module,
                 train_set: torch.utils.data.Dataset, val_set: torch.utils.data.Dataset | None = None,
                 frozen: FrozenModels | None = None, dist_info: DistInfo | None = None,
                 debug_weights: bool = False, record_history: bool = False,
                 find_unused_parameters: bool = False, metadata: dict[str, Any] | None = None) -> None:
        self.cfg, self.out = cfg, Path(out_dir)
        self.info = dist_info or DistInfo()
        self.device = self.info.device
        self.frozen, self.train_set, self.val_set = frozen, train_set, val_set
        self.debug_weights = debug_weights
        self.metadata = dict(metadata or {})  # stored in checkpoints (e.g. encoder/codec identities)
        seed_everything(cfg.seed + self.info.rank)
        self.model = model.to(self.device)
        self.ddp_model: torch.nn.Module = self.model
        if self.info.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # `find_unused_parameters` only for windows shorter than the visual span (``empty_video_emb`` unused)
            self.ddp_model = DistributedDataParallel(self.model, device_ids=ids,
                                                     find_unused_parameters=find_unused_parameters)
        self.opt = build_optimizer(self.model, cfg)
        o = cfg.optim
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(s, o.warmup_steps, o.total_steps, o.min_lr_ratio))
        self.amp_dtype = autocast_dtype(cfg.precision)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        self.step = self.epoch = self.batch_in_epoch = 0
        self.nonfinite = self.scaler_skips = self.bad_clips = 0
        self.nonfinite_in_a_row = 0  # skipped steps since the last step taken (`max_nonfinite`)
        # training-set indices whose decode worker was killed (segfault, OOM): bad clips for the rest of the run
        self.crashed: dict[int, str] = {}
        self._val_crashed: dict[int, str] = {}
        self._gate = WORKER_DEATH_GATE  # a dead decode worker is reported only where a batch is fetched
        self.best: list[tuple[float, int, str]] = []  # (val loss, step, file name), best first
        self.history: list[dict[str, Any]] | None = [] if record_history else None
        self._stop_signal: str | None = None  # set by a STOP_SIGNALS handler while `fit` runs
        self.stopped_by: str | None = None
        self._iter: Any = None
        self._tb: Any = None  # TensorBoard writer, False when unavailable
        self._resumed_at: int | None = None  # the step `resume` restored
        self._window = self._new_window()
        self.k = self.model.cfg.n_codebooks

    # -- data ----------------------------------------------------------------------------------------------------
    def _loader(self, dataset: torch.utils.data.Dataset, sampler: GlobalBatchSampler
                ) -> torch.utils.data.DataLoader:
        # an own generator: creating a loader iterator draws a worker base seed, which must not consume the
        # global RNG (a resumed run creates its iterators at other steps than the original run)
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + sampler.epoch * 101 + self.info.rank)
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=self.cfg.data.num_workers,
                                           collate_fn=collate_clips, pin_memory=self.device.type == "cuda",
                                           generator=gen)

    def _tolerant_batches(self, dataset: torch.utils.data.Dataset,
                          make_sampler: Any, start: int, excluded: dict[int, str]) -> Any:
        """The batches of ``make_sampler(start)`` (a `GlobalBatchSampler` from batch `start`), surviving decode
        workers killed by a signal: the clip a dead worker was loading goes into `excluded` (a bad clip from then
        on, with the reason), and a new loader resumes at the first batch not yet yielded. When the dead worker's
        clip is unknown, that batch is yielded as bad clips only. ``data.max_worker_deaths`` deaths in a row (no
        batch arriving in between) raise `DataError`."""
        workers, limit = self.cfg.data.num_workers, self.cfg.data.max_worker_deaths
        pos, deaths = start, 0
        while True:
            tracked = WorkerTracked(dataset, excluded, workers)
            try:
                it = iter(self._loader(tracked, make_sampler(pos)))
                while True:
                    try:
                        batch = self._gate.next(it)
                    except StopIteration:
                        return
                    pos, deaths = pos + 1, 0
                    yield batch
            except RuntimeError as e:
                dead = crashed_worker_pids(e)
                if workers == 0 or dead is None:
                    raise
                deaths += 1
                if deaths >= limit:
                    raise DataError(f"decode workers died {deaths} times in a row without loading a batch "
                                    f"(data.max_worker_deaths={limit}); last: {e}. Check the memory limit (the "
                                    f"OOM killer) and the clips") from e
                culprits = [i for i in tracked.slots.in_progress(dead) if i not in excluded]
                reason = f"its decode worker died: {e}"
                if culprits:
                    for i in culprits:
                        excluded[i] = reason
                    log.warning("%s; clip %s is a bad clip from now on; restarting the loader at batch %d (death %d "
                                "in a row, at most %d)", e, ", ".join(clip_name(dataset, i) for i in culprits), pos,
                                deaths, limit)
                    continue
                lost = next(iter(make_sampler(pos)), [])
                log.warning("%s; the clip it was loading is unknown: batch %d (%d clips) is lost; restarting the "
                            "loader (death %d in a row, at most %d)", e, pos, len(lost), deaths, limit)
                pos += 1
                yield {"bad": [(clip_name(dataset, i), reason) for i in lost], "size": 0}

    def _next_batch(self) -> dict[str, Any]:
        """The next non-empty training micro-batch; rolls over epochs and counts skipped bad clips. A whole epoch
        of batches without one usable clip raises `DataError` (it used to loop for ever)."""
        per_epoch = max(1, len(self.train_set) // (self.cfg.data.batch_size * self.info.world))
        empty, reasons = 0, []
        while True:
            if self._iter is None:
                self.train_set.set_epoch(self.epoch)

                def sampler(start: int, epoch: int = self.epoch) -> GlobalBatchSampler:
                    return GlobalBatchSampler(len(self.train_set), self.cfg.data.batch_size, True, self.cfg.seed,
                                              epoch, self.info.rank, self.info.world, start)

                self._iter = self._tolerant_batches(self.train_set, sampler, self.batch_in_epoch, self.crashed)
            try:
                batch = next(self._iter)
            except StopIteration:
                self.epoch, self.batch_in_epoch, self._iter = self.epoch + 1, 0, None
                continue
            self.batch_in_epoch += 1
            if batch["bad"]:
                self.bad_clips += len(batch["bad"])
                for clip_id, reason in batch["bad"]:
                    log.warning("skipped bad clip %s (%d so far): %s", clip_id, self.bad_clips, reason)
            if batch["size"]:
                return batch
            empty += 1
            reasons = (reasons + [reason for _, reason in batch["bad"]])[-3:]
            if empty >= per_epoch:
                raise DataError(f"{empty} training batches in a row (an epoch) held no usable clip: every clip is "
                                f"bad for this run's windows (data.clip_seconds={self.cfg.data.clip_seconds}); "
                                f"last reasons: {reasons}")

    def _inputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(codes int64 [B, K, T], visual float32 [B, 32, 768])`` on the device; `ConfigError` when their
        shapes do not fit the model config."""
        if "codes" in batch:
            self._check_shapes(batch["codes"], batch["visual"])
            return batch["codes"].to(self.device, non_blocking=True), batch["visual"].to(self.device)
        if self.frozen is None:
            raise ConfigError("decoded clips need the frozen encoder and codec (on-the-fly mode)")
        codes, visual = self.frozen.codes(batch["audio"]), self.frozen.visual(batch["video"])
        self._check_shapes(codes, visual)
        return codes, visual

    def _check_shapes(self, codes: torch.Tensor, visual: torch.Tensor) -> None:
        """The data (a cache, or the frozen codec / encoder on decoded clips) and the model config must agree on
        the codebooks, the visual tokens and their width, and the window length; say which, instead of an
        assertion deep in the model."""
        m = self.model.cfg
        problems = []
        if codes.dim() != 3 or codes.shape[1] != m.n_codebooks:
            problems.append(f"codes {list(codes.shape)} have {codes.shape[1] if codes.dim() == 3 else '?'} codebooks, "
                            f"the model n_codebooks={m.n_codebooks}")
        elif codes.shape[2] + m.n_codebooks > m.rope_len:
            problems.append(f"windows of {codes.shape[2]} codec frames need {codes.shape[2] + m.n_codebooks} steps, "
                            f"the model has rope_len={m.rope_len} (data.clip_seconds={self.cfg.data.clip_seconds})")
        if visual.dim() != 3 or tuple(visual.shape[1:]) != (m.visual_tokens, m.visual_dim):
            problems.append(f"visual features {list(visual.shape)} are not [B, visual_tokens={m.visual_tokens}, "
                            f"visual_dim={m.visual_dim}]")
        if problems:
            raise ConfigError(f"the training data does not fit the model: {'; '.join(problems)}. The cache (or the "
                              f"codec / encoder and data.clip_seconds) and the model config (model={self.cfg.model!r}, "
                              f"model_overrides={list(self.cfg.model_overrides)}) must agree")

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # -- one optimiser step --------------------------------------------------------------------------------------
    def train_step(self) -> dict[str, Any]:
        """Run ``grad_accum`` micro-batches and one optimiser step (or a counted skip on a non-finite loss)."""
        self.ddp_model.train()
        self.opt.zero_grad(set_to_none=True)
        accum = self.cfg.grad_accum
        # every micro-batch first: bad clips make some smaller, and the step is the mean over all the samples of
        # the global batch (every rank's micro-batches), so each micro-batch's mean loss is weighted by its size
        batches = [self._next_batch() for _ in range(accum)]
        sizes = [int(b["size"]) for b in batches]
        total = sum(sizes)
        if self.info.distributed:
            total = int(all_reduce_sum(torch.tensor([float(total)], device=self.device), self.info).item())
        full = all(n == sizes[0] for n in sizes) and total == sizes[0] * accum * self.info.world
        per_cb = torch.zeros(self.k, device=self.device)
        for micro, batch in enumerate(batches):
            codes, visual = self._inputs(batch)
            sync = self.ddp_model.no_sync() if self.info.distributed and micro < accum - 1 else \
                contextlib.nullcontext()
            # DDP averages gradients over ranks: a weight of n * world / total makes the sum over ranks and
            # micro-batches the per-sample mean (1 / accum when every micro-batch is full, as before)
            with sync:
                with self._autocast():
                    logits = self.ddp_model(codes, visual)
                out = self.model.loss(logits.float(), codes)
                loss_part = out.loss / accum if full else out.loss * (sizes[micro] * self.info.world / total)
                self.scaler.scale(loss_part).backward()
            per_cb += out.per_codebook.detach() * sizes[micro]
        # a stop signal (preemption) on any rank rides on the step's reduction, so every rank stops after this step
        stop_flag = torch.tensor([float(self._stop_signal is not None)], device=self.device)
        red = all_reduce_sum(torch.cat([per_cb, stop_flag]), self.info)
        per_cb, samples, stop = red[: self.k] / total, total, bool(red[self.k].item() > 0)
        loss = per_cb.mean()
        self.scaler.unscale_(self.opt)
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.float())
                                                          for p in params])) if params else torch.zeros(())
        record = {"step": self.step + 1, "loss": loss.item(), "per_codebook": per_cb.tolist(),
                  "lr": self.opt.param_groups[0]["lr"], "grad_norm": grad_norm.item(), "samples": samples,
                  "skipped": False, "stop": stop}
        bad_grad = not math.isfinite(record["grad_norm"]) and not self.scaler.is_enabled()
        if not math.isfinite(record["loss"]) or bad_grad:
            self.nonfinite += 1
            self.nonfinite_in_a_row += 1
            self.opt.zero_grad(set_to_none=True)
            self.scaler.update()
            record["skipped"] = True
            tried = self.step + self.nonfinite  # steps taken + skipped
            log.warning("step %d: non-finite %s (loss %s, grad norm %s); skipped (%d in a row, at most %d; %d of %d "
                        "steps so far)", self.step + 1, "loss" if not math.isfinite(record["loss"]) else "gradient",
                        record["loss"], record["grad_norm"], self.nonfinite_in_a_row, self.cfg.max_nonfinite,
                        self.nonfinite, tried)
            hint = (f"lower optim.lr, use precision=bf16/fp32, or check the data. The last good checkpoint is "
                    f"{self.out / 'last.pt'}")
            if self.nonfinite_in_a_row > self.cfg.max_nonfinite:
                raise NonFiniteLossError(
                    f"stopping: {self.nonfinite_in_a_row} steps in a row had a non-finite loss or gradient (limit "
                    f"max_nonfinite={self.cfg.max_nonfinite}); {hint}")
            if self.nonfinite > self.cfg.max_nonfinite and \
                    self.nonfinite > self.cfg.max_nonfinite_fraction * tried:
                raise NonFiniteLossError(
                    f"stopping: {self.nonfinite} of {tried} steps had a non-finite loss or gradient, more than "
                    f"max_nonfinite_fraction={self.cfg.max_nonfinite_fraction}; {hint}")
            return record
        if self.cfg.optim.grad_clip_value > 0:
            torch.nn.utils.clip_grad_value_(params, self.cfg.optim.grad_clip_value)
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
        self.scaler.step(self.opt)
        self.scaler.update()
        if self.scaler.is_enabled() and self.scaler.get_scale() < scale:
            self.scaler_skips += 1  # fp16 overflow: the scaler skipped the update and lowered its scale
        self.sched.step()
        self.step += 1
        self.nonfinite_in_a_row = 0
        return record

    # -- validation ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Mean loss and per-codebook losses over the validation set (or ``val_batches`` batches per rank)."""
        if self.val_set is None:
            raise ConfigError("no validation data")
        was_training = self.model.training
        self.model.eval()
        sums = torch.zeros(self.k + 1, device=self.device)
        def sampler(start: int) -> GlobalBatchSampler:
            return GlobalBatchSampler(len(self.val_set), self.cfg.data.batch_size, False, rank=self.info.rank,
                                      world=self.info.world, start=start)

        batches = self._tolerant_batches(self.val_set, sampler, 0, self._val_crashed)
        with self._gate, contextlib.closing(batches):  # closing: its workers end with the validation
            for i, batch in enumerate(batches):
                if self.cfg.val_batches and i >= self.cfg.val_batches:
                    break
                if not batch["size"]:
                    continue
                codes, visual = self._inputs(batch)
                with self._autocast():
                    logits = self.model(codes, visual)
                out = self.model.loss(logits.float(), codes)
                sums[: self.k] += out.per_codebook * codes.shape[0]
                sums[self.k] += codes.shape[0]
        self.model.train(was_training)
        tot = all_reduce_sum(sums, self.info)
        if tot[self.k] == 0:
            raise ToolkitError("validation set yielded no usable clips")
        per = tot[: self.k] / tot[self.k]
        return {"step": self.step, "loss": per.mean().item(), "per_codebook": per.tolist(),
                "samples": int(tot[self.k].item())}

    # -- logging -------------------------------------------------------------------------------------------------
    def _new_window(self) -> dict[str, Any]:
        return {"t0": time.perf_counter(), "n": 0, "loss": 0.0, "per_cb": None, "samples": 0, "grad_norm": 0.0}

    def _csv_row(self, kind: str, loss: float, per_cb: list[float], lr: float, grad_norm: float,
                 throughput: float) -> None:
        if not self.info.is_main:
            return
        path = self.out / "metrics.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["kind", "step", "epoch", "loss", *[f"loss_cb{i}" for i in range(self.k)], "lr",
                            "grad_norm", "samples_per_s", "nonfinite_skips", "scaler_skips", "bad_clips",
                            "debug_weights"])
            w.writerow([kind, self.step, self.epoch, f"{loss:.6f}", *[f"{x:.6f}" for x in per_cb], f"{lr:.6e}",
                        f"{grad_norm:.6f}", f"{throughput:.2f}", self.nonfinite, self.scaler_skips,
                        self.bad_clips, self.debug_weights])
        tb = self._tensorboard()
        if tb is not None:
            tb.add_scalar(f"{kind}/loss", loss, self.step)
            for i, x in enumerate(per_cb):
                tb.add_scalar(f"{kind}/loss_cb{i}", x, self.step)
            if kind == "train":
                tb.add_scalar("train/lr", lr, self.step)
                tb.add_scalar("train/grad_norm", grad_norm, self.step)
                tb.add_scalar("train/samples_per_s", throughput, self.step)
            tb.flush()

    def _tensorboard(self) -> Any:
        """A TensorBoard writer under ``<out>/tb`` when ``torch.utils.tensorboard`` imports (the CSV is the primary
        log; TensorBoard is not a dependency)."""
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                log.debug("TensorBoard not available (%s); metrics go to metrics.csv only", e)
                self._tb = False
            else:
                # after a resume, hide the events a killed run logged past its checkpoint (as metrics.csv drops them)
                self._tb = SummaryWriter(str(self.out / "tb"), purge_step=self._resumed_at + 1
                                         if self._resumed_at is not None else None)
        return self._tb or None

    def _log_train(self, rec: dict[str, Any], flush: bool = False) -> None:
        """Accumulate `rec`; every ``log_every`` steps (or on `flush`) write the window's means to the CSV."""
        w = self._window
        if not flush:
            w["samples"] += rec["samples"]
        if not rec["skipped"] and not flush:
            w["n"] += 1
            w["loss"] += rec["loss"]
            if math.isfinite(rec["grad_norm"]):  # fp16 overflow steps (skipped by the scaler) are counted apart
                w["grad_norm"] += rec["grad_norm"]
            pc = torch.tensor(rec["per_codebook"])
            w["per_cb"] = pc if w["per_cb"] is None else w["per_cb"] + pc
        if (self.step % self.cfg.log_every and not flush) or w["n"] == 0:
            return
        rate = w["samples"] / max(time.perf_counter() - w["t0"], 1e-9)
        n = w["n"]
        self._csv_row("train", w["loss"] / n, (w["per_cb"] / n).tolist(), rec["lr"], w["grad_norm"] / n, rate)
        log.info("step %d loss %.4f lr %.3e grad_norm %.3f %.1f samples/s", self.step, w["loss"] / n, rec["lr"],
                 w["grad_norm"] / n, rate)
        self._window = self._new_window()

    def plot(self) -> Path:
        """Write ``loss_curve.png`` (train and validation loss vs step) from ``metrics.csv``."""
        return plot_loss_curve(self.out)

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def state(self, rng: list[Any], positions: list[Any], crashed: dict[int, str] | None = None) -> dict[str, Any]:
        """The checkpoint blob: `vaura.checkpoint`'s fields plus ``training`` (everything resume needs)."""
        return {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": self.model.cfg.to_dict(),
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "metadata": {"debug_weights": self.debug_weights, "step": self.step, **self.metadata},
            "training": {
                "train_config": self.cfg.to_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "scaler": self.scaler.state_dict(), "step": self.step,
                "world_size": self.info.world, "positions": positions, "rng": rng, "best": self.best,
                "counters": {"nonfinite": self.nonfinite, "scaler_skips": self.scaler_skips,
                             "bad_clips": self.bad_clips, "nonfinite_in_a_row": self.nonfinite_in_a_row},
                # every rank's clips that killed a decode worker (a resume treats them as bad clips on every rank)
                "crashed_clips": [[i, r] for i, r in sorted((self.crashed if crashed is None else crashed).items())],
            },
        }

    def save(self, names: list[str]) -> None:
        """Write the full training state to each of `names` under the run directory (rank 0, atomically; the
        first is written, the others are hard links to it where the file system allows)."""
        rng = all_gather_objects(_rng_state(self.device), self.info)
        positions = all_gather_objects([self.epoch, self.batch_in_epoch], self.info)
        crashed = {i: r for part in all_gather_objects(self.crashed, self.info) for i, r in part.items()}
        if self.info.is_main:
            atomic_torch_save(self.state(rng, positions, crashed), self.out / names[0])
            for name in names[1:]:
                atomic_link_or_copy(self.out / names[0], self.out / name)
        barrier(self.info)

    def resume(self, path: str | os.PathLike) -> None:
        """Restore everything `save` wrote; the run then continues exactly where it stopped."""
        blob = load_checkpoint(path)
        ck = blob["training"]
        if ck["world_size"] != self.info.world:
            raise CheckpointError(f"{path} was written by {ck['world_size']} processes, this run has "
                                  f"{self.info.world}; exact resume needs the same number")
        old = TrainConfig.from_dict(ck["train_config"])
        diff = _config_diff(old.to_dict(), self.cfg.to_dict())
        if set(diff) - RESUMABLE_CHANGES:
            raise ConfigError(f"cannot resume {path}: the config changed in {sorted(set(diff) - RESUMABLE_CHANGES)}"
                              f" (only {sorted(RESUMABLE_CHANGES)} may change)")
        changed = _inputs_diff(blob.get("metadata") or {}, self.metadata)
        if changed:
            raise ConfigError(f"cannot resume {path}: {'; '.join(changed)} (exact resume needs the same data and "
                              "frozen encoder / codec; start a new run with another --out)")
        self.model.load_state_dict(blob["state_dict"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        self.scaler.load_state_dict(ck["scaler"])
        self.step = ck["step"]
        self.epoch, self.batch_in_epoch = ck["positions"][self.info.rank]
        self.best = [tuple(b) for b in ck["best"]]
        c = ck["counters"]
        self.nonfinite, self.scaler_skips, self.bad_clips = c["nonfinite"], c["scaler_skips"], c["bad_clips"]
        self.nonfinite_in_a_row = c.get("nonfinite_in_a_row", 0)
        self.crashed = {int(i): str(r) for i, r in ck.get("crashed_clips", [])}
        _set_rng_state(ck["rng"][self.info.rank], self.device)
        self._iter = None
        self._resumed_at = self.step
        if self.info.is_main:
            _truncate_metrics(self.out / "metrics.csv", self.step)
        log.info("resumed %s at step %d (epoch %d, batch %d)", path, self.step, self.epoch, self.batch_in_epoch)

    def _update_best(self, val_loss: float) -> None:
        if self.cfg.keep_best == 0 or not math.isfinite(val_loss):
            return
        if len(self.best) >= self.cfg.keep_best and val_loss >= self.best[-1][0]:
            return
        name = f"best-step{self.step:08d}.pt"
        self.best = sorted([*self.best, (val_loss, self.step, name)])
        dropped = self.best[self.cfg.keep_best:]
        self.best = self.best[: self.cfg.keep_best]
        self.save([name])
        if self.info.is_main:
            for _, _, old in dropped:
                (self.out / old).unlink(missing_ok=True)

    # -- the run -------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _stop_on_signals(self) -> Any:
        """While `fit` runs, SIGTERM / SIGUSR1 (SLURM's preemption or ``--signal=USR1@120`` warning, torchrun
        forwarding either) only ask the loop to stop after the current step with ``last.pt`` written."""
        self._stop_signal = None
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum: int, _frame: Any) -> None:
            self._stop_signal = self._stop_signal or signal.Signals(signum).name

        previous = {}
        for name in STOP_SIGNALS:
            if hasattr(signal, name):
                sig = getattr(signal, name)
                previous[sig] = signal.signal(sig, request_stop)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def fit(self) -> dict[str, Any]:
        """Train until ``max_steps``; returns the last train record and validation result. A stop signal
        (`STOP_SIGNALS`) ends the run after the current step with ``last.pt`` saved (``stopped_by`` names it; a
        ``--resume`` continues exactly)."""
        self.out.mkdir(parents=True, exist_ok=True)
        if self.info.is_main:
            self.cfg.save(self.out / "train_config.yaml")
        last, val = None, None
        self.stopped_by = None
        self._window = self._new_window()
        with self._stop_on_signals(), self._gate:
            while self.step < self.cfg.max_steps:
                rec = self.train_step()
                last = rec
                if self.history is not None:
                    self.history.append(rec)
                saved = False
                if not rec["skipped"]:
                    self._log_train(rec)
                    if self.val_set is not None and self.cfg.val_every and self.step % self.cfg.val_every == 0:
                        val = self.validate()
                        self._csv_row("val", val["loss"], val["per_codebook"], rec["lr"], float("nan"), float("nan"))
                        log.info("step %d validation loss %.4f", self.step, val["loss"])
                        self._update_best(val["loss"])
                        if self.info.is_main:
                            self.plot()
                    keep = bool(self.cfg.keep_every) and self.step % self.cfg.keep_every == 0
                    if self.step % self.cfg.ckpt_every == 0 or self.step >= self.cfg.max_steps or keep:
                        self.save(["last.pt", *([f"step-{self.step:08d}.pt"] if keep else [])])
                        saved = True
                if rec["stop"]:
                    self.stopped_by = self._stop_signal or "a signal on another rank"
                    if not saved:
                        self.save(["last.pt"])
                    log.warning("stopped by %s at step %d; %s holds the state, --resume continues", self.stopped_by,
                                self.step, self.out / "last.pt")
                    break
        if last is not None and not last["skipped"]:
            self._log_train(last, flush=True)  # the steps since the last full logging window
        if self.info.is_main and (self.out / "metrics.csv").exists():
            self.plot()
        return {"train": last, "val": val, "step": self.step, "nonfinite_skips": self.nonfinite,
                "bad_clips": self.bad_clips, "stopped_by": self.stopped_by}


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint (weights-only unpickling) and check its format."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    ck = safe_torch_load(path, map_location="cpu")
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT or "training" not in ck:
        raise CheckpointError(f"{path} is not a vaura training checkpoint (written by `vaura train`)")
    if ck.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ck.get('version')} != {CHECKPOINT_VERSION}")
    return ck


def _config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out


def _same_data(a: Any, b: Any) -> bool:
    """Two data specs name the same data: equal strings, or paths that resolve to the same file or folder."""
    if a == b:
        return True
    if isinstance(a, str) and isinstance(b, str) and Path(a).exists() and Path(b).exists():
        return Path(a).resolve() == Path(b).resolve()
    return False


def _inputs_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between a checkpoint's metadata and this run's in the training inputs: the data (by the
    ``data_fingerprint`` / ``val_data_fingerprint`` of what it holds when both sides have one, else by the
    ``data`` / ``val_data`` specs) and the frozen ``encoder`` / ``codec`` checksums (fields absent on either side
    are not compared)."""
    out = []
    for key in ("data", "val_data"):
        fp = f"{key}_fingerprint"
        if fp in old and fp in new:
            if old[fp] != new[fp] and (old[fp] is None or new[fp] is None):
                out.append(f"--{key.replace('_', '-')} was {old.get(key)!r}, now {new.get(key)!r}")
            elif old[fp] != new[fp]:
                out.append(f"--{key.replace('_', '-')} {new.get(key)!r} holds other clips or windows than "
                           f"{old.get(key)!r} held for the run (fingerprint {str(old[fp])[:12]} -> "
                           f"{str(new[fp])[:12]})")
            continue
        if key in old and key in new and not _same_data(old[key], new[key]):
            out.append(f"--{key.replace('_', '-')} was {old[key]!r}, now {new[key]!r}")
    for key in ("encoder", "codec"):
        a, b = (old.get(key) or {}).get("checksum"), (new.get(key) or {}).get("checksum")
        if a is not None and b is not None and a != b:
            out.append(f"the {key} weights differ (checksum {a} -> {b})")
    return out


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows written after `step` (by a run that died after its last checkpoint)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if int(r[1]) <= step]
    if len(kept) != len(rows):
        lines = [",".join(r) for r in kept]
        atomic_write_text(path, "\n".join(lines) + "\n")


def plot_loss_curve(run_dir: str | os.PathLike) -> Path:
    """``<run_dir>/loss_curve.png`` from ``metrics.csv`` (matplotlib Agg); labelled DEBUG WEIGHTS if so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    path = run_dir / "metrics.csv"
    if not path.exists():
        raise ToolkitError(f"{path} does not exist; nothing to plot")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    fig, ax = plt.subplots(figsize=(7, 4))
    out = run_dir / "loss_curve.png"
    try:
        for kind, style in (("train", "-"), ("val", "o-")):
            pts = [(int(r["step"]), float(r["loss"])) for r in rows if r["kind"] == kind]
            if pts:
                ax.plot(*zip(*pts), style, label=kind, markersize=3)
        debug = any(r.get("debug_weights") == "True" for r in rows)
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy (mean over codebooks)")
        ax.set_title(f"{run_dir.name}{'  [DEBUG WEIGHTS]' if debug else ''}")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        with atomic_open(out, "wb") as f:
            fig.savefig(f, format="png", dpi=100)
    finally:
        plt.close(fig)  # also when drawing or saving fails
    return out
