"""Evaluation protocols: one object per protocol name.

* ``vaura-paper`` (`benchmarks.protocols.vaura_paper`): the V-AURA paper's FAD (VGGish), KLD (PaSST), IB and
  Sync on each clip's evaluation window (2.56 s), samples paired with their clip by id.
* ``av-benchmark`` (`benchmarks.protocols.avbench`): hkchengrex/av-benchmark, the evaluator MMAudio and most
  2025 video-to-audio papers quote: FD_PaSST, FD_PANNs, FD_VGG, KL_PANNs, KL_PaSST, IS, IB-score, DeSync on 8 s
  clips, paired by file name with the original's per-metric rules.

A protocol object has ``name``, ``version``, ``description``, ``metrics`` (its `MetricSpec` keys, the result schema
of `benchmarks.results`), ``required_weights(metrics)`` (``EvalOptions.checkpoints`` key -> registry name of each
weights file the metrics load; checked before anything runs), ``check(dataset, model)`` (refuses a dataset or model
the protocol cannot evaluate, before anything runs), ``missing(dataset, outputs)`` (clip id -> why it has no usable
output, by the protocol's pairing rules) and ``run(context) -> ProtocolRun``. `evaluate.evaluate` is the one driver:
it asks the model adapter for outputs, runs the protocol and writes the result JSON, the per-clip table
(`benchmarks.per_clip`, from ``ProtocolRun.items``) and the bootstrap intervals (`benchmarks.bootstrap`, from the
per-item columns and ``ProtocolRun.set_statistics``). ``cached_set_statistics(result, rows)`` rebuilds a
result's set-level statistics (FAD / FD / IS) from its feature caches for `vbench compare`: the inputs the run
built (`benchmarks.bootstrap.SetInput`: each metric's own rows and units, over all the result's files), checked
against the files the result records, or ``{metric: why}`` where they cannot be rebuilt so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from typing import Protocol as _Protocol

from benchmarks.results import metric_keys
from visualsound.errors import ToolkitError


class EvaluationError(ToolkitError):
    """The evaluation cannot run or complete (missing outputs, unknown protocol or metric)."""


@dataclass
class ProtocolRun:
    """What a protocol computed: metric values (None = undefined, with a note), per-metric details, the seconds
    each metric took, names left out with the reason, warnings for the user, count fields to merge into the
    result's ``counts``, the per-clip table's rows (`benchmarks.per_clip`: one dict per item, every item of the
    evaluation including missing and unpaired ones) and the bootstrap statistics of the set-level metrics
    (`benchmarks.bootstrap.FrechetStatistic` / ``InceptionStatistic``, built from the features in memory)."""

    values: dict[str, float | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    extractors: dict[str, dict[str, str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)
    set_statistics: list[Any] = field(default_factory=list)


class EvalProtocol(_Protocol):
    name: str
    version: int
    description: str

    @property
    def metrics(self) -> tuple[str, ...]: ...

    def required_weights(self, metrics: Sequence[str]) -> dict[str, str]: ...

    def check(self, dataset: Any, model: Any) -> None: ...

    def missing(self, dataset: Any, outputs: Any) -> dict[str, str]: ...

    def run(self, ctx: Any) -> ProtocolRun: ...

    def cached_set_statistics(self, result: dict[str, Any], rows: list[dict[str, Any]]
                              ) -> tuple[dict[str, Any], dict[str, str]]: ...


def get_protocol(name: str) -> EvalProtocol:
    """The protocol object called `name`; `EvaluationError` naming the known ones otherwise."""
    if name == "vaura-paper":
        from benchmarks.protocols.vaura_paper import VAuraPaperProtocol

        return VAuraPaperProtocol()
    if name == "av-benchmark":
        from benchmarks.protocols.avbench.protocol import AVBenchmarkProtocol

        return AVBenchmarkProtocol()
    raise EvaluationError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOL_NAMES)}")


PROTOCOL_NAMES: tuple[str, ...] = ("vaura-paper", "av-benchmark")


def select_metrics(protocol_name: str, requested: Sequence[str] | None) -> tuple[str, ...]:
    """The metrics to run: `requested` (deduplicated, in the protocol's order) or all of the protocol's."""
    known = metric_keys(protocol_name)
    if not requested:
        return known
    unknown = [m for m in requested if m not in known]
    if unknown:
        raise EvaluationError(f"protocol {protocol_name} has no metric(s) {unknown}; it has {', '.join(known)}")
    return tuple(m for m in known if m in set(requested))
