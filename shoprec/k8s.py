"""Where shoprec's container images live, and the KServe InferenceService that serves a model on a cluster.

Images (built by ``make images``, see images/ and mk/images.mk), one version tag for all:

- base    ``$REGISTRY/shoprec:$VERSION``          every pipeline step (CPU torch); the components' base_image
- trainer ``$REGISTRY/shoprec-trainer:$VERSION``  DDP training on GPUs (CUDA torch); TrainJobs
- server  ``$REGISTRY/shoprec-server:$VERSION``   ``shoprec serve``; the InferenceService's predictor
- mlflow  ``$REGISTRY/shoprec-mlflow:$VERSION``   the MLflow tracking server of manifests/

``REGISTRY`` is ``SHOPREC_IMAGE_REGISTRY`` (default ``ghcr.io/shoprec``), ``VERSION`` is
``SHOPREC_IMAGE_TAG`` (default the package version). A whole reference can be forced per image with
``SHOPREC_IMAGE``, ``SHOPREC_TRAINER_IMAGE`` or ``SHOPREC_SERVER_IMAGE`` (the names components/ and
shoprec.trainjob already read). The environment is read at call time, so a compile picks up the
setting of the shell that runs it.
"""

from __future__ import annotations

import os

from shoprec import __version__

IMAGE_REGISTRY = "ghcr.io/shoprec"
VERSION = __version__

GROUP, API_VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
# The Secrets the manifests create (names shared with shoprec.trainjob.SECRET_ENV).
MLFLOW_SECRET = "shoprec-mlflow"
SERVER_SECRET = "shoprec-server"
SERVER_PORT = 8080
RUN_AS = 10001  # the images' non-root user and group


class NoClusterError(RuntimeError):
    """No Kubernetes configuration: neither in-cluster (a service account) nor a kubeconfig."""


def registry() -> str:
    return os.environ.get("SHOPREC_IMAGE_REGISTRY", IMAGE_REGISTRY).rstrip("/")


def version() -> str:
    return os.environ.get("SHOPREC_IMAGE_TAG", VERSION)


def _image(name: str, override: str) -> str:
    return os.environ.get(override) or f"{registry()}/{name}:{version()}"


def base_image() -> str:
    return _image("shoprec", "SHOPREC_IMAGE")


def trainer_image() -> str:
    return _image("shoprec-trainer", "SHOPREC_TRAINER_IMAGE")


def server_image() -> str:
    return _image("shoprec-server", "SHOPREC_SERVER_IMAGE")


def mlflow_image() -> str:
    """The tracking server of manifests/ (MLflow with the PostgreSQL driver)."""
    return _image("shoprec-mlflow", "SHOPREC_MLFLOW_IMAGE")


def _secret_env(var: str, secret: str, key: str, optional: bool = False) -> dict:
    ref = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": var, "valueFrom": {"secretKeyRef": ref}}


def render_inference_service(name: str, model_uri: str, image: str | None = None, namespace: str = "shoprec",
                             min_replicas: int = 1, max_replicas: int = 4, cpu: str = "500m", memory: str = "1Gi",
                             cpu_limit: str = "2", memory_limit: str = "4Gi", scale_metric: str = "cpu",
                             scale_target: int = 70, deployment_mode: str = "RawDeployment",
                             service_account: str = "shoprec-server") -> dict:
    """A KServe v1beta1 InferenceService whose custom predictor runs ``shoprec serve`` on the server image.

    - ``MLFLOW_TRACKING_URI`` (and the optional MLflow basic-auth pair, and ``SHOPREC_API_TOKEN``) come
      from Secrets by ``secretKeyRef``: no credential is ever in the manifest;
    - readiness and startup on ``/healthz`` (200 only once a model is loaded: a pod takes traffic only
      then, and loading may take minutes); liveness on ``/livez`` so a slow MLflow during a reload never
      gets a healthy server killed;
    - requests and limits, ``min_replicas``..``max_replicas`` autoscaling (HPA on CPU in RawDeployment
      mode; use ``scale_metric="concurrency"`` with ``deployment_mode="Serverless"`` for Knative);
    - non-root, no privilege escalation, all capabilities dropped, read-only root filesystem (``/tmp`` and
      the home folder, where MLflow downloads the model, are emptyDirs).
    """
    if not 0 <= min_replicas <= max_replicas or max_replicas < 1:
        raise ValueError(f"need 0 <= min_replicas <= max_replicas and max_replicas >= 1, got {min_replicas}..{max_replicas}")
    probe = {"httpGet": {"path": "/healthz", "port": SERVER_PORT}, "periodSeconds": 10, "timeoutSeconds": 3}
    container = {
        "name": "kserve-container",
        "image": image or server_image(),
        "imagePullPolicy": "IfNotPresent",
        "command": ["shoprec"],
        "args": ["serve", "--model", model_uri, "--host", "0.0.0.0", "--port", str(SERVER_PORT)],
        "ports": [{"name": "http1", "containerPort": SERVER_PORT, "protocol": "TCP"}],
        "env": [
            _secret_env("MLFLOW_TRACKING_URI", MLFLOW_SECRET, "tracking-uri"),
            _secret_env("MLFLOW_TRACKING_USERNAME", MLFLOW_SECRET, "username", optional=True),
            _secret_env("MLFLOW_TRACKING_PASSWORD", MLFLOW_SECRET, "password", optional=True),
            _secret_env("SHOPREC_API_TOKEN", SERVER_SECRET, "api-token", optional=True),
            {"name": "HOME", "value": "/home/shoprec"},
        ],
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu_limit, "memory": memory_limit}},
        "startupProbe": {**probe, "failureThreshold": 60},  # up to 10 minutes to fetch and load the model
        "readinessProbe": {**probe, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/livez", "port": SERVER_PORT}, "periodSeconds": 20,
                          "timeoutSeconds": 3, "failureThreshold": 3},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "home", "mountPath": "/home/shoprec"}],
    }
    return {
        "apiVersion": f"{GROUP}/{API_VERSION}",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "shoprec-server", "app.kubernetes.io/part-of": "shoprec",
                       "app.kubernetes.io/version": version()},
            "annotations": {"serving.kserve.io/deploymentMode": deployment_mode},
        },
        "spec": {
            "predictor": {
                "labels": {"app.kubernetes.io/name": "shoprec-server"},  # on the pods: the NetworkPolicy's selector
                "minReplicas": min_replicas,
                "maxReplicas": max_replicas,
                "scaleMetric": scale_metric,
                "scaleTarget": scale_target,
                "serviceAccountName": service_account,
                "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                                    "fsGroup": RUN_AS, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [container],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                            {"name": "home", "emptyDir": {"sizeLimit": "4Gi"}}],
            },
        },
    }


def _custom_objects_api():
    """A CustomObjectsApi on the in-cluster config (a pipeline step) or else the local kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:  # KUBECONFIG read now: the client reads it once, at import
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
        except (config.ConfigException, FileNotFoundError, OSError, TypeError) as e:
            raise NoClusterError(
                "no Kubernetes cluster configured: not running in a pod with a service account, and no usable "
                f"kubeconfig ({os.environ.get('KUBECONFIG', '~/.kube/config')}): {e}") from e
    return client.CustomObjectsApi()


def apply_inference_service(manifest: dict, namespace: str | None = None) -> dict:
    """Create the InferenceService, or merge-patch it when it exists; the object the API server returns."""
    from kubernetes.client.exceptions import ApiException

    namespace = namespace or manifest.get("metadata", {}).get("namespace") or "shoprec"
    name = manifest["metadata"]["name"]
    api = _custom_objects_api()
    try:
        api.get_namespaced_custom_object(GROUP, API_VERSION, namespace, PLURAL, name)
    except ApiException as e:
        if e.status != 404:
            raise
        return api.create_namespaced_custom_object(GROUP, API_VERSION, namespace, PLURAL, manifest)
    return api.patch_namespaced_custom_object(GROUP, API_VERSION, namespace, PLURAL, name, manifest)
