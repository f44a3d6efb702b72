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
