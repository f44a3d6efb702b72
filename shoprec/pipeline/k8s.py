"""The KServe InferenceService that serves a model on a cluster.

The images it names are :mod:`shoprec.images`.

Rolling out a version (:mod:`shoprec.pipeline.deploy`) uses server-side apply with its own field manager
(:data:`FIELD_MANAGER`) and sends only the fields it owns (:func:`owned_fields`): the predictor's
``--model``/``--ranker`` args, ``canaryTrafficPercent`` and shoprec's annotations. Replicas, resources
and the image stay with whoever applied the manifests (the overlays).
"""

from __future__ import annotations

import logging
import os
import time

from shoprec.images import VERSION, base_image, image_env, mlflow_image, server_image, trainer_image, version  # noqa: F401

log = logging.getLogger(__name__)

GROUP, API_VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
# The Secrets the manifests create (names shared with shoprec.pipeline.trainjob.SECRET_ENV).
MLFLOW_SECRET = "shoprec-mlflow"
SERVER_SECRET = "shoprec-server"
SERVER_PORT = 8080
RUN_AS = 10001  # the images' non-root user and group
CONTAINER = "kserve-container"
# Secret keys that may be absent: every reader marks them optional (secretKeyRef optional: true, and
# optional in the compiled pipeline). Every other key a pod reads must exist, and manifests/README.md
# creates it; tests/test_secrets_contract.py checks the three agree.
OPTIONAL_SECRET_KEYS = frozenset({
    (MLFLOW_SECRET, "username"), (MLFLOW_SECRET, "password"),  # MLflow basic auth, when the server has it
    ("shoprec-s3", "endpoint-url"),  # MinIO or another S3-compatible store; absent on AWS S3
    (SERVER_SECRET, "api-token"),  # the server's bearer token; open /v1/* without it
    (SERVER_SECRET, "rec-store-url"),  # Redis with the nightly batch lists; the model answers everything without it
})

# Server-side apply of the fields shoprec owns on the InferenceService.
FIELD_MANAGER = "shoprec-deploy"
APPLY_PATCH = "application/apply-patch+yaml"
VERSION_ANNOTATION = "shoprec/model-version"
URI_ANNOTATION = "shoprec/model-uri"
PREVIOUS_ANNOTATION = "shoprec/previous-model-uri"
PREVIOUS_RANKER_ANNOTATION = "shoprec/previous-ranker-uri"
TAG_ROUTING_ANNOTATION = "serving.kserve.io/enable-tag-routing"  # the canary gets its own URL (Serverless)


class NoClusterError(RuntimeError):
    """No Kubernetes configuration: neither in-cluster (a service account) nor a kubeconfig."""


def secret_optional(secret: str, key: str) -> bool:
    return (secret, key) in OPTIONAL_SECRET_KEYS


def secret_env_groups(secret_env: dict[str, tuple[str, str]]) -> list[tuple[str, bool, dict[str, str]]]:
    """``env var -> (secret, key)`` as (secret, optional, {key: env var}) groups, sorted: kfp-kubernetes marks a
    whole group optional, so keys that may be absent go in a group of their own."""
    groups: dict[tuple[str, bool], dict[str, str]] = {}
    for env, (secret, key) in secret_env.items():
        groups.setdefault((secret, secret_optional(secret, key)), {})[key] = env
    return [(secret, optional, key_to_env) for (secret, optional), key_to_env in sorted(groups.items())]


def _secret_env(var: str, secret: str, key: str) -> dict:
    ref = {"name": secret, "key": key}
    if secret_optional(secret, key):
        ref["optional"] = True
    return {"name": var, "valueFrom": {"secretKeyRef": ref}}


def serve_args(model_uri: str, ranker_uri: str = "") -> list[str]:
    """The server container's args: ``shoprec serve`` on ``model_uri`` (and the ranker, when given)."""
    args = ["serve", "--model", model_uri]
    if ranker_uri:
        args += ["--ranker", ranker_uri]
    return args + ["--host", "0.0.0.0", "--port", str(SERVER_PORT)]


def render_inference_service(name: str, model_uri: str, image: str | None = None, namespace: str = "shoprec",
                             min_replicas: int = 1, max_replicas: int = 4, cpu: str = "500m", memory: str = "1Gi",
                             cpu_limit: str = "2", memory_limit: str = "4Gi", scale_metric: str = "cpu",
                             scale_target: int = 70, deployment_mode: str = "RawDeployment",
                             service_account: str = "shoprec-server", ranker_uri: str = "") -> dict:
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
        "name": CONTAINER,
        "image": image or server_image(),
        "imagePullPolicy": "IfNotPresent",
        "command": ["shoprec"],
        "args": serve_args(model_uri, ranker_uri),
        "ports": [{"name": "http1", "containerPort": SERVER_PORT, "protocol": "TCP"}],
        "env": [
            _secret_env("MLFLOW_TRACKING_URI", MLFLOW_SECRET, "tracking-uri"),
            _secret_env("MLFLOW_TRACKING_USERNAME", MLFLOW_SECRET, "username"),
            _secret_env("MLFLOW_TRACKING_PASSWORD", MLFLOW_SECRET, "password"),
            _secret_env("SHOPREC_API_TOKEN", SERVER_SECRET, "api-token"),
            _secret_env("SHOPREC_REC_STORE_URL", SERVER_SECRET, "rec-store-url"),
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


def custom_objects_api():
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
    """Create the InferenceService, or merge-patch it when it exists; the object the API server returns.

    For bootstrapping by hand only: a merge patch of the whole object overwrites what the overlays set
    (replicas, resources, image). The pipeline rolls versions out with :func:`apply_owned_fields`.
    """
    from kubernetes.client.exceptions import ApiException

    namespace = namespace or manifest.get("metadata", {}).get("namespace") or "shoprec"
    name = manifest["metadata"]["name"]
    api = custom_objects_api()
    try:
        api.get_namespaced_custom_object(GROUP, API_VERSION, namespace, PLURAL, name)
    except ApiException as e:
        if e.status != 404:
            raise
        return api.create_namespaced_custom_object(GROUP, API_VERSION, namespace, PLURAL, manifest)
    return api.patch_namespaced_custom_object(GROUP, API_VERSION, namespace, PLURAL, name, manifest)


# ------------------------------------------------------------------ rolling a version out (shoprec.pipeline.deploy)
class RolloutError(RuntimeError):
    """The InferenceService could not be applied, or did not get Ready in time."""


def get_inference_service(api, namespace: str, name: str) -> dict | None:
    """The live InferenceService, or None when there is none."""
    from kubernetes.client.exceptions import ApiException

    try:
        return api.get_namespaced_custom_object(GROUP, API_VERSION, namespace, PLURAL, name)
    except ApiException as e:
        if e.status == 404:
            return None
        raise RolloutError(f"cannot read InferenceService {namespace}/{name}: HTTP {e.status} {e.reason}") from e


def create_inference_service(api, manifest: dict) -> dict:
    """Create the whole object (first rollout into a namespace without the manifests' InferenceService)."""
    from kubernetes.client.exceptions import ApiException

    ns, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    try:
        return api.create_namespaced_custom_object(GROUP, API_VERSION, ns, PLURAL, manifest,
                                                   field_manager=f"{FIELD_MANAGER}-create")
    except ApiException as e:
        raise RolloutError(f"cannot create InferenceService {ns}/{name}: HTTP {e.status} {e.reason}: "
                           f"{(e.body or '')[:500]}") from e


def owned_fields(name: str, namespace: str, model_uri: str, version: str, ranker_uri: str = "",
                 canary_percent: int | None = None, previous_uri: str = "", previous_ranker_uri: str = "") -> dict:
    """The apply configuration shoprec owns on the InferenceService, and nothing else.

    Server-side apply removes a field its manager applied before and leaves out now, so every apply by
    :data:`FIELD_MANAGER` sends this whole set. ``canary_percent`` None (or 100) gives the new version
    all traffic (the field is left out, which KServe reads as 100).
    """
    annotations = {VERSION_ANNOTATION: str(version), URI_ANNOTATION: model_uri, TAG_ROUTING_ANNOTATION: "true"}
    if previous_uri:  # where a failed canary goes back to
        annotations[PREVIOUS_ANNOTATION] = previous_uri
    if previous_ranker_uri:
        annotations[PREVIOUS_RANKER_ANNOTATION] = previous_ranker_uri
    predictor: dict = {"containers": [{"name": CONTAINER, "args": serve_args(model_uri, ranker_uri)}]}
    if canary_percent is not None and canary_percent != 100:
        if not 0 <= canary_percent <= 100:
            raise ValueError(f"canary_percent must be 0..100, got {canary_percent}")
        predictor["canaryTrafficPercent"] = canary_percent
    return {"apiVersion": f"{GROUP}/{API_VERSION}", "kind": "InferenceService",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
            "spec": {"predictor": predictor}}


def server_side_apply(api, body: dict, dry_run: bool = False) -> dict:
    """PATCH ``body`` as ``application/apply-patch+yaml`` with field manager :data:`FIELD_MANAGER` (force).

    kubernetes' CustomObjectsApi in this version always sends a merge patch, so the request goes through
    its ApiClient with the apply content type (whose REST layer sends the body as JSON, which is YAML).
    """
    from kubernetes.client.exceptions import ApiException

    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    query = [("fieldManager", FIELD_MANAGER), ("force", "true")] + ([("dryRun", "All")] if dry_run else [])
    try:
        return api.api_client.call_api(
            f"/apis/{GROUP}/{API_VERSION}/namespaces/{{namespace}}/{PLURAL}/{{name}}", "PATCH",
            path_params={"namespace": ns, "name": name}, query_params=query,
            header_params={"Content-Type": APPLY_PATCH, "Accept": "application/json"},
            body=body, response_type="object", auth_settings=["BearerToken"],
            _return_http_data_only=True)
    except ApiException as e:
        raise RolloutError(f"server-side apply of InferenceService {ns}/{name} failed"
                           f"{' (dry run)' if dry_run else ''}: HTTP {e.status} {e.reason}: {(e.body or '')[:500]}") from e


def _container(obj: dict) -> dict:
    for c in (obj.get("spec") or {}).get("predictor", {}).get("containers") or []:
        if c.get("name") == CONTAINER:
            return c
    return {}


def apply_owned_fields(api, body: dict) -> dict:
    """Server-side apply ``body`` (see :func:`owned_fields`), first as a dry run.

    The dry run shows what the API server would store: if the container lost its image or resources
    (a CRD that treats ``containers`` as one atomic list would do that), nothing is applied.
    """
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    preview = _container(server_side_apply(api, body, dry_run=True))
    missing = [f for f in ("image", "resources") if not preview.get(f)]
    if missing:
        raise RolloutError(f"server-side apply to InferenceService {ns}/{name} would drop the {CONTAINER} "
                           f"container's {' and '.join(missing)} (the CRD treats spec.predictor.containers as "
                           "atomic?); nothing applied")
    return server_side_apply(api, body)


def _ready(obj: dict) -> tuple[bool, str]:
    """(Ready, why not) from an InferenceService: Ready condition True for the current generation."""
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready = conditions.get("Ready")
    if generation is not None and observed is not None and observed < generation:
        return False, f"status is for generation {observed}, the spec is generation {generation}"
    if not ready:
        return False, "no Ready condition yet"
    if ready.get("status") != "True":
        return False, f"Ready={ready.get('status')} {ready.get('reason', '')}: {ready.get('message', '')}".strip()
    return True, ""


def wait_ready(api, namespace: str, name: str, timeout_s: float, poll_s: float = 5.0,
               clock=time.monotonic, sleep=time.sleep) -> dict:
    """Poll until the InferenceService is Ready for its current spec; :class:`RolloutError` after ``timeout_s``."""
    deadline, why = clock() + timeout_s, "never read"
    while True:
        obj = get_inference_service(api, namespace, name)
        if obj is None:
            why = "it does not exist"
        else:
            ok, why = _ready(obj)
            if ok:
                return obj
        if clock() >= deadline:
            raise RolloutError(f"InferenceService {namespace}/{name} not Ready after {timeout_s:g} s: {why}")
        log.info("waiting for InferenceService %s/%s: %s", namespace, name, why)
        sleep(poll_s)


def served_uris(obj: dict | None) -> tuple[str, str]:
    """(model URI, ranker URI or "") from the server container's args of a live InferenceService."""
    args = _container(obj or {}).get("args") or []

    def value(flag: str) -> str:
        return args[args.index(flag) + 1] if flag in args and args.index(flag) + 1 < len(args) else ""

    return value("--model"), value("--ranker")


def canary_url(obj: dict) -> str:
    """Where the newest revision answers: its tagged URL in a canary split (Serverless with tag routing),
    otherwise the service's address (RawDeployment has no split: all traffic reaches the new pods)."""
    status = obj.get("status") or {}
    for t in (status.get("components") or {}).get("predictor", {}).get("traffic") or []:
        if t.get("tag") == "latest" and t.get("url"):
            return t["url"]
    url = (status.get("address") or {}).get("url") or status.get("url")
    if not url:
        raise RolloutError(f"InferenceService {obj['metadata']['name']} has no URL in its status")
    return url
