"""Splitting a job's items across processes, GPUs and machines: ``--shard i/n``, SLURM job arrays and ``torchrun``.

One rule for every per-item job (``visualsound score``, ``vaura sync-filter``, ``vaura generate``, ``vbench
evaluate``): an item belongs to shard ``shard_of(item id, n)`` (a hash of its id, so the partition depends only
on the ids, not on their order or on what else is listed), and every process of a job works on one ``(i, n)``.

`resolve_shard` turns the ``--shard`` option and the environment into that pair:

* ``"i/n"``: partition ``i`` of ``n`` (e.g. one machine of ``n`` started by hand);
* ``"auto"``: the SLURM job array task (``SLURM_ARRAY_TASK_ID`` of ``SLURM_ARRAY_TASK_COUNT`` tasks, or of
  ``SLURM_ARRAY_TASK_MAX - SLURM_ARRAY_TASK_MIN + 1`` where the count is not set); ``0/1`` outside an array;
* ``None`` (the option not given): ``0/1``.

Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank refines the shard above: rank ``r`` of ``W`` works on
``(r * n + i, n * W)``, which is a sub-partition of ``(i, n)`` (``h % (n W) = r n + i`` implies ``h % n = i``), so
ranks of one machine never overlap and together cover the machine's share. No process group is needed: ranks
share nothing but the output folder, and each item's result depends on the item alone.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from visualsound.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

T = TypeVar("T")


class ShardError(ConfigError):
    """A ``--shard`` value or the SLURM / torchrun environment it reads cannot be used."""


@dataclass(frozen=True)
class Shard:
    """Partition ``index`` of ``count`` and where it came from (``source``, for logs and records)."""

    index: int = 0
    count: int = 1
    source: str = "unsharded"

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ShardError(f"shard {self.index}/{self.count}: need 0 <= i < n")

    @property
    def pair(self) -> tuple[int, int]:
        return self.index, self.count

    @property
    def sharded(self) -> bool:
        return self.count > 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n`` (`ShardError` otherwise)."""
    parts = spec.split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ShardError(f"--shard must look like i/n (e.g. 0/4) or be 'auto', got {spec!r}")
    i, n = int(parts[0]), int(parts[1])
    if n < 1 or not 0 <= i < n:
        raise ShardError(f"--shard {spec!r}: need 0 <= i < n")
    return i, n


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ShardError(f"${name}={value!r} is not an integer") from None


def slurm_array_task(env: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """``(task, tasks)`` of a SLURM job array task, counted from 0; None outside an array.

    The task is ``SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN``; the number of tasks is ``SLURM_ARRAY_TASK_COUNT``,
    else ``SLURM_ARRAY_TASK_MAX - SLURM_ARRAY_TASK_MIN + 1``. Arrays with a step (``--array=0-9:2``) or a list
    that is not a contiguous range cannot be numbered this way and raise `ShardError`: use ``--shard i/n``."""
    env = os.environ if env is None else env
    task = _env_int(env, "SLURM_ARRAY_TASK_ID")
    if task is None:
        return None
    lo, hi = _env_int(env, "SLURM_ARRAY_TASK_MIN"), _env_int(env, "SLURM_ARRAY_TASK_MAX")
    count = _env_int(env, "SLURM_ARRAY_TASK_COUNT")
    lo = 0 if lo is None else lo
    if count is None:
        if hi is None:
            raise ShardError("SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor "
                             "SLURM_ARRAY_TASK_MAX: cannot tell how many tasks share the job; use --shard i/n")
        count = hi - lo + 1
    if hi is not None and hi - lo + 1 != count:
        raise ShardError(f"SLURM array tasks {lo}..{hi} are not {count} contiguous tasks (an array with a step or "
                         "a list): number the tasks yourself with --shard i/n")
    if not 0 <= task - lo < count:
        raise ShardError(f"SLURM_ARRAY_TASK_ID={task} is outside the array {lo}..{lo + count - 1}")
    return task - lo, count


def torchrun_rank(env: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """``(RANK, WORLD_SIZE)`` under ``torchrun`` (or any launcher that sets both) with more than one process;
    None otherwise."""
    env = os.environ if env is None else env
    world = _env_int(env, "WORLD_SIZE")
    if world is None or world <= 1:
        return None
    rank = _env_int(env, "RANK")
    if rank is None or not 0 <= rank < world:
        raise ShardError(f"WORLD_SIZE={world} but RANK={env.get('RANK')!r}: need 0 <= RANK < WORLD_SIZE")
    return rank, world


def resolve_shard(spec: str | None, env: Mapping[str, str] | None = None) -> Shard:
    """The shard this process works on: ``--shard`` (``"i/n"``, ``"auto"`` or None) refined by torchrun's rank
    (see the module docstring)."""
    env = os.environ if env is None else env
    if spec is None or spec.strip() == "":
        i, n, source = 0, 1, "unsharded"
    elif spec.strip().lower() == "auto":
        task = slurm_array_task(env)
        if task is None:
            i, n, source = 0, 1, "auto: no SLURM array"
        else:
            (i, n), source = task, f"SLURM array task {task[0]} of {task[1]}"
    else:
        (i, n), source = parse_shard(spec), f"--shard {spec.strip()}"
    rank = torchrun_rank(env)
    if rank is not None:
        r, w = rank
        i, n, source = r * n + i, n * w, f"{source}, torchrun rank {r} of {w}"
    return Shard(i, n, source)


def rank_device(device: str, env: Mapping[str, str] | None = None) -> str:
    """``"cuda"`` -> ``"cuda:<LOCAL_RANK>"`` under a launcher that sets ``LOCAL_RANK`` (one GPU per rank); any
    other device string is returned as given."""
    env = os.environ if env is None else env
    local = _env_int(env, "LOCAL_RANK")
    if device == "cuda" and local is not None and torchrun_rank(env) is not None:
        return f"cuda:{local}"
    return device


def shard_of(item_id: str, num_shards: int) -> int:
    """The shard (0 .. num_shards-1) of an item: first 8 bytes of sha1(id) mod `num_shards` (stable across
    machines, Python versions and list orders)."""
    return int.from_bytes(hashlib.sha1(item_id.encode("utf-8")).digest()[:8], "big") % num_shards


def select_items(items: Iterable[T], shard: tuple[int, int] | Shard, key: Callable[[T], str]) -> list[T]:
    """The items whose ``key(item)`` falls into `shard`, in their order."""
    i, n = shard.pair if isinstance(shard, Shard) else shard
    items = list(items)
    return items if n == 1 else [x for x in items if shard_of(key(x), n) == i]


def select_shard(index: pd.DataFrame, shard: tuple[int, int] | Shard) -> pd.DataFrame:
    """The rows of `index` (with a ``clip_id`` column) that belong to `shard`, in index order."""
    i, n = shard.pair if isinstance(shard, Shard) else shard
    if n == 1:
        return index.reset_index(drop=True)
    keep = [shard_of(c, n) == i for c in index["clip_id"]]
    return index.loc[keep].reset_index(drop=True)


def shard_option_help(what: str, key: str = "id") -> str:
    """The ``--shard`` help text of every command (`what`: the items, e.g. 'clips'; `key`: what is hashed)."""
    return (f"Work on partition i of n of the {what} (by a hash of each {key}): 'i/n', or 'auto' for the SLURM job "
            "array task (SLURM_ARRAY_TASK_ID of SLURM_ARRAY_TASK_COUNT, or of MAX - MIN + 1). Under torchrun each "
            "rank takes its part of that share (RANK / WORLD_SIZE; --device cuda becomes cuda:LOCAL_RANK).")
