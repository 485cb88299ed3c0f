"""The reduced V-AURA parity fixture, loaded once for the model and sampler tests, and the checks that an
accelerated CPU linear backend (`vaura.packed`, `vaura.thin_linear`) generates as the plain model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tests.conftest import require_parity
from vaura.config import VAuraConfig
from vaura.model import Transformer, build_model
from vaura.sampler import SamplingParams, generate


def load_reduced() -> tuple[Transformer, dict[str, Any], dict[str, Any]]:
    """``(model in eval mode with the fixture's weights, inputs, expected)`` of ``vaura/reduced``."""
    root = require_parity("vaura", "reduced/weights.pt", "reduced/inputs.pt", "reduced/expected.pt")
    w = torch.load(root / "reduced/weights.pt", weights_only=True)
    inputs = torch.load(root / "reduced/inputs.pt", weights_only=True)
    expected = torch.load(root / "reduced/expected.pt", weights_only=True)
    model = Transformer(VAuraConfig.preset("reduced")).eval()
    model.load_state_dict({k.removeprefix("sampler."): v for k, v in w.items()}, strict=True)
    return model, inputs, expected


def assert_reduced_parity(model: Transformer, inputs: dict[str, Any], e: dict[str, Any]) -> None:
    """Teacher-forced logits and loss within the fixture's tolerance; greedy CFG generation of 221 and 220 frames
    exactly the release's codes, the first three steps' guided logits within 2e-4."""
    codes, vf = inputs["codes"], inputs["visual_features"]
    with torch.no_grad():
        logits = model(codes, vf)
        out = model.loss(logits, codes)
    torch.testing.assert_close(logits, e["tf_logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.loss, e["tf_loss"], atol=1e-5, rtol=0)
    greedy = SamplingParams(cfg_scale=6.0, top_k=1, temperature=1.0)
    seen: dict[int, torch.Tensor] = {}
    gen = generate(model, vf, 221, greedy, on_step=lambda s, c, n, g: seen.setdefault(s, g))
    assert torch.equal(gen.codes, e["gen_codes"])
    torch.testing.assert_close(torch.stack([seen[s] for s in (1, 2, 3)]), e["gen_first3_guided_logits"],
                               atol=2e-4, rtol=0)
    assert torch.equal(generate(model, vf, 220, greedy).codes, e["gen_codes_220"])


def assert_generates_as_plain(accelerate: Callable[[Transformer], Any], seed: int) -> None:
    """Sampled generation (CFG, top-k, temperature) of a random tiny model changed by `accelerate` (in place):
    the same codes as the plain model's KV and full-recomputation loops, for the dynamic and the static decode
    step, and guided logits within float rounding."""
    cfg = VAuraConfig.preset("tiny")
    plain = build_model(cfg, debug_weights=True, seed=seed).eval()
    fast = build_model(cfg, debug_weights=True, seed=seed).eval()
    accelerate(fast)
    feats = torch.randn(2, 32, cfg.visual_dim, generator=torch.Generator().manual_seed(seed))
    params = SamplingParams(cfg_scale=3.0, top_k=5, temperature=0.9)
    runs = {"plain": (plain, True, "dynamic"), "full": (plain, False, "dynamic"),
            "fast": (fast, True, "dynamic"), "fast_static": (fast, True, "static")}
    logits: dict[str, list] = {m: [] for m in runs}
    codes = {}
    for name, (model, cache, mode) in runs.items():
        codes[name] = generate(model, feats, 14, params, generator=torch.Generator().manual_seed(7),
                               use_kv_cache=cache, step_mode=mode,
                               on_step=lambda s, c, n, g, m=name: logits[m].append(g)).codes
    for name in ("plain", "fast", "fast_static"):
        assert torch.equal(codes[name], codes["full"]), name
        torch.testing.assert_close(torch.stack(logits[name]), torch.stack(logits["full"]), atol=1e-4, rtol=1e-4)
