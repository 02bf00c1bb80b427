"""A replay worker process started before its run exists: Django and the broker clients are loaded,
then it reads `RUN WORKER` lines on stdin and runs `manage.py replay_worker RUN --worker WORKER`
in-process for each (the same command, the same Worker loop), answering `done` on stdout. So a
benchmark measures the replay, not interpreter and Django start-up.

BENCH_REPLAY_PROFILE=PATH: each run is profiled with cProfile into PATH.RUN.WORKER.
"""

from __future__ import annotations

import cProfile
import io
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    # Answers go to the original stdout; anything else the process prints goes to stderr.
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import close_old_connections

    import recovery.brokers.kafka  # noqa: F401 - each adapter's client library loads now, not mid-run
    import recovery.brokers.rabbitmq  # noqa: F401
    import recovery.brokers.sqs  # noqa: F401
    import recovery.replay.engine  # noqa: F401

    profile = os.environ.get("BENCH_REPLAY_PROFILE", "")
    print("ready", file=answers, flush=True)
    for line in sys.stdin:
        run_id, worker = (int(part) for part in line.split())
        close_old_connections()
        out = io.StringIO()
        if profile:
            profiler = cProfile.Profile()
            profiler.runcall(call_command, "replay_worker", run_id, worker=worker, stdout=out)
            profiler.dump_stats(f"{profile}.{run_id}.{worker}")
        else:
            call_command("replay_worker", run_id, worker=worker, stdout=out)
        print("done", out.getvalue().strip(), file=answers, flush=True)


if __name__ == "__main__":
    main()
