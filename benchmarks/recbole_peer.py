"""The peer: RecBole 1.2.1 SASRec / BERT4Rec / SASRecF on the S3-Rec Beauty split, on a fixed wall-clock budget.

Runs inside RecBole's own virtualenv (``benchmarks/seqrec.py`` creates it); imports only RecBole, torch
and ``shoprec/metrics.py`` (torch only) from this checkout. Writes one JSON file:

- RecBole's own test metrics from its best-validation epoch (its full-sort protocol for sequential
  models ranks all items *without* removing the user's history), and
- the same best-validation model scored under shoprec's protocol (all items ranked, every item of the
  user's history removed, ties counted against the target: :mod:`shoprec.metrics`),
- the validation curve (NDCG@10 per epoch, RecBole protocol), epoch times (wall and CPU).

Training stops when the next epoch would start after ``--budget-min`` minutes of training+validation
time (or RecBole's early stopping, patience 10, if that comes first). ``--budget-clock wall`` counts
wall-clock time; ``--budget-clock cpu`` counts the process's CPU time, which on a machine shared with
other jobs gives RecBole the same work as that many minutes on a quiet core (with ``--threads 1``). ``--deadline``
(a wall-clock time) also stops it before an epoch that would end after that time, for a session that must finish by
then; the best epoch so far is still tested under both protocols, and ``stopped_by`` says which limit ended it. The data is
``Beauty.txt`` written as a RecBole atomic file, the k-th item of a user having timestamp k, so the
leave-one-out split (``LS: valid_and_test``, time order) is the same as S3-Rec's and shoprec's.

SASRecF is RecBole's feature-aware SASRec: each input item's embedding is concatenated with its pooled feature
embeddings and projected back to ``hidden_size`` (outputs are scored against the item-id embeddings alone). It is
given the same brand/category ids as shoprec's ``model.item_attributes`` (``Beauty_item2attributes.json`` beside
``Beauty.txt``, or ``--attributes``), written as a RecBole ``.item`` atomic file with one ``attributes:token_seq``
field (:func:`write_item_features`), pooled by their mean as shoprec pools them (``--pooling``; RecBole's default is
``sum``). The ids are anonymous, so brand and category cannot be told apart: one field holds both, as in shoprec.

    python benchmarks/recbole_peer.py --model SASRec --data Beauty.txt --work DIR --budget-min 30 --out r.json
    python benchmarks/recbole_peer.py --model SASRecF --data Beauty.txt --work DIR --budget-min 30 --out f.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from shoprec import metrics as sm  # noqa: E402

ITEM_FEATURE = "attributes"


def recbole_compat() -> None:
    """What RecBole 1.2.1 needs of today's numpy and torch; called before RecBole is imported (not on import of
    this module, so a test of the exports changes nothing global)."""
    np.float = float  # RecBole 1.2.1 still uses the removed aliases
    np.int = int
    np.bool = bool
    load = torch.load
    torch.load = lambda *a, **k: load(*a, **{**k, "weights_only": False})  # RecBole checkpoints hold its Config


def write_atomic(src: Path, folder: Path, name: str) -> dict[str, list[str]]:
    folder.mkdir(parents=True, exist_ok=True)
    seqs = {}
    with open(src) as f, open(folder / f"{name}.inter", "w") as out:
        out.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for line in f:
            p = line.split()
            if not p:
                continue
            seqs[p[0]] = p[1:]
            for k, item in enumerate(p[1:]):
                out.write(f"{p[0]}\t{item}\t{k}\n")
    return seqs


def write_item_features(attributes_json: Path, folder: Path, name: str, items: set[str] | None = None) -> int:
    """``NAME.item``: RecBole's atomic item file with the S3-Rec ``item2attributes.json`` ids as one
    ``attributes:token_seq`` field (space-separated tokens, in the file's order). ``items``: the item tokens of the
    ``.inter`` file; every one of them must have a row (RecBole would give a missing item an empty field
    silently). Returns the number of rows."""
    table = json.loads(Path(attributes_json).read_text())
    if items is not None and (missing := sorted(items - set(table), key=str)):
        raise ValueError(f"{attributes_json}: {len(missing)} item(s) of the interactions have no attributes, "
                         f"e.g. {missing[:5]}")
    folder.mkdir(parents=True, exist_ok=True)
    rows = sorted(table.items(), key=lambda kv: (len(kv[0]), kv[0]))  # numeric order for numeric ids
    with open(folder / f"{name}.item", "w") as out:
        out.write(f"item_id:token\t{ITEM_FEATURE}:token_seq\n")
        for item, attrs in rows:
            tokens = [str(a) for a in attrs]
            if any(not t or any(c.isspace() for c in t) for t in tokens):
                raise ValueError(f"item {item}: attribute tokens must be non-empty and without spaces, got {attrs}")
            out.write(f"{item}\t{' '.join(tokens)}\n")
    return len(rows)


def shoprec_protocol(model, loader, dataset, seqs: dict[str, list[str]], cut: int) -> dict[str, float]:
    """Metrics of RecBole's full-sort scores with each user's history removed (``cut``: 2 valid, 1 test)."""
    uid_tokens = dataset.field2id_token["user_id"]
    item_token_to_id = dataset.field2token_id["item_id"]
    sums: dict[str, float] = {}
    model.eval()
    with torch.no_grad():
        for interaction, *_ in loader:
            scores = model.full_sort_predict(interaction).view(len(interaction), -1).float()
            users = interaction["user_id"].tolist()
            histories = [[item_token_to_id[t] for t in seqs[uid_tokens[u]][:-cut]] for u in users]
            ranks = sm.target_ranks(scores, interaction["item_id"].long(), exclude=histories)
            sums = sm.add(sums, sm.metric_sums(ranks))
    return sm.finish(sums)


def stop_reason(budget_used: float, budget: float, stale: int, patience: int, now: float, last_epoch_wall: float,
                deadline: float | None) -> str | None:
    """Why no further epoch starts, or None: the budget is spent, validation has not risen for ``patience``
    epochs, or an epoch as long as the last one (training+validation, wall time) would end after ``deadline``."""
    if budget_used > budget:
        return "budget"
    if stale >= patience:
        return "early stopping"
    if deadline is not None and now + last_epoch_wall > deadline:
        return "deadline"
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, choices=["SASRec", "BERT4Rec", "SASRecF"])
    ap.add_argument("--data", required=True, help="S3-Rec style Beauty.txt")
    ap.add_argument("--attributes", default=None,
                    help="SASRecF: S3-Rec item2attributes.json (default: NAME_item2attributes.json beside --data)")
    ap.add_argument("--pooling", choices=["mean", "sum", "max"], default="mean",
                    help="SASRecF: how an item's attribute embeddings are pooled (shoprec: mean)")
    ap.add_argument("--work", required=True)
    ap.add_argument("--budget-min", type=float, default=30.0)
    ap.add_argument("--budget-clock", choices=["wall", "cpu"], default="wall",
                    help="what the budget counts: wall-clock seconds or this process's CPU seconds")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--deadline", default=None, metavar="UNIX_SECONDS",
                    help="a wall-clock time (seconds since the epoch) by which training must end: no epoch starts that "
                         "the last epoch's wall time (training+validation) says would end after it; the best epoch so "
                         "far is then tested as usual (stopped_by: deadline)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    recbole_compat()
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    torch.set_num_threads(a.threads)
    work = Path(a.work)
    name = "beauty"
    seqs = write_atomic(Path(a.data), work / "data" / name, name)
    features = {}
    if a.model == "SASRecF":
        attributes = Path(a.attributes) if a.attributes else Path(a.data).with_name(
            f"{Path(a.data).stem}_item2attributes.json")
        n = write_item_features(attributes, work / "data" / name, name, {i for s in seqs.values() for i in s})
        print(f"{n} items with attributes from {attributes}", flush=True)
        features = {"load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", ITEM_FEATURE]},
                    "selected_features": [ITEM_FEATURE], "pooling_mode": a.pooling,
                    "attributes_file": str(attributes)}
    cfg = {
        "data_path": str(work / "data"), "checkpoint_dir": str(work / f"ckpt-{a.model}"),
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": 50, "train_neg_sample_args": None, "loss_type": "CE",
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["Hit", "NDCG", "MRR"], "topk": [5, 10, 20], "valid_metric": "NDCG@10",
        "epochs": a.epochs, "stopping_step": 10, "learning_rate": 0.001, "train_batch_size": 2048,
        "eval_batch_size": 4096, "repeatable": True, "reproducibility": True, "seed": 2020,
        "device": "cpu", "use_gpu": False, "show_progress": False, "log_wandb": False,
        "worker": 0, "state": "INFO",
    }
    cfg.update(features)
    config = Config(model=a.model, dataset=name, config_dict={k: v for k, v in cfg.items() if k != "attributes_file"})
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    torch.set_num_threads(a.threads)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    n_params = sum(p.numel() for p in model.parameters())
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

    curve, best, best_state, stale = [], -1.0, None, 0
    t_start, cpu_start = time.perf_counter(), time.process_time()
    clock = time.process_time if a.budget_clock == "cpu" else time.perf_counter
    clock_start = clock()
    train_seconds = train_cpu = 0.0
    extra = extra_clock = extra_cpu = 0.0  # our own re-scoring under shoprec's protocol: not RecBole's time
    stopped_by, last_epoch_wall = None, 0.0
    for epoch in range(a.epochs):
        stopped_by = stop_reason(clock() - clock_start - extra_clock, 60 * a.budget_min, stale, cfg["stopping_step"],
                                 time.time(), last_epoch_wall, float(a.deadline) if a.deadline else None)
        if stopped_by:
            break
        t0, c0 = time.perf_counter(), time.process_time()
        model.train()
        loss = trainer._train_epoch(train_data, epoch)
        loss = float(sum(loss) if isinstance(loss, tuple) else loss)
        ep_s, ep_cpu = time.perf_counter() - t0, time.process_time() - c0
        train_seconds += ep_s
        train_cpu += ep_cpu
        score, result = trainer._valid_epoch(valid_data)
        elapsed = time.perf_counter() - t_start - extra
        w0, k0, c1 = time.perf_counter(), clock(), time.process_time()
        valid_ours = shoprec_protocol(model, valid_data, dataset, seqs, cut=2)
        extra += time.perf_counter() - w0
        extra_clock += clock() - k0
        extra_cpu += time.process_time() - c1
        curve.append({"epoch": epoch, "loss": loss, "valid_ndcg@10": float(result["ndcg@10"]),
                      "valid_hr@10": float(result["hit@10"]),
                      "valid_ndcg@10_shoprec_protocol": valid_ours["ndcg@10"], "epoch_seconds": ep_s, "epoch_cpu_seconds": ep_cpu,
                      "train_seconds_total": train_seconds, "elapsed_seconds_total": elapsed,
                      "cpu_seconds_total": time.process_time() - cpu_start - extra_cpu})
        print(json.dumps(curve[-1]), flush=True)
        if score > best:
            best, stale = score, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        last_epoch_wall = time.perf_counter() - t0
        Path(a.out).with_suffix(".partial.json").write_text(json.dumps({"curve": curve}, indent=2))
    total_wall, total_cpu = time.perf_counter() - t_start - extra, time.process_time() - cpu_start - extra_cpu
    if best_state is None:
        raise SystemExit("no epoch finished within the budget")
    model.load_state_dict(best_state)
    model.eval()
    recbole_test = {k: float(v) for k, v in trainer.evaluate(test_data, load_best_model=False).items()}

    # shoprec's protocol on the same model: history removed before ranking.
    shoprec_test = shoprec_protocol(model, test_data, dataset, seqs, cut=1)
    best_epoch = max(curve, key=lambda r: r["valid_ndcg@10"])["epoch"]
    out = {
        "model": a.model, "recbole": "1.2.1", "parameters": n_params, "threads": a.threads,
        "budget_minutes": a.budget_min, "budget_clock": a.budget_clock, "epochs_run": len(curve), "best_epoch": best_epoch,
        "stopped_by": stopped_by or "epochs", "deadline": float(a.deadline) if a.deadline else None,
        "train_seconds": train_seconds, "train_cpu_seconds": train_cpu, "wall_seconds": total_wall,
        "cpu_seconds": total_cpu,
        "train_interactions_per_epoch": len(train_data._dataset),
        "epoch_seconds_median": float(np.median([r["epoch_seconds"] for r in curve])),
        "best_valid_ndcg@10": best,
        "test_recbole_protocol": {k: recbole_test[k] for k in recbole_test},
        "test_shoprec_protocol": shoprec_test,
        "ndcg@10": shoprec_test["ndcg@10"], "hr@10": shoprec_test["hr@10"],
        "curve": curve, "config": {k: cfg[k] for k in cfg if k not in ("data_path", "checkpoint_dir")},
    }
    Path(a.out).write_text(json.dumps(out, indent=2))
    print(json.dumps({k: out[k] for k in ("model", "epochs_run", "best_epoch", "test_recbole_protocol",
                                          "test_shoprec_protocol")}, indent=1))


if __name__ == "__main__":
    main()
