"""The reduced V-AURA parity fixture, loaded once for the model and sampler tests."""

from __future__ import annotations

from typing import Any

import torch

from tests.conftest import require_parity
from vaura.config import VAuraConfig
from vaura.model import Transformer


def load_reduced() -> tuple[Transformer, dict[str, Any], dict[str, Any]]:
    """``(model in eval mode with the fixture's weights, inputs, expected)`` of ``vaura/reduced``."""
    root = require_parity("vaura", "reduced/weights.pt", "reduced/inputs.pt", "reduced/expected.pt")
    w = torch.load(root / "reduced/weights.pt", weights_only=True)
    inputs = torch.load(root / "reduced/inputs.pt", weights_only=True)
    expected = torch.load(root / "reduced/expected.pt", weights_only=True)
    model = Transformer(VAuraConfig.preset("reduced")).eval()
    model.load_state_dict({k.removeprefix("sampler."): v for k, v in w.items()}, strict=True)
    return model, inputs, expected
