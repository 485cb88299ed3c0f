"""ImageBind audio-visual towers and the exact VisualSound preprocessing (see `model`, `preprocess`)."""

from visualsound.imagebind.checkpoint import IMAGEBIND_KEYMAP, convert_upstream_state_dict, load_imagebind
from visualsound.imagebind.config import ImageBindConfig
from visualsound.imagebind.model import ImageBindAV

__all__ = ["IMAGEBIND_KEYMAP", "ImageBindAV", "ImageBindConfig", "convert_upstream_state_dict", "load_imagebind"]
