"""Run notifications: the outcome read from KFP's final status and the MLflow registry, posted to a real local
HTTP receiver (Slack-compatible body)."""

from __future__ import annotations

import json
import shutil

import pytest

from shoprec.pipeline import notify
from shoprec.registry import versions as registry


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SHOPREC_HOME", str(tmp_path / "home"))
    return tmp_path


def _register(tiny_model, tmp_path, name: str, run_id: str, gate: bool, ndcg: float) -> str:
    evaluation = tmp_path / f"ev-{run_id}"
    evaluation.mkdir()
    (evaluation / "evaluation.json").write_text(json.dumps({"gate": gate, "reason": f"reason of {run_id}", "results": {
        "candidate": {"ndcg@10": ndcg, "hr@10": 0.2, "mrr@10": 0.1}}}))
    model = tmp_path / f"model-{run_id}"
    shutil.copytree(tiny_model, model)
    return registry.register(model, evaluation, name, kfp_run_id=run_id)["version"]


def test_each_outcome_reaches_the_webhook(store, tiny_model, receiver):
    name = "nt-seqrec"
    v1 = _register(tiny_model, store, name, "run-1", gate=True, ndcg=0.31)
    registry.record_alias(name, registry.CHAMPION, v1, "test: the promote step passed")
    notify.notify(receiver.url, "SUCCEEDED", "", name, "run-1")
    v2 = _register(tiny_model, store, name, "run-2", gate=False, ndcg=0.30)
    notify.notify(receiver.url, "SUCCEEDED", "", name, "run-2")
    v3 = _register(tiny_model, store, name, "run-3", gate=True, ndcg=0.35)
    registry.client().set_model_version_tag(name, v3, "shoprec.canary", "failed: 5xx rate 0.2 > 0.01")
    notify.notify(receiver.url, "SUCCEEDED", "", name, "run-3")
    notify.notify(receiver.url, "FAILED", "Task train failed.", name, "run-4")
    _register(tiny_model, store, name, "run-5", gate=True, ndcg=0.36)
    notify.notify(receiver.url, "FAILED", "deploy: InferenceService not Ready", name, "run-5")

    got = [b["shoprec"] for b in receiver.bodies]
    assert [g["outcome"] for g in got] == ["promoted", "kept", "rolled_back", "failed", "failed"]
    assert got[0]["version"] == v1 and got[0]["evaluation"]["ndcg@10"] == 0.31
    assert "v1 promoted to @champion: NDCG@10 0.3100" in receiver.bodies[0]["text"]
    assert got[1]["version"] == v2 and got[1]["champion_version"] == v1 and got[1]["reason"] == "reason of run-2"
    assert got[2]["reason"] == "5xx rate 0.2 > 0.01" and "canary rolled back" in receiver.bodies[2]["text"]
    assert got[3]["stage"] == "before a version was registered" and got[3]["error"] == "Task train failed."
    assert got[4]["stage"] == "after registering v4"
    assert all(b["text"].endswith(f"(KFP run {g['kfp_run_id']})") for b, g in zip(receiver.bodies, got))


def test_empty_url_posts_nothing(store, tiny_model, receiver):
    body = notify.notify("", "FAILED", "boom", "nt-none", "run-x")
    assert body["shoprec"]["outcome"] == "failed" and receiver.bodies == []


def test_a_failing_receiver_is_retried_then_reported(monkeypatch, make_receiver):
    monkeypatch.setattr(notify.time, "sleep", lambda s: None)
    flaky = make_receiver([503, 502])
    assert notify.post(flaky.url, {"text": "x"}) == 200 and flaky.bodies == [{"text": "x"}]
    down = make_receiver([500, 500, 500])
    with pytest.raises(RuntimeError, match="failed after 3 attempts: HTTP 500"):
        notify.post(down.url, {"text": "y"})
