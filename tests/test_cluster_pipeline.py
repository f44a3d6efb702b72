"""The compiled cluster pipeline carries what a Kubernetes cluster needs, asserted on the YAML itself."""

import yaml

from shoprec.pipeline_runner import compile_pipeline


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
    assert _task(spec, "train")["inputs"]["parameters"]["workers"]["componentInputParameter"] == "gpus"


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
    for executor in ("exec-ingest", "exec-train", "exec-evaluate", "exec-register", "exec-deploy"):
        envs = {e["envVar"]: (s["secretName"], e["secretKey"])
                for s in platform[executor]["secretAsEnv"] for e in s["keyToEnv"]}
        assert envs["MLFLOW_TRACKING_URI"] == ("shoprec-mlflow", "tracking-uri")
        assert envs["AWS_SECRET_ACCESS_KEY"] == ("shoprec-s3", "secret-access-key")


def test_retries_and_caching(tmp_path):
    spec, _ = _load(tmp_path)
    assert _task(spec, "train")["retryPolicy"]["maxRetryCount"] == 2
    assert _task(spec, "register")["retryPolicy"]["maxRetryCount"] == 3
    for never_cached in ("ingest", "list-partitions", "evaluate", "register", "deploy"):
        assert _task(spec, never_cached).get("cachingOptions", {}).get("enableCache") is not True, never_cached
    assert _task(spec, "features")["cachingOptions"]["enableCache"] is True


def test_training_steps_run_in_the_trainer_image(tmp_path):
    spec, _ = _load(tmp_path)
    images = {name: e["container"]["image"] for name, e in spec["deploymentSpec"]["executors"].items()}
    assert images["exec-train"].split(":")[0].endswith("/shoprec-trainer")
    assert images["exec-train-ranker"].split(":")[0].endswith("/shoprec-trainer")
    assert images["exec-ingest"].split(":")[0].endswith("/shoprec")
