"""Multi-node training: a Kubeflow Trainer TrainJob on the ``torch-distributed`` runtime.

On one node the train step runs ``torchrun`` inside its own pod (:func:`shoprec.train.launch`). For
more than one node it creates a TrainJob instead, one process per GPU, waits for it and streams its
status. The runtime starts ``torchrun`` on every node with ``PET_NNODES``, ``PET_NPROC_PER_NODE``,
``PET_NODE_RANK`` and ``PET_MASTER_ADDR`` set, which torchrun reads as its defaults; each process runs
:func:`main` here, which fetches the features from object storage, trains, and (rank 0) uploads
the model to where the KFP artifact expects it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
RUNTIME = "torch-distributed"
# Env vars the pods read, from which Kubernetes Secret and key (the manifests create these Secrets).
SECRET_ENV = {
    "MLFLOW_TRACKING_URI": ("shoprec-mlflow", "tracking-uri"),
    "MLFLOW_TRACKING_USERNAME": ("shoprec-mlflow", "username"),
    "MLFLOW_TRACKING_PASSWORD": ("shoprec-mlflow", "password"),
    "AWS_ENDPOINT_URL": ("shoprec-s3", "endpoint-url"),
    "AWS_ACCESS_KEY_ID": ("shoprec-s3", "access-key-id"),
    "AWS_SECRET_ACCESS_KEY": ("shoprec-s3", "secret-access-key"),
}


class TrainJobFailed(RuntimeError):
    pass


def s3_uri(artifact_uri: str) -> str:
    """KFP names its default MinIO store ``minio://``; boto3 speaks ``s3://`` to the same bucket."""
    for scheme in ("minio://", "s3://"):
        if artifact_uri.startswith(scheme):
            return "s3://" + artifact_uri[len(scheme):]
    raise ValueError(f"multi-node training needs artifacts in object storage, got {artifact_uri!r}")


def render_trainjob(name: str, image: str, features_uri: str, model_uri: str, recipe: str, epochs: int,
                    nodes: int, gpus_per_node: int, namespace: str = "shoprec",
                    secrets: dict[str, tuple[str, str]] | None = None) -> dict:
    """The TrainJob manifest; ``secrets`` maps env var -> (secret name, key)."""
    env = [{"name": "SHOPREC_RECIPE", "value": recipe}, {"name": "PYTHONUNBUFFERED", "value": "1"}]
    for var, (secret, key) in sorted((secrets or {}).items()):
        env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "shoprec"}},
        "spec": {
            "runtimeRef": {"name": RUNTIME, "apiGroup": GROUP, "kind": "ClusterTrainingRuntime"},
            "trainer": {
                "image": image,
                "command": ["torchrun", "-m", "shoprec.trainjob"],
                "args": ["--features-uri", s3_uri(features_uri), "--model-uri", s3_uri(model_uri),
                         "--epochs", str(epochs)],
                "numNodes": nodes,
                "numProcPerNode": gpus_per_node,
                "resourcesPerNode": {"limits": {"nvidia.com/gpu": gpus_per_node},
                                     "requests": {"cpu": "4", "memory": "16Gi"}},
                "env": env,
            },
        },
    }


def job_state(status: dict | None) -> tuple[str, str]:
    """("Complete" | "Failed" | "Suspended" | "Running" | "Pending", message) from a TrainJob's status."""
    conditions = (status or {}).get("conditions") or []
    by_type = {c.get("type"): c for c in conditions if c.get("status") == "True"}
    for state in ("Failed", "Complete", "Suspended"):
        if state in by_type:
            return state, by_type[state].get("message", "")
    if (status or {}).get("jobsStatus"):
        return "Running", ""
    return "Pending", ""


def create_and_wait(manifest: dict, poll_seconds: float = 15.0, timeout_seconds: float = 6 * 3600) -> dict:
    """Create the TrainJob with the kubernetes client and wait for it to complete, logging each change."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    api = client.CustomObjectsApi()
    ns, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, manifest)
    log.info("created TrainJob %s/%s (%d nodes)", ns, name, manifest["spec"]["trainer"]["numNodes"])
    deadline, last = time.monotonic() + timeout_seconds, None
    while time.monotonic() < deadline:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        state, message = job_state(obj.get("status"))
        if state != last:
            log.info("TrainJob %s: %s %s", name, state, message)
            last = state
        if state == "Complete":
            return obj
        if state in ("Failed", "Suspended"):
            raise TrainJobFailed(f"TrainJob {ns}/{name} {state.lower()}: {message}")
        time.sleep(poll_seconds)
    raise TrainJobFailed(f"TrainJob {ns}/{name} did not finish within {timeout_seconds:.0f} s")


def train_on_trainjob(features_uri: str, model_uri: str, model_path: str | Path, recipe: str, epochs: int,
                      nodes: int, gpus_per_node: int, namespace: str | None = None) -> dict:
    """Run training as a TrainJob, then fetch the model into ``model_path``; returns its metrics.json."""
    import uuid

    staging = s3_uri(model_uri).rstrip("/") + "-trainjob"
    name = f"shoprec-train-{uuid.uuid4().hex[:8]}"
    from shoprec.k8s import trainer_image

    image = trainer_image()
    manifest = render_trainjob(name, image, features_uri, staging, recipe, epochs, nodes, gpus_per_node,
                               namespace=namespace or os.environ.get("SHOPREC_NAMESPACE", "shoprec"),
                               secrets=SECRET_ENV)
    create_and_wait(manifest)
    _download(staging, Path(model_path))
    return json.loads((Path(model_path) / "metrics.json").read_text())


def _download(uri: str, dst: Path) -> None:
    from shoprec.storage import S3Location, s3_client

    loc, s3 = S3Location.parse(uri), s3_client()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=loc.prefix + "/"):
        for obj in page.get("Contents", []):
            target = dst / obj["Key"][len(loc.prefix) + 1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(loc.bucket, obj["Key"], str(target))


def main(argv: list[str] | None = None) -> None:
    """Entry point of every TrainJob process (under torchrun)."""
    from shoprec.registry import stage_model_files
    from shoprec.storage import upload_folder
    from shoprec.train import load_recipe, train

    p = argparse.ArgumentParser()
    p.add_argument("--features-uri", required=True)
    p.add_argument("--model-uri", required=True)
    p.add_argument("--epochs", type=int, default=0)
    a = p.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="shoprec-trainjob-"))
    _download(a.features_uri, work / "features")
    (work / "recipe.yaml").write_text(os.environ.get("SHOPREC_RECIPE", "{}"))
    cfg = load_recipe(work / "recipe.yaml", **({"epochs": a.epochs} if a.epochs > 0 else {}))
    train(work / "features", work / "model", cfg)
    if rank == 0:
        upload_folder(stage_model_files(work / "model", work / "upload"), a.model_uri)
        log.info("uploaded the model to %s", a.model_uri)
    if rank == 0:
        print(json.dumps({"model_uri": a.model_uri}))


if __name__ == "__main__":
    main()
