"""`vbench` command line: weights, datasets, evaluation, leaderboard, comparisons, listening report, Sync offsets.

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
    "report": "benchmarks.commands.report:report",
}

main = make_main("vbench", __doc__.splitlines()[0], LAZY_COMMANDS)

if __name__ == "__main__":  # `python -m benchmarks.cli`
    main()
