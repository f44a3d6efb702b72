"""Evaluate a candidate model against popularity and the current champion, on the same test data.

Protocol: leave-one-out (each shopper's last item is the test target, everything before it is the
history), all items ranked, items already in the history excluded. The champion is scored on the
same (history, target) pairs of item ids, through its own vocabulary: items it never saw count as
its misses. Sharded (:func:`evaluate_shard` per share of the shoppers, :func:`reduce_evaluation`): each shard
writes how many targets got each rank, the reduce adds those integer counts and computes the metrics once,
so any shard count gives exactly the one-pass figures (never averages of averages). The gate passes when there is no champion yet, or when the candidate's NDCG@10 beats
the champion's by more than ``margin`` (absolute).
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from pathlib import Path

import pandas as pd

from shoprec import metrics
from shoprec.data.features import load_items, load_sequences
from shoprec.seqrec.recommend import Recommender, history_counts, popularity_ranks_counted

log = logging.getLogger(__name__)

GATE_METRIC = "ndcg@10"
REPORT_METRICS = ("ndcg@10", "hr@10", "mrr@10", "ndcg@20", "hr@20")


def decide_gate(results: dict, metric: str, label: str, champion_name: str, margin: float,
                champion_version: str | None) -> tuple[bool, str]:
    """Promotion gate: pass when there is no champion, or the candidate's ``metric`` beats the champion's
    by more than ``margin`` (absolute); the reason says which, with both figures."""
    cand = results["candidate"][metric]
    if "champion" not in results:
        return True, f"no {champion_name} yet; candidate {label} {cand:.4f}"
    champ = results["champion"][metric]
    passed = cand > champ + margin
    return passed, (f"candidate {label} {cand:.4f} {'beats' if passed else 'does not beat'} champion"
                    f"{' v' + champion_version if champion_version else ''} {champ:.4f} + margin {margin:.4f}")


def test_pairs(features: str | Path, shard: int = 0, shards: int = 1) -> tuple[list[list[str]], list[str]]:
    """(history, target) item ids of evaluation shard ``shard`` of ``shards``: a contiguous share of the
    shoppers over the features' shards (:func:`shoprec.data.shards.read_share`); ``shards`` 1: all of them."""
    _, seqs = load_sequences(features, shard, shards)
    items = load_items(features)
    ids = [""] + items["item_id"].tolist()
    histories = [[ids[i] for i in s[:-1]] for s in seqs]
    targets = [ids[s[-1]] for s in seqs]
    return histories, targets


def popularity_counts(features: str | Path) -> dict[str, int]:
    """Item id -> its count over every kept shopper's history, for the items in a history or a test target:
    the most-popular baseline over all shoppers, whichever shard is scored (``item_counts.parquet``)."""
    path = Path(features) / "item_counts.parquet"
    if path.exists():
        c = pd.read_parquet(path)
        c = c[(c["history_count"] > 0) | (c["target_count"] > 0)]
        return dict(zip(c["item_id"], c["history_count"].astype(int)))
    histories, targets = test_pairs(features)  # features written before item counts: one pass over all
    return history_counts(histories, targets)


def evaluate_shard(model_dir: str | Path, features: str | Path, shard: int = 0, shards: int = 1,
                   out: str | Path | None = None, champion: str | Path | None = None,
                   champion_version: str | None = None) -> dict:
    """Ranks of shard ``shard`` of ``shards`` of the test shoppers under the candidate, popularity and the champion,
    as counts per rank (integers: shards add up exactly); written to ``out/part.json`` when ``out`` is given.
    :func:`reduce_evaluation` sums the parts and applies the gate."""
    histories, targets = test_pairs(features, shard, shards)
    candidate = Recommender(model_dir)

    def counted(ranks) -> dict[int, int]:
        return metrics.rank_counts(ranks()) if targets else {}  # a shard with no shopper counts nothing

    counts = {"candidate": counted(lambda: candidate.ranks(histories, targets)),
              "popularity": counted(lambda: popularity_ranks_counted(popularity_counts(features), histories, targets))}
    unreadable = None
    if champion:
        try:
            champ_model = Recommender(champion)
        except (RuntimeError, ValueError, KeyError, OSError) as e:  # e.g. saved by a shoprec with another architecture
            unreadable = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
            log.warning("champion%s in %s cannot be loaded by this shoprec version, so it cannot be compared: %s",
                        f" v{champion_version}" if champion_version else "", champion, unreadable)
        else:
            counts["champion"] = counted(lambda: champ_model.ranks(histories, targets))
    part = {"shard": shard, "shards": shards, "users": len(targets), "champion_version": champion_version,
            "champion_unreadable": unreadable, "rank_counts": counts}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "part.json").write_text(json.dumps(part))
    return part


def reduce_evaluation(parts: list[dict | str | Path], out: str | Path, margin: float = 0.0,
                      model_dir: str | Path | None = None) -> dict:
    """Sum the rank counts of all evaluation shards (folders with ``part.json``, or the parts themselves), apply
    the gate as :func:`evaluate` does, and write ``evaluation.json``, ``report.html`` and ``report.md`` to ``out``."""
    parts = [p if isinstance(p, dict) else json.loads((Path(p) / "part.json").read_text()) for p in parts]
    shards = {p["shards"] for p in parts}
    if len(shards) != 1 or sorted(p["shard"] for p in parts) != list(range(shards.pop())):
        raise ValueError(f"evaluation parts {[(p['shard'], p['shards']) for p in parts]} are not every shard once")
    seen = {(p["champion_version"], p["champion_unreadable"], "champion" in p["rank_counts"]) for p in parts}
    if len(seen) != 1:
        raise ValueError(f"evaluation shards compared with different champions: {sorted(map(str, seen))}")
    champion_version, unreadable, _ = seen.pop()
    totals: dict[str, dict[int, int]] = {}
    for p in parts:
        for who, counts in p["rank_counts"].items():
            totals[who] = metrics.add_counts(totals.get(who, {}), counts)
    results = {who: metrics.finish(metrics.sums_of_rank_counts(totals[who]))
               for who in ("candidate", "popularity", "champion") if who in totals}
    users = sum(p["users"] for p in parts)
    return _write_evaluation(results, users, out, margin, champion_version, unreadable, model_dir, len(parts))


def evaluate(model_dir: str | Path, features: str | Path, out: str | Path, champion: str | Path | None = None,
             margin: float = 0.0, champion_version: str | None = None) -> dict:
    """Write ``evaluation.json`` and ``report.html`` to ``out``; return the evaluation with the gate decision.
    One pass over all test shoppers: :func:`evaluate_shard` with one shard, then :func:`reduce_evaluation`."""
    part = evaluate_shard(model_dir, features, 0, 1, champion=champion, champion_version=champion_version)
    return reduce_evaluation([part], out, margin=margin, model_dir=model_dir)


def _write_evaluation(results: dict, users: int, out: str | Path, margin: float, champion_version: str | None,
                      unreadable: str | None, model_dir: str | Path | None, shards: int) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    passed, reason = decide_gate(results, GATE_METRIC, GATE_METRIC, "champion", margin, champion_version)
    if unreadable:
        # an unloadable champion must not block every retrain; the reason and the report say why it was replaced
        reason = (f"champion{' v' + champion_version if champion_version else ''} cannot be loaded by this shoprec "
                  f"version ({unreadable}); candidate {GATE_METRIC} {results['candidate'][GATE_METRIC]:.4f}")
    training = {}
    metrics_file = Path(model_dir) / "metrics.json" if model_dir is not None else None
    if metrics_file is not None and metrics_file.exists():
        training = json.loads(metrics_file.read_text())
    evaluation = {"gate": passed, "reason": reason, "gate_metric": GATE_METRIC, "margin": margin,
                  "key_metrics": ["ndcg@10", "hr@10", "mrr@10"],
                  "users": users, "champion_version": champion_version, "results": results,
                  "champion_unreadable": unreadable, "shards": shards,
                  "beats_popularity": results["candidate"][GATE_METRIC] > results["popularity"][GATE_METRIC]}
    (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2))
    (out / "report.html").write_text(render_report(evaluation, training.get("history", [])))
    (out / "report.md").write_text(render_markdown(evaluation))
    log.info("evaluate: %s", reason)
    return evaluation


def _chart_png(evaluation: dict, history: list[dict]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if history else 1, figsize=(10 if history else 5, 3.2), squeeze=False)
    ax = axes[0][0]
    names = list(evaluation["results"])
    ks = ["ndcg@10", "hr@10", "mrr@10"]
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        ax.bar([i + j * width for i in range(len(ks))], [evaluation["results"][name][k] for k in ks], width, label=name)
    ax.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(ks))], ks)
    ax.set_title("test metrics (all items ranked)")
    ax.legend(fontsize=8)
    if history:
        ax2 = axes[0][1]
        ax2.plot([h["epoch"] for h in history], [h["valid_ndcg@10"] for h in history], marker="o", label="valid ndcg@10")
        ax2.set_xlabel("epoch")
        ax2.set_title("validation during training")
        ax2.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def render_markdown(evaluation: dict) -> str:
    names = list(evaluation["results"])
    lines = [f"## Evaluation: {'PASS' if evaluation['gate'] else 'KEEP CHAMPION'}", "", evaluation["reason"], "",
             "| model | " + " | ".join(REPORT_METRICS) + " |", "|---" * (len(REPORT_METRICS) + 1) + "|"]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f"{evaluation['results'][n][k]:.4f}" for k in REPORT_METRICS) + " |")
    lines += ["", f"{evaluation['users']} shoppers, leave-one-out, all items ranked, history items excluded."]
    return "\n".join(lines) + "\n"


def render_report(evaluation: dict, history: list[dict]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(n)}</td>" + "".join(f"<td>{r[k]:.4f}</td>" for k in REPORT_METRICS) + "</tr>"
        for n, r in evaluation["results"].items())
    head = "".join(f"<th>{k}</th>" for k in REPORT_METRICS)
    status = "PASS: candidate becomes champion" if evaluation["gate"] else "KEEP: champion stays"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>shoprec evaluation</title>
<style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}</style>
</head><body><h2>{html.escape(status)}</h2><p>{html.escape(evaluation['reason'])}</p>
<table><tr><th>model</th>{head}</tr>{rows}</table>
<p>{evaluation['users']} shoppers; leave-one-out (last item = test), all items ranked, items already in the history excluded.</p>
<img alt="metrics chart" src="data:image/png;base64,{_chart_png(evaluation, history)}"/>
</body></html>"""


RANKER_GATE_METRIC = "auc"


def evaluate_ranker_vs_champion(model_dir: str | Path, features: str | Path, out: str | Path,
                                champion: str | Path | None = None, margin: float = 0.0,
                                champion_version: str | None = None) -> dict:
    """The ranker's gate: click AUC on the same held-out test pairs as the champion ranker (plus log-loss
    and search NDCG@10, reported). Writes ``evaluation.json`` and ``report.md`` to ``out``."""
    from shoprec.ranker import evaluate_ranker

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"candidate": evaluate_ranker(model_dir, features)}
    if champion:
        # Scored on the candidate's test split: the champion's own config names the split it was trained on.
        results["champion"] = evaluate_ranker(champion, features)
    passed, reason = decide_gate(results, RANKER_GATE_METRIC, "click AUC", "champion ranker", margin,
                                 champion_version)
    keys = ["auc", "logloss", "search_ndcg@10"]
    evaluation = {"gate": passed, "reason": reason, "gate_metric": RANKER_GATE_METRIC, "margin": margin,
                  "key_metrics": keys, "champion_version": champion_version, "results": results}
    (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2))
    lines = [f"## Ranker: {'PASS' if passed else 'KEEP CHAMPION'}", "", reason, "",
             "| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {n} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |" for n, r in results.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    log.info("evaluate ranker: %s", reason)
    return evaluation
