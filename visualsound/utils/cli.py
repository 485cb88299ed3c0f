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


def weights_options(options: Mapping[str, str]) -> Callable[[Any], Any]:
    """Decorator of a command's function (below ``@click.command`` and its options): `options` maps each weights
    registry name the command loads to the option that takes its path, e.g. ``{"vggish": "--vggish-checkpoint"}``;
    while the command runs, missing-weights messages name that option, and say "reads the cache only" for a
    registry entry it has no option for (`visualsound.weights.command_options`)."""
    def decorate(func: Any) -> Any:
        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            from visualsound.weights import command_options

            with command_options(options):
                return func(*args, **kwargs)

        return run

    return decorate


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
