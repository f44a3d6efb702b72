"""A night of new data on top of a trained champion: the sequential model started from the champion's weights
(``TrainConfig.warm_start``) vs from scratch, on the built-in shop.

    .venv/bin/python benchmarks/warm_start.py      # writes benchmarks/results/warm-start.json (about 15 min on 2 cores)

Yesterday's champion is trained on the first 13 days of the built-in shop (14 days, default size, seed 0);
tonight's model on all 14 days, cold and warm, with the built-in recipe (configs/seqrec/builtin.yaml), once per
seed. Reported per run and as medians: test NDCG@10 / HR@10 on tonight's leave-one-out split, train seconds,
epochs run and the best epoch. One process, one thread per run, runs one after the other.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPE = ROOT / "configs/seqrec/builtin.yaml"


def night(raw: Path, days: int, work: Path) -> Path:
    """Features of the first ``days`` days of ``raw`` (a copy with only those day folders)."""
    from shoprec.data.features import build_features
    from shoprec.data.ingest import ingest

    part = work / f"raw-{days}d"
    if not part.exists():
        (part / "events").mkdir(parents=True)
        shutil.copy(raw / "catalog.parquet", part / "catalog.parquet")
        for day in sorted((raw / "events").iterdir())[:days]:
            shutil.copytree(day, part / "events" / day.name)
    features = work / f"features-{days}d"
    if not features.exists():
        ingest(str(part), work / f"ingested-{days}d", progress=False)
        build_features(work / f"ingested-{days}d", features)
    return features


def train_once(features: Path, out: Path, seed: int, warm: str = "") -> dict:
    from shoprec.seqrec.train import load_recipe, train

    cfg = load_recipe(RECIPE, seed=seed, threads=1, warm_start=warm)
    t0 = time.perf_counter()
    s = train(features, out, cfg, progress=False)
    row = {"seed": seed, "warm": bool(warm), "test_ndcg@10": s["test"]["ndcg@10"], "test_hr@10": s["test"]["hr@10"],
           "valid_ndcg@10": s["valid"]["ndcg@10"], "train_seconds": round(s["train_seconds"], 1),
           "wall_seconds": round(time.perf_counter() - t0, 1), "epochs_run": s["epochs_run"],
           "best_epoch": s["best_epoch"],
           "curve": [{"epoch": h["epoch"], "valid_ndcg@10": round(h["valid_ndcg@10"], 5),
                      "train_seconds_total": round(h["train_seconds_total"], 1)} for h in s["history"]]}
    if warm:
        row["warm_start"] = {k: v for k, v in s["warm_start"].items() if k.startswith(("items_", "used"))}
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--work", default=str(ROOT / ".shoprec/bench/warm-start"))
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/warm-start.json"))
    a = p.parse_args()
    import torch

    from shoprec.data.synth import synthesize

    torch.set_num_threads(1)
    work = Path(a.work)
    raw = work / "raw"
    if not (raw / "events").is_dir():
        synthesize(raw)
    yesterday, tonight = night(raw, 13, work), night(raw, 14, work)
    seeds = [int(s) for s in a.seeds.split(",")]
    champion = work / "champion"
    shutil.rmtree(champion, ignore_errors=True)
    champ = train_once(yesterday, champion, seed=0)
    runs = []
    for seed in seeds:
        for warm in ("", str(champion)):
            out = work / f"{'warm' if warm else 'cold'}-{seed}"
            shutil.rmtree(out, ignore_errors=True)
            runs.append(train_once(tonight, out, seed, warm))
            print(json.dumps(runs[-1]), flush=True)

    def median(key: str, warm: bool) -> float:
        return statistics.median(r[key] for r in runs if r["warm"] == warm)

    # time saved: how long each warm run took to reach its cold twin's best validation NDCG@10
    for cold, warm in zip(runs[::2], runs[1::2]):
        target = max(h["valid_ndcg@10"] for h in cold["curve"])
        reached = next((h for h in warm["curve"] if h["valid_ndcg@10"] >= target), None)
        cold_best = next(h for h in cold["curve"] if h["valid_ndcg@10"] == target)
        warm["reach_cold_best"] = {"cold_best_valid_ndcg@10": target, "cold_seconds": cold_best["train_seconds_total"],
                                   "warm_epoch": reached["epoch"] if reached else None,
                                   "warm_seconds": reached["train_seconds_total"] if reached else None}

    summary = {k: {"cold": median(k, False), "warm": median(k, True)}
               for k in ("test_ndcg@10", "test_hr@10", "train_seconds", "epochs_run", "best_epoch")}
    summary["train_seconds_ratio_warm_over_cold"] = round(
        summary["train_seconds"]["warm"] / summary["train_seconds"]["cold"], 3)
    summary["test_ndcg@10_warm_minus_cold"] = summary["test_ndcg@10"]["warm"] - summary["test_ndcg@10"]["cold"]
    reach = [r["reach_cold_best"] for r in runs if r["warm"]]
    if all(x["warm_seconds"] is not None for x in reach):
        summary["seconds_to_cold_best"] = {"cold": statistics.median(x["cold_seconds"] for x in reach),
                                           "warm": statistics.median(x["warm_seconds"] for x in reach)}
        summary["seconds_to_cold_best_ratio_warm_over_cold"] = round(
            summary["seconds_to_cold_best"]["warm"] / summary["seconds_to_cold_best"]["cold"], 3)
    result = {"command": " ".join(shlex.quote(x) for x in [".venv/bin/python", "benchmarks/warm_start.py",
                                                             *sys.argv[1:]]),
              "data": "built-in shop (shoprec.data.synth defaults: 2,000 shoppers, 400 items, 14 days, seed 0); champion on "
                      "days 1-13, tonight's model on days 1-14", "recipe": str(RECIPE.relative_to(ROOT)),
              "champion": champ, "runs": runs, "median": summary,
              "note": "medians over seeds; runs one after the other on a 2-core machine shared with other jobs. The "
                      "recipe's 30-epoch cap binds (best epochs 27-29), so both runs train the same number of epochs: "
                      "the warm model has the champion's 30 epochs behind it. seconds_to_cold_best: training time "
                      "until validation NDCG@10 reaches the cold run's best."}
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
