"""av-benchmark video side against the original's outputs (fixture README 2.8, 5, 6): frame selection and
rejection, decoded pixels, the Synchformer / ImageBind inputs, and the two video encoders end to end from the mp4."""

from __future__ import annotations

import functools
import hashlib

import pytest
import torch

from benchmarks.protocols.avbench import video as V
from tests import avbench_fixture as fx

LENGTH = 8.0
ACCEPTED = ("vid_000_engine", "vid_001_stereo", "vid_002_speechy", "vid_004_long", "zxpo56cpUBU_000007")
REJECTED = {
    "vid_003_short": "ImageBind needs 4 frames at 0.5 fps, the decoder gives 2 (the video is 5.00 s long); "
                     "Synchformer needs 200 frames at 25 fps, the decoder gives 124 (the video is 5.00 s long)",
    "vid_005_drums": "Synchformer needs 200 frames at 25 fps, the decoder gives 199 (the original loses the last "
                     "frame)",
}
STEMS = (*ACCEPTED, *REJECTED)


def _sha_u8(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def _sha_f32(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().astype("<f4").tobytes()).hexdigest()


def _close(got: torch.Tensor, want: torch.Tensor, scale: float = 1.0) -> tuple[bool, float]:
    """README 6: rtol 1e-4 plus atol 1e-4 * max|x| (times `scale`); returns (ok, max abs difference)."""
    want = want.float()
    tol = scale * (1e-4 * want.abs() + 1e-4 * want.abs().max())
    diff = (got.float() - want).abs()
    return bool((diff <= tol).all()), float(diff.max())


@functools.cache
def frames(stem: str) -> V.AVBenchFrames:
    return V.read_video_frames(fx.root() / "inputs" / "videos" / f"{stem}.mp4", LENGTH)


def inter(stem: str) -> dict:
    return fx.expected()["intermediates"][f"video/{stem}"]


@pytest.mark.parametrize("stem", STEMS)
def test_frame_selection_and_pixels(stem):
    got, want = frames(stem), inter(stem)
    assert got.ib.source_index.tolist() == list(want["ib_source_frame_index"])
    assert got.sync.source_index.tolist() == list(want["sync_source_frame_index"])
    assert (len(got.ib), len(got.sync)) == (want["ib_num_frames"], want["sync_num_frames"])
    assert list(got.ib.frames.shape[1:3]) == list(want["ib_decoded_hw"])
    assert list(got.sync.frames.shape[1:3]) == list(want["sync_decoded_hw"])
    # pixels: PyAV's rgb24 conversion (FFmpeg 8) gives torio's (FFmpeg 5.1) bytes exactly
    assert torch.equal(got.ib.frames.permute(0, 3, 1, 2), want["ib_decoded_uint8"])
    assert torch.equal(got.sync.frames[0].permute(2, 0, 1), want["sync_decoded_uint8_frame0"])
    assert _sha_u8(got.sync.frames.permute(0, 3, 1, 2)) == want["sync_decoded_uint8_sha256"]


def test_rejections_match_the_original():
    for stem in STEMS:
        assert frames(stem).rejection == REJECTED.get(stem), stem
    kept = set(fx.cache("gt", "synchformer_video"))
    assert kept == set(fx.cache("gt", "imagebind_video")) == {s for s in STEMS if frames(s).accepted}


@pytest.mark.parametrize("stem", ACCEPTED)
def test_model_inputs_are_bit_identical(stem):
    got, want = frames(stem), inter(stem)
    sync = V.sync_video_input(got.sync.frames)
    assert list(sync.shape) == list(want["sync_input_shape"]) and sync.dtype == torch.float32
    assert torch.allclose(sync.double().sum((1, 2, 3)), want["sync_input_frame_sums"], rtol=1e-3)
    assert torch.allclose(sync[0], want["sync_input_frame0"], rtol=1e-3, atol=1e-6)
    assert _sha_f32(sync) == want["sync_input_sha256_f32"], "not torchvision's uint8 bicubic resize"
    crops = V.ib_video_crops(got.ib.frames)
    assert list(crops.shape) == list(want["ib_input_shape"])
    assert torch.allclose(crops.double().sum((2, 3, 4)), want["ib_input_sums"], rtol=1e-3)
    assert torch.allclose(crops[1, 0], want["ib_input_crop1_frame0"], rtol=1e-3, atol=1e-6)
    assert _sha_f32(crops) == want["ib_input_sha256_f32"]


def test_segments_and_clips_layout():
    x = torch.arange(200, dtype=torch.float32).view(200, 1, 1, 1).expand(200, 3, 2, 2)
    seg = V.sync_segments(x)
    assert seg.shape == (24, 16, 3, 2, 2)
    assert torch.equal(seg[:, :, 0, 0, 0], 8 * torch.arange(24)[:, None] + torch.arange(16)[None])
    crops = torch.zeros(3, 4, 3, 2, 2)
    for c in range(3):
        for t in range(4):
            crops[c, t] = 10 * c + t
    clips = V.ib_clips(crops)  # [9, 3, 2, H, W]: pair-major, 3 crops per pair
    assert clips.shape == (9, 3, 2, 2, 2)
    assert clips[:, 0, :, 0, 0].tolist() == [[10 * c + i, 10 * c + i + 1] for i in range(3) for c in range(3)]
    with pytest.raises(AssertionError, match=r"T >= 16"):
        V.sync_segments(torch.zeros(15, 3, 2, 2))


def test_wanted_frames_and_bad_lengths():
    assert V.wanted_frames(8.0) == (4, 200) and V.wanted_frames(10) == (5, 250)
    for bad in (None, 0, -1.0, float("nan"), 1.0):
        with pytest.raises(ValueError):
            V.wanted_frames(bad)


def test_resized_size_is_torchvisions():
    assert V.resized_size(240, 320) == (224, 298) and V.resized_size(320, 240) == (298, 224)
    assert V.resized_size(180, 320) == (224, 398) and V.resized_size(256, 256) == (224, 224)
    assert V.resized_size(100, 100) == (224, 224) and V.resized_size(100, 150) == (224, 336)


def test_imagebind_video_embeddings_end_to_end(one_thread):
    from visualsound.imagebind import load_imagebind

    model = load_imagebind(fx.root() / "weights" / "imagebind_tiny_state_dict.pt", config="tiny")
    want = fx.cache("gt", "imagebind_video")
    x = torch.stack([V.ib_video_input(frames(s).ib.frames) for s in ACCEPTED])  # [5, 9, 3, 2, 224, 224]
    emb = V.ib_video_embedding(model, x)
    assert emb.shape == (len(ACCEPTED), 32)
    for stem, e in zip(ACCEPTED, emb):
        ok, diff = _close(e, want[stem])
        assert ok, f"{stem}: max abs difference {diff:.3g}"


@pytest.mark.slow
def test_synchformer_video_features_end_to_end(one_thread):
    from vaura.synchformer.api import load_sync_model

    model = load_sync_model(fx.root() / "weights" / "synchformer_reduced_state_dict.pt", config="reduced-avbench")
    want = fx.cache("gt", "synchformer_video")
    for stem in ACCEPTED:
        x = V.sync_segments(V.sync_video_input(frames(stem).sync.frames))[None]  # [1, 24, 16, 3, 224, 224]
        feats = V.sync_video_features(model, x, segments_per_call=12)
        assert feats.shape == (1, 24, 8, 96)
        ok, diff = _close(feats[0], want[stem])
        assert ok, f"{stem}: max abs difference {diff:.3g}"


def test_a_clip_window_is_read_from_its_start(tmp_path):
    """A clip whose window starts at s > 0 gives the frames of the file cut at s (`read_fps_frames`'s start, tested
    against a cut file in tests/test_media_fps_filter.py), and a rejection says where reading began."""
    from benchmarks.protocols.avbench.extract import Item, extract_video
    from visualsound.media import write_video

    path = tmp_path / "six.mp4"
    write_video(path, torch.zeros((150, 64, 96, 3), dtype=torch.uint8).numpy(), 25)  # 6 s
    late = V.read_video_frames(path, 4.0, start_sec=1.0)
    assert late.accepted and late.sync.source_index.tolist() == list(range(25, 125))
    assert late.ib.source_index.tolist() == [49, 99]  # [24, 74] of a file cut at 1 s (test_half_fps_indices)
    cut = V.read_video_frames(path, 4.0, start_sec=2.0)  # 100 frames left: the original loses the last one
    assert cut.rejection == ("Synchformer needs 100 frames at 25 fps, the decoder gives 99 (the original loses the "
                             "last frame); read from 2 s")

    class MemoryCache:  # what extract_video needs of a FeatureCache
        def __init__(self):
            self.stored = {}

        def lookup(self, name, source):
            return False, None

        def store(self, name, source, value):
            self.stored[name] = (source, value)

        def flush(self):
            pass

        def stats(self):
            return {}

    class CpuModels:  # a rejected video needs no network
        class options:
            device = "cpu"

    cache = MemoryCache()
    out = extract_video([Item("six", str(path), 2.0)], ["avb-sync-video"], {"avb-sync-video": cache}, CpuModels(),
                        4.0, 1, False)
    assert out.features["avb-sync-video"]["six"] == {"rejected": cut.rejection}
    assert cache.stored["six"][0]["start"] == 2.0  # the cache entry is keyed by the window's start
