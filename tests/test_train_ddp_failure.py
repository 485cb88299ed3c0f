"""A rank that fails ends a multi-process run within seconds: its peers, blocked in a collective, used to wait for
the process group's timeout (30 min with NCCL) or until the failing process went away."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(out: str, fail: bool = True) -> None:
    """One rank (environment as torchrun sets it): rank 1's data raises a `DataError` in step 2, and rank 1 then
    stays alive (as a rank stuck in its teardown, or whose connections the backend does not close, would)."""
    import torch

    from tests.test_train_loop import PatternWindows, make_model, tiny_cfg
    from vaura.train.data import DataError
    from vaura.train.ddp import failure_watch, init_distributed, shutdown
    from vaura.train.loop import Trainer

    rank = int(os.environ["RANK"])

    class Failing(PatternWindows):
        calls = 0

        def __getitem__(self, i: int) -> dict:
            Failing.calls += 1
            if fail and rank == 1 and Failing.calls > 2:
                raise DataError("clip c7 of rank 1 is broken")
            return super().__getitem__(i)

    torch.set_num_threads(1)
    info = init_distributed("cpu", timeout_s=300)
    try:
        with failure_watch(info):
            cfg = tiny_cfg("max_steps=6", "data.batch_size=2")
            Trainer(cfg, out, make_model(cfg), Failing(8), dist_info=info, find_unused_parameters=True).fit()
    except Exception as e:
        print(f"rank {rank} raised {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        if rank == 1:
            Path(out, "rank1-failed").write_text(str(time.time()))
            time.sleep(120)
        raise
    finally:
        shutdown()


def _start(out: Path, fail: bool) -> list[subprocess.Popen]:
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    code = f"from tests.test_train_ddp_failure import _worker; _worker({str(out)!r}, {fail})"
    return [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]


def test_a_failing_rank_stops_its_peers_within_seconds(tmp_path):
    procs = _start(tmp_path, fail=True)
    try:
        try:
            _, err0 = procs[0].communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("rank 0 was still running 60 s after start: it waited for the failed rank 1")
        ended = time.time()
        failed_at = float((tmp_path / "rank1-failed").read_text())
        assert procs[1].poll() is None  # rank 1 is still alive: rank 0 did not stop because rank 1 went away
    finally:
        for p in procs:
            p.kill()
            p.communicate()
    assert procs[0].returncode != 0
    assert ended - failed_at < 10, f"rank 0 stopped {ended - failed_at:.1f} s after rank 1 failed"
    assert "rank 1 failed: DataError: clip c7 of rank 1 is broken" in err0, err0[-2000:]


def test_the_failure_watch_leaves_a_healthy_run_alone(tmp_path):
    """Every rank finishing (rank 0, the store's host, possibly first) is no failure: both exit 0 with last.pt."""
    procs = _start(tmp_path, fail=False)
    errs = [p.communicate(timeout=90)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert (tmp_path / "last.pt").exists() and not any("failed" in e for e in errs)
