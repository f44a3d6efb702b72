"""The TrainJob that multi-node training creates (rendered and read here; no cluster runs on this machine)."""

import pytest

from shoprec.trainjob import SECRET_ENV, job_state, render_trainjob, s3_uri


def test_manifest_runs_torchrun_one_process_per_gpu_with_secrets():
    m = render_trainjob("shoprec-train-1", "ghcr.io/shoprec/shoprec-trainer:0.1.0", "minio://mlpipeline/a/features",
                        "s3://mlpipeline/a/model-trainjob", recipe='{"epochs": 3}', epochs=0, nodes=4,
                        gpus_per_node=8, secrets=SECRET_ENV)
    assert m["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and m["kind"] == "TrainJob"
    assert m["spec"]["runtimeRef"]["name"] == "torch-distributed"
    t = m["spec"]["trainer"]
    assert t["numNodes"] == 4 and t["numProcPerNode"] == 8
    assert t["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": 8}
    assert t["command"] == ["torchrun", "-m", "shoprec.trainjob"]
    assert t["args"][:2] == ["--features-uri", "s3://mlpipeline/a/features"]
    secret_refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in t["env"] if "valueFrom" in e}
    assert secret_refs["AWS_SECRET_ACCESS_KEY"] == {"name": "shoprec-s3", "key": "secret-access-key"}
    assert not any("value" in e and "secret" in e["name"].lower() for e in t["env"])


def test_local_artifacts_cannot_go_to_a_trainjob():
    with pytest.raises(ValueError, match="object storage"):
        s3_uri("/tmp/features")


@pytest.mark.parametrize("status,state", [
    (None, "Pending"),
    ({"jobsStatus": [{"name": "node", "active": 4}]}, "Running"),
    ({"conditions": [{"type": "Complete", "status": "True", "message": "done"}]}, "Complete"),
    ({"conditions": [{"type": "Complete", "status": "False"}, {"type": "Failed", "status": "True",
                                                               "message": "OOMKilled"}]}, "Failed"),
])
def test_job_state(status, state):
    assert job_state(status)[0] == state
