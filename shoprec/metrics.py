"""Ranking metrics for one held-out target per user, ranked against all items.

The rank of the target is the number of other candidates scored at least as high (ties count
against the target, so a constant scorer gets no free hits). Items the user already had are
removed from the candidates before ranking, as the S3-Rec/ICLRec evaluation code does.
"""

from __future__ import annotations

import torch

KS = (5, 10, 20)
MISS = torch.iinfo(torch.int64).max  # the rank of a target that cannot be recommended: beyond every cut-off


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, exclude: list[list[int]] | None = None) -> torch.Tensor:
    """0-based rank of ``targets`` (B,) in ``scores`` (B, n_items+1); column 0 (padding) never counts."""
    scores = scores.clone().float()
    scores[:, 0] = float("-inf")
    if exclude is not None:
        rows = torch.tensor([i for i, ex in enumerate(exclude) for _ in ex], dtype=torch.long)
        cols = torch.tensor([j for ex in exclude for j in ex], dtype=torch.long)
        if len(rows):
            scores[rows, cols] = float("-inf")
    target_score = scores.gather(1, targets.unsqueeze(1))
    ahead = (scores >= target_score).sum(1) - 1
    # a target that was itself excluded (a repeat purchase) cannot be recommended: a miss (rank MISS).
    return torch.where(torch.isinf(target_score.squeeze(1)), torch.full_like(ahead, MISS), ahead)


def metric_sums(ranks: torch.Tensor, ks=KS) -> dict[str, float]:
    """Sums (not means) so shards from several processes add up before dividing. A rank of ``MISS`` (or inf) is a
    miss: 0 for every hit rate, NDCG and MRR."""
    r = ranks.double()
    r = torch.where(r >= MISS, float("inf"), r)
    out = {"count": float(len(r)), "mrr": (1.0 / (r + 1)).sum().item()}
    for k in ks:
        hit = r < k
        out[f"hr@{k}"] = hit.double().sum().item()
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(r + 2), torch.zeros_like(r)).sum().item()
        out[f"mrr@{k}"] = torch.where(hit, 1.0 / (r + 1), torch.zeros_like(r)).sum().item()
    return out


def finish(sums: dict[str, float]) -> dict[str, float]:
    n = max(sums["count"], 1.0)
    return {k: (v / n if k != "count" else int(v)) for k, v in sums.items()}


def add(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: a.get(k, 0.0) + b.get(k, 0.0) for k in set(a) | set(b)}
