"""`vbench` command line: weights registry, datasets, evaluation, leaderboard, comparisons and Synchformer offsets.

Each subcommand lives in its own module and is imported only when used; register a new one in
`LAZY_COMMANDS` (name -> "module:attribute").
"""

from visualsound.utils.cli import make_main

LAZY_COMMANDS: dict[str, str] = {
    "weights": "benchmarks.commands.weights:weights",
    "sync": "benchmarks.commands.sync:sync",
    "datasets": "benchmarks.commands.datasets:datasets",
    "evaluate": "benchmarks.commands.evaluate:evaluate",
    "leaderboard": "benchmarks.commands.leaderboard:leaderboard",
    "plot": "benchmarks.commands.plot:plot",
    "compare": "benchmarks.commands.compare:compare",
}

main = make_main("vbench", __doc__.splitlines()[0], LAZY_COMMANDS)
