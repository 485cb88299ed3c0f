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


def guided_tf_logits(model: Transformer, codes: torch.Tensor, vf: torch.Tensor, null: torch.Tensor,
                     scale: float = 6.0) -> torch.Tensor:
    """Teacher-forced CFG-guided logits ``null + (cond - null) * scale`` (fp32, on the CPU) ``[B, K, T, card]``."""
    cond = model(codes, vf).float()
    unc = model(codes, vf, null=null.expand(codes.shape[0])).float()
    return (unc + (cond - unc) * scale).cpu()


def dtype_fidelity(dtype: torch.dtype, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The reduced fixture's model cast to `dtype` (`Transformer.cast`: RoPE table kept fp32) against the fixture
    (the original code's fp32 outputs): teacher-forced logits (max / mean abs difference, the max relative to the
    logits' range, argmax agreement), loss difference, and greedy CFG generation of 221 frames (fraction of codes
    equal to ``gen_codes``, first differing loop step, guided-logit difference at the first 3 steps)."""
    model, inputs, e = load_reduced()
    model = model.to(device)
    codes, vf = inputs["codes"].to(device), inputs["visual_features"].to(device)
    null = torch.ones(1, dtype=torch.bool, device=device)
    with torch.no_grad():  # fp32 guided teacher-forced logits: every greedy decision without feedback
        guided32 = guided_tf_logits(model, codes, vf, null)
    model = model.cast(dtype)
    vf = vf.to(dtype)
    with torch.no_grad():
        logits = model(codes, vf).float().cpu()
        loss = float(model.loss(logits, codes.cpu()).loss)
        guided = guided_tf_logits(model, codes, vf, null)
    ref = e["tf_logits"]
    diff = (logits - ref).abs()
    seen: dict[int, torch.Tensor] = {}
    gen = generate(model, vf, 221, SamplingParams(cfg_scale=6.0, top_k=1), step_mode="dynamic",
                   on_step=lambda s, c, n, g: seen.setdefault(s, g.float().cpu()) if s <= 3 else None)
    seq = gen.sequence.cpu()
    differ = (seq != e["gen_pattern_sequence"]).any(dim=1)[0].nonzero()
    return {"dtype": str(dtype).removeprefix("torch."), "device": str(device),
            "tf_logits_max_abs_diff": float(diff.max()), "tf_logits_mean_abs_diff": float(diff.mean()),
            "tf_logits_range": float(ref.max() - ref.min()),
            "tf_logits_max_abs_diff_relative_to_range": float(diff.max() / (ref.max() - ref.min())),
            "tf_argmax_agreement": float((logits.argmax(-1) == ref.argmax(-1)).float().mean()),
            "tf_loss_abs_diff": abs(loss - float(e["tf_loss"])),
            "tf_guided_argmax_agreement_vs_fp32": float((guided.argmax(-1) == guided32.argmax(-1)).float().mean()),
            "tf_guided_max_abs_diff_vs_fp32": float((guided - guided32).abs().max()),
            "greedy_codes_fraction_equal": float((gen.codes.cpu() == e["gen_codes"]).float().mean()),
            "greedy_first_differing_step": int(differ[0]) if len(differ) else None,
            "greedy_first3_guided_max_abs_diff": float(
                (torch.stack([seen[s] for s in (1, 2, 3)]) - e["gen_first3_guided_logits"]).abs().max())}
