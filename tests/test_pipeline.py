"""The whole DAG through kfp.local: raw logs from a real S3 API (moto server), a real mlflow server."""

import builtins
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shoprec.pipeline.runner import compile_pipeline

TASKS = {"ingest", "features", "train", "evaluate", "register", "deploy", "promote", "notify"}
RANKER = {"train-ranker", "evaluate-ranker", "register-2"}
# the night's recommendations: after promote (gate passed), and with the @champion when the gate failed
BATCH = {"batch-plan", "batch-shard", "batch-commit", "batch-plan-2", "batch-shard-2", "batch-commit-2"}
TINY_RECIPE = """
epochs: 3
batch_size: 32
lr: 0.003
patience: 5
model: {objective: bert4rec, loss: ce, max_len: 20, d_model: 32, n_heads: 2, n_layers: 1, mask_prob: 0.3}
"""
TINY_RANKER = """
max_len: 16
bi_max_len: 16
max_pairs: 120
max_eval_pairs: 200
lora: {enabled: true, r: 4, alpha: 8, dropout: 0.0, target_modules: [query, value]}
fit: {epochs: 1, batch_size: 4, threads: 1, lr: 0.0005, metric: auc, mode: max, patience: 1}
train_bi_encoder: true
bi_fit: {epochs: 1, batch_size: 16, threads: 1, lr: 0.0005, metric: loss, mode: min, patience: 1}
threads: 1
"""


def _tasks(spec: dict) -> set[str]:
    names = set(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        names |= set(comp.get("dag", {}).get("tasks", {}))
    return {n for n in names if not n.startswith(("condition-", "for-loop-", "exit-handler-"))}


def _task(spec: dict, name: str) -> dict:
    for comp in [spec["root"], *spec["components"].values()]:
        if name in comp.get("dag", {}).get("tasks", {}):
            return comp["dag"]["tasks"][name]
    raise KeyError(name)


FANOUT = {"list-partitions", "day-features", "merge-ingest", "gather-partials", "shard-numbers", "feature-shard",
          "evaluate-shard"}


def test_compile_has_every_step_inside_an_exit_handler(tmp_path):
    text = open(compile_pipeline(tmp_path / "retrain.yaml")).read()
    assert "pip install" not in text  # components run in images that already have shoprec and kfp
    spec = yaml.safe_load(text)
    assert _tasks(spec) == TASKS | FANOUT | RANKER | BATCH
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {"data_uri", "epochs", "workers", "model_name", "margin", "lookback_days", "start_date", "end_date",
            "warm_start", "webhook_url", "shards", "batch_shards", "batch_k", "batch_recs_uri", "batch_date",
            "redis_url"} <= set(params)
    assert params["shards"]["defaultValue"] == 1
    loop = next(c for n, c in spec["components"].items() if n.startswith("comp-for-loop"))
    assert loop["dag"]["tasks"]["ingest"].get("cachingOptions", {}) == {}  # caching off: enableCache absent
    assert _task(spec, "for-loop-2")["iteratorPolicy"]["parallelismLimit"] == 8
    gates = {n: t["triggerPolicy"]["condition"] for comp in spec["components"].values()
             for n, t in comp.get("dag", {}).get("tasks", {}).items() if n.startswith("condition-")
             and "condition" in t.get("triggerPolicy", {})}
    passed = next(n for n, c in gates.items() if c.startswith("inputs.parameter_values['pipelinechannel--evaluate-Output']"))
    failed = next(n for n, c in gates.items() if c.startswith("!(inputs.parameter_values['pipelinechannel--evaluate-Output']"))
    in_passed = set(spec["components"][f"comp-{passed}"]["dag"]["tasks"])
    assert {"deploy", "promote", "batch-plan", "batch-commit"} <= in_passed
    assert {"batch-plan-2", "batch-commit-2"} <= set(spec["components"][f"comp-{failed}"]["dag"]["tasks"])
    assert _task(spec, "batch-plan")["dependentTasks"] == ["promote"]  # the new champion, once it is one
    assert _task(spec, "batch-plan-2")["inputs"]["parameters"]["version"]["runtimeValue"]["constant"] == ""
    # the root holds the steps' group and the exit step that runs whatever happens in it
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"exit-handler-1", "notify"}
    assert root["notify"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert root["notify"]["dependentTasks"] == ["exit-handler-1"]
    assert _task(spec, "list-partitions")["inputs"]["parameters"]["lookback_days"]["componentInputParameter"] == \
        "pipelinechannel--lookback_days"


def test_features_and_evaluation_fan_out_over_shopper_shards(tmp_path):
    spec = yaml.safe_load(open(compile_pipeline(tmp_path / "retrain.yaml")).read())
    loops = {}
    for comp in spec["components"].values():
        for name, task in comp.get("dag", {}).get("tasks", {}).items():
            if "iteratorPolicy" in task:
                loops[name] = task
    by_input = {t["parameterIterator"]["items"]["inputParameter"]: t for t in loops.values()}
    shard_loops = [t for t in loops.values()
                   if t["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--shard-numbers-Output"]
    assert len(shard_loops) == 2 and "pipelinechannel--list-partitions-Output" in by_input
    assert all(t["iteratorPolicy"]["parallelismLimit"] == 16 for t in shard_loops)
    inner = {n for t in shard_loops for n in spec["components"][t["componentRef"]["name"]]["dag"]["tasks"]}
    assert inner == {"feature-shard", "evaluate-shard"}
    assert _task(spec, "shard-numbers")["inputs"]["parameters"]["shards"]["componentInputParameter"] == \
        "pipelinechannel--shards"
    # the final steps collect every shard's output
    assert _task(spec, "features")["inputs"]["artifacts"]["shards"]["taskOutputArtifact"]["outputArtifactKey"] == \
        "pipelinechannel--feature-shard-features_shard"
    assert _task(spec, "evaluate")["inputs"]["artifacts"]["parts"]["taskOutputArtifact"]["outputArtifactKey"] == \
        "pipelinechannel--evaluate-shard-part"


def test_kfp_dsl_compile_works_too(tmp_path):
    out = tmp_path / "k.yaml"
    kfp = Path(sys.executable).with_name("kfp")
    subprocess.run([str(kfp), "dsl", "compile", "--py", "pipelines/retrain.py", "--function", "retrain",
                    "--output", str(out)],
                   check=True, capture_output=True, cwd=Path(__file__).resolve().parent.parent)
    assert _tasks(yaml.safe_load(out.read_text())) >= TASKS


@pytest.mark.slow
def test_whole_pipeline_locally_from_s3_into_mlflow_server(tiny_shop, s3_env, mlflow_server, tmp_path, monkeypatch,
                                                          receiver):
    from shoprec.data.storage import s3_client, upload_folder
    from shoprec.pipeline.runner import run_local
    from shoprec.registry import versions as registry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("SHOPREC_HOME", str(tmp_path / "home"))
    s3_client().create_bucket(Bucket="raw-pipeline")
    upload_folder(tiny_shop, "s3://raw-pipeline/shop")

    hook = {"webhook_url": receiver.url, "shards": 2}  # features and evaluation in 2 shopper shards each
    print_before = builtins.print
    first = run_local(data_uri="s3://raw-pipeline/shop", workers=2, model_name="it-seqrec", recipe=TINY_RECIPE,
                      ranker_name="it-ranker", ranker_recipe=TINY_RANKER, params=hook)
    assert builtins.print is print_before  # kfp.local's indenting print does not outlive the run
    assert first["registered_version"] == "1" and first["promoted"] and first["champion_version"] == "1"
    assert first["candidate"]["ndcg@10"] > first["popularity_ndcg@10"]
    pointer = json.loads((tmp_path / "home" / "deployments" / "it-seqrec.json").read_text())
    # deploy pins the exact versions (never an alias); promote then moved @champion after the gate check.
    assert pointer["version"] == "1" and pointer["model_uri"] == "models:/it-seqrec/1"
    assert pointer["ranker_uri"] == "models:/it-ranker/1"
    # The ranker trained beside the recommender, was evaluated on clicks and registered as its own model.
    assert first["ranker"]["registered_version"] == "1" and first["ranker"]["champion_version"] == "1"
    # the night's recommendations by the new champion, on S3 beside the raw logs
    recs = first["batch"]
    assert recs["version"] == "1" and recs["shards"] == 2 and recs["shoppers"] > 0
    assert recs["rows"] == recs["shoppers"] * 20
    assert recs["uri"] == f"s3://raw-pipeline/shop/recommendations/date={recs['date']}/version=1"
    assert 0.0 <= first["ranker"]["candidate"]["auc"] <= 1.0 and first["ranker"]["candidate"]["logloss"] > 0

    run = registry.client().get_run(
        registry.client().get_model_version("it-seqrec", "1").run_id)
    assert run.data.tags["shoprec.parent_champion"] == "none"
    assert "partitions" in json.loads(run.data.tags["shoprec.data_snapshot"])
    assert "valid_ndcg_at_10" in run.data.metrics

    # Same data and seed: the candidate ties the champion, so the gate keeps v1 and deploy does not run.
    (tmp_path / "home" / "deployments" / "it-seqrec.json").unlink()
    second = run_local(data_uri="s3://raw-pipeline/shop", workers=2, model_name="it-seqrec", recipe=TINY_RECIPE,
                       ranker_name="it-ranker", ranker_recipe=TINY_RANKER, params=hook)
    assert second["registered_version"] == "2" and not second["promoted"]
    assert second["champion_version"] == "1"
    assert "does not beat champion v1" in second["reason"]
    assert not (tmp_path / "home" / "deployments" / "it-seqrec.json").exists()
    assert registry.version_by_alias("it-seqrec", "challenger").version == "2"
    assert second["ranker"]["registered_version"] == "2"  # gated on its own click AUC against ranker v1
    # gate failed: the champion (v1) made the night's list again; the same (date, version) replaced, not doubled
    assert second["batch"]["version"] == "1" and second["batch"]["rows"] == recs["rows"]
    assert second["batch"]["committed_at"] >= recs["committed_at"]
    from shoprec.seqrec.batch import read_batch

    assert read_batch("s3://raw-pipeline/shop/recommendations", recs["date"], "1").num_rows == recs["rows"]

    # A failing step (no such bucket) still ends in the exit step's message; the run itself fails.
    with pytest.raises(RuntimeError, match="list-partitions"):
        run_local(data_uri="s3://no-such-bucket/shop", workers=2, model_name="it-seqrec", recipe=TINY_RECIPE,
                  ranker_name="it-ranker", ranker_recipe=TINY_RANKER, params=hook)
    sent = [b["shoprec"] for b in receiver.bodies]
    assert [b["outcome"] for b in sent] == ["promoted", "kept", "failed"]
    assert sent[0]["version"] == "1" and sent[1]["version"] == "2" and sent[1]["champion_version"] == "1"
    assert "does not beat champion v1" in sent[1]["reason"]
    assert sent[2]["stage"] == "before a version was registered" and sent[2]["state"] == "FAILED"
