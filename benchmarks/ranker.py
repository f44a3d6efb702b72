"""Benchmark of the LoRA MiniLM ranker on Home Depot product search relevance (real data).

    .venv/bin/python benchmarks/ranker.py homedepot --work .shoprec/bench/ranker-hd \\
        --out benchmarks/results/ranker-homedepot.json

Split by query: sorted unique search terms, ``numpy.random.default_rng(42).shuffle``, 80/10/10.
Two settings on the test queries:

- re-rank: each query's judged products; NDCG@10 with gain = relevance - 1 (queries whose judged
  products are all irrelevant have no ideal DCG and are left out); RMSE of the predicted relevance
  (lexical/cosine scores are mapped to relevance by a linear fit on training pairs);
- retrieve: all 54,667 products; NDCG@10 with gain = relevance - 1 for judged products and 0 for
  unjudged ones, Recall@100 (relevant: relevance >= 2.33) and MRR@10, over test queries with at
  least one relevant product.

Stages run in order and the results file is rewritten after each, so a cut-short run still reports
what it finished. Every figure is measured on this machine; CPU time is scarce, so the training
sets are subsampled (``--train-pairs``, ``--bi-pairs``) and recorded in the results.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from shoprec.ranker.config import LoraSettings, RankerConfig  # noqa: E402
from shoprec.ranker.models import (  # noqa: E402
    Ranker,
    build_bi_encoder,
    build_cross_encoder,
    encode_texts,
    merged_copy,
    quantize_int8,
    tokenize_pairs,
)
from shoprec.ranker.search import RRF_K, SearchIndex, bm25_tokenize, rrf  # noqa: E402
from shoprec.ranker.train import Pair, fit_bi_encoder, fit_cross_encoder  # noqa: E402

log = logging.getLogger("bench.ranker")
HD = Path("/work/shared/data/homedepot-search-relevance/train.csv.zip")
RELEVANT = 2.33 - 1e-6


# ------------------------------------------------------------------ data
def load_homedepot(path: Path = HD):
    df = pd.read_csv(path, encoding="latin-1")
    qs = sorted(df["search_term"].unique())
    np.random.default_rng(42).shuffle(qs)
    n = len(qs)
    split = {q: "train" for q in qs[:int(0.8 * n)]}
    split.update({q: "valid" for q in qs[int(0.8 * n):int(0.9 * n)]})
    split.update({q: "test" for q in qs[int(0.9 * n):]})
    df["split"] = df["search_term"].map(split)
    products = df.drop_duplicates("product_uid").sort_values("product_uid")
    return df, list(products["product_uid"]), list(products["product_title"])


def groups_of(df: pd.DataFrame) -> list[list[Pair]]:
    return [[Pair(q, t, float("nan"), (r - 1.0) / 2.0) for t, r in zip(g["product_title"], g["relevance"])]
            for q, g in df.groupby("search_term", sort=True)]


def subsample_groups(groups, max_pairs, seed=0):
    order = np.random.default_rng(seed).permutation(len(groups))
    out, n = [], 0
    for i in order:
        if n >= max_pairs:
            break
        out.append(groups[i])
        n += len(groups[i])
    return out


# ------------------------------------------------------------------ metrics
def ndcg_tie_aware(scores: np.ndarray, gains: np.ndarray, k: int = 10) -> float:
    """NDCG@k where tied scores share the mean gain of their tie group (McSherry & Najork 2008):
    the expected NDCG over all orders of the ties, so a constant scorer gets no lucky order."""
    disc = np.zeros(len(gains))
    disc[:k] = 1.0 / np.log2(np.arange(2, min(k, len(gains)) + 2))
    order = np.argsort(-scores, kind="stable")
    s, g = scores[order], gains[order]
    dcg, i = 0.0, 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        dcg += g[i:j + 1].mean() * disc[i:j + 1].sum()
        i = j + 1
    idcg = (np.sort(gains)[::-1] * disc).sum()
    return float(dcg / idcg)


def rerank_per_query(test: pd.DataFrame, scores: np.ndarray) -> np.ndarray:
    """NDCG@10 per test query (judged products only; gain relevance - 1; ties tie-aware); NaN where no gain is positive."""
    out = []
    t = test.assign(_s=scores)
    for _, g in t.groupby("search_term", sort=True):
        gains = g["relevance"].to_numpy() - 1.0
        out.append(ndcg_tie_aware(g["_s"].to_numpy(), gains) if gains.max() > 0 else np.nan)
    return np.array(out)


def rmse(pred: np.ndarray, rel: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.clip(pred, 1.0, 3.0) - rel) ** 2)))


def bootstrap_diff(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> dict:
    """Paired bootstrap over queries of mean(a - b): the point estimate and a 95% interval."""
    keep = ~np.isnan(a) & ~np.isnan(b)
    d = a[keep] - b[keep]
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (n, len(d)))].mean(1)
    return {"diff": float(d.mean()), "ci95": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]}


def retrieve_metrics(rankings: list[list[int]], judged: list[dict[int, float]]) -> dict:
    """rankings: per query product positions, best first (>= 100 long where possible)."""
    nd, rec, mrr = [], [], []
    for ranking, rel in zip(rankings, judged):
        gains = np.array([rel.get(d, 1.0) - 1.0 for d in ranking[:10]])
        disc = 1.0 / np.log2(np.arange(2, len(gains) + 2))
        ideal = np.sort(np.array(list(rel.values())) - 1.0)[::-1][:10]
        nd.append(float((gains * disc).sum() / (ideal * (1.0 / np.log2(np.arange(2, len(ideal) + 2)))).sum()))
        relevant = {d for d, r in rel.items() if r >= RELEVANT}
        rec.append(len(relevant & set(ranking[:100])) / len(relevant))
        first = next((i for i, d in enumerate(ranking[:10]) if d in relevant), None)
        mrr.append(0.0 if first is None else 1.0 / (first + 1))
    return {"ndcg@10": float(np.mean(nd)), "recall@100": float(np.mean(rec)), "mrr@10": float(np.mean(mrr)),
            "queries": len(nd)}


def linear_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    a, b = np.polyfit(x, y, 1)
    return float(a), float(b)


# ------------------------------------------------------------------ helpers
def timed_scores(ranker: Ranker, a: list[str], b: list[str], head: str = "aux") -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    s = ranker.score(a, b, head=head, batch_size=64)
    return s, time.perf_counter() - t


def speed_ratio(models: dict[str, torch.nn.Module], tok, cfg: RankerConfig, a: list[str], b: list[str],
                rounds: int = 3) -> dict[str, float]:
    """Median seconds to score the same pairs, the models taking turns (so machine load hits them alike)."""
    times: dict[str, list[float]] = {k: [] for k in models}
    batches = [tokenize_pairs(tok, a[i:i + 64], b[i:i + 64], cfg.max_len) for i in range(0, len(a), 64)]
    with torch.inference_mode():
        for _ in range(rounds):
            for name, m in models.items():
                t = time.perf_counter()
                for enc in batches:
                    m(**enc)
                times[name].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def step_time_ratio(cfg_lora: RankerConfig, cfg_full: RankerConfig, tok, groups, rounds: int = 6) -> dict:
    """Median seconds of one optimizer step (forward, backward, AdamW) for LoRA and full fine-tuning, alternating."""
    from shoprec.ranker.train import cross_collate, cross_loss_fn
    from shoprec.trainer import make_optimizer

    out = {}
    batch = cross_collate(tok, cfg_lora.max_len)(groups[:4])
    models = {"lora": build_cross_encoder(cfg_lora), "full": build_cross_encoder(cfg_full)}
    opts = {k: make_optimizer(m, 1e-5, 0.01) for k, m in models.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    for r in range(rounds + 1):
        for k, m in models.items():
            m.train()
            t = time.perf_counter()
            loss = cross_loss_fn(cfg_lora)(m, batch)["loss"]
            loss.backward()
            opts[k].step()
            opts[k].zero_grad(set_to_none=True)
            if r:  # the first round warms up
                times[k].append(time.perf_counter() - t)
    for k in models:
        out[k] = float(np.median(times[k]))
    out["pairs_per_step"] = int(batch["input_ids"].shape[0])
    out["lora/full"] = out["lora"] / out["full"]
    return out


# ------------------------------------------------------------------ the benchmark
def homedepot(args) -> None:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out_path = Path(args.out)
    res = json.loads(out_path.read_text()) if out_path.exists() and args.keep else {}
    res.update({"command": " ".join(["benchmarks/ranker.py"] + sys.argv[1:]), "rerank": res.get("rerank", {}),
                "retrieve": res.get("retrieve", {}), "training": res.get("training", {}),
                "export": res.get("export", {}), "significance": res.get("significance", {}),
                "timings": res.get("timings", {}), "machine": f"{os.cpu_count()} CPU cores, torch threads {args.threads}"})
    per_query: dict[str, np.ndarray] = {}

    def save():
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(res, indent=2))

    torch.set_num_threads(args.threads)
    df, uids, titles = load_homedepot()
    if args.smoke_products:  # smoke test only: a smaller corpus (test queries' judged products kept)
        keep = set(uids[:args.smoke_products]) | set(df.loc[df["split"] == "test", "product_uid"])
        titles = [t for u, t in zip(uids, titles) if u in keep]
        uids = [u for u in uids if u in keep]
        res["smoke_products"] = len(uids)
    pos = {u: i for i, u in enumerate(uids)}
    train_df, valid_df, test_df = (df[df["split"] == s].sort_values(["search_term", "id"]) for s in ("train", "valid", "test"))
    test_q = sorted(test_df["search_term"].unique())
    judged = [{pos[u]: r for u, r in zip(g["product_uid"], g["relevance"])} for _, g in test_df.groupby("search_term", sort=True)]
    has_rel = [max(j.values()) >= RELEVANT for j in judged]
    rq = [q for q, h in zip(test_q, has_rel) if h]
    rj = [j for j, h in zip(judged, has_rel) if h]
    res["data"] = {"pairs": len(df), "products": len(uids), "queries": {s: int(d["search_term"].nunique()) for s, d in
                                                                        (("train", train_df), ("valid", valid_df), ("test", test_df))},
                   "test_pairs": len(test_df), "retrieve_queries": len(rq)}
    log.info("data: %s", res["data"])
    rel = test_df["relevance"].to_numpy()
    a_test, b_test = list(test_df["search_term"]), list(test_df["product_title"])

    def record_rerank(name, scores, pred_rel, extra=None):
        pq = rerank_per_query(test_df, scores)
        per_query[name] = pq
        res["rerank"][name] = {"ndcg@10": float(np.nanmean(pq)), "rmse": rmse(pred_rel, rel),
                               "queries": int((~np.isnan(pq)).sum()), **(extra or {})}
        log.info("rerank %s: %s", name, res["rerank"][name])
        save()

    # ---- constant and BM25
    record_rerank("constant", np.zeros(len(test_df)), np.full(len(test_df), train_df["relevance"].mean()),
                  {"note": "all scores tied; relevance = training mean"})
    import bm25s

    bm25 = bm25s.BM25()
    bm25.index(bm25_tokenize(titles), show_progress=False)
    index = SearchIndex([str(u) for u in uids], titles, bm25, None, None)

    def bm25_pair_scores(frame):
        s = np.zeros(len(frame))
        for i, (q, u) in enumerate(zip(frame["search_term"], frame["product_uid"])):
            toks = bm25_tokenize([q])[0]
            s[i] = bm25.get_scores(toks)[pos[u]] if (u in pos and toks) else 0.0
        return s

    fit_df = train_df.sample(n=min(5000, len(train_df)), random_state=0)
    a_, b_ = linear_fit(bm25_pair_scores(fit_df), fit_df["relevance"].to_numpy())
    s = bm25_pair_scores(test_df)
    record_rerank("bm25", s, a_ * s + b_)
    t = time.perf_counter()
    bm25_lists = index.bm25_topk(rq, 100)
    res["timings"]["bm25_retrieve_s"] = time.perf_counter() - t
    res["retrieve"]["bm25"] = retrieve_metrics(bm25_lists, rj)
    log.info("retrieve bm25: %s", res["retrieve"]["bm25"])
    save()

    from transformers import AutoTokenizer

    base_cfg = RankerConfig(max_len=args.max_len, bi_max_len=args.bi_max_len, aux_task="relevance", click_weight=0.0,
                            aux_weight=1.0, listwise_weight=args.listwise)
    tok = AutoTokenizer.from_pretrained(base_cfg.encoder_dir())
    train_groups = subsample_groups(groups_of(train_df), args.train_pairs, seed=0)
    res["training"]["data"] = {"cross_train_pairs": sum(map(len, train_groups)), "cross_train_queries": len(train_groups)}

    def cross_cfg(lora: bool, lr: float) -> RankerConfig:
        d = base_cfg.to_dict()
        d["lora"] = LoraSettings(enabled=lora, r=args.lora_r, alpha=2 * args.lora_r, dropout=0.05).__dict__
        d["fit"] = dict(epochs=args.epochs, batch_size=args.groups_per_batch, lr=lr, weight_decay=0.01,
                        warmup_ratio=0.1, patience=args.epochs, threads=args.threads, progress=args.progress,
                        fgm_epsilon=args.fgm)
        return RankerConfig.from_dict(d)

    cfg_lora, cfg_full = cross_cfg(True, args.lr_lora), cross_cfg(False, args.lr_full)

    # ---- LoRA cross-encoder, its merged and int8 exports
    if "lora-cross" in args.stages:
        model, summ = fit_cross_encoder(cfg_lora, train_groups, [], work / "lora-cross", tokenizer=tok,
                                        evaluate_fn=lambda m: {})
        res["training"]["lora-cross"] = {k: summ[k] for k in ("trainable_params", "total_params", "step_seconds",
                                                              "train_seconds", "optimizer_steps")}
        res["training"]["lora-cross"]["config"] = {"r": args.lora_r, "alpha": 2 * args.lora_r, "targets": cfg_lora.lora.target_modules,
                                                   "lr": args.lr_lora, "epochs": args.epochs, "listwise_weight": args.listwise,
                                                   "fgm_epsilon": args.fgm, "max_len": args.max_len}
        unmerged = Ranker(model.eval(), tok, cfg_lora)
        merged = Ranker(merged_copy(model).eval(), tok, cfg_lora)
        s, secs = timed_scores(merged, a_test, b_test)
        record_rerank("lora-cross", s, 1 + 2 * s, {"score_seconds": secs})
        int8 = Ranker(quantize_int8(merged.cross), tok, cfg_lora)
        s8, secs8 = timed_scores(int8, a_test, b_test)
        record_rerank("int8-cross", s8, 1 + 2 * s8, {"score_seconds": secs8})
        n = min(384, len(a_test))
        sp = speed_ratio({"lora-unmerged": unmerged.cross, "merged-fp32": merged.cross, "int8": int8.cross}, tok,
                         cfg_lora, a_test[:n], b_test[:n])
        su = unmerged.score(a_test[:n], b_test[:n], head="aux")
        res["export"] = {
            "pairs_timed": n, "median_seconds": sp,
            "merge_speedup": sp["lora-unmerged"] / sp["merged-fp32"],
            "int8_speedup_vs_merged": sp["merged-fp32"] / sp["int8"],
            "merge_max_abs_score_diff": float(np.abs(su - s[:n]).max()),
            "int8_ndcg_change_rel": (res["rerank"]["int8-cross"]["ndcg@10"] / res["rerank"]["lora-cross"]["ndcg@10"]) - 1,
            "int8_rmse_change": res["rerank"]["int8-cross"]["rmse"] - res["rerank"]["lora-cross"]["rmse"],
        }
        log.info("export: %s", res["export"])
        res["significance"]["lora-cross - bm25"] = bootstrap_diff(per_query["lora-cross"], per_query["bm25"])
        save()
        global_cross = merged
    else:
        global_cross = None

    if "full-cross" in args.stages:
        model, summ = fit_cross_encoder(cfg_full, train_groups, [], work / "full-cross", tokenizer=tok,
                                        evaluate_fn=lambda m: {})
        res["training"]["full-cross"] = {k: summ[k] for k in ("trainable_params", "total_params", "step_seconds",
                                                              "train_seconds", "optimizer_steps")}
        res["training"]["full-cross"]["config"] = {"lr": args.lr_full, "epochs": args.epochs}
        s, secs = timed_scores(Ranker(model.eval(), tok, cfg_full), a_test, b_test)
        record_rerank("full-cross", s, 1 + 2 * s, {"score_seconds": secs})
        if "lora-cross" in per_query:
            res["significance"]["lora-cross - full-cross"] = bootstrap_diff(per_query["lora-cross"], per_query["full-cross"])
        del model
        save()

    if "steptime" in args.stages:
        res["training"]["step_time_side_by_side"] = step_time_ratio(cfg_lora, cfg_full, tok, train_groups)
        log.info("step time: %s", res["training"]["step_time_side_by_side"])
        save()

    # ---- bi-encoders
    zs = Ranker(None, tok, base_cfg, build_bi_encoder(RankerConfig(lora=LoraSettings(enabled=False))).eval())
    if "zero-shot" in args.stages:
        uq = sorted(set(a_test))
        qv = dict(zip(uq, zs.encode(uq)))
        tv = dict(zip(sorted(set(b_test)), zs.encode(sorted(set(b_test)))))
        s = np.array([qv[a] @ tv[b] for a, b in zip(a_test, b_test)])
        fit_s = np.array([x @ y for x, y in zip(zs.encode(list(fit_df["search_term"][:2000])),
                                                  zs.encode(list(fit_df["product_title"][:2000])))])
        a_, b_ = linear_fit(fit_s, fit_df["relevance"].to_numpy()[:2000])
        record_rerank("zero-shot", s, a_ * s + b_)

    bi_ranker = None
    if "lora-bi" in args.stages:
        bi_cfg = RankerConfig.from_dict({**base_cfg.to_dict(), "lora": LoraSettings(r=args.lora_r, alpha=2 * args.lora_r).__dict__,
                                         "bi_fit": dict(epochs=args.epochs, batch_size=args.bi_batch, lr=args.lr_bi,
                                                        warmup_ratio=0.1, patience=args.epochs, threads=args.threads,
                                                        progress=args.progress),
                                         "bi_temperature": 0.05})
        pos_pairs = [(q, t) for q, t, r in zip(train_df["search_term"], train_df["product_title"], train_df["relevance"])
                     if r >= RELEVANT]
        rng = np.random.default_rng(0)
        pos_pairs = [pos_pairs[i] for i in rng.permutation(len(pos_pairs))[:args.bi_pairs]]
        bi, summ = fit_bi_encoder(bi_cfg, pos_pairs, work / "lora-bi", tokenizer=tok, evaluate_fn=lambda m: {})
        res["training"]["lora-bi"] = {k: summ[k] for k in ("trainable_params", "total_params", "step_seconds",
                                                           "train_seconds", "optimizer_steps")}
        res["training"]["lora-bi"]["config"] = {"pairs": len(pos_pairs), "batch": args.bi_batch, "lr": args.lr_bi,
                                                "loss": "in-batch negatives (MNRL), temperature 0.05", "r": args.lora_r}
        bi_m = merged_copy(bi).eval()
        bi_ranker = Ranker(global_cross.cross if global_cross else None, tok, base_cfg, bi_m)
        uq = sorted(set(a_test))
        qv = dict(zip(uq, bi_ranker.encode(uq)))
        tv = dict(zip(sorted(set(b_test)), bi_ranker.encode(sorted(set(b_test)))))
        s = np.array([qv[a] @ tv[b] for a, b in zip(a_test, b_test)])
        fit_s = np.array([x @ y for x, y in zip(bi_ranker.encode(list(fit_df["search_term"][:2000])),
                                                  bi_ranker.encode(list(fit_df["product_title"][:2000])))])
        a_, b_ = linear_fit(fit_s, fit_df["relevance"].to_numpy()[:2000])
        record_rerank("lora-bi", s, a_ * s + b_)
        vec_path = work / "lora-bi-vectors.npy"
        t = time.perf_counter()
        vecs = encode_texts(bi_m, tok, titles, args.bi_max_len, 256)
        res["timings"]["lora_bi_encode_corpus_s"] = time.perf_counter() - t
        np.save(vec_path, vecs)
        index_bi = SearchIndex([str(u) for u in uids], titles, bm25, vecs, bi_ranker)
        dense = index_bi.dense_topk(rq, 100)
        res["retrieve"]["lora-bi"] = retrieve_metrics(dense, rj)
        fused = [rrf([x, y])[:100] for x, y in zip(bm25_lists, dense)]
        res["retrieve"]["fusion"] = {**retrieve_metrics(fused, rj), "note": f"RRF k={RRF_K} of BM25 top-100 and lora-bi top-100"}
        log.info("retrieve lora-bi %s fusion %s", res["retrieve"]["lora-bi"], res["retrieve"]["fusion"])
        save()
        if global_cross is not None and "search-path" in args.stages:
            t = time.perf_counter()
            final = []
            D = args.rerank_depth
            for q, cand in zip(rq, fused):
                head = cand[:D]
                sc = global_cross.score([q] * len(head), [titles[d] for d in head], head="aux", batch_size=64)
                final.append([head[j] for j in np.argsort(-sc, kind="stable")] + cand[D:])
            res["timings"]["search_path_rerank_s"] = time.perf_counter() - t
            res["retrieve"]["search-path"] = {**retrieve_metrics(final, rj),
                                              "note": f"fusion top-{D} re-ranked by lora-cross (relevance head), rest in fused order"}
            log.info("retrieve search-path %s", res["retrieve"]["search-path"])
            save()

    if "zero-shot-retrieve" in args.stages:
        t = time.perf_counter()
        vecs = encode_texts(zs.bi, tok, titles, args.bi_max_len, 256)
        res["timings"]["zero_shot_encode_corpus_s"] = time.perf_counter() - t
        index_zs = SearchIndex([str(u) for u in uids], titles, bm25, vecs, zs)
        dense = index_zs.dense_topk(rq, 100)
        res["retrieve"]["zero-shot"] = retrieve_metrics(dense, rj)
        res["retrieve"]["bm25+zero-shot"] = {**retrieve_metrics([rrf([x, y])[:100] for x, y in zip(bm25_lists, dense)], rj),
                                             "note": f"RRF k={RRF_K}"}
        save()
    for k in ("zero-shot", "lora-bi", "full-cross", "int8-cross"):
        if k in per_query and "bm25" in per_query:
            res["significance"][f"{k} - bm25"] = bootstrap_diff(per_query[k], per_query["bm25"])
    save()
    log.info("done: %s", json.dumps({k: res[k] for k in ("rerank", "retrieve")}, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="bench", required=True)
    h = sub.add_parser("homedepot")
    h.add_argument("--work", default=".shoprec/bench/ranker-hd")
    h.add_argument("--out", default="benchmarks/results/ranker-homedepot.json")
    h.add_argument("--keep", action="store_true", help="update an existing results file instead of starting afresh")
    h.add_argument("--stages", default="lora-cross,full-cross,steptime,zero-shot,lora-bi,search-path,zero-shot-retrieve")
    h.add_argument("--threads", type=int, default=1)
    h.add_argument("--train-pairs", type=int, default=6000)
    h.add_argument("--bi-pairs", type=int, default=6000)
    h.add_argument("--epochs", type=int, default=1)
    h.add_argument("--max-len", type=int, default=40)
    h.add_argument("--bi-max-len", type=int, default=32)
    h.add_argument("--lora-r", type=int, default=16)
    h.add_argument("--lr-lora", type=float, default=5e-4)
    h.add_argument("--lr-full", type=float, default=5e-5)
    h.add_argument("--lr-bi", type=float, default=3e-4)
    h.add_argument("--bi-batch", type=int, default=64)
    h.add_argument("--groups-per-batch", type=int, default=4)
    h.add_argument("--listwise", type=float, default=0.5)
    h.add_argument("--fgm", type=float, default=0.0)
    h.add_argument("--rerank-depth", type=int, default=20)
    h.add_argument("--progress", action="store_true")
    h.add_argument("--smoke-products", type=int, default=0, help="smoke test: index only this many products (+ judged test ones)")
    a = p.parse_args()
    a.stages = set(a.stages.split(","))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if a.bench == "homedepot":
        homedepot(a)


if __name__ == "__main__":
    main()
