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
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from shoprec.ranker import evaluate_ranker, load_config  # noqa: E402
from shoprec.ranker.config import RankerConfig  # noqa: E402
from shoprec.ranker.models import (  # noqa: E402
    CrossEncoder,
    Ranker,
    save_model,  # noqa: E402
)
from shoprec.ranker.train import Pair, encoder_tokenizer, fit_cross_encoder, split_keys, training_groups  # noqa: E402
from shoprec.trainer import loop as trainer  # noqa: E402

log = logging.getLogger("bench.ranker_pseudolabel")
REPO = Path(__file__).resolve().parent.parent
METRICS = ("auc", "logloss", "search_auc", "search_ndcg@10")
DEFAULT_VARIANTS = {"hard": {}, "soft": {"label": "soft"}}


# ------------------------------------------------------------------ pseudo-labelling (kept here, out of the library:
# the benchmark rejected it, see the module docstring)
@dataclass
class PseudoLabelSettings:
    """Semi-supervised self-training of the cross-encoder on unlabelled (query, product) pairs.

    The unlabelled pool is built from the training-split queries of ``search_pairs.parquet``: for each
    query, catalogue products that were never shown for it in any search (so they have no click
    outcome). The trained cross-encoder (the teacher) scores the pool; the most and least likely clicks
    get pseudo-labels; a student is trained from the base model on the labelled pairs plus the
    pseudo-labelled ones (the same trainer and recipe) and is kept only if its validation
    ``fit.metric`` beats the teacher's by more than ``min_gain``. Validation and test queries never
    enter the pool. Off by default: on the built-in shop the student's gain over the teacher came from its
    extra optimizer steps, and more epochs on the labelled pairs alone did better
    (``benchmarks/ranker_pseudolabel.py``, ``benchmarks/results/ranker-pseudolabel.json``).
    """

    enabled: bool = False
    """Run the pseudo-labelling round(s) after the teacher is trained."""
    pool_per_query: int = 8
    """Unlabelled products drawn per training query: up to half share a word with the query (the lexical
    candidates a search would retrieve but did not show), the rest are drawn from the whole catalogue."""
    positive_fraction: float = 0.1
    """The pool's top fraction by teacher click probability is pseudo-labelled clicked."""
    negative_fraction: float = 0.4
    """The pool's bottom fraction by teacher click probability is pseudo-labelled not clicked."""
    max_pairs: int = 600
    """Most pseudo-labelled pairs per round (both fractions shrunk in proportion; 0: no cap)."""
    label: str = "hard"
    """``hard``: kept pairs get click 1 (top) or 0 (bottom); ``soft``: they get the teacher's probability
    (distillation). The purchase/relevance label stays empty (no loss)."""
    weight: float = 0.5
    """Loss weight of a pseudo-labelled pair (a labelled pair weighs 1) in the click and listwise losses."""
    rounds: int = 1
    """Teacher -> student rounds; a kept student is the next round's teacher; stops at the first round
    whose student is not kept."""
    min_gain: float = 0.0
    """The student is kept only if its validation metric beats the teacher's by more than this."""

    def __post_init__(self):
        if self.label not in ("hard", "soft"):
            raise ValueError(f"pseudo_label.label must be 'hard' or 'soft', not {self.label!r}")
        if not (0 <= self.positive_fraction <= 1 and 0 <= self.negative_fraction <= 1
                and self.positive_fraction + self.negative_fraction <= 1):
            raise ValueError("pseudo_label fractions must be in [0, 1] and sum to at most 1")
        if self.rounds < 1 or self.pool_per_query < 1 or self.weight < 0:
            raise ValueError("pseudo_label.rounds and pool_per_query must be >= 1 and weight >= 0")


def _words(text: str) -> set[str]:
    return set(str(text).lower().split())


def unlabelled_pool(features_dir: str | Path, cfg: RankerConfig, seed: int,
                     s: PseudoLabelSettings) -> list[tuple[str, str]]:
    """(query, product title) pairs with no click outcome: for each training-split query of
    ``search_pairs.parquet`` (split as in :func:`shop_groups`), catalogue products (``items.parquet`` plus
    every shown title) never shown for that query in any search. Up to half of each query's
    ``pool_per_query`` share a word with it, the rest are drawn from the whole catalogue; seeded."""
    features_dir = Path(features_dir)
    sp = pd.read_parquet(features_dir / "search_pairs.parquet", columns=["query", "title"])
    split = split_keys(list(sp["query"]), cfg.seed, cfg.valid_fraction, cfg.test_fraction)
    shown: dict[str, set[str]] = {}
    for q, t in zip(sp["query"], sp["title"]):
        shown.setdefault(q, set()).add(t)
    titles = set(sp["title"])
    items_path = features_dir / "items.parquet"
    if items_path.exists():
        titles |= set(pd.read_parquet(items_path, columns=["title"])["title"].astype(str))
    catalogue = sorted(titles)
    index = {t: i for i, t in enumerate(catalogue)}
    by_word: dict[str, set[int]] = {}
    for i, t in enumerate(catalogue):
        for w in _words(t):
            by_word.setdefault(w, set()).add(i)
    rng = np.random.default_rng(seed)
    n, pool = s.pool_per_query, []
    for q in sorted(k for k, v in split.items() if v == "train"):
        taken = {index[t] for t in shown[q]}  # shown products have a click label: never in the pool
        lexical = sorted(set().union(*(by_word.get(w, set()) for w in _words(q))) - taken)
        take = [int(i) for i in rng.choice(lexical, size=min(len(lexical), n // 2), replace=False)] if lexical else []
        taken.update(take)
        want = min(n, len(catalogue) - len(taken) + len(take))
        while len(take) < want:  # the rest uniformly from the catalogue, by rejection
            i = int(rng.integers(len(catalogue)))
            if i not in taken:
                taken.add(i)
                take.append(i)
        pool += [(q, catalogue[i]) for i in take]
    return pool


def select_pseudo_labels(pool: list[tuple[str, str]], prob: np.ndarray, s: PseudoLabelSettings) -> pd.DataFrame:
    """The pool's most and least likely clicks by teacher probability ``prob``, with their pseudo-label
    (``hard``: 1/0; ``soft``: ``prob``): a frame of query, title, teacher_prob, click, side (pos/neg)."""
    n = len(pool)
    n_pos, n_neg = int(round(s.positive_fraction * n)), int(round(s.negative_fraction * n))
    if s.max_pairs and n_pos + n_neg > s.max_pairs:
        scale = s.max_pairs / (n_pos + n_neg)
        n_pos, n_neg = int(n_pos * scale), int(n_neg * scale)
    order = np.argsort(-prob, kind="stable")
    pos, neg = order[:n_pos], order[n - n_neg:] if n_neg else order[:0]
    rows = [(pool[i][0], pool[i][1], float(prob[i]), side) for idx, side in ((pos, "pos"), (neg, "neg")) for i in idx]
    df = pd.DataFrame(rows, columns=["query", "title", "teacher_prob", "side"])
    df["click"] = df["teacher_prob"] if s.label == "soft" else (df["side"] == "pos").astype(float)
    return df


def pseudo_groups(labels: pd.DataFrame, weight: float) -> list[list[Pair]]:
    """One group per query (sorted), so the listwise loss compares a query's pseudo-labelled products."""
    return [[Pair(q, t, float(c), math.nan, weight) for t, c in zip(g["title"], g["click"])]
            for q, g in labels.groupby("query", sort=True)]


def pseudo_label_rounds(cfg: RankerConfig, s: PseudoLabelSettings, teacher: CrossEncoder, teacher_summary: dict, train: list[list[Pair]],
                        valid: list[list[Pair]], features_dir: str | Path, work_dir: str | Path, tokenizer=None,
                        keep_students: bool = False) -> tuple[CrossEncoder, dict, dict]:
    """Self-training after the teacher: per round, score :func:`unlabelled_pool` with the current model,
    train a student on ``train`` + :func:`select_pseudo_labels`, keep it only if its best validation
    ``cfg.fit.metric`` beats the current model's by more than ``min_gain``.

    Returns (kept model, its fit summary, record). The record has per round the pool size, the number
    of pseudo-labelled pairs (positives/negatives), ``teacher_valid`` and ``student_valid`` and ``kept``
    (``student``/``teacher``); overall ``kept`` and ``labels`` (the pseudo-labelled frame of every round,
    with its ``round``). With ``keep_students`` the record also holds the rejected ``students`` (for benchmarks).
    """
    tok = tokenizer or encoder_tokenizer(cfg)
    key = "best_" + cfg.fit.metric
    sign = 1.0 if cfg.fit.mode == "max" else -1.0
    model, summary = teacher, teacher_summary
    record: dict = {"metric": cfg.fit.metric, "mode": cfg.fit.mode, "rounds": [], "kept": "teacher"}
    frames, students = [], []
    for r in range(s.rounds):
        pool = unlabelled_pool(features_dir, cfg, cfg.seed + 7919 * (r + 1), s)
        labels = None
        if trainer.dist_env()[1] == 0:
            prob = Ranker(model, tok, cfg).score([a for a, _ in pool], [b for _, b in pool], head="click")
            labels = select_pseudo_labels(pool, prob, s)
        labels = trainer.broadcast_from_rank0(labels)
        labels["round"] = r
        frames.append(labels)
        torch.manual_seed(cfg.seed)  # the student starts from the teacher's initial heads and adapters
        student, st_summary = fit_cross_encoder(cfg, train + pseudo_groups(labels, s.weight), valid,
                                                Path(work_dir) / f"student{r}", tokenizer=tok)
        t_val, s_val = summary.get(key), st_summary.get(key)
        better = s_val is not None and t_val is not None and sign * (s_val - t_val) > s.min_gain
        record["rounds"].append({
            "round": r, "pool_pairs": len(pool), "pseudo_pairs": len(labels),
            "pseudo_positives": int((labels["side"] == "pos").sum()),
            "pseudo_negatives": int((labels["side"] == "neg").sum()),
            "teacher_prob_mean": {side: float(g["teacher_prob"].mean()) for side, g in labels.groupby("side")},
            "teacher_valid": t_val, "student_valid": s_val, "student_optimizer_steps": st_summary.get("optimizer_steps"),
            "kept": "student" if better else "teacher"})
        log.info("pseudo-labelling round %d: %d pool pairs, %d pseudo-labelled; validation %s teacher %.4f, "
                 "student %.4f: keeping the %s", r, len(pool), len(labels), cfg.fit.metric, t_val, s_val,
                 "student" if better else "teacher")
        if not better:
            if keep_students:
                students.append(student)
            break
        model, summary = student, st_summary
        record["kept"] = "student"
    record["labels"] = pd.concat(frames, ignore_index=True)
    if keep_students:
        record["students"] = students
    return model, summary, record


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
        row["control"] = train_control(cfg, feats, work / f"seed{row['seed']}", a.control_epochs, encoder_tokenizer(cfg))
        log.info("seed %d control: %s", row["seed"], row["control"])
        res["mean"] = {name: summarise(res["seeds"], name) for name in res["settings"]}
        res["control_seconds"] = time.perf_counter() - t_all
        res["control_cpu_seconds"] = time.process_time() - c_all
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")


def run_seed(a, seed: int, feats: Path, work: Path, variants: dict) -> dict:
    """Teacher, one student per variant and the control for one seed; the row of the results file."""
    t0 = time.perf_counter()
    cfg = seed_config(a, seed)
    tok = encoder_tokenizer(cfg)
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
        s = PseudoLabelSettings(**{**settings, "enabled": True})
        model, _, rec = pseudo_label_rounds(cfg, s, teacher, t_sum, train, valid, feats, d / f"work-{name}",
                                            tokenizer=tok, keep_students=True)
        student = model if rec["kept"] == "student" else rec["students"][0]
        save_model(student, d / name, cfg)
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
