# Switchyard: the two commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
PIP_QUIET := --disable-pip-version-check -q

.PHONY: run test install lint lock audit bench local-model clean

## install: a virtualenv with every dependency at its locked, hash-checked version
install: $(VENV)/.installed
$(VENV)/.installed: requirements.lock pyproject.toml
	@echo "[switchyard] installing locked dependencies into $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_QUIET) --require-hashes -r requirements.lock 2>&1 | grep -v '^WARNING: Location' || true
	$(VENV)/bin/pip install $(PIP_QUIET) --no-deps -e . 2>&1 | grep -v '^WARNING: Location' || true
	LITELLM_LOCAL_MODEL_COST_MAP=True $(PY) -c 'import router, policies, backends, aiohttp, litellm, openai'
	@touch $@

## run: the local open model (llama.cpp + Gemma 3 270M, built once) and the gateway on :4000
run: install
	bash deploy/local-model/run-gateway.sh

## local-model: build/fetch llama.cpp and Gemma 3 270M into the cache (~7 min the first time)
local-model:
	bash deploy/local-model/llamacpp.sh install

## lint: layering and ownership contracts (import-linter), ruff, mypy --strict on router/ policies/ backends/, shipped policies
lint: install
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check router policies backends tests bench
	$(VENV)/bin/mypy --strict policies backends router
	$(VENV)/bin/switchyard policy check policies/*.yaml policies/examples/*.yaml
	$(VENV)/bin/switchyard policy test policies/tests/*.test.yaml

## test: install everything, then lint and run the whole suite (real llama.cpp server, real Redis)
test: install local-model lint
	bash deploy/redis/ensure-redis.sh
	bash tests/tools/ensure-debian-tools.sh
	$(PY) -m pytest

## bench: gateway overhead against a direct call to a fast mock upstream
bench: install
	$(PY) bench/overhead.py

## lock: re-resolve requirements.lock from pyproject.toml (needs network access to PyPI)
lock:
	$(PYTHON) -m venv /tmp/switchyard-uv && /tmp/switchyard-uv/bin/pip $(PIP_QUIET) install uv==0.13.8
	/tmp/switchyard-uv/bin/uv pip compile pyproject.toml --extra test --generate-hashes \
	  --python-version 3.11 -o requirements.lock

## audit: pip-audit over requirements.lock (needs PyPI and a vulnerability database; not part of CI,
## which checks the lock offline: tests/test_supply_chain.py). Fails when it could not audit a package.
audit:
	test -x /tmp/switchyard-audit/bin/pip-audit || { $(PYTHON) -m venv /tmp/switchyard-audit && \
	  /tmp/switchyard-audit/bin/pip $(PIP_QUIET) install pip-audit==2.10.1; }
	/tmp/switchyard-audit/bin/pip-audit --requirement requirements.lock --disable-pip --strict \
	  --progress-spinner off

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
