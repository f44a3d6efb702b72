"""The metrics the alerts of manifests/monitoring need, read from a real server's /metrics:
the served version's creation time (model age) and the reload-failure counter, at 0 before any failure."""

import sys

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shoprec.registry import versions as registry
from tests.conftest import free_port, start_service
from tests.test_registry import write_evaluation

NAME = "serve-metrics"


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a /metrics page as {(name, sorted labels): value}."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture(scope="module")
def served(mlflow_server, tiny_model, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    root = tmp_path_factory.mktemp("serve-metrics")
    registry.register(tiny_model, write_evaluation(root / "ev", gate=True), NAME, kfp_run_id="metrics-1")
    registry.client().set_registered_model_alias(NAME, "live", "1")
    port = free_port()
    svc = start_service([sys.executable, "-m", "shoprec.cli", "serve", "--model", f"models:/{NAME}@live",
                         "--port", str(port), "--poll-seconds", "0"],
                        f"http://127.0.0.1:{port}", "/readyz", root / "serve.log",
                        env={"MLFLOW_TRACKING_URI": mlflow_server.url})
    yield svc
    svc.stop()
    mp.undo()


def test_created_timestamp_is_the_registry_creation_time(served):
    mv = registry.client().get_model_version(NAME, "1")
    got = samples(httpx.get(f"{served.url}/metrics").text)
    created = got[("shoprec_model_created_timestamp_seconds", (("model", NAME),))]
    assert created == pytest.approx(mv.creation_timestamp / 1000, abs=1e-3)


def test_reload_failures_are_counted_from_zero(served):
    error = ("shoprec_model_reloads_total", (("result", "error"),))
    assert samples(httpx.get(f"{served.url}/metrics").text)[error] == 0
    registry.client().delete_registered_model_alias(NAME, "live")
    r = httpx.post(f"{served.url}/admin/reload", timeout=30)
    assert r.status_code == 502 and "alias no longer set" in r.text
    assert samples(httpx.get(f"{served.url}/metrics").text)[error] == 1
    registry.client().set_registered_model_alias(NAME, "live", "1")


def test_created_timestamp_of_a_folder_is_its_weights_mtime(tiny_model, tmp_path):
    from shoprec.serving.model_uri import model_created_at

    assert model_created_at(str(tiny_model), tiny_model, tiny_model.name, "local") == pytest.approx(
        (tiny_model / "model.safetensors").stat().st_mtime)
