"""Parity of vaura.synchformer with the original Synchformer (fixtures: /work/shared/parity/synchformer/reduced).

Tolerances follow the fixture README: preprocessing exact (LUT, sha256, filterbank), ``aud_input`` atol 1e-5,
``mel_power_seg0`` rtol 1e-4 / atol 1e-7, every float output atol = rtol = 1e-4 in fp32, classes exact.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from tests.conftest import require_parity
from vaura.synchformer import Synchformer, SynchformerConfig
from vaura.synchformer import preprocess as P
from visualsound.utils.checkpoint import load_state_dict_strict

TOL = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def fx() -> dict:
    root = require_parity("synchformer", "reduced/weights.pt", "reduced/inputs.pt", "reduced/expected.pt")
    load = lambda name: torch.load(root / "reduced" / name, weights_only=True)  # noqa: E731
    return {"weights": load("weights.pt"), "inputs": load("inputs.pt"), "expected": load("expected.pt")}


@pytest.fixture(scope="module")
def model(fx: dict) -> Synchformer:
    m = Synchformer(SynchformerConfig.preset("reduced")).eval()
    load_state_dict_strict(m, fx["weights"], what="reduced fixture weights")
    return m


@pytest.fixture(scope="module")
def run(fx: dict, model: Synchformer) -> dict:
    """One forward pass of the whole pipeline from the fixture's raw inputs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        video = P.video_for_sync(fx["inputs"]["video_uint8"])
        audio = P.audio_for_sync(fx["inputs"]["audio_f32"])
        with torch.no_grad():
            out = model(video, audio)
            seg0 = video[0, 0].transpose(0, 1).unsqueeze(0)  # [1, 3, 16, H, W]
            patch = model.vfeat_extractor.patchify(seg0)[0]
            backbone = model.vfeat_extractor.backbone(seg0)[0]
            ast = model.afeat_extractor.ast(audio[:1, 0, 0])[0]
            vaura = model.vfeat_extractor.features(fx["inputs"]["vaura_video_uint8"])
    finally:
        torch.set_num_threads(threads)
    return {"video": video, "audio": audio, "out": out, "patch": patch, "backbone": backbone, "ast": ast,
            "vaura": vaura}


# -- preprocessing -------------------------------------------------------------------------------------------
def test_lookup_tables_exact(fx: dict) -> None:
    assert torch.equal(P.video_norm_lut(), fx["expected"]["video_norm_lut"])
    assert torch.equal(P.vaura_norm_lut(), fx["expected"]["vaura_video_norm_lut"])
    fp32 = (torch.arange(256) / 255.0 - 0.5) / 0.5
    assert not torch.equal(P.video_norm_lut(), fp32), "the sync LUT must be the fp16 one, not the fp32 formula"


def test_segment_indices(fx: dict) -> None:
    assert torch.equal(P.segment_frame_index(), fx["expected"]["segment_frame_index"])
    starts = torch.arange(P.N_SEGMENTS) * (P.SEGMENT_SAMPLES // 2)
    assert torch.equal(starts, fx["expected"]["segment_sample_start"])


def test_video_input_bit_exact(fx: dict, run: dict) -> None:
    exp = fx["expected"]
    video = run["video"]
    assert list(video.shape) == exp["vis_input_shape"]
    fp16 = video.half().contiguous()
    assert torch.equal(fp16.float(), video), "sync video values must be exactly representable in fp16"
    assert hashlib.sha256(fp16.numpy().tobytes()).hexdigest() == exp["vis_input_sha256_fp16"]
    assert torch.equal(video[:, 0, 0], exp["vis_input_seg0_frame0"])
    assert torch.equal(video[:, 13, 15], exp["vis_input_seg13_frame15"])
    torch.testing.assert_close(video.double().sum(dim=(3, 4, 5)), exp["vis_input_sum_per_frame"], atol=1e-6, rtol=0)


def test_vaura_video_input_bit_exact(fx: dict) -> None:
    exp = fx["expected"]
    x = P.preprocess_video_for_vaura(fx["inputs"]["vaura_video_uint8"])
    assert list(x.shape) == exp["vaura_vis_input_shape"] and x.dtype == torch.float32
    assert hashlib.sha256(x.contiguous().numpy().tobytes()).hexdigest() == exp["vaura_vis_input_sha256_fp32"]
    single = P.preprocess_video_for_vaura(fx["inputs"]["vaura_video_uint8"][0])
    assert torch.equal(single, x[:1])


def test_mel_and_audio_input(fx: dict, run: dict) -> None:
    exp = fx["expected"]
    assert torch.equal(P.mel_filterbank(), exp["mel_fbanks"])
    wave = fx["inputs"]["audio_f32"]
    torch.testing.assert_close(P.mel_power(wave[:, :P.SEGMENT_SAMPLES]), exp["mel_power_seg0"], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(run["audio"], exp["aud_input"], atol=1e-5, rtol=0)
    torch.testing.assert_close(run["audio"][:, 0, 0], exp["aud_input_seg0"], atol=1e-5, rtol=0)
    torch.testing.assert_close(run["audio"][:, 13, 0], exp["aud_input_seg13"], atol=1e-5, rtol=0)


# -- model ---------------------------------------------------------------------------------------------------
def test_weights_layout_and_order(fx: dict, model: Synchformer) -> None:
    assert list(model.state_dict()) == list(fx["weights"]), "state-dict names/order differ from upstream"


def test_intermediates(fx: dict, run: dict) -> None:
    exp = fx["expected"]
    torch.testing.assert_close(run["patch"], exp["dbg_vis_patch_embed_b0s0"], **TOL)
    torch.testing.assert_close(run["backbone"], exp["dbg_vis_backbone_norm_b0s0"], **TOL)
    torch.testing.assert_close(run["ast"], exp["dbg_ast_last_hidden_b0s0"], **TOL)


@pytest.mark.parametrize("key,attr", [("vis_feats", "vis_feats"), ("aud_feats", "aud_feats"), ("vproj", "vproj"),
                                      ("aproj", "aproj"), ("transformer_ln_f", "hidden"), ("logits", "logits")])
def test_outputs(fx: dict, run: dict, key: str, attr: str) -> None:
    torch.testing.assert_close(getattr(run["out"], attr), fx["expected"][key], **TOL)


def test_prediction(fx: dict, model: Synchformer, run: dict) -> None:
    exp = fx["expected"]
    logits = run["out"].logits
    probs = torch.softmax(logits, -1)
    torch.testing.assert_close(probs, exp["probs"], **TOL)
    assert torch.equal(logits.argmax(-1), exp["pred_class"])
    assert torch.equal(model.offsets(), exp["class_grid"])
    torch.testing.assert_close(model.offsets()[logits.argmax(-1)], exp["pred_offset_sec"], atol=1e-6, rtol=0)
    top2 = logits.topk(2, dim=-1).values
    torch.testing.assert_close(top2[:, 0] - top2[:, 1], exp["top1_minus_top2_logit"], **TOL)


def test_vaura_features(fx: dict, run: dict) -> None:
    torch.testing.assert_close(run["vaura"], fx["expected"]["vaura_vis_feats"], **TOL)


def test_fp32_normalisation_would_be_caught(fx: dict, model: Synchformer, run: dict) -> None:
    """The typical porting mistake (fp32 pixel normalisation) moves vis_feats beyond the tolerance."""
    frames = fx["inputs"]["video_uint8"][:, :16]  # segment 0 only
    wrong = ((frames.float() / 255 - 0.5) / 0.5).permute(0, 4, 1, 2, 3).unsqueeze(1)  # [1, 1, 3, 16, H, W]
    with torch.no_grad():
        feats = model.vfeat_extractor(wrong)
    diff = (feats[:, 0] - fx["expected"]["vis_feats"][:, 0]).abs().max().item()
    assert diff > 1e-4, diff


@pytest.mark.slow
def test_public_api_path(fx: dict, model: Synchformer) -> None:
    """uint8 window + waveform through `predict_windows` (what `predict_offset` runs) gives upstream's result."""
    from vaura.synchformer import predict_windows

    probs = predict_windows(model, fx["inputs"]["video_uint8"], fx["inputs"]["audio_f32"])
    torch.testing.assert_close(probs, fx["expected"]["probs"], **TOL)
    assert torch.equal(probs.argmax(-1), fx["expected"]["pred_class"])
