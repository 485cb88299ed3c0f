"""One check shared by the evaluation tests: a result's per-clip table reproduces its per-item metrics."""

from __future__ import annotations

import math
from typing import Any

import pytest

from benchmarks import per_clip


def assert_per_clip_reproduces(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every per-item metric of `result` is the mean of its per-clip column over the rows that have a value
    (float32 sums in the originals: rel 1e-5); a metric that was not run or is undefined has an empty column;
    the missing clips are the ``gt:`` rows; every interval holds its value. Returns the rows."""
    rows = per_clip.load_for_result(result).to_pylist()
    metrics = result["metrics"]
    for key in per_clip.item_metrics(result["protocol"]["name"]):
        values = [r[key] for r in rows if r[key] is not None]
        if metrics.get(key) is None:
            assert not values, key
            continue
        assert values and all(r["status"] in ("scored", "excluded", "unpaired") for r in rows if r[key] is not None)
        assert math.fsum(values) / len(values) == pytest.approx(metrics[key], rel=1e-5, abs=1e-6), key
    assert sorted(r["clip_id"] for r in rows if r["status"] == "missing") == result["counts"]["missing_ids"]
    assert all(r["item"] == f"gt:{r['clip_id']}" for r in rows if r["status"] == "missing")
    assert all(bool(r["reason"]) == (r["status"] != "scored") for r in rows)
    for key, ci in result.get("metric_ci", {}).items():
        assert ci["lo"] <= metrics[key] <= ci["hi"] or ci["method"] == "percentile", key
        if ci["method"] == "normal":
            assert ci["lo"] + ci["hi"] == pytest.approx(2 * metrics[key], rel=1e-9, abs=1e-12), key
    return rows
