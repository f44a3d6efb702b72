# Product search on Home Depot (issue #5): quality and HTTP latency of /v1/search by cross-encoder re-rank depth.
# Uses the models `make ranker-bench` leaves in $(RANKER_WORK)/bench-hd (or SEARCH_MODELS=DIR from another run).
SEARCH_MODELS ?= $(RANKER_WORK)/bench-hd

.PHONY: search-bench search-test

## NDCG@10/Recall@100/MRR@10 (all test queries) and HTTP p50/p99 at concurrency 1 (300 queries) for re-rank depths
## 0, 10, 20, 50 (int8), float32 at 20, pairs cut to 24 tokens at 20; writes benchmarks/results/search-homedepot.json.
search-bench: $(STAMP)
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/search_depth.py --from-work $(SEARCH_MODELS) \
		--work .shoprec/bench/search-hd --out benchmarks/results/search-homedepot.json --pair-max-len 24

## The /v1/search tests with a tiny ranker (real HTTP server).
search-test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests/test_serve_search.py
