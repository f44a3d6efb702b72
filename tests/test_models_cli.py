"""``shoprec models list/promote/rollback/history`` against a real mlflow server: a round trip."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from shoprec.cli import main
from shoprec.registry import versions as registry
from tests.test_registry import write_evaluation

NAME = "cli-seqrec"


@pytest.fixture(scope="module")
def two_versions(mlflow_server, tiny_model, tmp_path_factory):
    """v1 passed its gate (champion), v2 failed it (challenger)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    mp.setenv("SHOPREC_USER", "alice")
    root = tmp_path_factory.mktemp("cli")
    registry.register(tiny_model, write_evaluation(root / "a", gate=True, ndcg=0.25), NAME, kfp_run_id="cli-1")
    registry.promote(NAME, "1", reason="canary passed")
    registry.register(tiny_model, write_evaluation(root / "b", gate=False, ndcg=0.2), NAME, kfp_run_id="cli-2")
    yield mlflow_server
    mp.undo()


def run(*args, ok=True):
    result = CliRunner().invoke(main, list(args))
    assert (result.exit_code == 0) == ok, result.output
    return result.output


def test_list(two_versions):
    assert NAME in run("models", "list").splitlines()
    table = run("models", "list", NAME)
    lines = table.splitlines()
    assert lines[1].split()[:6] == ["2", "challenger", "False", "0.2000", "0.4000", "0.1600"]
    assert lines[2].split()[:3] == ["1", "champion", "True"]
    rows = json.loads(run("models", "list", NAME, "--json"))
    assert [(r["version"], r["aliases"], r["evaluation"]["ndcg@10"]) for r in rows] == [
        ("2", ["challenger"], 0.2), ("1", ["champion"], 0.25)]


def test_promote_rollback_history_round_trip(two_versions):
    refused = run("models", "promote", NAME, "2", ok=False)
    assert f"{NAME} v2 failed its evaluation gate; use --force" in refused
    assert "no version '7'" in run("models", "promote", NAME, "7", ok=False)
    assert "already the champion" in run("models", "promote", NAME, "1", ok=False)
    assert registry.version_by_alias(NAME).version == "1"

    out = run("models", "promote", NAME, "2", "--force", "--reason", "canary looked good")
    assert f"{NAME}@champion -> v2 (was v1)" in out
    assert registry.version_by_alias(NAME).version == "2"

    assert f"{NAME}@champion -> v1 (rolled back from v2)" in run("models", "rollback", NAME, "--reason", "errors up")
    assert registry.version_by_alias(NAME).version == "1"
    assert "no earlier champion than v1" in run("models", "rollback", NAME, ok=False)

    history = json.loads(run("models", "history", NAME, "--json"))
    champion = [(e["version"], e["previous"], e["action"], e["reason"], e["by"]) for e in history
                if e["alias"] == "champion"]
    assert champion[1:] == [("2", "1", "move", "canary looked good", "alice"),
                            ("1", "2", "rollback", "errors up", "alice")]
    text = run("models", "history", NAME)
    assert "champion      v2 -> v1    rollback by alice: errors up" in text


def test_unknown_model_is_a_clear_error(two_versions):
    for args in (("list", "ghost"), ("rollback", "ghost"), ("history", "ghost"), ("promote", "ghost", "1")):
        assert "no registered model 'ghost'" in run("models", *args, ok=False)


def test_the_installed_command(two_versions):
    out = subprocess.run([sys.executable, "-m", "shoprec.cli", "models", "list", NAME], capture_output=True,
                         text=True, timeout=120, env={**os.environ,
                                                      "MLFLOW_TRACKING_URI": two_versions.url})
    assert out.returncode == 0 and "champion" in out.stdout, out.stderr


# ------------------------------------------------------------------ --target: serve the pinned version too
KNAME = "cli-kserve"


@pytest.fixture
def cluster(mlflow_server, tiny_model, tmp_path, monkeypatch):
    """KUBECONFIG pointed at the recording API stand-in of tests/test_release.py, holding InferenceService
    cli-kserve on v1; the registry with v1 (champion) and v2 (failed its gate)."""
    import threading
    from http.server import ThreadingHTTPServer

    import yaml

    from tests.test_release import FakeKube, existing

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("SHOPREC_USER", "bob")
    if registry.version_by_alias(KNAME) is None:
        registry.register(tiny_model, write_evaluation(tmp_path / "a", gate=True), KNAME, kfp_run_id="k-1")
        registry.register(tiny_model, write_evaluation(tmp_path / "b", gate=False), KNAME, kfp_run_id="k-2")
        registry.promote(KNAME, "1", reason="first")
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKube)
    FakeKube.objects, FakeKube.requests, FakeKube.ready, FakeKube.reject_apply = {}, [], "yes", 0
    FakeKube.atomic_containers = False
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "t",
              "clusters": [{"name": "t", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
              "users": [{"name": "t", "user": {"token": "test-only"}}],
              "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}]}
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    existing(FakeKube, f"models:/{KNAME}/1", name=KNAME)
    yield FakeKube
    server.shutdown()


def _served(fake):
    from tests.test_release import PATH

    predictor = fake.objects[f"{PATH}/{KNAME}"]["spec"]["predictor"]
    return predictor["containers"][0]["args"][2], predictor.get("canaryTrafficPercent")


def test_promote_and_rollback_with_target_kserve_pin_the_served_version(cluster):
    out = run("models", "promote", KNAME, "2", "--force", "--target", "kserve", "--reason", "hotfix")
    assert f"{KNAME}@champion -> v2 (was v1); shoprec/{KNAME} serves models:/{KNAME}/2" in out
    assert _served(cluster) == (f"models:/{KNAME}/2", None)
    applied = [r for r in cluster.requests if r["method"] == "PATCH" and "dryRun" not in r["query"]]
    assert applied[-1]["content_type"] == "application/apply-patch+yaml"
    assert applied[-1]["query"]["fieldManager"] == "shoprec-deploy"
    assert registry.version_by_alias(KNAME).version == "2"

    out = run("models", "rollback", KNAME, "--target", "kserve")
    assert f"{KNAME}@champion -> v1 (rolled back from v2); shoprec/{KNAME} serves models:/{KNAME}/1" in out
    assert _served(cluster) == (f"models:/{KNAME}/1", None)
    assert registry.version_by_alias(KNAME).version == "1"


def test_a_rollout_that_does_not_get_ready_leaves_the_champion(cluster):
    cluster.ready = "no"
    out = run("models", "promote", KNAME, "2", "--force", "--target", "kserve", "--timeout", "0.3", ok=False)
    assert f"InferenceService shoprec/{KNAME} not Ready after 0.3 s" in out and "@champion not moved" in out
    assert registry.version_by_alias(KNAME).version == "1"


def test_target_local_writes_the_pinned_pointer(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("SHOPREC_HOME", str(tmp_path / "home"))
    out = run("models", "promote", KNAME, "2", "--force", "--target", "local")
    assert "the local server pointer serves models:/cli-kserve/2" in out
    pointer = json.loads((tmp_path / "home" / "deployments" / f"{KNAME}.json").read_text())
    assert pointer["model_uri"] == f"models:/{KNAME}/2"
    run("models", "rollback", KNAME, "--target", "local")
    assert registry.version_by_alias(KNAME).version == "1"
