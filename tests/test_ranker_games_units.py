"""The pieces of benchmarks/ranker_games.py on tiny inputs: a target outside the re-ranked list is a miss (not rank
n_items, which fell inside a cut-off on a small catalogue), disjoint seeded samples, the blend weight chosen on
valid, the test table and its notes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import ranker_games as rg  # noqa: E402

from shoprec.metrics import MISS  # noqa: E402


def lists(top, target):
    return {"top": np.array(top), "target": np.array(target)}


def test_a_target_outside_the_list_is_a_miss_even_on_a_tiny_catalogue():
    # 5 items in all, lists of 3: the second user's target (5) is not in its list
    c = lists([[1, 2, 3], [1, 2, 3]], [2, 5])
    ranks = rg.rerank_ranks(c, np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]]))
    assert ranks.tolist() == [0, MISS]
    assert rg.per_user(ranks).tolist() == [1.0, 0.0]
    m = rg.summary(ranks)
    assert m["hr@5"] == m["hr@10"] == m["hr@20"] == 0.5  # rank n_items (5) would have been a hit at 10 and 20
    assert m["ndcg@10"] == pytest.approx(0.5) and m["mrr@10"] == pytest.approx(0.5)


def test_ties_count_against_the_target():
    c = lists([[4, 7, 9]], [7])
    assert rg.rerank_ranks(c, np.array([[1.0, 1.0, 1.0]])).tolist() == [2]
    assert rg.rerank_ranks(c, np.array([[0.0, 1.0, 1.0]])).tolist() == [1]


def test_samples_are_disjoint_and_training_users_do_not_move_with_the_sample_sizes():
    test, valid, train = rg.sample_users(300, 0, 50, 20, 40)
    assert len(test) == 50 and len(valid) == 20 and len(train) == 40
    assert not (set(test) & set(valid) or set(test) & set(train) or set(valid) & set(train))
    bigger_test, _, same_train = rg.sample_users(300, 0, 80, 20, 40)
    assert set(test) <= set(bigger_test) and same_train == train
    assert rg.sample_users(9, 0, 50, 50, 50)[0] == rg.sample_users(9, 0, 3, 3, 3)[0]  # capped at a third


def test_a_test_start_gives_a_fresh_sample_disjoint_from_the_earlier_test_and_valid_users():
    test, valid, train = rg.sample_users(300, 0, 50, 20, 40)
    fresh, fresh_valid, same_train = rg.sample_users(300, 0, 50, 20, 40, test_start=70)
    assert not set(fresh) & (set(test) | set(valid)) and not set(fresh_valid) & (set(test) | set(valid))
    assert same_train == train and not set(fresh) & set(train) and len(fresh) == 50
    assert not set(rg.sample_users(300, 0, 50, 20, 300, test_start=70)[2]) & set(fresh)  # training users shrink
    with pytest.raises(SystemExit, match="no room"):
        rg.sample_users(300, 0, 50, 20, 40, test_start=280)


def test_blend_weight_is_chosen_on_valid_ties_to_the_larger_seqrec_weight():
    c = lists([[1, 2], [3, 4]], [1, 3])
    c["top_scores"] = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)  # seqrec puts both targets first
    ce = np.array([[0.0, 1.0], [0.0, 1.0]])  # the cross-encoder would put them second
    curves, weights = rg.choose_blend_weights(c, {("ce", "valid"): ce}, ["ce"])
    assert weights == {"ce": 1.0} and curves["ce"]["1.00"] == 1.0 and curves["ce"]["0.00"] < 1.0
    ce_right = np.array([[1.0, 0.0], [1.0, 0.0]])  # every weight ties: the larger seqrec weight
    assert rg.choose_blend_weights(c, {("ce", "valid"): ce_right}, ["ce"])[1] == {"ce": 1.0}


def test_test_table_and_notes():
    rng = np.random.default_rng(0)
    seq = rng.integers(0, 60, 200)
    better = np.where(rng.random(200) < 0.5, np.maximum(seq - 5, 0), seq)
    ranks = {"seqrec": seq, "popularity": rng.integers(0, 500, 200), rg.blend_name("cross-encoder"): better}
    models, sig = rg.table_of_test_figures(ranks, {"cross-encoder": 0.6}, {"rank": seq})
    assert models[rg.blend_name("cross-encoder")]["seqrec_weight"] == 0.6
    assert models["seqrec"]["hr@50"] == pytest.approx(np.mean(seq < 50))
    gain = sig[f"{rg.blend_name('cross-encoder')} - seqrec (ndcg@10)"]
    assert gain["diff"] > 0 and gain["users"] == 200 and set(sig) == {
        f"{k} - seqrec (ndcg@10)" for k in ranks if k != "seqrec"}
    a = argparse.Namespace(seqrec_epochs=0, seqrec_minutes=40.0)
    auc = {"cross-encoder": {"cross-encoder": {"auc_per_user_mean": 0.6}, "seqrec": {"auc_per_user_mean": 0.7}}}
    notes = rg.result_notes(gain, 0.1, auc, models, {"best_epoch": 5, "epochs_run": 9}, a)
    assert notes[0].startswith(f"Blend vs seqrec NDCG@10 on the test users: {gain['relative']:+.1%}")
    assert "+10.0%" in notes[0] and "0.600" in notes[1] and "minutes 40.0" in notes[4]


def test_arguments_default_to_the_documented_recipe():
    a = rg.parse_args([])
    assert (a.train_users, a.test_users, a.lr, a.ce_epochs, a.max_len, a.history_titles) == (4000, 3000, 5e-4, 2, 48, 3)
    assert rg.lora_layers(a) == [3, 4, 5] and rg.lora_layers(rg.parse_args(["--lora-layers", ""])) == []
