"""A registered version carries a signature, an input example, requirements that install, its build and a card."""

import json
import shutil

import pytest
import yaml

from shoprec.registry import versions as registry


@pytest.fixture
def registered(tiny_model, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SHOPREC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHOPREC_GIT_COMMIT", "abc123")
    monkeypatch.setenv("SHOPREC_IMAGE_REGISTRY", "reg.example/team")
    monkeypatch.setenv("SHOPREC_IMAGE_TAG", "0.1.0-abc123")
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / "evaluation.json").write_text(json.dumps({"gate": True, "reason": "beats champion v3", "results": {
        "candidate": {"ndcg@10": 0.31, "hr@10": 0.5, "mrr@10": 0.25},
        "champion": {"ndcg@10": 0.29, "hr@10": 0.48, "mrr@10": 0.24}}}))
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    snapshot = {"partitions": {"2026-11-05": 400, "2026-11-01": 434, "2026-11-02": 400}, "rows_in": 1234,
                "quarantined": 5}  # as merge-ingest writes it
    version = registry.register(model, evaluation, "mr-seqrec", kfp_run_id="run-7", data_snapshot=snapshot)["version"]
    return version, tmp_path


def test_version_has_build_tags_and_a_card(registered):
    version, _ = registered
    c = registry.client()
    mv = c.get_model_version("mr-seqrec", version)
    assert mv.tags["shoprec.git_commit"] == "abc123" and mv.tags["shoprec.image"] == "reg.example/team/shoprec:0.1.0-abc123"
    run = c.get_run(mv.run_id)
    assert run.data.tags["shoprec.git_commit"] == "abc123" and run.data.tags["shoprec.image"] == mv.tags["shoprec.image"]
    card = mv.description
    assert card.startswith(f"# mr-seqrec v{version} (seqrec)")
    assert "2026-11-01 .. 2026-11-05 (3 days)" in card and "rows in: 1234" in card
    assert "| candidate | 0.3100 | 0.5000 | 0.2500 |" in card and "| champion | 0.2900 |" in card
    assert "beats champion v3" in card and "`abc123`" in card
    import mlflow

    local = mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="model_card.md")
    assert open(local).read() == card


def test_pyfunc_has_signature_example_and_installable_requirements(registered, tmp_path):
    import mlflow

    version, _ = registered
    path = mlflow.artifacts.download_artifacts(f"models:/mr-seqrec/{version}", dst_path=str(tmp_path / "dl"))
    mlmodel = yaml.safe_load(open(f"{path}/MLmodel"))
    inputs = json.loads(mlmodel["signature"]["inputs"])
    assert {i["name"] for i in inputs} == {"history", "user_id"}
    assert json.loads(mlmodel["signature"]["params"])[0]["name"] == "k"
    requirements = open(f"{path}/requirements.txt").read()
    assert "shoprec==" not in requirements and "torch==2.13.0" in requirements
    assert (tmp_path / "dl" / "code" / "shoprec" / "seqrec" / "recommend.py").exists()  # the code travels with it
    model = mlflow.pyfunc.load_model(path)
    example = mlflow.models.Model.load(path).load_input_example(path)
    assert len(example["history"].iloc[0]) == 3
    out = model.predict(example, params={"k": 4})
    assert len(out["items"].iloc[0]) == 4
