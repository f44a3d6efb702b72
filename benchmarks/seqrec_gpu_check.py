"""One-GPU check of the sequential recommender: bf16 autocast (+ NCCL when several GPUs), < 5 minutes.

    .venv/bin/python benchmarks/seqrec_gpu_check.py            # GPU: Beauty, medium recipe, 3-minute cap
    .venv/bin/python benchmarks/seqrec_gpu_check.py --smoke    # CPU: 2,000 Beauty users (or the built-in
                                                               # shop if Beauty is absent), 2 epochs

Prints one JSON line: device, world size, sequences/s (training), epochs, best epoch, valid/test NDCG@10 and
HR@10 (test from the best-validation checkpoint). With more than one GPU, ``--nproc N`` runs torchrun with
NCCL. Exits non-zero if the metric is not finite or (on the full run) NDCG@10 is below ``--min-ndcg``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
BEAUTY = Path(os.environ.get("SHOPREC_SHARED_DATA", REPO.parent / "shared" / "data")) / "amazon-s3rec" / "Beauty.txt"


def features_for(work: Path, smoke: bool) -> tuple[Path, str]:
    from shoprec.data.features import build_features
    from shoprec.data.importers import import_s3rec
    from shoprec.data.ingest import ingest

    if BEAUTY.exists():
        src = BEAUTY
        if smoke:
            src = work / "beauty-2000.txt"
            src.write_text("".join(open(BEAUTY).readlines()[:2000]))
        import_s3rec(src, work / "raw")
        name = "beauty" + ("-2000-users" if smoke else "")
    else:
        if not smoke:
            raise SystemExit(f"{BEAUTY} not found (set SHOPREC_SHARED_DATA); --smoke runs without it")
        from shoprec.data.synth import synthesize

        synthesize(work / "raw", users=300, items=80, days=5, seed=7)
        name = "built-in shop"
    ingest(str(work / "raw"), work / "ingested", progress=False)
    build_features(work / "ingested", work / "features")
    return work / "features", name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny CPU run that checks the script end to end")
    ap.add_argument("--nproc", type=int, default=1)
    ap.add_argument("--recipe", default=str(REPO / "configs" / "seqrec" / "medium.yaml"))
    ap.add_argument("--minutes", type=float, default=3.0, help="training time cap (full run)")
    ap.add_argument("--min-ndcg", type=float, default=0.03)
    a = ap.parse_args()

    import torch

    from shoprec.seqrec.launch import launch

    if not a.smoke and not torch.cuda.is_available():
        raise SystemExit("no GPU: run with --smoke for the CPU check")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        feats, name = features_for(work, a.smoke)
        overrides = {"amp": True, "max_train_minutes": a.minutes}
        if a.smoke:
            overrides.update(epochs=2, threads=1, max_train_minutes=0)
        else:
            overrides.update(batch_size=1024, eval_batch_size=4096, lr=0.002)
        s = launch(feats, work / "model", nproc=a.nproc, recipe=a.recipe, max_restarts=0, overrides=overrides,
                   env={"OMP_NUM_THREADS": "1"} if a.nproc > 1 else None)
    out = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "data": name, "world_size": s["world_size"], "bf16_autocast": torch.cuda.is_available(),
        "sequences_per_s": round(s["sequences_per_s"], 1), "epochs_run": s["epochs_run"],
        "best_epoch": s["best_epoch"], "train_seconds": round(s["train_seconds"], 1),
        "valid_ndcg@10": round(s["valid"]["ndcg@10"], 5), "test_ndcg@10": round(s["test"]["ndcg@10"], 5),
        "test_hr@10": round(s["test"]["hr@10"], 5), "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out))
    if not math.isfinite(out["test_ndcg@10"]) or (not a.smoke and out["test_ndcg@10"] < a.min_ndcg):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
