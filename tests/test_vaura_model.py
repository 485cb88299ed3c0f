"""V-AURA transformer: parity with the release (reduced fixture) and structural properties."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import require_parity
from tests.vaura_reduced import load_reduced
from vaura.config import VAuraConfig
from vaura.model import KVCache, Transformer, build_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fixture():
    return load_reduced()


def test_state_dict_keys_are_the_release_keys(fixture) -> None:
    root = require_parity("vaura", "reduced/weights.pt")
    w = torch.load(root / "reduced/weights.pt", weights_only=True)
    model = Transformer(VAuraConfig.preset("reduced"))
    own = model.state_dict()
    assert sorted(own) == sorted(k.removeprefix("sampler.") for k in w)
    for k, v in w.items():
        assert own[k.removeprefix("sampler.")].shape == v.shape, k


def test_teacher_forced_parity(fixture) -> None:
    model, inputs, e = fixture
    codes, vf = inputs["codes"], inputs["visual_features"]
    seq = model.teacher_forcing_input(codes)
    assert torch.equal(seq, e["tf_input_sequence"])
    with torch.no_grad():
        fused = model.fuse(seq, model.embed_visual(vf))
        torch.testing.assert_close(fused, e["tf_fused_input"], atol=1e-5, rtol=1e-5)
        logits = model(codes, vf)
        out = model.loss(logits, codes)
    torch.testing.assert_close(logits, e["tf_logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.per_codebook, e["tf_loss_per_codebook"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.loss, e["tf_loss"], atol=1e-5, rtol=0)
    assert torch.equal(logits.argmax(-1), e["tf_logits_probe_argmax"])
    torch.testing.assert_close(logits.logsumexp(-1), e["tf_logits_probe_lse"], atol=1e-4, rtol=1e-4)
    idx = e["tf_logits_probe_idx"]
    torch.testing.assert_close(logits[..., idx], e["tf_logits_probe_vals"], atol=1e-4, rtol=1e-4)


def test_null_condition_parity(fixture) -> None:
    model, inputs, e = fixture
    codes, vf = inputs["codes"], inputs["visual_features"]
    null = torch.ones(1, dtype=torch.bool)
    with torch.no_grad():
        seq = model.teacher_forcing_input(codes)
        fused = model.fuse(seq, model.embed_visual(vf, null))
        torch.testing.assert_close(fused, e["tf_uncond_fused_input"], atol=1e-5, rtol=1e-5)
        logits = model(codes, vf, null=null)
        out = model.loss(logits, codes)
    torch.testing.assert_close(logits, e["tf_uncond_logits"].float(), atol=4e-3, rtol=0)
    torch.testing.assert_close(logits.logsumexp(-1), e["tf_uncond_logits_probe_lse"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits.amax(-1), e["tf_uncond_logits_probe_max"], atol=1e-4, rtol=1e-4)
    tgt = logits.gather(-1, codes[..., None])[..., 0]
    torch.testing.assert_close(tgt, e["tf_uncond_logits_probe_target_logit"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.per_codebook, e["tf_uncond_loss_per_codebook"], atol=1e-5, rtol=0)


def test_training_condition_drop(fixture) -> None:
    model, inputs, e = fixture
    codes, vf = inputs["codes"], inputs["visual_features"]
    model.train()
    try:
        torch.manual_seed(0)
        drops = torch.rand(60) < model.cfg.cond_drop
        torch.manual_seed(0)
        seen = []
        with torch.no_grad():
            for _ in range(60):
                lg = model(codes, vf)
                seen.append(torch.allclose(lg, e["tf_uncond_logits"].float(), atol=4e-3))
        assert torch.equal(torch.tensor(seen), drops)
        assert drops.any() and not drops.all()
    finally:
        model.eval()


def test_dac_embedding_init_port() -> None:
    root = require_parity("vaura", "reduced/dac_random_quantizer.pt", "reduced/weights.pt")
    q = torch.load(root / "reduced/dac_random_quantizer.pt", weights_only=True)
    w = torch.load(root / "reduced/weights.pt", weights_only=True)
    model = Transformer(VAuraConfig.preset("reduced"))
    model.init_audio_embeddings_from_dac(q["codebook"], q["out_proj_bias"], torch.Generator().manual_seed(0))
    for k, tok in enumerate(model.tok_embeddings):
        ref = w[f"sampler.tok_embeddings.{k}.emb.weight"]
        assert torch.equal(tok.emb.weight[:1024], ref[:1024])
        assert torch.equal(tok.out_proj.bias, w[f"sampler.tok_embeddings.{k}.out_proj.bias"])
        # fresh conv: g = ||v||, so the effective weight is v itself
        torch.testing.assert_close(tok.out_proj.weight(), tok.out_proj.weight_v[:, :, 0])
        assert tok.emb.weight[1024].std() < 0.1


def test_kv_cache_equals_full_recompute() -> None:
    for seed in range(3):
        model = build_model(VAuraConfig.preset("tiny"), debug_weights=True, seed=seed).eval()
        gen = torch.Generator().manual_seed(100 + seed)
        seq = torch.randint(0, 1025, (2, 9, 40), generator=gen)
        vis = model.embed_visual(torch.randn(2, 32, model.cfg.visual_dim, generator=gen))
        with torch.no_grad():
            full = model.forward_tokens(seq, vis)
            cache = KVCache(model.cfg, 2, 64, "cpu", torch.float32)
            chunks = [model.forward_tokens(seq[..., :5], vis, cache)]
            for s in range(5, 30):
                chunks.append(model.forward_tokens(seq[..., s:s + 1], vis, cache))
            chunks.append(model.forward_tokens(seq[..., 30:], vis, cache))
        torch.testing.assert_close(torch.cat(chunks, dim=2), full, atol=1e-5, rtol=1e-5)


def test_teacher_forcing_and_loss_equal_plain_loop_references() -> None:
    """`forward` (head q on positions q .. q + T - 1) equals the full pattern logits read diagonally, cell by cell,
    and `loss` (one cross-entropy over all codebooks) equals a per-codebook loop; the gradients agree too."""
    model = build_model(VAuraConfig.preset("tiny"), debug_weights=True, seed=3).eval()
    gen = torch.Generator().manual_seed(7)
    b, k, t = 2, model.cfg.n_codebooks, 23
    codes = torch.randint(0, model.cfg.card, (b, k, t), generator=gen)
    visual = torch.randn(b, 32, model.cfg.visual_dim, generator=gen)
    null = torch.tensor([False, True])
    logits = model(codes, visual, null)
    full = model.forward_tokens(model.teacher_forcing_input(codes), model.embed_visual(visual, null))
    assert logits.shape == (b, k, t, model.cfg.card) and full.shape == (b, k, t + k, model.cfg.card), \
        (logits.shape, full.shape)
    for q in range(k):
        for step in range(t):  # codes[:, q, step] sits at pattern step step + q + 1, predicted at position step + q
            torch.testing.assert_close(logits[:, q, step], full[:, q, step + q], atol=1e-6, rtol=1e-6)
    out = model.loss(logits, codes)
    ce = torch.nn.functional.cross_entropy
    per = torch.stack([ce(logits[:, q].reshape(-1, model.cfg.card), codes[:, q].reshape(-1))
                       for q in range(k)])
    torch.testing.assert_close(out.per_codebook, per, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out.loss, per.mean(), atol=1e-6, rtol=1e-6)
    (g_new,) = torch.autograd.grad(out.loss, logits, retain_graph=True)
    (g_ref,) = torch.autograd.grad(per.mean(), logits)
    torch.testing.assert_close(g_new, g_ref, atol=1e-9, rtol=1e-6)


def test_visual_repetition_and_empty_embedding() -> None:
    model = build_model(VAuraConfig.preset("tiny"), debug_weights=True)
    vis = torch.randn(1, 32, model.cfg.visual_hidden)
    out = model.visual_at(vis, 0, 230)
    assert torch.equal(out[0, 13], vis[0, 1]) and torch.equal(out[0, 223], vis[0, 31])
    assert torch.equal(out[0, 224], model.empty_video_emb[0, 0])
    assert torch.equal(model.visual_at(vis, 220, 5), out[:, 220:225])


def test_paper_preset_sizes() -> None:
    cfg = VAuraConfig.preset("paper")
    assert (cfg.n_layer, cfg.d_model, cfg.n_head, cfg.ffn_hidden) == (24, 1536, 16, 4096)
    assert (cfg.visual_hidden, cfg.audio_width, cfg.head_dim) == (512, 1024, 96)
    with torch.device("meta"):
        model = Transformer(cfg)
    n = sum(p.numel() for p in model.state_dict().values())
    root = require_parity("vaura", "manifest_full.json")
    import json

    manifest = json.loads((root / "manifest_full.json").read_text())
    assert n == manifest["num_elements"]["sampler"]
