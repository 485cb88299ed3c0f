"""Strict loading of every Synchformer checkpoint layout (stage-II <ID>.pt, bare state dict, stage-I AVCLIP)."""

from __future__ import annotations

import json
import pickle
import sys
import types

import pytest
import torch

from tests.conftest import require_parity
from vaura.synchformer import MotionFormer, Synchformer, SynchformerConfig, load_sync_model, load_visual_encoder
from vaura.synchformer.api import init_random_weights
from vaura.synchformer.checkpoint import STAGE1_TO_SYNC, STAGE1_TO_VISUAL, SYNC_TO_VISUAL, read_checkpoint
from visualsound.errors import CheckpointError
from visualsound.utils.checkpoint import load_state_dict_strict

TINY = SynchformerConfig.preset("tiny")


@pytest.fixture(scope="module")
def tiny_sd() -> dict[str, torch.Tensor]:
    return init_random_weights(Synchformer(TINY), seed=5).state_dict()


def _stage1(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    out = {f"{prefix}logit_scale": torch.tensor(2.6593)}
    out.update({f"{prefix}v_encoder.{k[len('vfeat_extractor.'):]}": v for k, v in sd.items()
                if k.startswith("vfeat_extractor.")})
    out.update({f"{prefix}a_encoder.{k[len('afeat_extractor.'):]}": v for k, v in sd.items()
                if k.startswith("afeat_extractor.")})
    return out


def _same(model: torch.nn.Module, sd: dict[str, torch.Tensor], prefix: str = "") -> None:
    got = model.state_dict()
    for k, v in got.items():
        assert torch.equal(v, sd[prefix + k]), k


# -- full-size layouts on the meta device --------------------------------------------------------------------
def _manifest(name: str) -> list:
    root = require_parity("synchformer", name)
    return json.loads((root / name).read_text())["entries"]


def _meta_state(entries: list) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, dtype=getattr(torch, dtype), device="meta") for k, shape, dtype in entries}


def test_paper_sync_model_matches_manifest_on_meta() -> None:
    entries = _manifest("manifest_sync_model.json")
    with torch.device("meta"):
        model = Synchformer(SynchformerConfig.preset("paper"))
    own = model.state_dict()
    ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in own.items()]
    assert ours == [list(e) for e in entries]  # names, order, shapes and dtypes
    assert sum(v.numel() for v in own.values()) == 237_460_245
    load_state_dict_strict(model, _meta_state(entries), what="manifest_sync_model")


def test_paper_stage1_layout_loads_visual_encoder_on_meta() -> None:
    entries = _manifest("manifest_stage1.json")
    state = _meta_state(entries)
    assert next(iter(state)) == "module.logit_scale"
    with torch.device("meta"):
        encoder = MotionFormer(SynchformerConfig.preset("paper"))
        sync = Synchformer(SynchformerConfig.preset("paper"))
    for prefix in ("module.", ""):
        sd = {k.removeprefix("module.") if not prefix else k: v for k, v in state.items()}
        load_state_dict_strict(encoder, STAGE1_TO_VISUAL.apply(sd), what="stage-I visual")
        enc_sd = STAGE1_TO_SYNC.apply(sd)
        assert len(enc_sd) == 450 and set(enc_sd) <= set(sync.state_dict())
    visual_from_sync = SYNC_TO_VISUAL.apply(_meta_state(_manifest("manifest_sync_model.json")))
    assert list(visual_from_sync) == list(encoder.state_dict())


def test_meta_loading_rejects_wrong_shapes() -> None:
    entries = _manifest("manifest_sync_model.json")
    state = _meta_state(entries)
    state["transformer.off_head.weight"] = torch.empty(20, 768, device="meta")
    with torch.device("meta"):
        model = Synchformer(SynchformerConfig.preset("paper"))
    with pytest.raises(CheckpointError, match="off_head.weight"):
        load_state_dict_strict(model, state)


# -- files on disk (tiny random tensors) ---------------------------------------------------------------------
CALLS: list[str] = []


def _install_fake_omegaconf() -> type:
    """A stand-in for ``omegaconf.dictconfig.DictConfig`` whose unpickling would run code (it must not)."""
    mod = types.ModuleType("omegaconf.dictconfig")
    pkg = types.ModuleType("omegaconf")

    def boom(*args: object) -> None:
        CALLS.append(f"executed with {args}")
        raise AssertionError("pickled code was executed")

    class DictConfig:
        def __init__(self, content: dict) -> None:
            self.content = content

        def __reduce__(self) -> tuple:
            return boom, (self.content,)

    boom.__module__ = DictConfig.__module__ = "omegaconf.dictconfig"
    boom.__qualname__ = "boom"
    mod.DictConfig, mod.boom = DictConfig, boom  # type: ignore[attr-defined]
    pkg.dictconfig = mod  # type: ignore[attr-defined]
    sys.modules["omegaconf"], sys.modules["omegaconf.dictconfig"] = pkg, mod
    return DictConfig


def test_full_sync_checkpoint_with_pickled_config(tmp_path, tiny_sd) -> None:
    path = tmp_path / "24-01-04T16-39-21.pt"
    try:
        dict_config = _install_fake_omegaconf()
        torch.save({"args": dict_config({"model": {"target": "Synchformer"}}), "loss": 0.5, "epoch": 3,
                    "metrics": {"accuracy_1": 0.4}, "model": tiny_sd, "model_type": "Synchformer"}, path)
        with pytest.raises(pickle.UnpicklingError):  # a plain weights-only load refuses the file
            torch.load(path, weights_only=True)
        model = load_sync_model(checkpoint=path, config=TINY)
        layout, _ = read_checkpoint(path)
    finally:
        sys.modules.pop("omegaconf", None)
        sys.modules.pop("omegaconf.dictconfig", None)
    assert CALLS == [], CALLS
    assert layout == "sync_full" and not model.training
    _same(model, tiny_sd)
    encoder = load_visual_encoder(checkpoint=path, config=TINY)  # the visual encoder of a stage-II model
    _same(encoder, tiny_sd, "vfeat_extractor.")


def test_bare_state_dict(tmp_path, tiny_sd) -> None:
    path = tmp_path / "synchformer_state_dict.pth"
    torch.save(tiny_sd, path)
    model = load_sync_model(checkpoint=path, config=TINY)
    assert read_checkpoint(path)[0] == "sync_bare"
    _same(model, tiny_sd)


@pytest.mark.parametrize("prefix", ["module.", ""])
def test_stage1_checkpoint_visual_encoder(tmp_path, tiny_sd, prefix: str) -> None:
    path = tmp_path / "epoch_best.pt"
    torch.save({"epoch": 7, "name": "23-12-22T16-10-50", "state_dict": _stage1(tiny_sd, prefix),
                "metrics": {"sync_w_shifts": 0.1}}, path)
    encoder = load_visual_encoder(checkpoint=path, config=TINY)
    _same(encoder, tiny_sd, "vfeat_extractor.")
    with pytest.raises(CheckpointError, match="no offset head"):
        load_sync_model(checkpoint=path, config=TINY)


def test_unknown_and_missing_keys_are_listed(tmp_path, tiny_sd) -> None:
    extra = dict(tiny_sd, **{"transformer.extra_head.weight": torch.zeros(2)})
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="transformer.extra_head.weight"):
        load_sync_model(checkpoint=tmp_path / "extra.pt", config=TINY)
    missing = {k: v for k, v in tiny_sd.items() if k != "aproj.bias"}
    torch.save({"model": missing}, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="aproj.bias"):
        load_sync_model(checkpoint=tmp_path / "missing.pt", config=TINY)
    stage1 = _stage1(tiny_sd, "module.")
    stage1["module.v_encoder.unused.weight"] = torch.zeros(1)
    torch.save({"state_dict": stage1}, tmp_path / "stage1.pt")
    with pytest.raises(CheckpointError, match="unused.weight"):
        load_visual_encoder(checkpoint=tmp_path / "stage1.pt", config=TINY)
    stage1 = _stage1(tiny_sd, "module.")
    stage1["module.text_encoder.w"] = torch.zeros(1)  # not on the explicit ignore list
    torch.save({"state_dict": stage1}, tmp_path / "stage1b.pt")
    with pytest.raises(CheckpointError, match="text_encoder"):
        load_visual_encoder(checkpoint=tmp_path / "stage1b.pt", config=TINY)


def test_not_a_checkpoint(tmp_path) -> None:
    torch.save({"foo": 1}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="not a Synchformer checkpoint"):
        load_sync_model(checkpoint=tmp_path / "x.pt", config=TINY)


def test_debug_weights_are_seeded() -> None:
    a = load_visual_encoder(debug_weights=True)
    b = load_visual_encoder(debug_weights=True)
    assert a.cfg == TINY
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert a.patch_embed_3d.proj.weight.abs().sum() > 0


def test_paper_size_shapes_on_meta() -> None:
    """Paper-size forward on the meta device: 14 windows -> 198 tokens -> 21 logits; V-AURA clip -> [B, 4, 8, 768]."""
    with torch.device("meta"):
        model = Synchformer(SynchformerConfig.preset("paper")).eval()
        video, audio = torch.empty(2, 14, 16, 3, 224, 224), torch.empty(2, 14, 1, 128, 66)
    with torch.no_grad():
        out = model(video, audio)
        vaura = model.vfeat_extractor(torch.empty(3, 4, 3, 16, 224, 224, device="meta"))
    assert out.logits.shape == (2, 21) and out.hidden.shape == (2, 198, 768)
    assert out.vis_feats.shape == (2, 14, 8, 768) and out.aud_feats.shape == (2, 14, 6, 768)
    assert vaura.shape == (3, 4, 8, 768)
    with pytest.raises(AssertionError, match="expected"):
        model.vfeat_extractor(torch.empty(1, 4, 16, 3, 224, 224, device="meta"))  # frames/channels swapped
