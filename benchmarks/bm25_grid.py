"""BM25 parameters for product search, chosen on the Home Depot validation queries (never test).

    .venv/bin/python benchmarks/bm25_grid.py --bi .shoprec/rk-hd3/lora-bi --vectors .shoprec/rk-hd3/lora-bi-vectors.npy

For each bm25s variant and (k1, b): BM25 alone and the served fusion (``SearchIndex.fused``: BM25 top 200 +
bi-encoder top 200, z-scored sum, weight 0.5) over all 54,667 products, NDCG@10 and Recall@100 on the
validation queries with a relevant product (split as ``benchmarks/ranker.py``). Only the bm25s variants that
score a product without any query word 0 are tried (not ``bm25l``/``bm25+``), so BM25 hits stay meaningful. The bi-encoder and its
product vectors are the ones ``benchmarks/ranker.py homedepot`` saved. k1 is what matters: every k1 = 0.4 row
beats bm25s's defaults (lucene, k1 1.5, b 0.75) on fused Recall@100 and NDCG@10, and the variants and b values
at k1 = 0.4 are within 0.0004 of each other on the criterion (fused Recall@100 + NDCG@10), which is noise;
``SearchSettings`` keeps bm25s's default variant (lucene) with k1 0.4, b 0.5. Writes ``benchmarks/results/bm25-grid-homedepot.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from ranker import RELEVANT, load_homedepot, retrieve_metrics  # noqa: E402

from shoprec.ranker.config import RankerConfig, SearchSettings  # noqa: E402
from shoprec.ranker.models import Ranker, load_model  # noqa: E402
from shoprec.ranker.search import SearchIndex, bm25_index  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bi", required=True, help="saved bi-encoder folder (benchmarks/ranker.py --save-dir .../lora-bi)")
    ap.add_argument("--vectors", required=True, help="its vectors of all products in load_homedepot order (.npy)")
    ap.add_argument("--methods", default="lucene,robertson,atire")
    ap.add_argument("--k1", default="0.4,0.8,1.2,1.5")
    ap.add_argument("--b", default="0.35,0.5,0.75")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/bm25-grid-homedepot.json"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    from transformers import AutoTokenizer

    df, uids, titles = load_homedepot()
    pos = {u: i for i, u in enumerate(uids)}
    valid = df[df["split"] == "valid"]
    qs = sorted(valid["search_term"].unique())
    judged = [{pos[u]: r for u, r in zip(g["product_uid"], g["relevance"])} for _, g in valid.groupby("search_term", sort=True)]
    keep = [i for i, j in enumerate(judged) if max(j.values()) >= RELEVANT]
    vq, vj = [qs[i] for i in keep], [judged[i] for i in keep]
    bi, meta = load_model(a.bi)
    encoder = Ranker(None, AutoTokenizer.from_pretrained(a.bi), RankerConfig.from_dict(meta["ranker"]), bi)
    vecs = np.load(a.vectors)
    rows = []
    for method, k1, b in itertools.product(a.methods.split(","), map(float, a.k1.split(",")), map(float, a.b.split(","))):
        settings = SearchSettings(fusion="zscore", bm25_weight=0.5, per_retriever=200, bm25_method=method, bm25_k1=k1, bm25_b=b)
        index = SearchIndex([str(u) for u in uids], titles, bm25_index(titles, settings), vecs, None, encoder, settings)
        alone = retrieve_metrics(index.bm25_topk(vq, 100), vj)
        fused = retrieve_metrics([d for d, _ in index.fused(vq, depth=100)], vj)
        rows.append({"method": method, "k1": k1, "b": b, "bm25": alone, "fused": fused})
        print(method, k1, b, f"bm25 {alone['ndcg@10']:.4f} {alone['recall@100']:.4f} "
              f"fused {fused['ndcg@10']:.4f} {fused['recall@100']:.4f}", flush=True)
    best = max(rows, key=lambda r: r["fused"]["recall@100"] + r["fused"]["ndcg@10"])
    out = {"command": " ".join(["benchmarks/bm25_grid.py"] + sys.argv[1:]), "queries": len(vq), "split": "valid",
           "criterion": "fused recall@100 + ndcg@10", "best": {k: best[k] for k in ("method", "k1", "b")},
           "defaults_in_SearchSettings": {"method": SearchSettings.bm25_method, "k1": SearchSettings.bm25_k1,
                                          "b": SearchSettings.bm25_b},
           "rows": rows}
    out["summary"] = grid_summary(out)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print("best", out["best"])


def criterion(row: dict) -> float:
    return row["fused"]["recall@100"] + row["fused"]["ndcg@10"]


def grid_summary(out: dict) -> dict:
    """How much the chosen k1's rows differ on the criterion, and the best row against SearchSettings' default."""
    best = next(r for r in out["rows"] if all(r[k] == out["best"][k] for k in ("method", "k1", "b")))
    same_k1 = [criterion(r) for r in out["rows"] if r["k1"] == best["k1"]]
    d = out["defaults_in_SearchSettings"]
    default = next((r for r in out["rows"] if (r["method"], r["k1"], r["b"]) == (d["method"], d["k1"], d["b"])), None)
    summary = {"best_k1_rows_spread": max(same_k1) - min(same_k1),
               "best_minus_default": None if default is None else criterion(best) - criterion(default)}
    summary["note"] = (f"all k1={best['k1']:g} rows are within {summary['best_k1_rows_spread']:.4f} of each other on "
                       "the criterion" + ("" if default is None else
                                          f"; the best row and SearchSettings' {d['method']}/{d['k1']:g}/{d['b']:g} "
                                          f"differ by {summary['best_minus_default']:.4f}"))
    return summary


if __name__ == "__main__":
    main()
