# segq: `make demo` runs the main job on the embedded default; `make test` runs the whole suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SEGQ := $(VENV)/bin/segq
STAMP := $(VENV)/.installed

.PHONY: setup system-packages demo test soak bench clean-demo

# Everything a fresh machine needs: system packages, the venv, segq itself. Idempotent.
setup: system-packages $(STAMP)

# As root, from apt: redis-server for the embedded default, chromium for the report tests,
# prometheus for the metrics test (it scrapes the local cluster's endpoints).
system-packages:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing (apt)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[test]"
	@touch $(STAMP)

demo: setup
	bash examples/demo.sh

test: setup
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

# The soak at full size: 20 tiny jobs back to back through the CLI (`make test` runs 2), and two
# `segq up` at the same moment 5 times (`make test`: once).
soak: setup
	SEGQ_SOAK_JOBS=20 $(PY) -m pytest -q -m soak tests/test_soak.py
	SEGQ_UP_ROUNDS=5 $(PY) -m pytest -q tests/test_cluster.py -k two_ups

# Every benchmark in bench/ (their figures go to bench/RESULTS.md with the machine and the date).
bench: setup
	$(PY) bench/prepare_throughput.py
	$(PY) bench/data_path.py
	$(PY) bench/trial_overhead.py
	$(PY) bench/sweep_efficiency.py
	$(PY) bench/metrics_path.py

clean-demo:
	-$(SEGQ) down
	rm -rf .segq
