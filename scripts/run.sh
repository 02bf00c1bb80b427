#!/usr/bin/env bash
# `make run`: install what is missing, start the local services, migrate, seed the demo and serve
# the console with a worker and the scheduler. Ctrl-C stops the processes this script started
# (the services keep running; `make services-down` stops them).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$ROOT/scripts/bootstrap.sh"
"$ROOT/scripts/services.sh" up
set -a; source "$ENV_FILE"; set +a
export DEBUG="${DEBUG:-1}" PYTHONUNBUFFERED=1
# Web, worker and scheduler share one metrics folder (/metrics adds up every process's files);
# emptied at each start, as prometheus-client asks. Traces: OTEL_TRACES_EXPORTER=console make run.
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$STATE/metrics}"
mkdir -p "$PROMETHEUS_MULTIPROC_DIR" && rm -f "$PROMETHEUS_MULTIPROC_DIR"/*.db
backend="${RECOVERY_JOB_BACKEND:-rq}"

py="$VENV/bin/python"
cd "$ROOT"
say "migrating"
"$py" manage.py migrate --noinput >/dev/null
demo_dlqs="$LOCAL/demo-dlqs.json"
if [ ! -s "$demo_dlqs" ]; then
  say "seeding dead letters: demo applications fail messages on each local broker"
  "$py" -m scripts.demo.failing_consumers >"$demo_dlqs.tmp" && mv "$demo_dlqs.tmp" "$demo_dlqs" \
    || die "seeding the demo dead letters failed (see above)"
fi
say "seeding the demo"
"$py" manage.py seed_demo --dlqs "$demo_dlqs"

if [ -z "${PORT:-}" ] && ! port_open 8000; then WEB_PORT=8000; fi
children=()
start() { "$@" & children+=($!); }
stop_children() {
  trap - INT TERM EXIT
  say "stopping web, workers and scheduler"
  for pid in "${children[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop_children INT TERM EXIT

# One worker per queue (recovery/jobs/registry.py), so that no kind of work waits behind another;
# two for replay, one per core, as a plan's workers run side by side.
if [ "$backend" = celery ]; then
  start "$VENV/bin/celery" -A console worker -Q recovery-replay -n replay@%h --concurrency 2 --loglevel INFO
  for queue in capture periodic bulk; do
    start "$VENV/bin/celery" -A console worker -Q "recovery-$queue" -n "$queue@%h" --concurrency 1 --loglevel INFO
  done
  start "$VENV/bin/celery" -A console beat --loglevel INFO --schedule "$STATE/celerybeat-schedule"
else
  start "$py" manage.py rqworker replay
  start "$py" manage.py rqworker replay
  start "$py" manage.py rqworker capture
  start "$py" manage.py rqworker periodic
  start "$py" manage.py rqworker bulk
  start "$py" manage.py scheduler
fi
start "$py" manage.py runserver "127.0.0.1:$WEB_PORT"

say "console at http://127.0.0.1:$WEB_PORT/  (job backend: $backend; Ctrl-C to stop)"
say "demo credentials: $LOCAL/demo-credentials"
# Stop everything as soon as one process ends, so a crashed worker is not silently missing.
wait -n
say "a process exited; stopping the others"
