# Fault injection, bad input and security scans (tests/faults): `make faults` runs all of them, the slow
# ones included (a killed DDP worker, a stopped S3 server, 10,000+ generated broken rows), then collects the
# figures each test wrote to .shoprec/faults/ into benchmarks/results/reliability.json.
FAULTS_PYTEST ?= $(BIN)/python -m pytest -q -p no:cacheprovider tests/faults

.PHONY: faults
faults: $(STAMP)
	rm -rf .shoprec/faults
	$(FAULTS_PYTEST); rc=$$?; \
	$(BIN)/python benchmarks/reliability_report.py --command "make faults ($(FAULTS_PYTEST))" --exit-code $$rc; \
	exit $$rc
