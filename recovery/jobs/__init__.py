"""Background jobs, one way for every kind of work.

- ``registry``: every job is registered by name, with the queue it runs on. Workers (RQ and
  Celery) execute only registered names; nothing travels through Redis as a function path.
- ``queue``: ``enqueue(name, *ids)`` sends a job once the caller's transaction commits, through
  RQ (default) or Celery, to the job's own queue (replay, capture, periodic, bulk).
- ``definitions``: the job functions themselves (ids in, one service call), loaded by the app's
  ``ready()``; services never import them, so no import cycle needs hiding.
- ``lifecycle``: the one lifecycle of a job row (queued -> running -> succeeded / failed /
  cancelled, heartbeat, progress, error, log lines) shared by capture passes, triage jobs,
  re-classification, audit verification and drill runs; ``watchdog`` retires and retries the
  rows whose job was lost.
- ``rq_worker``: the RQ worker and job classes that refuse anything not registered.
"""
