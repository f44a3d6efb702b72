"""The MLflow server goes away during register: retried, then a clear error naming it; after a restart the
same pipeline run registers exactly one version, resuming the run the failed attempt left behind."""

import sys

import pytest

from shoprec.evaluate import evaluate
from shoprec.registry import versions as registry
from tests.conftest import free_port, start_service
from tests.faults.conftest import record

pytestmark = pytest.mark.faults


def _server(root, port):
    return start_service(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", (root / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        f"http://127.0.0.1:{port}", "/health", root / f"server-{port}.log")


def test_outage_then_restart_registers_once(tiny_model, tiny_features, tmp_path, monkeypatch):
    evaluate(tiny_model, tiny_features, tmp_path / "eval")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    server = _server(tmp_path, port)
    try:
        # An earlier attempt created its run, then the step died before registering a version.
        c = registry.client()
        exp = registry.experiment_id(c)
        c.create_run(exp, tags={registry.KFP_RUN_TAG: "run-outage", registry.MODEL_NAME_TAG: "outage-model"})
    finally:
        server.stop()
    with pytest.raises(registry.RegistryError, match=rf"MLflow tracking server at {url} unreachable"):
        registry.register(tiny_model, tmp_path / "eval", "outage-model", kfp_run_id="run-outage")

    server = _server(tmp_path, port)
    try:
        first = registry.register(tiny_model, tmp_path / "eval", "outage-model", kfp_run_id="run-outage")
        again = registry.register(tiny_model, tmp_path / "eval", "outage-model", kfp_run_id="run-outage")
        c = registry.client()
        versions = c.search_model_versions("name='outage-model'")
        runs = c.search_runs([registry.experiment_id(c)], filter_string=f"tags.`{registry.KFP_RUN_TAG}` = 'run-outage'")
        assert len(versions) == 1 and first["version"] == again["version"] == "1"
        assert len(runs) == 1  # the half-done run was resumed, not duplicated
        assert again["decision"] == "already registered"
        record("mlflow_outage_register", faults_injected=1, fault="mlflow server stopped by PID before register",
               versions=len(versions), runs=len(runs), lost=0)
    finally:
        server.stop()
