"""Features sharded by shopper equal the one-pod features, row for row, for any shard count."""

import json
import shutil

import pandas as pd
import pytest

from shoprec.data.features import load_items, load_sequences, merge_features, partial_features
from shoprec.data.shards import (
    finish_features,
    key_range,
    rank_share,
    read_rows,
    shard_features,
    shard_of,
    shopper_keys,
)


@pytest.fixture(scope="module")
def partials(tiny_shop, tmp_path_factory):
    """One partial per day of the tiny shop, as the day fan-out writes them (shoppers' sequences span days)."""
    from shoprec.data.ingest import ingest

    root = tmp_path_factory.mktemp("partials")
    ingest(str(tiny_shop), root / "ingested", progress=False)
    out = []
    for j, day in enumerate(sorted((root / "ingested" / "events").iterdir())):
        shutil.copytree(day, root / f"day{j}" / "events" / day.name)
        partial_features(root / f"day{j}", root / f"partial{j}")
        out.append(root / f"partial{j}")
    assert len(out) > 2
    return out, root / "ingested" / "catalog.parquet"


def table(features, name):
    return read_rows(features, name).to_pandas()


def test_keys_are_stable_and_ranges_cover_every_key():
    assert shopper_keys(["u1", "u2"]).tolist() == shopper_keys(pd.Series(["u1", "u2"])).tolist()
    assert shopper_keys(["u1"])[0] == 694908709  # fixed: the same in every process, never Python's hash()
    for shards in (1, 2, 3, 7):
        ranges = [key_range(k, shards) for k in range(shards)]
        assert ranges[0][0] == 0 and ranges[-1][1] == 2 ** 32
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        keys = shopper_keys([f"user{i}" for i in range(500)])
        got = shard_of([f"user{i}" for i in range(500)], shards)
        assert all(ranges[s][0] <= k < ranges[s][1] for k, s in zip(keys, got))
    assert [rank_share(10, r, 3) for r in range(3)] == [(0, 3), (3, 6), (6, 10)]


@pytest.mark.parametrize("shards", [2, 3])
def test_sharded_features_equal_one_pod_row_for_row(partials, tmp_path, shards):
    parts, catalog = partials
    one = tmp_path / "one"
    merge_features(parts, catalog, one)
    dirs = [tmp_path / f"s{k}" for k in range(shards)]
    for k, d in enumerate(dirs):
        shard_features(parts, catalog, k, shards, d)
    stats = finish_features(dirs, catalog, tmp_path / "sharded")
    sharded = tmp_path / "sharded"

    assert json.loads((sharded / "shards.json").read_text())["shards"] == shards
    one_stats = json.loads((one / "stats.json").read_text())
    assert {k: v for k, v in stats.items() if k != "shards"} == {k: v for k, v in one_stats.items() if k != "shards"}
    pd.testing.assert_frame_equal(load_items(sharded), load_items(one))
    pd.testing.assert_frame_equal(pd.read_parquet(sharded / "item_counts.parquet"),
                                  pd.read_parquet(one / "item_counts.parquet"))
    by_user = {"sequences": ["user_id"], "search_pairs": ["session_id", "query", "item_id"],
               "click_samples": ["user_id"]}
    for name, keys in by_user.items():
        a = table(one, name).sort_values(keys, kind="stable", ignore_index=True)
        b = table(sharded, name).sort_values(keys, kind="stable", ignore_index=True)
        assert len(a) > 0
        pd.testing.assert_frame_equal(a, b, obj=name)
    # every shard holds only its own shoppers, and each shopper is in one shard
    m = json.loads((sharded / "shards.json").read_text())
    for e in m["entries"]:
        users = pd.read_parquet(sharded / e["files"]["sequences"])["user_id"]
        assert set(shard_of(users, shards)) <= {e["shard"]}
        assert len(users) == e["rows"]["sequences"]


def test_a_rank_loads_only_its_share(partials, tmp_path):
    parts, catalog = partials
    dirs = [tmp_path / f"s{k}" for k in range(3)]
    for k, d in enumerate(dirs):
        shard_features(parts, catalog, k, 3, d)
    finish_features(dirs, catalog, tmp_path / "f")
    users, seqs = load_sequences(tmp_path / "f")
    shares = [load_sequences(tmp_path / "f", rank=r, world=2) for r in range(2)]
    assert [len(u) for u, _ in shares] == [len(users) // 2, len(users) - len(users) // 2]
    assert shares[0][0] + shares[1][0] == users and shares[0][1] + shares[1][1] == seqs
