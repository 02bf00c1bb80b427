"""Which pytest process this is, for names on shared services.

Under pytest-xdist each worker process ("gw0", "gw1", ...) runs its own tests at the same time
as the others, against the same PostgreSQL server, Redis server and brokers. Each worker gets its
own test database (pytest-django suffixes it: test_<name>_gw0), its own Redis database
(tests/environment.py) and its own broker namespace: every queue, topic, SQS queue, exchange,
virtual host and Kafka consumer group a test creates carries the worker id, made by ``unique``.
A run without xdist is "main".
"""

from __future__ import annotations

import os
import uuid


def worker() -> str:
    """The worker id: gw0, gw1, ... under pytest-xdist; main otherwise."""
    return os.environ.get("PYTEST_XDIST_WORKER") or "main"


def worker_index() -> int:
    """0 for "gw0" and for a run without xdist, N for "gwN"."""
    name = worker()
    return int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else 0


def unique(prefix: str, length: int = 10) -> str:
    """A name of this worker's own: ``<prefix>-<worker>-<random hex>``."""
    return f"{prefix}-{worker()}-{uuid.uuid4().hex[:length]}"
