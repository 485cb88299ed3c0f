"""Shared access to the av-benchmark parity fixture (``<parity root>/avbench``, see its README).

Tests import these helpers instead of each rebuilding the fixture's seeded weights:

* `root()` -- the fixture folder (skips, or fails under ``CI=true``, when missing);
* `expected()` -- ``expected/expected.pt`` (metrics, details, intermediates), loaded once;
* `cache(side, name)` -- one of the original's cache files (``side`` is ``gt`` or ``pred``);
* `recipe_state_dict(name)` -- the full-size random weights of ``panns``, ``vggish`` or ``passt`` rebuilt from
  ``weights/<name>_recipe.json`` with every tensor's sha256 checked (PANNs' front-end constants come from
  ``weights/panns_frontend.pt``; VGGish keeps only ``vggish-10086976.pth``'s tensors, not the PCA file's).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from tests.conftest import require_parity

COMPONENT = "avbench"
RECIPES = ("panns", "vggish", "passt")


def root(*files: str) -> Path:
    """The fixture folder; `files` (relative paths) must exist too."""
    return require_parity(COMPONENT, "README.md", *files)


@functools.lru_cache(maxsize=1)
def _expected() -> dict[str, Any]:
    return torch.load(root("expected/expected.pt") / "expected" / "expected.pt", weights_only=True)


def expected() -> dict[str, Any]:
    """``expected/expected.pt``: ``metrics``, ``details``, ``intermediates``, ``meta`` (shared; do not mutate)."""
    root("expected/expected.pt")
    return _expected()


def cache(side: str, name: str) -> dict[str, Any]:
    """The original's cache file ``expected/<side>_cache/<name>.pth`` as a dict ``{stem: value}``."""
    assert side in ("gt", "pred"), side
    rel = f"expected/{side}_cache/{name}.pth"
    return torch.load(root(rel) / rel, weights_only=True)


def _sha256_f32(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().astype("<f4").tobytes()).hexdigest()


def recipe_state_dict(name: str) -> dict[str, torch.Tensor]:
    """Full-size seeded weights of ``panns`` / ``vggish`` / ``passt`` in the release file's key layout."""
    assert name in RECIPES, f"unknown recipe {name!r}; known: {RECIPES}"
    base = root(f"weights/{name}_recipe.json")
    recipe = json.loads((base / "weights" / f"{name}_recipe.json").read_text())
    frontend = torch.load(base / "weights" / "panns_frontend.pt", weights_only=True) if name == "panns" else {}
    state: dict[str, torch.Tensor] = {}
    for entry in recipe["entries"]:
        if name == "vggish" and entry.get("file", "vggish-10086976.pth") != "vggish-10086976.pth":
            continue  # the PCA release file is not part of the network
        kind, shape = entry["kind"], entry["shape"]
        if kind == "torchlibrosa_constructed":
            t = frontend[entry["key"]].to(torch.float32)
        elif kind == "const_int64":
            t = torch.full(shape, int(entry["value"]), dtype=torch.int64)
        elif kind in ("normal", "normal_abs"):
            g = torch.Generator(device="cpu").manual_seed(int(entry["seed"]))
            r = torch.randn(shape, generator=g, dtype=torch.float32)
            t = (r.abs() if kind == "normal_abs" else r) * entry["std"] + entry["mean"]
        else:
            raise AssertionError(f"{name} recipe: unknown kind {kind!r} for {entry['key']}")
        assert list(t.shape) == list(shape), (entry["key"], tuple(t.shape), shape)
        if "sha256_float32_le" in entry:
            assert _sha256_f32(t) == entry["sha256_float32_le"], f"{name} recipe: {entry['key']} does not rebuild"
        state[entry["key"]] = t
    return state


def manifest(name: str) -> list[tuple[str, tuple[int, ...], str]]:
    """``manifests/manifest_<name>.json`` entries as ``[(key, shape, dtype)]`` (name: ``panns_cnn14_16k``,
    ``vggish``, ``passt``, ``synchformer_state_dict``, ``imagebind_huge``)."""
    rel = f"manifests/manifest_{name}.json"
    data = json.loads((root(rel) / rel).read_text())
    return [(key, tuple(shape), str(dtype)) for key, shape, dtype in data["entries"]]
