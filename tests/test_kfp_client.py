"""shoprec.kfp_client and `shoprec pipeline submit/schedule` against a RECORDING HTTP server, not a KFP server.

The server on 127.0.0.1 answers the few v2beta1 endpoints kfp.Client calls (healthz, experiments, runs,
recurringruns) with plausible JSON and records every request. The tests then check what the client sent
against KFP's own API models (kfp_server_api: V2beta1Run, V2beta1RecurringRun, ...): paths, methods,
and body fields such as trigger.cron_schedule.cron, max_concurrency, no_catchup and pipeline_spec. This
proves the requests are well formed for the KFP API; it does not prove a real KFP server accepts them.
"""

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from click.testing import CliRunner

kfp = pytest.importorskip("kfp")
kfp_server_api = pytest.importorskip("kfp_server_api")

from shoprec import kfp_client  # noqa: E402
from shoprec.cli import main  # noqa: E402

API = "/apis/v2beta1"


class Recorder(BaseHTTPRequestHandler):
    """Records (method, path, query, body); keeps experiments and recurring runs in memory."""

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
        body = json.loads(self.rfile.read(n)) if n else None
        self.server.requests.append({"method": self.command, "path": url.path, "query": parse_qs(url.query),
                                     "body": body})
        return url.path, parse_qs(url.query), body

    def do_GET(self):  # noqa: N802
        path, query, _ = self._record()
        state = self.server
        if path == f"{API}/healthz":
            return self._send(200, {"multi_user": False})
        if path == f"{API}/experiments":
            wanted = None
            if "filter" in query:
                preds = json.loads(query["filter"][0]).get("predicates", [])
                wanted = next((p.get("string_value") or p.get("stringValue") for p in preds), None)
            exps = [e for e in state.experiments.values() if wanted in (None, e["display_name"])]
            return self._send(200, {"experiments": exps, "total_size": len(exps)})
        if path == f"{API}/recurringruns":
            runs = list(state.recurring.values())
            return self._send(200, {"recurringRuns": runs, "total_size": len(runs)})
        return self._send(404, {"error": "not found", "code": 5})

    def do_POST(self):  # noqa: N802
        path, _, body = self._record()
        state = self.server
        now = "2026-11-29T07:00:00Z"
        if path == f"{API}/experiments":
            exp = {**body, "experiment_id": str(uuid.uuid4()), "created_at": now, "storage_state": "AVAILABLE"}
            state.experiments[exp["experiment_id"]] = exp
            return self._send(200, exp)
        if path == f"{API}/runs":
            return self._send(200, {**body, "run_id": str(uuid.uuid4()), "state": "PENDING", "created_at": now})
        if path == f"{API}/recurringruns":
            rr = {**body, "recurring_run_id": str(uuid.uuid4()), "status": "ENABLED", "created_at": now}
            state.recurring[rr["recurring_run_id"]] = rr
            return self._send(200, rr)
        if path.startswith(f"{API}/recurringruns/") and path.endswith(":disable"):
            rid = path[len(f"{API}/recurringruns/"):-len(":disable")]
            if rid not in state.recurring:
                return self._send(404, {"error": "not found", "code": 5})
            state.recurring[rid]["status"] = "DISABLED"
            return self._send(200, {})
        return self._send(404, {"error": "not found", "code": 5})

    def do_DELETE(self):  # noqa: N802
        path, _, _ = self._record()
        rid = path.rsplit("/", 1)[-1]
        self.server.recurring.pop(rid, None)
        return self._send(200, {})

    def log_message(self, *args):
        pass


@pytest.fixture
def kfp_server(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads/writes ~/.config/kfp/context.json
    for var in ("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.requests, server.experiments, server.recurring = [], {}, {}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_port}"
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A tiny pipeline compiled here: one lightweight component, two parameters."""
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11-slim")
    def hello(name: str, times: int) -> str:
        return name * times

    @dsl.pipeline(name="tiny")
    def tiny(name: str = "shop", times: int = 2):
        hello(name=name, times=times)

    path = tmp_path_factory.mktemp("pkg") / "tiny.yaml"
    compiler.Compiler().compile(tiny, str(path))
    return path


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


def test_submit_posts_one_run_with_the_pipeline_spec_and_arguments(kfp_server, package):
    out = kfp_client.submit(package, kfp_server.url, experiment="nightly", params={"name": "x", "times": 3},
                            run_name="try-1")
    posts = _calls(kfp_server, "POST", f"{API}/runs")
    assert len(posts) == 1
    run = _model(posts[0]["body"], "V2beta1Run")
    assert run.display_name == "try-1"
    assert run.pipeline_spec["pipelineInfo"]["name"] == "tiny" and "root" in run.pipeline_spec
    assert run.runtime_config.parameters == {"name": "x", "times": 3}
    exp = _model(_calls(kfp_server, "POST", f"{API}/experiments")[0]["body"], "V2beta1Experiment")
    assert exp.display_name == "nightly" and run.experiment_id == kfp_server.experiments.popitem()[0]
    assert out["run_id"] and out["url"].endswith(f"/#/runs/details/{out['run_id']}")


def test_schedule_creates_one_recurring_run_and_replaces_it_by_name(kfp_server, package):
    first = kfp_client.schedule(package, kfp_server.url, params={"times": 1})
    posts = _calls(kfp_server, "POST", f"{API}/recurringruns")
    rr = _model(posts[0]["body"], "V2beta1RecurringRun")
    assert rr.display_name == "shoprec-retrain-nightly"
    assert rr.trigger.cron_schedule.cron == "0 0 2 * * *" and rr.trigger.periodic_schedule is None
    assert rr.max_concurrency == "1" or rr.max_concurrency == 1
    assert rr.no_catchup is True and rr.mode == "ENABLE"
    assert rr.pipeline_spec["pipelineInfo"]["name"] == "tiny"
    assert rr.runtime_config.parameters == {"times": 1}
    assert rr.experiment_id in kfp_server.experiments

    second = kfp_client.schedule(package, kfp_server.url, cron="0 30 3 * * 1-5")
    assert second["replaced"] == [first["recurring_run_id"]]
    assert _calls(kfp_server, "DELETE", f"{API}/recurringruns/{first['recurring_run_id']}")
    assert [r["trigger"]["cron_schedule"]["cron"] for r in kfp_server.recurring.values()] == ["0 30 3 * * 1-5"]


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


def test_cli_submit_compiles_when_no_package_is_given(kfp_server, package, monkeypatch):
    calls = []

    def fake_compile(path, cluster=False):
        calls.append(cluster)
        with open(path, "w") as f:
            f.write(package.read_text())
        return path

    import shoprec.pipeline_runner as runner_mod

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
