# Shared helpers for the local-service scripts. Sourced, never run.
#
# Everything a checkout starts lives in one private state folder keyed by the checkout's path,
# under /var/tmp so that the `postgres` user can traverse it even when the checkout sits under a
# mode-700 folder (see shared/INFRA.md). Ports are derived from the same key so that two
# checkouts on one machine never collide; DLQ_PORT_BASE and DLQ_STATE_DIR override both.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KEY="$(printf '%s' "$ROOT" | sha1sum | cut -c1-10)"
STATE="${DLQ_STATE_DIR:-/var/tmp/dlq-console-$KEY}"
PORT_BASE="${DLQ_PORT_BASE:-$((20000 + (0x${KEY:0:6} % 500) * 20))}"
VENV="$ROOT/.venv"
LOCAL="$ROOT/.local"
ENV_FILE="${DLQ_ENV_FILE:-$LOCAL/env}"

PG_PORT=$((PORT_BASE + 0))
REDIS_PORT=$((PORT_BASE + 1))
RABBIT_PORT=$((PORT_BASE + 2))
RABBIT_MGMT_PORT=$((PORT_BASE + 3))
RABBIT_DIST_PORT=$((PORT_BASE + 4))
RABBIT_EPMD_PORT=$((PORT_BASE + 5))
KAFKA_PORT=$((PORT_BASE + 6))
SQS_PORT=$((PORT_BASE + 7))
WEB_PORT="${PORT:-$((PORT_BASE + 8))}"

PG_BIN=/usr/lib/postgresql/15/bin
PG_DB=dlq_console
# The node name follows the state folder: a private instance (DLQ_STATE_DIR, as the services
# script's own tests start beside the suite's) never shares a node name with the checkout's.
if [ "$STATE" != "/var/tmp/dlq-console-$KEY" ]; then
  RABBIT_NODE="dlq-$(printf '%s' "$STATE" | sha1sum | cut -c1-10)@localhost"
else
  RABBIT_NODE="dlq-$KEY@localhost"
fi
LOCALSTACK_PYTHON="${LOCALSTACK_PYTHON:-/root/.pyenv/versions/3.13.0/bin/python3.13}"

say() { printf '\033[1m==>\033[0m %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# pid_alive FILE: true when FILE names a running process; removes a stale FILE.
pid_alive() {
  local file=$1 pid
  [ -f "$file" ] || return 1
  pid=$(cat "$file" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then return 0; fi
  rm -f "$file"
  return 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ensure_port_free PORT NAME: stop with a clear error when something else holds the port.
ensure_port_free() {
  local port=$1 name=$2 holder
  port_open "$port" || return 0
  holder=$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'users:(([^)]*' | head -n1 | cut -c9-)
  die "$name cannot start: port $port is already taken by another process ${holder:+($holder)}; set DLQ_PORT_BASE to move this checkout's ports"
}

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.1 s.
wait_for() {
  local seconds=$1 what=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.1
  done
}

# wait_started SECONDS PIDFILE COMMAND...: like wait_for, but gives up at once when the process
# in PIDFILE has exited (a port clash or bad config fails fast instead of timing out).
wait_started() {
  local seconds=$1 file=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    pid_alive "$file" || return 1
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.1
  done
}

# stop_group PIDFILE NAME: SIGTERM the process group started with setsid, then SIGKILL after 20 s.
stop_group() {
  local file=$1 name=$2 pid
  if ! pid_alive "$file"; then return 0; fi
  pid=$(cat "$file")
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    warn "$name did not stop after SIGTERM; sending SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
