"""The compiled cluster pipeline carries what a Kubernetes cluster needs, asserted on the YAML itself."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from shoprec.pipeline.runner import compile_pipeline


def _load(tmp_path):
    docs = list(yaml.safe_load_all(open(compile_pipeline(tmp_path / "c.yaml", cluster=True))))
    spec = docs[0]
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    return spec, platform


def _task(spec, name):
    for comp in [spec["root"], *spec["components"].values()]:
        tasks = comp.get("dag", {}).get("tasks", {})
        if name in tasks:
            return tasks[name]
    raise KeyError(name)


def test_train_asks_for_gpus_from_a_pipeline_parameter(tmp_path):
    spec, _ = _load(tmp_path)
    resources = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert "gpus" in str(resources["accelerator"]["resourceCount"])
    assert "gpus" in spec["root"]["inputDefinitions"]["parameters"]
    # "gpus" at the root; "pipelinechannel--gpus" inside a group (an ExitHandler) that passes it down
    assert _task(spec, "train")["inputs"]["parameters"]["workers"]["componentInputParameter"] in (
        "gpus", "pipelinechannel--gpus")


def test_train_gets_shm_node_selector_tolerations_and_timeout(tmp_path):
    _, platform = _load(tmp_path)
    train = platform["exec-train"]
    assert train["emptyDirMounts"] == [{"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "8Gi",
                                        "volumeName": "dshm"}]
    assert train["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert train["tolerations"][0]["key"] == "nvidia.com/gpu" and train["tolerations"][0]["effect"] == "NoSchedule"
    assert train["activeDeadlineSeconds"] == str(6 * 3600) or train["activeDeadlineSeconds"] == 6 * 3600


def test_credentials_come_from_secrets_as_env(tmp_path):
    _, platform = _load(tmp_path)
    for executor in ("exec-ingest", "exec-train", "exec-evaluate-shard", "exec-evaluate", "exec-register",
                     "exec-deploy", "exec-promote"):
        envs = {e["envVar"]: (s["secretName"], e["secretKey"], s["optional"])
                for s in platform[executor]["secretAsEnv"] for e in s["keyToEnv"]}
        assert envs["MLFLOW_TRACKING_URI"] == ("shoprec-mlflow", "tracking-uri", False)
        assert envs["AWS_SECRET_ACCESS_KEY"] == ("shoprec-s3", "secret-access-key", False)
        # Absent on AWS S3 and on an MLflow without basic auth: a required key there stops every pod.
        assert envs["AWS_ENDPOINT_URL"] == ("shoprec-s3", "endpoint-url", True)
        assert envs["MLFLOW_TRACKING_USERNAME"] == ("shoprec-mlflow", "username", True)
        assert envs["MLFLOW_TRACKING_PASSWORD"] == ("shoprec-mlflow", "password", True)
    promote = {e["envVar"]: (s["secretName"], e["secretKey"], s["optional"])
               for s in platform["exec-promote"]["secretAsEnv"] for e in s["keyToEnv"]}
    assert promote["SHOPREC_API_TOKEN"] == ("shoprec-server", "api-token", True)  # its smoke requests


def test_the_release_runs_register_deploy_promote_in_order(tmp_path):
    spec, _ = _load(tmp_path)
    deploy, promote = _task(spec, "deploy"), _task(spec, "promote")
    gate = next(t for comp in [spec["root"], *spec["components"].values()]
                for n, t in comp.get("dag", {}).get("tasks", {}).items() if n.startswith("condition-branches-"))
    assert {"register", "register-2", "evaluate"} <= set(gate["dependentTasks"])
    assert promote["dependentTasks"] == ["deploy"]
    assert promote["inputs"]["parameters"]["deployment"]["taskOutputParameter"] == {
        "outputParameterKey": "Output", "producerTask": "deploy"}
    params = {k: v.get("componentInputParameter") for k, v in deploy["inputs"]["parameters"].items()}
    assert params["version"] == "pipelinechannel--register-version"  # the exact version register made
    assert params["ranker_version"] == "pipelinechannel--register-2-version"
    assert params["ranker_gate"] == "pipelinechannel--register-2-gate_passed"
    assert params["canary_percent"] == "pipelinechannel--canary_percent"
    assert promote["inputs"]["parameters"]["max_error_rate"]["componentInputParameter"] == \
        "pipelinechannel--max_error_rate"
    root = spec["root"]["inputDefinitions"]["parameters"]
    assert root["canary_percent"]["defaultValue"] == 10 and root["max_error_rate"]["defaultValue"] == 0.01
    assert "retryPolicy" not in promote  # a failed canary is a decision: it was rolled back, a retry would not help


ROOT = Path(__file__).resolve().parents[1]


def test_images_chosen_at_compile_time_reach_every_task(tmp_path):
    """Compiled in a fresh process, as `shoprec pipeline compile` is: components read the env at import."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPREC_")}
    env.update(SHOPREC_IMAGE_REGISTRY="registry.example.com/team", SHOPREC_IMAGE_TAG="9.9.9-rc1")
    out = tmp_path / "c.yaml"
    subprocess.run([sys.executable, "-c", "import sys; from shoprec.pipeline.runner import compile_pipeline; "
                    "compile_pipeline(sys.argv[1], cluster=True)", str(out)],
                   check=True, cwd=ROOT, env=env, capture_output=True, timeout=300)
    spec = yaml.safe_load_all(out.read_text()).__next__()
    executors = spec["deploymentSpec"]["executors"]
    want = {"SHOPREC_IMAGE_REGISTRY": "registry.example.com/team", "SHOPREC_IMAGE_TAG": "9.9.9-rc1",
            "SHOPREC_IMAGE": "registry.example.com/team/shoprec:9.9.9-rc1",
            "SHOPREC_TRAINER_IMAGE": "registry.example.com/team/shoprec-trainer:9.9.9-rc1",
            "SHOPREC_SERVER_IMAGE": "registry.example.com/team/shoprec-server:9.9.9-rc1"}
    for name, executor in executors.items():
        container = executor["container"]
        assert container["image"].startswith("registry.example.com/team/shoprec"), name
        assert container["image"].endswith(":9.9.9-rc1"), name
    # The steps that create objects (a TrainJob, the InferenceService) carry the same choice as env.
    for name in ("exec-train", "exec-deploy", "exec-promote", "exec-register", "exec-ingest", "exec-train-ranker"):
        env_vars = {e["name"]: e["value"] for e in executors[name]["container"].get("env", [])}
        assert {k: env_vars.get(k) for k in want} == want, name
    # What a step reads at run time from that env: the TrainJob's and the InferenceService's images.
    from shoprec.pipeline import k8s

    run_env = {e["name"]: e["value"] for e in executors["exec-deploy"]["container"]["env"]}
    saved = {k: os.environ.pop(k, None) for k in want}
    try:
        os.environ.update(run_env)
        assert k8s.server_image() == want["SHOPREC_SERVER_IMAGE"]
        assert k8s.trainer_image() == want["SHOPREC_TRAINER_IMAGE"]
        isvc = k8s.render_inference_service("s", "models:/s/1")
        assert isvc["spec"]["predictor"]["containers"][0]["image"] == want["SHOPREC_SERVER_IMAGE"]
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v


def test_retries_and_caching(tmp_path):
    spec, _ = _load(tmp_path)
    assert _task(spec, "train")["retryPolicy"]["maxRetryCount"] == 2
    assert _task(spec, "register")["retryPolicy"]["maxRetryCount"] == 3
    for never_cached in ("ingest", "list-partitions", "evaluate", "register", "deploy", "promote"):
        assert _task(spec, never_cached).get("cachingOptions", {}).get("enableCache") is not True, never_cached
    assert _task(spec, "features")["cachingOptions"]["enableCache"] is True
    for sharded in ("gather-partials", "shard-numbers", "feature-shard", "features", "evaluate-shard"):
        assert _task(spec, sharded)["retryPolicy"]["maxRetryCount"] == 3, sharded
    assert _task(spec, "evaluate-shard").get("cachingOptions", {}).get("enableCache") is not True


def test_the_cluster_pipeline_takes_a_shard_count(tmp_path):
    spec, _ = _load(tmp_path)
    assert spec["root"]["inputDefinitions"]["parameters"]["shards"]["defaultValue"] == 1
    loops = [t for comp in spec["components"].values() for t in comp.get("dag", {}).get("tasks", {}).values()
             if t.get("parameterIterator", {}).get("items", {}).get("inputParameter") ==
             "pipelinechannel--shard-numbers-Output"]
    assert len(loops) == 2 and all(t["iteratorPolicy"]["parallelismLimit"] == 16 for t in loops)


def test_training_steps_run_in_the_trainer_image(tmp_path):
    spec, _ = _load(tmp_path)
    images = {name: e["container"]["image"] for name, e in spec["deploymentSpec"]["executors"].items()}
    assert images["exec-train"].split(":")[0].endswith("/shoprec-trainer")
    assert images["exec-train-ranker"].split(":")[0].endswith("/shoprec-trainer")
    assert images["exec-ingest"].split(":")[0].endswith("/shoprec")


def test_batch_recommendation_steps_get_secrets_and_retries(tmp_path):
    spec, platform = _load(tmp_path)
    for name in ("batch-plan", "batch-shard", "batch-commit", "batch-plan-2", "batch-shard-2", "batch-commit-2"):
        assert _task(spec, name)["retryPolicy"]["maxRetryCount"] == 3, name
        envs = {e["envVar"]: (s["secretName"], e["secretKey"], s["optional"])
                for s in platform[f"exec-{name}"]["secretAsEnv"] for e in s["keyToEnv"]}
        assert envs["MLFLOW_TRACKING_URI"] == ("shoprec-mlflow", "tracking-uri", False), name
        assert envs["AWS_SECRET_ACCESS_KEY"] == ("shoprec-s3", "secret-access-key", False), name
        # Redis is optional: without the key the batch goes to Parquet only
        assert envs.get("SHOPREC_REC_STORE_URL") == (
            ("shoprec-server", "rec-store-url", True) if "commit" in name else None), name
    root = spec["root"]["inputDefinitions"]["parameters"]
    assert root["batch_shards"]["defaultValue"] == 4 and root["batch_k"]["defaultValue"] == 20
    loop = next(n[len("comp-"):] for n, c in spec["components"].items() if "batch-shard" in c.get("dag", {}).get("tasks", {}))
    assert _task(spec, loop)["iteratorPolicy"]["parallelismLimit"] == 16  # MAX_PARALLEL_SHARDS, shared with the feature and evaluation fan-outs
