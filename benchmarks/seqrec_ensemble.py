"""Leave-one-out metrics of saved sequential models and of their ensembles (issue #3, exploratory).

An ensemble scores an item by the mean of its members' log-softmax scores. Each model folder is a
``shoprec.seqrec.train`` output (its ``model.safetensors`` is the best-validation checkpoint). Members are chosen
by greedy forward selection on validation NDCG@10 (start from the best single model, add the model that
raises it most, stop when none does); test figures are printed beside each step and never used to choose.
Scores are cached as float32 ``.npy`` files named by the weights' digest (about 1 GB per model and split on Beauty) and memory-mapped.

    .venv/bin/python benchmarks/seqrec_ensemble.py --features .shoprec/bench/seqrec/features \\
        --out benchmarks/results/seqrec-beauty.json .shoprec/runs/A .shoprec/runs/B ...

Adds (or replaces) ``exploratory[KEY]`` in ``--out`` (``--key``, default ``ensembles``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

from shoprec import metrics
from shoprec.data.features import load_sequences
from shoprec.seqrec.model import left_pad, load_model


@torch.no_grad()
def log_scores(model, seqs: list[list[int]], cut: int, batch_size: int = 512) -> torch.Tensor:
    """(users, n_items + 1) log-softmax scores of the item after ``s[:-cut]`` for every sequence."""
    out = []
    for i in range(0, len(seqs), batch_size):
        hist = [s[:-cut] for s in seqs[i:i + batch_size]]
        out.append(torch.log_softmax(model.next_item_scores(left_pad(hist, model.cfg.max_len)).float(), -1))
    return torch.cat(out)


def leave_one_out(scores: torch.Tensor, seqs: list[list[int]], cut: int) -> dict[str, float]:
    hist = [s[:-cut] for s in seqs]
    ranks = metrics.target_ranks(scores, torch.tensor([s[-cut] for s in seqs]), exclude=hist)
    return metrics.finish(metrics.metric_sums(ranks))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="shoprec.seqrec.train output folders")
    p.add_argument("--features", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--cache", default=".shoprec/bench/seqrec-ensemble", help="per-model score files, reused")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--key", default="ensembles", help='the entry of ``exploratory`` written in --out')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    _, seqs = load_sequences(args.features)
    seqs = [s for s in seqs if len(s) >= 3]
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)

    files: dict[str, str] = {}  # run name -> cache key: the weights' digest, so a retrained folder is rescored

    def scores(name: str, cut: int) -> torch.Tensor:
        return torch.from_numpy(np.array(np.load(cache / f"{files[name]}.{cut}.npy", mmap_mode="r")))

    names = []
    for folder in args.models:
        name = Path(folder).name
        if name in files:
            raise SystemExit(f"two runs named {name}: give each folder its own name")
        names.append(name)
        files[name] = hashlib.sha256((Path(folder) / "model.safetensors").read_bytes()).hexdigest()[:16]
        if not all((cache / f"{files[name]}.{cut}.npy").exists() for cut in (2, 1)):
            model = load_model(folder)
            for cut in (2, 1):
                np.save(cache / f"{files[name]}.{cut}.npy", log_scores(model, seqs, cut).numpy())

    def row(members: list[str], sums: tuple[torch.Tensor, torch.Tensor] | None = None):
        """Metrics of the ensemble ``members``, and its summed (valid, test) scores; ``sums`` when at hand."""
        if sums is None:
            sums = tuple(sum(scores(n, cut) for n in members) for cut in (2, 1))
        valid = leave_one_out(sums[0] / len(members), seqs, 2)
        test = leave_one_out(sums[1] / len(members), seqs, 1)
        r = {"models": list(members), "valid_ndcg@10": valid["ndcg@10"], "valid_hr@10": valid["hr@10"],
             "test_ndcg@10": test["ndcg@10"], "test_hr@10": test["hr@10"]}
        print(f"valid {r['valid_ndcg@10']:.4f}  test {r['test_ndcg@10']:.4f} / HR@10 {r['test_hr@10']:.4f}  "
              f"{'+'.join(members)}", flush=True)
        return r, sums

    # Popularity refresh (a check, not part of any recipe): at test time the valid interactions are known
    # history, so each item's log-count can be updated by them; the test score gains log((count in train and
    # valid + 1) / (count in train + 1)).
    n_cols = np.load(cache / f"{files[names[0]]}.1.npy", mmap_mode="r").shape[1]
    counts = {cut: np.bincount([i for s in seqs for i in s[:-cut]], minlength=n_cols) for cut in (2, 1)}
    refresh = torch.from_numpy(np.log1p(counts[1]) - np.log1p(counts[2])).float()
    singles = []
    for n in names:
        r, (_, test_scores) = row([n])
        t = leave_one_out(test_scores + refresh, seqs, 1)
        r["test_with_popularity_refresh"] = {"ndcg@10": t["ndcg@10"], "hr@10": t["hr@10"]}
        singles.append(r)
    path = [max(singles, key=lambda r: r["valid_ndcg@10"])]
    path_sums = tuple(scores(path[0]["models"][0], cut) for cut in (2, 1))
    while len(path[-1]["models"]) < len(names):
        best, best_sums = None, None
        for n in names:
            if n in path[-1]["models"]:
                continue
            r, sums = row(path[-1]["models"] + [n], (path_sums[0] + scores(n, 2), path_sums[1] + scores(n, 1)))
            if best is None or r["valid_ndcg@10"] > best["valid_ndcg@10"]:
                best, best_sums = r, sums
        if best["valid_ndcg@10"] <= path[-1]["valid_ndcg@10"]:
            break
        path.append(best)
        path_sums = best_sums
    out = Path(args.out)
    res = json.loads(out.read_text())
    res.setdefault("exploratory", {})[args.key] = {
        "command": " ".join(["benchmarks/seqrec_ensemble.py"] + sys.argv[1:]),
        "method": "mean of the members' log-softmax scores; history items excluded; members by greedy forward "
                  "selection on validation NDCG@10",
        "chosen": path[-1], "selection_path": path, "singles": singles}
    out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
