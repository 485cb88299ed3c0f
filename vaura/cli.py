"""`vaura` command line: feature/token extraction, training, generation and the in-sync filter.

Each subcommand lives in its own module and is imported only when used; register a new one in
`LAZY_COMMANDS` (name -> "module:attribute").
"""

import os

# Transparent huge pages for torch's large CPU tensors (weights, KV cache): fewer TLB misses when a decode step
# streams the 2.8 GB of paper-size weights (in one paired micro-benchmark oneDNN's packed products read 13% faster,
# 13.4 -> 15.2 GB/s; not measured apart on a whole generation). torch reads this once, before its first
# allocation, so it is set here, before any subcommand imports torch; THP_MEM_ALLOC_ENABLE=0 turns it off.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from visualsound.utils.cli import make_main  # noqa: E402

LAZY_COMMANDS: dict[str, str] = {
    "extract": "vaura.commands.extract:extract",
    "train": "vaura.commands.train:train",
    "generate": "vaura.commands.generate:generate",
    "sync-filter": "vaura.commands.sync_filter:sync_filter",
}

main = make_main("vaura", __doc__.splitlines()[0], LAZY_COMMANDS)

if __name__ == "__main__":  # `python -m vaura.cli`
    main()
