"""Frozen config dataclasses with named presets, strict (de)serialisation and `key=value` overrides.

Usage::

    @dataclass(frozen=True)
    class MyConfig(FrozenConfig):
        width: int = 768
        depth: int = 12

    register_preset(MyConfig, "tiny", MyConfig(width=32, depth=2))
    cfg = MyConfig.preset("tiny").replace(depth=3)
    cfg.save("run/config.json"); MyConfig.load("run/config.json") == cfg

Unknown keys raise `ConfigError`; nested dataclasses and tuples round-trip through JSON/YAML.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from visualsound.errors import ConfigError
from visualsound.utils.atomic import atomic_write_text

C = TypeVar("C", bound="FrozenConfig")


class FrozenConfig:
    """Mixin for `@dataclass(frozen=True)` configs: presets, dict/JSON/YAML round trips, overrides."""

    _presets: ClassVar[dict[str, Any]]

    # -- presets -------------------------------------------------------------------------------------
    @classmethod
    def preset(cls: type[C], name: str) -> C:
        """The preset called `name` (e.g. ``"paper"``, ``"tiny"``)."""
        presets = cls.__dict__.get("_presets", {})
        if name not in presets:
            raise ConfigError(f"{cls.__name__}: unknown preset {name!r}; known: {sorted(presets)}")
        return presets[name]

    @classmethod
    def preset_names(cls) -> list[str]:
        return sorted(cls.__dict__.get("_presets", {}))

    # -- conversion ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            out[f.name] = _to_plain(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown keys {unknown}; known: {sorted(names)}")
        hints = typing.get_type_hints(cls)
        kwargs = {k: _from_plain(hints.get(k), v) for k, v in data.items()}
        return cls(**kwargs)

    def replace(self: C, **changes: Any) -> C:
        names = {f.name for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ConfigError(f"{type(self).__name__}: unknown keys {unknown}")
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def with_overrides(self: C, overrides: list[str] | tuple[str, ...]) -> C:
        """Apply ``key=value`` strings (values parsed as YAML scalars, dotted keys for nested configs)."""
        import yaml

        data = self.to_dict()
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} is not of the form key=value")
            key, raw = item.split("=", 1)
            node = data
            parts = key.strip().split(".")
            for p in parts[:-1]:
                if not isinstance(node.get(p), dict):
                    raise ConfigError(f"override {item!r}: {p!r} is not a nested config")
                node = node[p]
            if parts[-1] not in node:
                raise ConfigError(f"override {item!r}: unknown key {key!r}; known: {sorted(node)}")
            node[parts[-1]] = _parse_scalar(yaml.safe_load(raw))
        return type(self).from_dict(data)

    # -- files ---------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the config atomically as JSON (``.json``) or YAML (``.yaml``/``.yml``)."""
        path = Path(path)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))
        else:
            atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls: type[C], path: str | os.PathLike) -> C:
        path = Path(path)
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
        return cls.from_dict(data)

    @classmethod
    def resolve(cls: type[C], spec: str | os.PathLike) -> C:
        """A preset name or a path to a JSON/YAML file."""
        s = str(spec)
        if s in cls.__dict__.get("_presets", {}):
            return cls.preset(s)
        if Path(s).is_file():
            return cls.load(s)
        raise ConfigError(f"{cls.__name__}: {s!r} is neither a preset {cls.preset_names()} nor a config file")


def register_preset(cls: type[C], name: str, config: C) -> C:
    """Register `config` as preset `name` of `cls` and return it."""
    if "_presets" not in cls.__dict__:
        cls._presets = {}
    cls._presets[name] = config
    return config


def _parse_scalar(value: Any) -> Any:
    """YAML 1.1 reads ``3e-4`` (no dot) as a string; treat any string that parses as a float as a float."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


def _from_plain(hint: Any, value: Any) -> Any:
    if hint is None:
        return value
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        if issubclass(hint, FrozenConfig):
            return hint.from_dict(value)
        return hint(**value)
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_plain(args[0], v) for v in value)
        return tuple(_from_plain(a, v) for a, v in zip(args, value)) if args else tuple(value)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in typing.get_args(hint):
            if arg is type(None):
                if value is None:
                    return None
                continue
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return _from_plain(arg, value)
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
