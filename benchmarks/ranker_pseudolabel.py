"""Does pseudo-labelling unlabelled (query, product) pairs help the cross-encoder on the built-in shop?

    .venv/bin/python benchmarks/ranker_pseudolabel.py --seeds 0 1 2 \\
        --work .shoprec/bench/ranker-pl --out benchmarks/results/ranker-pseudolabel.json

The built-in shop (``shoprec.data.synth.synthesize`` with its defaults, as ``make demo``) goes through ingest
and features. Per seed (the query split, the subsample and the training seed), with the built-in recipe
(``configs/ranker/builtin.yaml``, without the bi-encoder, one torch thread):

- teacher: the cross-encoder as ``train_ranker`` trains it today;
- students, one per ``--variants`` entry (default: the ``PseudoLabelSettings`` defaults with ``hard``
  and with ``soft`` labels), by :func:`shoprec.ranker.train.pseudo_label_rounds`, one round: the
  teacher scores ``pool_per_query`` never-shown catalogue products of every training query, the top
  and bottom fractions are pseudo-labelled, and a student is trained from the base model on labelled
  + pseudo-labelled pairs;
- all are evaluated on the held-out test queries with :func:`shoprec.ranker.evaluate_ranker` (all
  test pairs: click AUC and log-loss over search impressions and click samples, search NDCG@10), plus
  the click AUC over the search impressions alone;
- ``gated`` is what ``train_ranker`` would ship: the student only if its validation metric beat the teacher's;
- ``control`` (``--control-epochs``): the teacher's recipe on the same labelled pairs for more epochs, about
  the student's number of optimizer steps, to tell the pseudo-labels' effect from that of more steps.

The results file is rewritten after every seed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from shoprec.ranker import evaluate_ranker, load_config  # noqa: E402
from shoprec.ranker.config import PseudoLabelSettings  # noqa: E402
from shoprec.ranker.models import save_model  # noqa: E402
from shoprec.ranker.train import fit_cross_encoder, pseudo_label_rounds, training_groups  # noqa: E402

log = logging.getLogger("bench.ranker_pseudolabel")
REPO = Path(__file__).resolve().parent.parent
METRICS = ("auc", "logloss", "search_auc", "search_ndcg@10")
DEFAULT_VARIANTS = {"hard": {}, "soft": {"label": "soft"}}


def tokenizer_of(cfg):
    """The encoder's tokenizer (what the library's private ``_tokenizer`` returns; public names only here)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(cfg.encoder_dir())


def shop_features(work: Path) -> Path:
    feats = work / "features"
    if not (feats / "search_pairs.parquet").exists():
        from shoprec.data.features import build_features
        from shoprec.data.ingest import ingest
        from shoprec.data.synth import synthesize

        synthesize(work / "shop")
        ingest(str(work / "shop"), work / "ingested", progress=False)
        build_features(work / "ingested", feats)
    return feats


def search_auc(model_dir: Path, feats: Path) -> float:
    """Click AUC over the test search impressions only (evaluate_ranker's AUC also pools the click samples)."""
    from shoprec.ranker import load_ranker
    from shoprec.ranker.train import group_metrics, score_groups, shop_groups, subsample

    ranker = load_ranker(model_dir)
    test = subsample(shop_groups(feats, ranker.cfg)["test"], ranker.cfg.max_eval_pairs, ranker.cfg.seed)
    search = [g for g in test if not np.isnan(g[0].aux)]
    return group_metrics(score_groups(ranker, search, "click"), search, "click")["auc"]


def evaluate(model_dir: Path, feats: Path) -> dict:
    return {**evaluate_ranker(model_dir, feats), "search_auc": search_auc(model_dir, feats)}


def summarise(rows: list[dict], variant: str) -> dict:
    st = [r["variants"][variant] for r in rows]
    out = {"teacher": {m: float(np.mean([r["teacher"][m] for r in rows])) for m in METRICS},
           "student": {m: float(np.mean([v["student"][m] for v in st])) for m in METRICS},
           "gated": {m: float(np.mean([v["gated"][m] for v in st])) for m in METRICS}}
    out["student_minus_teacher"] = {m: out["student"][m] - out["teacher"][m] for m in METRICS}
    out["seeds_student_better"] = {m: sum((v["student"][m] < r["teacher"][m]) if m == "logloss"
                                           else (v["student"][m] > r["teacher"][m]) for r, v in zip(rows, st))
                                   for m in METRICS}
    out["seeds_student_kept_by_validation"] = sum(v["kept"] == "student" for v in st)
    if all("control" in r for r in rows):
        out["control"] = {m: float(np.mean([r["control"][m] for r in rows])) for m in METRICS}
        out["student_minus_control"] = {m: out["student"][m] - out["control"][m] for m in METRICS}
        out["seeds_student_better_than_control"] = {
            m: sum((v["student"][m] < r["control"][m]) if m == "logloss" else (v["student"][m] > r["control"][m])
                   for r, v in zip(rows, st)) for m in METRICS}
    return out


def train_control(cfg, feats: Path, d: Path, epochs: int, tok) -> dict:
    """The teacher's recipe on the same labelled pairs for ``epochs`` epochs (best epoch on validation): about
    as many optimizer steps as a student, which sees 2-3x the teacher's groups (pseudo groups are small)."""
    ccfg = replace(cfg, fit=replace(cfg.fit, epochs=epochs, patience=epochs))
    torch.manual_seed(cfg.seed)
    train, valid = training_groups(feats, ccfg)
    model, summ = fit_cross_encoder(ccfg, train, valid, d / "work-control", tokenizer=tok)
    save_model(model, d / "control", ccfg)
    shutil.rmtree(d / "work-control", ignore_errors=True)
    return {**evaluate(d / "control", feats), "valid": summ["best_" + cfg.fit.metric], "epochs": epochs,
            "best_epoch": summ["best_epoch"], "optimizer_steps": summ["optimizer_steps"]}


def seed_config(a, seed: int):
    return load_config(a.recipe, seed=seed, threads=a.threads, train_bi_encoder=False, max_eval_pairs=0,
                       fit={"seed": seed, "threads": a.threads, "progress": False})


def append_controls(a, feats: Path, work: Path, command: str, t_all: float, c_all: float) -> None:
    """Only train the controls and add them to the results already in --out."""
    res = json.loads(Path(a.out).read_text())
    res["command_control"] = command
    for row in res["seeds"]:
        cfg = seed_config(a, row["seed"])
        row["control"] = train_control(cfg, feats, work / f"seed{row['seed']}", a.control_epochs, tokenizer_of(cfg))
        log.info("seed %d control: %s", row["seed"], row["control"])
        res["mean"] = {name: summarise(res["seeds"], name) for name in res["settings"]}
        res["control_seconds"] = time.perf_counter() - t_all
        res["control_cpu_seconds"] = time.process_time() - c_all
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")


def run_seed(a, seed: int, feats: Path, work: Path, variants: dict) -> dict:
    """Teacher, one student per variant and the control for one seed; the row of the results file."""
    t0 = time.perf_counter()
    cfg = seed_config(a, seed)
    tok = tokenizer_of(cfg)
    torch.manual_seed(seed)
    train, valid = training_groups(feats, cfg)
    d = work / f"seed{seed}"
    shutil.rmtree(d, ignore_errors=True)  # the trainer resumes from checkpoints it finds: start clean
    teacher, t_sum = fit_cross_encoder(cfg, train, valid, d / "work-teacher", tokenizer=tok)
    save_model(teacher, d / "teacher", cfg)
    row = {"seed": seed, "train_pairs": sum(map(len, train)), "valid_pairs": sum(map(len, valid)),
           "teacher_valid": t_sum["best_" + cfg.fit.metric], "teacher_optimizer_steps": t_sum["optimizer_steps"],
           "teacher": evaluate(d / "teacher", feats), "variants": {}}
    for name, settings in variants.items():
        vcfg = replace(cfg, pseudo_label=PseudoLabelSettings(**{**settings, "enabled": True}))
        model, _, rec = pseudo_label_rounds(vcfg, teacher, t_sum, train, valid, feats, d / f"work-{name}",
                                            tokenizer=tok, keep_students=True)
        student = model if rec["kept"] == "student" else rec["students"][0]
        save_model(student, d / name, vcfg)
        v = {k: val for k, val in rec["rounds"][0].items() if k != "round"}
        v["student"] = evaluate(d / name, feats)
        v["gated"] = v["student"] if v["kept"] == "student" else row["teacher"]
        row["variants"][name] = v
        log.info("seed %d %s: teacher %s | student %s | kept %s (valid %s %.4f -> %.4f)", seed, name,
                 row["teacher"], v["student"], v["kept"], cfg.fit.metric, v["teacher_valid"], v["student_valid"])
    if a.control_epochs:
        row["control"] = train_control(cfg, feats, d, a.control_epochs, tok)
    row["seconds"] = time.perf_counter() - t0
    for w in d.glob("work-*"):
        shutil.rmtree(w, ignore_errors=True)
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--work", default=".shoprec/bench/ranker-pl")
    p.add_argument("--out", default="benchmarks/results/ranker-pseudolabel.json")
    p.add_argument("--recipe", default=str(REPO / "configs" / "ranker" / "builtin.yaml"))
    p.add_argument("--variants", default=json.dumps(DEFAULT_VARIANTS),
                   help="JSON object: name -> PseudoLabelSettings fields (enabled is set); one student each per seed")
    p.add_argument("--control-epochs", type=int, default=3,
                   help="also train a labelled-only control for this many epochs (about a student's steps; 0: none)")
    p.add_argument("--append-control", action="store_true",
                   help="only train the controls and add them to the results already in --out")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(a.threads)
    variants = json.loads(a.variants)
    work = Path(a.work)
    feats = shop_features(work)
    stats = json.loads((feats / "stats.json").read_text())
    command = " ".join([".venv/bin/python", "benchmarks/ranker_pseudolabel.py", *sys.argv[1:]]) if argv is None \
        else " ".join(["benchmarks/ranker_pseudolabel.py", *argv])
    res: dict = {"command": command, "data": {"shop": "shoprec.data.synth.synthesize defaults (seed 0)", **stats},
                 "machine": f"{os.cpu_count()} CPU cores shared with other jobs, torch threads {a.threads}",
                 "metrics": "test queries, all pairs (max_eval_pairs 0): auc/logloss over search impressions and "
                            "click samples (evaluate_ranker), search_auc over search impressions only, "
                            "search_ndcg@10 over impressions with a click",
                 "seeds": []}
    t_all, c_all = time.perf_counter(), time.process_time()
    if a.append_control:
        append_controls(a, feats, work, command, t_all, c_all)
        return
    for seed in a.seeds:
        res["seeds"].append(run_seed(a, seed, feats, work, variants))
        res["settings"] = {name: asdict(PseudoLabelSettings(**{**s, "enabled": True})) for name, s in variants.items()}
        res["mean"] = {name: summarise(res["seeds"], name) for name in variants}
        res["total_seconds"], res["total_cpu_seconds"] = time.perf_counter() - t_all, time.process_time() - c_all
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    log.info("mean: %s", json.dumps(res["mean"], indent=1))


if __name__ == "__main__":
    main()
