"""`vaura` command line: feature/token extraction, training and generation.

Each subcommand lives in its own module and is imported only when used; register a new one in
`LAZY_COMMANDS` (name -> "module:attribute").
"""

from visualsound.utils.cli import make_main

LAZY_COMMANDS: dict[str, str] = {
    "extract": "vaura.commands.extract:extract",
    "train": "vaura.commands.train:train",
    "generate": "vaura.commands.generate:generate",
}

main = make_main("vaura", __doc__.splitlines()[0], LAZY_COMMANDS)
