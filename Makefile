# The two commands of the README: `make run` and `make test`. Both create the
# virtualenv and install what they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install run test test-unit test-integration lint format schemas bench faults asyncapi clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## Run the service; with no PAYMENTS_* servers set it starts an embedded Kafka
## broker and MongoDB-protocol server (data under .data/). Ctrl-C stops all.
run: $(STAMP)
	$(BIN)/payments run $(ARGS)

## The whole test suite: unit tests, then integration tests over the real
## (embedded unless configured) broker and MongoDB-protocol server.
test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(ARGS)

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check schemas service tests
	$(BIN)/ruff format --check schemas service tests
	$(BIN)/mypy schemas service

format: $(STAMP)
	$(BIN)/ruff check --fix schemas service tests
	$(BIN)/ruff format schemas service tests

## Regenerate the committed JSON Schemas from the models.
schemas: $(STAMP)
	$(BIN)/payments schemas export schemas/json

## Throughput benchmark against the broker's and the store's own limits.
## `make bench ARGS=--quick` finishes in under a minute.
bench: $(STAMP)
	$(BIN)/python bench/run.py $(ARGS)

## The fault-injection suite (also part of `make test`).
faults: $(STAMP)
	$(BIN)/python -m pytest tests/faults $(ARGS)

## Render the AsyncAPI document (docs/asyncapi.json) and serve it.
asyncapi: $(STAMP)
	$(BIN)/payments asyncapi serve $(ARGS)

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
