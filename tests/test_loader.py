"""`visualsound.utils.loader`: loading that survives DataLoader workers killed by a signal."""

from __future__ import annotations

import os
import signal
import time

import torch

from visualsound.utils.loader import tolerant_batches


def _load(record: dict) -> dict:
    if record["id"] == 1 and torch.utils.data.get_worker_info() is not None:
        os.kill(os.getpid(), signal.SIGKILL)  # a decoder segfault, the OOM killer
    return {"id": record["id"], "ok": True}


def test_a_worker_dying_while_the_caller_computes_is_still_caught():
    """torch reports a dead worker from its SIGCHLD handler wherever the main thread is: here in the caller's own
    work between batches (a model's forward pass in `vaura extract`), which it used to end with "DataLoader
    worker (pid N) is killed by signal". Now the report waits for the next fetch, where the loader restarts."""
    records = [{"id": i, "path": f"clip{i}"} for i in range(6)]
    got = []
    for batch in tolerant_batches(records, _load, lambda r, msg: {"id": r["id"], "ok": False, "why": msg},
                                  batch_size=1, workers=2, prefetch_factor=1):
        got += batch
        time.sleep(0.3)  # the caller's work: worker 1 dies meanwhile
    assert sorted(r["id"] for r in got) == list(range(6))
    bad = [r for r in got if not r["ok"]]
    assert [r["id"] for r in bad] == [1] and "DataLoader worker" in bad[0]["why"]
