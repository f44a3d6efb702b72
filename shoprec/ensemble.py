"""Ensembles of sequential models: several members trained from one recipe and served as one model.

An ensemble recipe is a recipe (``configs/seqrec/*.yaml``) with a ``members:`` list. Each entry holds the
fields in which that member differs from the recipe (a seed, a regulariser), as ``--overrides`` would.
Members are trained one after another (``parallel`` of them at once), each under torchrun exactly as a
single model, into ``OUT/member-<i>``. A member that finished with the same configuration is not trained again, so a restarted
job picks up at the member it stopped in (and that member resumes from its last checkpoint).

``OUT`` then becomes a model folder like any other (``config.json``, ``items.parquet``,
``histories.parquet``, ``metrics.json``) plus ``ensemble.json``:
:func:`shoprec.models.seqrec.load_model` returns a :class:`~shoprec.models.seqrec.SeqRecEnsemble`, which
scores an item by the mean of its members' log-softmax scores, so evaluate, register and serve need
nothing else. Its validation and test figures are the ensemble's, measured as for a single model.

Why: members that differ in seed and regularisation err on different (mostly rare) items. On Amazon
Beauty the three members of ``configs/seqrec/medium-ensemble.yaml``, chosen on validation NDCG@10, take
test HR@10 from 0.092 (one model) to 0.097 (``benchmarks/results/seqrec-beauty.json``). Training costs the
sum of the members' times, and scoring the sum of their scoring times.

    python -m shoprec.ensemble --features F --out O --recipe configs/seqrec/medium-ensemble.yaml --nproc 1 --parallel 2
    python -m shoprec.ensemble --features F --out O --assemble RUN_A RUN_B RUN_C   # from trained runs

``shoprec train seqrec --recipe configs/seqrec/medium-ensemble.yaml`` and the pipeline's train step take
ensemble recipes too (:func:`shoprec.train.launch` hands them here); a multi-node TrainJob does not.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

from shoprec import metrics
from shoprec.features import load_sequences
from shoprec.models.seqrec import ENSEMBLE_FILE, load_model

log = logging.getLogger("shoprec.ensemble")

COMBINE = "mean of the members' log-softmax scores"
SET_BY_TRAINING = ("n_items", "n_attributes", "max_item_attributes")  # model fields train() fills in from the data


def recipe_members(recipe: str | Path | None) -> list[dict] | None:
    """The ``members:`` of an ensemble recipe file; None for a single-model recipe."""
    import yaml

    if not recipe:
        return None
    d = yaml.safe_load(Path(recipe).read_text()) or {}
    if "members" not in d:
        return None
    members = d["members"]
    if not isinstance(members, list) or not members or not all(isinstance(m, dict) for m in members):
        raise ValueError(f"{recipe}: members must be a non-empty list of mappings of TrainConfig fields, "
                         f"one per member ({{}} for the recipe as it is); got {members!r}")
    return members


def merge_overrides(*layers: dict | None) -> dict:
    """Later layers win; ``model`` sections are merged field by field; None values are dropped."""
    out: dict = {"model": {}}
    for layer in layers:
        for k, v in (layer or {}).items():
            if k == "model":
                out["model"].update({mk: mv for mk, mv in (v or {}).items() if mv is not None})
            elif v is not None:
                out[k] = v
    return out


def _comparable(config: dict) -> dict:
    """A member's configuration without what does not define the model: fields filled in from the data, and
    the CPU threads (a finished member is kept whatever the threads of the job that restarts the ensemble)."""
    return {**{k: v for k, v in config.items() if k != "threads"},
            "model": {k: v for k, v in config["model"].items() if k not in SET_BY_TRAINING}}


def train_ensemble(features: str | Path, out: str | Path, recipe: str | Path, nproc: int = 2, max_restarts: int = 3,
                   overrides: dict | None = None, env: dict | None = None, parallel: int = 1) -> dict:
    """Train each member of the ensemble recipe with :func:`shoprec.train.launch` (``overrides`` apply to
    every member and win over the member's own fields), then :func:`assemble` them in ``out``.

    ``parallel`` members train at once (each its own torchrun job of ``nproc`` workers); unless ``overrides``
    set ``threads``, each process then gets its share of the cores, so the jobs do not oversubscribe them.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    import yaml

    from shoprec.train import launch, load_recipe

    if parallel > 1 and not (overrides or {}).get("threads"):
        overrides = {**(overrides or {}), "threads": max(1, (os.cpu_count() or 1) // (parallel * nproc))}

    members = recipe_members(recipe)
    if members is None:
        raise ValueError(f"{recipe} has no members: list; train it with shoprec.train.launch")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load(Path(recipe).read_text())
    base.pop("members")
    base_file = out / "recipe.yaml"
    base_file.write_text(yaml.safe_dump(base, sort_keys=False))
    dirs, jobs = [], []
    for i, member in enumerate(members):
        member_overrides = merge_overrides(member, overrides)
        want = _comparable(asdict(load_recipe(base_file, **json.loads(json.dumps(member_overrides)))))
        folder = out / f"member-{i}"
        done = folder / "metrics.json"
        if done.exists() and _comparable(json.loads(done.read_text())["config"]) == want:
            log.info("member %d/%d: finished earlier in %s, not trained again", i + 1, len(members), folder)
        else:
            if done.exists():  # trained with another configuration: its checkpoints must not be resumed
                log.info("member %d/%d: %s was trained with another configuration; training again", i + 1,
                         len(members), folder)
                shutil.rmtree(folder)
            jobs.append((i, folder, member, member_overrides))
        dirs.append(folder)

    def train_member(job: tuple) -> None:
        i, folder, member, member_overrides = job
        log.info("member %d/%d: training with %s", i + 1, len(members), json.dumps(member))
        s = launch(features, folder, nproc=nproc, recipe=base_file, max_restarts=max_restarts,
                   overrides=member_overrides, env=env)
        log.info("member %d/%d: best epoch %d, valid ndcg@10 %.4f", i + 1, len(members), s["best_epoch"],
                 s["valid"]["ndcg@10"])

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        list(pool.map(train_member, jobs))  # list(): a member's failure is raised here
    return assemble(dirs, out, features)


def assemble(member_dirs: list[str | Path], out: str | Path, features: str | Path, batch_size: int = 512) -> dict:
    """Make ``out`` an ensemble model folder of the trained ``member_dirs`` (copied in, without their
    checkpoints, unless they already are ``out/member-<i>``), measure it on the valid and test splits of
    ``features`` and write its ``metrics.json``; returns that summary."""
    from shoprec.train import evaluate_split

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for i, src in enumerate(map(Path, member_dirs)):
        name = f"member-{i}"
        if not (src / "metrics.json").exists():
            raise FileNotFoundError(f"member {src} has no metrics.json: it is not a finished shoprec.train run")
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
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--features", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--recipe", help="ensemble recipe (a recipe with members:), e.g. configs/seqrec/medium-ensemble.yaml")
    p.add_argument("--nproc", type=int, default=2, help="torchrun workers per member")
    p.add_argument("--overrides", default="{}", help="JSON object of TrainConfig fields for every member")
    p.add_argument("--parallel", type=int, default=1, help="members trained at once (each its own torchrun job)")
    p.add_argument("--assemble", nargs="+", metavar="RUN", help="make the ensemble of these trained runs instead")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if bool(a.recipe) == bool(a.assemble):
        p.error("give either --recipe or --assemble")
    if a.assemble:
        summary = assemble(a.assemble, a.out, a.features)
    else:
        summary = train_ensemble(a.features, a.out, a.recipe, nproc=a.nproc, overrides=json.loads(a.overrides),
                                 parallel=a.parallel)
    print(json.dumps({k: summary[k] for k in ("valid", "test", "train_seconds")}, indent=2))


if __name__ == "__main__":
    main()
