#!/usr/bin/env bash
# `make bench`: the same set-up as `make test`, then the benchmarks. Prints `BENCH <name> <value>
# <unit>` lines and rewrites docs/benchmarks.md with this run's figures and the machine they ran on.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$ROOT/scripts/bootstrap.sh"
"$ROOT/scripts/services.sh" up
set -a; source "$ENV_FILE"; set +a
cd "$ROOT"
audit_out="$STATE/bench-audit.txt"
capture_out="$STATE/bench-capture.txt"
run() {
  local out=$1; shift
  set -o pipefail
  "$VENV/bin/python" "$@" 2>"$STATE/bench.err" | tee "$out" || die "benchmark $* failed; see $STATE/bench.err"
}

say "audit export: ${BENCH_AUDIT_EVENTS:-1000000} events"
run "$audit_out" scripts/bench/audit_export.py
say "capture: ${BENCH_CAPTURE_MESSAGES:-20000} messages per broker beside a raw drain loop; RSS at ${BENCH_CAPTURE_RSS_MESSAGES:-100000}"
run "$capture_out" scripts/bench/capture.py
replay_rate_out="$STATE/bench-replay-rate.txt"
say "replay rate: 10, 100 and 1000 msg/s, 2 workers each, ${BENCH_REPLAY_RATE_SECONDS:-35} s, the three rates at once"
run "$replay_rate_out" scripts/bench/replay_rate.py
replay_out="$STATE/bench-replay.txt"
say "replay: ${BENCH_REPLAY_MESSAGES:-20000} letters per broker (SQS ${BENCH_REPLAY_SQS_MESSAGES:-5000}) beside a raw move loop and the shovel; rate accuracy; pause latency"
run "$replay_out" scripts/bench/replay.py

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
  cat "$audit_out"
  echo '```'
  echo
  echo "## Capture (issue 4)"
  echo
  echo "Per broker, N messages of 1 KiB (default 20,000) are drained once by a raw client loop and,"
  echo "refilled, captured by \`manage.py capture\` in the same run. \`_rate\` is the capture pass's own"
  echo "duration (from its start and finish times), \`_wall_rate_with_startup\` adds interpreter and"
  echo "Django start-up; \`_ratio\` is capture rate / raw rate (target >= 0.7). Raw loops: RabbitMQ"
  echo "consume + ack multiple per 500; SQS receive 10 + delete batch 10; Kafka consume 500 by direct"
  echo "assignment + synchronous commit. Capture additionally normalises each message's failure and"
  echo "commits a row per message before it removes the batch (invariant 1). Then the peak RSS of"
  echo "one capture of a larger RabbitMQ DLQ (default 100,000 messages; target < 300 MB)."
  echo
  echo '```'
  cat "$capture_out"
  echo '```'
  echo
  echo "## Replay rate accuracy (issue 6)"
  echo
  echo "The run's shared Redis limiter (GCRA in one Lua script, invariant 5) at 10, 100 and 1000 msg/s"
  echo "with batches of 1, 10 and 50 messages: two worker processes per rate loop \`wait_and_acquire(batch)\`"
  echo "and stamp the batch as published when it is granted (no broker: the limiter is measured; the"
  echo "engine's end-to-end figures come with its own benchmark). The three rates run at the same time on"
  echo "their own run ids for ${BENCH_REPLAY_RATE_SECONDS:-35} s each (at least three full 10 s windows)."
  echo "Windows slide: every 10 s and 1 s window inside the run is checked. Targets: every 10 s window"
  echo "within +-2% of plan, no 1 s window above 110%. A batch is the unit: one message in 100 (10 msg/s"
  echo "over 10 s) is 1%. A fresh run may take one batch at once and a grant may come up to 25 ms early"
  echo "(the limiter's jitter tolerance, which keeps late wake-ups from dragging the rate below plan), so"
  echo "a 1 s window can hold the rate plus one batch: 110% with batches of a tenth of the rate, never more."
  echo
  echo '```'
  cat "$replay_rate_out"
  echo '```'
  echo
  echo "## Replay throughput and control (issue 6)"
  echo
  echo "The engine end to end on the real brokers (\`scripts/bench/replay.py\`); dead letters are written"
  echo "into the bench database with SQL and plans approved through the services beforehand (not measured)."
  echo
  echo "- **Throughput**: ${BENCH_REPLAY_MESSAGES:-20000} letters of 1 KiB per broker (SQS ${BENCH_REPLAY_SQS_MESSAGES:-5000}: LocalStack's"
  echo "  per-call cost would make 20,000 take minutes) replayed unthrottled by one worker (\`_1w\`), then,"
  echo "  fresh letters, by two (\`_2w\`: the plan's number of workers; two is one per core here): the plan's"
  echo "  rate and batch at the broker's limits (RabbitMQ 50,000/s in 1,000s, Kafka 100,000/s in 10,000s, SQS"
  echo "  3,000/s in 10s). \`_rate\`: from the run's started_at (before the start call writes the ledger) to"
  echo "  its move to verifying, once every ledger row is recorded (a batch's published_at is when it was"
  echo "  sent, before its confirms and recording); \`_wall_seconds\`: from the start call until"
  echo "  the workers return with the run ended (completed, not verified: the bench plans have no"
  echo "  verification step; the worker processes were started beforehand);"
  echo "  \`_letters_replayed_seconds\`: after the move to verifying, until the run's letters read replayed"
  echo "  (written in chunks of 5,000 after the last publish, off the publishing path; included in the wall). Beside"
  echo "  them, in the same run, a raw client move loop of as many messages between two queues/topics of that"
  echo "  broker: RabbitMQ consume 1,000 + publish with every confirm in flight + ack multiple; Kafka consume"
  echo "  10,000 + idempotent acks=all produce + flush + synchronous commit; SQS receive 10 +"
  echo "  SendMessageBatch 10 + DeleteMessageBatch 10. \`_ratio\` = replay rate / raw rate (target >= 0.7)."
  echo "  RabbitMQ also beside the shovel plugin (dynamic shovel, ack-mode on-confirm, src-delete-after"
  echo "  queue-length, timed until the target holds all and the source is empty): \`_shovel_ratio\` ="
  echo "  the faster replay's rate / shovel rate."
  echo "- **Rate accuracy**: plans at 10, 100 and 1000 msg/s (the engine sends batches of at most a twentieth of the rate: 1, 5 and 50), two"
  echo "  \`manage.py replay_worker\` processes each, to RabbitMQ, ${BENCH_REPLAY_ACCURACY_SECONDS:-25} s from the first publish, one"
  echo "  rate after the other (six workers at once saturate two cores). From the ledger's published_at"
  echo "  (per batch: when it went to the broker, which then confirmed it), every sliding 10 s window's deviation from plan"
  echo "  (target +-2%) and the fullest sliding 1 s window (target <= 110%)."
  echo "- **Pause latency**: a run at 500 msg/s (batches of 50, two workers) paused ${BENCH_REPLAY_PAUSES:-20} times with"
  echo "  \`run_pause\` at random moments, resumed in between; per pause, from its commit to the run's last"
  echo "  published_at (0 when nothing followed it; target p95 <= 1 s), the batches recorded after it (at"
  echo "  most one in flight per worker) and the time until both workers returned."
  echo
  echo '```'
  cat "$replay_out"
  echo '```'
} >"$ROOT/docs/benchmarks.md"
say "wrote docs/benchmarks.md"
