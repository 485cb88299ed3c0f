"""KLD metric with PaSST: known-answer KL math, front-end pieces, strict loading, and parity with the original
GMELab + hear21passt pipeline on the ``passt_kld`` fixture (reduced random PaSST)."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from benchmarks.metrics.kld import (
    KLDConfig,
    KLDInputError,
    compute_kld,
    kl_divergence,
    kl_per_pair,
    load_start_secs,
    prepare_pair,
    read_audio_file,
    read_kld_clip,
)
from benchmarks.metrics.passt import (
    PaSST,
    PasstConfig,
    PasstInputError,
    load_passt,
    passt_logits_32k,
    passt_probs,
    passt_probs_batch,
    passt_state_dict,
    to_passt_input,
)
from benchmarks.metrics.passt_frontend import PasstMel, kaldi_mel_banks, resample_frac
from tests.conftest import require_parity
from visualsound.errors import CheckpointError, ConfigError

CLIPS = ("generated/pair_a.wav", "gt/pair_a.wav", "generated/pair_b.wav", "gt/pair_b.wav")


# ------------------------------------------------------------------------------------------------
# KL math
# ------------------------------------------------------------------------------------------------
def test_kl_of_identical_tables_is_zero(rng):
    p = torch.rand(4, 527, generator=rng).softmax(dim=-1)
    assert abs(kl_divergence(p, p, eps=0.0)) < 1e-6
    # with the generated-side epsilon the value is -sum_c p log(1 + eps / p), i.e. within [-C * eps, 0]
    with_eps = kl_divergence(p, p)
    assert -527 * 1e-6 - 1e-6 <= with_eps <= 1e-6


def test_kl_two_class_hand_computed():
    p_gt = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    p_gen = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    # pair 0: 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln(4/3); pair 1: ln 2 (the zero GT class adds nothing)
    exact = [0.5 * math.log(4.0 / 3.0), math.log(2.0)]
    assert kl_per_pair(p_gt, p_gen, eps=0.0).tolist() == pytest.approx(exact, abs=1e-6)
    assert kl_divergence(p_gt, p_gen, eps=0.0) == pytest.approx(sum(exact) / 2, abs=1e-6)
    with_eps = [0.5 * (math.log(0.5) - math.log(0.25 + 1e-6)) + 0.5 * (math.log(0.5) - math.log(0.75 + 1e-6)),
                math.log(1.0) - math.log(0.5 + 1e-6)]
    assert kl_per_pair(p_gt, p_gen).tolist() == pytest.approx(with_eps, abs=1e-6)
    # direction matters: KL(gen || gt) with eps on the GT side is large because p_gt has a zero
    assert kl_divergence(p_gen, p_gt) > 3.0


def test_kl_rejects_mismatched_tables():
    with pytest.raises(KLDInputError, match="one shape"):
        kl_divergence(torch.ones(2, 3) / 3, torch.ones(3, 3) / 3)


# ------------------------------------------------------------------------------------------------
# Front-end pieces
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sr", [44100, 48000, 24000, 16000])
def test_resample_lengths_dc_and_sine(sr):
    n = int(0.5 * sr)
    ones = torch.ones(n)
    out = resample_frac(ones, sr)
    g = math.gcd(sr, 32000)
    assert out.shape == (int((32000 // g) * n / (sr // g)),)
    assert torch.allclose(out, torch.ones_like(out), atol=1e-5)  # kernels sum to 1, edges replicate
    t = torch.arange(n, dtype=torch.float64) / sr
    y = resample_frac(torch.sin(2 * math.pi * 1000 * t).float(), sr)
    t32 = torch.arange(y.shape[0], dtype=torch.float64) / 32000
    ref = torch.sin(2 * math.pi * 1000 * t32).float()
    mid = slice(1000, y.shape[0] - 1000)
    assert (y[mid] - ref[mid]).abs().max() < 2e-3
    assert resample_frac(ones, 32000) is ones


def test_kaldi_mel_banks_match_torchaudio():
    import torchaudio.compliance.kaldi as kaldi  # a hard dependency: never skip this comparison
    ref, _ = kaldi.get_mel_banks(128, 1024, 32000.0, 0.0, 15000.0, 100.0, -500.0, 1.0)
    ours = kaldi_mel_banks(128, 1024, 32000, 0.0, 15000.0)
    assert ours.shape == (128, 512)
    assert torch.equal(ours, ref.float())


def test_mel_frame_counts(rng):
    mel = PasstMel()
    assert mel(torch.randn(2, 81920, generator=rng) * 0.1).shape == (2, 128, 256)
    assert mel.config.num_frames(320000) == 1000 and mel.config.fmax == 15000.0
    cfg = PasstConfig.preset("paper")
    assert (cfg.freq_patches, cfg.max_time_patches, cfg.time_patches(256)) == (12, 99, 25)
    with pytest.raises(ConfigError, match="divisible"):
        cfg.replace(num_heads=5)
    with pytest.raises(ConfigError, match="do not fit"):
        cfg.replace(n_mels=8)


# ------------------------------------------------------------------------------------------------
# Strict loading
# ------------------------------------------------------------------------------------------------
def test_manifest_loads_on_meta_device():
    root = require_parity("passt_kld", "manifest_passt.json")
    manifest = json.loads((root / "manifest_passt.json").read_text())
    raw = {k: torch.empty(shape, device="meta") for k, shape, _ in manifest["state_dict"]}
    assert len(raw) == manifest["num_tensors"] == 159
    assert sum(v.numel() for v in raw.values()) == manifest["num_elements"]
    cfg = PasstConfig.preset("paper")
    with torch.device("meta"):
        net = PaSST(cfg)
    from visualsound.utils.checkpoint import load_state_dict_strict

    load_state_dict_strict(net, passt_state_dict(raw, cfg))
    used = sum(p.numel() for p in net.parameters())
    assert used == manifest["num_elements"] - sum(raw[k].numel() for k in manifest["unused_in_forward"])
    # the hear21passt wrapper layout (net. prefix + device_proxy) maps to the same keys
    wrapped = {"net." + k: v for k, v in raw.items()} | {"device_proxy": torch.empty(1, device="meta")}
    with torch.device("meta"):
        load_state_dict_strict(PaSST(cfg), passt_state_dict(wrapped, cfg))
    broken = dict(raw)
    del broken["blocks.11.mlp.fc2.bias"]
    with torch.device("meta"), pytest.raises(CheckpointError, match="missing"):
        load_state_dict_strict(PaSST(cfg), passt_state_dict(broken, cfg))
    with pytest.raises(CheckpointError, match="match no rule"):
        passt_state_dict(raw | {"pos_embed": torch.empty(1, device="meta")}, cfg)


def test_missing_checkpoint_names_the_registry_entry(tmp_path, monkeypatch):
    from visualsound.weights import WeightsNotFoundError

    monkeypatch.setenv("VAURA_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(WeightsNotFoundError, match="passt"):
        load_passt()
    with pytest.raises(WeightsNotFoundError, match="nope.pt"):
        load_passt(tmp_path / "nope.pt")
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 768)}}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="missing keys"):
        load_passt(tmp_path / "partial.pt", config="tiny")
    with pytest.raises(ConfigError, match="not both"):  # never silently ignore a given checkpoint
        load_passt(tmp_path / "partial.pt", debug_weights=True)


# ------------------------------------------------------------------------------------------------
# Parity with the original pipeline
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fixture_root():
    return require_parity("passt_kld", "reduced/weights.pt", "expected.pt", "reduced/config.json")


@pytest.fixture(scope="module")
def reduced_model(fixture_root, tmp_path_factory):
    packed = torch.load(fixture_root / "reduced/weights.pt", weights_only=True)
    assert packed["format"] == "int8_pow2_v1"
    sd = {}
    for k in packed["key_order"]:
        if k in packed["int8_codes"]:
            sd[k] = packed["int8_codes"][k].to(torch.float32) * 2.0 ** packed["scale_exp2"][k]
        else:
            sd[k] = packed["float32"][k]
    digest = hashlib.sha256()
    for k in packed["key_order"]:
        digest.update(k.encode("utf-8"))
        digest.update(sd[k].contiguous().numpy().astype("<f4").tobytes())
    cfg = json.loads((fixture_root / "reduced/config.json").read_text())
    assert digest.hexdigest() == cfg["weights_file"]["decoded_state_dict_sha256"]
    path = tmp_path_factory.mktemp("passt") / "reduced.pt"
    torch.save({"model": sd}, path)  # timm-style container, unwrapped by the loader
    return load_passt(path, config="reduced")


def test_reduced_parity_per_clip(fixture_root, reduced_model):
    torch.set_num_threads(1)
    expected = torch.load(fixture_root / "expected.pt", weights_only=True)["clips"]
    net = reduced_model.net
    for name in CLIPS:
        exp = expected[name]
        audio, sr = read_audio_file(fixture_root / "clips" / name)
        wav = to_passt_input(fit_clip(audio, sr), sr)
        assert wav.shape == exp["wav_32k"].shape == (81920,)
        assert (wav - exp["wav_32k"]).abs().max() < 5e-5, name
        with torch.no_grad():
            mel = reduced_model.mel(wav[None]).unsqueeze(1)
            assert mel.shape == exp["mel"].shape == (1, 1, 128, 256)
            diff = (mel - exp["mel"]).abs()
            assert diff.max() < 2e-3 and diff.mean() < 5e-5, name
            grid = net.patch_embed(mel)[0]  # [768, 12, 25] before positional embeddings
            assert grid.shape == (768, 12, 25)
            assert (grid.mean(dim=(1, 2)) - exp["patch_embed_out_mean_over_ft"]).abs().max() < 1e-6
            assert (grid.mean(dim=0) - exp["patch_embed_out_mean_over_channels"]).abs().max() < 1e-6
            tokens = net.forward_tokens(mel)[0]
            assert tokens.shape == (302, 768)
            assert (tokens[0] - exp["cls_out"]).abs().max() < 2e-6
            assert (tokens[1] - exp["dist_out"]).abs().max() < 2e-6
            assert ((tokens[0] + tokens[1]) / 2 - exp["features"]).abs().max() < 2e-6
            logits = net(mel)[0]
        assert (logits - exp["logits"]).abs().max() < 2e-4, name
        probs = passt_probs(reduced_model, fit_clip(audio, sr), sr)
        assert probs.shape == (527,)
        assert (probs - exp["probs"]).abs().max() < 2e-5, name


def test_parity_tolerances_catch_known_mistakes(fixture_root, reduced_model, monkeypatch):
    """The tolerances above are tight enough to see the smallest documented mistakes (fixture README, 8.3)."""
    torch.set_num_threads(1)
    exp = torch.load(fixture_root / "expected.pt", weights_only=True)["clips"]["gt/pair_b.wav"]
    wav = exp["wav_32k"][None]
    periodic = PasstMel()
    periodic.window = torch.hann_window(800, periodic=True)
    assert (periodic(wav).unsqueeze(1) - exp["mel"]).abs().max() > 2e-3
    gelu = torch.nn.functional.gelu
    monkeypatch.setattr(torch.nn.functional, "gelu", lambda x: gelu(x, approximate="tanh"))
    with torch.no_grad():
        logits = reduced_model(wav)[0]
    assert (logits - exp["logits"]).abs().max() > 2e-4


def fit_clip(audio: torch.Tensor, sr: int) -> torch.Tensor:
    """The dataset's 2.56 s crop of one clip (the fixture clips are exactly that long already)."""
    return audio[:, : int(2.56 * sr)]


def test_reduced_parity_kld_end_to_end(fixture_root, reduced_model):
    torch.set_num_threads(1)
    expected = torch.load(fixture_root / "expected.pt", weights_only=True)
    clips = fixture_root / "clips"
    pairs = [(i, clips / "gt" / f"{i}.wav", clips / "generated" / f"{i}.wav") for i in ("pair_a", "pair_b")]
    result = compute_kld(pairs, model=reduced_model, config="paper", keep_probs=True)
    summary = expected["summary"]
    assert result.pair_ids == summary["pair_order"] and len(result.pair_ids) == summary["num_pairs"]
    for i, pair_id in enumerate(result.pair_ids):
        exp = expected["pairs"][pair_id]
        assert abs(result.kl_gt_gen[i] - float(exp["kl_gt_gen"])) < 2e-5, pair_id
        assert abs(result.kl_gen_gt[i] - float(exp["kl_gen_gt"])) < 2e-5, pair_id
        gt_probs, gen_probs = result.probs[pair_id]
        assert (gt_probs - expected["clips"][f"gt/{pair_id}.wav"]["probs"]).abs().max() < 2e-5
        assert (gen_probs - expected["clips"][f"generated/{pair_id}.wav"]["probs"]).abs().max() < 2e-5
    for key in ("kld", "kld_pq", "kld_qp", "kld_both"):
        assert abs(getattr(result, key) - summary[key]) < 2e-5, key
    report = result.to_dict()
    assert report["debug_weights"] is False and report["config"]["crop"] == "vaura-paper"


# ------------------------------------------------------------------------------------------------
# Cropping protocol, file reading, API errors
# ------------------------------------------------------------------------------------------------
def _write_wav(path, audio: np.ndarray, sr: int) -> None:
    """float [C, N] -> 16-bit PCM wav."""
    wavfile.write(path, sr, np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16).T.copy())


def test_read_audio_file_matches_int16_scaling(tmp_path, rng):
    audio = (torch.rand(2, 1000, generator=rng).numpy() - 0.5)
    _write_wav(tmp_path / "s.wav", audio, 44100)
    codes = np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)
    read, sr = read_audio_file(tmp_path / "s.wav")
    assert sr == 44100 and read.shape == (2, 1000) and read.dtype == torch.float32
    assert torch.equal(read, torch.from_numpy(codes.astype(np.float32) / 32768))
    down, sr24 = read_audio_file(tmp_path / "s.wav", resample_to=24000)
    assert sr24 == 24000 and down.shape[0] == 2 and abs(down.shape[1] - 1000 * 24000 / 44100) <= 2
    with pytest.raises(KLDInputError, match="not found"):
        read_audio_file(tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    with pytest.raises(KLDInputError):
        read_audio_file(tmp_path / "junk.wav")


def test_vaura_paper_crop_cuts_gt_to_generated_sample_count(rng):
    gt48 = torch.randn(2, 130000, generator=rng) * 0.1  # 48 kHz stereo, longer than 2.56 s
    gen44 = torch.randn(1, 100000, generator=rng) * 0.1  # 44.1 kHz, shorter: zero-padded to 112896
    gt_paper, gen_paper = prepare_pair(gt48, 48000, gen44, 44100, config=KLDConfig())
    # 112896 samples at 48 kHz = 2.352 s -> 75264 @ 32 kHz; the generated clip keeps 2.56 s
    assert gt_paper.shape == (75264,) and gen_paper.shape == (81920,)
    gt_fixed, gen_fixed = prepare_pair(gt48, 48000, gen44, 44100, config=KLDConfig.preset("corrected"))
    assert gt_fixed.shape == gen_fixed.shape == (81920,)
    assert torch.equal(gen_fixed, gen_paper)
    assert torch.equal(gt_fixed, resample_frac(gt48[:, :122880].mean(dim=0), 48000))
    # the GT start offset shifts only the GT
    gt_off, gen_off = prepare_pair(gt48, 48000, gen44, 44100, start_sec=0.25, config=KLDConfig.preset("corrected"))
    assert torch.equal(gen_off, gen_fixed)
    assert torch.equal(gt_off, resample_frac(torch.nn.functional.pad(gt48[:, 12000:].mean(dim=0), (0, 4880)),
                                             48000))
    with pytest.raises(ConfigError, match="crop"):
        KLDConfig(crop="middle")


def test_debug_model_scores_and_chunking(tmp_path, rng):
    torch.set_num_threads(1)
    model = load_passt(debug_weights=True)
    assert model.debug_weights
    audio = torch.randn(2, 44100, generator=rng) * 0.1
    probs = passt_probs(model, audio, 44100)
    assert probs.shape == (527,) and abs(float(probs.sum()) - 1.0) < 1e-5
    torch.manual_seed(123)  # debug weights do not depend on the global RNG
    assert torch.equal(passt_probs(load_passt(debug_weights=True), audio, 44100), probs)
    assert passt_logits_32k(model, torch.zeros(320000 + 4800)).shape == (1, 527)  # short tail dropped
    assert passt_logits_32k(model, torch.zeros(320000 + 4801)).shape == (2, 527)
    with pytest.raises(PasstInputError, match="chunks"):
        passt_probs(model, torch.zeros(1, 330000), 32000)
    with pytest.raises(PasstInputError, match="too short"):
        passt_probs(model, torch.zeros(4000), 32000)

    for name in ("a", "b"):
        for side in ("gt", "gen"):
            _write_wav(tmp_path / f"{side}_{name}.wav", torch.randn(1, 22050, generator=rng).numpy() * 0.1, 22050)
    pairs = [(n, tmp_path / f"gt_{n}.wav", tmp_path / f"gen_{n}.wav") for n in ("b", "a")]
    result = compute_kld(pairs, model=model)
    report = result.to_dict()
    assert report["debug_weights"] is True and report["pair_order"] == ["b", "a"]
    assert report["kld"] == pytest.approx(sum(result.kl_gt_gen) / 2, abs=1e-6)
    batched = compute_kld(pairs, model=model, batch_size=2)
    assert batched.kl_gt_gen == pytest.approx(result.kl_gt_gen, abs=1e-5)
    assert batched.kl_gen_gt == pytest.approx(result.kl_gen_gt, abs=1e-5)
    with pytest.raises(ConfigError, match="duration"):
        KLDConfig(duration=12.0)
    with pytest.raises(PasstInputError, match="one 10 s chunk"):
        passt_probs_batch(model, [torch.zeros(320001)])
    same = compute_kld([("x", tmp_path / "gt_a.wav", tmp_path / "gt_a.wav")], model=model)
    assert abs(same.kld) <= 527e-6 + 1e-6
    with pytest.raises(KLDInputError, match="duplicate"):
        compute_kld(pairs + pairs[:1], model=model)
    with pytest.raises(KLDInputError, match="no pairs"):
        compute_kld([], model=model)


def test_load_start_secs(tmp_path):
    (tmp_path / "meta.csv").write_text("file,start_sec\nclip_1.mp4,1.5\nclip_2,0\n")
    assert load_start_secs(tmp_path / "meta.csv") == {"clip_1": 1.5, "clip_2": 0.0}
    (tmp_path / "bad.csv").write_text("name,offset\nx,1\n")
    with pytest.raises(KLDInputError, match="columns"):
        load_start_secs(tmp_path / "bad.csv")


def test_video_audio_is_extracted_at_24k_in_paper_mode(tmp_path, rng):
    import av

    audio = (torch.randn(2, 44100, generator=rng) * 0.1).numpy()
    with av.open(str(tmp_path / "clip.mp4"), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        stream.layout = "stereo"
        for i in range(0, audio.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(audio[:, i:i + 1024].copy(), format="fltp", layout="stereo")
            frame.sample_rate = 44100
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    paper, sr_paper = read_kld_clip(tmp_path / "clip.mp4", KLDConfig.preset("paper"))
    native, sr_native = read_kld_clip(tmp_path / "clip.mp4", KLDConfig.preset("corrected"))
    assert (sr_paper, sr_native) == (24000, 44100)
    assert paper.shape[0] == native.shape[0] == 2
    assert abs(paper.shape[1] - native.shape[1] * 24000 / 44100) <= 64
    # 16-bit quantisation, as the extracted wav holds it
    assert torch.equal(torch.round(paper * 32768), paper * 32768)
