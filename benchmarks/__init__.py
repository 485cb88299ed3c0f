"""benchmarks: V2A metrics (FAD with VGGish, KLD with PaSST, ImageBind score, Synchformer Sync), datasets,
evaluation and the leaderboard (CLI `vbench`). Imports `visualsound` and `vaura`."""

from visualsound import __version__

__all__ = ["__version__"]
