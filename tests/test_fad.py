"""FAD with VGGish: parity with the ``frechet_audio_distance`` package (fixture ``vggish_fad``), known answers
and the loud failures that replace the package's silent file drops and -1 results."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from benchmarks.metrics import fad as fad_mod
from benchmarks.metrics.fad import (
    AudioDecodeError,
    ClipsTooShortError,
    FADError,
    FrechetDistanceError,
    embed_files,
    fad_from_dirs,
    fad_from_embeddings,
    fad_from_files,
    frechet_distance,
    load_wave_16k,
    read_audio_soundfile_style,
    set_statistics,
)
from benchmarks.metrics.vggish import (
    AudioTooShortError,
    VGGish,
    VGGishConfig,
    embed_examples,
    load_vggish,
    log_mel_examples,
    log_mel_spectrogram,
    mel_filterbank,
    mixdown,
    num_examples,
    periodic_hann,
    vggish_embeddings,
)
from tests.conftest import require_parity
from visualsound.errors import CheckpointError, ConfigError, ToolkitError
from visualsound.utils.checkpoint import load_state_dict_strict

PAPER = VGGishConfig.preset("paper")


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def parity():
    root = require_parity("vggish_fad", "expected.pt", "weights_recipe.json", "manifest_vggish.json",
                          "audio/reference", "audio/generated")
    return root, torch.load(root / "expected.pt", weights_only=True)


@pytest.fixture(scope="module")
def recipe_model(parity, tmp_path_factory):
    """The fixture's random VGGish weights, rebuilt from the recipe (hash-checked), saved and loaded via
    `load_vggish(checkpoint=...)` exactly like the release file would be."""
    root, _ = parity
    recipe = json.loads((root / "weights_recipe.json").read_text())
    state = {}
    for entry in recipe["entries"]:
        if entry["file"] != "vggish-10086976.pth":
            continue
        g = torch.Generator(device="cpu").manual_seed(entry["seed"])
        t = torch.randn(entry["shape"], generator=g, dtype=torch.float32) * entry["std"]
        assert hashlib.sha256(t.numpy().astype("<f4").tobytes()).hexdigest() == entry["sha256_float32_le"], \
            entry["key"]
        state[entry["key"]] = t
    path = tmp_path_factory.mktemp("vggish") / "vggish-10086976.pth"
    torch.save(state, path)
    del state
    model = load_vggish(checkpoint=path)
    path.unlink()
    return model


def _write_wav(path, seconds: float, sample_rate: int = 16000, seed: int = 0, channels: int = 1):
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    data = (rng.standard_normal((n, channels)) * 3000).clip(-32768, 32767).astype(np.int16)
    wavfile.write(path, sample_rate, data[:, 0] if channels == 1 else data)
    return path


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


# ------------------------------------------------------------------------------------------------ parity
def test_front_end_tables_match_fixture(parity):
    _, exp = parity
    np.testing.assert_array_equal(periodic_hann(400), exp["periodic_hann_400"].numpy())
    np.testing.assert_allclose(mel_filterbank(PAPER), exp["mel_filterbank_257x64"].numpy(), rtol=0, atol=1e-12)


def test_decode_resample_and_log_mel_match_fixture(parity):
    root, exp = parity
    for rel, f in exp["files"].items():
        audio, sr = read_audio_soundfile_style(root / "audio" / rel)
        assert (sr, audio.shape) == (f["sample_rate_in"], (f["channels_in"], f["num_samples_in"])), rel
        if "mono_in" in f:  # the stereo file: float32 mixdown must be exact
            np.testing.assert_array_equal(mixdown(audio), f["mono_in"].numpy())
        wave = load_wave_16k(root / "audio" / rel)
        np.testing.assert_array_equal(wave, f["wave_16k"].numpy(), err_msg=rel)  # resampy is bit-exact
        spec = log_mel_spectrogram(wave, PAPER)
        assert spec.shape == (f["num_stft_frames"], 64)
        np.testing.assert_allclose(spec, f["log_mel_full"].numpy(), rtol=0, atol=1e-9, err_msg=rel)
        examples = log_mel_examples(wave, PAPER)
        assert examples.shape == (f["num_examples"], 1, 96, 64) and examples.dtype == np.float32
        np.testing.assert_allclose(examples, f["log_mel_examples"].numpy(), rtol=0, atol=2e-6, err_msg=rel)


def test_embeddings_from_stored_examples_match_fixture(parity, recipe_model):
    _, exp = parity
    for rel, f in exp["files"].items():
        emb = embed_examples(recipe_model, f["log_mel_examples"].numpy())
        assert emb.shape == (f["num_examples"], 128) and emb.dtype == np.float32
        assert _rel(emb, f["embeddings"].numpy()) <= 1e-5, rel


def test_statistics_and_fad_from_stored_embeddings_match_package(parity):
    _, exp = parity
    ref, gen = exp["reference_embeddings"].numpy(), exp["generated_embeddings"].numpy()
    for emb, key in ((ref, "reference"), (gen, "generated")):
        mu, sigma = set_statistics(emb)
        assert mu.dtype == np.float32 and sigma.dtype == np.float64
        np.testing.assert_allclose(mu, exp[f"mu_{key}"].numpy(), rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(sigma, exp[f"sigma_{key}"].numpy(), rtol=1e-6, atol=1e-5)
    expected = exp["fad_package_from_embeddings"]
    assert fad_from_embeddings(ref, gen) == pytest.approx(expected, rel=1e-6, abs=1e-3)
    # per-clip lists pool to the same set; listdir row order reproduces score() itself
    order = json.loads(exp["meta"]["score_listdir_generated"])
    per_clip = {name.split("/")[-1]: exp["files"][name]["embeddings"].numpy() for name in exp["generated_files"]}
    listdir_gen = [per_clip[name] for name in order]
    assert fad_from_embeddings(ref, listdir_gen) == pytest.approx(exp["fad_package_score"], rel=1e-6, abs=1e-3)


def test_end_to_end_fad_from_wavs_matches_package(parity, recipe_model, monkeypatch):
    root, exp = parity
    seen: list[np.ndarray] = []

    def recording_embed(model, examples):
        seen.append(embed_examples(model, examples))
        return seen[-1]

    monkeypatch.setattr(fad_mod, "embed_examples", recording_embed)
    result = fad_from_dirs(root / "audio" / "reference", root / "audio" / "generated", recipe_model)
    names = exp["reference_files"] + exp["generated_files"]  # sorted per set, as fad_from_dirs reads them
    assert len(seen) == len(names)
    for emb, rel in zip(seen, names):
        assert _rel(emb, exp["files"][rel]["embeddings"].numpy()) <= 2e-4, rel
    assert result.fad == pytest.approx(exp["fad_package_score"], rel=1e-4, abs=1e-3)
    assert (result.num_reference_frames, result.num_generated_frames) == (6, 6)
    assert not result.debug_weights


@pytest.mark.slow
def test_end_to_end_tolerance_catches_a_different_resampler(parity, recipe_model, monkeypatch):
    """Guard that the end-to-end tolerance has teeth: torchaudio's sinc resampler must fail it."""
    import torchaudio.functional as AF

    root, exp = parity

    def torchaudio_resample(wave, sample_rate, target_rate=16000):
        return AF.resample(torch.from_numpy(wave), sample_rate, target_rate).numpy()

    monkeypatch.setattr(fad_mod, "resample_to_16k", torchaudio_resample)
    wrong = fad_from_dirs(root / "audio" / "reference", root / "audio" / "generated", recipe_model).fad
    assert wrong != pytest.approx(exp["fad_package_score"], rel=1e-4, abs=1e-3)


def test_manifest_loads_strictly_on_meta_device(parity):
    root, _ = parity
    manifest = json.loads((root / "manifest_vggish.json").read_text())
    keys = manifest["vggish-10086976.pth"]["keys"]
    state = {k["key"]: torch.empty(k["shape"], device="meta") for k in keys}
    with torch.device("meta"):
        model = VGGish(PAPER)
    assert list(model.state_dict()) == [k["key"] for k in keys]
    assert sum(p.numel() for p in model.parameters()) == manifest["vggish-10086976.pth"]["total_params"]
    load_state_dict_strict(model, state)
    with torch.device("meta"):
        fresh = VGGish(PAPER)
    with pytest.raises(CheckpointError, match="missing"):
        load_state_dict_strict(fresh, {k: v for k, v in state.items() if k != "embeddings.4.bias"})
    with pytest.raises(CheckpointError, match="unexpected"):
        load_state_dict_strict(fresh, {**state, "pproc.pca_means": torch.empty(128, 1, device="meta")})


# ------------------------------------------------------------------------------------------------ known answers
def test_identical_sets_give_zero(parity):
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((500, 16)).astype(np.float32) * 3 + 1
    assert abs(fad_from_embeddings(emb, emb)) < 1e-9
    _, exp = parity  # rank-deficient fixture sets: the package's numerical floor (~ -8.9e-5)
    ref = exp["reference_embeddings"].numpy()
    assert abs(fad_from_embeddings(ref, ref)) < 1e-3


def test_frechet_distance_of_diagonal_gaussians_is_analytic():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
    v1, v2 = rng.uniform(0.5, 2.0, 8), rng.uniform(0.5, 2.0, 8)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)
    # sets drawn from two Gaussians land near their analytic distance
    a = rng.standard_normal((20000, 4)) * np.sqrt(v1[:4]) + mu1[:4]
    b = rng.standard_normal((20000, 4)) * np.sqrt(v2[:4]) + mu2[:4]
    exact = np.sum((mu1[:4] - mu2[:4]) ** 2) + np.sum(v1[:4] + v2[:4] - 2 * np.sqrt(v1[:4] * v2[:4]))
    assert fad_from_embeddings(a.astype(np.float32), b.astype(np.float32)) == pytest.approx(exact, abs=0.1)


def test_frechet_distance_fails_loudly():
    eye = np.eye(3)
    with pytest.raises(FrechetDistanceError, match="imaginary"):
        frechet_distance(np.zeros(3), np.diag([1.0, 1.0, -4.0]), np.zeros(3), eye)
    with pytest.raises(FrechetDistanceError, match="covariances"):
        frechet_distance(np.zeros(3), eye, np.zeros(3), np.eye(4))
    with pytest.raises(FrechetDistanceError, match="non-finite"):
        frechet_distance(np.array([0.0, np.nan, 0.0]), eye, np.zeros(3), eye)
    with pytest.raises(FrechetDistanceError, match="at least 2 frames"):
        fad_from_embeddings(np.ones((1, 4), np.float32), np.ones((5, 4), np.float32))
    with pytest.raises(FrechetDistanceError, match="no clips"):
        fad_from_embeddings([], [np.ones((5, 4), np.float32)])
    with pytest.raises(FrechetDistanceError, match="same D"):
        fad_from_embeddings(np.ones((5, 4), np.float32), np.ones((5, 3), np.float32))


# ------------------------------------------------------------------------------------------------ short clips
def test_example_count_boundary():
    assert PAPER.min_samples == 15600
    assert num_examples(15600, PAPER) == 1 and num_examples(15599, PAPER) == 0
    assert num_examples(40960, PAPER) == 2 and num_examples(128000, PAPER) == 8
    assert log_mel_examples(np.zeros(15600, np.float32), PAPER).shape == (1, 1, 96, 64)
    with pytest.raises(AudioTooShortError, match="15600"):
        log_mel_examples(np.zeros(15599, np.float32), PAPER)


def test_too_short_clips_raise_naming_every_id(tmp_path):
    model = load_vggish(debug_weights=True)
    ref = [_write_wav(tmp_path / "ref_ok.wav", 1.2, 44100, seed=1),
           _write_wav(tmp_path / "ref_short.wav", 0.9, 44100, seed=2),
           _write_wav(tmp_path / "ref_after.wav", 2.0, 44100, seed=3)]
    gen = [_write_wav(tmp_path / "gen_tiny.wav", 0.01, seed=4),
           _write_wav(tmp_path / "gen_ok.wav", 1.0, seed=5),
           _write_wav(tmp_path / "gen_ok2.wav", 1.5, seed=6)]
    with pytest.raises(ClipsTooShortError) as info:
        fad_from_files(ref, gen, model)
    assert info.value.clip_ids == ["ref_short", "gen_tiny"]
    assert "reference clip ref_short" in str(info.value) and "generated clip gen_tiny" in str(info.value)
    assert isinstance(info.value, ToolkitError)
    with pytest.raises(ClipsTooShortError, match="ref_short"):
        embed_files(ref, model)
    with pytest.raises(AudioTooShortError):
        vggish_embeddings(np.zeros(15000, np.float32), 16000, model)
    result = fad_from_files([ref[0], ref[2]], gen[1:], model)  # without the short clips it works
    assert result.debug_weights and (result.num_reference_frames, result.num_generated_frames) == (3, 2)
    assert np.isfinite(result.fad)


def test_unreadable_and_missing_inputs_raise(tmp_path):
    (tmp_path / "notes.txt").write_text("not audio")
    with pytest.raises(AudioDecodeError, match="notes.txt"):
        read_audio_soundfile_style(tmp_path / "notes.txt")
    with pytest.raises(AudioDecodeError, match="no such file"):
        read_audio_soundfile_style(tmp_path / "gone.wav")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FADError, match="no files"):
        fad_from_dirs(tmp_path / "empty", tmp_path / "empty", load_vggish(debug_weights=True))


# ------------------------------------------------------------------------------------------------ API
def test_vggish_embeddings_api_mixes_down_and_resamples(tmp_path):
    model = load_vggish(debug_weights=True)
    assert model.cfg == VGGishConfig.preset("tiny") and model.debug_weights
    rng = np.random.default_rng(2)
    stereo = (rng.standard_normal((2, 44100 * 3)) * 0.1).astype(np.float32)
    emb = vggish_embeddings(stereo, 44100, model)
    assert emb.shape == (num_examples(48000, model.cfg), 128) == (3, 128) and emb.dtype == np.float32
    np.testing.assert_array_equal(emb, vggish_embeddings(torch.from_numpy(stereo), 44100, model))
    mono = stereo.mean(axis=0)
    np.testing.assert_array_equal(emb, vggish_embeddings(mono, 44100, model))
    # a file gives the same embeddings as its decoded samples
    path = _write_wav(tmp_path / "c.wav", 2.0, 16000, seed=7, channels=2)
    audio, sr = read_audio_soundfile_style(path)
    np.testing.assert_array_equal(embed_files([path], model)[0], vggish_embeddings(audio, sr, model))
    # the debug model is seeded: same weights every time
    again = load_vggish(debug_weights=True)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_load_vggish_rejects_bad_checkpoints(tmp_path, monkeypatch):
    from visualsound.weights import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match="missing.pth"):
        load_vggish(checkpoint=tmp_path / "missing.pth")
    monkeypatch.setenv("VAURA_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(WeightsNotFoundError, match="vggish-10086976.pth"):
        load_vggish()
    tiny_state = load_vggish(debug_weights=True).state_dict()
    torch.save(tiny_state, tmp_path / "tiny.pth")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_vggish(checkpoint=tmp_path / "tiny.pth")
    with pytest.raises(ConfigError, match="not both"):  # never silently ignore a given checkpoint
        load_vggish(checkpoint=tmp_path / "tiny.pth", debug_weights=True)


def test_config_presets():
    assert PAPER.flat_dim == 12288 and PAPER.num_bins == 257
    assert VGGishConfig.preset("tiny").flat_dim == 16 * 6 * 4
    with pytest.raises(ConfigError, match="6 conv widths"):
        VGGishConfig(channels=(4, 8))
