"""The TrainJob that multi-node training creates (rendered and read here; no cluster runs on this machine):
valid against the vendored Trainer schema and core/v1, and every way out of the launcher's wait (done,
failed, deadline, suspended then resumed, suspended too long, launcher pod deleted) deletes the job,
checked against a recording stand-in for the Kubernetes API."""

import json
import os
import signal
from pathlib import Path

import pytest
import yaml

from shoprec.pipeline.trainjob import (
    ACTIVE_DEADLINE_SECONDS,
    EPHEMERAL_PORTS,
    NODE,
    POD_LABELS,
    RENDEZVOUS_PORT,
    SECRET_ENV,
    LauncherStopped,
    TrainJobFailed,
    create_and_wait,
    job_state,
    owner_reference,
    render_trainjob,
    s3_uri,
    train_on_trainjob,
    trainjob_name,
)


def test_manifest_runs_torchrun_one_process_per_gpu_with_secrets():
    m = render_trainjob("shoprec-train-1", "ghcr.io/shoprec/shoprec-trainer:0.1.0", "minio://mlpipeline/a/features",
                        "s3://mlpipeline/a/model-trainjob", recipe='{"epochs": 3}', epochs=0, nodes=4,
                        gpus_per_node=8, secrets=SECRET_ENV)
    assert m["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and m["kind"] == "TrainJob"
    assert m["spec"]["runtimeRef"]["name"] == "torch-distributed"
    t = m["spec"]["trainer"]
    assert t["numNodes"] == 4 and t["numProcPerNode"] == 8
    assert t["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": 8}
    assert t["command"] == ["torchrun", "-m", "shoprec.pipeline.trainjob"]
    assert t["args"][:2] == ["--features-uri", "s3://mlpipeline/a/features"]
    secret_refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in t["env"] if "valueFrom" in e}
    assert secret_refs["AWS_SECRET_ACCESS_KEY"] == {"name": "shoprec-s3", "key": "secret-access-key"}
    assert not any("value" in e and "secret" in e["name"].lower() for e in t["env"])


def test_local_artifacts_cannot_go_to_a_trainjob():
    with pytest.raises(ValueError, match="object storage"):
        s3_uri("/tmp/features")


@pytest.mark.parametrize("status", [  # resumed: Trainer sets status False; a comment in its constants says True
    {"conditions": [{"type": "Suspended", "status": "False", "reason": "Resumed"}]},
    {"conditions": [{"type": "Suspended", "status": "True", "reason": "Resumed"}]},
])
def test_a_resumed_job_is_not_suspended(status):
    assert job_state({**status, "jobsStatus": [{"name": "node", "active": 2}]})[0] == "Running"


@pytest.mark.parametrize("status,state", [
    (None, "Pending"),
    ({"jobsStatus": [{"name": "node", "active": 4}]}, "Running"),
    ({"conditions": [{"type": "Complete", "status": "True", "message": "done"}]}, "Complete"),
    ({"conditions": [{"type": "Complete", "status": "False"}, {"type": "Failed", "status": "True",
                                                               "message": "OOMKilled"}]}, "Failed"),
])
def test_job_state(status, state):
    assert job_state(status)[0] == state


# ---------------------------------------------------------------- the manifest against the vendored schemas
ROOT = Path(__file__).resolve().parents[1]
kv = pytest.importorskip("kubernetes_validate")
jsonschema = pytest.importorskip("jsonschema")
SCHEMA = json.loads((ROOT / "manifests" / "crds" / "trainjob.schema.json").read_text())
PATCH = "spec", "runtimePatches", 0, "trainingRuntimeSpec", "template", "spec", "replicatedJobs", 0


def _pod_patch(doc: dict) -> dict:
    job = doc
    for key in PATCH:
        job = job[key]
    return job["template"]["spec"]["template"]


def validate(doc: dict) -> None:
    """The vendored TrainJob schema (strict), then its core parts against core/v1 inside a Pod (strict)."""
    jsonschema.validate(doc, SCHEMA)
    t = doc["spec"]["trainer"]
    trainer = {"name": "trainer", "image": t["image"], "command": t["command"], "args": t["args"], "env": t["env"],
               "resources": t["resourcesPerNode"]}
    pod = _pod_patch(doc)
    containers = [{**c, "image": "x"} for c in pod["spec"].get("containers", [])]
    spec = {**pod["spec"], "containers": [trainer, *containers]}
    kv.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {**doc["metadata"], **pod.get("metadata", {})},
                 "spec": spec}, "1.32", strict=True)


def render(**kw):
    args = {"name": "shoprec-train-1", "image": "ghcr.io/shoprec/shoprec-trainer:0.1.0",
            "features_uri": "s3://b/features", "model_uri": "s3://b/model", "recipe": "{}", "epochs": 2, "nodes": 2,
            "gpus_per_node": 8, "secrets": SECRET_ENV}
    return render_trainjob(**{**args, **kw})


def test_runtime_patches_give_gpu_nodes_shm_deadline_and_validate():
    owner = {"apiVersion": "v1", "kind": "Pod", "name": "retrain-abc-train", "uid": "0d9c-11"}
    doc = render(checkpoint_uri="s3://b/shoprec-checkpoints/run-1/train", owner=owner)
    validate(doc)
    assert doc["spec"]["activeDeadlineSeconds"] == ACTIVE_DEADLINE_SECONDS
    patch = doc["spec"]["runtimePatches"][0]
    assert patch["manager"] == "shoprec"
    job = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    assert job["name"] == NODE
    pod = _pod_patch(doc)
    assert pod["metadata"]["labels"] == POD_LABELS
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["spec"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["spec"]["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}]
    assert pod["spec"]["containers"] == [{"name": NODE, "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}]
    assert doc["metadata"]["ownerReferences"] == [owner]
    assert doc["spec"]["trainer"]["args"][-2:] == ["--checkpoint-uri", "s3://b/shoprec-checkpoints/run-1/train"]
    names = {e["name"] for e in doc["spec"]["trainer"]["env"]}
    assert not names & {"NCCL_DEBUG", "NCCL_DEBUG_SUBSYS"}
    env = {e["name"]: e.get("value") for e in render(nccl_debug=True)["spec"]["trainer"]["env"]}
    assert env["NCCL_DEBUG"] == "INFO" and env["NCCL_DEBUG_SUBSYS"] == "INIT,NET"


@pytest.mark.parametrize("mutate", [
    lambda d: d["spec"].__setitem__("podTemplateOverrides", []),  # not in this Trainer version
    lambda d: d["spec"]["trainer"].__setitem__("tolerations", []),  # tolerations belong in the runtime patch
    lambda d: d["spec"]["runtimePatches"][0].pop("manager"),
    lambda d: _pod_patch(d)["spec"]["volumes"][0].__setitem__("emptyDir", {"medium": "Memory", "size": "8Gi"}),
    lambda d: _pod_patch(d)["spec"]["securityContext"].__setitem__("sysctl", []),
])
def test_the_validator_rejects_misplaced_fields(mutate):
    doc = render()
    mutate(doc)
    with pytest.raises((jsonschema.ValidationError, kv.ValidationError)):
        validate(doc)


def test_network_policy_opens_rendezvous_and_nccl_ports_between_trainjob_pods_only():
    docs = [d for d in yaml.safe_load_all((ROOT / "manifests" / "base" / "networkpolicy.yaml").read_text()) if d]
    policy = next(d for d in docs if d["metadata"]["name"] == "shoprec-trainjob")
    kv.validate(policy, "1.32", strict=True)
    labels = _pod_patch(render())["metadata"]["labels"]
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"].items() <= labels.items()
    assert spec["policyTypes"] == ["Ingress"] and len(spec["ingress"]) == 1
    rule = spec["ingress"][0]
    assert rule["from"] == [{"podSelector": {"matchLabels": spec["podSelector"]["matchLabels"]}}]
    assert rule["ports"] == [{"port": RENDEZVOUS_PORT, "protocol": "TCP"},
                             {"port": EPHEMERAL_PORTS[0], "endPort": EPHEMERAL_PORTS[1], "protocol": "TCP"}]
    sysctls = _pod_patch(render())["spec"]["securityContext"]["sysctls"]
    assert sysctls == [{"name": "net.ipv4.ip_local_port_range", "value": f"{EPHEMERAL_PORTS[0]} {EPHEMERAL_PORTS[1]}"}]
    # no other policy lets anything reach these pods
    for other in docs:
        selector = other["spec"]["podSelector"].get("matchLabels", {})
        if other is not policy and other["spec"].get("ingress") and selector.items() <= labels.items():
            pytest.fail(f"{other['metadata']['name']} also admits traffic to TrainJob pods")


def test_pipeline_role_may_delete_trainjobs():
    role = next(d for d in yaml.safe_load_all((ROOT / "manifests" / "base" / "rbac.yaml").read_text())
                if d and d["kind"] == "Role")
    rule = next(r for r in role["rules"] if r["resources"] == ["trainjobs"])
    assert "delete" in rule["verbs"]


def test_owner_reference_only_to_a_known_pod_in_the_same_namespace():
    env = {"SHOPREC_POD_NAME": "retrain-x-train", "SHOPREC_POD_UID": "u-1", "SHOPREC_POD_NAMESPACE": "shoprec"}
    assert owner_reference("shoprec", env) == {"apiVersion": "v1", "kind": "Pod", "name": "retrain-x-train",
                                               "uid": "u-1"}
    assert owner_reference("shoprec", {**env, "SHOPREC_POD_NAME": "", "HOSTNAME": "pod-h"})["name"] == "pod-h"
    assert owner_reference("shoprec", {**env, "SHOPREC_POD_NAMESPACE": "kubeflow"}) is None  # would delete the job
    assert owner_reference("shoprec", {k: v for k, v in env.items() if k != "SHOPREC_POD_UID"}) is None


# ---------------------------------------------------------------- waiting and deleting, against a recorded API
class ScriptedApi:
    """A stand-in for kubernetes' CustomObjectsApi: each get returns the next scripted TrainJob status (the last
    one repeats; an exception in the script is raised; a callable is called first); every call is recorded."""

    def __init__(self, statuses, create_errors=()):
        self.statuses, self.create_errors, self.calls, self.gets = list(statuses), list(create_errors), [], 0

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.calls.append(("create", namespace, body["metadata"]["name"]))
        if self.create_errors:
            raise self.create_errors.pop(0)
        return body

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append(("get", namespace, name))
        assert self.gets < 1000, "the launcher never stopped waiting"
        status = self.statuses[min(self.gets, len(self.statuses) - 1)]
        self.gets += 1
        if callable(status):
            status = status()
        if isinstance(status, Exception):
            raise status
        return {"metadata": {"name": name}, "status": status}

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, **kw):
        self.calls.append(("delete", namespace, name, kw.get("propagation_policy")))

    def verbs(self):
        return [c[0] for c in self.calls]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


RUNNING = {"jobsStatus": [{"name": "node", "active": 2, "ready": 2, "failed": 0, "succeeded": 0, "suspended": 0}]}
COMPLETE = {"conditions": [{"type": "Complete", "status": "True", "reason": "JobSetCompleted", "message": "done"}]}
SUSPENDED = {"conditions": [{"type": "Suspended", "status": "True", "reason": "Suspended",
                             "message": "TrainJob is suspended"}]}
RESUMED = {"conditions": [{"type": "Suspended", "status": "False", "reason": "Resumed", "message": "TrainJob is resumed"}],
           **RUNNING}


def failed(reason, message):
    return {"conditions": [{"type": "Failed", "status": "True", "reason": reason, "message": message}]}


def run(api, **kw):
    clock = FakeClock()
    args = {"poll_seconds": 10, "timeout_seconds": 100, "suspended_timeout_seconds": 60, "sleep": clock.sleep,
            "clock": clock}
    return create_and_wait(api, render(), **{**args, **kw}), clock


DELETE = ("delete", "shoprec", "shoprec-train-1", "Background")


def test_success_returns_the_job_and_deletes_it():
    api = ScriptedApi([None, RUNNING, COMPLETE])
    obj, _ = run(api)
    assert obj["status"] == COMPLETE
    assert api.verbs() == ["create", "get", "get", "get", "delete"] and api.calls[-1] == DELETE


@pytest.mark.parametrize("status,match", [
    (failed("JobSetFailed", "node-0 OOMKilled"), "failed: JobSetFailed: node-0 OOMKilled"),
    (failed("DeadlineExceeded", "TrainJob exceeded its active deadline"), "DeadlineExceeded"),
])
def test_failure_and_deadline_raise_and_delete(status, match):
    api = ScriptedApi([RUNNING, status])
    with pytest.raises(TrainJobFailed, match=match):
        run(api)
    assert api.verbs() == ["create", "get", "get", "delete"]


def test_running_past_the_wait_timeout_raises_and_deletes():
    api = ScriptedApi([RUNNING])
    with pytest.raises(TrainJobFailed, match="did not finish within 100 s"):
        run(api)
    assert api.verbs()[-1] == "delete" and 10 <= api.gets <= 12


def test_suspended_is_waiting_and_does_not_count_as_running_time():
    # 50 s suspended (under Kueue, before admission), then 90 s running: neither limit is passed
    api = ScriptedApi([SUSPENDED] * 6 + [RESUMED] * 9 + [COMPLETE])
    obj, clock = run(api)
    assert obj["status"] == COMPLETE and clock.now == 150
    assert api.verbs().count("delete") == 1 and api.calls[-1] == DELETE


def test_suspended_past_its_timeout_raises_and_deletes():
    api = ScriptedApi([RUNNING, SUSPENDED])
    with pytest.raises(TrainJobFailed, match="stayed suspended .* more than 60 s"):
        run(api)
    assert api.verbs()[-1] == "delete"


def test_launcher_pod_deleted_sigterm_deletes_the_job_and_restores_the_handler():
    def reached_the_test(signum, frame):  # without the launcher's own handler the signal lands here
        raise RuntimeError("SIGTERM was not handled by create_and_wait")

    original = signal.signal(signal.SIGTERM, reached_the_test)
    try:
        api = ScriptedApi([RUNNING, lambda: os.kill(os.getpid(), signal.SIGTERM) or RUNNING])
        with pytest.raises(LauncherStopped, match="SIGTERM"):
            run(api)
        assert api.verbs() == ["create", "get", "get", "delete"]
        assert signal.getsignal(signal.SIGTERM) is reached_the_test
    finally:
        signal.signal(signal.SIGTERM, original)


def test_job_deleted_by_someone_else_is_a_clear_failure():
    from kubernetes.client.exceptions import ApiException

    api = ScriptedApi([RUNNING, ApiException(status=404, reason="Not Found")])
    with pytest.raises(TrainJobFailed, match="was deleted while the launcher waited"):
        run(api)
    assert api.verbs()[-1] == "delete"


def test_a_job_left_by_an_earlier_attempt_is_replaced():
    from kubernetes.client.exceptions import ApiException

    api = ScriptedApi([COMPLETE], create_errors=[ApiException(status=409, reason="AlreadyExists")])
    run(api)
    assert api.verbs() == ["create", "delete", "create", "get", "delete"]


def test_train_on_trainjob_names_the_job_by_run_and_owns_it_by_the_launcher(monkeypatch):
    monkeypatch.setenv("SHOPREC_POD_NAME", "retrain-x-train")
    monkeypatch.setenv("SHOPREC_POD_UID", "u-1")
    monkeypatch.setenv("SHOPREC_POD_NAMESPACE", "shoprec")
    monkeypatch.setenv("SHOPREC_NAMESPACE", "shoprec")
    created = []

    class Recording(ScriptedApi):
        def create_namespaced_custom_object(self, group, version, namespace, plural, body):
            created.append(body)
            return super().create_namespaced_custom_object(group, version, namespace, plural, body)

    api = Recording([failed("DeadlineExceeded", "too slow")])
    ckpt = "s3://b/shoprec-checkpoints/run-1/train"
    with pytest.raises(TrainJobFailed, match="DeadlineExceeded"):
        train_on_trainjob("minio://b/f", "minio://b/m", "/tmp/unused", "{}", 1, 2, 4, checkpoint_uri=ckpt, api=api)
    name = created[0]["metadata"]["name"]
    assert name == trainjob_name(ckpt) != trainjob_name("s3://b/shoprec-checkpoints/run-2/train")
    assert created[0]["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    validate(created[0])
    assert api.calls[-1] == ("delete", "shoprec", name, "Background")


def test_the_launcher_asks_for_no_gpu_when_a_trainjob_has_them(tmp_path):
    from components.train import launcher_gpus
    from shoprec.pipeline.runner import compile_pipeline

    assert launcher_gpus.python_func(gpus=8, nodes=1) == 8 and launcher_gpus.python_func(gpus=8, nodes=4) == 0
    spec = next(yaml.safe_load_all(open(compile_pipeline(tmp_path / "c.yaml", cluster=True))))
    count = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]["accelerator"]["resourceCount"]
    assert count == "{{$.inputs.parameters['pipelinechannel--launcher-gpus-Output']}}"
    # the steps sit in the ExitHandler's group, which passes the pipeline parameters down as channels
    group = next(c["dag"]["tasks"] for c in spec["components"].values() if "launcher-gpus" in c.get("dag", {}).get("tasks", {}))
    launcher = group["launcher-gpus"]["inputs"]["parameters"]
    assert launcher == {"gpus": {"componentInputParameter": "pipelinechannel--gpus"},
                        "nodes": {"componentInputParameter": "pipelinechannel--nodes"}}
    train = group["train"]["inputs"]["parameters"]
    assert train["kfp_run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"


def test_secret_keys_that_may_be_absent_are_optional_in_the_trainjob():
    from shoprec.pipeline.k8s import OPTIONAL_SECRET_KEYS

    refs = [e["valueFrom"]["secretKeyRef"] for e in render()["spec"]["trainer"]["env"] if "valueFrom" in e]
    assert len(refs) == len(SECRET_ENV)
    for ref in refs:
        assert ref.get("optional", False) == ((ref["name"], ref["key"]) in OPTIONAL_SECRET_KEYS), ref
    assert any(ref.get("optional") for ref in refs)


def test_nccl_debug_is_a_flag_set_at_compile_time(tmp_path, monkeypatch):
    from shoprec.pipeline.runner import compile_pipeline
    from shoprec.pipeline.trainjob import nccl_debug_requested

    assert not nccl_debug_requested({}) and not nccl_debug_requested({"SHOPREC_NCCL_DEBUG": "0"})
    assert nccl_debug_requested({"SHOPREC_NCCL_DEBUG": "1"})

    def train_env(path):  # the pipeline's graph is built when pipelines.retrain is imported
        import importlib

        import pipelines.retrain

        importlib.reload(pipelines.retrain)
        spec = next(yaml.safe_load_all(open(compile_pipeline(path, cluster=True))))
        return spec["deploymentSpec"]["executors"]["exec-train"]["container"].get("env", [])

    monkeypatch.delenv("SHOPREC_NCCL_DEBUG", raising=False)
    assert "SHOPREC_NCCL_DEBUG" not in {e["name"] for e in train_env(tmp_path / "a.yaml")}
    try:
        monkeypatch.setenv("SHOPREC_NCCL_DEBUG", "1")
        assert {"name": "SHOPREC_NCCL_DEBUG", "value": "1"} in train_env(tmp_path / "b.yaml")
    finally:
        monkeypatch.delenv("SHOPREC_NCCL_DEBUG")
        train_env(tmp_path / "c.yaml")  # leave the module as the other tests expect it
