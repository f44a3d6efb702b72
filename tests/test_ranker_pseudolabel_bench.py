"""Pseudo-labelling, which left the library for its benchmark (benchmarks/ranker_pseudolabel.py rejected it):
the settings, the selection, the unlabelled pool and the teacher/student decision."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_ranker import shop_features, tiny_base, tokenizer  # noqa: F401 (fixtures)

from shoprec.ranker.config import RankerConfig
from shoprec.ranker.train import fit_cross_encoder, shop_groups, split_keys


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("ranker_pseudolabel")


def small_cfg(base_model: str) -> RankerConfig:
    return RankerConfig.from_dict({"base_model": base_model, "max_len": 16, "lora": {"r": 4, "alpha": 8},
                                   "train_bi_encoder": False, "listwise_weight": 0.5, "max_eval_pairs": 200,
                                   "fit": {"epochs": 1, "batch_size": 4, "lr": 2e-3, "progress": False}})


def test_settings_refuse_what_cannot_work(bench):
    with pytest.raises(ValueError):
        bench.PseudoLabelSettings(label="fuzzy")
    with pytest.raises(ValueError):
        bench.PseudoLabelSettings(positive_fraction=0.7, negative_fraction=0.5)
    with pytest.raises(ValueError):
        bench.PseudoLabelSettings(rounds=0)


def test_selection_takes_both_ends_and_shrinks_them_in_proportion(bench):
    pool = [(f"q{i % 3}", f"t{i}") for i in range(20)]
    prob = np.linspace(0.9, 0.0, 20)
    df = bench.select_pseudo_labels(pool, prob, bench.PseudoLabelSettings(positive_fraction=0.1, negative_fraction=0.5))
    assert list(df.loc[df["side"] == "pos", "title"]) == ["t0", "t1"]
    assert set(df.loc[df["side"] == "neg", "title"]) == {f"t{i}" for i in range(10, 20)}
    assert set(df["click"]) == {0.0, 1.0}
    soft = bench.PseudoLabelSettings(positive_fraction=0.1, negative_fraction=0.5, max_pairs=6, label="soft")
    df = bench.select_pseudo_labels(pool, prob, soft)
    assert len(df) == 6 and (df["side"] == "pos").sum() == 1
    np.testing.assert_allclose(df["click"], df["teacher_prob"])


def test_rounds_train_students_on_training_queries_only(bench, tiny_base, tokenizer, tmp_path):  # noqa: F811
    feats = shop_features(tmp_path / "features", n_queries=40)
    cfg = small_cfg(tiny_base)
    data = shop_groups(feats, cfg)
    teacher, t_summary = fit_cross_encoder(cfg, data["train"], data["valid"], tmp_path / "t", tokenizer=tokenizer)
    # min_gain -1: any student beats its teacher, so both rounds keep theirs (round 1's teacher is round 0's student)
    s = bench.PseudoLabelSettings(enabled=True, pool_per_query=6, max_pairs=60, rounds=2, min_gain=-1.0, label="soft")
    model, summary, rec = bench.pseudo_label_rounds(cfg, s, teacher, t_summary, data["train"], data["valid"], feats,
                                                    tmp_path / "w", tokenizer=tokenizer)
    assert rec["kept"] == "student" and [r["kept"] for r in rec["rounds"]] == ["student", "student"]
    r0, r1 = rec["rounds"]
    assert all(0 < r["pseudo_pairs"] <= 60 for r in rec["rounds"])
    assert r0["teacher_valid"] == t_summary["best_auc"] and r1["teacher_valid"] == pytest.approx(r0["student_valid"])
    assert summary["best_auc"] == pytest.approx(r1["student_valid"]) and model is not teacher
    labels, sp = rec["labels"], pd.read_parquet(feats / "search_pairs.parquet")
    split = split_keys(list(sp["query"]), cfg.seed, cfg.valid_fraction, cfg.test_fraction)
    assert len(labels) == r0["pseudo_pairs"] + r1["pseudo_pairs"] and set(labels["round"]) == {0, 1}
    assert {split[q] for q in labels["query"]} == {"train"}
    assert not set(zip(labels["query"], labels["title"])) & set(zip(sp["query"], sp["title"]))
    pool = bench.unlabelled_pool(feats, cfg, 1, s)
    assert {split[q] for q, _ in pool} == {"train"} and 0 < len(pool) <= 6 * sum(v == "train" for v in split.values())


def test_the_teacher_stays_unless_validation_improves(bench, tiny_base, tokenizer, tmp_path):  # noqa: F811
    feats = shop_features(tmp_path / "features", n_queries=40)
    cfg = small_cfg(tiny_base)
    data = shop_groups(feats, cfg)
    torch.manual_seed(cfg.seed)
    teacher, t_summary = fit_cross_encoder(cfg, data["train"], data["valid"], tmp_path / "t", tokenizer=tokenizer)
    s = bench.PseudoLabelSettings(enabled=True, pool_per_query=6, max_pairs=60, min_gain=2.0)  # no AUC gain exceeds 2
    model, summary, rec = bench.pseudo_label_rounds(cfg, s, teacher, t_summary, data["train"], data["valid"], feats,
                                                    tmp_path / "w", tokenizer=tokenizer, keep_students=True)
    assert model is teacher and summary is t_summary and rec["kept"] == "teacher"
    (r,) = rec["rounds"]
    assert r["kept"] == "teacher" and r["teacher_valid"] == t_summary["best_auc"] and r["student_valid"] is not None
    assert len(rec["students"]) == 1 and rec["students"][0] is not teacher
