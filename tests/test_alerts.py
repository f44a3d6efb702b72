"""The alert rules and the ServiceMonitor of manifests/monitoring (Prometheus Operator objects).

The PrometheusRule's spec.groups go to a temporary rule file that the real `promtool` checks
(`promtool check rules`) and unit-tests (`promtool test rules` with manifests/monitoring/alerts.test.yaml:
series that fire each alert and series that must not). Every metric the rules read must be one a real
`shoprec serve` exports (its live /metrics, the server of tests/test_dashboard.py). Without promtool
(apt-get install prometheus) the promtool tests skip and say so.
"""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from shoprec.serving.guard import OPEN_PATHS
from tests.test_dashboard import exported, metric_names  # noqa: F401 - exported is a fixture

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "manifests" / "monitoring"
RULE = MONITORING / "prometheusrule.yaml"
UNIT_TESTS = MONITORING / "alerts.test.yaml"
ALERTS = {"ShoprecHighErrorRate", "ShoprecRecommendLatencyHigh", "ShoprecSearchLatencyHigh", "ShoprecNoTraffic",
          "ShoprecModelTooOld", "ShoprecModelReloadFailed"}


def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.skip("promtool not installed (apt-get install prometheus): alert rules not checked")
    return path


def rule_groups() -> list[dict]:
    doc = yaml.safe_load(RULE.read_text())
    assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "PrometheusRule", RULE
    return doc["spec"]["groups"]


def write_rules(folder: Path, groups: list[dict]) -> Path:
    """The groups as a plain Prometheus rule file, with the unit tests beside it (they name it)."""
    rules = folder / yaml.safe_load(UNIT_TESTS.read_text())["rule_files"][0]
    rules.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    shutil.copy(UNIT_TESTS, folder / UNIT_TESTS.name)
    return rules


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_rules_pass_promtool_check(tmp_path):
    rules = write_rules(tmp_path, rule_groups())
    res = run_promtool("check", "rules", rules.name, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in res.stdout


def test_alert_unit_tests_pass(tmp_path):
    write_rules(tmp_path, rule_groups())
    res = run_promtool("test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_unit_tests_fail_when_an_alert_is_loosened(tmp_path):
    """The unit tests can tell: with the 5xx threshold raised to 50% the series that should fire do not."""
    groups = rule_groups()
    rule = next(r for g in groups for r in g["rules"] if r.get("alert") == "ShoprecHighErrorRate")
    assert "> 0.05" in rule["expr"]
    rule["expr"] = rule["expr"].replace("> 0.05", "> 0.5")
    write_rules(tmp_path, groups)
    res = run_promtool("test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert res.returncode != 0 and "ShoprecHighErrorRate" in res.stdout + res.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    alerts = {r["alert"] for g in rule_groups() for r in g["rules"] if "alert" in r}
    assert alerts == ALERTS
    cases = [c for t in yaml.safe_load(UNIT_TESTS.read_text())["tests"] for c in t.get("alert_rule_test", [])]
    for alert in ALERTS:
        mine = [c for c in cases if c["alertname"] == alert]
        assert any(c.get("exp_alerts") for c in mine), f"{alert}: no unit test where it fires"
        assert any(not c.get("exp_alerts") for c in mine), f"{alert}: no unit test where it stays quiet"


def test_every_rule_and_unit_test_names_only_metrics_the_server_exports(exported):  # noqa: F811
    for group in rule_groups():
        for rule in group["rules"]:
            names = metric_names(rule["expr"])
            assert names and names <= exported, f"{rule.get('alert')}: {sorted(names - exported)} not exported"
    series = {s["series"].split("{")[0] for t in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
              for s in t["input_series"]}
    assert series <= exported, f"unit-test series the server does not export: {sorted(series - exported)}"


def test_every_alert_has_severity_and_summary():
    for group in rule_groups():
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


# ---------------------------------------------------------------- the kustomization and the ServiceMonitor
@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl not installed (it renders manifests/monitoring)")
    text = subprocess.run([kubectl, "kustomize", str(MONITORING)], check=True, capture_output=True, text=True,
                          timeout=60).stdout
    return [d for d in yaml.safe_load_all(text) if d]


def test_monitoring_kustomization_renders_the_rule_and_the_service_monitor(rendered):
    kinds = {(d["apiVersion"], d["kind"], d["metadata"]["namespace"]) for d in rendered}
    assert kinds == {("monitoring.coreos.com/v1", "ServiceMonitor", "shoprec"),
                     ("monitoring.coreos.com/v1", "PrometheusRule", "shoprec")}
    rule = next(d for d in rendered if d["kind"] == "PrometheusRule")
    assert rule["spec"]["groups"] == rule_groups()


def test_service_monitor_scrapes_the_inference_service_metrics(rendered):
    isvc = yaml.safe_load((ROOT / "manifests" / "base" / "inferenceservice.yaml").read_text())
    container = isvc["spec"]["predictor"]["containers"][0]
    sm = next(d for d in rendered if d["kind"] == "ServiceMonitor")
    assert sm["spec"]["selector"]["matchLabels"] == {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"]}
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [isvc["metadata"]["namespace"]]
    [endpoint] = sm["spec"]["endpoints"]
    assert endpoint["targetPort"] in [p["containerPort"] for p in container.get("ports", [])]
    assert endpoint["targetPort"] == int(container["args"][container["args"].index("--port") + 1])
    assert endpoint["path"] == "/metrics" and endpoint["path"] in OPEN_PATHS  # open even with an API token
