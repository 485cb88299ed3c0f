"""Shared test fixtures.

Parity fixtures live outside the repository, in ``$VAURA_PARITY_DIR`` (default ``../shared/parity`` relative
to the repository root). A missing fixture skips the test with a reason, except under ``CI=true``, where it
fails: CI must never pass by skipping parity checks.

`make test` runs the files in parallel processes (pytest-xdist, ``-n <cores, at most 8> --dist loadscope``: a
module's tests together so its module fixtures are built once). Each such worker gets its share of the cores
as torch threads, and the CLIs it starts as subprocesses get the same through ``OMP_NUM_THREADS``: N workers
each running torch on every core would oversubscribe the machine.
"""

from __future__ import annotations

import os
from pathlib import Path

_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
if _WORKERS > 1:
    from visualsound.utils.threads import available_cores

    _SHARE = str(max(1, available_cores() // _WORKERS))
    os.environ.setdefault("OMP_NUM_THREADS", _SHARE)  # before torch starts its thread pool; subprocesses inherit
    os.environ.setdefault("MKL_NUM_THREADS", _SHARE)

import pytest  # noqa: E402
import torch  # noqa: E402

if _WORKERS > 1:
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO_ROOT = Path(__file__).resolve().parents[1]


def parity_root() -> Path:
    return Path(os.environ.get("VAURA_PARITY_DIR", REPO_ROOT.parent / "shared" / "parity")).resolve()


def require_parity(component: str, *files: str) -> Path:
    """Return ``<parity root>/<component>``; skip (or fail under CI=true) when it or `files` are missing."""
    root = parity_root() / component
    missing = [str(root / f) for f in files if not (root / f).exists()]
    if not root.is_dir():
        missing.insert(0, str(root))
    if missing:
        msg = f"parity fixture missing: {', '.join(missing)} (set VAURA_PARITY_DIR)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return root


@pytest.fixture(autouse=True)
def _deterministic_fp32():
    """Parity needs true fp32 matmuls; keep the tests' thread count small and fixed."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    yield


@pytest.fixture
def one_thread():
    """One intra-op thread for model-heavy test files: the 2-core CI machine is oversubscribed otherwise."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(0)
