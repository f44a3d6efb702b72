"""The Home Depot re-rank metric of benchmarks/ranker.py: the issue's scale (tied scores 0.909, oracle 1.0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("ranker")


def judged(rows):
    return pd.DataFrame(rows, columns=["search_term", "relevance"])


def test_ties_get_the_mean_gain_not_a_lucky_order(bench):
    gains = np.array([2.0, 0.0, 0.0])
    tied = bench.ndcg_tie_aware(np.zeros(3), gains)
    disc = 1 / np.log2(np.arange(2, 5))
    assert tied == pytest.approx((gains.mean() * disc).sum() / (2.0 * disc[0]))
    assert bench.ndcg_tie_aware(np.array([3.0, 2.0, 1.0]), gains) == pytest.approx(1.0)
    assert bench.ndcg_tie_aware(np.array([1.0, 2.0, 3.0]), gains) < tied


def test_queries_whose_order_cannot_matter_are_left_out(bench):
    test = judged([("a", 3.0), ("a", 1.0), ("b", 2.0), ("b", 2.0), ("c", 1.0), ("c", 1.0), ("d", 2.33)])
    scores = np.array([0.0, 1.0, 5.0, 1.0, 0.0, 0.0, 9.0])
    per_query = bench.rerank_per_query(test, scores)
    # a: the only query with unequal judgements, and the wrong one is on top; b, d: all equal; c: no gain
    assert np.isnan(per_query[1:]).all()
    assert per_query[0] == pytest.approx(1 / np.log2(3))


def test_lora_vs_full_target_uses_a_same_data_pair_only(bench):
    # the interval of this run's lora-cross vs full-cross wins; without one, the recorded matched pair is used
    res = {"significance": {"lora-cross - full-cross": {"diff": -0.006, "ci95": [-0.009, -0.003]}},
           "lora_vs_full_same_data": {"matched": {"diff": 0.001, "ci95": [-0.002, 0.004], "models": {}}}}
    key = "lora within 0.005 re-rank ndcg@10 of full (same data)"
    assert bench.targets(res)[key]["met"] is False
    del res["significance"]["lora-cross - full-cross"]
    assert bench.targets(res)[key] == {"value": 0.001, "met": True, "ci95": [-0.002, 0.004], "models": {}}
    assert key not in bench.targets({})
