"""Fidelity of ``vaura generate --dtype bf16 | fp16`` against fp32 on the reduced V-AURA parity fixture.

For each precision the fixture's model is cast (`vaura.model.Transformer.cast`, RoPE table kept fp32) and
compared with the fixture (the original code's fp32 outputs; `tests.vaura_reduced.dtype_fidelity`):
teacher-forced logits (max / mean abs difference, relative to the logits' range, argmax agreement), loss, the
CFG-guided teacher-forced logits against our fp32 model's (every greedy decision at scale 6 without feedback), and
greedy CFG generation of 221 frames (fraction of codes equal to the fixture's and the first loop step that
differs: once one token differs the rest of the sequence follows another path).

    VAURA_PARITY_DIR=../shared/parity .venv/bin/python scripts/check_dtype.py --out check_dtype.json
    python3 scripts/check_dtype.py --device cuda --out h200-check_dtype.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.vaura_reduced import dtype_fidelity  # noqa: E402
from visualsound.utils.dtypes import DTYPES  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtypes", default="fp32,bf16,fp16")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    out = {"script": "scripts/check_dtype.py", "command": " ".join(sys.argv), "commit": commit,
           "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
           "gpu": torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else None,
           "results": {}}
    for name in args.dtypes.split(","):
        t0 = time.perf_counter()
        r = dtype_fidelity(DTYPES[name], args.device)
        r["seconds"] = time.perf_counter() - t0
        out["results"][name] = r
        print(name, json.dumps(r), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
