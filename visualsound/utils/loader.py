"""Per-item loading in DataLoader workers that survives a dying worker (a decoder segfault, the OOM killer).

`tolerant_batches(records, load, on_crash, ...)` yields lists of ``load(record)`` results. Every worker writes
``(pid, index)`` of the record it is loading into shared memory; when torch reports a dead worker ("DataLoader
worker (pid 12) is killed by signal ..."), the records those pids were loading get ``on_crash(record, message)``
instead, and a new loader resumes with the records not yet yielded. Past `max_crashes` crashes it raises
`LoaderCrashError`. With ``workers=0`` loading runs inline (a crash there is the process's own).

`load` must never raise for a bad item (it should return a failure item): an exception from `load` in a worker
is re-raised by torch and ends the iteration.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from visualsound.errors import ToolkitError

log = logging.getLogger(__name__)

# torch's messages for a dead DataLoader worker: "DataLoader worker (pid 12) is killed by signal: ..." and
# "DataLoader worker (pid(s) 12, 34) exited unexpectedly".
_CRASH_PIDS = re.compile(r"DataLoader worker \(pid(?:\(s\))? ([\d, ]+)\)")


class LoaderCrashError(ToolkitError):
    """Loading workers died more often than allowed."""


class _TrackedDataset(Dataset):
    """``records[i] -> (i, load(records[i]))``; with ``track_workers=W`` each worker records what it loads."""

    def __init__(self, records: Sequence[Mapping[str, Any]], load: Callable[[Mapping[str, Any]], Any],
                 track_workers: int) -> None:
        self.records = list(records)
        self.load = load
        self._slots = mp.Array("q", [-1] * (2 * track_workers), lock=False) if track_workers else None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[int, Any]:
        info = torch.utils.data.get_worker_info()
        if self._slots is None or info is None:
            return i, self.load(self.records[i])
        slot = 2 * info.id
        self._slots[slot], self._slots[slot + 1] = os.getpid(), i
        item = self.load(self.records[i])
        self._slots[slot + 1] = -1
        return i, item

    def in_progress(self, pids: set[int]) -> list[int]:
        """Indices of the records being loaded by the workers with these pids."""
        if self._slots is None:
            return []
        pairs = [(self._slots[k], self._slots[k + 1]) for k in range(0, len(self._slots), 2)]
        return [i for pid, i in pairs if pid in pids and i >= 0]


def _as_list(batch: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    return batch


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # parallelism comes from the workers; avoid N workers x M threads oversubscription


def tolerant_batches(records: Sequence[Mapping[str, Any]], load: Callable[[Mapping[str, Any]], Any],
                     on_crash: Callable[[Mapping[str, Any], str], Any], *, batch_size: int, workers: int,
                     prefetch_factor: int = 2, max_crashes: int = 50, pin_memory: bool = False
                     ) -> Iterator[list[Any]]:
    """Yield lists of at most `batch_size` loaded items, every record exactly once (loaded, or `on_crash`'s item
    for a record whose worker died). Workers return items out of order, so a slow file delays only its batch."""
    remaining = list(records)
    crashes = 0
    while remaining:
        dataset = _TrackedDataset(remaining, load, track_workers=workers)
        kw: dict[str, Any] = {"batch_size": batch_size, "shuffle": False, "num_workers": workers,
                              "collate_fn": _as_list, "pin_memory": pin_memory}
        if workers > 0:
            kw.update(prefetch_factor=prefetch_factor, in_order=False, worker_init_fn=_worker_init)
        seen: set[int] = set()
        try:
            for batch in DataLoader(dataset, **kw):
                seen.update(i for i, _ in batch)
                yield [item for _, item in batch]
            return
        except RuntimeError as e:
            if workers == 0 or not str(e).startswith("DataLoader worker"):
                raise
            crashes += 1
            if crashes > max_crashes:
                raise LoaderCrashError(f"loading workers crashed {crashes} times (max {max_crashes}); last: {e}") \
                    from e
            m = _CRASH_PIDS.match(str(e))
            dead = {int(p) for p in re.findall(r"\d+", m.group(1))} if m else set()
            blamed = [i for i in dataset.in_progress(dead) if i not in seen]
            message = str(e)
        log.warning("%s; blaming %s, restarting the loader (crash %d of at most %d)", message,
                    [remaining[i].get("path", i) for i in blamed] or "no item", crashes, max_crashes)
        if blamed:
            yield [on_crash(remaining[i], message) for i in blamed]
        gone = seen | set(blamed)
        remaining = [r for i, r in enumerate(remaining) if i not in gone]
