"""benchmarks/ranker_games_merge.py on a synthetic run: the parts split the test users as the seeded permutation
says, their figures are the blend's and seqrec's on those users, and the replaced result is kept."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import ranker_games_merge as rgm  # noqa: E402

from shoprec.metrics import MISS  # noqa: E402

N_USERS, N_ITEMS, DEPTH, SEED, WEIGHT = 120, 300, 50, 0, 0.4


def ndcg(rank: int) -> float:
    return 1.0 / math.log2(rank + 2) if rank < 10 else 0.0


def blend_rank(top, target, seq_scores, ce_scores) -> int:
    """Independent of the module: the target's 0-based place when the list is sorted by the blend, ties against it."""
    if target not in top:
        return MISS
    z = lambda x: (x - x.mean()) / (x.std() + 1e-9)  # noqa: E731
    b = WEIGHT * z(seq_scores.astype(np.float64)) + (1 - WEIGHT) * z(ce_scores)
    t = b[list(top).index(target)]
    return int((b >= t).sum()) - 1


def make_run(tmp_path: Path, n_test: int, data_seed: int = 7, start: int = 0):
    tmp_path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(data_seed)
    users = sorted(int(u) for u in np.random.default_rng(SEED).permutation(N_USERS)[start:start + n_test])
    top = np.stack([rng.choice(np.arange(1, N_ITEMS + 1), DEPTH, replace=False) for _ in users])
    inside = rng.random(len(users)) < 0.6
    target = np.where(inside, top[np.arange(len(users)), rng.integers(0, DEPTH, len(users))], 0)
    rank = np.where(inside, np.argmax(top == target[:, None], 1), rng.integers(DEPTH, N_ITEMS, len(users)))
    top_scores = np.sort(rng.normal(size=(len(users), DEPTH)).astype(np.float32), 1)[:, ::-1].copy()
    ce = np.where(inside[:, None], rng.normal(size=(len(users), DEPTH)), 0.0)
    work = tmp_path / "work"
    work.mkdir()
    np.savez_compressed(work / "scores.npz", test_users=np.array(users), test_target=target, test_rank=rank,
                        test_top=top, test_top_scores=top_scores, **{"test_cross-encoder": ce})
    seq = [ndcg(int(r)) for r in rank]
    blend = [ndcg(blend_rank(top[i], target[i], top_scores[i], ce[i])) for i in range(len(users))]
    run = {"command": "run", "sampling": {"seed": SEED, "test_users": n_test, **({"test_start": start} if start else {})},
           "dataset": {"users": N_USERS, "items": N_ITEMS}, "notes": ["run note"],
           "rerank": {"seqrec": {"ndcg@10": float(np.mean(seq))},
                      rgm.BLEND: {"ndcg@10": float(np.mean(blend)), "seqrec_weight": WEIGHT}}}
    (tmp_path / "run.json").write_text(json.dumps(run))
    return run, work, users, seq, blend


def test_parts_and_earlier_runs(tmp_path):
    run, work, users, seq, blend = make_run(tmp_path, n_test=40)
    out = tmp_path / "result.json"
    out.write_text(json.dumps({"command": "old", "sampling": {"seed": SEED, "test_users": 15},
                               "rerank": {"seqrec": {"ndcg@10": 0.1}}, "notes": ["old note"],
                               "earlier_runs": {"older": {"command": "oldest"}}}))
    parts = rgm.merge(tmp_path / "run.json", work, out, "replaced run", ["merge note"], "cmd")["by_sample_part"]
    earlier = set(int(u) for u in np.random.default_rng(SEED).permutation(N_USERS)[:15])
    idx_old = [i for i, u in enumerate(users) if u in earlier]
    idx_new = [i for i, u in enumerate(users) if u not in earlier]
    old, new = parts["earlier test users"], parts["new test users"]
    assert (old["users"], new["users"]) == (15, 25)
    assert old["seqrec ndcg@10"] == pytest.approx(np.mean([seq[i] for i in idx_old]))
    assert new["blend ndcg@10"] == pytest.approx(np.mean([blend[i] for i in idx_new]))
    assert new["blend - seqrec"]["diff"] == pytest.approx(np.mean([blend[i] - seq[i] for i in idx_new]))
    merged = json.loads(out.read_text())
    assert merged["rerank"] == run["rerank"] and merged["merged_by"] == "cmd"
    assert merged["notes"] == ["run note", "merge note"]
    assert merged["earlier_runs"]["older"] == {"command": "oldest"}
    assert merged["earlier_runs"]["replaced run"]["command"] == "old"
    assert "earlier_runs" not in merged["earlier_runs"]["replaced run"]


def test_refuses_a_foreign_work_folder_and_a_larger_earlier_sample(tmp_path):
    run, work, *_ = make_run(tmp_path, n_test=40)
    with np.load(work / "scores.npz") as z:
        scores = {k: z[k] for k in z.files}
    with pytest.raises(SystemExit, match="larger than this run"):
        rgm.sample_parts(run, scores, 60)
    run["rerank"][rgm.BLEND]["seqrec_weight"] = 0.9  # another run's weight: its figure is not reproduced
    with pytest.raises(SystemExit, match="does not reproduce"):
        rgm.sample_parts(run, scores, 15)


def test_same_sample_compares_the_two_blends_per_user(tmp_path):
    """A re-trained cross-encoder on the same test users: no parts to split off, the blends are paired instead."""
    run, work, users, seq, blend = make_run(tmp_path / "new", 40)
    old_run, old_work, old_users, old_seq, old_blend = make_run(tmp_path / "old", 40, data_seed=11)
    out = tmp_path / "result.json"
    out.write_text(json.dumps({**old_run, "command": "old"}))
    with pytest.raises(SystemExit, match="--earlier-work"):
        rgm.merge(tmp_path / "new" / "run.json", work, out, "replaced run", [], "cmd")
    got = rgm.merge(tmp_path / "new" / "run.json", work, out, "replaced run", [], "cmd", earlier_work=old_work)
    assert "by_sample_part" not in got
    where = {u: i for i, u in enumerate(users)}
    paired = [blend[where[u]] - old_blend[i] for i, u in enumerate(old_users)]
    vs = got["vs_replaced"]
    assert vs["users"] == 40 and vs["this - replaced"]["diff"] == pytest.approx(np.mean(paired))
    assert vs["replaced blend ndcg@10"] == pytest.approx(np.mean(old_blend))
    assert vs["seqrec identical"] is False  # the two synthetic runs draw their seqrec ranks independently
    merged = json.loads(out.read_text())
    assert merged["earlier_runs"]["replaced run"]["command"] == "old"


def test_vs_replaced_refuses_users_missing_from_this_run(tmp_path):
    run, work, *_ = make_run(tmp_path / "new", 20)
    old_run, old_work, *_ = make_run(tmp_path / "old", 40, data_seed=11)
    with pytest.raises(SystemExit, match="not in this run"):
        rgm.vs_replaced(run, rgm.load_scores(work), old_run, rgm.load_scores(old_work))


def test_a_fresh_test_sample_is_merged_without_comparing_users(tmp_path):
    """Test users past the replaced run's (--test-start): disjoint, so there are no parts and no paired blends."""
    run, work, *_ = make_run(tmp_path / "new", 30, start=50)
    out = tmp_path / "result.json"
    out.write_text(json.dumps({"command": "old", "sampling": {"seed": SEED, "test_users": 40}, "notes": []}))
    got = rgm.merge(tmp_path / "new" / "run.json", work, out, "replaced run", [], "cmd")
    assert got == {"fresh_test_sample": {"test_start": 50, "replaced_test_users": [0, 40],
                                         "what": "this run's test users are disjoint from the replaced run's"}}
    out.write_text(json.dumps({"command": "old", "sampling": {"seed": SEED, "test_users": 60}, "notes": []}))
    with pytest.raises(SystemExit, match="not a fresh sample"):
        rgm.merge(tmp_path / "new" / "run.json", work, out, "replaced run", [], "cmd")
