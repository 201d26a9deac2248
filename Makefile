# segq: `make demo` runs the main job on the embedded default; `make test` runs the whole suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SEGQ := $(VENV)/bin/segq
STAMP := $(VENV)/.installed

.PHONY: setup demo test clean-demo

setup: $(STAMP)

# Everything a fresh machine needs: system packages (as root, from apt), the venv, segq itself.
$(STAMP): pyproject.toml
	@if ! command -v redis-server >/dev/null 2>&1; then \
		echo "installing redis-server"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	fi
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[test]"
	@touch $(STAMP)

demo: setup
	bash examples/demo.sh

test: setup
	$(PY) -m pytest -q

clean-demo:
	-$(SEGQ) down
	rm -rf .segq
