"""Distributed data parallel plumbing for `vaura train` (plain ``torch.distributed``, no Lightning).

Launch multi-GPU / multi-node runs with ``torchrun`` (it sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``)::

    torchrun --nproc-per-node 4 "$(which vaura)" train --config paper --data ... --out runs/x     # one node
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --master-addr HOST --master-port 29500 \\
        "$(which vaura)" train ...                                                                # each node

The backend is NCCL on CUDA and gloo on CPU. Without those variables the run is a single process.

A rank that fails (`failure_watch`) posts its error to the process group's store; every other rank polls the
store and, seeing it, logs the failing rank's error and exits at once (`PEER_FAILED_EXIT`). Without this a peer
blocked in a collective waits for the process group's timeout (NCCL: ``timeout_s``, 30 min) whenever the failing
process does not close its connections promptly (NCCL never reports a dead peer; another node's torchrun agent
does not see the failure; a failing rank stuck in its own teardown).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from visualsound.errors import ToolkitError

log = logging.getLogger(__name__)


class DistributedError(ToolkitError):
    """The distributed environment is inconsistent (e.g. more local ranks than GPUs)."""


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run: ``rank`` of ``world`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_distributed(device: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group torchrun describes (if any) and pick this rank's device.

    `device`: ``"cuda"``, ``"cpu"`` or None (CUDA when available). Single-process runs need no environment.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs visible")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s))
        log.info("rank %d/%d joined the %s process group on %s", rank, world, backend, dev)
    return DistInfo(rank=rank, world=world, local_rank=local_rank, device=dev)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# the exit status of a rank stopped because another rank failed (the failing rank exits with its own error)
PEER_FAILED_EXIT = 3
_FAILURES = "vaura/failures"  # store keys: a counter, and one message per failed rank


def _failure_key(rank: int) -> str:
    return f"vaura/failure/rank{rank}"


def _store() -> Any:
    return dist.distributed_c10d._get_default_store()


def post_failure(info: DistInfo, error: BaseException) -> None:
    """Tell the other ranks (through the process group's store) that this rank failed with `error`."""
    if not (info.distributed and dist.is_available() and dist.is_initialized()):
        return
    try:
        store = _store()
        store.set(_failure_key(info.rank), f"{type(error).__name__}: {error}"[:2000])
        store.add(_FAILURES, 1)
    except Exception as e:  # the store is gone (its host rank died): the peers find out through it anyway
        log.debug("rank %d could not post its failure: %s", info.rank, e)


def peer_failures(info: DistInfo) -> dict[int, str]:
    """``{rank: error}`` of the other ranks that posted a failure."""
    store = _store()
    if store.add(_FAILURES, 0) == 0:  # one cheap call while nothing failed
        return {}
    out = {}
    for r in range(info.world):
        if r != info.rank and store.check([_failure_key(r)]):
            out[r] = store.get(_failure_key(r)).decode(errors="replace")
    return out


def _exit_for_peer(info: DistInfo, failures: dict[int, str]) -> None:
    """A peer failed: this rank cannot continue (its next collective would wait for the timeout); say why and
    exit now, from the watcher thread, whatever the main thread is blocked in."""
    what = "; ".join(f"rank {r} failed: {msg}" for r, msg in sorted(failures.items()))
    message = f"rank {info.rank}: stopping because {what}"
    log.error(message)
    for h in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            h.flush()
    with contextlib.suppress(Exception):
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.flush()
    os._exit(PEER_FAILED_EXIT)


@contextlib.contextmanager
def failure_watch(info: DistInfo, poll_s: float = 0.5) -> Iterator[None]:
    """Fail fast across ranks: while the body runs, a thread polls the store every `poll_s` seconds for a failure
    posted by another rank and then exits this process (`_exit_for_peer`); an exception leaving the body is
    posted for the others before it propagates. Single-process runs: a no-op."""
    if not (info.distributed and dist.is_available() and dist.is_initialized()):
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.wait(poll_s):
            try:
                failures = peer_failures(info)
            except Exception as e:  # the store went away (its host ended): nothing more to learn from it
                log.debug("rank %d stops watching for failed peers: %s", info.rank, e)
                return
            if failures and not done.is_set():
                _exit_for_peer(info, failures)

    thread = threading.Thread(target=watch, name="vaura-peer-failure-watch", daemon=True)
    thread.start()
    try:
        yield
    except BaseException as e:
        done.set()
        post_failure(info, e)
        raise
    finally:
        done.set()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of `t` over all ranks (a copy; `t` itself is left alone)."""
    out = t.detach().clone()
    if info.distributed:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's `obj` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()
