"""The shared work split (`visualsound.utils.shard`): ``--shard i/n``, ``--shard auto`` (SLURM job arrays) and
torchrun ranks; the partition is a disjoint cover that depends on the ids only, and rank splits nest in shards."""

from __future__ import annotations

import pandas as pd
import pytest

from visualsound.utils.shard import (
    Shard,
    ShardError,
    parse_shard,
    rank_device,
    resolve_shard,
    select_items,
    select_shard,
    shard_of,
    slurm_array_task,
)

IDS = [f"yt{i:04d}_{i % 7 * 1000}_{i % 7 * 1000 + 10000}" for i in range(400)]


def test_parse_shard_and_hash_partition() -> None:
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "1", "a/b", "-1/2", "0/0", "1/2/3"):
        with pytest.raises(ShardError):
            parse_shard(bad)
    index = pd.DataFrame({"clip_id": IDS})
    parts = [set(select_shard(index, (i, 3))["clip_id"]) for i in range(3)]
    assert set().union(*parts) == set(IDS) and sum(map(len, parts)) == len(IDS)  # disjoint cover
    assert all(len(p) > 80 for p in parts), [len(p) for p in parts]  # roughly balanced
    # depends on the id only: the same ids in another order land in the same shards
    shuffled = index.sample(frac=1.0, random_state=0)
    assert set(select_shard(shuffled, (2, 3))["clip_id"]) == parts[2]
    assert all(shard_of(c, 3) == 2 for c in parts[2])
    # the list form keeps the items' order and agrees with the frame form
    assert select_items(IDS, Shard(2, 3), key=str) == [c for c in IDS if c in parts[2]]
    assert select_items(IDS, (0, 1), key=str) == IDS


def test_auto_reads_slurm_arrays() -> None:
    assert resolve_shard("auto", {}) == Shard(0, 1, "auto: no SLURM array")
    env = {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "5"}
    assert resolve_shard("auto", env).pair == (2, 5)
    # numbered from MIN, counted from MIN..MAX where COUNT is missing
    assert slurm_array_task({"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "10",
                             "SLURM_ARRAY_TASK_MAX": "13"}) == (2, 4)
    for bad in ({"SLURM_ARRAY_TASK_ID": "3"},  # how many tasks?
                {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "3"},  # outside 0..2
                {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "8",
                 "SLURM_ARRAY_TASK_COUNT": "5"},  # --array=0-8:2: not contiguous
                {"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"}):
        with pytest.raises(ShardError):
            resolve_shard("auto", bad)
    # an explicit i/n ignores the array; no option means one shard
    assert resolve_shard("1/2", env).pair == (1, 2) and resolve_shard(None, env).pair == (0, 1)


def test_torchrun_ranks_split_a_shard_into_nested_parts() -> None:
    """Rank r of W takes (r n + i, n W): the ranks of one shard cover exactly that shard, disjointly."""
    for spec, env_extra, (i, n) in (("1/3", {}, (1, 3)), (None, {}, (0, 1)),
                                    ("auto", {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2"}, (0, 2))):
        parts = []
        for rank in range(4):
            s = resolve_shard(spec, {**env_extra, "RANK": str(rank), "WORLD_SIZE": "4"})
            assert s.count == n * 4 and "torchrun rank" in s.source
            parts.append(select_items(IDS, s, key=str))
        assert sorted(c for p in parts for c in p) == sorted(select_items(IDS, (i, n), key=str))
    assert resolve_shard("1/3", {"RANK": "0", "WORLD_SIZE": "1"}).pair == (1, 3)  # one process: no split
    with pytest.raises(ShardError):
        resolve_shard(None, {"RANK": "4", "WORLD_SIZE": "4"})
    assert rank_device("cuda", {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == "cuda:1"
    assert rank_device("cuda:0", {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == "cuda:0"
    assert rank_device("cuda", {}) == "cuda" and rank_device("cpu", {"LOCAL_RANK": "1", "WORLD_SIZE": "2",
                                                                      "RANK": "1"}) == "cpu"
