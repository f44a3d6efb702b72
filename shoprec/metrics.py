"""Ranking metrics: one held-out target per user ranked against all items (:func:`target_ranks`,
:func:`metric_sums`), graded lists (:func:`ndcg_at_k`), and the standardisation score blends use.

The rank of the target is the number of other candidates scored at least as high (ties count
against the target, so a constant scorer gets no free hits). Items the user already had are
removed from the candidates before ranking, as the S3-Rec/ICLRec evaluation code does.
"""

from __future__ import annotations

import numpy as np
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


def metric_sums(ranks: torch.Tensor, ks=KS, weights: torch.Tensor | None = None) -> dict[str, float]:
    """Sums (not means) so shards from several processes add up before dividing. A rank of ``MISS`` (or inf) is a
    miss: 0 for every hit rate, NDCG and MRR. ``weights``: how many targets got each of ``ranks`` (default 1 each)."""
    r = ranks.double()
    r = torch.where(r >= MISS, float("inf"), r)
    w = torch.ones_like(r) if weights is None else weights.double()
    out = {"count": w.sum().item(), "mrr": (w / (r + 1)).sum().item()}
    for k in ks:
        hit = r < k
        out[f"hr@{k}"] = torch.where(hit, w, torch.zeros_like(r)).sum().item()
        out[f"ndcg@{k}"] = torch.where(hit, w / torch.log2(r + 2), torch.zeros_like(r)).sum().item()
        out[f"mrr@{k}"] = torch.where(hit, w / (r + 1), torch.zeros_like(r)).sum().item()
    return out


def rank_counts(ranks: torch.Tensor) -> dict[int, int]:
    """How many targets got each rank: integers, so the counts of shards add up exactly in any order."""
    values, counts = torch.unique(ranks.long(), return_counts=True)
    return {int(v): int(c) for v, c in zip(values.tolist(), counts.tolist())}


def add_counts(a: dict, b: dict) -> dict[int, int]:
    """Rank counts summed (keys may be ints or their strings, as JSON writes them)."""
    out: dict[int, int] = {}
    for counts in (a, b):
        for r, c in counts.items():
            out[int(r)] = out.get(int(r), 0) + int(c)
    return out


def sums_of_rank_counts(counts: dict, ks=KS) -> dict[str, float]:
    """:func:`metric_sums` of the ranks that ``counts`` counts, in rank order: the same figures for the same counts
    however they were split, so sharded evaluation equals one pass exactly."""
    items = sorted((int(r), int(c)) for r, c in counts.items())
    return metric_sums(torch.tensor([r for r, _ in items], dtype=torch.int64), ks,
                       weights=torch.tensor([c for _, c in items], dtype=torch.float64))


def finish(sums: dict[str, float]) -> dict[str, float]:
    n = max(sums["count"], 1.0)
    return {k: (v / n if k != "count" else int(v)) for k, v in sums.items()}


def add(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: a.get(k, 0.0) + b.get(k, 0.0) for k in set(a) | set(b)}


def ndcg_at_k(scores: np.ndarray, gains: np.ndarray, k: int = 10, ideal_gains: np.ndarray | None = None) -> float:
    """NDCG@k of one ranked list (ties in ``scores`` keep the given order); the ideal DCG uses ``ideal_gains`` if given."""
    order = np.argsort(-scores, kind="stable")[:k]
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float((gains[order] * disc[:len(order)]).sum())
    ideal = np.sort(ideal_gains if ideal_gains is not None else gains)[::-1][:k]
    idcg = float((ideal * disc[:len(ideal)]).sum())
    return dcg / idcg if idcg > 0 else 0.0


def standardised(x: np.ndarray) -> np.ndarray:
    """(x - mean) / std over one query's candidates; zeros where all are equal."""
    x = np.asarray(x, dtype=np.float64)
    sd = x.std()
    return (x - x.mean()) / sd if sd > 1e-12 else np.zeros_like(x)
