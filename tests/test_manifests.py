"""The Kubernetes manifests (manifests/), the InferenceService shoprec.pipeline.k8s renders and the TrainJob
shoprec.pipeline.trainjob renders: valid against the real schemas, least privilege, and no secret in any file.

Core objects are checked with kubernetes_validate (strict: unknown fields fail). InferenceService and
TrainJob are checked against the vendored schemas in manifests/crds/ (see its README), and the core parts
inside them (containers, volumes, security contexts) against core/v1 by placing them in a Pod.
"""

import json
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from shoprec.pipeline import k8s

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
OVERLAYS = ["base", "overlays/dev", "overlays/prod"]
K8S_VERSION = "1.32"
SECRETS = {"shoprec-mlflow-db": {"username", "password"}, "shoprec-s3": {"access-key-id", "secret-access-key", "endpoint-url"},
           "shoprec-mlflow": {"tracking-uri", "username", "password"}, "shoprec-server": {"api-token", "rec-store-url"}}

kv = pytest.importorskip("kubernetes_validate")
jsonschema = pytest.importorskip("jsonschema")


# ---------------------------------------------------------------- rendering
@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl not installed (it renders the kustomizations)")
    out = {}
    for overlay in OVERLAYS:
        text = subprocess.run([kubectl, "kustomize", str(MANIFESTS / overlay)], check=True, capture_output=True,
                              text=True, timeout=60).stdout
        out[overlay] = [d for d in yaml.safe_load_all(text) if d]
    return out


def _schema(name: str) -> dict:
    return json.loads((MANIFESTS / "crds" / f"{name}.schema.json").read_text())


def _validate_core(doc: dict) -> None:
    kv.validate(doc, K8S_VERSION, strict=True)


_POD_FIELDS = {"containers", "initContainers", "volumes", "securityContext", "serviceAccountName", "nodeSelector",
               "tolerations", "affinity", "imagePullSecrets", "automountServiceAccountToken", "priorityClassName",
               "terminationGracePeriodSeconds", "topologySpreadConstraints"}


def validate_inference_service(doc: dict) -> None:
    jsonschema.validate(doc, _schema("inferenceservice"))
    for part in ("predictor", "transformer", "explainer"):
        spec = doc["spec"].get(part)
        if spec and spec.get("containers"):
            pod_spec = {k: v for k, v in spec.items() if k in _POD_FIELDS}
            _validate_core({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": pod_spec})


def validate_trainjob(doc: dict) -> None:
    jsonschema.validate(doc, _schema("trainjob"))
    trainer = doc["spec"].get("trainer") or {}
    container = {"name": "trainer", "image": trainer.get("image", "x")}
    for key in ("command", "args", "env"):
        if key in trainer:
            container[key] = trainer[key]
    if "resourcesPerNode" in trainer:
        container["resources"] = trainer["resourcesPerNode"]
    _validate_core({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": [container]}})


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    if doc["kind"] == "InferenceService":
        return spec["predictor"].get("containers", [])
    return spec.get("template", {}).get("spec", {}).get("containers", [])


def _pod_spec(doc: dict) -> dict:
    return doc["spec"]["predictor"] if doc["kind"] == "InferenceService" else doc["spec"]["template"]["spec"]


# ---------------------------------------------------------------- every object valid
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates(rendered, overlay):
    kinds = set()
    for doc in rendered[overlay]:
        kinds.add(doc["kind"])
        if doc["kind"] == "InferenceService":
            validate_inference_service(doc)
        else:
            _validate_core(doc)
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "Deployment", "Service", "StatefulSet",
            "NetworkPolicy", "InferenceService"} <= kinds


def test_the_validators_reject_what_they_should(rendered):
    deployment = next(d for d in rendered["base"] if d["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"  # typo
    with pytest.raises(kv.ValidationError):
        _validate_core(broken)
    isvc = next(d for d in rendered["base"] if d["kind"] == "InferenceService")
    for mutate in (lambda p: p.__setitem__("minReplica", 1), lambda p: p.__setitem__("scaleMetric", "qps"),
                   lambda p: p["containers"][0].__setitem__("readinesProbe", {})):
        bad = json.loads(json.dumps(isvc))
        mutate(bad["spec"]["predictor"])
        with pytest.raises((jsonschema.ValidationError, kv.ValidationError)):
            validate_inference_service(bad)


def test_rendered_inference_service_validates_and_matches_base():
    isvc = k8s.render_inference_service("shoprec-seqrec", "models:/shoprec-seqrec@champion")
    validate_inference_service(isvc)
    base = yaml.safe_load((MANIFESTS / "base" / "inferenceservice.yaml").read_text())
    assert base == isvc, "manifests/base/inferenceservice.yaml is out of date with shoprec.pipeline.k8s"
    c = isvc["spec"]["predictor"]["containers"][0]
    assert c["args"][:3] == ["serve", "--model", "models:/shoprec-seqrec@champion"] and "--port" in c["args"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz" and c["startupProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e for e in c["env"]}
    assert env["MLFLOW_TRACKING_URI"]["valueFrom"]["secretKeyRef"] == {"name": "shoprec-mlflow", "key": "tracking-uri"}
    with pytest.raises(ValueError):
        k8s.render_inference_service("x", "models:/x@champion", min_replicas=3, max_replicas=2)


def test_trainjob_from_shoprec_trainjob_validates():
    trainjob = pytest.importorskip("shoprec.pipeline.trainjob")
    doc = trainjob.render_trainjob("shoprec-train-1", k8s.trainer_image(), "s3://b/features", "s3://b/model",
                                   recipe="{}", epochs=2, nodes=2, gpus_per_node=8, secrets=trainjob.SECRET_ENV)
    validate_trainjob(doc)
    bad = json.loads(json.dumps(doc))
    bad["spec"]["trainer"]["numNode"] = 2
    with pytest.raises(jsonschema.ValidationError):
        validate_trainjob(bad)
    del bad["spec"]["trainer"]["numNode"]
    del bad["spec"]["runtimeRef"]
    with pytest.raises(jsonschema.ValidationError):
        validate_trainjob(bad)


# ---------------------------------------------------------------- what the objects must say
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workloads_are_non_root_probed_and_bounded(rendered, overlay):
    for doc in rendered[overlay]:
        if doc["kind"] not in ("Deployment", "StatefulSet", "InferenceService"):
            continue
        pod = _pod_spec(doc)
        for c in _containers(doc):
            where = f"{overlay} {doc['kind']}/{doc['metadata']['name']}/{c['name']}"
            assert c["resources"]["requests"] and c["resources"]["limits"], where
            assert "readinessProbe" in c and "livenessProbe" in c, where
            assert (c.get("securityContext", {}).get("runAsNonRoot") or pod.get("securityContext", {}).get("runAsNonRoot")), where
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, where
            image = c["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), where
            for e in c.get("env", []):
                if re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", e["name"]):
                    assert "valueFrom" in e and "value" not in e, (where, e["name"])
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in SECRETS.get(ref["name"], set()), (where, ref)


def test_overlays_differ_where_they_should(rendered):
    def find(overlay, kind, name):
        return next(d for d in rendered[overlay] if d["kind"] == kind and d["metadata"]["name"] == name)

    dev, prod = find("overlays/dev", "InferenceService", "shoprec-seqrec"), find("overlays/prod", "InferenceService", "shoprec-seqrec")
    assert (dev["spec"]["predictor"]["minReplicas"], dev["spec"]["predictor"]["maxReplicas"]) == (1, 1)
    assert (prod["spec"]["predictor"]["minReplicas"], prod["spec"]["predictor"]["maxReplicas"]) == (2, 8)
    assert find("overlays/prod", "Deployment", "mlflow")["spec"]["replicas"] == 2
    assert dev["spec"]["predictor"]["containers"][0]["image"].endswith(":0.1.0-dev")
    assert prod["spec"]["predictor"]["containers"][0]["image"] == k8s.server_image().rsplit(":", 1)[0] + f":{k8s.VERSION}"
    assert any(d["kind"] == "PodDisruptionBudget" for d in rendered["overlays/prod"])


def test_mlflow_uses_postgres_and_s3_with_credentials_from_secrets(rendered):
    mlflow = next(d for d in rendered["base"] if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow")
    c = mlflow["spec"]["template"]["spec"]["containers"][0]
    assert "--serve-artifacts" in c["args"]
    assert any(a.startswith("--artifacts-destination=s3://") for a in c["args"])
    env = {e["name"]: e for e in c["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"].startswith("postgresql+psycopg2://$(DB_USER):$(DB_PASSWORD)@mlflow-postgres")
    assert env["DB_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "shoprec-mlflow-db"
    pg = next(d for d in rendered["base"] if d["kind"] == "StatefulSet")
    assert pg["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    assert not any(d["kind"] == "Secret" for o in OVERLAYS for d in rendered[o])


def test_pipeline_role_allows_trainjobs_and_inferenceservices_and_nothing_more(rendered):
    roles = [d for d in rendered["base"] if d["kind"] in ("Role", "ClusterRole")]
    assert [r["kind"] for r in roles] == ["Role"]
    rules = {(g, res): set(r["verbs"]) for r in roles[0]["rules"] for g in r["apiGroups"] for res in r["resources"]}
    verbs = {"create", "get", "list", "watch", "patch"}
    assert rules == {("trainer.kubeflow.org", "trainjobs"): verbs | {"delete"},  # the launcher deletes its job
                     ("serving.kserve.io", "inferenceservices"): verbs}
    binding = next(d for d in rendered["base"] if d["kind"] == "RoleBinding")
    assert binding["roleRef"]["name"] == roles[0]["metadata"]["name"]
    assert {"name": "shoprec-pipeline", "kind": "ServiceAccount", "namespace": "shoprec"} in binding["subjects"]


def test_network_policies_deny_by_default_and_guard_postgres(rendered):
    policies = {d["metadata"]["name"]: d for d in rendered["base"] if d["kind"] == "NetworkPolicy"}
    deny = policies["default-deny-ingress"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    pg = policies["mlflow-postgres"]["spec"]["ingress"]
    assert pg == [{"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}}}],
                   "ports": [{"port": 5432, "protocol": "TCP"}]}]
    server = policies["shoprec-server"]["spec"]["podSelector"]["matchLabels"]
    isvc = next(d for d in rendered["base"] if d["kind"] == "InferenceService")
    assert server.items() <= isvc["spec"]["predictor"]["labels"].items()


# ---------------------------------------------------------------- no secrets in images/ or manifests/
# A name that ends in one of these words (DB_PASSWORD, api-token, AWS_SECRET_ACCESS_KEY, client_secret),
# not one that merely contains it (tokenizers, automountServiceAccountToken, secretKeyRef).
_SECRET_NAME = re.compile(r"(^|[_.-])(passw(or)?d|secret|token|api[-_]?key|access[-_]?key|private[-_]?key)s?$", re.I)
_PLACEHOLDER = re.compile(r"^(\$\(|\$\{|\$[A-Z_]|<|\"?\$\(|\"\$)")
_PATTERNS = [
    (re.compile(r"AKIA[0-9A-Z]{16}"), "AWS access key id"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "private key"),
    (re.compile(r"gh[pousr]_[A-Za-z0-9]{36}"), "GitHub token"),
    (re.compile(r"xox[baprs]-[A-Za-z0-9-]{10,}"), "Slack token"),
    (re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@$]+:([^@\s/$][^@\s/]*)@"), "password in a URL"),
]


def find_secrets(text: str, name: str) -> list[str]:
    """Literal credentials in one file's text (placeholders such as $(VAR), ${VAR} or <...> are fine)."""
    found = [f"{name}: {what}" for rx, what in _PATTERNS if rx.search(text)]
    for i, line in enumerate(text.splitlines(), start=1):
        bare = line.split("#", 1)[0] if not line.lstrip().startswith("#") else ""
        # Dockerfile ENV/ARG NAME=value or NAME value
        m = re.match(r"\s*(ENV|ARG)\s+(.*)", bare)
        if m:
            for k, v in re.findall(r"(\w+)[= ]\s*(\S+)", m.group(2)):
                if _SECRET_NAME.search(k) and not _PLACEHOLDER.match(v):
                    found.append(f"{name}:{i}: {m.group(1)} {k} has a value")
        # key: value, key=value, --flag=value with a secret-like key and a literal value
        for k, v in re.findall(r"([\w.-]+)\s*[:=]\s*([^\s,}]+)", bare):
            v = v.strip("'\"")
            if _SECRET_NAME.search(k) and v and not _PLACEHOLDER.match(v) and not k.endswith(("Ref", "_FILE", "-file")):
                if re.fullmatch(r"[\w.-]*", v) and (v.startswith(("shoprec-", "secret-", "api-", "access-")) or v in (
                        "password", "username", "token", "api-token", "secret-access-key", "access-key-id")):
                    continue  # the name of a Secret or of a key in it, not a value
                found.append(f"{name}:{i}: {k} = literal value")
    return found


@pytest.mark.parametrize("sample, leaks", [
    ("ENV DB_PASSWORD=hunter2\n", True),
    ("ARG API_TOKEN=abc123\n", True),
    ("env:\n  - name: X\n    password: s3cr3t\n", True),
    ("uri: postgresql://mlflow:s3cr3t@db:5432/mlflow\n", True),
    ("key: AKIAIOSFODNN7EXAMPLE\n", True),
    ("-----BEGIN RSA PRIVATE KEY-----\n", True),
    ("--from-literal=password=\"$(openssl rand -hex 24)\"\n", False),
    ("value: postgresql+psycopg2://$(DB_USER):$(DB_PASSWORD)@mlflow-postgres:5432/mlflow\n", False),
    ("secretKeyRef:\n  name: shoprec-s3\n  key: secret-access-key\n", False),
    ("ENV PIP_NO_CACHE_DIR=1\n", False),
])
def test_the_secret_scanner_tells_secrets_from_references(sample, leaks):
    assert bool(find_secrets(sample, "sample")) == leaks, find_secrets(sample, "sample")


def test_no_literal_secrets_in_images_or_manifests():
    files = [p for d in ("images", "manifests") for p in (ROOT / d).rglob("*")
             if p.is_file() and p.suffix not in (".pyc",) and "__pycache__" not in p.parts]
    assert len(files) > 10
    problems = [x for p in files for x in find_secrets(p.read_text(errors="replace"), str(p.relative_to(ROOT)))]
    assert problems == []


# ---------------------------------------------------------------- applying the InferenceService
class _FakeApiServer(BaseHTTPRequestHandler):
    """A recording stand-in for the Kubernetes API server's custom-objects endpoints (not a real one)."""

    objects: dict = {}
    requests: list = []

    def _reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        self.requests.append(("GET", self.path, self.headers.get("Content-Type"), None))
        if self.path in self.objects:
            self._reply(200, self.objects[self.path])
        else:
            self._reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})

    def _body(self):
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))

    def do_POST(self):  # noqa: N802
        body = self._body()
        self.requests.append(("POST", self.path, self.headers.get("Content-Type"), body))
        self.objects[f"{self.path}/{body['metadata']['name']}"] = body
        self._reply(201, body)

    def do_PATCH(self):  # noqa: N802
        body = self._body()
        self.requests.append(("PATCH", self.path, self.headers.get("Content-Type"), body))
        self.objects[self.path] = body
        self._reply(200, body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_cluster(tmp_path, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeApiServer)
    _FakeApiServer.objects, _FakeApiServer.requests = {}, []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "t",
              "clusters": [{"name": "t", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
              "users": [{"name": "t", "user": {"token": "test-only"}}],
              "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}]}
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield _FakeApiServer
    server.shutdown()


def test_apply_creates_then_patches_the_inference_service(fake_cluster):
    manifest = k8s.render_inference_service("shoprec-seqrec", "models:/shoprec-seqrec@champion")
    k8s.apply_inference_service(manifest, "shoprec")
    manifest["metadata"]["annotations"]["shoprec/model-version"] = "7"
    k8s.apply_inference_service(manifest, "shoprec")
    path = "/apis/serving.kserve.io/v1beta1/namespaces/shoprec/inferenceservices"
    calls = [(m, p) for m, p, _, _ in fake_cluster.requests]
    assert calls == [("GET", f"{path}/shoprec-seqrec"), ("POST", path), ("GET", f"{path}/shoprec-seqrec"),
                     ("PATCH", f"{path}/shoprec-seqrec")]
    patch = fake_cluster.requests[-1]
    assert patch[2] == "application/merge-patch+json"
    assert patch[3]["metadata"]["annotations"]["shoprec/model-version"] == "7"
    validate_inference_service(fake_cluster.requests[1][3])


def test_apply_without_a_cluster_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(k8s.NoClusterError, match="no Kubernetes cluster configured"):
        k8s.apply_inference_service(k8s.render_inference_service("x", "models:/x@champion"))
