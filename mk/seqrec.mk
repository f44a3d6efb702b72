# Sequential recommender benchmark on Amazon Beauty (S3-Rec split) with RecBole side by side.
# Needs /work/shared/data/amazon-s3rec/Beauty.txt (or SHOPREC_SHARED_DATA). Creates RecBole's own
# virtualenv under .shoprec/bench/recbole-venv on first use. RECBOLE_BUDGET: minutes per RecBole model.
RECBOLE_BUDGET ?= 30
SEQREC_NPROC   ?= 1

.PHONY: seqrec-bench seqrec-gpu-check seqrec-test

## Beauty: shoprec best recipe + BERT4Rec vs RecBole SASRec/BERT4Rec -> benchmarks/results/seqrec-beauty.json
seqrec-bench: $(STAMP)
	$(BIN)/python benchmarks/seqrec.py --nproc $(SEQREC_NPROC) --recbole-budget-min $(RECBOLE_BUDGET)

## One-GPU check (< 5 min): sequences/s and Beauty NDCG@10 with bf16 autocast + NCCL.
seqrec-gpu-check: $(STAMP)
	$(BIN)/python benchmarks/seqrec_gpu_check.py

## The sequential recommender's own tests.
seqrec-test: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_seqrec.py tests/test_train.py tests/test_metrics.py tests/test_importers.py
