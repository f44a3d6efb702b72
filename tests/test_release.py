"""Gate -> canary -> promote: shoprec.pipeline.deploy against a recording stand-in of the Kubernetes API server
(the real kubernetes client talks HTTP to it), a real mlflow server, and a real `shoprec serve`.

The stand-in keeps InferenceServices, applies an apply-patch the way the API server does for the fields
shoprec sends (maps merged, ``containers`` merged by name, other lists replaced), bumps the generation
on a spec change and reports Ready (or not) as each test sets. It is not a Kubernetes API server.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml

from shoprec.pipeline import deploy, k8s
from shoprec.registry import versions as registry
from tests.conftest import free_port, start_service
from tests.test_registry import write_evaluation

PATH = "/apis/serving.kserve.io/v1beta1/namespaces/shoprec/inferenceservices"


def _merge(live, applied):
    if isinstance(live, dict) and isinstance(applied, dict):
        out = dict(live)
        for k, v in applied.items():
            out[k] = _merge(live.get(k), v) if k in live else v
        return out
    if isinstance(live, list) and isinstance(applied, list) and all(isinstance(x, dict) and "name" in x
                                                                     for x in live + applied):
        by_name = {x["name"]: x for x in live}
        return [_merge(by_name[x["name"]], x) if x["name"] in by_name else x for x in applied] + \
            [x for x in live if x["name"] not in {a["name"] for a in applied}]
    return applied


def _drop_unsent(live_spec: dict, applied_spec: dict) -> dict:
    """Server-side apply removes a field shoprec-deploy applied before and leaves out now: here, the one
    such field shoprec ever leaves out, canaryTrafficPercent."""
    if "canaryTrafficPercent" not in applied_spec.get("predictor", {}):
        live_spec.get("predictor", {}).pop("canaryTrafficPercent", None)
    return live_spec


class FakeKube(BaseHTTPRequestHandler):
    objects: dict = {}
    requests: list = []
    ready = "yes"  # "yes" | "no": the Ready condition the stand-in reports
    status_url = "http://canary.invalid"
    reject_apply = 0  # answer apply-patches with this HTTP status (0: accept)
    atomic_containers = False  # merge containers as one atomic list (what a CRD without list-map keys does)

    def _reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self, body=None):
        url = urlsplit(self.path)
        self.requests.append({"method": self.command, "path": url.path, "query": dict(parse_qsl(url.query)),
                              "content_type": self.headers.get("Content-Type"), "body": body})
        return url.path

    def _with_status(self, obj):
        gen = obj["metadata"]["generation"]
        cond = {"type": "Ready", "status": "True"} if self.ready == "yes" else {
            "type": "Ready", "status": "False", "reason": "RevisionMissing", "message": "pods not ready: ImagePullBackOff"}
        return {**obj, "status": {"observedGeneration": gen, "conditions": [cond], "address": {"url": self.status_url}}}

    def do_GET(self):  # noqa: N802
        path = self._record()
        if path in self.objects:
            self._reply(200, self._with_status(self.objects[path]))
        else:
            self._reply(404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404})

    def _body(self):
        return self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()

    def do_POST(self):  # noqa: N802
        body = json.loads(self._body())
        path = self._record(body)
        body["metadata"]["generation"] = 1
        self.objects[f"{path}/{body['metadata']['name']}"] = body
        self._reply(201, body)

    def do_PATCH(self):  # noqa: N802
        body = yaml.safe_load(self._body())  # apply-patch+yaml: JSON is YAML
        path = self._record(body)
        if self.reject_apply:
            return self._reply(self.reject_apply, {"kind": "Status", "status": "Failure", "reason": "Invalid",
                                                   "message": "admission webhook denied the request"})
        live = json.loads(json.dumps(self.objects[path]))
        if self.atomic_containers:
            live["spec"]["predictor"]["containers"] = []
        merged = _merge(live, body)
        merged["spec"] = _drop_unsent(merged["spec"], body["spec"])
        if merged["spec"] != self.objects[path]["spec"]:
            merged["metadata"]["generation"] = live["metadata"]["generation"] + 1
        if dict(parse_qsl(urlsplit(self.path).query)).get("dryRun") != "All":
            self.objects[path] = merged
        self._reply(200, merged)

    def log_message(self, *args):
        pass


@pytest.fixture
def kube(tmp_path, monkeypatch):
    """(CustomObjectsApi pointed at the stand-in, the stand-in class)."""
    from kubernetes import client

    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKube)
    FakeKube.objects, FakeKube.requests, FakeKube.ready = {}, [], "yes"
    FakeKube.reject_apply, FakeKube.atomic_containers, FakeKube.status_url = 0, False, "http://canary.invalid"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{server.server_port}"
    yield client.CustomObjectsApi(client.ApiClient(cfg)), FakeKube
    server.shutdown()


def existing(fake, model_uri="models:/m@champion", name="m"):
    """What `kubectl apply -k manifests/overlays/prod` leaves: the overlay's replicas, resources and image."""
    obj = k8s.render_inference_service(name, model_uri, image="registry.example.com/shoprec-server:1.2.3",
                                       min_replicas=2, max_replicas=8, cpu="1", memory="2Gi")
    obj["metadata"]["generation"] = 1
    fake.objects[f"{PATH}/{name}"] = obj
    return obj


def patches(fake, dry_run=None):
    out = [r for r in fake.requests if r["method"] == "PATCH"]
    return [r for r in out if (r["query"].get("dryRun") == "All") == dry_run] if dry_run is not None else out


# ------------------------------------------------------------------ deploy
def test_the_owned_fields_are_exactly_these():
    body = k8s.owned_fields("m", "shoprec", "models:/m/7", "7", ranker_uri="models:/r/3", canary_percent=10,
                            previous_uri="models:/m/6", previous_ranker_uri="models:/r/2")
    assert body == {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "m", "namespace": "shoprec", "annotations": {
            "shoprec/model-version": "7", "shoprec/model-uri": "models:/m/7",
            "serving.kserve.io/enable-tag-routing": "true", "shoprec/previous-model-uri": "models:/m/6",
            "shoprec/previous-ranker-uri": "models:/r/2"}},
        "spec": {"predictor": {"canaryTrafficPercent": 10, "containers": [{"name": "kserve-container", "args": [
            "serve", "--model", "models:/m/7", "--ranker", "models:/r/3", "--host", "0.0.0.0", "--port", "8080"]}]}}}
    full = k8s.owned_fields("m", "shoprec", "models:/m/7", "7", canary_percent=None)
    assert "canaryTrafficPercent" not in full["spec"]["predictor"]  # all traffic
    assert k8s.owned_fields("m", "shoprec", "models:/m/7", "7", canary_percent=0)["spec"]["predictor"][
        "canaryTrafficPercent"] == 0
    with pytest.raises(ValueError, match="canary_percent must be 0..100, got 150"):
        k8s.owned_fields("m", "shoprec", "models:/m/7", "7", canary_percent=150)
    with pytest.raises(ValueError, match="needs a registered version number, got 'champion'"):
        deploy.pinned_uri("m", "champion")


def test_deploy_applies_a_pinned_canary_server_side_and_leaves_the_overlays_fields(kube):
    api, fake = kube
    before = existing(fake)
    record = deploy.deploy("m", "7", target="kserve", api=api, ranker_name="r", ranker_version="3",
                           canary_percent=10, ready_timeout_s=5, poll_s=0.01)
    dry, real = patches(fake, dry_run=True), patches(fake, dry_run=False)
    assert len(dry) == 1 and len(real) == 1 and fake.requests.index(dry[0]) < fake.requests.index(real[0])
    want = k8s.owned_fields("m", "shoprec", "models:/m/7", "7", "models:/r/3", canary_percent=10,
                            previous_uri="models:/m@champion")
    for p in (dry[0], real[0]):
        assert p["path"] == f"{PATH}/m"
        assert p["content_type"] == "application/apply-patch+yaml"
        assert p["query"]["fieldManager"] == "shoprec-deploy" and p["query"]["force"] == "true"
        assert p["body"] == want
    live = fake.objects[f"{PATH}/m"]
    c = live["spec"]["predictor"]["containers"][0]
    assert c["args"][:5] == ["serve", "--model", "models:/m/7", "--ranker", "models:/r/3"]
    assert live["spec"]["predictor"]["canaryTrafficPercent"] == 10
    # What the overlays own is untouched.
    b = before["spec"]["predictor"]
    assert c["image"] == "registry.example.com/shoprec-server:1.2.3" and c["resources"] == b["containers"][0]["resources"]
    assert (live["spec"]["predictor"]["minReplicas"], live["spec"]["predictor"]["maxReplicas"]) == (2, 8)
    assert record["applied"] and record["model_uri"] == "models:/m/7" and record["canary_percent"] == 10
    assert record["previous_model_uri"] == "models:/m@champion" and record["generation"] == 2
    assert not [r for r in fake.requests if r["method"] == "POST"]

    # A retry of the same rollout keeps what it replaced (from the annotation), not itself.
    again = deploy.deploy("m", "7", target="kserve", api=api, ranker_name="r", ranker_version="3",
                          canary_percent=10, ready_timeout_s=5, poll_s=0.01)
    assert again["previous_model_uri"] == "models:/m@champion"


def test_deploy_creates_the_service_when_there_is_none(kube, monkeypatch):
    api, fake = kube
    monkeypatch.setenv("SHOPREC_SERVER_IMAGE", "registry.example.com/team/shoprec-server:9.9")
    record = deploy.deploy("m", "1", target="kserve", api=api, ready_timeout_s=5, poll_s=0.01)
    posts = [r for r in fake.requests if r["method"] == "POST"]
    assert len(posts) == 1 and not patches(fake)
    assert posts[0]["query"] == {"fieldManager": "shoprec-deploy-create"}
    c = posts[0]["body"]["spec"]["predictor"]["containers"][0]
    assert c["image"] == "registry.example.com/team/shoprec-server:9.9"  # the compile-time choice reaches it
    assert c["args"][:3] == ["serve", "--model", "models:/m/1"]
    assert "canaryTrafficPercent" not in posts[0]["body"]["spec"]["predictor"]  # nothing to split with
    assert posts[0]["body"]["metadata"]["annotations"]["shoprec/model-version"] == "1"
    assert record["previous_model_uri"] == "" and record["canary_percent"] is None


def test_deploy_fails_loudly_when_the_service_does_not_get_ready(kube):
    api, fake = kube
    existing(fake)
    fake.ready = "no"
    t0 = time.monotonic()
    with pytest.raises(k8s.RolloutError, match=r"InferenceService shoprec/m not Ready after 0.5 s: Ready=False "
                                               r"RevisionMissing: pods not ready: ImagePullBackOff"):
        deploy.deploy("m", "7", target="kserve", api=api, ready_timeout_s=0.5, poll_s=0.05)
    assert 0.5 <= time.monotonic() - t0 < 5
    gets = [r for r in fake.requests if r["method"] == "GET"]
    assert len(gets) >= 3  # it polled until the deadline, not once


def test_wait_ready_checks_the_generation_and_honours_its_timeout():
    class Api:  # get_namespaced_custom_object only: an object whose status is one generation behind
        calls = 0

        def get_namespaced_custom_object(self, *args):
            Api.calls += 1
            return {"metadata": {"name": "m", "generation": 3},
                    "status": {"observedGeneration": 2, "conditions": [{"type": "Ready", "status": "True"}]}}

    now = [0.0]
    with pytest.raises(k8s.RolloutError, match="not Ready after 30 s: status is for generation 2, the spec is "
                                               "generation 3"):
        k8s.wait_ready(Api(), "shoprec", "m", timeout_s=30, poll_s=10, clock=lambda: now[0],
                       sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert Api.calls == 4 and now[0] == 30  # t = 0, 10, 20, 30


def test_deploy_fails_loudly_when_the_apply_is_rejected(kube):
    api, fake = kube
    existing(fake)
    fake.reject_apply = 422
    with pytest.raises(k8s.RolloutError, match=r"server-side apply of InferenceService shoprec/m failed \(dry run\): "
                                               r"HTTP 422 .*admission webhook denied the request"):
        deploy.deploy("m", "7", target="kserve", api=api, ready_timeout_s=1, poll_s=0.01)


def test_nothing_is_applied_when_the_dry_run_would_drop_the_image(kube):
    api, fake = kube
    existing(fake)
    fake.atomic_containers = True
    with pytest.raises(k8s.RolloutError, match="would drop the kserve-container container's image and resources"):
        deploy.deploy("m", "7", target="kserve", api=api, ready_timeout_s=1, poll_s=0.01)
    assert len(patches(fake)) == 1 and patches(fake, dry_run=True)
    assert fake.objects[f"{PATH}/m"]["spec"]["predictor"]["containers"][0]["args"][2] == "models:/m@champion"


def test_deploy_without_a_cluster_is_an_error_not_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(k8s.NoClusterError, match="no Kubernetes cluster configured"):
        deploy.deploy("m", "7", target="kserve")


# ------------------------------------------------------------------ canary checks and promote
@pytest.fixture(scope="module")
def release(mlflow_server, tiny_model, tmp_path_factory):
    """rel-seqrec v1 and v2 (both passed their gate; v1 champion), and a real server on models:/rel-seqrec/1."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    mp.setenv("SHOPREC_USER", "pipeline")
    root = tmp_path_factory.mktemp("release")
    for i in (1, 2):
        registry.register(tiny_model, write_evaluation(root / f"e{i}", gate=True), "rel-seqrec", kfp_run_id=f"rel-{i}")
    registry.register(tiny_model, write_evaluation(root / "e3", gate=False), "rel-seqrec", kfp_run_id="rel-3")
    registry.promote("rel-seqrec", "1", reason="first")
    port = free_port()
    svc = start_service([sys.executable, "-m", "shoprec.cli", "serve", "--model", "models:/rel-seqrec/1",
                         "--port", str(port)], f"http://127.0.0.1:{port}", "/healthz", root / "serve.log",
                        env={"MLFLOW_TRACKING_URI": mlflow_server.url}, timeout=180)
    yield svc
    svc.stop()
    mp.undo()


def _deployment(version, previous="models:/rel-seqrec/1"):
    return {"target": "kserve", "model_name": "rel-seqrec", "version": version,
            "model_uri": f"models:/rel-seqrec/{version}", "ranker_name": "", "ranker_version": "", "ranker_uri": "",
            "namespace": "shoprec", "service": "rel-seqrec", "canary_percent": 10, "previous_model_uri": previous,
            "previous_ranker_uri": ""}


def test_canary_checks_against_a_real_server(release):
    checks = deploy.canary_checks(release.url, "1", max_error_rate=0.0, smoke_requests=3)
    assert checks["version"] == "1" and checks["errors"] == 0 and checks["requests"] >= 6
    assert set(checks["smoke_answers"]) == {200}
    with pytest.raises(deploy.CanaryFailed, match=f"canary at {release.url} serves v1, expected v2"):
        deploy.canary_checks(release.url, "2", max_error_rate=0.0)


def test_promote_gives_a_passed_canary_all_traffic_and_moves_the_champion(release, kube):
    api, fake = kube
    existing(fake, "models:/rel-seqrec/1", name="rel-seqrec")
    fake.status_url = release.url
    deploy.deploy("rel-seqrec", "1", target="kserve", api=api, canary_percent=10, ready_timeout_s=5, poll_s=0.01)
    registry.record_alias("rel-seqrec", "champion", "2", "test setup: someone else's champion")
    result = deploy.promote(_deployment("1", previous=""), max_error_rate=0.01, api=api, ready_timeout_s=5,
                            poll_s=0.01, smoke_requests=2)
    last = patches(fake, dry_run=False)[-1]
    assert last["body"] == k8s.owned_fields("rel-seqrec", "shoprec", "models:/rel-seqrec/1", "1", canary_percent=None)
    assert "canaryTrafficPercent" not in fake.objects[f"{PATH}/rel-seqrec"]["spec"]["predictor"]
    assert result["promoted"] and result["checks"]["error_rate"] == 0.0
    assert registry.version_by_alias("rel-seqrec", "champion").version == "1"
    assert registry.alias_history("rel-seqrec")[-1]["reason"].startswith("canary passed: ")
    mv = registry.client().get_model_version("rel-seqrec", "1")
    assert mv.tags["shoprec.canary"].startswith("passed: canary passed")


def test_a_failed_canary_is_rolled_back_and_the_champion_stays(release, kube):
    api, fake = kube
    existing(fake, "models:/rel-seqrec/2", name="rel-seqrec")  # deploy put v2 up as a canary ...
    fake.status_url = release.url  # ... but what answers there is v1
    champion = registry.version_by_alias("rel-seqrec", "champion").version
    with pytest.raises(deploy.CanaryFailed) as e:
        deploy.promote(_deployment("2"), api=api, ready_timeout_s=5, poll_s=0.01)
    msg = str(e.value)
    assert f"canary at {release.url} serves v1, expected v2" in msg
    assert "rolled back shoprec/rel-seqrec to models:/rel-seqrec/1" in msg
    assert f"@champion still v{champion}, v2 stays @challenger" in msg
    last = patches(fake, dry_run=False)[-1]
    assert last["body"] == k8s.owned_fields("rel-seqrec", "shoprec", "models:/rel-seqrec/1", "1", canary_percent=0)
    assert registry.version_by_alias("rel-seqrec", "champion").version == champion
    assert registry.client().get_model_version("rel-seqrec", "2").tags["shoprec.canary"].startswith("failed: canary")


def test_promote_refuses_when_another_rollout_replaced_the_canary(release, kube):
    api, fake = kube
    existing(fake, "models:/rel-seqrec/1", name="rel-seqrec")
    with pytest.raises(k8s.RolloutError, match="serves models:/rel-seqrec/1, not models:/rel-seqrec/2 that deploy "
                                               "rolled out"):
        deploy.promote(_deployment("2"), api=api, ready_timeout_s=5, poll_s=0.01)
    assert not patches(fake)


def test_promote_refuses_a_version_that_failed_its_gate(release, kube):
    api, _ = kube
    with pytest.raises(deploy.CanaryFailed, match=r"rel-seqrec v3 did not pass its evaluation gate"):
        deploy.promote(_deployment("3"), api=api)


class FlakyServer(BaseHTTPRequestHandler):
    """A stand-in model server whose /v1/search fails every other time and whose /metrics counts that."""

    counts = {"200": 0, "500": 0}

    def _reply(self, code, body, ctype="application/json"):
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        if self.path == "/healthz":
            return self._reply(200, {"version": "4"})
        lines = [f'shoprec_requests_total{{path="/v1/search",status="{s}"}} {n}' for s, n in self.counts.items()]
        self._reply(200, "# TYPE shoprec_requests_total counter\n" + "\n".join(lines) + "\n", "text/plain")

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status = "500" if sum(self.counts.values()) % 2 else "200"
        self.counts[status] += 1
        self._reply(int(status), {"items": [], "version": "4"})

    def log_message(self, *args):
        pass


def test_canary_checks_fail_on_the_servers_error_rate():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        with pytest.raises(deploy.CanaryFailed, match=r"canary error rate 0.500 \(2 of 4 /v1 requests answered 5xx\) "
                                                      r"is above max_error_rate 0.01"):
            deploy.canary_checks(url, "4", max_error_rate=0.01, smoke_requests=2)
        FlakyServer.counts = {"200": 0, "500": 0}
        assert deploy.canary_checks(url, "4", max_error_rate=0.6, smoke_requests=2)["error_rate"] == 0.5
    finally:
        server.shutdown()


def test_error_rate_counts_5xx_of_v1_paths_only():
    text = "\n".join(['# TYPE shoprec_requests counter',
                      'shoprec_requests_total{path="/v1/recommend",status="200"} 90',
                      'shoprec_requests_total{path="/v1/recommend",status="404"} 5',
                      'shoprec_requests_total{path="/v1/search",status="503"} 5',
                      'shoprec_requests_total{path="/healthz",status="500"} 7']) + "\n"
    assert deploy.error_rate(text) == (5, 100)


# ------------------------------------------------------------------ local target
def test_local_deploy_pins_the_version_and_promote_checks_the_gate(release, tmp_path):
    out = tmp_path / "pointer.json"
    first = deploy.deploy("rel-seqrec", "2", target="local", out=out, ranker_name="r", ranker_version="5")
    pointer = json.loads(out.read_text())
    assert pointer["model_uri"] == "models:/rel-seqrec/2" and pointer["ranker_uri"] == "models:/r/5"
    assert pointer["serve"] == "shoprec serve --model models:/rel-seqrec/2 --ranker models:/r/5"
    assert first["previous_model_uri"] == ""
    second = deploy.deploy("rel-seqrec", "3", target="local", out=out)
    assert second["previous_model_uri"] == "models:/rel-seqrec/2"
    champion = registry.version_by_alias("rel-seqrec", "champion").version
    with pytest.raises(deploy.CanaryFailed, match="rel-seqrec v3 did not pass its evaluation gate"):
        deploy.promote(second)
    assert registry.version_by_alias("rel-seqrec", "champion").version == champion
    local = {**second, "version": "2", "model_uri": "models:/rel-seqrec/2"}
    result = deploy.promote(local)
    assert result["promoted"] and registry.version_by_alias("rel-seqrec", "champion").version == "2"
    assert deploy.promote(local)["moves"] == []  # a retry moves nothing


def test_the_ranker_served_beside_a_new_recommender(release):
    champion = registry.version_by_alias("rel-seqrec", "champion").version
    assert deploy.ranker_to_serve("rel-seqrec", "3", ranker_gate=True) == "3"  # its own gate passed: the new one
    assert deploy.ranker_to_serve("rel-seqrec", "3", ranker_gate=False) == champion  # else the champion it has
    assert deploy.ranker_to_serve("no-such-ranker", "1", ranker_gate=False) == ""  # none: served without one
    assert deploy.ranker_to_serve("", "3", ranker_gate=True) == ""
