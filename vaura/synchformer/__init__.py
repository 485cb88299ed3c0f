"""Synchformer (v-iashin/Synchformer @ b66668a): audio-visual offset classifier and the MotionFormer visual
encoder that V-AURA uses as its visual feature extractor.

V-AURA usage::

    enc = load_visual_encoder(checkpoint=None, debug_weights=False, device="cpu")  # stage-I Segment AVCLIP
    feats = enc.features(frames_uint8)          # [B, 64, H, W, 3] -> [B, 4, 8, 768]
    tokens = feats.flatten(1, 2)                # [B, 32, 768]
    # or: enc(preprocess_video_for_vaura(frames)) with [B, 4, 3, 16, 224, 224] float input

Offsets::

    model = load_sync_model(checkpoint=None)    # stage-II <ID>.pt or bare state dict
    pred = predict_offset(model, frames, audio_16k, protocol="paper")
"""

from vaura.synchformer.api import (
    OffsetPrediction,
    init_random_weights,
    load_sync_model,
    load_visual_encoder,
    paper_window,
    predict_offset,
    predict_windows,
)
from vaura.synchformer.audio import AudioEncoder
from vaura.synchformer.config import SynchformerConfig
from vaura.synchformer.model import Synchformer, SyncOutput
from vaura.synchformer.preprocess import (
    PreprocessError,
    audio_for_sync,
    preprocess_video_for_vaura,
    video_for_sync,
)
from vaura.synchformer.visual import MotionFormer

__all__ = [
    "AudioEncoder", "MotionFormer", "OffsetPrediction", "PreprocessError", "SyncOutput", "Synchformer",
    "SynchformerConfig", "audio_for_sync", "init_random_weights", "load_sync_model",
    "load_visual_encoder", "paper_window", "predict_offset", "predict_windows", "preprocess_video_for_vaura",
    "video_for_sync",
]
