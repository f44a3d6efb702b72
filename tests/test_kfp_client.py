"""shoprec.pipeline.kfp_client and `shoprec pipeline submit/schedule` against a RECORDING HTTP server, not a KFP server.

The server on 127.0.0.1 answers the v2beta1 endpoints kfp.Client calls (healthz, pipelines and their
versions, multipart uploads, experiments, runs, recurringruns) with plausible JSON, keeps pipelines,
versions, experiments and recurring runs in memory per namespace, and records every request with its
headers. The tests then check what the client sent against KFP's own API models (kfp_server_api:
V2beta1Run, V2beta1RecurringRun, ...): paths, methods, query parameters (namespace), the Authorization
header, the uploaded package, pipeline_version_reference, the cron trigger, and the order of the
requests (a replacing schedule is created before the old one is deleted). In v2beta1 a run or recurring
run has no namespace of its own to send (the recurring run's is output only): it belongs to the namespace
of its experiment, so the tests check the experiment's namespace and that the run names that experiment.
This proves the requests are well formed for the KFP API; it does not prove a real KFP server accepts them.
"""

import email.parser
import email.policy
import hashlib
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from click.testing import CliRunner

kfp = pytest.importorskip("kfp")
kfp_server_api = pytest.importorskip("kfp_server_api")

from shoprec.cli import main  # noqa: E402
from shoprec.pipeline import kfp_client  # noqa: E402

API = "/apis/v2beta1"
NOW = "2026-11-29T07:00:00Z"


def _multipart_file(content_type: str, body: bytes) -> bytes:
    """The uploaded file of a multipart/form-data body."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    [part] = [p for p in msg.iter_parts() if p.get_filename()]
    return part.get_payload(decode=True)


def _wanted_name(query: dict) -> str | None:
    if "filter" not in query:
        return None
    preds = json.loads(query["filter"][0]).get("predicates", [])
    return next((p.get("string_value") or p.get("stringValue") for p in preds), None)


class Recorder(BaseHTTPRequestHandler):
    """Records (method, path, query, headers, body); keeps pipelines, versions, experiments, recurring runs.

    ``server.token``: when set, a request without ``Authorization: Bearer <token>`` gets 401.
    ``server.fail``: {(method, path prefix): status} answered instead of doing the request."""

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> tuple[str, dict, dict | None]:
        url = urlparse(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        ctype = self.headers.get("Content-Type", "")
        body, upload = None, None
        if ctype.startswith("multipart/form-data"):
            upload = _multipart_file(ctype, raw)
        elif raw:
            body = json.loads(raw)
        self.server.requests.append({"method": self.command, "path": url.path, "query": parse_qs(url.query),
                                     "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body, "upload": upload})
        return url.path, parse_qs(url.query), body

    def _refused(self, path: str) -> bool:
        state = self.server
        if state.token and self.headers.get("Authorization") != f"Bearer {state.token}":
            self._send(401, {"error": "Unauthenticated: no valid bearer token", "code": 16})
            return True
        for (method, prefix), status in state.fail.items():
            if method == self.command and path.startswith(prefix):
                self._send(status, {"error": "injected failure", "code": 13})
                return True
        return False

    def do_GET(self):  # noqa: N802
        path, query, _ = self._record()
        if self._refused(path):
            return None
        state = self.server
        namespace = query.get("namespace", [""])[0]
        wanted = _wanted_name(query)
        if path == f"{API}/healthz":
            return self._send(200, {"multi_user": False})
        if path == f"{API}/experiments":
            exps = [e for e in state.experiments.values() if wanted in (None, e["display_name"])
                    and e.get("namespace", "") == namespace]
            return self._send(200, {"experiments": exps, "total_size": len(exps)})
        if path == f"{API}/pipelines":
            found = [p for p in state.pipelines.values() if wanted in (None, p["display_name"])
                     and p.get("namespace", "") == namespace]
            return self._send(200, {"pipelines": found, "total_size": len(found)})
        if path.startswith(f"{API}/pipelines/") and path.endswith("/versions"):
            pid = path[len(f"{API}/pipelines/"):-len("/versions")]
            found = [v for v in reversed(state.versions.values()) if v["pipeline_id"] == pid
                     and wanted in (None, v["display_name"])]  # newest first
            return self._send(200, {"pipeline_versions": found, "total_size": len(found)})
        if path == f"{API}/recurringruns":
            runs = [r for r in state.recurring.values() if not namespace or r.get("namespace") == namespace]
            return self._send(200, {"recurringRuns": runs, "total_size": len(runs)})
        return self._send(404, {"error": "not found", "code": 5})

    def do_POST(self):  # noqa: N802
        path, query, body = self._record()
        if self._refused(path):
            return None
        state = self.server
        if path == f"{API}/pipelines/upload":
            pipeline = {"pipeline_id": str(uuid.uuid4()), "display_name": query["name"][0],
                        "namespace": query.get("namespace", [""])[0], "created_at": NOW}
            state.pipelines[pipeline["pipeline_id"]] = pipeline
            self._add_version(pipeline["pipeline_id"], pipeline["display_name"])  # as KFP: a first version
            return self._send(200, pipeline)
        if path == f"{API}/pipelines/upload_version":
            pid = query["pipelineid"][0]
            if pid not in state.pipelines:
                return self._send(404, {"error": f"pipeline {pid} not found", "code": 5})
            return self._send(200, self._add_version(pid, query["name"][0]))
        if path == f"{API}/experiments":
            exp = {**body, "experiment_id": str(uuid.uuid4()), "created_at": NOW, "storage_state": "AVAILABLE"}
            state.experiments[exp["experiment_id"]] = exp
            return self._send(200, exp)
        if path == f"{API}/runs":
            return self._send(200, {**body, "run_id": str(uuid.uuid4()), "state": "PENDING", "created_at": NOW})
        if path == f"{API}/recurringruns":
            namespace = state.experiments.get(body.get("experiment_id"), {}).get("namespace", "")
            rr = {**body, "recurring_run_id": str(uuid.uuid4()), "status": "ENABLED", "created_at": NOW,
                  "namespace": namespace}  # output only: the experiment's
            state.recurring[rr["recurring_run_id"]] = rr
            return self._send(200, rr)
        if path.startswith(f"{API}/recurringruns/") and path.endswith(":disable"):
            rid = path[len(f"{API}/recurringruns/"):-len(":disable")]
            if rid not in state.recurring:
                return self._send(404, {"error": "not found", "code": 5})
            state.recurring[rid]["status"] = "DISABLED"
            return self._send(200, {})
        return self._send(404, {"error": "not found", "code": 5})

    def _add_version(self, pipeline_id: str, name: str) -> dict:
        state = self.server
        version = {"pipeline_id": pipeline_id, "pipeline_version_id": str(uuid.uuid4()), "display_name": name,
                   "created_at": NOW}
        state.versions[version["pipeline_version_id"]] = version
        state.packages[version["pipeline_version_id"]] = state.requests[-1]["upload"]
        return version

    def do_DELETE(self):  # noqa: N802
        path, _, _ = self._record()
        if self._refused(path):
            return None
        rid = path.rsplit("/", 1)[-1]
        self.server.recurring.pop(rid, None)
        return self._send(200, {})

    def log_message(self, *args):
        pass


@pytest.fixture
def kfp_server(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads/writes ~/.config/kfp/context.json
    for var in ("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT", "KF_PIPELINES_TOKEN", "KF_PIPELINES_SA_TOKEN_PATH",
                "KF_PIPELINES_NAMESPACE"):
        monkeypatch.delenv(var, raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.requests, server.experiments, server.recurring = [], {}, {}
    server.pipelines, server.versions, server.packages = {}, {}, {}
    server.token, server.fail = None, {}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_port}"
    yield server
    server.shutdown()


def _compile(path, times_default: int):
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11-slim")
    def hello(name: str, times: int) -> str:
        return name * times

    @dsl.pipeline(name="tiny")
    def tiny(name: str = "shop", times: int = times_default):
        hello(name=name, times=times)

    compiler.Compiler().compile(tiny, str(path))
    return path


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A tiny pipeline compiled here: one lightweight component, two parameters."""
    return _compile(tmp_path_factory.mktemp("pkg") / "tiny.yaml", 2)


@pytest.fixture(scope="module")
def package_v2(tmp_path_factory):
    """The same pipeline (same name) with another default: a second version of it."""
    return _compile(tmp_path_factory.mktemp("pkg2") / "tiny.yaml", 3)


def _model(body: dict, cls_name: str):
    """Deserialize a recorded body into the kfp_server_api model; every key must be one the model knows."""
    cls = getattr(kfp_server_api, cls_name)

    def known(node, cls):
        names = {v: k for k, v in cls.attribute_map.items()}
        for key, value in node.items():
            assert key in names, f"{cls_name}: unknown field {key!r}"
            t = cls.openapi_types[names[key]]
            if isinstance(value, dict) and hasattr(kfp_server_api, t):
                known(value, getattr(kfp_server_api, t))

    known(body, cls)
    return kfp_server_api.ApiClient()._ApiClient__deserialize(body, cls_name)


def _calls(server, method=None, path=None):
    return [r for r in server.requests if (method is None or r["method"] == method)
            and (path is None or r["path"] == path)]


def _version_name(package) -> str:
    return f"tiny-{hashlib.sha256(package.read_bytes()).hexdigest()[:12]}"


def test_submit_uploads_a_new_pipeline_and_runs_its_version(kfp_server, package):
    out = kfp_client.submit(package, kfp_server.url, experiment="nightly", params={"name": "x", "times": 3},
                            run_name="try-1")
    calls = [(r["method"], r["path"]) for r in kfp_server.requests if r["path"] != f"{API}/healthz"]
    [pipeline] = kfp_server.pipelines.values()
    [version] = kfp_server.versions.values()
    assert calls == [("GET", f"{API}/pipelines"), ("POST", f"{API}/pipelines/upload"),
                     ("GET", f"{API}/pipelines/{pipeline['pipeline_id']}/versions"), ("GET", f"{API}/experiments"),
                     ("POST", f"{API}/experiments"), ("POST", f"{API}/runs")]
    upload = _calls(kfp_server, "POST", f"{API}/pipelines/upload")[0]
    assert upload["query"]["name"] == ["tiny"] and "namespace" not in upload["query"]
    assert upload["upload"] == package.read_bytes()
    run = _model(_calls(kfp_server, "POST", f"{API}/runs")[0]["body"], "V2beta1Run")
    assert run.display_name == "try-1" and run.pipeline_spec is None
    assert run.pipeline_version_reference.pipeline_id == pipeline["pipeline_id"]
    assert run.pipeline_version_reference.pipeline_version_id == version["pipeline_version_id"]
    assert run.runtime_config.parameters == {"name": "x", "times": 3}
    exp = _model(_calls(kfp_server, "POST", f"{API}/experiments")[0]["body"], "V2beta1Experiment")
    assert exp.display_name == "nightly" and run.experiment_id == kfp_server.experiments.popitem()[0]
    assert out["run_id"] and out["url"].endswith(f"/#/runs/details/{out['run_id']}")
    assert (out["pipeline_id"], out["version_id"], out["uploaded"]) == (
        pipeline["pipeline_id"], version["pipeline_version_id"], True)


def test_a_changed_package_is_a_new_version_and_the_same_one_is_reused(kfp_server, package, package_v2):
    first = kfp_client.submit(package, kfp_server.url)
    second = kfp_client.submit(package_v2, kfp_server.url)
    [up] = _calls(kfp_server, "POST", f"{API}/pipelines/upload_version")
    assert up["query"]["pipelineid"] == [first["pipeline_id"]] and up["query"]["name"] == [_version_name(package_v2)]
    assert up["upload"] == package_v2.read_bytes()
    assert second["pipeline_id"] == first["pipeline_id"] and second["version_id"] != first["version_id"]
    assert second["version"] == _version_name(package_v2) and second["uploaded"] is True
    again = kfp_client.submit(package_v2, kfp_server.url)
    assert again["version_id"] == second["version_id"] and again["uploaded"] is False
    assert len(_calls(kfp_server, "POST", f"{API}/pipelines/upload_version")) == 1
    assert len(_calls(kfp_server, "POST", f"{API}/pipelines/upload")) == 1
    refs = [r["body"]["pipeline_version_reference"]["pipeline_version_id"] for r in _calls(kfp_server, "POST", f"{API}/runs")]
    assert refs == [first["version_id"], second["version_id"], second["version_id"]]


def test_submit_with_caching_off_uploads_a_package_that_says_so(kfp_server, package):
    out = kfp_client.submit(package, kfp_server.url, enable_caching=False)
    spec = next(yaml.safe_load_all(kfp_server.packages[out["version_id"]]))
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks and all(t["cachingOptions"]["enableCache"] is False for t in tasks.values())
    assert next(yaml.safe_load_all(package.read_text()))["root"]["dag"]["tasks"] != tasks  # the original is unchanged


def test_namespace_and_bearer_token_on_every_request(kfp_server, package):
    kfp_server.token = "team-a-token"
    out = kfp_client.submit(package, kfp_server.url, namespace="team-a", token="team-a-token", experiment="retrain")
    sched = kfp_client.schedule(package, kfp_server.url, namespace="team-a", token="team-a-token", experiment="retrain")
    listed = kfp_client.list_schedules(kfp_server.url, namespace="team-a", token="team-a-token")
    assert {r["headers"].get("authorization") for r in kfp_server.requests} == {"Bearer team-a-token"}
    for method, path in (("GET", f"{API}/pipelines"), ("POST", f"{API}/pipelines/upload"),
                         ("GET", f"{API}/experiments"), ("GET", f"{API}/recurringruns")):
        found = _calls(kfp_server, method, path)
        assert found and all(r["query"]["namespace"] == ["team-a"] for r in found), (method, path)
    [exp] = [_model(r["body"], "V2beta1Experiment") for r in _calls(kfp_server, "POST", f"{API}/experiments")]
    assert (exp.display_name, exp.namespace) == ("retrain", "team-a")
    [pipeline] = kfp_server.pipelines.values()
    assert pipeline["namespace"] == "team-a"
    run = _model(_calls(kfp_server, "POST", f"{API}/runs")[0]["body"], "V2beta1Run")
    rr = _model(_calls(kfp_server, "POST", f"{API}/recurringruns")[0]["body"], "V2beta1RecurringRun")
    team_a = kfp_server.experiments[run.experiment_id]
    assert team_a["namespace"] == "team-a" and rr.experiment_id == run.experiment_id
    assert run.pipeline_version_reference.pipeline_version_id == out["version_id"]
    assert rr.pipeline_version_reference.pipeline_version_id == sched["version_id"]
    assert sched["pipeline_id"] == out["pipeline_id"] == pipeline["pipeline_id"]
    assert [(s["recurring_run_id"], s["pipeline_version_id"]) for s in listed] == [
        (sched["recurring_run_id"], sched["version_id"])]
    assert kfp_client.list_schedules(kfp_server.url, namespace="team-b", token="team-a-token") == []


def test_a_wrong_token_is_refused_with_the_servers_answer(kfp_server, package):
    kfp_server.token = "right"
    with pytest.raises(kfp_client.KfpError, match="answered 401 .*no valid bearer token"):
        kfp_client.submit(package, kfp_server.url, token="wrong", namespace="team-a")
    assert not _calls(kfp_server, "POST", f"{API}/runs")


def test_token_file_is_read_again_on_every_request(kfp_server, package, tmp_path):
    token = tmp_path / "token"
    token.write_text("first-token\n")
    kfp_client.submit(package, kfp_server.url, token_file=token)
    n = len(kfp_server.requests)
    assert {r["headers"].get("authorization") for r in kfp_server.requests} == {"Bearer first-token"}
    token.write_text("rotated-token\n")  # the kubelet rotates a projected token in place
    kfp_client.list_schedules(kfp_server.url, token_file=token)
    assert {r["headers"].get("authorization") for r in kfp_server.requests[n:]} == {"Bearer rotated-token"}


def test_credentials_are_checked_before_any_request(kfp_server, package, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no KFP token file at {tmp_path / 'missing'}"):
        kfp_client.submit(package, kfp_server.url, token_file=tmp_path / "missing")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="token file .*empty is empty"):
        kfp_client.submit(package, kfp_server.url, token_file=tmp_path / "empty")
    with pytest.raises(ValueError, match="not both"):
        kfp_client.submit(package, kfp_server.url, token="t", token_file=tmp_path / "empty")
    assert kfp_server.requests == []


def test_schedule_creates_one_recurring_run_from_the_version(kfp_server, package):
    first = kfp_client.schedule(package, kfp_server.url, params={"times": 1})
    posts = _calls(kfp_server, "POST", f"{API}/recurringruns")
    rr = _model(posts[0]["body"], "V2beta1RecurringRun")
    assert rr.display_name == "shoprec-retrain-nightly"
    assert rr.trigger.cron_schedule.cron == "0 0 2 * * *" and rr.trigger.periodic_schedule is None
    assert rr.max_concurrency == "1" or rr.max_concurrency == 1
    assert rr.no_catchup is True and rr.mode == "ENABLE"
    assert rr.pipeline_spec is None
    assert (rr.pipeline_version_reference.pipeline_id, rr.pipeline_version_reference.pipeline_version_id) == (
        first["pipeline_id"], first["version_id"])
    assert rr.runtime_config.parameters == {"times": 1}
    assert rr.experiment_id in kfp_server.experiments
    assert first["replaced"] == []


def test_schedule_replaces_by_creating_the_new_one_before_deleting_the_old(kfp_server, package, package_v2):
    first = kfp_client.schedule(package, kfp_server.url)
    start = len(kfp_server.requests)
    second = kfp_client.schedule(package_v2, kfp_server.url, cron="0 30 3 * * 1-5")
    assert second["replaced"] == [first["recurring_run_id"]]
    order = [(r["method"], r["path"]) for r in kfp_server.requests[start:]
             if r["method"] in ("POST", "DELETE") and "recurringruns" in r["path"]]
    assert order == [("POST", f"{API}/recurringruns"), ("DELETE", f"{API}/recurringruns/{first['recurring_run_id']}")]
    assert [(r["trigger"]["cron_schedule"]["cron"], r["pipeline_version_reference"]["pipeline_version_id"])
            for r in kfp_server.recurring.values()] == [("0 30 3 * * 1-5", second["version_id"])]


def test_a_failed_create_leaves_the_old_schedule_in_place(kfp_server, package, package_v2):
    first = kfp_client.schedule(package, kfp_server.url)
    kfp_server.fail[("POST", f"{API}/recurringruns")] = 500
    with pytest.raises(kfp_client.KfpError, match="answered 500"):
        kfp_client.schedule(package_v2, kfp_server.url, cron="0 30 3 * * *")
    assert not _calls(kfp_server, "DELETE") and list(kfp_server.recurring) == [first["recurring_run_id"]]


def test_a_failed_delete_names_both_schedules(kfp_server, package, package_v2):
    first = kfp_client.schedule(package, kfp_server.url)
    kfp_server.fail[("DELETE", f"{API}/recurringruns/")] = 503
    with pytest.raises(kfp_client.KfpError, match=f"could not delete .*{first['recurring_run_id']}") as err:
        kfp_client.schedule(package_v2, kfp_server.url)
    [new_id] = set(kfp_server.recurring) - {first["recurring_run_id"]}
    assert new_id in str(err.value) and "both are scheduled now" in str(err.value)


def test_schedule_without_replace_refuses_before_uploading(kfp_server, package, package_v2):
    kfp_client.schedule(package, kfp_server.url)
    start = len(kfp_server.requests)
    with pytest.raises(kfp_client.KfpError, match="exists"):
        kfp_client.schedule(package_v2, kfp_server.url, replace=False)
    assert [r for r in kfp_server.requests[start:] if r["method"] != "GET"] == []


def test_disable_and_list(kfp_server, package):
    made = kfp_client.schedule(package, kfp_server.url, name="weekly", cron="0 0 4 * * 0")
    listed = kfp_client.list_schedules(kfp_server.url)
    assert [(s["name"], s["cron"], s["status"], s["no_catchup"]) for s in listed] == [
        ("weekly", "0 0 4 * * 0", "ENABLED", True)]
    assert _calls(kfp_server, "GET", f"{API}/recurringruns")
    out = kfp_client.disable_schedule(kfp_server.url, "weekly")
    assert out["disabled"] == [made["recurring_run_id"]]
    assert _calls(kfp_server, "POST", f"{API}/recurringruns/{made['recurring_run_id']}:disable")
    assert kfp_client.list_schedules(kfp_server.url)[0]["status"] == "DISABLED"
    with pytest.raises(kfp_client.KfpError, match="no recurring run"):
        kfp_client.disable_schedule(kfp_server.url, "nope")


def test_cron_must_have_six_fields():
    assert kfp_client.check_cron(" 0 0 2 * * * ") == "0 0 2 * * *"
    with pytest.raises(ValueError, match="did you mean '0 0 2 \\* \\* \\*'"):
        kfp_client.check_cron("0 2 * * *")
    with pytest.raises(ValueError):
        kfp_client.check_cron("daily")


def test_cli_submit_and_schedule(kfp_server, package):
    runner = CliRunner()
    res = runner.invoke(main, ["pipeline", "submit", "--host", kfp_server.url, "--package", str(package),
                               "--param", "times=4", "--param", "name=s3://raw/shop", "--experiment", "cli"])
    assert res.exit_code == 0, res.output
    body = _calls(kfp_server, "POST", f"{API}/runs")[0]["body"]
    assert body["runtime_config"]["parameters"] == {"times": 4, "name": "s3://raw/shop"}
    assert json.loads(res.stdout)["experiment"] == "cli" and json.loads(res.stdout)["run_id"]

    res = runner.invoke(main, ["pipeline", "schedule", "--host", kfp_server.url, "--package", str(package),
                               "--cron", "0 15 1 * * *"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["cron"] == "0 15 1 * * *"
    res = runner.invoke(main, ["pipeline", "schedule", "--host", kfp_server.url, "--list"])
    assert [s["cron"] for s in json.loads(res.stdout)] == ["0 15 1 * * *"]
    res = runner.invoke(main, ["pipeline", "schedule", "--host", kfp_server.url, "--disable", "shoprec-retrain-nightly"])
    assert res.exit_code == 0 and len(json.loads(res.stdout)["disabled"]) == 1
    res = runner.invoke(main, ["pipeline", "schedule", "--host", kfp_server.url, "--package", str(package),
                               "--cron", "0 2 * * *"])
    assert res.exit_code != 0 and "6 fields" in res.output


def test_cli_namespace_and_credentials(kfp_server, package, tmp_path, monkeypatch):
    runner = CliRunner()
    kfp_server.token = "from-env"
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "from-env")
    res = runner.invoke(main, ["pipeline", "submit", "--host", kfp_server.url, "--package", str(package),
                               "--namespace", "team-a", "--pipeline-name", "shoprec-retrain"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["namespace"] == "team-a" and out["pipeline"] == "shoprec-retrain" and out["version_id"]
    upload = _calls(kfp_server, "POST", f"{API}/pipelines/upload")[0]
    assert upload["query"]["name"] == ["shoprec-retrain"] and upload["query"]["namespace"] == ["team-a"]
    assert {r["headers"].get("authorization") for r in kfp_server.requests} == {"Bearer from-env"}

    token = tmp_path / "token"
    token.write_text("from-file")
    res = runner.invoke(main, ["pipeline", "schedule", "--host", kfp_server.url, "--package", str(package),
                               "--namespace", "team-a", "--token-file", str(token)])
    assert res.exit_code != 0 and "both KF_PIPELINES_TOKEN and --token-file" in res.output
    monkeypatch.delenv("KF_PIPELINES_TOKEN")
    kfp_server.token = "from-file"
    n = len(kfp_server.requests)
    res = runner.invoke(main, ["pipeline", "schedule", "--host", kfp_server.url, "--package", str(package),
                               "--namespace", "team-a", "--token-file", str(token), "--pipeline-name", "shoprec-retrain"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["pipeline_id"] == out["pipeline_id"]
    assert {r["headers"].get("authorization") for r in kfp_server.requests[n:]} == {"Bearer from-file"}
    res = runner.invoke(main, ["pipeline", "schedule", "--host", kfp_server.url, "--list", "--namespace", "team-a",
                               "--token-file", str(token)])
    assert res.exit_code == 0, res.output
    assert [s["name"] for s in json.loads(res.stdout)] == ["shoprec-retrain-nightly"]
    assert _calls(kfp_server, "GET", f"{API}/recurringruns")[-1]["query"]["namespace"] == ["team-a"]
    res = runner.invoke(main, ["pipeline", "schedule", "--host", kfp_server.url, "--list", "--namespace", "team-a",
                               "--token-file", str(tmp_path / "nope")])
    assert res.exit_code != 0 and "no KFP token file at" in res.output


def test_cli_submit_compiles_when_no_package_is_given(kfp_server, package, monkeypatch):
    calls = []

    def fake_compile(path, cluster=False):
        calls.append(cluster)
        with open(path, "w") as f:
            f.write(package.read_text())
        return path

    import shoprec.pipeline.runner as runner_mod

    monkeypatch.setattr(runner_mod, "compile_pipeline", fake_compile)
    res = CliRunner().invoke(main, ["pipeline", "submit", "--host", kfp_server.url])
    assert res.exit_code == 0, res.output
    assert calls == [True] and len(_calls(kfp_server, "POST", f"{API}/runs")) == 1


def test_unreachable_host_is_a_clear_error(tmp_path, monkeypatch, package):
    monkeypatch.setenv("HOME", str(tmp_path))
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(kfp_client.KfpError, match=f"127.0.0.1:{port}"):
        kfp_client.submit(package, f"http://127.0.0.1:{port}")
