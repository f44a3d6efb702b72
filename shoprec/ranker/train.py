"""Training and evaluation of the ranker on shoprec features (and the building blocks the benchmarks reuse).

Training data are *groups*: the candidates shown for one query (one row of ``search_pairs.parquet``
per shown product) or one shopper-history window with its clicked item and sampled negatives
(``click_samples.parquet``). A batch holds whole groups, so the optional listwise loss can compare a
query's candidates with each other. Labels are ``click`` (0/1) and ``aux`` (purchase 0/1, or graded
relevance scaled to [0, 1]); a NaN label gives no loss. A pair's ``weight`` scales its click and
listwise losses (1 for logged pairs; benchmarks/ranker_pseudolabel.py gives pseudo-labelled pairs less).

Run under torchrun for DDP (``python -m torch.distributed.run --nproc_per_node=2 -m shoprec.ranker.train
--features F --out M``) or call :func:`train_ranker` in one process.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from shoprec import metrics
from shoprec.data.shards import manifest, read_rows
from shoprec.ranker.config import RankerConfig, load_config
from shoprec.ranker.models import (
    BiEncoder,
    CrossEncoder,
    Ranker,
    build_bi_encoder,
    build_cross_encoder,
    load_ranker,
    save_model,
    tokenize_pairs,
    tokenize_texts,
)
from shoprec.trainer import loop as trainer

log = logging.getLogger("shoprec.ranker")


@dataclass
class Pair:
    a: str
    b: str
    click: float = math.nan
    aux: float = math.nan
    weight: float = 1.0


class GroupDataset(Dataset):
    """A list of groups (lists of :class:`Pair`); one item is one group."""

    def __init__(self, groups: list[list[Pair]]):
        self.groups = [g for g in groups if g]

    def __len__(self):
        return len(self.groups)

    def __getitem__(self, i):
        return self.groups[i]

    @property
    def n_pairs(self) -> int:
        return sum(map(len, self.groups))


def cross_collate(tokenizer, max_len: int):
    def collate(groups: list[list[Pair]]) -> dict:
        pairs = [p for g in groups for p in g]
        enc = tokenize_pairs(tokenizer, [p.a for p in pairs], [p.b for p in pairs], max_len)
        enc["click"] = torch.tensor([p.click for p in pairs], dtype=torch.float32)
        enc["aux"] = torch.tensor([p.aux for p in pairs], dtype=torch.float32)
        enc["weight"] = torch.tensor([p.weight for p in pairs], dtype=torch.float32)
        enc["group"] = torch.tensor([i for i, g in enumerate(groups) for _ in g], dtype=torch.long)
        return enc
    return collate


def _masked(loss_fn, pred, target, weight=None):
    """Mean loss over the pairs with a label; with ``weight`` (one per pair) the weighted mean."""
    keep = ~torch.isnan(target)
    if not keep.any():
        return pred.sum() * 0.0
    if weight is None:
        return loss_fn(pred[keep], target[keep])
    w = weight[keep]
    return (loss_fn(pred[keep], target[keep], reduction="none") * w).sum() / w.sum().clamp_min(1e-12)


def listwise_loss(scores: torch.Tensor, labels: torch.Tensor, group: torch.Tensor, temperature: float = 0.1,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """ListNet: cross-entropy between softmax(labels / temperature) and softmax(scores) within each group;
    with ``weight`` (one per pair) groups are averaged weighted by their pairs' mean weight."""
    losses, ws = [], []
    for g in torch.unique(group):
        m = (group == g) & ~torch.isnan(labels)
        if m.sum() < 2 or labels[m].max() == labels[m].min():
            continue
        target = torch.softmax(labels[m] / temperature, 0)
        losses.append(-(target * torch.log_softmax(scores[m], 0)).sum())
        if weight is not None:
            ws.append(weight[m].mean())
    if not losses:
        return scores.sum() * 0.0
    if weight is None:
        return torch.stack(losses).mean()
    w = torch.stack(ws)
    return (torch.stack(losses) * w).sum() / w.sum().clamp_min(1e-12)


def cross_loss_fn(cfg: RankerConfig):
    def loss_fn(module, batch) -> dict:
        click, aux = module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            token_type_ids=batch.get("token_type_ids"))
        click, aux = click.float(), aux.float()
        w = batch.get("weight")
        w = w if w is not None and bool((w != 1).any()) else None  # all-ones: exactly the unweighted loss
        l_click = _masked(F.binary_cross_entropy_with_logits, click, batch["click"], w)
        if cfg.aux_task == "purchase":
            l_aux = _masked(F.binary_cross_entropy_with_logits, aux, batch["aux"])
        else:
            l_aux = _masked(F.mse_loss, aux, batch["aux"])
        loss = cfg.click_weight * l_click + cfg.aux_weight * l_aux
        out = {"click_loss": l_click.detach(), "aux_loss": l_aux.detach()}
        if cfg.listwise_weight > 0:
            scores, labels = (aux, batch["aux"]) if cfg.aux_task == "relevance" else (click, batch["click"])
            l_list = listwise_loss(scores, labels, batch["group"], weight=w)
            loss = loss + cfg.listwise_weight * l_list
            out["listwise_loss"] = l_list.detach()
        out["loss"] = loss
        return out
    return loss_fn


def bi_collate(tokenizer, max_len: int):
    """Examples are (query, positive) or (query, positive, hard negative) texts; all are tokenised to one
    padded block: the queries, then the positives, then the hard negatives (if every example has one)."""
    def collate(pairs: list[tuple[str, ...]]) -> dict:
        queries, docs = [p[0] for p in pairs], [p[1] for p in pairs]
        negs = [p[2] for p in pairs] if all(len(p) > 2 for p in pairs) else []
        enc = tokenize_texts(tokenizer, queries + docs + negs, max_len)
        n = len(pairs)
        # the same product (or the same query, whose other positive it is) twice in a batch is not a negative
        same = torch.tensor([[i != j and (docs[i] == docs[j] or queries[i] == queries[j]) for j in range(n)]
                             for i in range(n)])
        if negs:  # a hard negative of one query may be another query's positive
            same = torch.cat([same, torch.tensor([[negs[j] == docs[i] or (i != j and queries[i] == queries[j])
                                                   for j in range(n)] for i in range(n)])], 1)
        enc["same"] = same
        return enc
    return collate


def bi_loss_fn(temperature: float):
    """MultipleNegativesRanking: each query against its positive, the batch's other positives and hard negatives."""
    def loss_fn(module, batch) -> torch.Tensor:
        v = module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).float()
        n = batch["same"].shape[0]
        sim = (v[:n] @ v[n:].T) / temperature
        sim = sim.masked_fill(batch["same"], float("-inf"))
        return F.cross_entropy(sim, torch.arange(n, device=sim.device))
    return loss_fn


# ------------------------------------------------------------------ metrics
def click_metrics(prob: np.ndarray, clicked: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import log_loss, roc_auc_score

    p = np.clip(prob.astype(np.float64), 1e-6, 1 - 1e-6)
    auc = float(roc_auc_score(clicked, p)) if 0 < clicked.sum() < len(clicked) else float("nan")
    return {"auc": auc, "logloss": float(log_loss(clicked, p, labels=[0, 1]))}


# ------------------------------------------------------------------ shop data
def split_keys(keys: list[str], seed: int, valid_fraction: float, test_fraction: float) -> dict[str, str]:
    """Key -> ``train``/``valid``/``test``: a seeded shuffle of the sorted unique keys, cut by fraction."""
    uniq = sorted(set(keys))
    np.random.default_rng(seed).shuffle(uniq)
    n_test, n_valid = int(round(test_fraction * len(uniq))), int(round(valid_fraction * len(uniq)))
    out = {k: "test" for k in uniq[:n_test]}
    out.update({k: "valid" for k in uniq[n_test:n_test + n_valid]})
    out.update({k: "train" for k in uniq[n_test + n_valid:]})
    return out


def recent_first(history: str) -> str:
    """click_samples histories are oldest first; the cross-encoder truncates the end, so put the newest first."""
    return " ; ".join(reversed(history.split(" ; ")))


def shop_groups(features_dir: str | Path, cfg: RankerConfig) -> dict[str, list[list[Pair]]]:
    """Search impressions (grouped by session and query) and click samples (grouped by history), split by query/history."""
    features_dir = Path(features_dir)
    sp = read_rows(features_dir, "search_pairs").to_pandas()  # over all shards of the features
    split = split_keys(list(sp["query"]), cfg.seed, cfg.valid_fraction, cfg.test_fraction)
    out: dict[str, list[list[Pair]]] = {"train": [], "valid": [], "test": []}
    for (_, q), g in sp.groupby(["session_id", "query"], sort=True):
        out[split[q]].append([Pair(q, t, float(c), float(p))
                              for t, c, p in zip(g["title"], g["clicked"], g["purchased"])])
    if cfg.use_click_samples and manifest(features_dir)["rows"]["click_samples"]:
        cs = read_rows(features_dir, "click_samples").to_pandas()
        hsplit = split_keys(list(cs["history"]), cfg.seed + 1, cfg.valid_fraction, cfg.test_fraction)
        for h, g in cs.groupby("history", sort=True):
            out[hsplit[h]].append([Pair(recent_first(h), t, float(c)) for t, c in zip(g["title"], g["clicked"])])
    return out


def subsample(groups: list[list[Pair]], max_pairs: int, seed: int) -> list[list[Pair]]:
    if not max_pairs or sum(map(len, groups)) <= max_pairs:
        return groups
    order = np.random.default_rng(seed).permutation(len(groups))
    kept, n = [], 0
    for i in order:
        if n >= max_pairs:
            break
        kept.append(groups[i])
        n += len(groups[i])
    return kept


def score_groups(ranker_like: Ranker, groups: list[list[Pair]], head: str) -> np.ndarray:
    pairs = [p for g in groups for p in g]
    return ranker_like.score([p.a for p in pairs], [p.b for p in pairs], head=head)


def group_metrics(scores: np.ndarray, groups: list[list[Pair]], label: str = "click", k: int = 10) -> dict[str, float]:
    """Click AUC/log-loss over all pairs and mean NDCG@k over groups with a positive label."""
    labels = np.array([getattr(p, label) for g in groups for p in g], dtype=np.float64)
    keep = ~np.isnan(labels)
    res = click_metrics(scores[keep], labels[keep]) if label == "click" else {}
    nd, i = [], 0
    for g in groups:
        s, y = scores[i:i + len(g)], labels[i:i + len(g)]
        i += len(g)
        if np.nansum(y) > 0:
            nd.append(metrics.ndcg_at_k(s, np.nan_to_num(y), k))
    res[f"ndcg@{k}"] = float(np.mean(nd)) if nd else float("nan")
    return res


# ------------------------------------------------------------------ training
def encoder_tokenizer(cfg: RankerConfig):
    """The tokenizer of the ranker's base encoder (the offline MiniLM unless cfg.base_model says otherwise)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(cfg.encoder_dir())


def fit_cross_encoder(cfg: RankerConfig, train: list[list[Pair]], valid: list[list[Pair]], out_dir: str | Path,
                      encoder=None, tokenizer=None, evaluate_fn=None) -> tuple[CrossEncoder, dict]:
    """Train the cross-encoder with :func:`shoprec.trainer.loop.fit`; returns the best model (LoRA not merged) and the summary."""
    tok = tokenizer or encoder_tokenizer(cfg)
    model = build_cross_encoder(cfg, encoder)
    if evaluate_fn is None:
        def evaluate_fn(m):
            s = Ranker(m, tok, cfg).score([p.a for g in valid for p in g], [p.b for g in valid for p in g],
                                          head="click")
            r = group_metrics(s, valid, "click")
            r["neg_logloss"] = -r["logloss"]
            return r
    summary = trainer.fit(model, GroupDataset(train), cross_collate(tok, cfg.max_len), cross_loss_fn(cfg),
                          evaluate_fn, Path(out_dir) / "cross", cfg.fit)
    return model, summary


def fit_bi_encoder(cfg: RankerConfig, pairs: list[tuple[str, str]], out_dir: str | Path, encoder=None,
                   tokenizer=None, evaluate_fn=None) -> tuple[BiEncoder, dict]:
    tok = tokenizer or encoder_tokenizer(cfg)
    model = build_bi_encoder(cfg, encoder)
    summary = trainer.fit(model, pairs, bi_collate(tok, cfg.bi_max_len), bi_loss_fn(cfg.bi_temperature),
                          evaluate_fn, Path(out_dir) / "bi", cfg.bi_fit)
    return model, summary


def training_groups(features_dir: str | Path, cfg: RankerConfig) -> tuple[list[list[Pair]], list[list[Pair]]]:
    """The cross-encoder's training and validation groups: :func:`shop_groups`, subsampled to ``max_pairs``
    (validation to a quarter of it)."""
    data = shop_groups(features_dir, cfg)
    return (subsample(data["train"], cfg.max_pairs, cfg.seed),
            subsample(data["valid"], max(cfg.max_pairs // 4, 0), cfg.seed))


def train_ranker(features_dir: str | Path, out_dir: str | Path, config: RankerConfig | dict | None = None) -> dict:
    """Train the cross-encoder (and bi-encoder + search index) on shoprec features; write the model folder.

    ``out_dir`` gets ``model.safetensors``/``config.json``/tokenizer files (cross-encoder, LoRA merged),
    ``bi_encoder/`` (same layout), ``search/`` (:class:`~shoprec.ranker.search.SearchIndex`) and
    ``metrics.json`` (this summary). Returns the summary on rank 0 (None on other ranks).
    """
    from shoprec.ranker.search import SearchIndex

    cfg = config if isinstance(config, RankerConfig) else RankerConfig.from_dict(config)
    out = Path(out_dir)
    t0 = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    tok = encoder_tokenizer(cfg)
    train, valid = training_groups(features_dir, cfg)
    world, rank, _ = trainer.setup_distributed()
    if rank == 0:
        log.info("ranker: %d training pairs in %d groups, %d validation pairs", sum(map(len, train)), len(train),
                 sum(map(len, valid)))
    cross, cross_summary = fit_cross_encoder(cfg, train, valid, out / "work", tokenizer=tok)
    bi_summary = None
    bi = None
    if cfg.train_bi_encoder:
        pos = [(p.a, p.b) for g in train for p in g if p.click == 1]
        bi, bi_summary = fit_bi_encoder(cfg, pos, out / "work", tokenizer=tok)
    summary = None
    if rank == 0:
        save_model(cross, out, cfg)
        if bi is not None:
            save_model(bi, out / "bi_encoder", cfg)
        ranker = load_ranker(out)
        items = pd.read_parquet(Path(features_dir) / "items.parquet")
        SearchIndex.build(list(items["item_id"]), list(items["title"]), ranker).save(out / "search")
        summary = {
            "train_pairs": sum(map(len, train)), "valid_pairs": sum(map(len, valid)),
            "cross": {k: v for k, v in cross_summary.items() if k != "config"},
            "bi": {k: v for k, v in bi_summary.items() if k != "config"} if bi_summary else None,
            "test": evaluate_ranker(out, features_dir),
            "seconds": time.perf_counter() - t0, "config": cfg.to_dict(),
        }
        (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=str))
        if not cfg.keep_checkpoints:
            import shutil

            shutil.rmtree(out / "work", ignore_errors=True)
        log.info("ranker trained in %.0f s: test %s", summary["seconds"], summary["test"])
    if world > 1:
        trainer.cleanup_distributed()
    return summary


def evaluate_ranker(model_dir: str | Path, features_dir: str | Path, int8: bool | None = None) -> dict[str, float]:
    """On the held-out test queries (the split saved in the model's config): click AUC and log-loss over
    all shown pairs, and search NDCG@10 (gain: clicked) over impressions with a click."""
    ranker = load_ranker(model_dir, int8=int8)
    if ranker.cfg.threads:
        torch.set_num_threads(ranker.cfg.threads)
    test = subsample(shop_groups(features_dir, ranker.cfg)["test"], ranker.cfg.max_eval_pairs, ranker.cfg.seed)
    search = [g for g in test if not math.isnan(g[0].aux)]  # search impressions (click samples have no aux label)
    s_all = score_groups(ranker, test, "click")
    res = group_metrics(s_all, test, "click")
    s_search = score_groups(ranker, search, "click")
    return {"auc": res["auc"], "logloss": res["logloss"],
            "search_ndcg@10": group_metrics(s_search, search, "click")["ndcg@10"],
            "pairs": int(len(s_all)), "search_impressions": len(search)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train the LoRA MiniLM ranker on shoprec features (torchrun-ready).")
    p.add_argument("--features", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--config", help="YAML of RankerConfig fields (configs/ranker/*.yaml)")
    p.add_argument("--overrides", default="{}", help="JSON object of RankerConfig fields")
    a = p.parse_args(argv)
    rank = trainer.dist_env()[1]
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    summary = train_ranker(a.features, a.out, load_config(a.config, **json.loads(a.overrides)))
    if summary:
        print(json.dumps({k: summary[k] for k in ("train_pairs", "seconds", "test")}, indent=2))


if __name__ == "__main__":
    main()
