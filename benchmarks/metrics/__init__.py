"""Benchmark metrics of the V2A evaluation.

Each metric lives in its own module and is imported explicitly (nothing is re-exported here, so importing one
metric never loads another's model): `benchmarks.metrics.vggish` / `benchmarks.metrics.fad` (FAD with VGGish),
and the other metrics' modules next to them.
"""
