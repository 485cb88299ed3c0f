"""Exception hierarchy shared by the whole toolkit.

Library code raises these (never returns sentinels such as ``None`` or ``-1``); CLIs catch `ToolkitError`
and print its message without a traceback.
"""

from __future__ import annotations


class ToolkitError(Exception):
    """Base class of every error the toolkit raises on purpose (bad input, missing files, bad configs)."""


class ConfigError(ToolkitError, ValueError):
    """A configuration file or override is invalid (unknown key, wrong type, unknown preset)."""


class CheckpointError(ToolkitError):
    """A checkpoint cannot be loaded: unknown or missing keys, wrong shapes, or a refused pickle."""
