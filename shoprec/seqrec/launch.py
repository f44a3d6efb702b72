"""Launch training from a recipe: one torchrun job for a single model, one per member for an ensemble.

    python -m shoprec.seqrec.launch --features F --out O --recipe configs/seqrec/medium.yaml --nproc 2
    python -m shoprec.seqrec.launch --features F --out O --recipe configs/seqrec/medium-ensemble.yaml --nproc 1 --parallel 2

Each job runs :mod:`shoprec.seqrec.train` under ``torchrun`` (the command is :func:`torchrun_command`); the
recipe travels to the workers as data (``--recipe-json``), never through a temporary file. An ensemble recipe
(with ``members:``) trains each member into ``OUT/member-<i>`` and assembles them
(:func:`shoprec.seqrec.ensemble.assemble`); a member that finished with the same configuration is not trained
again, so a restarted job picks up at the member it stopped in.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from shoprec.seqrec import ensemble
from shoprec.seqrec.train import load_recipe, merge_overrides, read_recipe, recipe_members

log = logging.getLogger("shoprec.seqrec.launch")


def torchrun_command(features: str | Path, out: str | Path, nproc: int = 2, recipe: str | Path | dict | None = None,
                     max_restarts: int = 3, overrides: dict | None = None, checkpoint_uri: str | None = None) -> list[str]:
    """The exact torchrun command :func:`launch` runs on one node.

    The rendezvous is c10d on an explicit 127.0.0.1 port rather than ``--standalone``: after a worker is
    killed, the restarted workers must re-form the gloo group through the agent's store, which the
    standalone setup often failed to do here (connectFullMesh refused, or a hang).
    """
    import socket
    import uuid

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={nproc}",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id=shoprec-{uuid.uuid4().hex[:8]}",
           f"--max-restarts={max_restarts}", "-m", "shoprec.seqrec.train", "--features", str(features), "--out", str(out)]
    if isinstance(recipe, dict):
        cmd += ["--recipe-json", json.dumps(recipe)]
    elif recipe:
        cmd += ["--recipe", str(recipe)]
    if overrides:
        cmd += ["--overrides", json.dumps(overrides)]
    if checkpoint_uri:
        cmd += ["--checkpoint-uri", checkpoint_uri]
    return cmd


def launch(features: str | Path, out: str | Path, nproc: int = 2, recipe: str | Path | dict | None = None,
           max_restarts: int = 3, overrides: dict | None = None, env: dict | None = None,
           checkpoint_uri: str | None = None) -> dict:
    """Run :func:`train` under ``torchrun`` with ``nproc`` workers; returns the summary rank 0 wrote. An
    ensemble recipe (with ``members:``) trains each member so, then the ensemble (:func:`train_ensemble`);
    its members' checkpoints stay local (``checkpoint_uri`` is for a single model)."""
    if recipe_members(recipe) is not None:
        if checkpoint_uri:
            log.warning("ensemble recipe: members' checkpoints are not stored at %s; a retry retrains them",
                        checkpoint_uri)
        return train_ensemble(features, out, recipe, nproc, max_restarts, overrides, env)
    cmd = torchrun_command(features, out, nproc, recipe, max_restarts, overrides, checkpoint_uri)
    log.info("running: %s", " ".join(cmd))
    subprocess.run(cmd, check=True, env={**os.environ, **(env or {})})
    return json.loads((Path(out) / "metrics.json").read_text())


def _comparable(config: dict) -> dict:
    """A member's configuration without what does not define the model: fields filled in from the data, and
    the CPU threads (a finished member is kept whatever the threads of the job that restarts the ensemble)."""
    return {**{k: v for k, v in config.items() if k != "threads"},
            "model": {k: v for k, v in config["model"].items() if k not in ensemble.SET_BY_TRAINING}}


def train_ensemble(features: str | Path, out: str | Path, recipe: str | Path | dict, nproc: int = 2, max_restarts: int = 3,
                   overrides: dict | None = None, env: dict | None = None, parallel: int = 1) -> dict:
    """Train each member of the ensemble recipe with :func:`launch` (``overrides`` apply to
    every member and win over the member's own fields), then :func:`shoprec.seqrec.ensemble.assemble` them in ``out``.

    ``parallel`` members train at once (each its own torchrun job of ``nproc`` workers); unless ``overrides``
    set ``threads``, each process then gets its share of the cores, so the jobs do not oversubscribe them.
    """
    if parallel > 1 and not (overrides or {}).get("threads"):
        overrides = {**(overrides or {}), "threads": max(1, (os.cpu_count() or 1) // (parallel * nproc))}

    members = recipe_members(recipe)
    if members is None:
        raise ValueError(f"{recipe} has no members: list; train it with launch()")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = read_recipe(recipe)
    base.pop("members")
    dirs, jobs = [], []
    for i, member in enumerate(members):
        member_overrides = merge_overrides(member, overrides)
        want = _comparable(asdict(load_recipe(base, **json.loads(json.dumps(member_overrides)))))
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
        s = launch(features, folder, nproc=nproc, recipe=base, max_restarts=max_restarts,
                   overrides=member_overrides, env=env)
        log.info("member %d/%d: best epoch %d, valid ndcg@10 %.4f", i + 1, len(members), s["best_epoch"],
                 s["valid"]["ndcg@10"])

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        list(pool.map(train_member, jobs))  # list(): a member's failure is raised here
    return ensemble.assemble(dirs, out, features)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--features", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--recipe", required=True, help="a recipe, e.g. configs/seqrec/medium.yaml or medium-ensemble.yaml")
    p.add_argument("--nproc", type=int, default=2, help="torchrun workers per job")
    p.add_argument("--overrides", default="{}", help="JSON object of TrainConfig fields (for every member)")
    p.add_argument("--parallel", type=int, default=1, help="ensemble members trained at once (each its own job)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    overrides = json.loads(a.overrides)
    if recipe_members(a.recipe) is not None:
        summary = train_ensemble(a.features, a.out, a.recipe, nproc=a.nproc, overrides=overrides, parallel=a.parallel)
    else:
        summary = launch(a.features, a.out, nproc=a.nproc, recipe=a.recipe, overrides=overrides)
    print(json.dumps({k: summary[k] for k in ("valid", "test", "train_seconds")}, indent=2))


if __name__ == "__main__":
    main()
