"""Warm start: the night's model starts from the champion's weights, matched by item id, not by index."""

import json
import shutil

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from shoprec.seqrec.model import SeqRec, SeqRecConfig
from shoprec.seqrec.warm_start import WarmStartRefused, warm_start


def _champion(tiny_model):
    cfg = SeqRecConfig.from_dict(json.loads((tiny_model / "config.json").read_text())["model"])
    return cfg, load_file(str(tiny_model / "model.safetensors")), pd.read_parquet(tiny_model / "items.parquet")


def test_known_items_keep_their_rows_new_items_start_fresh(tiny_model):
    cfg, old, old_items = _champion(tiny_model)
    # tonight: the first 5 items left the catalogue, 3 new ones arrived, and the indices shifted
    kept = old_items.iloc[5:]
    new_ids = ["new-a", "new-b", "new-c"]
    items = pd.DataFrame({"item_id": new_ids + list(kept["item_id"])})
    items["idx"] = range(1, len(items) + 1)
    torch.manual_seed(1)
    model = SeqRec(SeqRecConfig.from_dict({**cfg.to_dict(), "n_items": len(items)}))
    fresh = model.item_emb.weight.detach().clone()
    report = warm_start(model, items, tiny_model)
    assert (report["items_kept"], report["items_new"], report["items_dropped"]) == (len(kept), 3, 5)
    emb = model.item_emb.weight.detach()
    old_row = dict(zip(old_items["item_id"], old_items["idx"]))
    for item_id, idx in zip(items["item_id"], items["idx"]):
        want = fresh[idx] if item_id in new_ids else old["item_emb.weight"][old_row[item_id]]
        assert torch.equal(emb[idx], want), item_id
    assert torch.equal(emb[-1], old["item_emb.weight"][-1])  # [MASK]
    for name, value in model.state_dict().items():
        if name != "item_emb.weight":
            assert torch.equal(value, old[name]), name


def test_another_architecture_is_refused_with_the_fields(tiny_model):
    cfg, _, items = _champion(tiny_model)
    wider = SeqRec(SeqRecConfig.from_dict({**cfg.to_dict(), "d_model": cfg.d_model * 2}))
    with pytest.raises(WarmStartRefused, match=f"d_model {cfg.d_model} -> {cfg.d_model * 2}"):
        warm_start(wider, items, tiny_model)


def test_training_from_the_champion_starts_where_it_ended(tiny_model, tiny_features, tmp_path):
    """With a zero learning rate nothing moves, so the warm-started model scores exactly as the champion."""
    from shoprec.seqrec.train import TrainConfig, train

    cfg, _, _ = _champion(tiny_model)
    champion_valid = json.loads((tiny_model / "metrics.json").read_text())["valid"]
    run = TrainConfig(epochs=1, batch_size=32, lr=0.0, patience=1, warm_start=str(tiny_model), model=cfg)
    summary = train(tiny_features, tmp_path / "warm", run, progress=False)
    assert summary["warm_start"]["used"] and summary["warm_start"]["items_new"] == 0
    assert summary["valid"]["ndcg@10"] == pytest.approx(champion_valid["ndcg@10"], abs=1e-6)
    cold = train(tiny_features, tmp_path / "cold", TrainConfig(epochs=1, batch_size=32, lr=0.0, patience=1, model=cfg),
                 progress=False)
    assert "warm_start" not in cold and cold["valid"]["ndcg@10"] < champion_valid["ndcg@10"]
    shutil.rmtree(tmp_path)
