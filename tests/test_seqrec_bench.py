"""benchmarks/seqrec.py --reuse: a finished run is reused only if it was trained with the recipe's model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("seqrec")


def finished_run(folder: Path, model: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"config": {"model": model}, "test": {"ndcg@10": 0.05}}))
    return folder


def test_reuse_returns_a_run_of_the_same_recipe(bench, tmp_path):
    recipe = REPO / "configs" / "seqrec" / "medium.yaml"
    model = {**yaml.safe_load(recipe.read_text())["model"], "n_items": 10}
    run = finished_run(tmp_path / "run", model)
    assert bench.train_recipe(tmp_path, run, recipe, 1, True, {})["test"]["ndcg@10"] == 0.05


def test_reuse_refuses_a_run_of_another_model_config(bench, tmp_path):
    recipe = REPO / "configs" / "seqrec" / "medium.yaml"
    model = {**yaml.safe_load(recipe.read_text())["model"], "d_model": 8}
    run = finished_run(tmp_path / "run", model)
    with pytest.raises(SystemExit, match="d_model"):
        bench.train_recipe(tmp_path, run, recipe, 1, True, {})
    # an override that the run was trained with makes it match again
    assert bench.train_recipe(tmp_path, run, recipe, 1, True, {"model": {"d_model": 8}})


def test_reuse_checks_each_member_of_an_ensemble_recipe(bench, tmp_path):
    recipe = REPO / "configs" / "seqrec" / "medium-ensemble.yaml"
    model = yaml.safe_load(recipe.read_text())["model"]
    members = [{"model": {**model, **m.get("model", {})}} for m in yaml.safe_load(recipe.read_text())["members"]]
    run = tmp_path / "ens"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"config": {"members": members}, "test": {"ndcg@10": 0.06}}))
    assert bench.train_recipe(tmp_path, run, recipe, 1, True, {})["test"]["ndcg@10"] == 0.06
    members[2]["model"]["id_dropout"] = 0.0  # the third member trained without its id_dropout
    (run / "metrics.json").write_text(json.dumps({"config": {"members": members}, "test": {"ndcg@10": 0.06}}))
    with pytest.raises(SystemExit, match="id_dropout"):
        bench.train_recipe(tmp_path, run, recipe, 1, True, {})
    (run / "metrics.json").write_text(json.dumps({"config": {"members": members[:2]}, "test": {"ndcg@10": 0.06}}))
    with pytest.raises(SystemExit, match="2 member"):
        bench.train_recipe(tmp_path, run, recipe, 1, True, {})


def test_prepare_brings_the_attribute_file_and_remakes_features_without_attributes(bench, tmp_path):
    import pyarrow.parquet as pq

    from shoprec.data.features import load_items

    data = tmp_path / "Tiny.txt"
    data.write_text("1 5 3 9 4\n2 3 5 7 9\n3 7 5 3\n")
    (tmp_path / "Tiny_item2attributes.json").write_text(json.dumps({"5": [1, 2], "3": [2]}))
    work = tmp_path / "work"
    feats = bench.prepare(data, work)
    tokens = dict(zip(load_items(feats)["item_id"], load_items(feats)["attributes"].map(list)))
    assert tokens["5"] == ["attr=a1", "attr=a2"] and tokens["9"] == []
    # features made before items had attributes are made again, from the same file
    items = pq.read_table(feats / "items.parquet").drop(["attributes"])
    pq.write_table(items, feats / "items.parquet")
    bench.prepare(data, work)
    assert "attributes" in load_items(feats)


def recbole_run(curve: list[float], test_ndcg: float, stopped_by: str) -> dict:
    metrics = {k: test_ndcg for k in ("ndcg@5", "ndcg@10", "ndcg@20", "hr@5", "hr@10", "hr@20", "mrr")}
    return {"model": "SASRec", "best_epoch": curve.index(max(curve)), "epochs_run": len(curve),
            "stopped_by": stopped_by, "budget_minutes": 120.0, "budget_clock": "wall", "threads": 1,
            "parameters": 1, "train_seconds": 1.0, "train_cpu_seconds": 1.0, "wall_seconds": 1.0,
            "epoch_seconds_median": 1.0, "test_shoprec_protocol": metrics, "test_recbole_protocol": {"ndcg@10": 0.03},
            "curve": [{"epoch": i, "valid_ndcg@10": v} for i, v in enumerate(curve)]}


def test_merge_recbole_long_compares_converged_bests(bench, tmp_path):
    result = tmp_path / "seqrec-beauty.json"
    result.write_text(json.dumps({"models": {"shoprec-best": {"ndcg@10": 0.050},
                                             "shoprec-ensemble": {"ndcg@10": 0.057}}, "peers": {"recbole-sasrec": {}}}))
    levelled = tmp_path / "long.json"
    levelled.write_text(json.dumps(recbole_run([0.01, 0.03, 0.04, *[0.039] * 10], 0.045, "early stopping")))
    cmp = bench.merge_recbole_long(result, levelled, "recbole_peer.py ...")
    assert cmp["recbole_converged"] and cmp["recbole_best_epoch"] == 2 and cmp["recbole_epochs_after_best"] == 10
    assert cmp["shoprec-best"]["above"] and cmp["shoprec-best"]["minus_recbole"] == pytest.approx(0.005)
    saved = json.loads(result.read_text())
    assert set(saved["peers"]) == {"recbole-sasrec", "recbole-sasrec-long"}
    assert saved["peers"]["recbole-sasrec-long"]["command"] == "recbole_peer.py ..."
    # a curve still rising at the budget is not converged, and a stronger peer is not "below"
    rising = tmp_path / "rising.json"
    rising.write_text(json.dumps(recbole_run([0.01, 0.02, 0.03, 0.04, 0.05, 0.06], 0.055, "budget")))
    cmp = bench.merge_recbole_long(result, rising, "")
    assert not cmp["recbole_converged"] and cmp["recbole_valid_ndcg@10_gain_over_last_5_epochs"] == pytest.approx(0.05)
    assert not cmp["shoprec-best"]["above"] and cmp["shoprec-ensemble"]["above"]
    bert = tmp_path / "bert.json"
    bert.write_text(json.dumps({**recbole_run([0.01], 0.01, "budget"), "model": "BERT4Rec"}))
    with pytest.raises(SystemExit, match="SASRec"):
        bench.merge_recbole_long(result, bert, "")


def test_merge_only_adds_a_sasrecf_peer_and_bsarecs_published_figures(bench, tmp_path):
    result = tmp_path / "seqrec-beauty.json"
    result.write_text(json.dumps({"models": {"shoprec-best": {"ndcg@10": 0.0559}}, "notes": ["kept"]}))
    run = tmp_path / "SASRecF.json"
    run.write_text(json.dumps({**recbole_run([0.01, 0.05, *[0.049] * 10], 0.052, "early stopping"), "model": "SASRecF",
                               "config": {"selected_features": ["attributes"], "pooling_mode": "mean"}}))
    done = bench.merge_only(result, [], [f"recbole-sasrecf={run}"], {"recbole-sasrecf": "recbole_peer.py --model SASRecF"},
                            [], ["a note"], "python benchmarks/seqrec.py --merge-only ...")
    assert done["peers"] == ["recbole-sasrecf"]
    saved = json.loads(result.read_text())
    peer = saved["peers"]["recbole-sasrecf"]
    assert peer["model"] == "SASRecF" and peer["recbole_config"]["selected_features"] == ["attributes"]
    assert peer["ndcg@10"] == 0.052 and peer["command"] == "recbole_peer.py --model SASRecF"
    cmp = saved["comparison"]["converged_best_vs_recbole-sasrecf"]
    assert cmp["recbole_converged"] and cmp["shoprec-best"]["above"]
    assert saved["notes"] == ["kept", "a note"] and saved["merge_commands"] == ["python benchmarks/seqrec.py --merge-only ..."]
    assert saved["published"]["BSARec"]["ndcg@10"] == 0.0611 and "BSARec_Beauty_best.log" in saved["published"]["BSARec"]["source"]
    with pytest.raises(SystemExit, match="--seed-mean"):
        bench.merge_only(result, [], [], {}, ["m=shoprec-best,missing"], [], "")
    assert "cpu_seconds_to_best" not in peer  # the curve kept no CPU seconds
    # a run that kept its CPU seconds: the total and the cost up to its best epoch go in the row
    timed = tmp_path / "timed.json"
    timed.write_text(json.dumps({**recbole_run([0.01, 0.05, 0.04], 0.05, "deadline"), "model": "SASRecF",
                                 "cpu_seconds": 900.0, "deadline": 1.0e9,
                                 "curve": [{"epoch": i, "valid_ndcg@10": v, "cpu_seconds_total": 300.0 * (i + 1)}
                                           for i, v in enumerate([0.01, 0.05, 0.04])]}))
    bench.merge_only(result, [], [f"timed={timed}"], {}, [], [], "")
    timed_peer = json.loads(result.read_text())["peers"]["timed"]
    assert (timed_peer["cpu_seconds"], timed_peer["cpu_seconds_to_best"], timed_peer["stopped_by"]) == (900.0, 600.0, "deadline")
