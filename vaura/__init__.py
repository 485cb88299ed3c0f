"""vaura: the V-AURA model (Segment AVCLIP / Synchformer visual features, DAC codec, Llama-style transformer
with a delay pattern, KV-cached CFG sampler) and its training. Imports `visualsound`, never `benchmarks`."""

from visualsound import __version__

__all__ = ["__version__"]
