"""Adopt a finished ``ranker_games.py`` run as ``ranker-games.json``, keeping the result it replaces.

    .venv/bin/python benchmarks/ranker_games_merge.py .shoprec/bench/games/run-s9.json \
        --work .shoprec/bench/games --label "..." [--note "..."] [--earlier-work .shoprec/bench/games/s9-backup]

A larger test sample starts with the earlier one: test users are the start of one seeded permutation, so a run
with ``--test-users 8000`` holds the earlier run's 3,000 users and 5,000 new ones. Besides copying the run,
this reports the blend's gain over seqrec separately on those two parts (from the run's ``scores.npz``), so
the new figure can be read against the earlier one on the same users as well as on users never looked at.
When the run re-trains the cross-encoder on the same test users instead (another configuration, same sample),
there are no new users to split off; ``--earlier-work`` then names the replaced run's folder (its ``scores.npz``)
and ``vs_replaced`` reports this run's blend against the replaced one's on the same users, paired per user.
The result it replaces goes to ``earlier_runs[label]``; its own ``earlier_runs`` are kept. Nothing is
trained or scored again; each ``scores.npz`` is checked to reproduce its run's own figures first.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ranker_games import blend, blend_name, bootstrap, per_user, rerank_ranks  # noqa: E402

BLEND = blend_name("cross-encoder")
KEPT = ("command", "made_with", "sampling", "rerank", "target", "significance", "auc_valid", "training", "notes",
        "by_sample_part", "vs_replaced", "fresh_test_sample")


def blend_ranks(scores: dict, weight: float):
    """Test ranks of the seqrec + cross-encoder blend, from the arrays ``ranker_games.py`` saved (a target outside
    the top 50 is a miss)."""
    c = {"top": scores["test_top"], "target": scores["test_target"]}
    return rerank_ranks(c, blend(scores["test_top_scores"], scores["test_cross-encoder"], weight))


def checked_ndcg(run: dict, scores: dict):
    """Per-user test NDCG@10 of seqrec and of the blend, after checking ``scores`` reproduce ``run``'s figures."""
    seq = per_user(scores["test_rank"])
    blended = per_user(blend_ranks(scores, run["rerank"][BLEND]["seqrec_weight"]))
    if abs(blended.mean() - run["rerank"][BLEND]["ndcg@10"]) > 1e-6 or abs(
            seq.mean() - run["rerank"]["seqrec"]["ndcg@10"]) > 1e-6:
        raise SystemExit("scores.npz does not reproduce the run's NDCG@10 (blend "
                         f"{blended.mean():.6f} vs {run['rerank'][BLEND]['ndcg@10']:.6f}): not this run's work folder")
    return [int(u) for u in scores["test_users"]], seq, blended


def sample_parts(run: dict, scores: dict, earlier_test_users: int) -> dict:
    """Blend vs seqrec NDCG@10 on the earlier run's test users and on the rest of this run's test users."""
    import numpy as np

    seed, n_users = run["sampling"]["seed"], run["dataset"]["users"]
    if earlier_test_users > run["sampling"]["test_users"]:
        raise SystemExit(f"the earlier sample ({earlier_test_users} users) is larger than this run's "
                         f"({run['sampling']['test_users']}): it is not a part of it")
    start = run["sampling"].get("test_start", 0)
    earlier = set(int(u) for u in np.random.default_rng(seed).permutation(n_users)[start:start + earlier_test_users])
    weight = run["rerank"][BLEND]["seqrec_weight"]
    users, seq, blended = checked_ndcg(run, scores)
    in_earlier = np.array([u in earlier for u in users])
    if in_earlier.sum() != earlier_test_users:
        raise SystemExit(f"only {in_earlier.sum()} of the earlier {earlier_test_users} test users are in this run")
    parts = {}
    for name, mask in (("earlier test users", in_earlier), ("new test users", ~in_earlier)):
        parts[name] = {"users": int(mask.sum()), "seqrec ndcg@10": float(seq[mask].mean()),
                       "blend ndcg@10": float(blended[mask].mean()), "blend - seqrec": bootstrap(blended[mask], seq[mask])}
    return {"what": (f"the blend (seqrec weight {weight}, chosen on this run's valid users) vs seqrec, on the "
                     f"first {earlier_test_users} users of the seeded permutation (the earlier run's test sample) "
                     "and on the others; this run's models for both"), **parts}


def vs_replaced(run: dict, scores: dict, earlier: dict, earlier_scores: dict) -> dict:
    """This run's blend against the replaced run's, paired over the replaced run's test users."""
    import numpy as np

    users, seq, blended = checked_ndcg(run, scores)
    old_users, old_seq, old_blended = checked_ndcg(earlier, earlier_scores)
    where = {u: i for i, u in enumerate(users)}
    missing = [u for u in old_users if u not in where]
    if missing:
        raise SystemExit(f"{len(missing)} of the replaced run's {len(old_users)} test users are not in this run")
    idx = np.array([where[u] for u in old_users])
    return {"what": "this run's blend minus the replaced run's blend, paired over the replaced run's test users",
            "users": len(old_users), "seqrec identical": bool(np.array_equal(seq[idx], old_seq)),
            "blend ndcg@10": float(blended[idx].mean()), "replaced blend ndcg@10": float(old_blended.mean()),
            "this - replaced": bootstrap(blended[idx], old_blended)}


def load_scores(work: Path) -> dict:
    import numpy as np

    with np.load(work / "scores.npz") as z:
        return {k: z[k] for k in z.files}


def merge(run_file: Path, work: Path, out: Path, label: str, notes: list[str], command: str,
          earlier_work: Path | None = None) -> dict:
    run = json.loads(run_file.read_text())
    earlier = json.loads(out.read_text())
    scores = load_scores(work)
    merged = dict(run)
    n_old, n_new = earlier["sampling"]["test_users"], run["sampling"]["test_users"]
    start_old, start_new = (r["sampling"].get("test_start", 0) for r in (earlier, run))
    if start_old != start_new:  # a fresh test sample: nothing to compare on the same users
        if start_new < start_old + n_old:
            raise SystemExit(f"this run's test users start at {start_new}, inside the replaced run's test sample "
                             f"({start_old}..{start_old + n_old}): not a fresh sample")
        merged["fresh_test_sample"] = {"test_start": start_new, "replaced_test_users": [start_old, start_old + n_old],
                                       "what": "this run's test users are disjoint from the replaced run's"}
    elif n_old < n_new:
        merged["by_sample_part"] = sample_parts(run, scores, n_old)
    elif earlier_work is None:
        raise SystemExit(f"the replaced run's test sample ({n_old} users) is not smaller than this run's ({n_new}): "
                         "name its folder with --earlier-work so the two blends are compared on its users")
    if earlier_work is not None:
        merged["vs_replaced"] = vs_replaced(run, scores, earlier, load_scores(earlier_work))
    merged["notes"] = run["notes"] + notes
    merged["merged_by"] = command
    merged["earlier_runs"] = {**earlier.get("earlier_runs", {}), label: {k: earlier[k] for k in KEPT if k in earlier}}
    out.write_text(json.dumps(merged, indent=2) + "\n")
    return {k: merged[k] for k in ("by_sample_part", "vs_replaced", "fresh_test_sample") if k in merged}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="the run's JSON (ranker_games.py --out)")
    ap.add_argument("--work", required=True, help="the run's --work folder (holds scores.npz)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "ranker-games.json"))
    ap.add_argument("--label", required=True, help="key of the replaced result under earlier_runs")
    ap.add_argument("--note", action="append", default=[], help="a line for the merged notes")
    ap.add_argument("--earlier-work", default=None,
                    help="the replaced run's work folder (its scores.npz): compare the two blends on its test users")
    a = ap.parse_args()
    command = shlex.join([".venv/bin/python", "benchmarks/ranker_games_merge.py", *sys.argv[1:]])
    print(json.dumps(merge(Path(a.run), Path(a.work), Path(a.out), a.label, a.note, command,
                            Path(a.earlier_work) if a.earlier_work else None), indent=2))


if __name__ == "__main__":
    main()
