"""Telemetry of the console (issue 8): traces (tracing.py; capture.py, replay.py, drills.py and
jobs.py for our own spans), Prometheus metrics (metrics.py, multiproc.py, scrape.py, depth.py) and
JSON-lines logs (logging.py). See docs/operations.md for what is exported and example alerts.

Telemetry never changes an outcome: a metric, span or log that cannot be written is skipped, and
no broker is called on behalf of a scrape.
"""
