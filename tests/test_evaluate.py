import json
import math

import torch

from shoprec import metrics
from shoprec.evaluate import evaluate


def test_ranks_and_metrics_by_hand():
    scores = torch.tensor([[0.0, 0.9, 0.5, 0.7, 0.1]])
    # target 2 (score .5): items 1 (.9) and 3 (.7) are ahead -> rank 2; excluding item 1 -> rank 1
    assert metrics.target_ranks(scores, torch.tensor([2])).tolist() == [2]
    assert metrics.target_ranks(scores, torch.tensor([2]), exclude=[[1]]).tolist() == [1]
    m = metrics.finish(metrics.metric_sums(torch.tensor([0, 1, 30])))
    assert abs(m["hr@10"] - 2 / 3) < 1e-9
    assert abs(m["ndcg@10"] - (1 + 1 / math.log2(3)) / 3) < 1e-9
    assert abs(m["mrr"] - (1 + 0.5 + 1 / 31) / 3) < 1e-9


def test_ties_count_against_the_target():
    scores = torch.ones(1, 6)
    assert metrics.target_ranks(scores, torch.tensor([3])).tolist() == [4]


def test_trained_model_beats_popularity_and_gate(tiny_model, tiny_features, tmp_path):
    first = evaluate(tiny_model, tiny_features, tmp_path / "e1")
    res = first["results"]
    assert first["gate"] and "no champion" in first["reason"]
    assert res["candidate"]["ndcg@10"] > res["popularity"]["ndcg@10"]
    assert (tmp_path / "e1" / "report.html").read_text().count("data:image/png;base64,") == 1
    # The same model as champion: equal scores do not beat it, so the gate keeps the champion.
    second = evaluate(tiny_model, tiny_features, tmp_path / "e2", champion=tiny_model, champion_version="1")
    assert not second["gate"] and "does not beat champion v1" in second["reason"]
    assert second["results"]["champion"]["ndcg@10"] == second["results"]["candidate"]["ndcg@10"]
    # A negative margin lets an equal candidate through.
    third = evaluate(tiny_model, tiny_features, tmp_path / "e3", champion=tiny_model, margin=-0.01)
    assert third["gate"]
    saved = json.loads((tmp_path / "e3" / "evaluation.json").read_text())
    assert saved["gate"] is True and saved["margin"] == -0.01


def test_a_champion_this_version_cannot_load_does_not_block_retraining(tiny_model, tiny_features, tmp_path):
    """A champion saved by an older shoprec (other layer names) is reported as unreadable, not compared, and the
    gate says so instead of failing the pipeline with a state_dict error."""
    import shutil

    from safetensors.torch import load_file, save_file

    old = tmp_path / "old-champion"
    shutil.copytree(tiny_model, old)
    state = load_file(str(old / "model.safetensors"))
    save_file({k.replace("blocks.", "encoder.layers."): v for k, v in state.items()}, str(old / "model.safetensors"))
    ev = evaluate(tiny_model, tiny_features, tmp_path / "eval", champion=old, champion_version="3")
    assert ev["gate"] and "champion" not in ev["results"]
    assert "v3 cannot be loaded by this shoprec version" in ev["reason"] and "Missing key" in ev["champion_unreadable"]
    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert saved["champion_unreadable"] == ev["champion_unreadable"]


def test_a_target_the_model_never_saw_is_a_miss_at_every_cutoff(tiny_model):
    from shoprec import metrics
    from shoprec.seqrec.recommend import Recommender

    rec = Recommender(tiny_model)
    known = rec.item_ids[1]
    ranks = rec.ranks([[known], [known]], ["no-such-item", rec.item_ids[2]])
    assert int(ranks[0]) == metrics.MISS and int(ranks[1]) <= rec.n_items
    assert metrics.metric_sums(ranks[:1])["hr@20"] == 0.0 and metrics.metric_sums(ranks[:1])["ndcg@20"] == 0.0


def test_sharded_evaluation_equals_one_pass_exactly(tiny_model, tiny_features, tiny_shop, tmp_path):
    """Evaluation shards over features built in 3 shopper shards, reduced, give exactly the one-pass figures on
    the one-pod features (rank counts are integers; metrics are computed once from their sums)."""
    from shoprec.data.features import partial_features
    from shoprec.data.ingest import ingest
    from shoprec.data.shards import finish_features, shard_features
    from shoprec.evaluate import evaluate_shard, reduce_evaluation

    ingest(str(tiny_shop), tmp_path / "ingested", progress=False)
    partial_features(tmp_path / "ingested", tmp_path / "partial")
    catalog = tmp_path / "ingested" / "catalog.parquet"
    dirs = [tmp_path / f"shard{k}" for k in range(3)]
    for k, d in enumerate(dirs):
        shard_features([tmp_path / "partial"], catalog, k, 3, d)
    finish_features(dirs, catalog, tmp_path / "sharded")

    one = evaluate(tiny_model, tiny_features, tmp_path / "one", champion=tiny_model, champion_version="4", margin=0.01)
    for shards in (2, 3):
        parts = [evaluate_shard(tiny_model, tmp_path / "sharded", k, shards, tmp_path / f"part{shards}-{k}",
                                champion=tiny_model, champion_version="4") for k in range(shards)]
        assert sum(p["users"] for p in parts) == one["users"] and all(p["users"] for p in parts)
        reduced = reduce_evaluation([tmp_path / f"part{shards}-{k}" for k in range(shards)], tmp_path / f"r{shards}",
                                    margin=0.01, model_dir=tiny_model)
        assert reduced["results"] == one["results"]  # exactly, not approximately
        assert (reduced["gate"], reduced["reason"], reduced["users"]) == (one["gate"], one["reason"], one["users"])
        assert json.loads((tmp_path / f"r{shards}" / "evaluation.json").read_text())["results"] == one["results"]


def test_reduce_refuses_missing_shards_and_mixed_champions(tiny_model, tiny_features, tmp_path):
    import pytest

    from shoprec.evaluate import evaluate_shard, reduce_evaluation

    a = evaluate_shard(tiny_model, tiny_features, 0, 2)
    b = evaluate_shard(tiny_model, tiny_features, 1, 2, champion=tiny_model, champion_version="2")
    with pytest.raises(ValueError, match="not every shard once"):
        reduce_evaluation([a], tmp_path / "x")
    with pytest.raises(ValueError, match="different champions"):
        reduce_evaluation([a, b], tmp_path / "y")


def test_an_evaluation_shard_without_shoppers_counts_nothing(tiny_model, tiny_features):
    from shoprec.evaluate import evaluate_shard

    part = evaluate_shard(tiny_model, tiny_features, 0, 1000)  # more shards than shoppers: the first has none
    assert part["users"] == 0 and part["rank_counts"] == {"candidate": {}, "popularity": {}}
