"""PANNs Cnn14 (16 kHz): front-end constants, strict loading of the release layout, and parity with av-benchmark's
original Cnn14 on the ``avbench`` fixture (full-size seeded random weights rebuilt from its recipe)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.metrics.panns import (
    Cnn14,
    Cnn14Config,
    PannsInputError,
    load_panns,
    panns_state_dict,
    slaney_hz_to_mel,
    slaney_mel_filterbank,
    slaney_mel_to_hz,
    stft_kernels,
)
from tests import avbench_fixture as fx
from visualsound.errors import CheckpointError, ConfigError
from visualsound.utils.checkpoint import load_state_dict_strict

PAPER = Cnn14Config.preset("paper")
#: clips whose full 16 kHz waveform the fixture stores (``intermediates[key]['wav16k']``)
WAV_KEYS = ("gt/vid_001_stereo", "gt/vid_004_long", "gt/zxpo56cpUBU_000007", "pred/vid_000_engine",
            "pred/vid_002_speechy")
FRONTEND_KEYS = ("spectrogram_extractor.stft.conv_real.weight", "spectrogram_extractor.stft.conv_imag.weight",
                 "logmel_extractor.melW")


def _close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    """README §6: rtol 1e-4 plus atol 1e-4 x max|ref|."""
    assert ours.shape == ref.shape, f"{what}: {tuple(ours.shape)} vs {tuple(ref.shape)}"
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item(), msg=what)


def _reference(key: str) -> dict[str, torch.Tensor]:
    side, stem = key.split("/", 1)
    return fx.cache(side, "pann_features")[stem]


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    """The fixture's full-size random Cnn14 saved in the release layout and loaded through `load_panns`:
    ``(recipe state dict, model, per-clip outputs from single-item forwards)``."""
    recipe = fx.recipe_state_dict("panns")
    path = tmp_path_factory.mktemp("panns") / "Cnn14_16k_mAP=0.438.pth"
    # the release file also carries the training iteration and the sampler state (numpy arrays): not read
    torch.save({"iteration": 0, "model": recipe, "sampler": {"random_state": np.arange(4)}}, path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = load_panns(checkpoint=path)
        intermediates = fx.expected()["intermediates"]
        with torch.no_grad():
            singles = {key: model(intermediates[key]["wav16k"][None]) for key in WAV_KEYS}
    finally:
        torch.set_num_threads(threads)
    return recipe, model, singles


# ------------------------------------------------------------------------------------------------ front end
def test_slaney_mel_scale_known_points():
    # linear at 200/3 Hz per mel up to 1 kHz (mel 15), then 27 mels per factor 6.4
    assert slaney_hz_to_mel(np.array([0.0, 200.0 / 3.0, 1000.0, 6400.0])) == pytest.approx([0.0, 1.0, 15.0, 42.0])
    f = np.array([0.0, 50.0, 999.0, 1000.0, 4000.0, 8000.0])
    np.testing.assert_allclose(slaney_mel_to_hz(slaney_hz_to_mel(f)), f, rtol=1e-12, atol=1e-9)


def test_mel_filterbank_shape_and_area_norm():
    mel = slaney_mel_filterbank(16000, 512, 64, 50.0, 8000.0)
    assert mel.shape == (257, 64) and mel.dtype == torch.float32 and (mel >= 0).all()
    mel = mel.double()
    # Slaney norm: each triangle (peak 1, base f[i+2] - f[i]) is scaled to unit area, so peak = 2 / base
    hz = slaney_mel_to_hz(np.linspace(slaney_hz_to_mel(50.0), slaney_hz_to_mel(8000.0), 66))
    bin_hz = 16000 / 512
    area = mel.sum(0).numpy() * bin_hz  # Riemann sum of each triangle over the 31.25 Hz bins
    wide = (hz[2:] - hz[:-2]) > 8 * bin_hz  # narrow low triangles are undersampled by the bins
    np.testing.assert_allclose(area[wide], 1.0, rtol=0.05)
    assert mel[:2].abs().max() == 0  # 0 and 31.25 Hz lie below fmin = 50 Hz


def test_log_mel_equals_torch_stft_definition(rng):
    """The conv STFT + melW + dB equals the textbook definition (torch.stft, periodic Hann, reflect padding)."""
    model = Cnn14(Cnn14Config.preset("tiny")).eval()
    wave = torch.randn(2, 16000, generator=rng) * 0.1
    with torch.no_grad():
        ours = model.log_mel(wave)
    spec = torch.stft(wave.double(), 512, 160, window=torch.hann_window(512, periodic=True, dtype=torch.float64),
                      center=True, pad_mode="reflect", return_complex=True).abs() ** 2  # [B, 257, T]
    mel = spec.transpose(1, 2) @ slaney_mel_filterbank(16000, 512, 64, 50.0, 8000.0).double()
    ref = 10 * torch.log10(mel.clamp(min=1e-10))
    assert ours.shape == (2, PAPER.num_frames(16000), 64) == (2, 101, 64)
    assert (ours.double() - ref).abs().max() < 1e-3


def test_constructed_frontend_matches_torchlibrosa_values():
    """`stft_kernels` / `slaney_mel_filterbank` give what torchlibrosa built for the fixture (measured: bit-exact),
    so a fresh model and the debug weights use the real front end."""
    stored = torch.load(fx.root("weights/panns_frontend.pt") / "weights" / "panns_frontend.pt", weights_only=True)
    real, imag = stft_kernels(512)
    built = dict(zip(FRONTEND_KEYS, (real, imag, slaney_mel_filterbank(16000, 512, 64, 50.0, 8000.0)), strict=True))
    fresh = Cnn14(Cnn14Config.preset("tiny")).state_dict()
    for key in FRONTEND_KEYS:
        assert built[key].dtype == stored[key].dtype == torch.float32 and built[key].shape == stored[key].shape
        # one float32 ulp of the largest entries at most (exact here with numpy 2.4)
        assert (built[key] - stored[key]).abs().max() <= 3e-8, key
        assert torch.equal(fresh[key], built[key]), key


# ------------------------------------------------------------------------------------------------ loading
def test_manifest_loads_strictly_on_meta_device():
    manifest = fx.manifest("panns_cnn14_16k")
    raw = {k: torch.empty(shape, dtype=getattr(torch, dtype), device="meta") for k, shape, dtype in manifest}
    assert len(raw) == 84 and sum(v.numel() for v in raw.values()) == 81_049_500
    with torch.device("meta"):
        net = Cnn14(PAPER)
    assert list(net.state_dict()) == [k for k, _, _ in manifest]
    load_state_dict_strict(net, panns_state_dict({"model": raw}))
    with torch.device("meta"):  # a DataParallel prefix maps to the same keys
        load_state_dict_strict(Cnn14(PAPER), panns_state_dict({"module." + k: v for k, v in raw.items()}))

    def load(sd: dict[str, torch.Tensor]) -> None:
        with torch.device("meta"):
            load_state_dict_strict(Cnn14(PAPER), panns_state_dict({"model": sd}), what="test file")

    broken = dict(raw)
    del broken["conv_block6.bn2.running_var"]
    with pytest.raises(CheckpointError, match=r"missing keys: conv_block6\.bn2\.running_var"):
        load(broken)
    with pytest.raises(CheckpointError, match=r"unexpected keys: fc1\.scale"):
        load(raw | {"fc1.scale": torch.empty(1, device="meta")})
    with pytest.raises(CheckpointError, match=r"match no rule.*conv_block7\.conv1\.weight"):
        load(raw | {"conv_block7.conv1.weight": torch.empty(1, device="meta")})
    with pytest.raises(CheckpointError, match=r"fc_audioset\.weight: checkpoint \(10, 2048\) vs model \(527, 2048\)"):
        load(raw | {"fc_audioset.weight": torch.empty(10, 2048, device="meta")})


def test_recipe_checkpoint_loads_strictly(paper):
    recipe, model, _ = paper
    state = model.state_dict()
    assert set(state) == set(recipe) and not model.training and not model.debug_weights
    assert all(torch.equal(state[k], recipe[k]) for k in recipe)
    assert not any(p.requires_grad for p in model.spectrogram_extractor.parameters())
    assert not model.logmel_extractor.melW.requires_grad


def test_bad_checkpoints_raise_clear_errors(tmp_path, monkeypatch):
    from visualsound.weights import WeightsNotFoundError

    monkeypatch.setenv("VAURA_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(WeightsNotFoundError, match="panns_cnn14_16k"):
        load_panns()
    with pytest.raises(WeightsNotFoundError, match="nope.pth"):
        load_panns(tmp_path / "nope.pth")
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="list.pth: expected a PANNs checkpoint"):
        load_panns(tmp_path / "list.pth")
    torch.save({"model": {"fc1.weight": torch.zeros(2048, 2048)}}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="missing keys"):
        load_panns(tmp_path / "partial.pth")
    with pytest.raises(ConfigError, match="not both"):
        load_panns(tmp_path / "partial.pth", debug_weights=True)


# ------------------------------------------------------------------------------------------------ parity
def test_log_mel_parity(paper, one_thread):
    """README §6: max abs 0.05 dB and mean abs 1e-3 dB against the original's ``panns_logmel``."""
    _, model, _ = paper
    intermediates = fx.expected()["intermediates"]
    for key in WAV_KEYS:
        wave = intermediates[key]["wav16k"]
        ref = intermediates[key]["panns_logmel"]
        with torch.no_grad():
            ours = model.log_mel(wave[None])[0]
        assert ours.shape == ref.shape == (PAPER.num_frames(wave.numel()), 64) == (801, 64), key
        diff = (ours - ref).abs()
        assert diff.max() <= 0.05 and diff.mean() <= 1e-3, f"{key}: max {diff.max():.3g}, mean {diff.mean():.3g}"


def test_embedding_and_logits_parity_from_waveforms(paper):
    """16 kHz waveform -> '2048' / logits / clipwise_output against the original's ``pann_features.pth``."""
    _, _, singles = paper
    for key in WAV_KEYS:
        ref, out = _reference(key), singles[key]
        assert out.embedding.shape == (1, 2048) and out.logits.shape == (1, 527)
        _close(out.embedding[0], ref["2048"], f"{key} embedding")
        _close(out.logits[0], ref["logits"], f"{key} logits")
        _close(out.clipwise_output[0], ref["clipwise_output"], f"{key} clipwise_output")


def test_network_parity_from_stored_log_mels(paper, one_thread):
    """The network alone, from the original's log-mel of clips without a stored waveform: a 5 s GT (501 frames),
    a 6 s generated clip (601 frames), a GT-only and a renamed generated clip (801 frames)."""
    _, model, _ = paper
    intermediates = fx.expected()["intermediates"]
    keys = ("gt/vid_003_short", "pred/vid_005_drums", "gt/gt_only_wind", "pred/zxpo56cpUBU_000007-0")
    frames = set()
    for key in keys:
        log_mel = intermediates[key]["panns_logmel"]
        frames.add(log_mel.shape[0])
        with torch.no_grad():
            out = model.from_log_mel(log_mel[None])
        ref = _reference(key)
        _close(out.embedding[0], ref["2048"], f"{key} embedding")
        _close(out.logits[0], ref["logits"], f"{key} logits")
    assert frames == {801, 601, 501}


def test_batched_forward_equals_single_items(paper, one_thread):
    _, model, singles = paper
    intermediates = fx.expected()["intermediates"]
    batch = torch.stack([intermediates[key]["wav16k"] for key in WAV_KEYS])  # [5, 128000]
    with torch.no_grad():
        out = model(batch)
    assert out.embedding.shape == (5, 2048) and out.logits.shape == (5, 527)
    for i, key in enumerate(WAV_KEYS):
        for name in ("embedding", "logits"):
            one = getattr(singles[key], name)[0]
            torch.testing.assert_close(getattr(out, name)[i], one, rtol=1e-5, atol=1e-5 * one.abs().max().item(),
                                       msg=f"{key} {name}")


# ------------------------------------------------------------------------------------------------ debug weights, inputs
def test_debug_weights_are_deterministic_and_use_the_real_front_end(rng):
    a, b = load_panns(debug_weights=True), load_panns(debug_weights=True)
    assert a.debug_weights and a.config == Cnn14Config.preset("tiny") and not a.training
    real, imag = stft_kernels(512)
    assert torch.equal(a.spectrogram_extractor.stft.conv_real.weight, real)
    assert torch.equal(a.spectrogram_extractor.stft.conv_imag.weight, imag)
    wave = torch.randn(3, 8000, generator=rng) * 0.1
    with torch.no_grad():
        out_a, out_b = a(wave), b(wave)
    assert out_a.embedding.shape == (3, 64) and out_a.logits.shape == (3, 527)
    assert torch.equal(out_a.embedding, out_b.embedding) and torch.equal(out_a.logits, out_b.logits)
    assert torch.isfinite(out_a.logits).all() and out_a.embedding.abs().sum() > 0
    assert not torch.allclose(out_a.logits[0], out_a.logits[1])  # different inputs, different outputs
    assert ((out_a.clipwise_output > 0) & (out_a.clipwise_output < 1)).all()


def test_bad_inputs_raise(rng):
    model = load_panns(debug_weights=True)
    with pytest.raises(PannsInputError, match=r"\[B, N\]"):
        model(torch.zeros(16000))
    with pytest.raises(PannsInputError, match="float"):
        model(torch.zeros(1, 16000, dtype=torch.int16))
    min_n = PAPER.min_samples
    assert min_n == 4960
    with pytest.raises(PannsInputError, match="at least 4960"):
        model(torch.zeros(1, min_n - 1))
    with torch.no_grad():
        assert model(torch.randn(1, min_n, generator=rng)).logits.shape == (1, 527)
    with pytest.raises(PannsInputError, match="frames are too few"):
        model.from_log_mel(torch.zeros(1, 31, 64))


def test_config_validation():
    assert Cnn14Config.preset_names() == ["paper", "tiny"]
    assert PAPER.num_frames(128000) == 801 and PAPER.num_frames(80000) == 501
    with pytest.raises(ConfigError, match="6 positive conv widths"):
        Cnn14Config(channels=(8, 8))
    with pytest.raises(ConfigError, match="fmax"):
        Cnn14Config(fmax=9000.0)
    with pytest.raises(ConfigError, match="mel bins"):
        Cnn14Config(mel_bins=16)
