# Serving benchmark: shoprec serve vs mlflow models serve of the same registered model (127.0.0.1 only).
.PHONY: serve-bench serve-test

## Latency p50/p99 and requests/s at concurrency 1 and 16; writes benchmarks/results/serve.json.
serve-bench: $(STAMP)
	$(BIN)/python benchmarks/serve.py

## The registry, CLI and server tests.
serve-test: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_serve.py tests/test_serve_reload.py tests/test_registry.py tests/test_models_cli.py
