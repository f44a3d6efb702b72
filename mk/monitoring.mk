# Alert rules and dashboard of the model server (manifests/monitoring, manifests/dashboards): `promtool check
# rules` and `promtool test rules` on the PrometheusRule, and every rule's and panel's metric checked against a
# live server's /metrics. `make test` runs the same tests but skips the promtool ones without promtool; this
# target insists on it (Debian/Ubuntu: apt-get install prometheus).
.PHONY: monitoring-test
monitoring-test: $(STAMP)
	@command -v promtool >/dev/null || { echo "promtool not found: apt-get install prometheus" >&2; exit 1; }
	$(BIN)/python -m pytest -q -rs tests/test_alerts.py tests/test_dashboard.py tests/test_serve_metrics.py
