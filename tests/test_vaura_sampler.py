"""KV-cached CFG generation: parity with the release's loop, cache == full recomputation, sampling rules."""

from __future__ import annotations

import math

import pytest
import torch

from tests.vaura_reduced import load_reduced
from vaura.config import VAuraConfig
from vaura.model import build_model
from vaura.sampler import SamplingParams, generate, sample_next

torch.set_num_threads(1)  # the test machine is shared; avoid oversubscription

GREEDY_CFG = SamplingParams(cfg_scale=6.0, top_k=1, temperature=1.0)


@pytest.fixture(scope="module")
def fixture():
    return load_reduced()


def min_margins(n_frames: int):
    """Callback collecting, per loop step, the smallest top-1 minus top-2 gap of the guided logits over the
    codebooks that the pattern fills at that step."""
    from vaura.delay import pattern_index

    _, valid = pattern_index(9, n_frames)
    margins: list[torch.Tensor] = []

    def on_step(step, cond, null, guided):
        top2 = guided[0, valid[:, step]].topk(2, dim=-1).values
        margins.append((top2[:, 0] - top2[:, 1]).min())

    return margins, on_step


@pytest.mark.parametrize("step_mode", ["dynamic", "static"])
def test_greedy_cfg_generation_221(fixture, step_mode: str) -> None:
    model, inputs, e = fixture
    seen: dict[int, tuple] = {}
    margins, margin_cb = min_margins(221)

    def on_step(step, cond, null, guided):
        margin_cb(step, cond, null, guided)
        if step <= 3:
            seen[step] = (cond, null, guided)

    out = generate(model, inputs["visual_features"], 221, GREEDY_CFG, on_step=on_step, step_mode=step_mode)
    assert torch.equal(out.sequence, e["gen_pattern_sequence"])
    assert torch.equal(out.codes, e["gen_codes"])
    # every step's guided logits, through their closest decision
    torch.testing.assert_close(torch.stack(margins), e["gen_step_min_margin"], atol=2e-4, rtol=0)
    for i, name in enumerate(["gen_first3_cond_logits", "gen_first3_uncond_logits", "gen_first3_guided_logits"]):
        got = torch.stack([seen[s][i] for s in (1, 2, 3)])
        torch.testing.assert_close(got, e[name], atol=2e-4, rtol=0)
    torch.testing.assert_close(torch.stack([seen[s][2][:, 0] for s in (1, 2, 3)]), e["gen_first3_guided_logits_cb0"],
                               atol=2e-4, rtol=0)


@pytest.mark.parametrize("step_mode", ["dynamic", "static"])
def test_greedy_cfg_generation_220(fixture, step_mode: str) -> None:
    model, inputs, e = fixture
    margins, on_step = min_margins(220)
    out = generate(model, inputs["visual_features"], 220, GREEDY_CFG, on_step=on_step, step_mode=step_mode)
    torch.testing.assert_close(torch.stack(margins), e["gen_step_min_margin_220"], atol=2e-4, rtol=0)
    assert torch.equal(out.sequence, e["gen_pattern_sequence_220"])
    assert torch.equal(out.codes, e["gen_codes_220"])
    diff = (out.codes != e["gen_codes"][..., :220]).nonzero()[:, 1:].tolist()
    assert diff == [[3, 218], [6, 218], [6, 219], [7, 219]]


def test_argmax_equals_top_k_1(fixture) -> None:
    model, inputs, e = fixture
    out = generate(model, inputs["visual_features"], 40, SamplingParams(cfg_scale=6.0, use_sampling=False))
    ref = generate(model, inputs["visual_features"], 40, GREEDY_CFG)
    assert torch.equal(out.codes, ref.codes)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kv_cache_generation_equals_full_recompute(seed: int) -> None:
    cfg = VAuraConfig.preset("tiny")
    model = build_model(cfg, debug_weights=True, seed=seed).eval()
    feats = torch.randn(2, 32, cfg.visual_dim, generator=torch.Generator().manual_seed(seed))
    params = SamplingParams(cfg_scale=3.0, top_k=5, temperature=0.9)
    modes = {"cache": (True, "dynamic"), "static": (True, "static"), "full": (False, "dynamic")}
    logits: dict[str, list] = {m: [] for m in modes}
    outs = {}
    for mode, (use_cache, step_mode) in modes.items():
        outs[mode] = generate(model, feats, 14, params, generator=torch.Generator().manual_seed(7),
                              use_kv_cache=use_cache, step_mode=step_mode,
                              on_step=lambda s, c, n, g, m=mode: logits[m].append(g))
    for mode in ("cache", "static"):
        assert torch.equal(outs[mode].codes, outs["full"].codes), mode
        torch.testing.assert_close(torch.stack(logits[mode]), torch.stack(logits["full"]), atol=1e-4, rtol=1e-4)


def test_decode_step_equals_forward_tokens_at_every_position() -> None:
    """The static-shape step (masked attention over the whole cache buffer, tensor position) gives the dynamic
    cached step's logits at every position of a window, past the visual tokens (step 224+) too, and leaves the
    same keys/values in the cache."""
    from vaura.model import KVCache

    cfg = VAuraConfig.preset("tiny")
    model = build_model(cfg, debug_weights=True, seed=4).eval()
    feats = torch.randn(3, 32, cfg.visual_dim, generator=torch.Generator().manual_seed(4))
    vis = model.embed_visual(feats, torch.tensor([False, True, False]))
    seq = torch.randint(0, cfg.card + 1, (3, cfg.n_codebooks, 229), generator=torch.Generator().manual_seed(5))
    dyn, sta = (KVCache(cfg, 3, 229, "cpu", torch.float32) for _ in range(2))
    pos = torch.zeros(1, dtype=torch.long)
    with torch.no_grad():
        for p in range(229):
            want = model.forward_tokens(seq[..., p:p + 1], vis, dyn)
            got = model.decode_step(seq[..., p:p + 1], vis, sta, pos.fill_(p))
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=lambda m, p=p: f"position {p}: {m}")
    assert sta.length == 0 and dyn.length == 229
    for a, b in zip(dyn.keys + dyn.values, sta.keys + sta.values):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_static_steps_are_not_built_on_a_filled_cache_and_graphs_need_cuda() -> None:
    from vaura.model import KVCache
    from vaura.sampler import SamplingError, StaticStep

    cfg = VAuraConfig.preset("tiny")
    model = build_model(cfg, debug_weights=True).eval()
    vis = model.embed_visual(torch.randn(1, 32, cfg.visual_dim))
    cache = KVCache(cfg, 1, 20, "cpu", torch.float32)
    with pytest.raises(SamplingError, match="CUDA device"):
        StaticStep(model, vis, cache, graph=True)
    cache.length = 3
    with pytest.raises(SamplingError, match="empty cache"):
        StaticStep(model, vis, cache, graph=False)
    with pytest.raises(SamplingError, match="step_mode"):
        generate(model, torch.randn(1, 32, cfg.visual_dim), 5, step_mode="fast")


def test_prompt_is_kept_and_continued() -> None:
    model = build_model(VAuraConfig.preset("tiny"), debug_weights=True).eval()
    feats = torch.randn(1, 32, model.cfg.visual_dim, generator=torch.Generator().manual_seed(3))
    params = SamplingParams(cfg_scale=2.0, use_sampling=False)
    full = generate(model, feats, 24, params)
    prompt = torch.randint(0, 1024, (1, 9, 10), generator=torch.Generator().manual_seed(4))
    out = generate(model, feats, 24, params, prompt=prompt)
    # the static step continues a prompt prefilled by the multi-position path the same way
    static = generate(model, feats, 24, params, prompt=prompt, step_mode="static")
    assert torch.equal(static.codes, out.codes)
    assert torch.equal(out.codes[..., :10], prompt)
    assert not torch.equal(out.codes, full.codes)
    # a prompt equal to the model's own greedy output reproduces it
    again = generate(model, feats, 24, params, prompt=full.codes[..., :10])
    assert torch.equal(again.codes, full.codes)


def test_no_cfg_uses_one_branch() -> None:
    model = build_model(VAuraConfig.preset("tiny"), debug_weights=True).eval()
    feats = torch.randn(1, 32, model.cfg.visual_dim)
    nulls = []
    generate(model, feats, 5, SamplingParams(cfg_scale=1.0, use_sampling=False),
             on_step=lambda s, c, n, g: nulls.append(n))
    assert nulls and all(n is None for n in nulls)


def test_cfg_below_one_is_applied_not_ignored() -> None:
    """Scales in [0, 1) guide with the null branch too (scale 0 = the unconditional logits); they used to be
    treated as scale 1 (conditional only)."""
    model = build_model(VAuraConfig.preset("tiny"), debug_weights=True).eval()
    feats = torch.randn(1, 32, model.cfg.visual_dim, generator=torch.Generator().manual_seed(5))
    for scale in (0.0, 0.5):
        steps = []
        generate(model, feats, 5, SamplingParams(cfg_scale=scale, use_sampling=False),
                 on_step=lambda s, c, n, g, out=steps: out.append((c, n, g)))
        assert steps and all(n is not None for _, n, _ in steps)
        for c, n, g in steps:
            torch.testing.assert_close(g, n + (c - n) * scale)
        assert any(not torch.allclose(g, c) for c, _, g in steps)
    with pytest.raises(ValueError, match="cfg_scale"):
        SamplingParams(cfg_scale=-1.0)


def test_sample_next_rules() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 9, 50, generator=gen)
    top = logits.topk(3, dim=-1).indices
    assert torch.equal(sample_next(logits, SamplingParams(top_k=1), gen), logits.argmax(-1))
    assert torch.equal(sample_next(logits, SamplingParams(temperature=0.0), gen), logits.argmax(-1))
    for _ in range(20):
        tok = sample_next(logits, SamplingParams(top_k=3), gen)
        assert (tok[..., None] == top).any(-1).all()
    # top-p: a dominant token with p below its mass is always picked
    peaked = torch.full((2, 50), -10.0)
    peaked[:, 7] = 10.0
    for _ in range(10):
        assert (sample_next(peaked, SamplingParams(top_p=0.5), gen) == 7).all()
    # plain sampling reaches tokens outside the top 3
    tok = torch.stack([sample_next(torch.zeros(1000), SamplingParams(top_k=0), gen) for _ in range(5)])
    assert tok.unique().numel() > 1
    with pytest.raises(ValueError):
        SamplingParams(top_p=1.5)


def test_invalid_requests_raise_clear_errors() -> None:
    from vaura.model import KVCache, SequenceTooLongError
    from vaura.sampler import SamplingError

    model = build_model(VAuraConfig.preset("tiny"), debug_weights=True).eval()
    feats = torch.randn(1, 32, model.cfg.visual_dim)
    with pytest.raises(SamplingError, match="n_frames"):
        generate(model, feats, 300)
    with pytest.raises(SamplingError, match="temperature"):
        SamplingParams(temperature=-1.0)
    with pytest.raises(SequenceTooLongError):
        KVCache(model.cfg, 1, 300, "cpu", torch.float32)
    model.train()
    with pytest.raises(SamplingError, match="eval"):
        generate(model, feats, 4)


def test_rope_complex_form_equals_real_form() -> None:
    from vaura.model import _apply_rope_real, apply_rope, rope_table

    x = torch.randn(2, 7, 3, 16, generator=torch.Generator().manual_seed(0))
    table = rope_table(20, 16, 10000.0)[5:12]
    torch.testing.assert_close(apply_rope(x, table), _apply_rope_real(x, table), atol=1e-6, rtol=1e-6)
    # the real form is the documented rotation of adjacent pairs
    ang = 6.0 * 10000.0 ** (-2 * 3 / 16)  # position 5 + 1, pair i = 3
    pair = x[0, 1, 2, 6:8]
    want = torch.stack([pair[0] * math.cos(ang) - pair[1] * math.sin(ang),
                        pair[1] * math.cos(ang) + pair[0] * math.sin(ang)])
    torch.testing.assert_close(_apply_rope_real(x, table)[0, 1, 2, 6:8], want, atol=1e-5, rtol=1e-5)
    # training backpropagates through view_as_complex: the same gradient as the real form
    grads = []
    for fn in (apply_rope, _apply_rope_real):
        xg = x.clone().requires_grad_(True)
        (fn(xg, table) * torch.linspace(-1, 1, 16)).sum().backward()
        grads.append(xg.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-6)
    assert not torch.equal(grads[0], torch.linspace(-1, 1, 16).expand_as(x))  # the rotation reaches the gradient


def test_bfloat16_model_rotates_with_an_fp32_table() -> None:
    """``model.to(torch.bfloat16)`` converts the RoPE buffer too; the complex rotation takes the table in fp32
    (`view_as_complex` has no bfloat16 form, so every forward used to raise) and returns bfloat16 like the real
    form, in training, dynamic and static decoding."""
    from vaura.model import _apply_rope_real, apply_rope, rope_table

    x = torch.randn(2, 5, 3, 16, generator=torch.Generator().manual_seed(1)).bfloat16()
    table = rope_table(8, 16, 10000.0)[3:8].bfloat16()
    got = apply_rope(x, table)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, _apply_rope_real(x, table))
    cfg = VAuraConfig.preset("tiny")
    model = build_model(cfg, debug_weights=True, seed=3).eval().to(torch.bfloat16)
    assert model.rope.dtype == torch.bfloat16
    feats = torch.randn(1, 32, cfg.visual_dim, generator=torch.Generator().manual_seed(3)).bfloat16()
    codes = torch.randint(0, cfg.card, (1, cfg.n_codebooks, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert model(codes, feats).dtype == torch.bfloat16
    for mode in ("dynamic", "static"):
        out = generate(model, feats, 6, SamplingParams(cfg_scale=2.0, top_k=4), step_mode=mode,
                       generator=torch.Generator().manual_seed(0))
        assert out.codes.shape == (1, cfg.n_codebooks, 6) and bool(((out.codes >= 0) & (out.codes < cfg.card)).all())


def test_decode_step_traces_as_one_graph() -> None:
    """The static step compiles without graph breaks (``fullgraph=True``; the eager backend keeps the test fast, the
    traced program is what Inductor would compile) and gives the eager step's logits."""
    from vaura.model import KVCache
    from vaura.sampler import compiled_decode_step

    cfg = VAuraConfig.preset("tiny")
    model = build_model(cfg, debug_weights=True, seed=2).eval()
    vis = model.embed_visual(torch.randn(2, 32, cfg.visual_dim, generator=torch.Generator().manual_seed(2)))
    seq = torch.randint(0, cfg.card + 1, (2, cfg.n_codebooks, 12), generator=torch.Generator().manual_seed(3))
    step = compiled_decode_step(model, backend="eager")
    assert compiled_decode_step(model, backend="eager").func is step.func  # made once per backend
    a, b = (KVCache(cfg, 2, 12, "cpu", torch.float32) for _ in range(2))
    with torch.no_grad():
        for p in range(12):
            pos = torch.tensor([p])
            torch.testing.assert_close(step(seq[..., p:p + 1], vis, a, pos),
                                       model.decode_step(seq[..., p:p + 1], vis, b, pos), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_draw_equals_torch_multinomial(seed: int) -> None:
    """`draw` (no host sync) picks exactly what ``torch.multinomial(p, 1)`` picks from the same generator state,
    also for rows with zeros (top-k / top-p masks) and one-hot rows; the generator advances the same way."""
    from vaura.sampler import draw

    g = torch.Generator().manual_seed(100 + seed)
    probs = torch.rand(18, 1024, generator=g) ** 4
    probs[:6] *= probs[:6] >= probs[:6].topk(7, dim=-1).values[:, -1:]
    probs[6:8] = torch.nn.functional.one_hot(torch.tensor([3, 1000]), 1024).float()
    probs = probs / probs.sum(-1, keepdim=True)
    ga, gb = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    for _ in range(3):
        assert torch.equal(draw(probs, ga), torch.multinomial(probs, 1, generator=gb))


def test_non_finite_logits_raise() -> None:
    from vaura.sampler import SamplingError

    model = build_model(VAuraConfig.preset("tiny"), debug_weights=True).eval()
    with torch.no_grad():
        model.lm_heads[2].weight[5, 0] = float("nan")
    with pytest.raises(SamplingError, match="non-finite"):
        generate(model, torch.randn(1, 32, model.cfg.visual_dim), 6, SamplingParams(top_k=8))


def test_compiled_step_compiles_once_for_every_window_length(monkeypatch) -> None:
    """A compiled step's cache spans the RoPE table, so its shapes do not depend on ``n_frames``: windows of
    different lengths reuse one compilation (each length used to recompile, and past Dynamo's recompile limit of 8
    a ``fullgraph`` compilation raises) and give the uncompiled static step's codes."""
    import vaura.sampler as sampler

    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    real = sampler.compiled_decode_step
    monkeypatch.setattr(sampler, "compiled_decode_step", lambda model: real(model, backend=counting))
    model = build_model(VAuraConfig.preset("tiny"), debug_weights=True, seed=6).eval()
    feats = torch.randn(2, 32, model.cfg.visual_dim, generator=torch.Generator().manual_seed(6))
    params = SamplingParams(cfg_scale=3.0, top_k=5)
    for n in (5, 8, 6):
        got = generate(model, feats, n, params, generator=torch.Generator().manual_seed(n), compile_step=True)
        want = generate(model, feats, n, params, generator=torch.Generator().manual_seed(n), step_mode="static")
        assert torch.equal(got.codes, want.codes), n
    assert len(graphs) == 1


def test_compiled_step_does_not_keep_the_model_alive() -> None:
    """The compiled step is cached per backend, not per model: a model that was compiled and run is freed when its
    last reference goes (a per-model cache of compiled bound methods kept every model alive)."""
    import gc
    import weakref

    from vaura.model import KVCache
    from vaura.sampler import compiled_decode_step

    cfg = VAuraConfig.preset("tiny")
    model = build_model(cfg, debug_weights=True, seed=8).eval()
    vis = model.embed_visual(torch.randn(1, 32, cfg.visual_dim))
    with torch.no_grad():
        compiled_decode_step(model, backend="eager")(torch.zeros(1, cfg.n_codebooks, 1, dtype=torch.long), vis,
                                                     KVCache(cfg, 1, 4, "cpu", torch.float32), torch.zeros(1).long())
    ref = weakref.ref(model)
    del model, vis
    gc.collect()
    assert ref() is None


def test_static_step_under_autocast_matches_the_dynamic_step() -> None:
    """Under autocast the keys/values are bfloat16 and the cache is the model's fp32: the static step casts them
    into the cache as the dynamic step's slice assignment does (its ``index_copy_`` used to raise), and the logits
    agree to bfloat16 rounding (one ulp at |logit| ~ 4 is 0.03)."""
    from vaura.model import KVCache

    cfg = VAuraConfig.preset("tiny")
    model = build_model(cfg, debug_weights=True, seed=4).eval()
    feats = torch.randn(2, 32, cfg.visual_dim, generator=torch.Generator().manual_seed(4))
    seq = torch.randint(0, cfg.card + 1, (2, cfg.n_codebooks, 8), generator=torch.Generator().manual_seed(5))
    dyn, sta = (KVCache(cfg, 2, 8, "cpu", torch.float32) for _ in range(2))
    pos = torch.zeros(1, dtype=torch.long)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        vis = model.embed_visual(feats)
        for p in range(8):
            want = model.forward_tokens(seq[..., p:p + 1], vis, dyn)
            got = model.decode_step(seq[..., p:p + 1], vis, sta, pos.fill_(p))
            assert got.dtype == want.dtype == torch.bfloat16
            torch.testing.assert_close(got.float(), want.float(), atol=0.07, rtol=0, msg=lambda m, p=p: f"{p}: {m}")
        out = generate(model, feats, 6, SamplingParams(cfg_scale=2.0, use_sampling=False), step_mode="static")
    assert out.codes.shape == (2, cfg.n_codebooks, 6)
    assert all(c.dtype == torch.float32 for c in sta.keys + sta.values)


def test_overflowing_temperature_raises_instead_of_drawing_token_0() -> None:
    """A temperature so small that logits / temperature overflow gives NaN probabilities: `draw` has no validity
    check of its own, so generation must refuse (torch.multinomial used to)."""
    from vaura.sampler import SamplingError

    model = build_model(VAuraConfig.preset("tiny"), debug_weights=True).eval()
    feats = torch.randn(1, 32, model.cfg.visual_dim, generator=torch.Generator().manual_seed(0))
    with pytest.raises(SamplingError, match="temperature"):
        generate(model, feats, 4, SamplingParams(temperature=1e-38, top_k=0))
    generate(model, feats, 4, SamplingParams(temperature=0.05, top_k=0))  # small but finite: fine


def test_compile_step_needs_the_static_kv_step() -> None:
    from vaura.sampler import SamplingError

    model = build_model(VAuraConfig.preset("tiny"), debug_weights=True).eval()
    feats = torch.randn(1, 32, model.cfg.visual_dim)
    for kw in ({"step_mode": "dynamic"}, {"use_kv_cache": False}):
        with pytest.raises(SamplingError, match="compile_step"):
            generate(model, feats, 4, compile_step=True, **kw)


def test_row_stream_hash_and_uniforms() -> None:
    """The integer hash gives the same values on tensors and Python ints (no int64 overflow); a row's uniforms
    depend on its key alone, lie in (0, 1) and are evenly spread."""
    from vaura.sampler import RowStreams, hash32

    xs = [0, 1, 2, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 123456789]
    assert hash32(torch.tensor(xs)).tolist() == [hash32(x) for x in xs]
    assert all(0 <= hash32(x) < 2 ** 32 for x in xs) and len({hash32(x) for x in xs}) == len(xs)
    keys = [("clip-a", 7, 0, 0), ("clip-b", 7, 0, 0), ("clip-a", 8, 0, 0), ("clip-a", 7, 1, 0), ("clip-a", 7, 0, 1)]
    u = RowStreams(keys).uniforms(300, 9)  # [S, B, K]
    assert u.shape == (300, 5, 9) and u.dtype == torch.float64 and 0 < u.min() and u.max() < 1
    alone = RowStreams([keys[3], keys[0]]).uniforms(300, 9)
    assert torch.equal(alone[:, 0], u[:, 3]) and torch.equal(alone[:, 1], u[:, 0])  # key only, not position
    hist = torch.histc(u.float(), bins=10, min=0, max=1) / u.numel()
    assert (hist - 0.1).abs().max() < 0.01, hist
    flat = u.permute(1, 0, 2).reshape(5, -1)  # streams of different keys are uncorrelated
    corr = torch.corrcoef(flat)
    assert (corr - torch.eye(5, dtype=corr.dtype)).abs().max() < 0.05


def test_sampling_with_uniforms_follows_the_distribution() -> None:
    """Inverting the CDF samples each candidate with its probability; top-k keeps exactly the k best, top-p the
    prefix that reaches p; greedy ignores the numbers."""
    from vaura.sampler import sample_with_uniforms

    probs = torch.tensor([0.05, 0.4, 0.0, 0.25, 0.3])
    logits = probs.clamp_min(1e-30).log().expand(1, 1, 5)
    n = 20000
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n  # a uniform grid: exact frequencies
    tok = torch.stack([sample_with_uniforms(logits, SamplingParams(top_k=0), u[i].view(1, 1)) for i in range(0, n, 20)])
    freq = torch.bincount(tok.flatten(), minlength=5).double() / tok.numel()
    torch.testing.assert_close(freq, probs.double(), atol=2e-3, rtol=0)
    tok = torch.stack([sample_with_uniforms(logits, SamplingParams(top_k=2), u[i].view(1, 1)) for i in range(0, n, 20)])
    freq = torch.bincount(tok.flatten(), minlength=5).double() / tok.numel()
    torch.testing.assert_close(freq, torch.tensor([0, 0.4 / 0.7, 0, 0, 0.3 / 0.7], dtype=torch.float64),
                               atol=2e-3, rtol=0)
    # top-p 0.6: sorted 0.4, 0.3 (crosses 0.6) -> those two
    tok = torch.stack([sample_with_uniforms(logits, SamplingParams(top_k=0, top_p=0.6), u[i].view(1, 1))
                       for i in range(0, n, 20)])
    assert set(tok.flatten().tolist()) == {1, 4}
    assert sample_with_uniforms(logits, SamplingParams(use_sampling=False), torch.full((1, 1), 0.99)).item() == 1


@pytest.mark.parametrize("step_mode", ["dynamic", "static"])
def test_rows_generate_the_same_alone_or_in_any_batch(step_mode: str) -> None:
    """With per-row streams a row's codes depend on its features, length, prompt and key only: three rows of
    different lengths in one batch give each row's codes of the same batch shape with the row alone (the other
    rows padding), in any slot; the static step attends over a fixed cache length."""
    from vaura.sampler import RowStreams

    cfg = VAuraConfig.preset("tiny")
    model = build_model(cfg, debug_weights=True, seed=3).eval()
    feats = torch.randn(3, 32, cfg.visual_dim, generator=torch.Generator().manual_seed(4))
    lengths, keys = [14, 9, 20], [("a", 1), ("b", 1), ("c", 5)]
    prompt = torch.randint(0, cfg.card, (3, 9, 5), generator=torch.Generator().manual_seed(5))
    params = SamplingParams(cfg_scale=3.0, top_k=5, temperature=0.9)
    for p in (None, prompt):
        together = generate(model, feats, lengths, params, prompt=p, streams=RowStreams(keys),
                            step_mode=step_mode, cache_len=cfg.rope_len).codes
        assert together.shape == (3, 9, 20)
        for row in range(3):
            assert (together[row, :, lengths[row]:] == cfg.special_token).all()
            slot = (row + 1) % 3
            f = torch.zeros_like(feats)
            f[slot] = feats[row]
            n = [0, 0, 0]
            n[slot] = lengths[row]
            k = [("pad", 0)] * 3
            k[slot] = keys[row]
            pp = None if p is None else torch.full_like(p, cfg.special_token).index_copy(0, torch.tensor([slot]),
                                                                                        p[row:row + 1])
            alone = generate(model, f, n, params, prompt=pp, streams=RowStreams(k), step_mode=step_mode,
                             cache_len=cfg.rope_len).codes
            assert torch.equal(alone[slot, :, :lengths[row]], together[row, :, :lengths[row]]), (p is None, row)
    # and the sampled codes of a row are not a copy of another row's
    assert not torch.equal(together[0, :, :9], together[1, :, :9])


def test_stepper_pool_reuses_one_static_step() -> None:
    """A pool builds one static step per shape and gives the codes of fresh ones in later calls."""
    from vaura.sampler import RowStreams, StepperPool

    cfg = VAuraConfig.preset("tiny")
    model = build_model(cfg, debug_weights=True, seed=1).eval()
    pool = StepperPool()
    params = SamplingParams(cfg_scale=3.0, top_k=5)
    for seed in range(3):
        feats = torch.randn(2, 32, cfg.visual_dim, generator=torch.Generator().manual_seed(seed))
        keys = RowStreams([(seed, 0), (seed, 1)])
        fresh = generate(model, feats, [12, 7], params, streams=keys, step_mode="static", cache_len=cfg.rope_len)
        pooled = generate(model, feats, [12, 7], params, streams=keys, step_mode="static", cache_len=cfg.rope_len,
                          pool=pool)
        assert torch.equal(fresh.codes, pooled.codes)
    assert len(pool._items) == 1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_and_stays_near_fp32_on_the_fixture(dtype: torch.dtype) -> None:
    """``--dtype bf16 / fp16`` (`Transformer.cast`, RoPE kept fp32) on the reduced fixture: teacher-forced logits
    within a few hundredths of the original's, most decisions unchanged; fp32 through the same measurement is
    exact (scripts/check_dtype.py records the numbers)."""
    from tests.vaura_reduced import dtype_fidelity

    half = dtype_fidelity(dtype)
    assert half["tf_logits_max_abs_diff_relative_to_range"] < 0.02, half
    assert half["tf_argmax_agreement"] > 0.95 and half["tf_guided_argmax_agreement_vs_fp32"] > 0.9, half
    full = dtype_fidelity(torch.float32)
    assert full["greedy_codes_fraction_equal"] == 1.0 and full["greedy_first_differing_step"] is None
    assert full["tf_guided_max_abs_diff_vs_fp32"] == 0.0 and full["tf_logits_max_abs_diff"] < 1e-4


def test_cast_keeps_the_rope_table_fp32() -> None:
    model = build_model(VAuraConfig.preset("tiny"), debug_weights=True).eval().cast(torch.bfloat16)
    assert model.rope.dtype == torch.float32 and next(model.parameters()).dtype == torch.bfloat16
    out = generate(model, torch.randn(1, 32, model.cfg.visual_dim).bfloat16(), 5, SamplingParams(top_k=4))
    assert out.codes.shape == (1, 9, 5)
