# The LoRA MiniLM ranker (shoprec/ranker): tests, a small run on the built-in shop, the Home Depot benchmark.
RANKER_WORK ?= .shoprec/ranker

.PHONY: ranker-test ranker-demo ranker-bench

## Ranker and generic trainer tests (tiny random BERT + one short real-MiniLM run; < 2 min on 2 cores).
ranker-test: $(STAMP)
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests/test_ranker.py tests/test_trainer.py

## Train the ranker on the built-in shop (synthesised, ingested and featurised first).
ranker-demo: $(STAMP)
	$(BIN)/shoprec data synth --out $(RANKER_WORK)/raw
	$(BIN)/shoprec ingest --source $(RANKER_WORK)/raw --out $(RANKER_WORK)/ingested
	$(BIN)/shoprec features --ingested $(RANKER_WORK)/ingested --out $(RANKER_WORK)/features
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(BIN)/python -m shoprec.ranker.train --features $(RANKER_WORK)/features \
		--out $(RANKER_WORK)/model --config configs/ranker/builtin.yaml

## Home Depot search relevance benchmark (needs ../shared/data; about an hour on 2 busy cores).
ranker-bench: $(STAMP)
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/ranker.py homedepot --work $(RANKER_WORK)/bench-hd \
		--out benchmarks/results/ranker-homedepot.json --train-pairs 5000 --bi-pairs 3000 --rerank-depth 20
