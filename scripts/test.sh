#!/usr/bin/env bash
# `make test`: the same set-up as `make run`, then the whole pytest suite against the real
# services. Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$ROOT/scripts/bootstrap.sh"
"$ROOT/scripts/services.sh" up
cd "$ROOT"
say "lint (ruff)"
"$VENV/bin/ruff" check --quiet . || die "ruff check failed"
"$VENV/bin/ruff" format --check --quiet . || die "ruff format --check failed: run make format"
# tests/environment.py reads .local/env and points tests at their own Redis database.
exec "$VENV/bin/pytest" "$@"
