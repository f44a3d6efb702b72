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
    # a target that is in the history cannot be recommended: a miss beyond every cut-off
    assert metrics.target_ranks(scores, torch.tensor([3]), exclude=[[3]]).item() >= 5


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
