#!/usr/bin/env bash
# `make test`: the same set-up as `make run`, lint, then the whole pytest suite against the real
# services in two phases:
#
#   1. parallel: `pytest -n $TEST_WORKERS -m "not (serial or timing or forks)"` (pytest-xdist). Each worker
#      has its own test database (test_dlq_console_gwN), Redis database (1 + N), metrics folder
#      and broker names (queues, topics, SQS queues and consumer groups carry "gwN"):
#      tests/environment.py and tests/namespace.py.
#   2. alone: `pytest -m "serial or timing or forks"`, in one process after phase 1: the tests that
#      stop, restart or flush a service every test shares (marker `serial`: scripts/services.sh
#      restarts, Redis SCRIPT FLUSH), those that assert a speed or latency bound, which the other
#      workers' load must not decide (marker `timing`), and those that fork the test process,
#      which must then have no other thread (marker `forks`: an xdist worker runs execnet's, and a
#      child forked while that thread held a lock hangs).
#
# Both phases always run; the script fails when either fails. A phase that selects no test (pytest
# exit code 5) counts as passed only when the other phase ran tests.
#
# `make test-fast` (scripts/test.sh --fast): the same set-up, lint and two phases, without browser
# tests (marker `browser`) and fault injection (marker `fault`, which every `serial` test also
# carries, so its phase 2 runs only the `timing` and `forks` tests).
#
# Extra arguments (`make test PYTEST_ARGS="tests/brokers -k sqs"`) go to pytest in each phase,
# after the phase's own options: paths, -k and -x narrow both phases; `-n 0` runs phase 1 in one
# process (phase 2 always runs in one); a `-m` of your own replaces the phase's marker selection,
# so both phases would run what it selects (in phase 1 in parallel). With arguments, phase 1 gets
# one worker per 20 tests they select (one process for 20 or fewer), unless TEST_WORKERS is set.
# TEST_WORKERS sets the number of xdist workers. The default, 6, was measured on the 2-core
# development machines (quiet machine, whole `make test`): 3 workers 5:43, 4 workers 4:48,
# 6 workers 4:04, 8 workers 4:02. The tests mostly wait on brokers, subprocesses and timeouts,
# so three workers per core still gain; past six, more workers only add load.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

fast=0
if [ "${1:-}" = "--fast" ]; then
  fast=1
  shift
fi
workers="${TEST_WORKERS:-6}"

"$ROOT/scripts/bootstrap.sh"
"$ROOT/scripts/services.sh" up
cd "$ROOT"
say "lint (ruff)"
"$VENV/bin/ruff" check --quiet . || die "ruff check failed"
"$VENV/bin/ruff" format --check --quiet . || die "ruff format --check failed: run make format"

# run_phase NAME ARGS...: runs pytest, prints the phase's outcome, leaves the exit code in $rc.
run_phase() {
  local name=$1
  shift
  say "tests, $name: pytest $*"
  set +e
  "$VENV/bin/pytest" "$@"
  rc=$?
  set -e
}

alone="serial or timing or forks"
if [ "$fast" = 1 ]; then
  without="not browser and not fault"
  parallel_marks="not ($alone) and $without"
  serial_marks="($alone) and $without"
  title="make test-fast: no browser or fault tests; "
else
  parallel_marks="not ($alone)"
  serial_marks="$alone"
  title=""
fi

# A selection of your own (a file, -k) gets the workers it needs: each worker first makes its own
# test database (several seconds), so one per 20 selected tests, one process for 20 or fewer.
if [ $# -gt 0 ] && [ -z "${TEST_WORKERS:-}" ]; then
  selected=$("$VENV/bin/pytest" --collect-only -q -m "$parallel_marks" "$@" -n 0 2>/dev/null \
    | sed -n 's/^\([0-9][0-9]*\)\(\/[0-9]*\)\{0,1\} tests\{0,1\} collected.*/\1/p' | tail -n 1)
  selected=${selected:-0}
  needed=$(((selected + 19) / 20))
  [ "$needed" -lt "$workers" ] && workers=$needed
  [ "$workers" -lt 2 ] && workers=0
fi

# --dist loadgroup: tests go out one by one, in collection order (tests/environment.py puts the
# long ones first), except those marked xdist_group(name): one worker runs each such group.
parallel=(-n "$workers" --dist loadgroup)

run_phase "${title}phase 1 of 2, parallel ($([ "$workers" = 0 ] && echo "one process" || echo "$workers workers"))" \
  "${parallel[@]}" -m "$parallel_marks" "$@"
parallel_rc=$rc
run_phase "${title}phase 2 of 2, alone (tests that restart or flush a shared service, or time themselves)" \
  -m "$serial_marks" "$@" -n 0
serial_rc=$rc

if [ "$parallel_rc" = 5 ] && [ "$serial_rc" = 5 ]; then
  die "no test was selected in either phase"
fi
[ "$parallel_rc" = 5 ] && parallel_rc=0
[ "$serial_rc" = 5 ] && serial_rc=0
if [ "$parallel_rc" != 0 ] || [ "$serial_rc" != 0 ]; then
  die "tests failed (parallel phase: exit $parallel_rc, serial phase: exit $serial_rc)"
fi
say "tests passed (both phases)"
