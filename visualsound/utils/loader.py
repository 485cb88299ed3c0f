"""Per-item loading in DataLoader workers that survives a dying worker (a decoder segfault, the OOM killer).

`tolerant_batches(records, load, on_crash, ...)` yields lists of ``load(record)`` results. Every worker writes
``(pid, index)`` of the record it is loading into shared memory; when torch reports a dead worker ("DataLoader
worker (pid 12) is killed by signal ..."), the records those pids were loading get ``on_crash(record, message)``
instead, and a new loader resumes with the records not yet yielded. Past `max_crashes` crashes it raises
`LoaderCrashError`. With ``workers=0`` loading runs inline (a crash there is the process's own).

torch reports a dead worker from its SIGCHLD handler in the middle of whatever the main thread is doing;
`WorkerDeathGate` confines that report to the fetch of a batch, where it is caught (the caller's code between
batches, e.g. a model's forward pass, never sees it).

`load` must never raise for a bad item (it should return a failure item): an exception from `load` in a worker
is re-raised by torch and ends the iteration.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import re
import signal
import threading
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


def crashed_worker_pids(error: BaseException) -> set[int] | None:
    """The pids of the dead workers that torch's `error` names (empty when it names none), or None when `error` is
    not torch's dead-worker error."""
    if not isinstance(error, RuntimeError) or not str(error).startswith("DataLoader worker"):
        return None
    m = _CRASH_PIDS.match(str(error))
    return {int(p) for p in re.findall(r"\d+", m.group(1))} if m else set()


class WorkerDeathGate:
    """Confine torch's dead-worker error to the calls that fetch a batch.

    torch's SIGCHLD handler raises "DataLoader worker (pid N) is killed by signal" in the main thread at whatever
    it is doing when a worker dies: the model's forward pass, a checkpoint write. Inside ``with gate:`` (main
    thread only; elsewhere a no-op) that handler runs only during `gate.next(iterator)`; a worker that died
    meanwhile is reported by the next `gate.next`, so the caller catches the error around its fetch alone. Use the
    one process-wide `WORKER_DEATH_GATE` (nested ``with`` blocks share its installation)."""

    def __init__(self) -> None:
        self._open = self._pending = False
        self._depth = 0
        self._previous: Any = None

    def __enter__(self) -> WorkerDeathGate:
        self._depth += 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGCHLD"):
            from torch.utils.data._utils import signal_handling

            signal_handling._set_SIGCHLD_handler()  # torch's own (idempotent), which the gate then wraps
            self._previous = signal.getsignal(signal.SIGCHLD)
            signal.signal(signal.SIGCHLD, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._previous is not None:
            if threading.current_thread() is threading.main_thread() and \
                    signal.getsignal(signal.SIGCHLD) == self._handler:
                signal.signal(signal.SIGCHLD, self._previous)
            self._previous = None

    def _handler(self, signum: int, frame: Any) -> None:
        if not self._open:
            self._pending = True
        elif callable(self._previous):
            self._previous(signum, frame)

    def next(self, iterator: Iterator[Any]) -> Any:
        """``next(iterator)``, raising torch's dead-worker error for a worker that died since the last call."""
        if self._pending:
            self._pending = False
            from torch.utils.data._utils.signal_handling import _error_if_any_worker_fails

            _error_if_any_worker_fails()
        self._open = True
        try:
            return next(iterator)
        finally:
            self._open = False


WORKER_DEATH_GATE = WorkerDeathGate()


class WorkerSlots:
    """Shared memory where each of `workers` DataLoader workers records ``(pid, index)`` of the item it is loading
    (create it before the loader starts its workers; ``workers=0`` records nothing)."""

    def __init__(self, workers: int) -> None:
        self._slots = mp.Array("q", [-1] * (2 * workers), lock=False) if workers else None

    def enter(self, index: int) -> None:
        info = torch.utils.data.get_worker_info()
        if self._slots is not None and info is not None:
            self._slots[2 * info.id], self._slots[2 * info.id + 1] = os.getpid(), index

    def leave(self) -> None:
        info = torch.utils.data.get_worker_info()
        if self._slots is not None and info is not None:
            self._slots[2 * info.id + 1] = -1

    def in_progress(self, pids: set[int]) -> list[int]:
        """Indices of the items being loaded by the workers with these pids."""
        if self._slots is None:
            return []
        pairs = [(self._slots[k], self._slots[k + 1]) for k in range(0, len(self._slots), 2)]
        return [i for pid, i in pairs if pid in pids and i >= 0]


class _TrackedDataset(Dataset):
    """``records[i] -> (i, load(records[i]))``; with ``track_workers=W`` each worker records what it loads."""

    def __init__(self, records: Sequence[Mapping[str, Any]], load: Callable[[Mapping[str, Any]], Any],
                 track_workers: int) -> None:
        self.records = list(records)
        self.load = load
        self.slots = WorkerSlots(track_workers)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[int, Any]:
        self.slots.enter(i)
        item = self.load(self.records[i])
        self.slots.leave()
        return i, item

    def in_progress(self, pids: set[int]) -> list[int]:
        """Indices of the records being loaded by the workers with these pids."""
        return self.slots.in_progress(pids)


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
            with WORKER_DEATH_GATE as gate:  # a worker's death surfaces here, not in the caller's code
                it = iter(DataLoader(dataset, **kw))
                while True:
                    try:
                        batch = gate.next(it)
                    except StopIteration:
                        return
                    seen.update(i for i, _ in batch)
                    yield [item for _, item in batch]
        except RuntimeError as e:
            dead = crashed_worker_pids(e)
            if workers == 0 or dead is None:
                raise
            crashes += 1
            if crashes > max_crashes:
                raise LoaderCrashError(f"loading workers crashed {crashes} times (max {max_crashes}); last: {e}") \
                    from e
            blamed = [i for i in dataset.in_progress(dead) if i not in seen]
            message = str(e)
        log.warning("%s; blaming %s, restarting the loader (crash %d of at most %d)", message,
                    [remaining[i].get("path", i) for i in blamed] or "no item", crashes, max_crashes)
        if blamed:
            yield [on_crash(remaining[i], message) for i in blamed]
        gone = seen | set(blamed)
        remaining = [r for i, r in enumerate(remaining) if i not in gone]
