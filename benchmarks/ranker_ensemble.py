"""Does averaging several saved Home Depot cross-encoders beat the best one on re-rank? (issue #4)

Scores the test pairs and the validation sample of ``benchmarks/ranker.py`` (same split, same 400 sampled
validation queries) with each model folder, then ranks by every combination's mean of standardised scores
(each model's scores less its validation-sample mean, over its standard deviation: no labels are fitted).
RMSE maps that mean through an isotonic regression fitted on the validation sample, as ``ranker.py`` does.
Combinations are ordered by validation NDCG@10; test figures are reported beside them, never used to choose.

    .venv/bin/python benchmarks/ranker_ensemble.py --out benchmarks/results/ranker-homedepot.json \\
        .shoprec/rk-hd8/lora-cross .shoprec/rk-hd7/lora-cross .shoprec/rk-hd6/lora-cross ...

Adds (or replaces) the ``exploratory["cross-encoder ensembles"]`` block of ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ranker as R  # noqa: E402

from shoprec.ranker.models import Ranker, load_model  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="saved cross-encoder folders")
    p.add_argument("--out", required=True)
    p.add_argument("--valid-queries", type=int, default=400)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", default=".shoprec/bench/ranker-ensemble", help="per-model scores (npz), reused")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoTokenizer

    df, _, _ = R.load_homedepot()
    valid_df, test_df = (df[df["split"] == s].sort_values(["search_term", "id"]) for s in ("valid", "test"))
    sample = sorted(np.random.default_rng(0).permutation(sorted(valid_df["search_term"].unique()))[:args.valid_queries])
    vs_df = valid_df[valid_df["search_term"].isin(set(sample))]
    rel, vrel = test_df["relevance"].to_numpy(), vs_df["relevance"].to_numpy()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for folder in args.models:
        name = str(Path(folder)).replace(".shoprec/", "")
        npz = cache / (name.replace("/", "_") + ".npz")
        if not npz.exists():
            model, meta = load_model(folder)
            ranker = Ranker(model, AutoTokenizer.from_pretrained(folder), R.RankerConfig.from_dict(meta["ranker"]))
            np.savez(npz, test=ranker.score(list(test_df["search_term"]), list(test_df["product_title"]), head="aux"),
                     valid=ranker.score(list(vs_df["search_term"]), list(vs_df["product_title"]), head="aux"))
        z = np.load(npz)
        mu, sd = z["valid"].mean(), z["valid"].std()
        scores[name] = ((z["test"] - mu) / sd, (z["valid"] - mu) / sd)
    rows = []
    for k in range(1, len(scores) + 1):
        for combo in itertools.combinations(scores, k):
            t = np.mean([scores[n][0] for n in combo], 0)
            v = np.mean([scores[n][1] for n in combo], 0)
            rows.append({"models": list(combo), "valid_ndcg@10": float(np.nanmean(R.rerank_per_query(vs_df, v))),
                         "test_ndcg@10": float(np.nanmean(R.rerank_per_query(test_df, t))),
                         "test_rmse": R.rmse(R.isotonic(v, vrel)(t), rel)})
    rows.sort(key=lambda r: -r["valid_ndcg@10"])
    for r in rows[:10]:
        print(f"valid {r['valid_ndcg@10']:.4f}  test {r['test_ndcg@10']:.4f} / RMSE {r['test_rmse']:.4f}  {'+'.join(r['models'])}")
    out = Path(args.out)
    res = json.loads(out.read_text())
    known = res.get("exploratory", {}).get("cross-encoder ensembles", {}).get("model_folders", {})
    res.setdefault("exploratory", {})["cross-encoder ensembles"] = {
        "command": " ".join(["benchmarks/ranker_ensemble.py"] + sys.argv[1:]),
        "method": "rank by the mean of standardised scores (validation-sample mean and std per model); RMSE "
                  "after an isotonic map of that mean fitted on the validation sample; ordered by validation NDCG@10",
        "best_on_valid": rows[0], "best_single_on_valid": max((r for r in rows if len(r["models"]) == 1),
                                                                key=lambda r: r["valid_ndcg@10"]),
        "ensemble_beats_best_single_on_valid": len(rows[0]["models"]) > 1, "combinations": rows,
        # the commands that trained each scored model, as recorded before (benchmarks/ranker_provenance.py)
        "model_folders": {name: known[name] for name in scores if name in known}}
    out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
