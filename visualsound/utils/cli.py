"""Shared CLI plumbing: a lazily importing click group, logging set-up, and turning `ToolkitError` into a
clean one-line error (exit code 2) instead of a traceback."""

from __future__ import annotations

import functools
import importlib
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any

import click

from visualsound.errors import ToolkitError


class LazyGroup(click.Group):
    """A click group whose subcommands live in other modules and are imported only when needed.

    ``lazy_commands`` maps a command name to ``"package.module:attribute"``.
    """

    def __init__(self, *args: Any, lazy_commands: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands:
            module_name, attr = self.lazy_commands[cmd_name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ToolkitError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            sys.exit(2)


#: what a weights path option says its default is (`weights_options`)
WEIGHTS_DEFAULT_HELP = "from the weights cache, VAURA_CACHE_DIR; see `vbench weights list`"
WEIGHTS_OPTIONS_ATTR = "weights_options"  # the table `weights_options` leaves on a command's callback


def weights_options(table: Mapping[str, str | tuple[str, str]], *, param: str = "weights", exists: bool = True,
                    dir_okay: bool = True) -> Callable[[Any], Any]:
    """Decorator of a command's function (among its ``@click.option`` lines, where the options should show in
    ``--help``): the one table of the command's weights path options.

    `table` maps each weights registry name the command loads to the option that takes its path, optionally with a
    description of the file: ``{"vggish": ("--vggish-checkpoint", "VGGish weights"), "passt": "--passt-checkpoint"}``.
    The decorator declares each option (a click path, default None; the help is the description plus "(default:
    NAME from the weights cache ...)"), passes the command one mapping ``param`` = {registry name:
    the path given, or None for the cache}, and while the command runs sets `visualsound.weights.command_options`
    so missing-weights messages name the option (and say "reads the cache only" for a registry entry it has no
    option for). Several registry names may share one option (``vaura sync-filter``'s ``--checkpoint`` for the
    Synchformer entry ``--weights`` picks): it is declared once and its path is given under each name. `exists` /
    `dir_okay` are click's path checks for every option of the table (``exists=False``: the command checks the
    paths itself, e.g. with `visualsound.weights.require`, to name every missing file in one error). The table is
    left on the callback (`command_weights_options`)."""
    from visualsound.weights import get

    options: dict[str, str] = {}  # registry name -> option
    described: dict[str, list[str]] = {}  # option -> its descriptions, in table order
    for name, spec in table.items():
        get(name)  # an unknown registry name fails when the command's module is imported
        option, description = (spec, None) if isinstance(spec, str) else spec
        if not option.startswith("--"):
            raise ValueError(f"weights option {option!r} of {name!r} must start with --")
        options[name] = option
        described.setdefault(option, [])
        if description:
            described[option].append(description)
    for option, texts in described.items():
        if len(set(texts)) > 1:
            raise ValueError(f"{option} is described differently for several registry names: {texts}")
    params = {option: "_weights_" + option[2:].replace("-", "_") for option in described}

    def help_text(option: str) -> str:
        names = [n for n, o in options.items() if o == option]
        first = get(names[0])
        description = (described[option] or [f"{names[0]} weights ({first.filename})"])[0]
        which = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
        return f"{description} (default: {which} {WEIGHTS_DEFAULT_HELP})."

    def decorate(func: Any) -> Any:
        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            from visualsound.weights import command_options

            given = {option: kwargs.pop(name) for option, name in params.items()}
            kwargs[param] = {name: given[option] for name, option in options.items()}
            with command_options(options):
                return func(*args, **kwargs)

        setattr(run, WEIGHTS_OPTIONS_ATTR, dict(options))
        # click lists options in the reverse order they are applied: apply the last first
        for option in reversed(list(params)):
            click.option(option, params[option], default=None, help=help_text(option),
                         type=click.Path(exists=exists, dir_okay=dir_okay))(run)
        return run

    return decorate


def command_weights_options(command: click.Command) -> dict[str, str]:
    """The weights table of a command made with `weights_options`: registry name -> option ({} for others)."""
    return dict(getattr(command.callback, WEIGHTS_OPTIONS_ATTR, {}))


def threads_option(func: Any) -> Any:
    """The shared ``--threads N`` option of the CPU-heavy commands (apply it with
    `visualsound.utils.threads.set_threads`)."""
    return click.option("--threads", type=click.IntRange(min=1), default=None,
                        help="CPU threads for the model in this process (default: torch's, one per core); decode "
                             "workers use one thread each.")(func)


def setup_logging(verbose: int) -> None:
    """CLI logging: WARNING by default, INFO with -v, DEBUG with -vv."""
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)


def make_main(name: str, help_text: str, lazy_commands: dict[str, str]) -> click.Group:
    """Build a top-level CLI group with ``--version`` and ``-v/--verbose``."""
    from visualsound import __version__

    @click.group(name=name, cls=LazyGroup, lazy_commands=lazy_commands, help=help_text,
                 context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name=name)
    @click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
    def main(verbose: int) -> None:
        setup_logging(verbose)

    return main
