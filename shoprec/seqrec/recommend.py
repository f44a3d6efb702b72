"""A trained sequential model with its vocabulary and shoppers' histories: what evaluate and serve use.

Items are addressed by their string ``item_id`` from the outside and by vocabulary index inside,
so models trained on different data (a champion and its challenger) are compared on the same
item ids.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pyarrow.parquet as pq
import torch

from shoprec import metrics
from shoprec.seqrec.model import left_pad, load_model


class UnknownUser(KeyError):
    pass


class Recommender:
    def __init__(self, model_dir: str | Path, device: str = "cpu"):
        model_dir = Path(model_dir)
        self.model_dir = model_dir
        self.model = load_model(model_dir, device=device)
        self.device = device
        self.config = json.loads((model_dir / "config.json").read_text())
        items = pq.read_table(model_dir / "items.parquet").to_pandas()
        self.item_ids = [""] + items["item_id"].tolist()
        self.titles = [""] + items["title"].tolist()
        self.index = {item: i for i, item in enumerate(self.item_ids) if i}

    @functools.cached_property
    def histories(self) -> dict[str, list[int]]:
        """Every known shopper's history, read on first use (evaluation passes histories and never reads them)."""
        hist = pq.read_table(self.model_dir / "histories.parquet")
        return dict(zip(hist["user_id"].to_pylist(), hist["items"].to_pylist()))

    @property
    def n_items(self) -> int:
        return len(self.item_ids) - 1

    def history_of(self, user_id: str) -> list[int]:
        try:
            return self.histories[user_id]
        except KeyError:
            raise UnknownUser(user_id) from None

    def encode(self, item_ids: list[str]) -> tuple[list[int], list[str]]:
        """Vocabulary indices of the known items, and the unknown ids."""
        known = [self.index[i] for i in item_ids if i in self.index]
        unknown = [i for i in item_ids if i not in self.index]
        return known, unknown

    def scores(self, histories: list[list[int]]) -> torch.Tensor:
        batch = left_pad(histories, self.model.cfg.max_len).to(self.device)
        return self.model.next_item_scores(batch).float().cpu()

    def recommend(self, histories: list[list[int]], k: int = 10, exclude_seen: bool = True) -> list[list[dict]]:
        """Top ``k`` items after each history, best first."""
        s = self.scores(histories)
        s[:, 0] = float("-inf")
        if exclude_seen:
            for row, h in enumerate(histories):
                if h:
                    s[row, torch.as_tensor(h)] = float("-inf")
        top = torch.topk(s, min(k, self.n_items), dim=1)
        return [[{"item_id": self.item_ids[j], "title": self.titles[j], "score": round(float(v), 5)}
                 for v, j in zip(vals.tolist(), idx.tolist()) if v != float("-inf")]
                for vals, idx in zip(top.values, top.indices)]

    def ranks(self, histories: list[list[str]], targets: list[str], batch_size: int = 512) -> torch.Tensor:
        """Rank of each target item id after its history of item ids (unknown ids are this model's misses)."""
        out = []
        for i in range(0, len(targets), batch_size):
            hs = [self.encode(h)[0] for h in histories[i:i + batch_size]]
            ts = [self.index.get(t, 0) for t in targets[i:i + batch_size]]
            r = metrics.target_ranks(self.scores(hs), torch.tensor(ts), exclude=hs)
            r[torch.tensor(ts) == 0] = metrics.MISS  # an item this model never saw: a miss at every cut-off
            out.append(r)
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def popularity_ranks(train_histories: list[list[str]], histories: list[list[str]], targets: list[str]) -> torch.Tensor:
    """Ranks under the most-popular baseline (counts over the histories), history items excluded."""
    return popularity_ranks_counted(history_counts(train_histories, targets), histories, targets)


def history_counts(train_histories: list[list[str]], targets: list[str]) -> dict[str, int]:
    """Item id -> how often it is in ``train_histories``, for every item there and every target (0 if none)."""
    counts = {t: 0 for t in targets}
    for h in train_histories:
        for i in h:
            counts[i] = counts.get(i, 0) + 1
    return counts


def popularity_ranks_counted(counts: dict[str, int], histories: list[list[str]], targets: list[str],
                             batch_size: int = 2048) -> torch.Tensor:
    """Ranks under the most-popular baseline given its counts (item id -> count; the items it ranks, every target
    among them), history items excluded: a shard of the shoppers ranked by the popularity over all of them."""
    vocab = sorted(counts)
    index = {item: j for j, item in enumerate(vocab, start=1)}
    row = torch.tensor([0.0] + [float(counts[i]) for i in vocab], dtype=torch.float32)
    hs = [[index[i] for i in h] for h in histories]
    ts = torch.tensor([index[t] for t in targets], dtype=torch.long)
    # in batches of shoppers: ranking copies the scores, and all shoppers times all items would not fit
    return torch.cat([metrics.target_ranks(row.expand(len(ts[b:b + batch_size]), -1), ts[b:b + batch_size],
                                           exclude=hs[b:b + batch_size]) for b in range(0, len(ts), batch_size)]
                     or [torch.zeros(0, dtype=torch.long)])
