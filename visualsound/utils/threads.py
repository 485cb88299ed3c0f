"""CPU thread and worker counts for the CLIs: the cores this process may use, default DataLoader worker counts
capped at them, and ``--threads`` (torch's intra-op threads of the main process)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

log = logging.getLogger(__name__)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cap_default_workers(workers: int, what: str = "workers") -> int:
    """A *default* worker count capped at `available_cores` (logged when it is lowered): more decode processes
    than cores only add memory and contention. Counts given explicitly on a command line are not passed here."""
    cores = available_cores()
    if workers > cores:
        log.info("%s: %d by default, capped at the %d available cores", what, workers, cores)
        return cores
    return workers


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` (``None`` keeps torch's default: one per core); DataLoader workers
    always use one thread each."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(int(threads))
    log.info("torch CPU threads: %d", threads)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with torch's intra-op threads at `threads`, then restore the previous count. For thread pools
    whose workers each make small torch calls: with torch's default, every call wakes one OpenMP thread per core,
    which spin while the workers' own parallelism already fills the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)
