# The README's two commands: `make run` and `make test`. Both install what is missing and start
# the local real services first (scripts/bootstrap.sh, scripts/services.sh).
.PHONY: run test services-up services-down services-status bootstrap lint format

run:
	@scripts/run.sh

test:
	@scripts/test.sh $(PYTEST_ARGS)

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
