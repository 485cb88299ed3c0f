"""`visualsound` command line: synthetic clips, probing, ImageBind scoring, VisualSound splits and reports.

Each subcommand lives in its own module and is imported only when used; register a new one in
`LAZY_COMMANDS` (name -> "module:attribute").
"""

from visualsound.utils.cli import make_main

LAZY_COMMANDS: dict[str, str] = {
    "build": "visualsound.commands.build:build",
    "compare": "visualsound.commands.compare:compare",
    "merge": "visualsound.commands.merge:merge",
    "probe": "visualsound.commands.probe:probe",
    "report": "visualsound.commands.report:report",
    "score": "visualsound.commands.score:score",
    "synth": "visualsound.commands.synth:synth",
}

main = make_main("visualsound", __doc__.splitlines()[0], LAZY_COMMANDS)

if __name__ == "__main__":  # `python -m visualsound.cli`
    main()
