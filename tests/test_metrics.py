"""Full-ranking leave-one-out metrics with the history removed."""

import math

import pytest
import torch

from shoprec import metrics

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_ranks_ties_count_against_target_and_history_is_removed():
    scores = torch.tensor([[9.0, 5.0, 3.0, 5.0, 1.0, 4.0]])  # column 0 is padding and never counts
    assert metrics.target_ranks(scores, torch.tensor([1])).item() == 1  # tie with item 3
    assert metrics.target_ranks(scores, torch.tensor([1]), exclude=[[3]]).item() == 0
    assert metrics.target_ranks(scores, torch.tensor([4]), exclude=[[1, 3]]).item() == 2
    # a target that is in the history cannot be recommended: a miss beyond every cut-off, even on 5 items
    assert metrics.target_ranks(scores, torch.tensor([3]), exclude=[[3]]).item() == metrics.MISS


def test_excluded_target_is_a_miss_in_every_metric():
    scores = torch.tensor([[9.0, 5.0, 3.0, 5.0, 1.0, 4.0]] * 2)  # 5 items: any finite rank is inside every cut-off
    ranks = metrics.target_ranks(scores, torch.tensor([3, 4]), exclude=[[3], [1, 3]])
    assert ranks.tolist() == [metrics.MISS, 2]
    s = metrics.finish(metrics.metric_sums(ranks))
    # user 1 scores nothing; user 2 is at rank 2 (0-based): hit 1, ndcg 1/log2(4) = 1/2, reciprocal rank 1/3
    want = {"count": 2, "mrr": 1 / 6}
    for k in metrics.KS:
        want |= {f"hr@{k}": 1 / 2, f"ndcg@{k}": 1 / 4, f"mrr@{k}": 1 / 6}
    assert s.keys() == want.keys()
    assert all(math.isclose(s[k], v) for k, v in want.items()), s
    halves = metrics.add(metrics.metric_sums(ranks[:1]), metrics.metric_sums(ranks[1:]))
    assert all(math.isclose(v, want[k]) for k, v in metrics.finish(halves).items())


def test_constant_scorer_gets_no_free_hits():
    ranks = metrics.target_ranks(torch.zeros(4, 30), torch.tensor([1, 2, 3, 4]))
    assert (ranks == 28).all()


def test_metric_values_and_sums_add_up():
    ranks = torch.tensor([0, 1, 4, 9, 19, 50])
    s = metrics.finish(metrics.metric_sums(ranks))
    assert s["count"] == 6
    assert math.isclose(s["hr@5"], 3 / 6) and math.isclose(s["hr@10"], 4 / 6) and math.isclose(s["hr@20"], 5 / 6)
    ndcg10 = (1 + 1 / math.log2(3) + 1 / math.log2(6) + 1 / math.log2(11)) / 6
    assert math.isclose(s["ndcg@10"], ndcg10)
    assert math.isclose(s["mrr"], sum(1 / (r + 1) for r in [0, 1, 4, 9, 19, 50]) / 6)
    halves = metrics.add(metrics.metric_sums(ranks[:3]), metrics.metric_sums(ranks[3:]))
    assert all(math.isclose(v, s[k]) for k, v in metrics.finish(halves).items())
