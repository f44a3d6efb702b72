# The LoRA MiniLM ranker (shoprec/ranker): tests, a small run on the built-in shop, the Home Depot benchmark.
RANKER_WORK ?= .shoprec/ranker

.PHONY: ranker-test ranker-demo ranker-bench ranker-games-bench

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

## Home Depot search relevance benchmark (needs ../shared/data; about 5 CPU-hours on one thread): the recipe of
## ranker-homedepot.json (bi-encoder on all relevant pairs; cross-encoders on all judged pairs of the training queries,
## no BM25 hard negatives, 48-token pairs, 2 epochs, LoRA lr 5e-4).
ranker-bench: $(STAMP)
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/ranker.py homedepot --work $(RANKER_WORK)/bench-hd \
		--save-dir $(RANKER_WORK)/bench-hd/models --out benchmarks/results/ranker-homedepot.json --bi-pairs 100000 \
		--train-pairs 100000 --hard-negs 0 --lr-lora 5e-4 --max-len 48 --epochs 2 --full-bi-pairs 12000 --rerank-depth 20 \
		--stages zero-shot,lora-bi,lora-cross,search-path,full-cross,full-bi,steptime --stack bm25,lora-bi,lora-cross

## Amazon Games click benchmark (needs ../shared/data; about 2.5 hours with nothing else heavy running: the
## sequential model has a 40-minute cap on one thread, the cross-encoder trains on 8,000 shoppers in about 75
## minutes and scores in about 25 on two): the sequential model's top 50 re-ranked by a blend with the LoRA
## cross-encoder over (recent history titles, candidate title).
ranker-games-bench: $(STAMP)
	OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/ranker_games.py --seqrec-minutes 40 --train-users 8000 \
		--ce-epochs 2 --lr 5e-4 --negs 7 --random-negs 3 --history-titles 3 --max-len 48 --valid-users 2000 \
		--test-users 8000 --no-int8 --threads 2 \
		--out benchmarks/results/ranker-games.json
