"""Every step in its own container: the images built here (images/local/build.sh, cached layers reused), the whole
retrain DAG run by kfp.local's DockerRunner against a real mlflow server and moto's S3 API on 127.0.0.1, and the
server image run as its pod runs it (read-only root, uid 10001, no capabilities).

The tests marked ``containers`` need a docker engine (``images/local/dockerd.sh start``; .ci/run starts one) and
skip with that reason without one; ``make test`` leaves them out, ``make containers-test`` runs them. The ones
without the mark check the runner's own logic and run everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shoprec.pipeline import containers as container_runner

ROOT = Path(__file__).resolve().parents[1]
TINY_RECIPE = ("{epochs: 3, batch_size: 32, lr: 0.003, patience: 5, model: {objective: sasrec, loss: ce, max_len: 20, "
               "d_model: 32, n_heads: 2, n_layers: 1}}")
TINY_RANKER = ("{max_len: 16, bi_max_len: 16, max_pairs: 120, max_eval_pairs: 200, lora: {enabled: true, r: 4, "
               "alpha: 8, dropout: 0.0, target_modules: [query, value]}, fit: {epochs: 1, batch_size: 4, threads: 1, "
               "lr: 0.0005, metric: auc, mode: max, patience: 1}, train_bi_encoder: true, bi_fit: {epochs: 1, "
               "batch_size: 16, threads: 1, lr: 0.0005, metric: loss, mode: min, patience: 1}, threads: 1}")
TRAINING = {"train", "train-ranker"}


# ---------------------------------------------------------------- the runner's logic (no engine needed)
def test_task_name_comes_from_the_executor_input():
    executor_input = {"inputs": {}, "outputs": {"outputFile": "/root/run-1/train-ranker/executor_output.json"}}
    command = ["sh", "-c", "program", "--executor_input", json.dumps(executor_input), "--function_to_execute", "x"]
    assert container_runner._task_name(command) == "train-ranker"
    assert container_runner._task_name(["sh", "-c", "no input"]) == "?"


def test_containers_refuse_what_a_container_cannot_reach():
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}
    with pytest.raises(container_runner.ContainerRunError, match="s3:// only"):
        container_runner.check_reachable("/data/shop", env)
    with pytest.raises(container_runner.ContainerRunError, match="tracking server"):
        container_runner.check_reachable("s3://raw/shop", {"MLFLOW_TRACKING_URI": "sqlite:///x.db"})
    container_runner.check_reachable("s3://raw/shop", env)


def test_no_recorded_build_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.delenv("SHOPREC_IMAGE_REGISTRY", raising=False)
    with pytest.raises(container_runner.ContainerRunError, match="make images-local"):
        container_runner.use_built_images(tmp_path)


def test_steps_get_only_the_variables_they_need(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("VIRTUAL_ENV", "/host/venv")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    env = container_runner.step_env(tmp_path)
    assert env["AWS_SECRET_ACCESS_KEY"] == "s3cr3t" and env["SHOPREC_HOME"] == str(tmp_path)
    assert "VIRTUAL_ENV" not in env and "PYTHONPATH" not in env  # nothing of the host's Python leaks in


def test_pod_flags_follow_the_inference_service(load_benchmark):
    from shoprec.pipeline import k8s

    flags = load_benchmark("containers").pod_flags(k8s.render_inference_service("x", "models:/m/1", image="i"))
    assert "--read-only" in flags and "--user=10001:10001" in flags and "--cap-drop=ALL" in flags
    assert "--security-opt=no-new-privileges" in flags
    assert {f.split("=", 1)[1].split(":")[0] for f in flags if f.startswith("--tmpfs")} == {"/tmp", "/home/shoprec"}


# ---------------------------------------------------------------- real containers
def _engine() -> str | None:
    got = subprocess.run([str(ROOT / "images/local/dockerd.sh"), "host"], capture_output=True, text=True)
    return got.stdout.strip() if got.returncode == 0 and got.stdout.strip() else None


@pytest.fixture(scope="module")
def local_images():
    host = _engine()
    if host is None:
        pytest.skip("no docker engine answers (start one with images/local/dockerd.sh start, as .ci/run does)")
    os.environ["DOCKER_HOST"] = host
    subprocess.run([str(ROOT / "images/local/build.sh")], check=True, cwd=ROOT)
    return json.loads((ROOT / ".shoprec/images-local.json").read_text())


def _run_in_containers(images: dict, data_uri: str, home: Path, model_name: str) -> subprocess.CompletedProcess:
    code = ("import json, sys; from shoprec.pipeline import containers as c; from shoprec.pipeline.runner import run_local\n"
            f"r = run_local(data_uri={data_uri!r}, workers=2, model_name={model_name!r}, "
            f"ranker_name={model_name + '-ranker'!r}, recipe={TINY_RECIPE!r}, ranker_recipe={TINY_RANKER!r}, "
            "runner='docker')\nr['containers'] = c.ran\nprint(json.dumps(r))")
    env = {**os.environ, "SHOPREC_HOME": str(home), "SHOPREC_IMAGE_REGISTRY": images["registry"],
           "SHOPREC_IMAGE_TAG": images["tag"]}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=home, env=env)


@pytest.mark.containers
@pytest.mark.slow
def test_whole_dag_runs_in_containers(local_images, tiny_shop, s3_env, mlflow_server, tmp_path, monkeypatch):
    from shoprec.data.storage import s3_client, upload_folder
    from shoprec.registry import versions as registry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    s3_client().create_bucket(Bucket="raw-containers")
    upload_folder(tiny_shop, "s3://raw-containers/shop")
    # cwd is an empty folder: a step that needed the repository on sys.path would fail
    done = _run_in_containers(local_images, "s3://raw-containers/shop", tmp_path, "ct-seqrec")
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    tasks = result["containers"]
    names = {t["task"] for t in tasks}
    assert {"list-partitions", "ingest", "day-features", "merge-ingest", "features", "train", "evaluate", "register",
            "train-ranker", "evaluate-ranker", "register-2", "deploy"} <= names
    tag = local_images["tag"]
    for t in tasks:
        assert t["exit_code"] == 0, t
        image = "shoprec-trainer" if t["task"] in TRAINING else "shoprec"
        assert t["image"] == f"{local_images['registry']}/{image}:{tag}", t
    assert result["runner"] == "docker" and result["registered_version"] == "1"
    assert result["candidate"]["ndcg@10"] > result["popularity_ndcg@10"]
    run = registry.client().get_run(registry.client().get_model_version("ct-seqrec", "1").run_id)
    assert run.data.tags["shoprec.git_commit"] == local_images["git_commit"]  # baked into the image, not read from git
    pointer = json.loads((tmp_path / "containers/home/deployments/ct-seqrec.json").read_text())
    assert pointer["version"] == "1"


@pytest.mark.containers
@pytest.mark.slow
def test_a_failing_step_fails_the_run(local_images, s3_env, mlflow_server, tmp_path, monkeypatch):
    """kfp 2.17's DockerRunner could report a failed container as passed; the runner waits for the real exit code."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    done = _run_in_containers(local_images, "s3://no-such-bucket/shop", tmp_path, "ct-fail")
    assert done.returncode != 0
    assert "list-partitions" in done.stdout + done.stderr and "no-such-bucket" in done.stdout + done.stderr


@pytest.mark.containers
@pytest.mark.slow
def test_server_image_runs_as_its_pod(local_images, mlflow_server, tiny_model, tmp_path, monkeypatch, load_benchmark):
    """Read-only root, uid 10001, all capabilities dropped, emptyDirs as tmpfs; the model comes from the registry."""
    import shutil

    from shoprec.registry import versions as registry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("SHOPREC_HOME", str(tmp_path))
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / "evaluation.json").write_text(json.dumps({"gate": True, "reason": "test", "results": {
        "candidate": {"ndcg@10": 0.1, "hr@10": 0.2, "mrr@10": 0.1}}}))
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    version = registry.register(model, evaluation, "ct-served")["version"]
    check = load_benchmark("containers").check_server_image(
        local_images["images"]["server"]["ref"], f"models:/ct-served/{version}", None,
        port=load_benchmark("containers")._free_port())
    assert check["ready"], check
    assert check["read_only"] and check["root_fs_write_refused"] and check["uid"] == 10001
    assert check["cap_drop"] == ["ALL"]
    assert check["recommend"] == {"status": 200, "items": 5}
    assert check["search"]["status"] == 200 and check["search"]["items"] > 0
