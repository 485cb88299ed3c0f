"""oneDNN-packed linear weights for CPU inference: same values, same state dict, same generations."""

from __future__ import annotations

import copy
import gc
import io
import json
import os
import weakref
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

from tests.vaura_reduced import assert_generates_as_plain, assert_reduced_parity, load_reduced
from vaura.config import VAuraConfig
from vaura.model import build_model
from vaura.packed import PackedLinear, is_packed, pack_linears, packing_available, unpack_linears
from vaura.sampler import SamplingParams, generate
from visualsound.errors import ConfigError

torch.set_num_threads(1)

# a torch build without oneDNN skips these locally; under CI=true they run (and fail) rather than skip the parity
pytestmark = pytest.mark.skipif(not packing_available() and os.environ.get("CI") != "true",
                                reason="torch built without oneDNN")


def two_layers() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 96, bias=False), nn.GELU(), nn.Linear(96, 40))


def test_packed_linear_equals_linear_and_keeps_the_state_dict() -> None:
    net = two_layers()
    plain_state = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(3, 5, 64)
    with torch.no_grad():
        want = net(x)
        assert pack_linears(net, rows=2) == 2 and is_packed(net)
        assert all(isinstance(net[i], PackedLinear) for i in (0, 2))
        for rows in (1, 2, 7):  # any row count, not only the one packed for
            torch.testing.assert_close(net(x[:, :rows]), want[:, :rows], atol=1e-5, rtol=1e-5)
    state = net.state_dict()
    assert list(state) == list(plain_state)
    for k, v in plain_state.items():
        assert torch.equal(state[k], v), k
    # loading repacks: a packed model takes new values strictly, and reports missing / misshaped keys
    other = two_layers()
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-2)
    net.load_state_dict(other.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(net(x), other(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="Missing key"):
        net.load_state_dict({k: v for k, v in other.state_dict().items() if k != "0.weight"}, strict=True)
    bad = dict(other.state_dict(), **{"0.weight": torch.zeros(96, 65)})
    with pytest.raises(RuntimeError, match="size mismatch"):
        net.load_state_dict(bad, strict=True)
    assert unpack_linears(net) == 2 and not is_packed(net)
    assert all(type(net[i]) is nn.Linear for i in (0, 2))
    for k, v in other.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k


def test_packing_releases_each_plain_weight_as_it_goes(monkeypatch) -> None:
    """Each plain weight is freed as soon as it is packed, so packing a 2.8 GB model needs one more matrix,
    not another 2.8 GB: when the i-th layer is packed, the plain weights of layers 0..i-1 are gone."""
    import vaura.packed as packed_mod

    net = nn.Sequential(*(nn.Linear(32, 32, bias=False) for _ in range(4)))
    refs = [weakref.ref(lin.weight) for lin in net]
    alive_at_each_pack: list[int] = []
    real_init = packed_mod.PackedLinear.__init__

    def counting_init(self, weight, bias, rows=2):
        gc.collect()
        alive_at_each_pack.append(sum(r() is not None for r in refs))
        real_init(self, weight, bias, rows)

    monkeypatch.setattr(packed_mod.PackedLinear, "__init__", counting_init)
    pack_linears(net)
    gc.collect()
    assert alive_at_each_pack == [4, 3, 2, 1]
    assert [r() for r in refs] == [None] * 4


def test_packed_model_is_for_fp32_cpu_inference() -> None:
    net = two_layers()
    pack_linears(net)
    assert not net.training
    net.eval()  # allowed
    net.to("cpu")  # a no-op move is allowed
    with pytest.raises(ConfigError, match="inference only"):
        net.train()
    with pytest.raises(ConfigError, match="unpack_linears"):
        net.half()
    with pytest.raises(ConfigError, match="fp32 models on the CPU"):
        pack_linears(two_layers().to(torch.bfloat16))


@pytest.mark.parametrize("seed", [0, 1])
def test_packed_tiny_model_generates_as_the_plain_one(seed: int) -> None:
    assert_generates_as_plain(pack_linears, seed)


def test_packed_reduced_fixture_parity() -> None:
    """The parity fixture with packed weights: teacher-forced logits and loss within the fixture's tolerance,
    greedy CFG generation of 221 and 220 frames exactly the release's codes."""
    model, inputs, expected = load_reduced()
    pack_linears(model)
    assert_reduced_parity(model, inputs, expected)


def test_cli_cpu_linear_packed(tmp_path: Path) -> None:
    """`vaura generate --cpu-linear packed` packs even the tiny debug model and records it; greedy audio equals
    the plain run's. ``packed`` with ``--compile`` or on CUDA is refused before loading."""
    from tests.odd_media import noise_clip
    from vaura.cli import main
    from visualsound.media import read_audio

    clip = noise_clip(tmp_path / "p.mp4", 0.5, 25.0)
    base = ["generate", "--video", str(clip), "--debug-weights", "--greedy", "--no-mux"]
    for name, want in (("packed", "packed"), ("off", "off")):
        res = CliRunner().invoke(main, [*base, "--out", str(tmp_path / f"{name}.mp4"), "--cpu-linear", name])
        assert res.exit_code == 0, res.output
        assert json.loads((tmp_path / f"{name}.json").read_text())["cpu_linear"] == want, name
    torch.testing.assert_close(read_audio(tmp_path / "packed.wav"), read_audio(tmp_path / "off.wav"))
    res = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "x.mp4"), "--cpu-linear", "packed", "--compile"])
    assert res.exit_code != 0 and "--compile" in res.output
    res = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "x.mp4"), "--cpu-linear", "packed",
                                    "--device", "cuda:0"])
    assert res.exit_code == 2 and "--cpu-linear" in res.output and "cuda:0" in res.output  # before loading
    assert not (tmp_path / "x.json").exists()


def test_cli_packed_says_why_it_cannot_pack(tmp_path: Path, monkeypatch) -> None:
    """``--cpu-linear packed`` where packing cannot apply (here: no oneDNN) exits with the reason, writing
    nothing, instead of generating unpacked while the user asked for packing."""
    import vaura.packed as packed_mod
    from tests.odd_media import noise_clip
    from vaura.cli import main

    monkeypatch.setattr(packed_mod, "packing_available", lambda: False)
    clip = noise_clip(tmp_path / "p.mp4", 0.5, 25.0)
    args = ["generate", "--video", str(clip), "--debug-weights", "--greedy", "--no-mux", "--out",
            str(tmp_path / "o.mp4")]
    res = CliRunner().invoke(main, [*args, "--cpu-linear", "packed"])
    assert res.exit_code != 0 and "oneDNN" in res.output and not (tmp_path / "o.json").exists()
    res = CliRunner().invoke(main, args)  # the default (auto, tiny model) uses plain weights
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "o.json").read_text())["cpu_linear"] == "off"


def test_pipeline_auto_packs_only_from_the_size_threshold(monkeypatch) -> None:
    """Where the thin-linear kernel is unavailable, ``accelerate_cpu("auto")`` packs from `PACK_MIN_BYTES`."""
    import vaura.generate as G
    import vaura.thin_linear as tl

    monkeypatch.setattr(tl, "kernel_status", lambda: (False, "test: no kernel"))
    pipe = G.load_pipeline(debug_weights=True)
    assert pipe.accelerate_cpu("auto") == "off" and not is_packed(pipe.transformer)
    monkeypatch.setattr(G, "PACK_MIN_BYTES", 1)
    assert pipe.accelerate_cpu("auto") == "packed" and is_packed(pipe.transformer)
    assert pipe.cpu_linear() == "packed"


def test_packed_model_deepcopies_and_pickles_with_its_values() -> None:
    """`copy.deepcopy` and `torch.save(model)` of a packed model work (the packed weight goes through its dense
    values and is repacked on load) instead of failing inside oneDNN's opaque tensor."""
    net = two_layers()
    pack_linears(net)
    x = torch.randn(4, 64)
    with torch.no_grad():
        want = net(x)
        twin = copy.deepcopy(net)
        buf = io.BytesIO()
        torch.save(net, buf)
        buf.seek(0)
        loaded = torch.load(buf, weights_only=False)
        for m in (twin, loaded):
            assert is_packed(m) and not m.training
            torch.testing.assert_close(m(x), want, atol=0, rtol=0)
            for k, v in net.state_dict().items():
                assert torch.equal(m.state_dict()[k], v), k
    assert torch.equal(net(x), want)  # the original is untouched


def test_packed_load_state_dict_reports_like_nn_linear() -> None:
    """Loading into a packed model reports what `nn.Linear` would: a misshaped bias is a size mismatch (not
    broadcast into every output), keys it has no slot for are unexpected, fp16 values load as fp32."""
    net = two_layers()
    pack_linears(net)
    good = two_layers().state_dict()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(RuntimeError, match="size mismatch for 2.bias"):
        net.load_state_dict(dict(good, **{"2.bias": torch.ones(1)}), strict=True)
    assert torch.equal(net.state_dict()["2.bias"], before["2.bias"])
    extra = dict(good, **{"0.bias": torch.ones(96), "2.weight_g": torch.ones(40, 1)})
    with pytest.raises(RuntimeError, match="Unexpected key"):
        net.load_state_dict(extra, strict=True)
    report = net.load_state_dict(extra, strict=False)
    assert report.missing_keys == [] and sorted(report.unexpected_keys) == ["0.bias", "2.weight_g"]
    assert two_layers().load_state_dict(extra, strict=False) == report  # the same report as plain nn.Linear
    missing = net.load_state_dict({k: v for k, v in good.items() if k != "2.bias"}, strict=False)
    assert missing.missing_keys == ["2.bias"] and missing.unexpected_keys == []
    half = {k: (v * 3).half() for k, v in good.items()}
    net.load_state_dict(half, strict=True)
    for k, v in net.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, half[k].float()), k


def test_packed_model_refuses_gradients_and_shared_memory() -> None:
    """oneDNN's packed product has no backward: with grad enabled and an input (or the bias, after
    ``requires_grad_()``) that requires grad it raises instead of silently giving no gradient; ``share_memory()``
    raises as the packed weight cannot be shared."""
    net = two_layers()
    pack_linears(net)
    x = torch.randn(2, 64)
    with pytest.raises(ConfigError, match="gradient"):
        net(x.requires_grad_())
    net.requires_grad_()
    with pytest.raises(ConfigError, match="gradient"):
        net(torch.randn(2, 64))
    with torch.no_grad():
        assert net(torch.randn(2, 64)).shape == (2, 40)
    with torch.inference_mode():
        assert net(torch.randn(2, 64)).shape == (2, 40)
    with pytest.raises(ConfigError, match="share"):
        net.share_memory()
    net.to(memory_format=torch.channels_last)  # no 4-D tensors: a no-op, allowed


def test_accelerate_cpu_packed_raises_where_impossible(monkeypatch) -> None:
    """``accelerate_cpu("packed")`` (``vaura generate --cpu-linear packed``) says why it cannot pack rather than
    returning "off": here an fp16 linear in the transformer, and a torch build without oneDNN."""
    import vaura.generate as G
    import vaura.packed as packed_mod

    pipe = G.load_pipeline(debug_weights=True)
    lin = next(m for m in pipe.transformer.modules() if type(m) is nn.Linear)
    lin.half()
    monkeypatch.setattr(G, "THIN_MIN_BYTES", 0)
    monkeypatch.setattr(G, "PACK_MIN_BYTES", 0)
    assert pipe.accelerate_cpu("auto") == "off"  # auto just does not accelerate
    with pytest.raises(ConfigError, match="float16"):
        pipe.accelerate_cpu("packed")
    lin.float()
    monkeypatch.setattr(packed_mod, "packing_available", lambda: False)
    with pytest.raises(ConfigError, match="oneDNN"):
        pipe.accelerate_cpu("packed")


@pytest.mark.parametrize("cfg_scale,num_samples", [(3.0, 3), (1.0, 2)])
def test_packed_pipeline_only_packs_the_transformer_and_generates_the_same(cfg_scale: float,
                                                                           num_samples: int) -> None:
    """`accelerate_cpu("packed")` packs the transformer's linears only (the visual encoder and codec keep plain
    modules); sampled generation with several samples per clip (CFG: 2 S rows; scale 1: S rows) gives the plain
    codes."""
    import vaura.generate as G

    plain, packed = G.load_pipeline(debug_weights=True), G.load_pipeline(debug_weights=True)
    visual_linears = sum(type(m) is nn.Linear for m in packed.visual.modules())
    codec_linears = sum(type(m) is nn.Linear for m in packed.codec.modules())
    assert packed.accelerate_cpu("packed") == "packed" and is_packed(packed.transformer)
    assert not is_packed(packed.visual) and not is_packed(packed.codec)
    assert sum(type(m) is nn.Linear for m in packed.visual.modules()) == visual_linears
    assert sum(type(m) is nn.Linear for m in packed.codec.modules()) == codec_linears
    cfg = plain.transformer.cfg
    feats = torch.randn(num_samples, 32, cfg.visual_dim, generator=torch.Generator().manual_seed(3))
    params = SamplingParams(cfg_scale=cfg_scale, top_k=4, temperature=1.0)
    codes = [generate(p.transformer, feats, 12, params, generator=torch.Generator().manual_seed(5)).codes
             for p in (plain, packed)]
    assert codes[0].shape[0] == num_samples and torch.equal(codes[0], codes[1])


def test_packed_model_is_saved_as_a_plain_checkpoint(tmp_path: Path) -> None:
    """`save_checkpoint` of a packed transformer writes the plain weights: loading it gives a plain model with the
    same state dict."""
    from vaura.checkpoint import load_checkpoint, save_checkpoint

    model = build_model(VAuraConfig.preset("tiny"), debug_weights=True, seed=2).eval()
    want = {k: v.clone() for k, v in model.state_dict().items()}
    pack_linears(model)
    back, _ = load_checkpoint(save_checkpoint(tmp_path / "m.pt", model))
    assert not is_packed(back)
    got = back.state_dict()
    assert list(got) == list(want)
    for k, v in want.items():
        assert torch.equal(got[k], v), k


def test_training_a_packed_model_raises_before_any_step(tmp_path: Path) -> None:
    """`vaura.train.Trainer` given a packed model stops with the ConfigError of `PackedLinear.train` before it
    takes a step or writes a checkpoint (an optimiser over its parameters would miss every packed weight)."""
    from tests.test_train_loop import PatternWindows, make_model, tiny_cfg
    from vaura.train.loop import Trainer

    cfg = tiny_cfg("max_steps=2")
    model = make_model(cfg)
    pack_linears(model)
    with pytest.raises(ConfigError, match="inference only"):
        Trainer(cfg, tmp_path / "run", model, PatternWindows(4)).fit()
    assert not list((tmp_path / "run").glob("*.pt"))


def test_pipeline_packing_keeps_no_plain_weight_alive() -> None:
    """After `accelerate_cpu("packed")` (and after `load_pipeline`, which must not keep its own copies) no plain
    linear weight of the transformer is alive: packing does not double the memory of a large model."""
    import vaura.generate as G

    pipe = G.load_pipeline(debug_weights=True)
    refs = [weakref.ref(m.weight) for m in pipe.transformer.modules() if type(m) is nn.Linear]
    assert refs and pipe.accelerate_cpu("packed") == "packed"
    gc.collect()
    assert sum(r() is not None for r in refs) == 0


def test_refused_dtype_move_leaves_the_vaura_transformer_unchanged() -> None:
    """``.half()`` / ``.to(float64)`` of a packed V-AURA transformer raise before any of its tensors is converted
    (its first child holds a packed layer, and `torch.nn.Module._apply` visits children first), so the model still
    generates in fp32 after the refusal."""
    cfg = VAuraConfig.preset("tiny")
    model = build_model(cfg, debug_weights=True, seed=4).eval()
    pack_linears(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for move in (lambda m: m.half(), lambda m: m.to(torch.float64)):
        with pytest.raises(ConfigError, match="unpack_linears"):
            move(model)
        assert {t.dtype for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()} == {torch.float32}
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_compile_step_refuses_a_packed_model() -> None:
    from vaura.sampler import SamplingError

    cfg = VAuraConfig.preset("tiny")
    model = build_model(cfg, debug_weights=True, seed=0).eval()
    pack_linears(model)
    with pytest.raises(SamplingError, match="packed"):
        generate(model, torch.randn(1, 32, cfg.visual_dim), 5, compile_step=True)
