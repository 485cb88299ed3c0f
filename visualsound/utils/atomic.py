"""Atomic file writes: write to a temporary file in the target directory, fsync, then `os.replace`.

A process killed at any moment leaves either the old file (or nothing) or the complete new file, never a
partial one under the final name. Files are created with the mode a plain ``open()`` would give them
(``0o666`` minus the process umask), not the ``0o600`` of `tempfile.mkstemp`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)


def current_umask() -> int:
    """The process umask (read from ``/proc/self/status`` where it exists, else by setting and restoring it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_sibling(path: Path, suffix: str) -> tuple[int, str]:
    """``(fd, name)`` of a new hidden temporary file next to `path`, with the mode ``open()`` would give."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, tmp


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """A temporary file name next to `path` (ending in `suffix`, e.g. the media suffix a muxer needs) for a
    writer that wants a name rather than a file object; it replaces `path` on success and is removed on failure."""
    path = Path(path)
    fd, tmp = _temp_sibling(path, suffix)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """Put `src`'s content at `dst` atomically: a hard link where both lie on one file system (no space used;
    later atomic writes to either name replace that name only), else a copy. Returns ``"link"`` or ``"copy"``;
    raises `OSError` when `src` cannot be read or `dst` written."""
    dst = Path(dst)
    with atomic_path(dst, suffix=dst.suffix or ".tmp") as tmp:
        os.unlink(tmp)  # a fresh, unique name for the link
        try:
            os.link(src, tmp)
            return "link"
        except OSError as e:
            if not Path(src).is_file():
                raise
            log.debug("cannot hard-link %s to %s (%s); copying", src, dst, e)
        shutil.copyfile(src, tmp)
    return "copy"


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of `path` for writing; on success it replaces `path` atomically.

    On an exception the temporary file is removed and the exception propagates.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_open needs a write mode, got {mode!r}")
    path = Path(path)
    fd, tmp = _temp_sibling(path, ".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Write `obj` as pretty JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False, default=str) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` to `path` atomically."""
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
