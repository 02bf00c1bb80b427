#!/usr/bin/env bash
# `make bench`: the same set-up as `make test`, then the benchmarks. Prints `BENCH <name> <value>
# <unit>` lines and rewrites docs/benchmarks.md with this run's figures and the machine they ran on.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$ROOT/scripts/bootstrap.sh"
"$ROOT/scripts/services.sh" up
set -a; source "$ENV_FILE"; set +a
cd "$ROOT"
out="$STATE/bench.txt"
: >"$out"
run() { "$VENV/bin/python" "$@" 2>"$STATE/bench.err" | tee -a "$out" || die "benchmark $* failed; see $STATE/bench.err"; }

say "audit export: ${BENCH_AUDIT_EVENTS:-1000000} events"
run scripts/bench/audit_export.py

{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` on $(date -u +%Y-%m-%d) ($(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB,"
  echo "$(python3 --version), PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}')). Each figure is one run;"
  echo "these machines are noisy, so compare figures taken side by side in one run."
  echo
  echo "## Audit trail (issue 3)"
  echo
  echo "An export of 1,000,000 events (plus the export's own event) streamed by \`manage.py audit_export\`"
  echo "to a file: rate and the exporting process's peak RSS (target < 200 MB: events stream from a"
  echo "server-side cursor, nothing holds the whole trail). Then the offline check of that file"
  echo "(\`audit_verify --file\`) and a full recomputation of the chain in the database (\`audit_verify\`)."
  echo
  echo '```'
  cat "$out"
  echo '```'
} >"$ROOT/docs/benchmarks.md"
say "wrote docs/benchmarks.md"
