# The README's two commands: `make run` and `make test`. Both install what is missing and start
# the local real services first (scripts/bootstrap.sh, scripts/services.sh).
BENCH_AUDIT_EVENTS ?= 1000000
BENCH_CAPTURE_MESSAGES ?= 20000
BENCH_CAPTURE_RSS_MESSAGES ?= 100000
export BENCH_AUDIT_EVENTS BENCH_CAPTURE_MESSAGES BENCH_CAPTURE_RSS_MESSAGES

.PHONY: run test test-fast bench services-up services-down services-status bootstrap lint format

run:
	@scripts/run.sh

test:
	@scripts/test.sh $(PYTEST_ARGS)

test-fast:
	@scripts/test.sh --fast $(PYTEST_ARGS)

bench:
	@scripts/bench.sh

bootstrap:
	@scripts/bootstrap.sh

services-up: bootstrap
	@scripts/services.sh up

services-down:
	@scripts/services.sh down

services-status:
	@scripts/services.sh status

lint:
	@.venv/bin/ruff check . && .venv/bin/ruff format --check .

format:
	@.venv/bin/ruff format . && .venv/bin/ruff check --fix .
