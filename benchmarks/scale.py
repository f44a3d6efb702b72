"""Each pipeline step's cost per million raw events on one core, for the README's "Scale" section.

    .venv/bin/python benchmarks/scale.py --users 30000 --days 14

Synthesizes a shop, then times ingest, day features (the fan-out part), the features merge,
one training epoch (one process, one thread) and evaluation, each on one thread. Writes
benchmarks/results/scale.json. Timings on a shared 2-core machine are noisy: each step is run
``--repeats`` times and the median is kept.

The sharded steps (issue 25): the features merge and the evaluation at 1, 2 and 4 shopper shards, each shard in
its own process (as its own pod would be), one after another. A shard's cost is its process's CPU time for the
step's call (imports excluded); the step's cost is the slowest shard (its wall time when the shards run in
parallel pods) plus the final step (``finish_features`` / ``reduce_evaluation``, in this process). Each shard
process also reports its peak RSS. The sharded results are checked against one pod (features row for row,
evaluation metrics exactly), and a projection for ``--events-per-day`` (1B) fits ``a + b / shards`` (seconds per
million events of the slowest shard) to the measured shards and picks the smallest power-of-two shard count whose
step fits ``--step-budget-minutes`` with at most ``MAX_PARALLEL_SHARDS`` shards running at once, and the pod
memory that shard size needs (peak RSS scaled by its events, plus 50%).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
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
from shoprec.data.shards import finish_features, read_rows, shard_features  # noqa: E402
from shoprec.data.synth import synthesize  # noqa: E402
from shoprec.evaluate import evaluate, evaluate_shard, reduce_evaluation  # noqa: E402
from shoprec.seqrec.model import SeqRecConfig  # noqa: E402
from shoprec.seqrec.train import TrainConfig, train  # noqa: E402

CPU: dict[str, float] = {}


def timed(fn, repeats: int, name: str | None = None) -> float:
    """Median wall seconds of ``repeats`` runs; the median CPU seconds of this process go to ``CPU[name]``."""
    runs, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        runs.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    if name:
        CPU[name] = statistics.median(cpus)
    return statistics.median(runs)


SHARD_COUNTS = (1, 2, 4)
MAX_PARALLEL_SHARDS = 16  # pipelines/retrain.py: shard tasks running at once


def _memory_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process from /proc (getrusage's ru_maxrss survives fork and exec, so a
    spawned child would report its parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _in_child(job: tuple) -> dict:
    """One shard's call in a fresh process: its CPU and wall seconds (imports excluded) and its peak RSS."""
    kind, args = job
    torch.set_num_threads(1)
    base = _memory_mb("VmRSS")
    c0, t0 = time.process_time(), time.perf_counter()
    if kind == "features":
        shard_features(*args)
    else:
        evaluate_shard(*args)
    return {"cpu_seconds": time.process_time() - c0, "wall_seconds": time.perf_counter() - t0,
            "rss_before_mb": base, "peak_rss_mb": _memory_mb("VmHWM")}


def in_process(kind: str, args: tuple) -> dict:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_in_child, ((kind, args),))


def same_features(one: Path, sharded: Path) -> bool:
    """Sharded features equal one pod's: items, stats and every table row for row (sorted by their keys)."""
    import pandas as pd

    keys = {"sequences": ["user_id"], "search_pairs": ["session_id", "query", "item_id"], "click_samples": ["user_id"]}
    try:
        pd.testing.assert_frame_equal(pd.read_parquet(one / "items.parquet"),
                                      pd.read_parquet(sharded / "items.parquet"))
        for name, k in keys.items():
            a, b = (read_rows(f, name).to_pandas().sort_values(k, kind="stable", ignore_index=True)
                    for f in (one, sharded))
            pd.testing.assert_frame_equal(a, b)
    except AssertionError:
        return False
    a, b = (json.loads((f / "stats.json").read_text()) for f in (one, sharded))
    return {k: v for k, v in a.items() if k != "shards"} == {k: v for k, v in b.items() if k != "shards"}


def sharded_steps(work: Path, events: int, one_eval: dict) -> dict:
    partials, catalog = [work / "partial"], work / "ingested" / "catalog.parquet"
    out = {"features": {}, "evaluate": {}, "equal_to_one_pod": {}}
    for n in SHARD_COUNTS:
        dirs = [work / f"fs{n}" / f"shard{k}" for k in range(n)]
        shards = [in_process("features", (partials, catalog, k, n, dirs[k])) for k in range(n)]
        c0 = time.process_time()
        finish_features(dirs, catalog, work / f"features{n}")
        finish = time.process_time() - c0
        out["features"][str(n)] = _step(shards, finish, events)
        out["equal_to_one_pod"].setdefault("features", {})[str(n)] = same_features(work / "features",
                                                                                   work / f"features{n}")
        parts = [work / f"ev{n}" / f"part{k}" for k in range(n)]
        shards = [in_process("evaluate", (work / "model", work / f"features{n}", k, n, parts[k])) for k in range(n)]
        c0 = time.process_time()
        reduced = reduce_evaluation(parts, work / f"ev{n}" / "reduced", model_dir=work / "model")
        reduce = time.process_time() - c0
        out["evaluate"][str(n)] = _step(shards, reduce, events)
        out["equal_to_one_pod"].setdefault("evaluate", {})[str(n)] = reduced["results"] == one_eval["results"]
    return out


def _step(shards: list[dict], final: float, events: int) -> dict:
    slowest = max(s["cpu_seconds"] for s in shards)
    return {"shard_cpu_seconds": [s["cpu_seconds"] for s in shards],
            "shard_wall_seconds": [s["wall_seconds"] for s in shards],
            "shard_peak_rss_mb": [s["peak_rss_mb"] for s in shards],
            "shard_rss_before_mb": [s["rss_before_mb"] for s in shards],
            "final_cpu_seconds": final, "cost_seconds": slowest + final,
            "cost_seconds_per_million_events": (slowest + final) * 1e6 / events,
            "slowest_shard_seconds_per_million_events": slowest * 1e6 / events,
            "total_cpu_seconds_per_million_events": (sum(s["cpu_seconds"] for s in shards) + final) * 1e6 / events}


def project(step: dict, events: int, events_per_day: float, budget_s: float, final_scales: bool,
            max_memory_gib: float) -> dict:
    """Shards and pod size for ``events_per_day`` from the measured shards.

    The slowest shard's seconds are fitted as ``A + B / shards`` over the measured shard counts. ``B`` (the work
    split by shards) scales with the events; ``A`` is read two ways: fixed per shard (catalog, vocabulary; the
    partials are sorted by shard key, so a shard reads only its row groups) and, as the pessimistic bound, scaling
    with the events too. The shard count is the smallest power of two whose step fits ``budget_s`` with at most
    ``MAX_PARALLEL_SHARDS`` shards at once (under the pessimistic bound when one does, else under the fixed
    reading) and whose pod memory (the largest shard's peak RSS fitted as ``M0 + M1 / shards``, ``M1`` scaled with
    the events, plus 50%) is at most ``max_memory_gib``.
    The final step scales with the events when ``final_scales`` (finish copies the shards' files), else not (the
    reduce adds rank counts, one per item at most)."""
    xs = [1 / int(n) for n in step]
    ys = [max(step[n]["shard_cpu_seconds"]) for n in step]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    intercept = max(0.0, my - slope * mx)
    scale = events_per_day / events
    final_s = max(step[n]["final_cpu_seconds"] for n in step) * (scale if final_scales else 1.0)
    # peak RSS of the largest shard ~ M0 + M1 / shards (least squares): M0 (imports, model, vocabulary) stays,
    # M1 (the shard's shoppers) scales with the events
    mems = [max(step[n]["shard_peak_rss_mb"]) for n in step]
    mm = sum(mems) / len(mems)
    m1 = max(0.0, sum((x - mx) * (y - mm) for x, y in zip(xs, mems)) / sum((x - mx) ** 2 for x in xs))
    m0 = mm - m1 * mx

    def wall(shards: int, pessimistic: bool) -> float:
        shard_s = intercept * (scale if pessimistic else 1.0) + slope * scale / shards
        return math.ceil(shards / MAX_PARALLEL_SHARDS) * shard_s + final_s

    def memory_gib(shards: int) -> float:
        return (m0 + m1 * scale / shards) * 1.5 / 1024

    counts = [n for n in (2 ** i for i in range(13)) if memory_gib(n) <= max_memory_gib] or [4096]
    fits = [n for n in counts if wall(n, True) <= budget_s]
    reading = "pessimistic" if fits else "fixed intercept"
    fits = fits or [n for n in counts if wall(n, False) <= budget_s] or [counts[-1]]
    shards = fits[0]
    return {"fit_seconds": {"A": intercept, "B": slope, "events": events},
            "fit_peak_rss_mb": {"M0": m0, "M1": m1},
            "one_pod_hours": (intercept + slope) * scale / 3600 + final_s / 3600,
            "shards": shards, "chosen_by": reading,
            "step_wall_hours": {"fixed_intercept": wall(shards, False) / 3600,
                                "pessimistic": wall(shards, True) / 3600},
            "final_seconds": final_s, "pod_cpu": 1,
            "pod_memory_gib": math.ceil(memory_gib(shards)), "max_pod_memory_gib": max_memory_gib,
            "shard_events_millions": events_per_day / shards / 1e6}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=30000)
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--days", type=int, default=14)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/scale.json")
    p.add_argument("--events-per-day", type=float, default=1e9)
    p.add_argument("--night-hours", type=float, default=4.0)
    p.add_argument("--step-budget-minutes", type=float, default=30.0,
                   help="the wall time each sharded step may take of the night (training gets most of the rest)")
    p.add_argument("--pod-memory-gib", type=float, default=16.0, help="the most memory a shard's pod may ask for")
    a = p.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="shoprec-scale-"))
    stats = synthesize(work / "raw", users=a.users, items=a.items, days=a.days, seed=0)
    events = stats["events"]
    steps = {}
    steps["ingest"] = timed(lambda: ingest(str(work / "raw"), work / "ingested", progress=False), a.repeats,
                            "ingest")
    steps["day_features"] = timed(lambda: partial_features(work / "ingested", work / "partial"), a.repeats,
                                  "day_features")
    feats = {}
    steps["features_merge"] = timed(lambda: feats.update(merge_features(
        [work / "partial"], work / "ingested" / "catalog.parquet", work / "features")), a.repeats, "features_merge")
    cfg = TrainConfig(epochs=1, batch_size=256, patience=1,
                      model=SeqRecConfig(objective="sasrec", max_len=50, d_model=64, n_layers=2, n_heads=2))
    summary = {}

    def one_epoch():
        shutil.rmtree(work / "model", ignore_errors=True)
        summary.update(train(work / "features", work / "model", cfg, progress=False))

    one_epoch()
    steps["train_epoch"] = summary["history"][0]["epoch_seconds"]
    one_eval = {}
    steps["evaluate"] = timed(lambda: one_eval.update(evaluate(work / "model", work / "features", work / "eval")), 1,
                              "evaluate")
    sharded = sharded_steps(work, events, one_eval)
    budget = a.step_budget_minutes * 60
    projection = {name: project(sharded[name], events, a.events_per_day, budget, final_scales=name == "features",
                                max_memory_gib=a.pod_memory_gib) for name in ("features", "evaluate")}
    per_million = {k: v * 1e6 / events for k, v in steps.items()}
    result = {
        "command": "python " + " ".join(sys.argv),
        "machine": "2 cores shared with other work; one thread per step (torch.set_num_threads(1))",
        "events": events, "users_kept": feats["users_kept"], "items": feats["items"],
        "interactions": feats["interactions"], "seconds": steps,
        "seconds_per_million_events": per_million,
        "cpu_seconds_per_million_events": {k: v * 1e6 / events for k, v in CPU.items()},
        "train_sequences_per_s": summary["sequences_per_s"],
        "repeats": a.repeats,
        "sharded": {
            "method": "each shard in its own spawned process, one after another, one thread; cost = slowest shard's "
                      "CPU seconds + the final step's (finish_features / reduce_evaluation)",
            "shard_counts": list(SHARD_COUNTS), **sharded,
        },
        "projection": {"events_per_day": a.events_per_day, "night_hours": a.night_hours,
                       "step_budget_minutes": a.step_budget_minutes, "max_parallel_shards": MAX_PARALLEL_SHARDS,
                       **projection,
                       "other_steps_hours": {k: per_million[k] * a.events_per_day / 1e6 / 3600
                                             for k in ("ingest", "day_features")},
                       "note": "ingest and day features fan out over hourly/daily partitions (one pod each); the "
                               "hours above are their core-hours, not wall. Training (GPU) gets the rest of the "
                               "night."},
    }
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
