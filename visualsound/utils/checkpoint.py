"""Safe checkpoint reading and declarative key maps (torchtune style).

* `safe_torch_load` reads a torch file with ``weights_only=True``. Files that pickle foreign objects next to
  the tensors (Synchformer's OmegaConf ``args``, Lightning's ``hyper_parameters``) are read with
  `restricted_torch_load`: every global outside a small allow-list of torch/container rebuild functions is
  replaced by an inert `OpaqueObject` that only records its constructor arguments and state. Nothing from the
  file is ever executed.
* `KeyMap` renames upstream keys with ordered regex rules; source keys that match no rule and no explicit
  ``ignore`` pattern raise `CheckpointError` listing them. `load_state_dict_strict` then loads into a module
  and raises on missing keys, unexpected keys and shape mismatches.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import types
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from visualsound.errors import CheckpointError

log = logging.getLogger(__name__)


class OpaqueObject:
    """Inert stand-in for a pickled object whose class is not on the allow-list."""

    _module: str = "?"
    _qualname: str = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> OpaqueObject:
        obj = super().__new__(cls)
        obj.args = args
        obj.state = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:  # SETITEMS on dict subclasses
        self.__dict__.setdefault("items", {})[key] = value

    def append(self, value: Any) -> None:  # APPENDS on list subclasses
        self.__dict__.setdefault("list", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("list", []).extend(values)

    def __repr__(self) -> str:
        return f"<opaque {self._module}.{self._qualname}>"


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): __import__("collections").OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("torch", "Size"): torch.Size,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch", "device"): torch.device,
}


def _allowed_global(module: str, name: str) -> Any | None:
    if (module, name) in _ALLOWED_GLOBALS:
        return _ALLOWED_GLOBALS[(module, name)]
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    replaced: set[str]

    def find_class(self, module: str, name: str) -> Any:
        allowed = _allowed_global(module, name)
        if allowed is not None:
            return allowed
        self.replaced.add(f"{module}.{name}")
        return types.new_class(name, (OpaqueObject,), {}, lambda ns: ns.update(_module=module, _qualname=name))


def _restricted_pickle_module(replaced: set[str]) -> types.ModuleType:
    mod = types.ModuleType("restricted_pickle")

    class Unpickler(_RestrictedUnpickler):
        pass

    Unpickler.replaced = replaced
    mod.Unpickler = Unpickler  # type: ignore[attr-defined]
    mod.load = pickle.load  # type: ignore[attr-defined]
    mod.__name__ = "restricted_pickle"
    return mod


def restricted_torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Load a torch file, replacing every non-allow-listed pickled global by an inert `OpaqueObject`."""
    replaced: set[str] = set()
    obj = torch.load(path, map_location=map_location, weights_only=False,
                     pickle_module=_restricted_pickle_module(replaced))
    if replaced:
        log.info("%s: %d foreign pickled classes kept as opaque objects: %s", path, len(replaced),
                 ", ".join(sorted(replaced)))
    return obj


# What a file that is not a torch checkpoint usually is, by its first bytes (for the error message only).
_FILE_KINDS: tuple[tuple[bytes, int, str], ...] = (
    (b"RIFF", 0, "a RIFF file (WAV audio or AVI video)"),
    (b"ftyp", 4, "an MP4 / MOV / M4A media file"),
    (b"\x1aE\xdf\xa3", 0, "a Matroska / WebM media file"),
    (b"OggS", 0, "an Ogg media file"),
    (b"fLaC", 0, "a FLAC audio file"),
    (b"ID3", 0, "an MP3 audio file"),
    (b"\x00\x00\x01\xba", 0, "an MPEG program stream"),
    (b"\x00\x00\x01\xb3", 0, "an MPEG video elementary stream"),
    (b"\x1f\x8b", 0, "a gzip archive (a .tar.gz still to be extracted?)"),
    (b"\x89HDF", 0, "an HDF5 file (Keras / TensorFlow weights?)"),
    (b"\x93NUMPY", 0, "a NumPy .npy array"),
    (b"PAR1", 0, "a Parquet table"),
)


def describe_file(path: str | os.PathLike) -> str:
    """A short guess of what `path` holds from its first bytes (``"an empty file"``, ``"a RIFF file (WAV audio or
    AVI video)"``, ``"a text file"``, ...), for error messages about files of the wrong kind."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "an empty file"
    for magic, offset, kind in _FILE_KINDS:
        if head[offset:offset + len(magic)] == magic:
            return kind
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "a tar archive"
    if head[:1] == b"\x80":
        return "a pickle"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "a binary file of unknown kind"
    first = text.lstrip()[:1]
    return "a JSON file" if first in "{[" and first else "a text file"


def _looks_like_torch_file(path: str | os.PathLike) -> bool:
    """A ``torch.save`` file is a zip archive (since torch 1.6) or a legacy pickle (first byte: protocol 0x80)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` (with `mmap`, a zip-format file's tensors are mapped, not read: reading
    only some of them, or only the non-tensor entries, reads only those); falls back to `restricted_torch_load`
    for files that pickle foreign objects (never to an unrestricted unpickler). A missing file, a file that is not
    a ``torch.save`` file (its first bytes are neither a zip archive nor a pickle) and any file the unpicklers fail
    on raise a one-line `CheckpointError` naming the file and saying what it looks like (`describe_file`); a file
    of the weights cache also gets what to do (delete it and download it again: the command and the URL)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file not found: {path}")
    if not _looks_like_torch_file(path):
        raise CheckpointError(f"{path} is not a readable torch checkpoint: it looks like {describe_file(path)}."
                              f"{_cache_hint(path)}")
    try:
        try:
            return torch.load(path, map_location=map_location, weights_only=True,
                              mmap=mmap and zipfile.is_zipfile(path))
        except pickle.UnpicklingError as e:
            log.info("%s is not a plain weights file (%s); reading it with the restricted unpickler", path,
                     str(e).splitlines()[0])
        return restricted_torch_load(path, map_location=map_location)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 -- arbitrary bytes make the unpickler fail in arbitrary ways
        first = str(e).splitlines()[0] if str(e) else "empty or truncated file"
        raise CheckpointError(f"{path} is not a readable torch checkpoint: it looks like {describe_file(path)} "
                              f"({type(e).__name__}: {first}).{_cache_hint(path)}") from e


def _cache_hint(path: str | os.PathLike) -> str:
    """For a file of the weights cache: delete it and download it again (`visualsound.weights.damaged_file_hint`)."""
    from visualsound.weights import damaged_file_hint

    return damaged_file_hint(path)


@dataclass(frozen=True)
class KeyMap:
    """Ordered regex rename rules from an upstream layout to ours.

    ``rules``: ``(pattern, replacement)`` pairs; the first pattern that fully matches a key wins and
    ``re.sub`` semantics apply to the replacement. ``ignore``: patterns of source keys that are dropped on
    purpose (for example other modalities' towers); every other unmatched key is an error.
    """

    rules: tuple[tuple[str, str], ...]
    ignore: tuple[str, ...] = ()

    def apply(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        compiled = [(re.compile(p), r) for p, r in self.rules]
        ignored = [re.compile(p) for p in self.ignore]
        out: dict[str, torch.Tensor] = {}
        unmapped: list[str] = []
        for key, value in state_dict.items():
            for pat, repl in compiled:
                if pat.fullmatch(key):
                    new = pat.sub(repl, key)
                    if new in out:
                        raise CheckpointError(f"key map sends two source keys to {new!r} (second: {key!r})")
                    out[new] = value
                    break
            else:
                if any(p.fullmatch(key) for p in ignored):
                    continue
                unmapped.append(key)
        if unmapped:
            raise CheckpointError(
                f"{len(unmapped)} checkpoint keys match no rule of the key map: {_preview(unmapped)}")
        return out


def load_state_dict_strict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor],
                           what: str = "checkpoint") -> None:
    """Copy `state_dict` into `module`; raise `CheckpointError` listing missing, unexpected or mis-shaped keys.

    Works for modules on the meta device too (shapes are compared, tensors are assigned).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_preview(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_preview(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {_preview(shapes)}")
    if problems:
        raise CheckpointError(f"{what} does not fit {type(module).__name__}: " + "; ".join(problems))
    on_meta = any(t.is_meta for t in own.values())
    module.load_state_dict(dict(state_dict), strict=True, assign=on_meta)


def _preview(items: list[str], n: int = 12) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... (+{len(items) - n} more)" if len(items) > n else "")
