"""Multi-node training: a Kubeflow Trainer TrainJob on the ``torch-distributed`` runtime.

On one node the train step runs ``torchrun`` inside its own pod (:func:`shoprec.seqrec.train.launch`). For
more than one node it creates a TrainJob instead, one process per GPU, waits for it and streams its
status; the launcher pod itself then asks for no GPU. The job's node pods get GPU nodes, a memory
``/dev/shm`` and labels through ``runtimePatches``; it has a deadline; ``Suspended`` (waiting for quota,
as under Kueue) is waited out up to a limit; and it is deleted on every way out of the launcher (and,
through an owner reference to the launcher pod, when that pod is deleted). The runtime starts ``torchrun`` on every node with ``PET_NNODES``, ``PET_NPROC_PER_NODE``,
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


class LauncherStopped(TrainJobFailed):
    """The launcher pod got SIGTERM (deleted, evicted, or the step timed out) while it waited."""


# The torch-distributed runtime of Kubeflow Trainer names both the replicated job and the container of every
# node "node"; runtimePatches address them by that name.
NODE = "node"
# Labels on every TrainJob pod; manifests/base/networkpolicy.yaml (shoprec-trainjob) selects them.
POD_LABELS = {"app.kubernetes.io/name": "shoprec-trainjob", "app.kubernetes.io/part-of": "shoprec"}
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
SHM_SIZE = "8Gi"
# torchrun's rendezvous store on node 0 (the runtime's PET_MASTER_PORT, Trainer's ContainerTrainerPort).
RENDEZVOUS_PORT = 29500
# NCCL's bootstrap and socket connections listen on ephemeral ports; the pods' ephemeral range is pinned to
# this (net.ipv4.ip_local_port_range, a safe sysctl) so the NetworkPolicy can open exactly it.
EPHEMERAL_PORTS = (40000, 40999)
NCCL_DEBUG_ENV = {"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "INIT,NET"}
# The launcher's KFP step times out after 6 h (pipelines/retrain.py): the job's own deadline, the wait for
# Kueue to admit it and a margin fit in that.
ACTIVE_DEADLINE_SECONDS = 5 * 3600
SUSPENDED_TIMEOUT_SECONDS = 30 * 60


def nccl_debug_requested(env: dict | None = None) -> bool:
    """The NCCL debug flag: ``SHOPREC_NCCL_DEBUG`` set (not 0/false) in the train step's environment (compile the
    cluster pipeline with it set to get it there)."""
    return (os.environ if env is None else env).get("SHOPREC_NCCL_DEBUG", "").lower() not in ("", "0", "false")


def s3_uri(artifact_uri: str) -> str:
    """KFP names its default MinIO store ``minio://``; boto3 speaks ``s3://`` to the same bucket."""
    for scheme in ("minio://", "s3://"):
        if artifact_uri.startswith(scheme):
            return "s3://" + artifact_uri[len(scheme):]
    raise ValueError(f"multi-node training needs artifacts in object storage, got {artifact_uri!r}")


def runtime_patch(shm_size: str = SHM_SIZE) -> dict:
    """What every node pod needs beyond the runtime's template: GPU nodes (selector and toleration), a
    memory-backed ``/dev/shm`` for NCCL, the pinned ephemeral port range and the labels the NetworkPolicy
    selects (``spec.runtimePatches``, Trainer v1alpha1)."""
    pod_spec = {
        "nodeSelector": dict(GPU_NODE_SELECTOR),
        "tolerations": [dict(GPU_TOLERATION)],
        "securityContext": {"sysctls": [{"name": "net.ipv4.ip_local_port_range",
                                         "value": f"{EPHEMERAL_PORTS[0]} {EPHEMERAL_PORTS[1]}"}]},
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}}],
        "containers": [{"name": NODE, "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}],
    }
    job = {"name": NODE, "template": {"spec": {"template": {"metadata": {"labels": dict(POD_LABELS)},
                                                            "spec": pod_spec}}}}
    return {"manager": "shoprec", "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [job]}}}}


def owner_reference(namespace: str, env: dict | None = None) -> dict | None:
    """An owner reference to the launcher pod, so deleting the pod deletes the TrainJob (garbage collection).

    The pod's name, uid and namespace come from the downward API (``SHOPREC_POD_NAME``/``_UID``/``_NAMESPACE``,
    set by pipelines/retrain.py; the name falls back to ``HOSTNAME``). None when the uid is unknown, or when the
    pod is in another namespace than the TrainJob: Kubernetes has no cross-namespace owners and would treat
    the reference as a missing owner, deleting the TrainJob at once."""
    env = os.environ if env is None else env
    name, uid = env.get("SHOPREC_POD_NAME") or env.get("HOSTNAME"), env.get("SHOPREC_POD_UID")
    pod_ns = env.get("SHOPREC_POD_NAMESPACE")
    if not (name and uid and pod_ns):
        log.warning("launcher pod name/uid/namespace unknown (SHOPREC_POD_*): the TrainJob is not owned by it")
        return None
    if pod_ns != namespace:
        log.warning("launcher pod is in namespace %s, the TrainJob in %s: no owner reference across namespaces; "
                    "the TrainJob is deleted when the launcher exits, not when its pod is deleted", pod_ns, namespace)
        return None
    return {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid}


def render_trainjob(name: str, image: str, features_uri: str, model_uri: str, recipe: str, epochs: int,
                    nodes: int, gpus_per_node: int, namespace: str = "shoprec",
                    secrets: dict[str, tuple[str, str]] | None = None, checkpoint_uri: str = "",
                    active_deadline_seconds: int = ACTIVE_DEADLINE_SECONDS, nccl_debug: bool = False,
                    owner: dict | None = None) -> dict:
    """The TrainJob manifest; ``secrets`` maps env var -> (secret name, key), optional where
    ``shoprec.pipeline.k8s.OPTIONAL_SECRET_KEYS`` says so; ``owner``: an owner reference (:func:`owner_reference`);
    ``nccl_debug``: NCCL's INIT and NET logs in every process."""
    from shoprec.pipeline.k8s import secret_optional

    env = [{"name": "SHOPREC_RECIPE", "value": recipe}, {"name": "PYTHONUNBUFFERED", "value": "1"}]
    if nccl_debug:
        env += [{"name": k, "value": v} for k, v in NCCL_DEBUG_ENV.items()]
    for var, (secret, key) in sorted((secrets or {}).items()):
        ref = {"name": secret, "key": key, **({"optional": True} if secret_optional(secret, key) else {})}
        env.append({"name": var, "valueFrom": {"secretKeyRef": ref}})
    args = ["--features-uri", s3_uri(features_uri), "--model-uri", s3_uri(model_uri), "--epochs", str(epochs)]
    if checkpoint_uri:
        args += ["--checkpoint-uri", checkpoint_uri]
    metadata = {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "shoprec"}}
    if owner:
        metadata["ownerReferences"] = [owner]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": metadata,
        "spec": {
            "runtimeRef": {"name": RUNTIME, "apiGroup": GROUP, "kind": "ClusterTrainingRuntime"},
            "activeDeadlineSeconds": active_deadline_seconds,
            "runtimePatches": [runtime_patch()],
            "trainer": {
                "image": image,
                "command": ["torchrun", "-m", "shoprec.pipeline.trainjob"],
                "args": args,
                "numNodes": nodes,
                "numProcPerNode": gpus_per_node,
                "resourcesPerNode": {"limits": {"nvidia.com/gpu": gpus_per_node},
                                     "requests": {"cpu": "4", "memory": "16Gi"}},
                "env": env,
            },
        },
    }


def job_state(status: dict | None) -> tuple[str, str]:
    """("Complete" | "Failed" | "Suspended" | "Running" | "Pending", message) from a TrainJob's status. A
    ``Suspended`` condition with reason ``Resumed`` is not suspended; a Failed message starts with its reason
    (e.g. ``DeadlineExceeded``)."""
    conditions = (status or {}).get("conditions") or []
    by_type = {c.get("type"): c for c in conditions if c.get("status") == "True"}
    for state in ("Failed", "Complete", "Suspended"):
        c = by_type.get(state)
        if c is None or (state == "Suspended" and c.get("reason") == "Resumed"):
            continue
        reason, message = c.get("reason", ""), c.get("message", "")
        return state, f"{reason}: {message}" if reason and state == "Failed" else message
    if (status or {}).get("jobsStatus"):
        return "Running", ""
    return "Pending", ""


def kubernetes_api():
    """The CustomObjectsApi of the cluster this runs in (or of the kubeconfig outside one)."""
    from shoprec.pipeline.k8s import custom_objects_api

    return custom_objects_api()


def _status_code(e: Exception) -> int | None:
    return getattr(e, "status", None)


def delete_trainjob(api, namespace: str, name: str) -> bool:
    """Delete the TrainJob and, in the background, its JobSet and pods; False when it was already gone."""
    try:
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Background")
    except Exception as e:
        if _status_code(e) == 404:
            return False
        raise
    log.info("deleted TrainJob %s/%s", namespace, name)
    return True


def create_trainjob(api, manifest: dict) -> None:
    """Create the TrainJob; one left by an earlier attempt of the step (same name) is deleted first, so that
    two jobs never write the same checkpoints."""
    ns, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, manifest)
    except Exception as e:
        if _status_code(e) != 409:
            raise
        log.warning("TrainJob %s/%s exists (left by an earlier attempt): deleting it and creating it again", ns, name)
        delete_trainjob(api, ns, name)
        api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, manifest)
    log.info("created TrainJob %s/%s (%d nodes)", ns, name, manifest["spec"]["trainer"]["numNodes"])


def _raise_on_sigterm(signum, frame):
    raise LauncherStopped("the launcher pod got SIGTERM (deleted, evicted or timed out) while its TrainJob ran")


def wait_for_trainjob(api, namespace: str, name: str, poll_seconds: float, timeout_seconds: float,
                      suspended_timeout_seconds: float, sleep=time.sleep, clock=time.monotonic) -> dict:
    """Poll until Complete (returns the object). Raises :class:`TrainJobFailed` when it fails (its deadline
    included), disappears, stays suspended (waiting for quota, e.g. under Kueue) for more than
    ``suspended_timeout_seconds`` at a stretch, or is not done after ``timeout_seconds`` of not being suspended."""
    where = f"TrainJob {namespace}/{name}"
    active = suspended = 0.0
    last_state, before = None, clock()
    while True:
        try:
            obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except Exception as e:
            if _status_code(e) == 404:
                raise TrainJobFailed(f"{where} was deleted while the launcher waited for it") from e
            raise
        state, message = job_state(obj.get("status"))
        if state != last_state:
            log.info("%s: %s %s", where, state, message)
            last_state = state
        if state == "Complete":
            return obj
        if state == "Failed":
            raise TrainJobFailed(f"{where} failed: {message}")
        now = clock()
        if state == "Suspended":
            suspended += now - before
            if suspended > suspended_timeout_seconds:
                raise TrainJobFailed(f"{where} stayed suspended (not admitted: quota, Kueue) for more than "
                                     f"{suspended_timeout_seconds:.0f} s")
        else:
            suspended = 0.0
            active += now - before
            if active > timeout_seconds:
                raise TrainJobFailed(f"{where} did not finish within {timeout_seconds:.0f} s of running")
        before = now
        sleep(poll_seconds)


def create_and_wait(api, manifest: dict, poll_seconds: float = 15.0,
                    timeout_seconds: float = ACTIVE_DEADLINE_SECONDS + 600,
                    suspended_timeout_seconds: float = SUSPENDED_TIMEOUT_SECONDS, sleep=time.sleep,
                    clock=time.monotonic) -> dict:
    """Create the TrainJob through ``api`` (a kubernetes ``CustomObjectsApi``), wait for it (see
    :func:`wait_for_trainjob`) and delete it on every way out: done, failed, timed out, or the launcher
    stopped by SIGTERM. (A launcher killed outright is covered by the owner reference to its pod.)"""
    import signal
    import threading

    ns, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    handler = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm) if handler else None
    try:
        create_trainjob(api, manifest)
        return wait_for_trainjob(api, ns, name, poll_seconds, timeout_seconds, suspended_timeout_seconds, sleep, clock)
    finally:
        try:
            delete_trainjob(api, ns, name)
        except Exception as e:  # do not hide why we are leaving
            log.error("could not delete TrainJob %s/%s: %s (delete it by hand)", ns, name, e)
        if handler:
            signal.signal(signal.SIGTERM, previous)


def trainjob_name(run_key: str = "") -> str:
    """``shoprec-train-<10 hex>``: the same for every attempt of one run's step (from ``run_key``), else random."""
    import hashlib
    import uuid

    suffix = hashlib.sha256(run_key.encode()).hexdigest()[:10] if run_key else uuid.uuid4().hex[:10]
    return f"shoprec-train-{suffix}"


def launcher_gpus(gpus: int, nodes: int) -> int:
    """GPUs the train step's own pod needs: all of them on one node, none when it only watches a TrainJob."""
    return 0 if nodes > 1 else gpus


def train_on_trainjob(features_uri: str, model_uri: str, model_path: str | Path, recipe: str, epochs: int,
                      nodes: int, gpus_per_node: int, namespace: str | None = None, checkpoint_uri: str = "",
                      api=None) -> dict:
    """Run training as a TrainJob, then fetch the model into ``model_path``; returns its metrics.json. The job is
    named after ``checkpoint_uri`` (run id and step), so a retried step replaces its previous attempt's job;
    ``SHOPREC_NCCL_DEBUG=1`` turns on NCCL's logs."""
    from shoprec.pipeline.k8s import trainer_image

    staging = s3_uri(model_uri).rstrip("/") + "-trainjob"
    ns = namespace or os.environ.get("SHOPREC_NAMESPACE", "shoprec")
    manifest = render_trainjob(trainjob_name(checkpoint_uri), trainer_image(), features_uri, staging, recipe, epochs,
                               nodes, gpus_per_node, namespace=ns, secrets=SECRET_ENV, checkpoint_uri=checkpoint_uri,
                               nccl_debug=nccl_debug_requested(),
                               owner=owner_reference(ns))
    create_and_wait(api if api is not None else kubernetes_api(), manifest)
    _download(staging, Path(model_path))
    return json.loads((Path(model_path) / "metrics.json").read_text())


def _download(uri: str, dst: Path) -> None:
    from shoprec.data.storage import S3Location, s3_client

    loc, s3 = S3Location.parse(uri), s3_client()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=loc.prefix + "/"):
        for obj in page.get("Contents", []):
            target = dst / obj["Key"][len(loc.prefix) + 1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(loc.bucket, obj["Key"], str(target))


def main(argv: list[str] | None = None) -> None:
    """Entry point of every TrainJob process (under torchrun)."""
    from shoprec.data.storage import upload_folder
    from shoprec.registry.versions import stage_model_files
    from shoprec.seqrec.train import load_recipe, train

    p = argparse.ArgumentParser()
    p.add_argument("--features-uri", required=True)
    p.add_argument("--model-uri", required=True)
    p.add_argument("--epochs", type=int, default=0)
    p.add_argument("--checkpoint-uri", default="", help="s3:// folder mirroring the checkpoints (resume on retry)")
    a = p.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="shoprec-trainjob-"))
    _download(a.features_uri, work / "features")
    (work / "recipe.yaml").write_text(os.environ.get("SHOPREC_RECIPE", "{}"))
    cfg = load_recipe(work / "recipe.yaml", **({"epochs": a.epochs} if a.epochs > 0 else {}))
    train(work / "features", work / "model", cfg, checkpoint_uri=a.checkpoint_uri or None)
    if rank == 0:
        upload_folder(stage_model_files(work / "model", work / "upload"), a.model_uri)
        log.info("uploaded the model to %s", a.model_uri)
    if rank == 0:
        print(json.dumps({"model_uri": a.model_uri}))


if __name__ == "__main__":
    main()
