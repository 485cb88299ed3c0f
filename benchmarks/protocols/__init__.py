"""Evaluation protocols: one object per protocol name (``vaura-paper``, ``av-benchmark``)."""
