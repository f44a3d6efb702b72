"""Each pipeline step's cost per million raw events on one core, for the README's "Scale" section.

    .venv/bin/python benchmarks/scale.py --users 30000 --days 14

Synthesizes a shop, then times ingest, day features (the fan-out part), the features merge,
one training epoch (one process, one thread) and evaluation, each on one thread. Writes
benchmarks/results/scale.json. Timings on a shared 2-core machine are noisy: each step is run
``--repeats`` times and the median is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from shoprec.data.features import merge_features, partial_features  # noqa: E402
from shoprec.data.ingest import ingest  # noqa: E402
from shoprec.data.synth import synthesize  # noqa: E402
from shoprec.evaluate import evaluate  # noqa: E402
from shoprec.seqrec.model import SeqRecConfig  # noqa: E402
from shoprec.seqrec.train import TrainConfig, train  # noqa: E402


def timed(fn, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=30000)
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--days", type=int, default=14)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/scale.json")
    a = p.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="shoprec-scale-"))
    stats = synthesize(work / "raw", users=a.users, items=a.items, days=a.days, seed=0)
    events = stats["events"]
    steps = {}
    steps["ingest"] = timed(lambda: ingest(str(work / "raw"), work / "ingested", progress=False), a.repeats)
    steps["day_features"] = timed(lambda: partial_features(work / "ingested", work / "partial"), a.repeats)
    feats = {}
    steps["features_merge"] = timed(lambda: feats.update(merge_features(
        [work / "partial"], work / "ingested" / "catalog.parquet", work / "features")), a.repeats)
    cfg = TrainConfig(epochs=1, batch_size=256, patience=1,
                      model=SeqRecConfig(objective="sasrec", max_len=50, d_model=64, n_layers=2, n_heads=2))
    summary = {}

    def one_epoch():
        shutil.rmtree(work / "model", ignore_errors=True)
        summary.update(train(work / "features", work / "model", cfg, progress=False))

    one_epoch()
    steps["train_epoch"] = summary["history"][0]["epoch_seconds"]
    steps["evaluate"] = timed(lambda: evaluate(work / "model", work / "features", work / "eval"), 1)
    per_million = {k: v * 1e6 / events for k, v in steps.items()}
    result = {
        "command": "python " + " ".join(sys.argv),
        "machine": "2 cores shared with other work; one thread per step (torch.set_num_threads(1))",
        "events": events, "users_kept": feats["users_kept"], "items": feats["items"],
        "interactions": feats["interactions"], "seconds": steps,
        "seconds_per_million_events": per_million,
        "train_sequences_per_s": summary["sequences_per_s"],
        "repeats": a.repeats,
    }
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
