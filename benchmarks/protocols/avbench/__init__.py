"""The av-benchmark protocol (hkchengrex/av-benchmark, MMAudio's evaluator), reimplemented on our models.

Modules: ``audio`` (reading and per-network audio inputs), ``video`` (frame selection and video inputs),
``pairing`` (the original's per-metric pairing rules), ``formulas`` (FD, KL, IS, IB, DeSync), ``protocol`` (the
driver behind ``vbench evaluate --protocol av-benchmark``).
"""
