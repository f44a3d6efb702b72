"""The MLflow registry against a real ``mlflow server``: idempotent register, the gate, promote and rollback."""

import json
from pathlib import Path

import pytest

from shoprec.registry import versions as registry


def write_evaluation(folder: Path, gate: bool, ndcg: float = 0.3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    results = {"candidate": {"ndcg@10": ndcg, "hr@10": ndcg * 2, "mrr@10": ndcg * 0.8, "count": 100},
               "popularity": {"ndcg@10": 0.05, "hr@10": 0.1, "mrr@10": 0.04, "count": 100}}
    reason = f"candidate ndcg@10 {ndcg:.4f} {'beats' if gate else 'does not beat'} champion"
    (folder / "evaluation.json").write_text(json.dumps({"gate": gate, "reason": reason, "results": results}))
    (folder / "report.md").write_text(f"# {reason}\n")
    return folder


@pytest.fixture
def store(mlflow_server, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("SHOPREC_USER", "tester")
    return tmp_path


def test_register_twice_for_one_kfp_run_makes_one_version(store, tiny_model):
    ev = write_evaluation(store / "ev", gate=True)
    first = registry.register(tiny_model, ev, "reg-idem", kfp_run_id="kfp-run-1", data_snapshot={"partitions": 5})
    again = registry.register(tiny_model, ev, "reg-idem", kfp_run_id="kfp-run-1", data_snapshot={"partitions": 5})
    assert first["version"] == again["version"] == "1" and first["run_id"] == again["run_id"]
    assert again["decision"] == "already registered" and again["gate_passed"]
    # register names the challenger only: @champion moves after the canary (shoprec.pipeline.deploy.promote).
    assert registry.version_by_alias("reg-idem", "challenger").version == "1"
    assert registry.version_by_alias("reg-idem", "champion") is None
    c = registry.client()
    assert len(c.search_model_versions("name='reg-idem'")) == 1
    exp = registry.experiment_id(c)
    assert len(c.search_runs([exp], filter_string="tags.`shoprec.kfp_run_id` = 'kfp-run-1'")) == 1

    # What the run holds: params, curves per epoch, evaluation, tags, and the version's tags.
    run = c.get_run(first["run_id"])
    assert run.data.tags["shoprec.kfp_run_id"] == "kfp-run-1"
    assert run.data.tags["shoprec.parent_champion"] == "none"
    assert json.loads(run.data.tags["shoprec.data_snapshot"]) == {"partitions": 5}
    assert len(run.data.tags["shoprec.git_commit"]) >= 7
    assert run.data.params["model.d_model"] == "32"
    epochs = json.loads((tiny_model / "metrics.json").read_text())["history"]
    curve = c.get_metric_history(first["run_id"], "valid_ndcg_at_10")
    assert [m.step for m in curve] == [row["epoch"] for row in epochs] and len(curve) > 1
    assert run.data.metrics["candidate_ndcg_at_10"] == pytest.approx(0.3)
    assert "system/cpu_utilization_percentage" in run.data.metrics  # log_system_metrics works offline
    assert {a.path for a in c.list_artifacts(first["run_id"], "evaluation")} >= {"evaluation/evaluation.json"}
    mv = c.get_model_version("reg-idem", "1")
    assert mv.tags["shoprec.gate"] == "True" and mv.tags["shoprec.kfp_run_id"] == "kfp-run-1"
    assert json.loads(mv.tags["shoprec.evaluation"])["ndcg@10"] == pytest.approx(0.3)


def test_register_moves_only_the_challenger(store, tiny_model):
    v1 = registry.register(tiny_model, write_evaluation(store / "a", gate=True), "reg-gate", kfp_run_id="g-1")
    assert v1["gate_passed"] and v1["decision"] == "v1 is challenger and passed its gate (no champion yet): next, a canary"
    assert registry.version_by_alias("reg-gate", "champion") is None
    registry.promote("reg-gate", "1", reason="canary passed")
    v2 = registry.register(tiny_model, write_evaluation(store / "b", gate=False, ndcg=0.1), "reg-gate",
                           kfp_run_id="g-2")
    assert not v2["gate_passed"]
    assert registry.version_by_alias("reg-gate", "champion").version == "1"
    assert registry.version_by_alias("reg-gate", "challenger").version == "2"
    assert v2["decision"] == "v2 is challenger and failed its gate; champion v1 stays"
    run2 = registry.client().get_run(v2["run_id"])
    assert run2.data.tags["shoprec.parent_champion"] == "1"
    moves = [(e["alias"], e["version"], e["previous"]) for e in registry.alias_history("reg-gate")]
    assert moves == [("challenger", "1", None), ("champion", "1", None), ("challenger", "2", "1")]
    v3 = registry.register(tiny_model, write_evaluation(store / "c", gate=True, ndcg=0.5), "reg-gate",
                           kfp_run_id="g-3")
    assert v3["gate_passed"] and registry.version_by_alias("reg-gate", "champion").version == "1"
    assert registry.version_by_alias("reg-gate", "challenger").version == "3"

    # By hand: a version that failed its gate is refused unless forced.
    with pytest.raises(registry.RegistryError, match="reg-gate v2 failed its evaluation gate"):
        registry.promote("reg-gate", "2")
    assert registry.version_by_alias("reg-gate", "champion").version == "1"
    with pytest.raises(registry.RegistryError, match="model 'reg-gate' has no version '9'"):
        registry.promote("reg-gate", "9")
    entry = registry.promote("reg-gate", "2", force=True, reason="hotfix")
    assert entry["previous"] == "1" and registry.version_by_alias("reg-gate", "champion").version == "2"
    back = registry.rollback("reg-gate")
    assert back["version"] == "1" and back["action"] == "rollback"
    with pytest.raises(registry.RegistryError, match="no earlier champion than v1"):
        registry.rollback("reg-gate")
    assert registry.version_by_alias("reg-gate", "champion").version == "1"


def test_rollback_walks_back_through_several_champions(store, tiny_model):
    for i in (1, 2, 3):
        registry.register(tiny_model, write_evaluation(store / f"e{i}", gate=True), "reg-walk", kfp_run_id=f"w-{i}")
        registry.promote("reg-walk", str(i), reason="canary passed")
    assert registry.champion_lineage("reg-walk") == ["1", "2", "3"]
    assert registry.rollback("reg-walk")["version"] == "2"
    assert registry.rollback("reg-walk")["version"] == "1"
    registry.promote("reg-walk", "3", reason="fixed")
    assert registry.champion_lineage("reg-walk") == ["1", "3"]
    assert registry.rollback("reg-walk")["version"] == "1"


def test_unknown_model_is_a_clear_error(store):
    with pytest.raises(registry.RegistryError, match="no registered model 'nope-model'"):
        registry.list_versions("nope-model")
    with pytest.raises(registry.RegistryError, match="no registered model 'nope-model'"):
        registry.rollback("nope-model")
