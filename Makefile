# The two commands of the README: `make run` and `make test`. Both create the
# virtualenv and install what they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
# Every dependency, to the version and hash, is in uv.lock (`uv lock` after editing
# pyproject.toml's dependencies). uv installs it in seconds; its own version is the
# locked one too.
UV_VERSION := $(shell sed -n '/^name = "uv"$$/{n;s/^version = "\(.*\)"$$/\1/p;}' uv.lock)
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
# The slowest tests of every run, so a slow one is seen where it is added.
DURATIONS ?= --durations=30 --durations-min=1.0
# pytest-xdist workers. The integration tier mostly waits (consumer-group joins,
# service start-up), so 4 workers on 2 cores take `make test` from ~13 to ~5 min;
# each worker has its own broker and MongoDB server, each module stays on one
# worker (its shared harness with it). WORKERS=0 runs in this process (pdb, -x).
WORKERS ?= 4
XDIST = $(if $(filter 0,$(WORKERS)),,-n $(WORKERS) --dist loadscope)

.PHONY: install run test prove test-real test-store fuzz test-unit test-integration lint format \
	schemas bench bench-report faults soak flake-check test-times audit lock asyncapi clean \
	docs docs-build docs-gen test-monitoring

$(STAMP): pyproject.toml uv.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	@# --locked: fails if pyproject.toml changed without `make lock`; --inexact keeps
	@# pip, which the venv module seeded.
	$(BIN)/uv sync --locked --inexact --extra dev --quiet
	touch $(STAMP)

install: $(STAMP)

## Re-resolve uv.lock after changing pyproject.toml's dependencies.
lock: $(STAMP)
	$(BIN)/uv lock $(ARGS)

## The locked dependencies against PyPI's vulnerability records; fails on any known
## vulnerability not listed, with its reason, in tools/audit/ignore.txt.
audit: $(STAMP)
	$(BIN)/python tools/audit/audit.py

## Run the service; with no PAYMENTS_* servers set it starts an embedded Kafka
## broker and MongoDB-protocol server (data under .data/). Ctrl-C stops all.
run: $(STAMP)
	$(BIN)/payments run $(ARGS)

## The whole test suite: unit tests, then integration and fault tests over the real
## (embedded unless configured) broker and MongoDB-protocol server. Fault tests run a
## small workload here (`make soak` runs today's stress sizes); Hypothesis runs its
## `dev` profile (CI: `ci`). Prints the slowest tests at the end.
test: $(STAMP)
	$(BIN)/python -m pytest $(XDIST) $(DURATIONS) $(ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(ARGS)

test-integration: $(STAMP)
	$(BIN)/python -m pytest $(XDIST) tests/integration $(ARGS)

## The 30 slowest tests (setup, call and teardown each) of the whole suite.
test-times: $(STAMP)
	$(BIN)/python -m pytest $(XDIST) -q --durations=30 --durations-min=0 $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check schemas service tests bench tools
	$(BIN)/ruff format --check schemas service tests bench tools
	$(BIN)/mypy schemas service

format: $(STAMP)
	$(BIN)/ruff check --fix schemas service tests bench tools
	$(BIN)/ruff format schemas service tests bench tools

## Regenerate the committed JSON Schemas from the models.
schemas: $(STAMP)
	$(BIN)/payments schemas export schemas/json

# FerretDB 1.24 on SQLite does not apply a conditional update atomically: two
# concurrent writers of one version can both "match", so the service's optimistic
# concurrency (replace where version = n) loses writes there. These tests race
# writers on one document on purpose and fail on FerretDB only
# (docs/contribute/infrastructure.md); they run on MongoDB, nx-27017 and in the Kafka run.
FERRETDB_DESELECT := \
	--deselect tests/integration/test_lifecycle_concurrency.py::test_fifty_concurrent_captures_and_refunds \
	--deselect tests/integration/test_lifecycle_concurrency.py::test_two_instances_race_on_the_same_commands \
	--deselect tests/integration/test_ops_process.py::test_sigterm_mid_stream_loses_nothing \
	--deselect tests/integration/test_providers.py::test_flaky_under_concurrency_charges_once

## The integration and fault suites on Apache Kafka (JVM, from Maven Central; with
## nx-27017), then the store tests (`-m store`) on FerretDB (with Apache Kafka, whose
## quick group joins keep it short). The packaging tests ran in `make test` already.
## Needs Java 17+ with Maven, and Go; both servers are fetched/built into .cache/ on
## first use. tools/tests checks the servers first.
test-real: $(STAMP)
	$(BIN)/python tools/kafka/broker.py install
	$(BIN)/python tools/ferretdb/server.py install
	@# Every run goes on after a failed one (its output is what CI shows); any failure fails.
	status=0; \
	$(BIN)/python -m pytest tools/tests $(ARGS) || status=1; \
	PAYMENTS_TEST_INFRA=kafka-jvm $(BIN)/python -m pytest $(XDIST) tests/integration tests/faults \
	  -m "not packaging" $(DURATIONS) $(ARGS) || status=1; \
	$(MAKE) --no-print-directory test-store || status=1; \
	exit $$status

## The store tests on FerretDB (with Apache Kafka).
test-store: $(STAMP)
	$(BIN)/python tools/ferretdb/server.py install
	PAYMENTS_TEST_INFRA=kafka-jvm,ferretdb $(BIN)/python -m pytest $(XDIST) tests/integration \
	  -m "store and not packaging" $(FERRETDB_DESELECT) $(DURATIONS) $(ARGS)

## The transport-level fuzzers, longer than in `make test`: hostile Kafka records
## through the real consumer (FUZZ_EXAMPLES batches over in-memory fakes) and over the
## real broker and MongoDB server (FUZZ_BROKER_RECORDS records into a running service).
FUZZ_EXAMPLES ?= 20000
FUZZ_BROKER_RECORDS ?= 2000
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q --hypothesis-profile=prove \
		tests/unit/test_fuzz_transport.py tests/unit/test_fuzz_parse.py tests/unit/test_fuzz_schemas.py \
		tests/unit/schemas/test_schemas_dead_letter_fit.py tests/unit/test_admin_auth.py $(ARGS)
	FUZZ_BROKER_RECORDS=$(FUZZ_BROKER_RECORDS) $(BIN)/python -m pytest -q --timeout 3600 \
		tests/integration/test_fuzz_transport_broker.py tests/integration/test_hostile_records.py $(ARGS)

## The stateful model tests (tests/unit/model: issue 16's generic processor and
## issue 22's Stripe model) run longer than in `make test` (40 examples of 40 steps
## there): `make prove PROVE_EXAMPLES=4000 PROVE_STEPS=100`; the other properties
## with the Hypothesis `prove` profile (2,000 examples each). A failure prints the
## shortest sequence of steps Hypothesis found and a `@reproduce_failure` blob;
## shrinking may take minutes, hence the longer timeout.
PROVE_EXAMPLES ?= 400
PROVE_STEPS ?= 40
prove: $(STAMP)
	PAYMENTS_MODEL_EXAMPLES=$(PROVE_EXAMPLES) PAYMENTS_MODEL_STEPS=$(PROVE_STEPS) \
		$(BIN)/python -m pytest --timeout 7200 --hypothesis-profile=prove tests/unit $(ARGS)

## Throughput benchmark against the broker's and the store's own limits.
## `make bench ARGS=--quick` finishes in under a minute; `make bench ARGS="--flow full"`
## drives the whole flow (checkout, signed capture, signed refund) and reports CPU ms
## and MongoDB commands per cart; `--rate` paces it (docs/contribute/performance.md).
bench: $(STAMP)
	$(BIN)/python bench/run.py $(ARGS)

## The newest bench/results/*.json drawn as bench/report.png, plus a Markdown table.
bench-report: $(STAMP)
	$(BIN)/python bench/report.py $(ARGS)

## The fault-injection suite (also part of `make test`, with a small workload).
faults: $(STAMP)
	$(BIN)/python -m pytest $(XDIST) tests/faults $(DURATIONS) $(ARGS)

## The fault suite at stress-test size (1,000 carts and 5 kills, 5,000 bad records,
## 600 carts and a rebalance...): `make soak`, or with PAYMENTS_TEST_INFRA=kafka-jvm.
soak: $(STAMP)
	PAYMENTS_FAULT_VOLUME=soak $(BIN)/python -m pytest tests/faults $(DURATIONS) $(ARGS)

## The fault and integration suites N times in a row on each broker (embedded Tansu,
## then Apache Kafka); every run goes on after a red one, and the tally says which
## were red. `make flake-check N=10`, or FLAKE_BROKERS=embedded for Tansu only.
N ?= 5
FLAKE_BROKERS ?= embedded kafka-jvm
flake-check: $(STAMP)
	$(BIN)/python tools/kafka/broker.py install
	@red=""; for broker in $(FLAKE_BROKERS); do \
	  for run in $$(seq 1 $(N)); do \
	    echo "flake-check: $$broker run $$run of $(N) ($$(date -u +%T))"; \
	    infra=$$broker; [ "$$broker" = embedded ] && infra=; \
	    PAYMENTS_TEST_INFRA=$$infra $(BIN)/python -m pytest $(XDIST) -q tests/faults \
	      tests/integration -m "not packaging" $(ARGS) \
	      || red="$$red $$broker#$$run"; \
	  done; \
	done; \
	if [ -n "$$red" ]; then echo "flake-check: RED runs:$$red"; exit 1; fi; \
	echo "flake-check: $(N) green runs on each of: $(FLAKE_BROKERS)"

## Render the AsyncAPI document (docs/asyncapi.json) and serve it.
asyncapi: $(STAMP)
	$(BIN)/payments asyncapi serve $(ARGS)

## The documentation site (MkDocs + Material, mkdocs.yml): `make docs` serves it on
## http://127.0.0.1:8000 with live reload; `make docs-build` builds it into site/
## with warnings as errors (a broken link or anchor, a page missing from the nav), as
## CI does; `make docs-gen` rewrites the parts of the pages generated from the code.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve $(ARGS)

docs-build: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site $(ARGS)

docs-gen: $(STAMP)
	$(BIN)/python tools/docs/generate.py

## The alert rules (deploy/monitoring/) under Prometheus's own promtool, built with Go
## from the module pinned in tools/prometheus/go.mod into .cache/ on first use.
test-monitoring: $(STAMP)
	$(BIN)/python tools/prometheus/promtool.py install
	$(BIN)/python -m pytest tools/tests/test_promtool_rules.py $(ARGS)

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache .cache site
