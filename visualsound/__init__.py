"""visualsound: the data layer of the toolkit (media I/O, synthetic clips, weights registry, VGGSound index,
ImageBind scoring, VisualSound splits). It imports nothing from `vaura` or `benchmarks`."""

from visualsound._version import __version__

__all__ = ["__version__"]
