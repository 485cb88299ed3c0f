"""`vaura` subcommands, one module each, registered lazily in `vaura.cli.LAZY_COMMANDS`."""
