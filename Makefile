# raygent — one entry point. `make run` serves the app; `make test` runs every test.
# Both set up .venv from scratch when needed; `make test` also starts a local redis-server.

PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
CONSTRAINTS := requirements/constraints.txt
PIP         := $(BIN)/pip install --disable-pip-version-check -q -c $(CONSTRAINTS)
REDIS_PORT  ?= 6379
PYTEST_ARGS ?= --durations=15  # the slowest tests, at the end of every run (CI logs included)

.PHONY: run test check lint format venv venv-cpu redis bench bench-shm bench-runtime bench-models clean

run: venv-cpu  ## serve the application with the embedded defaults (or $RAYGENT_CONFIG)
	$(BIN)/serve run serve_app:app

test: venv-cpu redis  ## set up (with vLLM's CPU build), start redis-server, run every test
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:$(REDIS_PORT)/0} $(BIN)/python -m pytest $(PYTEST_ARGS)

check: lint test  ## the whole gate (what CI runs, plus lint)

lint: venv  ## ruff (lint + format) and mypy on the public packages ([tool.mypy] files)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

venv: $(VENV)/.raygent-test
venv-cpu: $(VENV)/.raygent-cpu

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -U pip

$(VENV)/.raygent-test: $(VENV)/bin/python pyproject.toml $(CONSTRAINTS) shm/_ringfast.c
	$(PIP) -e ".[test]"
	touch $@

# vLLM's CPU build pulls torchvision/torchaudio/torchcodec wheels built for another torch; they
# break `import transformers` ("operator torchvision::nms does not exist"). vLLM does not need
# them for text models, so they are removed and the result is checked.
$(VENV)/.raygent-cpu: $(VENV)/.raygent-test
	$(PIP) -e ".[cpu,test]"
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	$(BIN)/python -c "import transformers, vllm; from vllm.v1.engine.async_llm import AsyncLLM"
	touch $@

redis:
	REDIS_PORT=$(REDIS_PORT) scripts/ensure-redis.sh

bench: venv-cpu  ## raygent vs plain vLLM on the same model: goals, ratios, HTML (bench/results/suite)
	$(BIN)/python -m bench suite --start --sweep 1,4,16,32 --duration 15 --out bench/results/suite

bench-shm: venv
	$(BIN)/python -m bench.shm

bench-runtime: venv
	$(BIN)/python -m bench.runtime

bench-models: venv-cpu
	$(BIN)/python -m bench.models

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
