"""Trainer: length-grouped batches, resume after a restart, test metrics from the best checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from shoprec.data.features import load_sequences
from shoprec.seqrec.model import load_model
from shoprec.seqrec.train import TrainConfig, evaluate_split, length_grouped_batches, load_recipe, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parent.parent
TINY = {"batch_size": 32, "lr": 3e-3, "patience": 50, "threads": 1,
        "model": {"objective": "sasrec", "loss": "sampled_softmax", "n_negatives": 32, "max_len": 20,
                  "d_model": 32, "n_heads": 2, "n_layers": 1, "emb_norm": True}}


def test_length_grouped_batches_use_every_index_once():
    lengths = [int(x) for x in torch.randint(1, 60, (1000,))]
    idx = torch.randperm(1000).tolist()[:997]
    batches = length_grouped_batches(idx, lengths, 32, torch.Generator().manual_seed(0), window=5)
    assert sorted(i for b in batches for i in b) == sorted(idx)
    assert all(len(b) <= 32 for b in batches)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 20  # grouped: far less than the ~58 of random batches


def test_recipes_load(tmp_path):
    from shoprec.seqrec.train import merge_overrides, recipe_members

    for path in sorted((REPO / "configs" / "seqrec").glob("*.yaml")):
        members = recipe_members(path)
        if members is None:
            assert isinstance(load_recipe(path), TrainConfig), path
            continue
        base = yaml.safe_load(path.read_text())
        base.pop("members")
        (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
        for m in members:
            assert isinstance(load_recipe(tmp_path / "base.yaml", **merge_overrides(m)), TrainConfig), (path, m)
    cfg = load_recipe(REPO / "configs" / "seqrec" / "medium.yaml", epochs=3, model={"dropout": 0.1})
    assert cfg.epochs == 3 and cfg.model.dropout == 0.1 and cfg.model.objective == "sasrec"


def test_resume_continues_and_test_comes_from_best_checkpoint(tiny_features, tmp_path):
    out = tmp_path / "m"
    first = train(tiny_features, out, TrainConfig.from_dict({**TINY, "epochs": 2}), progress=False)
    assert first["epochs_run"] == 2 and len(first["history"]) == 2
    # a restart with a larger epoch budget picks up after epoch 1 instead of starting over
    second = train(tiny_features, out, TrainConfig.from_dict({**TINY, "epochs": 4}), progress=False)
    assert [h["epoch"] for h in second["history"]] == [0, 1, 2, 3]
    assert second["history"][:2] == first["history"]
    best = max(second["history"], key=lambda h: h["valid_ndcg@10"])
    assert second["best_epoch"] == best["epoch"]
    assert abs(second["valid"]["ndcg@10"] - best["valid_ndcg@10"]) < 1e-9
    _, seqs = load_sequences(tiny_features)
    from shoprec import metrics
    test = metrics.finish(evaluate_split(load_model(out), seqs, "test", 512, "cpu"))
    assert abs(test["ndcg@10"] - second["test"]["ndcg@10"]) < 1e-9
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test"] == second["test"] and saved["train_seconds"] > 0


def test_item_attributes_train_from_the_features_and_are_exported(tiny_features, tmp_path):
    from shoprec.data.features import load_items
    from shoprec.seqrec.train import item_attribute_table

    items = load_items(tiny_features)
    table, vocab = item_attribute_table(items, len(items))
    assert table.shape == (len(items) + 2, 2) and not table[0].any() and not table[-1].any()
    row = items.iloc[3]
    assert [vocab[k - 1] for k in table[int(row["idx"])].tolist()] == list(row["attributes"])
    cfg = TrainConfig.from_dict({**TINY, "epochs": 1, "model": {**TINY["model"], "item_attributes": True}})
    summary = train(tiny_features, tmp_path / "m", cfg, progress=False)
    model = load_model(tmp_path / "m")
    assert model.cfg.n_attributes == len(vocab) and torch.equal(model.item_attrs, table)
    assert summary["valid"]["count"] > 0
    with pytest.raises(ValueError, match="no 'attributes' column"):
        item_attribute_table(items.drop(columns="attributes"), len(items))


def test_linear_schedule_decays_to_zero_over_the_epoch_budget(tiny_features, tmp_path):
    cfg = TrainConfig.from_dict({**TINY, "epochs": 2, "lr_schedule": "linear", "warmup_ratio": 0.1})
    train(tiny_features, tmp_path / "m", cfg, progress=False)
    sched = torch.load(tmp_path / "m" / "checkpoints" / "last.pt", weights_only=False)["sched"]
    assert sched["_last_lr"][0] == pytest.approx(0.0, abs=1e-12) and sched["base_lrs"][0] == TINY["lr"]
    constant = train(tiny_features, tmp_path / "c", TrainConfig.from_dict({**TINY, "epochs": 1}), progress=False)
    assert constant["epochs_run"] == 1
    assert torch.load(tmp_path / "c" / "checkpoints" / "last.pt", weights_only=False)["sched"]["_last_lr"][0] == TINY["lr"]
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="cosine")


def test_configs_saved_before_options_left_still_load_but_a_used_one_is_refused():
    from shoprec.fit_config import FitConfig
    from shoprec.ranker.config import RankerConfig
    from shoprec.seqrec.model import SeqRecConfig

    assert SeqRecConfig.from_dict({"d_model": 32, "item_dropout": 0.0, "label_smoothing": 0.0}).d_model == 32
    assert TrainConfig.from_dict({"epochs": 2, "ema_decay": 0.0}).epochs == 2
    assert FitConfig.from_dict({"epochs": 2, "ema_decay": 0.0, "find_unused_parameters": False}).epochs == 2
    assert RankerConfig.from_dict({"max_len": 16, "pseudo_label": {"enabled": False, "rounds": 1}}).max_len == 16
    for build, d in ((SeqRecConfig.from_dict, {"item_dropout": 0.1}), (TrainConfig.from_dict, {"ema_decay": 0.999}),
                     (RankerConfig.from_dict, {"pseudo_label": {"enabled": True}})):
        with pytest.raises(ValueError, match="no longer a setting"):
            build(d)
    with pytest.raises(ValueError, match="unknown SeqRecConfig field"):
        SeqRecConfig.from_dict({"d_modle": 32})


def test_recbole_protocol_ranks_the_history_too():
    """With history removed a repeat target is a miss; RecBole's protocol (history kept) ranks it like any item."""
    from shoprec import metrics
    from shoprec.seqrec.model import SeqRec, SeqRecConfig

    torch.manual_seed(0)
    model = SeqRec(SeqRecConfig(n_items=6, max_len=5, d_model=8, n_heads=1, n_layers=1, dropout=0.0))
    seqs = [[1, 2, 3, 2], [4, 5, 6, 1]]  # test targets: 2 (seen before: a repeat) and 1 (new)
    removed = metrics.finish(evaluate_split(model, seqs, "test", 8, "cpu"))
    kept = metrics.finish(evaluate_split(model, seqs, "test", 8, "cpu", remove_history=False))
    assert removed["hr@20"] == 0.5  # the repeat cannot be hit, the new item always is (7 candidates)
    assert kept["hr@20"] == 1.0
