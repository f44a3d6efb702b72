"""The Grafana dashboard (manifests/dashboards/shoprec.json): every query names only metrics a real
`shoprec serve` exports (read from the /metrics of one started here on the tiny model), is valid PromQL
(promtool, when installed), and the panels cover requests, errors, latency by endpoint, batch size and
the model version. tests/test_alerts.py uses the same server and name extraction for the alert rules."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port, start_service

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "manifests" / "dashboards" / "shoprec.json"

_NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions, keywords, label
    names (in {...} or by/without/on/ignoring (...)), strings, durations or Grafana $variables."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings ("/v1/.+", "5..", "$namespace")
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # $__rate_interval, ${var}
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        if m.group(2) is None and m.group(1).lower() not in _NOT_METRICS:
            names.add(m.group(1))
    return names


@pytest.mark.parametrize("expr, names", [
    ('sum by (path, le) (rate(shoprec_request_latency_seconds_bucket{path=~"/v1/.+"}[$__rate_interval]))',
     {"shoprec_request_latency_seconds_bucket"}),
    ("time() - max by (model) (shoprec_model_created_timestamp_seconds) > 7 * 86400",
     {"shoprec_model_created_timestamp_seconds"}),
    ('(sum by (namespace) (rate(a_total{x="y"}[15m])) or sum by (namespace) (b_info) * 0) == 0', {"a_total", "b_info"}),
    ("rate(x[5m]) / on (job) group_left y", {"x", "y"}),
    ('histogram_quantile(0.99, sum(rate(h_bucket{a="b, c"}[1m])) by (le)) > bool 0.5', {"h_bucket"}),
])
def test_metric_names_of_an_expression(expr, names):
    assert metric_names(expr) == names


def exported_sample_names(text: str) -> set[str]:
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory) -> set[str]:
    """Sample names on the /metrics of a real server on the tiny model, after one request of each kind."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve-dashboard") / "serve.log"
    svc = start_service([sys.executable, "-m", "shoprec.cli", "serve", "--model", str(tiny_model), "--port", str(port),
                         "--poll-seconds", "0"], f"http://127.0.0.1:{port}", "/readyz", log)
    try:
        user = pq.read_table(tiny_model / "histories.parquet")["user_id"][0].as_py()
        assert httpx.post(f"{svc.url}/v1/recommend", json={"user_id": user, "k": 5}).status_code == 200
        assert httpx.post(f"{svc.url}/v1/search", json={"query": "drill", "k": 5}).status_code == 200
        assert httpx.post(f"{svc.url}/v1/recommend", json={"user_id": "nobody"}).status_code == 404
        return exported_sample_names(httpx.get(f"{svc.url}/metrics").text)
    finally:
        svc.stop()


def dashboard_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    out = [(f"panel {p.get('title')!r} target {t.get('refId')}", t.get("expr", ""))
           for p in dashboard["panels"] for t in p.get("targets", [])]
    for v in dashboard.get("templating", {}).get("list", []):
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out.append((f"variable {v['name']!r}", q.replace("label_values(", "(").rsplit(",", 1)[0] + ")"))
    return out


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_every_query_names_only_metrics_the_server_exports(dashboard, exported):
    assert "shoprec_requests_total" in exported and "shoprec_model_created_timestamp_seconds" in exported
    queries = dashboard_queries(dashboard)
    assert len(queries) >= 10
    unknown = {where: sorted(metric_names(q) - exported) for where, q in queries if metric_names(q) - exported}
    assert unknown == {}, f"queries naming metrics the server does not export: {unknown}"
    assert all(metric_names(q) for _, q in queries), "a query that names no metric"


def test_panels_cover_requests_errors_latency_batching_and_model_version(dashboard):
    used = {name for _, q in dashboard_queries(dashboard) for name in metric_names(q)}
    assert {"shoprec_requests_total", "shoprec_request_errors_total", "shoprec_request_latency_seconds_bucket",
            "shoprec_batch_size_bucket", "shoprec_model_version"} <= used
    latency = [t["expr"] for p in dashboard["panels"] for t in p["targets"]
               if "shoprec_request_latency_seconds_bucket" in t["expr"]]
    assert latency and all(re.search(r"by \([^)]*\bpath\b", e) for e in latency), "latency not split by endpoint"


def test_panels_are_well_formed(dashboard):
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), f"duplicate panel ids {ids}"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace"} <= variables
    for p in dashboard["panels"]:
        assert p["datasource"]["uid"] == "${datasource}" and set(p["gridPos"]) == {"x", "y", "w", "h"}, p["title"]
        assert p["targets"] and all(t["expr"].strip() and t["refId"] for t in p["targets"]), p["title"]
        assert all('namespace=~"$namespace"' in t["expr"] for t in p["targets"]), f"{p['title']}: no namespace filter"


def test_queries_are_valid_promql(dashboard, tmp_path):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (apt-get install prometheus): PromQL syntax not checked")
    rules = [{"record": f"shoprec:dashboard_query_{i}",
              "expr": q.replace("$__rate_interval", "5m").replace("$namespace", ".*")}
             for i, (_, q) in enumerate(dashboard_queries(dashboard))]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    res = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
