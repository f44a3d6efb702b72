"""The server on models:/NAME@champion of a real mlflow server: bearer token, alias poll and /admin/reload
swap versions while requests keep flowing, none dropped."""

import sys
import threading
import time

import httpx
import pyarrow.parquet as pq
import pytest

from shoprec.registry import versions as registry
from tests.conftest import free_port, start_service
from tests.test_registry import write_evaluation

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NAME = "serve-reload"


@pytest.fixture(scope="module")
def served(mlflow_server, tiny_model, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    root = tmp_path_factory.mktemp("reload")
    for i in (1, 2):
        registry.register(tiny_model, write_evaluation(root / f"ev{i}", gate=i == 1), NAME, kfp_run_id=f"reload-{i}")
    registry.promote(NAME, "1", reason="test: what the pipeline's promote step does after the canary")
    assert registry.version_by_alias(NAME, "champion").version == "1"
    port = free_port()
    svc = start_service([sys.executable, "-m", "shoprec.cli", "serve", "--model", f"models:/{NAME}@champion",
                         "--port", str(port), "--poll-seconds", "1"],
                        f"http://127.0.0.1:{port}", "/readyz", root / "serve.log",
                        env={"MLFLOW_TRACKING_URI": mlflow_server.url, "SHOPREC_API_TOKEN": TOKEN})
    yield svc
    svc.stop()
    mp.undo()


def test_bearer_token(served, tiny_model):
    user = pq.read_table(tiny_model / "histories.parquet")["user_id"][0].as_py()
    body = {"user_id": user, "k": 3}
    missing = httpx.post(f"{served.url}/v1/recommend", json=body)
    assert missing.status_code == 401 and "missing bearer token" in missing.text
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = httpx.post(f"{served.url}/v1/recommend", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and "wrong bearer token" in wrong.text
    assert httpx.post(f"{served.url}/admin/reload").status_code == 401
    assert httpx.post(f"{served.url}/v1/recommend", json=body, headers=AUTH).status_code == 200
    for open_path in ("/livez", "/readyz", "/healthz", "/metrics"):
        assert httpx.get(served.url + open_path).status_code == 200, open_path


def test_moved_alias_is_picked_up_without_dropping_requests(served, tiny_model):
    users = pq.read_table(tiny_model / "histories.parquet")["user_id"].to_pylist()[:20]
    assert httpx.get(f"{served.url}/healthz").json()["version"] == "1"
    statuses, versions, stop = [], set(), threading.Event()

    def hammer():
        with httpx.Client(base_url=served.url, headers=AUTH, timeout=10) as c:
            i = 0
            while not stop.is_set():
                r = c.post("/v1/recommend", json={"user_id": users[i % len(users)], "k": 5})
                statuses.append(r.status_code)
                if r.status_code == 200:
                    versions.add(r.json()["version"])
                i += 1

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        registry.promote(NAME, "2", force=True, reason="test: move the alias under load")
        deadline = time.monotonic() + 30
        while httpx.get(f"{served.url}/healthz").json()["version"] != "2":
            assert time.monotonic() < deadline, "the server did not pick up champion v2"
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(statuses) > 20 and set(statuses) == {200}
    assert versions == {"1", "2"}
    metrics = httpx.get(f"{served.url}/metrics").text
    assert f'shoprec_model_version{{model="{NAME}"}} 2.0' in metrics

    # Roll back and ask for a reload now instead of waiting for the poll.
    registry.rollback(NAME, reason="test: back to v1")
    r = httpx.post(f"{served.url}/admin/reload", headers=AUTH)
    assert r.status_code == 200 and r.json()["version"] == "1", r.text
    assert httpx.get(f"{served.url}/healthz").json()["version"] == "1"
