"""Ensembles of sequential models: several members trained from one recipe and served as one model.

An ensemble recipe is a recipe (``configs/seqrec/*.yaml``) with a ``members:`` list. Each entry holds the
fields in which that member differs from the recipe (a seed, a regulariser), as ``--overrides`` would.
:mod:`shoprec.seqrec.launch` trains the members (``parallel`` of them at once), each under torchrun exactly
as a single model, into ``OUT/member-<i>``, then calls :func:`assemble`.

``OUT`` then becomes a model folder like any other (``config.json``, ``items.parquet``,
``histories.parquet``, ``metrics.json``) plus ``ensemble.json``:
:func:`shoprec.seqrec.model.load_model` returns a :class:`~shoprec.seqrec.model.SeqRecEnsemble`, which
scores an item by the mean of its members' log-softmax scores, so evaluate, register and serve need
nothing else. Its validation and test figures are the ensemble's, measured as for a single model.

Why: members that differ in seed and regularisation err on different (mostly rare) items. On Amazon
Beauty the three members of ``configs/seqrec/medium-ensemble.yaml``, chosen on validation NDCG@10, take
test HR@10 from 0.092 (one model) to 0.097 (``benchmarks/results/seqrec-beauty.json``). Training costs the
sum of the members' times, and scoring the sum of their scoring times.

    python -m shoprec.seqrec.launch --features F --out O --recipe configs/seqrec/medium-ensemble.yaml --nproc 1 --parallel 2
    python -m shoprec.seqrec.ensemble --features F --out O RUN_A RUN_B RUN_C   # from trained runs

``shoprec train seqrec --recipe configs/seqrec/medium-ensemble.yaml`` and the pipeline's train step take
ensemble recipes too; a multi-node TrainJob does not.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

from shoprec import metrics
from shoprec.data.features import load_sequences
from shoprec.seqrec.model import ENSEMBLE_FILE, load_model

log = logging.getLogger("shoprec.seqrec.ensemble")

COMBINE = "mean of the members' log-softmax scores"
SET_BY_TRAINING = ("n_items", "n_attributes", "max_item_attributes")  # model fields train() fills in from the data


def assemble(member_dirs: list[str | Path], out: str | Path, features: str | Path, batch_size: int = 512) -> dict:
    """Make ``out`` an ensemble model folder of the trained ``member_dirs`` (copied in, without their
    checkpoints, unless they already are ``out/member-<i>``), measure it on the valid and test splits of
    ``features`` and write its ``metrics.json``; returns that summary."""
    from shoprec.seqrec.train import evaluate_split

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for i, src in enumerate(map(Path, member_dirs)):
        name = f"member-{i}"
        if not (src / "metrics.json").exists():
            raise FileNotFoundError(f"member {src} has no metrics.json: it is not a finished shoprec.seqrec.train run")
        if src.resolve() != (out / name).resolve():
            shutil.rmtree(out / name, ignore_errors=True)
            shutil.copytree(src, out / name, ignore=shutil.ignore_patterns("checkpoints"))
        names.append(name)
    (out / ENSEMBLE_FILE).write_text(json.dumps({"members": names, "combine": COMBINE}, indent=2))
    model = load_model(out)  # checks that the members fit together
    summaries = [json.loads((out / n / "metrics.json").read_text()) for n in names]
    first = out / names[0]
    for f in ("items.parquet", "histories.parquet"):
        shutil.copy(first / f, out / f)
    config = json.loads((first / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({"model": config["model"], "ensemble": {
        "members": names, "combine": COMBINE, "configs": [s["config"] for s in summaries]}}, indent=2))

    _, seqs = load_sequences(features)
    valid = metrics.finish(evaluate_split(model, seqs, "valid", batch_size, "cpu"))
    test = metrics.finish(evaluate_split(model, seqs, "test", batch_size, "cpu"))
    seconds = sum(s["train_seconds"] for s in summaries)
    summary = {
        "objective": summaries[0]["objective"], "loss": summaries[0]["loss"],
        "world_size": summaries[0]["world_size"],
        "best_epoch": max(s["best_epoch"] for s in summaries),  # the most epochs any member needed
        "epochs_run": sum(s["epochs_run"] for s in summaries),
        "train_seconds": seconds,
        "train_cpu_seconds": sum(s.get("train_cpu_seconds", 0.0) for s in summaries),
        "sequences_per_s": sum(s["sequences_per_s"] * s["train_seconds"] for s in summaries) / max(seconds, 1e-9),
        "valid": valid, "test": test, "history": [],
        "members": [{"name": n, "source": str(src), "best_epoch": s["best_epoch"], "valid": s["valid"],
                     "test": s["test"], "train_seconds": s["train_seconds"]}
                    for n, src, s in zip(names, member_dirs, summaries)],
        "config": {"ensemble": COMBINE, "members": [s["config"] for s in summaries]},
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    for m in summary["members"]:
        log.info("%s: valid ndcg@10 %.4f, test ndcg@10 %.4f hr@10 %.4f", m["name"], m["valid"]["ndcg@10"],
                 m["test"]["ndcg@10"], m["test"]["hr@10"])
    log.info("ensemble of %d: valid ndcg@10 %.4f, test ndcg@10 %.4f hr@10 %.4f", len(names), valid["ndcg@10"],
             test["ndcg@10"], test["hr@10"])
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Assemble trained runs into one ensemble model folder "
                                "(to train an ensemble recipe: python -m shoprec.seqrec.launch).")
    p.add_argument("--features", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("runs", nargs="+", metavar="RUN", help="finished shoprec.seqrec.train output folders")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    summary = assemble(a.runs, a.out, a.features)
    print(json.dumps({k: summary[k] for k in ("valid", "test", "train_seconds")}, indent=2))


if __name__ == "__main__":
    main()
