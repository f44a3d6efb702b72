"""Nightly batch recommendations: shoppers per second per shard process, and what a large shop's night costs.

    .venv/bin/python benchmarks/batch_recs.py --users 20000 --days 14

Synthesizes the built-in shop, builds its features, and scores every active shopper's top-K (seen items excluded)
with a SASRec of the size ``benchmarks/scale.py`` trains (d=64, 2 layers, max_len 50; its weights are untrained:
the cost of a forward does not depend on them). Measured, each shard process on one thread:

- one process scoring all shoppers (one shard), and ``--shards`` processes at once, each its shard;
- the commit (Parquet to a folder, manifest, _SUCCESS) and the load into Redis (a real ``redis-server`` on
  127.0.0.1, skipped when not installed);
- the Parquet bytes per shopper.

The projection for the 1B-events/day shop: active shoppers = the built-in shop's shoppers per million events
in its window times ``--events-per-day`` (a one-day window), core-hours at the one-thread rate, the shard
count that fits ``--hours``, and the cost at ``--usd-per-core-hour`` (an assumption, in the JSON). Writes
benchmarks/results/batch-recs.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from shoprec.data.features import build_features  # noqa: E402
from shoprec.data.ingest import ingest  # noqa: E402
from shoprec.data.synth import synthesize  # noqa: E402
from shoprec.seqrec import batch  # noqa: E402
from shoprec.seqrec.model import SeqRec, SeqRecConfig, save_model  # noqa: E402

DATE = "2026-12-05"


def make_model(features: Path, out: Path, seed: int = 0, catalogue: int = 0) -> Path:
    """A SASRec over the features' items, saved as a model folder the Recommender loads. ``catalogue`` > the
    features' items: that many items, the extra ones made up (no shopper has seen them), to time a larger shop."""
    torch.manual_seed(seed)
    items = pq.read_table(features / "items.parquet", columns=["item_id", "title"])
    if catalogue > items.num_rows:
        extra = [f"x{i:07d}" for i in range(catalogue - items.num_rows)]
        items = pa.concat_tables([items, pa.table({"item_id": extra, "title": extra}, schema=items.schema)])
    cfg = SeqRecConfig(n_items=items.num_rows, objective="sasrec", max_len=50, d_model=64, n_layers=2, n_heads=2)
    save_model(SeqRec(cfg).eval(), out)
    pq.write_table(items, out / "items.parquet")
    shutil.copy(features / "sequences.parquet", out / "histories.parquet")
    return out


def catalogue_rates(features: Path, work: Path, sizes: list[int], k: int, shards: int = 10) -> list[dict]:
    """Shoppers per second on one thread for larger catalogues (the score layer and top-K grow with it), on one
    shard of ``shards`` to keep the run short."""
    from shoprec.seqrec.recommend import Recommender

    out = []
    for size in sizes:
        model = make_model(features, work / f"model-{size}", catalogue=size)
        rec = Recommender(model)
        t0 = time.perf_counter()
        info = batch.batch_recommend_shard(model, features, 0, shards, k, work / f"cat-{size}", model_name="bench",
                                           model_version="1", date=DATE, rec=rec)
        seconds = time.perf_counter() - t0
        out.append({"items": rec.n_items, "shoppers": info["shoppers"], "seconds": seconds,
                    "shoppers_per_s": info["shoppers"] / seconds})
        shutil.rmtree(work / f"model-{size}")
    return out


def _shard(args: tuple) -> dict:
    model, features, shard, shards, k, out = args
    torch.set_num_threads(1)
    from shoprec.seqrec.recommend import Recommender

    rec = Recommender(model)  # loading is not scoring: timed apart
    t0 = time.perf_counter()
    info = batch.batch_recommend_shard(model, features, shard, shards, k, out, model_name="bench",
                                       model_version="1", date=DATE, rec=rec)
    info["score_seconds"] = time.perf_counter() - t0
    return info


def run_shards(model: Path, features: Path, shards: int, k: int, work: Path) -> tuple[float, list[dict]]:
    jobs = [(model, features, s, shards, k, work / f"shard-{s}") for s in range(shards)]
    t0 = time.perf_counter()
    if shards == 1:
        infos = [_shard(jobs[0])]
    else:
        with mp.get_context("spawn").Pool(shards) as pool:
            infos = pool.map(_shard, jobs)
    return time.perf_counter() - t0, infos


def redis_load(parts: list[Path], work: Path) -> dict | None:
    exe = shutil.which("redis-server")
    try:
        import redis  # noqa: F401
    except ImportError:
        return None
    if not exe:
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--dir", str(work)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        t0 = time.perf_counter()
        n = batch.load_into_store(parts, f"redis://127.0.0.1:{port}/0")
        seconds = time.perf_counter() - t0
        used = client.info("memory")["used_memory"]
        return {"shoppers": n, "seconds": seconds, "shoppers_per_s": n / seconds, "redis_used_memory_bytes": used,
                "redis_bytes_per_shopper": used / max(n, 1)}
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=20000)
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--days", type=int, default=14)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--events-per-day", type=float, default=1e9)
    p.add_argument("--hours", type=float, default=1.0, help="Wall time the projected batch must fit in.")
    p.add_argument("--usd-per-core-hour", type=float, default=0.04, help="Assumed price of one core-hour.")
    p.add_argument("--catalogues", default="100000,1000000",
                   help="Larger catalogues (items, comma-separated) to time on one shard of ten.")
    p.add_argument("--out", default="benchmarks/results/batch-recs.json")
    a = p.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="shoprec-batch-bench-"))
    try:
        t0 = time.perf_counter()
        stats = synthesize(work / "raw", users=a.users, items=a.items, days=a.days, seed=0)
        ingest(str(work / "raw"), work / "ingested", progress=False)
        feats = build_features(work / "ingested", work / "features")
        prepare = time.perf_counter() - t0
        model = make_model(work / "features", work / "model")
        one_wall, one = run_shards(model, work / "features", 1, a.k, work / "one")
        many_wall, many = run_shards(model, work / "features", a.shards, a.k, work / "many")
        t0 = time.perf_counter()
        manifest = batch.commit_batch([work / "many" / f"shard-{s}" for s in range(a.shards)], str(work / "recs"))
        commit_seconds = time.perf_counter() - t0
        parquet_bytes = sum(f.stat().st_size for f in (work / "recs").rglob("*.parquet"))
        store = redis_load([work / "many" / f"shard-{s}" for s in range(a.shards)], work)
        sizes = [int(c) for c in a.catalogues.split(",") if c]
        catalogues = catalogue_rates(work / "features", work, sizes, a.k) if sizes else []
        shoppers = manifest["shoppers"]
        per_process = shoppers / one[0]["score_seconds"]
        per_million = feats["users_kept"] / stats["events"] * 1e6
        active = per_million * a.events_per_day / 1e6
        core_hours = active / per_process / 3600
        shards_needed = max(1, int(-(-core_hours // a.hours)))
        result = {
            "command": "python " + " ".join(sys.argv),
            "machine": f"{os.cpu_count()} cores shared with other work; each shard process on one thread",
            "model": "SASRec d=64, 2 layers, 2 heads, max_len 50 (untrained weights: the cost of a forward is the same)",
            "events": stats["events"], "active_shoppers": shoppers, "items": feats["items"], "k": a.k,
            "prepare_seconds": prepare,
            "one_process": {"shards": 1, "wall_seconds": one_wall, "score_seconds": one[0]["score_seconds"],
                            "shoppers_per_s": per_process},
            "parallel": {"shards": a.shards, "wall_seconds": many_wall,
                         "per_shard_shoppers_per_s": [i["shoppers"] / i["score_seconds"] for i in many],
                         "shoppers_per_s": shoppers / max(i["score_seconds"] for i in many)},
            "commit_seconds": commit_seconds, "rows": manifest["rows"],
            "parquet_bytes_per_shopper": parquet_bytes / shoppers,
            "redis_load": store,
            "projection": {
                "events_per_day": a.events_per_day,
                "shoppers_per_million_events": per_million,
                "active_shoppers": active,
                "core_hours": core_hours,
                "hours": a.hours,
                "shards_of_one_core_to_fit": shards_needed,
                "usd_per_core_hour_assumed": a.usd_per_core_hour,
                "usd_per_night": core_hours * a.usd_per_core_hour,
                "parquet_gb_per_night": active * parquet_bytes / shoppers / 1e9,
                "redis_gb": active * store["redis_bytes_per_shopper"] / 1e9 if store else None,
                "redis_load_minutes_one_writer": active / store["shoppers_per_s"] / 60 if store else None,
                "note": "active shoppers from the built-in shop's ratio in a one-day window; the score layer grows "
                        "with the catalogue (here its items), so a larger catalogue costs more per shopper: "
                        "see by_catalogue",
                "by_catalogue": [{"items": c["items"], "shoppers_per_s": c["shoppers_per_s"],
                                  "core_hours": active / c["shoppers_per_s"] / 3600,
                                  "shards_of_one_core_to_fit": max(1, int(-(-(active / c["shoppers_per_s"] / 3600)
                                                                         // a.hours))),
                                  "usd_per_night": active / c["shoppers_per_s"] / 3600 * a.usd_per_core_hour}
                                 for c in catalogues],
            },
            "catalogues": catalogues,
        }
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
