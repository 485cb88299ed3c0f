"""ImageBind audio-visual towers and the exact VisualSound preprocessing (see `model`, `preprocess`).

Typical use::

    model = load_imagebind()                       # or load_imagebind(debug_weights=True)
    video, audio, facts = preprocess_clip("clip.mp4")  # [15, 3, 2, 224, 224], [3, 1, 128, 204]
    score = model.score(video[None], audio[None])  # [1], cosine similarity (VisualSound keeps >= 0.3)
"""

from visualsound.imagebind.checkpoint import IMAGEBIND_KEYMAP, convert_upstream_state_dict, load_imagebind
from visualsound.imagebind.config import ImageBindConfig
from visualsound.imagebind.model import ImageBindAV
from visualsound.imagebind.preprocess import STATUSES, ClipError, preprocess_clip, read_clip

__all__ = ["IMAGEBIND_KEYMAP", "STATUSES", "ClipError", "ImageBindAV", "ImageBindConfig",
           "convert_upstream_state_dict", "load_imagebind", "preprocess_clip", "read_clip"]
