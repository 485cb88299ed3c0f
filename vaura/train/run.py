"""Entry points behind `vaura extract` and `vaura train`: resolve data specs, load the frozen models, build the
model and run the trainer (single process or one rank of a torchrun job)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vaura.train.cache import CachedWindows, FrozenModels, extract, is_cache
from vaura.train.config import TrainConfig
from vaura.train.data import ClipDataset, DataError, DataSource
from vaura.train.ddp import failure_watch, init_distributed, shutdown
from vaura.train.frozen import build_training_model, load_frozen_models
from vaura.train.loop import Trainer
from visualsound.errors import CheckpointError, ToolkitError

log = logging.getLogger(__name__)


def make_dataset(spec: str, cfg: TrainConfig, train: bool, frozen: FrozenModels,
                 split: str | None = None) -> torch.utils.data.Dataset:
    """A `CachedWindows` for a cache directory (checked against `frozen`'s identities and the window grid), else
    an on-the-fly `ClipDataset` of the clips `spec` names (split `split`, default train / validation)."""
    if is_cache(spec):
        return CachedWindows(spec, cfg.data, train=train, seed=cfg.seed, encoder_id=frozen.encoder_id,
                             codec_id=frozen.codec_id)
    source = DataSource.parse(spec, split=split or ("train" if train else "validation"))
    clips = source.clips()
    log.info("%s: %d %s clips (%s layout), decoded on the fly", source.path, len(clips), source.split,
             source.resolved_kind())
    return ClipDataset(clips, cfg.data, train=train, seed=cfg.seed)


def input_metadata(frozen: FrozenModels, data: str, val_data: str | None, train_set: torch.utils.data.Dataset,
                   val_set: torch.utils.data.Dataset | None) -> dict[str, Any]:
    """What a checkpoint records about the training inputs, and a resume compares: the frozen encoder / codec
    identities, the data specs and the fingerprints of what they hold (`CachedWindows.fingerprint`,
    `ClipDataset.fingerprint`), so the same data at another path resumes and other data at the same path does
    not."""
    def fingerprint(ds: torch.utils.data.Dataset | None) -> str | None:
        return ds.fingerprint() if ds is not None and hasattr(ds, "fingerprint") else None

    return {"encoder": frozen.encoder_id, "codec": frozen.codec_id,
            "data": str(data), "val_data": str(val_data) if val_data else None,
            "data_fingerprint": fingerprint(train_set), "val_data_fingerprint": fingerprint(val_set)}


def run_extract(cfg: TrainConfig, spec: str, out: str | os.PathLike, *, split: str | None = None,
                fixed_starts: str | None = None, grid: bool | None = None, shard_size: int = 256,
                feature_dtype: str = "float16", device: str | None = None,
                progress: Callable[[int, int], None] | None = None, part: tuple[int, int] = (0, 1)
                ) -> dict[str, Any]:
    """`vaura extract`: cache the windows of the clips `spec` names. `split` (default: the spec's own, else
    train) must agree with a split the spec names. ``grid`` defaults to ``split == "train"``. ``part=(i, n)``:
    only the cache shards ``s % n == i`` (`vaura.train.cache`; ``--shard``)."""
    from visualsound.utils.shard import rank_device

    dev = torch.device(rank_device(device or ("cuda" if torch.cuda.is_available() else "cpu")))
    source = DataSource.parse(spec, **({"split": split} if split else {}))
    if split and source.split != split:  # the spec's own split=... wins in `parse`: never drop --split silently
        raise DataError(f"--split {split} contradicts the data spec's split={source.split} ({spec})")
    if fixed_starts:
        source = source.replace(fixed_starts=str(fixed_starts))
    clips = source.clips()
    frozen, _ = load_frozen_models(cfg, dev)
    use_grid = source.is_train if grid is None else grid
    return extract(clips, out, frozen, cfg.data, grid=use_grid, source=source.to_dict(), shard_size=shard_size,
                   num_workers=cfg.data.num_workers, feature_dtype=feature_dtype, progress=progress, part=part)


def run_training(cfg: TrainConfig, data: str, out: str | os.PathLike, *, val_data: str | None = None,
                 resume: bool = False, device: str | None = None) -> dict[str, Any]:
    """`vaura train`: one process, or this rank of a torchrun job (NCCL on CUDA, gloo on CPU)."""
    out = Path(out)
    last = out / "last.pt"
    if resume and not last.exists():
        if not (out / "metrics.csv").exists() and not (out / "train_config.yaml").exists():
            raise CheckpointError(f"--resume: {last} does not exist")
        # a run killed before its first checkpoint (a preempted job's requeue passes --resume): starting again
        # from step 0 is its exact resume; without this, --resume found no last.pt and a run without it refused
        # the folder's metrics.csv
        if int(os.environ.get("RANK", "0")) == 0:
            log.warning("--resume: %s has no checkpoint yet (the run stopped before its first one); starting it "
                        "again from step 0", out)
            (out / "metrics.csv").unlink(missing_ok=True)
        resume = False
    elif not resume and (last.exists() or (out / "metrics.csv").exists()):
        raise ToolkitError(f"{out} already holds a run ({last if last.exists() else out / 'metrics.csv'}); pass "
                           f"--resume to continue it, or pick another --out")
    info = init_distributed(device)
    try:
        # a rank that fails tells the others, which stop at once instead of waiting in a collective
        with failure_watch(info):
            cached = is_cache(data) and (val_data is None or is_cache(val_data))
            # the frozen models only compute features on the fly; for caches they are loaded (on CPU) to check
            # identities
            frozen, codec = load_frozen_models(cfg, "cpu" if cached else info.device)
            train_set = make_dataset(data, cfg, True, frozen)
            val_set = make_dataset(val_data, cfg, False, frozen) if val_data else None
            if val_set is None:
                log.warning("no --val-data: no validation loss and no best-k checkpoints")
            model = build_training_model(cfg, codec, frozen.visual_dim)
            trainer = Trainer(cfg, out, model, train_set, val_set, frozen=None if cached else frozen,
                              dist_info=info, debug_weights=cfg.debug_weights,
                              metadata=input_metadata(frozen, data, val_data, train_set, val_set))
            if resume:
                trainer.resume(last)
            result = trainer.fit()
            result["out"] = str(out)
            result["debug_weights"] = cfg.debug_weights
            result["world_size"] = info.world
            return result
    finally:
        shutdown()
