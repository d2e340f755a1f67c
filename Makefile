# One set of commands for developers and CI. `make demo` and `make test` work on a fresh machine
# with Python 3.11: they build the environment from uv.lock first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
TOOLS := .venv-tools
UV := $(TOOLS)/bin/uv
UV_VERSION := 0.13.9
PY := $(VENV)/bin/python
MODELS ?= models
B ?=

.PHONY: setup demo test lint format protos bench services-up models compose-check k8s-check deploy-check clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# The environment is rebuilt whenever the lock changes.
$(VENV)/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --extra training --python $(PYTHON)
	touch $@

setup: $(VENV)/.synced

services-up:
	deploy/dev/ensure-services.sh

# A small but real model trained offline on the real export (the demo serves it). Retrained only when
# the data, the training code or the shared feature module change.
$(MODELS)/.trained: $(VENV)/.synced $(wildcard data/*.xlsx data/external/*.json ml_training/*.py) services/forecast/features.py
	$(PY) -m ml_training train --data data --out $(MODELS) --quick
	touch $@

models: $(MODELS)/.trained

demo: setup models
	$(VENV)/bin/nova demo --models $(MODELS)

test: setup services-up
	gateway/tests_browser_setup.sh
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -p no:cacheprovider

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

protos: setup
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) protos/generate.py

bench: setup services-up
	$(PY) -m bench $(B)

# Offline checks of the deployment files (no Docker engine or cluster needed); `make test` runs them too.
compose-check:
	deploy/compose-check.sh

k8s-check:
	deploy/k8s-check.sh

deploy-check: compose-check k8s-check

clean:
	rm -rf $(VENV) $(TOOLS) .nova $(MODELS) .pytest_cache
